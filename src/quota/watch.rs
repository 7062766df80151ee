//! The pod watch that feeds the ledger: a kube-rs watcher on every namespace's pods labelled
//! `spark-role` (driver or executor), each stripped on arrival to what quotas count.
//!
//! It runs only while the policy in force (or the one waiting to be put in force) has quotas.
//! Its first complete listing marks the tracker synced, which is when a policy with quotas
//! goes into force: the watch reports it to a [`LedgerSink`] (the server's state), the one
//! handle it gets. A restarted watch lists everything again into the same ledger, each pod
//! updated as its page arrives, and the pods it did not show again are dropped when the
//! listing is complete ([`Ledger::begin_listing`]): meanwhile every pod counts once, in its
//! last known state. Until then, and after any watch error until the next event, the ledger
//! is treated as behind and per-application decisions are confirmed with a LIST.
//!
//! Sized for 100,000 live Spark pods (issue 24, BENCHMARKS.md "Scale: 100,000 tracked pods"):
//! a listing never exists as a second copy of the ledger (which would double a relist's peak),
//! and it is read in pages of [`PAGE_SIZE`].

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};

use crate::engine::{APP_ID_LABEL, app_name_of};
pub use crate::lean::LeanPod;
use crate::lean::LeanSpec;
use crate::policy::Role;

use super::charge::Charge;
use super::ledger::{Entry, Ledger, PodKey, TrackedPod};
use super::tracker::Tracker;

/// What the pod watch reports to: the server's state, which owns the tracker and puts a
/// staged policy in force once a listing is complete. All the watch needs of it.
pub trait LedgerSink: Send + Sync {
    /// The tracker the watch keeps current.
    fn tracker(&self) -> &Tracker;
    /// Follows whether the watch should run (the policy in force or staged has quotas):
    /// `Some(generation)` while it should, a new generation each time it starts afresh.
    fn wanted(&self) -> tokio::sync::watch::Receiver<Option<u64>>;
    /// The watch of `generation` listed every Spark pod into the tracker: the pods it did not
    /// show go, the tracker is synced. False, changing nothing, when that watch is no longer
    /// wanted.
    fn listed(&self, generation: u64) -> bool;
    /// A pod was applied or removed: the tracked-pods gauge follows the ledger.
    fn ledger_changed(&self);
}

/// The label selector of the watch and of confirming LISTs.
pub const SPARK_POD_SELECTOR: &str = "spark-role in (driver,executor)";

/// Pods per page of the watch's initial LIST (`--quota-watch-page-size`). kube-runtime's
/// default is 500: one page of Spark executor pods as the apiserver sends them (managedFields
/// included) is about 4.2 MB of JSON, and its body and parse sit on top of the ledger at the
/// process's peak (VmHWM). Measured at 100,000 pods (BENCHMARKS.md, "Scale: 100,000 tracked
/// pods"): with 100 the peak is 3 MB above the ledger instead of 8 to 12 MB, and stays near
/// 1 MB of JSON however big the pods are; the price is time to ready, not CPU: five times as
/// many LIST calls, each an etcd read by the apiserver, took 25 to 31 s instead of 15 to 21 s.
/// A webhook every Spark pod creation waits on is better slow to start than killed for memory.
pub const PAGE_SIZE: u32 = 100;

impl LeanPod {
    fn key(&self) -> Option<PodKey> {
        Some(PodKey {
            namespace: self.metadata.namespace.clone()?,
            name: self.metadata.name.clone()?,
        })
    }
}

/// What the ledger keeps of a pod, or `None` when it does not count: not a Spark pod,
/// Succeeded or Failed, or being deleted.
pub fn tracked(pod: &LeanPod) -> Option<(PodKey, TrackedPod)> {
    let key = pod.key()?;
    let labels = pod.metadata.labels.as_ref()?;
    let role = Role::from_label(labels.get(crate::engine::ROLE_LABEL)?)?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let charge = match &pod.spec {
        Some(spec) => charge_of(spec),
        None => Charge::default(),
    };
    let entry = Entry {
        app: labels.get(APP_ID_LABEL).cloned(),
        app_name: app_name_of(labels).map(str::to_owned),
        role,
        charge,
    };
    let resource_version = pod
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok());
    Some((
        key,
        TrackedPod {
            entry,
            resource_version,
        },
    ))
}

