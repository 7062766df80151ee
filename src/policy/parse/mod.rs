//! From text to a validated [`Policy`], collecting every problem with its path.
//!
//! Each rule field is read on its own, so a mistake in one field never hides a mistake in
//! another. Objects capture unknown keys instead of failing on the first one, so every typo is
//! reported, with the closest allowed name as a hint.
//!
//! This module holds the entry point, the `Checker` that collects problems, the readers every
//! concern shares (objects, lists, strings, quantities, label keys, paths) and the checks that
//! span rules. Each concern's fields are read in the file named like the engine file that
//! applies them: `matching`, `metadata`, `scheduling`, `env`, `resources`; quotas in `quotas`.
//! The SPEC §4a fields (Kubernetes objects for the pod) are dispatched from `pod`, read in
//! `volumes`, `containers`, `security` and `placement`, with the apiserver's generic checks
//! (unknown keys read from the Kubernetes types, names, paths) in `apiserver`.
//! Parsing never looks at a pod or the cluster, and never stops at the first problem.

mod apiserver;
mod containers;
mod env;
mod matching;
mod metadata;
mod placement;
mod pod;
mod quotas;
mod resources;
mod scheduling;
mod security;
mod spark_conf;
mod volumes;

use std::collections::{BTreeMap, HashSet};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::labels::{check_label_value, check_qualified_name};
use super::{
    ContainerSelection, Error, Mode, Policy, Problem, Problems, Quantity, Quota, Result, Rule,
    policy_hash,
};

const RULE_FIELDS: &[&str] = &[
    "name",
    "match",
    "mode",
    "labels",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "env",
    "containers",
    "resources",
    "priorityClassName",
    "schedulerName",
    // SPEC §4a, read in `pod` (kept in step with `pod::POD_FIELDS` by a test).
    "volumes",
    "volumeMounts",
    "envFrom",
    "initContainers",
    "sidecars",
    "securityContext",
    "containerSecurityContext",
    "imagePullSecrets",
    "topologySpreadConstraints",
    "podAffinity",
    "podAntiAffinity",
    "terminationGracePeriodSeconds",
    "automountServiceAccountToken",
    "runtimeClassName",
    "dnsConfig",
    "hostAliases",
    "localDirs",
    // SPEC §5b, read in `spark_conf`.
    "sparkConf",
];
const TOP_FIELDS: &[&str] = &["rules", "quotas"];

/// Longest message of one problem, and longest path, in characters: a problem quotes what it
/// found, and what it found may be a megabyte long. The longest message a valid policy can
/// cause, an unknown volume source listing all 31 sources, must fit whole.
const MAX_MESSAGE_CHARS: usize = 600;
const MAX_PATH_CHARS: usize = 200;

pub(super) fn parse(text: &str) -> Result<Policy> {
    if text.len() > super::MAX_POLICY_BYTES {
        return Err(Error::TooLarge(format!(
            "it is {} bytes, over the limit of {} bytes (1 MiB, what one ConfigMap can hold)",
            text.len(),
            super::MAX_POLICY_BYTES
        )));
    }
    let document: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_saphyr::from_str_with_options(text, super::policy_yaml_options())
            .map_err(|e| read_error(&e))?
    };
    let mut checker = Checker::default();
    let policy = checker.policy(&document, text);
    if checker.problems.is_empty() {
        Ok(policy)
    } else {
        Err(Error::Invalid(Problems(checker.problems)))
    }
}

