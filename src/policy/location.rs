//! Where the policy lives in the cluster: one ConfigMap's namespace and name, and the data key
//! that holds the policy. The ConfigMap source watches it and `/validate-policy` guards it;
//! both read this value, which `serve` sets once from the command line.

use std::fmt;

/// The namespace of the policy ConfigMap when the server is not told another (SPEC §3).
pub const DEFAULT_POLICY_NAMESPACE: &str = "spark-admission";
/// The name of the policy ConfigMap when the server is not told another (SPEC §3).
pub const DEFAULT_POLICY_NAME: &str = "spark-admission-policy";
/// The data key of the policy when the server is not told another (`--policy-key`).
pub const DEFAULT_POLICY_KEY: &str = "policy.yaml";

/// Which ConfigMap, and which key in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    /// Namespace of the ConfigMap.
    pub namespace: String,
    /// Name of the ConfigMap.
    pub name: String,
    /// Data key that holds the policy.
    pub key: String,
}

impl ConfigMapRef {
    /// The default ConfigMap (`spark-admission/spark-admission-policy`) with data key `key`:
    /// what the deploy manifests mount with `--policy-file`.
    pub fn default_with_key(key: impl Into<String>) -> Self {
        Self {
            namespace: DEFAULT_POLICY_NAMESPACE.to_owned(),
            name: DEFAULT_POLICY_NAME.to_owned(),
            key: key.into(),
        }
    }
}

impl Default for ConfigMapRef {
    /// `spark-admission/spark-admission-policy`, key `policy.yaml`.
    fn default() -> Self {
        Self::default_with_key(DEFAULT_POLICY_KEY)
    }
}

impl fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} key {}", self.namespace, self.name, self.key)
    }
}
