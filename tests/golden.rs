//! Golden answers: for each real Spark 4.3 review and an example policy, the pod the SPEC says the
//! policy must produce, written by hand in `tests/data/golden/*.yaml`. The server (over TLS) and
//! the `mutate` command are each checked against those files, never against each other.
//!
//! The expected pod is compared with the response's patch applied to the raw JSON the request
//! carried, with `serde_json` and `json_patch` only, so nothing of the product's own parsing or
//! patching stands between the answer and the check. The expected pod is then sent again, as a
//! reinvoked webhook gets it, and must get no patch (SPEC §4: the desired pod of a desired pod
//! is itself).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");
const GOLDEN_DIR: &str = "tests/data/golden";

/// One golden file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Golden {
    /// The review, a path from the crate root.
    fixture: PathBuf,
    /// The policy file, a path from the crate root.
    policy: PathBuf,
    /// The response's warnings, in order.
    #[serde(default)]
    warnings: Vec<String>,
    /// The desired pod without `metadata.managedFields`, when the pod is allowed.
    #[serde(default)]
    pod: Option<Value>,
    /// The denial message, when the pod is refused.
    #[serde(default)]
    denied: Option<String>,
}

fn goldens() -> Vec<(String, Golden)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(GOLDEN_DIR)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let goldens: Vec<(String, Golden)> = files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let golden: Golden =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                golden.pod.is_some() != golden.denied.is_some(),
                "{}: exactly one of pod and denied",
                path.display()
            );
            (path.display().to_string(), golden)
        })
        .collect();
    assert!(goldens.len() >= 15, "the golden files are all read");
    goldens
}

fn request_object(fixture: &Path) -> Value {
    let review: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    review["request"]["object"].clone()
}

/// The fixture's review with the golden pod as its object (and the fixture's `managedFields`
/// back in it): what a reinvoked webhook is sent once the apiserver has applied the answer.
fn second_review(fixture: &Path, golden: &Value) -> Value {
    let mut review: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let managed_fields = review["request"]["object"]["metadata"]["managedFields"].clone();
    let mut pod = golden.clone();
    if !managed_fields.is_null() {
        pod["metadata"]
            .as_object_mut()
            .unwrap()
            .insert("managedFields".to_owned(), managed_fields);
    }
    review["request"]["object"] = pod;
    review
}

/// The operations of a response's patch; none when it carries no patch.
fn patch_operations(response: &Value, name: &str) -> Vec<Value> {
    match response.get("patch").and_then(Value::as_str) {
        None => Vec::new(),
        Some(encoded) => {
            let patch = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_else(|e| panic!("{name}: the patch is not base64: {e}"));
            serde_json::from_slice(&patch)
                .unwrap_or_else(|e| panic!("{name}: the patch is not a JSON array: {e}"))
        }
    }
}

/// Checks a pod the product made from `original` against the golden pod: `managedFields` came
/// through untouched, and everything else equals the hand-written answer.
fn assert_golden_pod(name: &str, how: &str, original: &Value, mut produced: Value, golden: &Value) {
    assert_eq!(
        produced["metadata"]["managedFields"], original["metadata"]["managedFields"],
        "{name} ({how}): managedFields changed"
    );
    produced["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    if &produced != golden {
        panic!(
            "{name} ({how}): the pod differs from the golden answer\n--- golden\n{}\n--- produced\n{}",
            serde_json::to_string_pretty(golden).unwrap(),
            serde_json::to_string_pretty(&produced).unwrap()
        );
    }
}

fn apply(original: &Value, patch: Value, name: &str) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).unwrap_or_else(|e| panic!("{name}: not a JSON Patch: {e}"));
    let mut pod = original.clone();
    json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("{name}: patch fails: {e}"));
    pod
}

