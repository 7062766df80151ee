//! A case's expectations, and checking an AdmissionReview answer against them.
//!
//! The answer is judged as a user would see it: admitted or refused (the message kubectl
//! prints), and the object the apiserver would store, which is the object as sent with the
//! answer's JSON Patch applied: a pod, or a driver's ConfigMap whose `spark.properties` is read
//! as the driver reads it. A failure says where in the suite, what was expected and what came
//! out.

use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::Token;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Loader, Problem, Target};
use crate::admission::Response;
use crate::admission::spark_conf::PROPERTIES_KEY;
use crate::policy::{Quantity, Role};
use crate::sparkconf::Properties;

const EXPECT_FIELDS: &[&str] = &[
    "admitted",
    "message",
    "warnings",
    "appliedRules",
    "container",
    "labels",
    "annotations",
    "nodeSelector",
    "tolerations",
    "env",
    "resources",
    "priorityClassName",
    "schedulerName",
    "spec",
    "pod",
    "patch",
    "properties",
];
const RESOURCE_FIELDS: &[&str] = &["requests", "limits"];

/// Fields only a driver ConfigMap's case has: its configuration as stored.
const CONFIG_MAP_ONLY_FIELDS: &[&str] = &["properties"];

/// Fields only a pod's case has: the answer to a driver ConfigMap names no rules and holds no
/// pod.
const POD_ONLY_FIELDS: &[&str] = &[
    "appliedRules",
    "container",
    "labels",
    "nodeSelector",
    "tolerations",
    "env",
    "resources",
    "priorityClassName",
    "schedulerName",
    "spec",
    "pod",
];

/// Fields that check a driver ConfigMap as stored, so they mean nothing for a refused one.
const CONFIG_MAP_FIELDS: &[&str] = &["properties", "annotations", "patch"];

/// Fields that check the admitted pod, so they mean nothing for a refused one.
const POD_FIELDS: &[&str] = &[
    "container",
    "labels",
    "annotations",
    "nodeSelector",
    "tolerations",
    "env",
    "resources",
    "priorityClassName",
    "schedulerName",
    "spec",
    "pod",
    "patch",
];

/// Reports unknown keys of an `expect` mapping and of its `resources`.
pub(super) fn unknown_fields(expect: &Value, path: &str, problems: &mut Vec<Problem>) {
    super::check_keys(expect, path, EXPECT_FIELDS, problems);
    if let Some(resources) = expect.get("resources") {
        super::check_keys(
            resources,
            &format!("{path}.resources"),
            RESOURCE_FIELDS,
            problems,
        );
    }
}

