//! AdmissionReview in, AdmissionReview out. No I/O: the server hands in the body and the
//! policy in force, and gets back the response body and a summary for metrics and logs.
//! Spark pods are reviewed here; the driver's configuration ConfigMap in [`spark_conf`].

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::{Deserialize, Serialize};

pub mod spark_conf;
pub mod update;

use crate::engine::{self, ClusterFacts, RequestContext};
use crate::lean::PodWithoutManagedFields;
use crate::policy::{ConfigMapRef, Policy, Role};

/// Errors a request body can have; the server answers them with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON of the AdmissionReview shape.
    #[error("body is not an AdmissionReview: {0}")]
    Malformed(#[source] serde_json::Error),
    /// Not UTF-8, so not JSON (RFC 8259 §8.1), wherever the bad bytes are.
    #[error("body is not an AdmissionReview: JSON must be UTF-8, and {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// JSON, but another kind or API version.
    #[error(
        "body is a {kind} of {api_version}; expected kind AdmissionReview of admission.k8s.io/v1"
    )]
    WrongKind {
        /// The `kind` found.
        kind: String,
        /// The `apiVersion` found.
        api_version: String,
    },
    /// An AdmissionReview without a `request`.
    #[error("AdmissionReview has no request")]
    MissingRequest,
    /// More JSON objects than a review is read with (see [`MAX_OBJECTS`]).
    #[error(
        "the review holds {objects} JSON objects, more than the {MAX_OBJECTS} spark-admission reads (a real Spark pod holds a few hundred, managedFields included); every one can take up to 3 KiB once read, so the request is refused rather than read"
    )]
    TooManyObjects {
        /// How many it holds (counted up to a little past the limit).
        objects: usize,
        /// The request's uid, when it could be found without reading the objects, so the
        /// answer can refuse the request by name.
        uid: Option<String>,
    },
}

/// The most JSON objects a review body may hold (counted outside strings, anywhere in it).
///
/// Reading a pod turns each JSON object into a typed Kubernetes struct, and some are large: a
/// `Volume` takes 3.2 KiB whatever it holds, a `Container` 2.1 KiB, so `{"name":"v1"}` (13
/// bytes) becomes 250 times its size, and a 3 MiB pod of volumes would take 600 MiB. A review
/// is read on a worker thread without a pause, so at most one per thread is being read at
/// once; this bound keeps each under about 32 MiB. The executor review of a real Spark 4.3 pod
/// holds 306, managedFields included.
pub const MAX_OBJECTS: usize = 10_000;

/// How many JSON objects `body` holds outside strings, counting no further than `limit + 1`;
/// a linear scan over bytes that allocates nothing. Only `"`, `\` and `{` matter: a `{`
/// inside a string (managedFields' `k:{...}` keys, JSON in an annotation) is text.
fn count_objects(body: &[u8], limit: usize) -> usize {
    let mut objects = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'{' {
            objects += 1;
            if objects > limit {
                break;
            }
        }
    }
    objects
}

/// The request uid of a review body, read without building anything else (every other value
/// is skipped in place).
fn request_uid(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Review {
        request: Request,
    }
    #[derive(Deserialize)]
    struct Request {
        uid: String,
    }
    serde_json::from_str::<Review>(text)
        .ok()
        .map(|review| review.request.uid)
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The AdmissionReview sent back to the apiserver.
///
/// kube-rs has a response type, but it writes the patch as an array of numbers (kube-rs issue
/// 1781); the apiserver wants a base64 string, as Go encodes `[]byte`. This type writes it right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseReview {
    /// `admission.k8s.io/v1`.
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// The answer.
    pub response: Response,
}

impl ResponseReview {
    /// `allowed: true` for `uid`, with no patch: what a webhook that changes nothing answers
    /// (the load benchmark's baseline, `examples/baseline_server.rs`).
    pub fn allowed(uid: &str) -> Self {
        Response::allow(uid).into_review()
    }

