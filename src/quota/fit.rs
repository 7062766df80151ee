//! How many more executors of one size fit an application's per-application limits: the
//! number spark-admission lowers a cluster-mode application's executor counts to (SPEC §5a).
//!
//! Per quota: `maxExecutors` minus the executors it has, and what `maxCpu` / `maxMemory` leave
//! after its pods so far (the driver, at submission) divided by one executor's charge. The
//! smallest over every matching quota wins. Namespace limits are left out on purpose: they are
//! shared with other applications whose use comes and goes, so lowering an application for
//! the namespace's state at one moment would shrink it for its whole life.

use crate::policy::Quota;

use super::Charge;
use super::check::{format_cpu, format_memory};
use super::ledger::AppTotals;

/// The executors that fit, and the limit that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// How many executors fit.
    pub executors: u64,
    /// The quota whose limit is the tightest.
    pub quota: String,
    /// That limit, in words (`maxExecutors 3`, `maxCpu 8 with 1 CPU in use`).
    pub limit: String,
}

/// The tightest per-application fit over `quotas` for executors charged `executor`, given what
/// the application already has; `None` when no quota limits the application.
pub fn executors_that_fit(quotas: &[&Quota], totals: &AppTotals, executor: Charge) -> Option<Fit> {
    let mut best: Option<Fit> = None;
    let mut consider = |fit: Fit| {
        if best.as_ref().is_none_or(|b| fit.executors < b.executors) {
            best = Some(fit);
        }
    };
    for quota in quotas {
        let Some(limits) = &quota.per_application else {
            continue;
        };
        if let Some(max) = limits.max_executors {
            consider(Fit {
                executors: u64::from(max).saturating_sub(u64::from(totals.executors)),
                quota: quota.name.clone(),
                limit: format!("maxExecutors {max}"),
            });
        }
        if let Some(max) = &limits.max_cpu
            && executor.cpu > 0
        {
            consider(Fit {
                executors: room(max.nanos(), totals.charge.cpu, executor.cpu),
                quota: quota.name.clone(),
                limit: format!(
                    "maxCpu {} with {} CPU in use, {} CPU per executor",
                    format_cpu(max.nanos()),
                    format_cpu(totals.charge.cpu),
                    format_cpu(executor.cpu)
                ),
            });
        }
        if let Some(max) = &limits.max_memory
            && executor.memory > 0
        {
            consider(Fit {
                executors: room(max.nanos(), totals.charge.memory, executor.memory),
                quota: quota.name.clone(),
                limit: format!(
                    "maxMemory {} with {} in use, {} per executor",
                    max,
                    format_memory(totals.charge.memory),
                    format_memory(executor.memory)
                ),
            });
        }
    }
    best
}

/// Whole executors of `each` that fit between `used` and `max`.
fn room(max: i128, used: i128, each: i128) -> u64 {
    let free = max.saturating_sub(used);
    if free <= 0 || each <= 0 {
        return 0;
    }
    u64::try_from(free / each).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::policy::Policy;

    const CORE: i128 = 1_000_000_000;
    const GI: i128 = (1 << 30) * 1_000_000_000;

    fn driver_only() -> AppTotals {
        AppTotals {
            executors: 0,
            charge: Charge {
                cpu: CORE,
                memory: GI + GI / 2,
            },
            present: true,
        }
    }

    #[test]
    fn the_tightest_limit_of_every_matching_quota_decides() {
        let policy = Policy::parse(
            r#"
quotas:
  - {name: count, perApplication: {maxExecutors: 10}}
  - {name: size, perApplication: {maxCpu: "9", maxMemory: 64Gi}}
  - {name: namespace-only, perNamespace: {maxCpu: "1"}}
"#,
        )
        .unwrap();
        let quotas: Vec<&Quota> = policy.quotas.iter().collect();
        let executor = Charge {
            cpu: 2 * CORE,
            memory: 4 * GI,
        };
        // CPU: (9 - 1) / 2 = 4; memory: (64 - 1.5) / 4 = 15; count: 10.
        assert_eq!(
            executors_that_fit(&quotas, &driver_only(), executor),
            Some(Fit {
                executors: 4,
                quota: "size".to_owned(),
                limit: "maxCpu 9 with 1 CPU in use, 2 CPU per executor".to_owned(),
            })
        );
        let only_namespace = [quotas[2]];
        assert_eq!(
            executors_that_fit(&only_namespace, &driver_only(), executor),
            None
        );
    }

    #[test]
    fn executors_already_running_count_and_nothing_goes_below_zero() {
        let policy =
            Policy::parse("quotas: [{name: q, perApplication: {maxExecutors: 3, maxMemory: 1Gi}}]")
                .unwrap();
        let quotas: Vec<&Quota> = policy.quotas.iter().collect();
        let totals = AppTotals {
            executors: 2,
            ..AppTotals::default()
        };
        let fit = executors_that_fit(
            &quotas,
            &totals,
            Charge {
                cpu: CORE,
                memory: GI / 4,
            },
        )
        .unwrap();
        assert_eq!((fit.executors, fit.limit.as_str()), (1, "maxExecutors 3"));
        let fit = executors_that_fit(
            &quotas,
            &driver_only(),
            Charge {
                cpu: CORE,
                memory: GI,
            },
        )
        .unwrap();
        assert_eq!(
            fit.executors, 0,
            "the driver alone is over the memory limit"
        );
    }
}
