//! From the original pod and the desired pod to the JSON Patch the apiserver applies.
//!
//! The patch is computed by diffing the two pods as JSON, never written by hand, so escaping of
//! `/` and `~` in keys (`prometheus.io~1scrape`) and array positions are always right, and
//! applying it to the original yields exactly the desired pod.
//!
//! Turning a whole pod into JSON twice costs several times more than the policy itself: Spark's
//! container carries dozens of env vars. So the two pods are turned into JSON field by field,
//! and only the fields that differ are written (on both sides); list elements the engine left
//! equal (containers, env vars, tolerations) become the same placeholder on both sides, so array
//! positions, and with them the paths, stay exact; string maps (labels, annotations,
//! nodeSelector) keep only their differing keys. The diff of what remains is the patch.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};

/// Errors from building a patch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod could not be turned into JSON (not expected for pods that were parsed from JSON).
    #[error("failed to serialize pod to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A path came out as an invalid JSON Pointer (a bug: paths are escaped when built).
    #[error("built an invalid JSON Pointer: {0}")]
    Pointer(String),
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn json<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(Error::Serialize)
}

/// The JSON Patch that turns `original` into `desired`; empty when they are equal.
pub fn diff(original: Pod, desired: Pod) -> Result<json_patch::Patch> {
    // `apiVersion` and `kind` never change.
    let mut pod = Sides::default();
    pod.nested(
        "metadata",
        metadata_sides(original.metadata, desired.metadata)?,
    );
    pod.field("status", original.status, desired.status)?;
    match (original.spec, desired.spec) {
        (Some(before), Some(after)) => pod.nested("spec", spec_sides(before, after)?),
        (before, after) => pod.field("spec", before, after)?,
    }
    let mut operations = Vec::new();
    let mut path = String::with_capacity(128);
    diff_values(
        &Value::Object(pod.before),
        Value::Object(pod.after),
        &mut path,
        &mut operations,
    )?;
    Ok(json_patch::Patch(operations))
}

/// Two JSON objects assembled side by side from typed values, holding only what differs: a
/// field equal on both sides is left out of both, so it costs a comparison, not a
/// serialisation, and yields no operation.
#[derive(Default)]
struct Sides {
    before: Map<String, Value>,
    after: Map<String, Value>,
}

impl Sides {
    /// An optional field under its JSON name: each present side is written when they differ.
    fn field<T: serde::Serialize + PartialEq>(
        &mut self,
        key: &str,
        before: Option<T>,
        after: Option<T>,
    ) -> Result<()> {
        if before != after {
            if let Some(before) = before {
                self.before.insert(key.to_owned(), json(&before)?);
            }
            if let Some(after) = after {
                self.after.insert(key.to_owned(), json(&after)?);
            }
        }
        Ok(())
    }

    /// The rest of an object once the fields handled one by one were taken out of it: when it
    /// differs, all of it is written on both sides. Call before `field`, which may override.
    fn rest<T: serde::Serialize + PartialEq>(&mut self, before: &T, after: &T) -> Result<()> {
        if before != after {
            if let Value::Object(map) = json(before)? {
                self.before.extend(map);
            }
            if let Value::Object(map) = json(after)? {
                self.after.extend(map);
            }
        }
        Ok(())
    }

    /// An object field built the same way; left out when nothing in it differs.
    fn nested(&mut self, key: &str, inner: Sides) {
        if !inner.before.is_empty() || !inner.after.is_empty() {
            self.before
                .insert(key.to_owned(), Value::Object(inner.before));
            self.after
                .insert(key.to_owned(), Value::Object(inner.after));
        }
    }

    /// A string map (labels, annotations, nodeSelector). When both sides have one, only the keys
    /// whose values differ are written, so a large annotation the policy left alone is compared,
    /// never copied; the operations are the same as for the whole maps.
    fn map(
        &mut self,
        key: &str,
        before: Option<BTreeMap<String, String>>,
        after: Option<BTreeMap<String, String>>,
    ) -> Result<()> {
        let (before, after) = match (before, after) {
            (Some(before), Some(after)) => (before, after),
            (before, after) => return self.field(key, before, after),
        };
        if before == after {
            return Ok(());
        }
        let mut before_keys = Map::new();
        for (name, value) in &before {
            if after.get(name) != Some(value) {
                before_keys.insert(name.clone(), Value::String(value.clone()));
            }
        }
        let mut after_keys = Map::new();
        for (name, value) in after {
            if before.get(&name) != Some(&value) {
                after_keys.insert(name, Value::String(value));
            }
        }
        self.before
            .insert(key.to_owned(), Value::Object(before_keys));
        self.after.insert(key.to_owned(), Value::Object(after_keys));
        Ok(())
    }

