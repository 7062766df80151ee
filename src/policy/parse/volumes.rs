//! A rule's `volumes` and `volumeMounts`, and the mounts of the containers it adds: names,
//! sources, paths and modes as the apiserver checks them, and that every mount names a volume
//! the same rule adds.
//!
//! Only reads and checks them; adding them to a pod (keyed by name and by mount path) is the
//! engine's business. A pod's own volumes cannot be known when the policy is loaded, so a mount
//! may only name a volume of its own rule. Never stops at the first problem.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{KeyToPath, PersistentVolumeClaimTemplate, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use serde_json::Value;

use crate::policy::Quantity;

use super::apiserver::fields_of;
use super::{Checker, index_path, key_path, unknown_field_message};

/// How many of a rule's volume names an error lists.
const LISTED_VOLUMES: usize = 10;

/// The volumes a rule adds, by name, read before any of its fields: mounts anywhere in the rule
/// are checked against them whatever order the keys come in. A volume with mistakes still
/// counts, so that one mistake is not reported again at every mount naming it.
pub(super) struct RuleVolumes {
    names: HashSet<String>,
    /// The first few names, written once: an error per mount must not cost a listing of
    /// every volume (that would be quadratic in a policy of thousands).
    listing: String,
}

impl RuleVolumes {
    pub(super) fn of(volumes: Option<&Value>) -> Self {
        let names: Vec<&str> = match volumes {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .collect(),
            _ => Vec::new(),
        };
        let listing = if names.is_empty() {
            "this rule adds no volume".to_owned()
        } else {
            let shown: Vec<String> = names
                .iter()
                .take(LISTED_VOLUMES)
                .map(|n| format!("{:?}", super::truncate(n, 63)))
                .collect();
            let more = names.len().saturating_sub(LISTED_VOLUMES);
            if more > 0 {
                format!("this rule's volumes: {} and {more} more", shown.join(", "))
            } else {
                format!("this rule's volumes: {}", shown.join(", "))
            }
        };
        Self {
            names: names.into_iter().map(str::to_owned).collect(),
            listing,
        }
    }

    /// Whether the rule adds a volume of this name.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// Mount paths already used in one container (or in the rule's `volumeMounts`), to the path of
/// the mount that used them first.
pub(super) type MountPaths = HashMap<String, String>;

/// The volume message for an unknown top-level key: most often a source spelled wrong.
fn unknown_source(key: &str, fields: &[&str]) -> String {
    let sources: Vec<&str> = fields.iter().copied().filter(|f| *f != "name").collect();
    unknown_field_message(key, &sources)
        .replacen("unknown field", "unknown volume source", 1)
        .replacen(
            "; allowed: ",
            "; a volume has a name and exactly one source of: ",
            1,
        )
}

impl Checker {
    pub(super) fn volumes(&mut self, value: &Value, path: &str) -> Vec<Volume> {
        let mut seen: HashMap<String, String> = HashMap::new();
        self.list(value, path, |c, v, p| {
            let since = c.problems.len();
            if let Some(name) = v.get("name").and_then(Value::as_str)
                && !name.is_empty()
            {
                if let Some(first) = seen.get(name) {
                    c.problem(
                        key_path(p, "name"),
                        format!("{name:?} is already the name of {first}; volume names must be unique in a rule"),
                    );
                } else {
                    seen.insert(name.to_owned(), p.to_owned());
                }
            }
            let volume = c.volume(v, p);
            volume.filter(|_| c.problems.len() == since)
        })
    }

