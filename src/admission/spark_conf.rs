//! The driver's configuration of a cluster-mode Spark application, fitted to its quotas before
//! the driver reads it (SPEC §5a).
//!
//! spark-submit (and so the Spark Operator) creates the driver pod, then ConfigMap
//! `spark-drv-<id>-conf-map`, owned by that pod, whose `spark.properties` the driver reads at
//! start. On its CREATE, the executors the application would ask for are sized as Spark sizes
//! them, run through the policy like any executor pod (defaults, clamps, which quotas match),
//! and the executor counts are lowered to the number that fits the per-application limits. So
//! the application never asks for executors a quota would refuse, which Spark 4.2+ counts as
//! failures until it gives up.
//!
//! Anything that is not such a ConfigMap, or that cannot be read, is allowed unchanged: the
//! webhook entry for it has `failurePolicy: Ignore`, and refusals stay the backstop. No I/O
//! here: the server fetches the application's totals and hands them in.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use json_patch::jsonptr::Token;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::{Value, json};

use crate::engine::{self, APP_ID_LABEL, ROLE_LABEL, RequestContext, SparkPod};
use crate::policy::{Policy, Quota};
use crate::quota::check::{format_cpu, format_memory};
use crate::quota::fit::{Fit, executors_that_fit};
use crate::quota::gang::{
    Ask, Granted, NamespaceView, RESERVATION_ANNOTATION, Reservation, Reservations,
    check as check_gang, hold,
};
use crate::quota::ledger::AppTotals;
use crate::quota::{Charge, Claim};
use crate::sparkconf::rules::{self, APP_ID, APP_NAME, Over, Written, app_name_label};
use crate::sparkconf::{
    Change, ExecutorSize, Properties, executor_size, lower_executor_counts, minimum_executors,
};

use super::{Response, ResponseReview};

/// The ConfigMap key holding Spark's configuration.
pub const PROPERTIES_KEY: &str = "spark.properties";
/// Annotation recording what was lowered and why.
pub const LOWERED_ANNOTATION: &str = "spark-admission.io/spark-conf-lowered";
/// Annotation recording what `sparkConf.set` wrote, and by which rule.
pub const SET_ANNOTATION: &str = "spark-admission.io/spark-conf-set";

const EXECUTOR_LABEL_PREFIX: &str = "spark.kubernetes.executor.label.";
const EXECUTOR_TEMPLATE_FILE: &str = "spark.kubernetes.executor.podTemplateFile";
const EXECUTOR_TEMPLATE_CONTAINER: &str = "spark.kubernetes.executor.podTemplateContainerName";
/// The executor container's name when the template's names none.
const EXECUTOR_CONTAINER: &str = "spark-kubernetes-executor";
const EXECUTOR_SERVICE_ACCOUNT: &str = "spark.kubernetes.authenticate.executor.serviceAccountName";
const DRIVER_SERVICE_ACCOUNT: &str = "spark.kubernetes.authenticate.driver.serviceAccountName";

/// A Spark driver's configuration the policy can act on.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The request's uid.
    pub uid: String,
    /// The namespace.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// `spark.app.id`: the application (`spark-app-selector` of its pods).
    pub app: String,
    /// Whether the request is a dry run (nothing is stored, so nothing is recorded).
    pub dry_run: bool,
    properties: Properties,
    /// The driver as the rules see it, read from the configuration.
    driver: SparkPod,
    /// The driver pod that owns the ConfigMap: name and uid.
    owner: Option<(String, String)>,
    /// The executors' pod template, once read ([`Candidate::with_executor_template`]).
    executor_template: Option<Pod>,
    /// Why the template named could not be read, for the user.
    template_unread: Option<String>,
    /// The namespace as gang admission reads it ([`Candidate::with_namespace_view`]).
    namespace_view: Option<NamespaceView>,
    has_annotations: bool,
}

/// A ConfigMap that is allowed unchanged without looking further, and why.
#[derive(Debug, Clone)]
pub struct Unchanged {
    uid: String,
    /// Why it is not a Spark driver's configuration that can be fitted.
    pub reason: String,
}

impl Unchanged {
    /// The answer: allowed, no patch.
    pub fn review(&self) -> ResponseReview {
        Response::allow(&self.uid).into_review()
    }
}

/// Reads a ConfigMap review. A Spark driver's configuration that can be read is a
/// [`Candidate`]; anything else is [`Unchanged`], with the reason.
pub fn candidate(request: AdmissionRequest<ConfigMap>) -> Result<Candidate, Unchanged> {
    let unchanged = |reason: String| Unchanged {
        uid: request.uid.clone(),
        reason,
    };
    if request.operation != Operation::Create
        || !request.kind.group.is_empty()
        || request.kind.kind != "ConfigMap"
    {
        return Err(unchanged("not a ConfigMap CREATE".to_owned()));
    }
    let Some(config_map) = request.object.as_ref() else {
        return Err(unchanged("no object".to_owned()));
    };
    let name = config_map.metadata.name.clone().unwrap_or_default();
    // spark-submit's name for it: spark-drv-<id>-conf-map (the driver also makes
    // spark-exec-<id>-conf-map for executors, which must be left alone).
    if !(name.starts_with("spark-drv-") && name.ends_with("-conf-map")) {
        return Err(unchanged(format!(
            "{name} is not named spark-drv-*-conf-map"
        )));
    }
    let Some(owner) = config_map
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.kind == "Pod" && owner.api_version == "v1")
        .map(|owner| (owner.name.clone(), owner.uid.clone()))
    else {
        return Err(unchanged(format!("{name} is not owned by a driver pod")));
    };
    let Some(text) = config_map.data.as_ref().and_then(|d| d.get(PROPERTIES_KEY)) else {
        return Err(unchanged(format!("{name} has no {PROPERTIES_KEY}")));
    };
    let properties = Properties::parse(text)
        .map_err(|e| unchanged(format!("{name}: {PROPERTIES_KEY} cannot be read: {e}")))?;
    let namespace = request.namespace.clone().unwrap_or_default();
    let Some(driver) = rules::driver_of(&properties, &namespace) else {
        return Err(unchanged(format!(
            "{name}: {PROPERTIES_KEY} has no {APP_ID}"
        )));
    };
    Ok(Candidate {
        uid: request.uid.clone(),
        namespace,
        name,
        app: driver.app_id.clone().unwrap_or_default(),
        dry_run: request.dry_run,
        has_annotations: config_map.metadata.annotations.is_some(),
        properties,
        driver,
        owner: Some(owner),
        executor_template: None,
        template_unread: None,
        namespace_view: None,
    })
}

impl Candidate {
    /// Whether a quota of `policy` could limit this application's executors: one with
    /// per-application limits (the only ones fitted, [`crate::quota::fit`]) whose namespaces
    /// select the ConfigMap's. Only then are the application's totals worth a consistent
    /// LIST: a review for a namespace no quota limits costs the apiserver nothing, whoever
    /// sent it.
    pub fn may_be_limited(&self, policy: &Policy) -> bool {
        policy.quotas.iter().any(|quota| {
            quota.per_application.is_some()
                && crate::quota::report::applies_to_namespace(quota, &self.namespace)
        })
    }

    /// The application's name as its pods are labelled.
    pub fn app_name(&self) -> Option<&str> {
        self.driver.app_name.as_deref()
    }

