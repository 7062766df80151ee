//! Environment variables, by name, into the selected containers.

use k8s_openapi::api::core::v1::{EnvVar, Pod};

use crate::policy::{Mode, Rule};

use super::precedence::last_setters;
use super::{SparkPod, selected_containers};

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    // Per container, the last rule setting each variable; containers and variables in order of
    // first mention, so new variables are appended in policy order.
    let settings = last_setters(rules, |rule| {
        // Only a rule with variables needs its containers worked out.
        let containers = (!rule.env.is_empty()).then(|| selected_containers(rule, original, spark));
        containers.into_iter().flatten().flat_map(move |index| {
            rule.env
                .iter()
                .map(move |var| ((index, var.name.as_str()), var))
        })
    });
    let mut plan: Vec<(usize, Vec<(&EnvVar, &Rule)>)> = Vec::new();
    for ((index, _), setting) in settings {
        match plan.iter_mut().find(|(i, _)| *i == index) {
            Some((_, vars)) => vars.push(setting),
            None => plan.push((index, vec![setting])),
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
