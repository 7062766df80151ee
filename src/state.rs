//! What the server shares between requests and background tasks: the policy in force, the
//! metrics, and readiness.
//!
//! Requests only read: they take the current policy (an `Arc`, cheap to clone) and never wait
//! on I/O. Sources replace the policy atomically for the next request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::metrics::Metrics;
use crate::policy::Policy;

/// Shared server state.
pub struct State {
    policy: RwLock<Option<Arc<Policy>>>,
    /// The metrics.
    pub metrics: Metrics,
    shutting_down: AtomicBool,
    /// ConfigMap key holding the policy, for `/validate-policy`.
    pub policy_key: String,
}

impl State {
    /// State with no policy yet (not ready).
    pub fn new(policy_key: impl Into<String>) -> Self {
        Self {
            policy: RwLock::new(None),
            metrics: Metrics::new(),
            shutting_down: AtomicBool::new(false),
            policy_key: policy_key.into(),
        }
    }

    /// The policy in force, if one was loaded.
    pub fn policy(&self) -> Option<Arc<Policy>> {
        // A poisoned lock would mean a panic while swapping an Arc; the value is still whole.
        match self.policy.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `policy` in force for every request from now on.
    pub fn set_policy(&self, policy: Policy) {
        self.metrics.set_policy(&policy.hash);
        let policy = Some(Arc::new(policy));
        match self.policy.write() {
            Ok(mut guard) => *guard = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }

    /// Ready: a policy is loaded and the server is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.policy().is_some()
    }

    /// Marks the server as shutting down; readiness turns false.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}
