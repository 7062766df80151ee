//! What the server shares between requests and background tasks: the policy in force, the
//! quota tracker, the metrics, and readiness.
//!
//! Requests only read the policy: they take the current one (an `Arc`, cheap to clone) and
//! never wait on I/O for it. Sources replace the policy atomically for the next request.
//!
//! A policy with quotas needs the pod watch to have listed every Spark pod before its quotas
//! mean anything. So such a policy is staged: the watch starts, and the policy goes into force
//! the moment the watch has synced. Until then the previous policy keeps serving (at start-up
//! there is none, so the server is not ready). Pods arriving meanwhile are therefore decided
//! exactly as before the change, never against a half-listed cluster.
//!
//! The cluster facts the engine needs (the global default PriorityClass, the version) come
//! from another watch ([`crate::cluster`]) through the one handle it gets, a
//! [`FactsSender`]; readiness waits for its first listing, for a bounded time only.
//!
//! This module sits above the ones that feed it: the sources install policies through
//! [`PolicySink`], the pod watch reports its listings through [`LedgerSink`], and neither
//! imports anything from here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cluster::{FactsSender, Learned};
use crate::engine::ClusterFacts;
use crate::events::DriverEvents;
use crate::gang::GangReads;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::quota::watch::LedgerSink;
use crate::quota::{self, Tracker};
pub use crate::source::Installed;
use crate::source::PolicySink;
use crate::templates::ExecutorTemplates;

/// Shared server state.
pub struct State {
    policy: RwLock<Option<Arc<Policy>>>,
    staged: Mutex<Option<Policy>>,
    /// Live Spark pods and reservations, for quotas.
    pub quotas: Tracker,
    // `Some(generation)` while the pod watch should run; a new generation each time quotas
    // come back after a policy without them, so the watch always restarts with a fresh ledger.
    quota_watch_wanted: tokio::sync::watch::Sender<Option<u64>>,
    /// The metrics.
    pub metrics: Metrics,
    /// Reads executor pod templates for sizing cluster-mode executors (SPEC §5b).
    pub executor_templates: ExecutorTemplates,
    /// Reads namespaces for gang admission of cluster-mode submissions (SPEC §5b).
    pub gang_reads: GangReads,
    /// Events on driver pods about their submission (SPEC §5b).
    pub driver_events: DriverEvents,
    quota_watch_generation: AtomicU64,
    shutting_down: AtomicBool,
    cluster: FactsSender,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// State with no policy yet (not ready) and default quota options.
    pub fn new() -> Self {
        Self::with_quota_options(quota::Options::default())
    }

    /// State with no policy yet, deciding quotas with `options`.
    pub fn with_quota_options(options: quota::Options) -> Self {
        Self {
            policy: RwLock::new(None),
            staged: Mutex::new(None),
            quotas: Tracker::new(options),
            quota_watch_wanted: tokio::sync::watch::Sender::new(None),
            metrics: Metrics::new(),
            executor_templates: ExecutorTemplates::new(),
            gang_reads: GangReads::new(),
            driver_events: DriverEvents::new(),
            quota_watch_generation: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            cluster: FactsSender::new(Learned::default()),
        }
    }

    /// What is known of the cluster, for the next request (shared: a request costs no copy).
    pub fn cluster_facts(&self) -> Arc<ClusterFacts> {
        self.cluster.borrow().facts.clone()
    }

    /// The handle the cluster watch publishes through ([`crate::cluster`]).
    pub fn cluster_facts_sender(&self) -> FactsSender {
        self.cluster.clone()
    }

    /// Readiness now waits for the cluster facts, until the cluster watch's first listing or
    /// its wait running out.
    pub fn await_cluster_facts(&self) {
        self.cluster
            .send_modify(|learned| learned.awaiting_first_listing = true);
    }

    /// Whether readiness is waiting for the cluster facts.
    pub fn is_awaiting_cluster_facts(&self) -> bool {
        self.cluster.borrow().awaiting_first_listing
    }

    /// The cluster facts from a complete listing, in force for the next request; readiness no
    /// longer waits for them. For tests and tools; the server's facts come from the watch.
    pub fn set_cluster_facts(&self, facts: ClusterFacts) {
        self.cluster.send_replace(Learned {
            facts: Arc::new(facts),
            awaiting_first_listing: false,
        });
    }

