//! Property tests over generated pods and policies:
//! 1. the patch applied to the pod as the apiserver sent it, the raw JSON of `request.object`
//!    (managedFields, `creationTimestamp: null`, fields newer than the typed model and all), gives
//!    the desired pod and leaves everything else as sent;
//! 2. idempotence: evaluating the desired pod again yields an empty patch;
//! 3. the engine never panics, whatever the pod and the (valid) policy;
//! 4. every answer is a pod the apiserver accepts (names, volumes and mounts; see
//!    `assert_valid`), with SPEC §4a's fields in the rules and volumes, mounts, init
//!    containers, placement terms and the like on the pods, on clusters of every version.
//!
//! §4a's fields are set on the parsed rules in Rust (`CUSTOMIZATIONS`), since the parser does
//! not read them yet; once it does, they can move into `RULE_PARTS` as text.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spark_admission::Policy;
use spark_admission::engine::{ClusterFacts, KubernetesVersion, RequestContext, evaluate};
use spark_admission::policy::{LocalDirs, PodCustomization, Quantity};

const EXECUTOR_REVIEW: &str = include_str!("fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &str = include_str!("fixtures/spark-4.3/driver-review.json");

/// One generated pod variation on a real fixture.
#[derive(Debug, Clone)]
struct PodShape {
    driver: bool,
    namespace: &'static str,
    app_name: Option<String>,
    extra_labels: Vec<(&'static str, &'static str)>,
    sidecar_first: bool,
    env: Vec<(&'static str, &'static str)>,
    cpu_request: Option<&'static str>,
    cpu_limit: Option<&'static str>,
    memory: Option<&'static str>,
    zones: Vec<&'static str>,
    priority_class: Option<&'static str>,
    tolerate_dedicated: bool,
    newer_field: bool,
}

fn pod_shape() -> impl Strategy<Value = PodShape> {
    (
        any::<bool>(),
        prop::sample::select(vec!["spark-jobs", "analytics", "etl-daily"]),
        prop::option::of("[ -~]{0,80}|\\PC{0,20}"),
        prop::collection::vec(
            (
                prop::sample::select(vec!["team", "tier", "cost-center"]),
                prop::sample::select(vec!["a", "analytics", "gold"]),
            ),
            0..3,
        ),
        any::<bool>(),
        prop::collection::vec(
            (
                prop::sample::select(vec!["DB_PASS", "DEPLOY_ENV", "OTHER"]),
                prop::sample::select(vec!["x", "prod"]),
            ),
            0..3,
        ),
        prop::option::of(prop::sample::select(vec!["100m", "1", "2", "12"])),
        prop::option::of(prop::sample::select(vec!["500m", "2", "4", "16"])),
        prop::option::of(prop::sample::select(vec!["1Gi", "2432Mi", "80Gi"])),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..3),
        prop::option::of(prop::sample::select(vec!["urgent", "spark-batch"])),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                driver,
                namespace,
                app_name,
                extra_labels,
                sidecar_first,
                env,
                cpu_request,
                cpu_limit,
                memory,
                zones,
                priority_class,
                (tolerate_dedicated, newer_field),
            )| PodShape {
                driver,
                namespace,
                app_name,
                extra_labels,
                sidecar_first,
                env,
                cpu_request,
                cpu_limit,
                memory,
                zones,
                priority_class,
                tolerate_dedicated,
                newer_field,
            },
        )
}

/// What a generated pod brings of SPEC §4a's concerns, and the cluster it is created on.
#[derive(Debug, Clone)]
struct PodExtras {
    /// `hadoop-conf` from a Secret, mounted on `/etc/hadoop/conf` (where a rule mounts its own).
    own_volume: bool,
    /// Spark's local dir as a PersistentVolumeClaim, not an emptyDir.
    local_dir_claim: bool,
    /// An init container of the pod, named like a policy's or not.
    own_init: Option<&'static str>,
    /// A topology spread constraint and an envFrom entry of the pod's.
    own_lists: bool,
    /// The pod's own security context fields.
    own_security: bool,
    /// The apiserver's version.
    version: Option<&'static str>,
}

