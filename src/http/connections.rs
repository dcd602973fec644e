//! The accept loop, and the discipline every connection is held to.
//!
//! axum's `serve` is hyper's HTTP/1 and HTTP/2 with upgrades and a graceful shutdown, and
//! nothing more: a connection may stay open for ever sending nothing, send its head a byte at
//! a time, and one client may open as many as the process has file descriptors, after which
//! `accept` fails with EMFILE for everyone. This loop serves connections the same way
//! (hyper-util's auto builder) and adds what neither axum nor hyper has a setting for
//! (hand-written for that reason; each piece is a few atomics per connection):
//!
//! - **Admission.** A budget of open connections derived from the file-descriptor limit
//!   ([`raise_fd_limit`], [`ConnectionLimits::from_fd_limit`]) and a cap per client address
//!   (`--max-connections-per-ip`). With the budget spent, a new connection takes the place of
//!   the longest-open *idle* one (nothing in progress, no request head arriving), which is
//!   closed: a flood of silent connections cannot keep anyone out, and a keep-alive client
//!   whose idle connection is closed simply opens another. A connection over the per-address
//!   cap, or over the budget with no idle connection to replace, is served by
//!   [`serve_refused`]: one HTTP/1 request, answered `503` with `Retry-After`, except
//!   `/healthz` and `/readyz`, which are answered for real so probes keep working during a
//!   flood. Past a small overflow pool it is closed at once, before it costs anything.
//! - **`--header-timeout`.** A connection's first request must arrive within it, and a request
//!   head, from its first byte, must be complete within it; else `408` (HTTP/1) and close.
//! - **`--idle-timeout`.** A connection with no request in progress that has neither read a new
//!   request nor written anything for this long is closed (HTTP/2: GOAWAY).
//!
//! The body deadline (`--body-timeout`) belongs to the handlers, which read bodies
//! (`http::body`). A connection's admission ticket lives in its IO, so a WebSocket keeps
//! counting against the budget and its address after the upgrade.

use catalog_api::ErrorCode;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How connections are admitted and how long they may dawdle.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// The first request of a connection, and every request head from its first byte, must
    /// arrive within this (`--header-timeout`).
    pub header_timeout: Duration,
    /// A connection with nothing in progress is closed after this long without traffic
    /// (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// Connections open at once from one client address (`--max-connections-per-ip`).
    pub max_per_ip: usize,
    /// Connections served at once, from all addresses.
    pub max_open: usize,
    /// Refused connections answered (503, or a probe) at once; past these they are closed.
    pub max_refused: usize,
    /// Put the client's address in each request ([`PeerAddr`]): for the per-address limit on
    /// failed authentications, so only when there is authentication (it costs a request's
    /// extension map).
    pub tag_peer: bool,
}

/// The client address of a request (when [`ConnectionLimits::tag_peer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_per_ip: 256,
            max_open: 4096,
            max_refused: 64,
            tag_peer: false,
        }
    }
}

/// File descriptors kept for everything but client connections (database pool, catalog files,
/// url fetches, the Kubernetes client, log files): an eighth of the limit, at least 64 and at
/// most 1024.
fn reserved_fds(limit: u64) -> u64 {
    (limit / 8).clamp(64, 1024)
}

impl ConnectionLimits {
    /// The budget for a soft file-descriptor limit `fds`: what is not reserved, less the pool
    /// for answering refused connections (at most 64).
    pub fn from_fd_limit(fds: u64, header_timeout: Duration, idle_timeout: Duration, max_per_ip: usize) -> Self {
        let usable = fds.saturating_sub(reserved_fds(fds)).max(16);
        let max_refused = (usable / 32).clamp(4, 64);
        ConnectionLimits {
            header_timeout,
            idle_timeout,
            max_per_ip: max_per_ip.max(1),
            max_open: usize::try_from(usable - max_refused).unwrap_or(usize::MAX),
            max_refused: usize::try_from(max_refused).unwrap_or(64),
            tag_peer: false,
        }
    }
}

