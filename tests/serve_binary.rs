//! The `serve` and `certs` commands as processes: a fresh directory with no arguments (options
//! from the environment), and SIGTERM during a stream of requests.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use support::*;

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn serve_with_no_arguments_generates_certificates_and_uses_the_example_policy() {
    let dir = tempfile::tempdir().unwrap();
    let process = ServeProcess::start(dir.path(), &[]).await;
    let ca =
        std::fs::read_to_string(dir.path().join("certs/ca.crt")).expect("CA generated into certs/");
    let client = support::Client::new(&[ca], process.webhook);
    let (status, body) = client.post("/mutate", EXECUTOR_REVIEW.to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let answer = response(&body);
    assert_eq!(
        answer
            .audit_annotations
            .get("applied-rules")
            .map(String::as_str),
        Some("cost-labels,executor-pool,warehouse-credentials,resource-guardrails")
    );
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("curl --cacert certs/ca.crt"),
        "the log says how to call it:\n{log}"
    );

    // A second start keeps the certificates already there.
    let before = std::fs::read(dir.path().join("certs/tls.crt")).unwrap();
    let mut process = process;
    sigterm(&process.child);
    assert!(process.child.wait().unwrap().success());
    let _again = ServeProcess::start(dir.path(), &[]).await;
    assert_eq!(
        before,
        std::fs::read(dir.path().join("certs/tls.crt")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stream_of_requests_loses_none_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("pki");
    let status = Command::new(SERVE_BIN)
        .args(["certs", "--dns", "localhost", "127.0.0.1", "--out"])
        .arg(&certs_dir)
        .output()
        .unwrap();
    assert!(status.status.success());
    let ca_bundle = String::from_utf8(status.stdout).unwrap();
    let ca = std::fs::read_to_string(certs_dir.join("ca.crt")).unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(ca_bundle.trim())
            .unwrap(),
        ca.as_bytes(),
        "certs prints the caBundle"
    );

    let (cert, key) = (
        certs_dir.join("tls.crt").display().to_string(),
        certs_dir.join("tls.key").display().to_string(),
    );
    let mut process = ServeProcess::start(
        dir.path(),
        &[
            ("SPARK_ADMISSION_TLS_CERT", &cert),
            ("SPARK_ADMISSION_TLS_KEY", &key),
            ("SPARK_ADMISSION_SHUTDOWN_DELAY", "200ms"),
        ],
    )
    .await;
    let client = support::Client::new(&[ca], process.webhook);

    // A stream: 6 workers sending requests back to back; some bodies arrive slowly so requests
    // are in flight at the moment SIGTERM lands.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..6u64 {
        let client = client.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut completed, mut lost) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Connecting may fail once the listener is closed: that request was never sent.
                let Ok(mut connection) = client.connect().await else {
                    break;
                };
                let (mut tx, body) =
                    http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(2);
                let delay = Duration::from_millis(50 * (worker % 3));
                tokio::spawn(async move {
                    let half = EXECUTOR_REVIEW.len() / 2;
                    let _ = tx
                        .send_data(Bytes::from_static(&EXECUTOR_REVIEW[..half]))
                        .await;
                    tokio::time::sleep(delay).await;
                    let _ = tx
                        .send_data(Bytes::from_static(&EXECUTOR_REVIEW[half..]))
                        .await;
                });
                use http_body_util::BodyExt;
                match connection.send("/mutate", body.boxed()).await {
                    Ok((StatusCode::OK, _)) => completed += 1,
                    Ok((status, body)) => lost.push(format!(
                        "status {status} {}",
                        String::from_utf8_lossy(&body)
                    )),
                    Err(error) => lost.push(format!("{error}")),
                }
            }
            (completed, lost)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&process.child);
    let exited = tokio::task::spawn_blocking(move || {
        let status = process.child.wait().unwrap();
        std::mem::forget(process);
        status
    });
    let status = tokio::time::timeout(Duration::from_secs(15), exited)
        .await
        .expect("exits in time")
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "exit status {status:?}");
    let mut total = 0;
    for worker in workers {
        let (completed, lost) = worker.await.unwrap();
        assert!(lost.is_empty(), "requests lost at shutdown: {lost:?}");
        total += completed;
    }
    assert!(total > 10, "only {total} requests completed");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped"),
        "{log}"
    );
}

/// A ConfigMap AdmissionReview for `/validate-policy` with an invalid policy under
/// `policy.yaml`.
fn invalid_policy_configmap_review(namespace: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-guard", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "operation": "UPDATE", "userInfo": {"username": "admin"},
            "name": name, "namespace": namespace,
            "object": {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"policy.yaml": "rules: [{name: Bad_Name}]"},
            },
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn guard_configmap_names_the_policy_configmap_validate_policy_checks_in_file_mode() {
    let dir = tempfile::tempdir().unwrap();
    let process = ServeProcess::start(
        dir.path(),
        &[("SPARK_ADMISSION_GUARD_CONFIGMAP", "team-a/spark-policy")],
    )
    .await;
    let client = support::Client::new(&[process.ca()], process.webhook);
    let allowed = |body: &[u8]| {
        let review: serde_json::Value = serde_json::from_slice(body).unwrap();
        review["response"]["allowed"].as_bool().unwrap()
    };
    let (status, body) = client
        .post(
            "/validate-policy",
            invalid_policy_configmap_review("team-a", "spark-policy"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!allowed(&body), "the guarded ConfigMap is checked");
    let (_, body) = client
        .post(
            "/validate-policy",
            invalid_policy_configmap_review("spark-admission", "spark-admission-policy"),
        )
        .await;
    assert!(
        allowed(&body),
        "the default name is no longer the one guarded"
    );
}
