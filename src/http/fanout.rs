//! The fan-out hub: one execution of a `catalogEvents` subscription per distinct document, its
//! events serialised once and handed to every WebSocket subscriber of that document.
//!
//! Run one by one, 10k subscribers of the same document cost 10k executions, 10k
//! serialisations and 10k state-machine wake-ups per event. Here subscribers with the same
//! [`Key`] (document text, operation name, variables, caller) share one
//! `schema.execute_stream`: a task turns each `Response` into its JSON text once and broadcasts
//! it; each connection only wraps the shared bytes in its own `next`/`data` envelope. The task
//! ends when the stream does (every subscriber then gets `complete`) or when the last subscriber
//! leaves (the [`Shared`] is dropped, which stops it).
//!
//! Only pure live broadcasts are shared ([`shareable`]): a subscription whose root selection is
//! only `catalogEvents`, so a subscriber that joins a running stream misses nothing a fresh
//! stream would have given it. `refreshProgress` (which sends the job's current state first)
//! and everything else stay on async-graphql's per-subscriber state machine. The caller is part
//! of the key: what a document may do depends on who sends it (trusted documents, roles).

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Request, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use tokio::sync::{broadcast, watch};

use crate::auth::Caller;

/// Items buffered per shared stream for subscribers that read slowly, like the catalog's own
/// event channel: a subscriber further behind skips the oldest (events only mean "refetch").
const CAPACITY: usize = 256;

/// One execution result as JSON text (the `payload` of a `next`/`data` message).
pub type Payload = Arc<str>;

/// What a subscriber receives: a payload, or None once the shared stream has ended.
pub type Item = Option<Payload>;

/// What makes two subscriptions the same stream. The document is compared as sent: its text
/// decides the limits it passed (size, tokens) as well as what it selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    document: String,
    operation: Option<String>,
    variables: String,
    role: &'static str,
    caller: String,
}

impl Key {
    pub fn new(request: &Request, caller: &Caller) -> Key {
        Key {
            document: request.query.clone(),
            operation: request.operation_name.clone(),
            variables: serde_json::to_string(&request.variables).unwrap_or_default(),
            role: caller.role.as_str(),
            caller: caller.name.clone(),
        }
    }
}

/// Whether a request may share a stream: a subscription operation whose root selection is
/// only `catalogEvents` fields (no fragments, no directives). Anything this cannot tell for
/// sure (a document that does not parse, an ambiguous operation) is not shareable, and the
/// state machine answers it as before.
pub fn shareable(request: &Request) -> bool {
    let Some(doc) = crate::graphql::extensions::parse_bounded(&request.query) else { return false };
    let op = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), None) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => op,
            None => return false,
        },
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => match ops.values().next() {
            Some(op) => op,
            None => return false,
        },
        _ => return false,
    };
    let op = &op.node;
    op.ty == OperationType::Subscription
        && op.directives.is_empty()
        && !op.selection_set.node.items.is_empty()
        && op.selection_set.node.items.iter().all(|s| match &s.node {
            Selection::Field(f) => f.node.name.node == "catalogEvents" && f.node.directives.is_empty(),
            _ => false,
        })
}

/// The running shared streams, by key. Entries are weak: a stream lives as long as someone
/// subscribes to it.
#[derive(Default)]
pub struct Hub {
    entries: Mutex<HashMap<Key, Entry>>,
    generation: AtomicU64,
}

struct Entry {
    /// Tells this entry from a later one under the same key (the old stream may still be
    /// ending when a new one starts).
    generation: u64,
    shared: Weak<Shared>,
}

/// One shared stream. Dropping the last `Arc` stops its task.
pub struct Shared {
    hub: Arc<Hub>,
    key: Key,
    generation: u64,
    tx: broadcast::Sender<Item>,
    /// True once the stream has been polled the first time: by then its resolver has
    /// subscribed to the catalog's events (the steps before it do not wait on anything), so a
    /// subscriber counted after this misses no event published after it.
    ready: watch::Receiver<bool>,
    task: tokio::task::AbortHandle,
}

/// A subscriber's share: keep both for as long as it subscribes.
pub struct Membership {
    pub shared: Arc<Shared>,
    pub rx: broadcast::Receiver<Item>,
}

impl Hub {
    fn entries(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the running stream for `key`, if there is one. Its document passed every check
    /// for this caller when it started, so joining needs no further check.
    pub fn join(&self, key: &Key) -> Option<Membership> {
        let entries = self.entries();
        let shared = entries.get(key)?.shared.upgrade()?;
        let rx = shared.tx.subscribe();
        Some(Membership { shared, rx })
    }

    /// Joins the stream for `key`, starting it from `stream` (a `schema.execute_stream` not yet
    /// polled) when none runs. Must be called inside the tokio runtime.
    pub fn start(self: &Arc<Self>, key: Key, stream: BoxStream<'static, Response>) -> Membership {
        let mut entries = self.entries();
        if let Some(shared) = entries.get(&key).and_then(|e| e.shared.upgrade()) {
            let rx = shared.tx.subscribe();
            return Membership { shared, rx };
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        // One line per shared stream (not per subscriber): how many distinct documents run.
        tracing::info!(generation, caller = %key.caller, "shared catalogEvents stream started");
        let (tx, rx) = broadcast::channel(CAPACITY);
        let (ready_tx, ready) = watch::channel(false);
        let task =
            tokio::spawn(run(self.clone(), key.clone(), generation, tx.clone(), ready_tx, stream)).abort_handle();
        let shared = Arc::new(Shared { hub: self.clone(), key: key.clone(), generation, tx, ready, task });
        entries.insert(key, Entry { generation, shared: Arc::downgrade(&shared) });
        Membership { shared, rx }
    }

    /// Removes the entry for `key` if it is still the one of `generation`.
    fn forget(&self, key: &Key, generation: u64) {
        let mut entries = self.entries();
        if entries.get(key).is_some_and(|e| e.generation == generation) {
            entries.remove(key);
        }
    }

    /// Running shared streams (for tests and figures).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared stream's task: serialise each response once, broadcast it, and say when the
/// stream ended. A send with no subscriber left fails harmlessly (the `Shared` is being dropped,
/// which aborts this task).
async fn run(
    hub: Arc<Hub>,
    key: Key,
    generation: u64,
    tx: broadcast::Sender<Item>,
    ready: watch::Sender<bool>,
    mut stream: BoxStream<'static, Response>,
) {
    let first = std::future::poll_fn(|cx| Poll::Ready(stream.poll_next_unpin(cx))).await;
    let _ = ready.send(true);
    let mut next = match first {
        Poll::Ready(item) => item,
        Poll::Pending => stream.next().await,
    };
    while let Some(resp) = next {
        let text = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
        let _ = tx.send(Some(Payload::from(text)));
        next = stream.next().await;
    }
    // No one joins an ended stream: forget it first, then tell the subscribers that joined.
    hub.forget(&key, generation);
    let _ = tx.send(None);
}

impl Shared {
    /// Resolves once the stream is subscribed to the catalog's events (or has ended).
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
        self.hub.forget(&self.key, self.generation);
    }
}
