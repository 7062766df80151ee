//! The consistent read of a namespace that gang admission decides on (SPEC §5b; the decision
//! itself is [`crate::quota::gang`]): a quorum LIST of its Spark pods, and for each driver
//! whose submission is earlier than the one being decided, where that submission stands,
//! from its stored driver ConfigMap.
//!
//! An admitted ConfigMap carries the room it was granted in an annotation, and Spark's
//! ConfigMaps are immutable, so a replica reads each one at most once (a GET, with the `get`
//! on ConfigMaps the executor templates need) and remembers it; its own admissions it remembers
//! as it makes them. An earlier submission whose ConfigMap is not stored yet is being decided
//! (on this replica or another) or was refused, in which case spark-submit deletes its driver
//! within about 0.1 s (measured): the read is repeated every [`POLL`] until every earlier one
//! is settled, for at most [`WAIT`], well inside the ConfigMap webhook's 3 s timeout. A driver
//! without a stored ConfigMap after [`IN_FLIGHT`] was not made by a live spark-submit and is
//! counted as a pod only.
//!
//! Any client can send a review, so reads are bounded: [`MAX_IN_FLIGHT`] decisions read at
//! once; past that the decision goes without the namespace read (and says so).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use tokio::sync::Semaphore;

use crate::engine::{APP_ID_LABEL, ROLE_LABEL};
use crate::lean::LeanPodWithVolumes;
use crate::policy::Role;
use crate::quota::gang::{Decided, Granted, NamespaceView, RESERVATION_ANNOTATION, ViewPod};
use crate::quota::watch::{SPARK_POD_SELECTOR, charge_of};

/// Most decisions reading their namespace at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Longest wait for earlier submissions to be settled.
pub const WAIT: Duration = Duration::from_millis(1500);
/// Between two reads while waiting.
pub const POLL: Duration = Duration::from_millis(100);
/// How long after its driver a submission's ConfigMap may still be on its way.
pub const IN_FLIGHT: Duration = Duration::from_secs(10);
/// Most earlier submissions' ConfigMaps read by one read of the namespace; the rest stay
/// unsettled for that read. A tenant can make many young drivers in its namespace; what one
/// review makes the apiserver do stays bounded whatever their number.
pub const MAX_GETS_PER_READ: usize = 32;
/// Most submissions remembered; past it the memory starts again (they are read again).
const MAX_REMEMBERED: usize = 10_000;
/// The volume of a cluster-mode driver that mounts its configuration's ConfigMap.
const CONF_VOLUME: &str = "spark-conf-volume-driver";

/// Why a namespace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server runs without a Kubernetes client.
    #[error("no Kubernetes client")]
    NoClient,
    /// [`MAX_IN_FLIGHT`] decisions were reading already.
    #[error("{MAX_IN_FLIGHT} submissions were being decided already")]
    Busy,
    /// The namespace's LIST took longer than [`WAIT`].
    #[error("listing the Spark pods of namespace {namespace} took longer than {WAIT:?}")]
    Timeout {
        /// The namespace.
        namespace: String,
    },
    /// The LIST failed.
    #[error("listing the Spark pods of namespace {namespace}: {source}")]
    List {
        /// The namespace.
        namespace: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

/// How the read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    /// Reads made.
    pub reads: u32,
    /// Earlier submissions still unsettled when the wait ran out.
    pub unsettled: usize,
}

/// Reads namespaces for gang admission, with the server's client once it has one.
pub struct GangReads {
    client: OnceLock<kube::Client>,
    slots: Semaphore,
    remembered: Mutex<HashMap<String, Decided>>,
}

impl Default for GangReads {
    fn default() -> Self {
        Self::new()
    }
}

