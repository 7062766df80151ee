//! From the original pod and the desired pod to the JSON Patch the apiserver applies.
//!
//! The patch is computed by diffing the two pods as JSON, never written by hand, so escaping of
//! `/` and `~` in keys (`prometheus.io~1scrape`) and array positions are always right, and
//! applying it to the original yields exactly the desired pod.
//!
//! The operations are exactly those of a diff of the two whole pods as JSON (objects key by key
//! in key order, removed keys after, arrays position by position, as `json_patch::diff`), but
//! neither pod is ever turned into JSON whole: a 3 MiB pod is tens of MiB as a tree of JSON
//! values, and Spark's container alone carries dozens of env vars. The typed pods are walked
//! side by side instead. A part equal on both sides costs a comparison; the lists a request can
//! make long (containers and init containers, their env, envFrom and volumeMounts, volumes,
//! imagePullSecrets, topology spread constraints, hostAliases, tolerations, node selector terms
//! and their requirements, preferred terms, pod (anti-)affinity terms) are walked element by
//! element and the string maps
//! (labels, annotations, nodeSelector) key by key, and only what differs, one element or field
//! at a time, is turned into JSON and diffed. Each operation is written out as JSON text when it
//! is found, so the memory a patch takes is its own text, whatever the size of the pods.
//!
//! This module never changes a pod; it only writes down how they differ.

use std::borrow::Cow;
use std::collections::BTreeMap;

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{
    Affinity, Container, NodeAffinity, NodeSelector, NodeSelectorTerm, Pod, PodAffinity,
    PodAffinityTerm, PodAntiAffinity, PodSpec, ResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{Original, take_changeable_fields};

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

fn json<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(Error::Serialize)
}

/// A JSON Patch as the JSON text the apiserver reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The array of operations, `[]` when there is none.
    pub json: Vec<u8>,
    /// How many operations it holds.
    pub operations: usize,
}

impl Encoded {
    /// Whether the pods were equal.
    pub fn is_empty(&self) -> bool {
        self.operations == 0
    }
}

/// The JSON Patch that turns `original` into `desired`, as JSON text; empty when they are equal.
pub fn encode(original: Pod, desired: Pod) -> Result<Encoded> {
    let mut emitter = Emitter::for_text();
    walk(original, desired, &mut emitter)?;
    Ok(emitter.finish())
}

/// The JSON Patch that turns the pod as it arrived into `desired`, from what
/// [`crate::engine::evaluate_owned`] kept of it: the whole pod, walked as [`encode`] walks it,
/// or only the fields the policy may have changed, walked beside the same fields taken out of
/// `desired`. Either way the operations are exactly those [`encode`] gives for the two whole
/// pods: the fields left out are the same on both sides, and a walk gives nothing for them.
pub fn encode_from(original: Original, mut desired: Pod) -> Result<Encoded> {
    let changed = match original {
        Original::Whole(original) => return encode(original, desired),
        Original::Fields(changed) => changed,
    };
    let mut before = changed.before;
    let mut after = take_changeable_fields(&mut desired);
    // A container whose env the policy changed gets its env on both sides, so the walk finds
    // the changes where it finds them in whole pods: the desired env moved over, and the env as
    // it arrived rebuilt from it and the edits (the variables before the old length, with what
    // was replaced put back).
    for edit in changed.env {
        let (Some(desired_spec), Some(before_spec), Some(after_spec)) = (
            desired.spec.as_mut(),
            before.spec.as_mut(),
            after.spec.as_mut(),
        ) else {
            break;
        };
        let desired_container = edit.slot.of_mut(
            &mut desired_spec.containers,
            &mut desired_spec.init_containers,
        );
        let before_container = edit.slot.of_mut(
            &mut before_spec.containers,
            &mut before_spec.init_containers,
        );
        let after_container = edit
            .slot
            .of_mut(&mut after_spec.containers, &mut after_spec.init_containers);
        let (Some(desired_container), Some(before_container), Some(after_container)) =
            (desired_container, before_container, after_container)
        else {
            continue;
        };
        let env = desired_container.env.take();
        before_container.env = edit.before_len.map(|length| {
            let mut old = env
                .as_deref()
                .and_then(|env| env.get(..length))
                .unwrap_or_default()
                .to_vec();
            for (position, var) in edit.replaced {
                if let Some(slot) = old.get_mut(position) {
                    *slot = var;
                }
            }
            old
        });
        after_container.env = env;
    }
    let mut emitter = Emitter::for_text();
    walk(before, after, &mut emitter)?;
    Ok(emitter.finish())
}

