//! What the server learns from the cluster for the engine ([`ClusterFacts`]): the cluster's
//! global default PriorityClass, from a watch of `scheduling.k8s.io/v1` PriorityClasses, and the
//! apiserver's version from `/version` (from 1.29, sidecars are native: SPEC §4a).
//!
//! The apiserver's Priority admission plugin writes the global default class into every pod
//! that names none, before webhooks see it; knowing that class lets a policy's
//! `priorityClassName` under `merge` replace it (see the engine's scheduling rules). The watch
//! is never on the request path: requests read the facts last published through the
//! [`FactsSender`] the server's state holds, the one handle the watch gets.
//!
//! Readiness waits for the first complete listing, at most [`FIRST_LISTING_WAIT`]: a replica
//! that cannot list PriorityClasses (RBAC missing after an upgrade, the apiserver slow) still
//! serves, as if the cluster had no global default, and learns it when a listing succeeds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event, watcher};

use crate::engine::{ClusterFacts, KubernetesVersion};

/// What the cluster watches have learned, as requests and readiness read it.
#[derive(Debug, Clone, Default)]
pub struct Learned {
    /// The facts in force for the next request (shared: a request costs no copy).
    pub facts: Arc<ClusterFacts>,
    /// True from when the server starts watching PriorityClasses until their first listing,
    /// or until it gives up waiting for it: not ready meanwhile.
    pub awaiting_first_listing: bool,
}

/// The one handle the cluster watches publish through: changes go in whole, under the
/// channel's lock, so the PriorityClass watch and the reading of `/version` never undo each
/// other's news; readers take the current value without waiting on any I/O.
pub type FactsSender = tokio::sync::watch::Sender<Learned>;

/// Changes one part of the published facts, for the next request.
fn update_facts(sender: &FactsSender, change: impl FnOnce(&mut ClusterFacts)) {
    sender.send_modify(|learned| change(Arc::make_mut(&mut learned.facts)));
}

/// Readiness no longer waits for the first listing (it came, or could not come in time).
fn stop_awaiting(sender: &FactsSender) {
    sender.send_if_modified(|learned| std::mem::take(&mut learned.awaiting_first_listing));
}

/// Longest time readiness waits for the first listing of PriorityClasses. A listing takes
/// milliseconds; past this something is wrong (RBAC, the apiserver), and serving without the
/// global default is better than no webhook at all.
pub const FIRST_LISTING_WAIT: Duration = Duration::from_secs(10);

/// What the watch keeps of a PriorityClass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSummary {
    /// `globalDefault`.
    pub global_default: bool,
    /// `value`.
    pub value: i32,
}

impl ClassSummary {
    fn of(class: &PriorityClass) -> Self {
        Self {
            global_default: class.global_default.unwrap_or(false),
            value: class.value,
        }
    }
}

/// The global default among `classes` (by name), as the Priority plugin picks it, and every
/// class marked `globalDefault` (to report more than one).
///
/// Kubernetes refuses a second `globalDefault` class, but two can still exist (created in a
/// race, or the check bypassed); the plugin then takes the one with the lowest value. Classes
/// with the same value are taken by name here, so every replica picks the same one.
pub fn global_default(classes: &BTreeMap<String, ClassSummary>) -> (Option<String>, Vec<String>) {
    let defaults: Vec<(&String, &ClassSummary)> =
        classes.iter().filter(|(_, c)| c.global_default).collect();
    // BTreeMap order is by name, and min_by_key keeps the first of equal values.
    let chosen = defaults
        .iter()
        .min_by_key(|(_, c)| c.value)
        .map(|(name, _)| (*name).clone());
    (
        chosen,
        defaults.into_iter().map(|(name, _)| name.clone()).collect(),
    )
}

/// The classes the reflector holds, by name.
fn summaries(store: &Store<PriorityClass>) -> BTreeMap<String, ClassSummary> {
    store
        .state()
        .iter()
        .filter_map(|class| Some((class.metadata.name.clone()?, ClassSummary::of(class))))
        .collect()
}

