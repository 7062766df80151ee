//! Resource defaults and caps per role and container.
//!
//! Defaults fill only what a container lacks; caps are checked after defaults, on the selected
//! containers and, with the Spark container's caps, on every init container and the pod-level
//! resources (everything the scheduler charges). Over a cap,
//! `deny` rejects the pod; `clamp` lowers CPU to the cap and warns. Memory over a cap is always
//! denied: Spark sized the JVM heap to the memory it asked for, so a smaller limit would make the
//! executor die of OOM instead of failing visibly at submission.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use crate::policy::{OnExceed, Quantity, Rule};

use super::precedence::last_setters;
use super::{Slot, SparkPod, selected_slots};

/// The resource policy in force for one container, each entry from the last rule setting it.
#[derive(Default)]
struct Effective<'r> {
    requests: BTreeMap<&'r str, (&'r Quantity, &'r Rule)>,
    limits: BTreeMap<&'r str, (&'r Quantity, &'r Rule)>,
    max: Caps<'r>,
}

/// The entries of a role's resource policy, each decided per container and resource.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    DefaultRequest,
    DefaultLimit,
    Max,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requests,
    Limits,
}

impl Kind {
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

/// What a cap is checked on, as messages name it.
struct Target<'a> {
    /// `container spark-kubernetes-executor`, `init container warmup`, `pod-level resources`.
    subject: String,
    resources: &'a mut Option<ResourceRequirements>,
}

impl Target<'_> {
    fn verb(&self, kind: Kind) -> &'static str {
        match (kind, self.subject.ends_with("resources")) {
            (Kind::Requests, false) => "requests",
            (Kind::Requests, true) => "request",
            (Kind::Limits, false) => "has a limit of",
            (Kind::Limits, true) => "have a limit of",
        }
    }
}

/// Applies defaults and caps; returns the denial message when the pod must be rejected.
///
/// Defaults fill only the containers the rules select. Caps apply to them too, and the caps in
/// force for the Spark container also bind every init container (sidecars with `restartPolicy:
/// Always` included) and the pod-level `spec.resources` (Kubernetes 1.32+): the scheduler and
/// ResourceQuota charge the largest init container and the pod-level requests, and containers
/// share a pod-level limit, so a cap that skipped them would be a way around it. Init
/// containers get no defaults: a missing request charges nothing. The native sidecars the
/// policy adds (`native`) are the exception: `containers: all` or their names select them as
/// they select the same sidecar appended to `spec.containers`, so a sidecar is charged alike
/// whichever way the cluster runs it; their caps are those of every init container.
pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    native: &HashSet<String>,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let settings = last_setters(rules, |rule| {
        let mut entries = Vec::new();
        let Some(policy) = rule.resources_for(spark.role) else {
            return entries;
        };
        for index in selected_slots(rule, original, spark, native) {
            for (part, amounts) in [
                (Part::DefaultRequest, &policy.default.requests),
                (Part::DefaultLimit, &policy.default.limits),
                (Part::Max, &policy.max),
            ] {
                entries.extend(
                    amounts
                        .iter()
                        .map(|(name, q)| ((index, part, name.as_str()), (q, policy.on_exceed))),
                );
            }
        }
        entries
    });
    let mut plan: BTreeMap<Slot, Effective> = BTreeMap::new();
    for ((index, part, name), ((q, on_exceed), rule)) in settings {
        let effective = plan.entry(index).or_default();
        // Each (container, part, resource) comes once: the insertions never replace.
        match part {
            Part::DefaultRequest => {
                effective.requests.insert(name, (q, rule));
            }
            Part::DefaultLimit => {
                effective.limits.insert(name, (q, rule));
            }
            Part::Max => {
                effective.max.insert(name, (q, on_exceed, rule));
            }
        }
    }
    let pod_wide_max = spark
        .container
        .and_then(|index| plan.get(&Slot::Main(index)))
        .map(|effective| effective.max.clone())
        .unwrap_or_default();
    let spec = desired.spec.as_mut()?;
    let mut violations = Vec::new();
    for (index, effective) in plan {
        let Some(container) = index.of_mut(&mut spec.containers, &mut spec.init_containers) else {
            continue;
        };
        fill_defaults(container, &effective, warnings);
        if matches!(index, Slot::Init(_)) {
            // Checked below with every init container, against the Spark container's caps.
            continue;
        }
        let mut target = Target {
            subject: format!("container {}", container.name),
            resources: &mut container.resources,
        };
        check_max(&mut target, &effective.max, warnings, &mut violations);
    }
    if pod_wide_max.is_empty() {
        return join(violations);
    }
    for init in spec.init_containers.iter_mut().flatten() {
        let mut target = Target {
            subject: format!("init container {}", init.name),
            resources: &mut init.resources,
        };
        check_max(&mut target, &pod_wide_max, warnings, &mut violations);
    }
    if spec.resources.is_some() {
        let mut target = Target {
            subject: "pod-level resources".to_owned(),
            resources: &mut spec.resources,
        };
        check_max(&mut target, &pod_wide_max, warnings, &mut violations);
    }
    join(violations)
}

