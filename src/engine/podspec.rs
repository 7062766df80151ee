//! Pod-wide single values and lists of SPEC §4a: `terminationGracePeriodSeconds`,
//! `automountServiceAccountToken`, `runtimeClassName` (each decided by the last rule setting
//! it), `dnsConfig` (field by field), `hostAliases` (keyed by `ip`) and `imagePullSecrets`
//! (added unless an equal one is there).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::policy::{Mode, Rule};

use super::dedup::{ByJson, Seen};
use super::precedence::{last_rule_setting, last_setters};
use super::security::{fields_of, merged};
use super::{kept_warning, quoted_json};

/// What the apiserver writes into a pod that sets no `terminationGracePeriodSeconds`, before
/// any webhook sees it: under `merge` it is not the pod's own choice (as `default-scheduler`).
const DEFAULT_GRACE_PERIOD: i64 = 30;

pub(super) fn apply(
    original: &Pod,
    desired: &mut Pod,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    let (Some(original_spec), Some(spec)) = (original.spec.as_ref(), desired.spec.as_mut()) else {
        return;
    };
    if let Some((&seconds, rule)) =
        last_rule_setting(rules, |r| r.pod.termination_grace_period_seconds.as_ref())
    {
        let own = original_spec
            .termination_grace_period_seconds
            .filter(|&s| s != DEFAULT_GRACE_PERIOD);
        if let Some(value) = single(
            own,
            seconds,
            rule,
            "terminationGracePeriodSeconds",
            warnings,
        ) {
            spec.termination_grace_period_seconds = Some(value);
        }
    }
    if let Some((&automount, rule)) =
        last_rule_setting(rules, |r| r.pod.automount_service_account_token.as_ref())
    {
        let own = original_spec.automount_service_account_token;
        if let Some(value) = single(
            own,
            automount,
            rule,
            "automountServiceAccountToken",
            warnings,
        ) {
            spec.automount_service_account_token = Some(value);
        }
    }
    apply_runtime_class(original_spec, spec, rules, warnings);
    let dns = last_setters(rules, |rule| {
        rule.pod
            .dns_config
            .as_ref()
            .map(fields_of)
            .unwrap_or_default()
            .into_iter()
    });
    if !dns.is_empty()
        && let Some(config) = merged(
            original_spec.dns_config.as_ref(),
            &dns,
            |field| format!("dnsConfig.{field}"),
            warnings,
        )
    {
        spec.dns_config = Some(config);
    }
    apply_host_aliases(original_spec, spec, rules, warnings);
    let wanted: Vec<_> = rules
        .iter()
        .flat_map(|r| r.pod.image_pull_secrets.iter())
        .collect();
    if !wanted.is_empty() {
        let mut seen = Seen::of(
            original_spec
                .image_pull_secrets
                .iter()
                .flatten()
                .map(ByJson),
        );
        for secret in wanted {
            if seen.insert(ByJson(secret)) {
                spec.image_pull_secrets
                    .get_or_insert_with(Vec::new)
                    .push(secret.clone());
            }
        }
    }
}

/// A single value by the rule's mode: what to set, `None` to leave the pod's.
fn single<T: PartialEq + std::fmt::Debug + Copy>(
    own: Option<T>,
    wanted: T,
    rule: &Rule,
    field: &str,
    warnings: &mut Vec<String>,
) -> Option<T> {
    match own {
        Some(have) if have == wanted => None,
        Some(have) if rule.mode == Mode::Merge => {
            warnings.push(kept_warning(
                field,
                &format!("{have:?}"),
                &format!("{wanted:?}"),
                rule,
            ));
            None
        }
        _ => Some(wanted),
    }
}

/// Sets `runtimeClassName`. The apiserver's RuntimeClass plugin runs before webhooks and has
/// already written the old class's `overhead`; its validation refuses a pod whose overhead is
/// not the class's, so a changed class drops it, and the plugin, run again after a webhook
/// changed the pod, writes the new class's.
fn apply_runtime_class(
    original: &PodSpec,
    spec: &mut PodSpec,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    let Some((class, rule)) = last_rule_setting(rules, |r| r.pod.runtime_class_name.as_ref())
    else {
        return;
    };
    match original
        .runtime_class_name
        .as_deref()
        .filter(|c| !c.is_empty())
    {
        Some(have) if have == class => {}
        Some(have) if rule.mode == Mode::Merge => warnings.push(kept_warning(
            "runtimeClassName",
            &super::metadata::quoted(have),
            &format!("{class:?}"),
            rule,
        )),
        _ => {
            spec.runtime_class_name = Some(class.clone());
            spec.overhead = None;
        }
    }
}

/// `hostAliases` by `ip`: an entry for an ip the pod has is kept under `merge` (with a warning
/// when it differs) and replaced under `enforce`.
fn apply_host_aliases(
    original: &PodSpec,
    spec: &mut PodSpec,
    rules: &[&Rule],
    warnings: &mut Vec<String>,
) {
    let winners = last_setters(rules, |rule| {
        rule.pod.host_aliases.iter().map(|a| (a.ip.as_str(), a))
    });
    if winners.is_empty() {
        return;
    }
    let own = original.host_aliases.as_deref().unwrap_or_default();
    let mut places: HashMap<&str, usize> = HashMap::with_capacity(own.len());
    for (index, alias) in own.iter().enumerate() {
        places.entry(alias.ip.as_str()).or_insert(index);
    }
    for (ip, (alias, rule)) in winners {
        match places.get(ip).and_then(|&i| own.get(i).map(|a| (i, a))) {
            Some((_, have)) if have == alias => {}
            Some((_, have)) if rule.mode == Mode::Merge => warnings.push(kept_warning(
                &format!("hostAliases {ip}"),
                &quoted_json(have),
                &quoted_json(alias),
                rule,
            )),
            Some((index, _)) => {
                if let Some(slot) = spec.host_aliases.as_mut().and_then(|a| a.get_mut(index)) {
                    *slot = alias.clone();
                }
            }
            None => spec
                .host_aliases
                .get_or_insert_with(Vec::new)
                .push(alias.clone()),
        }
    }
}