impl GangReads {
    /// No client yet: every read fails with [`Error::NoClient`].
    pub fn new() -> Self {
        Self {
            client: OnceLock::new(),
            slots: Semaphore::new(MAX_IN_FLIGHT),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Gives it the server's client (set once).
    pub fn set_client(&self, client: kube::Client) {
        let _ = self.client.set(client);
    }

    /// Remembers how the submission of driver `uid` was decided here.
    pub fn remember(&self, uid: &str, decided: Decided) {
        if let Ok(mut remembered) = self.remembered.lock() {
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(uid.to_owned(), decided);
        }
    }

    fn recalled(&self, uid: &str) -> Option<Decided> {
        self.remembered.lock().ok()?.get(uid).copied()
    }

    /// The namespace as the submission of driver `own` is decided on: its Spark pods, and
    /// where every submission of a driver younger than `expiry` stands, earlier ones settled
    /// if they settle within [`WAIT`].
    pub async fn read(
        &self,
        namespace: &str,
        own: &str,
        expiry: Duration,
    ) -> Result<(NamespaceView, Waited), Error> {
        let client = self.client.get().ok_or(Error::NoClient)?;
        let _slot = tokio::time::timeout(POLL, self.slots.acquire())
            .await
            .map_err(|_| Error::Busy)?
            .map_err(|_| Error::Busy)?;
        // Every read, and every request in it, ends by this: a slow apiserver or a namespace
        // of many drivers cannot hold the review past it.
        let deadline = Instant::now() + WAIT;
        let mut reads = 0;
        loop {
            reads += 1;
            let (view, unsettled) = self
                .read_once(client, namespace, own, expiry, deadline)
                .await?;
            if unsettled == 0 || Instant::now() + POLL > deadline {
                return Ok((view, Waited { reads, unsettled }));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn read_once(
        &self,
        client: &kube::Client,
        namespace: &str,
        own: &str,
        expiry: Duration,
        deadline: Instant,
    ) -> Result<(NamespaceView, usize), Error> {
        // No resourceVersion: a quorum read from etcd, the same on every replica.
        let pods = Api::<LeanPodWithVolumes>::namespaced(client.clone(), namespace);
        let list = tokio::time::timeout_at(
            deadline.into(),
            pods.list(&ListParams::default().labels(SPARK_POD_SELECTOR)),
        )
        .await
        .map_err(|_| Error::Timeout {
            namespace: namespace.to_owned(),
        })?
        .map_err(|source| Error::List {
            namespace: namespace.to_owned(),
            source,
        })?;
        let now = unix_now();
        let mut view = NamespaceView::default();
        let mut confs: Vec<(String, String, i64)> = Vec::new();
        for pod in &list.items {
            let Some(found) = view_pod(pod) else {
                continue;
            };
            if found.role == Role::Driver
                && found.uid != own
                && !crate::quota::gang::expired(found.created, now, expiry)
            {
                let conf = conf_map_of(pod).unwrap_or_default();
                confs.push((found.uid.clone(), conf, found.created));
            }
            view.pods.push(found);
        }
        let own_order = view
            .pods
            .iter()
            .find(|p| p.uid == own)
            .map(|p| (p.created, p.uid.clone()));
        let mut unsettled = 0;
        let mut gets = 0;
        for (uid, conf, created) in confs {
            if let Some(decided) = self.recalled(&uid) {
                view.drivers.insert(uid, decided);
                continue;
            }
            let earlier = own_order
                .as_ref()
                .is_none_or(|(at, own_uid)| (created, uid.as_str()) < (*at, own_uid.as_str()));
            if !earlier {
                // Decided after this one, counting it; nothing to read.
                view.drivers.insert(uid, Decided::Pending);
                continue;
            }
            let decided = if conf.is_empty() {
                Decided::Nothing
            } else if gets >= MAX_GETS_PER_READ || Instant::now() >= deadline {
                // Not read this time: unsettled, as if still being decided.
                Decided::Pending
            } else {
                gets += 1;
                tokio::time::timeout_at(
                    deadline.into(),
                    self.stored(client, namespace, &conf, created, now),
                )
                .await
                .unwrap_or(Decided::Pending)
            };
            if decided == Decided::Pending {
                unsettled += 1;
            } else {
                self.remember(&uid, decided);
            }
            view.drivers.insert(uid, decided);
        }
        Ok((view, unsettled))
    }

    /// Where the submission whose driver ConfigMap is `conf` stands, from the stored object.
    async fn stored(
        &self,
        client: &kube::Client,
        namespace: &str,
        conf: &str,
        created: i64,
        now: i64,
    ) -> Decided {
        match Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(conf)
            .await
        {
            Ok(Some(map)) => map
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RESERVATION_ANNOTATION))
                .and_then(|record| Granted::parse(record))
                .map_or(Decided::Nothing, Decided::Granted),
            Ok(None) if now.saturating_sub(created) <= IN_FLIGHT.as_secs() as i64 => {
                Decided::Pending
            }
            Ok(None) => Decided::Nothing,
            Err(error) => {
                tracing::warn!(%error, namespace, configmap = conf, "could not read an earlier submission's ConfigMap; counting it as undecided");
                Decided::Pending
            }
        }
    }
}

/// The time now, in seconds since the epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What the decision keeps of a listed pod; `None` when it does not count (not a Spark pod,
/// finished, being deleted).
fn view_pod(pod: &LeanPodWithVolumes) -> Option<ViewPod> {
    let labels = pod.metadata.labels.as_ref()?;
    let role = Role::from_label(labels.get(ROLE_LABEL)?)?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(ViewPod {
        uid: pod.metadata.uid.clone()?,
        app: labels.get(APP_ID_LABEL).cloned(),
        role,
        charge: pod
            .spec
            .as_ref()
            .map(|spec| charge_of(&spec.charged))
            .unwrap_or_default(),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
    })
}

/// The ConfigMap a cluster-mode driver reads its configuration from.
fn conf_map_of(pod: &LeanPodWithVolumes) -> Option<String> {
    pod.spec
        .as_ref()?
        .volumes
        .iter()
        .find(|volume| volume.name == CONF_VOLUME)?
        .config_map
        .as_ref()
        .map(|source| source.name.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_real_driver_is_read_with_its_configuration_configmap() {
        let review: serde_json::Value = serde_json::from_slice(include_bytes!(
            "../tests/fixtures/spark-4.3/cluster-mode/template/driver-review.json"
        ))
        .unwrap();
        let mut object = review["request"]["object"].clone();
        object["metadata"]["uid"] = serde_json::json!("uid-1");
        object["metadata"]["creationTimestamp"] = serde_json::json!("2026-12-07T00:26:40Z");
        let pod: LeanPodWithVolumes = serde_json::from_value(object).unwrap();
        let found = view_pod(&pod).unwrap();
        assert_eq!(found.role, Role::Driver);
        assert_eq!(found.created, 1_796_603_200);
        // The driver's own requests: 1 CPU and 1433Mi (a Python driver's 1g heap and 0.4
        // overhead), as in the review.
        assert_eq!(found.charge.cpu, 1_000_000_000);
        assert_eq!(found.charge.memory, 1433 * (1 << 20) * 1_000_000_000);
        assert_eq!(
            conf_map_of(&pod).as_deref(),
            Some("spark-drv-e4d384a24de54048-conf-map")
        );
    }

    /// A stand-in apiserver: the namespace's pods are `pods`; ConfigMap `spark-drv-a` is not
    /// found for the first `missing` GETs, then stored with `record`. Counts the LISTs.
    fn apiserver(
        pods: serde_json::Value,
        missing: usize,
        record: &'static str,
        lists: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> kube::Client {
        use std::sync::atomic::Ordering;
        let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let (pods, gets, lists) = (pods.clone(), gets.clone(), lists.clone());
            async move {
                let path = request.uri().path().to_owned();
                let response = if path == "/api/v1/namespaces/ns/pods" {
                    lists.fetch_add(1, Ordering::SeqCst);
                    axum::http::Response::new(pods.to_string())
                } else if path == "/api/v1/namespaces/ns/configmaps/spark-drv-a" {
                    if gets.fetch_add(1, Ordering::SeqCst) < missing {
                        let mut response = axum::http::Response::new(
                            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}).to_string(),
                        );
                        *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
                        response
                    } else {
                        axum::http::Response::new(
                            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                                "name": "spark-drv-a", "annotations": {RESERVATION_ANNOTATION: record}}})
                            .to_string(),
                        )
                    }
                } else {
                    let mut response = axum::http::Response::new(String::new());
                    *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
                    response
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    fn driver(uid: &str, app: &str, created: &str, conf: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "creationTimestamp": created,
                "labels": {"spark-role": "driver", "spark-app-selector": app}},
            "spec": {"containers": [{"name": "spark-kubernetes-driver",
                "resources": {"requests": {"cpu": "1"}}}],
                "volumes": [{"name": "spark-conf-volume-driver", "configMap": {"name": conf}}]}
        })
    }