/// A `null` value expects the key to be absent.
type Expected = BTreeMap<String, Option<String>>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExpect {
    #[serde(default)]
    admitted: Option<bool>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    applied_rules: Option<Vec<String>>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    labels: Option<Expected>,
    #[serde(default)]
    annotations: Option<Expected>,
    #[serde(default)]
    node_selector: Option<Expected>,
    #[serde(default)]
    tolerations: Option<Vec<Value>>,
    #[serde(default)]
    env: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    resources: Option<RawResources>,
    #[serde(default)]
    priority_class_name: Option<String>,
    #[serde(default)]
    scheduler_name: Option<String>,
    #[serde(default)]
    spec: Option<Value>,
    #[serde(default)]
    pod: Option<Value>,
    #[serde(default)]
    patch: Option<Value>,
    #[serde(default)]
    properties: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
struct RawResources {
    #[serde(default)]
    requests: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    limits: Option<BTreeMap<String, Value>>,
}

/// An expected quantity: its text as written, and its value (`None`: must be absent).
type ExpectedQuantity = Option<(String, i128)>;

/// What a case expects of the answer.
#[derive(Debug)]
pub(super) struct Expect {
    admitted: bool,
    message: Option<String>,
    warnings: Vec<String>,
    applied_rules: Option<Vec<String>>,
    container: Option<String>,
    labels: Option<Expected>,
    annotations: Option<Expected>,
    node_selector: Option<Expected>,
    tolerations: Vec<Value>,
    /// Each variable without its name; `null` when it must be absent.
    env: BTreeMap<String, Value>,
    requests: BTreeMap<String, ExpectedQuantity>,
    limits: BTreeMap<String, ExpectedQuantity>,
    priority_class_name: Option<String>,
    scheduler_name: Option<String>,
    /// Part of the pod's spec (see [`includes`]).
    spec: Option<Value>,
    pod: Option<Value>,
    patch: Option<Value>,
    /// Settings of a driver ConfigMap's `spark.properties`, by key (`None`: unset).
    properties: Option<Expected>,
}

impl Expect {
    /// Reads an `expect` mapping for a case whose input is reviewed as `target` (`None` when
    /// the input could not be read); problems go to the loader.
    pub(super) fn load(
        value: &Value,
        path: &str,
        target: Option<Target>,
        loader: &mut Loader<'_>,
    ) -> Option<Self> {
        let raw: RawExpect = match serde_path_to_error::deserialize(value) {
            Ok(raw) => raw,
            Err(error) => {
                let inner = error.path().to_string();
                let at = if inner == "." {
                    path.to_owned()
                } else {
                    format!("{path}.{}", inner.trim_start_matches('.'))
                };
                loader.problem(at, error.inner().to_string());
                return None;
            }
        };
        let before = loader.problems.len();
        let admitted = raw.admitted.unwrap_or(true);
        if admitted && raw.message.is_some() {
            loader.problem(
                format!("{path}.message"),
                "a refusal message needs admitted: false (admitted is true by default)",
            );
        }
        let given = |fields: &'static [&'static str]| {
            let object = value.as_object();
            fields
                .iter()
                .filter(move |f| object.is_some_and(|o| o.contains_key(**f)))
        };
        match target {
            Some(Target::Pod) => {
                for field in given(CONFIG_MAP_ONLY_FIELDS) {
                    loader.problem(
                        format!("{path}.{field}"),
                        "is for a driver ConfigMap's spark.properties, and this case's input is a pod; give the ConfigMap (or its AdmissionReview) as input, or remove it",
                    );
                }
                if !admitted {
                    for field in given(POD_FIELDS) {
                        loader.problem(
                            format!("{path}.{field}"),
                            "a refused pod is not stored, so there is no pod to check; remove it or expect admitted: true",
                        );
                    }
                }
            }
            Some(Target::ConfigMap) => {
                for field in given(POD_ONLY_FIELDS) {
                    loader.problem(
                        format!("{path}.{field}"),
                        "is for pods, and this case's input is a driver ConfigMap; check it with admitted, message, warnings, properties, annotations or patch",
                    );
                }
                if !admitted {
                    for field in given(CONFIG_MAP_FIELDS) {
                        loader.problem(
                            format!("{path}.{field}"),
                            "a refused submission's ConfigMap is not stored, so there is nothing of it to check; remove it or expect admitted: true",
                        );
                    }
                }
            }
            None => {}
        }
        let mut env = BTreeMap::new();
        for (name, expected) in raw.env.unwrap_or_default() {
            let normalised = match expected {
                Value::Null => Value::Null,
                Value::String(text) => json!({ "value": text }),
                Value::Object(mut object) => {
                    object.remove("name");
                    Value::Object(object)
                }
                other => {
                    loader.problem(
                        format!("{path}.env.{name}"),
                        format!("{other} is not an expected variable; allowed: a value (string), an EnvVar without its name (e.g. {{valueFrom: ...}}), or null for absent"),
                    );
                    continue;
                }
            };
            env.insert(name, normalised);
        }
        let (requests, limits) = match raw.resources {
            None => (BTreeMap::new(), BTreeMap::new()),
            Some(resources) => (
                quantities(
                    resources.requests,
                    &format!("{path}.resources.requests"),
                    loader,
                ),
                quantities(
                    resources.limits,
                    &format!("{path}.resources.limits"),
                    loader,
                ),
            ),
        };
        // A value as the policy's sparkConf takes one: a string, or a number or boolean as
        // written (`5`, `true`).
        let properties = raw.properties.map(|expected| {
            let mut properties = Expected::new();
            for (key, value) in expected {
                let text = match value {
                    Value::Null => None,
                    Value::String(text) => Some(text),
                    Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
                    other => {
                        loader.problem(
                            format!("{path}.properties.{key}"),
                            format!("{other} is not an expected setting; allowed: a value (a string, number or boolean), or null for unset"),
                        );
                        continue;
                    }
                };
                properties.insert(key, text);
            }
            properties
        });
        let pod = raw
            .pod
            .as_ref()
            .and_then(|v| loader.document(v, &format!("{path}.pod")))
            .map(|(document, _)| document);
        let patch = raw
            .patch
            .as_ref()
            .and_then(|v| loader.document(v, &format!("{path}.patch")))
            .map(|(document, _)| document);
        if let Some(patch) = &patch
            && let Err(error) = serde_json::from_value::<json_patch::Patch>(patch.clone())
        {
            loader.problem(
                format!("{path}.patch"),
                format!("is not a JSON Patch (a list of operations): {error}"),
            );
        }
        if loader.problems.len() > before {
            return None;
        }
        Some(Self {
            admitted,
            message: raw.message,
            warnings: raw.warnings,
            applied_rules: raw.applied_rules,
            container: raw.container,
            labels: raw.labels,
            annotations: raw.annotations,
            node_selector: raw.node_selector,
            tolerations: raw.tolerations.unwrap_or_default(),
            env,
            requests,
            limits,
            priority_class_name: raw.priority_class_name,
            scheduler_name: raw.scheduler_name,
            spec: raw.spec,
            pod,
            patch,
            properties,
        })
    }
}

