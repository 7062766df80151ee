//! Whether a rule's `match` block selects a pod.

use crate::policy::{Glob, Selector};

use super::SparkPod;

/// Every non-empty condition must hold; an empty selector matches every Spark pod.
pub fn matches(selector: &Selector, pod: &SparkPod) -> bool {
    any_glob(&selector.namespaces, Some(&pod.namespace))
        && (selector.roles.is_empty() || selector.roles.contains(&pod.role))
        && any_glob(&selector.app_names, pod.app_name.as_deref())
        && any_glob(&selector.service_accounts, Some(&pod.service_account))
        && selector
            .pod_labels
            .iter()
            .all(|(k, v)| pod.labels.get(k) == Some(v))
}

fn any_glob(globs: &[Glob], value: Option<&str>) -> bool {
    globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.matches(v)))
}
