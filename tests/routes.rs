//! Routing and status codes of the webhook and admin applications, driven through
//! `router(state)` and `admin_router(state)` with `tower::ServiceExt::oneshot`, no socket: each
//! status `/mutate` answers (200, 400, 408, 413, 503) and `/readyz`'s, against what README.md
//! ("The server") and docs/reliability.md ("Bounds on the ports") say. Every one of these
//! statuses is produced in the router itself (`read_body` and the handlers in
//! src/server/routes.rs): the connection layer answers none, it only closes connections (caps,
//! timeouts, drain), which tests/bounds.rs and tests/server.rs check over real sockets.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use spark_admission::Policy;
use spark_admission::server::limits::{Limits, RequestBudget};
use spark_admission::server::{admin_router, router, router_with_budget};
use spark_admission::state::State;
use support::{EXECUTOR_REVIEW, oneshot_router, review_with};

/// 7 MiB, the documented limit (README: "Bodies up to 7 MiB"), written out here rather than
/// taken from the crate.
const SEVEN_MIB: usize = 7 * 1024 * 1024;

/// A policy whose whole effect on the executor fixture can be written by hand from SPEC §4.
const COST_LABELS: &str = r#"rules: [{name: cost-labels, labels: {cost-center: "{namespace}"}}]"#;

fn state_with(policy: &str) -> Arc<State> {
    let state = Arc::new(State::new());
    state.set_policy(Policy::parse(policy).unwrap());
    state
}

/// A POST to `/mutate` as the apiserver sends it: JSON with its Content-Length.
fn mutate(body: impl Into<Bytes>) -> Request<Body> {
    let body = body.into();
    Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap()
}

/// A body that sends `first` and then never ends (its sender stalled, never closed).
fn stalled_body(first: &'static [u8]) -> Body {
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(first))])
        .chain(futures::stream::pending());
    Body::from_stream(chunks)
}

/// The `{"error": "..."}` body of a refusal: an object with that one key.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let error: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let object = error.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "only `error`: {error}");
    object["error"].as_str().expect("a string").to_owned()
}