/// A parse failure as the user should read it: a breached limit says which limit, anything
/// else is a syntax error with its line and column.
fn read_error(error: &serde_saphyr::Error) -> Error {
    use serde_saphyr::Error as Yaml;
    use serde_saphyr::budget::BudgetBreach;
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let at = format!("line {line}, column {column}");
    let mut inner = error;
    while let Yaml::WithSnippet { error, .. } | Yaml::AliasError { error, .. } = inner {
        inner = error;
    }
    // The YAML scanner's own guard on nested flow collections, which comes before the budget's.
    let scanner_depth = inner.to_string().contains("recursion limit exceeded");
    let limit = match inner {
        _ if scanner_depth => Some(format!(
            "it nests deeper than {} levels at {at} (a policy needs at most 11)",
            super::MAX_POLICY_DEPTH
        )),
        Yaml::Budget { breach, .. } => Some(match breach {
            BudgetBreach::Depth { .. } => format!(
                "it nests deeper than {} levels at {at} (a policy needs at most 11)",
                super::MAX_POLICY_DEPTH
            ),
            BudgetBreach::Aliases { .. }
            | BudgetBreach::Anchors { .. }
            | BudgetBreach::MergeKeys { .. }
            | BudgetBreach::AliasAnchorRatio { .. } => format!(
                "it uses more aliases or anchors than allowed (at most {}, and at most 10 aliases per anchor once 100 are used), at {at}; write the repeated parts out",
                super::MAX_POLICY_ALIASES
            ),
            BudgetBreach::RecordedAnchorEvents { .. }
            | BudgetBreach::RecordedAnchorBytes { .. } => format!(
                "its anchors hold more than {} values in all, at {at}; write the repeated parts out",
                super::MAX_POLICY_ALIAS_EVENTS
            ),
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => format!(
                "it holds more than {} values, aliases expanded, at {at}; a policy this large is a mistake or an alias bomb",
                super::MAX_POLICY_NODES
            ),
            BudgetBreach::Documents { .. } => {
                format!(
                    "it holds more than one YAML document (a second one starts at {at}); a policy is one document"
                )
            }
            other => format!("it is over the reading limit {other:?} at {at}"),
        }),
        Yaml::AliasReplayLimitExceeded { .. }
        | Yaml::AliasExpansionLimitExceeded { .. }
        | Yaml::AliasReplayStackDepthExceeded { .. }
        | Yaml::AliasReplayCounterOverflow { .. } => Some(format!(
            "its aliases expand to more than {} values in all, at {at}; write the repeated parts out",
            super::MAX_POLICY_ALIAS_EVENTS
        )),
        _ => None,
    };
    match limit {
        Some(message) => Error::TooLarge(message),
        None => Error::Syntax {
            message: truncate(&first_line(&error.to_string()), MAX_MESSAGE_CHARS),
            line,
            column,
        },
    }
}

/// `text` cut to `max` characters, saying how much was left out.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!(
            "{}… ({} more characters)",
            &text[..end],
            text[end..].chars().count()
        ),
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

