//! Bounds on the ports: how many connections each listener holds (and which one gives way when
//! it is full), how many requests and how many body bytes are in flight, and how long a
//! connection may sit without a request or with an answer it does not take.
//!
//! With `failurePolicy: Fail` every Spark pod waits on this server and its port is reachable
//! from every pod, so nothing a client does may take the process past its memory limit or its
//! file descriptors. What is over a bound is refused quickly and counted; it never waits
//! without limit. The defaults sit well above what a busy healthy cluster sends (see
//! docs/reliability.md, "Bounds on the ports", for the figures behind them).
//!
//! Nothing a client declares, or fails to send, holds a shared resource: body bytes are
//! charged as they arrive (a Content-Length reserves nothing), a request slot is taken only
//! once the whole body is in, and every hold ends at a deadline. This module never reads a
//! socket itself; the routes and the connection code call it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::{IdleLabels, Metrics, ShedLabels};

/// Why a request was refused with 503.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// As many requests as allowed were already waiting for a request slot.
    #[error(
        "the server is overloaded: {queued} requests are already waiting for one of the \
         {in_flight} request slots; retry later"
    )]
    QueueFull {
        /// The queue's length.
        queued: usize,
        /// The cap on requests in flight.
        in_flight: usize,
    },
    /// No request slot came free within the queue wait.
    #[error(
        "the server is overloaded: all {in_flight} request slots stayed busy for {wait:?}; \
         retry later"
    )]
    Requests {
        /// The cap on requests in flight.
        in_flight: usize,
        /// How long the request waited.
        wait: Duration,
    },
    /// The body is larger than the whole budget, so it can never fit.
    #[error(
        "the server is overloaded: a body of {bytes} bytes is larger than all {budget} bytes of \
         request bodies it holds at once; retry later"
    )]
    TooLarge {
        /// What the request declared or sent.
        bytes: usize,
        /// The budget.
        budget: usize,
    },
    /// The body's bytes did not fit in the budget within the queue wait.
    #[error(
        "the server is overloaded: a body of {bytes} bytes did not fit in the {budget} bytes of \
         request bodies it holds at once within {wait:?}; retry later"
    )]
    Bytes {
        /// What the request asked for (so far).
        bytes: usize,
        /// The budget.
        budget: usize,
        /// How long the request waited.
        wait: Duration,
    },
    /// As many bodies as allowed were already waiting for room in the byte budget.
    #[error(
        "the server is overloaded: {waiting} request bodies are already waiting for room in \
         the {budget} bytes of request bodies it holds at once; retry later"
    )]
    BytesQueueFull {
        /// Bodies waiting.
        waiting: usize,
        /// The budget.
        budget: usize,
    },
    /// Every byte of the budget was held by bodies waiting for more, so none could finish; the
    /// newest of them gave its bytes to the older ones.
    #[error(
        "the server is overloaded: the {budget} bytes of request bodies it holds at once were \
         all taken by bodies still arriving, and this one ({bytes} bytes so far), the newest, \
         gave way so the others can finish; retry later"
    )]
    Crowded {
        /// What this body held.
        bytes: usize,
        /// The budget.
        budget: usize,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The bounds, as the `serve` flags set them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections the webhook listener holds at once; past it, a connection that holds
    /// nothing useful gives way to the new one, and without one the new one is closed at
    /// accept.
    pub max_connections: usize,
    /// Most requests answered at once on the webhook port (taken once a body is complete);
    /// past it, a request waits up to `queue_timeout` (at most this many wait), then gets
    /// 503.
    pub max_requests_in_flight: usize,
    /// Most request body bytes held at once: charged as they arrive, kept while the request
    /// is answered and, as the answer's size, until the answer is handed to the connection.
    pub max_body_bytes_in_flight: usize,
    /// Longest wait for a request slot or for room for body bytes before 503.
    pub queue_timeout: Duration,
    /// A connection that sends no request this long after its TLS handshake is closed.
    pub first_request_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Longest time an answer may take to be handed over once it is ready, and a socket
    /// write may stay blocked; past it the connection is closed.
    pub write_timeout: Duration,
    /// Most connections the admin listener holds at once.
    pub admin_max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_requests_in_flight: 256,
            max_body_bytes_in_flight: 32 * 1024 * 1024,
            queue_timeout: Duration::from_secs(1),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(5),
            admin_max_connections: 32,
        }
    }
}

/// File descriptors the process needs besides connections: listeners, the policy and
/// certificate files, the Kubernetes client's connections, the runtime's own.
const RESERVED_FILES: usize = 64;