/// The process's file-descriptor limits before and after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug)]
pub struct FdLimits {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a container's default soft limit is
/// often 1024 while the hard one is far higher) and returns both. On failure the limits stay
/// as they were and are returned as they are.
pub fn raise_fd_limit() -> FdLimits {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return FdLimits { soft_before: 1024, soft: 1024, hard: 1024 };
    }
    let before = lim.rlim_cur;
    // RLIM_INFINITY as a soft limit is refused by Linux for NOFILE (it must be <= nr_open).
    let target = if lim.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { lim.rlim_max };
    if target > before {
        let raised = libc::rlimit { rlim_cur: target, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads the struct we pass; no other memory is touched.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    FdLimits { soft_before: before, soft: lim.rlim_cur, hard: lim.rlim_max }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already has `--max-connections-per-ip` open.
    PerAddress,
    /// The server has its whole budget open.
    Budget,
}

/// Open connections, per client address and in all, and what was refused.
pub struct Admission {
    limits: ConnectionLimits,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Admitted connections, oldest first, for replacing an idle one when the budget is spent.
    /// Closed ones are skipped (and pruned) as they are met.
    by_age: Mutex<std::collections::VecDeque<std::sync::Weak<Activity>>>,
    open: AtomicUsize,
    evicted: AtomicU64,
    /// Refused connections being answered, per client address.
    answering: Mutex<HashMap<IpAddr, u32>>,
    /// Replaced connections not closed yet.
    evicting: AtomicUsize,
    refused_open: AtomicUsize,
    refused_per_ip: AtomicU64,
    refused_budget: AtomicU64,
    dropped: AtomicU64,
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmissionStats {
    pub open: usize,
    pub refused_per_ip: u64,
    pub refused_budget: u64,
    /// Refused and closed at once, the overflow pool being full.
    pub dropped: u64,
    /// Idle connections closed to make room for new ones, the budget being spent.
    pub evicted: u64,
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Admission {
        Admission {
            limits,
            per_ip: Mutex::new(HashMap::new()),
            by_age: Mutex::new(std::collections::VecDeque::new()),
            open: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            answering: Mutex::new(HashMap::new()),
            evicting: AtomicUsize::new(0),
            refused_open: AtomicUsize::new(0),
            refused_per_ip: AtomicU64::new(0),
            refused_budget: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            open: self.open.load(Ordering::Relaxed),
            refused_per_ip: self.refused_per_ip.load(Ordering::Relaxed),
            refused_budget: self.refused_budget.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, activity: &Arc<Activity>) -> Result<Ticket, Refusal> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.get(&ip).copied().unwrap_or(0);
        if count as usize >= self.limits.max_per_ip {
            self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerAddress);
        }
        // A replaced connection gives its place back when its task ends: until then the
        // process holds a few more than the budget, which the reserved descriptors cover.
        if self.open.load(Ordering::Relaxed) >= self.limits.max_open && !self.evict_idle() {
            self.refused_budget.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Budget);
        }
        per_ip.insert(ip, count + 1);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let mut by_age = self.by_age.lock().unwrap_or_else(|p| p.into_inner());
        // Closed connections' entries (each keeps its `Activity` allocated) are dropped once
        // they outnumber the open ones: the queue stays proportional to what is open.
        if by_age.len() >= open.saturating_mul(2).max(64) {
            by_age.retain(|w| w.strong_count() > 0);
        }
        by_age.push_back(Arc::downgrade(activity));
        Ok(Ticket { admission: self.clone(), ip })
    }

    /// Closes the longest-open idle connection, looking at most at 256 of them (busy ones go
    /// to the back). Whether one was found. A replaced connection holds its descriptor until
    /// its task has closed it, so at most [`EVICTIONS_IN_FLIGHT`] are replaced at a time: the
    /// process never holds more than that beyond the budget.
    fn evict_idle(&self) -> bool {
        if self.evicting.load(Ordering::Acquire) >= EVICTIONS_IN_FLIGHT {
            return false;
        }
        let mut by_age = self.by_age.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..256 {
            let Some(weak) = by_age.pop_front() else { return false };
            let Some(activity) = weak.upgrade() else { continue };
            if activity.detached.load(Ordering::Acquire) {
                // A WebSocket now: never replaced, and no longer looked at.
                continue;
            }
            if activity.is_idle()
                && activity.evict.compare_exchange(OPEN, EVICTING, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                self.evicting.fetch_add(1, Ordering::AcqRel);
                activity.wake.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            by_age.push_back(weak);
        }
        false
    }

    /// A place in the overflow pool, which answers refused connections; at most
    /// [`REFUSALS_PER_ADDRESS`] of them per client address, so one address cannot fill it and
    /// leave the probes of others unanswered.
    fn overflow(self: &Arc<Self>, ip: IpAddr) -> Option<OverflowTicket> {
        let mut refused = self.answering.lock().unwrap_or_else(|p| p.into_inner());
        let mine = refused.get(&ip).copied().unwrap_or(0);
        if mine >= REFUSALS_PER_ADDRESS || self.refused_open.load(Ordering::Relaxed) >= self.limits.max_refused {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        refused.insert(ip, mine + 1);
        self.refused_open.fetch_add(1, Ordering::Relaxed);
        Some(OverflowTicket { admission: self.clone(), ip })
    }
}

/// An admitted connection's place; given back when the connection (or the WebSocket it
/// became) closes.
struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut per_ip = self.admission.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`Activity::evict`]'s states.
const OPEN: u8 = 0;
const EVICTING: u8 = 1;
const CLOSED: u8 = 2;

/// Connections being closed to make room at any one time (see [`Admission::evict_idle`]).
const EVICTIONS_IN_FLIGHT: usize = 16;

/// Refused connections of one client address answered at once.
const REFUSALS_PER_ADDRESS: u32 = 4;

struct OverflowTicket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for OverflowTicket {
    fn drop(&mut self) {
        let mut refused = self.admission.answering.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = refused.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                refused.remove(&self.ip);
            }
        }
        self.admission.refused_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// "None" for the millisecond timestamps below.
const NEVER: u64 = u64::MAX;

/// The clock of [`Activity`]: milliseconds since [`EPOCH`], advanced every [`TICK`] by one task
/// ([`tick_clock`]), so the IO and the request counters read one atomic instead of the system
/// clock on every write and response. Deadlines are seconds; a tick's error does not matter.
static COARSE_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
const TICK: Duration = Duration::from_millis(50);

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`EPOCH`], exactly (the watchdog's reading). The count starts at
/// [`CLOCK_START_MS`], so that 0 (a connection that has written nothing yet) is long past.
fn precise_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(NEVER / 2).saturating_add(CLOCK_START_MS)
}

const CLOCK_START_MS: u64 = 60_000;

/// Milliseconds since [`EPOCH`], to within [`TICK`].
fn coarse_ms() -> u64 {
    COARSE_MS.load(Ordering::Relaxed)
}

/// Advances [`COARSE_MS`] until the returned task is aborted.
fn tick_clock() -> tokio::task::JoinHandle<()> {
    COARSE_MS.store(precise_ms(), Ordering::Relaxed);
    tokio::spawn(async {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            COARSE_MS.store(precise_ms(), Ordering::Relaxed);
        }
    })
}

