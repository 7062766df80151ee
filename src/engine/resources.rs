//! Resource defaults and caps per role and container.
//!
//! Defaults fill only what a container lacks; caps are checked after defaults. Over a cap,
//! `deny` rejects the pod; `clamp` lowers CPU to the cap and warns. Memory over a cap is always
//! denied: Spark sized the JVM heap to the memory it asked for, so a smaller limit would make the
//! executor die of OOM instead of failing visibly at submission.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use crate::policy::{OnExceed, Quantity, Rule};

use super::{SparkPod, selected_containers};

/// The resource policy in force for one container, each entry from the last rule setting it.
#[derive(Default)]
struct Effective<'r> {
    requests: BTreeMap<&'r str, (&'r Quantity, &'r Rule)>,
    limits: BTreeMap<&'r str, (&'r Quantity, &'r Rule)>,
    max: BTreeMap<&'r str, (&'r Quantity, OnExceed, &'r Rule)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requests,
    Limits,
}

impl Kind {
    fn verb(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Limits => "has a limit of",
        }
    }

    fn of(
        self,
        resources: &mut ResourceRequirements,
    ) -> &mut Option<BTreeMap<String, KubeQuantity>> {
        match self {
            Kind::Requests => &mut resources.requests,
            Kind::Limits => &mut resources.limits,
        }
    }
}

/// Applies defaults and caps; returns the denial message when the pod must be rejected.
pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) -> Option<String> {
    let mut plan: BTreeMap<usize, Effective> = BTreeMap::new();
    for rule in rules {
        let Some(policy) = rule.resources_for(spark.role) else {
            continue;
        };
        for index in selected_containers(rule, original, spark) {
            let effective = plan.entry(index).or_default();
            for (name, q) in &policy.default.requests {
                effective.requests.insert(name, (q, *rule));
            }
            for (name, q) in &policy.default.limits {
                effective.limits.insert(name, (q, *rule));
            }
            for (name, q) in &policy.max {
                effective.max.insert(name, (q, policy.on_exceed, *rule));
            }
        }
    }
    let spec = desired.spec.as_mut()?;
    let mut violations = Vec::new();
    for (index, effective) in plan {
        let Some(container) = spec.containers.get_mut(index) else {
            continue;
        };
        fill_defaults(container, &effective, warnings);
        check_max(container, &effective, warnings, &mut violations);
    }
    if violations.is_empty() {
        None
    } else {
        Some(violations.join("; "))
    }
}

fn current(container: &Container, kind: Kind, resource: &str) -> Option<String> {
    let resources = container.resources.as_ref()?;
    let map = match kind {
        Kind::Requests => resources.requests.as_ref(),
        Kind::Limits => resources.limits.as_ref(),
    }?;
    map.get(resource).map(|q| q.0.clone())
}

fn set(container: &mut Container, kind: Kind, resource: &str, value: &str) {
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    kind.of(resources)
        .get_or_insert_with(BTreeMap::new)
        .insert(resource.to_owned(), KubeQuantity(value.to_owned()));
}

fn fill_defaults(container: &mut Container, effective: &Effective, warnings: &mut Vec<String>) {
    for (resource, (default, rule)) in &effective.requests {
        if current(container, Kind::Requests, resource).is_some() {
            continue;
        }
        let limit =
            current(container, Kind::Limits, resource).and_then(|l| Quantity::parse(&l).ok());
        match limit {
            Some(limit) if limit < **default => warnings.push(format!(
                "container {}: default {resource} request {default} from rule {} not applied, it is above the container's limit {limit}",
                container.name, rule.name
            )),
            _ => set(container, Kind::Requests, resource, default.as_str()),
        }
    }
    for (resource, (default, rule)) in &effective.limits {
        if current(container, Kind::Limits, resource).is_some() {
            continue;
        }
        let request =
            current(container, Kind::Requests, resource).and_then(|r| Quantity::parse(&r).ok());
        match request {
            Some(request) if request > **default => warnings.push(format!(
                "container {}: default {resource} limit {default} from rule {} not applied, it is below the container's request {request}",
                container.name, rule.name
            )),
            _ => set(container, Kind::Limits, resource, default.as_str()),
        }
    }
}

fn check_max(
    container: &mut Container,
    effective: &Effective,
    warnings: &mut Vec<String>,
    violations: &mut Vec<String>,
) {
    for (resource, (max, on_exceed, rule)) in &effective.max {
        for kind in [Kind::Requests, Kind::Limits] {
            let Some(text) = current(container, kind, resource) else {
                continue;
            };
            let Ok(value) = Quantity::parse(&text) else {
                violations.push(format!(
                    "container {} {} {resource} {text:?}, which is not a quantity, so the max {max} of rule {} cannot be checked",
                    container.name,
                    kind.verb(),
                    rule.name
                ));
                continue;
            };
            if value <= **max {
                continue;
            }
            if *resource == "cpu" && *on_exceed == OnExceed::Clamp {
                warnings.push(format!(
                    "container {}: cpu {} {value} lowered to the max {max} (rule {}, onExceed clamp)",
                    container.name,
                    match kind {
                        Kind::Requests => "request",
                        Kind::Limits => "limit",
                    },
                    rule.name
                ));
                set(container, kind, resource, max.as_str());
                continue;
            }
            let why = match (*on_exceed, *resource) {
                (OnExceed::Clamp, "memory") => {
                    " (memory is never clamped: Spark sized the JVM heap for it; lower spark.executor.memory or spark.driver.memory)"
                }
                (OnExceed::Clamp, _) => " (only cpu is clamped)",
                _ => "",
            };
            violations.push(format!(
                "container {} {} {resource} {value}, over the max {max} set by rule {}{why}",
                container.name,
                kind.verb(),
                rule.name
            ));
        }
    }
}
