//! Quotas on live Spark pods, per application and per namespace (SPEC §5), decided at
//! admission from state held in memory.
//!
//! The pieces, in the order a decision uses them:
//! - [`charge`]: what one pod costs, as the scheduler and ResourceQuota charge it;
//! - [`ledger`]: the live Spark pods the watch showed plus the pods this replica admitted and the
//!   watch has not shown yet (reservations), with running totals per namespace and per
//!   application, so a decision never scans pods;
//! - [`check`]: the pure decision, totals + one pod + one quota → the limits it would exceed,
//!   each with a message a Spark user can act on;
//! - [`tracker`]: the ledger shared by requests and the watch; check-and-reserve under one lock,
//!   and a consistent LIST of the application's pods near a per-application limit, so those
//!   limits stay exact across replicas;
//! - [`watch`]: the kube-rs pod watch that feeds the ledger;
//! - [`report`]: usage against each limit, for metrics and `spark-admission usage`;
//! - [`fit`]: how many executors of one size fit an application's limits, for lowering a
//!   cluster-mode application's executor counts before it asks (SPEC §5a).
//!
//! Nothing here decides what a pod looks like (the engine does). The only I/O on the request
//! path is the tracker's LIST near a per-application limit.

pub mod charge;
pub mod check;
pub mod fit;
pub mod gang;
pub mod ledger;
pub mod report;
pub mod tracker;
pub mod watch;

use k8s_openapi::api::core::v1::Pod;

use crate::engine::{SparkPod, matches};
use crate::policy::{Policy, check_dns_label, check_dns_subdomain, check_label_value};

pub use charge::Charge;
pub use check::{Scope, Violation};
pub use ledger::{Entry, Ledger, Listing, Own, PodKey, TrackedPod};
pub use tracker::{Confirmation, Decision, Options, Tracker};

/// Errors confirming an application's pods with the API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The LIST failed.
    #[error("failed to list the pods of application {app} in namespace {namespace}: {source}")]
    List {
        /// Namespace.
        namespace: String,
        /// Application id.
        app: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The LIST took too long.
    #[error(
        "listing the pods of application {app} in namespace {namespace} took longer than {timeout:?}"
    )]
    Timeout {
        /// Namespace.
        namespace: String,
        /// Application id.
        app: String,
        /// The limit.
        timeout: std::time::Duration,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What admitting one pod would add, and which quotas it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Namespace and name.
    pub key: PodKey,
    /// What the pod counts: its application, role, and the charge of the pod as it will be
    /// stored.
    pub entry: Entry,
    /// Indices of the policy's quotas that match the pod.
    pub quotas: Vec<usize>,
    /// A new pod, or new resources for a live one.
    pub kind: ClaimKind,
    /// Whether the apiserver could store this pod at all: its namespace, name (or
    /// generateName) and application id are valid. The apiserver validates them only after
    /// admission, so a review from anyone can carry anything, a 3 MiB label value included.
    /// Only a storable pod is reserved, since a reservation keeps its strings for
    /// `--quota-reservation-ttl`.
    pub storable: bool,
}

/// What a claim is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A pod being created: it adds a pod (an executor, perhaps a new application) and is
    /// reserved once admitted.
    Create,
    /// A live pod whose resources are raised (an UPDATE or `pods/resize`): only its charge
    /// changes, from what it has to what the entry says; nothing is reserved, the watch shows
    /// the new charge.
    Resize,
}

