//! Environment variables, by name, into the selected containers.
//!
//! A container may arrive with tens of thousands of variables and the policy may set several:
//! a variable is never looked for by a search per policy variable when that would multiply the
//! two (see [`Positions`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{EnvVar, Pod};

use crate::policy::{Mode, Rule};

use super::precedence::last_setters;
use super::{Slot, SparkPod, selected_slots};

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    native: &HashSet<String>,
    warnings: &mut Vec<String>,
) {
    // Per container (native sidecars the policy adds included, see `selected_slots`), the last rule setting each variable; containers and variables in order of
    // first mention, so new variables are appended in policy order.
    let settings = last_setters(rules, |rule| {
        // Only a rule with variables needs its containers worked out.
        let containers =
            (!rule.env.is_empty()).then(|| selected_slots(rule, original, spark, native));
        containers.into_iter().flatten().flat_map(move |slot| {
            rule.env
                .iter()
                .map(move |var| ((slot, var.name.as_str()), var))
        })
    });
    // With `containers: all` every container of the pod is in the plan: its place is looked up,
    // never searched for.
    let mut plan: Vec<(Slot, Vec<(&EnvVar, &Rule)>)> = Vec::new();
    let mut places: BTreeMap<Slot, usize> = BTreeMap::new();
    for ((index, _), setting) in settings {
        match places.get(&index).and_then(|&place| plan.get_mut(place)) {
            Some((_, vars)) => vars.push(setting),
            None => {
                places.insert(index, plan.len());
                plan.push((index, vec![setting]));
            }
        }
    }
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    for (index, vars) in plan {
        let (Some(before), Some(container)) = (
            index.of(original_spec),
            index.of_mut(&mut spec.containers, &mut spec.init_containers),
        ) else {
            continue;
        };
        let existing = before.env.as_deref().unwrap_or_default();
        let positions = Positions::of(existing, vars.len());
        for (var, rule) in vars {
            match positions.of_name(existing, &var.name) {
                Some(position) if existing[position] == *var => {}
                Some(position) if rule.mode == Mode::Enforce => {
                    if let Some(slot) = container.env.as_mut().and_then(|e| e.get_mut(position)) {
                        *slot = var.clone();
                    }
                }
                Some(_) => warnings.push(format!(
                    "env {} in container {}: kept the pod's value; rule {}'s was not applied (mode merge)",
                    var.name, container.name, rule.name
                )),
                None => container.env.get_or_insert_with(Vec::new).push(var.clone()),
            }
        }
    }
}

/// Where a variable name first appears in a container's env: a name the pod repeats is
/// acted on at its first variable, as it always was.
enum Positions<'a> {
    /// Few lookups or a short list: each lookup searches the list.
    Search,
    /// Many lookups into a long list: the first position of every name.
    Index(HashMap<&'a str, usize>),
}

impl<'a> Positions<'a> {
    /// Searching costs the list's length per lookup; the index costs it once.
    fn of(existing: &'a [EnvVar], lookups: usize) -> Self {
        if lookups <= 2 || existing.len() <= super::dedup::SCAN_UP_TO {
            return Self::Search;
        }
        let mut index = HashMap::with_capacity(existing.len());
        for (position, var) in existing.iter().enumerate() {
            index.entry(var.name.as_str()).or_insert(position);
        }
        Self::Index(index)
    }

    /// The position of the first variable named `name`.
    fn of_name(&self, existing: &[EnvVar], name: &str) -> Option<usize> {
        match self {
            Self::Search => existing.iter().position(|e| e.name == name),
            Self::Index(index) => index.get(name).copied(),
        }
    }
}
