//! Engine behaviour on the real Spark 4.3 fixtures and variants derived from them in code.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};
use serde_json::json;

use super::*;
use crate::policy::Policy;

const EXECUTOR_REVIEW: &str = include_str!("../../tests/fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &str = include_str!("../../tests/fixtures/spark-4.3/driver-review.json");

fn fixture(review: &str) -> (Pod, RequestContext) {
    let value: serde_json::Value = serde_json::from_str(review).expect("fixture is JSON");
    let pod = serde_json::from_value(value["request"]["object"].clone()).expect("fixture pod");
    let namespace = value["request"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_owned();
    (
        pod,
        RequestContext {
            namespace,
            ..RequestContext::default()
        },
    )
}

fn executor() -> (Pod, RequestContext) {
    fixture(EXECUTOR_REVIEW)
}

fn driver() -> (Pod, RequestContext) {
    fixture(DRIVER_REVIEW)
}

fn policy(yaml: &str) -> Policy {
    Policy::parse(yaml).unwrap_or_else(|e| panic!("test policy is invalid: {e}"))
}

fn run(pod: &Pod, context: &RequestContext, yaml: &str) -> Evaluation {
    let evaluation = evaluate(pod, context, &policy(yaml)).expect("a Spark pod");
    owned_path_agrees(pod, context, &policy(yaml), &evaluation);
    // Every evaluation in these tests must also be idempotent and patch cleanly.
    let again = evaluate(&evaluation.desired, context, &policy(yaml)).expect("still a Spark pod");
    assert_eq!(
        crate::patch::diff(evaluation.desired.clone(), again.desired)
            .expect("diff")
            .0,
        Vec::new(),
        "second pass changed the pod"
    );
    evaluation
}

/// What the server does ([`evaluate_owned`], then `patch::encode_from`) gives the same
/// evaluation as [`evaluate`] and the very patch of the two whole pods; the fields the fast
/// path copies are those it takes out of the desired pod.
pub(super) fn owned_path_agrees(
    pod: &Pod,
    context: &RequestContext,
    policy: &Policy,
    evaluation: &Evaluation,
) {
    assert_eq!(
        take_changeable_fields(&mut pod.clone()),
        changeable_fields(pod)
    );
    let (owned, original) = evaluate_owned(pod.clone(), context, policy).expect("a Spark pod");
    assert_eq!(owned.desired, evaluation.desired);
    assert_eq!(owned.warnings, evaluation.warnings);
    assert_eq!(owned.denial, evaluation.denial);
    assert_eq!(owned.applied_rules, evaluation.applied_rules);
    let encoded = crate::patch::encode_from(original, owned.desired).expect("patch");
    let whole = crate::patch::encode(pod.clone(), evaluation.desired.clone()).expect("patch");
    assert_eq!(
        String::from_utf8_lossy(&encoded.json),
        String::from_utf8_lossy(&whole.json),
        "the server's patch is the diff of the whole pods"
    );
    assert_eq!(encoded.operations, whole.operations);
}

fn label<'p>(pod: &'p Pod, key: &str) -> Option<&'p str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn container<'p>(pod: &'p Pod, name: &str) -> &'p Container {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn container_mut<'p>(pod: &'p mut Pod, name: &str) -> &'p mut Container {
    pod.spec
        .as_mut()
        .expect("spec")
        .containers
        .iter_mut()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'p>(container: &'p Container, name: &str) -> Vec<&'p EnvVar> {
    container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == name)
        .collect()
}

fn quantity(container: &Container, kind: &str, resource: &str) -> Option<String> {
    let resources = container.resources.as_ref()?;
    let map = if kind == "requests" {
        &resources.requests
    } else {
        &resources.limits
    };
    map.as_ref()?.get(resource).map(|q| q.0.clone())
}

fn required_terms(pod: &Pod) -> Vec<NodeSelectorTerm> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.clone())
        .unwrap_or_default()
}

