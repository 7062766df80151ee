//! `serve --client-ca`: over real sockets and real TLS, a caller with a client certificate from
//! the client CA gets its review answered; one without a certificate, or with one the CA does
//! not vouch for, is refused inside the TLS handshake with the alert that says why, and never
//! reaches HTTP; a replaced bundle applies to new connections and a bad one keeps the old; a
//! broken bundle at start is an error naming the file; without `--client-ca` no certificate is
//! asked for.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, SignatureScheme, SupportedProtocolVersion};
use spark_admission::certs::{self, Generated};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;

const REFUSED: &str = "spark_admission_client_certificates_refused_total";
const CA_RELOAD_OK: &str = "spark_admission_client_ca_reload_total{result=\"ok\"}";
const CA_RELOAD_ERROR: &str = "spark_admission_client_ca_reload_total{result=\"error\"}";

/// A client identity: the certificate it presents (from `certs::generate_client`, or another
/// pair's leaf) and its key; `None` presents nothing.
type Identity<'a> = Option<&'a Generated>;

/// A client certificate resolver that presents `identity` and records what the server's
/// CertificateRequest said: `None` until a server asks for a certificate, then the CA names it
/// hinted.
#[derive(Debug)]
struct Recording {
    identity: Option<Arc<CertifiedKey>>,
    requested: Mutex<Option<Vec<Vec<u8>>>>,
}

impl ResolvesClientCert for Recording {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        *self.requested.lock().unwrap() =
            Some(root_hint_subjects.iter().map(|s| s.to_vec()).collect());
        self.identity.clone()
    }

    fn has_certs(&self) -> bool {
        self.identity.is_some()
    }
}

