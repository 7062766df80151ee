//! Kubernetes Events the server records: where a user looks (`kubectl describe`, `kubectl get
//! events`) for what was done to their objects. Notes are cut to what an Event can carry, and
//! Events about Spark submissions are sent from a bounded queue by one task, never on the
//! request path: a review is answered whether or not its Event is ever recorded.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

/// The longest note an Event carries here: the apiserver refuses an Event whose note is over
/// 1 kB, and the whole Event would be lost, not just its tail.
pub const NOTE_LIMIT: usize = 1024;

/// Events waiting to be sent; past this many new ones are dropped (and logged). Any client
/// can send reviews, so what they can make the server write is bounded.
pub const QUEUE: usize = 256;

/// `prefix` then `message`, cut at a character boundary (with "…") so that the whole note is
/// at most [`NOTE_LIMIT`] bytes.
pub fn note(prefix: &str, message: &str) -> String {
    const ELLIPSIS: &str = "…";
    if prefix.len() + message.len() <= NOTE_LIMIT {
        return format!("{prefix}{message}");
    }
    let mut end = NOTE_LIMIT
        .saturating_sub(prefix.len())
        .saturating_sub(ELLIPSIS.len())
        .min(message.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{prefix}{}{ELLIPSIS}", &message[..end])
}

/// The reporter of every Event the server records.
pub fn reporter() -> Reporter {
    Reporter {
        controller: "spark-admission".to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// An Event about a Spark driver pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverEvent {
    /// The driver pod's namespace.
    pub namespace: String,
    /// Its name.
    pub pod: String,
    /// Its uid.
    pub uid: String,
    /// Warning (a refusal) or Normal (a change).
    pub warning: bool,
    /// `SparkConfSet`, `SparkConfLowered`, `SubmissionRefused`.
    pub reason: &'static str,
    /// What was done, in words.
    pub note: String,
}

/// The queue of driver Events, and the task that sends them once the server has a client.
pub struct DriverEvents {
    sender: mpsc::Sender<DriverEvent>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<DriverEvent>>>,
}

impl Default for DriverEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl DriverEvents {
    /// An empty queue; nothing is sent until [`DriverEvents::send_with`] runs.
    pub fn new() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }

    /// Queues `event`; false when the queue was full and it was dropped.
    pub fn record(&self, event: DriverEvent) -> bool {
        match self.sender.try_send(event) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "driver Event queue full; an Event was dropped");
                false
            }
        }
    }

    /// Takes what is queued, now and later, to send with `client` (once: later calls get
    /// `None`).
    pub fn take_queue(&self) -> Option<mpsc::Receiver<DriverEvent>> {
        self.receiver.lock().ok()?.take()
    }
}

/// Sends every queued Event until `stop` turns true.
pub async fn send_with(
    client: kube::Client,
    mut queue: mpsc::Receiver<DriverEvent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let recorder = Recorder::new(client, reporter());
    loop {
        let event = tokio::select! {
            event = queue.recv() => event,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        let Some(event) = event else {
            return;
        };
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(event.pod.clone()),
            namespace: Some(event.namespace.clone()),
            uid: Some(event.uid.clone()),
            ..ObjectReference::default()
        };
        let sent = recorder
            .publish(
                &Event {
                    type_: if event.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: event.reason.to_owned(),
                    note: Some(note("", &event.note)),
                    action: "AdmitSubmission".to_owned(),
                    secondary: None,
                },
                &reference,
            )
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, namespace = %event.namespace, pod = %event.pod, reason = event.reason, "could not record an Event on a driver pod");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_at_a_character_boundary_within_the_limit() {
        assert_eq!(note("p: ", "short"), "p: short");
        let long = "é".repeat(NOTE_LIMIT);
        let cut = note("p: ", &long);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.starts_with("p: é") && cut.ends_with('…'));
    }

    #[test]
    fn a_full_queue_drops_new_events_and_says_so() {
        let events = DriverEvents::new();
        let event = DriverEvent {
            namespace: "n".into(),
            pod: "p".into(),
            uid: "u".into(),
            warning: false,
            reason: "SparkConfSet",
            note: "x".into(),
        };
        for _ in 0..QUEUE {
            assert!(events.record(event.clone()));
        }
        assert!(!events.record(event));
        assert!(events.take_queue().is_some());
        assert!(events.take_queue().is_none());
    }
}
