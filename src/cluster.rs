//! What the server learns from the cluster for the engine ([`ClusterFacts`]): the cluster's
//! global default PriorityClass, from a watch of `scheduling.k8s.io/v1` PriorityClasses.
//!
//! The apiserver's Priority admission plugin writes the global default class into every pod
//! that names none, before webhooks see it; knowing that class lets a policy's
//! `priorityClassName` under `merge` replace it (see the engine's scheduling rules). The watch
//! is never on the request path: requests read the facts last published in [`State`].
//!
//! Readiness waits for the first complete listing, at most [`FIRST_LISTING_WAIT`]: a replica
//! that cannot list PriorityClasses (RBAC missing after an upgrade, the apiserver slow) still
//! serves, as if the cluster had no global default, and learns it when a listing succeeds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};

use crate::engine::ClusterFacts;
use crate::state::State;

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

/// Publishes the facts `classes` give, logging when the global default changes.
fn publish(classes: &BTreeMap<String, ClassSummary>, state: &State) {
    let (chosen, all) = global_default(classes);
    if all.len() > 1 {
        tracing::warn!(
            classes = %all.join(","),
            chosen = chosen.as_deref().unwrap_or_default(),
            "several PriorityClasses have globalDefault: true; taking the one with the lowest value, as the Priority admission plugin does"
        );
    }
    let before = state.cluster_facts();
    if before.global_default_priority_class != chosen || state.is_awaiting_cluster_facts() {
        tracing::info!(
            global_default = %chosen.as_deref().unwrap_or("(none)"),
            "the cluster's global default PriorityClass"
        );
    }
    state.set_cluster_facts(ClusterFacts {
        global_default_priority_class: chosen,
        ..(*before).clone()
    });
}

/// Watches PriorityClasses until `stop`, keeping the state's global default current.
///
/// The caller marks the state as awaiting the facts ([`State::await_cluster_facts`]) before
/// spawning this, so that readiness is never true in between; the first listing ends the wait,
/// and so does `wait` (the server passes [`FIRST_LISTING_WAIT`]) running out first.
pub async fn watch_priority_classes(
    client: kube::Client,
    state: Arc<State>,
    wait: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<PriorityClass> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    let mut classes: BTreeMap<String, ClassSummary> = BTreeMap::new();
    // A listing in progress (the first one, or a re-list after the watch fell behind): it
    // replaces `classes` whole once complete, so a half-listed cluster is never published.
    let mut listing: Option<BTreeMap<String, ClassSummary>> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut deadline, if state.is_awaiting_cluster_facts() => {
                tracing::warn!(
                    ?wait,
                    "PriorityClasses not listed in time; ready without knowing the cluster's global default PriorityClass (a policy's priorityClassName under merge does not replace it until they are listed)"
                );
                state.stop_awaiting_cluster_facts();
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
            Some(Ok(Event::Init)) => listing = Some(BTreeMap::new()),
            Some(Ok(Event::InitApply(class))) => {
                if let (Some(listing), Some(name)) = (listing.as_mut(), class.metadata.name.clone())
                {
                    listing.insert(name, ClassSummary::of(&class));
                }
            }
            Some(Ok(Event::InitDone)) => {
                if let Some(listed) = listing.take() {
                    classes = listed;
                }
                publish(&classes, &state);
            }
            Some(Ok(Event::Apply(class))) => {
                if let Some(name) = class.metadata.name.clone() {
                    classes.insert(name, ClassSummary::of(&class));
                    publish(&classes, &state);
                }
            }
            Some(Ok(Event::Delete(class))) => {
                if let Some(name) = class.metadata.name.as_ref() {
                    classes.remove(name);
                    publish(&classes, &state);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Instant;

    use super::*;
    use crate::policy::Policy;

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
    /// when `None`), and never answers the WATCH that follows.
    fn apiserver(list: Option<serde_json::Value>) -> kube::Client {
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let list = list.clone();
            async move {
                let query = request.uri().query().unwrap_or_default().to_owned();
                let listing = request.uri().path() == "/apis/scheduling.k8s.io/v1/priorityclasses"
                    && !query.contains("watch=true");
                match list {
                    Some(list) if listing => Ok::<_, std::convert::Infallible>(
                        axum::http::Response::new(list.to_string()),
                    ),
                    _ => futures::future::pending().await,
                }
            }
        });
        kube::Client::new(service, "default")
    }

    fn ready_state() -> Arc<State> {
        let state = Arc::new(State::new("policy.yaml"));
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
            state.clone(),
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
            state.clone(),
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