    /// The review as the JSON text the apiserver reads: the bytes `serde_json::to_vec` gives,
    /// written into one buffer sized up front, with the patch copied as it is. Base64 holds no
    /// character JSON escapes, so scanning its few kilobytes byte by byte for one (as
    /// `serde_json` does with every string) was the largest single cost of answering a pod; a
    /// patch that does hold one (never one this crate encoded) is escaped as any string.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        // Every field named, so a field added to either type cannot be left out of the text.
        let Self {
            api_version,
            kind,
            response,
        } = self;
        let Response {
            uid,
            allowed,
            status,
            patch,
            patch_type,
            audit_annotations,
            warnings,
        } = response;
        // Room for the usual answer; a long denial or many warnings grow it once or twice.
        let mut out = Vec::with_capacity(256 + uid.len() + patch.as_ref().map_or(0, String::len));
        out.extend_from_slice(b"{\"apiVersion\":");
        serde_json::to_writer(&mut out, api_version)?;
        out.extend_from_slice(b",\"kind\":");
        serde_json::to_writer(&mut out, kind)?;
        out.extend_from_slice(b",\"response\":{\"uid\":");
        serde_json::to_writer(&mut out, uid)?;
        out.extend_from_slice(if *allowed {
            b",\"allowed\":true"
        } else {
            b",\"allowed\":false"
        });
        if let Some(status) = status {
            out.extend_from_slice(b",\"status\":");
            serde_json::to_writer(&mut out, status)?;
        }
        if let Some(patch) = patch {
            out.extend_from_slice(b",\"patch\":");
            if needs_no_escaping(patch) {
                out.push(b'"');
                out.extend_from_slice(patch.as_bytes());
                out.push(b'"');
            } else {
                serde_json::to_writer(&mut out, patch)?;
            }
        }
        if let Some(patch_type) = patch_type {
            out.extend_from_slice(b",\"patchType\":");
            serde_json::to_writer(&mut out, patch_type)?;
        }
        if !audit_annotations.is_empty() {
            out.extend_from_slice(b",\"auditAnnotations\":");
            serde_json::to_writer(&mut out, audit_annotations)?;
        }
        if !warnings.is_empty() {
            out.extend_from_slice(b",\"warnings\":");
            serde_json::to_writer(&mut out, warnings)?;
        }
        out.extend_from_slice(b"}}");
        Ok(out)
    }

    /// The refusal of a request that could not be read (`error`), when its uid could: the
    /// user then sees why, where an HTTP error would only say that the webhook failed.
    /// `None` for every other error, which is answered with HTTP 400.
    pub fn refusing_unread(error: &Error) -> Option<Self> {
        let Error::TooManyObjects { uid: Some(uid), .. } = error else {
            return None;
        };
        let mut response = Response::allow(uid);
        response.deny(
            format!("spark-admission: {error}"),
            "RequestEntityTooLarge",
            413,
        );
        Some(response.into_review())
    }
}

/// Whether JSON writes `text` as it is between quotes: it holds no `"`, `\\` or control
/// character. Every byte is looked at, with no early exit, so the loop is vectorised.
fn needs_no_escaping(text: &str) -> bool {
    !text.bytes().fold(false, |escaped, byte| {
        escaped | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    })
}

/// The `response` of an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// The request's uid.
    pub uid: String,
    /// Whether the object is admitted.
    pub allowed: bool,
    /// Why not, when not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResponseStatus>,
    /// The JSON Patch, base64 encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` when there is a patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Recorded in the audit log, prefixed by the apiserver with the webhook's name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    /// Shown to the user by kubectl and client libraries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A denial's status (a `metav1.Status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseStatus {
    /// Always `Failure`.
    pub status: String,
    /// Shown to the user.
    pub message: String,
    /// `Forbidden`, `Invalid`, `InternalError`.
    pub reason: String,
    /// HTTP-like code: 403, 422, 500.
    pub code: u16,
}

impl Response {
    fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            audit_annotations: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    fn deny(&mut self, message: String, reason: &str, code: u16) {
        self.allowed = false;
        self.status = Some(ResponseStatus {
            status: "Failure".to_owned(),
            message,
            reason: reason.to_owned(),
            code,
        });
    }

    fn into_review(self) -> ResponseReview {
        ResponseReview {
            api_version: "admission.k8s.io/v1".to_owned(),
            kind: "AdmissionReview".to_owned(),
            response: self,
        }
    }

    /// The decoded patch, if any.
    pub fn decoded_patch(&self) -> Option<json_patch::Patch> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.patch.as_ref()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// How a request was answered, for metrics (`result` label) and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a non-empty patch.
    Patched,
    /// Allowed unchanged.
    Unchanged,
    /// Refused by the policy.
    Denied,
    /// Could not be handled (malformed body); never produced by [`review`].
    Error,
}

