//! The consistent read of a namespace that gang admission decides on, and the write that
//! holds its room (SPEC §5b; the decision itself is [`crate::quota::gang`]).
//!
//! The read: a quorum LIST of the namespace's Spark pods; for each young driver, where its
//! submission stands, from its stored driver ConfigMap; then the namespace's reservations, a
//! quorum GET of one Lease in the webhook's own namespace (`spark-admission-gang-<namespace>`,
//! annotation [`RESERVATIONS_ANNOTATION`]). Tenants cannot write there; the webhook needs
//! only get, create and update on Leases in its own namespace.
//!
//! The write: an admitted submission's reservation goes into that Lease with its
//! `resourceVersion` as a precondition (create when there is none), before the answer. A
//! conflict means another decision wrote first: the Lease is read again and the submission
//! decided again, counting it.
//!
//! An admitted ConfigMap also carries the room it was granted in an annotation, and Spark's
//! ConfigMaps are immutable, so a replica reads each one at most once (a GET, with the `get`
//! on ConfigMaps the executor templates need) and remembers it; its own admissions it
//! remembers as it makes them.
//!
//! Any client can send a review, so reads are bounded: [`MAX_IN_FLIGHT`] decisions read at
//! once, past that the decision goes without the namespace read (and says so); at most
//! [`MAX_GETS_PER_READ`] ConfigMaps per read; and one deadline, [`BUDGET`] from the review's
//! start, bounds every request of its read and writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use tokio::sync::Semaphore;

use crate::engine::{APP_ID_LABEL, ROLE_LABEL};
use crate::lean::LeanPodWithVolumes;
use crate::policy::Role;
use crate::quota::gang::{
    Decided, Granted, NamespaceView, RESERVATION_ANNOTATION, Reservations, SETTLING, ViewPod,
};
use crate::quota::lease::{self, LeaseRecords, Stored, Written, unix_now, within};
use crate::quota::watch::{SPARK_POD_SELECTOR, charge_of};

/// Most decisions reading their namespace at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Longest wait for a read slot.
pub const SLOT_WAIT: Duration = Duration::from_millis(500);
/// Longest time a review's reads and writes of the namespace take together, well inside the
/// ConfigMap webhook's 3 s timeout.
pub const BUDGET: Duration = Duration::from_millis(2000);
/// Most earlier submissions' ConfigMaps read by one read of the namespace; the rest count as
/// pods for that read. A tenant can make many young drivers in its namespace; what one review
/// makes the apiserver do stays bounded whatever their number.
pub const MAX_GETS_PER_READ: usize = 32;
/// The annotation of a namespace's Lease that holds its reservations, as JSON by driver uid.
pub const RESERVATIONS_ANNOTATION: &str = "spark-admission.io/gang-reservations";
/// Most submissions remembered; past it the memory starts again (they are read again).
const MAX_REMEMBERED: usize = 10_000;
/// The volume of a cluster-mode driver that mounts its configuration's ConfigMap.
const CONF_VOLUME: &str = "spark-conf-volume-driver";

/// The name of the Lease that holds a namespace's reservations, before the namespace.
pub const LEASE_PREFIX: &str = "spark-admission-gang-";

/// The Lease that holds `namespace`'s reservations.
pub fn lease_name(namespace: &str) -> String {
    format!("{LEASE_PREFIX}{namespace}")
}

/// Why a namespace could not be read, or its reservation not written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server runs without a Kubernetes client.
    #[error("no Kubernetes client")]
    NoClient,
    /// [`MAX_IN_FLIGHT`] decisions were reading already.
    #[error("{MAX_IN_FLIGHT} submissions were being decided already")]
    Busy,
    /// A request of the read or the write failed, or ran past the review's deadline.
    #[error(transparent)]
    Request(#[from] lease::Error),
}

/// How writing a reservation went wrong.
#[derive(Debug)]
pub enum Reserve {
    /// Another decision wrote first: the reservations as they are now.
    Conflict(Reservations),
    /// The write (or the read after a conflict) failed.
    Failed(Error),
}

/// Reads namespaces for gang admission and holds their room, with the server's client once
/// it has one.
pub struct GangReads {
    client: OnceLock<(kube::Client, LeaseRecords)>,
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

