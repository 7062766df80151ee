//! The server over real sockets and real TLS: answers, errors, metrics, HTTP/2, certificate
//! rotation and graceful shutdown.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use support::*;

/// What the patch must contain is checked against hand-written answers in tests/golden.rs; here,
/// the envelope the apiserver needs.
#[tokio::test]
async fn each_fixture_gets_an_envelope_the_apiserver_accepts() {
    let mut server = TestServer::start().await;
    let client = server.client();
    for fixture in [EXECUTOR_REVIEW, DRIVER_REVIEW] {
        let (status, body) = client.post("/mutate", fixture.to_vec()).await;
        assert_eq!(status, StatusCode::OK);
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let response = response(&body);
        let uid =
            serde_json::from_slice::<serde_json::Value>(fixture).unwrap()["request"]["uid"].clone();
        assert_eq!(json!(response.uid), uid, "uid echoed");
        assert!(response.allowed);
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        assert!(
            review["response"]["patch"].is_string(),
            "patch is base64 text, as the apiserver requires"
        );
        // The built-in policy is examples/policies/platform.yaml; `sha256sum` of that file
        // starts with these 12 hex digits.
        assert_eq!(
            response
                .audit_annotations
                .get("policy-hash")
                .map(String::as_str),
            Some("592e0c485ba7")
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let mut server = TestServer::start().await;
    let (status, body, alpn) = server
        .client()
        .post_h2("/mutate", EXECUTOR_REVIEW.to_vec())
        .await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, StatusCode::OK);
    assert!(response(&body).patch.is_some());
    server.stop().await;
}

#[tokio::test]
async fn update_delete_and_non_spark_pods_are_allowed_unchanged() {
    let mut server = TestServer::start().await;
    let client = server.client();
    for operation in ["UPDATE", "DELETE", "CONNECT"] {
        let body = review_with(EXECUTOR_REVIEW, |r| {
            r["request"]["operation"] = json!(operation)
        });
        let (status, body) = client.post("/mutate", body).await;
        assert_eq!(status, StatusCode::OK);
        let response = response(&body);
        assert!(
            response.allowed && response.patch.is_none(),
            "{operation}: {response:?}"
        );
    }
    let not_spark = review_with(EXECUTOR_REVIEW, |r| {
        r["request"]["object"]["metadata"]["labels"] = json!({"app": "web"});
    });
    let (_, body) = client.post("/mutate", not_spark).await;
    let response = response(&body);
    assert!(response.allowed && response.patch.is_none() && response.warnings.is_empty());
    let metrics = server.metrics().await;
    assert!(metrics.contains("spark_admission_requests_total{operation=\"UPDATE\",role=\"none\",result=\"unchanged\"} 1"), "{metrics}");
    assert!(metrics.contains("spark_admission_requests_total{operation=\"CREATE\",role=\"none\",result=\"unchanged\"} 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_denial_is_allowed_false_with_403_and_the_message() {
    let mut server = TestServer::builder()
        .policy_file("rules: [{name: caps, resources: {executor: {max: {memory: 1Gi}}}}]")
        .start()
        .await;
    let (status, body) = server
        .client()
        .post("/mutate", EXECUTOR_REVIEW.to_vec())
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = response(&body);
    assert!(!response.allowed);
    let denial = response.status.expect("status");
    assert_eq!(denial.code, 403);
    // SPEC §4: the container, the resource, the value and the limit; the executor's memory
    // request and its limit are both 2432Mi, so both are named.
    assert_eq!(
        denial.message,
        "container spark-kubernetes-executor requests memory 2432Mi, over the max 1Gi set by rule caps; \
         container spark-kubernetes-executor has a limit of memory 2432Mi, over the max 1Gi set by rule caps"
    );
    assert!(response.patch.is_none());
    let metrics = server.metrics().await;
    assert_eq!(
        series_value(
            &metrics,
            "spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"denied\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_documented_answers_and_the_server_keeps_serving() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let truncated = &EXECUTOR_REVIEW[..EXECUTOR_REVIEW.len() / 2];
    let wrong_kind = review_with(EXECUTOR_REVIEW, |r| r["kind"] = json!("Pod"));
    let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "garbage",
            b"\x00\xffnot json at all".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "truncated",
            truncated.to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "wrong kind",
            wrong_kind,
            StatusCode::BAD_REQUEST,
            "expected kind AdmissionReview",
        ),
        (
            "no request",
            no_request,
            StatusCode::BAD_REQUEST,
            "has no request",
        ),
        (
            "8 MiB",
            vec![b' '; 8 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body is larger than the 7340032 byte limit",
        ),
    ];
    for (name, body, expected, fragment) in cases {
        let (status, answer) = client.post("/mutate", body).await;
        assert_eq!(status, expected, "{name}");
        let error: serde_json::Value =
            serde_json::from_slice(&answer).unwrap_or_else(|_| panic!("{name}: JSON error body"));
        assert!(
            error["error"].as_str().unwrap().contains(fragment),
            "{name}: {error}"
        );
        // The server is still there.
        let (status, _) = client.post("/mutate", EXECUTOR_REVIEW.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "after {name}");
    }
    // A valid review of 6 MiB (a pod with a large annotation) is answered normally.
    let big = review_with(EXECUTOR_REVIEW, |r| {
        r["request"]["object"]["metadata"]["annotations"] =
            json!({"big": "x".repeat(6 * 1024 * 1024)});
    });
    assert!(big.len() > 6 * 1024 * 1024);
    let (status, body) = client.post("/mutate", big).await;
    assert_eq!(status, StatusCode::OK);
    assert!(response(&body).patch.is_some());

    let metrics = server.metrics().await;
    assert!(
        metrics.contains(
            "spark_admission_requests_total{operation=\"unknown\",role=\"none\",result=\"error\"} 5"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"patched\"} 6"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn admin_port_reports_health_readiness_and_metrics() {
    let mut server = TestServer::start().await;
    server
        .client()
        .post("/mutate", EXECUTOR_REVIEW.to_vec())
        .await;
    assert_eq!(admin_get(server.admin, "/healthz").await.0, StatusCode::OK);
    assert_eq!(admin_get(server.admin, "/readyz").await.0, StatusCode::OK);
    let metrics = server.metrics().await;
    for name in [
        "# TYPE spark_admission_requests_total counter",
        "# TYPE spark_admission_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let value = |series: &str| series_value(&metrics, series);
    // The built-in example's text.
    let example = std::fs::read_to_string("examples/policies/platform.yaml").unwrap();
    let policy_hash = policy_hash(&example);
    assert_eq!(
        value(&format!(
            "spark_admission_policy_info{{hash=\"{policy_hash}\"}}"
        )),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value("spark_admission_certificate_reload_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            "spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"patched\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // The serving certificate's own notAfter, read from the file the server loaded.
    let not_after = certificate_not_after(&server.cert_dir().join("tls.crt"));
    assert_eq!(
        value("spark_admission_certificate_expiry_timestamp_seconds"),
        Some(not_after as f64),
        "{metrics}"
    );
    assert_eq!(
        admin_get(server.admin, "/nope").await.0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

#[tokio::test]
async fn not_ready_until_a_valid_policy_file_and_never_replaced_by_a_bad_one() {
    let mut server = TestServer::builder()
        .policy_file("rules: [{name: BAD}]")
        .start()
        .await;
    assert_eq!(
        admin_get(server.admin, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, _) = server
        .client()
        .post("/mutate", EXECUTOR_REVIEW.to_vec())
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let path = server.dir.path().join("policy.yaml");
    std::fs::write(&path, "rules: [{name: good, labels: {x: one}}]").unwrap();
    wait_until(|| async { admin_get(server.admin, "/readyz").await.0 == StatusCode::OK }).await;
    std::fs::write(&path, "rules: [{name: good, labls: {x: two}}]").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, body) = server
        .client()
        .post("/mutate", EXECUTOR_REVIEW.to_vec())
        .await;
    let patch = serde_json::to_string(&response(&body).decoded_patch().unwrap()).unwrap();
    assert!(patch.contains("\"one\""), "still the good policy: {patch}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("spark_admission_policy_reload_total{result=\"error\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn validate_policy_refuses_an_invalid_policy_configmap_with_every_error() {
    let mut server = TestServer::start().await;
    let review = |policy: &str, labelled: bool| {
        let labels = if labelled {
            json!({"spark-admission.io/policy": "true"})
        } else {
            json!({})
        };
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "operation": "UPDATE", "userInfo": {"username": "admin"},
                "name": "spark-admission-policy", "namespace": "spark-admission",
                "object": {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "spark-admission-policy", "labels": labels},
                    "data": {"policy.yaml": policy}}
            }
        }))
        .unwrap()
    };
    let client = server.client();
    let (_, body) = client
        .post(
            "/validate-policy",
            review("rules: [{name: Bad, nodeSelectr: {}}]", true),
        )
        .await;
    let answer = response(&body);
    assert!(!answer.allowed);
    let message = answer.status.unwrap().message;
    assert!(
        message.contains("rules[0].name") && message.contains("rules[0].nodeSelectr"),
        "{message}"
    );
    let (_, body) = client
        .post("/validate-policy", review("rules: [{name: good}]", true))
        .await;
    assert!(response(&body).allowed);
    let (_, body) = client
        .post("/validate-policy", review("not: a policy", false))
        .await;
    assert!(
        !response(&body).allowed,
        "the policy ConfigMap is known by its namespace and name, not by a label"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_by_symlink_swap_drops_no_request() {
    let mut server = TestServer::start().await;
    let new_pair = spark_admission::certs::generate(&["localhost".into()], 30).unwrap();
    let mut cas = server.ca_pems.clone();
    cas.push(new_pair.ca_cert.clone());
    let client = support::Client::new(&cas, server.webhook);
    let old_leaf = client.connect().await.unwrap().peer_certificate;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let client = client.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut connection = client.connect().await.unwrap();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Half the workers reconnect every few requests, so handshakes span the swap.
                if worker % 2 == 0 && i.is_multiple_of(5) {
                    connection = match client.connect().await {
                        Ok(c) => c,
                        Err(e) => {
                            failed.push(format!("connect: {e}"));
                            continue;
                        }
                    };
                }
                match connection.post("/mutate", EXECUTOR_REVIEW.to_vec()).await {
                    Ok((StatusCode::OK, _)) => ok += 1,
                    Ok((status, _)) => failed.push(format!("status {status}")),
                    Err(e) => failed.push(format!("request: {e}")),
                }
                i += 1;
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubelet_swap(&server.cert_dir(), "..gen-2", &new_pair);
    let mut new_leaf = old_leaf.clone();
    for _ in 0..100 {
        new_leaf = client.connect().await.unwrap().peer_certificate;
        if new_leaf != old_leaf {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let (ok, failed) = worker.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during rotation: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 20, "only {total} requests ran");
    let expected_leaf =
        rustls::pki_types::CertificateDer::from_pem_slice(new_pair.cert.as_bytes()).unwrap();
    assert_eq!(
        new_leaf,
        expected_leaf.to_vec(),
        "new connections see the new certificate"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("spark_admission_certificate_reload_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn a_bad_new_certificate_is_refused_and_the_old_one_stays() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let before = client.connect().await.unwrap().peer_certificate;
    // A certificate with another pair's key: rustls refuses the mismatch.
    let one = spark_admission::certs::generate(&["localhost".into()], 30).unwrap();
    let two = spark_admission::certs::generate(&["localhost".into()], 30).unwrap();
    let mismatched = spark_admission::certs::Generated {
        key: two.key.clone(),
        ..one
    };
    kubelet_swap(&server.cert_dir(), "..gen-bad", &mismatched);
    wait_until(|| async {
        server
            .metrics()
            .await
            .contains("spark_admission_certificate_reload_total{result=\"error\"} 1")
    })
    .await;
    let after = client.connect().await.unwrap().peer_certificate;
    assert_eq!(before, after, "old certificate still served");
    let (status, _) = client.post("/mutate", EXECUTOR_REVIEW.to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

/// A request whose body arrives slowly, so it is in flight when shutdown begins.
async fn slow_request(
    connection: &mut support::Connection,
    delay: Duration,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    let (mut sender, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    let half = EXECUTOR_REVIEW.len() / 2;
    tokio::spawn(async move {
        let _ = sender
            .send_data(Bytes::from_static(&EXECUTOR_REVIEW[..half]))
            .await;
        tokio::time::sleep(delay).await;
        let _ = sender
            .send_data(Bytes::from_static(&EXECUTOR_REVIEW[half..]))
            .await;
    });
    use http_body_util::BodyExt;
    connection.send("/mutate", body.boxed()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_closes_idle_connections() {
    // Idle HTTP/1.1 connections are closed halfway through the drain timeout.
    let mut server = TestServer::builder()
        .drain_timeout(Duration::from_secs(2))
        .start()
        .await;
    let client = server.client();
    let mut idle = client.connect().await.unwrap();
    let (status, _) = idle
        .post("/mutate", EXECUTOR_REVIEW.to_vec())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    let mut in_flight = Vec::new();
    for _ in 0..8 {
        let mut connection = client.connect().await.unwrap();
        in_flight.push(tokio::spawn(async move {
            slow_request(&mut connection, Duration::from_millis(500)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = server.begin_stop();
    for request in in_flight {
        let (status, body) = request.await.unwrap().expect("in-flight request completes");
        assert_eq!(status, StatusCode::OK);
        assert!(response(&body).patch.is_some());
    }
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("stops in time")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        idle.is_closed()
            || idle
                .post("/mutate", EXECUTOR_REVIEW.to_vec())
                .await
                .is_err(),
        "idle keep-alive connection closed"
    );
    assert!(
        client.connect().await.is_err(),
        "no new connections after shutdown"
    );
}

/// The apiserver keeps HTTP/1.1 connections to a webhook in a pool and never retries a POST
/// that meets a connection closed under it; under `failurePolicy: Fail` that refuses a pod. So
/// a pooled connection left idle through the shutdown delay must still answer its next
/// request during the drain, and then close (`Connection: close`), as must a busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_drain_a_pooled_keep_alive_connection_answers_its_next_request_then_closes() {
    let mut server = TestServer::builder()
        .shutdown_delay(Duration::from_millis(300))
        .start()
        .await;
    let client = server.client();
    let mut pooled = client.connect().await.unwrap();
    let (status, _) = pooled
        .post("/mutate", EXECUTOR_REVIEW.to_vec())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let stopped = server.begin_stop();
    // Past the delay: the listener is closed and the drain has begun.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(client.connect().await.is_err(), "listener closed");
    let (status, body) = pooled
        .post("/mutate", EXECUTOR_REVIEW.to_vec())
        .await
        .expect("the pooled connection still answers");
    assert_eq!(status, StatusCode::OK);
    assert!(response(&body).patch.is_some());
    wait_until(|| async { pooled.is_closed() }).await;
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("stops once its last connection closed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_while_still_serving_during_the_shutdown_delay() {
    let mut server = TestServer::builder()
        .shutdown_delay(Duration::from_millis(600))
        .start()
        .await;
    let client = server.client();
    let stopped = server.begin_stop();
    wait_until(|| async {
        admin_get(server.admin, "/readyz").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (status, _) = client.post("/mutate", EXECUTOR_REVIEW.to_vec()).await;
    assert_eq!(status, StatusCode::OK, "still answering during the delay");
    stopped.await.unwrap();
}