/// One connection's traffic, shared by its IO, its service and its watchdog. Times are
/// milliseconds since [`EPOCH`], read from the coarse clock.
struct Activity {
    /// When the connection was accepted.
    born: u64,
    /// Requests whose response has not been sent in full.
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// When `in_flight` last fell to 0.
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived (HTTP/1), or [`NEVER`].
    head_started: AtomicU64,
    last_write: AtomicU64,
    http2: AtomicBool,
    /// Responses whose head is sent and whose (streamed) body is still being written.
    responding: AtomicU32,
    /// hyper is done with the connection (it closed, or it was upgraded to a WebSocket).
    detached: AtomicBool,
    /// Set by the watchdog: the IO answers 408 and ends the connection.
    abort: AtomicBool,
    /// [`OPEN`], [`EVICTING`] (set by [`Admission::evict_idle`]: closed to make room) or
    /// [`CLOSED`] (its socket is gone).
    evict: std::sync::atomic::AtomicU8,
    /// Wakes the watchdog for an eviction.
    wake: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Activity {
        let now = coarse_ms();
        Activity {
            born: now,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(NEVER),
            // Nothing written yet: a new silent connection is as idle as an old one.
            last_write: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            responding: AtomicU32::new(0),
            detached: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            evict: std::sync::atomic::AtomicU8::new(OPEN),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Nothing in progress and no request head arriving: closing it loses nothing.
    /// Served by hyper, nothing in progress, no request head arriving, nothing written for a
    /// second (an exact-size body is still being written after its request left `in_flight`):
    /// closing it loses nothing. An upgraded connection (a WebSocket) is never idle here: its
    /// socket is no longer this module's to close.
    fn is_idle(&self) -> bool {
        !self.detached.load(Ordering::Acquire)
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == NEVER
            && coarse_ms().saturating_sub(self.last_write.load(Ordering::Relaxed)) >= 1000
    }

    fn at(&self, ms: u64) -> Instant {
        epoch() + Duration::from_millis(ms.saturating_sub(CLOCK_START_MS))
    }

    /// What the watchdog should do now.
    fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let now = precise_ms();
        let header = u64::try_from(limits.header_timeout.as_millis()).unwrap_or(NEVER / 2);
        let idle = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(NEVER / 2);
        let last_write = self.last_write.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Acquire);
        if in_flight > 0 {
            // A handler still working has its own deadlines. Responses whose bodies are being
            // written (streams: SSE, compressed bodies) must make progress: a client that
            // stops reading holds the connection, and the memory of what is left to send,
            // until then.
            let writing_only = self.responding.load(Ordering::Acquire) >= in_flight;
            let stalled_at = last_write.saturating_add(idle);
            if writing_only && now >= stalled_at {
                return Verdict::Stalled;
            }
            let next = if writing_only { stalled_at } else { now.saturating_add(idle.min(header).max(100)) };
            return Verdict::Wait(self.at(next));
        }
        let http2 = self.http2.load(Ordering::Relaxed);
        let head = self.head_started.load(Ordering::Acquire);
        let (deadline, expired) = if self.requests.load(Ordering::Acquire) == 0 {
            let slow = !http2 && head != NEVER;
            (self.born.saturating_add(header), if slow { Verdict::SlowHead } else { Verdict::Idle })
        } else if !http2 && head != NEVER {
            // A pipelined head read while the previous response was still being written: its
            // time starts when that response stopped being written.
            (head.max(last_write).saturating_add(header), Verdict::SlowHead)
        } else {
            let quiet = self.idle_since.load(Ordering::Acquire).max(self.last_write.load(Ordering::Relaxed));
            (quiet.saturating_add(idle), Verdict::Idle)
        };
        if now >= deadline { expired } else { Verdict::Wait(self.at(deadline)) }
    }
}

