//! The Prometheus metrics: one registry, typed label sets, no globals.
//!
//! Names follow the product contract (`spark_admission_*`); counters get their `_total` suffix
//! from the encoder. Exposed in the Prometheus text format (0.0.4) on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of `spark_admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// CREATE, UPDATE, DELETE, CONNECT, or `unknown` for a body that could not be read.
    pub operation: &'static str,
    /// driver, executor, or `none`.
    pub role: &'static str,
    /// patched, unchanged, denied, error.
    pub result: &'static str,
}

/// Labels of `spark_admission_rule_applied_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// Rule name.
    pub rule: String,
}

/// Labels of `spark_admission_quota_denied_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// Quota name.
    pub quota: String,
    /// `application` or `namespace`.
    pub scope: &'static str,
}

/// Labels of `spark_admission_quota_usage_ratio`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaUsageLabels {
    /// Quota name.
    pub quota: String,
    /// Namespace.
    pub namespace: String,
    /// `cpu`, `memory` or `applications`.
    pub resource: &'static str,
}

/// Labels of the reload counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of `spark_admission_policy_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Hash of the policy in force.
    pub hash: String,
}

/// Labels of the connection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `webhook` or `admin`.
    pub listener: &'static str,
}

/// Labels of `spark_admission_idle_connections_closed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdleLabels {
    /// `webhook` or `admin`.
    pub listener: &'static str,
    /// `first_request` (no request since the handshake), `keep_alive` (none since the last),
    /// `write` (an answer not taken, or a write blocked, past `--write-timeout`) or `evicted`
    /// (held nothing useful when the listener was full, and gave its place to a new one).
    pub phase: &'static str,
}

/// Labels of `spark_admission_requests_shed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `queue_full`, `requests` (no request slot within the queue wait) or `body_bytes` (the
    /// body did not fit in the byte budget within it).
    pub reason: &'static str,
}

/// Labels of `spark_admission_spark_conf_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why: `max` or `gang`.
    pub reason: &'static str,
}

/// Labels of `spark_admission_gang_reservations_total` and
/// `spark_admission_quota_room_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Gang: `held`, `conflict` (another decision wrote first: decided again) or `failed`.
    /// Namespace room: `held`, `conflict`, `refused` or `fallback`.
    pub outcome: &'static str,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// `spark_admission_requests_total{operation,role,result}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `spark_admission_request_duration_seconds`.
    pub request_duration: Histogram,
    /// `spark_admission_rule_applied_total{rule}`.
    pub rule_applied: Family<RuleLabels, Counter>,
    /// `spark_admission_quota_denied_total{quota,scope}`.
    pub quota_denied: Family<QuotaLabels, Counter>,
    /// `spark_admission_quota_usage_ratio{quota,namespace,resource}`.
    pub quota_usage_ratio: Family<QuotaUsageLabels, Gauge<f64, AtomicU64>>,
    /// `spark_admission_quota_confirm_total{result}`: consistent LISTs near a limit.
    pub quota_confirm: Family<ResultLabels, Counter>,
    /// `spark_admission_policy_reload_total{result}`.
    pub policy_reload: Family<ResultLabels, Counter>,
    /// `spark_admission_policy_info{hash}`: 1 for the policy in force.
    pub policy_info: Family<PolicyLabels, Gauge>,
    /// `spark_admission_certificate_expiry_timestamp_seconds`.
    pub certificate_expiry: Gauge,
    /// `spark_admission_certificate_reload_total{result}`.
    pub certificate_reload: Family<ResultLabels, Counter>,
    /// `spark_admission_client_ca_reload_total{result}`: loads of the `--client-ca` bundle.
    pub client_ca_reload: Family<ResultLabels, Counter>,
    /// `spark_admission_client_certificates_refused_total`: webhook handshakes refused for a
    /// missing or untrusted client certificate.
    pub client_certificates_refused: Counter,
    /// `spark_admission_tracked_pods`.
    pub tracked_pods: Gauge,
    /// `spark_admission_policy_staged`: 1 while a policy with quotas waits for the pod watch.
    pub policy_staged: Gauge,
    /// `spark_admission_spark_conf_lowered_total{quota}`: driver configurations fitted.
    pub spark_conf_lowered: Family<QuotaNameLabels, Counter>,
    /// `spark_admission_spark_conf_set_total{rule}`: Spark settings written into driver
    /// configurations, by the rule that wrote them.
    pub spark_conf_set: Family<RuleLabels, Counter>,
    /// `spark_admission_spark_conf_refused_total{reason}`: cluster-mode submissions refused at
    /// their driver configuration (`max`: over a `sparkConf.max`; `gang`: no room for its
    /// minimum executors).
    pub spark_conf_refused: Family<ReasonLabels, Counter>,
    /// `spark_admission_gang_read_duration_seconds`: the namespace reads gang admission
    /// decides on.
    pub gang_read_duration: Histogram,
    /// `spark_admission_gang_reservations_total{outcome}`: writes of a namespace's
    /// reservations.
    pub gang_reservations: Family<OutcomeLabels, Counter>,
    /// `spark_admission_quota_room_total{outcome}`: decisions near a namespace limit made on
    /// the admissions every replica has in flight there.
    pub quota_room: Family<OutcomeLabels, Counter>,
    /// `spark_admission_connections{listener}`: connections open.
    pub connections: Family<ListenerLabels, Gauge>,
    /// `spark_admission_connections_refused_total{listener}`: closed at accept, listener full.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// `spark_admission_idle_connections_closed_total{listener,phase}`.
    pub idle_connections_closed: Family<IdleLabels, Counter>,
    /// `spark_admission_requests_in_flight`: webhook requests holding a request slot.
    pub requests_in_flight: Gauge,
    /// `spark_admission_request_body_bytes_in_flight`: body bytes held by those requests.
    pub body_bytes_in_flight: Gauge,
    /// `spark_admission_requests_shed_total{reason}`: webhook requests answered 503 by the
    /// bounds.
    pub requests_shed: Family<ShedLabels, Counter>,
}