    /// The driver pod (name, uid) whose volume holds the executors' pod template, when the
    /// configuration names one (`spark.kubernetes.executor.podTemplateFile`).
    pub fn executor_template_owner(&self) -> Option<(&str, &str)> {
        self.properties.get(EXECUTOR_TEMPLATE_FILE)?;
        self.owner
            .as_ref()
            .map(|(name, uid)| (name.as_str(), uid.as_str()))
    }

    /// Executors are sized from `template` as Spark builds them from it: its containers, with
    /// the Spark container's CPU and memory set from the configuration (SPEC §5b).
    pub fn with_executor_template(mut self, template: Pod) -> Self {
        self.executor_template = Some(template);
        self
    }

    /// Whether a quota of `policy` limits CPU or memory in this ConfigMap's namespace: then gang
    /// admission needs the namespace's consistent read ([`Candidate::with_namespace_view`]).
    pub fn needs_namespace_view(&self, policy: &Policy) -> bool {
        policy.quotas.iter().any(|quota| {
            quota
                .per_namespace
                .as_ref()
                .is_some_and(|limits| limits.max_cpu.is_some() || limits.max_memory.is_some())
                && crate::quota::report::applies_to_namespace(quota, &self.namespace)
        })
    }

    /// The driver pod's uid.
    pub fn driver_uid(&self) -> Option<&str> {
        self.owner.as_ref().map(|(_, uid)| uid.as_str())
    }

    /// The driver pod's name.
    pub fn driver_name(&self) -> Option<&str> {
        self.owner.as_ref().map(|(name, _)| name.as_str())
    }

    /// Gang admission decides on `view`, the namespace's consistent read (SPEC §5b).
    pub fn with_namespace_view(mut self, view: NamespaceView) -> Self {
        self.namespace_view = Some(view);
        self
    }

    /// The template named could not be read (`why`): executors are sized from the Spark
    /// container alone, and the answer says so.
    pub fn without_executor_template(mut self, why: String) -> Self {
        self.template_unread = Some(why);
        self
    }
}

/// The most bytes of an executor pod template read: a ConfigMap holds at most 1 MiB.
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// Reads an executor pod template as Spark does (`KubernetesUtils.loadPodFromTemplate`: YAML
/// of a Pod), within the limits a policy is read with.
pub fn parse_executor_template(text: &str) -> Result<Pod, String> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "the template is {} bytes, over {MAX_TEMPLATE_BYTES}",
            text.len()
        ));
    }
    serde_saphyr::from_str_with_options(text, crate::policy::policy_yaml_options())
        .map_err(|error| format!("the template is not a pod Spark can read: {error}"))
}

/// What answering a driver ConfigMap reads from the cluster (SPEC §5a, §5b). The server reads
/// it through the API, within its bounds; `mutate` and the suites from what they were given.
/// Each read that fails says why, and the answer goes on without it.
pub trait ClusterReads: Sync {
    /// Whether it knows the cluster's pods at all. Without them (`mutate` and a suite with no
    /// pod snapshot) quotas are not evaluated: the configuration is answered as by the same
    /// policy without its quotas.
    fn knows_pods(&self) -> bool {
        true
    }

    /// The application's totals (its pods so far: the driver, at submission) and its name as
    /// its pods are labelled.
    fn application<'a>(
        &'a self,
        namespace: &'a str,
        app: &'a str,
    ) -> BoxFuture<'a, (AppTotals, Option<String>)>;

    /// The text of the executor pod template that driver pod (name, uid) mounts.
    fn executor_template<'a>(
        &'a self,
        namespace: &'a str,
        driver: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;

    /// The namespace as gang admission decides on it, for the submission of driver `own`.
    fn namespace<'a>(
        &'a self,
        namespace: &'a str,
        own: &'a str,
    ) -> BoxFuture<'a, Result<NamespaceView, String>>;

    /// Writes `write` as the namespace's reservations if they are still at the version `view`
    /// read them at.
    fn reserve<'a>(
        &'a self,
        namespace: &'a str,
        view: &'a NamespaceView,
        write: &'a Reservations,
    ) -> BoxFuture<'a, Reserved>;
}

/// How writing a submission's reservation went.
#[derive(Debug)]
pub enum Reserved {
    /// Written: the room is held.
    Held,
    /// Another decision wrote first: the reservations now, to decide again on.
    Conflict(Reservations),
    /// Not written, why: the submission goes unreserved (its ConfigMap's record still
    /// counts once it is stored).
    Failed(String),
}

/// Most times one review decides again after another decision wrote the reservations first.
pub const MAX_RESERVE_ATTEMPTS: usize = 8;

/// How a driver ConfigMap's review was answered.
#[derive(Debug)]
pub enum Reviewed {
    /// The policy has neither `sparkConf` rules nor quotas: allowed unchanged, unread.
    NothingToDo(Box<ResponseReview>),
    /// Not a Spark driver's configuration the policy can act on: allowed unchanged.
    Unchanged(Unchanged),
    /// The policy applied to an application's configuration.
    Applied(Box<AppliedTo>),
}

impl Reviewed {
    /// The answer.
    pub fn into_review(self) -> ResponseReview {
        match self {
            Reviewed::NothingToDo(review) => *review,
            Reviewed::Unchanged(unchanged) => unchanged.review(),
            Reviewed::Applied(applied) => applied.review,
        }
    }
}

/// A configuration the policy applied to, and what it did.
#[derive(Debug)]
pub struct AppliedTo {
    /// The answer.
    pub review: ResponseReview,
    /// What the policy did.
    pub answered: Answered,
    /// The namespace (the request's).
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// `spark.app.id`.
    pub app: String,
    /// Its name as its pods are labelled, when known.
    pub app_name: Option<String>,
    /// The driver pod that owns the ConfigMap: name and uid.
    pub driver: Option<(String, String)>,
    /// Whether the request is a dry run.
    pub dry_run: bool,
    /// Whether a quota with per-application limits selects the namespace, so the
    /// application's totals were read.
    pub limited: bool,
    /// Why the namespace, which a quota limits, could not be read for gang admission (the
    /// submission was then decided on per-application limits only).
    pub namespace_unread: Option<String>,
}