fn key_path(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

fn index_path(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

/// The keys among `keys` (of a mapping at `path`) that are not in `allowed`, each with its path
/// and [`unknown_field_message`]: the one field check of policies and policy test suites.
pub(crate) fn unknown_keys<'k>(
    keys: impl IntoIterator<Item = &'k String>,
    path: &str,
    allowed: &[&str],
) -> Vec<(String, String)> {
    keys.into_iter()
        .filter(|key| !allowed.contains(&key.as_str()))
        .map(|key| (key_path(path, key), unknown_field_message(key, allowed)))
        .collect()
}

/// "unknown field", the closest allowed name when it is a likely typo (at most 3 edits, case
/// ignored), and the allowed names: for policies and policy test suites alike.
pub(crate) fn unknown_field_message(key: &str, allowed: &[&str]) -> String {
    // A hint is for typos; a key far longer than every field name is not one, and the edit
    // distance would cost its length times theirs.
    let closest = allowed
        .iter()
        .filter(|a| key.len() <= a.len() + 3)
        .map(|a| {
            let distance = strsim::levenshtein(&key.to_ascii_lowercase(), &a.to_ascii_lowercase());
            (distance, *a)
        })
        .min()
        .filter(|(d, _)| *d <= 3);
    let list = allowed.join(", ");
    match closest {
        Some((_, hint)) => {
            format!("unknown field {key:?} (did you mean {hint:?}?); allowed: {list}")
        }
        None => format!("unknown field {key:?}; allowed: {list}"),
    }
}

/// Collects problems while building the model.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    /// Paths whose value had the wrong type and was replaced by an empty one so that the rest
    /// of its object could still be checked: anything said later about them would be about
    /// the stand-in, not about what the user wrote.
    stood_in: HashSet<String>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.stood_in.contains(&path) {
            return;
        }
        self.problems.push(Problem {
            path: truncate(&path, MAX_PATH_CHARS),
            message: truncate(&message.into(), MAX_MESSAGE_CHARS),
        });
    }

    /// The value as an object whose keys are all in `allowed`; reports unknown keys.
    fn object<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.problem(
                path,
                format!(
                    "must be a mapping with fields {}, found {}",
                    allowed.join(", "),
                    kind_of(value)
                ),
            );
            return None;
        };
        for (path, message) in unknown_keys(map.keys(), path, allowed) {
            self.problem(path, message);
        }
        Some(map)
    }

    /// Deserializes `value` strictly, reporting the first problem inside it with its full path.
    fn typed<T: DeserializeOwned>(&mut self, value: &Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(typed) => Some(typed),
            Err(error) => {
                let inner = error.path().to_string();
                let full = if inner == "." || inner.is_empty() {
                    path.to_owned()
                } else if inner.starts_with('[') {
                    format!("{path}{inner}")
                } else {
                    key_path(path, &inner)
                };
                self.problem(full, error.into_inner().to_string());
                None
            }
        }
    }

    /// A list, each element checked by `each`; a non-list is reported once.
    fn list<T>(
        &mut self,
        value: &Value,
        path: &str,
        mut each: impl FnMut(&mut Self, &Value, &str) -> Option<T>,
    ) -> Vec<T> {
        let Value::Array(items) = value else {
            self.problem(path, format!("must be a list, found {}", kind_of(value)));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| each(self, item, &index_path(path, i)))
            .collect()
    }

    /// A mapping of string to string; numbers and booleans are refused because YAML would turn
    /// `1.10` into `1.1` silently.
    fn string_map(&mut self, value: &Value, path: &str) -> BTreeMap<String, String> {
        let Value::Object(map) = value else {
            self.problem(
                path,
                format!(
                    "must be a mapping of names to strings, found {}",
                    kind_of(value)
                ),
            );
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (key, item) in map {
            match item {
                Value::String(s) => {
                    out.insert(key.clone(), s.clone());
                }
                other => self.problem(
                    key_path(path, key),
                    format!(
                        "must be a string, found {}; quote it (\"{}\")",
                        kind_of(other),
                        scalar_text(other)
                    ),
                ),
            }
        }
        out
    }

    fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(path, format!("must be a string, found {}", kind_of(other)));
                None
            }
        }
    }

    fn policy(&mut self, document: &Value, text: &str) -> Policy {
        let mut policy = Policy {
            rules: Vec::new(),
            quotas: Vec::new(),
            hash: policy_hash(text),
        };
        if document.is_null() {
            return policy;
        }
        let Some(top) = self.object(document, "", TOP_FIELDS) else {
            return policy;
        };
        if let Some(rules) = top.get("rules").filter(|v| !v.is_null()) {
            policy.rules = self.list(rules, "rules", |c, v, p| c.rule(v, p));
        }
        if let Some(quotas) = top.get("quotas").filter(|v| !v.is_null()) {
            policy.quotas = self.list(quotas, "quotas", |c, v, p| c.quota(v, p));
        }
        self.unique_names(policy.rules.iter().map(|r| r.name.as_str()), "rules");
        self.unique_names(policy.quotas.iter().map(|q| q.name.as_str()), "quotas");
        self.labels_matched_but_also_set(&policy.rules, &policy.quotas);
        policy
    }

    fn unique_names<'a>(&mut self, names: impl Iterator<Item = &'a str>, list: &str) {
        let mut seen = BTreeMap::new();
        for (index, name) in names.enumerate() {
            if name.is_empty() {
                continue;
            }
            if let Some(first) = seen.insert(name, index) {
                self.problem(
                    format!("{list}[{index}].name"),
                    format!("duplicate name {name:?}, already used by {list}[{first}]; names must be unique"),
                );
            }
        }
    }

    /// A rule that matches on a label another rule sets would match or not depending on
    /// whether the webhook has seen the pod before, which breaks idempotence under
    /// `reinvocationPolicy: IfNeeded`. A quota matches the pod as it arrived, before any rule
    /// set its labels, so one matching on a label a rule sets would never apply to a pod that
    /// did not carry the label already: refused for the same reason.
    fn labels_matched_but_also_set(&mut self, rules: &[Rule], quotas: &[Quota]) {
        // First setter of each label, found once: a search per matched label would be
        // quadratic in the number of rules.
        let mut setters: BTreeMap<&str, &str> = BTreeMap::new();
        for rule in rules {
            for key in rule.labels.keys() {
                setters.entry(key.as_str()).or_insert(rule.name.as_str());
            }
        }
        let selectors = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| ("rules", index, &rule.selector))
            .chain(
                quotas
                    .iter()
                    .enumerate()
                    .map(|(index, quota)| ("quotas", index, &quota.selector)),
            );
        for (list, index, selector) in selectors {
            for key in selector.pod_labels.keys() {
                if let Some(setter) = setters.get(key.as_str()) {
                    let why = if list == "rules" {
                        "a rule cannot match on a label the policy sets, because the result would differ between the first and a repeated admission"
                    } else {
                        "a quota matches the pod as it arrives, before rules set labels, so it would apply only to pods that carried the label already"
                    };
                    self.problem(
                        format!("{list}[{index}].match.podLabels.{key}"),
                        format!("label {key:?} is also set by rule {setter:?}; {why}"),
                    );
                }
            }
        }
    }

    fn name(&mut self, map: &Map<String, Value>, path: &str) -> String {
        let Some(value) = map.get("name") else {
            self.problem(
                key_path(path, "name"),
                "missing; every entry needs a name of 1 to 63 characters [a-z0-9-]",
            );
            return String::new();
        };
        let path = key_path(path, "name");
        let Some(name) = self.string(value, &path) else {
            return String::new();
        };
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            self.problem(
                path,
                format!("{name:?} is not a valid name; use 1 to 63 characters of a-z, 0-9 and '-'"),
            );
        }
        name
    }

    fn rule(&mut self, value: &Value, path: &str) -> Option<Rule> {
        let map = self.object(value, path, RULE_FIELDS)?;
        let mut rule = Rule {
            name: self.name(map, path),
            ..Rule::default()
        };
        let volumes = volumes::RuleVolumes::of(map.get("volumes"));
        for (key, value) in map {
            let field = key_path(path, key);
            match key.as_str() {
                "match" => rule.selector = self.selector(value, &field, true),
                "mode" => rule.mode = self.mode(value, &field),
                "labels" => rule.labels = self.labels(value, &field),
                "annotations" => rule.annotations = self.annotations(value, &field),
                "nodeSelector" => rule.node_selector = self.node_selector(value, &field),
                "affinity" => rule.node_affinity = self.affinity(value, &field),
                "tolerations" => {
                    rule.tolerations = self.list(value, &field, |c, v, p| c.toleration(v, p))
                }
                "env" => rule.env = self.env(value, &field),
                "containers" => rule.containers = self.containers(value, &field),
                "resources" => {
                    let (driver, executor) = self.resources(value, &field);
                    rule.driver_resources = driver;
                    rule.executor_resources = executor;
                }
                "priorityClassName" => {
                    rule.priority_class_name = self.dns_name(value, &field, "a PriorityClass name")
                }
                "schedulerName" => {
                    rule.scheduler_name = self.dns_name(value, &field, "a scheduler name")
                }
                "sparkConf" => rule.spark_conf = self.spark_conf(value, &field),
                other => self.pod_field(other, value, &field, &mut rule.pod, &volumes),
            }
        }
        self.unique_container_names(map, path);
        if rule.spark_conf.is_some()
            && !rule.selector.roles.is_empty()
            && !rule.selector.roles.contains(&super::Role::Driver)
        {
            self.problem(
                key_path(&key_path(path, "match"), "roles"),
                "a rule with sparkConf applies to the application's configuration, which its driver carries: roles must include driver, or be left out",
            );
        }
        Some(rule)
    }

    fn mode(&mut self, value: &Value, path: &str) -> Mode {
        match value.as_str() {
            Some("merge") => Mode::Merge,
            Some("enforce") => Mode::Enforce,
            _ => {
                self.problem(path, format!("{} is not a mode; allowed: merge (values already on the pod win), enforce (the policy's values win)", scalar_text(value)));
                Mode::Merge
            }
        }
    }

    fn check_label(&mut self, path: &str, key: &str, value: Option<&str>) {
        if let Err(why) = check_qualified_name(key) {
            self.problem(
                key_path(path, key),
                format!("{key:?} is not a valid label key: {why}"),
            );
        }
        if let Some(value) = value
            && let Err(why) = check_label_value(value)
        {
            self.problem(
                key_path(path, key),
                format!("{value:?} is not a valid label value: {why}"),
            );
        }
    }

    fn report_unknown(&mut self, unknown: &BTreeMap<String, Value>, path: &str, allowed: &[&str]) {
        // Every key in `unknown` is one: `allowed` is only for the message.
        for key in unknown.keys() {
            self.problem(key_path(path, key), unknown_field_message(key, allowed));
        }
    }

    fn containers(&mut self, value: &Value, path: &str) -> ContainerSelection {
        match value {
            Value::String(s) if s == "spark" => ContainerSelection::Spark,
            Value::String(s) if s == "all" => ContainerSelection::All,
            Value::Array(_) => {
                let names = self.list(value, path, |c, item, p| {
                    let name = c.string(item, p)?;
                    // The apiserver requires a container name to be a DNS label.
                    if let Err(why) = super::check_dns_label(&name) {
                        c.problem(p, format!("{name:?} is not a container name: {why}"));
                        return None;
                    }
                    Some(name)
                });
                if names.is_empty() {
                    self.problem(
                        path,
                        "an empty list selects no container; use spark, all or a list of names",
                    );
                }
                ContainerSelection::Named(names)
            }
            other => {
                self.problem(path, format!("{} is not a container selection; allowed: spark (the Spark container), all, or a list of container names", scalar_text(other)));
                ContainerSelection::Spark
            }
        }
    }

    fn quantity_map(&mut self, value: &Value, path: &str) -> BTreeMap<String, Quantity> {
        let Value::Object(map) = value else {
            self.problem(
                path,
                format!(
                    "must be a mapping of resource names to quantities, found {}",
                    kind_of(value)
                ),
            );
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (name, item) in map {
            let p = key_path(path, name);
            if let Err(why) = check_qualified_name(name) {
                self.problem(&p, format!("{name:?} is not a resource name: {why}"));
                continue;
            }
            if let Some(q) = self.quantity(item, &p) {
                out.insert(name.clone(), q);
            }
        }
        out
    }

    /// Quantities may be written as YAML numbers (`cpu: 2`): unlike labels, the number's
    /// value is what counts, so nothing is lost.
    fn quantity(&mut self, value: &Value, path: &str) -> Option<Quantity> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                self.problem(
                    path,
                    format!(
                        "must be a quantity such as \"2\", \"500m\" or \"4Gi\", found {}",
                        kind_of(other)
                    ),
                );
                return None;
            }
        };
        match Quantity::parse(&text) {
            Ok(q) if q.nanos() < 0 => {
                self.problem(
                    path,
                    format!("{text:?} is negative; quantities here must be zero or more"),
                );
                None
            }
            // Written into pods as the apiserver would store it (`cpu: " 2"` as `2`).
            Ok(q) => Some(q.as_pod_resource()),
            Err(why) => {
                self.problem(path, why.to_string());
                None
            }
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) | Value::Object(_) => kind_of(value).to_owned(),
        other => other.to_string(),
    }
}

