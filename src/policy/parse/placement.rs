//! A rule's `topologySpreadConstraints`, `podAffinity` and `podAntiAffinity`: keys, operators,
//! weights and label selectors as the apiserver checks them, with §4 templates allowed in the
//! selectors' values (`{app_id}` keeps an application's executors together or spreads them).
//!
//! Only reads and checks them; templates stay as written in the Kubernetes objects and are
//! expanded (and sanitised like label values) per pod by the engine. Never stops at the first
//! problem.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    PodAffinity, PodAffinityTerm, PodAntiAffinity, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::policy::Template;
use crate::policy::labels::{check_label_value, check_qualified_name};

use super::metadata::templated_label_value_problem;
use super::{Checker, index_path, key_path};

impl Checker {
    pub(super) fn topology_spread_constraints(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Vec<TopologySpreadConstraint> {
        // The apiserver refuses two constraints on one topology key with one action.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        self.list(value, path, |c, v, p| {
            let since = c.problems.len();
            let constraint: TopologySpreadConstraint = c.k8s(v, p)?;
            if constraint.max_skew <= 0 {
                c.problem(
                    key_path(p, "maxSkew"),
                    format!("{} is out of range; it must be more than 0", constraint.max_skew),
                );
            }
            c.topology_key(&constraint.topology_key, &key_path(p, "topologyKey"));
            let action = constraint.when_unsatisfiable.as_str();
            let action_path = key_path(p, "whenUnsatisfiable");
            if action.is_empty() {
                c.problem(action_path, "missing; allowed: DoNotSchedule, ScheduleAnyway");
            } else {
                c.one_of(Some(action), &action_path, &["DoNotSchedule", "ScheduleAnyway"]);
            }
            if let Some(min) = constraint.min_domains {
                let mp = key_path(p, "minDomains");
                if min <= 0 {
                    c.problem(&mp, format!("{min} is out of range; it must be more than 0"));
                }
                if action != "DoNotSchedule" {
                    c.problem(mp, "only allowed with whenUnsatisfiable DoNotSchedule");
                }
            }
            for field in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
                let value = if field == "nodeAffinityPolicy" {
                    constraint.node_affinity_policy.as_deref()
                } else {
                    constraint.node_taints_policy.as_deref()
                };
                c.one_of(value, &key_path(p, field), &["Honor", "Ignore"]);
            }
            if let Some(selector) = &constraint.label_selector {
                c.label_selector(selector, &key_path(p, "labelSelector"), true);
            }
            c.label_keys(
                constraint.match_label_keys.as_deref(),
                constraint.label_selector.as_ref(),
                &key_path(p, "matchLabelKeys"),
            );
            if !constraint.topology_key.is_empty()
                && !action.is_empty()
                && !seen.insert((constraint.topology_key.clone(), action.to_owned()))
            {
                c.problem(
                    p,
                    format!("another constraint already has topologyKey {:?} and whenUnsatisfiable {action}; the apiserver allows one per pair", constraint.topology_key),
                );
            }
            (c.problems.len() == since).then_some(constraint)
        })
    }

    pub(super) fn pod_affinity(&mut self, value: &Value, path: &str) -> Option<PodAffinity> {
        let since = self.problems.len();
        let affinity: PodAffinity = self.k8s(value, path)?;
        self.affinity_terms(
            affinity
                .required_during_scheduling_ignored_during_execution
                .as_deref(),
            affinity
                .preferred_during_scheduling_ignored_during_execution
                .as_deref(),
            path,
        );
        (self.problems.len() == since).then_some(affinity)
    }

    pub(super) fn pod_anti_affinity(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Option<PodAntiAffinity> {
        let since = self.problems.len();
        let affinity: PodAntiAffinity = self.k8s(value, path)?;
        self.affinity_terms(
            affinity
                .required_during_scheduling_ignored_during_execution
                .as_deref(),
            affinity
                .preferred_during_scheduling_ignored_during_execution
                .as_deref(),
            path,
        );
        (self.problems.len() == since).then_some(affinity)
    }

    fn affinity_terms(
        &mut self,
        required: Option<&[PodAffinityTerm]>,
        preferred: Option<&[WeightedPodAffinityTerm]>,
        path: &str,
    ) {
        let required_path = key_path(path, "requiredDuringSchedulingIgnoredDuringExecution");
        for (i, term) in required.unwrap_or_default().iter().enumerate() {
            self.affinity_term(term, &index_path(&required_path, i));
        }
        let preferred_path = key_path(path, "preferredDuringSchedulingIgnoredDuringExecution");
        for (i, weighted) in preferred.unwrap_or_default().iter().enumerate() {
            let p = index_path(&preferred_path, i);
            if !(1..=100).contains(&weighted.weight) {
                self.problem(
                    key_path(&p, "weight"),
                    format!("{} is out of range; allowed: 1 to 100", weighted.weight),
                );
            }
            self.affinity_term(
                &weighted.pod_affinity_term,
                &key_path(&p, "podAffinityTerm"),
            );
        }
    }

    fn affinity_term(&mut self, term: &PodAffinityTerm, path: &str) {
        self.topology_key(&term.topology_key, &key_path(path, "topologyKey"));
        if let Some(selector) = &term.label_selector {
            self.label_selector(selector, &key_path(path, "labelSelector"), true);
        }
        // A namespace selector picks namespaces, not this application's pods: plain values.
        if let Some(selector) = &term.namespace_selector {
            self.label_selector(selector, &key_path(path, "namespaceSelector"), false);
        }
        for (i, namespace) in term.namespaces.iter().flatten().enumerate() {
            self.dns_label(
                namespace,
                &index_path(&key_path(path, "namespaces"), i),
                "a namespace name",
            );
        }
        self.label_keys(
            term.match_label_keys.as_deref(),
            term.label_selector.as_ref(),
            &key_path(path, "matchLabelKeys"),
        );
        self.label_keys(
            term.mismatch_label_keys.as_deref(),
            term.label_selector.as_ref(),
            &key_path(path, "mismatchLabelKeys"),
        );
        let matching: HashSet<&str> = term
            .match_label_keys
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        for (i, key) in term.mismatch_label_keys.iter().flatten().enumerate() {
            if matching.contains(key.as_str()) {
                self.problem(
                    index_path(&key_path(path, "mismatchLabelKeys"), i),
                    format!("{key:?} is also in matchLabelKeys; a key cannot be in both"),
                );
            }
        }
    }

    fn topology_key(&mut self, key: &str, path: &str) {
        if !self.required(
            key,
            path,
            "a node label key such as topology.kubernetes.io/zone",
        ) {
            return;
        }
        if let Err(why) = check_qualified_name(key) {
            self.problem(path, format!("{key:?} is not a valid label key: {why}"));
        }
    }

    /// `matchLabelKeys` / `mismatchLabelKeys`: label keys, once each, only beside a
    /// `labelSelector` and not among its keys (the apiserver merges them into it).
    fn label_keys(
        &mut self,
        keys: Option<&[String]>,
        selector: Option<&LabelSelector>,
        path: &str,
    ) {
        let Some(keys) = keys.filter(|k| !k.is_empty()) else {
            return;
        };
        if selector.is_none() {
            self.problem(path, "only allowed together with a labelSelector");
        }
        let in_selector: HashSet<&str> = selector
            .map(|s| {
                s.match_labels
                    .iter()
                    .flatten()
                    .map(|(k, _)| k.as_str())
                    .chain(s.match_expressions.iter().flatten().map(|e| e.key.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mut seen = HashSet::new();
        for (i, key) in keys.iter().enumerate() {
            let p = index_path(path, i);
            if let Err(why) = check_qualified_name(key) {
                self.problem(&p, format!("{key:?} is not a valid label key: {why}"));
            } else if !seen.insert(key.as_str()) {
                self.problem(&p, format!("{key:?} is listed twice"));
            } else if in_selector.contains(key.as_str()) {
                self.problem(
                    &p,
                    format!("{key:?} is also a key of the labelSelector; a key cannot be in both"),
                );
            }
        }
    }

    /// A label selector; with `templates`, its values may hold §4 templates.
    pub(super) fn label_selector(&mut self, selector: &LabelSelector, path: &str, templates: bool) {
        let labels_path = key_path(path, "matchLabels");
        for (key, value) in selector.match_labels.iter().flatten() {
            if let Err(why) = check_qualified_name(key) {
                self.problem(
                    key_path(&labels_path, key),
                    format!("{key:?} is not a valid label key: {why}"),
                );
            }
            self.selector_value(value, &key_path(&labels_path, key), templates);
        }
        for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
            let p = index_path(&key_path(path, "matchExpressions"), i);
            if let Err(why) = check_qualified_name(&requirement.key) {
                self.problem(
                    key_path(&p, "key"),
                    format!("{:?} is not a valid label key: {why}", requirement.key),
                );
            }
            let values = requirement.values.as_deref().unwrap_or_default();
            match requirement.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => self.problem(
                    key_path(&p, "values"),
                    format!("operator {} needs at least one value", requirement.operator),
                ),
                "Exists" | "DoesNotExist" if !values.is_empty() => self.problem(
                    key_path(&p, "values"),
                    format!("operator {} takes no values", requirement.operator),
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => self.problem(
                    key_path(&p, "operator"),
                    format!(
                        "{other:?} is not an operator; allowed: In, NotIn, Exists, DoesNotExist"
                    ),
                ),
            }
            for (j, value) in values.iter().enumerate() {
                self.selector_value(value, &index_path(&key_path(&p, "values"), j), templates);
            }
        }
    }

    fn selector_value(&mut self, value: &str, path: &str, templates: bool) {
        if !templates {
            if let Err(why) = check_label_value(value) {
                self.problem(path, format!("{value:?} is not a valid label value: {why}"));
            }
            return;
        }
        match Template::parse(value) {
            Err(why) => self.problem(path, why),
            Ok(template) => {
                if let Some(why) = templated_label_value_problem(&template) {
                    self.problem(path, format!("{value:?} is not a valid label value: {why}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{has, rule, rule_problems};

    #[test]
    fn topology_spread_and_pod_affinity_keep_their_templates_as_written() {
        let rule = rule(
            r#"    topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        minDomains: 2
        nodeTaintsPolicy: Honor
        labelSelector: {matchLabels: {spark-app-selector: "{app_id}", spark-role: executor}}
        matchLabelKeys: [pod-template-hash]
    podAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: topology.kubernetes.io/zone
            labelSelector:
              matchExpressions: [{key: spark-app-selector, operator: In, values: ["{app_id}"]}, {key: spark-role, operator: In, values: [driver]}]
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          namespaces: [analytics]
          labelSelector: {matchLabels: {app: "shuffle-{namespace}"}}
"#,
        );
        let spread = &rule.pod.topology_spread_constraints[0];
        assert_eq!(spread.max_skew, 1);
        assert_eq!(spread.min_domains, Some(2));
        assert_eq!(
            spread
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .map(|l| l["spark-app-selector"].as_str()),
            Some("{app_id}")
        );
        let preferred = rule
            .pod
            .pod_affinity
            .as_ref()
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("preferred terms");
        assert_eq!(preferred[0].weight, 100);
        assert_eq!(
            preferred[0]
                .pod_affinity_term
                .label_selector
                .as_ref()
                .and_then(|s| s.match_expressions.as_ref())
                .and_then(|e| e[0].values.clone()),
            Some(vec!["{app_id}".to_owned()])
        );
        let required = rule
            .pod
            .pod_anti_affinity
            .as_ref()
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required terms");
        assert_eq!(required[0].topology_key, "kubernetes.io/hostname");
    }

    #[test]
    fn a_template_with_an_unknown_variable_in_a_spread_selector_is_an_error() {
        let found = rule_problems(
            r#"    topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: ScheduleAnyway
        labelSelector:
          matchLabels: {spark-app-selector: "{app}"}
          matchExpressions: [{key: team, operator: In, values: ["{team}-x"]}]
"#,
        );
        has(
            &found,
            "rules[0].topologySpreadConstraints[0].labelSelector.matchLabels.spark-app-selector",
            "\"{app}\" uses unknown variable {app}; allowed: {namespace}, {app_name}, {app_id}, {role}, {service_account}",
        );
        has(
            &found,
            "rules[0].topologySpreadConstraints[0].labelSelector.matchExpressions[0].values[0]",
            "unknown variable {team}",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
    }

    #[test]
    fn placement_mistakes_are_reported_with_their_paths() {
        let found = rule_problems(
            r#"    topologySpreadConstraints:
      - maxSkew: 0
        topologyKey: "zone key"
        whenUnsatisfiable: Maybe
        minDomains: 0
        nodeAffinityPolicy: Always
        labelSelector:
          matchLabels: {"bad key!": "x", app: "{app_name} (prod)"}
          matchExpressions: [{key: a, operator: In}, {key: b, operator: Exists, values: [x]}, {key: c, operator: Near, values: [x]}]
        matchLabelKeys: [app]
      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway, matchLabelKeys: [x]}
      - {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway}
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - {labelSelector: {matchLabels: {a: b}}, namespaces: [Analytics]}
      preferredDuringSchedulingIgnoredDuringExecution:
        - {weight: 0, podAffinityTerm: {topologyKey: zone, namespaceSelector: {matchLabels: {team: "{namespace}"}}}}
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - {weight: 101, podAffinityTerm: {topologyKey: zone, labelSelectr: {}}}
"#,
        );
        let spread = "rules[0].topologySpreadConstraints";
        has(
            &found,
            &format!("{spread}[0].maxSkew"),
            "must be more than 0",
        );
        has(
            &found,
            &format!("{spread}[0].topologyKey"),
            "not a valid label key",
        );
        has(
            &found,
            &format!("{spread}[0].whenUnsatisfiable"),
            "allowed: DoNotSchedule, ScheduleAnyway",
        );
        has(
            &found,
            &format!("{spread}[0].minDomains"),
            "must be more than 0",
        );
        has(
            &found,
            &format!("{spread}[0].minDomains"),
            "only allowed with whenUnsatisfiable DoNotSchedule",
        );
        has(
            &found,
            &format!("{spread}[0].nodeAffinityPolicy"),
            "allowed: Honor, Ignore",
        );
        has(
            &found,
            &format!("{spread}[0].labelSelector.matchLabels.bad key!"),
            "not a valid label key",
        );
        has(
            &found,
            &format!("{spread}[0].labelSelector.matchLabels.app"),
            "besides variables, not ' '",
        );
        has(
            &found,
            &format!("{spread}[0].labelSelector.matchExpressions[0].values"),
            "needs at least one value",
        );
        has(
            &found,
            &format!("{spread}[0].labelSelector.matchExpressions[1].values"),
            "takes no values",
        );
        has(
            &found,
            &format!("{spread}[0].labelSelector.matchExpressions[2].operator"),
            "allowed: In, NotIn, Exists, DoesNotExist",
        );
        has(
            &found,
            &format!("{spread}[0].matchLabelKeys[0]"),
            "also a key of the labelSelector",
        );
        has(
            &found,
            &format!("{spread}[1].matchLabelKeys"),
            "only allowed together with a labelSelector",
        );
        has(
            &found,
            &format!("{spread}[2]"),
            "already has topologyKey \"zone\" and whenUnsatisfiable ScheduleAnyway",
        );
        let affinity = "rules[0].podAffinity";
        has(
            &found,
            &format!("{affinity}.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey"),
            "missing or empty",
        );
        has(
            &found,
            &format!("{affinity}.requiredDuringSchedulingIgnoredDuringExecution[0].namespaces[0]"),
            "not a namespace name",
        );
        has(
            &found,
            &format!("{affinity}.preferredDuringSchedulingIgnoredDuringExecution[0].weight"),
            "allowed: 1 to 100",
        );
        // Namespace selectors pick namespaces: no templates there.
        has(
            &found,
            &format!(
                "{affinity}.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.namespaceSelector.matchLabels.team"
            ),
            "not a valid label value",
        );
        let anti = "rules[0].podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]";
        has(&found, &format!("{anti}.weight"), "allowed: 1 to 100");
        has(
            &found,
            &format!("{anti}.podAffinityTerm.labelSelectr"),
            "did you mean \"labelSelector\"",
        );
        assert_eq!(found.len(), 20, "{found:#?}");
    }
}