/// The value of one series in the state's metrics, as exposed on `/metrics`.
fn metric(state: &State, series: &str) -> Option<f64> {
    state
        .metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const ERRORS: &str =
    "spark_admission_requests_total{operation=\"unknown\",role=\"none\",result=\"error\"}";

#[tokio::test]
async fn a_real_executor_review_is_answered_200_with_its_uid_allowed_and_a_json_patch() {
    let state = state_with(COST_LABELS);
    let app = router(state.clone(), Duration::from_secs(3));
    let (status, body) = oneshot_router(app, mutate(EXECUTOR_REVIEW)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    let sent: Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], sent["request"]["uid"], "uid echoed");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");

    let hash = support::policy_hash(COST_LABELS);
    assert_eq!(
        response["auditAnnotations"],
        json!({"applied-rules": "cost-labels", "policy-hash": hash})
    );
    // The patch is base64 text (as Go encodes []byte); applied to the pod exactly as sent, it
    // yields that pod with the label and the two annotations of SPEC §4, nothing else.
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch is base64 text"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = sent["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod as sent");
    let mut expected = sent["request"]["object"].clone();
    expected["metadata"]["labels"]["cost-center"] = json!("spark-jobs");
    expected["metadata"]["annotations"] = json!({
        "spark-admission.io/applied-rules": "cost-labels",
        "spark-admission.io/policy-hash": hash,
    });
    assert_eq!(pod, expected);
    assert_eq!(
        metric(
            &state,
            "spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"patched\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_body_that_is_not_an_admission_review_is_400_with_a_json_error() {
    let state = state_with(COST_LABELS);
    let truncated = &EXECUTOR_REVIEW[..EXECUTOR_REVIEW.len() / 2];
    let mut not_utf8 = EXECUTOR_REVIEW.to_vec();
    let name = not_utf8
        .windows(b"nightly-etl".len())
        .position(|w| w == b"nightly-etl")
        .unwrap();
    not_utf8[name + "nightly".len()] = 0xff;
    // README lists the cases; the message is the error's; docs/reliability.md quotes the one
    // for bytes that are not UTF-8.
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "garbage",
            b"not json at all".to_vec(),
            Expect::Prefix("body is not an AdmissionReview: "),
        ),
        (
            "truncated JSON",
            truncated.to_vec(),
            Expect::Prefix("body is not an AdmissionReview: EOF while parsing"),
        ),
        (
            "not UTF-8",
            not_utf8,
            Expect::Prefix("body is not an AdmissionReview: JSON must be UTF-8, and "),
        ),
        (
            "another kind",
            review_with(EXECUTOR_REVIEW, |r| r["kind"] = json!("Pod")),
            Expect::Exact(
                "body is a Pod of admission.k8s.io/v1; expected kind AdmissionReview of admission.k8s.io/v1",
            ),
        ),
        (
            "another apiVersion",
            review_with(EXECUTOR_REVIEW, |r| {
                r["apiVersion"] = json!("admission.k8s.io/v1beta1")
            }),
            Expect::Exact(
                "body is a AdmissionReview of admission.k8s.io/v1beta1; expected kind AdmissionReview of admission.k8s.io/v1",
            ),
        ),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            Expect::Exact("AdmissionReview has no request"),
        ),
    ];
    let count = cases.len();
    for (name, body, expected) in cases {
        let app = router(state.clone(), Duration::from_secs(3));
        let (status, answer) = oneshot_router(app, mutate(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        let message = error_message(status, &answer);
        match expected {
            Expect::Exact(text) => assert_eq!(message, text, "{name}"),
            Expect::Prefix(text) => assert!(message.starts_with(text), "{name}: {message}"),
        }
    }
    // README: "counted as result=error".
    assert_eq!(metric(&state, ERRORS), Some(count as f64));
}

enum Expect {
    Exact(&'static str),
    Prefix(&'static str),
}

/// The first bytes of a body arrive, the rest never does: 408 once `--request-timeout` has
/// passed. The outcome does not depend on timing (the body never ends, so only the timeout can
/// answer); the timeout is short so the test is.
#[tokio::test]
async fn a_body_that_never_arrives_in_full_is_408_after_the_request_timeout() {
    let state = state_with(COST_LABELS);
    let app = router(state.clone(), Duration::from_millis(200));
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(stalled_body(&EXECUTOR_REVIEW[..1000]))
        .unwrap();
    let started = Instant::now();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(30), oneshot_router(app, request))
            .await
            .expect("answered, not left waiting for the body");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(
        error_message(status, &body),
        "body not received within 200ms"
    );
    assert_eq!(metric(&state, ERRORS), Some(1.0));
}

/// README: "Bodies up to 7 MiB ... Larger: HTTP 413". 7 MiB exactly is read (and, being
/// spaces, is not an AdmissionReview: 400); one byte more is 413, whether the body says its
/// length or not.
#[tokio::test]
async fn a_body_over_7_mib_is_413_and_7_mib_is_read() {
    let state = state_with(COST_LABELS);
    let limit = format!("body is larger than the {SEVEN_MIB} byte limit");
    for (name, size, chunked, expected) in [
        ("7 MiB", SEVEN_MIB, false, StatusCode::BAD_REQUEST),
        (
            "7 MiB + 1",
            SEVEN_MIB + 1,
            false,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "7 MiB + 1, no Content-Length",
            SEVEN_MIB + 1,
            true,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let body = vec![b' '; size];
        let request = if chunked {
            Request::post("/mutate")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures::stream::iter(
                    body.chunks(64 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>(),
                )))
                .unwrap()
        } else {
            mutate(body)
        };
        let app = router(state.clone(), Duration::from_secs(30));
        let (status, answer) = oneshot_router(app, request).await;
        assert_eq!(status, expected, "{name}");
        let message = error_message(status, &answer);
        if expected == StatusCode::PAYLOAD_TOO_LARGE {
            assert_eq!(message, limit, "{name}");
        } else {
            assert!(
                message.starts_with("body is not an AdmissionReview: "),
                "{name}: {message}"
            );
        }
    }
}

/// A Content-Length over the limit is refused before a byte of the body is read: the body
/// here never arrives, and the answer comes all the same.
#[tokio::test]
async fn a_declared_length_over_7_mib_is_413_without_reading_the_body() {
    let state = state_with(COST_LABELS);
    let app = router(state.clone(), Duration::from_secs(60));
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, SEVEN_MIB + 1)
        .body(stalled_body(b"{"))
        .unwrap();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(10), oneshot_router(app, request))
            .await
            .expect("refused at once");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_message(status, &body),
        format!("body is larger than the {SEVEN_MIB} byte limit")
    );
}

