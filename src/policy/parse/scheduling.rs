//! Where a rule sends pods: `nodeSelector`, `affinity.nodeAffinity`, `tolerations`,
//! `priorityClassName` and `schedulerName`, with strict mirrors of the Kubernetes types.
//!
//! Only reads and checks them, by the apiserver's rules for these fields (operators, keys,
//! weights, effects); combining them with the pod's is `engine::scheduling`'s business. Never
//! stops at the first problem: each one is reported with its path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeAffinity, Toleration};
use serde::Deserialize;
use serde_json::Value;

use crate::policy::labels::{check_dns_subdomain, check_label_value, check_qualified_name};

use super::{Checker, Unknown, index_path, key_path};

impl Checker {
    pub(super) fn node_selector(&mut self, value: &Value, path: &str) -> BTreeMap<String, String> {
        let selector = self.string_map(value, path);
        for (key, value) in &selector {
            self.check_label(path, key, Some(value));
        }
        selector
    }

    pub(super) fn affinity(&mut self, value: &Value, path: &str) -> Option<NodeAffinity> {
        let map = self.object(value, path, &["nodeAffinity"])?;
        let node_path = key_path(path, "nodeAffinity");
        let node = map.get("nodeAffinity")?;
        let raw: RawNodeAffinity = self.typed(node, &node_path)?;
        let before = self.problems.len();
        self.report_unknown(&raw.unknown, &node_path, RawNodeAffinity::FIELDS);
        if let Some(required) = &raw.required {
            let required_path =
                key_path(&node_path, "requiredDuringSchedulingIgnoredDuringExecution");
            self.report_unknown(&required.unknown, &required_path, &["nodeSelectorTerms"]);
            if required.node_selector_terms.is_empty() {
                self.problem(
                    key_path(&required_path, "nodeSelectorTerms"),
                    "must hold at least one term",
                );
            }
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                self.term(
                    term,
                    &index_path(&key_path(&required_path, "nodeSelectorTerms"), i),
                );
            }
        }
        for (i, preferred) in raw.preferred.iter().flatten().enumerate() {
            let p = index_path(
                &key_path(
                    &node_path,
                    "preferredDuringSchedulingIgnoredDuringExecution",
                ),
                i,
            );
            self.report_unknown(&preferred.unknown, &p, &["weight", "preference"]);
            if !(1..=100).contains(&preferred.weight) {
                self.problem(
                    key_path(&p, "weight"),
                    format!("{} is out of range; allowed: 1 to 100", preferred.weight),
                );
            }
            self.term(&preferred.preference, &key_path(&p, "preference"));
        }
        if self.problems.len() != before {
            return None;
        }
        // Structure checked above; the Kubernetes type reads the same document.
        self.typed(node, &node_path)
    }

    fn term(&mut self, term: &RawTerm, path: &str) {
        self.report_unknown(&term.unknown, path, &["matchExpressions", "matchFields"]);
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if expressions.is_empty() && fields.is_empty() {
            // Kubernetes treats an empty term as matching no node at all.
            self.problem(
                path,
                "an empty term matches no node; give matchExpressions or matchFields",
            );
        }
        for (i, requirement) in expressions.iter().enumerate() {
            let p = index_path(&key_path(path, "matchExpressions"), i);
            if let Err(why) = check_qualified_name(&requirement.key) {
                self.problem(
                    key_path(&p, "key"),
                    format!("{:?} is not a valid label key: {why}", requirement.key),
                );
            }
            self.requirement(requirement, &p);
        }
        for (i, requirement) in fields.iter().enumerate() {
            let p = index_path(&key_path(path, "matchFields"), i);
            if requirement.key != "metadata.name" {
                self.problem(
                    key_path(&p, "key"),
                    format!(
                        "{:?} is not a node field; allowed: metadata.name",
                        requirement.key
                    ),
                );
            }
            self.requirement(requirement, &p);
        }
    }

    fn requirement(&mut self, requirement: &RawRequirement, path: &str) {
        self.report_unknown(&requirement.unknown, path, &["key", "operator", "values"]);
        let values = requirement.values.as_deref().unwrap_or_default();
        let problem = match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => Some((
                "values",
                format!("operator {} needs at least one value", requirement.operator),
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => Some((
                "values",
                format!("operator {} takes no values", requirement.operator),
            )),
            "Gt" | "Lt" if values.len() != 1 || values[0].parse::<i64>().is_err() => Some((
                "values",
                format!(
                    "operator {} needs exactly one integer value",
                    requirement.operator
                ),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => None,
            other => Some((
                "operator",
                format!(
                    "{other:?} is not an operator; allowed: In, NotIn, Exists, DoesNotExist, Gt, Lt"
                ),
            )),
        };
        if let Some((field, message)) = problem {
            self.problem(key_path(path, field), message);
        }
        for (i, value) in values.iter().enumerate() {
            if let Err(why) = check_label_value(value) {
                self.problem(
                    index_path(&key_path(path, "values"), i),
                    format!("{value:?} is not a valid label value: {why}"),
                );
            }
        }
    }

    pub(super) fn toleration(&mut self, value: &Value, path: &str) -> Option<Toleration> {
        let raw: RawToleration = self.typed(value, path)?;
        let before = self.problems.len();
        self.report_unknown(&raw.unknown, path, RawToleration::FIELDS);
        let operator = raw.operator.as_deref().unwrap_or("Equal");
        match operator {
            "Equal" | "" => {
                if raw.key.as_deref().unwrap_or_default().is_empty() {
                    self.problem(
                        key_path(path, "key"),
                        "an empty key matches every taint and needs operator Exists",
                    );
                }
            }
            "Exists" => {
                if !raw.value.as_deref().unwrap_or_default().is_empty() {
                    self.problem(
                        key_path(path, "value"),
                        "operator Exists takes no value; remove it or use operator Equal",
                    );
                }
            }
            other => self.problem(
                key_path(path, "operator"),
                format!("{other:?} is not a toleration operator; allowed: Equal, Exists"),
            ),
        }
        if let Some(key) = raw.key.as_deref().filter(|k| !k.is_empty())
            && let Err(why) = check_qualified_name(key)
        {
            self.problem(
                key_path(path, "key"),
                format!("{key:?} is not a valid taint key: {why}"),
            );
        }
        let effect = raw.effect.as_deref().unwrap_or_default();
        if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            self.problem(key_path(path, "effect"), format!("{effect:?} is not a taint effect; allowed: NoSchedule, PreferNoSchedule, NoExecute (or omit it for all)"));
        }
        if raw.toleration_seconds.is_some() && effect != "NoExecute" {
            self.problem(
                key_path(path, "tolerationSeconds"),
                "only applies with effect NoExecute",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        self.typed(value, path)
    }

    pub(super) fn dns_name(&mut self, value: &Value, path: &str, what: &str) -> Option<String> {
        let name = self.string(value, path)?;
        if let Err(why) = check_dns_subdomain(&name) {
            self.problem(path, format!("{name:?} is not {what}: it {why}"));
            return None;
        }
        Some(name)
    }
}

// Strict mirrors of the Kubernetes types a policy may hold. Kubernetes' own types ignore
// unknown fields; these capture them so typos become errors.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeAffinity {
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    required: Option<RawNodeSelector>,
    #[serde(rename = "preferredDuringSchedulingIgnoredDuringExecution")]
    preferred: Option<Vec<RawPreferred>>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RawNodeAffinity {
    const FIELDS: &[&str] = &[
        "requiredDuringSchedulingIgnoredDuringExecution",
        "preferredDuringSchedulingIgnoredDuringExecution",
    ];
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeSelector {
    node_selector_terms: Vec<RawTerm>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTerm {
    match_expressions: Option<Vec<RawRequirement>>,
    match_fields: Option<Vec<RawRequirement>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
struct RawRequirement {
    key: String,
    operator: String,
    values: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
struct RawPreferred {
    weight: i32,
    preference: RawTerm,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawToleration {
    key: Option<String>,
    operator: Option<String>,
    value: Option<String>,
    effect: Option<String>,
    toleration_seconds: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RawToleration {
    const FIELDS: &[&str] = &["key", "operator", "value", "effect", "tolerationSeconds"];
}
