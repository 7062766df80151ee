//! `serve --client-ca` against the real kube-apiserver. tests/e2e/cluster.sh starts it with an
//! AdmissionConfiguration (`admission.yaml`) whose webhook plugins present the client
//! certificate `$E2E_WEBHOOK_CLIENT_CERT` to every webhook; a webhook given its CA
//! (`$E2E_WEBHOOK_CLIENT_CA`) answers the apiserver, directly and through a TCP proxy that
//! passes TLS through, and refuses in the TLS handshake a client that has no such
//! certificate, which never reaches HTTP. Then the apiserver's certificate is rotated as
//! deploy/README.md says, to a pair from `spark-admission certs --client`, without restarting
//! the apiserver.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    BIN, DRIVER_REVIEW, EXECUTOR_REVIEW, Haproxy, POLICY, Registration, SparkSubmit, TestNamespace,
    Webhook, assert_policy_applied, base64_decode, client, create_fixture, env, labels,
};

const REFUSED: &str = "spark_admission_client_certificates_refused_total";

/// The alert a client without a certificate gets.
const CERTIFICATE_REQUIRED: Ended = Ended::Tls(rustls::Error::AlertReceived(
    AlertDescription::CertificateRequired,
));

/// A TLS 1.3 client trusting the webhook's serving CA (`ca_bundle`, base64 PEM), presenting
/// the certificate and key in the PEM files `identity`, or none.
fn tls_client(ca_bundle: &str, identity: Option<(&str, &str)>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&base64_decode(ca_bundle)) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// How the server ended a connection that got no answer.
#[derive(Debug, PartialEq)]
enum Ended {
    /// With a TLS alert (or another TLS error).
    Tls(rustls::Error),
    /// With the connection reset under a write or read: what a client that wrote its request
    /// after the server had closed on its alert may see instead of the alert.
    Io(std::io::ErrorKind),
}

/// Connects to `port` with `config` and, once the handshake is through, POSTs the executor
/// review unless `send` is false; what the server sent back, or how it ended the connection.
async fn call(config: &Arc<ClientConfig>, port: u16, send: bool) -> Result<String, Ended> {
    let ended = |error: std::io::Error| match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Ended::Tls(tls.clone()),
        None => Ended::Io(error.kind()),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(ended)?;
    let mut sent = Ok(());
    if send {
        let head = format!(
            "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            EXECUTOR_REVIEW.len()
        );
        sent = async {
            tls.write_all(head.as_bytes()).await?;
            tls.write_all(EXECUTOR_REVIEW.as_bytes()).await?;
            tls.flush().await
        }
        .await;
    }
    // Read even after a failed write: an alert that came before the reset is still there.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
        .await
        .expect("the webhook answers or closes");
    match (read, sent) {
        (Err(error), _) => Err(ended(error)),
        (Ok(_), Err(error)) => Err(ended(error)),
        (Ok(_), Ok(())) => Ok(String::from_utf8_lossy(&answer).into_owned()),
    }
}

/// haproxy in TCP mode in front of one webhook: TLS, and so the apiserver's client
/// certificate, pass through to it untouched, as they do through a Kubernetes Service.
fn tcp_proxy(webhook: &Webhook) -> Haproxy {
    Haproxy::start(|_, port| {
        format!(
            "global\n  maxconn 64\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             frontend webhook\n  bind 127.0.0.1:{port}\n  default_backend replica\n\
             backend replica\n  server replica0 127.0.0.1:{}\n",
            webhook.port
        )
    })
}

/// The apiserver's webhook client certificate and key files (cluster.sh's), restored when
/// dropped, so that the cluster presents its own pair again after the test, failed or not.
struct ApiserverClientPair {
    files: [(PathBuf, Vec<u8>); 2],
}

impl ApiserverClientPair {
    fn save() -> Self {
        let file = |name: &str| {
            let path = PathBuf::from(env(name));
            let content = std::fs::read(&path).unwrap();
            (path, content)
        };
        Self {
            files: [
                file("E2E_WEBHOOK_CLIENT_CERT"),
                file("E2E_WEBHOOK_CLIENT_KEY"),
            ],
        }
    }