impl Limits {
    /// These limits with the webhook's connection cap lowered, if needed, so that both caps
    /// fit under `open_files` (the process's soft RLIMIT_NOFILE): past that, accept fails
    /// before the cap is reached and nothing counts the refusals. Returns the note to log
    /// when it lowered the cap.
    pub fn fit_open_files(mut self, open_files: Option<usize>) -> (Self, Option<String>) {
        let Some(open_files) = open_files else {
            return (self, None);
        };
        let room = open_files
            .saturating_sub(RESERVED_FILES + self.admin_max_connections)
            .max(1);
        if self.max_connections <= room {
            return (self, None);
        }
        let note = format!(
            "--max-connections {} does not fit in the open-files limit ({open_files}, less \
             {RESERVED_FILES} for the process and --admin-max-connections {}); using {room}. \
             Raise the container's nofile limit to keep the cap",
            self.max_connections, self.admin_max_connections
        );
        self.max_connections = room;
        (self, Some(note))
    }
}

/// The soft limit on open files, from `/proc/self/limits` (`None` where there is none).
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// HTTP/2 and HTTP/1 settings of both listeners. Chosen, not tunable: each is explained in
/// docs/reliability.md.
pub mod http {
    use std::time::Duration;

    /// SETTINGS_MAX_CONCURRENT_STREAMS. RFC 9113 recommends at least 100, but a stream
    /// holds no request slot while its body arrives, nor once its answer is ready, so the
    /// streams of all connections (the cap times this) are what a client can make the server
    /// hold besides the budget: about 12 KiB each while a body is awaited, measured. The
    /// apiserver calls webhooks over HTTP/1.1, one request per connection; an HTTP/2 client
    /// with more to send waits for a stream or opens another connection.
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 4;
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the apiserver's headers are well under 1 KiB.
    pub const H2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
    /// Initial stream window: what a client may send on one stream before the server reads
    /// (RFC 9113's default, 65,535, rounded up). The apiserver calls webhooks over HTTP/1.1;
    /// for other clients a 7 MiB body still arrives in a few ms over a cluster network.
    pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
    /// Initial connection window: what a client may send on all its streams before the server
    /// reads. Streams waiting for body budget are not read, so this is what one connection can
    /// make the server hold beyond the budget.
    pub const H2_CONNECTION_WINDOW: u32 = 128 * 1024;
    /// Streams a client may reset before they are accepted (the "rapid reset" bound).
    pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
    /// Keep-alive PING interval on an HTTP/2 connection: finds a peer that vanished.
    pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
    /// How long a PING may go unanswered before the connection is closed.
    pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
    /// HTTP/1 read buffer, which bounds a request head and what one connection can make the
    /// server hold beyond the body budget (hyper's default is about 400 KiB; the apiserver's
    /// heads are under 1 KiB).
    pub const H1_MAX_BUF_SIZE: usize = 16 * 1024;
    /// HTTP/1 header count.
    pub const H1_MAX_HEADERS: usize = 64;
}

/// A poisoned lock only means a panic elsewhere while it was held; the counts under it are
/// updated in single steps, so they are still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection cap of one listener, and the connections under it.
///
/// When the listener is full, the new connection is not refused if one under the cap holds
/// nothing useful (still in its TLS handshake, no request yet, idle between requests, or with
/// an answer its client has not taken for a while): the one that has been so the longest is
/// closed and its place goes to the new one. Refusing the new connection fails its request for
/// certain; closing an idle one fails a request only if the client reuses it at that very
/// moment. So the cap can be held only by connections with a request being read or answered,
/// each of which ends at a deadline.
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    live: Arc<Mutex<Live>>,
    open: Gauge,
    refused: Counter,
    evicted: Counter,
}

/// The connections under a cap.
#[derive(Default)]
struct Live {
    next: u64,
    slots: HashMap<u64, Arc<SlotState>>,
}

/// What the cap knows of one connection.
struct SlotState {
    inner: Mutex<SlotInner>,
    evict: Notify,
}

struct SlotInner {
    /// Since when the connection holds nothing useful (`None` while it serves a request); it
    /// may lie in the future, for an answer not yet late.
    spare_since: Option<Instant>,
    /// Its place under the cap; taken by the connection that replaces it.
    permit: Option<OwnedSemaphorePermit>,
    evicted: bool,
}