    fn volume(&mut self, value: &Value, path: &str) -> Option<Volume> {
        let mut volume: Volume = self.k8s_object(value, path, &[], unknown_source)?;
        let name_path = key_path(path, "name");
        if self.required(&volume.name, &name_path, "the volume's name") {
            self.dns_label(&volume.name, &name_path, "a volume name");
        }
        let sources: Vec<&str> = fields_of::<Volume>()
            .iter()
            .copied()
            .filter(|f| *f != "name")
            .filter(|f| value.get(f).is_some_and(|v| !v.is_null()))
            .collect();
        match sources.len() {
            1 => {}
            0 => {
                let all: Vec<&str> = fields_of::<Volume>()
                    .iter()
                    .copied()
                    .filter(|f| *f != "name")
                    .collect();
                self.problem(
                    path,
                    format!(
                        "has no volume source; give exactly one of: {}",
                        all.join(", ")
                    ),
                );
            }
            n => self.problem(
                path,
                format!(
                    "has {n} volume sources ({}); a volume has exactly one",
                    sources.join(", ")
                ),
            ),
        }
        if let Some(config_map) = &volume.config_map {
            let p = key_path(path, "configMap");
            let name_path = key_path(&p, "name");
            if self.required(&config_map.name, &name_path, "the ConfigMap's name") {
                self.dns_subdomain(&config_map.name, &name_path, "a ConfigMap name");
            }
            self.file_mode(config_map.default_mode, &key_path(&p, "defaultMode"));
            self.key_paths(config_map.items.as_deref(), &p);
        }
        if let Some(secret) = &volume.secret {
            let p = key_path(path, "secret");
            let name_path = key_path(&p, "secretName");
            let name = secret.secret_name.as_deref().unwrap_or_default();
            if self.required(name, &name_path, "the Secret's name") {
                self.dns_subdomain(name, &name_path, "a Secret name");
            }
            self.file_mode(secret.default_mode, &key_path(&p, "defaultMode"));
            self.key_paths(secret.items.as_deref(), &p);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let name_path = key_path(&key_path(path, "persistentVolumeClaim"), "claimName");
            if self.required(&claim.claim_name, &name_path, "the claim's name") {
                self.dns_subdomain(
                    &claim.claim_name,
                    &name_path,
                    "a PersistentVolumeClaim name",
                );
            }
        }
        if let Some(empty_dir) = &mut volume.empty_dir {
            let p = key_path(path, "emptyDir");
            if let Some(medium) = empty_dir.medium.as_deref()
                && !is_medium(medium)
            {
                self.problem(
                    key_path(&p, "medium"),
                    format!("{medium:?} is not a storage medium; allowed: \"\" (the node's disk), Memory, HugePages, HugePages-<page size>"),
                );
            }
            if let Some(size) = &empty_dir.size_limit {
                empty_dir.size_limit =
                    self.k8s_quantity(size, &key_path(&p, "sizeLimit"), false, false);
            }
        }
        if let Some(host_path) = &volume.host_path {
            let p = key_path(path, "hostPath");
            self.absolute_path(&host_path.path, &key_path(&p, "path"));
            self.one_of(
                host_path.type_.as_deref(),
                &key_path(&p, "type"),
                &[
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ],
            );
        }
        if let Some(nfs) = &volume.nfs {
            let p = key_path(path, "nfs");
            self.required(&nfs.server, &key_path(&p, "server"), "the NFS server");
            self.absolute_path(&nfs.path, &key_path(&p, "path"));
        }
        if let Some(csi) = &volume.csi {
            self.required(
                &csi.driver,
                &key_path(&key_path(path, "csi"), "driver"),
                "the CSI driver's name",
            );
        }
        if let Some(image) = &volume.image {
            let p = key_path(path, "image");
            self.required(
                image.reference.as_deref().unwrap_or_default(),
                &key_path(&p, "reference"),
                "the image reference",
            );
            self.one_of(
                image.pull_policy.as_deref(),
                &key_path(&p, "pullPolicy"),
                &["Always", "Never", "IfNotPresent"],
            );
        }
        if let Some(downward) = &volume.downward_api {
            let p = key_path(path, "downwardAPI");
            self.file_mode(downward.default_mode, &key_path(&p, "defaultMode"));
            self.downward_items(downward.items.as_deref(), &p);
        }
        if let Some(projected) = &volume.projected {
            let p = key_path(path, "projected");
            self.file_mode(projected.default_mode, &key_path(&p, "defaultMode"));
            for (i, source) in projected.sources.iter().flatten().enumerate() {
                let sp = index_path(&key_path(&p, "sources"), i);
                let set = [
                    source.config_map.is_some(),
                    source.secret.is_some(),
                    source.downward_api.is_some(),
                    source.service_account_token.is_some(),
                    source.cluster_trust_bundle.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if set != 1 {
                    self.problem(&sp, "needs exactly one of configMap, secret, downwardAPI, serviceAccountToken, clusterTrustBundle");
                }
                if let Some(config_map) = &source.config_map {
                    let cp = key_path(&sp, "configMap");
                    self.dns_subdomain(
                        &config_map.name,
                        &key_path(&cp, "name"),
                        "a ConfigMap name",
                    );
                    self.key_paths(config_map.items.as_deref(), &cp);
                }
                if let Some(secret) = &source.secret {
                    let cp = key_path(&sp, "secret");
                    self.dns_subdomain(&secret.name, &key_path(&cp, "name"), "a Secret name");
                    self.key_paths(secret.items.as_deref(), &cp);
                }
                if let Some(downward) = &source.downward_api {
                    self.downward_items(downward.items.as_deref(), &key_path(&sp, "downwardAPI"));
                }
                if let Some(token) = &source.service_account_token {
                    let tp = key_path(&sp, "serviceAccountToken");
                    let file = key_path(&tp, "path");
                    if self.required(&token.path, &file, "the file's path") {
                        self.relative_path(&token.path, &file);
                    }
                    // The apiserver's bounds: at least 10 minutes, at most 2^32 seconds.
                    if let Some(seconds) = token.expiration_seconds
                        && !(600..=1 << 32).contains(&seconds)
                    {
                        self.problem(
                            key_path(&tp, "expirationSeconds"),
                            format!(
                                "{seconds} is out of range; allowed: 600 (10 minutes) to 4294967296"
                            ),
                        );
                    }
                }
            }
        }
        if let Some(ephemeral) = &mut volume.ephemeral {
            let p = key_path(path, "ephemeral");
            match &mut ephemeral.volume_claim_template {
                Some(template) => {
                    self.claim_template(template, &key_path(&p, "volumeClaimTemplate"))
                }
                None => self.problem(
                    key_path(&p, "volumeClaimTemplate"),
                    "missing; an ephemeral volume needs a volumeClaimTemplate with spec.accessModes and spec.resources.requests.storage",
                ),
            }
        }
        Some(volume)
    }

    /// `items` of a ConfigMap or Secret: which keys land in which files.
    fn key_paths(&mut self, items: Option<&[KeyToPath]>, path: &str) {
        for (i, item) in items.unwrap_or_default().iter().enumerate() {
            let p = index_path(&key_path(path, "items"), i);
            let key_ok = !item.key.is_empty()
                && item.key.len() <= 253
                && item.key != "."
                && item.key != ".."
                && item
                    .key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !key_ok {
                self.problem(
                    key_path(&p, "key"),
                    format!("{:?} is not a valid key; use 1 to 253 characters of letters, digits, '-', '_' and '.'", item.key),
                );
            }
            self.item_path(&item.path, &key_path(&p, "path"));
            self.file_mode(item.mode, &key_path(&p, "mode"));
        }
    }

    fn downward_items(
        &mut self,
        items: Option<&[k8s_openapi::api::core::v1::DownwardAPIVolumeFile]>,
        path: &str,
    ) {
        for (i, item) in items.unwrap_or_default().iter().enumerate() {
            let p = index_path(&key_path(path, "items"), i);
            self.item_path(&item.path, &key_path(&p, "path"));
            self.file_mode(item.mode, &key_path(&p, "mode"));
            if item.field_ref.is_some() == item.resource_field_ref.is_some() {
                self.problem(&p, "needs exactly one of fieldRef, resourceFieldRef");
            }
        }
    }

    /// A file inside a volume: required, relative, no `..` part, not starting with `..` (the
    /// kubelet keeps its own `..data` links there).
    fn item_path(&mut self, value: &str, path: &str) {
        if !self.required(value, path, "a relative file path") {
            return;
        }
        self.relative_path(value, path);
        if value.starts_with("..") && !value.split('/').any(|part| part == "..") {
            self.problem(path, format!("{value:?} must not start with '..'"));
        }
    }

    fn claim_template(&mut self, template: &mut PersistentVolumeClaimTemplate, path: &str) {
        if let Some(metadata) = &template.metadata {
            let mp = key_path(path, "metadata");
            for (key, value) in metadata.labels.iter().flatten() {
                self.check_label(&key_path(&mp, "labels"), key, Some(value));
            }
            for key in metadata.annotations.iter().flatten().map(|(k, _)| k) {
                if let Err(why) = crate::policy::check_qualified_name(key) {
                    self.problem(
                        key_path(&key_path(&mp, "annotations"), key),
                        format!("{key:?} is not a valid annotation key: {why}"),
                    );
                }
            }
        }
        let sp = key_path(path, "spec");
        let spec = &mut template.spec;
        const MODES: &[&str] = &[
            "ReadWriteOnce",
            "ReadOnlyMany",
            "ReadWriteMany",
            "ReadWriteOncePod",
        ];
        let modes = spec.access_modes.as_deref().unwrap_or_default();
        if modes.is_empty() {
            self.problem(
                key_path(&sp, "accessModes"),
                format!("missing; give at least one of {}", MODES.join(", ")),
            );
        }
        for (i, mode) in modes.iter().enumerate() {
            self.one_of(
                Some(mode),
                &index_path(&key_path(&sp, "accessModes"), i),
                MODES,
            );
        }
        if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
            self.problem(
                key_path(&sp, "accessModes"),
                "ReadWriteOncePod cannot be combined with other access modes",
            );
        }
        self.one_of(
            spec.volume_mode.as_deref(),
            &key_path(&sp, "volumeMode"),
            &["Filesystem", "Block"],
        );
        // "" asks for no class at all (a statically provisioned volume); only a name is checked.
        if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
            self.dns_subdomain(
                class,
                &key_path(&sp, "storageClassName"),
                "a StorageClass name",
            );
        }
        if let Some(selector) = &spec.selector {
            self.label_selector(selector, &key_path(&sp, "selector"), false);
        }
        let storage_path = key_path(
            &key_path(&key_path(&sp, "resources"), "requests"),
            "storage",
        );
        let storage = spec
            .resources
            .as_mut()
            .and_then(|r| r.requests.as_mut())
            .and_then(|r| r.get_mut("storage"));
        match storage {
            None => self.problem(
                storage_path,
                "missing; an ephemeral volume's claim must request its size (resources.requests.storage)",
            ),
            Some(size) => {
                if let Some(canonical) = self.k8s_quantity(size, &storage_path, true, true) {
                    *size = canonical;
                }
            }
        }
    }

