//! What the apiserver checks of any Kubernetes object a rule carries (SPEC §4a): unknown keys
//! at every depth, read from the Kubernetes types themselves, type errors field by field, and
//! the name, path, mode and address rules many fields share.
//!
//! k8s-openapi's types skip keys they do not know, so a typo (`mountPth`) would silently drop
//! a field. Rather than keep a hand-written list of every field of every type (which would go
//! stale with each Kubernetes release), the field names are asked of the type: a probing
//! `Deserializer` walks the type along a path and stops at the struct there, which hands over
//! its field list in `deserialize_struct`. Never looks at a pod or the cluster.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde_json::{Map, Value};

use super::{Checker, index_path, key_path, kind_of, unknown_field_message};
use crate::policy::check_dns_label;
use crate::policy::labels::is_rfc1123_label;

/// One step from a Kubernetes type towards a nested one: a struct field, or an element of a
/// list (or a value of a map).
#[derive(Clone, Copy)]
enum Step<'a> {
    Field(&'a str),
    Item,
}

/// What a Kubernetes type holds at a path.
enum Shape {
    /// A struct with these fields.
    Struct(&'static [&'static str]),
    /// A map with free keys (labels, resource lists).
    Map,
    /// A scalar, a list, or a path the type does not have.
    Other,
}

/// The probe's "error": how it reports what it found, and the only way it ever returns.
#[derive(Debug)]
enum Found {
    Struct(&'static [&'static str]),
    Map,
    Other,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe finished")
    }
}

impl std::error::Error for Found {}

impl de::Error for Found {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Found::Other
    }
}

/// Deserializes nothing: it walks a type's `Deserialize` along `steps` and reports the shape
/// found at the end. Costs one call per step; no value is ever built.
struct Probe<'p> {
    steps: &'p [Step<'p>],
}

struct OneEntry<'p> {
    key: Option<&'p str>,
    value: Option<Probe<'p>>,
}

impl<'de> de::MapAccess<'de> for OneEntry<'_> {
    type Error = Found;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Found> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Found> {
        match self.value.take() {
            Some(probe) => seed.deserialize(probe),
            None => Err(Found::Other),
        }
    }
}

struct OneItem<'p>(Option<Probe<'p>>);