    fn pods_now() -> serde_json::Value {
        let now = unix_now();
        let at = |seconds: i64| {
            k8s_openapi::jiff::Timestamp::from_second(seconds)
                .unwrap()
                .to_string()
        };
        serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5"},
            "items": [driver("a", "app-a", &at(now - 2), "spark-drv-a"), driver("b", "app-b", &at(now - 1), "spark-drv-b")]})
    }

    #[tokio::test]
    async fn an_earlier_submission_being_decided_is_waited_for_then_its_grant_counts() {
        let lists = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reads = GangReads::new();
        reads.set_client(apiserver(
            pods_now(),
            3,
            "executors=2 cpu=1000m memory=0",
            lists.clone(),
        ));
        let (view, waited) = reads
            .read("ns", "b", Duration::from_secs(300))
            .await
            .unwrap();
        // Not stored for 3 reads, then stored: read 4 times, settled.
        assert_eq!(
            waited,
            Waited {
                reads: 4,
                unsettled: 0
            }
        );
        assert_eq!(lists.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(
            view.drivers.get("a"),
            Some(&Decided::Granted(Granted {
                executors: 2,
                charge: crate::quota::Charge {
                    cpu: 1_000_000_000,
                    memory: 0
                }
            }))
        );
        assert_eq!(view.pods.len(), 2);
        // Remembered: read again, the ConfigMap is not asked for.
        let (view, waited) = reads
            .read("ns", "b", Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(waited.reads, 1);
        assert!(matches!(view.drivers.get("a"), Some(Decided::Granted(_))));
    }

    #[tokio::test]
    async fn an_earlier_submission_never_stored_is_left_unsettled_after_the_wait() {
        let lists = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reads = GangReads::new();
        reads.set_client(apiserver(pods_now(), usize::MAX, "", lists.clone()));
        let (view, waited) = reads
            .read("ns", "b", Duration::from_secs(300))
            .await
            .unwrap();
        // Read again every POLL until WAIT ran out.
        assert_eq!(waited.unsettled, 1);
        assert!(waited.reads >= 2, "{waited:?}");
        assert_eq!(view.drivers.get("a"), Some(&Decided::Pending));
        // The later driver (b, deciding after a) is never read: for a it is pending.
        let (view, waited) = reads
            .read("ns", "a", Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!((waited.reads, waited.unsettled), (1, 0));
        assert_eq!(view.drivers.get("b"), Some(&Decided::Pending));
    }

    #[tokio::test]
    async fn many_earlier_drivers_cost_at_most_a_bounded_number_of_gets_per_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // 100 young drivers, earlier than "own", none of whose ConfigMaps is stored: what a
        // tenant can create in its own namespace.
        let now = unix_now();
        let at = |seconds: i64| {
            k8s_openapi::jiff::Timestamp::from_second(seconds)
                .unwrap()
                .to_string()
        };
        let mut items: Vec<serde_json::Value> = (0..100)
            .map(|i| {
                driver(
                    &format!("fake-{i:03}"),
                    "fake",
                    &at(now - 3),
                    &format!("c-{i}"),
                )
            })
            .collect();
        items.push(driver("own", "app", &at(now - 1), "spark-drv-own"));
        let pods = serde_json::json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "5"}, "items": items});
        let (lists, gets) = (
            std::sync::Arc::new(AtomicUsize::new(0)),
            std::sync::Arc::new(AtomicUsize::new(0)),
        );
        let (list_count, get_count) = (lists.clone(), gets.clone());
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let (pods, lists, gets) = (pods.clone(), list_count.clone(), get_count.clone());
            async move {
                let path = request.uri().path().to_owned();
                let mut response = if path == "/api/v1/namespaces/ns/pods" {
                    lists.fetch_add(1, Ordering::SeqCst);
                    axum::http::Response::new(pods.to_string())
                } else {
                    gets.fetch_add(1, Ordering::SeqCst);
                    axum::http::Response::new(
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}).to_string(),
                    )
                };
                if path != "/api/v1/namespaces/ns/pods" {
                    *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let reads = GangReads::new();
        reads.set_client(kube::Client::new(service, "default"));
        let (view, waited) = reads
            .read("ns", "own", Duration::from_secs(300))
            .await
            .unwrap();
        // Every fake driver stays unsettled; each read asked for at most 32 ConfigMaps.
        assert_eq!(waited.unsettled, 100, "{waited:?}");
        assert_eq!(lists.load(Ordering::SeqCst), waited.reads as usize);
        let asked = gets.load(Ordering::SeqCst);
        assert!(
            asked <= MAX_GETS_PER_READ * waited.reads as usize,
            "{asked} GETs in {} reads",
            waited.reads
        );
        assert_eq!(view.pods.len(), 101);
    }
}