/// Publishes the facts `classes` give, logging when the global default changes.
fn publish(classes: &BTreeMap<String, ClassSummary>, sender: &FactsSender) {
    let (chosen, all) = global_default(classes);
    if all.len() > 1 {
        tracing::warn!(
            classes = %all.join(","),
            chosen = chosen.as_deref().unwrap_or_default(),
            "several PriorityClasses have globalDefault: true; taking the one with the lowest value, as the Priority admission plugin does"
        );
    }
    let news = {
        let learned = sender.borrow();
        learned.facts.global_default_priority_class != chosen || learned.awaiting_first_listing
    };
    if news {
        tracing::info!(
            global_default = %chosen.as_deref().unwrap_or("(none)"),
            "the cluster's global default PriorityClass"
        );
    }
    update_facts(sender, |facts| facts.global_default_priority_class = chosen);
    stop_awaiting(sender);
}

/// Longest wait for one answer of `/version`: it is the apiserver's cheapest call.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `/version` is read again: a control plane upgraded under a running webhook is
/// learnt within this, and a first read that failed is retried this often.
pub const VERSION_REFRESH: Duration = Duration::from_secs(300);

/// Reads the apiserver's version into the published facts, within [`VERSION_TIMEOUT`]. On
/// failure the version known so far stays (none at first: sidecars are then appended to the
/// containers, which every version accepts, rather than made native).
#[tracing::instrument(skip_all)]
async fn learn_version(client: &kube::Client, sender: &FactsSender) {
    let answer = tokio::time::timeout(VERSION_TIMEOUT, client.apiserver_version()).await;
    let read = match answer {
        Ok(Ok(info)) => {
            let version = KubernetesVersion::parse(&format!("{}.{}", info.major, info.minor))
                .or_else(|| KubernetesVersion::parse(&info.git_version));
            match version {
                Some(version) => Ok(version),
                None => Err(format!(
                    "the apiserver answered major {:?}, minor {:?}, gitVersion {:?}, which do not read as a version",
                    info.major, info.minor, info.git_version
                )),
            }
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {VERSION_TIMEOUT:?}")),
    };
    match read {
        Ok(version) => {
            if sender.borrow().facts.kubernetes_version != Some(version) {
                tracing::info!(
                    %version,
                    native_sidecars = version.has_native_sidecars(),
                    "the apiserver's version"
                );
            }
            update_facts(sender, |facts| facts.kubernetes_version = Some(version));
        }
        Err(error) => tracing::warn!(
            %error,
            retry_in = ?VERSION_REFRESH,
            "could not read the apiserver's /version; sidecars are appended to spec.containers until it is known"
        ),
    }
}

/// Watches PriorityClasses until `stop`, keeping the published global default current.
///
/// The caller marks the facts as awaited ([`Learned::awaiting_first_listing`]) before spawning
/// this, so that readiness is never true in between; the first listing ends the wait, and so
/// does `wait` (the server passes [`FIRST_LISTING_WAIT`]) running out first. kube-runtime's
/// reflector keeps the classes: it swaps in a listing only once it is complete (the first, or
/// a re-list after the watch fell behind), so a half-listed cluster is never published.
#[tracing::instrument(name = "priority_class_watch", skip_all)]
pub async fn watch_priority_classes(
    client: kube::Client,
    sender: FactsSender,
    wait: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    // First, so that a replica is ready only once it knows how sidecars are added; bounded by
    // VERSION_TIMEOUT, well within `wait`.
    learn_version(&client, &sender).await;
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + VERSION_REFRESH,
        VERSION_REFRESH,
    );
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let api: Api<PriorityClass> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    // The store keeps only what a ClassSummary reads: a class's description, annotations and
    // managed fields (any size a cluster admin writes) are dropped as each event arrives.
    let watch = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|class: &mut PriorityClass| {
            *class = PriorityClass {
                metadata: ObjectMeta {
                    name: class.metadata.name.take(),
                    ..ObjectMeta::default()
                },
                value: class.value,
                global_default: class.global_default,
                ..PriorityClass::default()
            };
        });
    let mut events = reflector::reflector(writer, watch).boxed();
    let mut version_due = false;
    loop {
        if std::mem::take(&mut version_due) {
            learn_version(&client, &sender).await;
        }
        let awaiting = sender.borrow().awaiting_first_listing;
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut deadline, if awaiting => {
                tracing::warn!(
                    ?wait,
                    "PriorityClasses not listed in time; ready without knowing the cluster's global default PriorityClass (a policy's priorityClassName under merge does not replace it until they are listed)"
                );
                stop_awaiting(&sender);
                continue;
            }
            _ = refresh.tick() => {
                // Read outside the select, whose output holds a non-Send borrow.
                version_due = true;
                continue;
            }
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match event {
            None => return,
            Some(Err(error)) => tracing::warn!(
                %error,
                "PriorityClass watch failed (needs list/watch on priorityclasses); retrying with backoff, the global default known so far stays"
            ),
            // A listing in progress: the store still holds the previous one.
            Some(Ok(Event::Init | Event::InitApply(_))) => {}
            Some(Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))) => {
                publish(&summaries(&store), &sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Instant;

    use super::*;
    use crate::engine::ClusterFacts;
    use crate::policy::Policy;
    use crate::state::State;

    fn classes(list: &[(&str, bool, i32)]) -> BTreeMap<String, ClassSummary> {
        list.iter()
            .map(|&(name, global_default, value)| {
                (
                    name.to_owned(),
                    ClassSummary {
                        global_default,
                        value,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_global_default_is_the_marked_class_and_the_lowest_value_wins_among_several() {
        assert_eq!(global_default(&classes(&[])), (None, vec![]));
        assert_eq!(
            global_default(&classes(&[("batch", false, 100), ("system", false, 1000)])).0,
            None
        );
        assert_eq!(
            global_default(&classes(&[("batch", false, 100), ("normal", true, 10)])),
            (Some("normal".to_owned()), vec!["normal".to_owned()])
        );
        let (chosen, all) = global_default(&classes(&[
            ("b-high", true, 500),
            ("c-low", true, 5),
            ("a-batch", false, 1),
        ]));
        assert_eq!(chosen.as_deref(), Some("c-low"));
        assert_eq!(all, vec!["b-high".to_owned(), "c-low".to_owned()]);
        // Equal values: by name, the same on every replica.
        assert_eq!(
            global_default(&classes(&[("zeta", true, 7), ("alpha", true, 7)]))
                .0
                .as_deref(),
            Some("alpha")
        );
    }

    /// A stand-in for the apiserver: answers the LIST of PriorityClasses with `list` (or never,
    /// when `None`), never answers the WATCH that follows, and answers `/version` with
    /// `version` (or never).
    fn apiserver(list: Option<serde_json::Value>) -> kube::Client {
        apiserver_of_version(list, None)
    }

    fn apiserver_of_version(
        list: Option<serde_json::Value>,
        version: Option<serde_json::Value>,
    ) -> kube::Client {
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let (list, version) = (list.clone(), version.clone());
            async move {
                let query = request.uri().query().unwrap_or_default().to_owned();
                let listing = request.uri().path() == "/apis/scheduling.k8s.io/v1/priorityclasses"
                    && !query.contains("watch=true");
                let asks_version = request.uri().path() == "/version";
                match (list, version) {
                    (Some(list), _) if listing => Ok::<_, std::convert::Infallible>(
                        axum::http::Response::new(list.to_string()),
                    ),
                    (_, Some(version)) if asks_version => {
                        Ok(axum::http::Response::new(version.to_string()))
                    }
                    _ => futures::future::pending().await,
                }
            }
        });
        kube::Client::new(service, "default")
    }

    /// A stand-in apiserver whose LIST of PriorityClasses is `list` and whose WATCH sends the
    /// lines of `events` and ends (the watcher then watches again from the last version).
    fn apiserver_watching(list: serde_json::Value, events: Vec<serde_json::Value>) -> kube::Client {
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let (list, events) = (list.clone(), events.clone());
            async move {
                let query = request.uri().query().unwrap_or_default().to_owned();
                match request.uri().path() {
                    "/apis/scheduling.k8s.io/v1/priorityclasses"
                        if query.contains("watch=true") =>
                    {
                        let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
                        // Not at once: a watch that ends at once would be re-opened in a tight loop.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::convert::Infallible>(axum::http::Response::new(lines))
                    }
                    "/apis/scheduling.k8s.io/v1/priorityclasses" => {
                        Ok(axum::http::Response::new(list.to_string()))
                    }
                    _ => futures::future::pending().await,
                }
            }
        });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn priority_classes_changed_after_the_first_listing_change_the_global_default() {
        let class = |name: &str, version: &str, default: bool| {
            serde_json::json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name, "resourceVersion": version}, "value": 10, "globalDefault": default})
        };
        let list = serde_json::json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClassList",
            "metadata": {"resourceVersion": "7"},
            "items": [class("normal", "6", true)],
        });
        let learnt = |events: Vec<serde_json::Value>| {
            let list = list.clone();
            async move {
                let state = ready_state();
                let (_stop_tx, stop) = tokio::sync::watch::channel(false);
                state.await_cluster_facts();
                let task = tokio::spawn(watch_priority_classes(
                    apiserver_watching(list, events),
                    state.cluster_facts_sender(),
                    Duration::from_secs(60),
                    stop,
                ));
                wait_until_ready(&state, Duration::from_secs(20)).await;
                let mut seen = Vec::new();
                let started = Instant::now();
                // Ready after the listing; the watch's events follow.
                while started.elapsed() < Duration::from_secs(20) {
                    let now = state.cluster_facts().global_default_priority_class.clone();
                    if seen.last() != Some(&now) {
                        seen.push(now);
                    }
                    if seen.len() == 2 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                task.abort();
                seen
            }
        };
        // The platform marks another class as the default and unmarks the first one.
        let seen = learnt(vec![
            serde_json::json!({"type": "ADDED", "object": class("batch-default", "8", true)}),
            serde_json::json!({"type": "MODIFIED", "object": class("normal", "9", false)}),
        ])
        .await;
        assert_eq!(
            seen,
            [Some("normal".to_owned()), Some("batch-default".to_owned())]
        );
        // The default class is deleted: no global default any more.
        let seen = learnt(vec![
            serde_json::json!({"type": "DELETED", "object": class("normal", "8", true)}),
        ])
        .await;
        assert_eq!(seen, [Some("normal".to_owned()), None]);
    }

    fn empty_listing() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClassList",
            "metadata": {"resourceVersion": "1"},
            "items": [],
        })
    }

    /// `/version` as a real apiserver writes it (this is 1.20.2's, with the minor changed).
    fn version_answer(minor: &str, git_version: &str) -> serde_json::Value {
        serde_json::json!({
            "major": "1", "minor": minor, "gitVersion": git_version,
            "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56", "gitTreeState": "clean",
            "buildDate": "2021-01-13T13:20:00Z", "goVersion": "go1.15.5", "compiler": "gc",
            "platform": "linux/amd64",
        })
    }

    async fn facts_learnt_from(version: Option<serde_json::Value>) -> ClusterFacts {
        let state = ready_state();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        state.await_cluster_facts();
        let task = tokio::spawn(watch_priority_classes(
            apiserver_of_version(Some(empty_listing()), version),
            state.cluster_facts_sender(),
            Duration::from_secs(60),
            stop,
        ));
        wait_until_ready(&state, Duration::from_secs(30)).await;
        task.abort();
        (*state.cluster_facts()).clone()
    }

    #[tokio::test]
    async fn the_apiserver_version_is_known_once_ready_and_decides_native_sidecars() {
        let facts = facts_learnt_from(Some(version_answer("29", "v1.29.4"))).await;
        let version = facts.kubernetes_version.expect("version learnt");
        assert_eq!((version.major, version.minor), (1, 29));
        assert!(version.has_native_sidecars());
        // Managed clusters write the minor with a `+` (GKE, EKS).
        let facts = facts_learnt_from(Some(version_answer("28+", "v1.28.9-eks-036c24b"))).await;
        let version = facts.kubernetes_version.expect("version learnt");
        assert_eq!((version.major, version.minor), (1, 28));
        assert!(!version.has_native_sidecars());
        // The test apiserver's own answer.
        let facts = facts_learnt_from(Some(version_answer("20", "v1.20.2"))).await;
        assert_eq!(
            facts.kubernetes_version.map(|v| v.to_string()).as_deref(),
            Some("1.20")
        );
    }

    #[tokio::test]
    async fn an_apiserver_that_never_answers_version_leaves_it_unknown_and_still_ready() {
        let facts = facts_learnt_from(None).await;
        assert_eq!(facts.kubernetes_version, None);
        let facts = facts_learnt_from(Some(
            serde_json::json!({"major": "", "minor": "", "gitVersion": "weird"}),
        ))
        .await;
        assert_eq!(
            facts.kubernetes_version, None,
            "an unreadable answer is not a version"
        );
    }

    #[test]
    fn versions_read_as_apiservers_and_users_write_them() {
        let read = |text: &str| KubernetesVersion::parse(text).map(|v| (v.major, v.minor));
        assert_eq!(read("1.29"), Some((1, 29)));
        assert_eq!(read("v1.31.2"), Some((1, 31)));
        assert_eq!(read("1.27+"), Some((1, 27)));
        assert_eq!(read("1"), None);
        assert_eq!(read("one.two"), None);
        assert_eq!(read(""), None);
        assert!(KubernetesVersion::parse("1.29").is_some_and(|v| v.has_native_sidecars()));
        assert!(KubernetesVersion::parse("1.28").is_some_and(|v| !v.has_native_sidecars()));
        assert!(KubernetesVersion::parse("2.0").is_some_and(|v| v.has_native_sidecars()));
    }

    fn ready_state() -> Arc<State> {
        let state = Arc::new(State::new());
        state.set_policy(Policy::parse("rules: []").unwrap());
        state
    }

    async fn wait_until_ready(state: &State, limit: Duration) -> Duration {
        let started = Instant::now();
        while !state.is_ready() {
            assert!(started.elapsed() < limit, "not ready after {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed()
    }

    #[tokio::test]
    async fn readiness_waits_for_the_first_listing_and_takes_its_global_default() {
        let state = ready_state();
        let list = serde_json::json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClassList",
            "metadata": {"resourceVersion": "7"},
            "items": [
                {"metadata": {"name": "batch", "resourceVersion": "5"}, "value": 100},
                {"metadata": {"name": "normal", "resourceVersion": "6"}, "value": 10, "globalDefault": true},
            ],
        });
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        state.await_cluster_facts();
        let task = tokio::spawn(watch_priority_classes(
            apiserver(Some(list)),
            state.cluster_facts_sender(),
            Duration::from_secs(60),
            stop,
        ));
        wait_until_ready(&state, Duration::from_secs(20)).await;
        assert_eq!(
            state
                .cluster_facts()
                .global_default_priority_class
                .as_deref(),
            Some("normal")
        );
        task.abort();
    }

    #[tokio::test]
    async fn without_a_listing_readiness_stops_waiting_after_the_wait_knowing_no_global_default() {
        let state = ready_state();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let wait = Duration::from_millis(300);
        state.await_cluster_facts();
        let started = Instant::now();
        let task = tokio::spawn(watch_priority_classes(
            apiserver(None),
            state.cluster_facts_sender(),
            wait,
            stop,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !state.is_ready(),
            "not ready while the first listing is awaited"
        );
        wait_until_ready(&state, Duration::from_secs(20)).await;
        let took = started.elapsed();
        assert!(took >= wait, "ready after {took:?}");
        assert_eq!(*state.cluster_facts(), ClusterFacts::default());
        task.abort();
    }
}
