//! Lowering an application's executor counts to a number that fits its quotas (SPEC §5a).
//!
//! The settings that decide how many executors Spark asks for, with Spark's own defaults:
//! `spark.executor.instances` (static allocation; default 2), and with dynamic allocation
//! `spark.dynamicAllocation.maxExecutors` (default unbounded), `initialExecutors` and
//! `minExecutors` (default 0). Each is lowered to the number that fits when it is above it, or
//! written when its unset default is above it; a value is never raised, and a value that is not
//! a whole number is left for Spark to refuse.

use super::Properties;

/// `spark.executor.instances`.
pub const EXECUTOR_INSTANCES: &str = "spark.executor.instances";
/// `spark.dynamicAllocation.enabled`.
pub const DYNAMIC_ALLOCATION_ENABLED: &str = "spark.dynamicAllocation.enabled";
/// `spark.dynamicAllocation.maxExecutors`.
pub const DYNAMIC_MAX_EXECUTORS: &str = "spark.dynamicAllocation.maxExecutors";
/// `spark.dynamicAllocation.initialExecutors`.
pub const DYNAMIC_INITIAL_EXECUTORS: &str = "spark.dynamicAllocation.initialExecutors";
/// `spark.dynamicAllocation.minExecutors`.
pub const DYNAMIC_MIN_EXECUTORS: &str = "spark.dynamicAllocation.minExecutors";

/// Spark's `spark.executor.instances` when unset and dynamic allocation is off.
const DEFAULT_EXECUTOR_INSTANCES: u64 = 2;

/// One setting lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The setting.
    pub key: &'static str,
    /// Its value before, as written; `None` when it was unset (Spark's default applied).
    pub from: Option<String>,
    /// Its value now.
    pub to: u32,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{}={} (was {from})", self.key, self.to),
            None => write!(f, "{}={} (was unset)", self.key, self.to),
        }
    }
}

/// Whether the configuration turns dynamic allocation on (Spark reads the boolean
/// case-insensitively).
pub fn dynamic_allocation(properties: &Properties) -> bool {
    properties
        .get(DYNAMIC_ALLOCATION_ENABLED)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The fewest executors the application needs to start (SPEC §5b gang admission):
/// `spark.dynamicAllocation.minExecutors` with dynamic allocation (Spark's default 0), else 1.
/// A value that is not a whole number counts as 0: Spark refuses it at start.
pub fn minimum_executors(properties: &Properties) -> u64 {
    if dynamic_allocation(properties) {
        count(properties, DYNAMIC_MIN_EXECUTORS).map_or(0, |read| read.unwrap_or(0))
    } else {
        1
    }
}

/// Lowers every executor count above `fit` to `fit`; returns what changed, in the order
/// written. Nothing is raised.
pub fn lower_executor_counts(properties: &mut Properties, fit: u32) -> Vec<Change> {
    let dynamic = dynamic_allocation(properties);
    let mut changes = Vec::new();
    let mut lower = |properties: &mut Properties, key: &'static str, unset_default: Option<u64>| {
        let from = match count(properties, key) {
            Some(Ok(value)) if value > u64::from(fit) => properties.get(key).map(str::to_owned),
            Some(_) => return,
            None if unset_default.is_none_or(|default| default > u64::from(fit)) => None,
            None => return,
        };
        // Only a text of 4 GiB fails to take the edit; it is then left as it is.
        if properties.set(key, &fit.to_string()).is_ok() {
            changes.push(Change { key, from, to: fit });
        }
    };
    if dynamic {
        // Unset, maxExecutors is unbounded; the others default to at most it.
        lower(properties, DYNAMIC_MAX_EXECUTORS, None);
        lower(properties, DYNAMIC_INITIAL_EXECUTORS, Some(0));
        lower(properties, DYNAMIC_MIN_EXECUTORS, Some(0));
        // With dynamic allocation, instances only raises the initial number.
        lower(properties, EXECUTOR_INSTANCES, Some(0));
    } else {
        lower(
            properties,
            EXECUTOR_INSTANCES,
            Some(DEFAULT_EXECUTOR_INSTANCES),
        );
    }
    changes
}

