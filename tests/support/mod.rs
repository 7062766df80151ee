//! Shared by the server tests: an in-process server on ephemeral ports with its own CA, a real
//! TLS client (rustls, hyper) that trusts it, `serve` as a process, and calls to the webhook's
//! router without a socket.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use spark_admission::certs;
use spark_admission::server::{Options, Server, router};
use spark_admission::state::State;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tower::ServiceExt;

/// The binary under test.
pub const SERVE_BIN: &str = env!("CARGO_BIN_EXE_spark-admission");

pub const EXECUTOR_REVIEW: &[u8] = include_bytes!("../fixtures/spark-4.3/executor-review.json");
pub const DRIVER_REVIEW: &[u8] = include_bytes!("../fixtures/spark-4.3/driver-review.json");

pub type RequestBody = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> RequestBody {
    Full::new(bytes.into()).boxed()
}

/// Writes a pair into `dir/<generation>/` and points `dir/..data` at it, the way the kubelet
/// updates a mounted Secret; `dir/tls.crt` and `dir/tls.key` are symlinks through `..data`.
pub fn kubelet_swap(dir: &Path, generation: &str, pair: &certs::Generated) {
    let target = dir.join(generation);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join(certs::CERT_FILE), &pair.cert).unwrap();
    std::fs::write(target.join(certs::KEY_FILE), &pair.key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in [certs::CERT_FILE, certs::KEY_FILE] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

pub struct TestServer {
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub ca_pems: Vec<String>,
    pub dir: tempfile::TempDir,
    pub state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

pub struct TestServerBuilder {
    policy_file: Option<String>,
    shutdown_delay: Duration,
    drain_timeout: Duration,
    client_ca: Option<PathBuf>,
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            policy_file: None,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            client_ca: None,
        }
    }

    pub async fn start() -> Self {
        Self::builder().start().await
    }

    pub fn client(&self) -> Client {
        Client::new(&self.ca_pems, self.webhook)
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }

    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("running")
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").await.1
    }
}

impl TestServerBuilder {
    pub fn policy_file(mut self, text: &str) -> Self {
        self.policy_file = Some(text.to_owned());
        self
    }

    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = delay;
        self
    }

    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// `--client-ca`: the PEM bundle at `path` (which the test may rewrite).
    pub fn client_ca(mut self, path: PathBuf) -> Self {
        self.client_ca = Some(path);
        self
    }

    pub async fn start(self) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let pair = certs::generate(&["localhost".into(), "127.0.0.1".into()], 30).unwrap();
        let tls_dir = dir.path().join("tls");
        kubelet_swap(&tls_dir, "..gen-1", &pair);
        let state = Arc::new(State::new());
        let policy_file = self.policy_file.map(|text| {
            let path = dir.path().join("policy.yaml");
            std::fs::write(&path, text).unwrap();
            path
        });
        if policy_file.is_none() {
            state.set_policy(spark_admission::Policy::builtin_example());
        }
        let options = Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert: tls_dir.join(certs::CERT_FILE),
            tls_key: tls_dir.join(certs::KEY_FILE),
            client_ca: self.client_ca,
            policy_file,
            policy_configmap: None,
            guarded_configmap: Default::default(),
            request_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            reload_interval: Duration::from_millis(100),
            shutdown_delay: self.shutdown_delay,
            drain_timeout: self.drain_timeout,
            limits: spark_admission::server::Limits::default(),
        };
        let server = Server::bind(options, state.clone()).await.unwrap();
        let webhook = server.webhook_addr().unwrap();
        let admin = server.admin_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            webhook,
            admin,
            ca_pems: vec![pair.ca_cert.clone()],
            dir,
            state,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }
}

/// Waits until `condition` holds, looking every 50 ms; fails the test after 5 s.
pub async fn wait_until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status of a GET on the admin port, `None` if the connection failed or was closed.
pub async fn admin_status(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(full(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    Some(response.status())
}

/// `spark-admission serve` as a process, its options from the environment only, on loopback
/// ports that were free; killed when dropped. Its stderr goes to `serve.log` in its directory.
pub struct ServeProcess {
    pub child: Child,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    /// The working directory (`certs/` is generated there when no certificate is given).
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Started in `dir`, which outlives it: a second start there finds the same certificates.
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_binary(SERVE_BIN, Some(dir), env).await
    }

    /// Started in a fresh temporary directory, removed after the process is gone.
    pub async fn start_fresh(env: &[(&str, &str)]) -> Self {
        Self::start_binary(SERVE_BIN, None, env).await
    }

    /// `bin serve` in `dir` (or a fresh temporary one), once `/readyz` answers 200.
    pub async fn start_binary(bin: &str, dir: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let temp = match dir {
            Some(_) => None,
            None => Some(tempfile::tempdir().unwrap()),
        };
        let dir = dir
            .or_else(|| temp.as_ref().map(|t| t.path()))
            .unwrap()
            .to_path_buf();
        let (webhook_port, admin_port) = (free_port(), free_port());
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .current_dir(&dir)
            .env(
                "SPARK_ADMISSION_LISTEN",
                format!("127.0.0.1:{webhook_port}"),
            )
            .env(
                "SPARK_ADMISSION_ADMIN_LISTEN",
                format!("127.0.0.1:{admin_port}"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("serve.log")).unwrap(),
            ));
        for (key, value) in env {
            command.env(key, value);
        }
        let process = Self {
            child: command.spawn().unwrap(),
            webhook: format!("127.0.0.1:{webhook_port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
            dir,
            _temp: temp,
        };
        let started = Instant::now();
        while admin_status(process.admin, "/readyz").await != Some(StatusCode::OK) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve not ready: {}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// The CA it generated into `certs/`.
    pub fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.join("certs/ca.crt")).unwrap()
    }
}

