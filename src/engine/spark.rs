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
        Some(Self {
            role,
            namespace: namespace.to_owned(),
            app_name: app_name_of(&labels).map(str::to_owned),
            app_id: labels.get(APP_ID_LABEL).cloned(),
            service_account,
            container: spark_container_index(pod, role),
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

/// Finds the Spark container: the one named `spark-kubernetes-<role>`, else the one whose
/// `args[0]` is the role (Spark's entrypoint takes it there, even when a pod template renamed
/// the container), else the first. Pod templates may put sidecars first, so `containers[0]` is
/// only the last resort.
pub fn spark_container_index(pod: &Pod, role: Role) -> Option<usize> {
    let containers = &pod.spec.as_ref()?.containers;
    let by_name = format!("spark-kubernetes-{}", role.as_str());
    containers
        .iter()
        .position(|c| c.name == by_name)
        .or_else(|| {
            containers.iter().position(|c| {
                c.args
                    .as_ref()
                    .and_then(|a| a.first())
                    .is_some_and(|a| a == role.as_str())
            })
        })
        .or(if containers.is_empty() { None } else { Some(0) })
}
