//! A rule's `sparkConf` (SPEC §5b): settings to `set` in a cluster-mode application's Spark
//! configuration, and `max` caps on its sizes and counts.
//!
//! Only reads and checks them; applying them to a driver's `spark.properties` is
//! `crate::sparkconf`'s business. A cap names a setting Spark reads as a size or a count, in a
//! form Spark reads; a value set for such a setting must be one Spark reads too, and within the
//! same rule's cap. Never stops at the first problem: each one is reported with its path.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::policy::{CAPPABLE, SparkConfRule, SparkMax, Template, cappable, not_settable};

use super::{Checker, key_path, kind_of};

const SPARK_CONF_FIELDS: &[&str] = &["set", "max"];

/// The longest Spark key accepted: far above any Spark has.
const MAX_KEY_CHARS: usize = 256;

impl Checker {
    pub(super) fn spark_conf(&mut self, value: &Value, path: &str) -> Option<SparkConfRule> {
        let map = self.object(value, path, SPARK_CONF_FIELDS)?;
        let mut rule = SparkConfRule::default();
        if let Some(set) = map.get("set") {
            rule.set = self.spark_settings(set, &key_path(path, "set"));
        }
        if let Some(max) = map.get("max") {
            rule.max = self.spark_caps(max, &key_path(path, "max"));
        }
        if !map.contains_key("set") && !map.contains_key("max") {
            self.problem(
                path,
                "sets nothing: give set (settings to write) or max (caps), or remove sparkConf",
            );
        }
        for cap in &rule.max {
            let Some(template) = rule.set.get(cap.setting.key) else {
                continue;
            };
            if template.has_variables() {
                continue;
            }
            if let Ok(value) = cap.setting.reading.read(&template.literal_text())
                && value > cap.limit
            {
                self.problem(
                    key_path(&key_path(path, "set"), cap.setting.key),
                    format!(
                        "{:?} is above this rule's own max {}; every application it is set on would be refused",
                        template.as_str(),
                        cap.text
                    ),
                );
            }
        }
        Some(rule)
    }