    /// A quantity inside a Kubernetes object, checked and written as the apiserver stores it
    /// (so the engine's comparison with what a stored pod holds is exact): in a `ResourceList`
    /// (`resource_list`: requests, limits) rounded up to a thousandth first, as its defaulting
    /// does, elsewhere in canonical form only. `positive`: zero is refused too.
    pub(super) fn k8s_quantity(
        &mut self,
        quantity: &K8sQuantity,
        path: &str,
        positive: bool,
        resource_list: bool,
    ) -> Option<K8sQuantity> {
        match Quantity::parse(&quantity.0) {
            Err(why) => {
                self.problem(path, why.to_string());
                None
            }
            Ok(q) if q.nanos() < 0 || (positive && q.nanos() == 0) => {
                let allowed = if positive {
                    "more than zero"
                } else {
                    "zero or more"
                };
                self.problem(
                    path,
                    format!("{:?} is out of range; it must be {allowed}", quantity.0),
                );
                None
            }
            Ok(q) => {
                let stored = if resource_list {
                    q.as_pod_resource()
                } else {
                    q.canonical()
                };
                Some(K8sQuantity(stored.as_str().to_owned()))
            }
        }
    }

    /// The rule's own `volumeMounts`, for the containers `containers:` selects.
    pub(super) fn volume_mounts(
        &mut self,
        value: &Value,
        path: &str,
        volumes: &RuleVolumes,
    ) -> Vec<VolumeMount> {
        let mut paths = MountPaths::new();
        self.list(value, path, |c, v, p| {
            let since = c.problems.len();
            let mount: VolumeMount = c.k8s(v, p)?;
            c.check_mount(&mount, p, volumes, &mut paths);
            (c.problems.len() == since).then_some(mount)
        })
    }

