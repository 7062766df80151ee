//! The two lean shapes of a pod the server deserialises: the whole pod of a review without
//! `metadata.managedFields` (admission), and a pod with only the fields quotas read (the pod
//! watch and confirming LISTs). Both skip what they do not keep while the JSON is parsed, so
//! neither allocates for it; they share the metadata reader, so the two never drift apart.
//! Below `admission` and `quota`, which both read from here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use serde::Deserialize;

/// A pod deserialised without its `metadata.managedFields` (see `admission::parse_review`).
pub(crate) struct PodWithoutManagedFields(pub(crate) Pod);

impl<'de> Deserialize<'de> for PodWithoutManagedFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PodFields::deserialize(deserializer).map(Self)
    }
}

impl k8s_openapi::Resource for PodWithoutManagedFields {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for PodWithoutManagedFields {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// `Pod`'s fields, with the metadata read by [`MetadataFields`]. Unknown keys (`apiVersion`,
/// `kind`, fields of newer Kubernetes versions) are ignored, as k8s-openapi does.
#[derive(Deserialize)]
#[serde(remote = "Pod")]
struct PodFields {
    #[serde(with = "MetadataFields", default)]
    metadata: ObjectMeta,
    spec: Option<PodSpec>,
    status: Option<PodStatus>,
}

/// `ObjectMeta`'s fields with `managedFields` skipped: serde passes over an unknown key
/// without building anything. Both lean pods below read their metadata with it.
#[derive(Deserialize)]
#[serde(remote = "ObjectMeta", rename_all = "camelCase")]
pub(crate) struct MetadataFields {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip)]
    managed_fields: Option<Vec<ManagedFieldsEntry>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// A pod with only the fields quotas read; everything else in the JSON is skipped while it is
/// parsed, so a watch over thousands of pods allocates little.
#[derive(Debug, Clone, Deserialize)]
pub struct LeanPod {
    #[serde(default, with = "MetadataFields")]
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: Option<LeanSpec>,
    #[serde(default)]
    pub(crate) status: Option<LeanStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeanSpec {
    #[serde(default)]
    pub(crate) containers: Vec<LeanContainer>,
    #[serde(default)]
    pub(crate) init_containers: Vec<LeanContainer>,
    #[serde(default)]
    pub(crate) resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub(crate) overhead: Option<BTreeMap<String, KubeQuantity>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeanContainer {
    #[serde(default)]
    pub(crate) resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub(crate) restart_policy: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct LeanStatus {
    #[serde(default)]
    pub(crate) phase: Option<String>,
}

/// A lean pod is a core/v1 Pod to the API: listed and watched at the pods' URL, with its
/// metadata in `metadata`.
macro_rules! lean_pod_resource {
    ($lean:ty) => {
        impl k8s_openapi::Resource for $lean {
            const API_VERSION: &'static str = "v1";
            const GROUP: &'static str = "";
            const KIND: &'static str = "Pod";
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = "pods";
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::Metadata for $lean {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

lean_pod_resource!(LeanPod);

/// A pod with what quotas read and the names of the ConfigMaps its volumes mount: the shape
/// of gang admission's consistent read of a namespace (a driver's volume names its
/// configuration's ConfigMap). Not the watch's shape: the watch keeps no volumes.
#[derive(Debug, Clone, Deserialize)]
pub struct LeanPodWithVolumes {
    #[serde(default, with = "MetadataFields")]
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) spec: Option<LeanSpecWithVolumes>,
    #[serde(default)]
    pub(crate) status: Option<LeanStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct LeanSpecWithVolumes {
    #[serde(flatten)]
    pub(crate) charged: LeanSpec,
    #[serde(default)]
    pub(crate) volumes: Vec<LeanVolume>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeanVolume {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) config_map: Option<LeanConfigMapSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct LeanConfigMapSource {
    #[serde(default)]
    pub(crate) name: String,
}

lean_pod_resource!(LeanPodWithVolumes);
