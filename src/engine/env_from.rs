//! `envFrom` into the selected containers: an entry is added unless an equal one is there
//! (SPEC §4a). A container may bring tens of thousands of entries: what it has goes into a set
//! once (see `dedup`), never searched per entry of the policy's.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{EnvFromSource, Pod, PodSpec};

use crate::policy::Rule;

use super::dedup::{ByJson, Seen};
use super::{Slot, SparkPod, selected_slots};

pub(super) fn apply(
    base: &Pod,
    desired: &mut Pod,
    spark: &SparkPod,
    rules: &[&Rule],
    native: &HashSet<String>,
) {
    // Per container, the policy's entries in rule order.
    let mut plan: BTreeMap<Slot, Vec<&EnvFromSource>> = BTreeMap::new();
    for rule in rules.iter().filter(|r| !r.pod.env_from.is_empty()) {
        for slot in selected_slots(rule, base, spark, native) {
            plan.entry(slot).or_default().extend(&rule.pod.env_from);
        }
    }
    let (Some(base_spec), Some(spec)) = (base.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    let PodSpec {
        containers,
        init_containers,
        ..
    } = spec;
    for (slot, wanted) in plan {
        let (Some(before), Some(container)) =
            (slot.of(base_spec), slot.of_mut(containers, init_containers))
        else {
            continue;
        };
        let mut seen = Seen::of(before.env_from.iter().flatten().map(ByJson));
        for entry in wanted {
            if seen.insert(ByJson(entry)) {
                container
                    .env_from
                    .get_or_insert_with(Vec::new)
                    .push(entry.clone());
            }
        }
    }
}