/// Sends `request` to the webhook application `app` without a socket
/// (`tower::ServiceExt::oneshot`) and reads the whole answer.
pub async fn oneshot_router(
    app: axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (StatusCode, Bytes) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// POSTs `body` to `path` of `router(state)` with serve's default request timeout (3 s).
pub async fn post_to_router(
    state: &Arc<State>,
    path: &str,
    body: impl Into<axum::body::Body>,
) -> (StatusCode, Bytes) {
    post_to_app(router(state.clone(), Duration::from_secs(3)), path, body).await
}

/// POSTs `body` as JSON to `path` of `app`.
async fn post_to_app(
    app: axum::Router,
    path: &str,
    body: impl Into<axum::body::Body>,
) -> (StatusCode, Bytes) {
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    oneshot_router(app, request).await
}

/// The AdmissionReview of an answer, which must be a 200.
fn review_answer(status: StatusCode, answer: &[u8]) -> serde_json::Value {
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(answer)
    );
    serde_json::from_slice(answer).unwrap()
}

/// The AdmissionReview a router guarding `configmap` with `/validate-policy` answers to `body`,
/// which must be a 200 (what `serve --guard-configmap` or `--policy-configmap` builds).
pub async fn validate_policy_guarding(
    state: &Arc<State>,
    configmap: spark_admission::policy::ConfigMapRef,
    body: Vec<u8>,
) -> serde_json::Value {
    let budget = Arc::new(spark_admission::server::limits::RequestBudget::new(
        &spark_admission::server::Limits::default(),
        &state.metrics,
    ));
    let app = spark_admission::server::router_guarding(
        state.clone(),
        Duration::from_secs(3),
        budget,
        configmap,
    );
    let (status, answer) = post_to_app(app, "/validate-policy", body).await;
    review_answer(status, &answer)
}

/// The AdmissionReview `router(state)` answers to `body` at `path`, which must be a 200.
pub async fn review_by_router(state: &Arc<State>, path: &str, body: Vec<u8>) -> serde_json::Value {
    let (status, answer) = post_to_router(state, path, body).await;
    review_answer(status, &answer)
}

/// A GET on the admin port over plain HTTP.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(full(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A TLS client trusting the test CAs. One `Connection` is one keep-alive connection.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    h2_connector: TlsConnector,
    addr: SocketAddr,
}

pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<RequestBody>,
    /// The leaf certificate the server presented.
    pub peer_certificate: Vec<u8>,
}

impl Client {
    pub fn new(ca_pems: &[String], addr: SocketAddr) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for pem in ca_pems {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let config = |alpn: Vec<Vec<u8>>| {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            config.alpn_protocols = alpn;
            // Like the apiserver: every connection is a full handshake, so each one shows the
            // certificate in force (a resumed session would show the old one).
            config.resumption = rustls::client::Resumption::disabled();
            TlsConnector::from(Arc::new(config))
        };
        Self {
            connector: config(vec![b"http/1.1".to_vec()]),
            h2_connector: config(vec![b"h2".to_vec()]),
            addr,
        }
    }

    async fn tls(
        &self,
        connector: &TlsConnector,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    pub async fn connect(&self) -> std::io::Result<Connection> {
        let tls = self.tls(&self.connector).await?;
        let peer_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            peer_certificate,
        })
    }

    /// One request over a fresh connection.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
        let mut connection = self.connect().await.expect("connect");
        connection.post(path, body).await.expect("request")
    }

    /// One request over HTTP/2 (ALPN h2); returns the negotiated protocol too.
    pub async fn post_h2(
        &self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, Bytes, Option<Vec<u8>>) {
        let tls = self.tls(&self.h2_connector).await.expect("connect");
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        let request = hyper::Request::post(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap();
        let response = sender.send_request(request).await.expect("h2 request");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body, alpn)
    }
}

impl Connection {
    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        self.send(path, full(body)).await
    }

    pub async fn send(
        &mut self,
        path: &str,
        body: RequestBody,
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The notAfter of the first certificate of a PEM file, in unix seconds, read from the file
/// itself (the figure `spark_admission_certificate_expiry_timestamp_seconds` must show).
pub fn certificate_not_after(pem_file: &Path) -> i64 {
    let pem = std::fs::read(pem_file).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    pem.parse_x509().unwrap().validity().not_after.timestamp()
}

/// The policy hash README.md defines: the first 12 hex digits of the SHA-256 of the policy text.
pub fn policy_hash(text: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(text.as_bytes()))[..12].to_owned()
}

/// The value of one series (its name with labels, as exposed) in a Prometheus text exposition.
pub fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The response of a review, parsed.
pub fn response(body: &[u8]) -> spark_admission::admission::Response {
    serde_json::from_slice::<spark_admission::admission::ResponseReview>(body)
        .unwrap_or_else(|e| {
            panic!(
                "not a ResponseReview ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })
        .response
}

/// A review derived from a fixture, changed by `edit`.
pub fn review_with(fixture: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_slice(fixture).unwrap();
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}
