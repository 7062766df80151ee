//! Policy test suites (`spark-admission test`): YAML files that pair a policy with pods and
//! cluster-mode drivers' ConfigMaps and say what the webhook must answer, so a platform team's
//! CI catches a policy that regressed.
//!
//! A case goes through the server's own review path, never a copy of it: a pod's through
//! [`crate::admission::parse_review`], [`crate::admission::review`], then the quota decision on
//! a snapshot of cluster pods; a driver ConfigMap's as `/mutate-spark-conf` answers it
//! ([`spark_conf`]). A suite that passes here describes what the deployed webhook answers.
//! Loading reads files (the suite and what it refers to); running a case does no I/O.
//!
//! Suite files are found by name: `*.test.yaml` or `*.test.yml` (a file given by path is read
//! whatever its name). Unknown fields are errors, reported all at once with their path and the
//! closest allowed name, as for policies.
//!
//! A suite may come from an untrusted change (a pull request's CI runs it), and what it reads
//! is printed in diffs. So the files it names must resolve, symbolic links followed, inside a
//! root directory (the directory `test` runs in, or `--root`), must be regular files (a FIFO
//! would block the run, `/dev/zero` would never end) and at most [`MAX_FILE_BYTES`] long; the
//! suite file itself too, but the one the user named on the command line may be anywhere.

mod expect;
pub mod junit;
pub(crate) mod spark_conf;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;
use serde_json::{Value, json};

use expect::Expect;
pub use expect::Failure;

use crate::policy::Policy;
use crate::quota::watch::LeanPod;

/// Errors from finding and loading suites; a case that fails is a [`Failure`], not an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path given on the command line cannot be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory holds no suite file.
    #[error("{0}: no suite files found (suite files are named *.test.yaml or *.test.yml)")]
    NoSuites(PathBuf),
    /// The suite is not YAML.
    #[error("{path}: not valid YAML: {message}")]
    Syntax {
        /// The suite file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The suite parsed but is wrong; every problem is listed.
    #[error("{path}: suite has {} error{}:{}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, list(.problems))]
    Invalid {
        /// The suite file.
        path: PathBuf,
        /// Each problem, as `path: message`.
        problems: Vec<Problem>,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One thing wrong with a suite: where in the file (`cases[1].expect.labels`), and what is
/// wrong and allowed; the same shape as a policy's problems.
pub use crate::policy::Problem;

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

const SUITE_FIELDS: &[&str] = &["name", "policy", "cases"];
const CASE_FIELDS: &[&str] = &[
    "name",
    "input",
    "namespace",
    "user",
    "groups",
    "dryRun",
    "operation",
    "clusterPods",
    "globalDefaultPriorityClass",
    "kubernetesVersion",
    "expect",
];
const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT"];

/// What a case's input is reviewed as: a pod (`/mutate`) or a driver's ConfigMap
/// (`/mutate-spark-conf`, SPEC §5b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Pod,
    ConfigMap,
}

impl Target {
    /// A Pod, a ConfigMap, or an AdmissionReview of either (by its request's kind).
    fn of(document: &Value) -> Self {
        if spark_conf::is_config_map(document) {
            Self::ConfigMap
        } else {
            Self::Pod
        }
    }
}

/// The most a suite file, or a file it names, may hold: an AdmissionReview is at most 7 MiB.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads `path` whole if it is a regular file of at most [`MAX_FILE_BYTES`], as UTF-8.
fn read_regular_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let refuse = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    // Checked before opening: opening a FIFO for reading blocks until a writer comes.
    if !std::fs::metadata(path)?.is_file() {
        return Err(refuse("not a regular file".to_owned()));
    }
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(refuse("not a regular file".to_owned()));
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(refuse(format!(
            "larger than the {} MiB a suite file may hold",
            MAX_FILE_BYTES >> 20
        )));
    }
    Ok(text)
}

/// Whether a file found in a directory is a suite.
pub fn is_suite_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// The suite files of `paths`: a file as given, a directory searched recursively (sorted, hidden
/// directories and symbolic links to directories skipped) for [`is_suite_file`] names. Paths
/// that cannot be read, and directories without suites, are errors beside the files found.
pub fn discover(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Error>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Err(source) => errors.push(Error::Read {
                path: path.clone(),
                source,
            }),
            Ok(meta) if meta.is_dir() => {
                let before = files.len();
                if let Err(error) = walk(path, &mut files) {
                    errors.push(error);
                } else if files.len() == before {
                    errors.push(Error::NoSuites(path.clone()));
                }
            }
            Ok(_) => files.push(path.clone()),
        }
    }
    (files, errors)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let read = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(read)?;
        let hidden = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with('.'));
        // Not following directory links keeps a link cycle from looping forever.
        if file_type.is_dir() {
            if !hidden {
                walk(&path, files)?;
            }
        } else if is_suite_file(&path) && path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// A loaded suite: a valid policy and cases ready to run.
