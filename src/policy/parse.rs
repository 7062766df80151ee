//! From text to a validated [`Policy`], collecting every problem with its path.
//!
//! Each rule field is read on its own, so a mistake in one field never hides a mistake in
//! another. Objects capture unknown keys instead of failing on the first one, so every typo is
//! reported, with the closest allowed name as a hint.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EnvVar, NodeAffinity, Toleration};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::labels::{check_dns_subdomain, check_label_value, check_qualified_name};
use super::{
    ContainerSelection, Error, Glob, Mode, OnExceed, Policy, Problem, Problems, Quantity, Quota,
    QuotaLimits, ResourceAmounts, ResourcePolicy, Result, Role, Rule, Selector, Template,
    policy_hash,
};

/// Labels Spark uses to find and track its own pods; a policy that changed them would break
/// Spark (and the quota counting), so they cannot be set.
const SPARK_OWNED_LABELS: &[&str] = &[
    "spark-role",
    "spark-app-selector",
    "spark-app-name",
    "spark-exec-id",
    "sparkoperator.k8s.io/app-name",
];

/// Annotations this webhook writes itself.
const OWN_ANNOTATION_PREFIX: &str = "spark-admission.io/";

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
];
const TOP_FIELDS: &[&str] = &["rules", "quotas"];
const QUOTA_FIELDS: &[&str] = &["name", "match", "perApplication", "perNamespace"];

