//! The policy's `quotas`: name, `match` (without roles), and the per-application and
//! per-namespace limits.
//!
//! Only reads and checks them; counting live pods against them is `crate::quota`'s business.
//! Never stops at the first problem: each one is reported with its path.

use serde_json::Value;

use crate::policy::{Quota, QuotaLimits};

use super::{Checker, key_path};

const QUOTA_FIELDS: &[&str] = &["name", "match", "perApplication", "perNamespace"];

impl Checker {
    pub(super) fn quota(&mut self, value: &Value, path: &str) -> Option<Quota> {
        let map = self.object(value, path, QUOTA_FIELDS)?;
        let mut quota = Quota {
            name: self.name(map, path),
            ..Quota::default()
        };
        if let Some(selector) = map.get("match") {
            quota.selector = self.selector(selector, &key_path(path, "match"), false);
        }
        if let Some(limits) = map.get("perApplication") {
            quota.per_application =
                self.quota_limits(limits, &key_path(path, "perApplication"), true);
        }
        if let Some(limits) = map.get("perNamespace") {
            quota.per_namespace = self.quota_limits(limits, &key_path(path, "perNamespace"), false);
        }
        if quota.per_application.is_none() && quota.per_namespace.is_none() {
            self.problem(path, "a quota needs perApplication or perNamespace limits");
        }
        Some(quota)
    }

    fn quota_limits(
        &mut self,
        value: &Value,
        path: &str,
        per_application: bool,
    ) -> Option<QuotaLimits> {
        let allowed: &[&str] = if per_application {
            &["maxExecutors", "minExecutors", "maxCpu", "maxMemory"]
        } else {
            &["maxApplications", "maxCpu", "maxMemory"]
        };
        let map = self.object(value, path, allowed)?;
        let mut limits = QuotaLimits::default();
        if let Some(max) = map.get("maxExecutors") {
            limits.max_executors = self.typed::<u32>(max, &key_path(path, "maxExecutors"));
        }
        if let Some(min) = map.get("minExecutors") {
            limits.min_executors = self.typed::<u32>(min, &key_path(path, "minExecutors"));
            if let (Some(min), Some(max)) = (limits.min_executors, limits.max_executors)
                && min > max
            {
                self.problem(
                    key_path(path, "minExecutors"),
                    format!("{min} is above maxExecutors {max}: no application could be admitted"),
                );
            }
        }
        if let Some(max) = map.get("maxApplications") {
            limits.max_applications = self.typed::<u32>(max, &key_path(path, "maxApplications"));
        }
        if let Some(max) = map.get("maxCpu") {
            limits.max_cpu = self.quantity(max, &key_path(path, "maxCpu"));
        }
        if let Some(max) = map.get("maxMemory") {
            limits.max_memory = self.quantity(max, &key_path(path, "maxMemory"));
        }
        if map.is_empty() {
            self.problem(
                path,
                format!("sets no limit; give at least one of {}", allowed.join(", ")),
            );
        }
        Some(limits)
    }
}