/// The JSON Patch that turns `original` into `desired`; empty when they are equal. The same
/// operations as [`encode`], as values (for tools and tests; the server sends the text).
pub fn diff(original: Pod, desired: Pod) -> Result<json_patch::Patch> {
    let mut emitter = Emitter {
        values: Some(Vec::new()),
        ..Emitter::default()
    };
    walk(original, desired, &mut emitter)?;
    Ok(json_patch::Patch(emitter.values.unwrap_or_default()))
}

fn walk(original: Pod, desired: Pod, emitter: &mut Emitter) -> Result<()> {
    // `apiVersion` and `kind` never change.
    let mut pod = Fields::default();
    pod.object(
        "metadata",
        metadata_fields(original.metadata, desired.metadata)?,
    );
    pod.value("status", original.status, desired.status);
    match (original.spec, desired.spec) {
        (Some(before), Some(after)) => pod.object("spec", spec_fields(before, after)?),
        (before, after) => pod.value("spec", before, after),
    }
    pod.emit(emitter)
}

/// Writes the operations found, as the elements of one JSON array (or, for [`diff`], as
/// values), with the path of the value being compared.
#[derive(Default)]
struct Emitter {
    out: Vec<u8>,
    /// Set when the operations are wanted as values rather than text.
    values: Option<Vec<PatchOperation>>,
    operations: usize,
    /// The JSON Pointer of where the walk is, escaped.
    path: String,
}

impl Emitter {
    /// An emitter of text with room for a usual patch and path, which would otherwise grow
    /// (and be copied) several times on every review.
    fn for_text() -> Self {
        Self {
            out: Vec::with_capacity(2048),
            path: String::with_capacity(128),
            ..Self::default()
        }
    }

    fn finish(mut self) -> Encoded {
        if self.operations == 0 {
            self.out.push(b'[');
        }
        self.out.push(b']');
        Encoded {
            json: self.out,
            operations: self.operations,
        }
    }

    fn pointer(&self) -> Result<PointerBuf> {
        PointerBuf::parse(&self.path).map_err(|e| Error::Pointer(e.to_string()))
    }

    /// Starts an operation, in the form `json_patch` serialises one: `op`, `path`, `value`.
    fn begin(&mut self, op: &str) -> Result<()> {
        self.out
            .push(if self.operations == 0 { b'[' } else { b',' });
        self.operations += 1;
        self.out.extend_from_slice(b"{\"op\":\"");
        self.out.extend_from_slice(op.as_bytes());
        self.out.extend_from_slice(b"\",\"path\":");
        serde_json::to_writer(&mut self.out, &self.path).map_err(Error::Serialize)
    }

    fn with_value(&mut self, op: &str, value: &impl Serialize) -> Result<()> {
        if self.values.is_some() {
            let (path, value) = (self.pointer()?, json(value)?);
            let operation = match op {
                "add" => PatchOperation::Add(AddOperation { path, value }),
                _ => PatchOperation::Replace(ReplaceOperation { path, value }),
            };
            self.values.get_or_insert_with(Vec::new).push(operation);
            return Ok(());
        }
        self.begin(op)?;
        self.out.extend_from_slice(b",\"value\":");
        serde_json::to_writer(&mut self.out, value).map_err(Error::Serialize)?;
        self.out.push(b'}');
        Ok(())
    }

    fn add(&mut self, value: &impl Serialize) -> Result<()> {
        self.with_value("add", value)
    }

    fn replace(&mut self, value: &impl Serialize) -> Result<()> {
        self.with_value("replace", value)
    }

    fn remove(&mut self) -> Result<()> {
        if self.values.is_some() {
            let path = self.pointer()?;
            self.values
                .get_or_insert_with(Vec::new)
                .push(PatchOperation::Remove(RemoveOperation { path }));
            return Ok(());
        }
        self.begin("remove")?;
        self.out.push(b'}');
        Ok(())
    }