/// The fields a strict mirror of a Kubernetes type (in `scheduling` and `env`) did not expect,
/// each to be reported as unknown.
type Unknown = BTreeMap<String, Value>;

/// What the tests of every concern's reader share: a policy's problems, and the one rule of a
/// valid policy.
#[cfg(test)]
mod test_support {
    use super::super::{Error, Policy, Rule};

    /// The problems of an invalid policy, as (path, message).
    pub(super) fn problems(yaml: &str) -> Vec<(String, String)> {
        match Policy::parse(yaml) {
            Ok(_) => panic!("policy should be invalid:\n{yaml}"),
            Err(error @ (Error::Syntax { .. } | Error::TooLarge(_))) => {
                panic!("expected validation errors, got {error}")
            }
            Err(Error::Invalid(p)) => p.0.into_iter().map(|p| (p.path, p.message)).collect(),
        }
    }

    /// Asserts a problem at exactly `path` whose message contains `fragment`.
    pub(super) fn has(found: &[(String, String)], path: &str, fragment: &str) {
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(fragment)),
            "no problem at {path} containing {fragment:?}; found:\n{found:#?}"
        );
    }

    /// The only rule of a valid policy `rules: [{name: r, <fields>}]`.
    pub(super) fn rule(fields: &str) -> Rule {
        let yaml = format!("rules:\n  - name: r\n{fields}");
        match Policy::parse(&yaml) {
            Ok(mut policy) => policy.rules.remove(0),
            Err(error) => panic!("policy should be valid:\n{yaml}\n{error}"),
        }
    }

    /// The problems of `rules: [{name: r, <fields>}]`.
    pub(super) fn rule_problems(fields: &str) -> Vec<(String, String)> {
        problems(&format!("rules:\n  - name: r\n{fields}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Error, Policy};

    fn problems(yaml: &str) -> Vec<(String, String)> {
        match Policy::parse(yaml) {
            Ok(_) => panic!("policy should be invalid:\n{yaml}"),
            Err(error @ (Error::Syntax { .. } | Error::TooLarge(_))) => {
                panic!("expected validation errors, got {error}")
            }
            Err(Error::Invalid(p)) => p.0.into_iter().map(|p| (p.path, p.message)).collect(),
        }
    }

    fn has(found: &[(String, String)], path: &str, fragment: &str) {
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(fragment)),
            "no problem at {path} containing {fragment:?}; found:\n{found:#?}"
        );
    }

    const MANY_MISTAKES: &str = r#"
rules:
  - name: Bad_Name
    labels:
      cost-center: "{namespce}"
      spark-role: x
      "bad key!": v
      version: 1.10
    nodeSelectr: {pool: spark}
    tolerations:
      - {key: dedicated, operator: Equals, value: spark, effect: NoSchedul}
      - {key: gpu, operator: Exists, value: "yes"}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions: [{key: zone, operator: Inside, values: [a]}]
        preferredDuringSchedulingIgnoredDuringExecution:
          - {weight: 500, preference: {matchExpressions: [{key: spot, operator: Exists, values: ["true"]}]}}
    env:
      - {name: DB_PASS, valueFrom: {secretKeyRef: {name: snowsec, kee: db_pass}}}
      - {name: BOTH, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    resources:
      executor:
        default: {requests: {cpu: lots}, limits: {memory: 100Gi}}
        max: {memory: 64Gi}
        onExceed: shrink
  - name: second
    mode: overwrite
    match: {namespaces: ["Analytics", "etl-[ab]"], roles: [worker], appNames: ["nightly-[0-9]"]}
    containers: sidecars
  - name: second
quotas:
  - name: q
    match: {roles: [executor]}
    perApplication: {maxExecutors: -1, maxCpu: "1x"}
"#;

    #[test]
    fn every_mistake_is_reported_at_once_with_its_path() {
        let found = problems(MANY_MISTAKES);
        has(&found, "rules[0].name", "a-z, 0-9 and '-'");
        has(
            &found,
            "rules[0].labels.cost-center",
            "unknown variable {namespce}",
        );
        has(&found, "rules[0].labels.spark-role", "Spark's own label");
        has(&found, "rules[0].labels.bad key!", "not a valid label key");
        has(&found, "rules[0].labels.version", "quote it");
        has(
            &found,
            "rules[0].nodeSelectr",
            "did you mean \"nodeSelector\"",
        );
        has(
            &found,
            "rules[0].tolerations[0].operator",
            "allowed: Equal, Exists",
        );
        has(
            &found,
            "rules[0].tolerations[0].effect",
            "NoSchedule, PreferNoSchedule, NoExecute",
        );
        has(
            &found,
            "rules[0].tolerations[1].value",
            "Exists takes no value",
        );
        has(
            &found,
            "rules[0].affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator",
            "allowed: In, NotIn",
        );
        has(
            &found,
            "rules[0].affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
            "1 to 100",
        );
        has(
            &found,
            "rules[0].affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].values",
            "takes no values",
        );
        has(
            &found,
            "rules[0].env[0].valueFrom.secretKeyRef.kee",
            "did you mean \"key\"",
        );
        has(&found, "rules[0].env[1]", "not both");
        has(
            &found,
            "rules[0].resources.executor.default.requests.cpu",
            "not a Kubernetes quantity",
        );
        has(
            &found,
            "rules[0].resources.executor.default.limits.memory",
            "above this rule's max 64Gi",
        );
        has(
            &found,
            "rules[0].resources.executor.onExceed",
            "deny (reject the pod), clamp",
        );
        has(&found, "rules[1].mode", "allowed: merge");
        has(&found, "rules[1].match.namespaces[0]", "lower case");
        has(
            &found,
            "rules[1].match.namespaces[1]",
            "never appears in Kubernetes names",
        );
        has(
            &found,
            "rules[1].match.appNames[0]",
            "only * (any characters) and ?",
        );
        has(
            &found,
            "rules[1].match.roles[0]",
            "allowed: driver, executor",
        );
        has(
            &found,
            "rules[1].containers",
            "spark (the Spark container), all",
        );
        has(&found, "rules[2].name", "duplicate name \"second\"");
        has(&found, "quotas[0].match.roles", "cannot be set here");
        has(&found, "quotas[0].perApplication.maxExecutors", "");
        has(
            &found,
            "quotas[0].perApplication.maxCpu",
            "not a Kubernetes quantity",
        );
        assert!(found.len() >= 26, "{found:#?}");
    }

    /// The policy `spark-admission check` and `/validate-policy` are tested with too.
    const POD_FIELD_MISTAKES: &str =
        include_str!("../../../tests/data/pod-fields-with-mistakes.yaml");

    #[test]
    fn every_mistake_in_the_pod_fields_is_reported_at_once_with_its_path() {
        let found = problems(POD_FIELD_MISTAKES);
        has(
            &found,
            "rules[0].volumes[1].emptyDri",
            "unknown volume source \"emptyDri\" (did you mean \"emptyDir\"?)",
        );
        has(&found, "rules[0].volumes[1]", "has no volume source");
        has(
            &found,
            "rules[0].volumeMounts[1].mountPath",
            "\"/etc/hadoop/conf\" is already mounted by rules[0].volumeMounts[0]",
        );
        has(
            &found,
            "rules[0].volumeMounts[2].name",
            "\"data\" names no volume of this rule",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[0].containerPort",
            "70000 is not a port; allowed: 1 to 65535",
        );
        has(
            &found,
            "rules[0].sidecars[0].livenessProbe.httpGet.schme",
            "unknown field \"schme\" (did you mean \"scheme\"?)",
        );
        has(
            &found,
            "rules[0].topologySpreadConstraints[0].labelSelector.matchLabels.spark-app-selector",
            "uses unknown variable {app_idd}; allowed: {namespace}, {app_name}, {app_id}",
        );
        has(
            &found,
            "rules[0].securityContext.runAsUser",
            "-1 is not a user id; allowed: 0 to 2147483647",
        );
        has(&found, "rules[0].localDirs", "not both");
        assert_eq!(found.len(), 9, "{found:#?}");
    }

    #[test]
    fn known_fields_given_as_null_are_not_unknown() {
        let policy = Policy::parse(
            "rules: [{name: a, volumes: [{name: v, emptyDir: {medium: null}, configMap: null}], sidecars: [{name: s, image: x, ports: null, livenessProbe: {httpGet: {port: 80, host: null}}}]}]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(policy.rules[0].pod.volumes[0].empty_dir.is_some());
        assert!(policy.rules[0].pod.sidecars[0].ports.is_none());
    }

    #[test]
    fn the_spec_4a_example_fields_are_valid() {
        // SPEC §4a's example, with its `{...}` and `[...]` placeholders written out.
        let policy = Policy::parse(
            r#"
rules:
  - name: pod-fields
    volumes:
      - {name: hadoop-conf, configMap: {name: hadoop-conf}}
    volumeMounts:
      - {name: hadoop-conf, mountPath: /etc/hadoop/conf, readOnly: true}
    envFrom:
      - secretRef: {name: team-s3}
    initContainers:
      - {name: fetch-certs, image: "registry/certs:1", command: ["/fetch"]}
    sidecars:
      - {name: fluent-bit, image: "fluent/fluent-bit:3", resources: {requests: {cpu: 50m, memory: 64Mi}}}
    securityContext:
      {runAsNonRoot: true, fsGroup: 185, seccompProfile: {type: RuntimeDefault}}
    containerSecurityContext:
      {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    imagePullSecrets: [{name: registry-creds}]
    topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway,
         labelSelector: {matchLabels: {spark-app-selector: "{app_id}"}}}
    podAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - {weight: 50, podAffinityTerm: {topologyKey: topology.kubernetes.io/zone, labelSelector: {matchLabels: {spark-app-selector: "{app_id}"}}}}
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {spark-app-selector: "{app_id}", spark-role: executor}}}
    terminationGracePeriodSeconds: 120
    automountServiceAccountToken: false
    runtimeClassName: gvisor
    dnsConfig: {options: [{name: ndots, value: "2"}]}
    hostAliases: [{ip: 10.0.0.5, hostnames: [metastore]}]
    localDirs:
      sizeLimit: 200Gi
  - name: ephemeral-local-dirs
    localDirs:
      ephemeral: {storageClassName: gp3, size: 200Gi}
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pod = &policy.rules[0].pod;
        assert_eq!(
            (
                pod.volumes.len(),
                pod.volume_mounts.len(),
                pod.env_from.len(),
                pod.init_containers.len(),
                pod.sidecars.len(),
                pod.image_pull_secrets.len(),
                pod.topology_spread_constraints.len(),
                pod.host_aliases.len(),
            ),
            (1, 1, 1, 1, 1, 1, 1, 1)
        );
        assert!(
            pod.security_context.is_some()
                && pod.container_security_context.is_some()
                && pod.pod_affinity.is_some()
                && pod.pod_anti_affinity.is_some()
                && pod.dns_config.is_some()
                && pod.local_dirs.is_some()
        );
        assert!(policy.rules[1].pod.local_dirs.is_some());
    }

    /// Thread CPU time (Linux): unlike the clock, it leaves out what other processes of a
    /// shared machine took.
    fn cpu_time() -> std::time::Duration {
        let nanos = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        match nanos {
            Some(nanos) => std::time::Duration::from_nanos(nanos),
            None => std::time::Instant::now().elapsed(),
        }
    }

    /// A rule of the worst shape for the pod fields: every list long, every entry wrong in the
    /// ways that need a lookup (names no volume, a mount path again, a container name again, an
    /// address again, a duplicate spread key) and a type error deep inside each container.
    fn worst_pod_fields(n: usize) -> String {
        let mut text = String::from("rules:\n  - name: r\n    volumes:\n");
        for i in 0..n {
            text.push_str(&format!(
                "      - {{name: v{i}, emptyDir: {{}}, cnfigMap: {{name: c}}}}\n"
            ));
        }
        text.push_str("    volumeMounts:\n");
        for i in 0..n {
            text.push_str(&format!("      - {{name: missing{i}, mountPath: /same}}\n"));
        }
        text.push_str("    sidecars:\n");
        for _ in 0..n {
            text.push_str("      - {name: same, image: x, ports: [{containerPort: 0, name: p}, {containerPort: 1, name: p}], volumeMounts: [{name: nope, mountPath: /m}, {name: nope, mountPath: /m}], livenessProbe: {exec: {command: [1, 2]}}}\n");
        }
        text.push_str("    hostAliases:\n");
        for _ in 0..n {
            text.push_str("      - {ip: 10.0.0.1, hostnames: [a]}\n");
        }
        text.push_str("    topologySpreadConstraints:\n");
        for _ in 0..n {
            text.push_str("      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {a: \"{app_id}\"}}}\n");
        }
        text
    }

    #[test]
    fn the_pod_fields_of_a_policy_of_the_worst_shape_cost_time_linear_in_its_size() {
        let (small, large) = (worst_pod_fields(200), worst_pod_fields(2_000));
        assert!(
            large.len() < super::super::MAX_POLICY_BYTES,
            "{}",
            large.len()
        );
        let measure = |text: &str| {
            (0..2)
                .map(|_| {
                    let start = cpu_time();
                    let problems = Policy::parse(text)
                        .map(|_| 0)
                        .unwrap_or_else(|e| e.problems().len());
                    assert!(problems > 0);
                    cpu_time().saturating_sub(start)
                })
                .min()
                .unwrap_or_default()
        };
        let (a, b) = (measure(&small), measure(&large));
        let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-9);
        // Linear is x10; quadratic would be x100. The margin is for a shared machine.
        println!("n: {a:?}, 10n: {b:?}, x{ratio:.1}");
        assert!(ratio < 25.0, "n: {a:?}, 10n: {b:?}, x{ratio:.1}");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = Policy::parse("rules:\n  - name: a\n    labels: {x: y\n").expect_err("bad yaml");
        match err {
            Error::Syntax { line, column, .. } => {
                assert!(line >= 3 && column > 0, "{line}:{column}")
            }
            other => panic!("expected syntax error, got {other}"),
        }
        assert!(Policy::parse("rules:\n  - name: a\n  - name: a\n  bad").is_err());
    }

    #[test]
    fn duplicate_yaml_keys_are_errors_not_silently_merged() {
        assert!(Policy::parse("rules:\n  - name: a\n    name: b\n").is_err());
    }

    #[test]
    fn matching_on_a_label_the_policy_sets_is_refused() {
        let found = problems(
            "rules: [{name: a, labels: {team: x}}, {name: b, match: {podLabels: {team: x}}, labels: {y: z}}]",
        );
        has(
            &found,
            "rules[1].match.podLabels.team",
            "also set by rule \"a\"",
        );
    }

    #[test]
    fn a_quota_matching_on_a_label_the_policy_sets_is_refused() {
        let found = problems(
            "rules: [{name: teams, labels: {team: x}}]\nquotas: [{name: q, match: {podLabels: {team: x}}, perApplication: {maxExecutors: 2}}]",
        );
        has(
            &found,
            "quotas[0].match.podLabels.team",
            "label \"team\" is also set by rule \"teams\"; a quota matches the pod as it arrives, before rules set labels, so it would apply only to pods that carried the label already",
        );
    }

    #[test]
    fn json_policies_and_yaml_numbers_for_quantities_are_accepted() {
        let policy = Policy::parse(r#"{"rules": [{"name": "a", "resources": {"executor": {"default": {"requests": {"cpu": 2}}}}}]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            policy.rules[0]
                .executor_resources
                .as_ref()
                .map(|r| r.default.requests["cpu"].as_str()),
            Some("2")
        );
        // YAML 1.2 booleans: `y` is a string.
        assert!(Policy::parse("rules: [{name: a, labels: {x: y}}]").is_ok());
    }

    #[test]
    fn an_empty_policy_is_valid_and_hashes_stably() {
        let a = Policy::parse("").unwrap_or_else(|e| panic!("{e}"));
        let b = Policy::parse("").unwrap_or_else(|e| panic!("{e}"));
        assert!(a.rules.is_empty() && a.quotas.is_empty());
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 12);
        assert_ne!(
            a.hash,
            Policy::parse("rules: []")
                .unwrap_or_else(|e| panic!("{e}"))
                .hash
        );
    }

    #[test]
    fn the_spec_example_policy_is_valid() {
        let spec_example = r#"
rules:
  - name: all-spark
    labels:
      cost-center: "{namespace}"
      spark-app: "{app_name}"
    annotations:
      prometheus.io/scrape: "true"
  - name: analytics
    match:
      namespaces: ["analytics", "etl-*"]
      roles: [executor]
      appNames: ["nightly-*"]
      podLabels: {team: analytics}
      serviceAccounts: ["spark"]
    mode: merge
    nodeSelector: {pool: spark}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions: [{key: node.kubernetes.io/instance-type, operator: In, values: [m5.2xlarge]}]
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 50
            preference: {matchExpressions: [{key: spot, operator: In, values: ["true"]}]}
    tolerations:
      - {key: dedicated, operator: Equal, value: spark, effect: NoSchedule}
    env:
      - name: DB_PASS
        valueFrom: {secretKeyRef: {name: snowsec, key: db_pass}}
      - {name: DEPLOY_ENV, value: prod}
    containers: spark
    resources:
      executor:
        default: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "2"}}
        max:     {cpu: "8", memory: 64Gi}
        onExceed: deny
      driver:
        default: {requests: {cpu: "1"}}
    priorityClassName: spark-batch
    schedulerName: yunikorn
quotas:
  - name: analytics-apps
    match: {namespaces: [analytics]}
    perApplication:   {maxExecutors: 50, maxCpu: "200", maxMemory: 800Gi}
    perNamespace:     {maxCpu: "1000", maxMemory: 4Ti}
"#;
        let policy = Policy::parse(spec_example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policy.rules.len(), 2);
        assert_eq!(
            policy.quotas[0]
                .per_application
                .as_ref()
                .and_then(|l| l.max_executors),
            Some(50)
        );
    }
}