/// The charge of a pod's spec, read in place.
pub(crate) fn charge_of(spec: &LeanSpec) -> Charge {
    Charge::of_parts(
        spec.containers.iter().map(|c| c.resources.as_ref()),
        spec.init_containers.iter().map(|c| {
            (
                c.resources.as_ref(),
                c.restart_policy.as_deref() == Some("Always"),
            )
        }),
        spec.resources.as_ref(),
        spec.overhead.as_ref(),
    )
}

/// A ledger holding the live Spark pods among `pods`.
pub fn ledger_of(pods: &[LeanPod]) -> Ledger {
    let mut ledger = Ledger::new();
    for (key, pod) in pods.iter().filter_map(tracked) {
        ledger.apply(key, pod);
    }
    ledger
}

/// Every live Spark pod of the cluster KUBECONFIG (or the in-cluster config) points at, listed
/// in pages.
pub async fn list_cluster() -> Result<Ledger, kube::Error> {
    let client = kube::Client::try_default().await?;
    let api: Api<LeanPod> = Api::all(client);
    let mut params = ListParams::default().labels(SPARK_POD_SELECTOR).limit(500);
    let mut pods = Vec::new();
    loop {
        let page = api.list(&params).await?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(ledger_of(&pods))
}

/// Runs the watch whenever `sink` wants it (its policy has quotas), until `stop`.
pub async fn run(
    client: kube::Client,
    sink: Arc<dyn LedgerSink>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wanted = sink.wanted();
    loop {
        let generation = tokio::select! {
            changed = wanted.wait_for(Option::is_some) => match changed {
                Ok(generation) => *generation,
                Err(_) => return,
            },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        // `wait_for(Option::is_some)` returned it, so it is a generation.
        let Some(generation) = generation else {
            continue;
        };
        let stopped = watch_generation(&client, &*sink, generation, &mut wanted, &mut stop).await;
        if stopped {
            return;
        }
    }
}

/// One generation of the watch, until it is no longer wanted (false) or `stop` (true).
#[tracing::instrument(name = "pod_watch", skip_all, fields(generation))]
async fn watch_generation(
    client: &kube::Client,
    sink: &dyn LedgerSink,
    generation: u64,
    wanted: &mut tokio::sync::watch::Receiver<Option<u64>>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tracing::info!("the policy has quotas: watching Spark pods in every namespace");
    let api: Api<LeanPod> = Api::all(client.clone());
    let page_size = sink.tracker().options().watch_page_size.max(1);
    let config = watcher::Config::default()
        .labels(SPARK_POD_SELECTOR)
        .page_size(page_size);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut index = LedgerIndex { sink, generation };
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            // The state already forgot the pods (`State::set_policy`).
            _ = wanted.wait_for(|wanted| *wanted != Some(generation)) => {
                tracing::info!("the policy has no quotas any more: the pod watch stops");
                return false;
            }
            _ = stop.wait_for(|stop| *stop) => return true,
        };
        match event {
            None => return true,
            Some(Err(error)) => index.fell_behind(&error),
            Some(Ok(Event::Init)) => index.reset(),
            Some(Ok(Event::InitApply(pod))) => index.listed(&pod),
            Some(Ok(Event::InitDone)) => index.listing_complete(),
            Some(Ok(Event::Apply(pod))) => index.apply(&pod),
            Some(Ok(Event::Delete(pod))) => index.delete(&pod),
        }
    }
}

/// Keeps the ledger as the watch's events say, one method per kind of event (apply, delete,
/// and a reset that lists everything again), as an index over a watch does.
struct LedgerIndex<'a> {
    sink: &'a dyn LedgerSink,
    generation: u64,
}