    /// Steps into `key`, escaped as RFC 6901 requires (`~` as `~0`, `/` as `~1`); returns
    /// where to step back to.
    fn enter(&mut self, key: &str) -> usize {
        let back = self.path.len();
        self.path.push('/');
        // jsonptr borrows a key that needs no escape (field names, most labels) and copies
        // only one that does.
        self.path.push_str(Token::new(key).encoded());
        back
    }

    fn enter_index(&mut self, index: usize) -> usize {
        use std::fmt::Write;
        let back = self.path.len();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "/{index}");
        back
    }

    fn leave(&mut self, back: usize) {
        self.path.truncate(back);
    }

    /// The RFC 6902 diff of two JSON values, with the operations `json_patch::diff` produces:
    /// objects key by key, arrays position by position (appends add at the end, surplus is
    /// removed from the end). Written here because `json_patch::diff` re-parses its JSON Pointer
    /// at every key it visits, and builds the operations as values.
    fn values(&mut self, before: &Value, after: &Value) -> Result<()> {
        match (before, after) {
            (Value::Object(before), Value::Object(after)) => {
                for (key, after_value) in after {
                    let back = self.enter(key);
                    match before.get(key) {
                        Some(before_value) => self.values(before_value, after_value)?,
                        None => self.add(after_value)?,
                    }
                    self.leave(back);
                }
                for key in before.keys().filter(|key| !after.contains_key(*key)) {
                    let back = self.enter(key);
                    self.remove()?;
                    self.leave(back);
                }
            }
            (Value::Array(before), Value::Array(after)) => {
                for (index, a) in after.iter().enumerate() {
                    let back = self.enter_index(index);
                    match before.get(index) {
                        Some(b) => self.values(b, a)?,
                        None => self.add(a)?,
                    }
                    self.leave(back);
                }
                self.remove_tail(after.len(), before.len())?;
            }
            (before, after) if before == after => {}
            (_, after) => self.replace(after)?,
        }
        Ok(())
    }

    /// Removes the elements from `after_length` to `before_length`: removing at the first
    /// surplus position repeatedly removes the whole tail.
    fn remove_tail(&mut self, after_length: usize, before_length: usize) -> Result<()> {
        for _ in after_length..before_length {
            let back = self.enter_index(after_length);
            self.remove()?;
            self.leave(back);
        }
        Ok(())
    }

    /// Two lists position by position, as [`Emitter::values`] walks arrays: an element equal on
    /// both sides costs a comparison, a differing pair is diffed by `element`, one pair at a
    /// time.
    fn list<T: Serialize + PartialEq>(
        &mut self,
        before: Vec<T>,
        after: Vec<T>,
        element: fn(&mut Emitter, T, T) -> Result<()>,
    ) -> Result<()> {
        let (before_length, after_length) = (before.len(), after.len());
        let mut before = before.into_iter();
        for (index, a) in after.into_iter().enumerate() {
            let back = self.enter_index(index);
            match before.next() {
                Some(b) if b == a => {}
                Some(b) => element(self, b, a)?,
                None => self.add(&a)?,
            }
            self.leave(back);
        }
        self.remove_tail(after_length, before_length)
    }

    /// Two maps of strings (or quantities) key by key: only the keys whose values differ are
    /// visited, so a large annotation the policy left alone is compared, never copied.
    fn string_maps<V: Serialize + PartialEq>(
        &mut self,
        before: &BTreeMap<String, V>,
        after: &BTreeMap<String, V>,
    ) -> Result<()> {
        for (key, value) in after {
            let old = before.get(key);
            if old == Some(value) {
                continue;
            }
            let back = self.enter(key);
            match old {
                Some(_) => self.replace(value)?,
                None => self.add(value)?,
            }
            self.leave(back);
        }
        for key in before.keys().filter(|key| !after.contains_key(*key)) {
            let back = self.enter(key);
            self.remove()?;
            self.leave(back);
        }
        Ok(())
    }
}

/// A differing pair of list elements diffed as JSON (tolerations, env vars, requirements).
fn plain<T: Serialize>(emitter: &mut Emitter, before: T, after: T) -> Result<()> {
    emitter.values(&json(&before)?, &json(&after)?)
}

type Emit = Box<dyn FnOnce(&mut Emitter) -> Result<()>>;

