//! The policy engine: a pure function from (pod, request context, policy) to the desired pod,
//! the rules applied, warnings and an optional denial.
//!
//! The engine does no I/O, takes no locks and never calls the Kubernetes API, so it is the same
//! code in the server, in `spark-admission mutate` and in tests, and it is fast.
//!
//! Its cost grows linearly with the size of every part of the pod (for a given policy): no
//! list the pod brings is ever searched once per entry of another list it brings, since a pod
//! of 3 MiB can hold tens of thousands of entries in one (`tests/cost_linear.rs` holds it to
//! that).
//!
//! How rules combine: the matching rules are found first, against the pod as it arrived. Then,
//! field by field (a label key, an env var of a container, a resource of a container), the last
//! matching rule that sets the field decides its value and its mode (decided in `precedence`, once
//! for every concern). `merge` keeps a value the pod arrived with; `enforce` replaces it.
//! Deciding per field, rather than replaying rules one after another, is what makes the result
//! idempotent: the desired pod of a desired pod is itself.
//!
//! SPEC §4a's fields (volumes, mounts, init containers and sidecars, security contexts,
//! envFrom, placement terms, pod-wide values) are decided the same way, per key (a volume's
//! name, a mount's path in a container, a container's name, a host alias's ip, a security
//! context's field), and skipped at no cost when no matching rule sets any of them. What the
//! policy adds is written as the apiserver stores it (`defaults`), and a conflict the policy
//! cannot resolve is left as the pod has it, with a warning: the desired pod is always one the
//! apiserver accepts. The containers the policy adds are part of the pod the container concerns
//! (env, resources, mounts, envFrom, container security) then work on, so a second pass finds
//! them already served.

mod containers;
mod dedup;
mod defaults;
mod env;
mod env_from;
mod matching;
mod metadata;
mod placement;
mod podspec;
mod precedence;
mod resources;
mod scheduling;
mod security;
mod spark;
mod volumes;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::policy::{Policy, Role, Rule};

pub use matching::matches;
pub use spark::{
    APP_ID_LABEL, AmbiguousContainer, ROLE_LABEL, SparkPod, app_name_of, spark_container,
    spark_container_index,
};

/// Annotation listing the rules that matched, comma separated, in policy order.
pub const APPLIED_RULES_ANNOTATION: &str = "spark-admission.io/applied-rules";
/// Annotation carrying the hash of the policy that mutated the pod.
pub const POLICY_HASH_ANNOTATION: &str = "spark-admission.io/policy-hash";

/// What the engine knows about the request besides the pod.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// `request.namespace` (the pod's own `metadata.namespace` is usually unset on CREATE).
    pub namespace: String,
    /// What the cluster's own admission plugins act on before the webhook sees the pod; shared
    /// with the server's state, so a request copies nothing of it.
    pub cluster: Arc<ClusterFacts>,
}

/// Facts about the cluster that decide how a pod arrived, gathered outside the engine (the
/// server watches them; `mutate` and suites are told them) and passed in, since the engine does
/// no I/O. The default is "nothing known", which is how the engine behaved before it had any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The PriorityClass with `globalDefault: true`, when there is one and it is known. The
    /// apiserver's Priority plugin writes it into every pod that names no class before webhooks
    /// run, so under `merge` a pod with this class counts as having none (like the
    /// `default-scheduler`). `None`: no global default, or not known.
    pub global_default_priority_class: Option<String>,
    /// The apiserver's version (`/version`), when known: from 1.29 sidecars are native (init
    /// containers with `restartPolicy: Always`). `None`: not known, and sidecars are appended to
    /// `spec.containers`, which every version accepts.
    pub kubernetes_version: Option<KubernetesVersion>,
}

/// A Kubernetes minor version, as `/version` reports it (`major`, `minor`; a `minor` such as
/// `"29+"` reads as 29).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubernetesVersion {
    /// `major`, 1 today.
    pub major: u32,
    /// `minor`.
    pub minor: u32,
}

impl KubernetesVersion {
    /// The first version with native sidecars (`SidecarContainers` on by default).
    pub const NATIVE_SIDECARS: Self = Self {
        major: 1,
        minor: 29,
    };