fn pod_extras() -> impl Strategy<Value = PodExtras> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            "own-init",
            "fetch-certs",
            // A policy's sidecar of this name conflicts with it on 1.28, replaces it on 1.29.
            "log-agent",
        ])),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["1.28", "1.29", "v1.31.2"])),
    )
        .prop_map(
            |(own_volume, local_dir_claim, own_init, own_lists, own_security, version)| PodExtras {
                own_volume,
                local_dir_claim,
                own_init,
                own_lists,
                own_security,
                version,
            },
        )
}

fn add_extras(pod: &mut Value, extras: &PodExtras) {
    let spec = pod["spec"].as_object_mut().expect("spec");
    // The Spark container, wherever a sidecar put first left it.
    let spark = spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .position(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("spark-kubernetes-"))
        })
        .expect("the fixture's Spark container");
    if extras.own_volume {
        spec["volumes"]
            .as_array_mut()
            .expect("volumes")
            .push(json!({"name": "hadoop-conf", "secret": {"secretName": "hadoop"}}));
        spec["containers"][spark]["volumeMounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({"name": "hadoop-conf", "mountPath": "/etc/hadoop/conf"}));
    }
    if extras.local_dir_claim {
        for volume in spec["volumes"].as_array_mut().expect("volumes") {
            if volume["name"] == json!("spark-local-dir-1") {
                *volume = json!({"name": "spark-local-dir-1", "persistentVolumeClaim": {"claimName": "OnDemand-0"}});
            }
        }
    }
    if let Some(name) = extras.own_init {
        spec.insert(
            "initContainers".into(),
            json!([{"name": name, "image": "busybox"}]),
        );
    }
    if extras.own_lists {
        spec.insert(
            "topologySpreadConstraints".into(),
            json!([{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}]),
        );
        spec["containers"][spark]["envFrom"] = json!([{"secretRef": {"name": "team-s3"}}]);
        spec.insert(
            "hostAliases".into(),
            json!([{"ip": "10.0.0.1", "hostnames": ["own"]}]),
        );
    }
    if extras.own_security {
        spec.insert(
            "securityContext".into(),
            json!({"fsGroup": 100, "runAsUser": 185}),
        );
        spec["containers"][spark]["securityContext"] = json!({"allowPrivilegeEscalation": true});
    }
}

fn k8s<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a Kubernetes object")
}

fn size(text: &str) -> Quantity {
    Quantity::parse(text).expect("quantity")
}

