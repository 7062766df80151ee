//! Volumes (keyed by name), Spark's local dirs, and mounts into the selected containers (keyed
//! by `mountPath`), SPEC §4a.
//!
//! The apiserver refuses a pod with a mount naming no volume, or with two mounts on one path in
//! a container (or a mount on a volumeDevice's path), so a mount goes in only where the result
//! keeps those rules; otherwise the pod keeps what it has and gets a warning. A pod may hold
//! tens of thousands of volumes or mounts: each is found through a map of names or paths built
//! once, never by a search per entry.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    EphemeralVolumeSource, PersistentVolumeClaimSpec, PersistentVolumeClaimTemplate, Pod, PodSpec,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use crate::policy::{LocalDirs, Mode, Quantity, Rule};

use super::defaults;
use super::precedence::{last_rule_setting, last_setters};
use super::{SparkPod, by, kept_warning, quoted_json, selected_slots};

/// The prefix Spark names its scratch volumes with (`spark-local-dir-1`, ...).
const LOCAL_DIR_PREFIX: &str = "spark-local-dir-";

/// `spec.volumes` by name, then `localDirs`. Returns the names of the volumes the pod kept
/// against the policy's (under `merge`): a mount of the policy's must not put the pod's other
/// source where the policy meant its own.
pub(super) fn apply_volumes(
    original: &Pod,
    desired: &mut Pod,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) -> HashSet<String> {
    let mut kept = HashSet::new();
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return kept;
    };
    let winners = last_setters(rules, |rule| {
        rule.pod.volumes.iter().map(|v| (v.name.as_str(), v))
    });
    let local_dirs = last_rule_setting(rules, |r| r.pod.local_dirs.as_ref());
    if !winners.is_empty() {
        let own = original_spec.volumes.as_deref().unwrap_or_default();
        let mut places: HashMap<&str, usize> = HashMap::with_capacity(own.len());
        for (index, volume) in own.iter().enumerate() {
            places.entry(volume.name.as_str()).or_insert(index);
        }
        for (name, (volume, rule)) in winners {
            // As the apiserver will store it, and as localDirs leaves it, so that a second pass
            // finds it equal.
            let mut volume = defaults::volume(volume.clone());
            if let Some((local_dirs, rule)) = local_dirs
                && is_local_dir(&volume)
            {
                apply_local_dir(&mut volume, local_dirs, rule, &mut Vec::new());
            }
            let volume = &volume;
            match places.get(name).and_then(|&i| own.get(i).map(|v| (i, v))) {
                Some((_, existing)) if existing == volume => {}
                Some((_, existing)) if rule.mode == Mode::Merge => {
                    kept.insert(name.to_owned());
                    warnings.push(kept_warning(
                        &format!("volume {name}"),
                        &quoted_json(existing),
                        &quoted_json(volume),
                        rule,
                    ));
                }
                // A mount of the pod's naming it now mounts the policy's source: still valid.
                Some((index, _)) => {
                    if let Some(slot) = spec.volumes.as_mut().and_then(|v| v.get_mut(index)) {
                        *slot = volume.clone();
                    }
                }
                None => spec
                    .volumes
                    .get_or_insert_with(Vec::new)
                    .push(volume.clone()),
            }
        }
    }
    if let Some((local_dirs, rule)) = local_dirs {
        for volume in spec.volumes.iter_mut().flatten() {
            if is_local_dir(volume) {
                apply_local_dir(volume, local_dirs, rule, warnings);
            }
        }
    }
    kept
}

/// Whether localDirs changes this volume: one of Spark's, still an `emptyDir`.
fn is_local_dir(volume: &Volume) -> bool {
    volume.name.starts_with(LOCAL_DIR_PREFIX) && volume.empty_dir.is_some()
}