    /// Reads `1.29`, `v1.29.3` or `1.29+`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches('v');
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let digits: &str = &minor_text[..minor_text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(minor_text.len())];
        let minor = digits.parse().ok()?;
        Some(Self { major, minor })
    }

    /// Whether sidecars are native on this version.
    pub fn has_native_sidecars(self) -> bool {
        self >= Self::NATIVE_SIDECARS
    }
}

impl std::fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The result of evaluating a Spark pod.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The pod's Spark role.
    pub role: Role,
    /// The pod with the policy applied.
    pub desired: Pod,
    /// Names of the rules that matched, in policy order.
    pub applied_rules: Vec<String>,
    /// Everything the policy could not apply, and every clamp, in words a user can act on.
    pub warnings: Vec<String>,
    /// Set when the pod must be rejected; says which container, resource, value and limit.
    pub denial: Option<String>,
    /// The facts rules matched on (the pod as it arrived); quotas match on them too.
    pub spark: SparkPod,
}

/// Applies `policy` to `pod`. Returns `None` for a pod that is not a Spark pod (no `spark-role`
/// label of `driver` or `executor`): such a pod is admitted unchanged.
pub fn evaluate(pod: &Pod, context: &RequestContext, policy: &Policy) -> Option<Evaluation> {
    let spark = SparkPod::from_pod(pod, &context.namespace)?;
    let rules = matching_rules(policy, &spark);
    let (evaluation, _) = apply(pod, pod.clone(), spark, &rules, context, policy);
    Some(evaluation)
}

/// The pod as it arrived, as much of it as the patch needs beside the desired pod (see
/// [`evaluate_owned`]).
pub enum Original {
    /// The whole pod: a matching rule customises the pod (SPEC §4a), so any part of it may have
    /// changed.
    Whole(Pod),
    /// Only what the policy may have changed: `changeable_fields` of the pod as it arrived,
    /// and the env edits, which say what they replaced.
    Fields(Changed),
}

/// What [`Original::Fields`] holds.
pub struct Changed {
    /// `changeable_fields` of the pod as it arrived.
    pub(crate) before: Pod,
    /// Each container whose env the policy changed, with what it replaced.
    pub(crate) env: Vec<env::EnvEdit>,
}

/// [`evaluate`] of a pod the caller gives up, for the server: the desired pod is the pod
/// itself, edited, and the original comes back only as far as the patch needs it. Without a
/// matching rule that customises the pod, the policy changes few fields (labels, annotations,
/// scheduling, env and resources); copying only those, rather than the whole pod (the Spark
/// container's dozens of env vars above all), and never comparing or dropping a second whole
/// pod, is most of what a review costs beyond parsing it.
pub fn evaluate_owned(
    pod: Pod,
    context: &RequestContext,
    policy: &Policy,
) -> Option<(Evaluation, Original)> {
    let spark = SparkPod::from_pod(&pod, &context.namespace)?;
    let rules = matching_rules(policy, &spark);
    if rules.iter().all(|rule| rule.pod.is_empty()) {
        let before = changeable_fields(&pod);
        let (evaluation, env) = apply(&before, pod, spark, &rules, context, policy);
        Some((evaluation, Original::Fields(Changed { before, env })))
    } else {
        let (evaluation, _) = apply(&pod, pod.clone(), spark, &rules, context, policy);
        Some((evaluation, Original::Whole(pod)))
    }
}

fn matching_rules<'p>(policy: &'p Policy, spark: &SparkPod) -> Vec<&'p Rule> {
    policy
        .rules
        .iter()
        .filter(|rule| matching::matches(&rule.selector, spark))
        .collect()
}

