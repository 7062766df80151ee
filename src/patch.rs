//! From the original pod and the desired pod to the JSON Patch the apiserver applies.
//!
//! The patch is computed by diffing the two pods as JSON, never written by hand, so escaping of
//! `/` and `~` in keys (`prometheus.io~1scrape`) and array positions are always right, and
//! applying it to the original yields exactly the desired pod.

use k8s_openapi::api::core::v1::Pod;

/// Errors from building a patch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod could not be turned into JSON (not expected for pods that were parsed from JSON).
    #[error("failed to serialize pod to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The JSON Patch that turns `original` into `desired`; empty when they are equal.
pub fn diff(original: &Pod, desired: &Pod) -> Result<json_patch::Patch> {
    let before = serde_json::to_value(original).map_err(Error::Serialize)?;
    let after = serde_json::to_value(desired).map_err(Error::Serialize)?;
    Ok(json_patch::diff(&before, &after))
}
