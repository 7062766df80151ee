//! The quota decision for one pod: pure, over the totals without the pod, the pod's claim and
//! one quota. Every limit the pod would take over is reported, in words a Spark user can act
//! on: which quota, which application or namespace, the value it would reach, the limit, and
//! which Spark setting to lower.

use std::fmt;

use crate::policy::{Quota, QuotaLimits, Role};

use super::Charge;

use super::ledger::Usage;
use super::{Claim, ClaimKind};

/// Which totals a limit is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One application (by `spark-app-selector`).
    Application,
    /// One namespace.
    Namespace,
}

impl Scope {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Application => "application",
            Scope::Namespace => "namespace",
        }
    }
}

/// One limit the pod would take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The quota's name.
    pub quota: String,
    /// Application or namespace.
    pub scope: Scope,
    /// The refusal, for the user.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every limit of `quota` that admitting `claim` would exceed, given `usage` (the totals
/// without the claimed pod). Empty when the pod fits.
pub fn check(quota: &Quota, claim: &Claim, usage: &Usage) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut refuse = |scope, message: String| {
        violations.push(Violation {
            quota: quota.name.clone(),
            scope,
            message: format!("quota {}: {message}", quota.name),
        });
    };
    if let (Some(limits), Some(app), Some(totals)) =
        (&quota.per_application, &claim.entry.app, usage.app)
    {
        // Only written when a limit is exceeded: admitting is the common path.
        let who = || match &claim.entry.app_name {
            Some(name) => format!("application {app} ({name})"),
            None => format!("application {app}"),
        };
        if let Some(max) = limits.max_executors
            && claim.entry.role == Role::Executor
            && claim.kind == ClaimKind::Create
        {
            let executors = u64::from(totals.executors) + 1;
            if executors > u64::from(max) {
                refuse(
                    Scope::Application,
                    format!(
                        "{} would have {executors} executors, the limit is {max}; {}",
                        who(),
                        EXECUTOR_COUNT_SETTINGS
                    ),
                );
            }
        }
        for message in over_charge_limits(
            limits,
            totals.charge.plus(claim.entry.charge),
            claim.entry.role,
        ) {
            refuse(Scope::Application, format!("{} {message}", who()));
        }
    }
    if let Some(limits) = &quota.per_namespace {
        let namespace = &claim.key.namespace;
        if let Some(max) = limits.max_applications
            && claim.kind == ClaimKind::Create
            && claim.entry.app.is_some()
            && !usage.app.is_some_and(|app| app.present)
        {
            let applications = u64::from(usage.applications) + 1;
            if applications > u64::from(max) {
                refuse(
                    Scope::Namespace,
                    format!(
                        "namespace {namespace} would have {applications} Spark applications, the limit is {max}; submit it again when one of them has finished"
                    ),
                );
            }
        }
        for message in over_charge_limits(
            limits,
            usage.namespace.plus(claim.entry.charge),
            claim.entry.role,
        ) {
            refuse(
                Scope::Namespace,
                format!(
                    "Spark in namespace {namespace} {message}, or wait for other applications to finish"
                ),
            );
        }
    }
    violations
}

/// "would use ..., the limit is ...; <settings>" for the CPU and memory limits `reached` is
/// over.
fn over_charge_limits(limits: &QuotaLimits, reached: Charge, role: Role) -> Vec<String> {
    let mut messages = Vec::new();
    if let Some(max) = &limits.max_cpu
        && reached.cpu > max.nanos()
    {
        messages.push(format!(
            "would use {} CPUs, the limit is {max}; {}",
            format_cpu(reached.cpu),
            cpu_settings(role)
        ));
    }
    if let Some(max) = &limits.max_memory
        && reached.memory > max.nanos()
    {
        messages.push(format!(
            "would use {} of memory, the limit is {max}; {}",
            format_memory(reached.memory),
            memory_settings(role)
        ));
    }
    messages
}

