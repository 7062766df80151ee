//! Labels and annotations, key by key, with templates expanded per pod, plus the two
//! `spark-admission.io/` annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::policy::{Mode, Rule, Template, sanitize_label_value};

use super::precedence::last_setters_by_key;
use super::{APPLIED_RULES_ANNOTATION, POLICY_HASH_ANNOTATION, SparkPod};

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    policy_hash: &str,
    warnings: &mut Vec<String>,
) {
    for (key, (template, rule)) in last_setters_by_key(rules, |r| &r.labels) {
        let Some(value) = expand(template, spark, rule, "label", key, warnings) else {
            continue;
        };
        let sanitized = sanitize_label_value(&value);
        if sanitized != value {
            warnings.push(format!(
                "label {key}: {} is not a valid label value, set as {sanitized:?} (rule {})",
                quoted(&value),
                rule.name
            ));
        }
        set_keyed(
            original.metadata.labels.as_ref(),
            &mut desired.metadata.labels,
            key,
            sanitized,
            rule,
            "label",
            warnings,
        );
    }
    for (key, (template, rule)) in last_setters_by_key(rules, |r| &r.annotations) {
        if let Some(value) = expand(template, spark, rule, "annotation", key, warnings) {
            set_keyed(
                original.metadata.annotations.as_ref(),
                &mut desired.metadata.annotations,
                key,
                value,
                rule,
                "annotation",
                warnings,
            );
        }
    }
    let applied: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let annotations = desired
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(APPLIED_RULES_ANNOTATION.to_owned(), applied.join(","));
    annotations.insert(POLICY_HASH_ANNOTATION.to_owned(), policy_hash.to_owned());
}

fn expand(
    template: &Template,
    spark: &SparkPod,
    rule: &Rule,
    what: &str,
    key: &str,
    warnings: &mut Vec<String>,
) -> Option<String> {
    match template.expand(|v| spark.variable(v)) {
        Ok(value) => Some(value),
        Err(missing) => {
            warnings.push(format!(
                "{what} {key} not set: this pod has no {{{}}} (rule {})",
                missing.name(),
                rule.name
            ));
            None
        }
    }
}

/// Sets `key` in a string map by the rule's mode: `merge` keeps a value the pod arrived with
/// (and warns when it differs from the policy's), `enforce` replaces it.
pub(super) fn set_keyed(
    original: Option<&BTreeMap<String, String>>,
    desired: &mut Option<BTreeMap<String, String>>,
    key: &str,
    value: String,
    rule: &Rule,
    what: &str,
    warnings: &mut Vec<String>,
) {
    match original.and_then(|m| m.get(key)) {
        Some(existing) if *existing == value => {}
        Some(existing) if rule.mode == Mode::Merge => warnings.push(format!(
            "{what} {key}: kept the pod's {}, not {} from rule {} (mode merge)",
            quoted(existing),
            quoted(&value),
            rule.name
        )),
        _ => {
            desired
                .get_or_insert_with(BTreeMap::new)
                .insert(key.to_owned(), value);
        }
    }
}

/// The longest text a warning quotes whole.
const QUOTE_AT_MOST: usize = 200;

/// `text` as a warning quotes it (Debug-quoted), cut after [`QUOTE_AT_MOST`] characters: a pod
/// may carry megabytes in one label, and Debug-escaping control characters would make that
/// several times more in the answer.
pub(super) fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTE_AT_MOST) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes in all)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_text_is_quoted_whole_and_a_long_one_cut() {
        assert_eq!(quoted("a \"b\""), "\"a \\\"b\\\"\"");
        let exact = "é".repeat(QUOTE_AT_MOST);
        assert_eq!(quoted(&exact), format!("{exact:?}"));
        let long = format!("{exact}tail");
        assert_eq!(
            quoted(&long),
            format!("{exact:?}... ({} bytes in all)", long.len())
        );
    }
}