#[derive(Debug)]
pub struct Suite {
    /// The suite file.
    pub path: PathBuf,
    /// Its `name`, else the file name.
    pub name: String,
    policy: Policy,
    cases: Vec<Case>,
}

/// One case: the review body the apiserver would send, and what must come back.
#[derive(Debug)]
struct Case {
    name: String,
    /// Which webhook path answers it.
    target: Target,
    body: Vec<u8>,
    /// The object as sent (a pod or a ConfigMap), to which the answer's patch is applied (as
    /// the apiserver does).
    object: Value,
    dry_run: bool,
    /// The cluster's pods for quotas; none by default, as on an empty cluster.
    cluster: Vec<LeanPod>,
    /// What the server would know of the cluster (its global default PriorityClass).
    cluster_facts: std::sync::Arc<crate::engine::ClusterFacts>,
    expect: Expect,
}

/// What one case did.
#[derive(Debug)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// Every expectation that did not hold; empty when the case passed.
    pub failures: Vec<Failure>,
}

impl CaseReport {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

#[derive(Deserialize)]
struct RawSuite {
    #[serde(default)]
    name: Option<String>,
    policy: Value,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCase {
    #[serde(default)]
    name: Option<String>,
    input: Value,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    cluster_pods: Option<Value>,
    #[serde(default)]
    global_default_priority_class: Option<String>,
    #[serde(default)]
    kubernetes_version: Option<String>,
    expect: Value,
}

impl Suite {
    /// Reads a suite file and everything it refers to (paths are relative to the suite file,
    /// and must resolve inside `root`, a directory; see the module documentation).
    pub fn load(path: &Path, root: &Path) -> Result<Self> {
        let text = read_regular_file(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let document: Value = crate::policy::from_yaml(&text).map_err(|e| Error::Syntax {
            path: path.to_owned(),
            message: e.to_string().lines().next().unwrap_or_default().to_owned(),
        })?;
        let invalid = |problems| Error::Invalid {
            path: path.to_owned(),
            problems,
        };
        let mut problems = Vec::new();
        if !document.is_object() {
            problems.push(Problem {
                path: String::new(),
                message: format!(
                    "a suite is a mapping with policy and cases, not {}",
                    match document {
                        Value::Null => "an empty document",
                        Value::Array(_) => "a list",
                        Value::String(_) => "a string",
                        _ => "a scalar",
                    }
                ),
            });
        }
        unknown_fields(&document, &mut problems);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let raw: RawSuite = serde_path_to_error::deserialize(&document).map_err(|e| {
            invalid(vec![Problem {
                path: e.path().to_string().trim_start_matches('.').to_owned(),
                message: e.inner().to_string(),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let root = std::fs::canonicalize(root).map_err(|source| Error::Read {
            path: root.to_owned(),
            source,
        })?;
        let mut loader = Loader {
            base,
            root: &root,
            problems: Vec::new(),
        };
        let policy = loader.policy(&raw.policy);
        let mut cases = Vec::with_capacity(raw.cases.len());
        if raw.cases.is_empty() {
            loader.problem("cases", "a suite needs at least one case");
        }
        for (index, case) in raw.cases.into_iter().enumerate() {
            if let Some(case) = loader.case(index, case) {
                cases.push(case);
            }
        }
        match policy {
            Some(policy) if loader.problems.is_empty() => Ok(Self {
                path: path.to_owned(),
                name: raw.name.unwrap_or_else(|| {
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                }),
                policy,
                cases,
            }),
            _ => Err(invalid(loader.problems)),
        }
    }

    /// Runs every case through the webhook's review path.
    pub fn run(&self) -> Vec<CaseReport> {
        self.cases
            .iter()
            .map(|case| CaseReport {
                name: case.name.clone(),
                failures: run_case(case, &self.policy),
            })
            .collect()
    }
}

/// Answers the case as the server would, then checks the answer.
fn run_case(case: &Case, policy: &Policy) -> Vec<Failure> {
    match case.target {
        Target::Pod => run_pod_case(case, policy),
        Target::ConfigMap => run_config_map_case(case, policy),
    }
}

/// A driver ConfigMap's case, answered as `/mutate-spark-conf` answers it, the application's
/// totals read from the case's cluster pods.
fn run_config_map_case(case: &Case, policy: &Policy) -> Vec<Failure> {
    let request = match crate::admission::parse_review_of::<ConfigMap>(&case.body) {
        Ok(request) => request,
        Err(error) => {
            return vec![Failure::new(
                "input",
                "an AdmissionReview",
                error.to_string(),
            )];
        }
    };
    let cluster = crate::quota::watch::ledger_of(&case.cluster);
    match spark_conf::answer(request, policy, Some(cluster)) {
        Ok(offline) => expect::check(&case.expect, &offline.review.response, &[], &case.object),
        Err(error) => vec![Failure::new(
            "clusterPods",
            "the application's pods read",
            format!("failed to start the runtime that reads them: {error}"),
        )],
    }
}

/// A pod's case, answered as `/mutate` answers it, quotas decided on the case's cluster pods.
fn run_pod_case(case: &Case, policy: &Policy) -> Vec<Failure> {
    let request = match crate::admission::parse_review(&case.body) {
        Ok(request) => request,
        Err(error) => {
            return vec![Failure::new(
                "input",
                "an AdmissionReview",
                error.to_string(),
            )];
        }
    };
    let (mut review, mut summary) = crate::admission::review(request, policy, &case.cluster_facts);
    if let Some(claim) = summary.quota_claim.take() {
        let decision =
            crate::quota::Tracker::offline(crate::quota::watch::ledger_of(&case.cluster))
                .admit_locally(&policy.quotas, &claim, case.dry_run);
        crate::admission::apply_quota_decision(&mut review, &mut summary, &decision);
    }
    expect::check(
        &case.expect,
        &review.response,
        &summary.applied_rules,
        &case.object,
    )
}

/// Reports every key of `document` that a suite does not have.
fn unknown_fields(document: &Value, problems: &mut Vec<Problem>) {
    check_keys(document, "", SUITE_FIELDS, problems);
    let Some(cases) = document.get("cases").and_then(Value::as_array) else {
        return;
    };
    for (index, case) in cases.iter().enumerate() {
        let path = format!("cases[{index}]");
        check_keys(case, &path, CASE_FIELDS, problems);
        if let Some(expect) = case.get("expect") {
            expect::unknown_fields(expect, &format!("{path}.expect"), problems);
        }
    }
}

/// Reports the keys of `value` (when it is a mapping) that are not in `allowed`.
fn check_keys(value: &Value, path: &str, allowed: &[&str], problems: &mut Vec<Problem>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (path, message) in crate::policy::unknown_keys(object.keys(), path, allowed) {
        problems.push(Problem { path, message });
    }
}

/// Resolves what a suite refers to, collecting problems instead of stopping at the first.
struct Loader<'a> {
    base: &'a Path,
    /// Canonical: what the suite reads must resolve under it.
    root: &'a Path,
    problems: Vec<Problem>,
}

impl Loader<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A document given inline, or by a path relative to the suite (JSON or YAML).
    fn document(&mut self, value: &Value, path: &str) -> Option<(Value, Option<String>)> {
        match value {
            Value::String(file) => {
                let full = self.base.join(file);
                let confined = std::fs::canonicalize(&full).and_then(|resolved| {
                    if resolved.starts_with(self.root) {
                        Ok(resolved)
                    } else {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!(
                                "it resolves to {}, outside {}; a suite reads only files under the directory it runs in (or --root), so that a suite from an untrusted change cannot print files from elsewhere",
                                resolved.display(),
                                self.root.display()
                            ),
                        ))
                    }
                });
                match confined.and_then(|resolved| read_regular_file(&resolved)) {
                    Ok(text) => match parse_document(&text) {
                        Ok(document) => Some((document, Some(text))),
                        Err(message) => {
                            self.problem(path, format!("{file}: {message}"));
                            None
                        }
                    },
                    Err(error) => {
                        self.problem(
                            path,
                            format!(
                                "failed to read {} (relative to the suite): {error}",
                                full.display()
                            ),
                        );
                        None
                    }
                }
            }
            Value::Null => {
                self.problem(
                    path,
                    "missing; give a path relative to the suite or the document inline",
                );
                None
            }
            other => Some((other.clone(), None)),
        }
    }

    fn policy(&mut self, value: &Value) -> Option<Policy> {
        let (document, text) = self.document(value, "policy")?;
        // A policy file is parsed from its own text, so the hash written on pods is the one the
        // server computes for that file.
        let (text, prefix) = match (text, value) {
            (Some(text), Value::String(file)) => (text, format!("policy ({file})")),
            _ => match serde_json::to_string(&document) {
                Ok(text) => (text, "policy".to_owned()),
                Err(error) => {
                    self.problem("policy", error.to_string());
                    return None;
                }
            },
        };
        match Policy::parse(&text) {
            Ok(policy) => Some(policy),
            Err(error) => {
                for problem in error.problems() {
                    let path = if problem.path.is_empty() {
                        prefix.clone()
                    } else {
                        format!("{prefix}.{}", problem.path)
                    };
                    self.problem(path, problem.message);
                }
                None
            }
        }
    }

    fn case(&mut self, index: usize, raw: RawCase) -> Option<Case> {
        let path = format!("cases[{index}]");
        let before = self.problems.len();
        let name = raw.name.clone().unwrap_or_else(|| path.clone());
        if let Some(operation) = &raw.operation
            && !OPERATIONS.contains(&operation.as_str())
        {
            self.problem(
                format!("{path}.operation"),
                format!(
                    "{operation:?} is not an operation; allowed: {}",
                    OPERATIONS.join(", ")
                ),
            );
        }
        let input = self.document(&raw.input, &format!("{path}.input"));
        let target = input.as_ref().map(|(document, _)| Target::of(document));
        if target == Some(Target::ConfigMap) {
            let pod_facts = [
                (
                    "globalDefaultPriorityClass",
                    raw.global_default_priority_class.is_some(),
                ),
                ("kubernetesVersion", raw.kubernetes_version.is_some()),
            ];
            for (field, _) in pod_facts.into_iter().filter(|(_, given)| *given) {
                self.problem(
                    format!("{path}.{field}"),
                    "is for pods: a driver ConfigMap is answered without the cluster's PriorityClasses or version; remove it",
                );
            }
        }
        let expect = Expect::load(&raw.expect, &format!("{path}.expect"), target, self);
        let cluster = match &raw.cluster_pods {
            None => Some(Vec::new()),
            Some(value) => self
                .document(value, &format!("{path}.clusterPods"))
                .and_then(|(document, _)| match pod_list(document) {
                    Ok(pods) => Some(pods),
                    Err(message) => {
                        self.problem(format!("{path}.clusterPods"), message);
                        None
                    }
                }),
        };
        let kubernetes_version = match raw.kubernetes_version.as_deref() {
            None => None,
            Some(text) => match crate::engine::KubernetesVersion::parse(text) {
                Some(version) => Some(version),
                None => {
                    self.problem(
                        format!("{path}.kubernetesVersion"),
                        format!("{text:?} is not a Kubernetes version; write MAJOR.MINOR, such as 1.29 or v1.30.2"),
                    );
                    None
                }
            },
        };
        let (body, object, dry_run, target) =
            input.and_then(|(document, _)| match review_body(document, &raw, index) {
                Ok(built) => Some(built),
                Err(message) => {
                    self.problem(format!("{path}.input"), message);
                    None
                }
            })?;
        if self.problems.len() > before {
            return None;
        }
        Some(Case {
            name,
            target,
            body,
            object,
            dry_run,
            cluster: cluster?,
            cluster_facts: std::sync::Arc::new(crate::engine::ClusterFacts {
                global_default_priority_class: raw.global_default_priority_class,
                kubernetes_version,
            }),
            expect: expect?,
        })
    }
}

/// A document read as JSON when it is JSON, else as YAML.
fn parse_document(text: &str) -> Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(_) => crate::policy::from_yaml(text).map_err(|e| {
            format!(
                "neither JSON nor YAML: {}",
                e.to_string().lines().next().unwrap_or_default()
            )
        }),
    }
}

/// The AdmissionReview the apiserver would send for the case's input: a pod or a ConfigMap is
/// wrapped in a CREATE request; a review is used as it is. The case's namespace, user, groups,
/// dry run and operation replace the input's. Returns the body, the object as sent, the dry run
/// flag and which webhook path answers it.
fn review_body(
    document: Value,
    case: &RawCase,
    index: usize,
) -> Result<(Vec<u8>, Value, bool, Target), String> {
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Pod");
    let target = Target::of(&document);
    let uid = format!("spark-admission-test-{index}");
    let namespace = document
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let mut review = match kind {
        "AdmissionReview" => document,
        "Pod" => {
            crate::admission::create_review(document, &namespace, &uid, "spark-admission-test")
        }
        "ConfigMap" => {
            spark_conf::create_review(document, &namespace, &uid, "spark-admission-test")
        }
        other => {
            return Err(format!(
                "is a {other}; expected a Pod, a ConfigMap or an AdmissionReview"
            ));
        }
    };
    let Some(request) = review.get_mut("request").and_then(Value::as_object_mut) else {
        return Err("the AdmissionReview has no request".to_owned());
    };
    if let Some(namespace) = &case.namespace {
        request.insert("namespace".to_owned(), json!(namespace));
        // The apiserver fills the object's namespace from the request's.
        if let Some(metadata) = request
            .get_mut("object")
            .and_then(|o| o.get_mut("metadata"))
            .and_then(Value::as_object_mut)
        {
            metadata.insert("namespace".to_owned(), json!(namespace));
        }
    }
    if case.user.is_some() || case.groups.is_some() {
        let user = request.entry("userInfo").or_insert_with(|| json!({}));
        if let Some(user) = user.as_object_mut() {
            if let Some(name) = &case.user {
                user.insert("username".to_owned(), json!(name));
            }
            if let Some(groups) = &case.groups {
                user.insert("groups".to_owned(), json!(groups));
            }
        }
    }
    if let Some(dry_run) = case.dry_run {
        request.insert("dryRun".to_owned(), json!(dry_run));
    }
    if let Some(operation) = &case.operation {
        request.insert("operation".to_owned(), json!(operation));
    }
    let dry_run = request
        .get("dryRun")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let object = request.get("object").cloned().unwrap_or(Value::Null);
    let body = serde_json::to_vec(&review).map_err(|e| e.to_string())?;
    // The server's parser decides what a valid review is; a bad one is a suite error here, not
    // a failed case.
    let parsed = match target {
        Target::Pod => crate::admission::parse_review(&body).map(drop),
        Target::ConfigMap => crate::admission::parse_review_of::<ConfigMap>(&body).map(drop),
    };
    parsed.map_err(|e| e.to_string())?;
    Ok((body, object, dry_run, target))
}

/// The pods of a pod list: a `List`/`PodList` with `items` (what `kubectl get pods -o json`
/// prints), an array, or one pod. `mutate --pods` reads its list with this too.
pub(crate) fn pod_list(document: Value) -> Result<Vec<LeanPod>, String> {
    let items = match document {
        Value::Array(items) => items,
        Value::Object(mut object) => match object.remove("items") {
            Some(Value::Array(items)) => items,
            Some(_) => return Err("items is not a list".to_owned()),
            None => vec![Value::Object(object)],
        },
        _ => {
            return Err(
                "is not a pod list (a List with items, an array of pods, or a pod)".to_owned(),
            );
        }
    };
    let mut pods = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let pod: LeanPod = serde_json::from_value(item)
            .map_err(|e| format!("items[{index}] is not a pod: {e}"))?;
        pods.push(pod);
    }
    Ok(pods)
}

/// The counts of a run, and the exit code they mean.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Suites that could not be read or are invalid.
    pub errors: usize,
}

