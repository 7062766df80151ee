//! A rule's `initContainers`, `sidecars` and `envFrom`: Container objects as the apiserver
//! checks them (names, images, ports, env, resources, mounts, probes, restart policy), and
//! what only sidecars may have.
//!
//! Only reads and checks them; placing them in a pod (native sidecars on 1.29 or later) is the
//! engine's business. A sidecar's `restartPolicy` is the engine's to set, so a policy may only
//! write the one it would set. Never stops at the first problem.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, HTTPGetAction, LifecycleHandler, Probe, ResourceClaim,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::policy::Quantity;

use super::apiserver::check_port_name;
use super::volumes::{MountPaths, RuleVolumes};
use super::{Checker, index_path, key_path, unknown_field_message};

/// Which list a container comes from: what the apiserver allows differs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `initContainers`: run to completion before the pod's containers.
    Init,
    /// `sidecars`: run beside them (native sidecars where the cluster has them).
    Sidecar,
}

/// The fields of a Container read by their own readers, not by the Kubernetes type.
const DELEGATED: &[&str] = &["env", "envFrom", "resources"];

impl Checker {
    pub(super) fn added_containers(
        &mut self,
        value: &Value,
        path: &str,
        kind: Kind,
        volumes: &RuleVolumes,
    ) -> Vec<Container> {
        self.list(value, path, |c, v, p| c.container(v, p, kind, volumes))
    }

