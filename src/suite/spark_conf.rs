//! A driver ConfigMap's review answered without a cluster, for `spark-admission test` and
//! `spark-admission mutate` (SPEC §5b: both take a driver ConfigMap, or its AdmissionReview, and
//! show the resulting properties and refusals offline).
//!
//! The steps are the server's `/mutate-spark-conf` route, in its order and through the same
//! functions, never a copy of them: a policy without `sparkConf` rules or quotas allows every
//! ConfigMap unread; [`spark_conf::candidate`] says whether it is a Spark driver's
//! configuration; the application's totals are read only where a quota may limit it
//! ([`spark_conf::Candidate::may_be_limited`]), from a snapshot of the cluster's Spark pods by
//! an offline [`Tracker`] (as the server reads them from its watch when it cannot LIST); then
//! [`spark_conf::answer`]. Nothing is reserved: nothing outlives the answer.
//!
//! Two things the server reads from the cluster are not here, and the answer goes as the
//! server's does when those reads fail: an executor pod template
//! (`spark.kubernetes.executor.podTemplateFile`, which it GETs through the driver pod), so
//! executors are sized from the Spark container alone, with the answer's warning saying so;
//! and gang admission's consistent read of the namespace (its pods and the room granted to
//! earlier submissions, from their stored ConfigMaps), so the submission is decided on
//! per-application limits only ([`Application::namespace_unread`] says when that mattered).

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::admission::AdmissionRequest;
use serde_json::{Value, json};

use crate::admission::ResponseReview;
use crate::admission::spark_conf::{self, Answered, AppliedTo, ClusterReads, Reserved, Reviewed};
use crate::policy::Policy;
use crate::quota::gang::{NamespaceView, Reservations};
use crate::quota::ledger::AppTotals;
use crate::quota::{Ledger, Tracker};

/// Why the namespace is not read offline for gang admission.
const OFFLINE_NAMESPACE: &str = "gang admission reads the namespace's pods and earlier submissions from the cluster, and this answer is offline";

/// Why an executor pod template is not read offline.
const OFFLINE_TEMPLATE: &str = "it is in a ConfigMap of the driver pod, which is read from the cluster, and this answer is offline";

/// Whether `document` is a ConfigMap, or an AdmissionReview whose request is for one: the
/// documents answered here rather than as a pod.
pub(crate) fn is_config_map(document: &Value) -> bool {
    match document.get("kind").and_then(Value::as_str) {
        Some("ConfigMap") => true,
        Some("AdmissionReview") => {
            document
                .pointer("/request/kind/kind")
                .and_then(Value::as_str)
                == Some("ConfigMap")
        }
        _ => false,
    }
}

/// The review of the CREATE of `config_map` in `namespace`, as the apiserver sends it to
/// `/mutate-spark-conf`: the shape [`crate::admission::create_review`] gives a pod's.
pub(crate) fn create_review(
    config_map: Value,
    namespace: &str,
    uid: &str,
    username: &str,
) -> Value {
    let name = config_map
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or_else(|| json!(""));
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "requestKind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "requestResource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": username},
            "object": config_map,
            "dryRun": false,
        },
    })
}

/// The webhook's answer, and what led to it.
#[derive(Debug)]
pub(crate) struct Offline {
    /// What the server would answer.
    pub review: ResponseReview,
    /// Why.
    pub outcome: Outcome,
}

/// How the ConfigMap was answered.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The policy has neither `sparkConf` rules nor quotas: allowed unchanged, unread.
    NothingToDo,
    /// Not a Spark driver's configuration the policy can act on: allowed unchanged, for this
    /// reason.
    Unchanged(String),
    /// The policy applied to an application's configuration.
    Applied(Box<Application>),
}

