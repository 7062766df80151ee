//! Hostile clients of the webhook's transport, against the real binary over real sockets and
//! TLS (issue 19: "Slow bodies stop admission", "HTTP/2 connections with a zero window are
//! held for ever", and what else a pod on the network can make the server hold): bodies
//! declared and never sent, HTTP/2 clients that open no flow-control window (or one byte of
//! it), a peer that stops reading, a listener full of connections that do nothing. In each,
//! real reviews (the Spark 4.3 executor fixture) keep being answered.
//!
//! Options are given as environment variables, so the same file run against a binary without
//! these bounds starts it and fails on the behaviour, not on an unknown flag. The tests run
//! one at a time: each floods a server of its own, and two floods at once on a small machine
//! would each slow the other's reviews.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bound the issue sets on each real review during an attack: answered within 1 s. An
/// unattacked review takes a few milliseconds even in a debug build on a loaded machine, so
/// this is generous; what it rules out is a review that waited for a queue timeout (1 s)
/// behind what an attacker holds, or was refused.
const REVIEW_BOUND: Duration = Duration::from_secs(1);

/// Slack on a deadline the server keeps (a close that should come at the write timeout):
/// a debug build on a machine shared with other builds can be seconds late, never 10.
const SLACK: Duration = Duration::from_secs(10);

/// `spark-admission serve` in a fresh directory with `env`; it logs warnings only.
async fn start(env: &[(&str, &str)]) -> ServeProcess {
    let mut env = env.to_vec();
    env.push(("SPARK_ADMISSION_LOG_LEVEL", "warn"));
    ServeProcess::start_fresh(&env).await
}

