//! Where the policy comes from: a file polled on an interval ([`file`]) or a ConfigMap watched
//! through the API ([`configmap`]). The server starts one of them as a background task beside
//! its listeners. Every source hands a validated [`Policy`] to a [`PolicySink`] (the server's
//! state); an invalid version never replaces the one in force.

pub mod configmap;
pub mod file;

use crate::metrics::Metrics;
use crate::policy::Policy;

/// Where a new policy went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// In force for the next request.
    InForce,
    /// Waiting for the pod watch to sync; the previous policy serves until then.
    Staged,
}

/// What a source hands its policies to: the server's state, which is all a source needs of it.
pub trait PolicySink: Send + Sync {
    /// Puts `policy` in force for the next request, or stages it (a policy with quotas waits
    /// for the pod watch).
    fn install(&self, policy: Policy) -> Installed;
    /// The metrics a source counts its reloads in.
    fn metrics(&self) -> &Metrics;
}

/// What one look at a source found.
#[derive(Debug)]
pub enum PolicyUpdate {
    /// Nothing changed.
    Unchanged,
    /// A new valid policy is in force; its summary.
    Loaded(String),
    /// A new valid policy with quotas waits for the pod watch to sync; its summary.
    Staged(String),
    /// The source changed to an invalid policy; the one in force stays.
    Invalid(crate::policy::Error),
    /// The source could not be read; the policy in force stays.
    Unreadable(String),
}

/// Logs what a look at the policy file found: a new policy, or why the one in force stays.
pub(crate) fn log_policy_update(update: PolicyUpdate) {
    match update {
        PolicyUpdate::Unchanged => {}
        PolicyUpdate::Loaded(summary) => tracing::info!(policy = %summary, "policy loaded"),
        PolicyUpdate::Staged(summary) => {
            tracing::info!(policy = %summary, "policy loaded; it has quotas and goes into force once the pod watch has listed every Spark pod")
        }
        PolicyUpdate::Invalid(error) => {
            tracing::error!(error = %error, "policy is invalid; the policy in force (if any) stays")
        }
        PolicyUpdate::Unreadable(error) => {
            tracing::error!(%error, "policy file unreadable; the policy in force (if any) stays")
        }
    }
}
