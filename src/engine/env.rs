//! Environment variables, by name, into the selected containers.

use k8s_openapi::api::core::v1::{EnvVar, Pod};

use crate::policy::{Mode, Rule};

use super::{SparkPod, selected_containers};

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    // Per container, the last rule setting each variable, in order of first mention so new
    // variables are appended in policy order.
    let mut plan: Vec<(usize, Vec<(&EnvVar, &Rule)>)> = Vec::new();
    for rule in rules.iter().filter(|r| !r.env.is_empty()) {
        for index in selected_containers(rule, original, spark) {
            let slot = match plan.iter().position(|(i, _)| *i == index) {
                Some(slot) => slot,
                None => {
                    plan.push((index, Vec::new()));
                    plan.len() - 1
                }
            };
            let vars = &mut plan[slot].1;
            for var in &rule.env {
                match vars.iter_mut().find(|(v, _)| v.name == var.name) {
                    Some(entry) => *entry = (var, *rule),
                    None => vars.push((var, *rule)),
                }
            }
        }
    }
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    for (index, vars) in plan {
        let (Some(before), Some(container)) = (
            original_spec.containers.get(index),
            spec.containers.get_mut(index),
        ) else {
            continue;
        };
        let existing = before.env.as_deref().unwrap_or_default();
        for (var, rule) in vars {
            match existing.iter().position(|e| e.name == var.name) {
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