impl Outcome {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// What happened to one review, for metrics and logs.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'static str,
    /// The pod's Spark role, when it is a Spark pod.
    pub role: Option<Role>,
    /// How it was answered.
    pub outcome: Outcome,
    /// Rules that matched.
    pub applied_rules: Vec<String>,
    /// Pod name (or generateName), for logs.
    pub pod: String,
    /// Namespace, for logs.
    pub namespace: String,
    /// Whether the request was a dry run.
    pub dry_run: bool,
    /// The denial message, if denied.
    pub denial: Option<String>,
    /// The pod's claim on the quotas that match it, when it is admitted so far: the caller
    /// decides it against live state ([`crate::quota::Tracker`]) before answering, and applies
    /// the decision with [`apply_quota_decision`].
    pub quota_claim: Option<crate::quota::Claim>,
}

/// Parses a request body carrying pods, checking kind and version.
///
/// `metadata.managedFields` is skipped, not parsed: the apiserver sends it on every CREATE, it is
/// half the parse time of a Spark pod (a tree of maps as large as the pod spec), and nothing
/// here reads or patches it. The returned pods have `managed_fields: None`.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<Pod>> {
    parse_review_within(body, MAX_OBJECTS)
}

/// [`parse_review`] with another bound on the JSON objects read than [`MAX_OBJECTS`]: for
/// measuring what reviews past the bound would cost (`tests/cost_linear.rs`: the engine stays
/// linear however far the bound is raised), never for serving.
pub fn parse_review_within(body: &[u8], max_objects: usize) -> Result<AdmissionRequest<Pod>> {
    let request: AdmissionRequest<PodWithoutManagedFields> =
        parse_review_of_within(body, max_objects)?;
    Ok(AdmissionRequest {
        types: request.types,
        uid: request.uid,
        kind: request.kind,
        resource: request.resource,
        sub_resource: request.sub_resource,
        request_kind: request.request_kind,
        request_resource: request.request_resource,
        request_sub_resource: request.request_sub_resource,
        name: request.name,
        namespace: request.namespace,
        operation: request.operation,
        user_info: request.user_info,
        object: request.object.map(|pod| pod.0),
        old_object: request.old_object.map(|pod| pod.0),
        dry_run: request.dry_run,
        options: request.options,
    })
}

/// Parses a request body carrying objects of type `K`, checking kind and version, and that it
/// holds at most [`MAX_OBJECTS`] JSON objects.
pub fn parse_review_of<K: kube::Resource + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<AdmissionRequest<K>> {
    parse_review_of_within(body, MAX_OBJECTS)
}

fn parse_review_of_within<K: kube::Resource + serde::de::DeserializeOwned>(
    body: &[u8],
    max_objects: usize,
) -> Result<AdmissionRequest<K>> {
    // Checked up front because serde_json does not check the UTF-8 of what it skips
    // (`managedFields`, unknown keys): a body the apiserver could never have sent would
    // otherwise be answered as if it were valid.
    let text = std::str::from_utf8(body).map_err(Error::NotUtf8)?;
    // Every object starts with a `{`, so a body with few enough of them (every real one) needs
    // no closer look. memchr counts them many bytes at a time: the plain loop the compiler was
    // trusted to vectorise took four instructions a byte, a tenth of parsing the whole review.
    let braces = memchr::memchr_iter(b'{', body).count();
    let objects = if braces > max_objects {
        count_objects(body, max_objects)
    } else {
        braces
    };
    if objects > max_objects {
        return Err(Error::TooManyObjects {
            objects,
            uid: request_uid(text),
        });
    }
    let review: AdmissionReview<K> = serde_json::from_str(text).map_err(Error::Malformed)?;
    if review.types.kind != "AdmissionReview" || review.types.api_version != "admission.k8s.io/v1" {
        return Err(Error::WrongKind {
            kind: review.types.kind,
            api_version: review.types.api_version,
        });
    }
    review.try_into().map_err(|_| Error::MissingRequest)
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Whether [`review`] puts `request` through the policy: a CREATE of a core Pod itself, not of
/// one of its subresources (SPEC §2). Every other request is allowed unchanged.
pub fn mutates(request: &AdmissionRequest<Pod>) -> bool {
    request.operation == Operation::Create
        && request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.sub_resource.is_none()
}

/// The AdmissionReview the apiserver sends when `pod` (its JSON, as a client would post it) is
/// created in `namespace`, from `username`. The tools that answer a bare pod (`mutate`, policy
/// test suites) wrap it in this and send it through [`parse_review`] and [`review`], as the
/// server would receive it.
pub fn create_review(
    pod: serde_json::Value,
    namespace: &str,
    uid: &str,
    username: &str,
) -> serde_json::Value {
    let name = pod
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or_else(|| serde_json::json!(""));
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": username},
            "object": pod,
            "dryRun": false,
        },
    })
}