/// Whether admitting `claim` brings its application within `margin` pods like it of one of
/// `quota`'s per-application limits: the point from which the watch's view is confirmed with
/// a consistent read before deciding (the watch may lag behind pods other replicas admitted).
pub fn near_application_limit(quota: &Quota, claim: &Claim, usage: &Usage, margin: u32) -> bool {
    let (Some(limits), Some(_), Some(totals)) =
        (&quota.per_application, &claim.entry.app, usage.app)
    else {
        return false;
    };
    let margin = i128::from(margin);
    let executors_near = limits.max_executors.is_some_and(|max| {
        claim.entry.role == Role::Executor
            && claim.kind == ClaimKind::Create
            && i128::from(totals.executors) + 1 + margin > i128::from(max)
    });
    executors_near || charge_near(limits, totals.charge, claim.entry.charge, margin)
}

/// Whether `margin` + 1 more pods charging `pod` on top of `used` would pass the CPU or memory
/// limit of `limits` (a resource the pod does not ask for is never near).
fn charge_near(limits: &QuotaLimits, used: Charge, pod: Charge, margin: i128) -> bool {
    let reached = used.plus(pod.times(1 + margin));
    let cpu_near = limits
        .max_cpu
        .as_ref()
        .is_some_and(|max| pod.cpu > 0 && reached.cpu > max.nanos());
    let memory_near = limits
        .max_memory
        .as_ref()
        .is_some_and(|max| pod.memory > 0 && reached.memory > max.nanos());
    cpu_near || memory_near
}

/// Whether admitting `claim` brings its namespace within `margin` pods like it of one of
/// `quota`'s per-namespace limits: the point from which, with callers verified, the decision is
/// also made on the admissions every replica has in flight there ([`super::room`]).
pub fn near_namespace_limit(quota: &Quota, claim: &Claim, usage: &Usage, margin: u32) -> bool {
    let Some(limits) = &quota.per_namespace else {
        return false;
    };
    if claim.kind != ClaimKind::Create {
        return false;
    }
    let margin = i128::from(margin);
    let new_application =
        claim.entry.app.is_some() && !usage.app.is_some_and(|totals| totals.present);
    let applications_near = limits.max_applications.is_some_and(|max| {
        new_application && i128::from(usage.applications) + 1 + margin > i128::from(max)
    });
    applications_near || charge_near(limits, usage.namespace, claim.entry.charge, margin)
}

const EXECUTOR_COUNT_SETTINGS: &str =
    "ask for fewer with spark.executor.instances or spark.dynamicAllocation.maxExecutors";

fn cpu_settings(role: Role) -> &'static str {
    match role {
        Role::Executor => {
            "ask for fewer executors (spark.executor.instances, spark.dynamicAllocation.maxExecutors) or fewer cores each (spark.executor.cores, spark.kubernetes.executor.request.cores)"
        }
        Role::Driver => {
            "ask for fewer driver cores (spark.driver.cores, spark.kubernetes.driver.request.cores)"
        }
    }
}

fn memory_settings(role: Role) -> &'static str {
    match role {
        Role::Executor => {
            "ask for fewer executors (spark.executor.instances, spark.dynamicAllocation.maxExecutors) or less memory each (spark.executor.memory, spark.executor.memoryOverhead)"
        }
        Role::Driver => {
            "ask for less driver memory (spark.driver.memory, spark.driver.memoryOverhead)"
        }
    }
}

const NANOS: i128 = 1_000_000_000;

/// CPU in cores, as a decimal with at most three decimals (`12`, `12.5`, `0.25`).
pub fn format_cpu(nanos: i128) -> String {
    let millis = (nanos + 999_999).div_euclid(1_000_000);
    let (whole, fraction) = (millis / 1000, millis % 1000);
    if fraction == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{fraction:03}")
            .trim_end_matches('0')
            .to_owned()
    }
}