    /// Replaces both files by renames, key first, as a careful admin would.
    fn replace(&self, cert: &Path, key: &Path) {
        for (target, source) in [(&self.files[1].0, key), (&self.files[0].0, cert)] {
            let staging = target.with_extension("new");
            std::fs::copy(source, &staging).unwrap();
            std::fs::rename(staging, target).unwrap();
        }
    }
}

impl Drop for ApiserverClientPair {
    fn drop(&mut self) {
        for (path, content) in &self.files {
            let _ = std::fs::write(path, content);
        }
    }
}

/// The subjects of the client certificates the webhook saw at handshakes, from its JSON log.
fn client_subjects(webhook: &Webhook) -> Vec<String> {
    webhook
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "TLS handshake done")
        .filter_map(|line| line["client"].as_str().map(str::to_owned))
        .collect()
}

/// Replaces the webhook's `--client-ca` file and waits until the webhook has loaded it.
async fn replace_client_ca(webhook: &Webhook, path: &Path, content: &[u8]) {
    let reloads = "spark_admission_client_ca_reload_total{result=\"ok\"}";
    let before = webhook.metric(reloads).await;
    let staging = path.with_extension("new");
    std::fs::write(&staging, content).unwrap();
    std::fs::rename(staging, path).unwrap();
    let started = Instant::now();
    while webhook.metric(reloads).await <= before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the client CA was not reloaded: {}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn with_client_ca_the_apiserver_gets_answers_and_a_client_without_a_certificate_is_refused_at_the_handshake()
 {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "client-ca").await;
    // The webhook reads a copy of the cluster's client CA, which the rotation below rewrites.
    let ca_dir = tempfile::tempdir().unwrap();
    let client_ca = ca_dir.path().join("client-ca.crt");
    std::fs::copy(env("E2E_WEBHOOK_CLIENT_CA"), &client_ca).unwrap();
    let webhook = Webhook::start_with(
        POLICY,
        &[
            "--client-ca",
            client_ca.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[],
    )
    .await;
    let _registration = Registration::create(
        &client,
        "e2e-client-ca",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);

    // Pods created through the apiserver, which presents its client certificate: patched.
    for (review, name) in [(EXECUTOR_REVIEW, "exec-1"), (DRIVER_REVIEW, "driver")] {
        create_fixture(&pods, review, name)
            .await
            .expect("admitted through the webhook");
        assert_policy_applied(&pods.get(name).await.unwrap(), &namespace.name);
    }
    // Real Spark: the executors the driver asks the apiserver for.
    let mut spark = SparkSubmit::client_mode(
        &namespace.name,
        "nightly-etl",
        &[("spark.executor.instances", "2")],
    );
    let started = Instant::now();
    let executors = loop {
        // The fixture executor carries the same application name: Spark's are the others.
        let list: Vec<Pod> = pods
            .list(&ListParams::default().labels("spark-role=executor"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|pod| pod.metadata.name.as_deref() != Some("exec-1"))
            .collect();
        if list.len() >= 2 {
            break list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120) && spark.exit_code().is_none(),
            "2 executor pods not created ({} found); spark-submit log:\n{}",
            list.len(),
            spark.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    spark.stop();
    for pod in &executors {
        assert_policy_applied(pod, &namespace.name);
    }
    // Listed once Spark has stopped, so an executor created meanwhile is in both counts.
    let stored = pods.list(&ListParams::default()).await.unwrap().items.len();
    let answered = webhook.requests().await;
    assert_eq!(
        answered, stored as u64,
        "one call per pod stored: the fixtures and Spark's executors"
    );
    assert!(
        client_subjects(&webhook)
            .iter()
            .all(|subject| subject == "CN=kube-apiserver-webhook-client"),
        "{:?}",
        client_subjects(&webhook)
    );
    assert_eq!(
        webhook.metric(REFUSED).await,
        0.0,
        "the apiserver presented its certificate on every connection"
    );

    // Any other client, with no certificate: refused inside the handshake, both when it
    // waits for the server and when it sends a review at once; nothing reaches HTTP.
    let without = tls_client(&webhook.ca_bundle, None);
    assert_eq!(
        call(&without, webhook.port, false).await,
        Err(CERTIFICATE_REQUIRED)
    );
    match call(&without, webhook.port, true).await {
        Ok(answer) => panic!("a client without a certificate got an answer: {answer:?}"),
        Err(Ended::Io(kind)) => assert!(
            matches!(
                kind,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{kind:?}"
        ),
        Err(ended) => assert_eq!(ended, CERTIFICATE_REQUIRED),
    }
    assert_eq!(
        webhook.requests().await,
        answered,
        "the request counter did not move"
    );
    assert_eq!(webhook.metric(REFUSED).await, 2.0);

    // What decides is the certificate, not where the call comes from: the same client with
    // the apiserver's certificate is answered.
    let cert = env("E2E_WEBHOOK_CLIENT_CERT");
    let key = env("E2E_WEBHOOK_CLIENT_KEY");
    let with = tls_client(&webhook.ca_bundle, Some((&cert, &key)));
    let answer = call(&with, webhook.port, true).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(webhook.requests().await, answered + 1);

    // Through a TCP proxy (as a Service forwards), the apiserver's certificate reaches the
    // webhook and pods are patched; the proxy's own clients without one are refused.
    let proxied_namespace = TestNamespace::create(&client, "client-ca-proxy").await;
    let proxy = tcp_proxy(&webhook);
    let proxied_registration = Registration::through_balancer(
        &client,
        "e2e-client-ca-proxy",
        &proxy,
        &webhook.ca_bundle,
        &proxied_namespace,
    )
    .await;
    let proxied = Api::<Pod>::namespaced(client.clone(), &proxied_namespace.name);
    create_fixture(&proxied, EXECUTOR_REVIEW, "exec-1")
        .await
        .expect("admitted through the proxy");
    let stored = proxied.get("exec-1").await.unwrap();
    assert_policy_applied(&stored, &proxied_namespace.name);
    assert_eq!(
        labels(&stored).get("cost-center"),
        Some(&proxied_namespace.name)
    );
    assert_eq!(
        call(&without, proxy.port, false).await,
        Err(CERTIFICATE_REQUIRED)
    );
    assert_eq!(webhook.requests().await, answered + 2);
    assert_eq!(webhook.metric(REFUSED).await, 3.0);
    drop(proxied_registration);

    // Rotation (deploy/README.md): a new pair from `spark-admission certs --client`; both CAs
    // in the webhook's bundle, re-read with no restart; the apiserver's files replaced, which
    // it re-reads by itself. Its pooled connections to this webhook keep the pair they were
    // made with, so the pair it presents now shows on a webhook it has no connection to yet,
    // one that trusts the new CA only.
    let rotated = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "certs",
            "--client",
            "kube-apiserver",
            "--days",
            "30",
            "--out",
        ])
        .arg(rotated.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old_ca = std::fs::read(&client_ca).unwrap();
    let new_ca_path = rotated.path().join("client-ca.crt");
    let new_ca = std::fs::read(&new_ca_path).unwrap();
    replace_client_ca(&webhook, &client_ca, &[new_ca, old_ca].concat()).await;
    let pair = ApiserverClientPair::save();
    pair.replace(
        &rotated.path().join("client.crt"),
        &rotated.path().join("client.key"),
    );
    create_fixture(&pods, EXECUTOR_REVIEW, "exec-rotating")
        .await
        .expect("admitted while both CAs are trusted");
    assert_policy_applied(&pods.get("exec-rotating").await.unwrap(), &namespace.name);

    let rotated_namespace = TestNamespace::create(&client, "client-ca-rotated").await;
    let fresh = Webhook::start_with(
        POLICY,
        &[
            "--client-ca",
            new_ca_path.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[],
    )
    .await;
    let _fresh_registration = Registration::create(
        &client,
        "e2e-client-ca-rotated",
        &fresh,
        &rotated_namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let rotated_pods = Api::<Pod>::namespaced(client.clone(), &rotated_namespace.name);
    create_fixture(&rotated_pods, EXECUTOR_REVIEW, "exec-1")
        .await
        .expect("the apiserver presents the new pair");
    assert_policy_applied(
        &rotated_pods.get("exec-1").await.unwrap(),
        &rotated_namespace.name,
    );
    assert_eq!(
        client_subjects(&fresh),
        ["CN=kube-apiserver"],
        "the pair from certs --client, with no apiserver restart"
    );
    assert_eq!(fresh.metric(REFUSED).await, 0.0);
    drop(pair);
}
