//! Bounds on the ports: how many connections each listener holds, how many requests and how
//! many body bytes are in flight, and how long a connection may sit without a request.
//!
//! With `failurePolicy: Fail` every Spark pod waits on this server and its port is reachable
//! from every pod, so nothing a client does may take the process past its memory limit or its
//! file descriptors. What is over a bound is refused quickly and counted; it never waits
//! without limit. The defaults sit well above what a busy healthy cluster sends (see
//! docs/reliability.md, "Bounds on the ports", for the figures behind them).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Metrics, ShedLabels};

/// Why a request was refused with 503 before it was read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// As many requests as allowed were already waiting.
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
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The bounds, as the `serve` flags set them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections the webhook listener holds at once; past it, new ones are closed at
    /// accept.
    pub max_connections: usize,
    /// Most requests read or answered at once on the webhook port; past it, a request waits
    /// up to `queue_timeout` (at most this many wait), then gets 503.
    pub max_requests_in_flight: usize,
    /// Most request body bytes held at once; a request takes its Content-Length (or, without
    /// one, its bytes as they arrive) from this before reading, so memory stays bounded.
    pub max_body_bytes_in_flight: usize,
    /// Longest wait for a request slot or body bytes before 503.
    pub queue_timeout: Duration,
    /// A connection that sends no request this long after its TLS handshake is closed.
    pub first_request_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
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

    /// SETTINGS_MAX_CONCURRENT_STREAMS: RFC 9113 asks for at least 100; a client needing
    /// more opens another connection.
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
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

/// The connection cap of one listener.
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    open: Gauge,
    refused: Counter,
}

impl ConnectionCap {
    /// A cap of `max` connections on `listener` (`webhook` or `admin`), counted in `metrics`.
    pub fn new(max: usize, listener: &'static str, metrics: &Metrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            open: metrics.connections_open(listener),
            refused: metrics.connections_refused(listener),
        }
    }

    /// A slot for a new connection, held as long as the connection lives; `None` (and
    /// counted) when the listener is full.
    pub fn admit(&self) -> Option<ConnectionSlot> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.open.inc();
                Some(ConnectionSlot {
                    _permit: permit,
                    open: self.open.clone(),
                })
            }
            Err(_) => {
                self.refused.inc();
                None
            }
        }
    }
}

/// One admitted connection's place under the cap.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Request slots and body bytes shared by every connection of the webhook listener.
pub struct RequestBudget {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_requests: usize,
    max_bytes: usize,
    queued: AtomicUsize,
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

impl RequestBudget {
    /// The budget `limits` describe, counted in `metrics`.
    pub fn new(limits: &Limits, metrics: &Metrics) -> Self {
        // A semaphore holds at most usize::MAX >> 3 permits; a larger budget is no budget.
        let max_bytes = limits.max_body_bytes_in_flight.min(Semaphore::MAX_PERMITS);
        let max_requests = limits
            .max_requests_in_flight
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_requests,
            max_bytes,
            queued: AtomicUsize::new(0),
            queue_timeout: limits.queue_timeout,
            in_flight: metrics.requests_in_flight.clone(),
            bytes_in_flight: metrics.body_bytes_in_flight.clone(),
            shed: metrics.requests_shed.clone(),
        }
    }

    /// A request slot and `declared` body bytes (its Content-Length, when it has one), waiting
    /// at most the queue timeout. Nothing of the body is read before this returns, so an
    /// HTTP/2 stream that waits here is held back by flow control, and an HTTP/1 body stays in
    /// the socket.
    pub async fn admit(self: &Arc<Self>, declared: Option<usize>) -> Result<Ticket> {
        let waiting = QueueSpot::take(self)?;
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        let request =
            match tokio::time::timeout_at(deadline, self.requests.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; treat it like a full one all the same.
                Ok(Err(_)) | Err(_) => {
                    return Err(self.count(Error::Requests {
                        in_flight: self.max_requests,
                        wait: self.queue_timeout,
                    }));
                }
            };
        self.in_flight.inc();
        let mut ticket = Ticket {
            budget: self.clone(),
            _request: request,
            bytes: None,
            held: 0,
        };
        if let Some(declared) = declared {
            ticket.reserve_until(declared, deadline).await?;
        }
        drop(waiting);
        Ok(ticket)
    }