impl LedgerIndex<'_> {
    fn fell_behind(&mut self, error: &watcher::Error) {
        self.sink.tracker().fell_behind();
        tracing::warn!(%error, "the pod watch failed; retrying with backoff, per-application quotas are confirmed with a LIST meanwhile");
    }

    fn reset(&mut self) {
        self.sink.tracker().listing_started();
    }

    // A pod the listing shows that does not count (finished, being deleted) is not applied:
    // its earlier entry, if any, is not marked as listed and goes when the listing ends.
    fn listed(&mut self, pod: &LeanPod) {
        if let Some((key, pod)) = tracked(pod) {
            self.sink.tracker().listed(key, pod);
        }
    }

    fn listing_complete(&mut self) {
        if !self.sink.listed(self.generation) {
            tracing::info!("the policy has no quotas any more: this listing is not put in force");
        }
    }

    fn apply(&mut self, pod: &LeanPod) {
        match tracked(pod) {
            Some((key, tracked)) => self.sink.tracker().apply(key, tracked),
            // No longer counted (finished, being deleted, relabelled out of Spark's roles).
            None => {
                if let Some(key) = pod.key() {
                    self.sink.tracker().remove(&key);
                }
            }
        }
        self.sink.ledger_changed();
    }

    fn delete(&mut self, pod: &LeanPod) {
        if let Some(key) = pod.key() {
            self.sink.tracker().remove(&key);
        }
        self.sink.ledger_changed();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::quota::ledger::Member;
    use serde_json::json;

    fn lean(value: serde_json::Value) -> LeanPod {
        serde_json::from_value(value).unwrap()
    }

    fn executor(extra_metadata: serde_json::Value, phase: &str) -> LeanPod {
        let mut metadata = json!({
            "name": "exec-1", "namespace": "analytics", "resourceVersion": "42",
            "labels": {"spark-role": "executor", "spark-app-selector": "spark-1", "spark-app-name": "etl"},
            "managedFields": [{"manager": "x"}],
        });
        if let (Some(target), Some(extra)) = (metadata.as_object_mut(), extra_metadata.as_object())
        {
            target.extend(extra.clone());
        }
        lean(json!({
            "metadata": metadata,
            "spec": {"containers": [{"name": "c", "image": "spark", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]},
            "status": {"phase": phase},
        }))
    }

    #[test]
    fn a_live_spark_pod_is_kept_stripped_to_what_quotas_count() {
        let (key, pod) = tracked(&executor(json!({}), "Pending")).unwrap();
        assert_eq!(key.namespace, "analytics");
        assert_eq!(key.name, "exec-1");
        assert_eq!(pod.resource_version, Some(42));
        assert_eq!(pod.entry.app.as_deref(), Some("spark-1"));
        assert_eq!(pod.entry.app_name.as_deref(), Some("etl"));
        assert_eq!(pod.entry.role, Role::Executor);
        assert_eq!(pod.entry.charge.cpu, 2_000_000_000);
        assert_eq!(pod.entry.charge.memory, (1_i128 << 30) * 1_000_000_000);
    }

    #[test]
    fn terminal_and_deleting_pods_do_not_count() {
        assert!(tracked(&executor(json!({}), "Succeeded")).is_none());
        assert!(tracked(&executor(json!({}), "Failed")).is_none());
        assert!(tracked(&executor(json!({}), "Running")).is_some());
        let deleting = json!({"deletionTimestamp": "2026-11-25T10:00:00Z"});
        assert!(tracked(&executor(deleting, "Running")).is_none());
    }

    #[test]
    fn a_pod_without_spark_app_selector_counts_without_an_application() {
        let pod = lean(json!({
            "metadata": {"name": "p", "namespace": "n", "labels": {"spark-role": "driver"}},
            "spec": {"containers": []},
        }));
        let (_, pod) = tracked(&pod).unwrap();
        assert_eq!(pod.entry.app, None);
        assert_eq!(pod.entry.role, Role::Driver);
        let other = lean(
            json!({"metadata": {"name": "p", "namespace": "n", "labels": {"spark-role": "shuffle"}}}),
        );
        assert!(tracked(&other).is_none(), "only drivers and executors");
    }

    /// A sink that takes every listing, as the state does while its watch is wanted.
    struct Sink {
        tracker: Tracker,
        wanted: tokio::sync::watch::Sender<Option<u64>>,
        listings: std::sync::atomic::AtomicUsize,
    }

    impl LedgerSink for Sink {
        fn tracker(&self) -> &Tracker {
            &self.tracker
        }
        fn wanted(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
            self.wanted.subscribe()
        }
        fn listed(&self, _: u64) -> bool {
            self.listings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.tracker.listing_complete();
            true
        }
        fn ledger_changed(&self) {}
    }

    fn named(name: &str) -> LeanPod {
        let mut pod = executor(json!({}), "Running");
        pod.metadata.name = Some(name.to_owned());
        pod
    }

    fn sink() -> Sink {
        Sink {
            tracker: Tracker::new(super::super::Options::default()),
            wanted: tokio::sync::watch::channel(Some(1)).0,
            listings: Default::default(),
        }
    }

    fn finished(name: &str) -> LeanPod {
        let mut pod = named(name);
        if let Some(status) = pod.status.as_mut() {
            status.phase = Some("Succeeded".to_owned());
        }
        pod
    }

    fn live_names(tracker: &Tracker) -> Vec<String> {
        tracker.with_ledger(|l| {
            let mut names: Vec<String> = l
                .app_members("analytics", "spark-1")
                .iter()
                .map(|member| match member {
                    Member::Tracked(name, ..) | Member::Reserved(name, _) => (*name).to_owned(),
                })
                .collect();
            names.sort();
            names
        })
    }

    /// A listing begins and shows exec-1 to exec-3, live.
    fn list_three(index: &mut LedgerIndex<'_>) {
        index.reset();
        for name in ["exec-1", "exec-2", "exec-3"] {
            index.listed(&named(name));
        }
    }

    #[test]
    fn a_first_listing_syncs_the_tracker_only_once_complete_and_keeps_reservations() {
        let sink = sink();
        let in_flight = PodKey {
            namespace: "analytics".to_owned(),
            name: "exec-in-flight".to_owned(),
        };
        let (_, pod) = tracked(&named("exec-in-flight")).unwrap();
        let later = std::time::Instant::now() + std::time::Duration::from_secs(30);
        sink.tracker
            .with_ledger(|l| l.reserve(&in_flight, &pod.entry, later));
        let mut index = LedgerIndex {
            sink: &sink,
            generation: 1,
        };
        list_three(&mut index);
        // Finished pods are not listed into the ledger.
        index.listed(&finished("exec-done"));
        // Half listed: the tracker is not synced, so no policy with quotas decides on it.
        assert!(!sink.tracker.is_synced());
        index.listing_complete();
        assert!(sink.tracker.is_synced());
        assert_eq!(sink.listings.load(std::sync::atomic::Ordering::Relaxed), 1);
        let (pods, reservations, cpu) = sink.tracker.with_ledger(|l| {
            let ns = &l.namespaces()["analytics"];
            (l.tracked_pods(), l.reservations(), ns.all().charge.cpu)
        });
        assert_eq!(
            (pods, reservations),
            (3, 1),
            "the reservation survives the listing"
        );
        assert_eq!(
            cpu,
            4 * 2_000_000_000,
            "3 listed executors and 1 in flight, 2 cores each"
        );
    }

    #[test]
    fn a_relist_updates_the_ledger_in_place_and_drops_what_it_did_not_show_at_its_end() {
        let sink = sink();
        let mut index = LedgerIndex {
            sink: &sink,
            generation: 1,
        };
        list_three(&mut index);
        index.listing_complete();
        // The watch failed (say the apiserver restarted) and lists everything again: exec-2
        // finished meanwhile, exec-3 was deleted, exec-4 is new.
        index.fell_behind(&watcher::Error::NoResourceVersion);
        index.reset();
        index.listed(&named("exec-1"));
        index.listed(&finished("exec-2"));
        index.listed(&named("exec-4"));
        // Half listed: still synced, every pod counted once (exec-2 and exec-3 as last known,
        // the conservative side), and per-application decisions confirm with a LIST.
        assert!(sink.tracker.is_synced());
        assert!(!sink.tracker.is_in_step());
        assert_eq!(
            live_names(&sink.tracker),
            ["exec-1", "exec-2", "exec-3", "exec-4"]
        );
        index.listing_complete();
        assert_eq!(live_names(&sink.tracker), ["exec-1", "exec-4"]);
        assert!(sink.tracker.is_in_step());
        let cpu = sink
            .tracker
            .with_ledger(|l| l.namespaces()["analytics"].live.charge.cpu);
        assert_eq!(cpu, 2 * 2_000_000_000);
    }
}