/// Longest message of one problem, and longest path, in characters: a problem quotes what it
/// found, and what it found may be a megabyte long.
const MAX_MESSAGE_CHARS: usize = 400;
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
            "it nests deeper than {} levels at {at} (a policy needs at most 9)",
            super::MAX_POLICY_DEPTH
        )),
        Yaml::Budget { breach, .. } => Some(match breach {
            BudgetBreach::Depth { .. } => format!(
                "it nests deeper than {} levels at {at} (a policy needs at most 9)",
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
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: truncate(&path.into(), MAX_PATH_CHARS),
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
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem(key_path(path, key), unknown_field_message(key, allowed));
            }
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
        self.labels_matched_but_also_set(&policy.rules);
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
    /// `reinvocationPolicy: IfNeeded`.
    fn labels_matched_but_also_set(&mut self, rules: &[Rule]) {
        // First setter of each label, found once: a search per matched label would be
        // quadratic in the number of rules.
        let mut setters: BTreeMap<&str, &str> = BTreeMap::new();
        for rule in rules {
            for key in rule.labels.keys() {
                setters.entry(key.as_str()).or_insert(rule.name.as_str());
            }
        }
        for (index, rule) in rules.iter().enumerate() {
            for key in rule.selector.pod_labels.keys() {
                if let Some(setter) = setters.get(key.as_str()) {
                    self.problem(
                        format!("rules[{index}].match.podLabels.{key}"),
                        format!(
                            "label {key:?} is also set by rule {setter:?}; a rule cannot match on a label the policy sets, because the result would differ between the first and a repeated admission"
                        ),
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
                _ => {}
            }
        }
        Some(rule)
    }

    fn dns_name(&mut self, value: &Value, path: &str, what: &str) -> Option<String> {
        let name = self.string(value, path)?;
        if let Err(why) = check_dns_subdomain(&name) {
            self.problem(path, format!("{name:?} is not {what}: it {why}"));
            return None;
        }
        Some(name)
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

    fn globs(&mut self, value: &Value, path: &str, lower_dns: bool) -> Vec<Glob> {
        self.list(value, path, |c, item, p| {
            let text = c.string(item, p)?;
            if lower_dns
                && let Some(bad) = text.chars().find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '.' | '*' | '?')))
            {
                c.problem(p, format!("{text:?} cannot match any name: {bad:?} never appears in Kubernetes names (lower case a-z, 0-9, '-', '.'; plus * and ? as wildcards)"));
                return None;
            }
            match Glob::new(&text) {
                Ok(glob) => Some(glob),
                Err(why) => {
                    c.problem(p, why);
                    None
                }
            }
        })
    }

    fn selector(&mut self, value: &Value, path: &str, roles_allowed: bool) -> Selector {
        const FIELDS: &[&str] = &[
            "namespaces",
            "roles",
            "appNames",
            "podLabels",
            "serviceAccounts",
        ];
        let mut selector = Selector::default();
        let Some(map) = self.object(value, path, FIELDS) else {
            return selector;
        };
        for (key, value) in map {
            let field = key_path(path, key);
            match key.as_str() {
                "namespaces" => selector.namespaces = self.globs(value, &field, true),
                "appNames" => selector.app_names = self.globs(value, &field, false),
                "serviceAccounts" => selector.service_accounts = self.globs(value, &field, true),
                "roles" if !roles_allowed => self.problem(
                    field,
                    "a quota counts every Spark pod of an application, drivers and executors alike, so roles cannot be set here; remove it",
                ),
                "roles" => {
                    selector.roles = self.list(value, &field, |c, item, p| match item.as_str().and_then(Role::from_label) {
                        Some(role) => Some(role),
                        None => {
                            c.problem(p, format!("{} is not a Spark role; allowed: driver, executor", scalar_text(item)));
                            None
                        }
                    })
                }
                "podLabels" => {
                    selector.pod_labels = self.string_map(value, &field);
                    for (k, v) in &selector.pod_labels {
                        self.check_label(&field, k, Some(v));
                    }
                }
                _ => {}
            }
        }
        selector
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

    fn templates(&mut self, value: &Value, path: &str) -> BTreeMap<String, Template> {
        let mut out = BTreeMap::new();
        for (key, text) in self.string_map(value, path) {
            match Template::parse(&text) {
                Ok(template) => {
                    out.insert(key, template);
                }
                Err(why) => self.problem(key_path(path, &key), why),
            }
        }
        out
    }

    fn labels(&mut self, value: &Value, path: &str) -> BTreeMap<String, Template> {
        let labels = self.templates(value, path);
        for (key, template) in &labels {
            self.check_label(path, key, None);
            if SPARK_OWNED_LABELS.contains(&key.as_str()) {
                self.problem(key_path(path, key), format!("{key:?} is Spark's own label (Spark finds its pods by it); a policy cannot set it"));
            }
            // A template's variables are sanitised at expansion; its literal text must already
            // be valid, or every pod would get a mangled value.
            let literal = template.literal_text();
            let check = if template.has_variables() {
                literal
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                    .map(|bad| format!("may only hold letters, digits, '-', '_' and '.' besides variables, not {bad:?}"))
                    .or_else(|| (literal.len() > 63).then(|| "is longer than 63 characters even before expansion".to_owned()))
            } else {
                check_label_value(&literal).err()
            };
            if let Some(why) = check {
                self.problem(
                    key_path(path, key),
                    format!("{:?} is not a valid label value: {why}", template.as_str()),
                );
            }
        }
        labels
    }

    fn annotations(&mut self, value: &Value, path: &str) -> BTreeMap<String, Template> {
        let annotations = self.templates(value, path);
        for key in annotations.keys() {
            if let Err(why) = check_qualified_name(key) {
                self.problem(
                    key_path(path, key),
                    format!("{key:?} is not a valid annotation key: {why}"),
                );
            }
            if key.starts_with(OWN_ANNOTATION_PREFIX) {
                self.problem(key_path(path, key), format!("annotations under {OWN_ANNOTATION_PREFIX} are written by spark-admission itself"));
            }
        }
        annotations
    }

    fn node_selector(&mut self, value: &Value, path: &str) -> BTreeMap<String, String> {
        let selector = self.string_map(value, path);
        for (key, value) in &selector {
            self.check_label(path, key, Some(value));
        }
        selector
    }

    fn affinity(&mut self, value: &Value, path: &str) -> Option<NodeAffinity> {
        let map = self.object(value, path, &["nodeAffinity"])?;
        let node_path = key_path(path, "nodeAffinity");
        let node = map.get("nodeAffinity")?;
        let raw: RawNodeAffinity = self.typed(node, &node_path)?;
        let before = self.problems.len();
        self.report_unknown(&raw.unknown, &node_path, RawNodeAffinity::FIELDS);
        if let Some(required) = &raw.required {
            let required_path =
                key_path(&node_path, "requiredDuringSchedulingIgnoredDuringExecution");
            self.report_unknown(&required.unknown, &required_path, &["nodeSelectorTerms"]);
            if required.node_selector_terms.is_empty() {
                self.problem(
                    key_path(&required_path, "nodeSelectorTerms"),
                    "must hold at least one term",
                );
            }
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                self.term(
                    term,
                    &index_path(&key_path(&required_path, "nodeSelectorTerms"), i),
                );
            }
        }
        for (i, preferred) in raw.preferred.iter().flatten().enumerate() {
            let p = index_path(
                &key_path(
                    &node_path,
                    "preferredDuringSchedulingIgnoredDuringExecution",
                ),
                i,
            );
            self.report_unknown(&preferred.unknown, &p, &["weight", "preference"]);
            if !(1..=100).contains(&preferred.weight) {
                self.problem(
                    key_path(&p, "weight"),
                    format!("{} is out of range; allowed: 1 to 100", preferred.weight),
                );
            }
            self.term(&preferred.preference, &key_path(&p, "preference"));
        }
        if self.problems.len() != before {
            return None;
        }
        // Structure checked above; the Kubernetes type reads the same document.
        self.typed(node, &node_path)
    }

    fn term(&mut self, term: &RawTerm, path: &str) {
        self.report_unknown(&term.unknown, path, &["matchExpressions", "matchFields"]);
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if expressions.is_empty() && fields.is_empty() {
            // Kubernetes treats an empty term as matching no node at all.
            self.problem(
                path,
                "an empty term matches no node; give matchExpressions or matchFields",
            );
        }
        for (i, requirement) in expressions.iter().enumerate() {
            let p = index_path(&key_path(path, "matchExpressions"), i);
            if let Err(why) = check_qualified_name(&requirement.key) {
                self.problem(
                    key_path(&p, "key"),
                    format!("{:?} is not a valid label key: {why}", requirement.key),
                );
            }
            self.requirement(requirement, &p);
        }
        for (i, requirement) in fields.iter().enumerate() {
            let p = index_path(&key_path(path, "matchFields"), i);
            if requirement.key != "metadata.name" {
                self.problem(
                    key_path(&p, "key"),
                    format!(
                        "{:?} is not a node field; allowed: metadata.name",
                        requirement.key
                    ),
                );
            }
            self.requirement(requirement, &p);
        }
    }

    fn requirement(&mut self, requirement: &RawRequirement, path: &str) {
        self.report_unknown(&requirement.unknown, path, &["key", "operator", "values"]);
        let values = requirement.values.as_deref().unwrap_or_default();
        let problem = match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => Some((
                "values",
                format!("operator {} needs at least one value", requirement.operator),
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => Some((
                "values",
                format!("operator {} takes no values", requirement.operator),
            )),
            "Gt" | "Lt" if values.len() != 1 || values[0].parse::<i64>().is_err() => Some((
                "values",
                format!(
                    "operator {} needs exactly one integer value",
                    requirement.operator
                ),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => None,
            other => Some((
                "operator",
                format!(
                    "{other:?} is not an operator; allowed: In, NotIn, Exists, DoesNotExist, Gt, Lt"
                ),
            )),
        };
        if let Some((field, message)) = problem {
            self.problem(key_path(path, field), message);
        }
        for (i, value) in values.iter().enumerate() {
            if let Err(why) = check_label_value(value) {
                self.problem(
                    index_path(&key_path(path, "values"), i),
                    format!("{value:?} is not a valid label value: {why}"),
                );
            }
        }
    }

    fn report_unknown(&mut self, unknown: &BTreeMap<String, Value>, path: &str, allowed: &[&str]) {
        for key in unknown.keys() {
            self.problem(key_path(path, key), unknown_field_message(key, allowed));
        }
    }

    fn toleration(&mut self, value: &Value, path: &str) -> Option<Toleration> {
        let raw: RawToleration = self.typed(value, path)?;
        let before = self.problems.len();
        self.report_unknown(&raw.unknown, path, RawToleration::FIELDS);
        let operator = raw.operator.as_deref().unwrap_or("Equal");
        match operator {
            "Equal" | "" => {
                if raw.key.as_deref().unwrap_or_default().is_empty() {
                    self.problem(
                        key_path(path, "key"),
                        "an empty key matches every taint and needs operator Exists",
                    );
                }
            }
            "Exists" => {
                if !raw.value.as_deref().unwrap_or_default().is_empty() {
                    self.problem(
                        key_path(path, "value"),
                        "operator Exists takes no value; remove it or use operator Equal",
                    );
                }
            }
            other => self.problem(
                key_path(path, "operator"),
                format!("{other:?} is not a toleration operator; allowed: Equal, Exists"),
            ),
        }
        if let Some(key) = raw.key.as_deref().filter(|k| !k.is_empty())
            && let Err(why) = check_qualified_name(key)
        {
            self.problem(
                key_path(path, "key"),
                format!("{key:?} is not a valid taint key: {why}"),
            );
        }
        let effect = raw.effect.as_deref().unwrap_or_default();
        if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            self.problem(key_path(path, "effect"), format!("{effect:?} is not a taint effect; allowed: NoSchedule, PreferNoSchedule, NoExecute (or omit it for all)"));
        }
        if raw.toleration_seconds.is_some() && effect != "NoExecute" {
            self.problem(
                key_path(path, "tolerationSeconds"),
                "only applies with effect NoExecute",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        self.typed(value, path)
    }

    fn env(&mut self, value: &Value, path: &str) -> Vec<EnvVar> {
        let vars = self.list(value, path, |c, v, p| c.env_var(v, p));
        let mut seen = BTreeSet::new();
        for (i, var) in vars.iter().enumerate() {
            if !seen.insert(var.name.as_str()) {
                self.problem(
                    index_path(path, i),
                    format!("{:?} is listed twice; each variable once", var.name),
                );
            }
        }
        vars
    }

    fn env_var(&mut self, value: &Value, path: &str) -> Option<EnvVar> {
        let raw: RawEnvVar = self.typed(value, path)?;
        let before = self.problems.len();
        self.report_unknown(&raw.unknown, path, &["name", "value", "valueFrom"]);
        let name_ok = !raw.name.is_empty()
            && !raw.name.starts_with(|c: char| c.is_ascii_digit())
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            self.problem(key_path(path, "name"), format!("{:?} is not a valid variable name; use letters, digits, '_', '-', '.', not starting with a digit", raw.name));
        }
        match (&raw.value, &raw.value_from) {
            (Some(_), Some(_)) => self.problem(path, "give either value or valueFrom, not both"),
            (None, None) => self.problem(path, "needs value or valueFrom"),
            _ => {}
        }
        if let Some(source) = &raw.value_from {
            let p = key_path(path, "valueFrom");
            self.report_unknown(&source.unknown, &p, RawEnvSource::FIELDS);
            let count = [
                source.secret_key_ref.is_some(),
                source.config_map_key_ref.is_some(),
                source.field_ref.is_some(),
                source.resource_field_ref.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if count != 1 {
                self.problem(
                    &p,
                    format!("needs exactly one of {}", RawEnvSource::FIELDS.join(", ")),
                );
            }
            for (field, selector) in [
                ("secretKeyRef", &source.secret_key_ref),
                ("configMapKeyRef", &source.config_map_key_ref),
            ] {
                let Some(selector) = selector else { continue };
                let sp = key_path(&p, field);
                self.report_unknown(&selector.unknown, &sp, &["name", "key", "optional"]);
                match &selector.name {
                    None => self.problem(
                        key_path(&sp, "name"),
                        "missing; name the object to read from",
                    ),
                    Some(name) => {
                        if let Err(why) = check_dns_subdomain(name) {
                            self.problem(
                                key_path(&sp, "name"),
                                format!("{name:?} is not an object name: it {why}"),
                            );
                        }
                    }
                }
                match &selector.key {
                    None => self.problem(key_path(&sp, "key"), "missing; name the key to read"),
                    Some(key)
                        if key.is_empty()
                            || !key.chars().all(|c| {
                                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
                            }) =>
                    {
                        self.problem(
                            key_path(&sp, "key"),
                            format!(
                                "{key:?} is not a valid key; use letters, digits, '-', '_', '.'"
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            if let Some(field_ref) = &source.field_ref {
                self.report_unknown(
                    &field_ref.unknown,
                    &key_path(&p, "fieldRef"),
                    &["apiVersion", "fieldPath"],
                );
            }
            if let Some(resource_ref) = &source.resource_field_ref {
                let rp = key_path(&p, "resourceFieldRef");
                self.report_unknown(
                    &resource_ref.unknown,
                    &rp,
                    &["containerName", "resource", "divisor"],
                );
                if let Some(divisor) = &resource_ref.divisor
                    && let Err(why) = Quantity::parse(divisor)
                {
                    self.problem(key_path(&rp, "divisor"), why.to_string());
                }
            }
        }
        if self.problems.len() != before {
            return None;
        }
        self.typed(value, path)
    }

    fn containers(&mut self, value: &Value, path: &str) -> ContainerSelection {
        match value {
            Value::String(s) if s == "spark" => ContainerSelection::Spark,
            Value::String(s) if s == "all" => ContainerSelection::All,
            Value::Array(_) => {
                let names = self.list(value, path, |c, item, p| {
                    let name = c.string(item, p)?;
                    let valid = !name.is_empty()
                        && name.len() <= 63
                        && name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
                    if !valid {
                        c.problem(p, format!("{name:?} is not a container name (1 to 63 characters of a-z, 0-9, '-')"));
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

    fn resources(
        &mut self,
        value: &Value,
        path: &str,
    ) -> (Option<ResourcePolicy>, Option<ResourcePolicy>) {
        let Some(map) = self.object(value, path, &["driver", "executor"]) else {
            return (None, None);
        };
        let driver = map
            .get("driver")
            .and_then(|v| self.resource_policy(v, &key_path(path, "driver")));
        let executor = map
            .get("executor")
            .and_then(|v| self.resource_policy(v, &key_path(path, "executor")));
        (driver, executor)
    }

    fn resource_policy(&mut self, value: &Value, path: &str) -> Option<ResourcePolicy> {
        let map = self.object(value, path, &["default", "max", "onExceed"])?;
        let mut policy = ResourcePolicy::default();
        if let Some(default) = map.get("default") {
            let dp = key_path(path, "default");
            if let Some(amounts) = self.object(default, &dp, &["requests", "limits"]) {
                policy.default = ResourceAmounts {
                    requests: amounts
                        .get("requests")
                        .map(|v| self.quantity_map(v, &key_path(&dp, "requests")))
                        .unwrap_or_default(),
                    limits: amounts
                        .get("limits")
                        .map(|v| self.quantity_map(v, &key_path(&dp, "limits")))
                        .unwrap_or_default(),
                };
            }
        }
        if let Some(max) = map.get("max") {
            policy.max = self.quantity_map(max, &key_path(path, "max"));
        }
        if let Some(on_exceed) = map.get("onExceed") {
            policy.on_exceed = match on_exceed.as_str() {
                Some("deny") => OnExceed::Deny,
                Some("clamp") => OnExceed::Clamp,
                _ => {
                    self.problem(key_path(path, "onExceed"), format!("{} is not allowed; allowed: deny (reject the pod), clamp (lower CPU to the max; memory is still denied)", scalar_text(on_exceed)));
                    OnExceed::Deny
                }
            };
        }
        // Defaults that break the rule's own max or each other would reject or break every pod
        // that relies on them.
        for (resource, request) in &policy.default.requests {
            if let Some(limit) = policy.default.limits.get(resource).filter(|l| request > *l) {
                self.problem(key_path(path, &format!("default.requests.{resource}")), format!("{request} is above the default limit {limit}; a request must not exceed its limit"));
            }
        }
        for (kind, amounts) in [
            ("requests", &policy.default.requests),
            ("limits", &policy.default.limits),
        ] {
            for (resource, amount) in amounts {
                if let Some(max) = policy.max.get(resource).filter(|m| amount > *m) {
                    self.problem(key_path(path, &format!("default.{kind}.{resource}")), format!("{amount} is above this rule's max {max}; every pod given this default would be over the max"));
                }
            }
        }
        Some(policy)
    }

    fn quota(&mut self, value: &Value, path: &str) -> Option<Quota> {
        let map = self.object(value, path, QUOTA_FIELDS)?;
        let mut quota = Quota {
            name: self.name(map, path),
            ..Quota::default()
        };
        if let Some(selector) = map.get("match") {
            quota.selector = self.selector(selector, &key_path(path, "match"), false);
        }
        if let Some(limits) = map.get("perApplication") {
            quota.per_application =
                self.quota_limits(limits, &key_path(path, "perApplication"), true);
        }
        if let Some(limits) = map.get("perNamespace") {
            quota.per_namespace = self.quota_limits(limits, &key_path(path, "perNamespace"), false);
        }
        if quota.per_application.is_none() && quota.per_namespace.is_none() {
            self.problem(path, "a quota needs perApplication or perNamespace limits");
        }
        Some(quota)
    }

    fn quota_limits(
        &mut self,
        value: &Value,
        path: &str,
        per_application: bool,
    ) -> Option<QuotaLimits> {
        let allowed: &[&str] = if per_application {
            &["maxExecutors", "maxCpu", "maxMemory"]
        } else {
            &["maxApplications", "maxCpu", "maxMemory"]
        };
        let map = self.object(value, path, allowed)?;
        let mut limits = QuotaLimits::default();
        if let Some(max) = map.get("maxExecutors") {
            limits.max_executors = self.typed::<u32>(max, &key_path(path, "maxExecutors"));
        }
        if let Some(max) = map.get("maxApplications") {
            limits.max_applications = self.typed::<u32>(max, &key_path(path, "maxApplications"));
        }
        if let Some(max) = map.get("maxCpu") {
            limits.max_cpu = self.quantity(max, &key_path(path, "maxCpu"));
        }
        if let Some(max) = map.get("maxMemory") {
            limits.max_memory = self.quantity(max, &key_path(path, "maxMemory"));
        }
        if map.is_empty() {
            self.problem(
                path,
                format!("sets no limit; give at least one of {}", allowed.join(", ")),
            );
        }
        Some(limits)
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

type Unknown = BTreeMap<String, Value>;

// Strict mirrors of the Kubernetes types a policy may hold. Kubernetes' own types ignore
// unknown fields; these capture them so typos become errors.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeAffinity {
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    required: Option<RawNodeSelector>,
    #[serde(rename = "preferredDuringSchedulingIgnoredDuringExecution")]
    preferred: Option<Vec<RawPreferred>>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RawNodeAffinity {
    const FIELDS: &[&str] = &[
        "requiredDuringSchedulingIgnoredDuringExecution",
        "preferredDuringSchedulingIgnoredDuringExecution",
    ];
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeSelector {
    node_selector_terms: Vec<RawTerm>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTerm {
    match_expressions: Option<Vec<RawRequirement>>,
    match_fields: Option<Vec<RawRequirement>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
struct RawRequirement {
    key: String,
    operator: String,
    values: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
struct RawPreferred {
    weight: i32,
    preference: RawTerm,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawToleration {
    key: Option<String>,
    operator: Option<String>,
    value: Option<String>,
    effect: Option<String>,
    toleration_seconds: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RawToleration {
    const FIELDS: &[&str] = &["key", "operator", "value", "effect", "tolerationSeconds"];
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<RawEnvSource>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvSource {
    secret_key_ref: Option<RawKeySelector>,
    config_map_key_ref: Option<RawKeySelector>,
    field_ref: Option<RawFieldRef>,
    resource_field_ref: Option<RawResourceFieldRef>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RawEnvSource {
    const FIELDS: &[&str] = &[
        "secretKeyRef",
        "configMapKeyRef",
        "fieldRef",
        "resourceFieldRef",
    ];
}

#[derive(Deserialize)]
struct RawKeySelector {
    name: Option<String>,
    key: Option<String>,
    #[serde(rename = "optional")]
    _optional: Option<bool>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFieldRef {
    #[serde(rename = "apiVersion")]
    _api_version: Option<String>,
    #[serde(rename = "fieldPath")]
    _field_path: String,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResourceFieldRef {
    #[serde(rename = "containerName")]
    _container_name: Option<String>,
    #[serde(rename = "resource")]
    _resource: String,
    divisor: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
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
