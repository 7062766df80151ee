//! AdmissionReview in, AdmissionReview out. No I/O: the server hands in the body and the
//! policy in force, and gets back the response body and a summary for metrics and logs.

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::Status;

use crate::engine::{self, RequestContext};
use crate::policy::{Policy, Role};

/// Errors a request body can have; the server answers them with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON of the AdmissionReview shape.
    #[error("body is not an AdmissionReview: {0}")]
    Malformed(#[source] serde_json::Error),
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
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}

/// Parses a request body, checking kind and version.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<Pod>> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body).map_err(Error::Malformed)?;
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

/// Answers one admission request with the policy. Only CREATE of a Spark pod is mutated;
/// everything else is allowed unchanged.
pub fn review(
    mut request: AdmissionRequest<Pod>,
    policy: &Policy,
) -> (AdmissionReview<DynamicObject>, Summary) {
    let response = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.sub_resource.is_none();
    let mut summary = Summary {
        operation: operation_name(&request.operation),
        role: None,
        outcome: Outcome::Unchanged,
        applied_rules: Vec::new(),
        pod: request.name.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        dry_run: request.dry_run,
        denial: None,
    };
    let pod = match request.object.take() {
        Some(pod) if is_pod && request.operation == Operation::Create => pod,
        _ => return (response.into_review(), summary),
    };
    let response = mutate(pod, response, &mut summary, policy);
    (response.into_review(), summary)
}

fn mutate(
    mut pod: Pod,
    mut response: AdmissionResponse,
    summary: &mut Summary,
    policy: &Policy,
) -> AdmissionResponse {
    if summary.pod.is_empty() {
        summary.pod = pod.metadata.generate_name.clone().unwrap_or_default();
    }
    // managedFields can be most of the pod; the policy never touches it, so it is left out of
    // the diff (the patch paths do not depend on it).
    pod.metadata.managed_fields = None;
    let context = RequestContext {
        namespace: summary.namespace.clone(),
    };
    let Some(evaluation) = engine::evaluate(&pod, &context, policy) else {
        return response;
    };
    summary.role = Some(evaluation.role);
    summary.applied_rules = evaluation.applied_rules.clone();
    if !evaluation.warnings.is_empty() {
        response.warnings = Some(evaluation.warnings.clone());
    }
    response.audit_annotations.insert(
        "applied-rules".to_owned(),
        evaluation.applied_rules.join(","),
    );
    response
        .audit_annotations
        .insert("policy-hash".to_owned(), policy.hash.clone());
    if let Some(denial) = evaluation.denial {
        summary.outcome = Outcome::Denied;
        summary.denial = Some(denial.clone());
        response.allowed = false;
        response.result = Status::failure(&denial, "Forbidden").with_code(403);
        return response;
    }
    match crate::patch::diff(pod, evaluation.desired) {
        Ok(patch) if patch.0.is_empty() => response,
        Ok(patch) => match response.clone().with_patch(patch) {
            Ok(patched) => {
                summary.outcome = Outcome::Patched;
                patched
            }
            Err(error) => deny_internal(response, summary, &error),
        },
        Err(error) => deny_internal(response, summary, &error),
    }
}

/// A pod the webhook could not patch is refused, not admitted silently without the policy.
fn deny_internal(
    mut response: AdmissionResponse,
    summary: &mut Summary,
    error: &dyn std::error::Error,
) -> AdmissionResponse {
    summary.outcome = Outcome::Error;
    response.allowed = false;
    response.result = Status::failure(
        &format!("spark-admission could not build the patch: {error}"),
        "InternalError",
    )
    .with_code(500);
    response
}
