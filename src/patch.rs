//! From the original pod and the desired pod to the JSON Patch the apiserver applies.
//!
//! The patch is computed by diffing the two pods as JSON, never written by hand, so escaping of
//! `/` and `~` in keys (`prometheus.io~1scrape`) and array positions are always right, and
//! applying it to the original yields exactly the desired pod.
//!
//! Turning a whole pod into JSON twice costs several times more than the policy itself: Spark's
//! container carries dozens of env vars. So list elements the engine left equal (containers, and
//! env vars inside a changed container) are replaced by the same placeholder on both sides
//! before the diff; they produce no operation, and the paths of what did change stay exact
//! because array positions are kept.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::{Map, Value};

/// Errors from building a patch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod could not be turned into JSON (not expected for pods that were parsed from JSON).
    #[error("failed to serialize pod to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn json<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(Error::Serialize)
}

/// The JSON Patch that turns `original` into `desired`; empty when they are equal.
pub fn diff(original: Pod, desired: Pod) -> Result<json_patch::Patch> {
    if original == desired {
        return Ok(json_patch::Patch(Vec::new()));
    }
    // `apiVersion` and `kind` never change; sections that are equal are left out of both sides.
    let mut before = Map::new();
    let mut after = Map::new();
    section(
        &mut before,
        &mut after,
        "metadata",
        &original.metadata,
        &desired.metadata,
    )?;
    section(
        &mut before,
        &mut after,
        "status",
        &original.status,
        &desired.status,
    )?;
    match (original.spec, desired.spec) {
        (Some(b), Some(a)) => {
            let (b, a) = spec_json(b, a)?;
            before.insert("spec".to_owned(), b);
            after.insert("spec".to_owned(), a);
        }
        (b, a) => section(&mut before, &mut after, "spec", &b, &a)?,
    }
    Ok(json_patch::diff(
        &Value::Object(before),
        &Value::Object(after),
    ))
}

/// Adds `key` to both sides when the values differ.
fn section<T: serde::Serialize + PartialEq>(
    before: &mut Map<String, Value>,
    after: &mut Map<String, Value>,
    key: &str,
    b: &T,
    a: &T,
) -> Result<()> {
    if b != a {
        before.insert(key.to_owned(), json(b)?);
        after.insert(key.to_owned(), json(a)?);
    }
    Ok(())
}

/// The spec's large lists are handled apart: volumes and init containers, which the policy
/// never changes, are left out when equal; containers go element by element.
fn spec_json(mut before: PodSpec, mut after: PodSpec) -> Result<(Value, Value)> {
    let containers = (
        std::mem::take(&mut before.containers),
        std::mem::take(&mut after.containers),
    );
    let init = (before.init_containers.take(), after.init_containers.take());
    let volumes = (before.volumes.take(), after.volumes.take());
    let (mut before_value, mut after_value) = (json(&before)?, json(&after)?);
    let (Value::Object(before_map), Value::Object(after_map)) =
        (&mut before_value, &mut after_value)
    else {
        return Ok((before_value, after_value));
    };
    section(before_map, after_map, "initContainers", &init.0, &init.1)?;
    section(before_map, after_map, "volumes", &volumes.0, &volumes.1)?;
    let (b, a) = lists(containers.0, containers.1, containers_json)?;
    before_map.insert("containers".to_owned(), b);
    after_map.insert("containers".to_owned(), a);
    Ok((before_value, after_value))
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

/// A changed container: its env list, usually most of it and mostly unchanged, gets the same
/// placeholder treatment.
fn containers_json(before: Option<Container>, after: Option<Container>) -> Result<(Value, Value)> {
    let (mut before, mut after) = match (before, after) {
        (Some(before), Some(after)) => (before, after),
        (before, after) => return plain_json(before, after),
    };
    let (before_env, after_env) = (before.env.take(), after.env.take());
    let (mut before_value, mut after_value) = (json(&before)?, json(&after)?);
    match (before_env, after_env) {
        (Some(b), Some(a)) => {
            let (b, a) = lists(b, a, plain_json)?;
            before_value["env"] = b;
            after_value["env"] = a;
        }
        (b, a) => {
            if let Some(b) = b {
                before_value["env"] = json(&b)?;
            }
            if let Some(a) = a {
                after_value["env"] = json(&a)?;
            }
        }
    }
    Ok((before_value, after_value))
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