enum Verdict {
    Wait(Instant),
    /// Nothing in progress for too long: close gracefully.
    Idle,
    /// A response body that has not moved for the idle timeout: close.
    Stalled,
    /// A request head that did not arrive in time: 408, then close.
    SlowHead,
}

/// How long a connection answered 408 is kept to drain what the client still sends (so the
/// close does not reset the connection before the client read the answer).
const LINGER: Duration = Duration::from_secs(2);

const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 143\r\n\r\n{\"errors\":[{\"message\":\"the request head did not arrive within the header timeout (--header-timeout)\",\"extensions\":{\"code\":\"REQUEST_TIMEOUT\"}}]}";

impl Drop for Io {
    fn drop(&mut self) {
        // The socket closes now: a replaced connection's place is free.
        if self.activity.evict.swap(CLOSED, Ordering::AcqRel) == EVICTING {
            self._ticket.admission.evicting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A connection's socket: counts its traffic in [`Activity`], holds its admission ticket, and
/// answers 408 when the watchdog says so.
struct Io {
    stream: TcpStream,
    activity: Arc<Activity>,
    first_read: bool,
    abort: Option<Abort>,
    _ticket: Ticket,
}

struct Abort {
    written: usize,
    shut: bool,
    until: Instant,
}

impl Io {
    /// Notes `n` bytes written. Writes under 64 bytes do not count as traffic: HTTP/2
    /// acknowledges a client's PINGs and SETTINGS with frames of 9 to 17 bytes, and a client
    /// that pings must not keep an idle connection open for ever (a response head is longer).
    fn wrote(&self, n: usize) {
        if n >= 64 {
            self.activity.last_write.store(coarse_ms(), Ordering::Relaxed);
        }
    }

    /// Writes the 408, shuts the write side, then reads and discards until the client closes
    /// or [`LINGER`] passed; then fails the read, which ends the connection.
    fn poll_abort(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let abort = self.abort.get_or_insert_with(|| Abort { written: 0, shut: false, until: Instant::now() + LINGER });
        let ended = || Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "request head timed out")));
        while abort.written < TIMEOUT_408.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &TIMEOUT_408[abort.written..]) {
                Poll::Ready(Ok(n)) if n > 0 => abort.written += n,
                Poll::Pending => break,
                _ => return ended(),
            }
        }
        if abort.written < TIMEOUT_408.len() {
            return if Instant::now() >= abort.until { ended() } else { Poll::Pending };
        }
        if !abort.shut {
            match Pin::new(&mut self.stream).poll_shutdown(cx) {
                Poll::Pending => return Poll::Pending,
                _ => abort.shut = true,
            }
        }
        let mut scratch = [0u8; 2048];
        for _ in 0..32 {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Pending if Instant::now() < abort.until => return Poll::Pending,
                _ => return ended(),
            }
        }
        ended()
    }
}