    /// Gives it the server's client, and the webhook's own namespace, where the reservations'
    /// Leases are (set once).
    pub fn set_client(&self, client: kube::Client, home: String) {
        let records =
            LeaseRecords::new(client.clone(), home, LEASE_PREFIX, RESERVATIONS_ANNOTATION);
        let _ = self.client.set((client, records));
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

    /// The namespace as the submission of driver `own` is decided on: its Spark pods, where
    /// the submission of every other driver younger than `expiry` stands, and the
    /// reservations still holding room, all read by `deadline`.
    pub async fn read(
        &self,
        namespace: &str,
        own: &str,
        expiry: Duration,
        deadline: Instant,
    ) -> Result<NamespaceView, Error> {
        let (client, records) = self.client.get().ok_or(Error::NoClient)?;
        let _slot = tokio::time::timeout(SLOT_WAIT, self.slots.acquire())
            .await
            .map_err(|_| Error::Busy)?
            .map_err(|_| Error::Busy)?;
        // No resourceVersion: a quorum read from etcd, the same on every replica.
        let pods = Api::<LeanPodWithVolumes>::namespaced(client.clone(), namespace);
        let list = within(
            deadline,
            "listing the Spark pods",
            namespace,
            pods.list(&ListParams::default().labels(SPARK_POD_SELECTOR)),
        )
        .await?;
        let now = unix_now();
        let mut view = NamespaceView {
            read_at: now,
            ..NamespaceView::default()
        };
        let mut gets = 0;
        for pod in &list.items {
            let Some(found) = view_pod(pod) else {
                continue;
            };
            if found.role == Role::Driver
                && found.uid != own
                && !crate::quota::gang::expired(found.created, now, expiry)
            {
                let decided = match (self.recalled(&found.uid), conf_map_of(pod)) {
                    (Some(decided), _) => decided,
                    (None, None) => Decided::Nothing,
                    // Not read this time: it counts as a pod.
                    (None, Some(_)) if gets >= MAX_GETS_PER_READ => Decided::Nothing,
                    (None, Some(conf)) => {
                        gets += 1;
                        let decided = tokio::time::timeout_at(
                            deadline.into(),
                            self.stored(client, namespace, &conf, found.created, now),
                        )
                        .await
                        .unwrap_or(None);
                        match decided {
                            Some(decided) if decided != Decided::Pending => {
                                self.remember(&found.uid, decided);
                                decided
                            }
                            Some(decided) => decided,
                            None => Decided::Nothing,
                        }
                    }
                };
                view.drivers.insert(found.uid.clone(), decided);
            }
            view.pods.push(found);
        }
        // Last: a reservation written since the LIST is still seen, and one written after
        // this read makes this decision's own write fail.
        view.reservations = self
            .live_reservations(records, namespace, &view, expiry, deadline)
            .await?;
        Ok(view)
    }

    /// Writes `write` as `namespace`'s reservations if they are still at its version; on a
    /// conflict, the reservations as they are now, those still holding room for `view`.
    pub async fn reserve(
        &self,
        namespace: &str,
        view: &NamespaceView,
        write: &Reservations,
        expiry: Duration,
        deadline: Instant,
    ) -> Result<(), Reserve> {
        let (_, records) = self.client.get().ok_or(Reserve::Failed(Error::NoClient))?;
        let written = records
            .write(namespace, write.version.as_deref(), &write.held, deadline)
            .await
            .map_err(|error| Reserve::Failed(error.into()))?;
        match written {
            Written::Stored => Ok(()),
            // Written by another decision, or deleted: decided again on what is there now.
            Written::Conflict => {
                let now = self
                    .live_reservations(records, namespace, view, expiry, deadline)
                    .await
                    .map_err(Reserve::Failed)?;
                Err(Reserve::Conflict(now))
            }
        }
    }

    /// `namespace`'s reservations as stored, with their version, those still holding room
    /// for the pods of `view` ([`Reservations::live`]).
    async fn live_reservations(
        &self,
        records: &LeaseRecords,
        namespace: &str,
        view: &NamespaceView,
        expiry: Duration,
        deadline: Instant,
    ) -> Result<Reservations, Error> {
        let listed: HashSet<&str> = view.pods.iter().map(|pod| pod.uid.as_str()).collect();
        let stored: Stored<BTreeMap<_, _>> = records.read(namespace, deadline).await?;
        let stored = Reservations {
            version: stored.version,
            held: stored.value,
        };
        Ok(stored.live(&listed, unix_now(), expiry))
    }

    /// Where the submission whose driver ConfigMap is `conf` stands, from the stored object;
    /// `None` when it could not be read.
    async fn stored(
        &self,
        client: &kube::Client,
        namespace: &str,
        conf: &str,
        created: i64,
        now: i64,
    ) -> Option<Decided> {
        match Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(conf)
            .await
        {
            Ok(Some(map)) => Some(
                map.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(RESERVATION_ANNOTATION))
                    .and_then(|record| Granted::parse(record))
                    .map_or(Decided::Nothing, Decided::Granted),
            ),
            Ok(None) if now.saturating_sub(created) <= SETTLING.as_secs() as i64 => {
                Some(Decided::Pending)
            }
            Ok(None) => Some(Decided::Nothing),
            Err(error) => {
                tracing::warn!(%error, namespace, configmap = conf, "could not read another submission's ConfigMap; counting its driver as a pod");
                None
            }
        }
    }
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

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::quota::gang::Reservation;