    /// One mount, as the apiserver checks it, and that it names a volume of the rule and a path
    /// not already used in `paths`.
    pub(super) fn check_mount(
        &mut self,
        mount: &VolumeMount,
        path: &str,
        volumes: &RuleVolumes,
        paths: &mut MountPaths,
    ) {
        let name_path = key_path(path, "name");
        if self.required(
            &mount.name,
            &name_path,
            "the name of a volume this rule adds",
        ) && !volumes.contains(&mount.name)
        {
            self.problem(
                name_path,
                format!(
                    "{:?} names no volume of this rule; a mount must name a volume the same rule adds (a pod's own volumes are not known when the policy is loaded); {}",
                    mount.name, volumes.listing
                ),
            );
        }
        let mount_path = key_path(path, "mountPath");
        self.absolute_path(&mount.mount_path, &mount_path);
        if !mount.mount_path.is_empty() {
            // `/data` and `/data/` are one place in the container.
            let place = mount.mount_path.trim_end_matches('/');
            let place = if place.is_empty() { "/" } else { place };
            match paths.get(place) {
                Some(first) => self.problem(
                    &mount_path,
                    format!(
                        "{:?} is already mounted by {first}; two mounts on one path are not allowed",
                        mount.mount_path
                    ),
                ),
                None => {
                    paths.insert(place.to_owned(), path.to_owned());
                }
            }
        }
        if let Some(sub_path) = &mount.sub_path {
            self.relative_path(sub_path, &key_path(path, "subPath"));
        }
        if let Some(expr) = &mount.sub_path_expr {
            self.relative_path(expr, &key_path(path, "subPathExpr"));
            if mount.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
                self.problem(
                    key_path(path, "subPathExpr"),
                    "give subPath or subPathExpr, not both",
                );
            }
        }
        let propagation = mount.mount_propagation.as_deref();
        self.one_of(
            propagation,
            &key_path(path, "mountPropagation"),
            &["None", "HostToContainer", "Bidirectional"],
        );
        let recursive = mount.recursive_read_only.as_deref();
        let recursive_path = key_path(path, "recursiveReadOnly");
        self.one_of(
            recursive,
            &recursive_path,
            &["Disabled", "IfPossible", "Enabled"],
        );
        if matches!(recursive, Some("IfPossible" | "Enabled")) && mount.read_only != Some(true) {
            self.problem(
                &recursive_path,
                "IfPossible and Enabled need readOnly: true",
            );
        }
        if recursive == Some("Enabled") && !matches!(propagation, None | Some("None")) {
            self.problem(
                recursive_path,
                "Enabled needs mountPropagation None (or unset)",
            );
        }
    }
}