impl Totals {
    /// 0 when every case passed, 1 when a case failed, 2 when a suite could not be run.
    pub fn exit_code(self) -> u8 {
        if self.errors > 0 {
            2
        } else if self.failed > 0 {
            1
        } else {
            0
        }
    }
}

/// One suite's outcome, for the text and JUnit reports.
#[derive(Debug)]
pub struct SuiteReport {
    /// The suite file.
    pub path: PathBuf,
    /// The suite's name.
    pub name: String,
    /// Its cases, when it could be loaded.
    pub cases: Vec<CaseReport>,
    /// Why it could not be loaded.
    pub error: Option<String>,
}

/// Finds, loads and runs the suites of `paths`.
pub fn run_paths(paths: &[PathBuf], root: &Path) -> (Vec<SuiteReport>, Totals) {
    let (files, errors) = discover(paths);
    let mut reports: Vec<SuiteReport> = errors
        .into_iter()
        .map(|error| SuiteReport {
            path: match &error {
                Error::Read { path, .. } | Error::NoSuites(path) => path.clone(),
                Error::Syntax { path, .. } | Error::Invalid { path, .. } => path.clone(),
            },
            name: String::new(),
            cases: Vec::new(),
            error: Some(error.to_string()),
        })
        .collect();
    for file in files {
        reports.push(match Suite::load(&file, root) {
            Ok(suite) => SuiteReport {
                cases: suite.run(),
                name: suite.name,
                path: file,
                error: None,
            },
            Err(error) => SuiteReport {
                name: file.display().to_string(),
                path: file,
                cases: Vec::new(),
                error: Some(error.to_string()),
            },
        });
    }
    let mut totals = Totals::default();
    for report in &reports {
        totals.errors += usize::from(report.error.is_some());
        for case in &report.cases {
            if case.passed() {
                totals.passed += 1;
            } else {
                totals.failed += 1;
            }
        }
    }
    (reports, totals)
}

