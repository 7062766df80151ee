//! SPEC §5b through the server's `/mutate-spark-conf` route: the captured cluster-mode driver
//! ConfigMap of Spark 4.3 under `sparkConf` rules. The stored configuration is compared with a
//! properties file written by hand (`tests/data/spark-conf/*.expected.properties`) after
//! applying the answer's patch with `json_patch` to the raw object the review carried, so
//! nothing of the product's own parsing stands between the answer and the check.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use spark_admission::policy::Policy;
use spark_admission::quota::Options;
use spark_admission::state::State;

const REVIEW: &[u8] = include_bytes!("fixtures/spark-4.3/cluster-mode/configmap-review.json");
const OBSERVABILITY: &str = include_str!("data/spark-conf/observability.policy.yaml");
const OBSERVABILITY_EXPECTED: &str =
    include_str!("data/spark-conf/observability.expected.properties");

fn state_with(policy: &str) -> Arc<State> {
    let state = Arc::new(State::with_quota_options(Options::default()));
    state.set_policy(Policy::parse(policy).unwrap());
    state.quotas.synced_with([]);
    state.quota_watch_synced();
    assert!(state.is_ready());
    state
}

async fn answer(state: &Arc<State>, body: Vec<u8>) -> Value {
    support::review_by_router(state, "/mutate-spark-conf", body).await["response"].clone()
}

