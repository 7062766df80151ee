//! The policy: its model, parsing from YAML or JSON, and validation.
//!
//! A policy is parsed in two steps. The text becomes a plain document (syntax errors carry a line
//! and column), then the document is checked field by field and turned into the typed model.
//! The second step never stops at the first mistake: every problem is collected with its path
//! (`rules[1].tolerations[0].operator`), what was found and what is allowed, so that a platform
//! team fixes a policy in one round. A [`Policy`] that exists is valid; the engine relies on it.

mod glob;
mod labels;
mod location;
mod parse;
mod quantity;
mod spark_conf;
mod template;

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, HostAlias, LocalObjectReference, NodeAffinity, PodAffinity,
    PodAntiAffinity, PodDNSConfig, PodSecurityContext, SecurityContext, Toleration,
    TopologySpreadConstraint, Volume, VolumeMount,
};

pub use glob::Glob;
pub use labels::{
    check_dns_label, check_dns_subdomain, check_label_value, check_qualified_name,
    sanitize_label_value,
};
pub use location::{
    ConfigMapRef, DEFAULT_POLICY_KEY, DEFAULT_POLICY_NAME, DEFAULT_POLICY_NAMESPACE,
};
pub use quantity::{Quantity, QuantityError};
pub use spark_conf::{
    CAPPABLE, Reading, Setting, SizeUnit, SparkConfRule, SparkMax, Unset, cappable, java_trim,
    not_settable, read_size,
};
pub use template::{Template, Variable};

pub(crate) use parse::unknown_keys;

/// Errors from loading a policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not YAML (or JSON) at all.
    #[error("policy is not valid YAML: {message} (line {line}, column {column})")]
    Syntax {
        /// What the parser found wrong.
        message: String,
        /// 1-based line of the problem.
        line: u64,
        /// 1-based column of the problem.
        column: u64,
    },
    /// The text is over one of the reading limits ([`MAX_POLICY_BYTES`] and the YAML budget
    /// of [`policy_yaml_options`]); nothing of it is used.
    #[error("policy cannot be read: {0}")]
    TooLarge(String),
    /// The document parsed but breaks the policy's rules; every problem is listed.
    #[error("{0}")]
    Invalid(Problems),
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One thing wrong with a policy: where, and what is wrong and allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the offending field, such as `rules[1].tolerations[0].operator`.
    pub path: String,
    /// What was found and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one policy, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

/// How many problems a message lists; the rest are counted. A policy with thousands of
/// mistakes must still give a message kubectl, an Event and a log line can carry.
pub const MAX_LISTED_PROBLEMS: usize = 50;

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "policy has {count} error{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in self.0.iter().take(MAX_LISTED_PROBLEMS) {
            write!(f, "\n  - {problem}")?;
        }
        if count > MAX_LISTED_PROBLEMS {
            write!(
                f,
                "\n  ... and {} more (the first {MAX_LISTED_PROBLEMS} are listed)",
                count - MAX_LISTED_PROBLEMS
            )?;
        }
        Ok(())
    }
}

impl Error {
    /// The individual problems (one for a syntax error).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Error::Syntax { .. } | Error::TooLarge(_) => vec![Problem {
                path: String::new(),
                message: self.to_string(),
            }],
            Error::Invalid(problems) => problems.0.clone(),
        }
    }
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Rules, in the order they are applied.
    pub rules: Vec<Rule>,
    /// Quotas, checked on CREATE against live cluster state.
    pub quotas: Vec<Quota>,
    /// A short stable hash of the policy text, written on every pod.
    pub hash: String,
}

impl Policy {
    /// Whether a rule sets or caps Spark configurations (SPEC §5b).
    pub fn has_spark_conf_rules(&self) -> bool {
        self.rules.iter().any(|rule| rule.spark_conf.is_some())
    }
}

/// Whether a pod's own values or the policy's win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Values already on the pod win.
    #[default]
    Merge,
    /// The policy's values replace the pod's.
    Enforce,
}

/// The two kinds of Spark pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The driver pod.
    Driver,
    /// An executor pod.
    Executor,
}

impl Role {
    /// Parses the `spark-role` label value.
    pub fn from_label(value: &str) -> Option<Self> {
        match value {
            "driver" => Some(Self::Driver),
            "executor" => Some(Self::Executor),
            _ => None,
        }
    }

