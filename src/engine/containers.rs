//! Init containers and sidecars the policy adds, each keyed by name (SPEC §4a).
//!
//! Names are unique across `containers` and `initContainers` (the apiserver refuses a pod
//! otherwise), so a name is looked up once in a map of every name the pod has, never searched
//! for. A name the pod already uses in the other list, or for the Spark container, is a
//! conflict the policy cannot resolve: the pod keeps it and gets a warning.
//!
//! Sidecars, on a cluster known to be 1.29 or later, are native sidecars: init containers with
//! `restartPolicy: Always`, which the kubelet starts in order with the other init containers,
//! keeps running beside the main containers and stops when they end. They go first, before the
//! policy's init containers and the pod's own: a sidecar (a log shipper, a proxy, a credential
//! agent) serves every other container, init containers included, and the kubelet starts the
//! next init container only once a native sidecar has started, so whatever follows can rely on
//! it. The price is that its requests add to those of every init container after it, which is
//! what the quota charges too (§5). On an older or unknown version a sidecar is appended to
//! `spec.containers`, which every version accepts; a driver pod then runs until the sidecar
//! stops too, so it gets a warning. A sidecar is never an init container without `restartPolicy:
//! Always`: such an init container would never exit, and the pod would never start.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::policy::{Mode, Role, Rule};

use serde_json::Value;

use super::dedup::{ByJson, Seen};
use super::defaults;
use super::precedence::last_setters;
use super::{ClusterFacts, Slot, SparkPod, by, kept_warning, quoted_json};

/// What [`apply`] did, for the concerns that act on containers after it.
#[derive(Debug, Default)]
pub(super) struct Injected {
    /// Whether a container was added or replaced.
    pub(super) changed: bool,
    /// The names of the policy's native sidecars the pod now has.
    pub(super) native: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Sidecar,
}

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    cluster: &ClusterFacts,
    kept_volumes: &HashSet<String>,
    warnings: &mut Vec<String>,
) -> Injected {
    let mut injected = Injected::default();
    // One key space for both fields: a name is one container, and the last rule naming it
    // decides whether it is an init container or a sidecar.
    let winners = last_setters(rules, |rule| {
        let inits = rule
            .pod
            .init_containers
            .iter()
            .map(|c| (c.name.as_str(), (Kind::Init, c)));
        let sidecars = rule
            .pod
            .sidecars
            .iter()
            .map(|c| (c.name.as_str(), (Kind::Sidecar, c)));
        inits.chain(sidecars)
    });
    if winners.is_empty() {
        return injected;
    }
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return injected;
    };
    let native = cluster
        .kubernetes_version
        .is_some_and(|v| v.has_native_sidecars());
    let mut names: HashMap<&str, Slot> = HashMap::new();
    for (index, container) in original_spec.containers.iter().enumerate() {
        names
            .entry(container.name.as_str())
            .or_insert(Slot::Main(index));
    }
    for (index, container) in original_spec.init_containers.iter().flatten().enumerate() {
        names
            .entry(container.name.as_str())
            .or_insert(Slot::Init(index));
    }
    let PodSpec {
        containers,
        init_containers,
        volumes,
        ..
    } = spec;
    let volumes: HashSet<&str> = volumes.iter().flatten().map(|v| v.name.as_str()).collect();

    let (mut first_sidecars, mut first_inits, mut appended) = (Vec::new(), Vec::new(), Vec::new());
    let mut appended_sidecars: Vec<(&str, &Rule)> = Vec::new();
    for (name, ((kind, container), rule)) in winners {
        let what = match kind {
            Kind::Init => "initContainer",
            Kind::Sidecar => "sidecar",
        };
        let into_init = kind == Kind::Init || native;
        // As the apiserver will store it, so that a second pass finds it equal.
        let wanted = defaults::container(match kind {
            Kind::Init => container.clone(),
            Kind::Sidecar => Container {
                restart_policy: native.then(|| "Always".to_owned()),
                ..container.clone()
            },
        });
        if let Some(reason) = refusal(&wanted, kind, native, spark.role, &volumes, kept_volumes) {
            warnings.push(format!("{what} {name}: not added: {reason} ({})", by(rule)));
            continue;
        }
        let slot = match names.get(name) {
            None => {
                match kind {
                    Kind::Sidecar if native => {
                        injected.native.insert(name.to_owned());
                        first_sidecars.push(wanted);
                    }
                    Kind::Sidecar => {
                        appended_sidecars.push((name, rule));
                        appended.push(wanted);
                    }
                    Kind::Init => first_inits.push(wanted),
                }
                injected.changed = true;
                continue;
            }
            Some(&Slot::Init(index)) if into_init => Slot::Init(index),
            Some(&Slot::Main(index)) if !into_init && Some(index) != spark.container => {
                Slot::Main(index)
            }
            Some(&other) => {
                let list = match other {
                    Slot::Main(i) if Some(i) == spark.container => {
                        "spec.containers (the Spark container)"
                    }
                    Slot::Main(_) => "spec.containers",
                    Slot::Init(_) => "spec.initContainers",
                };
                warnings.push(format!(
                    "{what} {name}: not added: the pod already has a container named {name} in {list}; kept the pod's ({})",
                    by(rule)
                ));
                continue;
            }
        };
        if kind == Kind::Sidecar {
            if native {
                injected.native.insert(name.to_owned());
            } else {
                appended_sidecars.push((name, rule));
            }
        }
        let Some(existing) = slot.of(original_spec) else {
            continue;
        };
        if *existing == wanted {
            continue;
        }
        match rule.mode {
            // What the container concerns added to the policy's container on a first pass (env,
            // mounts, envFrom, defaults of `containers: all`) is no difference of the pod's.
            Mode::Merge if includes(existing, &wanted) => {}
            Mode::Merge => warnings.push(kept_warning(
                &format!("{what} {name}"),
                &quoted_json(existing),
                &quoted_json(&wanted),
                rule,
            )),
            Mode::Enforce => {
                if let Some(target) = slot.of_mut(containers, init_containers) {
                    *target = wanted;
                    injected.changed = true;
                }
            }
        }
    }
    if !first_sidecars.is_empty() || !first_inits.is_empty() {
        let inits = init_containers.get_or_insert_with(Vec::new);
        let own = std::mem::take(inits);
        inits.reserve_exact(first_sidecars.len() + first_inits.len() + own.len());
        inits.extend(first_sidecars);
        inits.extend(first_inits);
        inits.extend(own);
    }
    containers.extend(appended);
    if spark.role == Role::Driver {
        let version = match cluster.kubernetes_version {
            Some(version) => format!("is {version}, older than 1.29"),
            None => "is not known".to_owned(),
        };
        for (name, rule) in appended_sidecars {
            warnings.push(format!(
                "sidecar {name}: appended to spec.containers, not a native sidecar, since the cluster's version {version}; this driver pod stays Running after Spark exits, until {name} stops ({})",
                by(rule)
            ));
        }
    }
    injected
}