/// Answers one admission request with the policy, knowing `cluster` of the cluster (what the
/// server has learnt from it; `ClusterFacts::default()` when nothing is known). Only CREATE of a
/// Spark pod is mutated. An UPDATE of a Spark pod is refused when it changes the labels quotas
/// count it by or raises its resources past the policy's caps ([`update`]); when it raises
/// them on a pod quotas match, `summary.quota_claim` holds the claim to decide. Everything else
/// is allowed unchanged.
pub fn review(
    mut request: AdmissionRequest<Pod>,
    policy: &Policy,
    cluster: &Arc<ClusterFacts>,
) -> (ResponseReview, Summary) {
    let mut response = Response::allow(&request.uid);
    let mutates = mutates(&request);
    let mut summary = Summary {
        operation: operation_name(&request.operation),
        role: None,
        outcome: Outcome::Unchanged,
        applied_rules: Vec::new(),
        pod: request.name.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        dry_run: request.dry_run,
        denial: None,
        quota_claim: None,
    };
    if mutates && let Some(pod) = request.object.take() {
        mutate(pod, &mut response, &mut summary, policy, cluster);
    } else if update::guards(&request)
        && let (Some(old), Some(new)) = (request.old_object.as_ref(), request.object.as_ref())
    {
        update::review(old, new, &mut response, &mut summary, policy, cluster);
    }
    (response.into_review(), summary)
}

fn mutate(
    mut pod: Pod,
    response: &mut Response,
    summary: &mut Summary,
    policy: &Policy,
    cluster: &Arc<ClusterFacts>,
) {
    if summary.pod.is_empty() {
        summary.pod = pod.metadata.generate_name.clone().unwrap_or_default();
    }
    // `parse_review` never reads managedFields; a request parsed whole may carry them. The policy
    // never touches them, so they are left out of the diff (the patch paths do not depend on it).
    pod.metadata.managed_fields = None;
    let context = RequestContext {
        namespace: summary.namespace.clone(),
        cluster: Arc::clone(cluster),
    };
    let Some((evaluation, original)) = engine::evaluate_owned(pod, &context, policy) else {
        return;
    };
    summary.role = Some(evaluation.role);
    summary.applied_rules = evaluation.applied_rules;
    response.warnings = evaluation.warnings;
    response
        .audit_annotations
        .insert("applied-rules".to_owned(), summary.applied_rules.join(","));
    response
        .audit_annotations
        .insert("policy-hash".to_owned(), policy.hash.clone());
    if let Some(denial) = evaluation.denial {
        summary.outcome = Outcome::Denied;
        response.deny(denial.clone(), "Forbidden", 403);
        summary.denial = Some(denial);
        return;
    }
    if !policy.quotas.is_empty() {
        summary.quota_claim = crate::quota::Claim::new(
            policy,
            &evaluation.spark,
            &evaluation.desired,
            &response.uid,
        );
    }
    // Written as text directly: a patch held as JSON values costs many times its text.
    let encoded = crate::patch::encode_from(original, evaluation.desired)
        .map(|patch| (!patch.is_empty()).then(|| to_base64(&patch.json)));
    match encoded {
        Ok(None) => {}
        Ok(Some(patch)) => {
            summary.outcome = Outcome::Patched;
            response.patch = Some(patch);
            response.patch_type = Some("JSONPatch".to_owned());
        }
        Err(error) => {
            // A pod the webhook could not patch is refused, not admitted without the policy.
            summary.outcome = Outcome::Error;
            response.deny(
                format!("spark-admission could not build the patch: {error}"),
                "InternalError",
                500,
            );
        }
    }
}

/// `bytes` in standard base64 with padding, as the apiserver reads a patch (Go's `[]byte` in
/// JSON), into a string sized once. The crate's `encode` zero-fills a buffer of the whole length
/// first; `encode_string` encodes through a small stack buffer instead.
pub(crate) fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut out);
    out
}