fn join(violations: Vec<String>) -> Option<String> {
    if violations.is_empty() {
        None
    } else {
        Some(violations.join("; "))
    }
}

fn current<'a>(
    resources: Option<&'a ResourceRequirements>,
    kind: Kind,
    resource: &str,
) -> Option<&'a str> {
    let resources = resources?;
    let map = match kind {
        Kind::Requests => resources.requests.as_ref(),
        Kind::Limits => resources.limits.as_ref(),
    }?;
    map.get(resource).map(|q| q.0.as_str())
}

fn set(resources: &mut Option<ResourceRequirements>, kind: Kind, resource: &str, value: &str) {
    let resources = resources.get_or_insert_with(ResourceRequirements::default);
    kind.of(resources)
        .get_or_insert_with(BTreeMap::new)
        .insert(resource.to_owned(), KubeQuantity(value.to_owned()));
}

fn fill_defaults(container: &mut Container, effective: &Effective, warnings: &mut Vec<String>) {
    for (resource, (default, rule)) in &effective.requests {
        if current(container.resources.as_ref(), Kind::Requests, resource).is_some() {
            continue;
        }
        let limit = current(container.resources.as_ref(), Kind::Limits, resource)
            .and_then(|l| Quantity::parse(l).ok());
        match limit {
            Some(limit) if limit < **default => warnings.push(format!(
                "container {}: default {resource} request {default} from rule {} not applied, it is above the container's limit {limit}",
                container.name, rule.name
            )),
            _ => set(&mut container.resources, Kind::Requests, resource, default.as_str()),
        }
    }
    for (resource, (default, rule)) in &effective.limits {
        if current(container.resources.as_ref(), Kind::Limits, resource).is_some() {
            continue;
        }
        let request = current(container.resources.as_ref(), Kind::Requests, resource)
            .and_then(|r| Quantity::parse(r).ok());
        match request {
            Some(request) if request > **default => warnings.push(format!(
                "container {}: default {resource} limit {default} from rule {} not applied, it is below the container's request {request}",
                container.name, rule.name
            )),
            _ => set(&mut container.resources, Kind::Limits, resource, default.as_str()),
        }
    }
}

type Caps<'r> = BTreeMap<&'r str, (&'r Quantity, OnExceed, &'r Rule)>;

fn check_max(
    target: &mut Target,
    caps: &Caps,
    warnings: &mut Vec<String>,
    violations: &mut Vec<String>,
) {
    for (resource, (max, on_exceed, rule)) in caps {
        for kind in [Kind::Requests, Kind::Limits] {
            let Some(text) = current(target.resources.as_ref(), kind, resource) else {
                continue;
            };
            let value = match Quantity::parse(text) {
                Ok(value) => value,
                // Valid for Kubernetes, so it will be charged, but it cannot be compared: it
                // must never pass as if it were small, whatever onExceed says.
                Err(error) if error.is_out_of_range() => {
                    violations.push(format!(
                        "{} {} {resource} {text}, which is too large to read and compare with the max {max} of rule {}; ask for at most {max}",
                        target.subject,
                        target.verb(kind),
                        rule.name
                    ));
                    continue;
                }
                Err(_) => {
                    violations.push(format!(
                        "{} {} {resource} {text:?}, which is not a quantity, so the max {max} of rule {} cannot be checked",
                        target.subject,
                        target.verb(kind),
                        rule.name
                    ));
                    continue;
                }
            };
            if value <= **max {
                continue;
            }
            if *resource == "cpu" && *on_exceed == OnExceed::Clamp {
                warnings.push(format!(
                    "{}: cpu {} {value} lowered to the max {max} (rule {}, onExceed clamp)",
                    target.subject,
                    match kind {
                        Kind::Requests => "request",
                        Kind::Limits => "limit",
                    },
                    rule.name
                ));
                set(target.resources, kind, resource, max.as_str());
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
                "{} {} {resource} {value}, over the max {max} set by rule {}{why}",
                target.subject,
                target.verb(kind),
                rule.name
            ));
        }
    }
}