/// The application whose configuration the policy was applied to.
#[derive(Debug)]
pub(crate) struct Application {
    /// The namespace it runs in (the request's).
    pub namespace: String,
    /// `spark.app.id`.
    pub app: String,
    /// Its name as its pods are labelled, when the configuration names it.
    pub app_name: Option<String>,
    /// Whether a quota with per-application limits selects the namespace, so the
    /// application's totals were read from the cluster's pods.
    pub limited: bool,
    /// Whether a quota limits the namespace's CPU or memory, so the server would have decided
    /// gang admission on a consistent read of the namespace, which this answer goes without.
    pub namespace_unread: bool,
    /// What the policy did.
    pub answered: Answered,
}

/// Answers `request`, a ConfigMap review, as the server would with `policy`, given the
/// cluster's Spark pods (`cluster`). With no pods (`None`) quotas are not evaluated: the
/// configuration is answered as by the same policy without its quotas. Fails only when the
/// runtime that reads the pods cannot be started.
pub(crate) fn answer(
    request: AdmissionRequest<ConfigMap>,
    policy: &Policy,
    cluster: Option<Ledger>,
) -> std::io::Result<Offline> {
    let reads = OfflineReads {
        knows_pods: cluster.is_some(),
        tracker: Tracker::offline(cluster.unwrap_or_default()),
    };
    // An offline tracker has no client, so its reads await nothing; the runtime only drives
    // the server's async sequence.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let reviewed = runtime.block_on(spark_conf::review(request, policy, &reads));
    Ok(match reviewed {
        Reviewed::NothingToDo(review) => Offline {
            review: *review,
            outcome: Outcome::NothingToDo,
        },
        Reviewed::Unchanged(unchanged) => Offline {
            review: unchanged.review(),
            outcome: Outcome::Unchanged(unchanged.reason),
        },
        Reviewed::Applied(applied) => {
            let AppliedTo {
                review,
                answered,
                namespace,
                app,
                app_name,
                limited,
                namespace_unread,
                ..
            } = *applied;
            Offline {
                review,
                outcome: Outcome::Applied(Box::new(Application {
                    namespace,
                    app,
                    app_name,
                    limited,
                    namespace_unread: namespace_unread.is_some(),
                    answered,
                })),
            }
        }
    })
}

/// What the offline answer has of the cluster: the given pods, and nothing else.
struct OfflineReads {
    knows_pods: bool,
    tracker: Tracker,
}

impl ClusterReads for OfflineReads {
    fn knows_pods(&self) -> bool {
        self.knows_pods
    }