/// Labels of `spark_admission_spark_conf_lowered_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaNameLabels {
    /// Quota name.
    pub quota: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "spark_admission_requests",
            "Admission requests answered, by operation, Spark role and result",
            requests.clone(),
        );
        // 50 µs to about 1.6 s: the engine works in microseconds, the apiserver's own histogram
        // starts at 5 ms.
        let request_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "spark_admission_request_duration_seconds",
            "Time from request body read to response ready",
            request_duration.clone(),
        );
        let rule_applied = Family::<RuleLabels, Counter>::default();
        registry.register(
            "spark_admission_rule_applied",
            "Pods a rule matched, by rule",
            rule_applied.clone(),
        );
        let quota_denied = Family::<QuotaLabels, Counter>::default();
        registry.register(
            "spark_admission_quota_denied",
            "Pods denied by a quota, by quota and scope (application, namespace)",
            quota_denied.clone(),
        );
        let quota_usage_ratio = Family::<QuotaUsageLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "spark_admission_quota_usage_ratio",
            "Use of a quota's per-namespace limit (1 = at the limit), by quota, namespace and resource",
            quota_usage_ratio.clone(),
        );
        let quota_confirm = Family::<ResultLabels, Counter>::default();
        registry.register(
            "spark_admission_quota_confirm",
            "Consistent LISTs of an application's pods near a per-application limit, by result (ok, error)",
            quota_confirm.clone(),
        );
        let policy_reload = Family::<ResultLabels, Counter>::default();
        registry.register(
            "spark_admission_policy_reload",
            "Policy loads, by result (ok, error)",
            policy_reload.clone(),
        );
        let policy_info = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "spark_admission_policy_info",
            "The policy in force (value 1), by hash",
            policy_info.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "spark_admission_certificate_expiry_timestamp_seconds",
            "Expiry of the serving certificate in force, as a Unix timestamp",
            certificate_expiry.clone(),
        );
        let certificate_reload = Family::<ResultLabels, Counter>::default();
        registry.register(
            "spark_admission_certificate_reload",
            "Serving certificate loads, by result (ok, error)",
            certificate_reload.clone(),
        );
        let client_ca_reload = Family::<ResultLabels, Counter>::default();
        registry.register(
            "spark_admission_client_ca_reload",
            "Loads of the client CA bundle (--client-ca), by result (ok, error)",
            client_ca_reload.clone(),
        );
        let client_certificates_refused = Counter::default();
        registry.register(
            "spark_admission_client_certificates_refused",
            "TLS handshakes on the webhook port refused because the client presented no certificate or one the client CA does not vouch for (--client-ca)",
            client_certificates_refused.clone(),
        );
        let tracked_pods = Gauge::default();
        registry.register(
            "spark_admission_tracked_pods",
            "Live Spark pods held by the quota pod watch",
            tracked_pods.clone(),
        );
        let policy_staged = Gauge::default();
        registry.register(
            "spark_admission_policy_staged",
            "1 while a loaded policy with quotas waits for the pod watch to list every Spark pod before going into force",
            policy_staged.clone(),
        );
        let spark_conf_lowered = Family::<QuotaNameLabels, Counter>::default();
        registry.register(
            "spark_admission_spark_conf_lowered",
            "Cluster-mode driver configurations whose executor counts were lowered to fit a quota, by the quota that decided",
            spark_conf_lowered.clone(),
        );
        let spark_conf_set = Family::<RuleLabels, Counter>::default();
        registry.register(
            "spark_admission_spark_conf_set",
            "Spark settings written into cluster-mode driver configurations by sparkConf.set, by rule",
            spark_conf_set.clone(),
        );
        let spark_conf_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "spark_admission_spark_conf_refused",
            "Cluster-mode submissions refused at their driver configuration, by reason (max: over a sparkConf.max; gang: no room for their minimum executors)",
            spark_conf_refused.clone(),
        );
        let gang_read_duration = Histogram::new(exponential_buckets(0.001, 2.0, 12));
        registry.register(
            "spark_admission_gang_read_duration_seconds",
            "Time gang admission spent reading a namespace (its LIST, other submissions' ConfigMaps, and its reservations)",
            gang_read_duration.clone(),
        );
        let gang_reservations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "spark_admission_gang_reservations",
            "Writes of a namespace's gang reservations, by outcome (held; conflict: another decision wrote first, so decided again; failed: the submission went unreserved)",
            gang_reservations.clone(),
        );
        let quota_room = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "spark_admission_quota_room",
            "Decisions near a namespace limit made on the admissions in flight of every replica, by outcome (held: admitted and written; conflict: another decision was stored first, so decided again; refused; fallback: they could not be read or written in time, so this replica's view decided)",
            quota_room.clone(),
        );
        let connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "spark_admission_connections",
            "Connections open, by listener (webhook, admin)",
            connections.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "spark_admission_connections_refused",
            "Connections closed at accept because the listener held its maximum, by listener",
            connections_refused.clone(),
        );
        let idle_connections_closed = Family::<IdleLabels, Counter>::default();
        registry.register(
            "spark_admission_idle_connections_closed",
            "Connections closed for sending no request in time, not taking an answer in time, or to make room for a new one, by listener and phase (first_request, keep_alive, write, evicted)",
            idle_connections_closed.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "spark_admission_requests_in_flight",
            "Webhook requests holding a request slot",
            requests_in_flight.clone(),
        );
        let body_bytes_in_flight = Gauge::default();
        registry.register(
            "spark_admission_request_body_bytes_in_flight",
            "Request body bytes reserved by the webhook requests in flight",
            body_bytes_in_flight.clone(),
        );
        let requests_shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "spark_admission_requests_shed",
            "Webhook requests answered 503 by the bounds, by reason (queue_full, requests, body_bytes)",
            requests_shed.clone(),
        );
        // The refusals exist from the start, so `increase()` and alerts see the first one.
        for listener in ["webhook", "admin"] {
            let _ = connections.get_or_create(&ListenerLabels { listener });
            let _ = connections_refused.get_or_create(&ListenerLabels { listener });
        }
        for reason in ["queue_full", "requests", "body_bytes"] {
            let _ = requests_shed.get_or_create(&ShedLabels { reason });
        }
        // Both results exist from the start, so `increase()` sees the first error too.
        for family in [
            &policy_reload,
            &certificate_reload,
            &client_ca_reload,
            &quota_confirm,
        ] {
            for result in ["ok", "error"] {
                let _ = family.get_or_create_owned(&ResultLabels {
                    result: result.to_owned(),
                });
            }
        }
        Self {
            registry,
            requests,
            request_duration,
            rule_applied,
            quota_denied,
            quota_usage_ratio,
            quota_confirm,
            policy_reload,
            policy_info,
            certificate_expiry,
            certificate_reload,
            client_ca_reload,
            client_certificates_refused,
            tracked_pods,
            policy_staged,
            spark_conf_lowered,
            spark_conf_set,
            spark_conf_refused,
            gang_read_duration,
            gang_reservations,
            quota_room,
            connections,
            connections_refused,
            idle_connections_closed,
            requests_in_flight,
            body_bytes_in_flight,
            requests_shed,
        }
    }

    /// The open-connections gauge of `listener` (a handle to the registered series).
    pub fn connections_open(&self, listener: &'static str) -> Gauge {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .clone()
    }

    /// The refused-connections counter of `listener`.
    pub fn connections_refused(&self, listener: &'static str) -> Counter {
        self.connections_refused
            .get_or_create(&ListenerLabels { listener })
            .clone()
    }

    /// Counts a connection closed for idleness.
    pub fn count_idle_close(&self, listener: &'static str, phase: &'static str) {
        self.idle_connections_closed
            .get_or_create(&IdleLabels { listener, phase })
            .inc();
    }

    /// Counts one answered request.
    pub fn count_request(&self, operation: &'static str, role: &'static str, result: &'static str) {
        // Static labels: counting a request allocates nothing.
        self.requests
            .get_or_create(&RequestLabels {
                operation,
                role,
                result,
            })
            .inc();
    }

    /// Counts a pod refused by `quota` in `scope`.
    pub fn count_quota_denial(&self, quota: &str, scope: &'static str) {
        self.quota_denied
            .get_or_create(&QuotaLabels {
                quota: quota.to_owned(),
                scope,
            })
            .inc();
    }

    /// Counts a driver configuration lowered to fit `quota`.
    pub fn count_spark_conf_lowered(&self, quota: &str) {
        self.spark_conf_lowered
            .get_or_create(&QuotaNameLabels {
                quota: quota.to_owned(),
            })
            .inc();
    }

    /// Counts one Spark setting written by `rule`.
    pub fn count_spark_conf_set(&self, rule: &str) {
        self.spark_conf_set
            .get_or_create(&RuleLabels {
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// Counts a submission refused at its driver configuration.
    pub fn count_spark_conf_refused(&self, reason: &'static str) {
        self.spark_conf_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a write of a namespace's gang reservations.
    pub fn count_gang_reservation(&self, outcome: &'static str) {
        self.gang_reservations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a decision near a namespace limit made on the admissions in flight there.
    pub fn count_quota_room(&self, outcome: &'static str, by: u64) {
        self.quota_room
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(by);
    }

    /// Counts a reload attempt in `family`.
    pub fn count_result(family: &Family<ResultLabels, Counter>, ok: bool) {
        family
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }

    /// Records the policy in force: its hash is the only `policy_info` series.
    pub fn set_policy(&self, hash: &str) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&PolicyLabels {
                hash: hash.to_owned(),
            })
            .set(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_contract_names() {
        let metrics = Metrics::new();
        metrics.count_request("CREATE", "executor", "patched");
        metrics.request_duration.observe(0.0001);
        metrics.set_policy("abc");
        metrics.set_policy("def");
        metrics.count_quota_denial("apps", "application");
        metrics.count_quota_denial("apps", "application");
        metrics
            .quota_usage_ratio
            .get_or_create(&QuotaUsageLabels {
                quota: "apps".to_owned(),
                namespace: "etl".to_owned(),
                resource: "cpu",
            })
            .set(0.25);
        metrics.tracked_pods.set(7);
        let text = metrics.encode();
        for name in [
            "spark_admission_quota_denied_total{quota=\"apps\",scope=\"application\"} 2",
            "spark_admission_quota_usage_ratio{quota=\"apps\",namespace=\"etl\",resource=\"cpu\"} 0.25",
            "spark_admission_tracked_pods 7",
            "spark_admission_quota_confirm_total{result=\"error\"} 0",
            "spark_admission_requests_total{operation=\"CREATE\",role=\"executor\",result=\"patched\"} 1",
            "spark_admission_request_duration_seconds_bucket{le=\"5e-05\"}",
            "spark_admission_policy_info{hash=\"def\"} 1",
            "spark_admission_certificate_expiry_timestamp_seconds",
            "spark_admission_client_ca_reload_total{result=\"error\"} 0",
            "spark_admission_client_certificates_refused_total 0",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(!text.contains("hash=\"abc\""), "old policy hash must go");
    }
}