/// The emptyDir media the kubelet knows: the node's disk (`""`), `Memory`, and huge pages.
fn is_medium(medium: &str) -> bool {
    match medium {
        "" | "Memory" | "HugePages" => true,
        other => other
            .strip_prefix("HugePages-")
            .is_some_and(|size| Quantity::parse(size).is_ok_and(|q| q.nanos() > 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{has, rule, rule_problems};

    #[test]
    fn volumes_land_in_the_rule_as_kubernetes_volumes() {
        let rule = rule(
            r#"    volumes:
      - {name: hadoop-conf, configMap: {name: hadoop-conf, defaultMode: 0o644, items: [{key: core-site.xml, path: conf/core-site.xml}]}}
      - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 1.5Gi}}
      - name: shuffle
        ephemeral:
          volumeClaimTemplate:
            spec: {accessModes: [ReadWriteOnce], storageClassName: gp3, resources: {requests: {storage: 0.5Ti}}}
      - {name: creds, secret: {secretName: team-creds, optional: true}}
      - {name: host, hostPath: {path: /var/log, type: Directory}}
    volumeMounts:
      - {name: hadoop-conf, mountPath: /etc/hadoop/conf, readOnly: true}
      - {name: scratch, mountPath: /scratch/, subPath: spark, mountPropagation: None}
"#,
        );
        let volumes = &rule.pod.volumes;
        assert_eq!(volumes.len(), 5);
        let config_map = volumes[0].config_map.as_ref().expect("configMap");
        assert_eq!(config_map.name, "hadoop-conf");
        assert_eq!(config_map.default_mode, Some(0o644));
        assert_eq!(
            config_map.items.as_ref().map(|i| i[0].path.as_str()),
            Some("conf/core-site.xml")
        );
        let empty_dir = volumes[1].empty_dir.as_ref().expect("emptyDir");
        assert_eq!(empty_dir.medium.as_deref(), Some("Memory"));
        // The apiserver stores 1.5Gi as 1536Mi and 0.5Ti as 512Gi.
        assert_eq!(
            empty_dir.size_limit.as_ref().map(|q| q.0.as_str()),
            Some("1536Mi")
        );
        let claim = volumes[2]
            .ephemeral
            .as_ref()
            .and_then(|e| e.volume_claim_template.as_ref())
            .expect("claim template");
        assert_eq!(claim.spec.storage_class_name.as_deref(), Some("gp3"));
        assert_eq!(
            claim
                .spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(|r| r["storage"].0.as_str()),
            Some("512Gi")
        );
        assert_eq!(
            volumes[3]
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("team-creds")
        );
        let mounts = &rule.pod.volume_mounts;
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mount_path, "/etc/hadoop/conf");
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].sub_path.as_deref(), Some("spark"));
    }

    #[test]
    fn an_unknown_volume_source_names_the_allowed_sources() {
        let found = rule_problems("    volumes: [{name: conf, cnfigMap: {name: conf}}]\n");
        has(
            &found,
            "rules[0].volumes[0].cnfigMap",
            "unknown volume source \"cnfigMap\" (did you mean \"configMap\"?)",
        );
        // Every source, down to the last one, is in the message.
        has(
            &found,
            "rules[0].volumes[0].cnfigMap",
            "persistentVolumeClaim",
        );
        has(&found, "rules[0].volumes[0].cnfigMap", "vsphereVolume");
        has(&found, "rules[0].volumes[0]", "has no volume source");
    }

    #[test]
    fn volume_mistakes_are_reported_with_their_paths() {
        let found = rule_problems(
            r#"    volumes:
      - {name: Conf_1, configMap: {name: Conf}, emptyDir: {}}
      - {name: dup, secret: {secretName: s, defaultMode: 0644, items: [{key: k, path: /abs}, {key: k2, path: a/../../b, mode: 1000}]}}
      - {name: dup, emptyDir: {medium: Disk, sizeLimit: lots}}
      - {name: h, hostPath: {path: var/log, type: Dir}}
      - {name: e, ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteSometimes], resources: {}}}}}
      - {name: p, persistentVolumeClaim: {claimName: ""}}
      - {name: x, ephemeral: {}}
