//! Property tests over generated pods and policies:
//! 1. the patch applied to the pod as the apiserver sent it, the raw JSON of `request.object`
//!    (managedFields, `creationTimestamp: null`, fields newer than the typed model and all), gives
//!    the desired pod and leaves everything else as sent;
//! 2. idempotence: evaluating the desired pod again yields an empty patch;
//! 3. the engine never panics, whatever the pod and the (valid) policy.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use k8s_openapi::api::core::v1::{Container, Pod};
use proptest::prelude::*;
use serde_json::{Value, json};
use spark_admission::Policy;
use spark_admission::engine::{RequestContext, evaluate};

const EXECUTOR_REVIEW: &str = include_str!("fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &str = include_str!("fixtures/spark-4.3/driver-review.json");

/// One generated pod variation on a real fixture.
#[derive(Debug, Clone)]
struct PodShape {
    driver: bool,
    namespace: &'static str,
    app_name: Option<String>,
    extra_labels: Vec<(&'static str, &'static str)>,
    sidecar_first: bool,
    env: Vec<(&'static str, &'static str)>,
    cpu_request: Option<&'static str>,
    cpu_limit: Option<&'static str>,
    memory: Option<&'static str>,
    zones: Vec<&'static str>,
    priority_class: Option<&'static str>,
    tolerate_dedicated: bool,
    newer_field: bool,
}

fn pod_shape() -> impl Strategy<Value = PodShape> {
    (
        any::<bool>(),
        prop::sample::select(vec!["spark-jobs", "analytics", "etl-daily"]),
        prop::option::of("[ -~]{0,80}|\\PC{0,20}"),
        prop::collection::vec(
            (
                prop::sample::select(vec!["team", "tier", "cost-center"]),
                prop::sample::select(vec!["a", "analytics", "gold"]),
            ),
            0..3,
        ),
        any::<bool>(),
        prop::collection::vec(
            (
                prop::sample::select(vec!["DB_PASS", "DEPLOY_ENV", "OTHER"]),
                prop::sample::select(vec!["x", "prod"]),
            ),
            0..3,
        ),
        prop::option::of(prop::sample::select(vec!["100m", "1", "2", "12"])),
        prop::option::of(prop::sample::select(vec!["500m", "2", "4", "16"])),
        prop::option::of(prop::sample::select(vec!["1Gi", "2432Mi", "80Gi"])),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..3),
        prop::option::of(prop::sample::select(vec!["urgent", "spark-batch"])),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                driver,
                namespace,
                app_name,
                extra_labels,
                sidecar_first,
                env,
                cpu_request,
                cpu_limit,
                memory,
                zones,
                priority_class,
                (tolerate_dedicated, newer_field),
            )| PodShape {
                driver,
                namespace,
                app_name,
                extra_labels,
                sidecar_first,
                env,
                cpu_request,
                cpu_limit,
                memory,
                zones,
                priority_class,
                tolerate_dedicated,
                newer_field,
            },
        )
}

