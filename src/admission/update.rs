//! UPDATE of a Spark pod: what a pod may not change once admitted (SPEC §5, "Pods cannot leave
//! their quota after admission").
//!
//! Quotas count a pod by its `spark-role` and `spark-app-selector` labels, from a watch that
//! selects on `spark-role`. Labels are mutable: a pod that lost `spark-role` would be reported
//! deleted while it keeps running, and one that changed `spark-app-selector` would move its
//! charge to another application. So an UPDATE that adds, changes or removes either label on a
//! Spark pod (in the old object or the new one) is refused. An UPDATE that raises the pod's
//! resources (an in-place resize: `pods/resize` from Kubernetes 1.33, a plain UPDATE of the
//! resources where the feature gate allowed it before) is checked against the policy's caps
//! here and handed back as a quota claim for the server to decide. Every other UPDATE, such as
//! Spark's own `spark-exec-inactive` label, is allowed unchanged, and nothing is ever patched.
//!
//! No I/O, like the rest of [`crate::admission`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, Operation};

use crate::engine::{self, APP_ID_LABEL, ClusterFacts, ROLE_LABEL, RequestContext, SparkPod};
use crate::policy::{Policy, Role};
use crate::quota::{Charge, Claim};

use super::{Outcome, Response, Summary};

/// The labels quotas count a pod by, which a Spark pod keeps for its whole life.
const COUNTED_LABELS: [&str; 2] = [ROLE_LABEL, APP_ID_LABEL];

/// Whether `request` is an UPDATE of a core Pod, itself or its `resize` subresource, that this
/// module guards.
pub fn guards(request: &AdmissionRequest<Pod>) -> bool {
    request.operation == Operation::Update
        && request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && matches!(request.sub_resource.as_deref(), None | Some("resize"))
}

/// Decides the UPDATE of `old` into `new`: refuses a change of the counted labels of a Spark
/// pod or resources raised past the policy's caps, and leaves in `summary.quota_claim` the
/// claim of resources raised on a pod quotas match.
pub(super) fn review(
    old: &Pod,
    new: &Pod,
    response: &mut Response,
    summary: &mut Summary,
    policy: &Policy,
    cluster: &Arc<ClusterFacts>,
) {
    let old_role = role_of(old);
    let new_role = role_of(new);
    let Some(role) = new_role.or(old_role) else {
        return;
    };
    summary.role = Some(role);
    let changed: Vec<String> = COUNTED_LABELS
        .iter()
        .filter_map(|label| {
            let before = label_of(old, label);
            let after = label_of(new, label);
            (before != after).then(|| format!("{label} from {} to {}", shown(before), shown(after)))
        })
        .collect();
    if !changed.is_empty() {
        let message = format!(
            "spark-admission: Spark pod {}/{} cannot change its labels {} and {} after creation (this update changes {}); quotas count every Spark pod by them for as long as it lives. Delete the pod and create it anew instead",
            summary.namespace,
            summary.pod,
            ROLE_LABEL,
            APP_ID_LABEL,
            changed.join(" and ")
        );
        deny(response, summary, message);
        return;
    }
    let (before, after) = (Charge::of_pod(old), Charge::of_pod(new));
    if after.cpu <= before.cpu && after.memory <= before.memory {
        return;
    }
    // Raised resources answer to the caps the rules set for the pod as it is, deny or clamp
    // alike: a resize cannot be clamped behind the user's back, it is refused with the reason.
    let context = RequestContext {
        namespace: summary.namespace.clone(),
        cluster: Arc::clone(cluster),
    };
    let Some(evaluation) = engine::evaluate(new, &context, policy) else {
        return;
    };
    summary.applied_rules = evaluation.applied_rules;
    if let Some(denial) = evaluation.denial {
        deny(
            response,
            summary,
            format!(
                "spark-admission: the new resources of Spark pod {}/{} are over the policy's caps: {denial}",
                summary.namespace, summary.pod
            ),
        );
        return;
    }
    let capped = Charge::of_pod(&evaluation.desired);
    if capped.cpu < after.cpu {
        let clamps = evaluation.warnings.join("; ");
        deny(
            response,
            summary,
            format!(
                "spark-admission: the new resources of Spark pod {}/{} are over the policy's caps, and a resize is not clamped: {clamps}",
                summary.namespace, summary.pod
            ),
        );
        return;
    }
    if !policy.quotas.is_empty()
        && let Some(spark) = SparkPod::from_pod(new, &summary.namespace)
    {
        summary.quota_claim = Claim::resize(policy, &spark, new, &summary.pod);
    }
}

fn deny(response: &mut Response, summary: &mut Summary, message: String) {
    response.deny(message.clone(), "Forbidden", 403);
    summary.outcome = Outcome::Denied;
    summary.denial = Some(message);
}

fn role_of(pod: &Pod) -> Option<Role> {
    label_of(pod, ROLE_LABEL).and_then(Role::from_label)
}

fn label_of<'a>(pod: &'a Pod, label: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(label).map(String::as_str)
}