/// Answers a driver ConfigMap's review (SPEC §5a, §5b): the one sequence the server, `mutate`
/// and the suites run. A policy without `sparkConf` rules or quotas allows every ConfigMap
/// unread; then the candidate; its executor template and the application's totals are read
/// only where a quota limits applications, and the namespace only where a quota limits its CPU
/// or memory, so a review for a namespace no quota limits costs the apiserver nothing, whoever
/// sent it; then [`answer`].
pub async fn review(
    request: AdmissionRequest<ConfigMap>,
    policy: &Policy,
    reads: &dyn ClusterReads,
) -> Reviewed {
    if policy.quotas.is_empty() && !policy.has_spark_conf_rules() {
        return Reviewed::NothingToDo(Box::new(ResponseReview::allowed(&request.uid)));
    }
    let mut candidate = match candidate(request) {
        Ok(candidate) => candidate,
        Err(unchanged) => return Reviewed::Unchanged(unchanged),
    };
    let without_quotas;
    let policy = if reads.knows_pods() {
        policy
    } else {
        without_quotas = Policy {
            quotas: Vec::new(),
            ..policy.clone()
        };
        &without_quotas
    };
    let limited = candidate.may_be_limited(policy);
    if limited && let Some((driver, uid)) = candidate.executor_template_owner() {
        let read = reads
            .executor_template(&candidate.namespace, driver, uid)
            .await
            .and_then(|text| parse_executor_template(&text));
        candidate = match read {
            Ok(template) => candidate.with_executor_template(template),
            Err(why) => candidate.without_executor_template(why),
        };
    }
    let mut namespace_unread = None;
    if candidate.needs_namespace_view(policy)
        && let Some(own) = candidate.driver_uid()
    {
        match reads.namespace(&candidate.namespace, own).await {
            Ok(view) => candidate = candidate.with_namespace_view(view),
            Err(why) => namespace_unread = Some(why),
        }
    }
    let (totals, app_name) = if limited {
        reads
            .application(&candidate.namespace, &candidate.app)
            .await
    } else {
        (AppTotals::default(), None)
    };
    let mut applied = AppliedTo {
        review: ResponseReview::allowed(&candidate.uid),
        answered: Answered::default(),
        namespace: candidate.namespace.clone(),
        name: candidate.name.clone(),
        app: candidate.app.clone(),
        app_name: app_name
            .clone()
            .or_else(|| candidate.app_name().map(str::to_owned)),
        driver: candidate.owner.clone(),
        dry_run: candidate.dry_run,
        limited,
        namespace_unread,
    };
    let (review, answered) = if candidate.namespace_view.is_some() && !candidate.dry_run {
        answer_reserved(
            candidate,
            policy,
            &totals,
            app_name.as_deref(),
            reads,
            &mut applied,
        )
        .await
    } else {
        answer(candidate, policy, &totals, app_name.as_deref())
    };
    applied.review = review;
    applied.answered = answered;
    Reviewed::Applied(Box::new(applied))
}

/// [`answer`], with the room an admission grants written into the namespace's reservations
/// before it is given (SPEC §5b): when another decision wrote first, decided again on the
/// reservations as they are then, at most [`MAX_RESERVE_ATTEMPTS`] times. So two replicas
/// deciding at once on the same room never both grant it.
async fn answer_reserved(
    mut candidate: Candidate,
    policy: &Policy,
    totals: &AppTotals,
    app_name: Option<&str>,
    reads: &dyn ClusterReads,
    applied: &mut AppliedTo,
) -> (ResponseReview, Answered) {
    let mut conflicted = Answered::default();
    for _ in 0..MAX_RESERVE_ATTEMPTS {
        let (review, answered) = answer(candidate.clone(), policy, totals, app_name);
        let (Some(granted), Some(view), Some(own)) = (
            &answered.granted,
            &candidate.namespace_view,
            candidate.driver_uid(),
        ) else {
            return (review, answered);
        };
        let Some(driver) = view.pods.iter().find(|pod| pod.uid == own) else {
            let why = format!(
                "its driver pod (uid {own}) is not among the live pods of namespace {}",
                candidate.namespace
            );
            return refuse_gang(&candidate, answered, why);
        };
        // The application as its executors will be labelled, which releases the room: the
        // driver pod's label, which the apiserver bounds to 63 characters, never
        // `spark.app.id` from the text, which can be as long as the review.
        let Some(app) = driver.app.as_deref() else {
            applied.namespace_unread = Some(format!(
                "its room was not reserved: its driver pod (uid {own}) has no {APP_ID_LABEL} label"
            ));
            return (review, answered);
        };
        let reservation = Reservation::new(app, granted, driver.charge, view.read_at);
        let write = match hold(view, own, reservation) {
            Ok(write) => write,
            Err(held) => {
                let why = format!(
                    "namespace {} holds room for {held} submissions already, the most it holds",
                    candidate.namespace
                );
                return refuse_gang(&candidate, answered, why);
            }
        };
        match reads.reserve(&candidate.namespace, view, &write).await {
            Reserved::Held => return (review, answered),
            Reserved::Failed(why) => {
                applied.namespace_unread = Some(format!("its room was not reserved: {why}"));
                return (review, answered);
            }
            Reserved::Conflict(now) => {
                if let Some(view) = candidate.namespace_view.as_mut() {
                    view.reservations = now;
                }
                conflicted = answered;
            }
        }
    }
    let why = format!(
        "{MAX_RESERVE_ATTEMPTS} other submissions reserved room in namespace {} while it was decided",
        candidate.namespace
    );
    refuse_gang(&candidate, conflicted, why)
}

/// What fitting a configuration did.
#[derive(Debug, Clone, Default)]
pub struct Fitted {
    /// The settings lowered (empty: unchanged).
    pub changes: Vec<Change>,
    /// The tightest per-application limit, when a quota applies.
    pub fit: Option<Fit>,
    /// What the user is told.
    pub warnings: Vec<String>,
    /// One executor's charge and the quotas (indexes into the policy's) its pods match.
    executor: Option<(Charge, Vec<usize>)>,
}

/// What the policy did to one driver configuration.
#[derive(Debug, Clone, Default)]
pub struct Answered {
    /// What `sparkConf.set` wrote.
    pub written: Vec<Written>,
    /// The caps it is over; not empty: the submission was refused.
    pub over: Vec<Over>,
    /// What fitting to the quotas did (SPEC §5a).
    pub fitted: Fitted,
    /// Why gang admission refused it (SPEC §5b); then the submission was refused.
    pub gang_refusal: Option<String>,
    /// The room gang admission granted its executors, recorded on the ConfigMap.
    pub granted: Option<Granted>,
    /// Every warning the user was sent.
    pub warnings: Vec<String>,
}

impl Answered {
    /// Whether the submission was refused.
    pub fn refused(&self) -> bool {
        !self.over.is_empty() || self.gang_refusal.is_some()
    }
}