/// The differing fields of one object, each with how to write its operations, emitted in the
/// order a diff of the two objects as JSON visits them: the fields the desired side has, in key
/// order, then those only the original has (removed), in key order.
#[derive(Default)]
struct Fields {
    fields: Vec<(Cow<'static, str>, bool, Emit)>,
}

impl Fields {
    fn push(
        &mut self,
        name: Cow<'static, str>,
        in_after: bool,
        emit: impl FnOnce(&mut Emitter) -> Result<()> + 'static,
    ) {
        self.fields.push((name, in_after, Box::new(emit)));
    }

    fn emit(mut self, emitter: &mut Emitter) -> Result<()> {
        // Names are unique within an object: the order is the key order of a JSON object.
        self.fields.sort_by(|a, b| a.0.cmp(&b.0));
        // Removed fields are rare: they wait in a list that allocates only when there is one.
        let mut removed = Vec::new();
        for (name, in_after, emit) in self.fields {
            if !in_after {
                removed.push((name, emit));
                continue;
            }
            let back = emitter.enter(&name);
            emit(emitter)?;
            emitter.leave(back);
        }
        for (name, emit) in removed {
            let back = emitter.enter(&name);
            emit(emitter)?;
            emitter.leave(back);
        }
        Ok(())
    }

    /// An optional field compared whole: added, removed, or diffed as JSON when it changed.
    fn value<T: Serialize + PartialEq + 'static>(
        &mut self,
        name: &'static str,
        before: Option<T>,
        after: Option<T>,
    ) {
        if before == after {
            return;
        }
        let in_after = after.is_some();
        self.push(name.into(), in_after, move |e| match (before, after) {
            (Some(before), Some(after)) => plain(e, before, after),
            (None, Some(after)) => e.add(&after),
            (Some(_), None) => e.remove(),
            (None, None) => Ok(()),
        });
    }

    /// An object field whose own fields were gathered in `inner`; nothing when none differs.
    fn object(&mut self, name: &'static str, inner: Fields) {
        if !inner.fields.is_empty() {
            self.push(name.into(), true, move |e| inner.emit(e));
        }
    }

    /// The rest of an object once the fields handled one by one were taken out of it (left
    /// empty on both sides): when it differs, each of its fields as JSON.
    fn rest<T: Serialize + PartialEq>(&mut self, before: &T, after: &T) -> Result<()> {
        if before == after {
            return Ok(());
        }
        let (Value::Object(mut before), Value::Object(after)) = (json(before)?, json(after)?)
        else {
            return Ok(());
        };
        for (name, after) in after {
            match before.remove(&name) {
                Some(before) if before == after => {}
                Some(before) => self.push(name.into(), true, move |e| e.values(&before, &after)),
                None => self.push(name.into(), true, move |e| e.add(&after)),
            }
        }
        for name in before.into_iter().map(|(name, _)| name) {
            self.push(name.into(), false, Emitter::remove);
        }
        Ok(())
    }

    /// A string map (labels, annotations, nodeSelector), key by key when both sides have one.
    fn map<V: Serialize + PartialEq + 'static>(
        &mut self,
        name: &'static str,
        before: Option<BTreeMap<String, V>>,
        after: Option<BTreeMap<String, V>>,
    ) {
        match (before, after) {
            (Some(before), Some(after)) => {
                if before != after {
                    self.push(name.into(), true, move |e| e.string_maps(&before, &after));
                }
            }
            (before, after) => self.value(name, before, after),
        }
    }

    /// A list, element by element (with `element` for a differing pair) when both sides have
    /// one.
    fn list<T: Serialize + PartialEq + 'static>(
        &mut self,
        name: &'static str,
        before: Option<Vec<T>>,
        after: Option<Vec<T>>,
        element: fn(&mut Emitter, T, T) -> Result<()>,
    ) {
        match (before, after) {
            (Some(before), Some(after)) => {
                if before != after {
                    self.push(name.into(), true, move |e| e.list(before, after, element));
                }
            }
            (before, after) => self.value(name, before, after),
        }
    }

    /// An optional object field with fields of its own (`inner` gathers them) when both sides
    /// have it.
    fn optional_object<T: Serialize + PartialEq + 'static>(
        &mut self,
        name: &'static str,
        before: Option<T>,
        after: Option<T>,
        inner: fn(T, T) -> Result<Fields>,
    ) -> Result<()> {
        match (before, after) {
            (Some(before), Some(after)) => {
                if before != after {
                    self.object(name, inner(before, after)?);
                }
            }
            (before, after) => self.value(name, before, after),
        }
        Ok(())
    }
}