impl<'de> de::SeqAccess<'de> for OneItem<'_> {
    type Error = Found;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Found> {
        match self.0.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Ok(None),
        }
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Found;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Found> {
        match self.steps.split_first() {
            None => Err(Found::Struct(fields)),
            Some((Step::Field(name), rest)) => visitor.visit_map(OneEntry {
                key: Some(name),
                value: Some(Probe { steps: rest }),
            }),
            Some((Step::Item, _)) => Err(Found::Other),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Found> {
        match self.steps.split_first() {
            None => Err(Found::Map),
            Some((_, rest)) => visitor.visit_map(OneEntry {
                key: Some("key"),
                value: Some(Probe { steps: rest }),
            }),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Found> {
        match self.steps.split_first() {
            Some((Step::Item, rest)) => visitor.visit_seq(OneItem(Some(Probe { steps: rest }))),
            _ => Err(Found::Other),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Found> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Found> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

fn shape<T: DeserializeOwned>(steps: &[Step<'_>]) -> Shape {
    match T::deserialize(Probe { steps }) {
        Err(Found::Struct(fields)) => Shape::Struct(fields),
        Err(Found::Map) => Shape::Map,
        Err(Found::Other) | Ok(_) => Shape::Other,
    }
}

/// The field names of a Kubernetes type, as its JSON spells them.
pub(super) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    match shape::<T>(&[]) {
        Shape::Struct(fields) => fields,
        Shape::Map | Shape::Other => &[],
    }
}

impl Checker {
    /// Reads a Kubernetes object of type `T` as the apiserver would: every key the type does
    /// not have is reported at every depth, and a type error in one top-level field does not
    /// hide one in another. Keys in `delegated` are left out, for the caller's own reader
    /// (which reports their unknown keys and types itself, so nothing is reported twice, and
    /// puts what it read into the object). Unknown keys alone do not stop the object from being
    /// built (the type skips them), so the caller's checks still run on the rest; a type error
    /// does. `top` words the message for an unknown top-level key.
    pub(super) fn k8s_object<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        path: &str,
        delegated: &[&str],
        top: fn(&str, &[&str]) -> String,
    ) -> Option<T> {
        let Value::Object(map) = value else {
            let fields = fields_of::<T>();
            self.problem(
                path,
                format!(
                    "must be a mapping with fields {}, found {}",
                    fields.join(", "),
                    kind_of(value)
                ),
            );
            return None;
        };
        self.unknown_fields::<T>(map, path, delegated, top);
        let mut rest = Value::Object(
            map.iter()
                .filter(|(key, _)| !delegated.contains(&key.as_str()))
                .map(|(key, item)| (key.clone(), item.clone()))
                .collect(),
        );
        let before = self.problems.len();
        self.type_errors_in::<T>(&mut rest, path, 0, &|x| x);
        // What failed is now null (k8s-openapi reads every field as optional), so the rest is
        // still built and checked: a wrong type in one field hides nothing else.
        match serde_json::from_value::<T>(rest) {
            Ok(typed) => Some(typed),
            Err(error) => {
                if self.problems.len() == before {
                    self.problem(path, error.to_string());
                }
                None
            }
        }
    }

    /// Reports each type error inside `value` at its own path and replaces what failed by null.
    /// `wrap` puts a value back where `value` is in `T` (one field or element per level), so a
    /// single field can be read alone: k8s-openapi fills what is missing with defaults, so a
    /// one-path object reads unless that path is wrong. A failing field is descended into only
    /// while the error lies deeper; the cost is the object's size times its depth.
    fn type_errors_in<T: DeserializeOwned>(
        &mut self,
        value: &mut Value,
        path: &str,
        depth: usize,
        wrap: &dyn Fn(Value) -> Value,
    ) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if child.is_null() {
                        continue;
                    }
                    let name = key.clone();
                    let one =
                        move |x: Value| wrap(Value::Object(Map::from_iter([(name.clone(), x)])));
                    self.type_error_at::<T>(child, &key_path(path, key), depth, &one);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    let one = |x: Value| wrap(Value::Array(vec![x]));
                    self.type_error_at::<T>(child, &index_path(path, i), depth, &one);
                }
            }
            _ => {}
        }
    }

    fn type_error_at<T: DeserializeOwned>(
        &mut self,
        child: &mut Value,
        path: &str,
        depth: usize,
        wrap: &dyn Fn(Value) -> Value,
    ) {
        let Err(error) = serde_path_to_error::deserialize::<_, T>(wrap(child.clone())) else {
            return;
        };
        if error.path().iter().count() > depth + 1 && (child.is_object() || child.is_array()) {
            self.type_errors_in::<T>(child, path, depth + 1, wrap);
            return;
        }
        let mut message = error.into_inner().to_string();
        if child.is_f64() && child.as_f64().is_some_and(|f| f.fract() == 0.0) {
            // YAML 1.2 reads 0644 as a number with a fraction, where kubectl's YAML 1.1 reads
            // an octal mode.
            message.push_str("; write a whole number (a file mode in octal as 0o644, or in decimal as 420: a leading 0 is not octal here)");
        }
        self.problem(path, message);
        self.stood_in.insert(path.to_owned());
        // A field that failed becomes null (read as absent); an element of a list, which null
        // cannot stand for, becomes the first empty value its type reads.
        let stand_ins = [
            Value::Null,
            Value::String(String::new()),
            Value::from(0),
            Value::Bool(false),
            Value::Object(Map::new()),
            Value::Array(Vec::new()),
        ];
        *child = stand_ins
            .into_iter()
            .find(|stand_in| serde_json::from_value::<T>(wrap(stand_in.clone())).is_ok())
            .unwrap_or(Value::Null);
    }

    /// [`Checker::k8s_object`] with nothing delegated.
    pub(super) fn k8s<T: DeserializeOwned>(&mut self, value: &Value, path: &str) -> Option<T> {
        self.k8s_object(value, path, &[], unknown_field_message)
    }

    /// Reports every key of `map` (an object of type `T`) and of every object inside it that
    /// the type at that place does not have. `top` writes the message for the top-level keys.
    pub(super) fn unknown_fields<T: DeserializeOwned>(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        delegated: &[&str],
        top: fn(&str, &[&str]) -> String,
    ) {
        let fields = fields_of::<T>();
        let mut steps = Vec::new();
        for (key, item) in map {
            if delegated.contains(&key.as_str()) {
                continue;
            }
            if !fields.contains(&key.as_str()) {
                self.problem(key_path(path, key), top(key, fields));
                continue;
            }
            steps.push(Step::Field(key));
            self.walk::<T>(item, path, Some(key), &mut steps);
            steps.pop();
        }
    }

    /// One place inside the object: `steps` lead from `T` to it, `key` (or an index, when
    /// `None`) is how it is named after `parent`. Only objects and lists are visited, and each
    /// once, so the cost is the object's size times the depth (at most 32).
    fn walk<'v, T: DeserializeOwned>(
        &mut self,
        value: &'v Value,
        parent: &str,
        key: Option<&str>,
        steps: &mut Vec<Step<'v>>,
    ) {
        let path = || match key {
            Some(key) => key_path(parent, key),
            None => parent.to_owned(),
        };
        match value {
            Value::Object(map) => match shape::<T>(steps) {
                Shape::Struct(fields) => {
                    let here = path();
                    for (name, item) in map {
                        if !fields.contains(&name.as_str()) {
                            self.problem(
                                key_path(&here, name),
                                unknown_field_message(name, fields),
                            );
                        } else if item.is_object() || item.is_array() {
                            steps.push(Step::Field(name));
                            self.walk::<T>(item, &here, Some(name), steps);
                            steps.pop();
                        }
                    }
                }
                Shape::Map => {
                    let here = path();
                    for (name, item) in map {
                        if item.is_object() || item.is_array() {
                            steps.push(Step::Item);
                            self.walk::<T>(item, &here, Some(name), steps);
                            steps.pop();
                        }
                    }
                }
                // A mapping where the type has none is a type error, reported by the typed read.
                Shape::Other => {}
            },
            Value::Array(items) => {
                let here = path();
                for (i, item) in items.iter().enumerate() {
                    if item.is_object() || item.is_array() {
                        steps.push(Step::Item);
                        self.walk::<T>(item, &index_path(&here, i), None, steps);
                        steps.pop();
                    }
                }
            }
            _ => {}
        }
    }

    /// A required string field: reports it missing or empty.
    pub(super) fn required(&mut self, value: &str, path: &str, what: &str) -> bool {
        if value.is_empty() {
            self.problem(path, format!("missing or empty; give {what}"));
            return false;
        }
        true
    }

    /// A DNS-1123 label (volume, container and port-less names).
    pub(super) fn dns_label(&mut self, value: &str, path: &str, what: &str) {
        if let Err(why) = check_dns_label(value) {
            self.problem(path, format!("{value:?} is not {what}: it {why}"));
        }
    }

    /// A DNS subdomain (names of ConfigMaps, Secrets, claims, classes).
    pub(super) fn dns_subdomain(&mut self, value: &str, path: &str, what: &str) {
        if let Err(why) = crate::policy::check_dns_subdomain(value) {
            self.problem(path, format!("{value:?} is not {what}: it {why}"));
        }
    }

    /// One of a closed set of strings.
    pub(super) fn one_of(&mut self, value: Option<&str>, path: &str, allowed: &[&str]) {
        if let Some(value) = value
            && !allowed.contains(&value)
        {
            let allowed: Vec<&str> = allowed
                .iter()
                .map(|a| if a.is_empty() { "\"\"" } else { a })
                .collect();
            self.problem(
                path,
                format!("{value:?} is not allowed; allowed: {}", allowed.join(", ")),
            );
        }
    }

    /// A file mode, as the apiserver allows it: 0 to 0777.
    pub(super) fn file_mode(&mut self, mode: Option<i32>, path: &str) {
        if let Some(mode) = mode
            && !(0..=0o777).contains(&mode)
        {
            // YAML 1.2 (how policies are read) takes 0644 for the decimal number 644, where
            // kubectl's YAML 1.1 reads it as octal.
            self.problem(
                path,
                format!(
                    "{mode} is not a file mode; allowed: 0 to 511 (0o777); write octal modes as 0o644 (0644 is read as the decimal number 644) or in decimal (420)"
                ),
            );
        }
    }

    /// A path inside a volume (`items[].path`, `subPath`): relative, without a `..` part.
    pub(super) fn relative_path(&mut self, value: &str, path: &str) {
        if value.starts_with('/') {
            self.problem(
                path,
                format!("{value:?} must be a relative path, not start with '/'"),
            );
        }
        if value.split('/').any(|part| part == "..") {
            self.problem(path, format!("{value:?} must not contain '..'"));
        }
    }

    /// A path in the container or on the node: absolute, without a `..` part.
    pub(super) fn absolute_path(&mut self, value: &str, path: &str) {
        if !self.required(value, path, "an absolute path") {
            return;
        }
        if !value.starts_with('/') {
            self.problem(
                path,
                format!("{value:?} must be an absolute path (start with '/')"),
            );
        }
        if value.split('/').any(|part| part == "..") {
            self.problem(path, format!("{value:?} must not contain '..'"));
        }
    }

    /// An IPv4 or IPv6 address; the parsed form, so that `::1` and `0::1` compare equal.
    pub(super) fn ip(&mut self, value: &str, path: &str) -> Option<IpAddr> {
        match value.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.problem(
                    path,
                    format!("{value:?} is not an IP address; give an IPv4 (10.0.0.1) or IPv6 (fd00::1) address"),
                );
                None
            }
        }
    }
}