/// §4a's fields a generated rule may carry, each a valid setting; a rule takes up to three,
/// a later one replacing what an earlier one set of the same field. Every `volumes` setting
/// holds `hadoop-conf`, so the mounts of another setting still name a volume of the rule.
const CUSTOMIZATIONS: &[fn(&mut PodCustomization)] = &[
    |p| {
        p.volumes = vec![k8s(
            json!({"name": "hadoop-conf", "configMap": {"name": "hadoop"}}),
        )];
        p.volume_mounts = vec![k8s(
            json!({"name": "hadoop-conf", "mountPath": "/etc/hadoop/conf", "readOnly": true}),
        )];
    },
    |p| {
        p.volumes = vec![k8s(json!({"name": "hadoop-conf", "emptyDir": {}}))];
        p.volume_mounts = vec![k8s(
            json!({"name": "hadoop-conf", "mountPath": "/opt/spark/conf"}),
        )];
    },
    |p| {
        p.env_from = vec![
            k8s(json!({"secretRef": {"name": "team-s3"}})),
            k8s(json!({"configMapRef": {"name": "defaults"}, "prefix": "D_"})),
        ]
    },
    |p| p.init_containers = vec![k8s(json!({"name": "fetch-certs", "image": "certs:1"}))],
    |p| {
        p.sidecars = vec![k8s(
            json!({"name": "fluent-bit", "image": "fluent-bit:3", "resources": {"requests": {"cpu": "50m"}}}),
        )]
    },
    |p| {
        p.sidecars = vec![k8s(json!({"name": "log-agent", "image": "agent"}))];
        p.init_containers = vec![k8s(json!({"name": "own-init", "image": "policy"}))];
    },
    |p| {
        p.volumes = vec![
            k8s(json!({"name": "hadoop-conf", "configMap": {"name": "hadoop"}})),
            k8s(json!({"name": "spark-local-dir-1", "emptyDir": {}})),
        ];
        p.sidecars = vec![k8s(json!({"name": "shipper", "image": "s",
            "volumeMounts": [{"name": "hadoop-conf", "mountPath": "/etc/hadoop"}]}))];
    },
    |p| p.security_context = Some(k8s(json!({"runAsNonRoot": true, "fsGroup": 185}))),
    |p| {
        p.container_security_context = Some(k8s(
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
        ))
    },
    |p| {
        p.image_pull_secrets = vec![
            k8s(json!({"name": "registry-creds"})),
            k8s(json!({"name": "mirror"})),
        ]
    },
    |p| {
        p.topology_spread_constraints = vec![k8s(json!({"maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"spark-app-selector": "{app_id}", "spark-role": "{role}"}}}))]
    },
    |p| {
        p.pod_affinity = Some(k8s(
            json!({"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "topology.kubernetes.io/zone",
             "labelSelector": {"matchLabels": {"spark-app-selector": "{app_id}", "spark-role": "driver"}}}]}),
        ));
        p.pod_anti_affinity = Some(k8s(
            json!({"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
             "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["{app_name}"]}]}}}]}),
        ));
    },
    |p| {
        p.termination_grace_period_seconds = Some(120);
        p.automount_service_account_token = Some(false);
        p.runtime_class_name = Some("gvisor".into());
    },
    |p| {
        p.dns_config = Some(k8s(json!({"options": [{"name": "ndots", "value": "2"}]})));
        p.host_aliases = vec![
            k8s(json!({"ip": "10.0.0.1", "hostnames": ["metadata"]})),
            k8s(json!({"ip": "10.0.0.2", "hostnames": ["proxy"]})),
        ];
    },
    |p| {
        p.local_dirs = Some(LocalDirs::EmptyDir {
            size_limit: Some(size("200Gi")),
            medium: None,
        })
    },
    |p| {
        p.local_dirs = Some(LocalDirs::Ephemeral {
            storage_class_name: Some("gp3".into()),
            size: size("100Gi"),
        })
    },
];

fn customizations() -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(prop::collection::vec(0..CUSTOMIZATIONS.len(), 0..4), 5)
}

/// The apiserver's rules the engine must never break (`ValidatePodSpec`): container names
/// unique across containers and init containers, volume names unique, every mount naming a
/// volume, no two mounts on one path in a container, `restartPolicy` only on init containers.
/// And never an init container that never exits: every init container the policy added as a
/// sidecar has `restartPolicy: Always`, and none has it before 1.29.
fn assert_valid(original: &Pod, desired: &Pod, sidecars: &HashSet<&str>, native: bool) {
    let spec = desired.spec.as_ref().expect("spec");
    let mut names = HashSet::new();
    let inits = spec.init_containers.iter().flatten();
    for container in spec.containers.iter().chain(inits) {
        assert!(
            names.insert(container.name.as_str()),
            "container {} twice",
            container.name
        );
    }
    let mut volumes = HashSet::new();
    for volume in spec.volumes.iter().flatten() {
        assert!(
            volumes.insert(volume.name.as_str()),
            "volume {} twice",
            volume.name
        );
    }
    let inits = spec.init_containers.iter().flatten();
    for container in spec.containers.iter().chain(inits) {
        let mut paths = HashSet::new();
        for mount in container.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(mount.name.as_str()),
                "{} mounts missing {}",
                container.name,
                mount.name
            );
            assert!(
                paths.insert(mount.mount_path.as_str()),
                "{} mounts {} twice",
                container.name,
                mount.mount_path
            );
        }
    }
    for container in &spec.containers {
        assert_eq!(container.restart_policy, None, "{}", container.name);
    }
    let own: HashSet<&str> = original
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for init in spec.init_containers.iter().flatten() {
        if own.contains(init.name.as_str()) && !sidecars.contains(init.name.as_str()) {
            continue;
        }
        let always = init.restart_policy.as_deref() == Some("Always");
        if sidecars.contains(init.name.as_str()) && !own.contains(init.name.as_str()) {
            assert!(
                always && native,
                "sidecar {} as an init container that never exits",
                init.name
            );
        }
        if !native {
            assert!(!always, "native sidecar {} before 1.29", init.name);
        }
    }
}

/// The pod as the apiserver would send it (managedFields included) and its namespace.
fn build_pod(shape: &PodShape) -> Value {
    let review: Value = serde_json::from_str(if shape.driver {
        DRIVER_REVIEW
    } else {
        EXECUTOR_REVIEW
    })
    .expect("fixture");
    let mut pod = review["request"]["object"].clone();
    let labels = pod["metadata"]["labels"].as_object_mut().expect("labels");
    match &shape.app_name {
        Some(name) => {
            labels.insert("spark-app-name".into(), json!(name));
        }
        None => {
            labels.remove("spark-app-name");
        }
    }
    for (k, v) in &shape.extra_labels {
        labels.insert((*k).into(), json!(v));
    }
    let spec = pod["spec"].as_object_mut().expect("spec");
    let containers = spec["containers"].as_array_mut().expect("containers");
    {
        let spark = containers[0].as_object_mut().expect("container");
        let env = spark["env"].as_array_mut().expect("env");
        for (name, value) in &shape.env {
            if !env.iter().any(|e| e["name"] == json!(name)) {
                env.push(json!({"name": name, "value": value}));
            }
        }
        if shape.newer_field {
            // A field of a newer Kubernetes (1.34's container restart rules) than the typed
            // model (k8s-openapi's v1_33): the webhook never reads it, the apiserver keeps it.
            spark.insert(
                "restartPolicyRules".into(),
                json!([{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]),
            );
        }
        let resources = spark["resources"].as_object_mut().expect("resources");
        for (kind, resource, value) in [
            ("requests", "cpu", shape.cpu_request),
            ("limits", "cpu", shape.cpu_limit),
            ("requests", "memory", shape.memory),
            ("limits", "memory", shape.memory),
        ] {
            let map = resources
                .entry(kind)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("map");
            match value {
                Some(v) => {
                    map.insert(resource.into(), json!(v));
                }
                None => {
                    map.remove(resource);
                }
            }
        }
    }
    if shape.sidecar_first {
        containers.insert(0, json!({"name": "fluent-bit", "image": "fluent-bit", "env": [{"name": "DB_PASS", "value": "sidecar"}]}));
    }
    if !shape.zones.is_empty() {
        let terms: Vec<Value> = shape
            .zones
            .iter()
            .map(
                |z| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [z]}]}),
            )
            .collect();
        spec.insert("affinity".into(), json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}));
    }
    if let Some(class) = shape.priority_class {
        spec.insert("priorityClassName".into(), json!(class));
    }
    if shape.tolerate_dedicated {
        spec["tolerations"].as_array_mut().expect("tolerations").push(json!({"key": "dedicated", "operator": "Equal", "value": "spark", "effect": "NoSchedule"}));
    }
    pod
}