/// Applies the policy to `candidate`'s configuration: the `sparkConf` rules (SPEC §5b), whose
/// caps refuse the submission, then its executor counts fitted to the per-application limits
/// of the quotas (SPEC §5a), given what the application already has (`totals`: its driver, at
/// submission) and its name as its pods are labelled (for quotas matching `appNames`; from
/// the configuration when not given).
pub fn answer(
    mut candidate: Candidate,
    policy: &Policy,
    totals: &AppTotals,
    app_name: Option<&str>,
) -> (ResponseReview, Answered) {
    let mut response = Response::allow(&candidate.uid);
    let mut answered = Answered::default();
    if let Some(why) = candidate.template_unread.take() {
        answered.warnings.push(format!(
            "spark-admission could not read the executor pod template ({why}): executors are sized from the Spark container alone, without the template's other containers"
        ));
    }
    let applied = match rules::apply(&mut candidate.properties, &candidate.driver, policy) {
        Ok(applied) => applied,
        Err(error) => {
            // Only a text near 4 GiB, which no review carries.
            answered.warnings.push(format!(
                "spark-admission left {PROPERTIES_KEY} unchanged: {error}"
            ));
            response.warnings.clone_from(&answered.warnings);
            return (response.into_review(), answered);
        }
    };
    answered.warnings.extend(applied.warnings);
    answered.written = applied.written;
    if !applied.over.is_empty() {
        let reasons: Vec<String> = applied.over.iter().map(ToString::to_string).collect();
        let name = candidate
            .properties
            .get(APP_NAME)
            .unwrap_or(&candidate.app)
            .to_owned();
        response.deny(
            format!(
                "spark-admission refused Spark application {name} ({}): {}; submit it again with these settings within the max",
                candidate.app,
                reasons.join("; ")
            ),
            "Forbidden",
            403,
        );
        response.warnings.clone_from(&answered.warnings);
        answered.over = applied.over;
        return (response.into_review(), answered);
    }
    if !answered.written.is_empty() {
        answered.warnings.push(format!(
            "spark-admission set {} in application {}",
            written_record(&answered.written),
            candidate.app
        ));
    }
    // Sized from the configuration as the rules left it. One Spark cannot size is left for
    // Spark to refuse, and for refusals of its executors to limit.
    answered.fitted = match executor_size(&candidate.properties) {
        Ok(size) => fit(&mut candidate, &size, policy, totals, app_name),
        Err(_) => Fitted::default(),
    };
    match gang(&candidate, policy, &answered.fitted) {
        Ok(granted) => answered.granted = granted,
        Err(why) => return refuse_gang(&candidate, answered, why),
    }
    answered
        .warnings
        .extend(answered.fitted.warnings.iter().cloned());
    response.warnings.clone_from(&answered.warnings);
    let mut annotations: Vec<(&str, String)> = Vec::new();
    if !answered.written.is_empty() {
        annotations.push((SET_ANNOTATION, written_record(&answered.written)));
    }
    if let (false, Some(fit)) = (answered.fitted.changes.is_empty(), &answered.fitted.fit) {
        let changed: Vec<String> = answered
            .fitted
            .changes
            .iter()
            .map(ToString::to_string)
            .collect();
        annotations.push((
            LOWERED_ANNOTATION,
            format!(
                "{} to fit quota {} ({})",
                changed.join(", "),
                fit.quota,
                fit.limit
            ),
        ));
    }
    let text_changed = !annotations.is_empty();
    if let Some(granted) = &answered.granted {
        annotations.push((RESERVATION_ANNOTATION, granted.record()));
    }
    if annotations.is_empty() {
        return (response.into_review(), answered);
    }
    for (key, record) in &annotations {
        let name = key.trim_start_matches("spark-admission.io/");
        response
            .audit_annotations
            .insert(name.to_owned(), record.clone());
    }
    let mut operations: Vec<PatchOperation<'_>> = if candidate.has_annotations {
        annotations
            .iter()
            .map(|(key, record)| {
                PatchOperation::Json(json!({
                    "op": "add",
                    "path": format!("/metadata/annotations/{}", Token::new(*key).encoded()),
                    "value": record,
                }))
            })
            .collect()
    } else {
        let map: BTreeMap<&str, &String> = annotations.iter().map(|(k, v)| (*k, v)).collect();
        vec![PatchOperation::Json(
            json!({"op": "add", "path": "/metadata/annotations", "value": map}),
        )]
    };
    // The configuration goes into the patch straight from its text: as a JSON value it would
    // be one more copy of up to 3 MiB.
    if text_changed {
        operations.push(PatchOperation::Text(TextOperation {
            op: "replace",
            path: format!("/data/{PROPERTIES_KEY}"),
            value: candidate.properties.text(),
        }));
    }
    let Ok(patch) = serde_json::to_vec(&operations) else {
        // Not reachable: strings and maps of strings always serialise.
        return (response.into_review(), Answered::default());
    };
    response.patch = Some(super::to_base64(&patch));
    response.patch_type = Some("JSONPatch".to_owned());
    (response.into_review(), answered)
}

/// One operation of the patch: small ones as JSON values, the configuration as borrowed text.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum PatchOperation<'a> {
    Json(Value),
    Text(TextOperation<'a>),
}

/// Fits `candidate`'s executor counts, each executor of `size`, to the per-application limits
/// of `policy`'s quotas (SPEC §5a).
fn fit(
    candidate: &mut Candidate,
    size: &ExecutorSize,
    policy: &Policy,
    totals: &AppTotals,
    app_name: Option<&str>,
) -> Fitted {
    let mut fitted = Fitted::default();
    let executor = executor_pod(candidate, size, app_name);
    // Sized, not scheduled: the priority class (the only cluster fact) changes no charge.
    let context = RequestContext {
        namespace: candidate.namespace.clone(),
        ..RequestContext::default()
    };
    let Some(evaluation) = engine::evaluate(&executor, &context, policy) else {
        return fitted;
    };
    if let Some(denial) = evaluation.denial {
        // The policy itself refuses these executors; fewer of them would not help.
        fitted.warnings.push(format!(
            "spark-admission left the executor counts of {PROPERTIES_KEY} unchanged: its executors would be refused: {denial}"
        ));
        return fitted;
    }
    let Some(claim) = Claim::new(policy, &evaluation.spark, &evaluation.desired, "") else {
        return fitted;
    };
    let quotas: Vec<&Quota> = claim
        .quotas
        .iter()
        .filter_map(|&i| policy.quotas.get(i))
        .collect();
    let charge: Charge = claim.entry.charge;
    fitted.executor = Some((charge, claim.quotas.clone()));
    let Some(fit) = executors_that_fit(&quotas, totals, charge) else {
        return fitted;
    };
    if fit.executors == 0 {
        fitted.warnings.push(format!(
            "spark-admission left the executor counts of {PROPERTIES_KEY} unchanged: no executor of application {} fits quota {} ({}), so its executors will be refused",
            candidate.app, fit.quota, fit.limit
        ));
        fitted.fit = Some(fit);
        return fitted;
    }
    let executors = u32::try_from(fit.executors).unwrap_or(u32::MAX);
    fitted.changes = lower_executor_counts(&mut candidate.properties, executors);
    if !fitted.changes.is_empty() {
        let changed: Vec<String> = fitted.changes.iter().map(ToString::to_string).collect();
        fitted.warnings.push(format!(
            "spark-admission lowered {} of application {}: {} to fit quota {} ({})",
            fitted
                .changes
                .iter()
                .map(|c| c.key)
                .collect::<Vec<_>>()
                .join(", "),
            candidate.app,
            changed.join(", "),
            fit.quota,
            fit.limit
        ));
    }
    fitted.fit = Some(fit);
    fitted
}

/// What `sparkConf.set` wrote, as the annotation, the warning and the Event say it:
/// `key=value (was ...) by rule r`, comma separated.
pub fn written_record(written: &[Written]) -> String {
    let parts: Vec<String> = written
        .iter()
        .map(|w| format!("{w} by rule {}", w.rule))
        .collect();
    parts.join(", ")
}

/// Gang admission (SPEC §5b): whether, after its driver, the quotas its executors match leave
/// room for the application's minimum executors. `Ok` with the room granted (when its
/// namespace was read), `Err` with why not.
fn gang(
    candidate: &Candidate,
    policy: &Policy,
    fitted: &Fitted,
) -> Result<Option<Granted>, String> {
    let Some((charge, indexes)) = &fitted.executor else {
        return Ok(None);
    };
    let quotas: Vec<&Quota> = indexes
        .iter()
        .filter_map(|&i| policy.quotas.get(i))
        .collect();
    let asked_by_quotas = quotas
        .iter()
        .filter_map(|quota| quota.per_application.as_ref()?.min_executors)
        .max()
        .unwrap_or(0);
    let minimum = minimum_executors(&candidate.properties).max(u64::from(asked_by_quotas));
    if minimum == 0 {
        return Ok(None);
    }
    let each = format!(
        "{} CPU and {} each",
        format_cpu(charge.cpu),
        format_memory(charge.memory)
    );
    if let Some(fit) = &fitted.fit
        && fit.executors < minimum
    {
        return Err(format!(
            "quota {} ({}) leaves room for {} of the {minimum} executors it needs to start ({each})",
            fit.quota, fit.limit, fit.executors
        ));
    }
    let (Some(view), Some(own)) = (&candidate.namespace_view, candidate.driver_uid()) else {
        return Ok(None);
    };
    let ask = Ask {
        executors: u32::try_from(minimum).unwrap_or(u32::MAX),
        charge: *charge,
    };
    match check_gang(view, own, &ask, &quotas) {
        None => Ok(Some(Granted {
            executors: ask.executors,
            charge: ask.charge,
        })),
        Some(short) => {
            let held = match short.holding {
                0 => String::new(),
                1 => " and the executors held for 1 other application".to_owned(),
                n => format!(" and the executors held for {n} other applications"),
            };
            Err(format!(
                "quota {} ({} per namespace) leaves room in namespace {} for {} of the {minimum} executors it needs to start ({each}), after the pods there{held}",
                short.quota, short.limit, candidate.namespace, short.room
            ))
        }
    }
}

