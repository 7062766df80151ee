//! Records that several replicas must agree on, kept as JSON in one annotation of a Lease in
//! the webhook's own namespace, and changed with compare-and-swap as ResourceQuota changes its
//! status: every write carries the `resourceVersion` it was decided on (a create when there is
//! no Lease yet), so of two decisions on the same read only one is stored and the other is
//! decided again.
//!
//! Tenants cannot write in the webhook's namespace, and the webhook needs only get, create and
//! update on Leases there. Gang admission's reservations (`crate::gang`) and the admissions in
//! flight near a namespace limit ([`super::room`]) are such records.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The annotation of each Lease that names the namespace its record is about.
pub const NAMESPACE_ANNOTATION: &str = "spark-admission.io/namespace";

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request ran past its deadline.
    #[error("{what} for namespace {namespace} took longer than the review's deadline")]
    Timeout {
        /// What was asked.
        what: &'static str,
        /// The namespace the record is about.
        namespace: String,
    },
    /// The request failed.
    #[error("{what} for namespace {namespace}: {source}")]
    Api {
        /// What was asked.
        what: &'static str,
        /// The namespace the record is about.
        namespace: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The annotation holds something else than the record.
    #[error("the reservations in Lease {lease} are not what spark-admission writes: {why}")]
    Unreadable {
        /// The Lease.
        lease: String,
        /// Why.
        why: String,
    },
}

/// A record as stored, with the version a write must be decided on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored<T> {
    /// The Lease's `resourceVersion`; `None` when there is no Lease.
    pub version: Option<String>,
    /// The record; its default when there is no Lease or no annotation.
    pub value: T,
    /// The Lease was deleted and stays, with its record, until its finalizer is released.
    pub terminating: bool,
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored.
    Stored,
    /// Another decision wrote first (or the Lease was deleted): read again and decide again.
    Conflict,
}

/// One kind of record: the Leases named `<prefix><namespace>` in the webhook's namespace,
/// holding the record in `annotation`.
#[derive(Clone)]
pub struct LeaseRecords {
    client: kube::Client,
    home: String,
    prefix: &'static str,
    annotation: &'static str,
    finalizer: Option<&'static str>,
}

impl LeaseRecords {
    /// Records under `prefix` and `annotation` in namespace `home`, through `client`.
    pub fn new(
        client: kube::Client,
        home: String,
        prefix: &'static str,
        annotation: &'static str,
    ) -> Self {
        Self {
            client,
            home,
            prefix,
            annotation,
            finalizer: None,
        }
    }

    /// Records whose Leases every write keeps with `finalizer`: deleting one (by hand, or
    /// with the namespace) keeps it and its record in force until [`LeaseRecords::release`]
    /// lets it go, which the record's user does only once nothing in it counts any more. A
    /// record that vanished while it counted would lose what other replicas wrote there.
    pub fn with_finalizer(mut self, finalizer: &'static str) -> Self {
        self.finalizer = Some(finalizer);
        self
    }

    /// The Lease that holds `namespace`'s record.
    pub fn lease_name(&self, namespace: &str) -> String {
        format!("{}{namespace}", self.prefix)
    }