fn quantities(
    values: Option<BTreeMap<String, Value>>,
    path: &str,
    loader: &mut Loader<'_>,
) -> BTreeMap<String, ExpectedQuantity> {
    let mut parsed = BTreeMap::new();
    for (resource, value) in values.unwrap_or_default() {
        let text = match &value {
            Value::Null => {
                parsed.insert(resource, None);
                continue;
            }
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            other => other.to_string(),
        };
        match Quantity::nanos_of(&text) {
            Some(nanos) => {
                parsed.insert(resource, Some((text, nanos)));
            }
            None => loader.problem(
                format!("{path}.{resource}"),
                format!(
                    "{text:?} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi), nor null for absent"
                ),
            ),
        }
    }
    parsed
}

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where in the case, such as `expect.labels.team`.
    pub path: String,
    /// What the suite expected, as text.
    pub expected: String,
    /// What came out, as text.
    pub actual: String,
}

impl Failure {
    pub(super) fn new(
        path: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    fn of_values(path: impl Into<String>, expected: &Value, actual: &Value) -> Self {
        Self::new(path, show(expected), show(actual))
    }
}

impl fmt::Display for Failure {
    /// The path, then a unified diff from what was expected to what came out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected = with_newline(&self.expected);
        let actual = with_newline(&self.actual);
        writeln!(f, "{}:", self.path)?;
        let diff = similar::TextDiff::from_lines(&expected, &actual);
        let unified = diff
            .unified_diff()
            .context_radius(3)
            .header("expected", "actual")
            .to_string();
        for line in unified.lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// A value as a reader wants it: a string as itself, absence said in words, the rest as YAML.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "(absent)".to_owned(),
        Value::String(text) => text.clone(),
        other => serde_saphyr::to_string(other).unwrap_or_else(|_| other.to_string()),
    }
}

fn show_option(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |v| Value::String(v.to_owned()))
}

