//! Which of the matching rules decides a field: the last one that sets it, and its mode with it.
//!
//! Every concern asks this once per field: a label, annotation or nodeSelector key,
//! `priorityClassName`, `schedulerName`, an env var of a container, a resource entry of a
//! container, and SPEC §4a's keys: a volume by name, a mount by path in a container, an init
//! container or sidecar by name, a host alias by ip, a security context or dnsConfig field, the
//! pod-wide single values and localDirs. The answer is written here only, so that no concern can drift from the others.
//! This module only chooses between rules; it never reads or changes a pod.

use std::collections::BTreeMap;

use crate::policy::Rule;

/// How many fields [`last_setters`] finds by searching the ones it has, before it indexes them.
const SEARCHED_UP_TO: usize = 16;

/// For every field the matching `rules` (in policy order) set, the value and the rule of the
/// last rule setting it, in the order the fields are first set: a field set again keeps its
/// place, so new entries come out in policy order. `settings` lists the fields one rule sets,
/// each with its value.
pub(super) fn last_setters<'r, K, V, I>(
    rules: &[&'r Rule],
    mut settings: impl FnMut(&'r Rule) -> I,
) -> Vec<(K, (V, &'r Rule))>
where
    K: Ord + Clone,
    I: IntoIterator<Item = (K, V)>,
{
    // Where each field's winner is. A policy sets a handful of fields per concern, and
    // searching that few is cheaper than a map that allocates for every field; past
    // `SEARCHED_UP_TO` fields (a rule with `containers: all` on a pod of thousands), a map keeps
    // every lookup logarithmic.
    let mut places: Option<BTreeMap<K, usize>> = None;
    let mut winners: Vec<(K, (V, &'r Rule))> = Vec::new();
    for rule in rules {
        for (field, value) in settings(rule) {
            let place = match &places {
                Some(places) => places.get(&field).copied(),
                None => winners.iter().position(|(known, _)| *known == field),
            };
            match place.and_then(|place| winners.get_mut(place)) {
                Some((_, winner)) => *winner = (value, *rule),
                None => {
                    if let Some(places) = places.as_mut() {
                        places.insert(field.clone(), winners.len());
                    }
                    winners.push((field, (value, *rule)));
                    if places.is_none() && winners.len() > SEARCHED_UP_TO {
                        places = Some(
                            winners
                                .iter()
                                .enumerate()
                                .map(|(place, (known, _))| (known.clone(), place))
                                .collect(),
                        );
                    }
                }
            }
        }
    }
    winners
}

/// [`last_setters`] of a map field (labels, annotations, nodeSelector), in key order.
pub(super) fn last_setters_by_key<'r, V>(
    rules: &[&'r Rule],
    field: impl Fn(&'r Rule) -> &'r BTreeMap<String, V>,
) -> BTreeMap<&'r str, (&'r V, &'r Rule)> {
    last_setters(rules, |rule| {
        field(rule).iter().map(|(key, value)| (key.as_str(), value))
    })
    .into_iter()
    .collect()
}

/// [`last_setters`] of a field that holds one value (`priorityClassName`, `schedulerName`).
pub(super) fn last_rule_setting<'r, T>(
    rules: &[&'r Rule],
    field: impl Fn(&'r Rule) -> Option<&'r T>,
) -> Option<(&'r T, &'r Rule)> {
    last_setters(rules, |rule| field(rule).map(|value| ((), value)))
        .pop()
        .map(|((), setting)| setting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> Rule {
        Rule {
            name: name.to_owned(),
            ..Rule::default()
        }
    }

    #[test]
    fn the_last_rule_setting_a_field_wins_and_the_field_keeps_its_first_place() {
        let (a, b, c) = (rule("a"), rule("b"), rule("c"));
        let sets: [(&str, &[(&str, u8)]); 3] = [
            ("a", &[("x", 1), ("y", 1)]),
            ("b", &[("z", 2)]),
            ("c", &[("x", 3)]),
        ];
        let settings = |r: &Rule| -> Vec<(&str, u8)> {
            sets.iter()
                .filter(|(name, _)| *name == r.name)
                .flat_map(|(_, fields)| fields.iter().copied())
                .collect()
        };
        let winners: Vec<(&str, u8, &str)> = last_setters(&[&a, &b, &c], settings)
            .into_iter()
            .map(|(field, (value, rule))| (field, value, rule.name.as_str()))
            .collect();
        assert_eq!(winners, [("x", 3, "c"), ("y", 1, "a"), ("z", 2, "b")]);
        assert!(last_setters(&[], settings).is_empty());
    }

    #[test]
    fn past_the_fields_searched_the_index_keeps_every_winner_and_its_place() {
        // Rule a sets 40 fields, more than are found by search: the 17th is the one the index
        // starts at. b sets most of them again, in reverse, and 5 new ones; c sets the 17th and
        // one of b's new ones again.
        let (a, b, c) = (rule("a"), rule("b"), rule("c"));
        let settings = |r: &Rule| -> Vec<(u32, u8)> {
            match r.name.as_str() {
                "a" => (0..40).map(|field| (field, 1)).collect(),
                "b" => (10..45).rev().map(|field| (field, 2)).collect(),
                _ => vec![(16, 3), (42, 3)],
            }
        };
        let winners: Vec<(u32, u8, &str)> = last_setters(&[&a, &b, &c], settings)
            .into_iter()
            .map(|(field, (value, rule))| (field, value, rule.name.as_str()))
            .collect();
        let by_last_setter = |field: u32| match field {
            16 | 42 => (field, 3, "c"),
            0..10 => (field, 1, "a"),
            _ => (field, 2, "b"),
        };
        // a's fields in a's order, then b's new ones in b's order.
        let expected: Vec<(u32, u8, &str)> =
            (0..40).chain((40..45).rev()).map(by_last_setter).collect();
        assert_eq!(winners, expected);
    }

    #[test]
    fn a_single_valued_field_is_decided_by_the_last_rule_that_sets_it() {
        let mut a = rule("a");
        a.scheduler_name = Some("yunikorn".to_owned());
        let b = rule("b");
        let mut c = rule("c");
        c.scheduler_name = Some("volcano".to_owned());
        let last = |rules: &[&Rule]| {
            last_rule_setting(rules, |r| r.scheduler_name.as_ref())
                .map(|(value, rule)| (value.clone(), rule.name.clone()))
        };
        assert_eq!(last(&[&a, &b, &c]), Some(("volcano".into(), "c".into())));
        assert_eq!(last(&[&c, &b, &a]), Some(("yunikorn".into(), "a".into())));
        assert_eq!(last(&[&a, &b]), Some(("yunikorn".into(), "a".into())));
        assert_eq!(last(&[&b]), None);
    }
}