/// A TLS connector trusting `server`'s generated CA, offering `alpn`.
fn connector(server: &ServeProcess, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server.ca().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls_over(
    connector: &TlsConnector,
    tcp: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn tls(
    server: &ServeProcess,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_over(connector, TcpStream::connect(server.webhook).await?).await
}

async fn metrics(server: &ServeProcess) -> String {
    admin_get(server.admin, "/metrics").await.1
}

/// `spark_admission_idle_connections_closed_total` of the webhook for `phase`.
fn closed(metrics: &str, phase: &str) -> f64 {
    series_value(
        metrics,
        &format!(
            "spark_admission_idle_connections_closed_total{{listener=\"webhook\",phase=\"{phase}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn open_connections(metrics: &str) -> Option<f64> {
    series_value(metrics, "spark_admission_connections{listener=\"webhook\"}")
}

/// The executor fixture's uid, which its answer must carry.
fn fixture_uid() -> String {
    serde_json::from_slice::<serde_json::Value>(EXECUTOR_REVIEW).unwrap()["request"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One real review on a new connection: the TLS handshake (outside the bound: it holds no
/// request slot or body byte, and it is the slowest step of a debug build), then the review,
/// which must be a 200 with the fixture's uid within [`REVIEW_BOUND`]. Returns its time and
/// the connection, still open.
async fn real_review(server: &ServeProcess, what: &str) -> (Duration, Connection) {
    let client = Client::new(&[server.ca()], server.webhook);
    let mut connection = tokio::time::timeout(SLACK, client.connect())
        .await
        .unwrap_or_else(|_| panic!("{what}: no TLS connection within {SLACK:?}"))
        .unwrap_or_else(|error| panic!("{what}: connection refused: {error}"));
    let started = Instant::now();
    let answer = tokio::time::timeout(SLACK, connection.post("/mutate", EXECUTOR_REVIEW)).await;
    let took = started.elapsed();
    let (status, body) = answer
        .unwrap_or_else(|_| panic!("{what}: no answer within {SLACK:?}"))
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert_eq!(
        status,
        StatusCode::OK,
        "{what}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(response(&body).uid, fixture_uid(), "{what}");
    assert!(took <= REVIEW_BOUND, "{what}: answered in {took:?}");
    (took, connection)
}

/// `clients` connections each sending a `/mutate` head with `Content-Length: declared` and no
/// body, reconnecting whenever the server answers or closes; meanwhile 16 real reviews, spread
/// over two request timeouts (so that they also meet the slow clients being answered and
/// coming back), must each be answered 200 within the bound. Returns what the slow clients
/// were answered.
async fn reviews_answered_during_slow_bodies(
    clients: usize,
    declared: usize,
) -> BTreeMap<String, u64> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = start(&[]).await;
    let h1 = connector(&server, b"http/1.1");
    let head = format!(
        "POST /mutate?timeout=5s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut slow = Vec::new();
    for _ in 0..clients {
        let (h1, head, stop, sent, answers, addr) = (
            h1.clone(),
            head.clone(),
            stop.clone(),
            sent.clone(),
            answers.clone(),
            server.webhook,
        );
        slow.push(tokio::spawn(async move {
            let mut first = true;
            while !stop.load(Ordering::Relaxed) {
                let Ok(tcp) = TcpStream::connect(addr).await else {
                    continue;
                };
                let Ok(mut tls) = tls_over(&h1, tcp).await else {
                    *answers.lock().unwrap().entry("refused".into()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if tls.write_all(head.as_bytes()).await.is_err() || tls.flush().await.is_err() {
                    continue;
                }
                if std::mem::take(&mut first) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let mut answer = [0u8; 12];
                let status = match tokio::time::timeout(
                    Duration::from_secs(30),
                    tls.read_exact(&mut answer),
                )
                .await
                {
                    Ok(Ok(_)) => String::from_utf8_lossy(&answer[9..12]).into_owned(),
                    _ => "closed".to_owned(),
                };
                *answers.lock().unwrap().entry(status).or_default() += 1;
            }
        }));
    }
    let started = Instant::now();
    while sent.load(Ordering::Relaxed) < clients {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {clients} slow clients connected",
            sent.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for the server to read the last heads.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for i in 0..16 {
        let (took, _) =
            real_review(&server, &format!("review {i} among {clients} slow bodies")).await;
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in slow {
        client.abort();
    }
    let answers = answers.lock().unwrap().clone();
    eprintln!(
        "{clients} slow bodies of {declared} bytes: 16 reviews answered, the slowest in {slowest:?}; slow clients were answered {answers:?}"
    );
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_bodies_declared_and_never_sent_leave_real_reviews_answered_within_a_second() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // 40 × 6.7 MB is eight times the 32 MiB body budget, which a declared length used to
    // reserve; now it holds nothing, and each slow client is answered 408 at the request
    // timeout.
    let answers = reviews_answered_during_slow_bodies(40, 6_710_886).await;
    assert!(
        answers.get("408").is_some_and(|n| *n >= 40),
        "the slow clients are held to the request timeout, then answered 408: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_bodies_never_sent_hold_no_request_slot() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // More slow clients than the 256 request slots, each declaring a small body: a slot is
    // taken only once a body is complete, so they hold none.
    let answers = reviews_answered_during_slow_bodies(300, 20_000).await;
    assert!(
        answers.get("408").is_some_and(|n| *n >= 300),
        "the slow clients are held to the request timeout, then answered 408: {answers:?}"
    );
}

/// What a client holds of a connection with a review it does not take.
struct Unread {
    /// When the answer's head came.
    answered: Instant,
    /// Completes when the server closes the connection.
    closed: tokio::task::JoinHandle<Instant>,
    // Kept so that the client itself does not end the connection.
    _sender: hyper::client::conn::http2::SendRequest<RequestBody>,
    _body: hyper::body::Incoming,
}

/// One HTTP/2 connection that advertises `window` as its initial stream window and sends one
/// review.
async fn review_with_window(server: &ServeProcess, h2: &TlsConnector, window: u32) -> Unread {
    let tls = tls(server, h2).await.expect("a place under the cap");
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(window)
        .handshake(TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    let closed = tokio::spawn(async move {
        let _ = connection.await;
        Instant::now()
    });
    let request = hyper::Request::post("https://localhost/mutate")
        .header("content-type", "application/json")
        .body(full(EXECUTOR_REVIEW))
        .unwrap();
    // HEADERS need no window, so the answer's head comes; its body cannot.
    let answer = sender
        .send_request(request)
        .await
        .expect("the answer's head");
    assert_eq!(answer.status(), StatusCode::OK);
    Unread {
        answered: Instant::now(),
        closed,
        _sender: sender,
        _body: answer.into_body(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_that_open_no_window_are_closed_at_the_write_deadline_while_reviews_are_answered()
 {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // All 512 places of the default cap (the open-files limit of a test run leaves it whole).
    // The write timeout is longer than the default 5 s so that all 512 are open at once on a
    // slow machine before the first is closed.
    let connections = 512;
    let write_timeout = Duration::from_secs(8);
    let server = start(&[("SPARK_ADMISSION_WRITE_TIMEOUT", "8s")]).await;
    let h2 = connector(&server, b"h2");
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..connections / 16 {
        let opened =
            futures::future::join_all((0..16).map(|_| review_with_window(&server, &h2, 0))).await;
        held.extend(opened);
    }
    let filled = started.elapsed();
    let open = open_connections(&metrics(&server).await);
    assert_eq!(
        open,
        Some(connections as f64),
        "the cap is full of unread answers (opened in {filled:?})"
    );

    // While they are held, new reviews are answered, each taking the place of a connection
    // whose answer has waited over a second (the review connections stay open, so each needs
    // a place of its own). An answer waiting less than that may still be on its way, so the
    // first reviews come once the first connections' answers are that old.
    let oldest = held.first().map(|unread| unread.answered).unwrap();
    tokio::time::sleep_until((oldest + Duration::from_millis(1500)).into()).await;
    let mut reviews = Vec::new();
    for i in 0..5 {
        reviews.push(
            real_review(
                &server,
                &format!("review {i} with the cap full of unread answers"),
            )
            .await
            .1,
        );
    }
    // Every zero-window connection is closed by the server, at its write deadline (or sooner,
    // to make room), never left open.
    let mut late = Vec::new();
    for unread in held {
        let bound = unread.answered + write_timeout + SLACK;
        if tokio::time::timeout_at(bound.into(), unread.closed)
            .await
            .is_err()
        {
            late.push(unread.answered.elapsed());
        }
    }
    assert!(
        late.is_empty(),
        "{} of {connections} zero-window connections still open past the write deadline + {SLACK:?}",
        late.len()
    );
    // And right after.
    drop(reviews);
    real_review(&server, "review after the zero-window connections").await;
    let text = metrics(&server).await;
    let (write, evicted) = (closed(&text, "write"), closed(&text, "evicted"));
    assert!(
        write + evicted >= connections as f64 && evicted >= 5.0,
        "closed for the write deadline {write}, to make room {evicted}"
    );
    eprintln!(
        "{connections} zero-window HTTP/2 connections open in {filled:?} ({open:?} open); closed: {write} at the write deadline, {evicted} to make room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_opens_one_byte_of_window_is_closed_at_the_write_deadline() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let write_timeout = Duration::from_secs(2);
    let server = start(&[("SPARK_ADMISSION_WRITE_TIMEOUT", "2s")]).await;
    let h2 = connector(&server, b"h2");
    // One byte of each answer goes out; the rest, still waiting, keeps the deadline running.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(review_with_window(&server, &h2, 1).await);
    }
    for unread in held {
        let bound = unread.answered + write_timeout + SLACK;
        let closed_at = tokio::time::timeout_at(bound.into(), unread.closed)
            .await
            .expect("closed at the write deadline, not left to the idle timeout")
            .unwrap();
        assert!(
            closed_at >= unread.answered + write_timeout - Duration::from_millis(100),
            "closed before the write deadline: {:?}",
            closed_at - unread.answered
        );
    }
    assert_eq!(closed(&metrics(&server).await, "write"), 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_loses_its_connection_after_the_write_deadline() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let write_timeout = Duration::from_secs(2);
    let server = start(&[("SPARK_ADMISSION_WRITE_TIMEOUT", "2s")]).await;
    // A small receive buffer, so that the answers fill it and the server's socket soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.webhook).await.unwrap();
    let tls = tls_over(&connector(&server, b"http/1.1"), tcp)
        .await
        .unwrap();
    let (_unread, mut write) = tokio::io::split(tls);
    let started = Instant::now();
    // Reviews pipelined on the connection until it stops taking them: 5,000 would be 9 MB of
    // answers (about 1.8 KB each), more than the kernel buffers on both sides take (4 MiB at
    // most for the server's send buffer by default), so the server's writes block.
    let writer = tokio::spawn(async move {
        let mut review = format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            EXECUTOR_REVIEW.len()
        )
        .into_bytes();
        review.extend_from_slice(EXECUTOR_REVIEW);
        for _ in 0..5000 {
            if write.write_all(&review).await.is_err() {
                break;
            }
        }
        write
    });
    let mut text = metrics(&server).await;
    while closed(&text, "write") < 1.0 || open_connections(&text) != Some(0.0) {
        assert!(
            started.elapsed() < write_timeout + SLACK,
            "the connection of a peer that does not read is still open after {:?}: {}",
            started.elapsed(),
            text.lines()
                .filter(|line| line.contains("connections") || line.contains("requests_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = metrics(&server).await;
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after >= write_timeout,
        "closed before any write could have been blocked for the write timeout: {closed_after:?}"
    );
    let reviewed = series_value(
        &text,
        "spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"patched\"}",
    )
    .unwrap_or(0.0);
    eprintln!(
        "a peer that does not read: closed after {closed_after:?}, {reviewed} of its reviews answered before it blocked"
    );
    writer.abort();
    real_review(&server, "review after the unread connection").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_full_of_connections_that_do_nothing_gives_way_to_real_reviews() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = start(&[
        ("SPARK_ADMISSION_MAX_CONNECTIONS", "64"),
        ("SPARK_ADMISSION_FIRST_REQUEST_TIMEOUT", "60s"),
    ])
    .await;
    let h1 = connector(&server, b"http/1.1");
    // Half silent since their handshake, half idle after one review each: every place held,
    // nothing being served.
    let mut silent = Vec::new();
    for _ in 0..32 {
        silent.push(tls(&server, &h1).await.expect("under the cap"));
    }
    let client = Client::new(&[server.ca()], server.webhook);
    let mut idle = Vec::new();
    for _ in 0..32 {
        let mut connection = client.connect().await.expect("under the cap");
        let (status, _) = connection.post("/mutate", EXECUTOR_REVIEW).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        idle.push(connection);
    }
    assert_eq!(open_connections(&metrics(&server).await), Some(64.0));
    // Each review's connection stays open, so each needs a place of its own.
    let mut reviews = Vec::new();
    for i in 0..10 {
        let what = format!("review {i} with the listener full of idle connections");
        reviews.push(real_review(&server, &what).await.1);
    }
    // The ones that gave way were the oldest: silent since the handshake.
    let mut closed_silent = 0;
    for stream in &mut silent {
        let mut byte = [0u8; 1];
        if matches!(
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed_silent += 1;
        }
    }
    assert_eq!(
        closed_silent, 10,
        "the 10 oldest silent connections were closed"
    );
    assert!(idle.iter().all(|connection| !connection.is_closed()));
    let text = metrics(&server).await;
    assert_eq!(closed(&text, "evicted"), 10.0, "{text}");
    assert_eq!(
        series_value(
            &text,
            "spark_admission_connections_refused_total{listener=\"webhook\"}"
        ),
        Some(0.0)
    );
}

/// A `/proc/PID/status` figure in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One real review on a new connection, whatever happens: its status (0 when it failed) and
/// time.
async fn try_review(server: &ServeProcess) -> (u16, Duration) {
    let client = Client::new(&[server.ca()], server.webhook);
    let started = Instant::now();
    let answer = tokio::time::timeout(SLACK, async {
        let mut connection = client.connect().await.ok()?;
        connection.post("/mutate", EXECUTOR_REVIEW).await.ok()
    })
    .await;
    let status = match answer {
        Ok(Some((status, _))) => status.as_u16(),
        _ => 0,
    };
    (status, started.elapsed())
}

/// What the remaining holds cost, for docs/reliability.md (not a pass/fail test), against the
/// binary in `SPARK_ADMISSION_BIN` (a release build):
/// `SPARK_ADMISSION_BIN=target/release/spark-admission cargo test --test hostile_transport -- --ignored --nocapture`
/// 1. HTTP/2 streams whose bodies never come, 100 on each of `FLOOD_CONNECTIONS` (500)
///    connections: they hold no slot and no byte, only their own state; the server's RSS with
///    them, and real reviews meanwhile.
/// 2. Bodies that arrive whole but their last byte, 6.7 MB each from `STALL_CLIENTS` (10)
///    clients reconnecting when answered: what holding the byte budget with bytes actually
///    sent does to real reviews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: about a minute of floods, prints figures"]
async fn measure_what_streams_without_bodies_and_stalled_bodies_cost() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = std::env::var("SPARK_ADMISSION_BIN").unwrap_or_else(|_| SERVE_BIN.to_owned());
    let env_number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let connections = env_number("FLOOD_CONNECTIONS", 500);
    let streams = env_number("STREAMS_PER_CONNECTION", 100);
    let stall_clients = env_number("STALL_CLIENTS", 10);
    let server =
        ServeProcess::start_binary(&bin, None, &[("SPARK_ADMISSION_LOG_LEVEL", "error")]).await;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = status_kib(pid, "VmRSS");

    // 1. Streams without bodies.
    let h2 = connector(&server, b"h2");
    let mut held = Vec::new();
    for _ in 0..connections {
        let Ok(tls) = tls(&server, &h2).await else {
            break;
        };
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        for _ in 0..streams {
            let mut sender = sender.clone();
            let (tx, body) =
                http_body_util::channel::Channel::<bytes::Bytes, std::convert::Infallible>::new(1);
            let request = hyper::Request::post("https://localhost/mutate")
                .header("content-type", "application/json")
                .header("content-length", 20_000)
                .body(http_body_util::BodyExt::boxed(body))
                .unwrap();
            held.push((
                tx,
                tokio::spawn(async move { sender.send_request(request).await.map(|r| r.status()) }),
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_streams = status_kib(pid, "VmRSS");
    // As many as the server holds open at once (its concurrent-stream setting); the client
    // queues the rest.
    let open = held.len().min(
        connections * spark_admission::server::limits::http::H2_MAX_CONCURRENT_STREAMS as usize,
    );
    let mut reviews = Vec::new();
    for _ in 0..10 {
        reviews.push(try_review(&server).await);
    }
    let text = metrics(&server).await;
    eprintln!(
        "{} HTTP/2 streams without bodies sent on {connections} connections, {open} open at once: RSS {} MiB idle, {} MiB with them ({} KiB per connection); reviews meanwhile {reviews:?}; slots {:?}, body bytes {:?}",
        held.len(),
        idle / 1024,
        with_streams / 1024,
        with_streams.saturating_sub(idle) / connections.max(1) as u64,
        series_value(&text, "spark_admission_requests_in_flight"),
        series_value(&text, "spark_admission_request_body_bytes_in_flight"),
    );
    let answered = futures::future::join_all(held.into_iter().map(|(tx, answer)| async move {
        let status = answer.await;
        drop(tx);
        status
    }))
    .await;
    let mut statuses = BTreeMap::<String, u64>::new();
    for status in answered {
        let key = match status {
            Ok(Ok(status)) => status.as_u16().to_string(),
            _ => "error".to_owned(),
        };
        *statuses.entry(key).or_default() += 1;
    }
    eprintln!("  those streams were answered {statuses:?}");

    // 2. Bodies stalled before their last byte.
    let declared = 6_710_886;
    let h1 = connector(&server, b"http/1.1");
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut stalled = Vec::new();
    for _ in 0..stall_clients {
        let (h1, stop, outcomes, addr) =
            (h1.clone(), stop.clone(), outcomes.clone(), server.webhook);
        stalled.push(tokio::spawn(async move {
            let mut request = format!(
                "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
            )
            .into_bytes();
            request.resize(request.len() + declared - 1, b' ');
            while !stop.load(Ordering::Relaxed) {
                let Ok(tcp) = TcpStream::connect(addr).await else {
                    continue;
                };
                let Ok(tls) = tls_over(&h1, tcp).await else {
                    continue;
                };
                let (mut read, mut write) = tokio::io::split(tls);
                let request = request.clone();
                let writer = tokio::spawn(async move {
                    let _ = write.write_all(&request).await;
                    let _ = write.flush().await;
                    write
                });
                let mut answer = [0u8; 12];
                let status =
                    match tokio::time::timeout(Duration::from_secs(30), read.read_exact(&mut answer))
                        .await
                    {
                        Ok(Ok(_)) => String::from_utf8_lossy(&answer[9..12]).into_owned(),
                        _ => "closed".to_owned(),
                    };
                writer.abort();
                *outcomes.lock().unwrap().entry(status).or_default() += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut reviews = BTreeMap::<u16, (u64, Duration)>::new();
    for _ in 0..40 {
        let (status, took) = try_review(&server).await;
        let entry = reviews.entry(status).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(took);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in stalled {
        client.abort();
    }
    eprintln!(
        "{stall_clients} clients sending 6.7 MB bodies but their last byte: real reviews (status: count, slowest) {reviews:?}; the stalled ones were answered {:?}; peak RSS {} MiB",
        outcomes.lock().unwrap(),
        status_kib(pid, "VmHWM") / 1024
    );
}