    /// The label value, `driver` or `executor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Executor => "executor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which pods a rule or quota applies to. Every non-empty condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Namespace globs.
    pub namespaces: Vec<Glob>,
    /// Roles; empty means both.
    pub roles: Vec<Role>,
    /// Application name globs.
    pub app_names: Vec<Glob>,
    /// Labels the pod must carry, exactly.
    pub pod_labels: BTreeMap<String, String>,
    /// Service account globs.
    pub service_accounts: Vec<Glob>,
}

/// Which containers a rule's `env` and `resources` apply to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ContainerSelection {
    /// The Spark container only: the one container claiming it by name or by `args[0]`, else
    /// the first (see [`crate::engine::spark_container`]).
    #[default]
    Spark,
    /// Every container, sidecars included (not init containers).
    All,
    /// The containers with these names.
    Named(Vec<String>),
}

/// What happens when a container asks for more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExceed {
    /// Reject the pod.
    #[default]
    Deny,
    /// Lower CPU to the max and warn; other resources are still denied.
    Clamp,
}

/// Requests and limits, resource name to quantity.
#[derive(Debug, Clone, Default)]
pub struct ResourceAmounts {
    /// `requests`.
    pub requests: BTreeMap<String, Quantity>,
    /// `limits`.
    pub limits: BTreeMap<String, Quantity>,
}

/// Resource defaults and caps for one role.
#[derive(Debug, Clone, Default)]
pub struct ResourcePolicy {
    /// Filled in where the container has no value.
    pub default: ResourceAmounts,
    /// Per container, for both requests and limits.
    pub max: BTreeMap<String, Quantity>,
    /// What happens over the max.
    pub on_exceed: OnExceed,
}

/// A rule: which pods, and what to apply to them.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    /// Unique name, written into `spark-admission.io/applied-rules`.
    pub name: String,
    /// Which pods it applies to.
    pub selector: Selector,
    /// Whether pod values or policy values win.
    pub mode: Mode,
    /// Labels; values are templates.
    pub labels: BTreeMap<String, Template>,
    /// Annotations; values are templates.
    pub annotations: BTreeMap<String, Template>,
    /// `spec.nodeSelector` entries.
    pub node_selector: BTreeMap<String, String>,
    /// Node affinity to AND into the pod's.
    pub node_affinity: Option<NodeAffinity>,
    /// Tolerations to add.
    pub tolerations: Vec<Toleration>,
    /// Environment variables for the selected containers.
    pub env: Vec<EnvVar>,
    /// Which containers `env` and `resources` apply to.
    pub containers: ContainerSelection,
    /// Resource policy for drivers.
    pub driver_resources: Option<ResourcePolicy>,
    /// Resource policy for executors.
    pub executor_resources: Option<ResourcePolicy>,
    /// `spec.priorityClassName`.
    pub priority_class_name: Option<String>,
    /// `spec.schedulerName`.
    pub scheduler_name: Option<String>,
    /// The pod-customization fields of SPEC §4a.
    pub pod: PodCustomization,
    /// What it sets and caps in a cluster-mode application's Spark configuration (SPEC §5b).
    pub spark_conf: Option<SparkConfRule>,
}

/// What a rule sets on a pod beyond labels, placement, env and resources (SPEC §4a). Every
/// object is the Kubernetes type the apiserver stores, validated at load as the apiserver
/// validates it. Label selector values in `topology_spread_constraints`, `pod_affinity` and
/// `pod_anti_affinity` (`matchLabels` values and `matchExpressions` values) may hold §4
/// templates; they were checked to parse at load and are expanded (and sanitised like label
/// values) per pod by the engine.
#[derive(Debug, Clone, Default)]
pub struct PodCustomization {
    /// `spec.volumes`, keyed by name.
    pub volumes: Vec<Volume>,
    /// Mounts for the containers `containers:` selects, keyed by `mountPath`; each names a
    /// volume of `volumes` (checked at load).
    pub volume_mounts: Vec<VolumeMount>,
    /// `envFrom` of the selected containers; added unless an equal entry exists.
    pub env_from: Vec<EnvFromSource>,
    /// `spec.initContainers`, keyed by name, placed before the pod's own.
    pub init_containers: Vec<Container>,
    /// Sidecar containers, keyed by name: native sidecars (init containers with
    /// `restartPolicy: Always`) on 1.29 or later, else appended to `spec.containers`.
    pub sidecars: Vec<Container>,
    /// `spec.securityContext`, field by field.
    pub security_context: Option<PodSecurityContext>,
    /// `securityContext` of the selected containers, field by field.
    pub container_security_context: Option<SecurityContext>,
    /// `spec.imagePullSecrets`; added unless an equal entry exists.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// `spec.topologySpreadConstraints`; appended unless an equal one exists.
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// `spec.affinity.podAffinity`; terms appended unless an equal one exists.
    pub pod_affinity: Option<PodAffinity>,
    /// `spec.affinity.podAntiAffinity`; terms appended unless an equal one exists.
    pub pod_anti_affinity: Option<PodAntiAffinity>,
    /// `spec.terminationGracePeriodSeconds`.
    pub termination_grace_period_seconds: Option<i64>,
    /// `spec.automountServiceAccountToken`.
    pub automount_service_account_token: Option<bool>,
    /// `spec.runtimeClassName`.
    pub runtime_class_name: Option<String>,
    /// `spec.dnsConfig`, field by field.
    pub dns_config: Option<PodDNSConfig>,
    /// `spec.hostAliases`, keyed by `ip`.
    pub host_aliases: Vec<HostAlias>,
    /// Spark's scratch space: the pod's `emptyDir` volumes named `spark-local-dir-*`.
    pub local_dirs: Option<LocalDirs>,
}

