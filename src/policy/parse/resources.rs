//! A rule's `resources`: per role, default requests and limits, the max per container, and
//! what happens over it (`onExceed`).
//!
//! Only reads and checks them, including defaults that break the rule's own max; filling and
//! capping containers is `engine::resources`' business. Never stops at the first problem: each
//! one is reported with its path.

use serde_json::Value;

use crate::policy::{OnExceed, ResourceAmounts, ResourcePolicy};

use super::{Checker, key_path, scalar_text};

impl Checker {
    pub(super) fn resources(
        &mut self,
        value: &Value,
        path: &str,
    ) -> (Option<ResourcePolicy>, Option<ResourcePolicy>) {
        let Some(map) = self.object(value, path, &["driver", "executor"]) else {
            return (None, None);
        };
        let driver = map
            .get("driver")
            .and_then(|v| self.resource_policy(v, &key_path(path, "driver")));
        let executor = map
            .get("executor")
            .and_then(|v| self.resource_policy(v, &key_path(path, "executor")));
        (driver, executor)
    }

    fn resource_policy(&mut self, value: &Value, path: &str) -> Option<ResourcePolicy> {
        let map = self.object(value, path, &["default", "max", "onExceed"])?;
        let mut policy = ResourcePolicy::default();
        if let Some(default) = map.get("default") {
            let dp = key_path(path, "default");
            if let Some(amounts) = self.object(default, &dp, &["requests", "limits"]) {
                policy.default = ResourceAmounts {
                    requests: amounts
                        .get("requests")
                        .map(|v| self.quantity_map(v, &key_path(&dp, "requests")))
                        .unwrap_or_default(),
                    limits: amounts
                        .get("limits")
                        .map(|v| self.quantity_map(v, &key_path(&dp, "limits")))
                        .unwrap_or_default(),
                };
            }
        }
        if let Some(max) = map.get("max") {
            policy.max = self.quantity_map(max, &key_path(path, "max"));
        }
        if let Some(on_exceed) = map.get("onExceed") {
            policy.on_exceed = match on_exceed.as_str() {
                Some("deny") => OnExceed::Deny,
                Some("clamp") => OnExceed::Clamp,
                _ => {
                    self.problem(key_path(path, "onExceed"), format!("{} is not allowed; allowed: deny (reject the pod), clamp (lower CPU to the max; memory is still denied)", scalar_text(on_exceed)));
                    OnExceed::Deny
                }
            };
        }
        // Defaults that break the rule's own max or each other would reject or break every pod
        // that relies on them.
        for (resource, request) in &policy.default.requests {
            if let Some(limit) = policy.default.limits.get(resource).filter(|l| request > *l) {
                self.problem(key_path(path, &format!("default.requests.{resource}")), format!("{request} is above the default limit {limit}; a request must not exceed its limit"));
            }
        }
        for (kind, amounts) in [
            ("requests", &policy.default.requests),
            ("limits", &policy.default.limits),
        ] {
            for (resource, amount) in amounts {
                if let Some(max) = policy.max.get(resource).filter(|m| amount > *m) {
                    self.problem(key_path(path, &format!("default.{kind}.{resource}")), format!("{amount} is above this rule's max {max}; every pod given this default would be over the max"));
                }
            }
        }
        Some(policy)
    }
}
