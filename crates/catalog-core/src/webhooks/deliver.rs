//! The delivery loop: every replica runs one. It claims due deliveries under a lease (at most
//! `--webhook-concurrency` in flight), sends each with a deadline, records the attempt fenced
//! by its lease, and schedules a retry with backoff until `--webhook-retry-for` has passed.
//!
//! Nothing here runs on a request's path: an apply or a refresh only hands its event to a
//! bounded queue (see `service/webhooks.rs`), so a receiver that hangs or fails costs this
//! loop's slots, never a caller's time.

use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::model::WebhookOptions;
use super::signing;
use crate::db::Db;
use crate::db::webhooks::{AttemptOutcome, DeliveryRow};
use crate::fetch::FetchConfig;
use crate::outbound::{GuardedResolver, check_url, find_refusal};

/// First retry delay; doubles per attempt.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest delay between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Most bytes of a receiver's answer kept for the deliveries view.
pub const EXCERPT_BYTES: usize = 512;
/// Most bytes of a receiver's answer read at all (the rest is not waited for).
const READ_BYTES: usize = 4096;

/// Counters since start, for `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub retried: AtomicU64,
    /// Deliveries given up after `--webhook-retry-for`.
    pub failed: AtomicU64,
    /// Events dropped because the in-memory buffer was full (the database was away too long).
    pub lost: AtomicU64,
}

/// A copy of [`Stats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookStats {
    pub enqueued: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub lost: u64,
}

impl Stats {
    pub fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct Deliverer {
    db: Db,
    fetch: FetchConfig,
    options: WebhookOptions,
    replica: String,
    client: reqwest::Client,
    /// Woken when deliveries were queued here, or a slot came free.
    wake: tokio::sync::Notify,
    slots: Arc<tokio::sync::Semaphore>,
    pub(crate) stats: Stats,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The delay before attempt `attempt + 1`: 1 s doubling, capped at 5 min, ±20 % jitter.
fn backoff(attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let base = FIRST_RETRY.saturating_mul(2u32.saturating_pow(exp)).min(MAX_RETRY);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 401) as f64 / 1000.0 + 0.8;
    base.mul_f64(jitter)
}

fn client(fetch: &FetchConfig, options: &WebhookOptions) -> reqwest::Client {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(options.timeout.min(Duration::from_secs(5)))
        .timeout(options.timeout)
        .user_agent(concat!("catalog-bff-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { allow: fetch.url_allow.clone() }))
        // Redirects are not followed: a 301/302/303 would be re-sent as a GET without the body
        // (and its 2xx recorded as delivered), and the signed headers would go to another
        // origin. A 3xx is a failure and retried, as Standard Webhooks senders do.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the HTTP client for webhooks; deliveries will fail");
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(GuardedResolver { allow: Arc::new(Default::default()) }))
                .build()
                .unwrap_or_default()
        })
}

impl Deliverer {
    pub(crate) fn new(db: Db, fetch: FetchConfig, options: WebhookOptions, replica: String) -> Deliverer {
        let client = client(&fetch, &options);
        let slots = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
        Deliverer {
            db,
            fetch,
            options,
            replica,
            client,
            wake: tokio::sync::Notify::new(),
            slots,
            stats: Stats::default(),
        }
    }

    pub(crate) fn options(&self) -> &WebhookOptions {
        &self.options
    }

    pub(crate) fn fetch(&self) -> &FetchConfig {
        &self.fetch
    }