/// Metadata: labels and annotations (what the policy sets) apart from the rest.
fn metadata_fields(mut before: ObjectMeta, mut after: ObjectMeta) -> Result<Fields> {
    let labels = (before.labels.take(), after.labels.take());
    let annotations = (before.annotations.take(), after.annotations.take());
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.map("labels", labels.0, labels.1);
    fields.map("annotations", annotations.0, annotations.1);
    Ok(fields)
}

/// The spec: every field the policy may set apart, lists element by element, and the rest
/// compared whole.
fn spec_fields(mut before: PodSpec, mut after: PodSpec) -> Result<Fields> {
    let containers = (
        std::mem::take(&mut before.containers),
        std::mem::take(&mut after.containers),
    );
    let init_containers = (before.init_containers.take(), after.init_containers.take());
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
    let volumes = (before.volumes.take(), after.volumes.take());
    let pull_secrets = (
        before.image_pull_secrets.take(),
        after.image_pull_secrets.take(),
    );
    let spread = (
        before.topology_spread_constraints.take(),
        after.topology_spread_constraints.take(),
    );
    let host_aliases = (before.host_aliases.take(), after.host_aliases.take());
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.list("volumes", volumes.0, volumes.1, plain);
    fields.list("imagePullSecrets", pull_secrets.0, pull_secrets.1, plain);
    fields.list("topologySpreadConstraints", spread.0, spread.1, plain);
    fields.list("hostAliases", host_aliases.0, host_aliases.1, plain);
    fields.map("nodeSelector", node_selector.0, node_selector.1);
    fields.optional_object("affinity", affinity.0, affinity.1, affinity_fields)?;
    fields.list("tolerations", tolerations.0, tolerations.1, plain);
    fields.value("priorityClassName", priority_class.0, priority_class.1);
    fields.value("priority", priority.0, priority.1);
    fields.value("preemptionPolicy", preemption.0, preemption.1);
    fields.value("schedulerName", scheduler.0, scheduler.1);
    fields.list(
        "containers",
        Some(containers.0),
        Some(containers.1),
        container,
    );
    fields.list(
        "initContainers",
        init_containers.0,
        init_containers.1,
        container,
    );
    Ok(fields)
}

/// A changed container: env vars (usually most of it, and mostly unchanged) element by
/// element, resources apart, and the rest compared whole.
fn container(emitter: &mut Emitter, mut before: Container, mut after: Container) -> Result<()> {
    let env = (before.env.take(), after.env.take());
    let env_from = (before.env_from.take(), after.env_from.take());
    let mounts = (before.volume_mounts.take(), after.volume_mounts.take());
    let resources = (before.resources.take(), after.resources.take());
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.optional_object("resources", resources.0, resources.1, resources_fields)?;
    fields.list("env", env.0, env.1, plain);
    fields.list("envFrom", env_from.0, env_from.1, plain);
    fields.list("volumeMounts", mounts.0, mounts.1, plain);
    fields.emit(emitter)
}

/// A container's resources: requests and limits key by key (the policy fills and clamps
/// single entries), without building either side as JSON values.
fn resources_fields(
    mut before: ResourceRequirements,
    mut after: ResourceRequirements,
) -> Result<Fields> {
    let limits = (before.limits.take(), after.limits.take());
    let requests = (before.requests.take(), after.requests.take());
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.map("limits", limits.0, limits.1);
    fields.map("requests", requests.0, requests.1);
    Ok(fields)
}

/// Node affinity, pod affinity and pod anti-affinity, each with its terms element by element
/// (the policy appends to them).
fn affinity_fields(mut before: Affinity, mut after: Affinity) -> Result<Fields> {
    let node = (before.node_affinity.take(), after.node_affinity.take());
    let pod = (before.pod_affinity.take(), after.pod_affinity.take());
    let anti = (
        before.pod_anti_affinity.take(),
        after.pod_anti_affinity.take(),
    );
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.optional_object("nodeAffinity", node.0, node.1, node_affinity_fields)?;
    fields.optional_object("podAffinity", pod.0, pod.1, pod_affinity_fields)?;
    fields.optional_object("podAntiAffinity", anti.0, anti.1, pod_anti_affinity_fields)?;
    Ok(fields)
}

