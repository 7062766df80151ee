//! Where the policy comes from. Every source hands a validated [`Policy`](crate::Policy) to the
//! shared [`State`](crate::state::State); an invalid version never replaces the one in force.

pub mod configmap;
pub mod file;

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