/// A TLS client trusting `server_ca`, offering only `version`, presenting `identity`, with
/// session resumption as asked; and its recorder.
fn client_config(
    server_ca: &str,
    identity: Identity<'_>,
    version: &'static SupportedProtocolVersion,
    resumption: bool,
    alpn: &[u8],
) -> (Arc<ClientConfig>, Arc<Recording>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.as_bytes()).unwrap())
        .unwrap();
    let identity = identity.map(|pair| {
        let chain = vec![CertificateDer::from_pem_slice(pair.cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
        Arc::new(CertifiedKey::from_der(chain, key, &provider).unwrap())
    });
    let recording = Arc::new(Recording {
        identity,
        requested: Mutex::new(None),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(recording.clone());
    config.alpn_protocols = vec![alpn.to_vec()];
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    (Arc::new(config), recording)
}

async fn tls_connect(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The TLS error inside an I/O error; fails the test when there is none.
fn tls_error(error: std::io::Error) -> rustls::Error {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a TLS error: {error:?}"))
}

/// POSTs the executor review over a new connection made with `config` (HTTP/1.1, or HTTP/2
/// when that is the configuration's ALPN).
async fn post_review(config: &Arc<ClientConfig>, addr: SocketAddr) -> (StatusCode, Bytes) {
    let tls = tls_connect(config, addr).await.expect("handshake");
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = hyper::Request::post("https://localhost/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(full(EXECUTOR_REVIEW.to_vec()))
        .unwrap();
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// An HTTP/1.1 keep-alive connection made with `config`.
async fn keep_alive(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<RequestBody> {
    let tls = tls_connect(config, addr).await.expect("handshake");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// The status of the executor review POSTed on `connection`.
async fn post_on(
    connection: &mut hyper::client::conn::http1::SendRequest<RequestBody>,
) -> StatusCode {
    connection.ready().await.unwrap();
    let request = hyper::Request::post("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(full(EXECUTOR_REVIEW.to_vec()))
        .unwrap();
    let response = connection.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

/// How the server ends a connection it refuses: the TLS error the client gets, at the
/// handshake (TLS 1.2) or, in TLS 1.3, where the client's side of the handshake ends before
/// the server has checked its certificate, at the first read. The client sends nothing after
/// its handshake, so the server reads no request; a test that the server answers nothing to a
/// request sent at once is below.
async fn refusal(config: &Arc<ClientConfig>, addr: SocketAddr) -> rustls::Error {
    let mut tls = match tls_connect(config, addr).await {
        Ok(tls) => tls,
        Err(error) => return tls_error(error),
    };
    let mut buffer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buffer)).await {
        Ok(Err(error)) => tls_error(error),
        Ok(Ok(n)) => panic!(
            "the server closed without an alert after {n} bytes: {:?}",
            String::from_utf8_lossy(&buffer)
        ),
        Err(_) => panic!("the server kept the connection open"),
    }
}

/// A server run with `--client-ca` over the bundle at `dir/client-ca.crt`, holding `pems`.
async fn server_with_client_ca(dir: &Path, pems: &[&str]) -> TestServer {
    let path = dir.join(certs::CLIENT_CA_CERT_FILE);
    replace_file(&path, &pems.concat());
    TestServer::builder().client_ca(path).start().await
}

/// Replaces `path` by a rename, as a Secret or ConfigMap update does.
fn replace_file(path: &Path, content: &str) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, content).unwrap();
    std::fs::rename(staging, path).unwrap();
}

fn client_pair() -> Generated {
    certs::generate_client("kube-apiserver", 30).unwrap()
}

async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    series_value(&server.metrics().await, series)
}

/// Reviews the server counted, over every label set.
async fn requests(server: &TestServer) -> f64 {
    server
        .metrics()
        .await
        .lines()
        .filter(|line| line.starts_with("spark_admission_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_client_certificate_from_the_client_ca_gets_the_review_answered_over_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let apiserver = client_pair();
    let mut server = server_with_client_ca(dir.path(), &[&apiserver.ca_cert]).await;
    for (version, alpn) in [
        (TLS13, &b"http/1.1"[..]),
        (TLS12, &b"http/1.1"[..]),
        (TLS13, &b"h2"[..]),
    ] {
        let (config, recording) =
            client_config(&server.ca_pems[0], Some(&apiserver), version, false, alpn);
        let (status, body) = post_review(&config, server.webhook).await;
        assert_eq!(status, StatusCode::OK, "{version:?} {alpn:?}");
        let answer = response(&body);
        assert!(answer.allowed && answer.patch.is_some(), "{answer:?}");
        // The server named its CA in the CertificateRequest, so a client holding several
        // certificates can pick the right one.
        let hints = recording.requested.lock().unwrap().clone().expect("asked");
        let ca_der = CertificateDer::from_pem_slice(apiserver.ca_cert.as_bytes()).unwrap();
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(
            ca_der.windows(hints[0].len()).any(|w| w == hints[0]),
            "the hint is the client CA's subject"
        );
    }
    assert_eq!(metric(&server, CA_RELOAD_OK).await, Some(1.0));
    assert_eq!(metric(&server, REFUSED).await, Some(0.0));
    assert_eq!(
        metric(
            &server,
            "spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"patched\"}"
        )
        .await,
        Some(3.0)
    );
    // The admin port stays plain HTTP, for the kubelet's probes and Prometheus.
    assert_eq!(admin_get(server.admin, "/healthz").await.0, StatusCode::OK);
    assert_eq!(admin_get(server.admin, "/readyz").await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn without_a_client_certificate_the_handshake_ends_with_certificate_required() {
    let dir = tempfile::tempdir().unwrap();
    let apiserver = client_pair();
    let mut server = server_with_client_ca(dir.path(), &[&apiserver.ca_cert]).await;
    for version in [TLS12, TLS13] {
        let (config, recording) =
            client_config(&server.ca_pems[0], None, version, false, b"http/1.1");
        assert_eq!(
            refusal(&config, server.webhook).await,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
            "{version:?}"
        );
        assert!(recording.requested.lock().unwrap().is_some(), "asked");
    }
    assert_eq!(metric(&server, REFUSED).await, Some(2.0));
    assert_eq!(requests(&server).await, 0.0, "no request reached HTTP");
    server.stop().await;
}

/// In TLS 1.3 a client may send its request right behind its Finished, before the server has
/// looked at its (empty) Certificate: the server must still answer nothing.
#[tokio::test]
async fn a_request_sent_right_after_the_handshake_without_a_certificate_gets_no_answer() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut server = server_with_client_ca(dir.path(), &[&client_pair().ca_cert]).await;
    let (config, _) = client_config(&server.ca_pems[0], None, TLS13, false, b"http/1.1");
    let mut tls = tls_connect(&config, server.webhook)
        .await
        .expect("in TLS 1.3 the client's side of the handshake completes first");
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        EXECUTOR_REVIEW.len()
    );
    let sent = async {
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(EXECUTOR_REVIEW).await?;
        tls.flush().await
    }
    .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    // The alert, or a reset if it came after the server closed on the unread request; never
    // a byte of HTTP.
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    match (sent, read) {
        (_, Err(error)) | (Err(error), _) => {
            if let Some(tls) = error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                assert_eq!(
                    tls,
                    &rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
                );
            } else {
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
            }
        }
        (Ok(()), Ok(_)) => panic!("the connection ended without an alert or a reset"),
    }
    assert_eq!(metric(&server, REFUSED).await, Some(1.0));
    assert_eq!(requests(&server).await, 0.0, "no request reached HTTP");
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_the_client_ca_did_not_issue_for_client_auth_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let apiserver = client_pair();
    // A CA in the bundle that also issued a serving certificate (extended key usage
    // serverAuth only): that certificate is no client identity.
    let serving = certs::generate(&["localhost".into()], 30).unwrap();
    let mut server =
        server_with_client_ca(dir.path(), &[&apiserver.ca_cert, &serving.ca_cert]).await;
    // A client pair from a CA of its own, as anyone can make.
    let stranger = client_pair();
    // One from a CA that took the client CA's name, with a key of its own.
    let impostor = same_name_ca(&apiserver);
    for (name, identity, alert) in [
        ("another CA", &stranger, AlertDescription::UnknownCA),
        (
            "a CA with the same name",
            &impostor,
            AlertDescription::DecryptError,
        ),
        (
            "not for client auth",
            &serving,
            AlertDescription::UnsupportedCertificate,
        ),
    ] {
        for version in [TLS12, TLS13] {
            let (config, _) = client_config(
                &server.ca_pems[0],
                Some(identity),
                version,
                false,
                b"http/1.1",
            );
            assert_eq!(
                refusal(&config, server.webhook).await,
                rustls::Error::AlertReceived(alert),
                "{name}, {version:?}"
            );
        }
    }
    assert_eq!(metric(&server, REFUSED).await, Some(6.0));
    assert_eq!(requests(&server).await, 0.0);
    // The same server answers its real caller.
    let (config, _) = client_config(&server.ca_pems[0], Some(&apiserver), TLS13, false, b"h2");
    assert_eq!(post_review(&config, server.webhook).await.0, StatusCode::OK);
    server.stop().await;
}

/// A client pair whose CA has the subject of `pair`'s CA but a key of its own: its signature
/// on the client certificate cannot verify under the real CA's key.
fn same_name_ca(pair: &Generated) -> Generated {
    let (_, ca) = x509_parser::pem::parse_x509_pem(pair.ca_cert.as_bytes()).unwrap();
    let ca = ca.parse_x509().unwrap();
    let name = ca
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Generated {
        ca_cert: ca.pem(),
        ca_key: ca.key().serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_ca_applies_to_new_connections_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let old = client_pair();
    let new = client_pair();
    let mut server = server_with_client_ca(dir.path(), &[&old.ca_cert]).await;
    let server_ca = server.ca_pems[0].clone();
    // Session resumption on: a resumed session would skip the certificate check.
    let (old_client, _) = client_config(&server_ca, Some(&old), TLS13, true, b"http/1.1");
    let (new_client, _) = client_config(&server_ca, Some(&new), TLS13, false, b"http/1.1");
    assert_eq!(
        post_review(&old_client, server.webhook).await.0,
        StatusCode::OK
    );
    assert_eq!(
        refusal(&new_client, server.webhook).await,
        rustls::Error::AlertReceived(AlertDescription::UnknownCA)
    );
    // A connection opened before the change keeps the CA it was verified against.
    let mut established = keep_alive(&old_client, server.webhook).await;
    assert_eq!(post_on(&mut established).await, StatusCode::OK);

    replace_file(&dir.path().join(certs::CLIENT_CA_CERT_FILE), &new.ca_cert);
    wait_until(|| async { metric(&server, CA_RELOAD_OK).await == Some(2.0) }).await;
    assert_eq!(
        post_review(&new_client, server.webhook).await.0,
        StatusCode::OK
    );
    assert_eq!(
        refusal(&old_client, server.webhook).await,
        rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        "the old CA's client is refused, resumption or not"
    );
    assert_eq!(
        post_on(&mut established).await,
        StatusCode::OK,
        "established connections are not cut"
    );

    // A broken bundle is refused, counted once, and the last good one stays.
    replace_file(
        &dir.path().join(certs::CLIENT_CA_CERT_FILE),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    wait_until(|| async { metric(&server, CA_RELOAD_ERROR).await == Some(1.0) }).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&server, CA_RELOAD_ERROR).await, Some(1.0), "once");
    assert_eq!(
        post_review(&new_client, server.webhook).await.0,
        StatusCode::OK
    );
    assert_eq!(
        refusal(&old_client, server.webhook).await,
        rustls::Error::AlertReceived(AlertDescription::UnknownCA)
    );

    // Both CAs in one bundle, as during a rotation of the apiserver's client certificate.
    replace_file(
        &dir.path().join(certs::CLIENT_CA_CERT_FILE),
        &format!("{}{}", new.ca_cert, old.ca_cert),
    );
    wait_until(|| async { metric(&server, CA_RELOAD_OK).await == Some(3.0) }).await;
    assert_eq!(
        post_review(&old_client, server.webhook).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post_review(&new_client, server.webhook).await.0,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn without_client_ca_no_certificate_is_asked_for_and_every_client_is_answered() {
    let mut server = TestServer::start().await;
    let apiserver = client_pair();
    for identity in [None, Some(&apiserver)] {
        for version in [TLS12, TLS13] {
            let (config, recording) =
                client_config(&server.ca_pems[0], identity, version, false, b"http/1.1");
            let (status, body) = post_review(&config, server.webhook).await;
            assert_eq!(status, StatusCode::OK);
            assert!(response(&body).patch.is_some());
            assert_eq!(
                *recording.requested.lock().unwrap(),
                None,
                "no CertificateRequest"
            );
        }
    }
    let metrics = server.metrics().await;
    assert_eq!(series_value(&metrics, CA_RELOAD_OK), Some(0.0));
    assert_eq!(series_value(&metrics, REFUSED), Some(0.0));
    server.stop().await;
}

/// `serve` with `SPARK_ADMISSION_CLIENT_CA` naming a bad bundle: exit 1 and an error that
/// names the file and what is wrong with it, before any port is bound.
#[test]
fn a_broken_client_ca_at_start_is_an_error_naming_the_file_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = certs::generate(&["localhost".into()], 30).unwrap();
    let cases: [(&str, String, &str); 5] = [
        ("missing.crt", String::new(), "No such file or directory"),
        (
            "empty.crt",
            "no PEM here\n".to_owned(),
            "holds no PEM certificate",
        ),
        ("key-only.crt", leaf.key.clone(), "holds no PEM certificate"),
        (
            "corrupt.crt",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
            "failed to parse the client CA bundle",
        ),
        (
            "leaf.crt",
            format!("{}{}", leaf.ca_cert, leaf.cert),
            "certificate 2 (CN=localhost) is not a CA certificate",
        ),
    ];
    for (name, content, fault) in cases {
        let path = dir.path().join(name);
        if name != "missing.crt" {
            std::fs::write(&path, content).unwrap();
        }
        let out = Command::new(SERVE_BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env(
                "SPARK_ADMISSION_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "SPARK_ADMISSION_ADMIN_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("SPARK_ADMISSION_CLIENT_CA", &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let error = stderr
            .lines()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("{name}: no error line in {stderr}"));
        assert!(
            error.starts_with("error: failed to load --client-ca: ")
                && error.contains(&path.display().to_string())
                && error.contains(fault),
            "{name}: {error}"
        );
    }
}

/// `certs --client` makes the pair a cluster admin gives the kube-apiserver, and `serve`
/// configured only through the environment takes its CA: the client certificate is answered,
/// no certificate is refused.
#[tokio::test]
async fn certs_client_writes_a_pair_that_serve_with_client_ca_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SERVE_BIN)
        .args([
            "certs",
            "--client",
            "kube-apiserver",
            "--days",
            "40",
            "--out",
        ])
        .arg(dir.path().join("client"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing to paste: no caBundle for a client pair"
    );
    let read = |file: &str| std::fs::read_to_string(dir.path().join("client").join(file)).unwrap();
    let pair = Generated {
        ca_cert: read(certs::CLIENT_CA_CERT_FILE),
        ca_key: read(certs::CLIENT_CA_KEY_FILE),
        cert: read(certs::CLIENT_CERT_FILE),
        key: read(certs::CLIENT_KEY_FILE),
    };
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [certs::CLIENT_CA_KEY_FILE, certs::CLIENT_KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join("client").join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
    let (_, leaf) = x509_parser::pem::parse_x509_pem(pair.cert.as_bytes()).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    assert_eq!(leaf.subject().to_string(), "CN=kube-apiserver");
    assert!(
        leaf.issuer()
            .to_string()
            .starts_with("CN=spark-admission client CA "),
        "a CA name of its own: {}",
        leaf.issuer()
    );
    let usage = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(usage.client_auth && !usage.server_auth, "{usage:?}");
    let days =
        (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 40, "40 days and the hour of clock skew allowed");

    let ca_path = dir.path().join("client").join(certs::CLIENT_CA_CERT_FILE);
    let serve =
        ServeProcess::start_fresh(&[("SPARK_ADMISSION_CLIENT_CA", ca_path.to_str().unwrap())])
            .await;
    let (with, _) = client_config(&serve.ca(), Some(&pair), TLS13, false, b"http/1.1");
    let (status, body) = post_review(&with, serve.webhook).await;
    assert_eq!(status, StatusCode::OK, "{}", serve.log());
    assert!(response(&body).patch.is_some());
    let (without, _) = client_config(&serve.ca(), None, TLS13, false, b"http/1.1");
    assert_eq!(
        refusal(&without, serve.webhook).await,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired)
    );
}

/// CAs made by hand for a rotation often repeat the old CA's name: with both in the bundle,
/// each one's clients are answered (the verifier tries every CA of that name).
#[tokio::test]
async fn two_cas_of_one_name_in_the_bundle_each_vouch_for_their_own_clients() {
    let dir = tempfile::tempdir().unwrap();
    let old = client_pair();
    let new = same_name_ca(&old);
    let mut server = server_with_client_ca(dir.path(), &[&new.ca_cert, &old.ca_cert]).await;
    for pair in [&old, &new] {
        let (config, _) = client_config(&server.ca_pems[0], Some(pair), TLS13, false, b"http/1.1");
        assert_eq!(post_review(&config, server.webhook).await.0, StatusCode::OK);
    }
    server.stop().await;
}
