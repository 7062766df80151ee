//! Quotas through the webhook's own router (`router(state).oneshot(request)`): the real
//! executor review, many at once, decided against a synced ledger.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use serde_json::Value;
use spark_admission::Policy;
use spark_admission::state::State;
use support::EXECUTOR_REVIEW;

/// A state whose policy (with quotas) is in force over an empty, synced pod watch.
fn state_with(policy: &str) -> Arc<State> {
    let state = Arc::new(State::new());
    state.set_policy(Policy::parse(policy).unwrap());
    state.quotas.synced_with([]);
    state.quota_watch_synced();
    assert!(state.is_ready());
    state
}

/// The executor fixture's review for a pod named `name`, with request uid `uid`.
fn review(name: &str, uid: &str, dry_run: bool) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
    review["request"]["uid"] = Value::from(uid);
    review["request"]["name"] = Value::from(name);
    review["request"]["object"]["metadata"]["name"] = Value::from(name);
    review["request"]["dryRun"] = Value::from(dry_run);
    serde_json::to_vec(&review).unwrap()
}

async fn call(state: &Arc<State>, body: Vec<u8>) -> Value {
    support::review_by_router(state, "/mutate", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_executors_under_max_executors_50_admit_exactly_50() {
    let state = state_with("quotas: [{name: fifty, perApplication: {maxExecutors: 50}}]");
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                call(
                    &state,
                    review(&format!("exec-{i}"), &format!("uid-{i}"), false),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let allowed = answers
        .iter()
        .filter(|a| a["response"]["allowed"] == Value::Bool(true))
        .count();
    assert_eq!(allowed, 50);
    let refused = answers
        .iter()
        .find(|a| a["response"]["allowed"] == Value::Bool(false))
        .unwrap();
    assert_eq!(refused["response"]["status"]["code"], 403);
    assert_eq!(
        refused["response"]["status"]["message"],
        "quota fifty: application spark-d5eb9fa038f44e899300d4aa4fad7491 (nightly-etl) would have 51 executors, the limit is 50; ask for fewer with spark.executor.instances or spark.dynamicAllocation.maxExecutors"
    );
    assert!(
        refused["response"].get("patch").is_none(),
        "a refusal carries no patch"
    );
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains(
            "spark_admission_quota_denied_total{quota=\"fifty\",scope=\"application\"} 50"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"denied\"} 50"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_dry_run_reserves_nothing_and_a_reinvoked_call_counts_the_pod_once() {
    let state = state_with("quotas: [{name: one, perApplication: {maxExecutors: 1}}]");
    let allowed = |answer: &Value| answer["response"]["allowed"] == Value::Bool(true);
    assert!(allowed(
        &call(&state, review("exec-1", "uid-dry", true)).await
    ));
    assert!(allowed(
        &call(&state, review("exec-1", "uid-1", false)).await
    ));
    // kube-apiserver reinvokes the webhook with a new uid for the same pod.
    assert!(allowed(
        &call(&state, review("exec-1", "uid-2", false)).await
    ));
    let refused = call(&state, review("exec-2", "uid-3", false)).await;
    assert!(!allowed(&refused));
    assert_eq!(
        refused["response"]["status"]["message"],
        "quota one: application spark-d5eb9fa038f44e899300d4aa4fad7491 (nightly-etl) would have 2 executors, the limit is 1; ask for fewer with spark.executor.instances or spark.dynamicAllocation.maxExecutors"
    );
}

/// SPEC §4a: what the rules add counts in quotas as stored. The executor asks for 2 CPUs; the
/// policy adds a 500m sidecar (one more container while the version is unknown) and a 3-CPU
/// init container, so Kubernetes charges the pod max(2 + 0.5, 3) = 3 CPUs (the effective
/// request: the larger of the containers' sum and the largest init container). Under
/// `maxCpu: 7` two executors fit (6) and the third (9) does not; charged at Spark's 2 CPUs,
/// three would have fitted.
#[tokio::test]
async fn containers_the_policy_adds_are_charged_as_kubernetes_charges_the_pod() {
    let state = state_with(
        r#"
rules:
  - name: platform
    initContainers:
      - {name: fetch-certs, image: "busybox:1.36", resources: {requests: {cpu: "3", memory: 128Mi}}}
    sidecars:
      - {name: fluent-bit, image: "fluent/fluent-bit:3.0", resources: {requests: {cpu: 500m, memory: 256Mi}}}
quotas: [{name: seven, perApplication: {maxCpu: "7"}}]
"#,
    );
    let mut allowed = 0;
    let mut refusal = None;
    for i in 0..3 {
        let answer = call(
            &state,
            review(&format!("exec-{i}"), &format!("uid-{i}"), false),
        )
        .await;
        if answer["response"]["allowed"] == Value::Bool(true) {
            allowed += 1;
        } else {
            refusal = Some(answer["response"]["status"]["message"].clone());
        }
    }
    assert_eq!(allowed, 2, "{refusal:?}");
    let refusal = refusal.unwrap().as_str().unwrap().to_owned();
    assert!(refusal.starts_with("quota seven:"), "{refusal}");
    assert!(
        refusal.contains('9'),
        "the third would bring the application to 9 CPUs: {refusal}"
    );
}