#[tokio::test]
async fn the_server_answers_every_golden_file() {
    for (name, golden) in goldens() {
        let policy = std::fs::read_to_string(&golden.policy).unwrap();
        let mut server = TestServer::builder().policy_file(&policy).start().await;
        // Ready once the policy file is loaded.
        wait_until(|| async { admin_get(server.admin, "/readyz").await.0 == StatusCode::OK }).await;
        let body = std::fs::read(&golden.fixture).unwrap();
        let (status, answer) = server.client().post("/mutate", body).await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        let response = &answer["response"];
        let warnings: Vec<String> = response["warnings"]
            .as_array()
            .map(|w| w.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        assert_eq!(warnings, golden.warnings, "{name}: warnings");
        let original = request_object(&golden.fixture);
        match (&golden.pod, &golden.denied) {
            (Some(pod), _) => {
                assert_eq!(status, StatusCode::OK, "{name}: {answer}");
                assert_eq!(response["allowed"], true, "{name}: {answer}");
                assert_eq!(response["patchType"], "JSONPatch", "{name}");
                let patch = base64::engine::general_purpose::STANDARD
                    .decode(response["patch"].as_str().expect("a patch"))
                    .unwrap();
                let patched = apply(&original, serde_json::from_slice(&patch).unwrap(), &name);
                assert_golden_pod(&name, "server", &original, patched, pod);

                // SPEC §4 idempotence: the desired pod, sent again, gets no patch.
                let again = serde_json::to_vec(&second_review(&golden.fixture, pod)).unwrap();
                let (status, again) = server.client().post("/mutate", again).await;
                let again: Value = serde_json::from_slice(&again).unwrap();
                assert_eq!(status, StatusCode::OK, "{name} (second pass): {again}");
                assert_eq!(
                    again["response"]["allowed"], true,
                    "{name} (second pass): {again}"
                );
                let operations = patch_operations(&again["response"], &name);
                assert!(
                    operations.is_empty(),
                    "{name} (second pass): the desired pod is patched again: {}",
                    serde_json::to_string_pretty(&operations).unwrap()
                );
            }
            (None, Some(message)) => {
                assert_eq!(response["allowed"], false, "{name}: {answer}");
                assert_eq!(response["status"]["message"], message.as_str(), "{name}");
                assert!(response.get("patch").is_none(), "{name}: no patch");
            }
            (None, None) => unreachable!(),
        }
        server.stop().await;
    }
}

#[test]
fn mutate_answers_every_golden_file() {
    for (name, golden) in goldens() {
        let original = request_object(&golden.fixture);
        let policy = golden.policy.to_str().unwrap();
        let fixture = golden.fixture.to_str().unwrap();
        for how in ["-o json", "--patch"] {
            let mut args = vec!["mutate", "--policy", policy];
            args.extend(how.split(' '));
            args.push(fixture);
            let out = Command::new(BIN).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr_warnings: Vec<&str> = stderr
                .lines()
                .filter_map(|line| line.strip_prefix("warning: "))
                .collect();
            assert_eq!(stderr_warnings, golden.warnings, "{name} ({how}): {stderr}");
            match (&golden.pod, &golden.denied) {
                (Some(pod), _) => {
                    assert_eq!(out.status.code(), Some(0), "{name} ({how}): {stderr}");
                    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
                    let produced = if how == "--patch" {
                        apply(&original, printed, &name)
                    } else {
                        printed
                    };
                    assert_golden_pod(&name, how, &original, produced, pod);
                    if how == "--patch" {
                        assert_second_pass_is_empty(&name, policy, &golden.fixture, pod);
                    }
                }
                (None, Some(message)) => {
                    assert_eq!(out.status.code(), Some(3), "{name} ({how}): {stderr}");
                    assert!(
                        stderr
                            .lines()
                            .any(|line| line == format!("denied: {message}")),
                        "{name} ({how}): {stderr}"
                    );
                }
                (None, None) => unreachable!(),
            }
        }
    }
}

/// SPEC §4 idempotence through `mutate`: the golden pod, in the fixture's review, gets an empty
/// patch.
fn assert_second_pass_is_empty(name: &str, policy: &str, fixture: &Path, pod: &Value) {
    let mut review = tempfile::NamedTempFile::new().unwrap();
    serde_json::to_writer(&mut review, &second_review(fixture, pod)).unwrap();
    let path = review.path().to_str().unwrap();
    let out = Command::new(BIN)
        .args(["mutate", "--policy", policy, "--patch", path])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{name} (second pass): {stderr}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        Value::Array(Vec::new()),
        "{name} (second pass): the desired pod is patched again"
    );
}