/// The human report: one line per case, each failure's diff under its case, then the counts.
pub fn text_report(reports: &[SuiteReport], totals: Totals) -> String {
    let mut text = String::new();
    for report in reports {
        if let Some(error) = &report.error {
            text.push_str(&format!("ERROR {error}\n"));
            continue;
        }
        for case in &report.cases {
            let status = if case.passed() { "PASS" } else { "FAIL" };
            text.push_str(&format!(
                "{status} {}: {}\n",
                report.path.display(),
                case.name
            ));
            for failure in &case.failures {
                for line in failure.to_string().lines() {
                    text.push_str(&format!("    {line}\n"));
                }
            }
        }
    }
    text.push_str(&format!(
        "{} passed, {} failed",
        totals.passed, totals.failed
    ));
    if totals.errors > 0 {
        text.push_str(&format!(
            ", {} suite{} could not be run",
            totals.errors,
            if totals.errors == 1 { "" } else { "s" }
        ));
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unknown_fields_are_all_reported_with_a_hint() {
        let document = json!({
            "policy": {},
            "case": [],
            "cases": [{"input": {}, "expect": {"lables": {}}, "dryrun": true}],
        });
        let mut problems = Vec::new();
        unknown_fields(&document, &mut problems);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].starts_with("case: unknown field \"case\" (did you mean \"cases\"?)"));
        assert!(
            text[1].starts_with(
                "cases[0].dryrun: unknown field \"dryrun\" (did you mean \"dryRun\"?)"
            )
        );
        assert!(text[2].starts_with(
            "cases[0].expect.lables: unknown field \"lables\" (did you mean \"labels\"?)"
        ));
    }

    fn raw_case(namespace: Option<&str>) -> RawCase {
        RawCase {
            name: None,
            input: Value::Null,
            namespace: namespace.map(str::to_owned),
            user: None,
            groups: None,
            dry_run: None,
            operation: None,
            cluster_pods: None,
            global_default_priority_class: None,
            kubernetes_version: None,
            expect: Value::Null,
        }
    }

    #[test]
    fn a_configmap_or_its_review_is_answered_as_a_configmap_and_anything_else_as_a_pod() {
        let config_map = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "spark-drv-1-conf-map", "namespace": "jobs"},
            "data": {"spark.properties": "spark.app.id=spark-1\n"},
        });
        let (body, object, dry_run, target) =
            review_body(config_map.clone(), &raw_case(Some("team-a")), 3).unwrap();
        assert_eq!(target, Target::ConfigMap);
        assert!(!dry_run);
        // The case's namespace replaces the object's, as the apiserver fills it from the
        // request's.
        assert_eq!(object["metadata"]["namespace"], "team-a");
        let review: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["request"]["uid"], "spark-admission-test-3");
        assert_eq!(review["request"]["namespace"], "team-a");
        assert_eq!(review["request"]["resource"]["resource"], "configmaps");
        // Its review, as sent: a ConfigMap too.
        let (_, _, _, target) = review_body(review, &raw_case(None), 0).unwrap();
        assert_eq!(target, Target::ConfigMap);

        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let (_, _, _, target) = review_body(pod, &raw_case(None), 0).unwrap();
        assert_eq!(target, Target::Pod);
        let secret = json!({"kind": "Secret", "metadata": {"name": "s"}});
        assert_eq!(
            review_body(secret, &raw_case(None), 0).unwrap_err(),
            "is a Secret; expected a Pod, a ConfigMap or an AdmissionReview"
        );
    }

    #[test]
    fn suite_files_are_named_test_yaml() {
        assert!(is_suite_file(Path::new("a/platform.test.yaml")));
        assert!(is_suite_file(Path::new("platform.test.yml")));
        assert!(!is_suite_file(Path::new("platform.yaml")));
        assert!(!is_suite_file(Path::new("test.yaml")));
    }
}
