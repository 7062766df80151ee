//! Every input the fuzz targets (fuzz/, docs/reliability.md "Fuzzing") crashed on, as a test of
//! the behaviour that was wrong, so a fix stays fixed without nightly or cargo-fuzz.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;
use spark_admission::admission;

const EXECUTOR_REVIEW: &[u8] = include_bytes!("fixtures/spark-4.3/executor-review.json");

/// The body with the first byte of the first `"f:` key (only `managedFields` has them) replaced
/// by 0xCC, which starts a two-byte UTF-8 sequence that `:` cannot continue.
fn invalid_utf8_in_managed_fields(body: &[u8]) -> Vec<u8> {
    let at = body
        .windows(3)
        .position(|w| w == b"\"f:")
        .expect("the fixture carries managedFields");
    let mut broken = body.to_vec();
    broken[at + 1] = 0xCC;
    broken
}

/// admission_review, crash-9c80c137: a byte that is not UTF-8 inside `managedFields`, which
/// `parse_review` skips without reading, was accepted and the pod patched, though the body is
/// not JSON at all (RFC 8259 §8.1: JSON text is UTF-8; serde_json refuses it as a `Value`).
#[test]
fn a_body_that_is_not_utf8_in_the_skipped_managed_fields_is_refused() {
    assert!(admission::parse_review(EXECUTOR_REVIEW).is_ok());
    let broken = invalid_utf8_in_managed_fields(EXECUTOR_REVIEW);
    assert!(serde_json::from_slice::<serde_json::Value>(&broken).is_err());

    let error = admission::parse_review(&broken).expect_err("not JSON");
    let message = error.to_string();
    assert!(
        message.contains("UTF-8") && message.contains("AdmissionReview"),
        "{message}"
    );
    assert!(admission::parse_review_of::<Pod>(&broken).is_err());
}