    fn container(
        &mut self,
        value: &Value,
        path: &str,
        kind: Kind,
        volumes: &RuleVolumes,
    ) -> Option<Container> {
        let since = self.problems.len();
        let raw = value.as_object();
        let field = |name: &str| raw.and_then(|m| m.get(name)).filter(|v| !v.is_null());
        let env = field("env").map(|v| self.env(v, &key_path(path, "env")));
        let env_from = field("envFrom").map(|v| self.env_from(v, &key_path(path, "envFrom")));
        let resources = field("resources")
            .and_then(|v| self.container_resources(v, &key_path(path, "resources")));
        let mut container: Container =
            self.k8s_object(value, path, DELEGATED, unknown_field_message)?;
        container.env = env;
        container.env_from = env_from;
        container.resources = resources;

        let name_path = key_path(path, "name");
        if self.required(&container.name, &name_path, "the container's name") {
            self.dns_label(&container.name, &name_path, "a container name");
        }
        let image = container.image.as_deref().unwrap_or_default();
        let image_path = key_path(path, "image");
        if self.required(image, &image_path, "the container's image") && image.trim() != image {
            self.problem(
                image_path,
                format!("{image:?} must not begin or end with whitespace"),
            );
        }
        self.one_of(
            container.image_pull_policy.as_deref(),
            &key_path(path, "imagePullPolicy"),
            &["Always", "Never", "IfNotPresent"],
        );
        self.one_of(
            container.termination_message_policy.as_deref(),
            &key_path(path, "terminationMessagePolicy"),
            &["File", "FallbackToLogsOnError"],
        );
        self.ports(&container, path);
        let mut paths = MountPaths::new();
        for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
            let p = index_path(&key_path(path, "volumeMounts"), i);
            self.check_mount(mount, &p, volumes, &mut paths);
        }
        for (i, device) in container.volume_devices.iter().flatten().enumerate() {
            let p = index_path(&key_path(path, "volumeDevices"), i);
            if !volumes.contains(&device.name) {
                self.problem(
                    key_path(&p, "name"),
                    format!("{:?} names no volume of this rule; a device must name a volume the same rule adds", device.name),
                );
            }
            self.absolute_path(&device.device_path, &key_path(&p, "devicePath"));
        }
        for (i, resize) in container.resize_policy.iter().flatten().enumerate() {
            let p = index_path(&key_path(path, "resizePolicy"), i);
            self.one_of(
                Some(&resize.resource_name),
                &key_path(&p, "resourceName"),
                &["cpu", "memory"],
            );
            self.one_of(
                Some(&resize.restart_policy),
                &key_path(&p, "restartPolicy"),
                &["NotRequired", "RestartContainer"],
            );
        }
        if let Some(context) = &container.security_context {
            self.check_container_security_context(context, &key_path(path, "securityContext"));
        }
        let probes = [
            ("livenessProbe", &container.liveness_probe),
            ("readinessProbe", &container.readiness_probe),
            ("startupProbe", &container.startup_probe),
        ];
        for (name, probe) in probes {
            let Some(probe) = probe else { continue };
            let p = key_path(path, name);
            match kind {
                // An init container must exit for the pod to start; the apiserver refuses
                // probes on one (a native sidecar, restartPolicy Always, may have them).
                Kind::Init => self.problem(
                    p,
                    format!("init containers may not have a {name} (the apiserver refuses it); put the container under sidecars if it runs beside Spark"),
                ),
                Kind::Sidecar => self.probe(probe, &p, name),
            }
        }
        if let Some(lifecycle) = &container.lifecycle {
            let p = key_path(path, "lifecycle");
            match kind {
                Kind::Init => self.problem(
                    p,
                    "init containers may not have a lifecycle (the apiserver refuses it); put the container under sidecars if it runs beside Spark",
                ),
                Kind::Sidecar => {
                    for (name, handler) in [
                        ("postStart", &lifecycle.post_start),
                        ("preStop", &lifecycle.pre_stop),
                    ] {
                        if let Some(handler) = handler {
                            self.lifecycle_handler(handler, &key_path(&p, name));
                        }
                    }
                }
            }
        }
        let restart_path = key_path(path, "restartPolicy");
        match (kind, container.restart_policy.as_deref()) {
            (_, None) | (Kind::Sidecar, Some("Always")) => {}
            (Kind::Init, Some(policy)) => self.problem(
                restart_path,
                format!("{policy:?} is not allowed on an init container of a policy; for a container that runs beside Spark use sidecars, which the engine makes native sidecars where the cluster has them"),
            ),
            (Kind::Sidecar, Some(policy)) => self.problem(
                restart_path,
                format!("{policy:?} is not allowed; a sidecar may only have restartPolicy Always (or leave it out: the engine sets it where the cluster has native sidecars)"),
            ),
        }
        (self.problems.len() == since).then_some(container)
    }

    fn ports(&mut self, container: &Container, path: &str) {
        let mut names = HashSet::new();
        for (i, port) in container.ports.iter().flatten().enumerate() {
            let p = index_path(&key_path(path, "ports"), i);
            if !(1..=65535).contains(&port.container_port) {
                self.problem(
                    key_path(&p, "containerPort"),
                    format!("{} is not a port; allowed: 1 to 65535", port.container_port),
                );
            }
            // 0 is how the apiserver spells "no host port".
            if let Some(host_port) = port.host_port
                && !(0..=65535).contains(&host_port)
            {
                self.problem(
                    key_path(&p, "hostPort"),
                    format!("{host_port} is not a port; allowed: 1 to 65535 (or 0 for none)"),
                );
            }
            self.one_of(
                port.protocol.as_deref(),
                &key_path(&p, "protocol"),
                &["TCP", "UDP", "SCTP"],
            );
            if let Some(host_ip) = port.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                self.ip(host_ip, &key_path(&p, "hostIP"));
            }
            if let Some(name) = &port.name {
                let np = key_path(&p, "name");
                if let Err(why) = check_port_name(name) {
                    self.problem(np, format!("{name:?} is not a port name: it {why}"));
                } else if !names.insert(name.as_str()) {
                    self.problem(
                        np,
                        format!("{name:?} is already the name of another port of this container; port names must be unique"),
                    );
                }
            }
        }
    }

    fn probe(&mut self, probe: &Probe, path: &str, which: &str) {
        let handlers = [
            ("exec", probe.exec.is_some()),
            ("httpGet", probe.http_get.is_some()),
            ("tcpSocket", probe.tcp_socket.is_some()),
            ("grpc", probe.grpc.is_some()),
        ];
        if handlers.iter().filter(|(_, set)| *set).count() != 1 {
            self.problem(path, "needs exactly one of exec, httpGet, tcpSocket, grpc");
        }
        for (field, value) in [
            ("initialDelaySeconds", probe.initial_delay_seconds),
            ("timeoutSeconds", probe.timeout_seconds),
            ("periodSeconds", probe.period_seconds),
            ("successThreshold", probe.success_threshold),
            ("failureThreshold", probe.failure_threshold),
        ] {
            if let Some(value) = value
                && value < 0
            {
                self.problem(
                    key_path(path, field),
                    format!("{value} is negative; it must be zero or more"),
                );
            }
        }
        if which != "readinessProbe"
            && let Some(threshold) = probe.success_threshold
            && threshold != 1
        {
            self.problem(
                key_path(path, "successThreshold"),
                format!("{threshold} is not allowed; a {which} must have successThreshold 1"),
            );
        }
        if let Some(seconds) = probe.termination_grace_period_seconds {
            let p = key_path(path, "terminationGracePeriodSeconds");
            if which == "readinessProbe" {
                self.problem(
                    p,
                    "a readinessProbe may not set terminationGracePeriodSeconds",
                );
            } else if seconds <= 0 {
                self.problem(
                    p,
                    format!("{seconds} is out of range; it must be more than 0"),
                );
            }
        }
        if let Some(http) = &probe.http_get {
            self.http_get(http, &key_path(path, "httpGet"));
        }
        if let Some(tcp) = &probe.tcp_socket {
            self.port_or_name(&tcp.port, &key_path(&key_path(path, "tcpSocket"), "port"));
        }
        if let Some(grpc) = &probe.grpc
            && !(1..=65535).contains(&grpc.port)
        {
            self.problem(
                key_path(&key_path(path, "grpc"), "port"),
                format!("{} is not a port; allowed: 1 to 65535", grpc.port),
            );
        }
    }

    fn lifecycle_handler(&mut self, handler: &LifecycleHandler, path: &str) {
        let set = [
            handler.exec.is_some(),
            handler.http_get.is_some(),
            handler.tcp_socket.is_some(),
            handler.sleep.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            self.problem(path, "needs exactly one of exec, httpGet, tcpSocket, sleep");
        }
        if let Some(http) = &handler.http_get {
            self.http_get(http, &key_path(path, "httpGet"));
        }
        if let Some(tcp) = &handler.tcp_socket {
            self.port_or_name(&tcp.port, &key_path(&key_path(path, "tcpSocket"), "port"));
        }
        if let Some(sleep) = &handler.sleep
            && sleep.seconds <= 0
        {
            self.problem(
                key_path(&key_path(path, "sleep"), "seconds"),
                format!("{} is out of range; it must be more than 0", sleep.seconds),
            );
        }
    }

    fn http_get(&mut self, http: &HTTPGetAction, path: &str) {
        self.port_or_name(&http.port, &key_path(path, "port"));
        self.one_of(
            http.scheme.as_deref(),
            &key_path(path, "scheme"),
            &["HTTP", "HTTPS"],
        );
    }

    /// A probe's port: a number 1 to 65535, or the name of one of the container's ports.
    fn port_or_name(&mut self, port: &IntOrString, path: &str) {
        match port {
            IntOrString::Int(number) if !(1..=65535).contains(number) => self.problem(
                path,
                format!("{number} is not a port; allowed: 1 to 65535 or a port name"),
            ),
            IntOrString::String(name) => {
                if let Err(why) = check_port_name(name) {
                    self.problem(path, format!("{name:?} is not a port name: it {why}"));
                }
            }
            IntOrString::Int(_) => {}
        }
    }

    /// A container's `resources`, read like a rule's resource defaults, with requests not
    /// above limits (the apiserver refuses such a container).
    fn container_resources(&mut self, value: &Value, path: &str) -> Option<ResourceRequirements> {
        let map = self.object(value, path, &["claims", "limits", "requests"])?;
        let read = |c: &mut Self, key: &str| -> Option<BTreeMap<String, Quantity>> {
            map.get(key)
                .filter(|v| !v.is_null())
                .map(|v| c.quantity_map(v, &key_path(path, key)))
        };
        let requests = read(self, "requests");
        let limits = read(self, "limits");
        for (resource, request) in requests.iter().flatten() {
            if let Some(limit) = limits
                .as_ref()
                .and_then(|l| l.get(resource))
                .filter(|l| request > *l)
            {
                self.problem(
                    key_path(&key_path(path, "requests"), resource),
                    format!(
                        "{request} is above the limit {limit}; a request must not exceed its limit"
                    ),
                );
            }
        }
        let claims = map.get("claims").filter(|v| !v.is_null()).map(|v| {
            self.list(v, &key_path(path, "claims"), |c, v, p| {
                let claim: ResourceClaim = c.k8s(v, p)?;
                c.required(&claim.name, &key_path(p, "name"), "the claim's name")
                    .then_some(claim)
            })
        });
        // Written as the apiserver stores them, so the engine's comparison with a stored pod
        // is exact.
        let written = |amounts: BTreeMap<String, Quantity>| {
            amounts
                .into_iter()
                .map(|(name, q)| (name, K8sQuantity(q.as_str().to_owned())))
                .collect()
        };
        Some(ResourceRequirements {
            claims,
            limits: limits.map(written),
            requests: requests.map(written),
        })
    }

    /// `envFrom`: whole ConfigMaps and Secrets as variables.
    pub(super) fn env_from(&mut self, value: &Value, path: &str) -> Vec<EnvFromSource> {
        self.list(value, path, |c, v, p| {
            let since = c.problems.len();
            let source: EnvFromSource = c.k8s(v, p)?;
            match (&source.config_map_ref, &source.secret_ref) {
                (Some(_), Some(_)) | (None, None) => {
                    c.problem(p, "needs exactly one of configMapRef, secretRef")
                }
                _ => {}
            }
            if let Some(reference) = &source.config_map_ref {
                let np = key_path(&key_path(p, "configMapRef"), "name");
                if c.required(&reference.name, &np, "the ConfigMap's name") {
                    c.dns_subdomain(&reference.name, &np, "a ConfigMap name");
                }
            }
            if let Some(reference) = &source.secret_ref {
                let np = key_path(&key_path(p, "secretRef"), "name");
                if c.required(&reference.name, &np, "the Secret's name") {
                    c.dns_subdomain(&reference.name, &np, "a Secret name");
                }
            }
            if let Some(prefix) = source.prefix.as_deref().filter(|p| !p.is_empty()) {
                let ok = !prefix.starts_with(|ch: char| ch.is_ascii_digit())
                    && prefix
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
                if !ok {
                    c.problem(
                        key_path(p, "prefix"),
                        format!("{prefix:?} is not a valid variable name prefix; use letters, digits and '_', not starting with a digit"),
                    );
                }
            }
            (c.problems.len() == since).then_some(source)
        })
    }

    /// Container names are unique across the rule's `initContainers` and `sidecars` (the
    /// apiserver refuses a pod with two containers of one name, whichever lists they are in).
    pub(super) fn unique_container_names(
        &mut self,
        map: &serde_json::Map<String, Value>,
        path: &str,
    ) {
        let mut seen: HashMap<&str, String> = HashMap::new();
        for list in ["initContainers", "sidecars"] {
            let Some(Value::Array(items)) = map.get(list) else {
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                let Some(name) = item
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                else {
                    continue;
                };
                let here = index_path(&key_path(path, list), i);
                match seen.get(name) {
                    Some(first) => self.problem(
                        key_path(&here, "name"),
                        format!("{name:?} is already the name of {first}; container names must be unique across initContainers and sidecars"),
                    ),
                    None => {
                        seen.insert(name, here);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::super::test_support::{has, rule, rule_problems};

    #[test]
    fn init_containers_and_sidecars_land_in_the_rule_as_containers() {
        let rule = rule(
            r#"    volumes: [{name: certs, emptyDir: {}}]
    initContainers:
      - {name: fetch-certs, image: "registry/certs:1", command: ["/fetch"], volumeMounts: [{name: certs, mountPath: /certs}]}
    sidecars:
      - name: fluent-bit
        image: "fluent/fluent-bit:3"
        restartPolicy: Always
        ports: [{name: metrics, containerPort: 2020}]
        env: [{name: LEVEL, value: info}]
        envFrom: [{secretRef: {name: shipper}}]
        resources: {requests: {cpu: "0.05", memory: 64Mi}, limits: {memory: 128Mi}}
        readinessProbe: {httpGet: {path: /health, port: metrics}, periodSeconds: 10}
        securityContext: {runAsNonRoot: true, capabilities: {drop: [ALL]}}
"#,
        );
        let init = &rule.pod.init_containers;
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].name, "fetch-certs");
        assert_eq!(init[0].command.as_deref(), Some(&["/fetch".to_owned()][..]));
        assert_eq!(
            init[0]
                .volume_mounts
                .as_ref()
                .map(|m| m[0].mount_path.as_str()),
            Some("/certs")
        );
        let sidecar = &rule.pod.sidecars[0];
        assert_eq!(sidecar.image.as_deref(), Some("fluent/fluent-bit:3"));
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            sidecar.ports.as_ref().map(|p| p[0].container_port),
            Some(2020)
        );
        assert_eq!(
            sidecar.env.as_ref().map(|e| e[0].name.as_str()),
            Some("LEVEL")
        );
        assert_eq!(
            sidecar
                .env_from
                .as_ref()
                .and_then(|e| e[0].secret_ref.as_ref())
                .map(|s| s.name.as_str()),
            Some("shipper")
        );
        let resources = sidecar.resources.as_ref().expect("resources");
        // The apiserver stores 0.05 CPU as 50m.
        assert_eq!(
            resources.requests.as_ref().map(|r| r["cpu"].0.as_str()),
            Some("50m")
        );
        assert_eq!(
            resources.limits.as_ref().map(|r| r["memory"].0.as_str()),
            Some("128Mi")
        );
        assert_eq!(
            sidecar
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|h| h.port.clone()),
            Some(IntOrString::String("metrics".to_owned()))
        );
        assert_eq!(
            sidecar
                .security_context
                .as_ref()
                .and_then(|s| s.capabilities.as_ref())
                .and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
    }

    #[test]
    fn invalid_ports_are_reported_with_what_is_allowed() {
        let found = rule_problems(
            r#"    sidecars:
      - name: proxy
        image: envoy
        ports:
          - {containerPort: 70000, protocol: HTTP}
          - {containerPort: 0, hostPort: -1, name: Admin}
          - {containerPort: 9901, name: admin-interface-port}
          - {containerPort: 9902, name: "1234"}
          - {containerPort: 8080, name: http}
          - {containerPort: 8081, name: http, hostIP: 10.0.0.300}
"#,
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[0].containerPort",
            "70000 is not a port; allowed: 1 to 65535",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[0].protocol",
            "allowed: TCP, UDP, SCTP",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[1].containerPort",
            "0 is not a port",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[1].hostPort",
            "-1 is not a port",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[1].name",
            "IANA service name",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[2].name",
            "1 to 15 characters",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[3].name",
            "at least one letter",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[5].name",
            "port names must be unique",
        );
        has(
            &found,
            "rules[0].sidecars[0].ports[5].hostIP",
            "not an IP address",
        );
        assert_eq!(found.len(), 9, "{found:#?}");
    }

    #[test]
    fn an_unknown_field_deep_inside_a_container_is_reported_with_a_hint() {
        let found = rule_problems(
            r#"    sidecars:
      - name: proxy
        image: envoy
        livenessProbe: {httpGet: {pth: /ready, port: 9901}}
        securityContext: {capabilities: {dorp: [ALL]}}
        imagePulPolicy: Always
"#,
        );
        has(
            &found,
            "rules[0].sidecars[0].livenessProbe.httpGet.pth",
            "unknown field \"pth\" (did you mean \"path\"?); allowed: host, httpHeaders, path, port, scheme",
        );
        has(
            &found,
            "rules[0].sidecars[0].securityContext.capabilities.dorp",
            "did you mean \"drop\"",
        );
        has(
            &found,
            "rules[0].sidecars[0].imagePulPolicy",
            "did you mean \"imagePullPolicy\"",
        );
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn container_mistakes_are_reported_with_their_paths() {
        let found = rule_problems(
            r#"    volumes: [{name: certs, emptyDir: {}}]
    initContainers:
      - name: Fetch
        image: ""
        restartPolicy: Always
        livenessProbe: {exec: {command: [true]}}
        lifecycle: {preStop: {exec: {command: [x]}}}
        volumeMounts: [{name: certs, mountPath: /c}, {name: certs, mountPath: /c}, {name: data, mountPath: /d}]
      - {name: twice, image: busybox}
    sidecars:
      - name: twice
        image: " envoy"
        restartPolicy: Never
        env: [{name: 1BAD, value: x}]
        envFrom: [{configMapRef: {name: a}, secretRef: {name: b}}, {prefix: "1-", secretRef: {name: B}}]
        resources: {requests: {cpu: "2", memory: lots}, limits: {cpu: "1"}}
        startupProbe: {tcpSocket: {port: 0}, successThreshold: 2}
        readinessProbe: {grpc: {port: 9000}, terminationGracePeriodSeconds: 5}
        containerPort: 80
"#,
        );
        let init = "rules[0].initContainers[0]";
        has(&found, &format!("{init}.name"), "not a container name");
        has(&found, &format!("{init}.image"), "missing or empty");
        has(
            &found,
            &format!("{init}.restartPolicy"),
            "not allowed on an init container",
        );
        has(
            &found,
            &format!("{init}.livenessProbe"),
            "init containers may not have a livenessProbe",
        );
        has(
            &found,
            &format!("{init}.lifecycle"),
            "init containers may not have a lifecycle",
        );
        has(
            &found,
            &format!("{init}.volumeMounts[1].mountPath"),
            "already mounted by rules[0].initContainers[0].volumeMounts[0]",
        );
        has(
            &found,
            &format!("{init}.volumeMounts[2].name"),
            "\"data\" names no volume of this rule",
        );
        let sidecar = "rules[0].sidecars[0]";
        has(
            &found,
            &format!("{sidecar}.name"),
            "\"twice\" is already the name of rules[0].initContainers[1]",
        );
        has(
            &found,
            &format!("{sidecar}.image"),
            "must not begin or end with whitespace",
        );
        has(
            &found,
            &format!("{sidecar}.restartPolicy"),
            "a sidecar may only have restartPolicy Always",
        );
        has(
            &found,
            &format!("{sidecar}.env[0].name"),
            "not a valid variable name",
        );
        has(
            &found,
            &format!("{sidecar}.envFrom[0]"),
            "exactly one of configMapRef, secretRef",
        );
        has(
            &found,
            &format!("{sidecar}.envFrom[1].prefix"),
            "not a valid variable name prefix",
        );
        has(
            &found,
            &format!("{sidecar}.envFrom[1].secretRef.name"),
            "not a Secret name",
        );
        has(
            &found,
            &format!("{sidecar}.resources.requests.cpu"),
            "2 is above the limit 1",
        );
        has(
            &found,
            &format!("{sidecar}.resources.requests.memory"),
            "not a Kubernetes quantity",
        );
        has(
            &found,
            &format!("{sidecar}.startupProbe.tcpSocket.port"),
            "0 is not a port",
        );
        has(
            &found,
            &format!("{sidecar}.startupProbe.successThreshold"),
            "must have successThreshold 1",
        );
        has(
            &found,
            &format!("{sidecar}.readinessProbe.terminationGracePeriodSeconds"),
            "may not set",
        );
        has(
            &found,
            &format!("{sidecar}.containerPort"),
            "unknown field \"containerPort\"",
        );
        // The init container's exec command holds a boolean where a string goes.
        has(
            &found,
            &format!("{init}.livenessProbe.exec.command[0]"),
            "invalid type: boolean",
        );
        assert_eq!(found.len(), 21, "{found:#?}");
    }
}
