//! Where the pod may run: nodeSelector, node affinity, tolerations, priority class, scheduler.
//!
//! Every list here can be as long as a 3 MiB pod allows; none is ever searched once per entry
//! of another (see `dedup`). The AND of the pod's required terms with the policy's is, by
//! nature, as long as their product: the policy is the platform team's and holds a few terms,
//! so what a pod can make this allocate is that few times its own terms, never more.

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorTerm, Pod, PodSpec, PreferredSchedulingTerm,
    Toleration,
};

use crate::policy::{Mode, Rule};

use super::ClusterFacts;
use super::dedup::{ByJson, Seen, dedup_keeping_first, missing};
use super::metadata::{quoted, set_keyed};
use super::precedence::{last_rule_setting, last_setters_by_key};

/// The scheduler the apiserver fills in when a pod names none; under `merge` it does not count
/// as the pod's own choice.
const DEFAULT_SCHEDULER: &str = "default-scheduler";

pub(super) fn apply<'a>(
    original: &'a Pod,
    desired: &mut Pod,
    rules: &[&'a Rule],
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
    // What the pod arrived with, and then what the rules add: the desired pod's lists are the
    // pod's own until here, so the sets are built from the original, which they can borrow.
    let mut preferred = Seen::of(
        original_spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(ByJson),
    );
    let mut tolerations = Seen::of(
        original_spec
            .tolerations
            .iter()
            .flatten()
            .map(TolerationKey::of),
    );
    for rule in rules {
        if let Some(affinity) = &rule.node_affinity {
            add_node_affinity(spec, affinity, &mut preferred);
        }
        for toleration in &rule.tolerations {
            if tolerations.insert(TolerationKey::of(toleration)) {
                spec.tolerations
                    .get_or_insert_with(Vec::new)
                    .push(toleration.clone());
            }
        }
    }
    apply_priority_class(original_spec, spec, rules, cluster, warnings);
    apply_scheduler(original_spec, spec, rules, warnings);
}

/// Kubernetes tells tolerations apart by key, operator, value and effect; an omitted operator
/// means `Equal`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TolerationKey<'a> {
    key: &'a str,
    operator: &'a str,
    value: &'a str,
    effect: &'a str,
}

impl<'a> TolerationKey<'a> {
    fn of(toleration: &'a Toleration) -> Self {
        Self {
            key: toleration.key.as_deref().unwrap_or_default(),
            operator: toleration
                .operator
                .as_deref()
                .filter(|o| !o.is_empty())
                .unwrap_or("Equal"),
            value: toleration.value.as_deref().unwrap_or_default(),
            effect: toleration.effect.as_deref().unwrap_or_default(),
        }
    }
}

fn add_node_affinity<'a>(
    spec: &mut PodSpec,
    policy: &'a NodeAffinity,
    preferred_seen: &mut Seen<ByJson<'a, PreferredSchedulingTerm>>,
) {
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
        if preferred_seen.insert(ByJson(preferred)) {
            list.push(preferred.clone());
        }
    }
}

/// ANDs the policy's terms into the pod's. Kubernetes ORs `nodeSelectorTerms`, so appending a
/// term would loosen the pod's rule; instead every existing term gets the policy's
/// requirements. A policy with several (ORed) terms yields every pairing, which is the same
/// boolean formula. A term that already holds one of the policy's terms is left as it is, so a
/// second pass changes nothing. Terms that come out equal are kept once, the first in place.
fn and_terms(existing: &mut Vec<NodeSelectorTerm>, policy: &[NodeSelectorTerm]) {
    let Some((last, others)) = policy.split_last() else {
        return;
    };
    if existing.is_empty() {
        existing.extend(policy.iter().cloned());
        return;
    }
    let mut combined: Vec<NodeSelectorTerm> = Vec::with_capacity(existing.len() * policy.len());
    for term in existing.drain(..) {
        if policy.iter().any(|p| term_includes(&term, p)) {
            combined.push(term);
            continue;
        }
        for part in others {
            combined.push(merged_term(term.clone(), part));
        }
        // The last pairing takes the term itself: one policy term (the usual case) copies
        // nothing.
        combined.push(merged_term(term, last));
    }
    dedup_keeping_first(&mut combined);
    *existing = combined;
}

fn term_includes(term: &NodeSelectorTerm, part: &NodeSelectorTerm) -> bool {
    let has_all = |have: &Option<Vec<_>>, want: &Option<Vec<_>>| {
        missing(
            have.as_deref().unwrap_or_default(),
            want.as_deref().unwrap_or_default(),
        )
        .is_empty()
    };
    has_all(&term.match_expressions, &part.match_expressions)
        && has_all(&term.match_fields, &part.match_fields)
}

fn merged_term(mut term: NodeSelectorTerm, part: &NodeSelectorTerm) -> NodeSelectorTerm {
    for (target, extra) in [
        (&mut term.match_expressions, &part.match_expressions),
        (&mut term.match_fields, &part.match_fields),
    ] {
        let Some(extra) = extra.as_deref().filter(|e| !e.is_empty()) else {
            continue;
        };
        let list = target.get_or_insert_with(Vec::new);
        let added: Vec<_> = missing(list, extra).into_iter().cloned().collect();
        // Exactly: a pod's terms usually hold one requirement, and doubling that list for the
        // policy's one would be most of what the AND costs.
        list.reserve_exact(added.len());
        list.extend(added);
    }
    term
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
    match original
        .priority_class_name
        .as_deref()
        .filter(|c| !c.is_empty())
    {
        Some(existing) if existing == class => {}
        Some(existing) if rule.mode == Mode::Merge && Some(existing) != global_default => warnings
            .push(format!(
                "priorityClassName: kept the pod's {}, not {class:?} from rule {} (mode merge)",
                quoted(existing),
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
            "schedulerName: kept the pod's {}, not {scheduler:?} from rule {} (mode merge)",
            quoted(existing),
            rule.name
        )),
        _ => spec.scheduler_name = Some(scheduler.clone()),
    }
}