/// Applies the quotas' `decision` on the pod to its answer: an admission changes nothing; a
/// refusal replaces the answer with a 403 whose message names every limit the pod would
/// exceed, joined, as the denial the user sees. The server, `mutate --pods` and the policy
/// suites all apply quotas through this, so they answer alike.
pub fn apply_quota_decision(
    review: &mut ResponseReview,
    summary: &mut Summary,
    decision: &crate::quota::Decision,
) {
    if decision.admitted() {
        return;
    }
    let violations = &decision.violations;
    let message = violations
        .iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let response = &mut review.response;
    response.patch = None;
    response.patch_type = None;
    response.deny(message.clone(), "Forbidden", 403);
    summary.outcome = Outcome::Denied;
    summary.denial = Some(message);
}

/// The validating webhook for the policy ConfigMap.
///
/// The ConfigMap is recognised by identity, its namespace and name, never by labels: a label
/// can be removed in the same UPDATE that stores a broken policy. On CREATE and UPDATE of that
/// one ConfigMap, a missing `key` or an invalid policy is refused with every validation error,
/// so `kubectl apply` shows them. Every other ConfigMap is allowed without its data being read,
/// and so is DELETE: the running replicas keep the policy in force, and refusing it would block
/// uninstalling and deleting the namespace.
pub fn validate_policy(
    mut request: AdmissionRequest<ConfigMap>,
    policy_configmap: &ConfigMapRef,
) -> (ResponseReview, Outcome) {
    let mut response = Response::allow(&request.uid);
    let relevant = matches!(request.operation, Operation::Create | Operation::Update)
        && request.kind.group.is_empty()
        && request.kind.kind == "ConfigMap";
    let Some(config_map) = request.object.take().filter(|_| relevant) else {
        return (response.into_review(), Outcome::Unchanged);
    };
    let target = policy_configmap;
    let namespace = request
        .namespace
        .as_deref()
        .or(config_map.metadata.namespace.as_deref())
        .unwrap_or_default();
    // A generated name is in the object by the time validating webhooks run; the request's
    // name is the fallback.
    let name = config_map
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&request.name);
    if namespace != target.namespace || name != target.name {
        return (response.into_review(), Outcome::Unchanged);
    }
    let problem = match config_map.data.as_ref().and_then(|d| d.get(&target.key)) {
        None => Some(format!(
            "ConfigMap {namespace}/{name} holds spark-admission's policy but has no data key {:?}; put the policy under that key (the server's --policy-key)",
            target.key
        )),
        Some(text) => crate::policy::Policy::parse(text)
            .err()
            .map(|e| format!("ConfigMap {namespace}/{name} key {}: {e}", target.key)),
    };
    match problem {
        Some(message) => {
            response.deny(message, "Invalid", 422);
            (response.into_review(), Outcome::Denied)
        }
        None => (response.into_review(), Outcome::Unchanged),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    const EXECUTOR_REVIEW: &[u8] =
        include_bytes!("../../tests/fixtures/spark-4.3/executor-review.json");

    /// `to_json` writes what serde_json writes for the same review, byte for byte, whatever
    /// parts the answer has, and escapes a patch that needs it.
    #[test]
    fn to_json_writes_what_serde_json_writes() {
        let policy = crate::Policy::builtin_example();
        let request = parse_review(EXECUTOR_REVIEW).expect("the fixture parses");
        let (patched, _) = review(request, &policy, &Default::default());
        assert!(
            patched.response.patch.is_some(),
            "the example policy patches the executor"
        );
        let mut denied = Response::allow("uid \"quoted\" \u{e9}\u{1}");
        denied.deny("no \"room\"\n".to_owned(), "Forbidden", 403);
        denied.warnings = vec!["first".to_owned(), "second \\ back".to_owned()];
        denied
            .audit_annotations
            .insert("spark-admission/rule".to_owned(), "a\tb".to_owned());
        let mut odd_patch = Response::allow("uid");
        odd_patch.patch = Some("not \"base64\"\u{1f}/+=".to_owned());
        odd_patch.patch_type = Some("JSONPatch".to_owned());
        for review in [
            ResponseReview::allowed("7c1d-\u{0}"),
            patched,
            denied.into_review(),
            odd_patch.into_review(),
        ] {
            let written = review.to_json().expect("the review is written");
            let expected = serde_json::to_vec(&review).expect("serde_json writes the review");
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    #[test]
    fn parse_review_reads_everything_but_managed_fields() {
        let full: AdmissionRequest<Pod> = parse_review_of(EXECUTOR_REVIEW).unwrap();
        let lean = parse_review(EXECUTOR_REVIEW).unwrap();
        let full_pod = full.object.clone().unwrap();
        assert!(
            full_pod.metadata.managed_fields.is_some(),
            "the fixture carries managedFields, so the test compares something"
        );
        let mut expected = full_pod;
        expected.metadata.managed_fields = None;
        assert_eq!(lean.object, Some(expected));
        assert_eq!(lean.uid, full.uid);
        assert_eq!(lean.kind, full.kind);
        assert_eq!(lean.namespace, full.namespace);
        assert_eq!(lean.operation, full.operation);
        assert_eq!(lean.user_info, full.user_info);
        assert_eq!(lean.dry_run, full.dry_run);
        assert_eq!(lean.types, full.types);
    }

    #[test]
    fn parse_review_checks_what_it_skips_is_still_json() {
        let mut review: serde_json::Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
        // A managedFields of the wrong shape is not read, so it is not an error...
        review["request"]["object"]["metadata"]["managedFields"] = serde_json::json!("junk");
        let body = serde_json::to_vec(&review).unwrap();
        assert!(parse_review(&body).is_ok());
        // ...but the body must still be JSON all the way through.
        let text = String::from_utf8(body)
            .unwrap()
            .replace("\"junk\"", "[{\"a\": }]");
        assert!(matches!(
            parse_review(text.as_bytes()),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn objects_are_counted_outside_strings_only() {
        assert_eq!(count_objects(br#"{"a": {"b": [{}, {}]}}"#, 100), 4);
        // Braces in strings, escaped quotes included, are text.
        assert_eq!(
            count_objects(br#"{"k:{"name":"x"}": "{{{", "q": ""{", "r": {}}"#, 100),
            2
        );
        assert_eq!(count_objects(EXECUTOR_REVIEW, 10_000), 306);
        // The count stops just past the limit.
        assert_eq!(count_objects(&b"{".repeat(1000), 10), 11);
    }

    #[test]
    fn a_review_with_more_objects_than_it_reads_is_refused_by_uid_without_being_read() {
        let mut review: serde_json::Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
        let volumes: Vec<serde_json::Value> = (0..MAX_OBJECTS)
            .map(|i| serde_json::json!({"name": format!("v{i}")}))
            .collect();
        review["request"]["object"]["spec"]["volumes"] = serde_json::Value::Array(volumes);
        let body = serde_json::to_vec(&review).unwrap();
        let error = parse_review(&body).unwrap_err();
        let Error::TooManyObjects { objects, uid } = &error else {
            panic!("{error}");
        };
        assert_eq!(*objects, MAX_OBJECTS + 1);
        assert_eq!(uid.as_deref(), review["request"]["uid"].as_str());
        let refusal = ResponseReview::refusing_unread(&error).unwrap().response;
        assert!(!refusal.allowed);
        let status = refusal.status.unwrap();
        assert_eq!(status.code, 413);
        assert_eq!(
            status.message,
            format!(
                "spark-admission: the review holds {} JSON objects, more than the 10000 spark-admission reads (a real Spark pod holds a few hundred, managedFields included); every one can take up to 3 KiB once read, so the request is refused rather than read",
                MAX_OBJECTS + 1
            )
        );
        // Under the limit it is read as usual.
        review["request"]["object"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .truncate(MAX_OBJECTS - 306);
        assert!(parse_review(&serde_json::to_vec(&review).unwrap()).is_ok());
    }

    #[test]
    fn parse_review_reads_old_object_and_checks_the_kind() {
        let mut review: serde_json::Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
        review["request"]["oldObject"] = review["request"]["object"].clone();
        let parsed = parse_review(&serde_json::to_vec(&review).unwrap()).unwrap();
        assert!(parsed.object.is_some());
        assert_eq!(parsed.old_object, parsed.object);

        review["kind"] = serde_json::json!("AdmissionResponse");
        assert!(matches!(
            parse_review(&serde_json::to_vec(&review).unwrap()),
            Err(Error::WrongKind { .. })
        ));
    }
}
