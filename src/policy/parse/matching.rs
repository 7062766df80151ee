//! A rule's or a quota's `match` block: namespaces, roles, application names, pod labels and
//! service accounts, with the globs they are written in.
//!
//! Only reads and checks the selector; whether it selects a pod is `engine::matching`'s
//! business. Never stops at the first problem: each one is reported with its path.

use serde_json::Value;

use crate::policy::{Glob, Role, Selector};

use super::{Checker, key_path, scalar_text};

impl Checker {
    fn globs(&mut self, value: &Value, path: &str, lower_dns: bool) -> Vec<Glob> {
        self.list(value, path, |c, item, p| {
            let text = c.string(item, p)?;
            if lower_dns
                && let Some(bad) = text.chars().find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '.' | '*' | '?')))
            {
                c.problem(p, format!("{text:?} cannot match any name: {bad:?} never appears in Kubernetes names (lower case a-z, 0-9, '-', '.'; plus * and ? as wildcards)"));
                return None;
            }
            match Glob::new(&text) {
                Ok(glob) => Some(glob),
                Err(why) => {
                    c.problem(p, why);
                    None
                }
            }
        })
    }

    pub(super) fn selector(&mut self, value: &Value, path: &str, roles_allowed: bool) -> Selector {
        const FIELDS: &[&str] = &[
            "namespaces",
            "roles",
            "appNames",
            "podLabels",
            "serviceAccounts",
        ];
        let mut selector = Selector::default();
        let Some(map) = self.object(value, path, FIELDS) else {
            return selector;
        };
        for (key, value) in map {
            let field = key_path(path, key);
            match key.as_str() {
                "namespaces" => selector.namespaces = self.globs(value, &field, true),
                "appNames" => selector.app_names = self.globs(value, &field, false),
                "serviceAccounts" => selector.service_accounts = self.globs(value, &field, true),
                "roles" if !roles_allowed => self.problem(
                    field,
                    "a quota counts every Spark pod of an application, drivers and executors alike, so roles cannot be set here; remove it",
                ),
                "roles" => {
                    selector.roles = self.list(value, &field, |c, item, p| match item.as_str().and_then(Role::from_label) {
                        Some(role) => Some(role),
                        None => {
                            c.problem(p, format!("{} is not a Spark role; allowed: driver, executor", scalar_text(item)));
                            None
                        }
                    })
                }
                "podLabels" => {
                    selector.pod_labels = self.string_map(value, &field);
                    for (k, v) in &selector.pod_labels {
                        self.check_label(&field, k, Some(v));
                    }
                }
                _ => {}
            }
        }
        selector
    }
}
