//! Security contexts, field by field (SPEC §4a): `securityContext` of the pod and
//! `containerSecurityContext` of the selected containers.
//!
//! A field is one key of the object as the apiserver stores it (`runAsNonRoot`, `fsGroup`,
//! `seccompProfile`, `capabilities`): the last rule setting it decides, by its mode. Nested
//! objects are one field each, since their parts only mean something together (a
//! `seccompProfile` of type `Localhost` needs its `localhostProfile`). The objects are handled
//! as JSON maps so that every field, present and future in k8s-openapi, is covered alike.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::policy::{Mode, Rule};

use super::precedence::last_setters;
use super::{Slot, SparkPod, kept_warning, selected_slots};

/// A field of a security context, its value, and the rule deciding it.
pub(super) type Setting<'r> = (String, (Value, &'r Rule));

/// An object's fields as JSON; empty for one that is not an object.
pub(super) fn fields_of<T: Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Sets each decided field on `target` by its rule's mode; `None` when nothing changes.
pub(super) fn merged<T: Serialize + DeserializeOwned>(
    target: Option<&T>,
    settings: &[Setting],
    what: impl Fn(&str) -> String,
    warnings: &mut Vec<String>,
) -> Option<T> {
    let mut fields = target.map(fields_of).unwrap_or_default();
    let mut changed = false;
    for (field, (value, rule)) in settings {
        match fields.get(field) {
            Some(have) if have == value => {}
            Some(have) if rule.mode == Mode::Merge => warnings.push(kept_warning(
                &what(field),
                &have.to_string(),
                &value.to_string(),
                rule,
            )),
            _ => {
                fields.insert(field.clone(), value.clone());
                changed = true;
            }
        }
    }
    if !changed {
        return None;
    }
    // Every field came from an object of this very type, so it reads back.
    serde_json::from_value(Value::Object(fields)).ok()
}

/// `spec.securityContext`.
pub(super) fn apply_pod(
    original: &Pod,
    desired: &mut Pod,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    let settings = last_setters(rules, |rule| {
        rule.pod
            .security_context
            .as_ref()
            .map(fields_of)
            .unwrap_or_default()
            .into_iter()
    });
    if settings.is_empty() {
        return;
    }
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    if let Some(context) = merged(
        original_spec.security_context.as_ref(),
        &settings,
        |field| format!("securityContext.{field}"),
        warnings,
    ) {
        spec.security_context = Some(context);
    }
}

/// `securityContext` of the containers each rule selects.
pub(super) fn apply_containers(
    base: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    native: &HashSet<String>,
    warnings: &mut Vec<String>,
) {
    let settings = last_setters(rules, |rule| {
        let Some(context) = &rule.pod.container_security_context else {
            return Vec::new();
        };
        let fields = fields_of(context);
        let mut entries = Vec::new();
        for slot in selected_slots(rule, base, spark, native) {
            entries.extend(
                fields
                    .iter()
                    .map(|(field, value)| ((slot, field.clone()), value.clone())),
            );
        }
        entries
    });
    if settings.is_empty() {
        return;
    }
    let mut plan: BTreeMap<Slot, Vec<Setting>> = BTreeMap::new();
    for ((slot, field), setting) in settings {
        plan.entry(slot).or_default().push((field, setting));
    }
    let (Some(base_spec), Some(spec)) = (base.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    let PodSpec {
        containers,
        init_containers,
        ..
    } = spec;
    for (slot, fields) in plan {
        let (Some(before), Some(container)) =
            (slot.of(base_spec), slot.of_mut(containers, init_containers))
        else {
            continue;
        };
        let name = container.name.as_str();
        let what = |field: &str| format!("containerSecurityContext.{field} of container {name}");
        if let Some(context) = merged(before.security_context.as_ref(), &fields, what, warnings) {
            container.security_context = Some(context);
        }
    }
}