fn requirement(key: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: "In".to_owned(),
        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

const EXECUTOR_EXEC: &str = "spark-kubernetes-executor";

#[test]
fn merge_keeps_label_the_pod_already_has() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: team, labels: {team: platform}}]",
    );
    assert_eq!(label(&out.desired, "team"), Some("analytics"));
    assert!(
        out.warnings.iter().any(|w| w.contains("label team")
            && w.contains("\"analytics\"")
            && w.contains("mode merge")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn enforce_replaces_label_the_pod_already_has() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: team, mode: enforce, labels: {team: platform}}]",
    );
    assert_eq!(label(&out.desired, "team"), Some("platform"));
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn templates_expand_per_pod() {
    let (pod, ctx) = driver();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: t, labels: {cost: '{namespace}', app: '{app_name}', id: '{app_id}', who: '{service_account}', r: '{role}'}}]",
    );
    assert_eq!(label(&out.desired, "cost"), Some("spark-jobs"));
    assert_eq!(label(&out.desired, "app"), Some("nightly-etl"));
    assert_eq!(
        label(&out.desired, "id"),
        Some("spark-64d62a6a856c457ba3a778263e3d8daf")
    );
    assert_eq!(label(&out.desired, "who"), Some("spark"));
    assert_eq!(label(&out.desired, "r"), Some("driver"));
    // The executor names no service account: Kubernetes runs it as "default".
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: t, labels: {who: '{service_account}'}}]",
    );
    assert_eq!(label(&out.desired, "who"), Some("default"));
}

#[test]
fn an_app_name_that_is_not_a_label_value_is_sanitised_not_rejected() {
    let (mut pod, ctx) = driver();
    let name = format!("Nightly ETL (prod) {}", "x".repeat(80));
    pod.metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("spark-app-name".into(), name);
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: t, labels: {spark-app: '{app_name}'}}]",
    );
    let value = label(&out.desired, "spark-app").expect("label set");
    assert!(crate::policy::check_label_value(value).is_ok(), "{value:?}");
    assert!(value.starts_with("Nightly-ETL--prod"), "{value:?}");
    assert!(value.len() <= 63);
    assert!(out.denial.is_none());
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("not a valid label value")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn a_template_variable_the_pod_lacks_leaves_the_label_unset_with_a_warning() {
    let (mut pod, ctx) = driver();
    pod.metadata
        .labels
        .as_mut()
        .expect("labels")
        .remove("spark-app-name");
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: t, labels: {spark-app: '{app_name}'}}]",
    );
    assert_eq!(label(&out.desired, "spark-app"), None);
    assert!(
        out.warnings.iter().any(|w| w.contains("{app_name}")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn operator_app_name_label_is_the_fallback_app_name() {
    let (mut pod, ctx) = driver();
    let labels = pod.metadata.labels.as_mut().expect("labels");
    labels.remove("spark-app-name");
    labels.insert(
        "sparkoperator.k8s.io/app-name".into(),
        "from-operator".into(),
    );
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: t, labels: {app: '{app_name}'}}]",
    );
    assert_eq!(label(&out.desired, "app"), Some("from-operator"));
}

#[test]
fn applied_rules_and_policy_hash_annotations_are_written() {
    let (pod, ctx) = executor();
    let yaml = "rules: [{name: a, labels: {x: y}}, {name: b, match: {roles: [driver]}, labels: {z: w}}, {name: c}]";
    let out = run(&pod, &ctx, yaml);
    let annotations = out
        .desired
        .metadata
        .annotations
        .clone()
        .expect("annotations");
    assert_eq!(
        annotations
            .get(APPLIED_RULES_ANNOTATION)
            .map(String::as_str),
        Some("a,c")
    );
    assert_eq!(
        annotations.get(POLICY_HASH_ANNOTATION),
        Some(&policy(yaml).hash)
    );
    assert_eq!(out.applied_rules, vec!["a", "c"]);
}

#[test]
fn match_conditions_all_must_hold() {
    let (pod, ctx) = driver();
    let cases = [
        ("{namespaces: ['spark-*']}", true),
        ("{namespaces: [other]}", false),
        ("{roles: [driver]}", true),
        ("{roles: [executor]}", false),
        ("{appNames: ['nightly-?tl']}", true),
        ("{appNames: ['weekly-*']}", false),
        ("{podLabels: {team: analytics}}", true),
        ("{podLabels: {team: other}}", false),
        ("{serviceAccounts: [spark]}", true),
        ("{serviceAccounts: [default]}", false),
        ("{namespaces: ['spark-*'], roles: [executor]}", false),
    ];
    for (selector, expected) in cases {
        let yaml = format!("rules: [{{name: r, match: {selector}, labels: {{hit: 'yes'}}}}]");
        let out = run(&pod, &ctx, &yaml);
        assert_eq!(label(&out.desired, "hit").is_some(), expected, "{selector}");
    }
}