/// Every expectation of `expect` that the answer does not meet.
pub(super) fn check(
    expect: &Expect,
    response: &Response,
    applied_rules: &[String],
    object: &Value,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    let refusal = response
        .status
        .as_ref()
        .map(|s| s.message.as_str())
        .unwrap_or_default();
    match (expect.admitted, response.allowed) {
        (true, false) => {
            failures.push(Failure::new(
                "expect.admitted",
                "admitted",
                format!("refused: {refusal}"),
            ));
            return failures;
        }
        (false, true) => {
            let expected = match &expect.message {
                Some(message) => format!("refused with a message containing: {message}"),
                None => "refused".to_owned(),
            };
            failures.push(Failure::new("expect.admitted", expected, "admitted"));
            return failures;
        }
        _ => {}
    }
    if let Some(message) = &expect.message
        && !refusal.contains(message.as_str())
    {
        failures.push(Failure::new(
            "expect.message",
            format!("a message containing: {message}"),
            refusal,
        ));
    }
    for (index, warning) in expect.warnings.iter().enumerate() {
        if !response
            .warnings
            .iter()
            .any(|w| w.contains(warning.as_str()))
        {
            failures.push(Failure::new(
                format!("expect.warnings[{index}]"),
                format!("a warning containing: {warning}"),
                if response.warnings.is_empty() {
                    "(no warnings)".to_owned()
                } else {
                    response.warnings.join("\n")
                },
            ));
        }
    }
    if let Some(rules) = &expect.applied_rules
        && rules != applied_rules
    {
        failures.push(Failure::new(
            "expect.appliedRules",
            rules.join("\n"),
            applied_rules.join("\n"),
        ));
    }
    if !expect.admitted {
        return failures;
    }

    let patch = match &response.patch {
        None => json_patch::Patch(Vec::new()),
        Some(_) => match response.decoded_patch() {
            Some(patch) => patch,
            None => {
                failures.push(Failure::new(
                    "answer.patch",
                    "a base64 JSON Patch",
                    response.patch.clone().unwrap_or_default(),
                ));
                return failures;
            }
        },
    };
    // What the apiserver stores: the pod as it sent it, patched.
    let mut pod = object.clone();
    if let Err(error) = json_patch::patch(&mut pod, &patch) {
        failures.push(Failure::new(
            "answer.patch",
            "a patch that applies to the pod as sent",
            error.to_string(),
        ));
        return failures;
    }
    if let Some(expected) = &expect.patch {
        let actual = serde_json::to_value(&patch).unwrap_or(Value::Null);
        if &actual != expected {
            failures.push(Failure::of_values("expect.patch", expected, &actual));
        }
    }
    if let Some(expected) = &expect.pod
        && &pod != expected
    {
        failures.push(Failure::of_values("expect.pod", expected, &pod));
    }
    for (field, expected, pointer) in [
        ("labels", &expect.labels, "/metadata/labels"),
        ("annotations", &expect.annotations, "/metadata/annotations"),
        ("nodeSelector", &expect.node_selector, "/spec/nodeSelector"),
    ] {
        for (key, value) in expected.iter().flatten() {
            let actual = pod
                .pointer(pointer)
                .and_then(|m| m.get(key))
                .and_then(Value::as_str);
            if actual != value.as_deref() {
                failures.push(Failure::of_values(
                    format!("expect.{field}.{key}"),
                    &show_option(value.as_deref()),
                    &show_option(actual),
                ));
            }
        }
    }
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (index, expected) in expect.tolerations.iter().enumerate() {
        if !tolerations.contains(expected) {
            // Expected: the pod's tolerations and this one, so the diff shows just the missing.
            let mut wanted = tolerations.clone();
            wanted.push(expected.clone());
            failures.push(Failure::of_values(
                format!("expect.tolerations[{index}]"),
                &Value::Array(wanted),
                &Value::Array(tolerations.clone()),
            ));
        }
    }
    for (field, expected, pointer) in [
        (
            "priorityClassName",
            &expect.priority_class_name,
            "/spec/priorityClassName",
        ),
        (
            "schedulerName",
            &expect.scheduler_name,
            "/spec/schedulerName",
        ),
    ] {
        if let Some(expected) = expected {
            let actual = pod.pointer(pointer).and_then(Value::as_str);
            if actual != Some(expected.as_str()) {
                failures.push(Failure::of_values(
                    format!("expect.{field}"),
                    &json!(expected),
                    &show_option(actual),
                ));
            }
        }
    }
    if let Some(expected) = &expect.spec {
        let actual = pod.get("spec").unwrap_or(&Value::Null);
        if let Some((path, expected, actual)) = includes(expected, actual, "expect.spec".into()) {
            failures.push(Failure::of_values(path, expected, actual));
        }
    }
    if !expect.env.is_empty() || !expect.requests.is_empty() || !expect.limits.is_empty() {
        check_container(expect, &pod, &mut failures);
    }
    if let Some(expected) = &expect.properties {
        check_properties(expected, &pod, &mut failures);
    }
    failures
}