/// The pod as the apiserver would send it (managedFields included) and its namespace.
fn build_pod(shape: &PodShape) -> Value {
    let review: Value = serde_json::from_str(if shape.driver {
        DRIVER_REVIEW
    } else {
        EXECUTOR_REVIEW
    })
    .expect("fixture");
    let mut pod = review["request"]["object"].clone();
    let labels = pod["metadata"]["labels"].as_object_mut().expect("labels");
    match &shape.app_name {
        Some(name) => {
            labels.insert("spark-app-name".into(), json!(name));
        }
        None => {
            labels.remove("spark-app-name");
        }
    }
    for (k, v) in &shape.extra_labels {
        labels.insert((*k).into(), json!(v));
    }
    let spec = pod["spec"].as_object_mut().expect("spec");
    let containers = spec["containers"].as_array_mut().expect("containers");
    {
        let spark = containers[0].as_object_mut().expect("container");
        let env = spark["env"].as_array_mut().expect("env");
        for (name, value) in &shape.env {
            if !env.iter().any(|e| e["name"] == json!(name)) {
                env.push(json!({"name": name, "value": value}));
            }
        }
        if shape.newer_field {
            // A field of a newer Kubernetes (1.34's container restart rules) than the typed
            // model (k8s-openapi's v1_33): the webhook never reads it, the apiserver keeps it.
            spark.insert(
                "restartPolicyRules".into(),
                json!([{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]),
            );
        }
        let resources = spark["resources"].as_object_mut().expect("resources");
        for (kind, resource, value) in [
            ("requests", "cpu", shape.cpu_request),
            ("limits", "cpu", shape.cpu_limit),
            ("requests", "memory", shape.memory),
            ("limits", "memory", shape.memory),
        ] {
            let map = resources
                .entry(kind)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("map");
            match value {
                Some(v) => {
                    map.insert(resource.into(), json!(v));
                }
                None => {
                    map.remove(resource);
                }
            }
        }
    }
    if shape.sidecar_first {
        containers.insert(0, json!({"name": "fluent-bit", "image": "fluent-bit", "env": [{"name": "DB_PASS", "value": "sidecar"}]}));
    }
    if !shape.zones.is_empty() {
        let terms: Vec<Value> = shape
            .zones
            .iter()
            .map(
                |z| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [z]}]}),
            )
            .collect();
        spec.insert("affinity".into(), json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}));
    }
    if let Some(class) = shape.priority_class {
        spec.insert("priorityClassName".into(), json!(class));
    }
    if shape.tolerate_dedicated {
        spec["tolerations"].as_array_mut().expect("tolerations").push(json!({"key": "dedicated", "operator": "Equal", "value": "spark", "effect": "NoSchedule"}));
    }
    pod
}

/// Pieces a generated rule is assembled from; every combination is a valid rule.
const RULE_PARTS: &[&str] = &[
    "labels: {cost-center: '{namespace}', spark-app: 'app-{app_name}', tier: gold}",
    "labels: {team: platform, owner: '{service_account}'}",
    "annotations: {prometheus.io/scrape: 'true', app-id: '{app_id}'}",
    "nodeSelector: {pool: general, disk: ssd}",
    "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: type, operator: In, values: [m5]}]}]}}}",
    "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: arch, operator: In, values: [amd64]}]}, {matchExpressions: [{key: arch, operator: In, values: [arm64]}]}]}}}",
    "affinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 10, preference: {matchExpressions: [{key: spot, operator: Exists}]}}]}}",
    "tolerations: [{key: dedicated, operator: Equal, value: spark, effect: NoSchedule}, {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute}]",
    "env: [{name: DB_PASS, valueFrom: {secretKeyRef: {name: snowsec, key: db_pass}}}, {name: DEPLOY_ENV, value: prod}]",
    "env: [{name: DEPLOY_ENV, value: staging}], containers: all",
    "env: [{name: TOKEN, value: t}], containers: [fluent-bit]",
    "resources: {executor: {default: {requests: {cpu: '1', memory: 2Gi}, limits: {cpu: '4'}}, max: {cpu: '8', memory: 64Gi}, onExceed: clamp}}",
    "resources: {executor: {max: {cpu: '3'}}, driver: {default: {limits: {cpu: '2'}}, max: {memory: 32Gi}}}",
    "priorityClassName: spark-batch",
    "schedulerName: yunikorn",
];

const MATCHES: &[&str] = &[
    "",
    "match: {roles: [executor]}, ",
    "match: {roles: [driver]}, ",
    "match: {namespaces: ['etl-*', analytics]}, ",
    "match: {podLabels: {spark-version: 4.3.0}}, ",
    "match: {serviceAccounts: [spark]}, ",
];

