//! The policy from one ConfigMap, watched through the Kubernetes API.
//!
//! Every valid new version replaces the policy for the next request. An invalid version never
//! does: it is logged with every validation error, counted, and reported as a Warning Event on
//! the ConfigMap, so `kubectl describe configmap` shows why it was ignored. A deleted ConfigMap
//! keeps the last policy. A watch that loses the apiserver retries with backoff; meanwhile the
//! last policy keeps serving.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource};

use crate::metrics::Metrics;
use crate::policy::{Policy, policy_hash};
use crate::state::{Installed, State};

/// Most of an Event's note that Kubernetes keeps (1 kB).
const EVENT_NOTE_LIMIT: usize = 1000;

/// Which ConfigMap, and which key in it.
#[derive(Debug, Clone)]
pub struct ConfigMapRef {
    /// Namespace of the ConfigMap.
    pub namespace: String,
    /// Name of the ConfigMap.
    pub name: String,
    /// Data key that holds the policy.
    pub key: String,
}

impl std::fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} key {}", self.namespace, self.name, self.key)
    }
}

/// Watches the ConfigMap until `stop` turns true.
pub async fn watch(
    client: Client,
    source: ConfigMapRef,
    state: Arc<State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &source.namespace);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "spark-admission".to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // Only this one object: RBAC grants list/watch on it by name, which the apiserver
    // authorizes when the request carries a metadata.name field selector.
    let config = watcher::Config::default().fields(&format!("metadata.name={}", source.name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut last_seen: Option<String> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match event {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, configmap = %source, "policy watch failed; retrying with backoff, the policy in force stays");
            }
            Some(Ok(watcher::Event::Apply(config_map) | watcher::Event::InitApply(config_map))) => {
                apply(&config_map, &source, &state, &recorder, &mut last_seen).await;
            }
            Some(Ok(watcher::Event::Delete(_))) => {
                tracing::warn!(configmap = %source, "policy ConfigMap deleted; keeping the policy in force");
                last_seen = None;
            }
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
        }
    }
}

async fn apply(
    config_map: &ConfigMap,
    source: &ConfigMapRef,
    state: &State,
    recorder: &Recorder,
    last_seen: &mut Option<String>,
) {
    let text = config_map.data.as_ref().and_then(|d| d.get(&source.key));
    // A re-list after a reconnect delivers the same object again: only a new text counts.
    let fingerprint = policy_hash(text.map(String::as_str).unwrap_or("\u{0}missing"));
    if last_seen.as_ref() == Some(&fingerprint) {
        return;
    }
    *last_seen = Some(fingerprint);
    let result = match text {
        None => Err(format!(
            "ConfigMap {}/{} has no key {:?}",
            source.namespace, source.name, source.key
        )),
        Some(text) => Policy::parse(text).map_err(|e| e.to_string()),
    };
    match result {
        Ok(policy) => {
            let summary = policy.summary();
            let installed = state.set_policy(policy);
            Metrics::count_result(&state.metrics.policy_reload, true);
            match installed {
                Installed::InForce => {
                    tracing::info!(configmap = %source, policy = %summary, "policy loaded")
                }
                Installed::Staged => tracing::info!(
                    configmap = %source, policy = %summary,
                    "policy loaded; it has quotas and goes into force once the pod watch has listed every Spark pod"
                ),
            }
        }
        Err(message) => {
            Metrics::count_result(&state.metrics.policy_reload, false);
            tracing::error!(configmap = %source, error = %message, "policy is invalid; the policy in force (if any) stays");
            let note = if message.len() > EVENT_NOTE_LIMIT {
                let mut end = EVENT_NOTE_LIMIT;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &message[..end])
            } else {
                message
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidPolicy".to_owned(),
                note: Some(format!(
                    "ignored, the previous policy stays in force: {note}"
                )),
                action: "LoadPolicy".to_owned(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &config_map.object_ref(&())).await {
                tracing::warn!(%error, "could not record the InvalidPolicy event");
            }
        }
    }
}
