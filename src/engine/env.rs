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
) -> Vec<EnvEdit> {
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
    let Some(spec) = desired.spec.as_mut() else {
        return Vec::new();
    };
    let mut edits = Vec::new();
    for (index, vars) in plan {
        // The desired pod's env is still the one `original` has: no concern before this one
        // changes env, and the containers the policy adds are in `original` by now (the pod
        // after them, see `evaluate`). So it is read in place, and `original` need not carry
        // env at all (`evaluate_owned` gives it none).
        let Some(container) = index.of_mut(&mut spec.containers, &mut spec.init_containers) else {
            continue;
        };
        let existing = container.env.as_deref().unwrap_or_default();
        let positions = Positions::of(existing, vars.len());
        // Decided against the env as it arrived, then applied.
        let mut replace = Vec::new();
        let mut append = Vec::new();
        for (var, rule) in vars {
            match positions.of_name(existing, &var.name) {
                Some(position) if existing[position] == *var => {}
                Some(position) if rule.mode == Mode::Enforce => replace.push((position, var)),
                Some(_) => warnings.push(format!(
                    "env {} in container {}: kept the pod's value; rule {}'s was not applied (mode merge)",
                    var.name, container.name, rule.name
                )),
                None => append.push(var),
            }
        }
        if replace.is_empty() && append.is_empty() {
            continue;
        }
        let before_len = container.env.as_ref().map(Vec::len);
        let mut replaced = Vec::with_capacity(replace.len());
        for (position, var) in replace {
            if let Some(slot) = container.env.as_mut().and_then(|e| e.get_mut(position)) {
                replaced.push((position, std::mem::replace(slot, var.clone())));
            }
        }
        if !append.is_empty() {
            container
                .env
                .get_or_insert_with(Vec::new)
                .extend(append.into_iter().cloned());
        }
        edits.push(EnvEdit {
            slot: index,
            before_len,
            replaced,
        });
    }
    edits
}

/// What the policy did to one container's env: the variables it replaced, with what they
/// were, and the length the list had (`None`: no env), past which every variable is new. With
/// the desired env, this is the env as it arrived, which the patch rebuilds from them for the
/// containers whose env changed only, rather than every pod's env being copied up front.
pub(crate) struct EnvEdit {
    /// The container.
    pub(crate) slot: Slot,
    /// How many variables it had before, `None` when it had no env.
    pub(crate) before_len: Option<usize>,
    /// The positions replaced (under `enforce`) and the variables that were there.
    pub(crate) replaced: Vec<(usize, EnvVar)>,
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