/// Memory in the largest binary unit it is a whole multiple of (`2432Mi`, `800Gi`), else in
/// the largest unit it reaches, with two decimals (`1.5Gi`).
pub fn format_memory(nanos: i128) -> String {
    let bytes = (nanos + NANOS - 1).div_euclid(NANOS);
    const UNITS: [(&str, i128); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if bytes >= size && bytes % size == 0 && bytes / size < 100_000 {
            return format!("{}{suffix}", bytes / size);
        }
    }
    for (suffix, size) in UNITS {
        if bytes >= size {
            let hundredths = (bytes * 100 + size - 1) / size;
            let text = format!("{}.{:02}", hundredths / 100, hundredths % 100);
            return format!(
                "{}{suffix}",
                text.trim_end_matches('0').trim_end_matches('.')
            );
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::policy::{Policy, Quantity};
    use crate::quota::ledger::{AppTotals, Entry, PodKey};

    const CORE: i128 = NANOS;
    const GI: i128 = (1 << 30) * NANOS;

    fn quota(text: &str) -> Quota {
        Policy::parse(text).unwrap().quotas.remove(0)
    }

    fn claim(role: Role, app: Option<&str>, cpu: i128, memory: i128) -> Claim {
        Claim {
            key: PodKey {
                namespace: "analytics".to_owned(),
                name: "p".to_owned(),
            },
            entry: Entry {
                app: app.map(str::to_owned),
                app_name: app.map(|_| "nightly-etl".to_owned()),
                role,
                charge: Charge { cpu, memory },
            },
            quotas: vec![0],
            kind: ClaimKind::Create,
            storable: true,
        }
    }

    fn usage(executors: u32, app_cpu: i128, present: bool) -> Usage {
        Usage {
            namespace: Charge {
                cpu: 10 * CORE,
                memory: 10 * GI,
            },
            applications: 3,
            app: Some(AppTotals {
                executors,
                charge: Charge {
                    cpu: app_cpu,
                    memory: GI,
                },
                present,
            }),
        }
    }

    #[test]
    fn the_executor_over_the_limit_is_refused_with_the_spec_message() {
        let quota = quota("quotas: [{name: analytics-apps, perApplication: {maxExecutors: 50}}]");
        let mut claim = claim(Role::Executor, Some("spark-1234"), CORE, GI);
        assert!(check(&quota, &claim, &usage(49, 0, true)).is_empty());
        let refused = check(&quota, &claim, &usage(50, 0, true));
        assert_eq!(
            refused,
            vec![Violation {
                quota: "analytics-apps".to_owned(),
                scope: Scope::Application,
                message: "quota analytics-apps: application spark-1234 (nightly-etl) would have 51 executors, the limit is 50; ask for fewer with spark.executor.instances or spark.dynamicAllocation.maxExecutors".to_owned(),
            }]
        );
        // A driver is not an executor.
        claim.entry.role = Role::Driver;
        assert!(check(&quota, &claim, &usage(50, 0, true)).is_empty());
    }

    #[test]
    fn application_cpu_and_memory_count_driver_and_executors_together() {
        let quota = quota("quotas: [{name: q, perApplication: {maxCpu: '8', maxMemory: 4Gi}}]");
        let claim = claim(Role::Executor, Some("spark-1"), 2 * CORE, 2 * GI);
        assert!(check(&quota, &claim, &usage(2, 6 * CORE, true)).is_empty());
        let refused = check(&quota, &claim, &usage(2, 6 * CORE + 1, true));
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0].message,
            "quota q: application spark-1 (nightly-etl) would use 8.001 CPUs, the limit is 8; ask for fewer executors (spark.executor.instances, spark.dynamicAllocation.maxExecutors) or fewer cores each (spark.executor.cores, spark.kubernetes.executor.request.cores)"
        );
        let mut big = usage(2, 0, true);
        big.app = big.app.map(|mut a| {
            a.charge.memory = 3 * GI;
            a
        });
        let refused = check(&quota, &claim, &big);
        assert_eq!(
            refused[0].message,
            "quota q: application spark-1 (nightly-etl) would use 5Gi of memory, the limit is 4Gi; ask for fewer executors (spark.executor.instances, spark.dynamicAllocation.maxExecutors) or less memory each (spark.executor.memory, spark.executor.memoryOverhead)"
        );
    }

    #[test]
    fn a_pod_without_an_application_counts_for_its_namespace_only() {
        let quota = quota(
            "quotas: [{name: q, perApplication: {maxExecutors: 0}, perNamespace: {maxCpu: '11', maxApplications: 3}}]",
        );
        let mut totals = usage(5, 0, false);
        totals.app = None;
        let claim = claim(Role::Executor, None, CORE, GI);
        assert!(
            check(&quota, &claim, &totals).is_empty(),
            "no app: no app limit and no new application"
        );
        let mut big = claim;
        big.entry.charge = Charge {
            cpu: CORE + 1,
            memory: 0,
        };
        let refused = check(&quota, &big, &totals);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].scope, Scope::Namespace);
        assert!(
            refused[0].message.starts_with(
                "quota q: Spark in namespace analytics would use 11.001 CPUs, the limit is 11; "
            ),
            "{}",
            refused[0].message
        );
    }

    #[test]
    fn a_new_application_over_max_applications_is_refused_but_a_known_one_is_not() {
        let quota = quota("quotas: [{name: q, perNamespace: {maxApplications: 3}}]");
        let claim = claim(Role::Driver, Some("spark-new"), CORE, GI);
        let refused = check(&quota, &claim, &usage(0, 0, false));
        assert_eq!(
            refused
                .iter()
                .map(|v| v.message.as_str())
                .collect::<Vec<_>>(),
            [
                "quota q: namespace analytics would have 4 Spark applications, the limit is 3; submit it again when one of them has finished"
            ]
        );
        assert!(check(&quota, &claim, &usage(0, 0, true)).is_empty());
    }

    #[test]
    fn every_limit_exceeded_is_reported() {
        let quota = quota(
            "quotas: [{name: q, perApplication: {maxExecutors: 1, maxCpu: '1'}, perNamespace: {maxMemory: 1Gi}}]",
        );
        let refused = check(
            &quota,
            &claim(Role::Executor, Some("a"), CORE, GI),
            &usage(1, CORE, true),
        );
        let scopes: Vec<Scope> = refused.iter().map(|v| v.scope).collect();
        assert_eq!(
            scopes,
            [Scope::Application, Scope::Application, Scope::Namespace]
        );
    }

    #[test]
    fn near_the_limit_means_within_margin_pods_like_this_one() {
        let quota = quota("quotas: [{name: q, perApplication: {maxExecutors: 50}}]");
        let claim = claim(Role::Executor, Some("a"), CORE, GI);
        assert!(!near_application_limit(
            &quota,
            &claim,
            &usage(39, 0, true),
            10
        ));
        assert!(near_application_limit(
            &quota,
            &claim,
            &usage(40, 0, true),
            10
        ));
        assert!(near_application_limit(
            &quota,
            &claim,
            &usage(60, 0, true),
            0
        ));
        let cpu = Quota {
            per_application: Some(QuotaLimits {
                max_cpu: Some(Quantity::parse("20").unwrap()),
                ..QuotaLimits::default()
            }),
            ..quota.clone()
        };
        assert!(!near_application_limit(
            &cpu,
            &claim,
            &usage(0, 9 * CORE, true),
            10
        ));
        assert!(near_application_limit(
            &cpu,
            &claim,
            &usage(0, 9 * CORE + 1, true),
            10
        ));
    }

    #[test]
    fn quantities_read_like_kubernetes_writes_them() {
        assert_eq!(format_cpu(12 * CORE), "12");
        assert_eq!(format_cpu(12 * CORE + CORE / 2), "12.5");
        assert_eq!(format_cpu(CORE / 4), "0.25");
        assert_eq!(format_cpu(1), "0.001", "rounded up to a millicore");
        assert_eq!(format_memory(2432 * (1 << 20) * NANOS), "2432Mi");
        assert_eq!(format_memory(800 * GI), "800Gi");
        assert_eq!(format_memory(GI + GI / 2), "1536Mi");
        assert_eq!(
            format_memory(GI + 1000 * NANOS),
            "1.01Gi",
            "not whole: rounded up, so a value over the limit never reads as the limit"
        );
        assert_eq!(format_memory(500 * NANOS), "500");
    }
}