    /// `namespace`'s record as stored, by a quorum GET (no resourceVersion: read from etcd,
    /// the same on every replica), by `deadline`.
    pub async fn read<T: DeserializeOwned + Default>(
        &self,
        namespace: &str,
        deadline: Instant,
    ) -> Result<Stored<T>, Error> {
        let leases = Api::<Lease>::namespaced(self.client.clone(), &self.home);
        let lease = self.lease_name(namespace);
        let Some(stored) = within(
            deadline,
            "reading the reservations",
            namespace,
            leases.get_opt(&lease),
        )
        .await?
        else {
            return Ok(Stored::default());
        };
        let value = match stored
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(self.annotation))
        {
            Some(text) => serde_json::from_str(text).map_err(|error| Error::Unreadable {
                lease: lease.clone(),
                why: error.to_string(),
            })?,
            None => T::default(),
        };
        Ok(Stored {
            version: stored.metadata.resource_version,
            value,
            terminating: stored.metadata.deletion_timestamp.is_some(),
        })
    }

    /// Writes `value` as `namespace`'s record if the Lease is still at `version` (creates it
    /// when `version` is `None`), by `deadline`.
    pub async fn write<T: Serialize>(
        &self,
        namespace: &str,
        version: Option<&str>,
        value: &T,
        deadline: Instant,
    ) -> Result<Written, Error> {
        self.write_with(namespace, version, value, self.finalizer, deadline)
            .await
    }

    /// Writes `value` without the finalizer into a Lease at `version` that was deleted: the
    /// apiserver then removes it (and the next write creates it again).
    pub async fn release<T: Serialize>(
        &self,
        namespace: &str,
        version: &str,
        value: &T,
        deadline: Instant,
    ) -> Result<Written, Error> {
        self.write_with(namespace, Some(version), value, None, deadline)
            .await
    }

    async fn write_with<T: Serialize>(
        &self,
        namespace: &str,
        version: Option<&str>,
        value: &T,
        finalizer: Option<&'static str>,
        deadline: Instant,
    ) -> Result<Written, Error> {
        let name = self.lease_name(namespace);
        let text = serde_json::to_string(value).map_err(|error| Error::Unreadable {
            lease: name.clone(),
            why: error.to_string(),
        })?;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.home.clone()),
                resource_version: version.map(str::to_owned),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "spark-admission".to_owned(),
                )])),
                annotations: Some(BTreeMap::from([
                    (NAMESPACE_ANNOTATION.to_owned(), namespace.to_owned()),
                    (self.annotation.to_owned(), text),
                ])),
                finalizers: finalizer.map(|f| vec![f.to_owned()]),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let leases = Api::<Lease>::namespaced(self.client.clone(), &self.home);
        let written = match version {
            None => {
                within(
                    deadline,
                    "creating the reservations",
                    namespace,
                    leases.create(&PostParams::default(), &lease),
                )
                .await
            }
            Some(_) => {
                within(
                    deadline,
                    "writing the reservations",
                    namespace,
                    leases.replace(&name, &PostParams::default(), &lease),
                )
                .await
            }
        };
        match written {
            Ok(_) => Ok(Written::Stored),
            Err(Error::Api {
                source: kube::Error::Api(status),
                ..
            }) if status.is_conflict()
                || status.is_already_exists()
                // A replace of a deleted Lease; a create's NotFound is a missing namespace.
                || (status.is_not_found() && version.is_some()) =>
            {
                Ok(Written::Conflict)
            }
            Err(error) => Err(error),
        }
    }
}

/// `request` by `deadline`.
pub(crate) async fn within<T>(
    deadline: Instant,
    what: &'static str,
    namespace: &str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    tokio::time::timeout_at(deadline.into(), request)
        .await
        .map_err(|_| Error::Timeout {
            what,
            namespace: namespace.to_owned(),
        })?
        .map_err(|source| Error::Api {
            what,
            namespace: namespace.to_owned(),
            source,
        })
}

/// The time now, in seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A stand-in for the apiserver's Leases in one namespace, for tests: kept as the apiserver
/// keeps them, a create refused when the Lease exists, a replace only at the stored
/// `resourceVersion`, a replace of a missing Lease not found.
#[cfg(test)]
pub(crate) mod stand_in {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// An apiserver `Status` answer.
    pub(crate) fn status(code: u16, reason: &str) -> axum::http::Response<String> {
        let mut response = axum::http::Response::new(
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": reason, "code": code})
            .to_string(),
        );
        *response.status_mut() = axum::http::StatusCode::from_u16(code).unwrap();
        response
    }

