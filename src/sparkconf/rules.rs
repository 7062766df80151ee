//! The policy's `sparkConf` rules applied to a cluster-mode application's configuration
//! (SPEC §5b): settings written under each rule's mode, then every cap compared.
//!
//! A rule matches the application as its driver pod would, and everything it matches on is
//! read from the configuration itself: the driver's labels (`spark.kubernetes.driver.label.*`
//! and Spark's own), its service account, the application's name as Spark writes it into the
//! `spark-app-name` label. Only the namespace comes from the request: the ConfigMap's namespace
//! is where the application runs, whatever its text claims. Pure: no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::engine::{APP_ID_LABEL, ROLE_LABEL, SparkPod, matches};
use crate::policy::{Mode, Policy, SparkMax, Unset};

use super::lower::dynamic_allocation;
use super::{Properties, Result};

/// `spark.app.id`.
pub const APP_ID: &str = "spark.app.id";
/// `spark.app.name`.
pub const APP_NAME: &str = "spark.app.name";
const DRIVER_LABEL_PREFIX: &str = "spark.kubernetes.driver.label.";
const DRIVER_SERVICE_ACCOUNT: &str = "spark.kubernetes.authenticate.driver.serviceAccountName";

/// The longest label value: Spark cuts the application name to it.
const MAX_LABEL_VALUE: usize = 63;

/// The `spark-app-name` label Spark gives the pods of an application named `name`
/// (`KubernetesConf.getAppNameLabel`): trimmed, lower case, every character but `a-z`, `0-9`
/// and `-` made a `-`, runs of `-` made one, cut to 63 characters, one leading and one
/// trailing `-` dropped.
pub fn app_name_label(name: &str) -> String {
    let mut label = String::with_capacity(name.len());
    for c in name.trim().to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && label.ends_with('-')) {
            label.push(c);
        }
    }
    // Only ASCII is left, so bytes are characters.
    label.truncate(MAX_LABEL_VALUE);
    let label = label.strip_prefix('-').unwrap_or(&label);
    label.strip_suffix('-').unwrap_or(label).to_owned()
}

/// The driver pod as the policy sees it, read from its configuration; `None` without
/// `spark.app.id`.
pub fn driver_of(properties: &Properties, namespace: &str) -> Option<SparkPod> {
    let app_id = properties.get(APP_ID).filter(|id| !id.is_empty())?;
    let mut labels: BTreeMap<String, String> = properties
        .iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(DRIVER_LABEL_PREFIX)
                .map(|label| (label.to_owned(), value.into_owned()))
        })
        .collect();
    labels.insert(ROLE_LABEL.to_owned(), "driver".to_owned());
    labels.insert(APP_ID_LABEL.to_owned(), app_id.to_owned());
    if let Some(name) = properties.get(APP_NAME) {
        labels.insert("spark-app-name".to_owned(), app_name_label(name));
    }
    let pod = Pod {
        metadata: ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: properties.get(DRIVER_SERVICE_ACCOUNT).map(str::to_owned),
            ..PodSpec::default()
        }),
        status: None,
    };
    SparkPod::from_pod(&pod, namespace)
}

/// One setting a rule wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The setting.
    pub key: String,
    /// Its value before; `None` when unset.
    pub from: Option<String>,
    /// Its value now.
    pub to: String,
    /// The rule that wrote it.
    pub rule: String,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{}={} (was {from})", self.key, self.to),
            None => write!(f, "{}={} (was unset)", self.key, self.to),
        }
    }
}

/// One cap the configuration is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Over {
    /// The setting.
    pub key: &'static str,
    /// Its value as written, or Spark's default (with " (Spark's default)") when unset.
    pub value: String,
    /// The cap as written in the policy.
    pub max: String,
    /// The rule with the cap.
    pub rule: String,
    /// Why the value could not be compared, when Spark cannot read it.
    pub unreadable: Option<String>,
}

impl std::fmt::Display for Over {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.unreadable {
            Some(allowed) => write!(
                f,
                "{}={} cannot be read as Spark reads it (it must be {allowed}), and rule {} caps it at {}",
                self.key, self.value, self.rule, self.max
            ),
            None => write!(
                f,
                "{}={} is above the max {} of rule {}",
                self.key, self.value, self.max, self.rule
            ),
        }
    }
}