#[test]
fn later_rules_win_on_the_same_field() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: a, labels: {tier: gold}, nodeSelector: {disk: hdd}}, {name: b, labels: {tier: silver}, nodeSelector: {disk: ssd}}]",
    );
    assert_eq!(label(&out.desired, "tier"), Some("silver"));
    let selector = out
        .desired
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .expect("selector");
    assert_eq!(selector.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(
        selector.get("pool").map(String::as_str),
        Some("spark"),
        "Spark's own selector kept"
    );
}

#[test]
fn node_selector_merge_keeps_and_enforce_replaces() {
    let (pod, ctx) = executor();
    let merged = run(
        &pod,
        &ctx,
        "rules: [{name: a, nodeSelector: {pool: general}}]",
    );
    let spec = merged.desired.spec.as_ref().expect("spec");
    assert_eq!(
        spec.node_selector
            .as_ref()
            .and_then(|s| s.get("pool"))
            .map(String::as_str),
        Some("spark")
    );
    assert!(
        merged
            .warnings
            .iter()
            .any(|w| w.contains("nodeSelector pool"))
    );
    let enforced = run(
        &pod,
        &ctx,
        "rules: [{name: a, mode: enforce, nodeSelector: {pool: general}}]",
    );
    let spec = enforced.desired.spec.as_ref().expect("spec");
    assert_eq!(
        spec.node_selector
            .as_ref()
            .and_then(|s| s.get("pool"))
            .map(String::as_str),
        Some("general")
    );
}

const AFFINITY_RULE: &str = "rules:
- name: pool
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: node.kubernetes.io/instance-type, operator: In, values: [m5.2xlarge]}]
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 50
        preference: {matchExpressions: [{key: spot, operator: In, values: ['true']}]}
";

#[test]
fn required_affinity_is_used_as_is_when_the_pod_has_none() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, AFFINITY_RULE);
    let terms = required_terms(&out.desired);
    assert_eq!(terms.len(), 1);
    assert_eq!(
        terms[0].match_expressions,
        Some(vec![requirement(
            "node.kubernetes.io/instance-type",
            &["m5.2xlarge"]
        )])
    );
}

#[test]
fn required_affinity_is_anded_into_every_existing_term() {
    let (mut pod, ctx) = executor();
    // Variant: the pod already allows two zones (two ORed terms).
    let existing = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}
    ]}}});
    pod.spec.as_mut().expect("spec").affinity =
        Some(serde_json::from_value(existing).expect("affinity"));
    let out = run(&pod, &ctx, AFFINITY_RULE);
    let terms = required_terms(&out.desired);
    assert_eq!(terms.len(), 2, "no new OR term: {terms:?}");
    for (term, zone) in terms.iter().zip(["a", "b"]) {
        assert_eq!(
            term.match_expressions,
            Some(vec![
                requirement("zone", &[zone]),
                requirement("node.kubernetes.io/instance-type", &["m5.2xlarge"])
            ])
        );
    }
}

#[test]
fn preferred_terms_are_appended_once() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, AFFINITY_RULE);
    let preferred = out
        .desired
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .expect("preferred");
    assert_eq!(preferred.len(), 1);
    assert_eq!(preferred[0].weight, 50);
}

#[test]
fn duplicate_toleration_is_not_added_again() {
    let (pod, ctx) = executor();
    // Equal to the apiserver's not-ready toleration, except tolerationSeconds (not part of identity).
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: t, tolerations: [{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute}, {key: dedicated, value: spark, effect: NoSchedule}]}]",
    );
    let tolerations = out
        .desired
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .expect("tolerations");
    assert_eq!(tolerations.len(), 3, "{tolerations:?}");
    assert_eq!(
        tolerations[2],
        Toleration {
            key: Some("dedicated".into()),
            value: Some("spark".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }
    );
}

const OTHER_DB_PASS: &str = "rules: [{name: creds, MODE env: [{name: DB_PASS, valueFrom: {secretKeyRef: {name: vault, key: pw}}}, {name: DEPLOY_ENV, value: prod}]}]";

#[test]
fn merge_keeps_an_env_var_the_pod_already_has_and_warns() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, &OTHER_DB_PASS.replace("MODE", ""));
    let spark = container(&out.desired, EXECUTOR_EXEC);
    let db_pass = env(spark, "DB_PASS");
    assert_eq!(db_pass.len(), 1);
    let secret = db_pass[0]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secret ref");
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("snowsec", "db_pass")
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("env DB_PASS") && w.contains("not applied")),
        "{:?}",
        out.warnings
    );
    let names: Vec<&str> = spark
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names.last(),
        Some(&"DEPLOY_ENV"),
        "new variables are appended"
    );
    let original_names: Vec<&str> = container(&pod, EXECUTOR_EXEC)
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        &names[..original_names.len()],
        &original_names[..],
        "existing order kept"
    );
}

