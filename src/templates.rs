//! Executor pod templates of cluster-mode applications, read from the cluster when their
//! driver's configuration is admitted (SPEC §5b, "Executor pod templates").
//!
//! With `spark.kubernetes.executor.podTemplateFile`, spark-submit puts the template into a
//! ConfigMap `<prefix>-driver-podspec-conf-map` (key `podspec-configmap-key`), owned by the
//! driver pod and mounted into it as volume `pod-template-volume`. It applies that ConfigMap
//! before the driver's own `spark-drv-<id>-conf-map`, in one sequence: measured with Spark 4.3
//! on every run, and a refused template ends the submission before the driver's ConfigMap is
//! sent. So when the driver's ConfigMap is reviewed, its template is stored: it is found
//! through the driver pod the ConfigMap names as its owner (the pod's volume names the
//! template's ConfigMap) and read with two GETs, which read from etcd, so any replica sees it.
//!
//! Any client can send a review naming a driver, so the reads are bounded in number
//! ([`MAX_IN_FLIGHT`] at once; past that the answer goes without the template) and in time
//! ([`FETCH_TIMEOUT`] for both), and only a pod whose uid is the owner's, and a ConfigMap that
//! pod owns, are used.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use tokio::sync::Semaphore;

/// The key of the template in its ConfigMap.
pub const TEMPLATE_KEY: &str = "podspec-configmap-key";
/// The driver pod's volume that mounts the template's ConfigMap.
pub const TEMPLATE_VOLUME: &str = "pod-template-volume";
/// At most this many templates are read at once.
pub const MAX_IN_FLIGHT: usize = 8;
/// Both GETs of one template within this, well inside the request's deadline.
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(1500);

/// Why a template could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server runs without a Kubernetes client.
    #[error("no Kubernetes client")]
    NoClient,
    /// [`MAX_IN_FLIGHT`] reads were already under way.
    #[error("{MAX_IN_FLIGHT} templates were being read already")]
    Busy,
    /// The reads took longer than [`FETCH_TIMEOUT`].
    #[error("reading it took longer than {FETCH_TIMEOUT:?}")]
    Timeout,
    /// The apiserver refused or failed a read.
    #[error("{what}: {source}")]
    Api {
        /// What was read.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The driver pod or its template is not what a Spark submission makes.
    #[error("{0}")]
    Unexpected(String),
}

/// Reads executor templates, with the server's client once it has one.
pub struct ExecutorTemplates {
    client: OnceLock<kube::Client>,
    slots: Semaphore,
}

impl Default for ExecutorTemplates {
    fn default() -> Self {
        Self::new()
    }
}

impl ExecutorTemplates {
    /// No client yet: every read fails with [`Error::NoClient`].
    pub fn new() -> Self {
        Self {
            client: OnceLock::new(),
            slots: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Gives it the server's client (set once).
    pub fn set_client(&self, client: kube::Client) {
        let _ = self.client.set(client);
    }

    /// The template text of the executors of driver pod `driver` (name and uid, from the
    /// driver ConfigMap's ownerReference) in `namespace`.
    pub async fn fetch(&self, namespace: &str, driver: &str, uid: &str) -> Result<String, Error> {
        let client = self.client.get().ok_or(Error::NoClient)?;
        let _slot = self.slots.try_acquire().map_err(|_| Error::Busy)?;
        tokio::time::timeout(FETCH_TIMEOUT, read(client, namespace, driver, uid))
            .await
            .map_err(|_| Error::Timeout)?
    }
}

async fn read(
    client: &kube::Client,
    namespace: &str,
    driver: &str,
    uid: &str,
) -> Result<String, Error> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(driver)
        .await
        .map_err(|source| Error::Api {
            what: format!("driver pod {namespace}/{driver}"),
            source,
        })?;
    if pod.metadata.uid.as_deref() != Some(uid) {
        return Err(Error::Unexpected(format!(
            "pod {namespace}/{driver} is not the driver that owns the configuration (another uid)"
        )));
    }
    let name = template_configmap(&pod).ok_or_else(|| {
        Error::Unexpected(format!(
            "driver pod {namespace}/{driver} mounts no {TEMPLATE_VOLUME} ConfigMap"
        ))
    })?;
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(&name)
        .await
        .map_err(|source| Error::Api {
            what: format!("template ConfigMap {namespace}/{name}"),
            source,
        })?;
    let owned = config_map
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid);
    if !owned {
        return Err(Error::Unexpected(format!(
            "ConfigMap {namespace}/{name} is not owned by driver pod {driver}"
        )));
    }
    config_map
        .data
        .and_then(|mut data| data.remove(TEMPLATE_KEY))
        .ok_or_else(|| {
            Error::Unexpected(format!(
                "ConfigMap {namespace}/{name} has no {TEMPLATE_KEY}"
            ))
        })
}

/// The name of the ConfigMap the driver pod mounts its executors' template from.
pub fn template_configmap(driver: &Pod) -> Option<String> {
    driver
        .spec
        .as_ref()?
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == TEMPLATE_VOLUME)?
        .config_map
        .as_ref()
        .map(|source| source.name.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_template_configmap_is_the_one_the_driver_mounts_as_spark_names_the_volume() {
        // The volume of a real Spark 4.3 driver pod submitted with an executor template.
        let driver: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [], "volumes": [
                {"name": "spark-local-dir-1", "emptyDir": {}},
                {"name": "pod-template-volume", "configMap": {
                    "name": "meas-47c102a24de53cc0-driver-podspec-conf-map",
                    "items": [{"key": "podspec-configmap-key", "path": "pod-spec-template.yml"}]}},
                {"name": "spark-conf-volume-driver", "configMap": {"name": "spark-drv-1-conf-map"}}
            ]}
        }))
        .unwrap();
        assert_eq!(
            template_configmap(&driver).as_deref(),
            Some("meas-47c102a24de53cc0-driver-podspec-conf-map")
        );
        assert_eq!(template_configmap(&Pod::default()), None);
    }

    #[tokio::test]
    async fn without_a_client_nothing_is_read() {
        let templates = ExecutorTemplates::new();
        assert!(matches!(
            templates.fetch("ns", "d", "u").await,
            Err(Error::NoClient)
        ));
    }
}