impl AsyncRead for Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.activity.abort.load(Ordering::Acquire) {
            return this.poll_abort(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let a = &this.activity;
            if this.first_read {
                this.first_read = false;
                const PREFACE: &[u8] = b"PRI * HTTP/2.0";
                let n = read.len().min(PREFACE.len());
                a.http2.store(read[..n] == PREFACE[..n], Ordering::Relaxed);
            }
            if a.in_flight.load(Ordering::Acquire) == 0 && a.head_started.load(Ordering::Relaxed) == NEVER {
                a.head_started.store(coarse_ms(), Ordering::Release);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, buf))?;
        self.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs))?;
        self.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The application service of one connection: counts requests in progress.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: Option<PeerAddr>,
}

/// A request in progress; dropped when its response is sent (or given up).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_started.store(NEVER, Ordering::Release);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(coarse_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let guard = InFlight::start(&self.activity);
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        TrackedFuture { inner: self.inner.call(req.map(Body::new)), guard: Some(guard) }
    }
}

pin_project_lite::pin_project! {
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<Response<Body>, std::convert::Infallible>>,
{
    type Output = Result<Response<Body>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        // A body of known length is written right after this, and writes count as traffic; a
        // stream (SSE, a compressed body) keeps the request in progress until it ends.
        use axum::body::HttpBody;
        if resp.body().size_hint().exact().is_some() || resp.body().is_end_stream() {
            drop(guard);
            return Poll::Ready(Ok(resp));
        }
        if let Some(g) = &guard {
            // Its progress is measured from now: the head is about to be written.
            g.0.last_write.store(coarse_ms(), Ordering::Relaxed);
            g.0.responding.fetch_add(1, Ordering::AcqRel);
        }
        Poll::Ready(Ok(resp.map(|body| Body::new(GuardedBody { inner: body, _guard: guard.map(Responding) }))))
    }
}

/// A request whose response body is being written (see [`Activity::responding`]).
struct Responding(InFlight);

