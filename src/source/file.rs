//! A policy file (a local file, or a ConfigMap mounted as a volume), re-read when it changes,
//! including through the kubelet's `..data` symlink swap: [`FilePolicySource`] looks once,
//! [`watch`] looks on an interval until the server stops.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::files::FileWatch;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::source::{Installed, PolicySink};

use super::{PolicyUpdate, log_policy_update};

/// Watches one policy file.
#[derive(Debug)]
pub struct FilePolicySource {
    watch: FileWatch,
    last_read_error: Option<String>,
}

impl FilePolicySource {
    /// Watches `path`; the first [`FilePolicySource::poll`] loads it.
    pub fn new(path: PathBuf) -> Self {
        Self {
            watch: FileWatch::new(vec![path]),
            last_read_error: None,
        }
    }

    /// Looks at the file; puts a changed valid policy in force. Every load is counted in
    /// `spark_admission_policy_reload_total`. A read error is reported once until it changes.
    pub fn poll(&mut self, sink: &dyn PolicySink) -> PolicyUpdate {
        let contents = match self.watch.changed() {
            Ok(None) => return PolicyUpdate::Unchanged,
            Ok(Some(mut contents)) => contents.pop().unwrap_or_default(),
            Err(error) => {
                let message = error.to_string();
                if self.last_read_error.as_ref() == Some(&message) {
                    return PolicyUpdate::Unchanged;
                }
                self.last_read_error = Some(message.clone());
                Metrics::count_result(&sink.metrics().policy_reload, false);
                return PolicyUpdate::Unreadable(message);
            }
        };
        self.last_read_error = None;
        let text = String::from_utf8_lossy(&contents);
        match Policy::parse(&text) {
            Ok(policy) => {
                let summary = policy.summary();
                let installed = sink.install(policy);
                Metrics::count_result(&sink.metrics().policy_reload, true);
                match installed {
                    Installed::InForce => PolicyUpdate::Loaded(summary),
                    Installed::Staged => PolicyUpdate::Staged(summary),
                }
            }
            Err(error) => {
                Metrics::count_result(&sink.metrics().policy_reload, false);
                PolicyUpdate::Invalid(error)
            }
        }
    }
}

/// Looks at the policy file every `interval` until `stop` turns true, logging what changed (the
/// server made the first look when it started, with [`FilePolicySource::poll`]).
pub async fn watch(
    mut source: FilePolicySource,
    sink: Arc<dyn PolicySink>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        // Reading a file blocks; it runs on the blocking pool so that a slow disk never stalls
        // the workers answering reviews.
        let look = {
            let sink = sink.clone();
            tokio::task::spawn_blocking(move || {
                let update = source.poll(&*sink);
                (source, update)
            })
        };
        match look.await {
            Ok((returned, update)) => {
                source = returned;
                log_policy_update(update);
            }
            Err(error) => {
                // Only a panic gets here, and it took the source with it: say so loudly rather
                // than stop re-reading silently.
                tracing::error!(%error, "reading the policy file failed; it is no longer re-read");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    fn swap(dir: &std::path::Path, generation: &str, text: &str) {
        let generation_dir = dir.join(generation);
        std::fs::create_dir(&generation_dir).expect("generation dir");
        std::fs::write(generation_dir.join("policy.yaml"), text).expect("write");
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(generation, &tmp).expect("link");
        std::fs::rename(&tmp, dir.join("..data")).expect("swap");
    }

    #[test]
    fn reloads_through_a_kubelet_symlink_swap_and_keeps_the_last_good_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        swap(dir.path(), "..gen1", "rules: [{name: one}]");
        std::os::unix::fs::symlink("..data/policy.yaml", dir.path().join("policy.yaml"))
            .expect("link");
        let state = State::new();
        let mut source = FilePolicySource::new(dir.path().join("policy.yaml"));

        assert!(matches!(source.poll(&state), PolicyUpdate::Loaded(_)));
        assert!(state.is_ready());
        let first = state.policy().expect("policy");
        assert_eq!(first.rules[0].name, "one");
        assert!(matches!(source.poll(&state), PolicyUpdate::Unchanged));

        swap(dir.path(), "..gen2", "rules: [{name: two}]");
        assert!(matches!(source.poll(&state), PolicyUpdate::Loaded(_)));
        assert_eq!(state.policy().expect("policy").rules[0].name, "two");

        swap(
            dir.path(),
            "..gen3",
            "rules: [{name: Bad_Name, nodeSelectr: {}}]",
        );
        match source.poll(&state) {
            PolicyUpdate::Invalid(error) => assert_eq!(error.problems().len(), 2, "{error}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert_eq!(
            state.policy().expect("policy").rules[0].name,
            "two",
            "last good policy stays"
        );
        assert!(
            matches!(source.poll(&state), PolicyUpdate::Unchanged),
            "reported once"
        );

        let text = state.metrics.encode();
        assert!(
            text.contains("spark_admission_policy_reload_total{result=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("spark_admission_policy_reload_total{result=\"error\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_file_keeps_the_policy_and_is_reported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "rules: []").expect("write");
        let state = State::new();
        let mut source = FilePolicySource::new(path.clone());
        assert!(matches!(source.poll(&state), PolicyUpdate::Loaded(_)));
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(source.poll(&state), PolicyUpdate::Unreadable(_)));
        assert!(matches!(source.poll(&state), PolicyUpdate::Unchanged));
        assert!(state.is_ready());
    }

    #[test]
    fn not_ready_until_a_first_valid_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "rules: [{name: x, mode: sometimes}]").expect("write");
        let state = State::new();
        let mut source = FilePolicySource::new(path.clone());
        assert!(matches!(source.poll(&state), PolicyUpdate::Invalid(_)));
        assert!(!state.is_ready());
        std::fs::write(&path, "rules: [{name: x, mode: enforce}]").expect("write");
        assert!(matches!(source.poll(&state), PolicyUpdate::Loaded(_)));
        assert!(state.is_ready());
    }
}