/// Checks a port name (IANA_SVC_NAME): at most 15 characters of a-z, 0-9 and '-', at least one
/// letter, no '-' at either end and no "--".
pub(super) fn check_port_name(value: &str) -> Result<(), String> {
    let ok = value.len() <= 15
        && is_rfc1123_label(value)
        && value.bytes().any(|b| b.is_ascii_lowercase())
        && !value.contains("--");
    if ok {
        Ok(())
    } else {
        Err("must be an IANA service name: 1 to 15 characters of a-z, 0-9 and '-', with at least one letter, no '-' at either end and no \"--\"".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, Volume};

    use super::*;

    #[test]
    fn field_names_come_from_the_type_at_any_depth() {
        let container = fields_of::<Container>();
        assert!(container.contains(&"livenessProbe") && container.contains(&"volumeMounts"));
        let probe_http =
            shape::<Container>(&[Step::Field("livenessProbe"), Step::Field("httpGet")]);
        let Shape::Struct(fields) = probe_http else {
            panic!("httpGet is a struct")
        };
        assert_eq!(
            fields,
            &["host", "httpHeaders", "path", "port", "scheme"][..]
        );
        let Shape::Struct(fields) = shape::<Volume>(&[
            Step::Field("ephemeral"),
            Step::Field("volumeClaimTemplate"),
            Step::Field("spec"),
            Step::Field("selector"),
            Step::Field("matchExpressions"),
            Step::Item,
        ]) else {
            panic!("a label selector requirement is a struct")
        };
        assert_eq!(fields, &["key", "operator", "values"][..]);
        assert!(matches!(
            shape::<Container>(&[Step::Field("resources"), Step::Field("limits")]),
            Shape::Map
        ));
        assert!(matches!(
            shape::<Container>(&[Step::Field("image")]),
            Shape::Other
        ));
    }

    #[test]
    fn port_names_follow_iana_svc_name() {
        for good in ["http", "metrics-1", "a1"] {
            assert!(check_port_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1234",
            "-http",
            "http-",
            "ht--tp",
            "HTTP",
            "a-very-long-port-name",
        ] {
            assert!(check_port_name(bad).is_err(), "{bad}");
        }
    }
}