impl Claim {
    /// The claim of a Spark pod: `spark` is what the pod arrived with (quotas match on it, as
    /// rules do), `desired` the pod with the policy applied (its defaults and clamps are what
    /// gets stored, so they are what is charged). `None` when no quota matches.
    ///
    /// Spark names every pod it creates, and a pod's namespace and name identify it across a
    /// reinvoked admission. A pod with only `generateName` gets its name after admission, so
    /// it is keyed by `request_uid`: a reinvocation of such a pod counts it twice until the
    /// reservation expires.
    pub fn new(
        policy: &Policy,
        spark: &SparkPod,
        desired: &Pod,
        request_uid: &str,
    ) -> Option<Self> {
        let (name, valid_name) = match desired.metadata.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => (name.to_owned(), check_dns_subdomain(name).is_ok()),
            None => {
                let prefix = desired
                    .metadata
                    .generate_name
                    .as_deref()
                    .unwrap_or_default();
                // The apiserver appends 5 characters to generateName; a uid it makes is 36.
                let valid = prefix.len() <= 253 - 5
                    && check_dns_subdomain(&format!("{prefix}x")).is_ok()
                    && request_uid.len() <= 64;
                // Braces and spaces cannot appear in a pod name, so this never equals a real one.
                (format!("{prefix}{{request {request_uid}}}"), valid)
            }
        };
        let mut claim = Self::of(policy, spark, desired, name, ClaimKind::Create)?;
        claim.storable &= valid_name;
        Some(claim)
    }

    /// The claim of a live Spark pod `name` whose resources change to those of `updated`.
    /// `None` when no quota matches.
    pub fn resize(policy: &Policy, spark: &SparkPod, updated: &Pod, name: &str) -> Option<Self> {
        Self::of(policy, spark, updated, name.to_owned(), ClaimKind::Resize)
    }

    fn of(
        policy: &Policy,
        spark: &SparkPod,
        pod: &Pod,
        name: String,
        kind: ClaimKind,
    ) -> Option<Self> {
        let quotas: Vec<usize> = policy
            .quotas
            .iter()
            .enumerate()
            .filter(|(_, quota)| matches(&quota.selector, spark))
            .map(|(index, _)| index)
            .collect();
        if quotas.is_empty() {
            return None;
        }
        let namespace_valid = check_dns_label(&spark.namespace).is_ok();
        let app_valid = spark
            .app_id
            .as_deref()
            .is_none_or(|app| check_label_value(app).is_ok());
        Some(Self {
            key: PodKey {
                namespace: spark.namespace.clone(),
                name,
            },
            entry: Entry {
                app: spark.app_id.clone(),
                // Only for messages: an invalid one is not worth keeping.
                app_name: spark
                    .app_name
                    .clone()
                    .filter(|name| check_label_value(name).is_ok()),
                role: spark.role,
                charge: Charge::of_pod(pod),
            },
            quotas,
            kind,
            storable: namespace_valid && app_valid,
        })
    }

    /// The pod this claim is about, as the ledger leaves it out of the totals.
    pub fn own(&self) -> Own<'_> {
        match self.kind {
            ClaimKind::Create => Own::Created(&self.key),
            ClaimKind::Resize => Own::Resized(&self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_claim_matches_quotas_on_the_pod_as_it_arrived_and_charges_it_as_it_will_be_stored() {
        let policy = Policy::parse(
            r#"
rules:
  - name: defaults
    resources: {executor: {default: {requests: {cpu: "3"}}}}
quotas:
  - {name: elsewhere, match: {namespaces: [other]}, perNamespace: {maxCpu: "1"}}
  - {name: here, match: {namespaces: [analytics]}, perApplication: {maxExecutors: 5}}
"#,
        )
        .unwrap();
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "exec-1", "labels": {"spark-role": "executor", "spark-app-selector": "spark-9", "spark-app-name": "etl"}},
            "spec": {"containers": [{"name": "spark-kubernetes-executor", "image": "x"}]},
        }))
        .unwrap();
        let spark = SparkPod::from_pod(&pod, "analytics").unwrap();
        let evaluation = crate::engine::evaluate(
            &pod,
            &crate::engine::RequestContext {
                namespace: "analytics".to_owned(),
                ..Default::default()
            },
            &policy,
        )
        .unwrap();
        let claim = Claim::new(&policy, &spark, &evaluation.desired, "uid-1").unwrap();
        assert_eq!(claim.quotas, vec![1]);
        assert_eq!(claim.key.name, "exec-1");
        assert_eq!(claim.entry.app.as_deref(), Some("spark-9"));
        assert_eq!(claim.entry.app_name.as_deref(), Some("etl"));
        assert_eq!(
            claim.entry.charge.cpu, 3_000_000_000,
            "the policy's default is charged"
        );

        pod.metadata.name = None;
        pod.metadata.generate_name = Some("exec-".to_owned());
        let unnamed = Claim::new(&policy, &spark, &pod, "uid-2").unwrap();
        assert_eq!(unnamed.key.name, "exec-{request uid-2}");

        let elsewhere = SparkPod::from_pod(&pod, "default").unwrap();
        assert!(Claim::new(&policy, &elsewhere, &pod, "uid-3").is_none());
    }
}
