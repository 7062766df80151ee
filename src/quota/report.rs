//! What each quota's namespaces and applications use against its limits: for the
//! `spark_admission_quota_usage_ratio` metric (namespaces only, so cardinality stays bounded)
//! and for `spark-admission usage` (namespaces and applications).
//!
//! A quota applies to the namespaces its `match.namespaces` selects (every namespace when it
//! has none) and, per application, to the applications its `match.appNames` selects.
//! `podLabels` and `serviceAccounts` are properties of single pods: admission checks them pod
//! by pod, and this report does not narrow by them.

use serde::Serialize;

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::QuotaUsageLabels;
use crate::policy::{Glob, Policy, Quota};

use super::check::{format_cpu, format_memory};
use super::ledger::Ledger;

/// One measured limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measure {
    /// `executors`, `cpu`, `memory` or `applications`.
    pub resource: &'static str,
    /// What is used, written like a Kubernetes quantity.
    pub used: String,
    /// The limit, as the policy writes it.
    pub limit: String,
    /// used / limit (infinite for a zero limit with something used).
    pub ratio: f64,
}

/// One quota's usage in one scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeUsage {
    /// The quota.
    pub quota: String,
    /// The namespace.
    pub namespace: String,
    /// The application id, for a per-application row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// The application's name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Each limit the quota sets in this scope.
    pub measures: Vec<Measure>,
}

/// Sets `spark_admission_quota_usage_ratio` (`family`) to the ledger's usage under `policy`,
/// one gauge per quota, namespace and resource, dropping the gauges of scopes gone since.
pub fn publish_usage(
    family: &Family<QuotaUsageLabels, Gauge<f64, AtomicU64>>,
    policy: &Policy,
    ledger: &Ledger,
) {
    family.clear();
    for row in usage(policy, ledger, false) {
        for measure in row.measures {
            family
                .get_or_create(&QuotaUsageLabels {
                    quota: row.quota.clone(),
                    namespace: row.namespace.clone(),
                    resource: measure.resource,
                })
                .set(measure.ratio);
        }
    }
}

/// Every quota's usage per namespace, and per application when `applications` is true.
/// Sorted by quota (policy order), namespace, then application.
pub fn usage(policy: &Policy, ledger: &Ledger, applications: bool) -> Vec<ScopeUsage> {
    let mut namespaces: Vec<_> = ledger.namespaces().iter().collect();
    namespaces.sort_by(|a, b| a.0.cmp(b.0));
    let mut rows = Vec::new();
    for quota in &policy.quotas {
        for (namespace, ns) in &namespaces {
            if !applies_to_namespace(quota, namespace) {
                continue;
            }
            if let Some(limits) = &quota.per_namespace {
                let mut measures = Vec::new();
                if let Some(max) = limits.max_applications {
                    let count = ns.apps.len();
                    measures.push(Measure {
                        resource: "applications",
                        used: count.to_string(),
                        limit: max.to_string(),
                        ratio: ratio(count as f64, f64::from(max)),
                    });
                }
                push_charge(&mut measures, quota_charge_limits(limits), ns.all().charge);
                rows.push(ScopeUsage {
                    quota: quota.name.clone(),
                    namespace: namespace.to_string(),
                    application: None,
                    application_name: None,
                    measures,
                });
            }
            let Some(limits) = quota.per_application.as_ref().filter(|_| applications) else {
                continue;
            };
            let mut apps: Vec<_> = ns.apps.iter().collect();
            apps.sort_by(|a, b| a.0.cmp(b.0));
            for (app, usage) in apps {
                if !selects(&quota.selector.app_names, usage.name.as_deref()) {
                    continue;
                }
                let mut measures = Vec::new();
                let all = usage.all();
                if let Some(max) = limits.max_executors {
                    measures.push(Measure {
                        resource: "executors",
                        used: all.executors.to_string(),
                        limit: max.to_string(),
                        ratio: ratio(f64::from(all.executors), f64::from(max)),
                    });
                }
                push_charge(&mut measures, quota_charge_limits(limits), all.charge);
                rows.push(ScopeUsage {
                    quota: quota.name.clone(),
                    namespace: namespace.to_string(),
                    application: Some(app.to_string()),
                    application_name: usage.name.clone(),
                    measures,
                });
            }
        }
    }
    rows
}