#[test]
fn enforce_replaces_an_env_var_in_place() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, &OTHER_DB_PASS.replace("MODE", "mode: enforce,"));
    let spark = container(&out.desired, EXECUTOR_EXEC);
    let position = |c: &Container| c.env.iter().flatten().position(|e| e.name == "DB_PASS");
    assert_eq!(position(spark), position(container(&pod, EXECUTOR_EXEC)));
    let secret = env(spark, "DB_PASS")[0]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("ref");
    assert_eq!(secret.name, "vault");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn an_env_var_equal_to_the_policy_gives_no_warning() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: c, env: [{name: DB_PASS, valueFrom: {secretKeyRef: {name: snowsec, key: db_pass}}}]}]",
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(
        crate::patch::diff(pod.clone(), out.desired.clone())
            .expect("diff")
            .0
            .len(),
        1,
        "only the annotations"
    );
}

/// The executor fixture with a log-shipping sidecar placed before the Spark container, as a pod
/// template may do, and the Spark container renamed (found by `args[0]`).
fn executor_with_sidecar_first() -> (Pod, RequestContext) {
    let (mut pod, ctx) = executor();
    let spec = pod.spec.as_mut().expect("spec");
    spec.containers[0].name = "main".into();
    let sidecar: Container = serde_json::from_value(json!({
        "name": "fluent-bit", "image": "fluent/fluent-bit:3",
        "env": [{"name": "DB_PASS", "value": "not-the-spark-one"}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}
    }))
    .expect("sidecar");
    spec.containers.insert(0, sidecar);
    (pod, ctx)
}

#[test]
fn spark_container_found_by_args_when_not_first_and_sidecar_untouched() {
    let (pod, ctx) = executor_with_sidecar_first();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: r, mode: enforce, env: [{name: DEPLOY_ENV, value: prod}], resources: {executor: {default: {limits: {cpu: '3'}}}}}]",
    );
    let sidecar_before = &pod.spec.as_ref().expect("spec").containers[0];
    let sidecar_after = &out.desired.spec.as_ref().expect("spec").containers[0];
    assert_eq!(sidecar_before, sidecar_after, "sidecar must not change");
    let main = container(&out.desired, "main");
    assert_eq!(env(main, "DEPLOY_ENV").len(), 1);
    assert_eq!(quantity(main, "limits", "cpu").as_deref(), Some("3"));
}

#[test]
fn containers_all_and_named_reach_sidecars() {
    let (pod, ctx) = executor_with_sidecar_first();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: r, containers: all, env: [{name: DEPLOY_ENV, value: prod}]}]",
    );
    for name in ["fluent-bit", "main"] {
        assert_eq!(
            env(container(&out.desired, name), "DEPLOY_ENV").len(),
            1,
            "{name}"
        );
    }
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: r, containers: [fluent-bit], env: [{name: TOKEN, value: t}]}]",
    );
    assert_eq!(env(container(&out.desired, "fluent-bit"), "TOKEN").len(), 1);
    assert!(env(container(&out.desired, "main"), "TOKEN").is_empty());
}

#[test]
fn resource_defaults_fill_only_what_is_missing() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: r, resources: {executor: {default: {requests: {cpu: '1', memory: 1Gi, ephemeral-storage: 1Gi}, limits: {cpu: '3'}}}}}]",
    );
    let spark = container(&out.desired, EXECUTOR_EXEC);
    assert_eq!(
        quantity(spark, "requests", "cpu").as_deref(),
        Some("2"),
        "Spark's own request kept"
    );
    assert_eq!(
        quantity(spark, "requests", "memory").as_deref(),
        Some("2432Mi")
    );
    assert_eq!(
        quantity(spark, "requests", "ephemeral-storage").as_deref(),
        Some("1Gi")
    );
    assert_eq!(quantity(spark, "limits", "cpu").as_deref(), Some("3"));
}