    fn count(&self, error: Error) -> Error {
        let reason = match error {
            Error::QueueFull { .. } => "queue_full",
            Error::Requests { .. } => "requests",
            Error::Bytes { .. } => "body_bytes",
        };
        self.shed.get_or_create(&ShedLabels { reason }).inc();
        error
    }
}

/// A place in the bounded queue of requests waiting for the budget.
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

/// A request's share of the budget, given back when it is dropped (after the answer is
/// built, since the parsed review lives that long).
pub struct Ticket {
    budget: Arc<RequestBudget>,
    _request: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
    held: usize,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("held", &self.held).finish()
    }
}

impl Ticket {
    /// Body bytes this ticket holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Grows the bytes held to at least `total`, waiting at most the queue timeout: for a body
    /// without Content-Length, as its chunks arrive.
    pub async fn reserve(&mut self, total: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.budget.queue_timeout;
        self.reserve_until(total, deadline).await
    }

    async fn reserve_until(&mut self, total: usize, deadline: tokio::time::Instant) -> Result<()> {
        let Some(more) = total.checked_sub(self.held).filter(|more| *more > 0) else {
            return Ok(());
        };
        let budget = &self.budget;
        let too_large = || Error::Bytes {
            bytes: total,
            budget: budget.max_bytes,
            wait: budget.queue_timeout,
        };
        // More than the whole budget can never fit: refuse at once rather than wait.
        let Some(permits) = u32::try_from(more)
            .ok()
            .filter(|_| total <= budget.max_bytes)
        else {
            return Err(budget.count(too_large()));
        };
        let acquired =
            tokio::time::timeout_at(deadline, budget.bytes.clone().acquire_many_owned(permits))
                .await;
        match acquired {
            Ok(Ok(permit)) => {
                match self.bytes.as_mut() {
                    Some(held) => held.merge(permit),
                    None => self.bytes = Some(permit),
                }
                self.held = total;
                budget
                    .bytes_in_flight
                    .inc_by(i64::try_from(more).unwrap_or(i64::MAX));
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(budget.count(too_large())),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.in_flight.dec();
        self.budget
            .bytes_in_flight
            .dec_by(i64::try_from(self.held).unwrap_or(i64::MAX));
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
    async fn bytes_come_back_when_the_ticket_is_dropped() {
        let (budget, metrics) = budget(4, 100);
        let first = budget.admit(Some(60)).await.unwrap();
        assert_eq!(metrics.body_bytes_in_flight.get(), 60);
        let refused = budget.admit(Some(60)).await.unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Bytes {
                    bytes: 60,
                    budget: 100,
                    ..
                }
            ),
            "{refused}"
        );
        drop(first);
        assert_eq!(metrics.body_bytes_in_flight.get(), 0);
        assert_eq!(metrics.requests_in_flight.get(), 0);
        let second = budget.admit(Some(60)).await.unwrap();
        assert_eq!(second.held(), 60);
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_slot_freed_within_the_wait() {
        let (budget, _metrics) = budget(1, 100);
        let first = budget.admit(None).await.unwrap();
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.admit(None).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_the_cap() {
        let (budget, metrics) = budget(1, 100);
        let _held = budget.admit(None).await.unwrap();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.admit(None).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let refused = budget.admit(None).await.unwrap_err();
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
    async fn a_body_larger_than_the_budget_is_refused_without_waiting() {
        // A wait this long would fail the test's own timeout: refusing must not wait at all.
        let (budget, _metrics) = budget_waiting(4, 100, Duration::from_secs(3600));
        let started = std::time::Instant::now();
        let mut ticket = budget.admit(None).await.unwrap();
        ticket.reserve(40).await.unwrap();
        assert!(matches!(
            ticket.reserve(101).await,
            Err(Error::Bytes { bytes: 101, .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(60));
        ticket.reserve(100).await.unwrap();
        assert_eq!(ticket.held(), 100);
    }
}