    /// An optional list: element by element (see [`Sides::list`]) when both sides have one.
    fn optional_list<T: serde::Serialize + PartialEq>(
        &mut self,
        key: &str,
        before: Option<Vec<T>>,
        after: Option<Vec<T>>,
    ) -> Result<()> {
        match (before, after) {
            (Some(before), Some(after)) => self.list(key, before, after, plain_json),
            (before, after) => self.field(key, before, after),
        }
    }

    /// A list field with equal elements replaced by placeholders (see [`lists`]).
    fn list<T: PartialEq>(
        &mut self,
        key: &str,
        before: Vec<T>,
        after: Vec<T>,
        pair: impl Fn(Option<T>, Option<T>) -> Result<(Value, Value)>,
    ) -> Result<()> {
        if before != after {
            let (before, after) = lists(before, after, pair)?;
            self.before.insert(key.to_owned(), before);
            self.after.insert(key.to_owned(), after);
        }
        Ok(())
    }
}

/// Metadata: labels and annotations (what the policy sets) apart from the rest.
fn metadata_sides(mut before: ObjectMeta, mut after: ObjectMeta) -> Result<Sides> {
    let labels = (before.labels.take(), after.labels.take());
    let annotations = (before.annotations.take(), after.annotations.take());
    let mut sides = Sides::default();
    sides.rest(&before, &after)?;
    sides.map("labels", labels.0, labels.1)?;
    sides.map("annotations", annotations.0, annotations.1)?;
    Ok(sides)
}

/// The spec: every field the policy may set apart, containers element by element, and the
/// rest (volumes, init containers and the like) compared whole.
fn spec_sides(mut before: PodSpec, mut after: PodSpec) -> Result<Sides> {
    let containers = (
        std::mem::take(&mut before.containers),
        std::mem::take(&mut after.containers),
    );
    let node_selector = (before.node_selector.take(), after.node_selector.take());
    let affinity = (before.affinity.take(), after.affinity.take());
    let tolerations = (before.tolerations.take(), after.tolerations.take());
    let priority_class = (
        before.priority_class_name.take(),
        after.priority_class_name.take(),
    );
    let priority = (before.priority.take(), after.priority.take());
    let preemption = (
        before.preemption_policy.take(),
        after.preemption_policy.take(),
    );
    let scheduler = (before.scheduler_name.take(), after.scheduler_name.take());
    let mut sides = Sides::default();
    sides.rest(&before, &after)?;
    sides.map("nodeSelector", node_selector.0, node_selector.1)?;
    sides.field("affinity", affinity.0, affinity.1)?;
    sides.optional_list("tolerations", tolerations.0, tolerations.1)?;
    sides.field("priorityClassName", priority_class.0, priority_class.1)?;
    sides.field("priority", priority.0, priority.1)?;
    sides.field("preemptionPolicy", preemption.0, preemption.1)?;
    sides.field("schedulerName", scheduler.0, scheduler.1)?;
    sides.list("containers", containers.0, containers.1, container_json)?;
    Ok(sides)
}

/// The RFC 6902 diff of two documents, with the same operations `json_patch::diff` produces:
/// objects key by key, arrays position by position (appends add at the end, surplus is
/// removed from the end). Written here because `json_patch::diff` re-parses its JSON Pointer
/// at every key it visits, which cost more than the rest of the patch work together.
fn diff_values(
    before: &Value,
    after: Value,
    path: &mut String,
    operations: &mut Vec<PatchOperation>,
) -> Result<()> {
    match (before, after) {
        (Value::Object(before), Value::Object(after)) => {
            let removed: Vec<&String> = before
                .keys()
                .filter(|key| !after.contains_key(*key))
                .collect();
            for (key, after_value) in after {
                let length = path.len();
                push_token(path, &key);
                match before.get(&key) {
                    Some(before_value) => diff_values(before_value, after_value, path, operations)?,
                    None => operations.push(PatchOperation::Add(AddOperation {
                        path: pointer(path)?,
                        value: after_value,
                    })),
                }
                path.truncate(length);
            }
            for key in removed {
                let length = path.len();
                push_token(path, key);
                operations.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(path)?,
                }));
                path.truncate(length);
            }
        }
        (Value::Array(before), Value::Array(after)) => {
            let after_length = after.len();
            for (index, a) in after.into_iter().enumerate() {
                let length = path.len();
                push_index(path, index);
                match before.get(index) {
                    Some(b) => diff_values(b, a, path, operations)?,
                    None => operations.push(PatchOperation::Add(AddOperation {
                        path: pointer(path)?,
                        value: a,
                    })),
                }
                path.truncate(length);
            }
            // Removing at the first surplus position repeatedly removes the whole tail.
            for _ in after_length..before.len() {
                let length = path.len();
                push_index(path, after_length);
                operations.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(path)?,
                }));
                path.truncate(length);
            }
        }
        (before, after) if *before == after => {}
        (_, after) => operations.push(PatchOperation::Replace(ReplaceOperation {
            path: pointer(path)?,
            value: after,
        })),
    }
    Ok(())
}