    /// The policy in force, if one was loaded.
    pub fn policy(&self) -> Option<Arc<Policy>> {
        // A poisoned lock would mean a panic while swapping an Arc; the value is still whole.
        match self.policy.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `policy` in force for every request from now on, or, when it has quotas and the pod
    /// watch has not synced, stages it until the watch has.
    pub fn set_policy(&self, policy: Policy) -> Installed {
        let mut staged = self.lock_staged();
        if policy.quotas.is_empty() {
            *staged = None;
            self.metrics.policy_staged.set(0);
            // Forget the pods now, not when the watch task notices: a policy with quotas that
            // follows at once must wait for a new listing, not use a ledger about to be dropped.
            self.quota_watch_wanted.send_replace(None);
            self.quotas.reset();
            self.update_tracked_pods();
            self.put_in_force(policy);
            return Installed::InForce;
        }
        self.quota_watch_wanted
            .send_if_modified(|wanted| match wanted {
                Some(_) => false,
                None => {
                    *wanted = Some(self.quota_watch_generation.fetch_add(1, Ordering::Relaxed));
                    true
                }
            });
        if self.quotas.is_synced() {
            *staged = None;
            self.metrics.policy_staged.set(0);
            self.put_in_force(policy);
            Installed::InForce
        } else {
            *staged = Some(policy);
            self.metrics.policy_staged.set(1);
            Installed::Staged
        }
    }

    /// The pod watch of `generation` listed every Spark pod into the tracker: the pods it did
    /// not show are dropped, the tracker is synced, and a staged policy goes into force.
    /// Returns false, changing nothing, when that watch is no longer wanted: a policy without
    /// quotas came in while it was listing and reset the tracker, and marking it synced now
    /// would let the next policy with quotas go into force at once, on a ledger no watch
    /// updates (what that watch applied after the reset is dropped by the next listing).
    pub fn quota_watch_listed(&self, generation: u64) -> bool {
        // Under the lock `set_policy` holds while it resets the tracker, so the two never
        // interleave.
        let staged = self.lock_staged();
        if *self.quota_watch_wanted.borrow() != Some(generation) {
            return false;
        }
        let gone = self.quotas.listing_complete();
        drop(staged);
        let count = self.quotas.with_ledger(|ledger| ledger.tracked_pods());
        self.update_tracked_pods();
        tracing::info!(
            pods = count,
            not_listed_again = gone,
            "the pod watch listed every live Spark pod"
        );
        self.quota_watch_synced();
        true
    }

    /// The pod watch listed every Spark pod: a staged policy goes into force.
    pub fn quota_watch_synced(&self) {
        let staged = self.lock_staged().take();
        self.metrics.policy_staged.set(0);
        if let Some(policy) = staged {
            tracing::info!(policy = %policy.summary(), "the pod watch has synced: policy in force");
            self.put_in_force(policy);
        }
    }

    /// A policy waiting for the pod watch, if any.
    pub fn staged_policy_hash(&self) -> Option<String> {
        self.lock_staged().as_ref().map(|p| p.hash.clone())
    }

    /// Follows whether the pod watch should run (the policy in force or staged has quotas):
    /// `Some(generation)` while it should.
    pub fn quota_watch_wanted(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.quota_watch_wanted.subscribe()
    }

    /// Sets `spark_admission_tracked_pods` from the ledger.
    pub fn update_tracked_pods(&self) {
        let count = self.quotas.with_ledger(|ledger| ledger.tracked_pods());
        self.metrics
            .tracked_pods
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets `spark_admission_quota_usage_ratio` from the ledger and the policy in force (done
    /// when metrics are scraped, so it is always current and costs nothing between scrapes).
    pub fn update_quota_usage(&self) {
        let family = &self.metrics.quota_usage_ratio;
        match self.policy().filter(|p| !p.quotas.is_empty()) {
            None => family.clear(),
            Some(policy) => self
                .quotas
                .with_ledger(|ledger| quota::report::publish_usage(family, &policy, ledger)),
        }
    }

    fn put_in_force(&self, policy: Policy) {
        self.metrics.set_policy(&policy.hash);
        let policy = Some(Arc::new(policy));
        match self.policy.write() {
            Ok(mut guard) => *guard = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }

    fn lock_staged(&self) -> std::sync::MutexGuard<'_, Option<Policy>> {
        match self.staged.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Ready: a policy is in force, the cluster facts are not awaited and the server is not
    /// shutting down.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire)
            && !self.is_awaiting_cluster_facts()
            && self.policy().is_some()
    }

    /// Whether SIGTERM (or another shutdown signal) has been received.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the server as shutting down; readiness turns false.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}

impl PolicySink for State {
    fn install(&self, policy: Policy) -> Installed {
        self.set_policy(policy)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl LedgerSink for State {
    fn tracker(&self) -> &Tracker {
        &self.quotas
    }

    fn wanted(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.quota_watch_wanted()
    }

    fn listed(&self, generation: u64) -> bool {
        self.quota_watch_listed(generation)
    }

    fn ledger_changed(&self) {
        self.update_tracked_pods();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const RULES_ONLY: &str = "rules: [{name: one}]";
    const WITH_QUOTAS: &str =
        "rules: [{name: two}]\nquotas: [{name: q, perApplication: {maxExecutors: 3}}]";

    #[test]
    fn a_policy_with_quotas_waits_for_the_pod_watch_and_the_previous_one_serves_meanwhile() {
        let state = State::new();
        let first = Policy::parse(RULES_ONLY).unwrap();
        assert_eq!(state.set_policy(first.clone()), Installed::InForce);
        assert_eq!(
            *state.quota_watch_wanted().borrow(),
            None,
            "no quotas: no watch"
        );

        let second = Policy::parse(WITH_QUOTAS).unwrap();
        assert_eq!(state.set_policy(second.clone()), Installed::Staged);
        let generation = *state.quota_watch_wanted().borrow();
        assert!(generation.is_some(), "the watch is asked to start");
        assert_eq!(
            state.policy().unwrap().hash,
            first.hash,
            "the old policy serves"
        );
        assert_eq!(state.staged_policy_hash(), Some(second.hash.clone()));
        assert_eq!(state.metrics.policy_staged.get(), 1);
        assert!(state.is_ready());

        state.quotas.synced_with([]);
        state.quota_watch_synced();
        assert_eq!(state.policy().unwrap().hash, second.hash);
        assert_eq!(state.staged_policy_hash(), None);
        assert_eq!(state.metrics.policy_staged.get(), 0);

        // With the watch synced, another policy with quotas is in force at once...
        let third = Policy::parse(&format!("{WITH_QUOTAS}\n# edited")).unwrap();
        assert_eq!(state.set_policy(third), Installed::InForce);
        assert_eq!(
            *state.quota_watch_wanted().borrow(),
            generation,
            "same watch"
        );
        // ...and one without quotas stops the watch and forgets its pods, so quotas coming
        // back wait for a new listing.
        assert_eq!(state.set_policy(first), Installed::InForce);
        assert_eq!(*state.quota_watch_wanted().borrow(), None);
        assert!(!state.quotas.is_synced());
        assert_eq!(
            state.set_policy(Policy::parse(WITH_QUOTAS).unwrap()),
            Installed::Staged
        );
        assert_ne!(
            *state.quota_watch_wanted().borrow(),
            generation,
            "a new watch"
        );
    }

    #[test]
    fn a_listing_finished_by_a_watch_no_longer_wanted_marks_nothing_synced() {
        let state = State::new();
        assert_eq!(
            state.set_policy(Policy::parse(WITH_QUOTAS).unwrap()),
            Installed::Staged
        );
        let old = state.quota_watch_wanted().borrow().unwrap();
        // A policy without quotas arrives while that watch is listing...
        state.set_policy(Policy::parse(RULES_ONLY).unwrap());
        // ...then the old watch finishes its listing.
        assert!(!state.quota_watch_listed(old));
        assert!(!state.quotas.is_synced());
        // The next policy with quotas waits for its own watch.
        assert_eq!(
            state.set_policy(Policy::parse(WITH_QUOTAS).unwrap()),
            Installed::Staged
        );
        let new = state.quota_watch_wanted().borrow().unwrap();
        assert_ne!(new, old);
        assert!(state.quota_watch_listed(new));
        assert_eq!(state.policy().unwrap().quotas.len(), 1, "in force now");
    }

    #[test]
    fn readiness_waits_for_the_cluster_facts_only_while_they_are_awaited() {
        let state = State::new();
        state.set_policy(Policy::parse(RULES_ONLY).unwrap());
        assert!(
            state.is_ready(),
            "nothing is awaited by default (no client, tests)"
        );
        state.await_cluster_facts();
        assert!(!state.is_ready());
        assert_eq!(*state.cluster_facts(), ClusterFacts::default());
        let facts = ClusterFacts {
            global_default_priority_class: Some("normal".to_owned()),
            ..ClusterFacts::default()
        };
        state.set_cluster_facts(facts.clone());
        assert!(state.is_ready());
        assert_eq!(*state.cluster_facts(), facts);

        // Given up on: ready, with what is known so far (nothing, at start).
        let state = State::new();
        state.set_policy(Policy::parse(RULES_ONLY).unwrap());
        state.await_cluster_facts();
        state
            .cluster_facts_sender()
            .send_modify(|learned| learned.awaiting_first_listing = false);
        assert!(state.is_ready());
        assert_eq!(*state.cluster_facts(), ClusterFacts::default());
    }

    #[test]
    fn at_start_a_policy_with_quotas_leaves_the_server_not_ready_until_the_watch_syncs() {
        let state = State::new();
        assert_eq!(
            state.set_policy(Policy::parse(WITH_QUOTAS).unwrap()),
            Installed::Staged
        );
        assert!(!state.is_ready());
        state.quotas.synced_with([]);
        state.quota_watch_synced();
        assert!(state.is_ready());
    }
}