fn policy_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            0..MATCHES.len(),
            any::<bool>(),
            prop::collection::vec(0..RULE_PARTS.len(), 1..4),
        ),
        0..5,
    )
    .prop_map(|rules| {
        let mut text = String::from("rules:\n");
        for (i, (matcher, enforce, parts)) in rules.iter().enumerate() {
            let mut fields: Vec<&str> = Vec::new();
            for part in parts {
                // A rule holds each field once.
                let key = RULE_PARTS[*part].split(':').next().unwrap_or_default();
                if !fields.iter().any(|f| f.starts_with(key)) {
                    fields.push(RULE_PARTS[*part]);
                }
            }
            let mode = if *enforce { "mode: enforce, " } else { "" };
            text.push_str(&format!(
                "  - {{name: rule-{i}, {}{mode}{}}}\n",
                MATCHES[*matcher],
                fields.join(", ")
            ));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn patch_reproduces_desired_pod_and_second_pass_is_a_no_op(shape in pod_shape(), text in policy_text()) {
        let policy = Policy::parse(&text).unwrap_or_else(|e| panic!("generated policy invalid: {e}\n{text}"));
        let sent = build_pod(&shape);
        let pod: Pod = serde_json::from_value(sent.clone()).expect("pod");
        let mut lean = pod.clone();
        let managed_fields = lean.metadata.managed_fields.take();
        let context = RequestContext { namespace: shape.namespace.to_owned(), ..RequestContext::default() };

        let Some(first) = evaluate(&lean, &context, &policy) else {
            panic!("fixtures are Spark pods");
        };
        let patch = spark_admission::patch::diff(lean.clone(), first.desired.clone()).expect("diff");

        // (1) What the apiserver does: apply the patch to the pod exactly as it sent it, the raw
        // JSON, not a typed round trip of it.
        let mut applied = sent.clone();
        json_patch::patch(&mut applied, &patch).expect("patch applies to the pod as sent");
        // It must give the desired pod, plus, untouched, what the typed model cannot hold and
        // the engine so never saw: the difference between the raw pod and its typed round trip.
        let unread = json_patch::diff(&serde_json::to_value(&pod).expect("pod json"), &sent);
        let mut desired = first.desired.clone();
        desired.metadata.managed_fields = managed_fields;
        let mut expected = serde_json::to_value(&desired).expect("json");
        json_patch::patch(&mut expected, &unread).expect("what the typed model drops, put back");
        prop_assert_eq!(applied, expected);

        // (2) The server's path gives the same answer: the review as the apiserver sends it,
        // parsed without managedFields, reviewed, the patch base64-encoded in the response.
        let mut review: Value = serde_json::from_str(EXECUTOR_REVIEW).expect("json");
        review["request"]["object"] = sent.clone();
        review["request"]["namespace"] = json!(shape.namespace);
        let request = spark_admission::admission::parse_review(
            &serde_json::to_vec(&review).expect("json"),
        )
        .expect("review parses");
        let (answer, _) = spark_admission::admission::review(request, &policy, &Default::default());
        prop_assert_eq!(answer.response.allowed, first.denial.is_none());
        if first.denial.is_none() {
            let sent_patch = answer.response.decoded_patch().unwrap_or_default();
            prop_assert_eq!(&sent_patch, &patch);
        }

        // (3) Reinvocation sees the desired pod and must change nothing.
        let second = evaluate(&first.desired, &context, &policy).expect("still Spark");
        let again = spark_admission::patch::diff(first.desired.clone(), second.desired.clone()).expect("diff");
        prop_assert!(again.0.is_empty(), "second pass patched: {:?}", again);
        prop_assert_eq!(first.denial.is_some(), second.denial.is_some());

        // Spark's container is never confused with the sidecar.
        if shape.sidecar_first && !text.contains("containers:") {
            let sidecar_before: &Container = &pod.spec.as_ref().expect("spec").containers[0];
            let sidecar_after: &Container = &first.desired.spec.as_ref().expect("spec").containers[0];
            prop_assert_eq!(sidecar_before, sidecar_after);
        }
    }

    #[test]
    fn engine_never_panics_on_odd_label_values(app in "\\PC{0,100}", role in prop::sample::select(vec!["driver", "executor"]), ns in "[a-z0-9-]{1,20}") {
        let policy = Policy::builtin_example();
        let mut pod: Pod = serde_json::from_value(serde_json::from_str::<Value>(EXECUTOR_REVIEW).expect("json")["request"]["object"].clone()).expect("pod");
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert("spark-app-name".into(), app);
        labels.insert("spark-role".into(), role.into());
        let out = evaluate(&pod, &RequestContext { namespace: ns, ..RequestContext::default() }, &policy).expect("spark pod");
        for value in out.desired.metadata.labels.iter().flatten().map(|(_, v)| v) {
            if !pod.metadata.labels.as_ref().is_some_and(|l| l.values().any(|o| o == value)) {
                prop_assert!(spark_admission::policy::check_label_value(value).is_ok(), "{:?}", value);
            }
        }
    }
}