/// A whole-number setting: `None` unset, `Some(Err)` not a whole number.
fn count(properties: &Properties, key: &str) -> Option<Result<u64, ()>> {
    properties
        .get(key)
        .map(|value| value.trim().parse::<u64>().map_err(|_| ()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn properties(lines: &str) -> Properties {
        Properties::parse(&format!("#comment\n#date\n{lines}")).unwrap()
    }

    #[test]
    fn the_minimum_is_min_executors_with_dynamic_allocation_else_one() {
        assert_eq!(
            minimum_executors(&properties("spark.executor.instances=6\n")),
            1
        );
        let dynamic = "spark.dynamicAllocation.enabled=TRUE\n";
        assert_eq!(minimum_executors(&properties(dynamic)), 0);
        assert_eq!(
            minimum_executors(&properties(&format!(
                "{dynamic}spark.dynamicAllocation.minExecutors=3\n"
            ))),
            3
        );
        assert_eq!(
            minimum_executors(&properties(&format!(
                "{dynamic}spark.dynamicAllocation.minExecutors=x\n"
            ))),
            0
        );
    }

    #[test]
    fn static_instances_above_the_fit_are_lowered_in_place_and_the_rest_kept() {
        let mut conf = properties(
            "spark.executor.memory=2g\nspark.executor.instances=6\nspark.app.name=etl\n",
        );
        let changes = lower_executor_counts(&mut conf, 3);
        assert_eq!(
            changes,
            vec![Change {
                key: EXECUTOR_INSTANCES,
                from: Some("6".to_owned()),
                to: 3
            }]
        );
        assert_eq!(
            conf.text(),
            "#comment\n#date\nspark.executor.memory=2g\nspark.executor.instances=3\nspark.app.name=etl\n"
        );
        assert_eq!(changes[0].to_string(), "spark.executor.instances=3 (was 6)");
    }

    #[test]
    fn values_within_the_fit_are_never_raised() {
        let mut conf = properties("spark.executor.instances=2\n");
        assert!(lower_executor_counts(&mut conf, 3).is_empty());
        assert_eq!(conf.get(EXECUTOR_INSTANCES), Some("2"));
        let mut conf = properties("spark.executor.instances=3\n");
        assert!(lower_executor_counts(&mut conf, 3).is_empty());
    }

    #[test]
    fn unset_instances_count_as_sparks_default_of_two() {
        let mut conf = properties("spark.app.name=etl\n");
        assert!(lower_executor_counts(&mut conf, 2).is_empty());
        let changes = lower_executor_counts(&mut conf, 1);
        assert_eq!(changes[0].from, None);
        assert_eq!(conf.get(EXECUTOR_INSTANCES), Some("1"));
        assert!(
            conf.text()
                .ends_with("spark.app.name=etl\nspark.executor.instances=1\n")
        );
    }

    #[test]
    fn dynamic_allocation_bounds_are_lowered_and_an_unbounded_max_is_written() {
        let mut conf = properties(
            "spark.dynamicAllocation.enabled=True\nspark.dynamicAllocation.minExecutors=5\nspark.dynamicAllocation.initialExecutors=2\n",
        );
        let changes = lower_executor_counts(&mut conf, 4);
        let keys: Vec<_> = changes
            .iter()
            .map(|c| (c.key, c.from.as_deref(), c.to))
            .collect();
        assert_eq!(
            keys,
            [
                (DYNAMIC_MAX_EXECUTORS, None, 4),
                (DYNAMIC_MIN_EXECUTORS, Some("5"), 4),
            ]
        );
        assert_eq!(
            conf.get(DYNAMIC_INITIAL_EXECUTORS),
            Some("2"),
            "within: kept"
        );
    }

    #[test]
    fn a_count_that_is_not_a_whole_number_is_left_for_spark_to_refuse() {
        let mut conf = properties("spark.executor.instances=six\n");
        assert!(lower_executor_counts(&mut conf, 3).is_empty());
        assert_eq!(conf.get(EXECUTOR_INSTANCES), Some("six"));
    }
}