fn quota_charge_limits(
    limits: &crate::policy::QuotaLimits,
) -> [(&'static str, Option<&crate::policy::Quantity>); 2] {
    [
        ("cpu", limits.max_cpu.as_ref()),
        ("memory", limits.max_memory.as_ref()),
    ]
}

fn push_charge(
    measures: &mut Vec<Measure>,
    limits: [(&'static str, Option<&crate::policy::Quantity>); 2],
    used: super::Charge,
) {
    for (resource, max) in limits {
        let Some(max) = max else { continue };
        let (value, text) = match resource {
            "cpu" => (used.cpu, format_cpu(used.cpu)),
            _ => (used.memory, format_memory(used.memory)),
        };
        measures.push(Measure {
            resource,
            used: text,
            limit: max.as_str().trim().to_owned(),
            ratio: ratio(value as f64, max.nanos() as f64),
        });
    }
}

fn ratio(used: f64, limit: f64) -> f64 {
    if limit > 0.0 {
        used / limit
    } else if used > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

fn selects(globs: &[Glob], value: Option<&str>) -> bool {
    globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.matches(v)))
}

/// Whether `quota` applies to pods in `namespace` as far as its namespaces tell.
pub fn applies_to_namespace(quota: &Quota, namespace: &str) -> bool {
    selects(&quota.selector.namespaces, Some(namespace))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::policy::Role;
    use crate::quota::{Charge, Entry, PodKey, TrackedPod};

    fn pod(ledger: &mut Ledger, namespace: &str, name: &str, app: &str, role: Role, cpu: i128) {
        ledger.apply(
            PodKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            TrackedPod {
                entry: Entry {
                    app: Some(app.to_owned()),
                    app_name: Some(format!("{app}-name")),
                    role,
                    charge: Charge {
                        cpu: cpu * 1_000_000_000,
                        memory: (1 << 30) * 1_000_000_000,
                    },
                },
                resource_version: None,
            },
        );
    }

    #[test]
    fn usage_per_namespace_and_application_against_each_limit() {
        let policy = Policy::parse(
            r#"
quotas:
  - name: apps
    match: {namespaces: ["etl-*"], appNames: ["a-*"]}
    perApplication: {maxExecutors: 4, maxMemory: 8Gi}
    perNamespace: {maxApplications: 4, maxCpu: "10"}
"#,
        )
        .unwrap();
        let mut ledger = Ledger::new();
        pod(&mut ledger, "etl-1", "d", "a", Role::Driver, 1);
        pod(&mut ledger, "etl-1", "e1", "a", Role::Executor, 2);
        pod(&mut ledger, "etl-1", "e2", "b", Role::Executor, 2);
        pod(&mut ledger, "other", "x", "c", Role::Executor, 2);
        let rows = usage(&policy, &ledger, true);
        let summary: Vec<String> = rows
            .iter()
            .map(|row| {
                let measures: Vec<String> = row
                    .measures
                    .iter()
                    .map(|m| format!("{} {}/{} {:.3}", m.resource, m.used, m.limit, m.ratio))
                    .collect();
                format!(
                    "{} {} {} {}",
                    row.quota,
                    row.namespace,
                    row.application.as_deref().unwrap_or("-"),
                    measures.join(", ")
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "apps etl-1 - applications 2/4 0.500, cpu 5/10 0.500",
                "apps etl-1 a executors 1/4 0.250, memory 2Gi/8Gi 0.250",
            ]
        );
        assert!(applies_to_namespace(&policy.quotas[0], "etl-2"));
        assert!(!applies_to_namespace(&policy.quotas[0], "other"));
    }
}