impl PodCustomization {
    /// Whether the rule sets none of these fields (the engine skips them at no cost then).
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
            && self.volume_mounts.is_empty()
            && self.env_from.is_empty()
            && self.init_containers.is_empty()
            && self.sidecars.is_empty()
            && self.security_context.is_none()
            && self.container_security_context.is_none()
            && self.image_pull_secrets.is_empty()
            && self.topology_spread_constraints.is_empty()
            && self.pod_affinity.is_none()
            && self.pod_anti_affinity.is_none()
            && self.termination_grace_period_seconds.is_none()
            && self.automount_service_account_token.is_none()
            && self.runtime_class_name.is_none()
            && self.dns_config.is_none()
            && self.host_aliases.is_empty()
            && self.local_dirs.is_none()
    }
}

/// What a rule does to Spark's local dirs (`spark-local-dir-*` volumes that are `emptyDir`).
#[derive(Debug, Clone, PartialEq)]
pub enum LocalDirs {
    /// Keep the `emptyDir`, with this size limit and medium (`Memory`, or the node's disk when
    /// `None`).
    EmptyDir {
        /// `emptyDir.sizeLimit`.
        size_limit: Option<Quantity>,
        /// `emptyDir.medium`: `Memory` or unset.
        medium: Option<String>,
    },
    /// Replace the `emptyDir` by a generic ephemeral volume (a PVC made per pod).
    Ephemeral {
        /// The claim's `storageClassName`; the cluster's default class when `None`.
        storage_class_name: Option<String>,
        /// The claim's `resources.requests.storage`.
        size: Quantity,
    },
}

impl Rule {
    /// The resource policy for a role, if the rule has one.
    pub fn resources_for(&self, role: Role) -> Option<&ResourcePolicy> {
        match role {
            Role::Driver => self.driver_resources.as_ref(),
            Role::Executor => self.executor_resources.as_ref(),
        }
    }
}

/// Limits for one scope of a quota.
#[derive(Debug, Clone, Default)]
pub struct QuotaLimits {
    /// Most executor pods alive at once (per application only).
    pub max_executors: Option<u32>,
    /// Least executors a cluster-mode application is admitted with (per application only;
    /// SPEC §5b gang admission): its own minimum is raised to this.
    pub min_executors: Option<u32>,
    /// Most applications with live pods (per namespace only).
    pub max_applications: Option<u32>,
    /// Most CPU, summed over live pods.
    pub max_cpu: Option<Quantity>,
    /// Most memory, summed over live pods.
    pub max_memory: Option<Quantity>,
}

/// A quota on live Spark pods.
#[derive(Debug, Clone, Default)]
pub struct Quota {
    /// Unique name, quoted in denials.
    pub name: String,
    /// Which pods count (roles are not allowed here).
    pub selector: Selector,
    /// Limits per application (by `spark-app-selector`).
    pub per_application: Option<QuotaLimits>,
    /// Limits per namespace, over every live Spark pod in it.
    pub per_namespace: Option<QuotaLimits>,
}

impl Policy {
    /// Parses and validates a policy from YAML or JSON text.
    pub fn parse(text: &str) -> Result<Self> {
        parse::parse(text)
    }

    /// The example policy built into the binary, used when no policy is given.
    pub fn builtin_example() -> Self {
        // The example is checked by a test, so this cannot fail in a released binary; an empty
        // policy is still a safe fallback.
        Self::parse(BUILTIN_EXAMPLE).unwrap_or_else(|_| Self::empty())
    }

