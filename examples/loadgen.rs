//! A load generator that calls a webhook the way the kube-apiserver does: HTTP/1.1 over rustls
//! with TLS session resumption disabled (every new connection is a full handshake), JSON bodies,
//! `?timeout=5s` on the URL, a pool of at most `--pool` idle keep-alive connections (a request
//! takes an idle connection or opens a new one; when it is done the connection goes back to the
//! pool if fewer than `--pool` are idle, else it is closed), no client-side rate limit.
//!
//! ```sh
//! cargo run --release --example loadgen -- --target https://127.0.0.1:8443/mutate \
//!     --ca certs/ca.crt --mode keepalive --body executor --requests 20000 --concurrency 25 \
//!     --server-pid "$(pgrep -n spark-admission)"
//! ```
//!
//! Modes:
//! - `keepalive`: `--concurrency` workers (at most the pool size), each sending its next request
//!   as soon as the last one is answered; connections are reused.
//! - `churn`: the same closed loop with `--concurrency` above `--pool` (default 100 over 25):
//!   the apiserver during a burst; connections beyond the pool are opened and closed.
//! - `newconn`: every request on a new connection (a full TLS handshake), closed after.
//! - `openloop`: request i is sent at start + i/`--rate`, whatever the earlier ones are doing,
//!   and its latency is measured from that intended time (no coordinated omission).
//!
//! Before the measured requests, `--warmup` requests (closed loop, at most pool-size
//! concurrency; none for `newconn`) open the pool's connections. Prints one human line on
//! stderr and one JSON object on stdout: requests/s, p50/p90/p99/p99.9/max, errors, new
//! connections, and with `--server-pid` the server's CPU time per review (utime + stime from
//! `/proc/PID/stat` over the measured phase) and its VmRSS and VmHWM.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const EXECUTOR_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/driver-review.json");

/// Linux's USER_HZ: the unit of utime and stime in /proc/PID/stat (`getconf CLK_TCK`).
const CLK_TCK: f64 = 100.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Keepalive,
    Churn,
    Newconn,
    Openloop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BodyKind {
    Executor,
    Driver,
    /// The executor review with its pod padded by an annotation to 3 MiB (the apiserver's
    /// largest object).
    #[value(name = "3mib")]
    ThreeMib,
}

/// What counts as a correct answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Expect {
    /// `allowed: true` for the request's uid with a JSON Patch that applies to the pod sent
    /// (spark-admission with a policy that changes Spark pods).
    Patch,
    /// `allowed: true` for the request's uid (the `allowed: true` baselines).
    Allow,
}

#[derive(Parser, Debug)]
struct Args {
    /// The webhook URL (`https://HOST:PORT/PATH`); `?timeout=5s` is appended.
    #[arg(long, default_value = "https://127.0.0.1:8443/mutate")]
    target: String,
    /// CA certificate (PEM) to trust.
    #[arg(long, default_value = "certs/ca.crt")]
    ca: PathBuf,
    /// TLS server name (default: the target's host).
    #[arg(long)]
    server_name: Option<String>,
    #[arg(long, value_enum, default_value = "keepalive")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "executor")]
    body: BodyKind,
    /// Measured requests.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Closed-loop workers (default: 25, 100 for churn). Ignored by openloop.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Most idle keep-alive connections kept (the apiserver's 25).
    #[arg(long, default_value_t = 25)]
    pool: usize,
    /// Open loop: requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Unmeasured requests first (default 200, 0 for newconn).
    #[arg(long)]
    warmup: Option<usize>,
    /// The server's pid, for CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Client runtime threads (1 leaves the other core of a 2-core machine to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// What a successful review is; anything else counts as an error.
    #[arg(long, value_enum, default_value = "patch")]
    expect: Expect,
}

struct Target {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    authority: String,
    path_and_query: String,
}

fn parse_target(url: &str, server_name: Option<&str>) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow::anyhow!("--target must start with https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{authority} resolves to nothing"))?;
    let host = server_name.unwrap_or_else(|| {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    });
    let separator = if path.contains('?') { '&' } else { '?' };
    Ok(Target {
        addr,
        server_name: ServerName::try_from(host.to_owned())?,
        authority: authority.to_owned(),
        path_and_query: format!("{path}{separator}timeout=5s"),
    })
}

/// Checks answers against the request sent: the uid, `allowed`, and (for `--expect patch`) a
/// JSON Patch that applies to the pod. Every answer is parsed; a patch is applied once, and
/// later answers carrying the same patch text are known good (the body never changes).
struct AnswerCheck {
    expect: Expect,
    uid: String,
    pod: serde_json::Value,
    applied: Mutex<std::collections::HashSet<String>>,
}

#[derive(serde::Deserialize)]
struct AnswerReview {
    response: Answer,
}

#[derive(serde::Deserialize)]
struct Answer {
    uid: String,
    allowed: bool,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default, rename = "patchType")]
    patch_type: Option<String>,
}