impl ConnectionCap {
    /// A cap of `max` connections on `listener` (`webhook` or `admin`), counted in `metrics`.
    pub fn new(max: usize, listener: &'static str, metrics: &Metrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            live: Arc::default(),
            open: metrics.connections_open(listener),
            refused: metrics.connections_refused(listener),
            evicted: metrics
                .idle_connections_closed
                .get_or_create(&IdleLabels {
                    listener,
                    phase: "evicted",
                })
                .clone(),
        }
    }

    /// A slot for a new connection, held as long as the connection lives; when the listener is
    /// full, the place of the connection that has held nothing useful the longest (which is
    /// told to close); `None` (and counted) when there is none.
    pub fn admit(&self) -> Option<ConnectionSlot> {
        let now = Instant::now();
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match self.take_spare(now) {
                Some(permit) => {
                    self.evicted.inc();
                    permit
                }
                None => {
                    self.refused.inc();
                    return None;
                }
            },
        };
        let state = Arc::new(SlotState {
            inner: Mutex::new(SlotInner {
                // A connection in its TLS handshake has sent nothing useful yet.
                spare_since: Some(now),
                permit: Some(permit),
                evicted: false,
            }),
            evict: Notify::new(),
        });
        let id = {
            let mut live = lock(&self.live);
            let id = live.next;
            live.next += 1;
            live.slots.insert(id, state.clone());
            id
        };
        self.open.inc();
        Some(ConnectionSlot {
            state,
            id,
            live: self.live.clone(),
            open: self.open.clone(),
        })
    }

    /// The place of the connection spare the longest (as of `now`), which is told to close.
    fn take_spare(&self, now: Instant) -> Option<OwnedSemaphorePermit> {
        let live = lock(&self.live);
        // A scan of at most the cap's connections, only when the listener is full.
        let (_, victim) = live
            .slots
            .values()
            .filter_map(|slot| {
                let inner = lock(&slot.inner);
                let since = inner.spare_since.filter(|since| *since <= now)?;
                inner.permit.as_ref()?;
                Some((since, slot))
            })
            .min_by_key(|(since, _)| *since)?;
        let permit = {
            let mut inner = lock(&victim.inner);
            inner.evicted = true;
            inner.permit.take()
        };
        victim.evict.notify_one();
        permit
    }
}

/// One admitted connection's place under the cap.
pub struct ConnectionSlot {
    state: Arc<SlotState>,
    id: u64,
    live: Arc<Mutex<Live>>,
    open: Gauge,
}

impl ConnectionSlot {
    /// Records since when the connection holds nothing useful, or `None` while it serves a
    /// request. Called by the connection as its state changes.
    pub fn set_spare_since(&self, since: Option<Instant>) {
        lock(&self.state.inner).spare_since = since;
    }

    /// Completes once the cap has given this connection's place to a new one: the connection
    /// must then close.
    pub async fn evicted(&self) {
        loop {
            let notified = self.state.evict.notified();
            if lock(&self.state.inner).evicted {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        lock(&self.live).slots.remove(&self.id);
        self.open.dec();
    }
}

/// Request slots and body bytes shared by every connection of the webhook listener.
pub struct RequestBudget {
    requests: Arc<Semaphore>,
    max_requests: usize,
    queued: AtomicUsize,
    bytes: Mutex<Pool>,
    max_bytes: usize,
    next_body: AtomicU64,
    queue_timeout: Duration,
    in_flight: Gauge,
    bytes_in_flight: Gauge,
    shed: Family<ShedLabels, Counter>,
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget")
            .field("max_requests", &self.max_requests)
            .field("max_bytes", &self.max_bytes)
            .field("queue_timeout", &self.queue_timeout)
            .finish()
    }
}

/// A body's place in the byte budget's order: when it started, then a tie-breaker.
type BodyKey = (Instant, u64);

/// How fast a body must keep arriving, on average since it was given room for its declared
/// length, to keep the room it has not filled yet. A cluster network carries a review at
/// hundreds of MB/s; a client that sends a byte and stops, or trickles, falls behind within
/// milliseconds and keeps only what it sent. Holding room this way costs a client 1 MiB/s for
/// each body.
const KEEP_ROOM_RATE: u64 = 1024 * 1024;

/// When a body given room at `granted` that has filled `filled` bytes of it since falls behind
/// [`KEEP_ROOM_RATE`].
fn room_lapses(granted: Instant, filled: usize) -> Instant {
    let micros = (filled as u64).saturating_mul(1_000_000) / KEEP_ROOM_RATE;
    granted + Duration::from_micros(micros)
}

/// The byte budget's accounting.
struct Pool {
    free: usize,
    /// Bodies waiting for room for their next chunk, by age: room goes to the oldest that
    /// fits, so the bodies that started first finish first instead of every body getting a
    /// share of the room and none of them enough.
    waiting: BTreeMap<BodyKey, Waiter>,
    /// Bytes held by the bodies in `waiting` that have no verdict yet.
    blocked: usize,
    /// Room given to bodies for the rest of their declared length, not filled yet, by when
    /// each falls behind [`KEEP_ROOM_RATE`]; counted as taken in `free`.
    rooms: BTreeMap<(Instant, BodyKey), usize>,
}

/// A body waiting for room for its next chunk.
struct Waiter {
    need: usize,
    held: usize,
    verdict: Option<Verdict>,
    wake: Arc<Notify>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Granted,
    Refused,
}

impl Pool {
    /// Gives room to the waiting bodies, oldest first, while it lasts. Then, if every byte
    /// held belongs to a body waiting for more, none of them can ever finish: the newest that
    /// holds bytes is refused, and what it gives back goes to the older ones.
    fn dispatch(&mut self, capacity: usize) {
        self.reclaim(Instant::now());
        let (mut free, mut blocked) = (self.free, self.blocked);
        for waiter in self.waiting.values_mut() {
            if waiter.verdict.is_none() && waiter.need <= free {
                free -= waiter.need;
                blocked -= waiter.held;
                waiter.verdict = Some(Verdict::Granted);
                waiter.wake.notify_one();
            }
        }
        if blocked > 0 && capacity - free == blocked {
            let newest = self
                .waiting
                .values_mut()
                .rev()
                .find(|waiter| waiter.verdict.is_none() && waiter.held > 0);
            if let Some(waiter) = newest {
                blocked -= waiter.held;
                waiter.verdict = Some(Verdict::Refused);
                waiter.wake.notify_one();
            }
        }
        (self.free, self.blocked) = (free, blocked);
    }

