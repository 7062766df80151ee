//! The SPEC §4a rule fields: which reader takes each, and the plain pod spec fields read here
//! (`imagePullSecrets`, `terminationGracePeriodSeconds`, `automountServiceAccountToken`,
//! `runtimeClassName`, `dnsConfig`, `hostAliases`) and `localDirs`.
//!
//! Only reads and checks them into [`PodCustomization`]; applying them is the engine's
//! business. Never stops at the first problem.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{HostAlias, LocalObjectReference, PodDNSConfig};
use serde_json::Value;

use crate::policy::{LocalDirs, PodCustomization, Quantity};

use super::containers::Kind;
use super::volumes::RuleVolumes;
use super::{Checker, index_path, key_path, kind_of, scalar_text};

/// The rule fields of SPEC §4a, in the order the SPEC lists them; a test keeps `RULE_FIELDS` in
/// step.
#[cfg(test)]
pub(super) const POD_FIELDS: &[&str] = &[
    "volumes",
    "volumeMounts",
    "envFrom",
    "initContainers",
    "sidecars",
    "securityContext",
    "containerSecurityContext",
    "imagePullSecrets",
    "topologySpreadConstraints",
    "podAffinity",
    "podAntiAffinity",
    "terminationGracePeriodSeconds",
    "automountServiceAccountToken",
    "runtimeClassName",
    "dnsConfig",
    "hostAliases",
    "localDirs",
];

/// The apiserver's limits on `dnsConfig` (those of the resolver it is written into).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 253;

impl Checker {
    /// Reads one SPEC §4a field into `pod`; does nothing for any other key.
    pub(super) fn pod_field(
        &mut self,
        key: &str,
        value: &Value,
        path: &str,
        pod: &mut PodCustomization,
        volumes: &RuleVolumes,
    ) {
        match key {
            "volumes" => pod.volumes = self.volumes(value, path),
            "volumeMounts" => pod.volume_mounts = self.volume_mounts(value, path, volumes),
            "envFrom" => pod.env_from = self.env_from(value, path),
            "initContainers" => {
                pod.init_containers = self.added_containers(value, path, Kind::Init, volumes)
            }
            "sidecars" => pod.sidecars = self.added_containers(value, path, Kind::Sidecar, volumes),
            "securityContext" => pod.security_context = self.pod_security_context(value, path),
            "containerSecurityContext" => {
                pod.container_security_context = self.container_security_context(value, path)
            }
            "imagePullSecrets" => pod.image_pull_secrets = self.image_pull_secrets(value, path),
            "topologySpreadConstraints" => {
                pod.topology_spread_constraints = self.topology_spread_constraints(value, path)
            }
            "podAffinity" => pod.pod_affinity = self.pod_affinity(value, path),
            "podAntiAffinity" => pod.pod_anti_affinity = self.pod_anti_affinity(value, path),
            "terminationGracePeriodSeconds" => {
                pod.termination_grace_period_seconds = match value.as_i64() {
                    Some(seconds) if seconds >= 0 => Some(seconds),
                    _ => {
                        self.problem(
                            path,
                            format!(
                                "{} is not allowed; give a whole number of seconds, 0 or more",
                                scalar_text(value)
                            ),
                        );
                        None
                    }
                }
            }
            "automountServiceAccountToken" => {
                pod.automount_service_account_token = match value {
                    Value::Bool(b) => Some(*b),
                    other => {
                        self.problem(
                            path,
                            format!("must be true or false, found {}", kind_of(other)),
                        );
                        None
                    }
                }
            }
            "runtimeClassName" => {
                pod.runtime_class_name = self.dns_name(value, path, "a RuntimeClass name")
            }
            "dnsConfig" => pod.dns_config = self.dns_config(value, path),
            "hostAliases" => pod.host_aliases = self.host_aliases(value, path),
            "localDirs" => pod.local_dirs = self.local_dirs(value, path),
            _ => {}
        }
    }

    fn image_pull_secrets(&mut self, value: &Value, path: &str) -> Vec<LocalObjectReference> {
        self.list(value, path, |c, v, p| {
            let since = c.problems.len();
            let reference: LocalObjectReference = c.k8s(v, p)?;
            let np = key_path(p, "name");
            if c.required(&reference.name, &np, "the Secret's name") {
                c.dns_subdomain(&reference.name, &np, "a Secret name");
            }
            (c.problems.len() == since).then_some(reference)
        })
    }

