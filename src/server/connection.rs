//! One HTTP connection's life on either listener, after TLS (webhook) or at accept (admin):
//! HTTP/1.1 or HTTP/2 with bounded settings, closed when it sends no request in time, and
//! drained on shutdown.
//!
//! hyper has no idle timeout of its own for HTTP/2, and none for HTTP/1 before the first byte
//! of a request, so each connection keeps a watch on how many of its requests are in flight
//! and when the last one ended, and closes itself (gracefully: HTTP/2 gets a GOAWAY) when it
//! has been idle too long. It never closes a connection with a request in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::limits::http;
use crate::state::State;

/// How long a connection opened just before the drain may take to send its first request:
/// a client that completed the handshake is about to send one, and closing on it would fail a
/// request that the server had, in effect, already accepted.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

/// After an idle connection is told to close, how long it may take (an HTTP/2 client reading
/// its GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

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
}

/// What a connection is doing, as its requests report it.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    served: bool,
    idle_since: Instant,
}

/// Marks one request in flight on its connection until dropped (with the response body, so
/// a response still being written counts).
struct Busy(Arc<watch::Sender<Activity>>);

impl Busy {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|activity| {
            activity.in_flight += 1;
            activity.served = true;
        });
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|activity| {
            activity.in_flight = activity.in_flight.saturating_sub(1);
            if activity.in_flight == 0 {
                activity.idle_since = Instant::now();
            }
        });
    }
}

/// A response body that keeps its request counted as in flight until it is written.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
    Idle(&'static str),
}

/// Serves `io` with `app` until the client closes it, it idles past its timeouts, or the
/// drain begins. `opened` is when the connection was accepted (for the drain's grace),
/// `ready` when it could first carry a request (after TLS).
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
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ready = Instant::now();
    let activity = Arc::new(watch::Sender::new(Activity {
        in_flight: 0,
        served: false,
        idle_since: ready,
    }));
    let mut observed = activity.subscribe();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::begin(&activity);
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
            }
        })
    };
    let builder = builder();
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let end = loop {
        let deadline = {
            let now = *observed.borrow_and_update();
            match (now.in_flight, now.served) {
                (0, false) => Some((ready + timeouts.first_request, "first_request")),
                (0, true) => Some((now.idle_since + timeouts.idle, "keep_alive")),
                _ => None,
            }
        };
        let idle = async {
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
            () = idle => if let Some((_, phase)) = deadline { break End::Idle(phase) },
        }
    };
    let result = match end {
        End::Closed(result) => result,
        End::Idle(phase) => {
            tracing::debug!(%peer, listener, phase, "closing a connection that sent no request in time");
            state.metrics.count_idle_close(listener, phase);
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
        End::Drain => {
            let grace = timeouts
                .drain_idle
                .max(FIRST_REQUEST_GRACE.saturating_sub(opened.elapsed()));
            let early = tokio::select! {
                result = connection.as_mut() => Some(result),
                () = tokio::time::sleep(grace) => None,
            };
            match early {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    drop(activity);
    if let Err(error) = result {
        tracing::debug!(%peer, listener, %error, "connection ended with an error");
    }
}