/// What the `sparkConf` rules did to one configuration.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The rules with `sparkConf` that matched, in policy order.
    pub rules: Vec<String>,
    /// What they wrote, in order.
    pub written: Vec<Written>,
    /// The caps the final configuration is over; not empty: the submission is refused.
    pub over: Vec<Over>,
    /// What the user is told besides: values kept under `merge`, templates without a value.
    pub warnings: Vec<String>,
}

/// Applies every matching rule's `sparkConf` to `properties`, in policy order: `set` under
/// the rule's mode (`merge` writes only what the application left unset, `enforce` replaces),
/// then every matching rule's `max` compared with the configuration as it now is. Fails,
/// changing nothing more, only when the text would reach 4 GiB.
pub fn apply(properties: &mut Properties, driver: &SparkPod, policy: &Policy) -> Result<Applied> {
    let mut applied = Applied::default();
    let matching: Vec<_> = policy
        .rules
        .iter()
        .filter_map(|rule| Some((rule, rule.spark_conf.as_ref()?)))
        .filter(|(rule, _)| matches(&rule.selector, driver))
        .collect();
    for (rule, spark_conf) in &matching {
        applied.rules.push(rule.name.clone());
        for (key, template) in &spark_conf.set {
            let Ok(value) = template.expand(|v| driver.variable(v)) else {
                applied.warnings.push(format!(
                    "spark-admission did not set {key}: the application has no value for a variable of {:?} (rule {})",
                    template.as_str(),
                    rule.name
                ));
                continue;
            };
            let current = properties.get(key).map(str::to_owned);
            match (&current, rule.mode) {
                (Some(current), _) if *current == value => {}
                (Some(current), Mode::Merge) => applied.warnings.push(format!(
                    "spark-admission kept {key}={current} as the application set it; rule {} would set {value}",
                    rule.name
                )),
                _ => {
                    properties.set(key, &value)?;
                    applied.written.push(Written {
                        key: key.clone(),
                        from: current,
                        to: value,
                        rule: rule.name.clone(),
                    });
                }
            }
        }
    }
    let dynamic = dynamic_allocation(properties);
    for (rule, spark_conf) in &matching {
        for cap in &spark_conf.max {
            if let Some(over) = over_cap(properties, cap, dynamic, &rule.name) {
                applied.over.push(over);
            }
        }
    }
    Ok(applied)
}