/// The apiserver stores quantities in canonical form (see `policy::quantity`); the webhook writes
/// the policy's in that form, so the pod it answers with is the pod stored. What Spark put on
/// the pod is left exactly as Spark wrote it.
#[test]
fn policy_quantities_are_written_canonically_and_the_pods_own_are_left_as_written() {
    let (mut pod, ctx) = executor();
    let spark = container_mut(&mut pod, EXECUTOR_EXEC);
    let resources = spark.resources.as_mut().expect("resources");
    // Not canonical (Kubernetes would store 2400m), as a pod template might write it.
    resources.limits.as_mut().expect("limits").insert(
        "cpu".into(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("2.4".into()),
    );
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: r, resources: {executor: {default: {requests: {ephemeral-storage: ' 2', example.com/gpu: 0.5Gi}, limits: {memory: 1e3, ephemeral-storage: 2048Mi}}}}}]",
    );
    let spark = container(&out.desired, EXECUTOR_EXEC);
    assert_eq!(
        quantity(spark, "requests", "ephemeral-storage").as_deref(),
        Some("2")
    );
    assert_eq!(
        quantity(spark, "requests", "example.com/gpu").as_deref(),
        Some("512Mi")
    );
    assert_eq!(
        quantity(spark, "limits", "ephemeral-storage").as_deref(),
        Some("2Gi")
    );
    assert_eq!(quantity(spark, "limits", "cpu").as_deref(), Some("2.4"));
    assert_eq!(
        quantity(spark, "requests", "memory").as_deref(),
        Some("2432Mi")
    );

    let clamped = run(
        &pod,
        &ctx,
        "rules: [{name: caps, resources: {executor: {max: {cpu: ' 1.5'}, onExceed: clamp}}}]",
    );
    let spark = container(&clamped.desired, EXECUTOR_EXEC);
    assert_eq!(quantity(spark, "requests", "cpu").as_deref(), Some("1500m"));
    assert_eq!(quantity(spark, "limits", "cpu").as_deref(), Some("1500m"));
}

#[test]
fn a_default_limit_below_the_request_is_not_applied_and_warns() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: r, resources: {executor: {default: {limits: {cpu: '1'}}}}}]",
    );
    assert_eq!(
        quantity(container(&out.desired, EXECUTOR_EXEC), "limits", "cpu"),
        None
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("below the container's request")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn cpu_over_max_with_deny_rejects_naming_container_resource_value_and_limit() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: caps, resources: {executor: {max: {cpu: 1500m}}}}]",
    );
    // SPEC §4: the container, the resource, the value and the limit (the fixture requests 2
    // CPUs and sets no CPU limit), and the rule.
    assert_eq!(
        out.denial.expect("denied"),
        format!("container {EXECUTOR_EXEC} requests cpu 2, over the max 1500m set by rule caps")
    );
}

#[test]
fn cpu_over_max_with_clamp_is_lowered_and_warned() {
    let (mut pod, ctx) = executor();
    let spark = container_mut(&mut pod, EXECUTOR_EXEC);
    let resources = spark.resources.as_mut().expect("resources");
    resources.limits.as_mut().expect("limits").insert(
        "cpu".into(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("4".into()),
    );
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: caps, resources: {executor: {max: {cpu: 1500m}, onExceed: clamp}}}]",
    );
    assert!(out.denial.is_none(), "{:?}", out.denial);
    let spark = container(&out.desired, EXECUTOR_EXEC);
    assert_eq!(quantity(spark, "requests", "cpu").as_deref(), Some("1500m"));
    assert_eq!(quantity(spark, "limits", "cpu").as_deref(), Some("1500m"));
    assert_eq!(
        out.warnings
            .iter()
            .filter(|w| w.contains("lowered to the max 1500m"))
            .count(),
        2,
        "{:?}",
        out.warnings
    );
}

#[test]
fn memory_over_max_is_always_denied_even_with_clamp() {
    let (pod, ctx) = executor();
    for on_exceed in ["deny", "clamp"] {
        let out = run(
            &pod,
            &ctx,
            &format!(
                "rules: [{{name: caps, resources: {{executor: {{max: {{memory: 2Gi}}, onExceed: {on_exceed}}}}}}}]"
            ),
        );
        let denial = out.denial.expect("denied");
        assert!(
            denial.contains("memory 2432Mi") && denial.contains("max 2Gi"),
            "{denial}"
        );
        assert_eq!(
            quantity(container(&out.desired, EXECUTOR_EXEC), "limits", "memory").as_deref(),
            Some("2432Mi")
        );
    }
}

#[test]
fn max_is_per_role() {
    let (pod, ctx) = driver();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: caps, resources: {executor: {max: {cpu: 100m}}}}]",
    );
    assert!(out.denial.is_none());
}

