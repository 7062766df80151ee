//! Topology spread constraints and pod (anti-)affinity terms the policy adds (SPEC §4a): each
//! appended unless an equal one is there, after the templates in its label selectors are
//! expanded for this pod, since equal means equal as the scheduler reads it.
//!
//! Selector values may hold §4 templates (`{app_id}` keeps an application's executors beside
//! its driver, or spreads them); they expand, and are sanitised, exactly as label values are.
//! A term whose template needs a value this pod lacks is not added (a selector on an empty
//! value would match what the platform team never meant), with a warning. The pod's lists can
//! be long: what it has goes into sets once (see `dedup`).

use k8s_openapi::api::core::v1::{
    Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::policy::{Rule, Template, sanitize_label_value};

use super::dedup::{ByJson, Seen};
use super::metadata::quoted;
use super::{SparkPod, by};

/// The terms one of the two affinities adds, expanded.
#[derive(Default)]
struct Terms {
    required: Vec<PodAffinityTerm>,
    preferred: Vec<WeightedPodAffinityTerm>,
}

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    let mut constraints: Vec<TopologySpreadConstraint> = Vec::new();
    let (mut affinity, mut anti) = (Terms::default(), Terms::default());
    for rule in rules {
        for (i, constraint) in rule.pod.topology_spread_constraints.iter().enumerate() {
            let mut constraint = constraint.clone();
            let what = format!("topologySpreadConstraints[{i}]");
            if expand_selector(
                constraint.label_selector.as_mut(),
                spark,
                rule,
                &what,
                warnings,
            ) {
                constraints.push(constraint);
            }
        }
        if let Some(policy) = &rule.pod.pod_affinity {
            expand_terms(
                "podAffinity",
                policy
                    .required_during_scheduling_ignored_during_execution
                    .as_deref(),
                policy
                    .preferred_during_scheduling_ignored_during_execution
                    .as_deref(),
                &mut affinity,
                spark,
                rule,
                warnings,
            );
        }
        if let Some(policy) = &rule.pod.pod_anti_affinity {
            expand_terms(
                "podAntiAffinity",
                policy
                    .required_during_scheduling_ignored_during_execution
                    .as_deref(),
                policy
                    .preferred_during_scheduling_ignored_during_execution
                    .as_deref(),
                &mut anti,
                spark,
                rule,
                warnings,
            );
        }
    }
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    if !constraints.is_empty() {
        let have = original_spec.topology_spread_constraints.iter().flatten();
        let added = new_entries(have, &constraints);
        if !added.is_empty() {
            spec.topology_spread_constraints
                .get_or_insert_with(Vec::new)
                .extend(added);
        }
    }
    let have = original_spec.affinity.as_ref();
    let have_affinity = have.and_then(|a| a.pod_affinity.as_ref());
    let have_anti = have.and_then(|a| a.pod_anti_affinity.as_ref());
    let required = new_entries(
        have_affinity
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten(),
        &affinity.required,
    );
    let preferred = new_entries(
        have_affinity
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten(),
        &affinity.preferred,
    );
    if !required.is_empty() || !preferred.is_empty() {
        let target = spec
            .affinity
            .get_or_insert_with(Affinity::default)
            .pod_affinity
            .get_or_insert_with(PodAffinity::default);
        extend(
            &mut target.required_during_scheduling_ignored_during_execution,
            required,
        );
        extend(
            &mut target.preferred_during_scheduling_ignored_during_execution,
            preferred,
        );
    }
    let required = new_entries(
        have_anti
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten(),
        &anti.required,
    );
    let preferred = new_entries(
        have_anti
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten(),
        &anti.preferred,
    );
    if !required.is_empty() || !preferred.is_empty() {
        let target = spec
            .affinity
            .get_or_insert_with(Affinity::default)
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default);
        extend(
            &mut target.required_during_scheduling_ignored_during_execution,
            required,
        );
        extend(
            &mut target.preferred_during_scheduling_ignored_during_execution,
            preferred,
        );
    }
}

fn extend<T>(list: &mut Option<Vec<T>>, added: Vec<T>) {
    if !added.is_empty() {
        list.get_or_insert_with(Vec::new).extend(added);
    }
}

/// The entries of `want` that are neither in `have` nor earlier in `want`, copied, in order.
fn new_entries<'a, T: serde::Serialize + PartialEq + Clone + 'a>(
    have: impl Iterator<Item = &'a T>,
    want: &'a [T],
) -> Vec<T> {
    if want.is_empty() {
        return Vec::new();
    }
    let mut seen = Seen::of(have.map(ByJson));
    want.iter()
        .filter(|entry| seen.insert(ByJson(*entry)))
        .cloned()
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn expand_terms(
    field: &str,
    required: Option<&[PodAffinityTerm]>,
    preferred: Option<&[WeightedPodAffinityTerm]>,
    into: &mut Terms,
    spark: &SparkPod,
    rule: &Rule,
    warnings: &mut Vec<String>,
) {
    for (i, term) in required.unwrap_or_default().iter().enumerate() {
        let mut term = term.clone();
        let what = format!("{field}.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
        if expand_term(&mut term, spark, rule, &what, warnings) {
            into.required.push(term);
        }
    }
    for (i, weighted) in preferred.unwrap_or_default().iter().enumerate() {
        let mut weighted = weighted.clone();
        let what = format!("{field}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if expand_term(
            &mut weighted.pod_affinity_term,
            spark,
            rule,
            &what,
            warnings,
        ) {
            into.preferred.push(weighted);
        }
    }
}

fn expand_term(
    term: &mut PodAffinityTerm,
    spark: &SparkPod,
    rule: &Rule,
    what: &str,
    warnings: &mut Vec<String>,
) -> bool {
    expand_selector(term.label_selector.as_mut(), spark, rule, what, warnings)
        && expand_selector(
            term.namespace_selector.as_mut(),
            spark,
            rule,
            what,
            warnings,
        )
}

/// Expands the templates in a selector's values; `false` when the pod lacks a value one needs.
fn expand_selector(
    selector: Option<&mut LabelSelector>,
    spark: &SparkPod,
    rule: &Rule,
    what: &str,
    warnings: &mut Vec<String>,
) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    for (key, value) in selector.match_labels.iter_mut().flatten() {
        if !expand_value(value, key, spark, rule, what, warnings) {
            return false;
        }
    }
    for expression in selector.match_expressions.iter_mut().flatten() {
        for value in expression.values.iter_mut().flatten() {
            if !expand_value(value, &expression.key, spark, rule, what, warnings) {
                return false;
            }
        }
    }
    true
}

fn expand_value(
    value: &mut String,
    key: &str,
    spark: &SparkPod,
    rule: &Rule,
    what: &str,
    warnings: &mut Vec<String>,
) -> bool {
    // Checked to parse when the policy was loaded; a value without braces is itself.
    let Ok(template) = Template::parse(value) else {
        return true;
    };
    let expanded = match template.expand(|v| spark.variable(v)) {
        Ok(expanded) => expanded,
        Err(missing) => {
            warnings.push(format!(
                "{what} not added: its label selector {key} uses {{{}}}, which this pod has no value for ({})",
                missing.name(),
                by(rule)
            ));
            return false;
        }
    };
    let sanitized = sanitize_label_value(&expanded);
    if sanitized != expanded {
        warnings.push(format!(
            "{what} label selector {key}: {} is not a valid label value, set as {sanitized:?} ({})",
            quoted(&expanded),
            by(rule)
        ));
    }
    *value = sanitized;
    true
}
