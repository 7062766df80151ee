//! What one pod costs against a quota: the CPU and memory the scheduler and ResourceQuota charge
//! it, computed the way Kubernetes computes a pod's effective request.
//!
//! Per resource: the sum over the app containers, or the largest init container if that is
//! more; a container counts its request, or its limit when it has no request (the apiserver
//! defaults a missing request to the limit). Sidecars (init containers with `restartPolicy:
//! Always`, Kubernetes 1.28+) run beside the app containers, so they add to the sum and to every
//! init container started after them. A pod-level `resources` (Kubernetes 1.32+) replaces the
//! container sum for the resources it sets. `spec.overhead` (from the RuntimeClass) is added, as
//! ResourceQuota and the scheduler add it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use crate::policy::Quantity;

/// CPU and memory, in nano-units (nano-cores, nano-bytes), as [`Quantity::nanos`] counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    /// CPU in nano-cores.
    pub cpu: i128,
    /// Memory in nano-bytes.
    pub memory: i128,
}

impl Charge {
    /// The charge of a whole pod (see the module documentation for the rule).
    pub fn of_pod(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        Self::of_parts(
            spec.containers.iter().map(|c| c.resources.as_ref()),
            spec.init_containers.iter().flatten().map(|c| {
                (
                    c.resources.as_ref(),
                    c.restart_policy.as_deref() == Some("Always"),
                )
            }),
            spec.resources.as_ref(),
            spec.overhead.as_ref(),
        )
    }

    /// The charge from a pod's parts: the app containers' resources, the init containers'
    /// resources with whether each is a sidecar, the pod-level resources and the overhead.
    pub fn of_parts<'a>(
        containers: impl IntoIterator<Item = Option<&'a ResourceRequirements>>,
        init_containers: impl IntoIterator<Item = (Option<&'a ResourceRequirements>, bool)>,
        pod_level: Option<&'a ResourceRequirements>,
        overhead: Option<&'a BTreeMap<String, KubeQuantity>>,
    ) -> Self {
        let mut sum = Self::default();
        for resources in containers {
            sum = sum.plus(Self::of_container(resources));
        }
        let mut sidecars = Self::default();
        let mut largest_init = Self::default();
        for (resources, sidecar) in init_containers {
            let own = Self::of_container(resources);
            let while_running = if sidecar {
                sum = sum.plus(own);
                sidecars = sidecars.plus(own);
                sidecars
            } else {
                own.plus(sidecars)
            };
            largest_init = largest_init.max(while_running);
        }
        let mut charge = sum.max(largest_init);
        if let Some(pod_level) = pod_level {
            if let Some(cpu) = amount(Some(pod_level), "cpu") {
                charge.cpu = cpu;
            }
            if let Some(memory) = amount(Some(pod_level), "memory") {
                charge.memory = memory;
            }
        }
        let overhead_of = |name: &str| {
            overhead.and_then(|o| o.get(name)).map_or(0, |q| {
                Quantity::nanos_of(&q.0).map_or(UNREADABLE, |n| n.max(0))
            })
        };
        charge.plus(Self {
            cpu: overhead_of("cpu"),
            memory: overhead_of("memory"),
        })
    }

    fn of_container(resources: Option<&ResourceRequirements>) -> Self {
        Self {
            cpu: amount(resources, "cpu").unwrap_or(0),
            memory: amount(resources, "memory").unwrap_or(0),
        }
    }

    /// Both resources added, saturating (a hostile quantity cannot wrap a total around).
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_add(other.cpu),
            memory: self.memory.saturating_add(other.memory),
        }
    }

    /// Both resources subtracted, saturating.
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_sub(other.cpu),
            memory: self.memory.saturating_sub(other.memory),
        }
    }

    /// The larger of each resource.
    fn max(self, other: Self) -> Self {
        Self {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
        }
    }

    /// Each resource multiplied by `factor`, saturating.
    pub fn times(self, factor: i128) -> Self {
        Self {
            cpu: self.cpu.saturating_mul(factor),
            memory: self.memory.saturating_mul(factor),
        }
    }
}

/// What a quantity that cannot be read counts as: more than any limit (yet small enough that
/// sums saturate rather than wrap). The apiserver refuses text that is not a quantity, and it
/// accepts numbers too large for nano-units exact in 128 bits; either way such a pod must not
/// slip under a quota as costing nothing.
pub const UNREADABLE: i128 = i128::MAX >> 16;