#[test]
fn priority_class_set_on_a_pod_without_one_drops_the_filled_priority() {
    let (pod, ctx) = executor();
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.priority),
        Some(0),
        "fixture has the plugin's priority"
    );
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: p, priorityClassName: spark-batch}]",
    );
    let spec = out.desired.spec.as_ref().expect("spec");
    assert_eq!(spec.priority_class_name.as_deref(), Some("spark-batch"));
    assert_eq!(spec.priority, None);
    assert_eq!(spec.preemption_policy, None);
}

#[test]
fn priority_class_merge_keeps_the_pods_own() {
    let (mut pod, ctx) = executor();
    pod.spec.as_mut().expect("spec").priority_class_name = Some("urgent".into());
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: p, priorityClassName: spark-batch}]",
    );
    let spec = out.desired.spec.as_ref().expect("spec");
    assert_eq!(spec.priority_class_name.as_deref(), Some("urgent"));
    assert_eq!(spec.priority, Some(0));
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: p, mode: enforce, priorityClassName: spark-batch}]",
    );
    let spec = out.desired.spec.as_ref().expect("spec");
    assert_eq!(
        (spec.priority_class_name.as_deref(), spec.priority),
        (Some("spark-batch"), None)
    );
}

/// The executor as the apiserver sends it on a cluster whose global default class is `normal`
/// (value 1000): the Priority plugin wrote the class, its value and its preemption policy.
fn executor_given_the_global_default() -> (Pod, RequestContext) {
    let (mut pod, mut ctx) = executor();
    let spec = pod.spec.as_mut().expect("spec");
    spec.priority_class_name = Some("normal".into());
    spec.priority = Some(1000);
    spec.preemption_policy = Some("PreemptLowerPriority".into());
    std::sync::Arc::make_mut(&mut ctx.cluster).global_default_priority_class =
        Some("normal".into());
    (pod, ctx)
}

#[test]
fn merge_replaces_the_global_default_class_and_drops_what_the_plugin_filled() {
    let (pod, ctx) = executor_given_the_global_default();
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: p, priorityClassName: spark-batch}]",
    );
    let spec = out.desired.spec.as_ref().expect("spec");
    assert_eq!(spec.priority_class_name.as_deref(), Some("spark-batch"));
    assert_eq!(
        spec.priority, None,
        "the plugin fills it again from spark-batch"
    );
    assert_eq!(spec.preemption_policy, None);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn merge_keeps_a_class_that_is_not_the_global_default_and_warns() {
    let (mut pod, ctx) = executor_given_the_global_default();
    pod.spec.as_mut().expect("spec").priority_class_name = Some("urgent".into());
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: p, priorityClassName: spark-batch}]",
    );
    let spec = out.desired.spec.as_ref().expect("spec");
    assert_eq!(
        (spec.priority_class_name.as_deref(), spec.priority),
        (Some("urgent"), Some(1000))
    );
    assert_eq!(
        out.warnings,
        vec![
            "priorityClassName: kept the pod's \"urgent\", not \"spark-batch\" from rule p (mode merge)"
                .to_owned()
        ]
    );
}

#[test]
fn enforce_replaces_the_pods_class_whatever_the_global_default() {
    for (pod_class, global_default) in [
        ("normal", Some("normal")),
        ("urgent", Some("normal")),
        ("urgent", None),
    ] {
        let (mut pod, mut ctx) = executor_given_the_global_default();
        pod.spec.as_mut().expect("spec").priority_class_name = Some(pod_class.into());
        std::sync::Arc::make_mut(&mut ctx.cluster).global_default_priority_class =
            global_default.map(str::to_owned);
        let out = run(
            &pod,
            &ctx,
            "rules: [{name: p, mode: enforce, priorityClassName: spark-batch}]",
        );
        let spec = out.desired.spec.as_ref().expect("spec");
        assert_eq!(
            (
                spec.priority_class_name.as_deref(),
                spec.priority,
                spec.preemption_policy.as_deref()
            ),
            (Some("spark-batch"), None, None),
            "{pod_class} {global_default:?}"
        );
    }
}

#[test]
fn without_a_known_global_default_merge_keeps_the_class_the_pod_arrived_with() {
    let (pod, mut ctx) = executor_given_the_global_default();
    std::sync::Arc::make_mut(&mut ctx.cluster).global_default_priority_class = None;
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: p, priorityClassName: spark-batch}]",
    );
    let spec = out.desired.spec.as_ref().expect("spec");
    assert_eq!(
        (spec.priority_class_name.as_deref(), spec.priority),
        (Some("normal"), Some(1000))
    );
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
}