    /// Takes back the room of bodies that fell behind.
    fn reclaim(&mut self, now: Instant) {
        while let Some(entry) = self.rooms.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.free += entry.remove();
        }
    }

    /// Takes a body out of the queue, with the verdict it had.
    fn leave(&mut self, key: &BodyKey) -> Option<Verdict> {
        let waiter = self.waiting.remove(key)?;
        if waiter.verdict.is_none() {
            self.blocked -= waiter.held;
        }
        waiter.verdict
    }
}

impl RequestBudget {
    /// The budget `limits` describe, counted in `metrics`.
    pub fn new(limits: &Limits, metrics: &Metrics) -> Self {
        let max_bytes = limits.max_body_bytes_in_flight;
        let max_requests = limits
            .max_requests_in_flight
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            max_requests,
            queued: AtomicUsize::new(0),
            bytes: Mutex::new(Pool {
                free: max_bytes,
                waiting: BTreeMap::new(),
                blocked: 0,
                rooms: BTreeMap::new(),
            }),
            max_bytes,
            next_body: AtomicU64::new(0),
            queue_timeout: limits.queue_timeout,
            in_flight: metrics.requests_in_flight.clone(),
            bytes_in_flight: metrics.body_bytes_in_flight.clone(),
            shed: metrics.requests_shed.clone(),
        }
    }

    /// The account of one request's body, holding nothing yet. A declared length larger than
    /// the whole budget can never fit, so it is refused at once; any other declared length
    /// reserves nothing until the body's first bytes come, since a client may declare what it
    /// never sends.
    pub fn body(self: &Arc<Self>, declared: Option<usize>) -> Result<BodyBytes> {
        if let Some(declared) = declared.filter(|declared| *declared > self.max_bytes) {
            return Err(self.count(Error::TooLarge {
                bytes: declared,
                budget: self.max_bytes,
            }));
        }
        Ok(BodyBytes {
            budget: self.clone(),
            key: (
                Instant::now(),
                self.next_body.fetch_add(1, Ordering::Relaxed),
            ),
            held: 0,
            declared,
            asked_room: false,
            room: None,
        })
    }

    /// A request slot, waiting at most the queue timeout; taken once the body is complete, so
    /// a client that sends its body slowly, or never, holds none.
    pub async fn slot(self: &Arc<Self>) -> Result<RequestSlot> {
        let _waiting = QueueSpot::take(self)?;
        let acquired =
            tokio::time::timeout(self.queue_timeout, self.requests.clone().acquire_owned()).await;
        match acquired {
            Ok(Ok(permit)) => {
                self.in_flight.inc();
                Ok(RequestSlot {
                    _permit: permit,
                    in_flight: self.in_flight.clone(),
                })
            }
            // The semaphore is never closed; treat it like a full one all the same.
            Ok(Err(_)) | Err(_) => Err(self.count(Error::Requests {
                in_flight: self.max_requests,
                wait: self.queue_timeout,
            })),
        }
    }

    fn count(&self, error: Error) -> Error {
        let reason = match error {
            Error::QueueFull { .. } | Error::BytesQueueFull { .. } => "queue_full",
            Error::Requests { .. } => "requests",
            Error::Bytes { .. } | Error::TooLarge { .. } | Error::Crowded { .. } => "body_bytes",
        };
        self.shed.get_or_create(&ShedLabels { reason }).inc();
        error
    }

    fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut pool = lock(&self.bytes);
        pool.free += bytes;
        pool.dispatch(self.max_bytes);
        drop(pool);
        self.bytes_in_flight
            .dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// A place in the bounded queue of requests waiting for a request slot.