/// The ConfigMap as the apiserver would store it: the review's object with the patch applied.
fn stored(response: &Value, body: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(body).unwrap();
    let mut object = review["request"]["object"].clone();
    if let Some(patch) = response["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

fn with(body: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(body).unwrap();
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn settings_are_written_under_merge_and_recorded_as_the_spec_says() {
    let state = state_with(OBSERVABILITY);
    let response = answer(&state, REVIEW.to_vec()).await;
    assert_eq!(response["allowed"], true);
    let object = stored(&response, REVIEW);
    assert_eq!(
        object["data"]["spark.properties"].as_str().unwrap(),
        OBSERVABILITY_EXPECTED
    );
    let record = "spark.decommission.enabled=true (was unset) by rule observability, spark.eventLog.dir=s3a://spark-logs/capture-cm/ (was unset) by rule observability, spark.eventLog.enabled=true (was unset) by rule observability, spark.ui.prometheus.enabled=true (was unset) by rule observability";
    assert_eq!(
        object["metadata"]["annotations"]["spark-admission.io/spark-conf-set"],
        record
    );
    assert_eq!(response["auditAnnotations"]["spark-conf-set"], record);
    assert_eq!(
        response["warnings"],
        json!([
            "spark-admission kept spark.executor.memory=2g as the application set it; rule observability would set 8g",
            format!(
                "spark-admission set {record} in application spark-b80cad1763024b8b848f4455477ea33a"
            ),
        ])
    );
    let metrics = spark_admission::metrics::Metrics::encode(&state.metrics);
    assert!(
        metrics.contains("spark_admission_spark_conf_set_total{rule=\"observability\"} 4"),
        "{metrics}"
    );
    let mut events = state.driver_events.take_queue().expect("the queue");
    let event = events.try_recv().expect("an Event queued");
    assert_eq!((event.warning, event.reason), (false, "SparkConfSet"));
    assert_eq!(event.note, format!("spark-admission set {record}"));

    // The stored ConfigMap sent again (the configuration spark-submit would write had it set
    // these itself): nothing to change.
    let again = with(REVIEW, |review| {
        review["request"]["object"]["data"]["spark.properties"] = json!(OBSERVABILITY_EXPECTED);
    });
    let response = answer(&state, again).await;
    assert_eq!(response["allowed"], true);
    assert!(response["patch"].is_null(), "{response}");
}

#[tokio::test]
async fn a_submission_over_a_max_is_refused_naming_each_setting_its_value_and_the_max() {
    let state = state_with(
        "rules: [{name: caps, sparkConf: {max: {spark.executor.memory: 1g, spark.executor.cores: 1, spark.driver.memory: 512m}}}]",
    );
    let response = answer(&state, REVIEW.to_vec()).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    assert_eq!(
        response["status"]["message"],
        "spark-admission refused Spark application nightly-etl (spark-b80cad1763024b8b848f4455477ea33a): \
         spark.driver.memory=1g (Spark's default) is above the max 512m of rule caps; \
         spark.executor.cores=2 is above the max 1 of rule caps; \
         spark.executor.memory=2g is above the max 1g of rule caps; \
         submit it again with these settings within the max"
    );
    assert!(response["patch"].is_null());
    let metrics = spark_admission::metrics::Metrics::encode(&state.metrics);
    assert!(
        metrics.contains("spark_admission_spark_conf_refused_total{reason=\"max\"} 1"),
        "{metrics}"
    );
    // The driver pod the ConfigMap's owner names gets a Warning Event with the refusal.
    let mut events = state.driver_events.take_queue().expect("the queue");
    let event = events.try_recv().expect("an Event queued");
    assert_eq!(
        (
            event.namespace.as_str(),
            event.pod.as_str(),
            event.warning,
            event.reason
        ),
        (
            "capture-cm",
            "nightly-etl-9bdd68a213f7ca52-driver",
            true,
            "SubmissionRefused"
        )
    );
    assert_eq!(event.note, response["status"]["message"].as_str().unwrap());
    assert!(events.try_recv().is_err(), "one Event");
    // Within every max: allowed unchanged.
    let state = state_with(
        "rules: [{name: caps, sparkConf: {max: {spark.executor.memory: 2048m, spark.executor.cores: 2, spark.driver.memory: 1g}}}]",
    );
    let response = answer(&state, REVIEW.to_vec()).await;
    assert_eq!(response["allowed"], true);
    assert!(response["patch"].is_null());
}

#[tokio::test]
async fn settings_and_quota_fitting_are_both_applied_and_both_recorded() {
    // enforce writes 4 cores per executor; the quota's 9 CPUs then leave room for 2 executors
    // after the 1-CPU driver (the fixture asks for 6): both changes in one patch.
    let state = state_with(
        r#"
rules:
  - name: big-executors
    mode: enforce
    sparkConf: {set: {spark.executor.cores: "4"}}
quotas: [{name: nine, perApplication: {maxCpu: "9"}}]
"#,
    );
    state.quotas.apply(
        spark_admission::quota::ledger::PodKey {
            namespace: "capture-cm".into(),
            name: "nightly-etl-driver".into(),
        },
        spark_admission::quota::ledger::TrackedPod {
            entry: spark_admission::quota::ledger::Entry {
                app: Some("spark-b80cad1763024b8b848f4455477ea33a".into()),
                app_name: Some("nightly-etl".into()),
                role: spark_admission::policy::Role::Driver,
                charge: spark_admission::quota::Charge {
                    cpu: 1_000_000_000,
                    memory: 0,
                },
            },
            resource_version: Some(1),
        },
    );
    let response = answer(&state, REVIEW.to_vec()).await;
    assert_eq!(response["allowed"], true);
    let object = stored(&response, REVIEW);
    let text = object["data"]["spark.properties"].as_str().unwrap();
    let original = std::str::from_utf8(REVIEW).unwrap();
    assert!(original.contains("spark.executor.cores=2\\nspark.kubernetes"));
    assert!(text.contains("\nspark.executor.cores=4\n"), "{text}");
    assert!(text.contains("\nspark.executor.instances=2\n"), "{text}");
    let annotations = &object["metadata"]["annotations"];
    assert_eq!(
        annotations["spark-admission.io/spark-conf-set"],
        "spark.executor.cores=4 (was 2) by rule big-executors"
    );
    assert_eq!(
        annotations["spark-admission.io/spark-conf-lowered"],
        "spark.executor.instances=2 (was 6) to fit quota nine (maxCpu 9 with 1 CPU in use, 4 CPU per executor)"
    );
}

#[tokio::test]
async fn without_sparkconf_rules_or_quotas_the_configmap_is_not_read() {
    let state = state_with("rules: [{name: labels, labels: {team: x}}]");
    // Not even a readable review object is needed past the request's uid.
    let body = with(REVIEW, |review| {
        review["request"]["object"]["data"]["spark.properties"] = json!("bad=\\u12");
    });
    let response = answer(&state, body).await;
    assert_eq!(response["allowed"], true);
    assert!(response["patch"].is_null());
}