/// Appends `/token`, escaped as RFC 6901 requires (`~` as `~0`, `/` as `~1`).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn push_index(path: &mut String, index: usize) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(path, "/{index}");
}

fn pointer(path: &str) -> Result<PointerBuf> {
    PointerBuf::parse(path).map_err(|e| Error::Pointer(e.to_string()))
}

/// Both lists as JSON arrays, with elements equal at the same position replaced by the same
/// placeholder on both sides. `pair` turns one differing pair into JSON.
fn lists<T: PartialEq>(
    before: Vec<T>,
    after: Vec<T>,
    pair: impl Fn(Option<T>, Option<T>) -> Result<(Value, Value)>,
) -> Result<(Value, Value)> {
    let length = before.len().max(after.len());
    let (mut before_list, mut after_list) = (
        Vec::with_capacity(before.len()),
        Vec::with_capacity(after.len()),
    );
    let mut before = before.into_iter();
    let mut after = after.into_iter();
    for _ in 0..length {
        match (before.next(), after.next()) {
            (Some(b), Some(a)) if b == a => {
                before_list.push(Value::Null);
                after_list.push(Value::Null);
            }
            (b, a) => {
                let (b_present, a_present) = (b.is_some(), a.is_some());
                let (b, a) = pair(b, a)?;
                if b_present {
                    before_list.push(b);
                }
                if a_present {
                    after_list.push(a);
                }
            }
        }
    }
    Ok((Value::Array(before_list), Value::Array(after_list)))
}

fn plain_json<T: serde::Serialize>(before: Option<T>, after: Option<T>) -> Result<(Value, Value)> {
    Ok((
        before
            .as_ref()
            .map(json)
            .transpose()?
            .unwrap_or(Value::Null),
        after.as_ref().map(json).transpose()?.unwrap_or(Value::Null),
    ))
}

