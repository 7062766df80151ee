//! What the apiserver's defaulting writes into the objects a policy adds to a pod (containers
//! and volumes), written here before they go in.
//!
//! The apiserver defaults a pod when it decodes it, before webhooks, and again after a
//! webhook's patch: a sidecar the policy adds comes back on reinvocation with
//! `terminationMessagePath`, `imagePullPolicy` and the like filled, a ConfigMap volume with its
//! `defaultMode`, quantities in canonical form. Compared with the policy's object as written,
//! it would differ: `merge` would warn about the pod's "own" value, `enforce` would patch it
//! back every time. Written with the defaults, the policy's object is what the apiserver
//! stores, and a second pass finds it equal. Only fields left unset are filled, as the
//! apiserver does (`pkg/apis/core/v1/defaults.go`); the list covers what a policy's containers
//! and volumes commonly carry, and the e2e tests against a real apiserver are what confirms it.

use k8s_openapi::api::core::v1::{Container, Probe, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use crate::policy::Quantity;

/// `0644`, the mode of files projected from a ConfigMap, Secret or the downward API.
const DEFAULT_MODE: i32 = 0o644;

/// A container as the apiserver stores it.
pub(super) fn container(mut container: Container) -> Container {
    container
        .termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_owned());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".to_owned());
    if container.image_pull_policy.is_none() {
        container.image_pull_policy = Some(pull_policy(container.image.as_deref()));
    }
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
    for var in container.env.iter_mut().flatten() {
        if let Some(field) = var.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            field.api_version.get_or_insert_with(|| "v1".to_owned());
        }
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        self::probe(probe);
    }
    if let Some(resources) = container.resources.as_mut() {
        for list in [&mut resources.limits, &mut resources.requests]
            .into_iter()
            .flatten()
        {
            for value in list.values_mut() {
                if let Ok(quantity) = Quantity::parse(&value.0) {
                    *value = KubeQuantity(quantity.as_pod_resource().as_str().to_owned());
                }
            }
        }
        // A resource with a limit and no request is requested at its limit.
        if let Some(limits) = resources.limits.clone() {
            let requests = resources.requests.get_or_insert_with(Default::default);
            for (name, limit) in limits {
                requests.entry(name).or_insert(limit);
            }
        }
    }
    container
}

/// `Always` for an image without a tag or tagged `latest`, else `IfNotPresent`.
fn pull_policy(image: Option<&str>) -> String {
    let image = image.unwrap_or_default();
    // A digest pins the image whatever its tag.
    let policy = if image.contains('@') {
        "IfNotPresent"
    } else {
        let name = image.rsplit('/').next().unwrap_or(image);
        match name.rsplit_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    };
    policy.to_owned()
}

fn probe(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(get) = probe.http_get.as_mut() {
        get.path.get_or_insert_with(|| "/".to_owned());
        get.scheme.get_or_insert_with(|| "HTTP".to_owned());
    }
}

/// A volume as the apiserver stores it.
pub(super) fn volume(mut volume: Volume) -> Volume {
    if let Some(source) = volume.config_map.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(source) = volume.secret.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(source) = volume.downward_api.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_MODE);
        for item in source.items.iter_mut().flatten() {
            if let Some(field) = item.field_ref.as_mut() {
                field.api_version.get_or_insert_with(|| "v1".to_owned());
            }
        }
    }
    if let Some(source) = volume.projected.as_mut() {
        source.default_mode.get_or_insert(DEFAULT_MODE);
        for projection in source.sources.iter_mut().flatten() {
            if let Some(token) = projection.service_account_token.as_mut() {
                token.expiration_seconds.get_or_insert(3600);
            }
        }
    }
    if let Some(source) = volume.host_path.as_mut() {
        source.type_.get_or_insert_with(String::new);
    }
    if let Some(spec) = volume
        .ephemeral
        .as_mut()
        .and_then(|e| e.volume_claim_template.as_mut())
        .map(|t| &mut t.spec)
    {
        spec.volume_mode
            .get_or_insert_with(|| "Filesystem".to_owned());
    }
    volume
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_container_gets_the_apiservers_defaults_only_where_unset() {
        let written: Container = serde_json::from_value(json!({
            "name": "fluent-bit", "image": "fluent/fluent-bit:3",
            "imagePullPolicy": "Never",
            "ports": [{"containerPort": 2020}],
            "resources": {"limits": {"cpu": "0.5", "memory": "64Mi"}, "requests": {"memory": "32Mi"}},
            "readinessProbe": {"httpGet": {"port": 2020}},
        }))
        .expect("container");
        let stored = serde_json::to_value(container(written)).expect("json");
        assert_eq!(
            stored,
            json!({
                "name": "fluent-bit", "image": "fluent/fluent-bit:3",
                "imagePullPolicy": "Never",
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "ports": [{"containerPort": 2020, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"},
                              "requests": {"cpu": "500m", "memory": "32Mi"}},
                "readinessProbe": {"httpGet": {"port": 2020, "path": "/", "scheme": "HTTP"},
                    "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
            })
        );
    }

    #[test]
    fn the_pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("registry:5000/busybox", "Always"),
            ("registry:5000/busybox:1.36", "IfNotPresent"),
            ("busybox@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(Some(image)), policy, "{image}");
        }
    }

    #[test]
    fn projected_files_get_mode_0644() {
        let written: Volume =
            serde_json::from_value(json!({"name": "conf", "configMap": {"name": "hadoop"}}))
                .expect("volume");
        let stored = serde_json::to_value(volume(written)).expect("json");
        assert_eq!(
            stored,
            json!({"name": "conf", "configMap": {"name": "hadoop", "defaultMode": 420}})
        );
    }
}