    fn dns_config(&mut self, value: &Value, path: &str) -> Option<PodDNSConfig> {
        let since = self.problems.len();
        let config: PodDNSConfig = self.k8s(value, path)?;
        let nameservers = config.nameservers.as_deref().unwrap_or_default();
        let np = key_path(path, "nameservers");
        if nameservers.len() > MAX_NAMESERVERS {
            self.problem(
                &np,
                format!(
                    "has {} nameservers; at most {MAX_NAMESERVERS} are allowed",
                    nameservers.len()
                ),
            );
        }
        for (i, server) in nameservers.iter().enumerate() {
            self.ip(server, &index_path(&np, i));
        }
        let searches = config.searches.as_deref().unwrap_or_default();
        let sp = key_path(path, "searches");
        if searches.len() > MAX_SEARCHES {
            self.problem(
                &sp,
                format!(
                    "has {} search domains; at most {MAX_SEARCHES} are allowed",
                    searches.len()
                ),
            );
        }
        for (i, search) in searches.iter().enumerate() {
            let p = index_path(&sp, i);
            if search.len() > MAX_SEARCH_CHARS {
                self.problem(
                    &p,
                    format!(
                        "is {} characters long; at most {MAX_SEARCH_CHARS} are allowed",
                        search.len()
                    ),
                );
            } else {
                // A trailing dot marks a fully qualified name, which the resolver accepts.
                let name = search.strip_suffix('.').unwrap_or(search);
                self.dns_subdomain(name, &p, "a search domain");
            }
        }
        for (i, option) in config.options.iter().flatten().enumerate() {
            let p = index_path(&key_path(path, "options"), i);
            self.required(
                option.name.as_deref().unwrap_or_default(),
                &key_path(&p, "name"),
                "the option's name, such as ndots",
            );
        }
        (self.problems.len() == since).then_some(config)
    }

    fn host_aliases(&mut self, value: &Value, path: &str) -> Vec<HostAlias> {
        let mut seen: HashMap<std::net::IpAddr, String> = HashMap::new();
        self.list(value, path, |c, v, p| {
            let since = c.problems.len();
            let alias: HostAlias = c.k8s(v, p)?;
            let ip_path = key_path(p, "ip");
            if c.required(&alias.ip, &ip_path, "an IP address")
                && let Some(ip) = c.ip(&alias.ip, &ip_path)
            {
                match seen.get(&ip) {
                    Some(first) => c.problem(
                        ip_path,
                        format!("{:?} is already the address of {first}; host aliases are keyed by ip, so each address once (list all its hostnames there)", alias.ip),
                    ),
                    None => {
                        seen.insert(ip, p.to_owned());
                    }
                }
            }
            let hostnames = alias.hostnames.as_deref().unwrap_or_default();
            let hp = key_path(p, "hostnames");
            if hostnames.is_empty() {
                c.problem(&hp, "missing or empty; give at least one hostname");
            }
            for (i, hostname) in hostnames.iter().enumerate() {
                c.dns_subdomain(hostname, &index_path(&hp, i), "a hostname");
            }
            (c.problems.len() == since).then_some(alias)
        })
    }

    fn local_dirs(&mut self, value: &Value, path: &str) -> Option<LocalDirs> {
        let since = self.problems.len();
        let map = self.object(value, path, &["sizeLimit", "medium", "ephemeral"])?;
        let field = |name: &str| map.get(name).filter(|v| !v.is_null());
        let size_path = key_path(path, "sizeLimit");
        let size_limit =
            field("sizeLimit").and_then(|v| self.positive_quantity(v, &size_path, false));
        let medium = field("medium").and_then(|v| {
            let medium_path = key_path(path, "medium");
            match v.as_str() {
                Some("Memory") => Some("Memory".to_owned()),
                _ => {
                    self.problem(
                        medium_path,
                        format!(
                            "{} is not allowed; allowed: Memory (leave it out for the node's disk)",
                            scalar_text(v)
                        ),
                    );
                    None
                }
            }
        });
        let result = match field("ephemeral") {
            Some(ephemeral) => {
                if field("sizeLimit").is_some() || field("medium").is_some() {
                    self.problem(
                        path,
                        "give sizeLimit and medium (keep Spark's emptyDir) or ephemeral (replace it by a generic ephemeral volume), not both",
                    );
                }
                let ep = key_path(path, "ephemeral");
                let ephemeral = self.object(ephemeral, &ep, &["storageClassName", "size"])?;
                let storage_class_name = ephemeral
                    .get("storageClassName")
                    .filter(|v| !v.is_null())
                    .and_then(|v| {
                        self.dns_name(v, &key_path(&ep, "storageClassName"), "a StorageClass name")
                    });
                let size_path = key_path(&ep, "size");
                let size = match ephemeral.get("size").filter(|v| !v.is_null()) {
                    Some(v) => self.positive_quantity(v, &size_path, true),
                    None => {
                        self.problem(size_path, "missing; give the volume's size, such as 200Gi");
                        None
                    }
                };
                LocalDirs::Ephemeral {
                    storage_class_name,
                    size: size?,
                }
            }
            None => {
                if size_limit.is_none() && medium.is_none() && self.problems.len() == since {
                    self.problem(
                        path,
                        "sets nothing; give sizeLimit and/or medium: Memory, or ephemeral: {size, storageClassName}",
                    );
                }
                LocalDirs::EmptyDir { size_limit, medium }
            }
        };
        (self.problems.len() == since).then_some(result)
    }