fn shown(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::{Value, json};

    use super::*;
    use crate::admission::{parse_review, review as review_request};
    use crate::quota::ClaimKind;

    const EXECUTOR_REVIEW: &str =
        include_str!("../../tests/fixtures/spark-4.3/executor-review.json");

    const POLICY: &str = r#"
rules:
  - name: caps
    resources:
      executor: {max: {cpu: "4", memory: 8Gi}, onExceed: clamp}
quotas:
  - {name: apps, perApplication: {maxCpu: "100"}}
"#;

    /// The fixture's executor as stored, and the UPDATE review of it into what `change` makes
    /// of it, on `sub_resource` (none: the pod itself).
    fn update(change: impl FnOnce(&mut Value), sub_resource: Option<&str>) -> Vec<u8> {
        let mut review: Value = serde_json::from_str(EXECUTOR_REVIEW).unwrap();
        let request = review["request"].as_object_mut().unwrap();
        request.insert("operation".to_owned(), json!("UPDATE"));
        let old = request["object"].clone();
        let mut new = old.clone();
        change(&mut new);
        request.insert("oldObject".to_owned(), old);
        request.insert("object".to_owned(), new);
        if let Some(sub) = sub_resource {
            request.insert("subResource".to_owned(), json!(sub));
        }
        serde_json::to_vec(&review).unwrap()
    }

    fn decide(body: &[u8], policy: &str) -> (crate::admission::ResponseReview, Summary) {
        let policy = Policy::parse(policy).unwrap();
        review_request(parse_review(body).unwrap(), &policy, &Arc::default())
    }

    fn labels(pod: &mut Value) -> &mut serde_json::Map<String, Value> {
        pod["metadata"]["labels"].as_object_mut().unwrap()
    }

    fn set_cpu(pod: &mut Value, cpu: &str) {
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!(cpu);
    }

    #[test]
    fn removing_spark_role_from_a_spark_pod_is_refused_with_what_changed() {
        let body = update(|pod| drop(labels(pod).remove("spark-role")), None);
        let (answer, summary) = decide(&body, POLICY);
        let response = answer.response;
        assert!(!response.allowed);
        let message = response.status.unwrap().message;
        let pod = "spark-jobs/nightly-etl-521012a209d3fc2a-exec-1";
        assert_eq!(
            message,
            format!(
                "spark-admission: Spark pod {pod} cannot change its labels spark-role and spark-app-selector after creation (this update changes spark-role from \"executor\" to none); quotas count every Spark pod by them for as long as it lives. Delete the pod and create it anew instead"
            )
        );
        assert_eq!(summary.outcome, Outcome::Denied);
        assert_eq!(summary.role, Some(Role::Executor));
        assert!(response.patch.is_none());
    }

    #[test]
    fn moving_a_pod_to_another_application_or_making_a_pod_a_spark_pod_is_refused() {
        let body = update(
            |pod| {
                labels(pod).insert("spark-app-selector".to_owned(), json!("spark-other"));
            },
            None,
        );
        let message = decide(&body, POLICY).0.response.status.unwrap().message;
        assert!(
            message.contains("this update changes spark-app-selector from \"spark-"),
            "{message}"
        );
        assert!(message.contains("to \"spark-other\")"), "{message}");

        // The old object is not a Spark pod, the new one is: the objectSelector sends it too.
        let mut review: Value = serde_json::from_slice(&update(|_| {}, None)).unwrap();
        let old = review["request"]["oldObject"].as_object_mut().unwrap();
        old["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("spark-role");
        let body = serde_json::to_vec(&review).unwrap();
        let message = decide(&body, POLICY).0.response.status.unwrap().message;
        assert!(
            message.contains("changes spark-role from none to \"executor\""),
            "{message}"
        );
    }

    #[test]
    fn sparks_own_label_updates_pass_unchanged() {
        let body = update(
            |pod| {
                labels(pod).insert("spark-exec-inactive".to_owned(), json!("true"));
                pod["metadata"]["resourceVersion"] = json!("999");
            },
            None,
        );
        let (answer, summary) = decide(&body, POLICY);
        assert!(answer.response.allowed);
        assert!(answer.response.patch.is_none());
        assert_eq!(summary.outcome, Outcome::Unchanged);
        assert!(summary.quota_claim.is_none(), "nothing raised");
    }

    #[test]
    fn a_resize_past_a_cap_is_refused_even_where_creation_would_clamp() {
        let body = update(|pod| set_cpu(pod, "6"), Some("resize"));
        let (answer, summary) = decide(&body, POLICY);
        assert!(!answer.response.allowed);
        let message = answer.response.status.unwrap().message;
        assert!(
            message.contains("are over the policy's caps, and a resize is not clamped: "),
            "{message}"
        );
        assert!(message.contains("max 4"), "{message}");
        assert_eq!(summary.outcome, Outcome::Denied);

        let deny_policy = POLICY.replace("onExceed: clamp", "onExceed: deny");
        let body = update(|pod| set_cpu(pod, "6"), None);
        let message = decide(&body, &deny_policy)
            .0
            .response
            .status
            .unwrap()
            .message;
        assert!(
            message.contains("are over the policy's caps: "),
            "{message}"
        );
    }

    #[test]
    fn a_resize_within_the_caps_is_a_quota_claim_for_the_new_charge() {
        let body = update(|pod| set_cpu(pod, "3"), Some("resize"));
        let (answer, summary) = decide(&body, POLICY);
        assert!(answer.response.allowed);
        assert!(
            answer.response.patch.is_none(),
            "an UPDATE is never patched"
        );
        let claim = summary.quota_claim.expect("a claim for the raised CPU");
        assert_eq!(claim.kind, ClaimKind::Resize);
        assert_eq!(claim.entry.charge.cpu, 3_000_000_000);
        assert_eq!(claim.key.name, "nightly-etl-521012a209d3fc2a-exec-1");

        // Lowered resources claim nothing; a status update is not guarded at all.
        let lowered = update(|pod| set_cpu(pod, "1"), Some("resize"));
        assert!(decide(&lowered, POLICY).1.quota_claim.is_none());
        let status = update(|pod| drop(labels(pod).remove("spark-role")), Some("status"));
        assert!(decide(&status, POLICY).0.response.allowed);
    }
}