/// README: "with no valid policy yet the server is not ready and /mutate answers 503"; a
/// policy with quotas is not in force until the pod watch has listed every Spark pod.
#[tokio::test]
async fn without_a_policy_in_force_a_review_is_503() {
    let no_policy = Arc::new(State::new());
    let staged = state_with("quotas: [{name: three, perApplication: {maxExecutors: 3}}]");
    assert!(
        staged.staged_policy_hash().is_some(),
        "staged, not in force"
    );
    for (name, state) in [
        ("no policy", no_policy),
        ("staged for the pod watch", staged),
    ] {
        let app = router(state.clone(), Duration::from_secs(3));
        let (status, body) = oneshot_router(app, mutate(EXECUTOR_REVIEW)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}");
        assert_eq!(
            error_message(status, &body),
            "no valid policy is loaded yet",
            "{name}"
        );
        assert_eq!(metric(&state, ERRORS), Some(1.0), "{name}");
    }
}

/// docs/reliability.md: a request whose body is in waits up to `--queue-timeout` for a slot,
/// then gets 503; one that finds as many requests already waiting as there are slots gets 503
/// at once; both with `{"error": "the server is overloaded: …; retry later"}`, counted by
/// reason.
#[tokio::test]
async fn with_every_request_slot_busy_a_review_waits_then_is_503_and_past_the_queue_at_once() {
    let state = state_with(COST_LABELS);
    let limits = Limits {
        max_requests_in_flight: 1,
        queue_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let budget = Arc::new(RequestBudget::new(&limits, &state.metrics));
    let app = router_with_budget(state.clone(), Duration::from_secs(60), budget.clone());

    // The one slot, as a review being answered holds it (a body still arriving holds none:
    // see the test below).
    let holder = budget.slot().await.unwrap();
    assert_eq!(state.metrics.requests_in_flight.get(), 1);
    // The one place in the queue: polled once, it is waiting for the slot.
    let waiting = oneshot_router(app.clone(), mutate(EXECUTOR_REVIEW));
    let mut waiting = std::pin::pin!(waiting);
    let pending =
        std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx).is_pending())).await;
    assert!(pending, "the second request waits for the slot");

    // Past the queue: refused at once.
    let refused_at = Instant::now();
    let (status, body) = oneshot_router(app.clone(), mutate(EXECUTOR_REVIEW)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused_at.elapsed() < Duration::from_millis(300),
        "without waiting: {:?}",
        refused_at.elapsed()
    );
    let message = error_message(status, &body);
    assert!(
        message.starts_with("the server is overloaded: ") && message.ends_with("; retry later"),
        "{message}"
    );

    // The waiting one: 503 once the queue wait is over.
    let (status, body) = waiting.await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused_at.elapsed() >= Duration::from_millis(250),
        "only after the queue wait: {:?}",
        refused_at.elapsed()
    );
    let message = error_message(status, &body);
    assert!(
        message.starts_with("the server is overloaded: ") && message.ends_with("; retry later"),
        "{message}"
    );
    drop(holder);
    let (status, _) = oneshot_router(app.clone(), mutate(EXECUTOR_REVIEW)).await;
    assert_eq!(status, StatusCode::OK, "the slot came back");

    let shed = |reason: &str| {
        metric(
            &state,
            &format!("spark_admission_requests_shed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(shed("queue_full"), Some(1.0));
    assert_eq!(shed("requests"), Some(1.0));
    assert_eq!(shed("body_bytes"), Some(0.0));
}

/// docs/reliability.md: a body still arriving holds neither a request slot nor the bytes its
/// Content-Length declares, only the bytes that came. With one slot and a 1 MiB budget, a
/// request declaring the whole budget that sends one byte and stalls leaves room for a real
/// review, which is answered while the stalled one waits for its body (and gets 408 at the
/// request timeout).
#[tokio::test]
async fn a_body_still_arriving_holds_no_request_slot_and_only_the_bytes_that_came() {
    let state = state_with(COST_LABELS);
    let limits = Limits {
        max_requests_in_flight: 1,
        max_body_bytes_in_flight: 1024 * 1024,
        queue_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let budget = Arc::new(RequestBudget::new(&limits, &state.metrics));
    let app = router_with_budget(state.clone(), Duration::from_secs(2), budget);
    let stalled = tokio::spawn(oneshot_router(
        app.clone(),
        Request::post("/mutate")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, 1024 * 1024)
            .body(stalled_body(b"{"))
            .unwrap(),
    ));
    let started = Instant::now();
    while state.metrics.body_bytes_in_flight.get() != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stalled body's byte is never charged: {}",
            state.metrics.body_bytes_in_flight.get()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(state.metrics.requests_in_flight.get(), 0);
    let (status, body) = oneshot_router(app.clone(), mutate(EXECUTOR_REVIEW)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(!stalled.is_finished(), "the stalled request still waits");
    let (status, _) = stalled.await.unwrap();
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(state.metrics.body_bytes_in_flight.get(), 0);
}

/// A body larger than the whole `--max-body-bytes-in-flight` budget can never fit: 503 at
/// once, counted as `body_bytes`.
#[tokio::test]
async fn a_body_larger_than_the_body_budget_is_503_at_once() {
    let state = state_with(COST_LABELS);
    let limits = Limits {
        max_body_bytes_in_flight: 1000,
        queue_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let budget = Arc::new(RequestBudget::new(&limits, &state.metrics));
    let app = router_with_budget(state.clone(), Duration::from_secs(3), budget);
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        oneshot_router(app, mutate(EXECUTOR_REVIEW)),
    )
    .await
    .expect("refused without waiting for the queue timeout");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let message = error_message(status, &body);
    assert!(
        message.starts_with("the server is overloaded: ")
            && message.contains(&format!("{} bytes", EXECUTOR_REVIEW.len()))
            && message.contains("1000 bytes")
            && message.ends_with("; retry later"),
        "{message}"
    );
    assert_eq!(
        metric(
            &state,
            "spark_admission_requests_shed_total{reason=\"body_bytes\"}"
        ),
        Some(1.0)
    );
}

/// README: "`/readyz` is 200 once a valid policy is in force (for a policy with quotas: once the
/// pod watch has synced) and until shutdown begins"; while waiting for the watch it says so.
#[tokio::test]
async fn readyz_is_200_only_with_a_policy_in_force_and_until_shutdown() {
    let readyz = |state: &Arc<State>| {
        let app = admin_router(state.clone());
        async move {
            let (status, body) =
                oneshot_router(app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let state = Arc::new(State::new());
    assert_eq!(
        readyz(&state).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid policy loaded\n".to_owned()
        )
    );
    state.set_policy(
        Policy::parse("quotas: [{name: three, perApplication: {maxExecutors: 3}}]").unwrap(),
    );
    assert_eq!(
        readyz(&state).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the policy has quotas: waiting for the pod watch to list every Spark pod\n".to_owned()
        )
    );
    state.quotas.synced_with([]);
    state.quota_watch_synced();
    assert_eq!(readyz(&state).await, (StatusCode::OK, "ready\n".to_owned()));
    state.begin_shutdown();
    assert_eq!(
        readyz(&state).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned()
        )
    );
}