    /// The Leases of namespace `home`, by name, with their resource versions.
    #[derive(Default)]
    pub(crate) struct Leases {
        pub(crate) stored: Mutex<BTreeMap<String, (u64, serde_json::Value)>>,
        /// Creates fail as in a namespace that does not exist.
        pub(crate) missing_namespace: AtomicBool,
        versions: AtomicU64,
        /// Writes stored, and writes refused for a stale version.
        pub(crate) writes: AtomicU64,
        pub(crate) conflicts: AtomicU64,
    }

    impl Leases {
        /// The answer to a request of a Lease in namespace `home`; `None` for other paths.
        pub(crate) fn answer(
            &self,
            method: &str,
            path: &str,
            body: &[u8],
        ) -> Option<axum::http::Response<String>> {
            let leases = "/apis/coordination.k8s.io/v1/namespaces/home/leases";
            let rest = path.strip_prefix(leases)?;
            let name = rest.strip_prefix('/').unwrap_or_default();
            let mut stored = self.stored.lock().unwrap();
            let next = || self.versions.fetch_add(1, Ordering::SeqCst) + 1;
            Some(match (method, name) {
                ("GET", name) if !name.is_empty() => match stored.get(name) {
                    Some((_, lease)) => axum::http::Response::new(lease.to_string()),
                    None => status(404, "NotFound"),
                },
                ("POST", "") => {
                    if self.missing_namespace.load(Ordering::SeqCst) {
                        return Some(status(404, "NotFound"));
                    }
                    let mut lease: serde_json::Value = serde_json::from_slice(body).unwrap();
                    let name = lease["metadata"]["name"].as_str().unwrap().to_owned();
                    if stored.contains_key(&name) {
                        self.conflicts.fetch_add(1, Ordering::SeqCst);
                        return Some(status(409, "AlreadyExists"));
                    }
                    let version = next();
                    lease["metadata"]["resourceVersion"] = serde_json::json!(version.to_string());
                    stored.insert(name, (version, lease.clone()));
                    self.writes.fetch_add(1, Ordering::SeqCst);
                    axum::http::Response::new(lease.to_string())
                }
                ("PUT", name) if !name.is_empty() => {
                    let mut lease: serde_json::Value = serde_json::from_slice(body).unwrap();
                    let Some((version, _)) = stored.get(name) else {
                        return Some(status(404, "NotFound"));
                    };
                    if lease["metadata"]["resourceVersion"]
                        != serde_json::json!(version.to_string())
                    {
                        self.conflicts.fetch_add(1, Ordering::SeqCst);
                        return Some(status(409, "Conflict"));
                    }
                    let deleted = stored[name].1["metadata"]["deletionTimestamp"].clone();
                    let finalized = lease["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty());
                    self.writes.fetch_add(1, Ordering::SeqCst);
                    if !deleted.is_null() && !finalized {
                        stored.remove(name);
                        return Some(axum::http::Response::new(lease.to_string()));
                    }
                    let version = next();
                    lease["metadata"]["resourceVersion"] = serde_json::json!(version.to_string());
                    lease["metadata"]["deletionTimestamp"] = deleted;
                    stored.insert(name.to_owned(), (version, lease.clone()));
                    axum::http::Response::new(lease.to_string())
                }
                _ => status(404, "NotFound"),
            })
        }

        /// Deletes Lease `name` as the apiserver does: one with finalizers stays, marked.
        pub(crate) fn delete(&self, name: &str) {
            let mut stored = self.stored.lock().unwrap();
            let Some((version, lease)) = stored.get_mut(name) else {
                return;
            };
            if lease["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
            {
                *version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
                lease["metadata"]["resourceVersion"] = serde_json::json!(version.to_string());
                lease["metadata"]["deletionTimestamp"] = serde_json::json!("2026-12-07T00:00:00Z");
            } else {
                stored.remove(name);
            }
        }

        /// The stored Lease `name`.
        pub(crate) fn get(&self, name: &str) -> Option<serde_json::Value> {
            self.stored
                .lock()
                .unwrap()
                .get(name)
                .map(|(_, l)| l.clone())
        }
    }
}
