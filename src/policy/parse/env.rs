//! A rule's `env`: variable names, values and `valueFrom` sources, with strict mirrors of the
//! Kubernetes types.
//!
//! Only reads and checks the variables; putting them into containers is `engine::env`'s
//! business. Never stops at the first problem: each one is reported with its path.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::EnvVar;
use serde::Deserialize;
use serde_json::Value;

use crate::policy::Quantity;
use crate::policy::labels::check_dns_subdomain;

use super::{Checker, Unknown, index_path, key_path};

impl Checker {
    pub(super) fn env(&mut self, value: &Value, path: &str) -> Vec<EnvVar> {
        let vars = self.list(value, path, |c, v, p| c.env_var(v, p));
        let mut seen = BTreeSet::new();
        for (i, var) in vars.iter().enumerate() {
            if !seen.insert(var.name.as_str()) {
                self.problem(
                    index_path(path, i),
                    format!("{:?} is listed twice; each variable once", var.name),
                );
            }
        }
        vars
    }

    fn env_var(&mut self, value: &Value, path: &str) -> Option<EnvVar> {
        let raw: RawEnvVar = self.typed(value, path)?;
        let before = self.problems.len();
        self.report_unknown(&raw.unknown, path, &["name", "value", "valueFrom"]);
        let name_ok = !raw.name.is_empty()
            && !raw.name.starts_with(|c: char| c.is_ascii_digit())
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            self.problem(key_path(path, "name"), format!("{:?} is not a valid variable name; use letters, digits, '_', '-', '.', not starting with a digit", raw.name));
        }
        match (&raw.value, &raw.value_from) {
            (Some(_), Some(_)) => self.problem(path, "give either value or valueFrom, not both"),
            (None, None) => self.problem(path, "needs value or valueFrom"),
            _ => {}
        }
        if let Some(source) = &raw.value_from {
            let p = key_path(path, "valueFrom");
            self.report_unknown(&source.unknown, &p, RawEnvSource::FIELDS);
            let count = [
                source.secret_key_ref.is_some(),
                source.config_map_key_ref.is_some(),
                source.field_ref.is_some(),
                source.resource_field_ref.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if count != 1 {
                self.problem(
                    &p,
                    format!("needs exactly one of {}", RawEnvSource::FIELDS.join(", ")),
                );
            }
            for (field, selector) in [
                ("secretKeyRef", &source.secret_key_ref),
                ("configMapKeyRef", &source.config_map_key_ref),
            ] {
                let Some(selector) = selector else { continue };
                let sp = key_path(&p, field);
                self.report_unknown(&selector.unknown, &sp, &["name", "key", "optional"]);
                match &selector.name {
                    None => self.problem(
                        key_path(&sp, "name"),
                        "missing; name the object to read from",
                    ),
                    Some(name) => {
                        if let Err(why) = check_dns_subdomain(name) {
                            self.problem(
                                key_path(&sp, "name"),
                                format!("{name:?} is not an object name: it {why}"),
                            );
                        }
                    }
                }
                match &selector.key {
                    None => self.problem(key_path(&sp, "key"), "missing; name the key to read"),
                    Some(key)
                        if key.is_empty()
                            || !key.chars().all(|c| {
                                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
                            }) =>
                    {
                        self.problem(
                            key_path(&sp, "key"),
                            format!(
                                "{key:?} is not a valid key; use letters, digits, '-', '_', '.'"
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            if let Some(field_ref) = &source.field_ref {
                self.report_unknown(
                    &field_ref.unknown,
                    &key_path(&p, "fieldRef"),
                    &["apiVersion", "fieldPath"],
                );
            }
            if let Some(resource_ref) = &source.resource_field_ref {
                let rp = key_path(&p, "resourceFieldRef");
                self.report_unknown(
                    &resource_ref.unknown,
                    &rp,
                    &["containerName", "resource", "divisor"],
                );
                if let Some(divisor) = &resource_ref.divisor
                    && let Err(why) = Quantity::parse(divisor)
                {
                    self.problem(key_path(&rp, "divisor"), why.to_string());
                }
            }
        }
        if self.problems.len() != before {
            return None;
        }
        self.typed(value, path)
    }
}

// Strict mirrors of the Kubernetes types a policy may hold. Kubernetes' own types ignore
// unknown fields; these capture them so typos become errors.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<RawEnvSource>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvSource {
    secret_key_ref: Option<RawKeySelector>,
    config_map_key_ref: Option<RawKeySelector>,
    field_ref: Option<RawFieldRef>,
    resource_field_ref: Option<RawResourceFieldRef>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RawEnvSource {
    const FIELDS: &[&str] = &[
        "secretKeyRef",
        "configMapKeyRef",
        "fieldRef",
        "resourceFieldRef",
    ];
}

#[derive(Deserialize)]
struct RawKeySelector {
    name: Option<String>,
    key: Option<String>,
    #[serde(rename = "optional")]
    _optional: Option<bool>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFieldRef {
    #[serde(rename = "apiVersion")]
    _api_version: Option<String>,
    #[serde(rename = "fieldPath")]
    _field_path: String,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResourceFieldRef {
    #[serde(rename = "containerName")]
    _container_name: Option<String>,
    #[serde(rename = "resource")]
    _resource: String,
    divisor: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}