    use crate::quota::lease::stand_in::{Leases, status};

    /// A stand-in apiserver: namespace `ns`'s pods are `pods`, none of its ConfigMaps is
    /// stored, and Leases in namespace `home` are kept as the apiserver keeps them
    /// ([`Leases`]). Counts ConfigMap GETs.
    struct Apiserver {
        pods: serde_json::Value,
        leases: Leases,
        configmap_gets: AtomicUsize,
    }

    impl Apiserver {
        fn client(self: &Arc<Self>) -> kube::Client {
            let server = self.clone();
            let service =
                tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
                    let server = server.clone();
                    async move {
                        let response = server.answer(request).await;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            kube::Client::new(service, "default")
        }

        async fn answer(
            &self,
            request: axum::http::Request<kube::client::Body>,
        ) -> axum::http::Response<String> {
            use http_body_util::BodyExt;
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            if path == "/api/v1/namespaces/ns/pods" {
                return axum::http::Response::new(self.pods.to_string());
            }
            if path.starts_with("/api/v1/namespaces/ns/configmaps/") {
                self.configmap_gets.fetch_add(1, Ordering::SeqCst);
                return status(404, "NotFound");
            }
            self.leases
                .answer(method.as_str(), &path, &body)
                .unwrap_or_else(|| status(404, "NotFound"))
        }
    }