impl Drop for Responding {
    fn drop(&mut self) {
        (self.0).0.responding.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    struct GuardedBody {
        #[pin]
        inner: Body,
        _guard: Option<Responding>,
    }
}

impl axum::body::HttpBody for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish its requests (HTTP/2: GOAWAY) and returns when they have closed.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    admission: Arc<Admission>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let clock = tick_clock();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_error(e, &mut last_accept_error).await;
                continue;
            }
        };
        let (app, stop, done) = (app.clone(), stop_rx.clone(), done_rx.clone());
        let activity = Arc::new(Activity::new());
        match admission.admit(peer.ip(), &activity) {
            Ok(ticket) => {
                let limits = admission.limits().clone();
                let peer = limits.tag_peer.then_some(PeerAddr(peer.ip()));
                tokio::spawn(async move {
                    serve_admitted(stream, ticket, activity, peer, app, limits, stop).await;
                    drop(done);
                });
            }
            Err(why) => {
                let Some(place) = admission.overflow(peer.ip()) else {
                    // The overflow pool is full too: close now, costing nothing more.
                    drop(stream);
                    continue;
                };
                let limits = admission.limits().clone();
                tokio::spawn(async move {
                    serve_refused(stream, peer, why, app, &limits).await;
                    drop((place, done));
                });
            }
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(done_rx);
    done_tx.closed().await;
    clock.abort();
}

/// `accept` failed: a connection that died in the backlog is nothing; anything else (EMFILE
/// when the budget is set above what the process really has) is logged at most every 10 s
/// and waited out briefly, as hyper used to.
async fn accept_error(e: std::io::Error, last: &mut Option<Instant>) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
        tracing::error!(error = %e, "accepting a connection failed; lower --max-connections-per-ip or raise the file-descriptor limit");
        *last = Some(Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// An admitted connection: hyper-util's auto builder (HTTP/1 or HTTP/2, upgrades), with the
/// watchdog of [`Activity::verdict`] beside it.
async fn serve_admitted<S>(
    stream: TcpStream,
    ticket: Ticket,
    activity: Arc<Activity>,
    peer: Option<PeerAddr>,
    app: S,
    limits: ConnectionLimits,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(Io { stream, activity: activity.clone(), first_read: true, abort: None, _ticket: ticket });
    let service = TowerToHyperService::new(Tracked { inner: app, activity: activity.clone(), peer });
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header timeout restarts whenever a keep-alive connection goes idle (so it
    // would be the idle timeout too) and closes without an answer: the watchdog does both.
    builder.http1().header_read_timeout(None);
    // As axum's `serve`: the CONNECT protocol is what WebSockets over HTTP/2 need.
    builder.http2().enable_connect_protocol();
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    // The watchdog is a task of its own, so this one polls the connection and one cheap
    // receiver on every wake-up, not timers and notifications (a cached read wakes it a few
    // times; polling three more futures each time was ~4% of its instructions).
    let (act_tx, mut act) = tokio::sync::oneshot::channel();
    let watchdog = tokio::spawn(watch_connection(activity.clone(), limits.clone(), stop, act_tx));
    let action = tokio::select! {
        biased;
        _ = conn.as_mut() => None,
        a = &mut act => a.ok(),
    };
    watchdog.abort();
    let Some(action) = action else {
        // Closed, or upgraded: a WebSocket's socket lives on in its own task.
        activity.detached.store(true, Ordering::Release);
        return;
    };
    let grace = match action {
        Action::Close(grace) => {
            conn.as_mut().graceful_shutdown();
            grace
        }
        // The next poll of the connection reads, and the IO answers instead.
        Action::Answer408 => {
            activity.abort.store(true, Ordering::Release);
            LINGER + Duration::from_millis(100)
        }
    };
    let _ = tokio::time::timeout(grace, conn).await;
    activity.detached.store(true, Ordering::Release);
}

/// How long, at server shutdown, a connection's requests may take to finish: less than the
/// 10 s after which the process exits whatever is open (`server.rs`), so a clean stop still
/// gets to its last checkpoint.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// What the watchdog asks the connection's task to do (once).
enum Action {
    /// Close gracefully (no new request; HTTP/2: GOAWAY), and drop it after this long anyway.
    Close(Duration),
    /// Answer a request head that did not arrive in time with 408 and close.
    Answer408,
}

/// A connection's watchdog: sleeps until its next deadline ([`Activity::verdict`]), an
/// eviction or the server stopping, then asks for an [`Action`] and ends.
async fn watch_connection(
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    act: tokio::sync::oneshot::Sender<Action>,
) {
    // Deadlines move as requests come and go (a response starts to stall, a head starts to
    // arrive), so the watchdog looks at least every half of the shorter timeout: whatever
    // happens is acted on within one and a half times its timeout.
    let every = (limits.header_timeout.min(limits.idle_timeout) / 2).max(Duration::from_millis(50));
    let mut at = Instant::now() + every;
    let action = loop {
        if *stop.borrow() {
            // Server shutdown: requests in progress finish.
            break Action::Close(SHUTDOWN_GRACE);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = activity.wake.notified() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    break Action::Close(SHUTDOWN_GRACE);
                }
                continue;
            }
        }
        if activity.evict.load(Ordering::Acquire) == EVICTING {
            break Action::Close(Duration::from_secs(1));
        }
        match activity.verdict(&limits) {
            Verdict::Wait(next) => at = next.min(Instant::now() + every),
            Verdict::Idle => break Action::Close(limits.header_timeout),
            // Its response cannot finish: a graceful close would wait for it.
            Verdict::Stalled => break Action::Close(Duration::from_millis(100)),
            Verdict::SlowHead => break Action::Answer408,
        }
    };
    let _ = act.send(action);
}