/// The fields of `pod` the policy may change when no matching rule customises the pod:
/// labels, annotations, the scheduling fields, the pod-level resources, and each container's
/// and init container's resources, with its name (rules select containers by it). Every other
/// field is left empty. This is all the concerns read of the pod as it arrived on that path
/// (env reads the desired pod's own env before changing it), so they can read it in place of
/// the whole pod. [`take_changeable_fields`] takes the same fields out of the desired pod.
fn changeable_fields(pod: &Pod) -> Pod {
    let container = |c: &Container| Container {
        name: c.name.clone(),
        resources: c.resources.clone(),
        ..Container::default()
    };
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            labels: pod.metadata.labels.clone(),
            annotations: pod.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: pod.spec.as_ref().map(|spec| PodSpec {
            containers: spec.containers.iter().map(container).collect(),
            init_containers: spec
                .init_containers
                .as_ref()
                .map(|inits| inits.iter().map(container).collect()),
            node_selector: spec.node_selector.clone(),
            affinity: spec.affinity.clone(),
            tolerations: spec.tolerations.clone(),
            priority_class_name: spec.priority_class_name.clone(),
            priority: spec.priority,
            preemption_policy: spec.preemption_policy.clone(),
            scheduler_name: spec.scheduler_name.clone(),
            resources: spec.resources.clone(),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The fields [`changeable_fields`] copies, moved out of `pod` (the desired pod, once nothing
/// else reads it), for the patch to compare with those of the pod as it arrived.
pub(crate) fn take_changeable_fields(pod: &mut Pod) -> Pod {
    let container = |c: &mut Container| Container {
        name: std::mem::take(&mut c.name),
        resources: c.resources.take(),
        ..Container::default()
    };
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            labels: pod.metadata.labels.take(),
            annotations: pod.metadata.annotations.take(),
            ..Default::default()
        },
        spec: pod.spec.as_mut().map(|spec| PodSpec {
            containers: spec.containers.iter_mut().map(container).collect(),
            init_containers: spec
                .init_containers
                .as_mut()
                .map(|inits| inits.iter_mut().map(container).collect()),
            node_selector: spec.node_selector.take(),
            affinity: spec.affinity.take(),
            tolerations: spec.tolerations.take(),
            priority_class_name: spec.priority_class_name.take(),
            priority: spec.priority.take(),
            preemption_policy: spec.preemption_policy.take(),
            scheduler_name: spec.scheduler_name.take(),
            resources: spec.resources.take(),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The concerns, in order, reading `pod` as it arrived and editing `desired`; also returns
/// the env edits.
fn apply(
    pod: &Pod,
    mut desired: Pod,
    spark: SparkPod,
    rules: &[&Rule],
    context: &RequestContext,
    policy: &Policy,
) -> (Evaluation, Vec<env::EnvEdit>) {
    let mut warnings = Vec::new();
    metadata::apply(
        pod,
        &mut desired,
        &spark,
        rules,
        &policy.hash,
        &mut warnings,
    );
    scheduling::apply(pod, &mut desired, rules, &context.cluster, &mut warnings);
    // What the containers' concerns read as "what the pod has": the pod as it arrived, or, once
    // the policy has added containers, the pod with them, so that `containers: all` reaches the
    // sidecars the policy adds in the first pass exactly as in a second one (idempotence).
    let (base, native) = if rules.iter().all(|rule| rule.pod.is_empty()) {
        (Cow::Borrowed(pod), HashSet::new())
    } else {
        customize(
            pod,
            &mut desired,
            &spark,
            rules,
            &context.cluster,
            &mut warnings,
        )
    };
    let env_edits = env::apply(&base, &mut desired, &spark, rules, &native, &mut warnings);
    let mut denial = resources::apply(&base, &mut desired, &spark, rules, &native, &mut warnings);
    if let Some(ambiguous) = &spark.ambiguous_container {
        denial = Some(match denial {
            Some(other) => format!("{ambiguous}; {other}"),
            None => ambiguous.clone(),
        });
    }

    let evaluation = Evaluation {
        role: spark.role,
        desired,
        applied_rules: rules.iter().map(|r| r.name.clone()).collect(),
        warnings,
        denial,
        spark,
    };
    (evaluation, env_edits)
}

/// SPEC §4a's fields, for a pod some matching rule sets one of them on. Pod-wide fields first,
/// then volumes (mounts and injected containers name them), then the containers the policy
/// adds, then what goes into the selected containers. Returns the pod the container concerns
/// read as the pod's own (see [`evaluate`]), and the names of the native sidecars the policy
/// added.
fn customize<'p>(
    pod: &'p Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    cluster: &ClusterFacts,
    warnings: &mut Vec<String>,
) -> (Cow<'p, Pod>, HashSet<String>) {
    podspec::apply(pod, desired, rules, warnings);
    security::apply_pod(pod, desired, rules, warnings);
    placement::apply(pod, desired, spark, rules, warnings);
    let kept_volumes = volumes::apply_volumes(pod, desired, rules, warnings);
    let sidecars = containers::apply(pod, desired, spark, rules, cluster, &kept_volumes, warnings);
    let base = if sidecars.changed {
        // One copy of the pod, made only when a container was added or replaced.
        Cow::Owned(desired.clone())
    } else {
        Cow::Borrowed(pod)
    };
    volumes::apply_mounts(
        &base,
        desired,
        spark,
        rules,
        &sidecars.native,
        &kept_volumes,
        warnings,
    );
    env_from::apply(&base, desired, spark, rules, &sidecars.native);
    security::apply_containers(&base, desired, spark, rules, &sidecars.native, warnings);
    (base, sidecars.native)
}

/// A container of the pod: one of `spec.containers`, or one of `spec.initContainers` (a native
/// sidecar the policy adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Slot {
    Main(usize),
    Init(usize),
}

impl Slot {
    pub(crate) fn of(self, spec: &PodSpec) -> Option<&Container> {
        match self {
            Slot::Main(i) => spec.containers.get(i),
            Slot::Init(i) => spec.init_containers.as_ref()?.get(i),
        }
    }

    /// The container in the two lists, borrowed apart from the rest of the spec.
    pub(crate) fn of_mut<'a>(
        self,
        containers: &'a mut [Container],
        init_containers: &'a mut Option<Vec<Container>>,
    ) -> Option<&'a mut Container> {
        match self {
            Slot::Main(i) => containers.get_mut(i),
            Slot::Init(i) => init_containers.as_mut()?.get_mut(i),
        }
    }
}

/// The containers a rule's `containers:` selects for `env` and SPEC §4a's container fields
/// (`volumeMounts`, `envFrom`, `containerSecurityContext`): those of [`selected_containers`],
/// and the native sidecars the matching rules add (`native`, by name) when `all` or the names
/// select them, so a sidecar gets the same whether the cluster runs it as a native sidecar or
/// as a container. Init containers that run to completion are never selected.
fn selected_slots(rule: &Rule, pod: &Pod, spark: &SparkPod, native: &HashSet<String>) -> Vec<Slot> {
    let mut slots: Vec<Slot> = selected_containers(rule, pod, spark)
        .map(Slot::Main)
        .collect();
    if native.is_empty() || rule.containers == crate::policy::ContainerSelection::Spark {
        return slots;
    }
    let inits = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    for (index, init) in inits.iter().enumerate() {
        let chosen = match &rule.containers {
            crate::policy::ContainerSelection::Named(names) => names.contains(&init.name),
            _ => true,
        };
        if chosen && init.restart_policy.as_deref() == Some("Always") && native.contains(&init.name)
        {
            slots.push(Slot::Init(index));
        }
    }
    slots
}

/// The warning for a value the pod keeps under `merge`, worded as every concern words it.
fn kept_warning(what: &str, pod_value: &str, policy_value: &str, rule: &Rule) -> String {
    format!(
        "{what}: kept the pod's {pod_value}, not {policy_value} from rule {} (mode merge)",
        rule.name
    )
}

/// The rule and its mode, as a warning about what the policy did not apply names them.
fn by(rule: &Rule) -> String {
    let mode = match rule.mode {
        crate::policy::Mode::Merge => "merge",
        crate::policy::Mode::Enforce => "enforce",
    };
    format!("rule {}, mode {mode}", rule.name)
}

/// A Kubernetes object as a warning shows it: its JSON, cut after 200 characters (a pod's own
/// object can be large).
fn quoted_json<T: serde::Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    match text.char_indices().nth(200) {
        None => text,
        Some((cut, _)) => format!("{}... ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// The container indices a rule's `containers:` selects in this pod.
fn selected_containers(
    rule: &Rule,
    pod: &Pod,
    spark: &SparkPod,
) -> impl Iterator<Item = usize> + use<> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let indices: Vec<usize> = match &rule.containers {
        crate::policy::ContainerSelection::Spark => spark.container.into_iter().collect(),
        crate::policy::ContainerSelection::All => (0..containers.len()).collect(),
        crate::policy::ContainerSelection::Named(names) => containers
            .iter()
            .enumerate()
            .filter(|(_, c)| names.contains(&c.name))
            .map(|(i, _)| i)
            .collect(),
    };
    indices.into_iter()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod customization_tests;