fn pod_affinity_fields(mut before: PodAffinity, mut after: PodAffinity) -> Result<Fields> {
    let required = (
        before
            .required_during_scheduling_ignored_during_execution
            .take(),
        after
            .required_during_scheduling_ignored_during_execution
            .take(),
    );
    let preferred = (
        before
            .preferred_during_scheduling_ignored_during_execution
            .take(),
        after
            .preferred_during_scheduling_ignored_during_execution
            .take(),
    );
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    pod_terms(&mut fields, required, preferred);
    Ok(fields)
}

fn pod_anti_affinity_fields(
    mut before: PodAntiAffinity,
    mut after: PodAntiAffinity,
) -> Result<Fields> {
    let required = (
        before
            .required_during_scheduling_ignored_during_execution
            .take(),
        after
            .required_during_scheduling_ignored_during_execution
            .take(),
    );
    let preferred = (
        before
            .preferred_during_scheduling_ignored_during_execution
            .take(),
        after
            .preferred_during_scheduling_ignored_during_execution
            .take(),
    );
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    pod_terms(&mut fields, required, preferred);
    Ok(fields)
}

/// The two term lists pod affinity and pod anti-affinity share.
type TermLists<T> = (Option<Vec<T>>, Option<Vec<T>>);

fn pod_terms(
    fields: &mut Fields,
    required: TermLists<PodAffinityTerm>,
    preferred: TermLists<WeightedPodAffinityTerm>,
) {
    fields.list(
        "requiredDuringSchedulingIgnoredDuringExecution",
        required.0,
        required.1,
        plain,
    );
    fields.list(
        "preferredDuringSchedulingIgnoredDuringExecution",
        preferred.0,
        preferred.1,
        plain,
    );
}

/// Required terms (ANDed with the policy's, so every one may change) and preferred terms
/// (appended), element by element.
fn node_affinity_fields(mut before: NodeAffinity, mut after: NodeAffinity) -> Result<Fields> {
    let required = (
        before
            .required_during_scheduling_ignored_during_execution
            .take(),
        after
            .required_during_scheduling_ignored_during_execution
            .take(),
    );
    let preferred = (
        before
            .preferred_during_scheduling_ignored_during_execution
            .take(),
        after
            .preferred_during_scheduling_ignored_during_execution
            .take(),
    );
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.optional_object(
        "requiredDuringSchedulingIgnoredDuringExecution",
        required.0,
        required.1,
        node_selector_fields,
    )?;
    fields.list(
        "preferredDuringSchedulingIgnoredDuringExecution",
        preferred.0,
        preferred.1,
        plain,
    );
    Ok(fields)
}

fn node_selector_fields(mut before: NodeSelector, mut after: NodeSelector) -> Result<Fields> {
    let terms = (
        std::mem::take(&mut before.node_selector_terms),
        std::mem::take(&mut after.node_selector_terms),
    );
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.list("nodeSelectorTerms", Some(terms.0), Some(terms.1), term);
    Ok(fields)
}