/// The settings of the stored ConfigMap's `spark.properties`, read as the driver reads them
/// (Java properties: escapes, separators, continuation lines).
fn check_properties(expected: &Expected, config_map: &Value, failures: &mut Vec<Failure>) {
    let text = config_map
        .get("data")
        .and_then(|data| data.get(PROPERTIES_KEY))
        .and_then(Value::as_str);
    let Some(text) = text else {
        failures.push(Failure::new(
            "expect.properties",
            format!("a ConfigMap with data.{PROPERTIES_KEY}"),
            format!("no data.{PROPERTIES_KEY}"),
        ));
        return;
    };
    let properties = match Properties::parse(text) {
        Ok(properties) => properties,
        Err(error) => {
            failures.push(Failure::new(
                "expect.properties",
                format!("{PROPERTIES_KEY} as Java properties"),
                error.to_string(),
            ));
            return;
        }
    };
    for (key, value) in expected {
        let actual = properties.get(key);
        if actual != value.as_deref() {
            failures.push(Failure::of_values(
                format!("expect.properties.{key}"),
                &show_option(value.as_deref()),
                &show_option(actual),
            ));
        }
    }
}

/// Whether `actual` holds what `expected` shows, for `expect.spec`: a mapping holds every key
/// shown (a `null` value: the key is absent), a list holds each shown element in the order
/// shown (each matched by a distinct element, others may come between), and anything else is
/// equal. `None` when it does; else the first place it does not, with what was expected and
/// what is there (the whole list when an element is missing).
fn includes<'v>(
    expected: &'v Value,
    actual: &'v Value,
    path: String,
) -> Option<(String, &'v Value, &'v Value)> {
    match (expected, actual) {
        (Value::Object(shown), Value::Object(present)) => shown.iter().find_map(|(key, value)| {
            let at = format!("{path}.{key}");
            match (value, present.get(key)) {
                (Value::Null, None | Some(Value::Null)) => None,
                (value, None) => Some((at, value, &Value::Null)),
                (value, Some(there)) => includes(value, there, at),
            }
        }),
        (Value::Array(shown), Value::Array(present)) => {
            // Greedy in order: taking the earliest element that matches never rules out a
            // match for the elements shown after it.
            let mut rest = present.iter();
            for (index, element) in shown.iter().enumerate() {
                if !rest.any(|there| includes(element, there, String::new()).is_none()) {
                    return Some((format!("{path}[{index}]"), expected, actual));
                }
            }
            None
        }
        (Value::Null, Value::Null) => None,
        (expected, actual) if expected == actual => None,
        (expected, actual) => Some((path, expected, actual)),
    }
}

/// Env and resources of the container the case names, else of the Spark container.
fn check_container(expect: &Expect, pod: &Value, failures: &mut Vec<Failure>) {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let index = match &expect.container {
        Some(name) => containers
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(name)),
        None => spark_container(pod),
    };
    let Some(container) = index.and_then(|i| containers.get(i)) else {
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect();
        failures.push(Failure::new(
            "expect.container",
            expect.container.clone().unwrap_or_else(|| {
                "the Spark container (the pod has a spark-role label)".to_owned()
            }),
            format!("containers: {}", names.join(", ")),
        ));
        return;
    };
    let env = container
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (name, expected) in &expect.env {
        let actual = env
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .map_or(Value::Null, |v| {
                let mut v = v.clone();
                if let Some(object) = v.as_object_mut() {
                    object.remove("name");
                }
                v
            });
        if &actual != expected {
            failures.push(Failure::of_values(
                format!("expect.env.{name}"),
                expected,
                &actual,
            ));
        }
    }
    for (kind, expected) in [("requests", &expect.requests), ("limits", &expect.limits)] {
        for (resource, quantity) in expected {
            let actual = container
                .pointer(&format!(
                    "/resources/{kind}/{}",
                    Token::new(resource.as_str()).encoded()
                ))
                .and_then(Value::as_str);
            let same = match (quantity, actual) {
                (None, None) => true,
                (Some((_, nanos)), Some(actual)) => Quantity::nanos_of(actual) == Some(*nanos),
                _ => false,
            };
            if !same {
                failures.push(Failure::of_values(
                    format!("expect.resources.{kind}.{resource}"),
                    &show_option(quantity.as_ref().map(|(text, _)| text.as_str())),
                    &show_option(actual),
                ));
            }
        }
    }
}

