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
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource};

use crate::metrics::Metrics;
use crate::policy::{ConfigMapRef, Policy, policy_hash};
use crate::source::{Installed, PolicySink};

/// What the InvalidPolicy Event says: why the version was ignored, cut to what an Event carries.
fn event_note(message: &str) -> String {
    crate::events::note("ignored, the previous policy stays in force: ", message)
}

/// Watches the ConfigMap until `stop` turns true.
#[tracing::instrument(name = "policy_configmap_watch", skip_all, fields(configmap = %source))]
pub async fn watch(
    client: Client,
    source: ConfigMapRef,
    sink: Arc<dyn PolicySink>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &source.namespace);
    let recorder = Recorder::new(client, crate::events::reporter());
    // Only this one object: RBAC grants list/watch on it by name, which the apiserver
    // authorizes when the request carries a metadata.name field selector (as watch_object's
    // requests do).
    let mut versions = watcher::watch_object(api, &source.name)
        .default_backoff()
        .boxed();
    let mut last_seen: Option<String> = None;
    loop {
        let version = tokio::select! {
            version = versions.next() => version,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match version {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, configmap = %source, "policy watch failed; retrying with backoff, the policy in force stays");
            }
            Some(Ok(Some(config_map))) => {
                apply(&config_map, &source, &*sink, &recorder, &mut last_seen).await;
            }
            Some(Ok(None)) => {
                tracing::warn!(configmap = %source, "policy ConfigMap absent or deleted; keeping the policy in force");
                last_seen = None;
            }
        }
    }
}

async fn apply(
    config_map: &ConfigMap,
    source: &ConfigMapRef,
    sink: &dyn PolicySink,
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
            let installed = sink.install(policy);
            Metrics::count_result(&sink.metrics().policy_reload, true);
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
            Metrics::count_result(&sink.metrics().policy_reload, false);
            tracing::error!(configmap = %source, error = %message, "policy is invalid; the policy in force (if any) stays");
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidPolicy".to_owned(),
                note: Some(event_note(&message)),
                action: "LoadPolicy".to_owned(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &config_map.object_ref(&())).await {
                tracing::warn!(%error, "could not record the InvalidPolicy event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_note_fits_the_apiservers_limit_and_cuts_at_a_character_boundary() {
        let short = event_note("rules[0].match: unknown field");
        assert_eq!(
            short,
            "ignored, the previous policy stays in force: rules[0].match: unknown field"
        );
        let prefix = "ignored, the previous policy stays in force: ".len();
        for filler in ["x", "é", "日", "🦀"] {
            for length in [900, 975, 976, 977, 978, 979, 980, 2000] {
                let message: String = filler.repeat(length);
                let note = event_note(&message);
                assert!(
                    note.len() <= crate::events::NOTE_LIMIT,
                    "{filler} x{length}: {} bytes",
                    note.len()
                );
                let body = note
                    .strip_prefix("ignored, the previous policy stays in force: ")
                    .expect("prefix");
                if prefix + message.len() <= crate::events::NOTE_LIMIT {
                    assert_eq!(body, message);
                } else {
                    let kept = body
                        .strip_suffix('…')
                        .expect("an ellipsis where it was cut");
                    assert!(message.starts_with(kept));
                    // Cut as late as the limit allows: one more character would not fit.
                    let next = filler.len();
                    assert!(prefix + kept.len() + next + "…".len() > crate::events::NOTE_LIMIT);
                }
            }
        }
    }
}
