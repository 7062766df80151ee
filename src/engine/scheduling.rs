//! Where the pod may run: nodeSelector, node affinity, tolerations, priority class, scheduler.

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorTerm, Pod, PodSpec, Toleration,
};

use crate::policy::{Mode, Rule};

use super::ClusterFacts;
use super::metadata::set_keyed;
use super::precedence::{last_rule_setting, last_setters_by_key};

/// The scheduler the apiserver fills in when a pod names none; under `merge` it does not count
/// as the pod's own choice.
const DEFAULT_SCHEDULER: &str = "default-scheduler";

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    rules: &[&Rule],
    cluster: &ClusterFacts,
    warnings: &mut Vec<String>,
) {
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    for (key, (value, rule)) in last_setters_by_key(rules, |r| &r.node_selector) {
        set_keyed(
            original_spec.node_selector.as_ref(),
            &mut spec.node_selector,
            key,
            value.clone(),
            rule,
            "nodeSelector",
            warnings,
        );
    }
    for rule in rules {
        if let Some(affinity) = &rule.node_affinity {
            add_node_affinity(spec, affinity);
        }
        for toleration in &rule.tolerations {
            add_toleration(spec, toleration);
        }
    }
    apply_priority_class(original_spec, spec, rules, cluster, warnings);
    apply_scheduler(original_spec, spec, rules, warnings);
}

fn add_toleration(spec: &mut PodSpec, toleration: &Toleration) {
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.iter().any(|t| same_toleration(t, toleration)) {
        tolerations.push(toleration.clone());
    }
}

/// Kubernetes tells tolerations apart by key, operator, value and effect; an omitted operator
/// means `Equal`.
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    fn operator(t: &Toleration) -> &str {
        t.operator
            .as_deref()
            .filter(|o| !o.is_empty())
            .unwrap_or("Equal")
    }
    fn text(s: &Option<String>) -> &str {
        s.as_deref().unwrap_or_default()
    }
    text(&a.key) == text(&b.key)
        && operator(a) == operator(b)
        && text(&a.value) == text(&b.value)
        && text(&a.effect) == text(&b.effect)
}

fn add_node_affinity(spec: &mut PodSpec, policy: &NodeAffinity) {
    let node_affinity = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    if let Some(required) = &policy.required_during_scheduling_ignored_during_execution {
        let terms = &mut node_affinity
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(NodeSelector::default)
            .node_selector_terms;
        and_terms(terms, &required.node_selector_terms);
    }
    for preferred in policy
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .flatten()
    {
        let list = node_affinity
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new);
        if !list.contains(preferred) {
            list.push(preferred.clone());
        }
    }
}

/// ANDs the policy's terms into the pod's. Kubernetes ORs `nodeSelectorTerms`, so appending a
/// term would loosen the pod's rule; instead every existing term gets the policy's
/// requirements. A policy with several (ORed) terms yields every pairing, which is the same
/// boolean formula. A term that already holds one of the policy's terms is left as it is, so a
/// second pass changes nothing.
fn and_terms(existing: &mut Vec<NodeSelectorTerm>, policy: &[NodeSelectorTerm]) {
    if policy.is_empty() {
        return;
    }
    if existing.is_empty() {
        existing.extend(policy.iter().cloned());
        return;
    }
    let mut combined: Vec<NodeSelectorTerm> = Vec::with_capacity(existing.len() * policy.len());
    for term in existing.drain(..) {
        let candidates: Vec<NodeSelectorTerm> = if policy.iter().any(|p| term_includes(&term, p)) {
            vec![term]
        } else {
            policy.iter().map(|p| merged_term(&term, p)).collect()
        };
        for candidate in candidates {
            if !combined.contains(&candidate) {
                combined.push(candidate);
            }
        }
    }
    *existing = combined;
}

fn term_includes(term: &NodeSelectorTerm, part: &NodeSelectorTerm) -> bool {
    let has_all = |have: &Option<Vec<_>>, want: &Option<Vec<_>>| {
        want.iter()
            .flatten()
            .all(|r| have.iter().flatten().any(|h| h == r))
    };
    has_all(&term.match_expressions, &part.match_expressions)
        && has_all(&term.match_fields, &part.match_fields)
}

fn merged_term(term: &NodeSelectorTerm, part: &NodeSelectorTerm) -> NodeSelectorTerm {
    let mut merged = term.clone();
    for (target, extra) in [
        (&mut merged.match_expressions, &part.match_expressions),
        (&mut merged.match_fields, &part.match_fields),
    ] {
        for requirement in extra.iter().flatten() {
            let list = target.get_or_insert_with(Vec::new);
            if !list.contains(requirement) {
                list.push(requirement.clone());
            }
        }
    }
    merged
}

/// Sets `priorityClassName`. The apiserver's Priority admission plugin runs before webhooks and
/// has already filled `priority` (and `preemptionPolicy`) from the pod's old class or the
/// default; left in place they contradict the new class and the apiserver rejects the pod, so
/// they are removed and the plugin fills them again from the new class.
///
/// The plugin also writes the cluster's global default class into a pod that names none, so
/// under `merge` that class is not the pod's own choice and the policy's replaces it.
fn apply_priority_class(
    original: &PodSpec,
    spec: &mut PodSpec,
    rules: &[&Rule],
    cluster: &ClusterFacts,
    warnings: &mut Vec<String>,
) {
    let Some((class, rule)) = last_rule_setting(rules, |r| r.priority_class_name.as_ref()) else {
        return;
    };
    let global_default = cluster.global_default_priority_class.as_deref();
    match original.priority_class_name.as_deref().filter(|c| !c.is_empty()) {
        Some(existing) if existing == class => {}
        Some(existing) if rule.mode == Mode::Merge && Some(existing) != global_default => warnings.push(format!(
            "priorityClassName: kept the pod's {existing:?}, not {class:?} from rule {} (mode merge)",
            rule.name
        )),
        _ => {
            spec.priority_class_name = Some(class.clone());
            spec.priority = None;
            spec.preemption_policy = None;
        }
    }
}

fn apply_scheduler(
    original: &PodSpec,
    spec: &mut PodSpec,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    let Some((scheduler, rule)) = last_rule_setting(rules, |r| r.scheduler_name.as_ref()) else {
        return;
    };
    match original
        .scheduler_name
        .as_deref()
        .filter(|s| !s.is_empty() && *s != DEFAULT_SCHEDULER)
    {
        Some(existing) if existing == scheduler => {}
        Some(existing) if rule.mode == Mode::Merge => warnings.push(format!(
            "schedulerName: kept the pod's {existing:?}, not {scheduler:?} from rule {} (mode merge)",
            rule.name
        )),
        _ => spec.scheduler_name = Some(scheduler.clone()),
    }
}