"#,
        );
        has(&found, "rules[0].volumes[0].name", "not a volume name");
        has(
            &found,
            "rules[0].volumes[0]",
            "has 2 volume sources (configMap, emptyDir)",
        );
        has(
            &found,
            "rules[0].volumes[0].configMap.name",
            "not a ConfigMap name",
        );
        // YAML 1.2 reads 0644 as the decimal 644.
        has(
            &found,
            "rules[0].volumes[1].secret.defaultMode",
            "a file mode in octal as 0o644",
        );
        has(
            &found,
            "rules[0].volumes[1].secret.items[0].path",
            "must be a relative path",
        );
        has(
            &found,
            "rules[0].volumes[1].secret.items[1].path",
            "must not contain '..'",
        );
        has(
            &found,
            "rules[0].volumes[1].secret.items[1].mode",
            "not a file mode",
        );
        has(
            &found,
            "rules[0].volumes[2].name",
            "already the name of rules[0].volumes[1]",
        );
        has(
            &found,
            "rules[0].volumes[2].emptyDir.medium",
            "allowed: \"\" (the node's disk), Memory",
        );
        has(
            &found,
            "rules[0].volumes[2].emptyDir.sizeLimit",
            "not a Kubernetes quantity",
        );
        has(
            &found,
            "rules[0].volumes[3].hostPath.path",
            "must be an absolute path",
        );
        has(
            &found,
            "rules[0].volumes[3].hostPath.type",
            "allowed: \"\", DirectoryOrCreate, Directory",
        );
        has(
            &found,
            "rules[0].volumes[4].ephemeral.volumeClaimTemplate.spec.accessModes[0]",
            "allowed: ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod",
        );
        has(
            &found,
            "rules[0].volumes[4].ephemeral.volumeClaimTemplate.spec.resources.requests.storage",
            "missing",
        );
        has(
            &found,
            "rules[0].volumes[5].persistentVolumeClaim.claimName",
            "missing or empty",
        );
        has(
            &found,
            "rules[0].volumes[6].ephemeral.volumeClaimTemplate",
            "missing",
        );
        assert_eq!(found.len(), 16, "{found:#?}");
    }

    #[test]
    fn huge_pages_are_a_medium_and_item_files_may_not_start_with_two_dots() {
        let rule = rule("    volumes: [{name: huge, emptyDir: {medium: HugePages-2Mi}}]\n");
        assert_eq!(
            rule.pod.volumes[0]
                .empty_dir
                .as_ref()
                .and_then(|e| e.medium.as_deref()),
            Some("HugePages-2Mi")
        );
        // The kubelet keeps its own `..data` link in a ConfigMap volume.
        let found = rule_problems(
            "    volumes: [{name: c, configMap: {name: c, items: [{key: k, path: ..data}]}}]\n",
        );
        has(
            &found,
            "rules[0].volumes[0].configMap.items[0].path",
            "must not start with '..'",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
    }

    #[test]
    fn a_mount_must_name_a_volume_of_its_rule() {
        let found = rule_problems(
            "    volumes: [{name: conf, configMap: {name: conf}}]\n    volumeMounts: [{name: data, mountPath: /data}]\n",
        );
        has(
            &found,
            "rules[0].volumeMounts[0].name",
            "\"data\" names no volume of this rule; a mount must name a volume the same rule adds (a pod's own volumes are not known when the policy is loaded); this rule's volumes: \"conf\"",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
    }

    #[test]
    fn two_mounts_on_one_path_are_an_error() {
        let found = rule_problems(
            r#"    volumes: [{name: a, emptyDir: {}}, {name: b, emptyDir: {}}]
    volumeMounts:
      - {name: a, mountPath: /data}
      - {name: b, mountPath: /data/}
"#,
        );
        has(
            &found,
            "rules[0].volumeMounts[1].mountPath",
            "\"/data/\" is already mounted by rules[0].volumeMounts[0]",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
    }

    #[test]
    fn mount_mistakes_are_reported_with_their_paths() {
        let found = rule_problems(
            r#"    volumes: [{name: a, emptyDir: {}}]
    volumeMounts:
      - {name: a, mountPath: data/x, subPath: ../up, mountPropagation: Both}
      - {name: a, mountPath: "", recursiveReadOnly: Enabled, mountPth: /x}
      - {name: a, mountPath: /b/../c, subPath: s, subPathExpr: "$(POD)"}
"#,
        );
        has(
            &found,
            "rules[0].volumeMounts[0].mountPath",
            "must be an absolute path",
        );
        has(
            &found,
            "rules[0].volumeMounts[0].subPath",
            "must not contain '..'",
        );
        has(
            &found,
            "rules[0].volumeMounts[0].mountPropagation",
            "allowed: None, HostToContainer, Bidirectional",
        );
        has(
            &found,
            "rules[0].volumeMounts[1].mountPath",
            "missing or empty",
        );
        has(
            &found,
            "rules[0].volumeMounts[1].recursiveReadOnly",
            "need readOnly: true",
        );
        has(
            &found,
            "rules[0].volumeMounts[1].mountPth",
            "did you mean \"mountPath\"",
        );
        has(
            &found,
            "rules[0].volumeMounts[2].mountPath",
            "must not contain '..'",
        );
        has(&found, "rules[0].volumeMounts[2].subPathExpr", "not both");
        assert_eq!(found.len(), 8, "{found:#?}");
    }
}
