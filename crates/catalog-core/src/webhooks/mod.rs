//! Outgoing webhooks: receivers registered by operators, and the queue that delivers every
//! catalog event they asked for, signed the Standard Webhooks way.
//!
//! - [`model`]: what a receiver and a delivery are, the checks on a receiver's settings, and
//!   the event body (`{type, timestamp, data}`).
//! - [`signing`]: `whsec_` secrets and `v1,` signatures.
//! - [`deliver`]: the delivery loop (claims under a lease, sends with a timeout, retries with
//!   backoff, records every attempt).
//!
//! The queue lives in the database (`db::webhooks`): an event is turned into one row per
//! matching receiver by the replica where it happened, keyed by (receiver, event key), so a
//! retried enqueue adds nothing; any replica's loop may send a row, one at a time under a lease.

mod deliver;
mod model;
mod signing;

pub(crate) use deliver::Deliverer;
pub use deliver::WebhookStats;
pub use model::{
    DeliveryPage, DeliveryState, MAX_DELIVERIES_PAGE, MAX_WEBHOOKS, Webhook, WebhookDelivery, WebhookOptions,
    WebhookSpec,
};
pub(crate) use model::{EventFacts, event_key, payload, validate};
pub use signing::{SECRET_PREFIX, key_of as secret_key, signature};
