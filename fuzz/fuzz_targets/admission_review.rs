//! Arbitrary bytes as the body of a `/mutate` request, through the same calls the route makes
//! (`parse_review`, then `review`) with the built-in example policy and no quotas.
//!
//! Beyond "never a panic", an answer with a patch is checked the way the apiserver uses it: the
//! patch must apply to the pod exactly as the request carried it (its raw JSON, unknown fields
//! and all), the result must be the pod the engine wanted, and reviewing the patched pod again
//! must give no patch at all (the webhook is idempotent, SPEC: reinvocation).

#![no_main]

use std::sync::LazyLock;

use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use spark_admission::Policy;
use spark_admission::admission::{self, ResponseReview};
use spark_admission::engine::{self, RequestContext};

static POLICY: LazyLock<Policy> =
    LazyLock::new(
        || match Policy::parse(spark_admission::policy::BUILTIN_EXAMPLE) {
            Ok(policy) if policy.quotas.is_empty() => policy,
            Ok(_) => panic!("the example policy has quotas; this target wants the quota-free path"),
            Err(error) => panic!("the example policy does not parse: {error}"),
        },
    );

fn answer(body: &[u8]) -> Option<ResponseReview> {
    let request = admission::parse_review(body).ok()?;
    let uid = request.uid.clone();
    let (review, summary) = admission::review(request, &POLICY, &Default::default());
    assert_eq!(
        review.response.uid, uid,
        "the answer carries the request's uid"
    );
    assert_eq!(review.kind, "AdmissionReview");
    assert_eq!(review.api_version, "admission.k8s.io/v1");
    assert!(
        summary.quota_claim.is_none(),
        "a quota-free policy never makes a quota claim"
    );
    // The route encodes the answer; failing to would turn into a 500.
    if let Err(error) = serde_json::to_vec(&review) {
        panic!("answer does not encode: {error}");
    }
    match (&review.response.status, review.response.allowed) {
        (None, true) => {}
        (Some(status), false) => assert!(!status.message.is_empty(), "a refusal says why"),
        (status, allowed) => panic!("allowed={allowed} with status {status:?}"),
    }
    Some(review)
}

fuzz_target!(|data: &[u8]| {
    let Some(review) = answer(data) else {
        return;
    };
    let Some(encoded) = &review.response.patch else {
        assert!(
            review.response.patch_type.is_none(),
            "patchType without a patch"
        );
        return;
    };
    assert_eq!(review.response.patch_type.as_deref(), Some("JSONPatch"));
    assert!(review.response.allowed, "a patch on a refusal");
    let Some(patch) = review.response.decoded_patch() else {
        panic!("the patch {encoded:?} is not base64 of a JSON Patch");
    };
    assert!(!patch.0.is_empty(), "an empty patch is sent as no patch");

    // parse_review accepted the body, so it is JSON and carries a pod under request.object.
    let mut body: Value = match serde_json::from_slice(data) {
        Ok(body) => body,
        Err(error) => panic!("parse_review accepted a body serde_json::Value refuses: {error}"),
    };
    let Some(raw_pod) = body.pointer_mut("/request/object") else {
        panic!("a patch for a request without an object");
    };
    if let Err(error) = json_patch::patch(raw_pod, &patch) {
        panic!(
            "the patch does not apply to the pod the request carried: {error}\npatch: {patch:?}"
        );
    }

    // The patched pod is the pod the engine wanted. What the lean parse never reads is left
    // out of the comparison: the object's own apiVersion and kind (request.kind says what it
    // is) and metadata.managedFields.
    let mut typed = raw_pod.clone();
    if let Some(fields) = typed.as_object_mut() {
        fields.remove("apiVersion");
        fields.remove("kind");
        if let Some(metadata) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
    }
    let patched: Pod = match serde_json::from_value(typed) {
        Ok(pod) => pod,
        Err(error) => panic!("the patched pod is no longer a Pod: {error}"),
    };
    let request = match admission::parse_review(data) {
        Ok(request) => request,
        Err(error) => panic!("parse_review accepted the body once, not twice: {error}"),
    };
    let Some(original) = request.object else {
        panic!("a patch for a request without an object");
    };
    let context = RequestContext {
        namespace: request.namespace.clone().unwrap_or_default(),
        ..RequestContext::default()
    };
    let Some(evaluation) = engine::evaluate(&original, &context, &POLICY) else {
        panic!("a patch for a pod the engine does not take as a Spark pod");
    };
    assert_eq!(
        patched, evaluation.desired,
        "applying the patch does not give the pod the engine wanted"
    );

    // A second pass over the patched pod changes nothing.
    let second_body = match serde_json::to_vec(&body) {
        Ok(bytes) => bytes,
        Err(error) => panic!("the patched review does not encode: {error}"),
    };
    let Some(second) = answer(&second_body) else {
        panic!("the patched review no longer parses as an AdmissionReview");
    };
    assert!(
        second.response.allowed,
        "the patched pod is refused on a second pass: {:?}",
        second.response.status
    );
    assert!(
        second.response.patch.is_none(),
        "a second pass over the patched pod patches again: {:?}",
        second.response.decoded_patch()
    );
});