/// A changed term: its requirements element by element (the policy's are appended to them).
fn term(
    emitter: &mut Emitter,
    mut before: NodeSelectorTerm,
    mut after: NodeSelectorTerm,
) -> Result<()> {
    let expressions = (
        before.match_expressions.take(),
        after.match_expressions.take(),
    );
    let match_fields = (before.match_fields.take(), after.match_fields.take());
    let mut fields = Fields::default();
    fields.rest(&before, &after)?;
    fields.list("matchExpressions", expressions.0, expressions.1, plain);
    fields.list("matchFields", match_fields.0, match_fields.1, plain);
    fields.emit(emitter)
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

    fn values_diff(before: &Value, after: &Value) -> json_patch::Patch {
        let mut emitter = Emitter::default();
        emitter.values(before, after).expect("diff");
        serde_json::from_slice(&emitter.finish().json).expect("a JSON Patch")
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
            let ours = values_diff(&before, &after);
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

    /// The operations, in order, are those of `json_patch::diff` of the two whole pods, for
    /// changes in every part walked element by element: affinity terms and their requirements,
    /// preferred terms, tolerations, init containers, env, a removed map, a replaced spec rest.
    #[test]
    fn every_part_gives_the_whole_pod_diff_in_order() {
        let original: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"a": "1", "gone": "x"}, "annotations": {"k": "v"}},
            "spec": {
                "containers": [
                    {"name": "c0", "image": "i", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "c1", "image": "i", "resources": {"limits": {"cpu": "16"}}},
                ],
                "initContainers": [
                    {"name": "i0", "image": "i", "resources": {"requests": {"cpu": "16"}}},
                    {"name": "i1", "image": "i"},
                ],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
                            {"matchFields": [{"key": "f", "operator": "In", "values": ["1"]}]},
                            {"matchExpressions": [{"key": "c", "operator": "In", "values": ["1", "2"]}]},
                        ]},
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 1, "preference": {"matchExpressions": [{"key": "p", "operator": "Exists"}]}},
                        ],
                    },
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]},
                },
                "tolerations": [{"key": "t0", "operator": "Exists"}, {"key": "t1", "operator": "Exists"}],
                "nodeSelector": {"pool": "a"},
                "hostname": "h",
                "priority": 5,
            },
        }))
        .expect("pod");
        let mut desired = original.clone();
        let labels = desired.metadata.labels.as_mut().expect("labels");
        labels.remove("gone");
        labels.insert("b/c~d".into(), "2".into());
        desired.metadata.annotations = None;
        let spec = desired.spec.as_mut().expect("spec");
        spec.hostname = Some("other".into());
        spec.priority = None;
        spec.priority_class_name = Some("batch".into());
        spec.containers[0].env.as_mut().expect("env")[1].value = Some("3".into());
        spec.containers[1].resources = None;
        let init = spec.init_containers.as_mut().expect("init");
        init[0].resources.as_mut().expect("resources").requests = Some(
            [(
                "cpu".to_owned(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("8".into()),
            )]
            .into(),
        );
        init.pop();
        let node = spec
            .affinity
            .as_mut()
            .expect("affinity")
            .node_affinity
            .as_mut()
            .expect("node");
        let terms = &mut node
            .required_during_scheduling_ignored_during_execution
            .as_mut()
            .expect("required")
            .node_selector_terms;
        let extra: k8s_openapi::api::core::v1::NodeSelectorRequirement = serde_json::from_value(
            serde_json::json!({"key": "z", "operator": "In", "values": ["1"]}),
        )
        .expect("requirement");
        terms[0]
            .match_expressions
            .as_mut()
            .expect("expressions")
            .push(extra.clone());
        terms[1].match_expressions = Some(vec![extra.clone()]);
        terms[2].match_expressions.as_mut().expect("expressions")[0].values =
            Some(vec!["2".into()]);
        terms.push(terms[0].clone());
        node.preferred_during_scheduling_ignored_during_execution
            .as_mut()
            .expect("preferred")
            .insert(
                0,
                serde_json::from_value(serde_json::json!({"weight": 9, "preference": {}}))
                    .expect("preferred"),
            );
        spec.affinity.as_mut().expect("affinity").pod_anti_affinity = None;
        spec.tolerations.as_mut().expect("tolerations").remove(0);

        let ours = diff(original.clone(), desired.clone()).expect("diff");
        let whole = json_patch::diff(
            &serde_json::to_value(&original).expect("json"),
            &serde_json::to_value(&desired).expect("json"),
        );
        assert_eq!(ours, whole);
        assert!(ours.0.len() > 15, "{ours:?}");
        assert_eq!(
            apply(&original, &ours),
            serde_json::to_value(&desired).expect("json")
        );
        // The text is what serialising the operations gives.
        let encoded = encode(original, desired).expect("encode");
        assert_eq!(encoded.operations, ours.0.len());
        assert_eq!(encoded.json, serde_json::to_vec(&ours).expect("json"));
    }

    /// The lists SPEC §4a's fields grow, each walked element by element, give the operations of
    /// a diff of the whole pods, and applying them with `json_patch` alone gives the desired
    /// pod: volumes (one replaced in the middle, one appended), imagePullSecrets, topology
    /// spread constraints, hostAliases, a container's volumeMounts and envFrom, pod affinity and
    /// anti-affinity terms, and an init container inserted in front of the pod's own.
    #[test]
    fn the_lists_of_pod_customization_give_the_whole_pod_diff() {
        let original: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "i",
                    "volumeMounts": [{"name": "a", "mountPath": "/a"}],
                    "envFrom": [{"secretRef": {"name": "s0"}}]}],
                "initContainers": [{"name": "own", "image": "i"}],
                "volumes": [{"name": "a", "emptyDir": {}}, {"name": "spark-local-dir-1", "emptyDir": {}}, {"name": "z", "emptyDir": {}}],
                "imagePullSecrets": [{"name": "r0"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
                "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}},
            },
        }))
        .expect("pod");
        let desired: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "i",
                    "volumeMounts": [{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b", "readOnly": true}],
                    "envFrom": [{"secretRef": {"name": "s0"}}, {"configMapRef": {"name": "m"}}]}],
                "initContainers": [
                    {"name": "fluent-bit", "image": "f", "restartPolicy": "Always"},
                    {"name": "own", "image": "i"},
                ],
                "volumes": [
                    {"name": "a", "emptyDir": {}},
                    {"name": "spark-local-dir-1", "ephemeral": {"volumeClaimTemplate": {"spec": {
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "200Gi"}}}}}},
                    {"name": "z", "emptyDir": {}},
                    {"name": "b", "configMap": {"name": "hadoop"}},
                ],
                "imagePullSecrets": [{"name": "r0"}, {"name": "r1"}],
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                    {"maxSkew": 2, "topologyKey": "host", "whenUnsatisfiable": "ScheduleAnyway",
                     "labelSelector": {"matchLabels": {"spark-app-selector": "spark-1"}}},
                ],
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}, {"ip": "10.0.0.2", "hostnames": ["c"]}],
                "affinity": {
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "zone"},
                        {"topologyKey": "zone", "labelSelector": {"matchLabels": {"a": "b"}}},
                    ]},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 5, "podAffinityTerm": {"topologyKey": "host"}},
                    ]},
                },
            },
        }))
        .expect("pod");
        let ours = diff(original.clone(), desired.clone()).expect("diff");
        let whole = json_patch::diff(
            &serde_json::to_value(&original).expect("json"),
            &serde_json::to_value(&desired).expect("json"),
        );
        assert_eq!(ours, whole);
        let text = serde_json::to_string(&ours).expect("json");
        for walked in [
            "/spec/volumes/1/",
            "/spec/volumes/3",
            "/spec/imagePullSecrets/1",
            "/spec/topologySpreadConstraints/1",
            "/spec/hostAliases/0/hostnames/0",
            "/spec/hostAliases/1",
            "/spec/containers/0/volumeMounts/1",
            "/spec/containers/0/envFrom/1",
            "/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/1",
        ] {
            assert!(text.contains(walked), "{walked} in {text}");
        }
        assert!(
            !text.contains("\"path\":\"/spec/volumes\""),
            "volumes are not replaced whole: {text}"
        );
        assert_eq!(
            apply(&original, &ours),
            serde_json::to_value(&desired).expect("json")
        );
        let encoded = encode(original, desired).expect("encode");
        assert_eq!(encoded.json, serde_json::to_vec(&ours).expect("json"));
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
        let encoded = encode(executor(), executor()).expect("encode");
        assert!(encoded.is_empty());
        assert_eq!(encoded.json, b"[]");
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
    fn every_key_is_escaped_as_rfc_6901_writes_it() {
        // Written from RFC 6901 section 3: `~` is `~0`, `/` is `~1`, nothing else changes.
        let cases = [
            ("", "/"),
            ("plain", "/plain"),
            ("/", "/~1"),
            ("~", "/~0"),
            ("~1", "/~01"),
            ("a//b~~", "/a~1~1b~0~0"),
            ("/lead", "/~1lead"),
            ("trail~", "/trail~0"),
            ("café/ü~x", "/café~1ü~0x"),
        ];
        for (key, pointer) in cases {
            let mut emitter = Emitter::for_text();
            emitter.path.push_str("/metadata");
            let back = emitter.enter(key);
            assert_eq!(emitter.path, format!("/metadata{pointer}"), "key {key:?}");
            emitter.leave(back);
            assert_eq!(emitter.path, "/metadata", "key {key:?}");
        }
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
