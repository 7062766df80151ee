//! One HTTP connection's life on either listener, after TLS (webhook) or at accept (admin):
//! HTTP/1.1 or HTTP/2 with bounded settings; closed when it sends no request in time, when an
//! answer is not taken in time, or when the listener's cap gives its place to a new
//! connection; drained on shutdown.
//!
//! hyper has no idle timeout of its own for HTTP/2, none for HTTP/1 before the first byte of a
//! request, and no write timeout at all; and its HTTP/2 server does not poll a response body
//! while it waits for the client's flow-control window, so a timer inside the body would never
//! fire. So each connection keeps a watch on its requests (how many are in flight, when the
//! last one ended, since when each answer has been waiting to be handed over) and closes
//! itself: gracefully when it has been idle too long (HTTP/2 gets a GOAWAY), at once when an
//! answer is not taken within the write timeout. Its socket writes are timed too, so a peer
//! that stops reading loses the connection even where flow control is not the reason. It never
//! closes a connection for idleness with a request in flight.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::limits::{ConnectionSlot, http};
use crate::state::State;

/// How long a connection opened just before the drain may take to send its first request:
/// a client that completed the handshake is about to send one, and closing on it would fail a
/// request that the server had, in effect, already accepted.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

/// After an idle connection is told to close, how long it may take (an HTTP/2 client reading
/// its GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An answer not handed over this long after it was ready is held by a client that is not
/// taking it (the apiserver reads an answer in well under a millisecond): from then on, when
/// the listener is full, its connection may give its place to a new one before the write
/// timeout closes it.
const STALLED_ANSWER: Duration = Duration::from_secs(1);

/// Largest piece of an answer handed to hyper at a time (HTTP/2's default frame size, and
/// the HTTP/1 buffer): hyper takes the next piece only once it has room for it, so what it
/// buffers per answer stays small and the answer's body, which holds its bytes in the
/// budget, lives until the answer is nearly all handed over.
const ANSWER_PIECE: usize = 16 * 1024;

/// The timeouts of one connection. A request's head must arrive within them too: a request
/// counts from the moment hyper has read its head.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest time from the connection's start (after TLS) to its first request.
    pub first_request: Duration,
    /// Longest time with no request in flight after the last one ended.
    pub idle: Duration,
    /// Once the drain begins, how long the connection may still carry a request before it is
    /// closed (at least the first-request grace). Zero where the client can be told to go
    /// (HTTP/2's GOAWAY) or does not mind (the admin port); half the drain timeout for the
    /// webhook's HTTP/1.1, whose client cannot be told and does not retry.
    pub drain_idle: Duration,
    /// Longest time from an answer being ready to its being handed over, and longest time a
    /// socket write may stay blocked.
    pub write: Duration,
}

/// What a connection is doing, as its requests report it.
#[derive(Debug, Clone)]
struct Activity {
    in_flight: usize,
    served: bool,
    idle_since: Instant,
    /// Answers not yet handed over, by when they were ready (then a tie-breaker).
    writing: BTreeSet<(Instant, u64)>,
    next_answer: u64,
}

impl Activity {
    /// The next deadline of the connection and what it is for, if any.
    fn deadline(&self, ready: Instant, timeouts: &Timeouts) -> Option<(Instant, &'static str)> {
        if let Some((oldest, _)) = self.writing.first() {
            return Some((*oldest + timeouts.write, "write"));
        }
        match (self.in_flight, self.served) {
            (0, false) => Some((ready + timeouts.first_request, "first_request")),
            (0, true) => Some((self.idle_since + timeouts.idle, "keep_alive")),
            _ => None,
        }
    }

    /// Since when the connection holds nothing useful, for the cap (`None` while it serves).
    fn spare_since(&self, opened: Instant) -> Option<Instant> {
        if let Some((oldest, _)) = self.writing.first() {
            return Some(*oldest + STALLED_ANSWER);
        }
        match (self.in_flight, self.served) {
            (0, false) => Some(opened),
            (0, true) => Some(self.idle_since),
            _ => None,
        }
    }
}

/// Marks one request in flight on its connection until dropped (with the response body, so
/// an answer still being handed over counts).
struct Busy {
    activity: Arc<watch::Sender<Activity>>,
    answer: Option<(Instant, u64)>,
}