/// Pieces a generated rule is assembled from; every combination is a valid rule.
const RULE_PARTS: &[&str] = &[
    "labels: {cost-center: '{namespace}', spark-app: 'app-{app_name}', tier: gold}",
    "labels: {team: platform, owner: '{service_account}'}",
    "annotations: {prometheus.io/scrape: 'true', app-id: '{app_id}'}",
    "nodeSelector: {pool: general, disk: ssd}",
    "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: type, operator: In, values: [m5]}]}]}}}",
    "affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: arch, operator: In, values: [amd64]}]}, {matchExpressions: [{key: arch, operator: In, values: [arm64]}]}]}}}",
    "affinity: {nodeAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 10, preference: {matchExpressions: [{key: spot, operator: Exists}]}}]}}",
    "tolerations: [{key: dedicated, operator: Equal, value: spark, effect: NoSchedule}, {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute}]",
    "env: [{name: DB_PASS, valueFrom: {secretKeyRef: {name: snowsec, key: db_pass}}}, {name: DEPLOY_ENV, value: prod}]",
    "env: [{name: DEPLOY_ENV, value: staging}], containers: all",
    "env: [{name: TOKEN, value: t}], containers: [fluent-bit]",
    "resources: {executor: {default: {requests: {cpu: '1', memory: 2Gi}, limits: {cpu: '4'}}, max: {cpu: '8', memory: 64Gi}, onExceed: clamp}}",
    "resources: {executor: {max: {cpu: '3'}}, driver: {default: {limits: {cpu: '2'}}, max: {memory: 32Gi}}}",
    "priorityClassName: spark-batch",
    "schedulerName: yunikorn",
];