/// A changed container: env vars (usually most of it, and mostly unchanged) element by
/// element, resources apart, and the rest compared whole.
fn container_json(before: Option<Container>, after: Option<Container>) -> Result<(Value, Value)> {
    let (mut before, mut after) = match (before, after) {
        (Some(before), Some(after)) => (before, after),
        (before, after) => return plain_json(before, after),
    };
    let env = (before.env.take(), after.env.take());
    let resources = (before.resources.take(), after.resources.take());
    let mut sides = Sides::default();
    sides.rest(&before, &after)?;
    sides.field("resources", resources.0, resources.1)?;
    sides.optional_list("env", env.0, env.1)?;
    Ok((Value::Object(sides.before), Value::Object(sides.after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXECUTOR_REVIEW: &str = include_str!("../tests/fixtures/spark-4.3/executor-review.json");

    fn executor() -> Pod {
        let review: Value = serde_json::from_str(EXECUTOR_REVIEW).expect("json");
        serde_json::from_value(review["request"]["object"].clone()).expect("pod")
    }

    fn apply(pod: &Pod, patch: &json_patch::Patch) -> Value {
        let mut value = serde_json::to_value(pod).expect("json");
        json_patch::patch(&mut value, patch).expect("applies");
        value
    }

    /// The hand-written diff gives exactly what `json_patch::diff` gives, on documents that
    /// exercise every branch: nested objects, added and removed keys, grown and shrunk arrays,
    /// type changes and keys that need escaping.
    #[test]
    fn diff_values_matches_json_patch_diff() {
        let cases = [
            (
                serde_json::json!({"a": 1, "b": {"c": [1, 2, 3]}, "x/y": {"~": 1}}),
                serde_json::json!({"a": 2, "b": {"c": [1, 5]}, "x/y": {"~": 2, "n": null}, "new": [1]}),
            ),
            (
                serde_json::json!({"l": [1]}),
                serde_json::json!({"l": [1, {"k": "v"}, 3]}),
            ),
            (
                serde_json::json!({"l": [1, 2, 3, 4]}),
                serde_json::json!({"l": [0]}),
            ),
            (
                serde_json::json!({"t": {"a": 1}}),
                serde_json::json!({"t": [1]}),
            ),
            (
                serde_json::json!({"gone": 1, "kept": true}),
                serde_json::json!({"kept": true}),
            ),
        ];
        for (before, after) in cases {
            let mut operations = Vec::new();
            diff_values(&before, after.clone(), &mut String::new(), &mut operations).expect("diff");
            let ours = json_patch::Patch(operations);
            assert_eq!(
                ours,
                json_patch::diff(&before, &after),
                "{before} -> {after}"
            );
            let mut applied = before.clone();
            json_patch::patch(&mut applied, &ours).expect("applies");
            assert_eq!(applied, after);
        }
    }

    /// Maps diffed by their differing keys and tolerations element by element give the very
    /// operations a diff of the whole pods gives: replaced, removed and added keys, a removed
    /// map, and a toleration replaced in the middle of the list and another appended.
    #[test]
    fn maps_and_tolerations_give_the_whole_pod_diff() {
        let mut original = executor();
        original.metadata.labels = Some(
            [("keep", "1"), ("change", "a"), ("drop", "x")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
        );
        original.metadata.annotations = Some([("big".to_owned(), "p".repeat(10_000))].into());
        let spec = original.spec.as_mut().expect("spec");
        spec.node_selector = Some([("pool".to_owned(), "a".to_owned())].into());
        let mut desired = original.clone();
        let labels = desired.metadata.labels.as_mut().expect("labels");
        labels.insert("change".into(), "b".into());
        labels.remove("drop");
        labels.insert("new/key".into(), "n".into());
        let spec = desired.spec.as_mut().expect("spec");
        spec.node_selector = None;
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        assert!(
            tolerations.len() >= 2,
            "the fixture has the default tolerations"
        );
        tolerations[0].toleration_seconds = Some(7);
        tolerations.push(k8s_openapi::api::core::v1::Toleration {
            key: Some("dedicated".into()),
            ..Default::default()
        });

        let patch = diff(original.clone(), desired.clone()).expect("diff");
        let whole = json_patch::diff(
            &serde_json::to_value(&original).expect("json"),
            &serde_json::to_value(&desired).expect("json"),
        );
        let sorted = |patch: &json_patch::Patch| {
            let mut operations: Vec<String> = patch
                .0
                .iter()
                .map(|op| serde_json::to_string(op).expect("json"))
                .collect();
            operations.sort();
            operations
        };
        assert_eq!(sorted(&patch), sorted(&whole));
        assert!(
            !serde_json::to_string(&patch).expect("json").contains("ppp"),
            "the untouched annotation is not in the patch"
        );
        assert_eq!(
            apply(&original, &patch),
            serde_json::to_value(&desired).expect("json")
        );
    }

    #[test]
    fn equal_pods_give_an_empty_patch() {
        assert!(diff(executor(), executor()).expect("diff").0.is_empty());
    }

    #[test]
    fn keys_with_slashes_and_tildes_are_escaped() {
        let mut original = executor();
        original.metadata.annotations = Some([("existing".to_owned(), "1".to_owned())].into());
        let mut desired = original.clone();
        desired
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("example.io/a~b".into(), "v".into());
        let patch = diff(original.clone(), desired.clone()).expect("diff");
        let text = serde_json::to_string(&patch).expect("json");
        assert!(text.contains("example.io~1a~0b"), "{text}");
        assert_eq!(
            apply(&original, &patch),
            serde_json::to_value(&desired).expect("json")
        );
    }

    #[test]
    fn a_changed_container_gets_exact_paths_and_others_none() {
        let mut original = executor();
        let spec = original.spec.as_mut().expect("spec");
        let mut sidecar = spec.containers[0].clone();
        sidecar.name = "sidecar".into();
        spec.containers.insert(0, sidecar);
        let mut desired = original.clone();
        desired.spec.as_mut().expect("spec").containers[1]
            .env
            .get_or_insert_with(Vec::new)
            .push(k8s_openapi::api::core::v1::EnvVar {
                name: "X".into(),
                value: Some("1".into()),
                ..Default::default()
            });
        let patch = diff(original.clone(), desired.clone()).expect("diff");
        assert_eq!(patch.0.len(), 1, "{patch:?}");
        assert!(
            serde_json::to_string(&patch)
                .expect("json")
                .contains("/spec/containers/1/env/")
        );
        assert_eq!(
            apply(&original, &patch),
            serde_json::to_value(&desired).expect("json")
        );
    }
}