    fn application<'a>(
        &'a self,
        namespace: &'a str,
        app: &'a str,
    ) -> BoxFuture<'a, (AppTotals, Option<String>)> {
        Box::pin(async move {
            let (totals, name, _) = self.tracker.application(namespace, app).await;
            (totals, name)
        })
    }

    fn executor_template<'a>(
        &'a self,
        _namespace: &'a str,
        _driver: &'a str,
        _uid: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Err(OFFLINE_TEMPLATE.to_owned()) })
    }

    fn namespace<'a>(
        &'a self,
        _namespace: &'a str,
        _own: &'a str,
    ) -> BoxFuture<'a, Result<NamespaceView, String>> {
        Box::pin(async { Err(OFFLINE_NAMESPACE.to_owned()) })
    }

    fn reserve<'a>(
        &'a self,
        _namespace: &'a str,
        _view: &'a NamespaceView,
        _write: &'a Reservations,
    ) -> BoxFuture<'a, Reserved> {
        // Never asked: the namespace is not read offline.
        Box::pin(async { Reserved::Failed(OFFLINE_NAMESPACE.to_owned()) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;
    use crate::quota::watch::{LeanPod, ledger_of};

    const REVIEW: &str =
        include_str!("../../tests/fixtures/spark-4.3/cluster-mode/configmap-review.json");
    /// The fixture's application: 6 executors of 2 cores.
    const APP: &str = "spark-b80cad1763024b8b848f4455477ea33a";

    fn request(review: &Value) -> AdmissionRequest<ConfigMap> {
        crate::admission::parse_review_of(&serde_json::to_vec(review).unwrap()).unwrap()
    }

    fn fixture() -> Value {
        serde_json::from_str(REVIEW).unwrap()
    }

    /// The application's driver, running: 1 CPU.
    fn driver(namespace: &str) -> Ledger {
        let pod: LeanPod = serde_json::from_value(json!({
            "metadata": {"name": "nightly-etl-driver", "namespace": namespace,
                         "labels": {"spark-role": "driver", "spark-app-selector": APP, "spark-app-name": "nightly-etl"}},
            "spec": {"containers": [{"name": "spark-kubernetes-driver", "resources": {"requests": {"cpu": "1", "memory": "1433Mi"}}}]},
            "status": {"phase": "Running"},
        }))
        .unwrap();
        ledger_of(&[pod])
    }

    fn applied(offline: &Offline) -> &Application {
        match &offline.outcome {
            Outcome::Applied(application) => application,
            other => panic!("not applied: {other:?}"),
        }
    }

    fn instances(offline: &Offline) -> Option<String> {
        let mut object = fixture()["request"]["object"].clone();
        if let Some(patch) = offline.review.response.decoded_patch() {
            json_patch::patch(&mut object, &patch).unwrap();
        }
        let text = object["data"]["spark.properties"].as_str().unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("spark.executor.instances="))
            .map(str::to_owned)
    }

    #[test]
    fn documents_are_told_apart_by_kind_and_by_the_reviews_request_kind() {
        assert!(is_config_map(&json!({"kind": "ConfigMap"})));
        assert!(is_config_map(&fixture()));
        assert!(!is_config_map(&json!({"kind": "Pod"})));
        assert!(!is_config_map(&json!({"metadata": {}})));
        assert!(!is_config_map(
            &json!({"kind": "AdmissionReview", "request": {"kind": {"kind": "Pod"}}})
        ));
    }

    #[test]
    fn a_bare_configmap_is_wrapped_in_the_review_the_apiserver_sends() {
        let object = fixture()["request"]["object"].clone();
        let review = create_review(object.clone(), "etl", "uid-1", "someone");
        let request = request(&review);
        assert_eq!(request.uid, "uid-1");
        assert_eq!(request.kind.kind, "ConfigMap");
        assert_eq!(request.resource.resource, "configmaps");
        assert_eq!(request.namespace.as_deref(), Some("etl"));
        assert_eq!(
            request.name, "spark-drv-daa685a213f7d7dc-conf-map",
            "named as the object"
        );
        assert_eq!(review["request"]["object"], object);
        let offline = answer(
            request,
            &Policy::parse("rules: [{name: a, sparkConf: {set: {spark.x: y}}}]").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(applied(&offline).namespace, "etl");
    }

    #[test]
    fn the_driver_in_the_pods_leaves_less_room_and_no_pods_means_no_quota() {
        // maxCpu 12: 6 executors of 2 CPUs fit an empty application; beside its 1-CPU driver
        // (12 - 1) / 2 = 5 do.
        let policy = Policy::parse(
            "quotas: [{name: twelve, match: {namespaces: [capture-cm]}, perApplication: {maxCpu: '12'}}]",
        )
        .unwrap();
        let with_driver = answer(request(&fixture()), &policy, Some(driver("capture-cm"))).unwrap();
        assert!(applied(&with_driver).limited);
        assert_eq!(
            applied(&with_driver).app_name.as_deref(),
            Some("nightly-etl")
        );
        assert_eq!(instances(&with_driver).as_deref(), Some("5"));

        let empty = answer(request(&fixture()), &policy, Some(Ledger::new())).unwrap();
        assert_eq!(instances(&empty).as_deref(), Some("6"));
        assert!(empty.review.response.patch.is_none());

        // The driver of the same application id in another namespace is another application.
        let elsewhere = answer(request(&fixture()), &policy, Some(driver("other"))).unwrap();
        assert_eq!(instances(&elsewhere).as_deref(), Some("6"));

        // No pods: quotas are not evaluated, even one that no executor would fit.
        let tiny =
            Policy::parse("quotas: [{name: one, perApplication: {maxExecutors: 1}}]").unwrap();
        let unevaluated = answer(request(&fixture()), &tiny, None).unwrap();
        assert!(!applied(&unevaluated).limited);
        assert!(unevaluated.review.response.patch.is_none());
        assert!(applied(&unevaluated).answered.fitted.fit.is_none());
        assert_eq!(
            instances(&answer(request(&fixture()), &tiny, Some(Ledger::new())).unwrap()).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn an_executor_template_is_not_read_offline_and_the_warning_says_so() {
        let review: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/spark-4.3/cluster-mode/template/configmap-review.json"
        ))
        .unwrap();
        let policy =
            Policy::parse("quotas: [{name: cpu, perApplication: {maxCpu: '100'}}]").unwrap();
        let offline = answer(request(&review), &policy, Some(Ledger::new())).unwrap();
        assert_eq!(
            offline.review.response.warnings,
            [
                "spark-admission could not read the executor pod template (it is in a ConfigMap of the driver pod, which is read from the cluster, and this answer is offline): executors are sized from the Spark container alone, without the template's other containers"
            ]
        );
        // Without pods quotas are not evaluated, so nothing needs the template.
        let unlimited = answer(request(&review), &policy, None).unwrap();
        assert!(unlimited.review.response.warnings.is_empty());
    }

    #[test]
    fn namespace_limits_are_said_to_go_unread_and_per_application_ones_still_decide() {
        // Gang admission: the application needs 1 executor (no dynamic allocation) of 2 CPUs;
        // maxCpu 2 per application leaves none beside its 1-CPU driver, whatever the namespace.
        let policy = Policy::parse(
            "quotas: [{name: ns, perNamespace: {maxCpu: '100'}, perApplication: {maxCpu: '2'}}]",
        )
        .unwrap();
        let offline = answer(request(&fixture()), &policy, Some(driver("capture-cm"))).unwrap();
        let application = applied(&offline);
        assert!(application.namespace_unread);
        assert!(application.answered.refused());
        assert!(!offline.review.response.allowed);
        let per_app =
            Policy::parse("quotas: [{name: app, perApplication: {maxExecutors: 3}}]").unwrap();
        let offline = answer(request(&fixture()), &per_app, Some(Ledger::new())).unwrap();
        assert!(!applied(&offline).namespace_unread);
        // Quotas not evaluated: nothing read, nothing unread.
        let offline = answer(request(&fixture()), &policy, None).unwrap();
        assert!(!applied(&offline).namespace_unread);
        assert!(offline.review.response.allowed);
    }

    #[test]
    fn what_is_not_acted_on_says_why() {
        let nothing = answer(
            request(&fixture()),
            &Policy::parse("rules: [{name: a, labels: {x: y}}]").unwrap(),
            Some(Ledger::new()),
        )
        .unwrap();
        assert!(matches!(nothing.outcome, Outcome::NothingToDo));
        assert!(nothing.review.response.allowed && nothing.review.response.patch.is_none());

        let mut review = fixture();
        review["request"]["object"]["metadata"]["name"] = json!("my-settings");
        let unchanged = answer(
            request(&review),
            &Policy::parse("rules: [{name: a, sparkConf: {set: {spark.x: y}}}]").unwrap(),
            None,
        )
        .unwrap();
        match unchanged.outcome {
            Outcome::Unchanged(reason) => {
                assert_eq!(reason, "my-settings is not named spark-drv-*-conf-map");
            }
            other => panic!("{other:?}"),
        }
        assert!(unchanged.review.response.allowed);
        assert_eq!(
            unchanged.review.response.uid,
            "a9d820b8-cbb3-4072-baeb-37cfe3e9b855"
        );
    }
}