impl Busy {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|activity| {
            activity.in_flight += 1;
            activity.served = true;
        });
        Self {
            activity: activity.clone(),
            answer: None,
        }
    }

    /// The answer is ready: from now on it must be handed over within the write timeout.
    fn answer_ready(&mut self) {
        let now = Instant::now();
        let mut key = (now, 0);
        self.activity.send_modify(|activity| {
            key.1 = activity.next_answer;
            activity.next_answer += 1;
            activity.writing.insert(key);
        });
        self.answer = Some(key);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let answer = self.answer.take();
        self.activity.send_modify(|activity| {
            if let Some(key) = answer {
                activity.writing.remove(&key);
            }
            activity.in_flight = activity.in_flight.saturating_sub(1);
            if activity.in_flight == 0 {
                activity.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request counted as in flight, and its answer as waiting to
/// be handed over, until hyper drops it; it hands the answer over in pieces.
struct Tracked {
    body: Body,
    rest: Bytes,
    _busy: Busy,
}

/// The next piece of an answer: at most [`ANSWER_PIECE`], and the last byte alone. hyper's
/// HTTP/2 server takes a piece from the body only once the stream has window beyond the data
/// it already holds, so the body ends (and the connection stops counting the answer as
/// waiting) only once the client has opened its window for everything before the last byte:
/// a client that opens one byte and no more is caught by the write timeout like one that
/// opens none.
fn next_piece(rest: &mut Bytes, body_ended: bool) -> Bytes {
    if rest.len() > ANSWER_PIECE {
        rest.split_to(ANSWER_PIECE)
    } else if body_ended && rest.len() > 1 {
        rest.split_to(rest.len() - 1)
    } else {
        std::mem::take(rest)
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let ended = this.body.is_end_stream();
        Poll::Ready(Some(Ok(Frame::data(next_piece(&mut this.rest, ended)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

/// A connection's stream whose writes may not stay blocked longer than the write timeout: past
/// it the write fails, and the connection with it. Only a peer that stopped reading blocks a
/// write that long (its socket buffers are full); a slow one unblocks it often.
struct WriteDeadline<I> {
    io: I,
    timeout: Duration,
    /// Armed while a write or flush is blocked.
    blocked: Option<Pin<Box<Sleep>>>,
    armed: bool,
    expired: Arc<AtomicBool>,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, timeout: Duration) -> (Self, Arc<AtomicBool>) {
        let expired = Arc::new(AtomicBool::new(false));
        let io = Self {
            io,
            timeout,
            blocked: None,
            armed: false,
            expired: expired.clone(),
        };
        (io, expired)
    }

    /// After the inner stream said Pending: waits for the deadline beside it.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            match self.blocked.as_mut() {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.blocked = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .blocked
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        self.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "a write stayed blocked for {:?}: the peer is not reading",
                self.timeout
            ),
        )))
    }

    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.blocked(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.timed(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.timed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.timed(cx, polled)
    }
}

/// The hyper connection builder with the settings of docs/reliability.md.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's head timeout also runs while a keep-alive connection waits for its next
        // request, so it would close idle connections long before the apiserver stops
        // reusing them (a POST written as the server closes fails, and is not retried). The
        // watch below bounds heads instead: no request started means idle.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(http::H1_MAX_BUF_SIZE)
        .max_headers(http::H1_MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http::H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(http::H2_MAX_HEADER_LIST_SIZE)
        .initial_stream_window_size(http::H2_STREAM_WINDOW)
        .initial_connection_window_size(http::H2_CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(http::H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .keep_alive_interval(http::H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(http::H2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// How a connection's serving loop ended.
enum End {
    Closed(Result<(), Box<dyn std::error::Error + Send + Sync>>),
    Drain,
    Deadline(&'static str),
    Evicted,
}

/// Completes once the oldest answer not yet handed over is past the write timeout.
async fn answer_overdue(observed: &mut watch::Receiver<Activity>, write: Duration) {
    loop {
        let due = observed
            .borrow_and_update()
            .writing
            .first()
            .map(|(ready, _)| *ready + write);
        let overdue = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = overdue => return,
            changed = observed.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
        }
    }
}

/// Serves `io` with `app` until the client closes it, it idles past its timeouts, an answer is
/// not taken in time, the cap gives its place away, or the drain begins. `opened` is when the
/// connection was accepted (for the drain's grace and the cap), `ready` when it could first
/// carry a request (after TLS). `slot` is its place under the listener's cap, given back when
/// this returns.
#[allow(clippy::too_many_arguments)]
pub async fn serve<I>(
    io: I,
    peer: SocketAddr,
    app: axum::Router,
    mut drain: watch::Receiver<bool>,
    timeouts: Timeouts,
    opened: Instant,
    state: Arc<State>,
    listener: &'static str,
    slot: ConnectionSlot,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ready = Instant::now();
    let activity = Arc::new(watch::Sender::new(Activity {
        in_flight: 0,
        served: false,
        idle_since: ready,
        writing: BTreeSet::new(),
        next_answer: 0,
    }));
    let mut observed = activity.subscribe();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut busy = Busy::begin(&activity);
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                busy.answer_ready();
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        body,
                        rest: Bytes::new(),
                        _busy: busy,
                    })
                }))
            }
        })
    };
    let (io, write_expired) = WriteDeadline::new(io, timeouts.write);
    let builder = builder();
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut spare_reported = None;
    let end = loop {
        let (deadline, spare) = {
            let now = observed.borrow_and_update();
            (now.deadline(ready, &timeouts), now.spare_since(opened))
        };
        if spare_reported != Some(spare) {
            slot.set_spare_since(spare);
            spare_reported = Some(spare);
        }
        let due = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => break End::Closed(result),
            () = async { let _ = drain.wait_for(|drain| *drain).await; } => break End::Drain,
            // `activity` is held here, so the sender outlives this loop.
            _ = observed.changed() => {}
            () = due => if let Some((_, phase)) = deadline { break End::Deadline(phase) },
            () = slot.evicted() => break End::Evicted,
        }
    };
    let result = match end {
        End::Closed(result) => {
            if write_expired.load(Ordering::Relaxed) {
                tracing::debug!(%peer, listener, "closing a connection whose peer stopped reading");
                state.metrics.count_idle_close(listener, "write");
            }
            result
        }
        End::Deadline("write") => {
            // Not gracefully: the answer that is late would hold a graceful close as long.
            tracing::debug!(%peer, listener, "closing a connection that did not take its answer in time");
            state.metrics.count_idle_close(listener, "write");
            Ok(())
        }
        End::Deadline(phase) => {
            tracing::debug!(%peer, listener, phase, "closing a connection that sent no request in time");
            state.metrics.count_idle_close(listener, phase);
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
        End::Evicted => {
            // At once: its place is already the new connection's, and its file descriptor
            // should not outlive it. (Counted by the cap.)
            tracing::debug!(%peer, listener, "closing a connection that held nothing, to make room for a new one");
            Ok(())
        }
        End::Drain => {
            let grace = timeouts
                .drain_idle
                .max(FIRST_REQUEST_GRACE.saturating_sub(opened.elapsed()));
            let grace_ends = Instant::now() + grace;
            let mut closing = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    () = tokio::time::sleep_until(grace_ends), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = answer_overdue(&mut observed, timeouts.write) => {
                        state.metrics.count_idle_close(listener, "write");
                        break Ok(());
                    }
                }
            }
        }
    };
    drop(activity);
    if let Err(error) = result {
        tracing::debug!(%peer, listener, %error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_handed_over_in_pieces_with_its_last_byte_alone() {
        let mut rest = Bytes::from(vec![7u8; 2 * ANSWER_PIECE + 10]);
        let mut pieces = Vec::new();
        while !rest.is_empty() {
            pieces.push(next_piece(&mut rest, true).len());
        }
        assert_eq!(pieces, [ANSWER_PIECE, ANSWER_PIECE, 9, 1]);
        let mut short = Bytes::from_static(b"{}");
        assert_eq!(next_piece(&mut short, false).len(), 2, "more may follow");
        let mut one = Bytes::from_static(b"x");
        assert_eq!(next_piece(&mut one, true).len(), 1);
    }
}