impl AnswerCheck {
    fn new(expect: Expect, body: &[u8]) -> anyhow::Result<Self> {
        let review: serde_json::Value = serde_json::from_slice(body)?;
        let uid = review["request"]["uid"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the review body has no request.uid"))?
            .to_owned();
        Ok(Self {
            expect,
            uid,
            pod: review["request"]["object"].clone(),
            applied: Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn check(&self, bytes: &[u8]) -> anyhow::Result<()> {
        use base64::Engine;
        let answer = serde_json::from_slice::<AnswerReview>(bytes)
            .map_err(|error| anyhow::anyhow!("200 without an AdmissionReview response: {error}"))?
            .response;
        anyhow::ensure!(answer.uid == self.uid, "answer for another uid");
        anyhow::ensure!(answer.allowed, "not allowed");
        if self.expect == Expect::Allow {
            return Ok(());
        }
        let patch = answer
            .patch
            .ok_or_else(|| anyhow::anyhow!("allowed without a patch"))?;
        anyhow::ensure!(
            answer.patch_type.as_deref() == Some("JSONPatch"),
            "patchType is not JSONPatch"
        );
        if self.applied.lock().unwrap().contains(&patch) {
            return Ok(());
        }
        let operations: json_patch::Patch =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(&patch)?)?;
        let mut pod = self.pod.clone();
        json_patch::patch(&mut pod, &operations)
            .map_err(|error| anyhow::anyhow!("the patch does not apply to the pod: {error}"))?;
        anyhow::ensure!(pod != self.pod, "the patch changes nothing");
        self.applied.lock().unwrap().insert(patch);
        Ok(())
    }
}

fn body(kind: BodyKind) -> Bytes {
    match kind {
        BodyKind::Executor => Bytes::from_static(EXECUTOR_REVIEW),
        BodyKind::Driver => Bytes::from_static(DRIVER_REVIEW),
        BodyKind::ThreeMib => {
            let mut review: serde_json::Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
            let size = 3 * 1024 * 1024 - EXECUTOR_REVIEW.len() - 64;
            review["request"]["object"]["metadata"]["annotations"]["bench.spark-admission.io/padding"] =
                serde_json::Value::String("x".repeat(size));
            Bytes::from(serde_json::to_vec(&review).unwrap())
        }
    }
}

/// The client: a TLS connector and the pool of idle connections.
struct Client {
    connector: TlsConnector,
    target: Target,
    body: Bytes,
    answers: AnswerCheck,
    pool_size: usize,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    new_connections: AtomicU64,
    errors: AtomicU64,
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Client {
    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(self.target.server_name.clone(), tcp)
            .await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.new_connections.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// An idle connection that is still open, or a new one.
    async fn checkout(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        loop {
            let idle = self.idle.lock().unwrap().pop();
            match idle {
                Some(mut sender) => {
                    if !sender.is_closed() && sender.ready().await.is_ok() {
                        return Ok(sender);
                    }
                }
                None => return self.connect().await,
            }
        }
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.pool_size && !sender.is_closed() {
            idle.push(sender);
        }
        // Else dropped: hyper closes the connection.
    }

    /// One review; `Ok` only for a 200 carrying the answer `--expect` asks for.
    async fn review(&self) -> anyhow::Result<()> {
        let mut sender = self.checkout().await?;
        let request = hyper::Request::post(&self.target.path_and_query)
            .header(hyper::header::HOST, &self.target.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json, */*")
            .body(Full::new(self.body.clone()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        self.checkin(sender);
        anyhow::ensure!(status == 200, "HTTP {status}");
        self.answers.check(&bytes)
    }

    fn count_error(&self, error: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut kinds = self.error_kinds.lock().unwrap();
        let key: String = format!("{error:#}").chars().take(120).collect();
        *kinds.entry(key).or_default() += 1;
    }
}

/// CPU seconds (utime + stime) of a process.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Closed loop: `concurrency` workers share `count` requests.
async fn closed_loop(client: &Arc<Client>, count: usize, concurrency: usize) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let client = client.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let started = Instant::now();
                match client.review().await {
                    Ok(()) => latencies.push(started.elapsed()),
                    Err(error) => client.count_error(&error),
                }
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    all
}

/// Open loop: request i is sent at start + i/rate by a scheduler thread (std sleep has
/// microsecond resolution, tokio's timer only milliseconds); latency counts from that time.
async fn open_loop(client: &Arc<Client>, count: usize, rate: f64) -> Vec<Duration> {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let handle = tokio::runtime::Handle::current();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let start = Instant::now() + Duration::from_millis(10);
    let scheduler = {
        let client = client.clone();
        let latencies = latencies.clone();
        std::thread::spawn(move || {
            for i in 0..count {
                let intended = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                let client = client.clone();
                let latencies = latencies.clone();
                let done = done_tx.clone();
                handle.spawn(async move {
                    match client.review().await {
                        Ok(()) => latencies.lock().unwrap().push(intended.elapsed()),
                        Err(error) => client.count_error(&error),
                    }
                    drop(done);
                });
            }
        })
    };
    tokio::task::spawn_blocking(move || scheduler.join().unwrap())
        .await
        .unwrap();
    // Every task holds a sender; recv returns None once the last one has finished.
    let _ = done_rx.recv().await;
    Arc::try_unwrap(latencies)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_else(|arc| arc.lock().unwrap().clone())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca)? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The apiserver's webhook client resumes no sessions: every connection is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();

    let concurrency = args.concurrency.unwrap_or(match args.mode {
        Mode::Churn => 100,
        _ => args.pool,
    });
    let pool_size = if args.mode == Mode::Newconn {
        0
    } else {
        args.pool
    };
    let body = body(args.body);
    let client = Arc::new(Client {
        connector: TlsConnector::from(Arc::new(config)),
        target: parse_target(&args.target, args.server_name.as_deref())?,
        answers: AnswerCheck::new(args.expect, &body)?,
        body,
        pool_size,
        idle: Mutex::new(Vec::new()),
        new_connections: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        error_kinds: Mutex::new(BTreeMap::new()),
    });

    let warmup = args.warmup.unwrap_or(match args.mode {
        Mode::Newconn => 0,
        _ => 200,
    });
    if warmup > 0 {
        closed_loop(&client, warmup, concurrency.min(args.pool.max(1))).await;
        let errors = client.errors.swap(0, Ordering::Relaxed);
        anyhow::ensure!(
            errors < warmup as u64,
            "every warmup request failed: {:?}",
            client.error_kinds.lock().unwrap()
        );
        client.error_kinds.lock().unwrap().clear();
    }
    let idle_before = client.idle.lock().unwrap().len();
    client.new_connections.store(0, Ordering::Relaxed);

    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let client_cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut latencies = match args.mode {
        Mode::Openloop => open_loop(&client, args.requests, args.rate).await,
        _ => closed_loop(&client, args.requests, concurrency).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.and_then(cpu_seconds);
    let client_cpu = cpu_seconds(std::process::id())
        .zip(client_cpu_before)
        .map(|(a, b)| a - b);
    latencies.sort_unstable();

    let ok = latencies.len();
    let errors = client.errors.load(Ordering::Relaxed);
    let server_cpu = cpu_after.zip(cpu_before).map(|(a, b)| a - b);
    let cpu_per_review_us = server_cpu.map(|cpu| cpu / args.requests.max(1) as f64 * 1e6);
    let rss_kb = args.server_pid.and_then(|pid| status_kb(pid, "VmRSS"));
    let hwm_kb = args.server_pid.and_then(|pid| status_kb(pid, "VmHWM"));
    let report = serde_json::json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "body": format!("{:?}", args.body).to_lowercase(),
        "body_bytes": client.body.len(),
        "requests": args.requests,
        "ok": ok,
        "errors": errors,
        "error_kinds": *client.error_kinds.lock().unwrap(),
        "concurrency": if args.mode == Mode::Openloop { serde_json::Value::Null } else { concurrency.into() },
        "pool": pool_size,
        "rate": if args.mode == Mode::Openloop { args.rate.into() } else { serde_json::Value::Null },
        "idle_connections_at_start": idle_before,
        "new_connections": client.new_connections.load(Ordering::Relaxed),
        "seconds": elapsed,
        "rps": args.requests as f64 / elapsed,
        "p50_ms": percentile(&latencies, 50.0),
        "p90_ms": percentile(&latencies, 90.0),
        "p99_ms": percentile(&latencies, 99.0),
        "p999_ms": percentile(&latencies, 99.9),
        "max_ms": latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_review": cpu_per_review_us,
        "client_cpu_s": client_cpu,
        "server_rss_kb": rss_kb,
        "server_hwm_kb": hwm_kb,
    });
    let ms = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "{label} {mode:?} {body:?}: {rps:.0} req/s, p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms, errors {errors}, new connections {conns}, server CPU {cpu} per review, RSS {rss} kB (peak {hwm} kB)",
        label = args.label,
        mode = args.mode,
        body = args.body,
        rps = ms("rps"),
        p50 = ms("p50_ms"),
        p90 = ms("p90_ms"),
        p99 = ms("p99_ms"),
        p999 = ms("p999_ms"),
        max = ms("max_ms"),
        conns = report["new_connections"],
        cpu = cpu_per_review_us.map_or("?".to_owned(), |us| format!("{us:.1} µs")),
        rss = rss_kb.map_or("?".to_owned(), |kb| kb.to_string()),
        hwm = hwm_kb.map_or("?".to_owned(), |kb| kb.to_string()),
    );
    if errors > 0 {
        eprintln!("errors: {:?}", client.error_kinds.lock().unwrap());
    }
    println!("{report}");
    // Close pooled connections before the runtime goes.
    client.idle.lock().unwrap().clear();
    Ok(())
}