#[test]
fn a_policy_naming_the_global_default_itself_changes_nothing() {
    let (pod, ctx) = executor_given_the_global_default();
    let out = run(&pod, &ctx, "rules: [{name: p, priorityClassName: normal}]");
    assert_eq!(out.desired.spec, pod.spec);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn scheduler_name_replaces_the_apiserver_default_even_under_merge() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, "rules: [{name: s, schedulerName: yunikorn}]");
    assert_eq!(
        out.desired
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref()),
        Some("yunikorn")
    );
}

#[test]
fn a_pod_without_a_spark_role_is_not_evaluated() {
    let (mut pod, ctx) = executor();
    pod.metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("spark-role".into(), "shuffle".into());
    assert!(evaluate(&pod, &ctx, &policy("rules: [{name: a, labels: {x: y}}]")).is_none());
    pod.metadata.labels = None;
    assert!(evaluate(&pod, &ctx, &policy("rules: [{name: a, labels: {x: y}}]")).is_none());
}

#[test]
fn the_example_policy_mutates_both_fixtures_cleanly() {
    for (pod, ctx) in [executor(), driver()] {
        let out = run(&pod, &ctx, crate::policy::BUILTIN_EXAMPLE);
        assert!(out.denial.is_none(), "{:?}", out.denial);
        assert_eq!(label(&out.desired, "cost-center"), Some("spark-jobs"));
        let spark = &out.desired.spec.as_ref().expect("spec").containers[0];
        assert_eq!(env(spark, "DB_PASS").len(), 1);
    }
}

/// The executor fixture with `init` added to `spec.initContainers` (a variant made in code).
fn executor_with_init_container(init: serde_json::Value) -> (Pod, RequestContext) {
    let (mut pod, ctx) = executor();
    let init: Container = serde_json::from_value(init).expect("init container");
    pod.spec
        .as_mut()
        .expect("spec")
        .init_containers
        .get_or_insert_with(Vec::new)
        .push(init);
    (pod, ctx)
}

const EXECUTOR_CPU_MAX_8: &str =
    "rules: [{name: caps, resources: {executor: {max: {cpu: '8', memory: 64Gi}}}}]";

#[test]
fn an_init_container_over_the_max_is_denied_naming_it() {
    // The scheduler charges the largest init container, so 64 CPUs there is 64 CPUs charged.
    let (pod, ctx) = executor_with_init_container(json!({
        "name": "warmup", "image": "busybox",
        "resources": {"requests": {"cpu": "64"}}
    }));
    let out = run(&pod, &ctx, EXECUTOR_CPU_MAX_8);
    let denial = out.denial.expect("denied");
    for part in ["init container warmup", "cpu 64", "max 8", "caps"] {
        assert!(denial.contains(part), "{part} missing from {denial}");
    }
}

#[test]
fn a_sidecar_init_container_over_the_memory_max_is_denied_even_with_clamp() {
    let (pod, ctx) = executor_with_init_container(json!({
        "name": "proxy", "image": "envoy", "restartPolicy": "Always",
        "resources": {"limits": {"memory": "128Gi"}}
    }));
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: caps, resources: {executor: {max: {cpu: '8', memory: 64Gi}, onExceed: clamp}}}]",
    );
    let denial = out.denial.expect("denied");
    assert!(
        denial.contains("init container proxy") && denial.contains("memory 128Gi"),
        "{denial}"
    );
}