/// The Spark container's index, found as the engine finds it.
fn spark_container(pod: &Value) -> Option<usize> {
    let role = pod
        .pointer("/metadata/labels/spark-role")
        .and_then(Value::as_str)
        .and_then(Role::from_label)?;
    let typed: Pod = serde_json::from_value(pod.clone()).ok()?;
    crate::engine::spark_container_index(&typed, role)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn failure(expected: Value, actual: Value) -> Option<String> {
        includes(&expected, &actual, "expect.spec".into()).map(|(path, _, _)| path)
    }

    fn properties_failures(expected: &[(&str, Option<&str>)], config_map: Value) -> Vec<String> {
        let expected: Expected = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect();
        let mut failures = Vec::new();
        check_properties(&expected, &config_map, &mut failures);
        failures.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn properties_are_compared_as_the_driver_reads_them() {
        // Java properties: `\:` is `:`, `key value` and `key:value` separate too, a trailing
        // backslash continues the line.
        let config_map = json!({"data": {"spark.properties":
            "#comment\nspark.master=k8s\\://https\\://api\\:6443\nspark.app.name nightly\nspark.jars:a.jar,\\\n    b.jar\n"}});
        assert_eq!(
            properties_failures(
                &[
                    ("spark.master", Some("k8s://https://api:6443")),
                    ("spark.app.name", Some("nightly")),
                    ("spark.jars", Some("a.jar,b.jar")),
                    ("spark.eventLog.enabled", None),
                ],
                config_map.clone()
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            properties_failures(
                &[
                    ("spark.app.name", None),
                    ("spark.eventLog.enabled", Some("true"))
                ],
                config_map
            ),
            [
                "expect.properties.spark.app.name:\n  --- expected\n  +++ actual\n  @@ -1 +1 @@\n  -(absent)\n  +nightly\n",
                "expect.properties.spark.eventLog.enabled:\n  --- expected\n  +++ actual\n  @@ -1 +1 @@\n  -true\n  +(absent)\n",
            ]
        );
        assert_eq!(
            properties_failures(&[("spark.a", None)], json!({"data": {}})),
            [
                "expect.properties:\n  --- expected\n  +++ actual\n  @@ -1 +1 @@\n  -a ConfigMap with data.spark.properties\n  +no data.spark.properties\n"
            ]
        );
    }

    #[test]
    fn a_spec_expectation_holds_when_every_shown_key_and_element_is_there_in_order() {
        let spec = json!({
            "volumes": [
                {"name": "conf", "configMap": {"name": "spark-conf"}},
                {"name": "hadoop-conf", "configMap": {"name": "hadoop-conf"}},
                {"name": "logs", "emptyDir": {}},
            ],
            "containers": [{"name": "spark", "image": "spark:4"}, {"name": "fluent-bit"}],
            "securityContext": {"runAsUser": 185, "fsGroup": 185},
        });
        assert_eq!(failure(json!({}), spec.clone()), None);
        assert_eq!(
            failure(
                json!({"volumes": [{"name": "hadoop-conf"}, {"name": "logs", "emptyDir": {}}],
                       "securityContext": {"fsGroup": 185}, "runtimeClassName": null}),
                spec.clone()
            ),
            None
        );
        // Out of order, missing, a different value, a key that must be absent.
        assert_eq!(
            failure(
                json!({"containers": [{"name": "fluent-bit"}, {"name": "spark"}]}),
                spec.clone()
            )
            .as_deref(),
            Some("expect.spec.containers[1]")
        );
        assert_eq!(
            failure(json!({"volumes": [{"name": "gone"}]}), spec.clone()).as_deref(),
            Some("expect.spec.volumes[0]")
        );
        assert_eq!(
            failure(json!({"securityContext": {"runAsUser": 0}}), spec.clone()).as_deref(),
            Some("expect.spec.securityContext.runAsUser")
        );
        assert_eq!(
            failure(json!({"securityContext": null}), spec.clone()).as_deref(),
            Some("expect.spec.securityContext")
        );
        assert_eq!(
            failure(json!({"initContainers": [{"name": "x"}]}), spec).as_deref(),
            Some("expect.spec.initContainers")
        );
        // Each shown element needs an element of its own.
        assert_eq!(
            failure(
                json!({"list": [{"name": "a"}, {"name": "a"}]}),
                json!({"list": [{"name": "a"}]})
            )
            .as_deref(),
            Some("expect.spec.list[1]")
        );
    }
}