    /// Something is due now (queued here): look at once instead of at the next poll.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown`. `changed` is called after an attempt was recorded (the API's
    /// response cache keys on it).
    pub(crate) async fn run(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        changed: Arc<dyn Fn() + Send + Sync>,
    ) {
        let mut failing = false;
        let mut round: u64 = 0;
        let mut stamp = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.options.poll) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            round += 1;
            // Several replicas: another one may have changed a receiver or a delivery; the
            // deliveries view cached here must not outlive that (one replica sees its own).
            if self.db.is_postgres()
                && let Ok(now) = self.db.webhooks_stamp().await
                && stamp.replace(now).is_some_and(|before| before != now)
            {
                changed();
            }
            if round % 3600 == 1 {
                // Finished deliveries are kept a week for the view, then dropped.
                let week = ms(Duration::from_secs(7 * 24 * 3600));
                if let Err(e) = self.db.prune_deliveries(now_ms() - week).await {
                    tracing::debug!(error = %e, "pruning old webhook deliveries failed");
                }
            }
            loop {
                let free = self.slots.available_permits();
                if free == 0 {
                    break;
                }
                let now = now_ms();
                let lease_until = now + ms(self.options.lease());
                let claimed = match self.db.claim_deliveries(&self.replica, now, lease_until, free as u64).await {
                    Ok(c) => {
                        if failing {
                            failing = false;
                            tracing::info!("webhook deliveries: the database answers again");
                        }
                        c
                    }
                    Err(e) => {
                        if !failing {
                            failing = true;
                            tracing::warn!(error = %e, "webhook deliveries: cannot claim due deliveries; retrying every poll");
                        }
                        break;
                    }
                };
                let n = claimed.len();
                for row in claimed {
                    let Ok(permit) = self.slots.clone().try_acquire_owned() else { break };
                    let this = self.clone();
                    let changed = changed.clone();
                    tokio::spawn(async move {
                        this.attempt(row).await;
                        drop(permit);
                        changed();
                        this.wake.notify_one();
                    });
                }
                if n < free {
                    break;
                }
            }
        }
    }

    /// One attempt of one claimed delivery, recorded.
    async fn attempt(&self, row: DeliveryRow) {
        let started = Instant::now();
        // The whole attempt (the receiver and secret reads too, which have bounds of their own)
        // ends well inside the claim's lease, so no other replica claims a row still being sent.
        let bound = self.options.lease().saturating_sub(Duration::from_secs(3));
        let sent = match tokio::time::timeout(bound, self.send(&row)).await {
            Ok(sent) => sent,
            Err(_) => Err((None, format!("the attempt took longer than {:.1} s (its lease)", bound.as_secs_f64()))),
        };
        let duration_ms = ms(started.elapsed());
        let now = now_ms();
        let (status, error, excerpt) = match &sent {
            Ok((status, excerpt)) => (Some(*status), None, excerpt.clone()),
            Err((status, why)) => (*status, Some(why.clone()), None),
        };
        let ok = sent.is_ok();
        let (state, next) = if ok {
            ("DELIVERED", now)
        } else if now >= row.give_up_ms {
            ("FAILED", now)
        } else {
            ("PENDING", (now + ms(backoff(row.attempts))).min(row.give_up_ms))
        };
        let outcome = AttemptOutcome {
            state,
            next_attempt_ms: next,
            status,
            duration_ms,
            error: error.clone(),
            excerpt,
            at_ms: now,
        };
        match state {
            "DELIVERED" => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(delivery = row.id, webhook = %row.webhook_id, attempt = row.attempts, duration_ms, "webhook delivered");
            }
            "FAILED" => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(delivery = row.id, webhook = %row.webhook_id, attempt = row.attempts, error = ?error, "webhook delivery given up (--webhook-retry-for passed)");
            }
            _ => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(delivery = row.id, webhook = %row.webhook_id, attempt = row.attempts, status = ?status, error = ?error, retry_in_ms = next - now, "webhook delivery failed; will retry");
            }
        }
        // Recorded until it sticks or the lease is gone: a 2xx that was not recorded would be
        // sent again by whoever claims the row after the lease.
        let lease_end = Instant::now()
            + self.options.lease().saturating_sub(Duration::from_millis(started.elapsed().as_millis() as u64));
        let mut delay = Duration::from_millis(200);
        loop {
            match self.db.finish_delivery(row.id, &self.replica, row.attempts, &outcome).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        delivery = row.id,
                        "webhook delivery: not recorded (this replica lost the lease, or the receiver was deleted meanwhile)"
                    );
                    return;
                }
                Err(e) if Instant::now() + delay < lease_end => {
                    tracing::warn!(delivery = row.id, error = %e, "webhook delivery: cannot record the outcome; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(delivery = row.id, error = %e, "webhook delivery: could not record the outcome before the lease ended; it will be sent again");
                    return;
                }
            }
        }
    }

    /// Sends one delivery: `Ok((status, excerpt))` on a 2xx, else `Err((status, why))`.
    async fn send(&self, row: &DeliveryRow) -> Result<(i32, Option<String>), (Option<i32>, String)> {
        let hook = match self.db.webhook(&row.webhook_id).await {
            Ok(Some(h)) => h,
            Ok(None) => return Err((None, "the receiver was deleted".into())),
            Err(e) => return Err((None, format!("reading the receiver: {e}"))),
        };
        let url = match reqwest::Url::parse(&hook.url) {
            Ok(u) => u,
            Err(e) => return Err((None, format!("invalid URL: {e}"))),
        };
        // IP literals never reach the resolver: checked here, as for url sources.
        if let Err(msg) = check_url(&self.fetch.url_allow, &url) {
            return Err((None, format!("refused by the outbound guard: {msg}")));
        }
        let secret = crate::fetch::read_secret(&self.fetch, &hook.secret_name, &hook.secret_key, None)
            .await
            .map_err(|d| (None, format!("the signing secret: {}", d.message)))?;
        let key = signing::key_of(&secret).map_err(|why| (None, format!("the signing secret: {why}")))?;
        let ts = chrono::Utc::now().timestamp();
        let sig = signing::signature(&key, &row.msg_id, ts, &row.payload);
        let req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &row.msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(row.payload.clone());
        let timeout = self.options.timeout;
        let answer = tokio::time::timeout(timeout, async {
            let resp = req.send().await?;
            let status = resp.status();
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let Ok(c) = chunk else { break };
                body.extend_from_slice(&c[..c.len().min(READ_BYTES - body.len())]);
                if body.len() >= READ_BYTES {
                    break;
                }
            }
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        match answer {
            Err(_) => Err((None, format!("no answer within {:.1} s (--webhook-timeout)", timeout.as_secs_f64()))),
            Ok(Err(e)) => {
                let why = match find_refusal(&e) {
                    Some(m) => format!("refused by the outbound guard: {m}"),
                    None if e.is_timeout() => {
                        format!("no answer within {:.1} s (--webhook-timeout)", timeout.as_secs_f64())
                    }
                    None => error_chain(&e),
                };
                Err((None, why))
            }
            Ok(Ok((status, body))) => {
                let code = i32::from(status.as_u16());
                let excerpt = excerpt(&body);
                if status.is_success() {
                    Ok((code, excerpt))
                } else {
                    let mut why = format!("HTTP {status}");
                    if status.is_redirection() {
                        why.push_str(" (redirects are not followed: register the final URL)");
                    }
                    if let Some(e) = excerpt {
                        why.push_str(": ");
                        why.push_str(&e);
                    }
                    Err((Some(code), why))
                }
            }
        }
    }
}

/// The start of a receiver's answer as text, cut at [`EXCERPT_BYTES`] on a char boundary.
fn excerpt(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]);
    let text = text.trim_end_matches('\u{FFFD}');
    Some(text.to_string())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let d1 = backoff(1);
        assert!(d1 >= Duration::from_millis(800) && d1 <= Duration::from_millis(1200), "{d1:?}");
        let d4 = backoff(4);
        assert!(d4 >= Duration::from_millis(6400) && d4 <= Duration::from_millis(9600), "{d4:?}");
        assert!(backoff(40) <= MAX_RETRY.mul_f64(1.2));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt(b""), None);
        assert_eq!(excerpt(&[b'a'; 5000]).map(|s| s.len()), Some(EXCERPT_BYTES));
    }
}