    /// A policy with no rules and no quotas: every Spark pod only gets the two annotations.
    pub fn empty() -> Self {
        Self {
            rules: Vec::new(),
            quotas: Vec::new(),
            hash: policy_hash(""),
        }
    }

    /// A one-line summary for logs and the CLI.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        let quotas: Vec<&str> = self.quotas.iter().map(|q| q.name.as_str()).collect();
        format!(
            "{} rule{} [{}], {} quota{} [{}], hash {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            quotas.len(),
            if quotas.len() == 1 { "" } else { "s" },
            quotas.join(", "),
            self.hash
        )
    }
}

/// The example policy text built into the binary (`examples/policies/platform.yaml`).
pub const BUILTIN_EXAMPLE: &str = include_str!("../../examples/policies/platform.yaml");

/// The largest policy read, in bytes: what one ConfigMap can hold (1 MiB, for all its keys).
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// Deepest nesting of YAML collections in a policy. The deepest path a valid policy has
/// (`rules[0].volumes[0].projected.sources[0].clusterTrustBundle.labelSelector
/// .matchExpressions[0].values`) is 11 levels deep; the deepest before SPEC §4a
/// (`rules[0].affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]
/// .preference.matchExpressions[0].values`) is 9.
pub const MAX_POLICY_DEPTH: usize = 32;

/// Most aliases (`*name`) in a policy, and most events they may replay in all: anchors are a
/// convenience for repeated blocks, never a way to make a small text expand into a huge one.
pub const MAX_POLICY_ALIASES: usize = 1_000;
/// Most parser events anchors may hold and aliases replay, in all (a policy's repeated blocks
/// are a few dozen events each).
pub const MAX_POLICY_ALIAS_EVENTS: usize = 10_000;
/// Most YAML nodes (mappings, sequences, scalars) in a policy, aliases expanded.
pub const MAX_POLICY_NODES: usize = 200_000;

/// The YAML options policies are read with: YAML 1.2 booleans, and an explicit budget so that
/// no text (alias bomb, deep nesting, a flood of nodes) costs more than a bounded amount of
/// time and memory before it is refused. [`MAX_POLICY_BYTES`] is checked before parsing.
pub fn policy_yaml_options() -> serde_saphyr::options::Options {
    let mut options = serde_saphyr::options::Options::default();
    options.strict_booleans = true;
    options.budget = serde_saphyr::budget! {
        max_depth: MAX_POLICY_DEPTH,
        flow_nesting_limit: MAX_POLICY_DEPTH,
        max_aliases: MAX_POLICY_ALIASES,
        max_anchors: MAX_POLICY_ALIASES,
        max_merge_keys: MAX_POLICY_ALIASES,
        max_nodes: MAX_POLICY_NODES,
        max_events: 2 * MAX_POLICY_NODES,
        max_recorded_anchor_events: MAX_POLICY_ALIAS_EVENTS,
        max_recorded_anchor_bytes: MAX_POLICY_BYTES,
        max_total_scalar_bytes: MAX_POLICY_BYTES,
        max_documents: 1,
    };
    options.alias_limits = serde_saphyr::alias_limits! {
        max_total_replayed_events: MAX_POLICY_ALIAS_EVENTS,
        max_replay_stack_depth: MAX_POLICY_DEPTH,
    };
    options
}

/// Reads YAML (or JSON) with YAML 1.2 booleans: only `true`/`false` are booleans, so `y`, `no`
/// or `on` stay the strings they look like. For documents other than policies (the pods and
/// reviews the CLI reads), with room for a large pod: 64 levels deep, 250,000 nodes, 1,000,000
/// events and 64 MiB of scalars (serde-saphyr's defaults, written out so that they are a
/// choice), and the policy's caps on aliases.
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    let mut options = policy_yaml_options();
    options.budget = serde_saphyr::budget! {
        max_depth: 64,
        max_aliases: MAX_POLICY_ALIASES,
        max_anchors: MAX_POLICY_ALIASES,
        max_merge_keys: MAX_POLICY_ALIASES,
        max_nodes: 250_000,
        max_events: 1_000_000,
        max_total_scalar_bytes: 64 << 20,
        max_documents: 1,
    };
    options.alias_limits = serde_saphyr::alias_limits! {
        max_total_replayed_events: 1_000_000,
        max_replay_stack_depth: 64,
    };
    serde_saphyr::from_str_with_options(text, options)
}

/// A short, stable hash of policy text: the first 12 hex digits of its SHA-256.
pub fn policy_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}