struct QueueSpot<'a>(&'a AtomicUsize);

impl<'a> QueueSpot<'a> {
    fn take(budget: &'a RequestBudget) -> Result<Self> {
        // As many may wait as may be in flight: twice the cap in all, so a healthy burst
        // just above the cap waits instead of failing.
        let queued = budget.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= budget.max_requests {
            budget.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(budget.count(Error::QueueFull {
                queued,
                in_flight: budget.max_requests,
            }));
        }
        Ok(Self(&budget.queued))
    }
}

impl Drop for QueueSpot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request's slot, given back when dropped (once its answer is built).
#[derive(Debug)]
pub struct RequestSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// The bytes one request holds in the budget, given back when dropped: its body's, charged
/// as they arrive, then its answer's, until the answer is handed to the connection.
pub struct BodyBytes {
    budget: Arc<RequestBudget>,
    key: BodyKey,
    held: usize,
    declared: Option<usize>,
    asked_room: bool,
    room: Option<Room>,
}

/// Room a body was given for the rest of its declared length.
#[derive(Debug, Clone, Copy)]
struct Room {
    granted: Instant,
    filled: usize,
    lapses: Instant,
}

impl std::fmt::Debug for BodyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyBytes")
            .field("held", &self.held)
            .finish()
    }
}

impl BodyBytes {
    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether the body holds room for the rest of its declared length (as of its last
    /// chunk): it has been arriving at [`KEEP_ROOM_RATE`] or faster.
    pub fn has_room(&self) -> bool {
        self.room.is_some()
    }

    /// Charges `more` bytes that have just arrived, waiting at most the queue timeout for
    /// room. The first chunk of a body with a declared length asks for room for the whole of
    /// it, so that bodies arriving together finish one after another rather than each taking
    /// a share of the room and none enough; the body keeps that room while it keeps arriving
    /// at [`KEEP_ROOM_RATE`], and falls back to asking chunk by chunk once it falls behind.
    /// Room goes to the bodies that started first; a body that could never fit, or that is the
    /// newest when every byte is held by bodies waiting for more, is refused at once.
    pub async fn charge(&mut self, mut more: usize) -> Result<()> {
        if more == 0 {
            return Ok(());
        }
        let budget = self.budget.clone();
        let total = self.held.saturating_add(more);
        if total > budget.max_bytes {
            return Err(budget.count(Error::TooLarge {
                bytes: total,
                budget: budget.max_bytes,
            }));
        }
        if let Some(room) = self.room.as_mut() {
            let mut pool = lock(&budget.bytes);
            let entry = pool.rooms.remove(&(room.lapses, self.key));
            match entry {
                Some(unfilled) => {
                    let take = more.min(unfilled);
                    room.filled += take;
                    room.lapses = room_lapses(room.granted, room.filled);
                    if unfilled > take {
                        pool.rooms.insert((room.lapses, self.key), unfilled - take);
                    } else {
                        self.room = None;
                    }
                    drop(pool);
                    self.took(take);
                    more -= take;
                    if more == 0 {
                        return Ok(());
                    }
                }
                // Taken back: the body fell behind.
                None => self.room = None,
            }
        }
        let need = match self.declared {
            Some(declared) if !self.asked_room && declared > total => declared - self.held,
            _ => more,
        };
        self.asked_room = true;
        let wake = {
            let mut pool = lock(&budget.bytes);
            if pool.waiting.is_empty() && pool.free < need {
                pool.reclaim(Instant::now());
            }
            if pool.waiting.is_empty() && pool.free >= need {
                pool.free -= need;
                self.granted(&mut pool, more, need);
                drop(pool);
                self.took(more);
                return Ok(());
            }
            if pool.waiting.len() >= budget.max_requests {
                let waiting = pool.waiting.len();
                drop(pool);
                return Err(budget.count(Error::BytesQueueFull {
                    waiting,
                    budget: budget.max_bytes,
                }));
            }
            let wake = Arc::new(Notify::new());
            pool.waiting.insert(
                self.key,
                Waiter {
                    need,
                    held: self.held,
                    verdict: None,
                    wake: wake.clone(),
                },
            );
            pool.blocked += self.held;
            pool.dispatch(budget.max_bytes);
            wake
        };
        let mut waiting = Waiting {
            budget: &budget,
            key: self.key,
            need,
            settled: false,
        };
        let deadline = Instant::now() + budget.queue_timeout;
        let verdict = loop {
            let notified = wake.notified();
            let (verdict, lapse) = waiting.verdict_if_any();
            if let Some(verdict) = verdict {
                break Some(verdict);
            }
            // The oldest waiter also wakes when some room is due to be taken back, since
            // nothing else happens then.
            let wake_at = lapse.map_or(deadline, |lapse| lapse.min(deadline));
            if tokio::time::timeout_at(wake_at, notified).await.is_err()
                && Instant::now() >= deadline
            {
                // Room may have come at the last moment: take it rather than lose it.
                break waiting.settle();
            }
        };
        waiting.settled = true;
        match verdict {
            Some(Verdict::Granted) => {
                self.granted(&mut lock(&budget.bytes), more, need);
                self.took(more);
                Ok(())
            }
            Some(Verdict::Refused) => Err(budget.count(Error::Crowded {
                bytes: self.held,
                budget: budget.max_bytes,
            })),
            None => Err(budget.count(Error::Bytes {
                bytes: total,
                budget: budget.max_bytes,
                wait: budget.queue_timeout,
            })),
        }
    }

    /// Records room given beyond the chunk that asked for it.
    fn granted(&mut self, pool: &mut Pool, chunk: usize, need: usize) {
        if need <= chunk {
            return;
        }
        let now = Instant::now();
        let room = Room {
            granted: now,
            filled: chunk,
            lapses: room_lapses(now, chunk),
        };
        pool.rooms.insert((room.lapses, self.key), need - chunk);
        self.room = Some(room);
    }

    /// Gives back room not filled: the body is complete (or ended short of its length).
    pub fn arrived(&mut self) {
        if let Some(room) = self.room.take() {
            let mut pool = lock(&self.budget.bytes);
            if let Some(unfilled) = pool.rooms.remove(&(room.lapses, self.key)) {
                pool.free += unfilled;
                pool.dispatch(self.budget.max_bytes);
            }
        }
    }

    /// Gives back what is held beyond `total` (an answer is smaller than its request).
    pub fn shrink_to(&mut self, total: usize) {
        self.arrived();
        if let Some(extra) = self.held.checked_sub(total).filter(|extra| *extra > 0) {
            self.held = total;
            self.budget.give_back(extra);
        }
    }

    fn took(&mut self, more: usize) {
        self.held += more;
        self.budget
            .bytes_in_flight
            .inc_by(i64::try_from(more).unwrap_or(i64::MAX));
    }
}

impl Drop for BodyBytes {
    fn drop(&mut self) {
        self.arrived();
        self.budget.give_back(self.held);
    }
}

/// A body's entry in the byte queue while it waits; if the wait is abandoned (the request was
/// dropped), the entry goes, and room granted meanwhile goes back.
struct Waiting<'a> {
    budget: &'a RequestBudget,
    key: BodyKey,
    need: usize,
    settled: bool,
}