/// Whether `have` holds everything `want` sets: every field of an object, every entry of a
/// list (found through a set, since a pod's lists can be long), every value equal.
fn includes<T: serde::Serialize>(have: &T, want: &T) -> bool {
    match (serde_json::to_value(have), serde_json::to_value(want)) {
        (Ok(have), Ok(want)) => json_includes(&have, &want),
        _ => false,
    }
}

fn json_includes(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, w)| have.get(key).is_some_and(|h| json_includes(h, w))),
        (Value::Array(have), Value::Array(want)) => {
            let mut seen = Seen::of(have.iter().map(ByJson));
            // An entry of `want` found in `have`; `insert` is `false` when it was there.
            want.iter().all(|w| !seen.insert(ByJson(w)))
        }
        (have, want) => have == want,
    }
}

/// Why a container of the policy cannot go into this pod, if it cannot: what would make the
/// apiserver refuse the pod, or make the container pass for the Spark container.
fn refusal(
    container: &Container,
    kind: Kind,
    native: bool,
    role: Role,
    volumes: &HashSet<&str>,
    kept_volumes: &HashSet<String>,
) -> Option<String> {
    if kind == Kind::Init && !native && container.restart_policy.as_deref() == Some("Always") {
        return Some(
            "it has restartPolicy: Always, which needs a cluster of 1.29 or later".to_owned(),
        );
    }
    let mut paths = HashSet::new();
    for mount in container.volume_mounts.iter().flatten() {
        if !volumes.contains(mount.name.as_str()) {
            return Some(format!(
                "its volumeMount {} names volume {}, which the pod does not have",
                mount.mount_path, mount.name
            ));
        }
        if kept_volumes.contains(&mount.name) {
            return Some(format!(
                "its volumeMount {} names volume {}, which is the pod's own, kept against the policy's",
                mount.mount_path, mount.name
            ));
        }
        if !paths.insert(mount.mount_path.as_str()) {
            return Some(format!("it mounts two volumes on {}", mount.mount_path));
        }
    }
    // A second container claiming the Spark container would make the next pass refuse the
    // pod as ambiguous (see `spark_container`).
    let claims = container.name == format!("spark-kubernetes-{}", role.as_str())
        || container
            .args
            .as_ref()
            .and_then(|a| a.first())
            .is_some_and(|a| a == role.as_str());
    if kind == Kind::Sidecar && !native && claims {
        return Some(format!(
            "it would claim to be the Spark {role} container (by its name or args[0])"
        ));
    }
    None
}