/// The submission refused for want of room for its minimum executors (SPEC §5b), `why`,
/// with the warnings `answered` gathered.
fn refuse_gang(
    candidate: &Candidate,
    mut answered: Answered,
    why: String,
) -> (ResponseReview, Answered) {
    let name = candidate
        .properties
        .get(APP_NAME)
        .unwrap_or(&candidate.app)
        .to_owned();
    let mut response = Response::allow(&candidate.uid);
    response.deny(
        format!(
            "spark-admission refused Spark application {name} ({}): {why}; lower spark.executor.cores or spark.executor.memory (or spark.dynamicAllocation.minExecutors), or submit it again once room frees up",
            candidate.app
        ),
        "Forbidden",
        403,
    );
    response.warnings.clone_from(&answered.warnings);
    answered.granted = None;
    answered.gang_refusal = Some(why);
    (response.into_review(), answered)
}

/// A JSON Patch operation whose value is borrowed text.
#[derive(serde::Serialize)]
struct TextOperation<'a> {
    op: &'static str,
    path: String,
    value: &'a str,
}

/// The executor pod Spark will create from this configuration, as far as the policy can see
/// it: its labels (`spark.kubernetes.executor.label.*` and Spark's own), service account and
/// the Spark container's resources. Spark names the app label from the driver's; `app_name`
/// is that value when known.
fn executor_pod(candidate: &Candidate, size: &ExecutorSize, app_name: Option<&str>) -> Pod {
    let properties = &candidate.properties;
    // Spark starts from the template (when there is one) and adds its own: the labels, the
    // service account, and the Spark container's CPU and memory. Everything else in the
    // template, its sidecars and init containers above all, is in every executor as written.
    let mut pod = candidate.executor_template.clone().unwrap_or_default();
    pod.status = None;
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(properties.iter().filter_map(|(key, value)| {
        key.strip_prefix(EXECUTOR_LABEL_PREFIX)
            .map(|label| (label.to_owned(), value.into_owned()))
    }));
    labels.insert(ROLE_LABEL.to_owned(), "executor".to_owned());
    labels.insert(APP_ID_LABEL.to_owned(), candidate.app.clone());
    if let Some(name) = app_name
        .map(str::to_owned)
        .or_else(|| properties.get(APP_NAME).map(app_name_label))
    {
        labels.insert("spark-app-name".to_owned(), name);
    }
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if let Some(account) = properties
        .get(EXECUTOR_SERVICE_ACCOUNT)
        .or_else(|| properties.get(DRIVER_SERVICE_ACCOUNT))
    {
        spec.service_account_name = Some(account.to_owned());
    }
    // The Spark container: the one podTemplateContainerName names, else the template's first
    // (KubernetesUtils.selectSparkContainer), else a new one.
    let named = properties.get(EXECUTOR_TEMPLATE_CONTAINER);
    let index = named
        .and_then(|name| spec.containers.iter().position(|c| c.name == name))
        .or((!spec.containers.is_empty()).then_some(0));
    let index = index.unwrap_or_else(|| {
        spec.containers.push(Container::default());
        spec.containers.len() - 1
    });
    let Some(container) = spec.containers.get_mut(index) else {
        return pod;
    };
    if container.name.is_empty() {
        EXECUTOR_CONTAINER.clone_into(&mut container.name);
    }
    container.args = Some(vec!["executor".to_owned()]);
    let quantity = |q: &crate::policy::Quantity| KubeQuantity(q.as_str().to_owned());
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    requests.insert("cpu".to_owned(), quantity(&size.cpu_request));
    requests.insert("memory".to_owned(), quantity(&size.memory));
    let limits = resources.limits.get_or_insert_with(BTreeMap::new);
    limits.insert("memory".to_owned(), quantity(&size.memory));
    if let Some(cpu) = &size.cpu_limit {
        limits.insert("cpu".to_owned(), quantity(cpu));
    }
    pod
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::Value;

    use super::*;
    use crate::admission::parse_review_of;

    const STATIC: &[u8] =
        include_bytes!("../../tests/fixtures/spark-4.3/cluster-mode/configmap-review.json");
    const DYNAMIC: &[u8] =
        include_bytes!("../../tests/fixtures/spark-4.3/cluster-mode/configmap-review-dynamic.json");
    const EXECUTOR_CONF: &[u8] = include_bytes!(
        "../../tests/fixtures/spark-4.3/cluster-mode/executor-configmap-review.json"
    );

    fn request(body: &[u8]) -> AdmissionRequest<ConfigMap> {
        parse_review_of(body).unwrap()
    }

    fn driver_totals() -> AppTotals {
        // The driver of the fixtures: 1 CPU, 1433Mi.
        AppTotals {
            executors: 0,
            charge: Charge {
                cpu: 1_000_000_000,
                memory: 1433 * (1 << 20) * 1_000_000_000,
            },
            present: true,
        }
    }

    fn patched_properties(review: &ResponseReview) -> (String, String) {
        let patch = review.response.decoded_patch().expect("a patch");
        let value = serde_json::to_value(&patch).unwrap();
        let text = value
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["path"] == "/data/spark.properties")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let annotation = value
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["path"] == "/metadata/annotations")
            .unwrap()["value"][LOWERED_ANNOTATION]
            .as_str()
            .unwrap()
            .to_owned();
        (text, annotation)
    }

    #[test]
    fn six_executors_under_max_executors_three_become_three_and_nothing_else_changes() {
        let policy =
            Policy::parse("quotas: [{name: three, perApplication: {maxExecutors: 3}}]").unwrap();
        let request = request(STATIC);
        let original =
            request.object.as_ref().unwrap().data.as_ref().unwrap()[PROPERTIES_KEY].clone();
        let candidate = candidate(request).expect("a Spark driver's configuration");
        assert_eq!(candidate.app, "spark-b80cad1763024b8b848f4455477ea33a");
        let (review, fitted) = answer(candidate, &policy, &driver_totals(), Some("nightly-etl"));
        assert!(review.response.allowed);
        let (text, annotation) = patched_properties(&review);
        // Every line but one is byte for byte what spark-submit wrote.
        let expected = original.replace("spark.executor.instances=6", "spark.executor.instances=3");
        assert_ne!(expected, original);
        assert_eq!(text, expected);
        assert_eq!(
            annotation,
            "spark.executor.instances=3 (was 6) to fit quota three (maxExecutors 3)"
        );
        assert_eq!(fitted.fitted.changes.len(), 1);
        assert_eq!(
            review.response.warnings,
            [
                "spark-admission lowered spark.executor.instances of application spark-b80cad1763024b8b848f4455477ea33a: spark.executor.instances=3 (was 6) to fit quota three (maxExecutors 3)"
            ]
        );
    }

    #[test]
    fn cpu_and_memory_limits_leave_room_for_the_driver_and_size_executors_as_spark_does() {
        // The fixture's executors: 2 cores, 2g heap with the 0.4 Python overhead = 2867Mi.
        let policy =
            Policy::parse("quotas: [{name: size, perApplication: {maxCpu: '8', maxMemory: 20Gi}}]")
                .unwrap();
        let (review, fitted) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        // CPU: (8 - 1) / 2 = 3; memory: (20480 - 1433) / 2867 = 6.
        assert_eq!(fitted.fitted.fit.as_ref().map(|f| f.executors), Some(3));
        let (text, _) = patched_properties(&review);
        assert!(text.contains("\nspark.executor.instances=3\n"));
    }

    #[test]
    fn containers_a_rule_adds_to_executors_count_in_their_size() {
        // As above (2 cores each, 7 CPUs left after the driver), but every executor also gets a
        // 500m sidecar (SPEC §4a: injected containers are charged): 2.5 CPUs each, so 2 fit,
        // where 3 did without it. The driver matches nothing here, its charge is the one given.
        let policy = Policy::parse(
            r#"
rules:
  - name: log-shipper
    match: {roles: [executor]}
    sidecars:
      - {name: fluent-bit, image: "fluent/fluent-bit:3.0", resources: {requests: {cpu: 500m, memory: 64Mi}}}
quotas: [{name: size, perApplication: {maxCpu: '8', maxMemory: 20Gi}}]
"#,
        )
        .unwrap();
        let (review, fitted) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        // CPU: (8 - 1) / 2.5 = 2; memory: (20480 - 1433) / (2867 + 64) = 6.
        assert_eq!(fitted.fitted.fit.as_ref().map(|f| f.executors), Some(2));
        let (text, _) = patched_properties(&review);
        assert!(text.contains("\nspark.executor.instances=2\n"));
    }

    #[test]
    fn a_configuration_within_the_quota_is_left_alone() {
        let policy =
            Policy::parse("quotas: [{name: ten, perApplication: {maxExecutors: 10}}]").unwrap();
        let (review, fitted) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        assert!(review.response.allowed && review.response.patch.is_none());
        assert!(fitted.fitted.changes.is_empty() && fitted.warnings.is_empty());
    }

    #[test]
    fn dynamic_allocation_max_executors_is_lowered() {
        let policy =
            Policy::parse("quotas: [{name: three, perApplication: {maxExecutors: 3}}]").unwrap();
        let (review, fitted) = answer(
            candidate(request(DYNAMIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        let keys: Vec<_> = fitted
            .fitted
            .changes
            .iter()
            .map(|c| (c.key, c.from.clone(), c.to))
            .collect();
        assert_eq!(
            keys,
            [(
                "spark.dynamicAllocation.maxExecutors",
                Some("10".to_owned()),
                3
            )]
        );
        let (text, _) = patched_properties(&review);
        assert!(text.contains("spark.dynamicAllocation.maxExecutors=3\n"));
        assert!(
            text.contains("spark.dynamicAllocation.minExecutors=1\n"),
            "within: kept"
        );
    }

    #[test]
    fn quotas_match_the_executors_as_spark_will_label_them() {
        let policy = Policy::parse(
            "quotas: [{name: other-apps, match: {appNames: [other]}, perApplication: {maxExecutors: 1}}]",
        )
        .unwrap();
        let (review, _) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            Some("nightly-etl"),
        );
        assert!(
            review.response.patch.is_none(),
            "the quota is for other applications"
        );
    }

    #[test]
    fn when_no_executor_fits_the_submission_is_refused_rather_than_left_waiting() {
        // SPEC §5b gang admission: 1 CPU per application is taken by the driver, and the
        // fixture's executors need 2. Refusing the ConfigMap ends the submission at once.
        let policy =
            Policy::parse("quotas: [{name: tiny, perApplication: {maxCpu: '1'}}]").unwrap();
        let (review, answered) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        assert!(!review.response.allowed);
        assert_eq!(
            review.response.status.as_ref().unwrap().message,
            "spark-admission refused Spark application nightly-etl (spark-b80cad1763024b8b848f4455477ea33a): \
             quota tiny (maxCpu 1 with 1 CPU in use, 2 CPU per executor) leaves room for 0 of the 1 executors it needs to start (2 CPU and 2867Mi each); \
             lower spark.executor.cores or spark.executor.memory (or spark.dynamicAllocation.minExecutors), or submit it again once room frees up"
        );
        assert!(answered.refused() && answered.gang_refusal.is_some());
    }

    #[test]
    fn a_quotas_min_executors_asks_for_more_than_the_application_does() {
        // Room for 3 executors of the fixture's 2 CPUs after the driver; the quota asks 4.
        let policy =
            Policy::parse("quotas: [{name: gang, perApplication: {maxCpu: '7', minExecutors: 4}}]")
                .unwrap();
        let (review, _) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        let message = &review.response.status.as_ref().unwrap().message;
        assert!(
            message.contains("leaves room for 3 of the 4 executors it needs to start"),
            "{message}"
        );
        let policy =
            Policy::parse("quotas: [{name: gang, perApplication: {maxCpu: '7', minExecutors: 3}}]")
                .unwrap();
        let (review, _) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        assert!(review.response.allowed);
    }

    #[test]
    fn the_namespace_room_is_granted_and_recorded_or_refused_with_what_holds_it() {
        use crate::quota::gang::{Decided, ViewPod};
        let policy = Policy::parse("quotas: [{name: team, perNamespace: {maxCpu: '6'}}]").unwrap();
        let candidate = candidate(request(STATIC)).unwrap();
        let own = candidate.driver_uid().unwrap().to_owned();
        assert!(candidate.needs_namespace_view(&policy));
        let driver = |uid: &str, app: &str, created| ViewPod {
            uid: uid.to_owned(),
            app: Some(app.to_owned()),
            role: crate::policy::Role::Driver,
            charge: Charge {
                cpu: 1_000_000_000,
                memory: 0,
            },
            created,
        };
        // Its own driver (1) and an earlier application's (1), granted 1 executor of 2: 4 of 6
        // used, room for 1 executor of 2 CPUs.
        let view = NamespaceView {
            pods: vec![driver(&own, "own", 200), driver("earlier", "other", 100)],
            drivers: std::collections::HashMap::from([(
                "earlier".to_owned(),
                Decided::Granted(Granted {
                    executors: 1,
                    charge: Charge {
                        cpu: 2_000_000_000,
                        memory: 0,
                    },
                }),
            )]),
            ..NamespaceView::default()
        };
        let (review, answered) = answer(
            candidate.clone().with_namespace_view(view.clone()),
            &policy,
            &AppTotals::default(),
            None,
        );
        assert!(review.response.allowed);
        let granted = answered.granted.expect("granted");
        assert_eq!(granted.executors, 1);
        let patch = serde_json::to_value(review.response.decoded_patch().unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/metadata/annotations", "value": {
                RESERVATION_ANNOTATION: "executors=1 cpu=2000m memory=3006267392"
            }}]),
            "only the record: the configuration is unchanged"
        );
        // A third driver, earlier than this one and granted the same, takes the room.
        let mut view = view;
        view.pods.push(driver("earliest", "third", 50));
        view.drivers.insert(
            "earliest".to_owned(),
            Decided::Granted(Granted {
                executors: 1,
                charge: Charge {
                    cpu: 1_000_000_000,
                    memory: 0,
                },
            }),
        );
        let (review, _) = answer(
            candidate.with_namespace_view(view),
            &policy,
            &AppTotals::default(),
            None,
        );
        let message = &review.response.status.as_ref().unwrap().message;
        assert!(
            message.contains("quota team (maxCpu 6 per namespace) leaves room in namespace capture-cm for 0 of the 1 executors it needs to start (2 CPU and 2867Mi each), after the pods there and the executors held for 2 other applications"),
            "{message}"
        );
    }

    #[test]
    fn configmaps_that_are_not_a_drivers_configuration_are_allowed_unchanged() {
        // The executor ConfigMap the driver creates at start.
        let unchanged = candidate(request(EXECUTOR_CONF)).expect_err("not the driver's");
        let review = unchanged.review();
        assert!(review.response.allowed && review.response.patch.is_none());
        assert!(
            unchanged.reason.contains("spark-drv-"),
            "{}",
            unchanged.reason
        );

        let mut body: Value = serde_json::from_slice(STATIC).unwrap();
        body["request"]["object"]["metadata"]["ownerReferences"] = json!([]);
        let why = candidate(request(&serde_json::to_vec(&body).unwrap()))
            .unwrap_err()
            .reason;
        assert!(why.contains("not owned by a driver pod"), "{why}");

        let mut body: Value = serde_json::from_slice(STATIC).unwrap();
        body["request"]["object"]["data"]["spark.properties"] = json!("bad=\\u12");
        let unchanged = candidate(request(&serde_json::to_vec(&body).unwrap())).unwrap_err();
        assert!(unchanged.review().response.allowed);
        assert!(
            unchanged.reason.contains("cannot be read"),
            "{}",
            unchanged.reason
        );

        let mut body: Value = serde_json::from_slice(STATIC).unwrap();
        body["request"]["operation"] = json!("UPDATE");
        assert!(candidate(request(&serde_json::to_vec(&body).unwrap())).is_err());
    }

    #[test]
    fn the_patch_applies_to_the_configmap_as_the_apiserver_sent_it() {
        let policy =
            Policy::parse("quotas: [{name: three, perApplication: {maxExecutors: 3}}]").unwrap();
        let body: Value = serde_json::from_slice(STATIC).unwrap();
        let mut object = body["request"]["object"].clone();
        let (review, _) = answer(
            candidate(request(STATIC)).unwrap(),
            &policy,
            &driver_totals(),
            None,
        );
        json_patch::patch(&mut object, &review.response.decoded_patch().unwrap()).unwrap();
        let stored: ConfigMap = serde_json::from_value(object).unwrap();
        let properties = Properties::parse(&stored.data.unwrap()[PROPERTIES_KEY]).unwrap();
        assert_eq!(properties.get("spark.executor.instances"), Some("3"));
        assert!(
            stored
                .metadata
                .annotations
                .unwrap()
                .contains_key(LOWERED_ANNOTATION)
        );
    }

    const TEMPLATE_CONF: &[u8] = include_bytes!(
        "../../tests/fixtures/spark-4.3/cluster-mode/template/configmap-review.json"
    );
    const TEMPLATE_MAP: &[u8] = include_bytes!(
        "../../tests/fixtures/spark-4.3/cluster-mode/template/podspec-configmap-review.json"
    );

    fn captured_template() -> Pod {
        let review: Value = serde_json::from_slice(TEMPLATE_MAP).unwrap();
        let text = review["request"]["object"]["data"][crate::templates::TEMPLATE_KEY]
            .as_str()
            .unwrap();
        parse_executor_template(text).unwrap()
    }

    #[test]
    fn a_templates_sidecar_counts_in_every_executor_of_the_fitted_count() {
        // The captured submission: executors of 1 core (Spark's default) plus the template's
        // 500m sidecar; a 1-CPU driver; Spark's default of 2 executors. 3.5 CPUs leave 2.5
        // after the driver: 2 executors of the Spark container alone (nothing to lower), 1
        // with the sidecar.
        let policy =
            Policy::parse("quotas: [{name: cpu, perApplication: {maxCpu: '3.5'}}]").unwrap();
        let candidate = candidate(request(TEMPLATE_CONF)).unwrap();
        assert_eq!(
            candidate.executor_template_owner(),
            Some((
                "meas-47c102a24de53cc0-driver",
                "d15bc700-faae-405c-a59a-a645285d2a4f"
            ))
        );
        let (alone, answered) = answer(candidate.clone(), &policy, &driver_totals(), None);
        assert_eq!(answered.fitted.fit.map(|f| f.executors), Some(2));
        assert!(alone.response.patch.is_none());
        let (review, answered) = answer(
            candidate.with_executor_template(captured_template()),
            &policy,
            &driver_totals(),
            None,
        );
        assert_eq!(answered.fitted.fit.map(|f| f.executors), Some(1));
        let (text, annotation) = patched_properties(&review);
        assert!(text.ends_with("\nspark.executor.instances=1\n"), "{text}");
        assert_eq!(
            annotation,
            "spark.executor.instances=1 (was unset) to fit quota cpu (maxCpu 3.5 with 1 CPU in use, 1.5 CPU per executor)"
        );
    }

    #[test]
    fn an_unread_template_is_said_and_sizing_goes_on_without_it() {
        let policy =
            Policy::parse("quotas: [{name: cpu, perApplication: {maxExecutors: 1}}]").unwrap();
        let candidate = candidate(request(TEMPLATE_CONF))
            .unwrap()
            .without_executor_template("timed out".to_owned());
        let (review, answered) = answer(candidate, &policy, &driver_totals(), None);
        assert!(
            review.response.warnings[0]
                .contains("could not read the executor pod template (timed out)")
        );
        assert_eq!(answered.fitted.fit.map(|f| f.executors), Some(1));
    }

    #[test]
    fn a_template_that_is_not_a_pod_or_too_large_is_refused_with_the_reason() {
        assert!(
            parse_executor_template("spec: [1, 2")
                .unwrap_err()
                .contains("not a pod")
        );
        let huge = format!("metadata: {{name: {}}}", "x".repeat(MAX_TEMPLATE_BYTES));
        assert!(parse_executor_template(&huge).unwrap_err().contains("over"));
    }

    /// Reviews deciding at once on one namespace, as replicas do: each reads the pods and the
    /// reservations, then (the worst interleaving) none writes before all have read. The
    /// reservations are written with compare-and-swap as the apiserver does it.
    struct ConcurrentNamespace {
        pods: Vec<crate::quota::gang::ViewPod>,
        stored: std::sync::Mutex<(u64, Reservations)>,
        all_read: tokio::sync::Barrier,
        conflicts: std::sync::atomic::AtomicUsize,
        /// Every write finds another written first (a namespace under constant contention).
        always_conflict: bool,
    }

    impl ClusterReads for ConcurrentNamespace {
        fn application<'a>(
            &'a self,
            _namespace: &'a str,
            _app: &'a str,
        ) -> BoxFuture<'a, (AppTotals, Option<String>)> {
            Box::pin(async { (driver_totals(), None) })
        }

        fn executor_template<'a>(
            &'a self,
            _namespace: &'a str,
            _driver: &'a str,
            _uid: &'a str,
        ) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async { Err("none".to_owned()) })
        }

        fn namespace<'a>(
            &'a self,
            _namespace: &'a str,
            _own: &'a str,
        ) -> BoxFuture<'a, Result<NamespaceView, String>> {
            Box::pin(async move {
                let reservations = self.stored.lock().unwrap().1.clone();
                self.all_read.wait().await;
                Ok(NamespaceView {
                    pods: self.pods.clone(),
                    // No ConfigMap stored yet: every other submission is being decided.
                    drivers: self
                        .pods
                        .iter()
                        .map(|p| (p.uid.clone(), crate::quota::gang::Decided::Pending))
                        .collect(),
                    reservations,
                    read_at: 100,
                })
            })
        }

        fn reserve<'a>(
            &'a self,
            _namespace: &'a str,
            _view: &'a NamespaceView,
            write: &'a Reservations,
        ) -> BoxFuture<'a, Reserved> {
            Box::pin(async move {
                let mut stored = self.stored.lock().unwrap();
                if self.always_conflict || write.version != stored.1.version {
                    self.conflicts
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return Reserved::Conflict(stored.1.clone());
                }
                stored.0 += 1;
                stored.1 = Reservations {
                    version: Some(stored.0.to_string()),
                    held: write.held.clone(),
                };
                Reserved::Held
            })
        }
    }

    #[tokio::test]
    async fn of_four_submissions_decided_at_once_on_room_for_two_exactly_two_are_admitted() {
        // Each application: a 1-CPU driver and 1 executor of 2 CPUs (the fixture's). 6 CPUs
        // hold 2 of them.
        let policy = Policy::parse("quotas: [{name: team, perNamespace: {maxCpu: '6'}}]").unwrap();
        let text = std::str::from_utf8(STATIC).unwrap();
        let drivers: Vec<String> = (0..4).map(|i| format!("driver-{i}")).collect();
        let namespace = ConcurrentNamespace {
            pods: drivers
                .iter()
                .map(|uid| crate::quota::gang::ViewPod {
                    uid: uid.clone(),
                    app: Some(format!("app-{uid}")),
                    role: crate::policy::Role::Driver,
                    charge: driver_totals().charge,
                    created: 100,
                })
                .collect(),
            stored: std::sync::Mutex::new((0, Reservations::default())),
            all_read: tokio::sync::Barrier::new(4),
            conflicts: std::sync::atomic::AtomicUsize::new(0),
            always_conflict: false,
        };
        let reviews = drivers.iter().map(|uid| {
            let body = text
                .replace("9e385e5d-9542-45fa-8eb5-91bdb67020b6", uid)
                .replace(
                    "spark-b80cad1763024b8b848f4455477ea33a",
                    &format!("app-{uid}"),
                );
            let policy = &policy;
            let namespace = &namespace;
            async move {
                review(request(body.as_bytes()), policy, namespace)
                    .await
                    .into_review()
            }
        });
        let answers = futures::future::join_all(reviews).await;
        let admitted: Vec<&ResponseReview> =
            answers.iter().filter(|r| r.response.allowed).collect();
        assert_eq!(admitted.len(), 2, "{answers:#?}");
        for refused in answers.iter().filter(|r| !r.response.allowed) {
            let message = &refused.response.status.as_ref().unwrap().message;
            assert!(
                message.contains("leaves room in namespace capture-cm for 0 of the 1 executors it needs to start (2 CPU and 2867Mi each), after the pods there and the executors held for 2 other applications"),
                "{message}"
            );
        }
        // The 2 admitted hold their room, at the version each write made.
        let stored = namespace.stored.lock().unwrap();
        assert_eq!(stored.0, 2);
        assert_eq!(stored.1.held.len(), 2);
        for held in stored.1.held.values() {
            assert_eq!((held.executors, held.executor_milli_cpu), (1, 2000));
            assert_eq!(held.driver_milli_cpu, 1000);
        }
        // All 4 decided on the same version: 3 writes failed, and the first retry of the
        // other 2 did too.
        assert!(
            namespace
                .conflicts
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 3,
            "{:?}",
            namespace.conflicts
        );
    }

    #[tokio::test]
    async fn a_submission_whose_every_write_conflicts_is_refused_after_the_most_attempts() {
        let policy = Policy::parse("quotas: [{name: team, perNamespace: {maxCpu: '6'}}]").unwrap();
        let candidate = candidate(request(STATIC)).unwrap();
        let own = candidate.driver_uid().unwrap().to_owned();
        let namespace = ConcurrentNamespace {
            pods: vec![crate::quota::gang::ViewPod {
                uid: own,
                app: Some("spark-b80cad1763024b8b848f4455477ea33a".into()),
                role: crate::policy::Role::Driver,
                charge: driver_totals().charge,
                created: 100,
            }],
            stored: std::sync::Mutex::new((0, Reservations::default())),
            all_read: tokio::sync::Barrier::new(1),
            conflicts: std::sync::atomic::AtomicUsize::new(0),
            always_conflict: true,
        };
        let answer = review(request(STATIC), &policy, &namespace)
            .await
            .into_review();
        assert!(!answer.response.allowed);
        let message = &answer.response.status.as_ref().unwrap().message;
        assert!(
            message.contains(": 8 other submissions reserved room in namespace capture-cm while it was decided; lower spark.executor.cores"),
            "{message}"
        );
        assert_eq!(
            namespace
                .conflicts
                .load(std::sync::atomic::Ordering::SeqCst),
            MAX_RESERVE_ATTEMPTS
        );
        assert_eq!(namespace.stored.lock().unwrap().0, 0, "nothing was held");
    }

    #[tokio::test]
    async fn the_room_is_reserved_for_the_application_its_driver_pod_is_labelled_with() {
        let policy = Policy::parse("quotas: [{name: team, perNamespace: {maxCpu: '6'}}]").unwrap();
        let own = candidate(request(STATIC))
            .unwrap()
            .driver_uid()
            .unwrap()
            .to_owned();
        let namespace = |app: Option<&str>| ConcurrentNamespace {
            pods: vec![crate::quota::gang::ViewPod {
                uid: own.clone(),
                app: app.map(str::to_owned),
                role: crate::policy::Role::Driver,
                charge: driver_totals().charge,
                created: 100,
            }],
            stored: std::sync::Mutex::new((0, Reservations::default())),
            all_read: tokio::sync::Barrier::new(1),
            conflicts: std::sync::atomic::AtomicUsize::new(0),
            always_conflict: false,
        };
        // The configuration's spark.app.id is as long as a tenant likes; what is held is the
        // label the apiserver stored on the driver pod.
        let long_id = format!("spark-{}", "x".repeat(100_000));
        let text = std::str::from_utf8(STATIC)
            .unwrap()
            .replace("spark-b80cad1763024b8b848f4455477ea33a", &long_id);
        let labelled = namespace(Some("spark-b80cad1763024b8b848f4455477ea33a"));
        let answer = review(request(text.as_bytes()), &policy, &labelled)
            .await
            .into_review();
        assert!(answer.response.allowed);
        let stored = labelled.stored.lock().unwrap().1.clone();
        assert_eq!(
            stored.held[&own].app,
            "spark-b80cad1763024b8b848f4455477ea33a"
        );
        // A driver pod without the label: admitted unreserved, saying why.
        let unlabelled = namespace(None);
        let Reviewed::Applied(applied) = review(request(STATIC), &policy, &unlabelled).await else {
            panic!("applied");
        };
        assert!(applied.review.response.allowed);
        assert_eq!(unlabelled.stored.lock().unwrap().0, 0, "nothing was held");
        assert!(
            applied
                .namespace_unread
                .as_deref()
                .is_some_and(|why| why.ends_with("has no spark-app-selector label")),
            "{:?}",
            applied.namespace_unread
        );
    }
}