/// How long a refused connection may take to send its request.
const REFUSED_HEAD_TIMEOUT: Duration = Duration::from_millis(500);

/// A connection over a limit: one HTTP/1 request, whose head must come within
/// [`REFUSED_HEAD_TIMEOUT`]. Probes are
/// answered by the application; anything else gets 503 with `Retry-After`.
async fn serve_refused<S>(stream: TcpStream, peer: SocketAddr, why: Refusal, app: S, limits: &ConnectionLimits)
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let message = match why {
        Refusal::PerAddress => format!(
            "too many connections from {}: the limit is {} per client address (--max-connections-per-ip); \
             close some or retry in a second",
            peer.ip(),
            limits.max_per_ip
        ),
        Refusal::Budget => {
            format!("the server has all the connections it can hold open ({}); retry in a second", limits.max_open)
        }
    };
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let mut app = app.clone();
        let message = message.clone();
        async move {
            let path = req.uri().path();
            if req.method() == axum::http::Method::GET && (path == "/healthz" || path == "/readyz") {
                use tower::ServiceExt;
                return app.ready().await?.call(req.map(Body::new)).await;
            }
            let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": ErrorCode::Unavailable.as_str(), "retryAfter": 1}}]});
            let mut resp = Response::new(Body::from(body.to_string()));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // A client sends its request as soon as it connected; a refused connection that does not
    // is closed quickly, so silent ones cannot keep the pool (and probes) waiting.
    http1.timer(TokioTimer::new()).header_read_timeout(REFUSED_HEAD_TIMEOUT).keep_alive(false);
    let conn = http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_room_for_the_rest_of_the_process() {
        let l = ConnectionLimits::from_fd_limit(1024, Duration::from_secs(10), Duration::from_secs(60), 256);
        // 128 reserved, 28 for refusals.
        assert_eq!((l.max_open, l.max_refused), (1024 - 128 - 28, 28));
        let l = ConnectionLimits::from_fd_limit(1 << 20, Duration::from_secs(10), Duration::from_secs(60), 256);
        assert_eq!((l.max_open, l.max_refused), ((1 << 20) - 1024 - 64, 64));
        let l = ConnectionLimits::from_fd_limit(10, Duration::from_secs(10), Duration::from_secs(60), 0);
        assert!(l.max_open >= 1 && l.max_per_ip == 1, "{l:?}");
    }

    #[test]
    fn the_408_states_its_length() {
        let text = std::str::from_utf8(TIMEOUT_408).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "REQUEST_TIMEOUT");
    }
}