    fn spark_key(&mut self, key: &str, path: &str) -> bool {
        if !key.starts_with("spark.") || key.len() <= "spark.".len() {
            self.problem(
                path,
                format!("{key:?} is not a Spark setting: spark-submit passes only keys that start with \"spark.\" to the application"),
            );
            return false;
        }
        if let Some(bad) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
            self.problem(
                path,
                format!("{key:?} is not a Spark setting: keys hold no {bad:?}"),
            );
            return false;
        }
        if key.chars().count() > MAX_KEY_CHARS {
            self.problem(
                path,
                format!("is a key of more than {MAX_KEY_CHARS} characters; no Spark setting is"),
            );
            return false;
        }
        true
    }

    fn spark_settings(&mut self, value: &Value, path: &str) -> BTreeMap<String, Template> {
        let Value::Object(map) = value else {
            self.problem(
                path,
                format!(
                    "must be a mapping of Spark settings to values, found {}",
                    kind_of(value)
                ),
            );
            return BTreeMap::new();
        };
        let mut set = BTreeMap::new();
        for (key, item) in map {
            let field = key_path(path, key);
            if !self.spark_key(key, &field) {
                continue;
            }
            if let Some(why) = not_settable(key) {
                self.problem(&field, format!("{key} cannot be set: {why}"));
                continue;
            }
            let Some(text) = self.setting_text(item, &field) else {
                continue;
            };
            let template = match Template::parse(&text) {
                Ok(template) => template,
                Err(why) => {
                    self.problem(&field, why);
                    continue;
                }
            };
            if let Some(setting) = cappable(key)
                && !template.has_variables()
                && let Err(allowed) = setting.reading.read(&template.literal_text())
            {
                self.problem(
                    &field,
                    format!("{text:?} is not a value Spark reads for {key}: it must be {allowed}"),
                );
                continue;
            }
            set.insert(key.clone(), template);
        }
        set
    }

    fn spark_caps(&mut self, value: &Value, path: &str) -> Vec<SparkMax> {
        let Value::Object(map) = value else {
            self.problem(
                path,
                format!(
                    "must be a mapping of Spark settings to caps, found {}",
                    kind_of(value)
                ),
            );
            return Vec::new();
        };
        let mut caps = Vec::new();
        for (key, item) in map {
            let field = key_path(path, key);
            if !self.spark_key(key, &field) {
                continue;
            }
            let Some(setting) = cappable(key) else {
                let allowed: Vec<&str> = CAPPABLE.iter().map(|s| s.key).collect();
                let hint = strsim_hint(key, &allowed);
                self.problem(
                    &field,
                    format!(
                        "{key} cannot be capped: max is for the sizes and counts an application asks for{hint}; allowed: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            };
            let Some(text) = self.setting_text(item, &field) else {
                continue;
            };
            match setting.reading.read(&text) {
                Ok(limit) => caps.push(SparkMax {
                    setting,
                    limit,
                    text,
                }),
                Err(allowed) => self.problem(
                    &field,
                    format!("{text:?} is not a value Spark reads for {key}: it must be {allowed}"),
                ),
            }
        }
        caps
    }

    /// A setting's value as text: Spark's configuration is text, so strings, whole numbers
    /// and booleans are taken as written; a fraction must be quoted, since YAML would read
    /// `1.10` as 1.1.
    fn setting_text(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            Value::Bool(flag) => Some(flag.to_string()),
            Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
            Value::Number(number) => {
                self.problem(
                    path,
                    format!(
                        "must be a string; quote it (\"{number}\") so that it is written as meant"
                    ),
                );
                None
            }
            other => {
                self.problem(
                    path,
                    format!(
                        "must be a string, a whole number or a boolean, found {}",
                        kind_of(other)
                    ),
                );
                None
            }
        }
    }
}

/// ", did you mean X?" when an allowed key is close to `key`.
fn strsim_hint(key: &str, allowed: &[&str]) -> String {
    allowed
        .iter()
        .map(|candidate| (strsim::levenshtein(key, candidate), candidate))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, candidate)| format!(" (did you mean {candidate}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{has, rule, rule_problems};

    #[test]
    fn set_and_max_are_read_with_templates_and_spark_values() {
        let rule = rule(
            r#"    sparkConf:
      set:
        spark.ui.prometheus.enabled: true
        spark.eventLog.dir: "s3a://spark-logs/{namespace}/"
        spark.executor.instances: 4
      max:
        spark.executor.memory: 32g
        spark.executor.cores: 8
        spark.memory.offHeap.size: 1k
"#,
        );
        let spark_conf = rule.spark_conf.expect("sparkConf");
        assert_eq!(
            spark_conf.set["spark.ui.prometheus.enabled"].as_str(),
            "true"
        );
        assert!(spark_conf.set["spark.eventLog.dir"].has_variables());
        assert_eq!(spark_conf.set["spark.executor.instances"].as_str(), "4");
        let caps: Vec<(&str, i64)> = spark_conf
            .max
            .iter()
            .map(|m| (m.setting.key, m.limit))
            .collect();
        // Read in each setting's unit: MiB for executor memory, bytes for off-heap.
        assert_eq!(
            caps,
            [
                ("spark.executor.cores", 8),
                ("spark.executor.memory", 32768),
                ("spark.memory.offHeap.size", 1024)
            ]
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_path_and_what_is_allowed() {
        let found = rule_problems(
            r#"    match: {roles: [executor]}
    sparkConf:
      set:
        eventLog.dir: x
        spark.driver.memory: 8g
        spark.app.name: other
        spark.executor.memory: lots
        spark.memory.fraction: 0.6
        spark.kubernetes.driver.label.team: x
        spark.bad: "{nope}"
        spark.executor.cores: "16"
      max:
        spark.executor.memry: 32g
        spark.driver.memory: 1.5g
        spark.executor.cores: 8
        spark.eventLog.dir: x
      sett: {}
"#,
        );
        has(&found, "rules[0].match.roles", "roles must include driver");
        has(
            &found,
            "rules[0].sparkConf.set.eventLog.dir",
            "start with \"spark.\"",
        );
        has(
            &found,
            "rules[0].sparkConf.set.spark.driver.memory",
            "driver pod exists before",
        );
        has(
            &found,
            "rules[0].sparkConf.set.spark.app.name",
            "identifies the application",
        );
        has(
            &found,
            "rules[0].sparkConf.set.spark.executor.memory",
            "whole number of MiB",
        );
        has(
            &found,
            "rules[0].sparkConf.set.spark.memory.fraction",
            "quote it (\"0.6\")",
        );
        has(
            &found,
            "rules[0].sparkConf.set.spark.kubernetes.driver.label.team",
            "driver pod exists before",
        );
        has(&found, "rules[0].sparkConf.set.spark.bad", "nope");
        has(
            &found,
            "rules[0].sparkConf.set.spark.executor.cores",
            "above this rule's own max 8",
        );
        has(
            &found,
            "rules[0].sparkConf.max.spark.executor.memry",
            "did you mean spark.executor.memory?",
        );
        has(
            &found,
            "rules[0].sparkConf.max.spark.driver.memory",
            "no sign or fraction",
        );
        has(
            &found,
            "rules[0].sparkConf.max.spark.eventLog.dir",
            "cannot be capped",
        );
        has(&found, "rules[0].sparkConf.sett", "unknown field");
        assert_eq!(found.len(), 13, "{found:#?}");
    }

    #[test]
    fn an_empty_spark_conf_is_a_mistake() {
        let found = rule_problems("    sparkConf: {}\n");
        has(&found, "rules[0].sparkConf", "sets nothing");
    }
}