#[test]
fn an_init_container_over_the_cpu_max_is_clamped_under_clamp_and_gets_no_defaults() {
    let (pod, ctx) = executor_with_init_container(json!({
        "name": "warmup", "image": "busybox",
        "resources": {"requests": {"cpu": "64"}, "limits": {"cpu": "64"}}
    }));
    let out = run(
        &pod,
        &ctx,
        "rules: [{name: caps, resources: {executor: {default: {requests: {memory: 1Gi}}, max: {cpu: '8'}, onExceed: clamp}}}]",
    );
    assert!(out.denial.is_none(), "{:?}", out.denial);
    let init = &out
        .desired
        .spec
        .as_ref()
        .expect("spec")
        .init_containers
        .as_ref()
        .expect("init")[0];
    assert_eq!(quantity(init, "requests", "cpu").as_deref(), Some("8"));
    assert_eq!(quantity(init, "limits", "cpu").as_deref(), Some("8"));
    assert_eq!(
        quantity(init, "requests", "memory"),
        None,
        "defaults never fill init containers"
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("init container warmup")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn an_init_container_within_the_max_passes_untouched() {
    let (pod, ctx) = executor_with_init_container(json!({
        "name": "warmup", "image": "busybox",
        "resources": {"requests": {"cpu": "500m"}}
    }));
    let out = run(&pod, &ctx, EXECUTOR_CPU_MAX_8);
    assert!(out.denial.is_none(), "{:?}", out.denial);
    assert_eq!(
        out.desired.spec.as_ref().expect("spec").init_containers,
        pod.spec.as_ref().expect("spec").init_containers
    );
}

#[test]
fn pod_level_resources_over_the_max_are_denied() {
    // Kubernetes 1.32+ PodLevelResources: the pod's containers share spec.resources, so the
    // Spark container may use up to the pod-level limit whatever its own.
    for (kind, value) in [("requests", "64"), ("limits", "64")] {
        let (mut pod, ctx) = executor();
        pod.spec.as_mut().expect("spec").resources =
            Some(serde_json::from_value(json!({ kind: {"cpu": value} })).expect("resources"));
        let out = run(&pod, &ctx, EXECUTOR_CPU_MAX_8);
        let denial = out.denial.expect("denied");
        assert!(
            denial.contains("pod-level resources")
                && denial.contains("cpu 64")
                && denial.contains("max 8"),
            "{denial}"
        );
    }
}

#[test]
fn a_huge_but_valid_cpu_quantity_is_denied_as_not_comparable_under_deny_and_clamp() {
    // 1.7e20 cores is a syntactically valid Kubernetes quantity; it does not fit in 128-bit
    // nano-units, so it cannot be compared with the max: it must never pass.
    let huge = "170141183460469231731687303715n";
    for on_exceed in ["deny", "clamp"] {
        let (mut pod, ctx) = executor();
        let spark = container_mut(&mut pod, EXECUTOR_EXEC);
        spark
            .resources
            .as_mut()
            .expect("resources")
            .requests
            .as_mut()
            .expect("requests")
            .insert(
                "cpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(huge.into()),
            );
        let out = evaluate(
            &pod,
            &ctx,
            &policy(&format!("rules: [{{name: caps, resources: {{executor: {{max: {{cpu: '8'}}, onExceed: {on_exceed}}}}}}}]")),
        )
        .expect("a Spark pod");
        let denial = out.denial.expect("denied");
        assert!(
            denial.contains(huge)
                && denial.contains("too large")
                && !denial.contains("not a quantity"),
            "{denial}"
        );
    }
}

#[test]
fn a_decoy_named_like_the_spark_container_beside_the_real_one_is_refused() {
    // The real Spark container renamed by a pod template (found by args[0]) and a decoy that
    // takes Spark's container name: neither may silently take the policy.
    let (mut pod, ctx) = executor();
    let spec = pod.spec.as_mut().expect("spec");
    spec.containers[0].name = "main".into();
    let decoy: Container = serde_json::from_value(json!({
        "name": EXECUTOR_EXEC, "image": "busybox", "args": ["sleep", "infinity"]
    }))
    .expect("decoy");
    spec.containers.push(decoy);
    let out = evaluate(
        &pod,
        &ctx,
        &policy("rules: [{name: caps, resources: {executor: {max: {cpu: 100m}}}}]"),
    )
    .expect("a Spark pod");
    let denial = out.denial.expect("denied");
    assert!(
        denial.contains("\"main\"") && denial.contains(&format!("\"{EXECUTOR_EXEC}\"")),
        "{denial}"
    );
}

#[test]
fn the_spark_container_is_the_one_claiming_by_name_or_args_wherever_it_is() {
    // By name, with a sidecar first whose args are not the role.
    let (pod, ctx) = executor_with_sidecar_first();
    let mut renamed = pod.clone();
    renamed.spec.as_mut().expect("spec").containers[1].name = EXECUTOR_EXEC.into();
    renamed.spec.as_mut().expect("spec").containers[1].args = Some(vec!["executor".into()]);
    for (pod, name) in [(&pod, "main"), (&renamed, EXECUTOR_EXEC)] {
        let spark = SparkPod::from_pod(pod, &ctx.namespace).expect("spark pod");
        assert_eq!(spark.container, Some(1), "{name}");
    }
    // No claim at all: the first container.
    let (mut plain, _) = executor();
    let spec = plain.spec.as_mut().expect("spec");
    spec.containers[0].name = "app".into();
    spec.containers[0].args = Some(vec!["run".into()]);
    assert_eq!(
        SparkPod::from_pod(&plain, &ctx.namespace)
            .expect("spark pod")
            .container,
        Some(0)
    );
}