fn over_cap(properties: &Properties, cap: &SparkMax, dynamic: bool, rule: &str) -> Option<Over> {
    let setting = cap.setting;
    let over = |value: String, unreadable: Option<String>| Over {
        key: setting.key,
        value,
        max: cap.text.clone(),
        rule: rule.to_owned(),
        unreadable,
    };
    let (text, shown) = match (properties.get(setting.key), setting.unset) {
        (Some(text), _) => (text, text.to_owned()),
        (None, Unset::Default(default)) => (default, format!("{default} (Spark's default)")),
        (None, Unset::DefaultWithoutDynamicAllocation(default)) if !dynamic => {
            (default, format!("{default} (Spark's default)"))
        }
        (None, Unset::UnboundedWithDynamicAllocation) if dynamic => {
            return Some(over(
                "unset (unbounded with dynamic allocation)".to_owned(),
                None,
            ));
        }
        (None, _) => return None,
    };
    match setting.reading.read(text) {
        Ok(value) if value > cap.limit => Some(over(shown, None)),
        Ok(_) => None,
        Err(allowed) => Some(over(shown, Some(allowed))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn conf(text: &str) -> Properties {
        Properties::parse(text).unwrap()
    }

    fn run(policy: &str, text: &str) -> (Applied, String) {
        let policy = Policy::parse(policy).unwrap();
        let mut properties = conf(text);
        let driver = driver_of(&properties, "etl-nightly").expect("a driver");
        let applied = apply(&mut properties, &driver, &policy).unwrap();
        (applied, properties.text().to_owned())
    }

    const SUBMITTED: &str = "#Spark configuration\nspark.app.id=spark-0123\nspark.app.name=Nightly ETL_v2\nspark.kubernetes.driver.label.team=analytics\nspark.kubernetes.authenticate.driver.serviceAccountName=spark\nspark.executor.memory=4g\n";

    #[test]
    fn spark_names_the_app_label_as_it_writes_it() {
        // KubernetesConf.getAppNameLabel, by hand.
        assert_eq!(app_name_label("Nightly ETL_v2"), "nightly-etl-v2");
        assert_eq!(app_name_label("  --a..b--  "), "a-b");
        assert_eq!(app_name_label("pi"), "pi");
        assert_eq!(app_name_label("Straße"), "stra-e");
        let long = "x".repeat(70);
        assert_eq!(app_name_label(&long), "x".repeat(63));
        assert_eq!(
            app_name_label(&format!("{}-y", "x".repeat(62))),
            "x".repeat(62)
        );
    }

    #[test]
    fn the_driver_is_read_from_the_configuration() {
        let driver = driver_of(&conf(SUBMITTED), "etl-nightly").unwrap();
        assert_eq!(driver.app_name.as_deref(), Some("nightly-etl-v2"));
        assert_eq!(driver.app_id.as_deref(), Some("spark-0123"));
        assert_eq!(driver.service_account, "spark");
        assert_eq!(driver.labels["team"], "analytics");
        assert_eq!(driver.namespace, "etl-nightly");
        assert!(driver_of(&conf("spark.app.name=x\n"), "n").is_none());
    }

    #[test]
    fn merge_sets_only_what_the_application_left_unset_and_says_what_it_kept() {
        let (applied, text) = run(
            r#"
rules:
  - name: observability
    match: {namespaces: ["etl-*"], appNames: [nightly-etl-v2], podLabels: {team: analytics}, serviceAccounts: [spark]}
    sparkConf:
      set:
        spark.ui.prometheus.enabled: true
        spark.eventLog.dir: "s3a://spark-logs/{namespace}/{app_name}/"
        spark.executor.memory: 2g
"#,
            SUBMITTED,
        );
        assert_eq!(
            text,
            format!(
                "{SUBMITTED}spark.eventLog.dir=s3a\\://spark-logs/etl-nightly/nightly-etl-v2/\nspark.ui.prometheus.enabled=true\n"
            )
        );
        let written: Vec<String> = applied.written.iter().map(ToString::to_string).collect();
        assert_eq!(
            written,
            [
                "spark.eventLog.dir=s3a://spark-logs/etl-nightly/nightly-etl-v2/ (was unset)",
                "spark.ui.prometheus.enabled=true (was unset)"
            ]
        );
        assert_eq!(
            applied.warnings,
            [
                "spark-admission kept spark.executor.memory=4g as the application set it; rule observability would set 2g"
            ]
        );
        assert_eq!(applied.rules, ["observability"]);
    }

    #[test]
    fn enforce_replaces_and_a_later_rule_sees_what_an_earlier_one_wrote() {
        let (applied, text) = run(
            r#"
rules:
  - name: first
    mode: enforce
    sparkConf: {set: {spark.executor.memory: 2g, spark.decommission.enabled: "true"}}
  - name: second
    sparkConf: {set: {spark.decommission.enabled: "false"}}
"#,
            SUBMITTED,
        );
        assert!(text.contains("\nspark.executor.memory=2g\n"), "{text}");
        assert!(
            text.ends_with("\nspark.decommission.enabled=true\n"),
            "{text}"
        );
        assert_eq!(applied.written.len(), 2);
        let memory = applied
            .written
            .iter()
            .find(|w| w.key == "spark.executor.memory")
            .unwrap();
        assert_eq!(memory.from.as_deref(), Some("4g"));
        assert!(applied.warnings[0].contains("kept spark.decommission.enabled=true"));
    }

    #[test]
    fn rules_that_do_not_match_the_application_change_nothing() {
        for selector in [
            "{namespaces: [prod]}",
            "{appNames: [other]}",
            "{podLabels: {team: finance}}",
            "{serviceAccounts: [default]}",
        ] {
            let (applied, text) = run(
                &format!(
                    "rules: [{{name: r, match: {selector}, sparkConf: {{set: {{spark.a: b}}, max: {{spark.executor.memory: 1g}}}}}}]"
                ),
                SUBMITTED,
            );
            assert_eq!(text, SUBMITTED, "{selector}");
            assert!(
                applied.rules.is_empty() && applied.over.is_empty(),
                "{selector}"
            );
        }
    }

    #[test]
    fn caps_compare_as_spark_reads_each_setting_and_unset_ones_at_sparks_default() {
        let caps = "rules: [{name: caps, sparkConf: {max: {spark.executor.memory: 4g, spark.driver.memory: 512m, spark.executor.cores: 4, spark.executor.instances: 3}}}]";
        // 4g = 4096 (no unit: MiB) is within; the driver's unset 1g is over 512m; the unset 2
        // instances are within 3.
        let (applied, _) = run(caps, "spark.app.id=a\nspark.executor.memory=4096\n");
        let over: Vec<String> = applied.over.iter().map(ToString::to_string).collect();
        assert_eq!(
            over,
            ["spark.driver.memory=1g (Spark's default) is above the max 512m of rule caps"]
        );
        let (applied, _) = run(
            caps,
            "spark.app.id=a\nspark.driver.memory=512m\nspark.executor.memory=4097m\nspark.executor.cores=8\nspark.executor.instances=4\n",
        );
        let keys: Vec<&str> = applied.over.iter().map(|o| o.key).collect();
        // In key order, as the policy's mapping is read.
        assert_eq!(
            keys,
            [
                "spark.executor.cores",
                "spark.executor.instances",
                "spark.executor.memory"
            ]
        );
        // 1t is 2^20 MiB.
        let (applied, _) = run(
            "rules: [{name: big, sparkConf: {max: {spark.executor.memory: 1t}}}]",
            "spark.app.id=a\nspark.executor.memory=1048577m\n",
        );
        assert_eq!(applied.over.len(), 1);
        let (applied, _) = run(
            "rules: [{name: big, sparkConf: {max: {spark.executor.memory: 1t}}}]",
            "spark.app.id=a\nspark.executor.memory=1024G\n",
        );
        assert!(applied.over.is_empty());
    }

    #[test]
    fn a_value_spark_cannot_read_is_over_its_cap_and_dynamic_allocation_is_unbounded() {
        let (applied, _) = run(
            "rules: [{name: caps, sparkConf: {max: {spark.executor.memory: 4g, spark.dynamicAllocation.maxExecutors: 10}}}]",
            "spark.app.id=a\nspark.executor.memory=lots\nspark.dynamicAllocation.enabled=true\n",
        );
        let over: Vec<String> = applied.over.iter().map(ToString::to_string).collect();
        assert_eq!(over.len(), 2);
        assert!(over[1].starts_with("spark.executor.memory=lots cannot be read as Spark reads it (it must be a whole number of MiB"), "{}", over[1]);
        assert_eq!(
            over[0],
            "spark.dynamicAllocation.maxExecutors=unset (unbounded with dynamic allocation) is above the max 10 of rule caps"
        );
        // Without dynamic allocation maxExecutors is not used: not compared.
        let (applied, _) = run(
            "rules: [{name: caps, sparkConf: {max: {spark.dynamicAllocation.maxExecutors: 10}}}]",
            "spark.app.id=a\n",
        );
        assert!(applied.over.is_empty());
    }

    #[test]
    fn caps_apply_to_what_the_rules_set() {
        let (applied, _) = run(
            "rules: [{name: big, mode: enforce, sparkConf: {set: {spark.executor.cores: '16'}}}, {name: caps, sparkConf: {max: {spark.executor.cores: 8}}}]",
            "spark.app.id=a\nspark.executor.cores=2\n",
        );
        assert_eq!(applied.over.len(), 1);
        assert_eq!(applied.over[0].value, "16");
    }

    #[test]
    fn a_template_without_a_value_is_not_set_and_says_so() {
        let (applied, text) = run(
            "rules: [{name: logs, sparkConf: {set: {spark.eventLog.dir: 's3a://logs/{app_name}/'}}}]",
            "spark.app.id=a\n",
        );
        assert_eq!(text, "spark.app.id=a\n");
        assert!(
            applied.warnings[0].contains("did not set spark.eventLog.dir"),
            "{:?}",
            applied.warnings
        );
    }
}