/// One `spark-local-dir-*` volume that is an `emptyDir`. Any other source (Spark's
/// `persistentVolumeClaim` local dirs, or an ephemeral volume already made, by this rule on a
/// first pass or by the pod) is never reached.
fn apply_local_dir(
    volume: &mut Volume,
    local_dirs: &LocalDirs,
    rule: &Rule,
    warnings: &mut Vec<String>,
) {
    match local_dirs {
        LocalDirs::EmptyDir { size_limit, medium } => {
            let name = volume.name.clone();
            let Some(empty_dir) = volume.empty_dir.as_mut() else {
                return;
            };
            if let Some(limit) = size_limit {
                let have = empty_dir.size_limit.as_ref().map(|q| q.0.as_str());
                // Compared as quantities: `200Gi` and `214748364800` are the same limit.
                let same = have
                    .and_then(|h| Quantity::parse(h).ok())
                    .is_some_and(|h| h == *limit);
                match have {
                    _ if same => {}
                    Some(have) if rule.mode == Mode::Merge => warnings.push(kept_warning(
                        &format!("localDirs: volume {name} emptyDir.sizeLimit"),
                        &format!("{have:?}"),
                        &format!("{:?}", limit.as_str()),
                        rule,
                    )),
                    _ => {
                        empty_dir.size_limit =
                            Some(KubeQuantity(limit.canonical().as_str().to_owned()))
                    }
                }
            }
            if let Some(medium) = medium {
                match empty_dir.medium.as_deref().filter(|m| !m.is_empty()) {
                    Some(have) if have == medium => {}
                    Some(have) if rule.mode == Mode::Merge => warnings.push(kept_warning(
                        &format!("localDirs: volume {name} emptyDir.medium"),
                        &format!("{have:?}"),
                        &format!("{medium:?}"),
                        rule,
                    )),
                    _ => empty_dir.medium = Some(medium.clone()),
                }
            }
        }
        LocalDirs::Ephemeral {
            storage_class_name,
            size,
        } => {
            // Spark's emptyDir is Spark's default, not a choice of the pod's author, so it is
            // replaced under `merge` too; a second pass finds an ephemeral volume and stops.
            volume.empty_dir = None;
            volume.ephemeral = Some(EphemeralVolumeSource {
                volume_claim_template: Some(PersistentVolumeClaimTemplate {
                    metadata: None,
                    spec: PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_owned(),
                                KubeQuantity(size.as_pod_resource().as_str().to_owned()),
                            )])),
                            limits: None,
                        }),
                        storage_class_name: storage_class_name.clone(),
                        // What the apiserver fills in.
                        volume_mode: Some("Filesystem".to_owned()),
                        ..PersistentVolumeClaimSpec::default()
                    },
                }),
            });
        }
    }
}

/// `volumeMounts` into the containers each rule selects, keyed by (container, `mountPath`).
pub(super) fn apply_mounts(
    base: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    native: &HashSet<String>,
    kept_volumes: &HashSet<String>,
    warnings: &mut Vec<String>,
) {
    let settings = last_setters(rules, |rule| {
        let slots = if rule.pod.volume_mounts.is_empty() {
            Vec::new()
        } else {
            selected_slots(rule, base, spark, native)
        };
        slots.into_iter().flat_map(move |slot| {
            rule.pod
                .volume_mounts
                .iter()
                .map(move |mount| ((slot, mount.mount_path.as_str()), mount))
        })
    });
    if settings.is_empty() {
        return;
    }
    let (Some(base_spec), Some(spec)) = (base.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    let PodSpec {
        containers,
        init_containers,
        volumes,
        ..
    } = spec;
    let volumes: HashSet<&str> = volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    // Per container, in order of first mention.
    let mut plan: BTreeMap<super::Slot, Vec<(&VolumeMount, &Rule)>> = BTreeMap::new();
    for ((slot, _), setting) in settings {
        plan.entry(slot).or_default().push(setting);
    }
    for (slot, mounts) in plan {
        let (Some(before), Some(container)) =
            (slot.of(base_spec), slot.of_mut(containers, init_containers))
        else {
            continue;
        };
        let existing = before.volume_mounts.as_deref().unwrap_or_default();
        let mut places: HashMap<&str, usize> = HashMap::with_capacity(existing.len());
        for (index, mount) in existing.iter().enumerate() {
            places.entry(mount.mount_path.as_str()).or_insert(index);
        }
        let devices: HashSet<&str> = before
            .volume_devices
            .iter()
            .flatten()
            .map(|d| d.device_path.as_str())
            .collect();
        for (mount, rule) in mounts {
            let path = mount.mount_path.as_str();
            let what = format!("volumeMount {path} in container {}", container.name);
            if !volumes.contains(mount.name.as_str()) {
                warnings.push(format!(
                    "{what}: not added: the pod has no volume {} ({})",
                    mount.name,
                    by(rule)
                ));
                continue;
            }
            let current = places
                .get(path)
                .and_then(|&i| existing.get(i).map(|m| (i, m)));
            if current.is_some_and(|(_, have)| have == mount) {
                continue;
            }
            if kept_volumes.contains(&mount.name) {
                warnings.push(format!(
                    "{what}: not added: volume {} is the pod's own, kept against the policy's ({})",
                    mount.name,
                    by(rule)
                ));
                continue;
            }
            if devices.contains(path) {
                warnings.push(format!(
                    "{what}: not added: the container has a volumeDevice on that path; kept the pod's ({})",
                    by(rule)
                ));
                continue;
            }
            match current {
                Some((_, have)) if rule.mode == Mode::Merge => warnings.push(kept_warning(
                    &what,
                    &quoted_json(have),
                    &quoted_json(mount),
                    rule,
                )),
                // Same path, a volume that exists: the container stays valid.
                Some((index, _)) => {
                    if let Some(target) = container
                        .volume_mounts
                        .as_mut()
                        .and_then(|m| m.get_mut(index))
                    {
                        *target = mount.clone();
                    }
                }
                None => container
                    .volume_mounts
                    .get_or_insert_with(Vec::new)
                    .push(mount.clone()),
            }
        }
    }
}
