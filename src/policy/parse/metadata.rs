//! A rule's `labels` and `annotations`: keys, templated values, and the names a policy may not
//! set (Spark's own labels, this webhook's own annotations).
//!
//! Only reads and checks them; templates are expanded per pod by `engine::metadata`. Never
//! stops at the first problem: each one is reported with its path.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::policy::Template;
use crate::policy::labels::{check_label_value, check_qualified_name};

use super::{Checker, key_path};

/// Labels Spark uses to find and track its own pods; a policy that changed them would break
/// Spark (and the quota counting), so they cannot be set.
const SPARK_OWNED_LABELS: &[&str] = &[
    "spark-role",
    "spark-app-selector",
    "spark-app-name",
    "spark-exec-id",
    "sparkoperator.k8s.io/app-name",
];

/// Annotations this webhook writes itself.
const OWN_ANNOTATION_PREFIX: &str = "spark-admission.io/";

/// What is wrong with a templated label value, if anything. A template's variables are
/// sanitised at expansion; its literal text must already be valid, or every pod would get a
/// mangled value.
pub(super) fn templated_label_value_problem(template: &Template) -> Option<String> {
    let literal = template.literal_text();
    if template.has_variables() {
        literal
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .map(|bad| {
                format!(
                    "may only hold letters, digits, '-', '_' and '.' besides variables, not {bad:?}"
                )
            })
            .or_else(|| {
                (literal.len() > 63)
                    .then(|| "is longer than 63 characters even before expansion".to_owned())
            })
    } else {
        check_label_value(&literal).err()
    }
}

impl Checker {
    fn templates(&mut self, value: &Value, path: &str) -> BTreeMap<String, Template> {
        let mut out = BTreeMap::new();
        for (key, text) in self.string_map(value, path) {
            match Template::parse(&text) {
                Ok(template) => {
                    out.insert(key, template);
                }
                Err(why) => self.problem(key_path(path, &key), why),
            }
        }
        out
    }

    pub(super) fn labels(&mut self, value: &Value, path: &str) -> BTreeMap<String, Template> {
        let labels = self.templates(value, path);
        for (key, template) in &labels {
            self.check_label(path, key, None);
            if SPARK_OWNED_LABELS.contains(&key.as_str()) {
                self.problem(key_path(path, key), format!("{key:?} is Spark's own label (Spark finds its pods by it); a policy cannot set it"));
            }
            let check = templated_label_value_problem(template);
            if let Some(why) = check {
                self.problem(
                    key_path(path, key),
                    format!("{:?} is not a valid label value: {why}", template.as_str()),
                );
            }
        }
        labels
    }

    pub(super) fn annotations(&mut self, value: &Value, path: &str) -> BTreeMap<String, Template> {
        let annotations = self.templates(value, path);
        for key in annotations.keys() {
            if let Err(why) = check_qualified_name(key) {
                self.problem(
                    key_path(path, key),
                    format!("{key:?} is not a valid annotation key: {why}"),
                );
            }
            if key.starts_with(OWN_ANNOTATION_PREFIX) {
                self.problem(key_path(path, key), format!("annotations under {OWN_ANNOTATION_PREFIX} are written by spark-admission itself"));
            }
        }
        annotations
    }
}
