//! What makes a pod a Spark pod, and the facts about it that rules match and templates use.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::policy::{Role, Variable};

/// The label that makes a pod a Spark pod: `driver` or `executor`.
pub const ROLE_LABEL: &str = "spark-role";
const APP_NAME_LABEL: &str = "spark-app-name";
const OPERATOR_APP_NAME_LABEL: &str = "sparkoperator.k8s.io/app-name";
/// The label carrying the application id (Spark and the Spark Operator always set it).
pub const APP_ID_LABEL: &str = "spark-app-selector";

/// The application name: label `spark-app-name`, else `sparkoperator.k8s.io/app-name`.
pub fn app_name_of(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels
        .get(APP_NAME_LABEL)
        .or_else(|| labels.get(OPERATOR_APP_NAME_LABEL))
        .map(String::as_str)
}

/// The facts about a Spark pod that the policy can see.
#[derive(Debug, Clone)]
pub struct SparkPod {
    /// `driver` or `executor`, from the `spark-role` label.
    pub role: Role,
    /// The request's namespace.
    pub namespace: String,
    /// `spark-app-name`, else `sparkoperator.k8s.io/app-name`.
    pub app_name: Option<String>,
    /// `spark-app-selector`.
    pub app_id: Option<String>,
    /// `spec.serviceAccountName`, else the deprecated `spec.serviceAccount`, else `default`
    /// (what Kubernetes runs a pod as when it names none).
    pub service_account: String,
    /// The pod's labels as it arrived.
    pub labels: BTreeMap<String, String>,
    /// Index of the Spark container in `spec.containers`.
    pub container: Option<usize>,
    /// Set when more than one container claims to be the Spark container: the pod is refused
    /// with this message (see [`spark_container`]).
    pub ambiguous_container: Option<String>,
}

impl SparkPod {
    /// Reads the facts; `None` when the pod is not a Spark driver or executor.
    pub fn from_pod(pod: &Pod, namespace: &str) -> Option<Self> {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let role = Role::from_label(labels.get(ROLE_LABEL)?)?;
        let spec = pod.spec.as_ref();
        let service_account = spec
            .and_then(|s| {
                s.service_account_name
                    .as_deref()
                    .or(s.service_account.as_deref())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_owned();
        let (container, ambiguous_container) = match spark_container(pod, role) {
            Ok(container) => (container, None),
            Err(claims) => (None, Some(claims.to_string())),
        };
        Some(Self {
            role,
            namespace: namespace.to_owned(),
            app_name: app_name_of(&labels).map(str::to_owned),
            app_id: labels.get(APP_ID_LABEL).cloned(),
            service_account,
            container,
            ambiguous_container,
            labels,
        })
    }

    /// A template variable's value for this pod; `None` when the pod has none.
    pub fn variable(&self, variable: Variable) -> Option<String> {
        match variable {
            Variable::Namespace => Some(self.namespace.clone()),
            Variable::AppName => self.app_name.clone(),
            Variable::AppId => self.app_id.clone(),
            Variable::Role => Some(self.role.as_str().to_owned()),
            Variable::ServiceAccount => Some(self.service_account.clone()),
        }
    }
}

/// More than one container claims to be the Spark container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousContainer {
    role: Role,
    /// Each claiming container's name and how it claims.
    claims: Vec<(String, &'static str)>,
}

impl std::fmt::Display for AmbiguousContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = self.role.as_str();
        let claims: Vec<String> = self
            .claims
            .iter()
            .map(|(name, how)| format!("{name:?} ({how})"))
            .collect();
        write!(
            f,
            "containers {} each claim to be the Spark {role} container; Spark builds its pods with one container named spark-kubernetes-{role} or started with args[0] = {role}; rename the other containers or change their args",
            claims.join(", ")
        )
    }
}

/// Finds the Spark container so that no other container can take its place.
///
/// A container claims to be the Spark container by its name (`spark-kubernetes-<role>`, what
/// Spark names it) or by `args[0]` being the role (Spark's entrypoint takes the role there, and
/// keeps it when a pod template renames the container). Exactly one claiming container is the
/// Spark container, wherever it stands (pod templates may put sidecars first). Claims on more
/// than one container are an error: a pod Spark built never has them, and picking either one
/// would let a decoy take the policy (its defaults, caps and env) while the real Spark
/// container escaped it. With no claim at all, the first container is the Spark container.
pub fn spark_container(pod: &Pod, role: Role) -> Result<Option<usize>, AmbiguousContainer> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    let by_name = format!("spark-kubernetes-{}", role.as_str());
    let claim = |container: &k8s_openapi::api::core::v1::Container| {
        let named = container.name == by_name;
        let started = container
            .args
            .as_ref()
            .and_then(|a| a.first())
            .is_some_and(|a| a == role.as_str());
        match (named, started) {
            (false, false) => None,
            (true, false) => Some("by name"),
            (false, true) => Some("by args[0]"),
            (true, true) => Some("by name and args[0]"),
        }
    };
    // Counted first, so the one-claim case every Spark pod is in allocates nothing.
    let mut claiming = spec
        .containers
        .iter()
        .enumerate()
        .filter(|(_, c)| claim(c).is_some());
    let first = claiming.next().map(|(index, _)| index);
    if claiming.next().is_none() {
        return Ok(first.or((!spec.containers.is_empty()).then_some(0)));
    }
    let claims = spec
        .containers
        .iter()
        .filter_map(|c| claim(c).map(|how| (c.name.clone(), how)))
        .collect();
    Err(AmbiguousContainer { role, claims })
}

/// The Spark container's index, `None` when the pod has no containers or an ambiguous one
/// (see [`spark_container`]).
pub fn spark_container_index(pod: &Pod, role: Role) -> Option<usize> {
    spark_container(pod, role).ok().flatten()
}