const MATCHES: &[&str] = &[
    "",
    "match: {roles: [executor]}, ",
    "match: {roles: [driver]}, ",
    "match: {namespaces: ['etl-*', analytics]}, ",
    "match: {podLabels: {spark-version: 4.3.0}}, ",
    "match: {serviceAccounts: [spark]}, ",
];

fn policy_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            0..MATCHES.len(),
            any::<bool>(),
            prop::collection::vec(0..RULE_PARTS.len(), 1..4),
        ),
        0..5,
    )
    .prop_map(|rules| {
        let mut text = String::from("rules:\n");
        for (i, (matcher, enforce, parts)) in rules.iter().enumerate() {
            let mut fields: Vec<&str> = Vec::new();
            for part in parts {
                // A rule holds each field once.
                let key = RULE_PARTS[*part].split(':').next().unwrap_or_default();
                if !fields.iter().any(|f| f.starts_with(key)) {
                    fields.push(RULE_PARTS[*part]);
                }
            }
            let mode = if *enforce { "mode: enforce, " } else { "" };
            text.push_str(&format!(
                "  - {{name: rule-{i}, {}{mode}{}}}\n",
                MATCHES[*matcher],
                fields.join(", ")
            ));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn patch_reproduces_desired_pod_and_second_pass_is_a_no_op(
        shape in pod_shape(),
        extras in pod_extras(),
        text in policy_text(),
        custom in customizations(),
    ) {
        let mut policy = Policy::parse(&text).unwrap_or_else(|e| panic!("generated policy invalid: {e}\n{text}"));
        for (rule, parts) in policy.rules.iter_mut().zip(&custom) {
            for part in parts {
                CUSTOMIZATIONS[*part](&mut rule.pod);
            }
        }
        let mut sent = build_pod(&shape);
        add_extras(&mut sent, &extras);
        let pod: Pod = serde_json::from_value(sent.clone()).expect("pod");
        let mut lean = pod.clone();
        let managed_fields = lean.metadata.managed_fields.take();
        let version = extras.version.and_then(KubernetesVersion::parse);
        let cluster = Arc::new(ClusterFacts { kubernetes_version: version, ..ClusterFacts::default() });
        let context = RequestContext { namespace: shape.namespace.to_owned(), cluster: cluster.clone() };

        let Some(first) = evaluate(&lean, &context, &policy) else {
            panic!("fixtures are Spark pods");
        };
        let patch = spark_admission::patch::diff(lean.clone(), first.desired.clone()).expect("diff");

        // (1) What the apiserver does: apply the patch to the pod exactly as it sent it, the raw
        // JSON, not a typed round trip of it.
        let mut applied = sent.clone();
        json_patch::patch(&mut applied, &patch).expect("patch applies to the pod as sent");
        // It must give the desired pod, plus, untouched, what the typed model cannot hold and
        // the engine so never saw: the difference between the raw pod and its typed round trip.
        let unread = json_patch::diff(&serde_json::to_value(&pod).expect("pod json"), &sent);
        let mut desired = first.desired.clone();
        desired.metadata.managed_fields = managed_fields;
        let mut expected = serde_json::to_value(&desired).expect("json");
        json_patch::patch(&mut expected, &unread).expect("what the typed model drops, put back");
        prop_assert_eq!(applied, expected);

        // (2) The server's path gives the same answer: the review as the apiserver sends it,
        // parsed without managedFields, reviewed, the patch base64-encoded in the response.
        let mut review: Value = serde_json::from_str(EXECUTOR_REVIEW).expect("json");
        review["request"]["object"] = sent.clone();
        review["request"]["namespace"] = json!(shape.namespace);
        let request = spark_admission::admission::parse_review(
            &serde_json::to_vec(&review).expect("json"),
        )
        .expect("review parses");
        let (answer, _) = spark_admission::admission::review(request, &policy, &cluster);
        prop_assert_eq!(answer.response.allowed, first.denial.is_none());
        if first.denial.is_none() {
            let sent_patch = answer.response.decoded_patch().unwrap_or_default();
            prop_assert_eq!(&sent_patch, &patch);
        }

        // (4) A pod the apiserver accepts.
        let sidecars: HashSet<&str> = policy.rules.iter().flat_map(|r| r.pod.sidecars.iter()).map(|c| c.name.as_str()).collect();
        let native = version.is_some_and(|v| v.has_native_sidecars());
        assert_valid(&lean, &first.desired, &sidecars, native);

        // (5) Nothing the pod had is dropped, whatever the rules and modes: a policy adds and
        // sets, it never removes. Every label key, container, init container and volume of the
        // pod as sent is still there by name (enforce may replace one, under the same name),
        // the containers in the order they came.
        let names = |items: Option<&Vec<Value>>| -> Vec<String> {
            items
                .map(|list| list.iter().filter_map(|i| i["name"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let desired_json = serde_json::to_value(&first.desired).expect("json");
        for list in ["containers", "initContainers", "volumes"] {
            let before = names(sent["spec"][list].as_array());
            let after = names(desired_json["spec"][list].as_array());
            let kept: Vec<&String> = after.iter().filter(|n| before.contains(n)).collect();
            prop_assert_eq!(kept.len(), before.len(), "{} lost: {:?} -> {:?}", list, before, after);
            if list != "volumes" {
                prop_assert!(kept.iter().zip(&before).all(|(a, b)| *a == b), "{} reordered: {:?} -> {:?}", list, before, after);
            }
        }
        if let Some(labels) = sent["metadata"]["labels"].as_object() {
            for key in labels.keys() {
                prop_assert!(desired_json["metadata"]["labels"].get(key).is_some(), "label {} dropped", key);
            }
        }

        // (3) Reinvocation sees the desired pod and must change nothing.
        let second = evaluate(&first.desired, &context, &policy).expect("still Spark");
        let again = spark_admission::patch::diff(first.desired.clone(), second.desired.clone()).expect("diff");
        prop_assert!(again.0.is_empty(), "second pass patched: {:?}", again);
        prop_assert_eq!(first.denial.is_some(), second.denial.is_some());
        // Nor warn about what it wrote itself: a reinvoked review warns about no field the first
        // did not (the values quoted may differ: a pod's own sidecar got the policy's env).
        let field = |w: &String| w.split(": ").next().unwrap_or_default().to_owned();
        let told: HashSet<String> = first.warnings.iter().map(field).collect();
        let new: Vec<&String> = second.warnings.iter().filter(|w| !told.contains(&field(w))).collect();
        prop_assert!(new.is_empty(), "second pass warned anew: {:?}", new);

        // Spark's container is never confused with the sidecar.
        // (A rule's own sidecar of that name replaces it under enforce, as it should.)
        if shape.sidecar_first && !text.contains("containers:") && !sidecars.contains("fluent-bit") {
            let sidecar_before: &Container = &pod.spec.as_ref().expect("spec").containers[0];
            let sidecar_after: &Container = &first.desired.spec.as_ref().expect("spec").containers[0];
            prop_assert_eq!(sidecar_before, sidecar_after);
        }
    }

    #[test]
    fn engine_never_panics_on_odd_label_values(app in "\\PC{0,100}", role in prop::sample::select(vec!["driver", "executor"]), ns in "[a-z0-9-]{1,20}") {
        let policy = Policy::builtin_example();
        let mut pod: Pod = serde_json::from_value(serde_json::from_str::<Value>(EXECUTOR_REVIEW).expect("json")["request"]["object"].clone()).expect("pod");
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert("spark-app-name".into(), app);
        labels.insert("spark-role".into(), role.into());
        let out = evaluate(&pod, &RequestContext { namespace: ns, ..RequestContext::default() }, &policy).expect("spark pod");
        for value in out.desired.metadata.labels.iter().flatten().map(|(_, v)| v) {
            if !pod.metadata.labels.as_ref().is_some_and(|l| l.values().any(|o| o == value)) {
                prop_assert!(spark_admission::policy::check_label_value(value).is_ok(), "{:?}", value);
            }
        }
    }
}