impl Waiting<'_> {
    /// The verdict, taking the entry out once there is one (after taking back the room of
    /// bodies that fell behind); without one, when the next room is due to be taken back if
    /// this is the oldest waiter.
    fn verdict_if_any(&mut self) -> (Option<Verdict>, Option<Instant>) {
        let mut pool = lock(&self.budget.bytes);
        pool.dispatch(self.budget.max_bytes);
        if pool
            .waiting
            .get(&self.key)
            .is_some_and(|waiter| waiter.verdict.is_some())
        {
            return (pool.leave(&self.key), None);
        }
        let oldest = pool.waiting.keys().next() == Some(&self.key);
        let lapse = pool
            .rooms
            .keys()
            .next()
            .map(|(lapse, _)| *lapse)
            .filter(|_| oldest);
        (None, lapse)
    }

    /// Takes the entry out, verdict or not.
    fn settle(&mut self) -> Option<Verdict> {
        lock(&self.budget.bytes).leave(&self.key)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut pool = lock(&self.budget.bytes);
        if pool.leave(&self.key) == Some(Verdict::Granted) {
            pool.free += self.need;
        }
        pool.dispatch(self.budget.max_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(requests: usize, bytes: usize) -> (Arc<RequestBudget>, Metrics) {
        budget_waiting(requests, bytes, Duration::from_millis(50))
    }

    fn budget_waiting(
        requests: usize,
        bytes: usize,
        queue_timeout: Duration,
    ) -> (Arc<RequestBudget>, Metrics) {
        let metrics = Metrics::new();
        let limits = Limits {
            max_requests_in_flight: requests,
            max_body_bytes_in_flight: bytes,
            queue_timeout,
            ..Limits::default()
        };
        (Arc::new(RequestBudget::new(&limits, &metrics)), metrics)
    }

    /// Lets spawned tasks run until they are all waiting.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn the_connection_cap_fits_under_the_open_files_limit() {
        let limits = Limits {
            max_connections: 512,
            admin_max_connections: 32,
            ..Limits::default()
        };
        let (kept, note) = limits.clone().fit_open_files(Some(1_048_576));
        assert_eq!((kept.max_connections, note), (512, None));
        let (kept, _) = limits.clone().fit_open_files(None);
        assert_eq!(kept.max_connections, 512);
        // containerd 2 leaves containers at a soft limit of 1024.
        let (lowered, note) = limits.fit_open_files(Some(512));
        assert_eq!(lowered.max_connections, 512 - 64 - 32);
        assert!(note.unwrap().contains("using 416"));
        assert!(open_files_limit().is_some_and(|limit| limit > 0));
    }

    #[tokio::test]
    async fn a_declared_length_holds_nothing_until_its_bytes_come() {
        let (budget, metrics) = budget(4, 100);
        let declared = budget.body(Some(100)).unwrap();
        let mut other = budget.body(Some(100)).unwrap();
        other.charge(100).await.unwrap();
        assert_eq!((declared.held(), other.held()), (0, 100));
        assert_eq!(metrics.body_bytes_in_flight.get(), 100);
        drop(other);
        assert_eq!(metrics.body_bytes_in_flight.get(), 0);
        // More than the whole budget can never fit: refused before any byte, without waiting.
        let refused = budget.body(Some(101)).unwrap_err();
        assert!(
            matches!(
                refused,
                Error::TooLarge {
                    bytes: 101,
                    budget: 100,
                }
            ),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn bytes_come_back_when_dropped_or_shrunk() {
        let (budget, metrics) = budget(4, 100);
        let mut first = budget.body(None).unwrap();
        first.charge(60).await.unwrap();
        let mut second = budget.body(None).unwrap();
        let refused = second.charge(60).await.unwrap_err();
        assert!(
            matches!(refused, Error::Bytes { bytes: 60, .. }),
            "{refused}"
        );
        first.shrink_to(10);
        assert_eq!(metrics.body_bytes_in_flight.get(), 10);
        second.charge(60).await.unwrap();
        drop(first);
        drop(second);
        assert_eq!(metrics.body_bytes_in_flight.get(), 0);
    }

    #[tokio::test]
    async fn room_goes_to_the_body_that_started_first() {
        let (budget, _metrics) = budget_waiting(4, 100, Duration::from_secs(3600));
        let mut holder = budget.body(None).unwrap();
        holder.charge(50).await.unwrap();
        let mut older = budget.body(None).unwrap();
        older.charge(30).await.unwrap();
        let mut younger = budget.body(None).unwrap();
        younger.charge(10).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |mut body: BodyBytes, name: &'static str| {
            let order = order.clone();
            tokio::spawn(async move {
                body.charge(15).await.unwrap();
                lock(&order).push(name);
                body
            })
        };
        // The younger body asks first; room for one of them comes later.
        let younger = spawn(younger, "younger");
        settle().await;
        let older = spawn(older, "older");
        settle().await;
        assert!(lock(&order).is_empty());
        // Room for one: the older body gets it, though it asked last.
        holder.shrink_to(35);
        settle().await;
        assert_eq!(*lock(&order), ["older"]);
        drop(holder);
        let (_older, _younger) = (older.await.unwrap(), younger.await.unwrap());
        assert_eq!(*lock(&order), ["older", "younger"]);
    }

    #[tokio::test]
    async fn when_every_byte_is_held_by_bodies_waiting_for_more_the_newest_gives_way() {
        let (budget, metrics) = budget_waiting(4, 100, Duration::from_secs(3600));
        let mut older = budget.body(None).unwrap();
        older.charge(60).await.unwrap();
        let mut newer = budget.body(None).unwrap();
        newer.charge(40).await.unwrap();
        let older = tokio::spawn(async move { older.charge(30).await.map(|()| older.held()) });
        settle().await;
        // Both now wait for room only the other can give: the newer one gives way at once.
        let refused = newer.charge(20).await.unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Crowded {
                    bytes: 40,
                    budget: 100
                }
            ),
            "{refused}"
        );
        drop(newer);
        assert_eq!(older.await.unwrap().unwrap(), 90);
        let text = metrics.encode();
        assert!(
            text.contains("spark_admission_requests_shed_total{reason=\"body_bytes\"} 1"),
            "{text}"
        );
    }

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn a_body_that_keeps_arriving_keeps_room_for_its_declared_length() {
        let (budget, metrics) = budget_waiting(4, 10 * MIB, Duration::from_secs(3600));
        let mut arriving = budget.body(Some(8 * MIB)).unwrap();
        // Its first chunk takes room for all 8 MiB (a second before it falls behind).
        arriving.charge(MIB).await.unwrap();
        assert_eq!(metrics.body_bytes_in_flight.get(), MIB as i64);
        let mut other = budget.body(None).unwrap();
        let other = tokio::spawn(async move { other.charge(3 * MIB).await.map(|()| other) });
        settle().await;
        assert!(!other.is_finished(), "only 2 MiB are free");
        // The rest never waits.
        arriving.charge(7 * MIB).await.unwrap();
        arriving.arrived();
        assert!(!other.is_finished());
        drop(arriving);
        let other = other.await.unwrap().unwrap();
        assert_eq!(other.held(), 3 * MIB);
    }

    #[tokio::test]
    async fn a_body_that_falls_behind_loses_the_room_it_has_not_filled() {
        let (budget, _metrics) = budget_waiting(4, 10 * MIB, Duration::from_secs(30));
        let mut stalled = budget.body(Some(8 * MIB)).unwrap();
        // 1 MiB keeps the room for a second at 1 MiB/s.
        stalled.charge(MIB).await.unwrap();
        let started = std::time::Instant::now();
        let mut other = budget.body(None).unwrap();
        other.charge(3 * MIB).await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
            "the room came back when the stalled body fell behind, not before: {waited:?}"
        );
        // What the stalled body sent stays charged; what more it sends is charged as it
        // comes, like a body with no declared length.
        assert_eq!(stalled.held(), MIB);
        stalled.charge(MIB).await.unwrap();
        assert!(stalled.room.is_none());
    }

    #[tokio::test]
    async fn a_body_whose_wait_is_abandoned_gives_back_what_it_was_granted() {
        let (budget, metrics) = budget_waiting(4, 100, Duration::from_secs(3600));
        let mut holder = budget.body(None).unwrap();
        holder.charge(100).await.unwrap();
        let mut waiter = budget.body(None).unwrap();
        let waiting = tokio::spawn(async move { waiter.charge(50).await });
        settle().await;
        holder.shrink_to(50);
        // Granted, but the request goes before it runs again.
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(metrics.body_bytes_in_flight.get(), 50);
        let mut next = budget.body(None).unwrap();
        next.charge(50).await.unwrap();
        assert!(lock(&budget.bytes).waiting.is_empty());
    }

    #[tokio::test]
    async fn the_byte_queue_is_bounded() {
        let (budget, metrics) = budget_waiting(1, 100, Duration::from_millis(200));
        let mut holder = budget.body(None).unwrap();
        holder.charge(100).await.unwrap();
        let mut first = budget.body(None).unwrap();
        let waiting = tokio::spawn(async move { first.charge(1).await });
        settle().await;
        let mut second = budget.body(None).unwrap();
        let refused = second.charge(1).await.unwrap_err();
        assert!(matches!(refused, Error::BytesQueueFull { .. }), "{refused}");
        assert!(matches!(waiting.await.unwrap(), Err(Error::Bytes { .. })));
        let text = metrics.encode();
        assert!(
            text.contains("spark_admission_requests_shed_total{reason=\"queue_full\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_slot_freed_within_the_wait() {
        let (budget, _metrics) = budget(1, 100);
        let first = budget.slot().await.unwrap();
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.slot().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_slot_queue_is_bounded_by_the_cap() {
        let (budget, metrics) = budget(1, 100);
        let _held = budget.slot().await.unwrap();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.slot().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let refused = budget.slot().await.unwrap_err();
        assert!(matches!(refused, Error::QueueFull { .. }), "{refused}");
        assert!(matches!(
            waiting.await.unwrap(),
            Err(Error::Requests { .. })
        ));
        let text = metrics.encode();
        assert!(
            text.contains("spark_admission_requests_shed_total{reason=\"queue_full\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("spark_admission_requests_shed_total{reason=\"requests\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_full_listener_replaces_the_connection_spare_the_longest() {
        let metrics = Metrics::new();
        let cap = ConnectionCap::new(3, "webhook", &metrics);
        let now = Instant::now();
        let busy = cap.admit().unwrap();
        busy.set_spare_since(None);
        let idle = cap.admit().unwrap();
        idle.set_spare_since(Some(now - Duration::from_secs(5)));
        let handshake = cap.admit().unwrap();
        handshake.set_spare_since(Some(now - Duration::from_secs(1)));

        let replacing = cap.admit().expect("the longest-idle connection gives way");
        tokio::time::timeout(Duration::from_secs(10), idle.evicted())
            .await
            .expect("told to close");
        drop(idle);
        // Not yet late: an answer being written is not spare before its time.
        handshake.set_spare_since(Some(now + Duration::from_secs(3600)));
        replacing.set_spare_since(None);
        assert!(cap.admit().is_none(), "nothing spare: refused");
        let text = metrics.encode();
        for series in [
            "spark_admission_idle_connections_closed_total{listener=\"webhook\",phase=\"evicted\"} 1",
            "spark_admission_connections_refused_total{listener=\"webhook\"} 1",
            "spark_admission_connections{listener=\"webhook\"} 3",
        ] {
            assert!(text.contains(series), "{series}: {text}");
        }
        drop((busy, handshake, replacing));
        assert!(cap.admit().is_some());
    }
}