    /// A quantity above zero, as the apiserver writes it back: `resource_list` for what the
    /// engine writes into a claim's requests (rounded up to a thousandth, then canonical, as
    /// that defaulting does), else canonical only (an `emptyDir.sizeLimit`).
    fn positive_quantity(
        &mut self,
        value: &Value,
        path: &str,
        resource_list: bool,
    ) -> Option<Quantity> {
        // Read as a pod's requests are; the text is read again for the canonical form.
        let quantity = self.quantity(value, path)?;
        if quantity.nanos() == 0 {
            self.problem(
                path,
                format!("{quantity} is not allowed; it must be more than zero"),
            );
            return None;
        }
        if resource_list {
            return Some(quantity);
        }
        let text = match value {
            Value::Number(n) => n.to_string(),
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        Quantity::parse(&text).ok().map(|q| q.canonical())
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::{LocalDirs, Quantity};

    use super::super::RULE_FIELDS;
    use super::super::test_support::{has, rule, rule_problems};
    use super::POD_FIELDS;

    #[test]
    fn every_spec_4a_field_is_a_rule_field() {
        for field in POD_FIELDS {
            assert!(RULE_FIELDS.contains(field), "{field}");
        }
    }

    #[test]
    fn plain_spec_fields_land_in_the_rule() {
        let rule = rule(
            r#"    imagePullSecrets: [{name: registry-creds}]
    terminationGracePeriodSeconds: 120
    automountServiceAccountToken: false
    runtimeClassName: gvisor
    dnsConfig:
      nameservers: [10.0.0.10, "fd00::10"]
      searches: [svc.cluster.local, example.com.]
      options: [{name: ndots, value: "2"}]
    hostAliases:
      - {ip: 10.1.2.3, hostnames: [metastore, metastore.internal]}
      - {ip: "fd00::1", hostnames: [hdfs]}
"#,
        );
        let pod = &rule.pod;
        assert_eq!(pod.image_pull_secrets[0].name, "registry-creds");
        assert_eq!(pod.termination_grace_period_seconds, Some(120));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
        let dns = pod.dns_config.as_ref().expect("dnsConfig");
        assert_eq!(dns.nameservers.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            dns.searches.as_ref().map(|s| s[1].as_str()),
            Some("example.com.")
        );
        assert_eq!(
            dns.options.as_ref().and_then(|o| o[0].value.as_deref()),
            Some("2")
        );
        assert_eq!(pod.host_aliases.len(), 2);
        assert_eq!(pod.host_aliases[0].ip, "10.1.2.3");
        assert_eq!(
            pod.host_aliases[0].hostnames.as_ref().map(Vec::len),
            Some(2)
        );
        assert!(pod.local_dirs.is_none());
    }

    #[test]
    fn plain_spec_field_mistakes_say_what_is_allowed() {
        let found = rule_problems(
            r#"    imagePullSecrets: [{name: Registry}, {nme: x}]
    terminationGracePeriodSeconds: -1
    automountServiceAccountToken: "no"
    runtimeClassName: gVisor
    dnsConfig:
      nameservers: [10.0.0.1, 10.0.0.2, 10.0.0.3, dns.local]
      searches: [-bad.com, "x..y"]
      options: [{value: "2"}]
    hostAliases:
      - {ip: "::1", hostnames: [localhost6]}
      - {ip: "0::1", hostnames: [Bad_Host]}
      - {ip: 10.0.0.256, hostnames: []}
"#,
        );
        has(
            &found,
            "rules[0].imagePullSecrets[0].name",
            "not a Secret name",
        );
        has(
            &found,
            "rules[0].imagePullSecrets[1].nme",
            "did you mean \"name\"",
        );
        has(
            &found,
            "rules[0].imagePullSecrets[1].name",
            "missing or empty",
        );
        has(
            &found,
            "rules[0].terminationGracePeriodSeconds",
            "give a whole number of seconds, 0 or more",
        );
        has(
            &found,
            "rules[0].automountServiceAccountToken",
            "must be true or false, found a string",
        );
        has(
            &found,
            "rules[0].runtimeClassName",
            "not a RuntimeClass name",
        );
        has(
            &found,
            "rules[0].dnsConfig.nameservers",
            "at most 3 are allowed",
        );
        has(
            &found,
            "rules[0].dnsConfig.nameservers[3]",
            "not an IP address",
        );
        has(
            &found,
            "rules[0].dnsConfig.searches[0]",
            "not a search domain",
        );
        has(
            &found,
            "rules[0].dnsConfig.searches[1]",
            "not a search domain",
        );
        has(
            &found,
            "rules[0].dnsConfig.options[0].name",
            "missing or empty",
        );
        has(
            &found,
            "rules[0].hostAliases[1].ip",
            "\"0::1\" is already the address of rules[0].hostAliases[0]",
        );
        has(
            &found,
            "rules[0].hostAliases[1].hostnames[0]",
            "not a hostname",
        );
        has(&found, "rules[0].hostAliases[2].ip", "not an IP address");
        has(
            &found,
            "rules[0].hostAliases[2].hostnames",
            "give at least one hostname",
        );
        assert_eq!(found.len(), 15, "{found:#?}");
    }

    #[test]
    fn dns_search_lists_are_bounded_as_the_apiserver_bounds_them() {
        let searches: Vec<String> = (0..33).map(|i| format!("d{i}.example.com")).collect();
        let long = format!("{}.com", "a.".repeat(126));
        let found = rule_problems(&format!(
            "    dnsConfig: {{searches: [{}]}}\n    hostAliases: [{{ip: 10.0.0.1, hostnames: [a]}}]\n  - name: s\n    dnsConfig: {{searches: [\"{long}\"]}}\n",
            searches.join(", ")
        ));
        has(
            &found,
            "rules[0].dnsConfig.searches",
            "has 33 search domains; at most 32",
        );
        has(
            &found,
            "rules[1].dnsConfig.searches[0]",
            "is 256 characters long; at most 253",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
    }

    #[test]
    fn local_dirs_keep_the_empty_dir_or_replace_it_by_an_ephemeral_volume() {
        let rule_a = rule("    localDirs: {sizeLimit: 200Gi, medium: Memory}\n");
        assert_eq!(
            rule_a.pod.local_dirs,
            Some(LocalDirs::EmptyDir {
                size_limit: Some(Quantity::parse("200Gi").expect("quantity")),
                medium: Some("Memory".to_owned()),
            })
        );
        let rule_b = rule("    localDirs: {ephemeral: {storageClassName: gp3, size: 0.5Ti}}\n");
        let Some(LocalDirs::Ephemeral {
            storage_class_name,
            size,
        }) = rule_b.pod.local_dirs
        else {
            panic!("ephemeral local dirs: {:?}", rule_b.pod.local_dirs)
        };
        assert_eq!(storage_class_name.as_deref(), Some("gp3"));
        // Written as the apiserver stores it.
        assert_eq!(size.as_str(), "512Gi");
        let rule_c = rule("    localDirs: {ephemeral: {size: 100Gi}}\n");
        assert!(matches!(
            rule_c.pod.local_dirs,
            Some(LocalDirs::Ephemeral {
                storage_class_name: None,
                ..
            })
        ));
    }

    #[test]
    fn local_dirs_mistakes_say_what_is_allowed() {
        let found = rule_problems(
            r#"    localDirs: {sizeLimit: 0, medium: Disk, ephemeral: {storageClass: gp3}}
  - name: b
    localDirs: {sizeLimt: 10Gi}
  - name: c
    localDirs: {ephemeral: {size: -1Gi, storageClassName: GP3}}
"#,
        );
        has(
            &found,
            "rules[0].localDirs.sizeLimit",
            "must be more than zero",
        );
        has(&found, "rules[0].localDirs.medium", "allowed: Memory");
        has(&found, "rules[0].localDirs", "not both");
        has(
            &found,
            "rules[0].localDirs.ephemeral.storageClass",
            "unknown field \"storageClass\"; allowed: storageClassName, size",
        );
        has(&found, "rules[0].localDirs.ephemeral.size", "missing");
        has(
            &found,
            "rules[1].localDirs.sizeLimt",
            "did you mean \"sizeLimit\"",
        );
        has(&found, "rules[2].localDirs.ephemeral.size", "negative");
        has(
            &found,
            "rules[2].localDirs.ephemeral.storageClassName",
            "not a StorageClass name",
        );
        assert_eq!(found.len(), 8, "{found:#?}");
    }
}
