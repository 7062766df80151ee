//! Sets of the values a list already holds, for the lists a request can make long (node
//! selector terms and their requirements, preferred terms, tolerations).
//!
//! A pod of 3 MiB can carry tens of thousands of entries in one list, so "is this one already
//! there" must never be answered by comparing it with every entry: that made the AND of the
//! policy's affinity into 45,000 terms take 11 s. Up to [`SCAN_UP_TO`] entries a list is still
//! searched entry by entry (what every real pod has, and cheaper than hashing); past that the
//! entries go into a hash set. k8s-openapi types are not `Hash`, so a value is hashed by its JSON
//! form, streamed into the hasher without being written anywhere, and compared with `PartialEq`
//! when hashes meet. The set's hasher is std's `RandomState` (SipHash with a random key), so a
//! client cannot choose entries that all collide.
//!
//! Nothing here copies a value: the sets hold references.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use serde::Serialize;

/// The longest list searched entry by entry.
pub(super) const SCAN_UP_TO: usize = 16;

/// A value compared by `PartialEq` and hashed by its JSON form.
///
/// Equal values serialise to the same bytes (k8s-openapi writes fields in a fixed order, maps
/// are ordered), so equal values hash alike, as `Hash` requires.
#[derive(Debug)]
pub(super) struct ByJson<'a, T>(pub &'a T);

impl<T: PartialEq> PartialEq for ByJson<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

// The k8s-openapi types used here (terms, requirements, tolerations) hold no floats, so their
// equality is an equivalence.
impl<T: PartialEq> Eq for ByJson<'_, T> {}

impl<T: Serialize> Hash for ByJson<'_, T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Serialising into a hasher cannot fail for these types; were it to, equal values
        // would still fail alike and so hash alike.
        let _ = serde_json::to_writer(HashWriter(state), self.0);
    }
}

/// Feeds written bytes to a hasher.
struct HashWriter<'h, H>(&'h mut H);

impl<H: Hasher> std::io::Write for HashWriter<'_, H> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The keys seen so far: a short list while there are few, a hash set past [`SCAN_UP_TO`].
#[derive(Debug)]
pub(super) struct Seen<K> {
    few: Vec<K>,
    many: Option<HashSet<K>>,
}

impl<K: Hash + Eq> Seen<K> {
    pub(super) fn new() -> Self {
        Self {
            few: Vec::new(),
            many: None,
        }
    }

    /// The keys of `items`, repeated ones once.
    pub(super) fn of(items: impl IntoIterator<Item = K>) -> Self {
        let mut seen = Self::new();
        for item in items {
            seen.insert(item);
        }
        seen
    }

    /// Adds `key`; `true` when it was not there yet.
    pub(super) fn insert(&mut self, key: K) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        // At most SCAN_UP_TO comparisons: bounded whatever the request.
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > SCAN_UP_TO {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

/// The entries of `want` that are neither in `have` nor earlier in `want`, in order.
pub(super) fn missing<'a, T: Serialize + PartialEq>(have: &'a [T], want: &'a [T]) -> Vec<&'a T> {
    if want.len() <= 1 || have.len() + want.len() <= SCAN_UP_TO {
        // One search of `have` per wanted entry, and few of them: no set to build (the
        // policy's side is the short one, so this is every real pod's case).
        let mut found: Vec<&T> = Vec::new();
        for item in want {
            if !have.contains(item) && !found.contains(&item) {
                found.push(item);
            }
        }
        return found;
    }
    let mut seen = Seen::of(have.iter().map(ByJson));
    want.iter()
        .filter(|item| seen.insert(ByJson(*item)))
        .collect()
}

/// Keeps the first of every run of equal entries, wherever they are, in order.
pub(super) fn dedup_keeping_first<T: Serialize + PartialEq>(items: &mut Vec<T>) {
    let keep: Vec<bool> = {
        let mut seen = Seen::new();
        items.iter().map(|item| seen.insert(ByJson(item))).collect()
    };
    if keep.iter().all(|&k| k) {
        return;
    }
    let mut keep = keep.into_iter();
    items.retain(|_| keep.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

    use super::*;

    fn term(key: &str) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.to_owned(),
                operator: "Exists".to_owned(),
                values: None,
            }]),
            match_fields: None,
        }
    }

    /// The same answers as a search of the whole list, below and above the switch to a set.
    #[test]
    fn seen_answers_as_a_full_search_does_on_both_sides_of_the_switch() {
        for size in [0, 1, SCAN_UP_TO, SCAN_UP_TO + 1, 200] {
            let items: Vec<NodeSelectorTerm> = (0..size)
                .map(|i| term(&format!("k{}", i % 7 + i / 3)))
                .collect();
            let probes = ["k0", "k3", "absent"].map(term);
            let mut seen = Seen::new();
            let mut kept: Vec<&NodeSelectorTerm> = Vec::new();
            for item in &items {
                let new = !kept.contains(&item);
                assert_eq!(seen.insert(ByJson(item)), new, "size {size}");
                if new {
                    kept.push(item);
                }
            }
            for probe in &probes {
                assert_eq!(
                    seen.insert(ByJson(probe)),
                    !kept.contains(&probe),
                    "size {size}"
                );
            }
            let mut deduped = items.clone();
            dedup_keeping_first(&mut deduped);
            assert_eq!(deduped.iter().collect::<Vec<_>>(), kept, "size {size}");
        }
    }

    #[test]
    fn missing_keeps_the_order_of_want_and_drops_its_repeats() {
        let have: Vec<_> = (0..40).map(|i| term(&format!("h{i}"))).collect();
        let want = [term("a"), term("h3"), term("b"), term("a"), term("h39")];
        let keys: Vec<String> = missing(&have, &want)
            .iter()
            .map(|t| t.match_expressions.as_ref().unwrap()[0].key.clone())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(missing(&have[..2], &want).len(), 4);
    }
}
