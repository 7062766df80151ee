//! `/validate-policy` through the webhook's own router (`router(state).oneshot(request)`): the
//! policy ConfigMap is checked by identity (namespace and name), whatever its labels; no other
//! ConfigMap is ever parsed.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use spark_admission::state::State;

const INVALID: &str = "rules: [{name: Bad_Name, nodeSelectr: {pool: spark}}]";

/// An AdmissionReview for a ConfigMap as the apiserver sends it to a validating webhook.
fn review(operation: &str, namespace: &str, name: &str, labels: Value, data: Value) -> Vec<u8> {
    let object = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    });
    let (object, old_object) = if operation == "DELETE" {
        (Value::Null, object)
    } else {
        (object.clone(), object)
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "operation": operation, "userInfo": {"username": "admin"},
            "name": name, "namespace": namespace,
            "object": object, "oldObject": old_object,
        }
    }))
    .unwrap()
}

/// The server's default: ConfigMap spark-admission/spark-admission-policy, key policy.yaml.
fn state() -> Arc<State> {
    Arc::new(State::new())
}

async fn call(state: &Arc<State>, body: Vec<u8>) -> Value {
    support::review_by_router(state, "/validate-policy", body).await
}

fn refusal(answer: &Value) -> String {
    assert_eq!(answer["response"]["allowed"], json!(false), "{answer}");
    answer["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_update_that_drops_the_label_and_stores_an_invalid_policy_is_refused() {
    let state = state();
    for operation in ["CREATE", "UPDATE"] {
        let answer = call(
            &state,
            review(
                operation,
                "spark-admission",
                "spark-admission-policy",
                json!({}),
                json!({"policy.yaml": INVALID}),
            ),
        )
        .await;
        let message = refusal(&answer);
        assert!(
            message.contains("rules[0].name") && message.contains("rules[0].nodeSelectr"),
            "{operation}: {message}"
        );
    }
}

#[tokio::test]
async fn a_policy_with_mistakes_in_the_pod_fields_is_refused_listing_every_one() {
    let answer = call(
        &state(),
        review(
            "UPDATE",
            "spark-admission",
            "spark-admission-policy",
            json!({}),
            json!({"policy.yaml": include_str!("data/pod-fields-with-mistakes.yaml")}),
        ),
    )
    .await;
    let message = refusal(&answer);
    for expected in [
        "policy has 9 errors",
        "rules[0].volumes[1].emptyDri: unknown volume source",
        "rules[0].volumes[1]: has no volume source",
        "rules[0].volumeMounts[1].mountPath: \"/etc/hadoop/conf\" is already mounted",
        "rules[0].volumeMounts[2].name: \"data\" names no volume of this rule",
        "rules[0].sidecars[0].ports[0].containerPort: 70000 is not a port",
        "rules[0].sidecars[0].livenessProbe.httpGet.schme: unknown field \"schme\"",
        "rules[0].topologySpreadConstraints[0].labelSelector.matchLabels.spark-app-selector: \"{app_idd}\" uses unknown variable",
        "rules[0].securityContext.runAsUser: -1 is not a user id",
        "rules[0].localDirs: give sizeLimit and medium",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected:?} in:\n{message}"
        );
    }
}

#[tokio::test]
async fn the_policy_configmap_without_its_key_is_refused_saying_which_key() {
    let answer = call(
        &state(),
        review(
            "UPDATE",
            "spark-admission",
            "spark-admission-policy",
            json!({"spark-admission.io/policy": "true"}),
            json!({"policy.yml": "rules: []"}),
        ),
    )
    .await;
    let message = refusal(&answer);
    assert!(
        message.contains("\"policy.yaml\"")
            && message.contains("spark-admission/spark-admission-policy"),
        "{message}"
    );
}

#[tokio::test]
async fn a_valid_policy_in_the_policy_configmap_is_allowed() {
    let answer = call(
        &state(),
        review(
            "UPDATE",
            "spark-admission",
            "spark-admission-policy",
            json!({}),
            json!({"policy.yaml": "rules: [{name: good}]"}),
        ),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], json!(true), "{answer}");
}

#[tokio::test]
async fn other_configmaps_are_allowed_unread_whatever_their_labels() {
    let state = state();
    let labelled = json!({"spark-admission.io/policy": "true"});
    for (namespace, name) in [
        ("team-a", "spark-admission-policy"),
        ("spark-admission", "another-policy"),
        ("spark-admission", "spark-admission-policy-old"),
    ] {
        let answer = call(
            &state,
            review(
                "UPDATE",
                namespace,
                name,
                labelled.clone(),
                json!({"policy.yaml": INVALID}),
            ),
        )
        .await;
        assert_eq!(
            answer["response"]["allowed"],
            json!(true),
            "{namespace}/{name}: {answer}"
        );
    }
}

#[tokio::test]
async fn deleting_the_policy_configmap_is_allowed() {
    // Running replicas keep the policy in force; refusing would block uninstalling and the
    // namespace's deletion (documented in docs/reliability.md).
    let answer = call(
        &state(),
        review(
            "DELETE",
            "spark-admission",
            "spark-admission-policy",
            json!({}),
            json!({"policy.yaml": INVALID}),
        ),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], json!(true), "{answer}");
}

#[tokio::test]
async fn the_configmap_the_server_watches_is_the_one_guarded() {
    // `--guard-configmap` (or `--policy-configmap`) team-a/spark-policy with `--policy-key p.yaml`:
    // `serve` sets the identity before binding.
    let state = Arc::new(State::new());
    let guarded = spark_admission::policy::ConfigMapRef {
        namespace: "team-a".to_owned(),
        name: "spark-policy".to_owned(),
        key: "p.yaml".to_owned(),
    };
    let call = |_: &Arc<State>, body: Vec<u8>| {
        support::validate_policy_guarding(&state, guarded.clone(), body)
    };
    let answer = call(
        &state,
        review(
            "UPDATE",
            "team-a",
            "spark-policy",
            json!({}),
            json!({"p.yaml": INVALID}),
        ),
    )
    .await;
    assert!(refusal(&answer).contains("team-a/spark-policy key p.yaml"));
    let answer = call(
        &state,
        review(
            "UPDATE",
            "spark-admission",
            "spark-admission-policy",
            json!({}),
            json!({"policy.yaml": INVALID}),
        ),
    )
    .await;
    assert_eq!(
        answer["response"]["allowed"],
        json!(true),
        "no longer the policy ConfigMap: {answer}"
    );
}
