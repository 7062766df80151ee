//! `check --kube-state-metrics`: the value of kube-state-metrics' `--metric-labels-allowlist`
//! for the pod labels a policy sets, and the Prometheus label names kube-state-metrics gives
//! them on `kube_pod_labels`.
//!
//! kube-state-metrics puts no pod label on `kube_pod_labels` unless it is named in that flag, so
//! the labels a policy sets for dashboards (`cost-center: "{namespace}"`) reach Prometheus only
//! once they are listed there. Pure: a policy in, text out; nothing is read or written here.

use std::collections::BTreeMap;

use crate::policy::{Policy, Problem};

/// The labels Spark sets on its own pods that the recording rules and dashboards in
/// `deploy/prometheus/spark-usage.yaml` and `deploy/grafana/` group by: the role, the
/// application's id and its name. A policy cannot set them (they are Spark's), so they are
/// added here.
pub(super) const SPARK_LABELS: [&str; 3] = ["spark-app-name", "spark-app-selector", "spark-role"];

/// The pod label keys to allow, sorted and each once, with the Prometheus label name
/// kube-state-metrics exposes each as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Allowlist {
    /// Label key to its `label_…` name, in key order.
    labels: BTreeMap<String, String>,
}

impl Allowlist {
    /// Every label key any rule of the policy sets (rules apply to Spark driver and executor
    /// pods only), plus [`SPARK_LABELS`]; or, when two keys would become the same Prometheus
    /// label, a problem for each such key saying where it is set.
    pub(super) fn of(policy: &Policy) -> Result<Self, Vec<Problem>> {
        // Where each key is set, for the messages; Spark's own labels have no path.
        let mut sources: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for label in SPARK_LABELS {
            sources.entry(label).or_default().push(String::new());
        }
        for (index, rule) in policy.rules.iter().enumerate() {
            for key in rule.labels.keys() {
                sources
                    .entry(key.as_str())
                    .or_default()
                    .push(format!("rules[{index}].labels.{key}"));
            }
        }
        let labels: BTreeMap<String, String> = sources
            .keys()
            .map(|key| ((*key).to_owned(), prometheus_label_name(key)))
            .collect();

        let mut keys_by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, name) in &labels {
            keys_by_name.entry(name).or_default().push(key);
        }
        let mut problems = Vec::new();
        for (name, keys) in keys_by_name.iter().filter(|(_, keys)| keys.len() > 1) {
            for key in keys {
                let others: Vec<String> = keys
                    .iter()
                    .filter(|other| *other != key)
                    .map(|other| format!("{other:?}"))
                    .collect();
                let whose = if SPARK_LABELS.contains(key) {
                    " (Spark's own label)"
                } else {
                    ""
                };
                let verb = if others.len() == 1 { "does" } else { "do" };
                for path in &sources[key] {
                    problems.push(Problem {
                        path: path.clone(),
                        message: format!(
                            "label {key:?}{whose} becomes {name} in kube-state-metrics, as \
                             {} {verb}; on a pod that carries more than one, kube-state-metrics \
                             names them {name}_conflict1, {name}_conflict2, which the recording \
                             rules and dashboards do not read; use label keys that differ in \
                             more than case and punctuation (kube-state-metrics turns every \
                             character but letters, digits and '_' into '_', camelCase into \
                             camel_case, and lowercases the rest)",
                            others.join(" and "),
                        ),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { labels })
        } else {
            Err(problems)
        }
    }

    /// The flag's value, exactly as kube-state-metrics takes it:
    /// `pods=[label-1,label-2,...]`, keys sorted.
    pub(super) fn flag_value(&self) -> String {
        let keys: Vec<&str> = self.labels.keys().map(String::as_str).collect();
        format!("pods=[{}]", keys.join(","))
    }

    /// Each label key beside the name kube-state-metrics gives it on `kube_pod_labels`, one
    /// per line, aligned.
    pub(super) fn mapping(&self) -> String {
        let width = self.labels.keys().map(String::len).max().unwrap_or(0);
        self.labels
            .iter()
            .map(|(key, name)| format!("  {key:<width$}  {name}\n"))
            .collect()
    }
}

/// The Prometheus label name kube-state-metrics (v2, `internal/store/utils.go`) gives a
/// Kubernetes label on `kube_pod_labels`: `label_`, then the key with every character but
/// ASCII letters, digits and `_` replaced by `_`, with `_` put between a lowercase letter or
/// digit and the uppercase letter after it (Go's `([a-z0-9])([A-Z])` → `${1}_${2}`, matches not
/// overlapping), all lowercased.
pub(super) fn prometheus_label_name(key: &str) -> String {
    let sanitised: Vec<char> = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut name = String::with_capacity("label_".len() + sanitised.len() + 4);
    name.push_str("label_");
    let mut index = 0;
    while let Some(&c) = sanitised.get(index) {
        name.push(c.to_ascii_lowercase());
        match sanitised.get(index + 1) {
            Some(&next)
                if (c.is_ascii_lowercase() || c.is_ascii_digit()) && next.is_ascii_uppercase() =>
            {
                name.push('_');
                name.push(next.to_ascii_lowercase());
                index += 2;
            }
            _ => index += 1,
        }
    }
    name
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    fn allowlist_of(yaml: &str) -> Result<Allowlist, Vec<Problem>> {
        Allowlist::of(&Policy::parse(yaml).expect("valid policy"))
    }

    #[test]
    fn the_platform_policys_labels_and_sparks_own_make_the_allowlist() {
        let text = std::fs::read_to_string("examples/policies/platform.yaml").expect("example");
        let allowlist = allowlist_of(&text).expect("no collision");
        assert_eq!(
            allowlist.flag_value(),
            "pods=[cost-center,spark-app,spark-app-name,spark-app-selector,spark-role,spark-role-name]"
        );
        assert_eq!(
            allowlist.mapping(),
            "  cost-center         label_cost_center\n\
             \x20 spark-app           label_spark_app\n\
             \x20 spark-app-name      label_spark_app_name\n\
             \x20 spark-app-selector  label_spark_app_selector\n\
             \x20 spark-role          label_spark_role\n\
             \x20 spark-role-name     label_spark_role_name\n"
        );
    }

    #[test]
    fn templated_and_literal_values_give_their_keys_once_sorted_across_rules() {
        let allowlist = allowlist_of(
            r#"
rules:
  - name: teams
    labels:
      team: "{namespace}"
      example.com/Cost-Center: "cc-{namespace}"
      queue: "root.{service_account}.{role}"
  - name: analytics
    match: {namespaces: [analytics]}
    labels:
      team: analytics
      tier: batch
  - name: executors
    match: {roles: [executor]}
    labels:
      costCenter: "{app_name}"
"#,
        )
        .expect("no collision");
        assert_eq!(
            allowlist.flag_value(),
            "pods=[costCenter,example.com/Cost-Center,queue,spark-app-name,spark-app-selector,spark-role,team,tier]"
        );
        assert_eq!(
            allowlist.mapping(),
            "  costCenter               label_cost_center\n\
             \x20 example.com/Cost-Center  label_example_com_cost_center\n\
             \x20 queue                    label_queue\n\
             \x20 spark-app-name           label_spark_app_name\n\
             \x20 spark-app-selector       label_spark_app_selector\n\
             \x20 spark-role               label_spark_role\n\
             \x20 team                     label_team\n\
             \x20 tier                     label_tier\n"
        );
    }

    #[test]
    fn a_policy_without_labels_allows_sparks_own() {
        let allowlist = allowlist_of("rules: [{name: pool, nodeSelector: {pool: spark}}]")
            .expect("no collision");
        assert_eq!(
            allowlist.flag_value(),
            "pods=[spark-app-name,spark-app-selector,spark-role]"
        );
    }

    #[test]
    fn keys_that_become_one_prometheus_label_are_refused_where_each_is_set() {
        let problems = allowlist_of(
            r#"
rules:
  - name: a
    labels: {cost.center: x, spark.role: "{role}"}
  - name: b
    labels: {cost-center: "{namespace}", Cost_Center: y}
"#,
        )
        .expect_err("collisions");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "rules[1].labels.Cost_Center",
                "rules[1].labels.cost-center",
                "rules[0].labels.cost.center",
                "",
                "rules[0].labels.spark.role",
            ]
        );
        assert!(
            problems[1].message.starts_with(
                "label \"cost-center\" becomes label_cost_center in kube-state-metrics, as \
                 \"Cost_Center\" and \"cost.center\" do; on a pod that carries more than one, \
                 kube-state-metrics names them label_cost_center_conflict1, \
                 label_cost_center_conflict2,"
            ),
            "{}",
            problems[1].message
        );
        assert!(
            problems[3]
                .message
                .starts_with("label \"spark-role\" (Spark's own label) becomes label_spark_role in kube-state-metrics, as \"spark.role\" does;"),
            "{}",
            problems[3].message
        );
        assert!(problems[0].message.ends_with(
            "(kube-state-metrics turns every character but letters, digits and '_' into '_', \
             camelCase into camel_case, and lowercases the rest)"
        ));
    }

    #[test]
    fn prometheus_names_follow_kube_state_metrics() {
        for (key, name) in [
            ("team", "label_team"),
            ("cost-center", "label_cost_center"),
            (
                "app.kubernetes.io/part-of",
                "label_app_kubernetes_io_part_of",
            ),
            ("costCenter", "label_cost_center"),
            ("teamID", "label_team_id"),
            ("a1B", "label_a1_b"),
            ("aBcD", "label_a_bc_d"),
            ("ABc", "label_abc"),
            ("Team_Name", "label_team_name"),
            ("x_Y", "label_x_y"),
        ] {
            assert_eq!(prometheus_label_name(key), name, "{key}");
        }
    }

    #[test]
    fn every_key_the_policy_sets_is_allowed() {
        let text = std::fs::read_to_string("examples/policies/platform.yaml").expect("example");
        let policy = Policy::parse(&text).expect("valid");
        let allowlist = Allowlist::of(&policy).expect("no collision");
        let set = policy.rules.iter().flat_map(|rule| rule.labels.keys());
        for key in set.map(String::as_str).chain(SPARK_LABELS) {
            assert!(allowlist.labels.contains_key(key), "{key}");
        }
    }
}