/// A resource's request, else its limit; `None` when neither is set.
fn amount(resources: Option<&ResourceRequirements>, name: &str) -> Option<i128> {
    let resources = resources?;
    let quantity = find(&resources.requests, name).or_else(|| find(&resources.limits, name))?;
    Some(Quantity::nanos_of(&quantity.0).map_or(UNREADABLE, |nanos| nanos.max(0)))
}

fn find<'a>(
    map: &'a Option<BTreeMap<String, KubeQuantity>>,
    name: &str,
) -> Option<&'a KubeQuantity> {
    map.as_ref()?.get(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    const NANOS: i128 = 1_000_000_000;
    const MI: i128 = 1 << 20;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn cores(millis: i128) -> i128 {
        millis * NANOS / 1000
    }

    fn mebibytes(count: i128) -> i128 {
        count * MI * NANOS
    }

    #[test]
    fn the_real_executor_is_charged_its_requests() {
        let review: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/spark-4.3/executor-review.json"
        ))
        .unwrap();
        let pod: Pod = serde_json::from_value(review["request"]["object"].clone()).unwrap();
        // Spark asked for 2 cores and 2g heap + 384Mi overhead, request = limit for memory.
        assert_eq!(
            Charge::of_pod(&pod),
            Charge {
                cpu: cores(2000),
                memory: mebibytes(2432)
            }
        );
    }

    #[test]
    fn containers_add_up_and_a_limit_counts_when_there_is_no_request() {
        let pod = pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "4"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}},
            {"name": "c"},
        ]}));
        assert_eq!(
            Charge::of_pod(&pod),
            Charge {
                cpu: cores(1500),
                memory: mebibytes(1024 + 256)
            }
        );
    }

    #[test]
    fn the_largest_init_container_counts_when_it_is_larger_than_the_sum() {
        let pod = pod(json!({
            "initContainers": [
                {"name": "fetch", "resources": {"requests": {"cpu": "3", "memory": "100Mi"}}},
                {"name": "small", "resources": {"requests": {"cpu": "1"}}},
            ],
            "containers": [{"name": "main", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}],
        }));
        // CPU from the init container, memory from the app containers: per resource.
        assert_eq!(
            Charge::of_pod(&pod),
            Charge {
                cpu: cores(3000),
                memory: mebibytes(2048)
            }
        );
    }

    #[test]
    fn sidecars_add_to_the_sum_and_to_later_init_containers() {
        let pod = pod(json!({
            "initContainers": [
                {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}},
                {"name": "migrate", "resources": {"requests": {"cpu": "4", "memory": "64Mi"}}},
            ],
            "containers": [{"name": "main", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
        }));
        // Running: main + proxy = 3 CPU; while migrating: migrate + proxy = 5 CPU.
        assert_eq!(
            Charge::of_pod(&pod),
            Charge {
                cpu: cores(5000),
                memory: mebibytes(1024 + 64)
            }
        );
    }

    #[test]
    fn pod_level_resources_replace_the_container_sum_and_overhead_is_added() {
        let pod = pod(json!({
            "resources": {"limits": {"cpu": "6"}},
            "overhead": {"cpu": "250m", "memory": "120Mi"},
            "containers": [{"name": "main", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
        }));
        assert_eq!(
            Charge::of_pod(&pod),
            Charge {
                cpu: cores(6250),
                memory: mebibytes(1024 + 120)
            }
        );
    }

    #[test]
    fn a_pod_without_resources_costs_nothing_and_an_unreadable_quantity_counts_as_over_any_limit() {
        assert_eq!(
            Charge::of_pod(&pod(json!({"containers": [{"name": "main"}]}))),
            Charge::default()
        );
        // Kubernetes accepts this (about 1.7e20 cores); it overflows 128-bit nano-units.
        let huge = pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "170141183460469231731687303715n"}}},
            {"name": "b", "resources": {"requests": {"cpu": "170141183460469231731687303715n"}}},
        ]}));
        assert_eq!(
            Charge::of_pod(&huge).cpu,
            2 * UNREADABLE,
            "summed without wrapping"
        );
        let garbage = pod(
            json!({"containers": [{"name": "main", "resources": {"requests": {"cpu": "lots"}, "limits": {"cpu": "2"}}}]}),
        );
        assert_eq!(Charge::of_pod(&garbage).cpu, UNREADABLE);
    }
}