    fn driver(uid: &str, app: &str, created: i64, conf: &str) -> serde_json::Value {
        let created = k8s_openapi::jiff::Timestamp::from_second(created)
            .unwrap()
            .to_string();
        serde_json::json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "creationTimestamp": created,
                "labels": {"spark-role": "driver", "spark-app-selector": app}},
            "spec": {"containers": [{"name": "spark-kubernetes-driver",
                "resources": {"requests": {"cpu": "1"}}}],
                "volumes": [{"name": "spark-conf-volume-driver", "configMap": {"name": conf}}]}
        })
    }

    fn apiserver(items: Vec<serde_json::Value>) -> Arc<Apiserver> {
        Arc::new(Apiserver {
            pods: serde_json::json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": "5"}, "items": items}),
            leases: Leases::default(),
            configmap_gets: AtomicUsize::new(0),
        })
    }

    const EXPIRY: Duration = Duration::from_secs(300);

    fn deadline() -> Instant {
        Instant::now() + BUDGET
    }

    #[tokio::test]
    async fn a_reservation_is_written_at_the_version_read_and_a_stale_write_conflicts() {
        let now = unix_now();
        let server = apiserver(vec![
            driver("a", "app-a", now - 2, "spark-drv-a"),
            driver("b", "app-b", now - 1, "spark-drv-b"),
        ]);
        let reads = GangReads::new();
        reads.set_client(server.client(), "home".into());
        let view = reads.read("ns", "b", EXPIRY, deadline()).await.unwrap();
        // a's ConfigMap is not stored yet and it holds nothing: being decided.
        assert_eq!(view.drivers.get("a"), Some(&Decided::Pending));
        assert_eq!(view.reservations, Reservations::default());
        let granted = Granted {
            executors: 1,
            charge: crate::quota::Charge {
                cpu: 1_000_000_000,
                memory: 0,
            },
        };
        let held = |app: &str| Reservation::new(app, &granted, granted.charge, now);
        // Two decisions on the same (empty) read: the first creates the Lease ...
        let first = crate::quota::gang::hold(&view, "b", held("app-b")).unwrap();
        reads
            .reserve("ns", &view, &first, EXPIRY, deadline())
            .await
            .unwrap();
        // ... the second's create conflicts, and it gets the reservations as they are now.
        let second = crate::quota::gang::hold(&view, "a", held("app-a")).unwrap();
        let Err(Reserve::Conflict(now_held)) = reads
            .reserve("ns", &view, &second, EXPIRY, deadline())
            .await
        else {
            panic!("a stale write must conflict");
        };
        assert_eq!(now_held.version.as_deref(), Some("1"));
        assert_eq!(now_held.held.keys().collect::<Vec<_>>(), ["b"]);
        // Decided again on them, its write goes through at that version.
        let mut again = view.clone();
        again.reservations = now_held;
        let second = crate::quota::gang::hold(&again, "a", held("app-a")).unwrap();
        reads
            .reserve("ns", &again, &second, EXPIRY, deadline())
            .await
            .unwrap();
        let view = reads.read("ns", "b", EXPIRY, deadline()).await.unwrap();
        assert_eq!(view.reservations.version.as_deref(), Some("2"));
        assert_eq!(
            view.reservations.held.keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        // A replace at the old version conflicts too.
        assert!(matches!(
            reads
                .reserve("ns", &again, &second, EXPIRY, deadline())
                .await,
            Err(Reserve::Conflict(_))
        ));
        // The Lease names its namespace; tenants' namespaces hold nothing.
        let stored = server.leases.get("spark-admission-gang-ns").unwrap();
        assert_eq!(
            stored["metadata"]["annotations"][crate::quota::lease::NAMESPACE_ANNOTATION],
            serde_json::json!("ns")
        );
        let record: BTreeMap<String, Reservation> = serde_json::from_str(
            stored["metadata"]["annotations"][RESERVATIONS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(record["a"].app, "app-a");
    }

    #[tokio::test]
    async fn a_deleted_lease_is_created_again_and_unreadable_reservations_fail_the_read() {
        let now = unix_now();
        let server = apiserver(vec![driver("b", "app-b", now - 1, "spark-drv-b")]);
        let reads = GangReads::new();
        reads.set_client(server.client(), "home".into());
        let view = reads.read("ns", "b", EXPIRY, deadline()).await.unwrap();
        let granted = Granted {
            executors: 1,
            charge: crate::quota::Charge::default(),
        };
        let write = crate::quota::gang::hold(
            &view,
            "b",
            Reservation::new("app-b", &granted, granted.charge, now),
        )
        .unwrap();
        reads
            .reserve("ns", &view, &write, EXPIRY, deadline())
            .await
            .unwrap();
        let view = reads.read("ns", "b", EXPIRY, deadline()).await.unwrap();
        // Deleted between the read and the write (someone cleaning up): the replace is not
        // found, and the reservations read again are empty, with no version: created again.
        server.leases.stored.lock().unwrap().clear();
        let write = crate::quota::gang::hold(
            &view,
            "b",
            Reservation::new("app-b", &granted, granted.charge, now),
        )
        .unwrap();
        let Err(Reserve::Conflict(now_held)) =
            reads.reserve("ns", &view, &write, EXPIRY, deadline()).await
        else {
            panic!("a deleted Lease is decided again on");
        };
        assert_eq!(now_held, Reservations::default());
        // A create that is not found (the webhook's namespace does not exist) fails, rather
        // than being decided again and again.
        server
            .leases
            .missing_namespace
            .store(true, Ordering::SeqCst);
        assert!(matches!(
            reads
                .reserve(
                    "ns",
                    &view,
                    &Reservations {
                        version: None,
                        ..write
                    },
                    EXPIRY,
                    deadline()
                )
                .await,
            Err(Reserve::Failed(_))
        ));
        server
            .leases
            .missing_namespace
            .store(false, Ordering::SeqCst);
        // Reservations that are not what spark-admission writes fail the read, saying so.
        server.leases.stored.lock().unwrap().insert(
            "spark-admission-gang-ns".to_owned(),
            (
                9,
                serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "spark-admission-gang-ns", "namespace": "home",
                    "resourceVersion": "9", "annotations": {RESERVATIONS_ANNOTATION: "[1, 2]"}}}),
            ),
        );
        let error = reads
            .read("ns", "b", EXPIRY, deadline())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "the reservations in Lease spark-admission-gang-ns are not what spark-admission writes"
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn many_young_drivers_cost_at_most_a_bounded_number_of_gets_per_read() {
        // 100 young drivers none of whose ConfigMaps is stored: what a tenant can create in
        // its own namespace.
        let now = unix_now();
        let mut items: Vec<serde_json::Value> = (0..100)
            .map(|i| driver(&format!("fake-{i:03}"), "fake", now - 3, &format!("c-{i}")))
            .collect();
        items.push(driver("own", "app", now - 1, "spark-drv-own"));
        let server = apiserver(items);
        let reads = GangReads::new();
        reads.set_client(server.client(), "home".into());
        let view = reads.read("ns", "own", EXPIRY, deadline()).await.unwrap();
        assert_eq!(
            server.configmap_gets.load(Ordering::SeqCst),
            MAX_GETS_PER_READ
        );
        assert_eq!(view.pods.len(), 101);
        // Those read are being decided; those not read count as pods.
        let pending = view
            .drivers
            .values()
            .filter(|d| **d == Decided::Pending)
            .count();
        assert_eq!(pending, MAX_GETS_PER_READ);
        assert_eq!(view.drivers.len(), 100);
    }
}
