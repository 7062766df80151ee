//! SPEC §4a's rule fields on the real Spark 4.3 fixtures. The rules are built in Rust (the
//! parser for these fields is written elsewhere), their Kubernetes objects read from JSON as a
//! policy would hold them. Every evaluation is checked against what the apiserver accepts (see
//! [`assert_valid`]), for idempotence, and for a patch that gives the desired pod.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::policy::{ContainerSelection, LocalDirs, Mode, PodCustomization, Policy, Quantity};

const EXECUTOR_REVIEW: &str = include_str!("../../tests/fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &str = include_str!("../../tests/fixtures/spark-4.3/driver-review.json");

fn fixture(review: &str, version: Option<&str>) -> (Pod, RequestContext) {
    let value: Value = serde_json::from_str(review).expect("fixture is JSON");
    let pod = serde_json::from_value(value["request"]["object"].clone()).expect("fixture pod");
    let namespace = value["request"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_owned();
    let cluster = ClusterFacts {
        kubernetes_version: version.map(|v| KubernetesVersion::parse(v).expect("version")),
        ..ClusterFacts::default()
    };
    (
        pod,
        RequestContext {
            namespace,
            cluster: Arc::new(cluster),
        },
    )
}

fn executor() -> (Pod, RequestContext) {
    fixture(EXECUTOR_REVIEW, None)
}

fn k8s<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("not a Kubernetes object: {e}"))
}

/// A rule named `name` with `mode`, its §4a fields set by `set`.
fn rule(name: &str, mode: Mode, set: impl FnOnce(&mut Rule)) -> Rule {
    let mut rule = Rule {
        name: name.to_owned(),
        mode,
        pod: PodCustomization::default(),
        ..Rule::default()
    };
    set(&mut rule);
    rule
}

fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        rules,
        quotas: Vec::new(),
        hash: crate::policy::policy_hash("test"),
    }
}

/// Evaluates, and checks what every answer must be: a pod the apiserver accepts, a patch that
/// gives the desired pod from the original, and a second pass that changes nothing.
fn run(pod: &Pod, context: &RequestContext, rules: Vec<Rule>) -> Evaluation {
    let policy = policy(rules);
    let out = evaluate(pod, context, &policy).expect("a Spark pod");
    super::tests::owned_path_agrees(pod, context, &policy, &out);
    assert_valid(&out.desired);
    let patch = crate::patch::diff(pod.clone(), out.desired.clone()).expect("diff");
    let mut applied = serde_json::to_value(pod).expect("json");
    json_patch::patch(&mut applied, &patch).expect("the patch applies");
    assert_eq!(
        applied,
        serde_json::to_value(&out.desired).expect("json"),
        "the patch gives the desired pod"
    );
    let again = evaluate(&out.desired, context, &policy).expect("still a Spark pod");
    assert_eq!(
        crate::patch::diff(out.desired.clone(), again.desired)
            .expect("diff")
            .0,
        Vec::new(),
        "second pass changed the pod"
    );
    out
}

/// The apiserver's rules the engine must never break (`ValidatePodSpec`): container names
/// unique across containers and init containers, volume names unique, every mount naming a
/// volume of the pod, no two mounts on one path in one container, and `restartPolicy` only on
/// init containers (1.34's restart rules aside, which no policy writes).
fn assert_valid(pod: &Pod) {
    let spec = pod.spec.as_ref().expect("spec");
    let mut names = HashSet::new();
    let inits = spec.init_containers.iter().flatten();
    for container in spec.containers.iter().chain(inits) {
        assert!(
            names.insert(container.name.as_str()),
            "container name {} used twice",
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
                "container {} mounts missing volume {}",
                container.name,
                mount.name
            );
            assert!(
                paths.insert(mount.mount_path.as_str()),
                "container {} mounts two volumes on {}",
                container.name,
                mount.mount_path
            );
        }
    }
    for container in &spec.containers {
        assert_eq!(
            container.restart_policy, None,
            "container {} has a restartPolicy",
            container.name
        );
    }
}

fn spec(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_ref().expect("spec")
}

fn volume<'p>(pod: &'p Pod, name: &str) -> Option<&'p Volume> {
    spec(pod).volumes.iter().flatten().find(|v| v.name == name)
}

fn named<'p>(list: &'p [Container], name: &str) -> Option<&'p Container> {
    list.iter().find(|c| c.name == name)
}

fn init_names(pod: &Pod) -> Vec<&str> {
    spec(pod)
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

fn warned(out: &Evaluation, parts: &[&str]) {
    assert!(
        out.warnings
            .iter()
            .any(|w| parts.iter().all(|part| w.contains(part))),
        "no warning with {parts:?} in {:#?}",
        out.warnings
    );
}

const SPARK: &str = "spark-kubernetes-executor";
const HADOOP: &str = "hadoop-conf";

fn hadoop_volume() -> Volume {
    k8s(json!({"name": HADOOP, "configMap": {"name": "hadoop-conf"}}))
}

// --- volumes and mounts --------------------------------------------------------------------

#[test]
fn a_volume_and_its_mount_go_into_the_spark_container_only() {
    let (mut pod, ctx) = executor();
    let sidecar: Container = k8s(json!({"name": "fluent-bit", "image": "f"}));
    pod.spec.as_mut().expect("spec").containers.push(sidecar);
    let out = run(
        &pod,
        &ctx,
        vec![rule("hadoop", Mode::Merge, |r| {
            r.pod.volumes = vec![hadoop_volume()];
            r.pod.volume_mounts = vec![k8s(
                json!({"name": HADOOP, "mountPath": "/etc/hadoop/conf", "readOnly": true}),
            )];
        })],
    );
    // With the mode the apiserver would fill in, so that a reinvocation finds it equal.
    let stored: Volume =
        k8s(json!({"name": HADOOP, "configMap": {"name": "hadoop-conf", "defaultMode": 420}}));
    assert_eq!(volume(&out.desired, HADOOP), Some(&stored));
    let containers = &spec(&out.desired).containers;
    let mounts = named(containers, SPARK).and_then(|c| c.volume_mounts.as_ref());
    assert!(
        mounts.is_some_and(|m| m.iter().any(|m| m.mount_path == "/etc/hadoop/conf")),
        "{mounts:?}"
    );
    let sidecar = named(containers, "fluent-bit").expect("sidecar");
    assert_eq!(sidecar.volume_mounts, None, "the sidecar is not selected");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn merge_keeps_a_volume_name_the_pod_uses_for_another_source_and_warns() {
    let (pod, ctx) = executor();
    let theirs: Volume = k8s(json!({"name": "spark-conf-volume-exec", "emptyDir": {}}));
    let out = run(
        &pod,
        &ctx,
        vec![rule("conf", Mode::Merge, |r| r.pod.volumes = vec![theirs])],
    );
    assert_eq!(
        volume(&out.desired, "spark-conf-volume-exec"),
        volume(&pod, "spark-conf-volume-exec")
    );
    warned(
        &out,
        &[
            "volume spark-conf-volume-exec",
            "configMap",
            "emptyDir",
            "rule conf",
            "mode merge",
        ],
    );
}

#[test]
fn a_mount_of_a_volume_the_pod_kept_against_the_policys_is_not_added() {
    // The policy means its emptyDir at /scratch; the pod's ConfigMap of that name is not it.
    let (pod, ctx) = fixture(EXECUTOR_REVIEW, Some("1.30"));
    let out = run(
        &pod,
        &ctx,
        vec![rule("conf", Mode::Merge, |r| {
            r.pod.volumes = vec![k8s(
                json!({"name": "spark-conf-volume-exec", "emptyDir": {}}),
            )];
            r.pod.volume_mounts = vec![k8s(
                json!({"name": "spark-conf-volume-exec", "mountPath": "/scratch"}),
            )];
            r.pod.sidecars = vec![k8s(json!({"name": "shipper", "image": "s:1",
                "volumeMounts": [{"name": "spark-conf-volume-exec", "mountPath": "/scratch"}]}))];
        })],
    );
    assert!(mount_at(&out.desired, "/scratch").is_empty());
    assert_eq!(spec(&out.desired).init_containers, None);
    warned(
        &out,
        &[
            "volumeMount /scratch in container spark-kubernetes-executor: not added",
            "volume spark-conf-volume-exec is the pod's own",
            "rule conf, mode merge",
        ],
    );
    warned(
        &out,
        &[
            "sidecar shipper: not added",
            "the pod's own",
            "rule conf, mode merge",
        ],
    );
}

#[test]
fn enforce_replaces_a_volume_of_the_same_name_and_its_mounts_still_name_it() {
    let (pod, ctx) = executor();
    let theirs: Volume = k8s(json!({"name": "spark-conf-volume-exec", "emptyDir": {}}));
    let out = run(
        &pod,
        &ctx,
        vec![rule("conf", Mode::Enforce, |r| {
            r.pod.volumes = vec![theirs.clone()];
        })],
    );
    assert_eq!(
        volume(&out.desired, "spark-conf-volume-exec"),
        Some(&theirs)
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

/// The fixture mounts Spark's configuration on `/opt/spark/conf`; a rule mounting another
/// volume there conflicts.
fn conf_path_rule(mode: Mode) -> Rule {
    rule("conf-path", mode, |r| {
        r.pod.volumes = vec![hadoop_volume()];
        r.pod.volume_mounts = vec![k8s(json!({"name": HADOOP, "mountPath": "/opt/spark/conf"}))];
    })
}

fn mount_at<'p>(pod: &'p Pod, path: &str) -> Vec<&'p str> {
    let containers = &spec(pod).containers;
    named(containers, SPARK)
        .and_then(|c| c.volume_mounts.as_ref())
        .into_iter()
        .flatten()
        .filter(|m| m.mount_path == path)
        .map(|m| m.name.as_str())
        .collect()
}

#[test]
fn merge_keeps_a_mount_path_the_pod_uses_for_another_volume_and_warns() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, vec![conf_path_rule(Mode::Merge)]);
    assert_eq!(
        mount_at(&out.desired, "/opt/spark/conf"),
        ["spark-conf-volume-exec"]
    );
    warned(
        &out,
        &[
            "volumeMount /opt/spark/conf in container spark-kubernetes-executor",
            "spark-conf-volume-exec",
            HADOOP,
            "rule conf-path",
            "mode merge",
        ],
    );
}

#[test]
fn enforce_replaces_a_mount_on_the_same_path_when_the_pod_stays_valid() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, vec![conf_path_rule(Mode::Enforce)]);
    assert_eq!(mount_at(&out.desired, "/opt/spark/conf"), [HADOOP]);
}

#[test]
fn enforce_keeps_a_path_a_volume_device_uses_and_warns() {
    let (mut pod, ctx) = executor();
    let spec_mut = pod.spec.as_mut().expect("spec");
    spec_mut.volumes.get_or_insert_with(Vec::new).push(k8s(
        json!({"name": "raw", "persistentVolumeClaim": {"claimName": "raw"}}),
    ));
    spec_mut.containers[0].volume_devices =
        Some(vec![k8s(json!({"name": "raw", "devicePath": "/dev/data"}))]);
    let out = run(
        &pod,
        &ctx,
        vec![rule("dev", Mode::Enforce, |r| {
            r.pod.volumes = vec![hadoop_volume()];
            r.pod.volume_mounts = vec![k8s(json!({"name": HADOOP, "mountPath": "/dev/data"}))];
        })],
    );
    assert!(mount_at(&out.desired, "/dev/data").is_empty());
    warned(
        &out,
        &[
            "volumeMount /dev/data",
            "volumeDevice",
            "rule dev",
            "mode enforce",
        ],
    );
}

#[test]
fn a_mount_of_a_volume_the_pod_lacks_is_not_added() {
    // The parser refuses this policy; the engine still never makes the pod invalid.
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        vec![rule("orphan", Mode::Enforce, |r| {
            r.pod.volume_mounts = vec![k8s(json!({"name": "nowhere", "mountPath": "/x"}))];
        })],
    );
    assert!(mount_at(&out.desired, "/x").is_empty());
    warned(
        &out,
        &["volumeMount /x", "no volume nowhere", "rule orphan"],
    );
}

#[test]
fn the_last_rule_mounting_a_path_decides_it() {
    let (pod, ctx) = executor();
    let mount = |volume: &str| {
        k8s::<k8s_openapi::api::core::v1::VolumeMount>(
            json!({"name": volume, "mountPath": "/etc/x"}),
        )
    };
    let out = run(
        &pod,
        &ctx,
        vec![
            rule("first", Mode::Merge, |r| {
                r.pod.volumes = vec![hadoop_volume()];
                r.pod.volume_mounts = vec![mount(HADOOP)];
            }),
            rule("second", Mode::Merge, |r| {
                r.pod.volumes = vec![k8s(json!({"name": "other", "emptyDir": {}}))];
                r.pod.volume_mounts = vec![mount("other")];
            }),
        ],
    );
    assert_eq!(mount_at(&out.desired, "/etc/x"), ["other"]);
}

// --- localDirs -----------------------------------------------------------------------------

fn size(text: &str) -> Quantity {
    Quantity::parse(text).expect("quantity")
}

fn local_dir(pod: &Pod) -> &Volume {
    volume(pod, "spark-local-dir-1").expect("the fixture's local dir")
}

#[test]
fn local_dirs_set_the_size_limit_and_medium_of_sparks_empty_dir() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        vec![rule("scratch", Mode::Merge, |r| {
            r.pod.local_dirs = Some(LocalDirs::EmptyDir {
                size_limit: Some(size("200Gi")),
                medium: Some("Memory".into()),
            });
        })],
    );
    let expected: Volume = k8s(
        json!({"name": "spark-local-dir-1", "emptyDir": {"sizeLimit": "200Gi", "medium": "Memory"}}),
    );
    assert_eq!(local_dir(&out.desired), &expected);
    // Other volumes are not Spark's scratch space.
    assert_eq!(
        volume(&out.desired, "spark-conf-volume-exec"),
        volume(&pod, "spark-conf-volume-exec")
    );
}

#[test]
fn local_dirs_merge_keeps_a_size_limit_already_set_and_enforce_replaces_it() {
    let (mut pod, ctx) = executor();
    let spec_mut = pod.spec.as_mut().expect("spec");
    for v in spec_mut.volumes.iter_mut().flatten() {
        if v.name == "spark-local-dir-1" {
            *v = k8s(json!({"name": "spark-local-dir-1", "emptyDir": {"sizeLimit": "10Gi"}}));
        }
    }
    let scratch = |mode| {
        rule("scratch", mode, |r| {
            r.pod.local_dirs = Some(LocalDirs::EmptyDir {
                size_limit: Some(size("200Gi")),
                medium: None,
            });
        })
    };
    let out = run(&pod, &ctx, vec![scratch(Mode::Merge)]);
    assert_eq!(local_dir(&out.desired), local_dir(&pod));
    warned(
        &out,
        &[
            "localDirs: volume spark-local-dir-1 emptyDir.sizeLimit",
            "\"10Gi\"",
            "\"200Gi\"",
            "rule scratch",
            "mode merge",
        ],
    );
    let out = run(&pod, &ctx, vec![scratch(Mode::Enforce)]);
    let limit = local_dir(&out.desired)
        .empty_dir
        .as_ref()
        .and_then(|e| e.size_limit.as_ref());
    assert_eq!(limit.map(|q| q.0.as_str()), Some("200Gi"));
}

#[test]
fn local_dirs_ephemeral_replaces_the_empty_dir_by_a_claim_template() {
    let (pod, ctx) = executor();
    let out = run(
        &pod,
        &ctx,
        vec![rule("scratch", Mode::Merge, |r| {
            r.pod.local_dirs = Some(LocalDirs::Ephemeral {
                storage_class_name: Some("gp3".into()),
                size: size("200Gi"),
            });
        })],
    );
    let expected: Volume = k8s(json!({"name": "spark-local-dir-1", "ephemeral": {
    "volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "200Gi"}},
        "storageClassName": "gp3",
        "volumeMode": "Filesystem",
    }}}}));
    assert_eq!(local_dir(&out.desired), &expected);
}

#[test]
fn local_dirs_leave_sparks_persistent_volume_claims_alone() {
    let (mut pod, ctx) = executor();
    let claim: Volume = k8s(
        json!({"name": "spark-local-dir-1", "persistentVolumeClaim": {"claimName": "exec-1-pvc-0"}}),
    );
    for v in pod
        .spec
        .as_mut()
        .expect("spec")
        .volumes
        .iter_mut()
        .flatten()
    {
        if v.name == "spark-local-dir-1" {
            *v = claim.clone();
        }
    }
    for local_dirs in [
        LocalDirs::Ephemeral {
            storage_class_name: None,
            size: size("1Ti"),
        },
        LocalDirs::EmptyDir {
            size_limit: Some(size("1Ti")),
            medium: None,
        },
    ] {
        let out = run(
            &pod,
            &ctx,
            vec![rule("scratch", Mode::Enforce, |r| {
                r.pod.local_dirs = Some(local_dirs)
            })],
        );
        assert_eq!(local_dir(&out.desired), &claim);
    }
}

#[test]
fn a_rule_volume_named_like_a_local_dir_is_compared_as_local_dirs_leave_it() {
    let (pod, ctx) = executor();
    let rules = || {
        vec![rule("scratch", Mode::Merge, |r| {
            r.pod.volumes = vec![k8s(json!({"name": "spark-local-dir-9", "emptyDir": {}}))];
            r.pod.local_dirs = Some(LocalDirs::Ephemeral {
                storage_class_name: None,
                size: size("50Gi"),
            });
        })]
    };
    let out = run(&pod, &ctx, rules());
    let added = volume(&out.desired, "spark-local-dir-9").expect("added");
    assert!(added.ephemeral.is_some() && added.empty_dir.is_none());
    let again = evaluate(&out.desired, &ctx, &policy(rules())).expect("a Spark pod");
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
}

// --- init containers and sidecars -----------------------------------------------------------

fn fetch_certs() -> Container {
    k8s(json!({"name": "fetch-certs", "image": "registry/certs:1", "command": ["/fetch"]}))
}

/// [`fetch_certs`] as the apiserver stores it: its defaults filled in.
fn fetch_certs_stored() -> Container {
    k8s(
        json!({"name": "fetch-certs", "image": "registry/certs:1", "command": ["/fetch"],
        "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"}),
    )
}

/// [`fluent_bit`] as the apiserver stores it.
fn fluent_bit_stored() -> Container {
    k8s(json!({"name": "fluent-bit", "image": "fluent/fluent-bit:3",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"}))
}

fn fluent_bit() -> Container {
    k8s(json!({"name": "fluent-bit", "image": "fluent/fluent-bit:3",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}))
}

fn with_own_init(mut pod: Pod) -> Pod {
    let own: Container = k8s(json!({"name": "own-init", "image": "busybox"}));
    pod.spec
        .as_mut()
        .expect("spec")
        .init_containers
        .get_or_insert_with(Vec::new)
        .push(own);
    pod
}

#[test]
fn init_containers_go_before_the_pods_own_in_policy_order() {
    let (pod, ctx) = executor();
    let pod = with_own_init(pod);
    let second: Container = k8s(json!({"name": "warm-cache", "image": "w"}));
    let out = run(
        &pod,
        &ctx,
        vec![rule("init", Mode::Merge, |r| {
            r.pod.init_containers = vec![fetch_certs(), second];
        })],
    );
    assert_eq!(
        init_names(&out.desired),
        ["fetch-certs", "warm-cache", "own-init"]
    );
    let inits = spec(&out.desired)
        .init_containers
        .as_deref()
        .unwrap_or_default();
    assert_eq!(named(inits, "fetch-certs"), Some(&fetch_certs_stored()));
}

#[test]
fn merge_keeps_a_differing_init_container_of_that_name_and_enforce_replaces_it() {
    let (pod, ctx) = executor();
    let mut pod = with_own_init(pod);
    let ours: Container = k8s(json!({"name": "own-init", "image": "policy-image:2"}));
    let out = run(
        &pod,
        &ctx,
        vec![rule("init", Mode::Merge, |r| {
            r.pod.init_containers = vec![ours.clone()];
        })],
    );
    assert_eq!(init_names(&out.desired), ["own-init"]);
    assert_eq!(
        spec(&out.desired).init_containers,
        spec(&pod).init_containers
    );
    warned(
        &out,
        &[
            "initContainer own-init",
            "busybox",
            "policy-image",
            "rule init",
            "mode merge",
        ],
    );
    let out = run(
        &pod,
        &ctx,
        vec![rule("init", Mode::Enforce, |r| {
            r.pod.init_containers = vec![ours.clone()];
        })],
    );
    let stored: Container = k8s(json!({"name": "own-init", "image": "policy-image:2",
        "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"}));
    assert_eq!(spec(&out.desired).init_containers, Some(vec![stored]));
    // An init container with a name a main container has is never added.
    pod.spec.as_mut().expect("spec").init_containers = None;
    let clash: Container = k8s(json!({"name": SPARK, "image": "x"}));
    let out = run(
        &pod,
        &ctx,
        vec![rule("init", Mode::Enforce, |r| {
            r.pod.init_containers = vec![clash]
        })],
    );
    assert_eq!(spec(&out.desired).init_containers, None);
    warned(
        &out,
        &[
            "initContainer spark-kubernetes-executor: not added",
            "spec.containers",
            "rule init",
        ],
    );
}

#[test]
fn on_1_29_sidecars_are_native_and_start_before_every_init_container() {
    let (pod, ctx) = fixture(DRIVER_REVIEW, Some("v1.29.3"));
    let pod = with_own_init(pod);
    let out = run(
        &pod,
        &ctx,
        vec![rule("logs", Mode::Merge, |r| {
            r.pod.init_containers = vec![fetch_certs()];
            r.pod.sidecars = vec![fluent_bit()];
        })],
    );
    assert_eq!(
        init_names(&out.desired),
        ["fluent-bit", "fetch-certs", "own-init"]
    );
    let inits = spec(&out.desired)
        .init_containers
        .as_deref()
        .unwrap_or_default();
    let sidecar = named(inits, "fluent-bit").expect("native sidecar");
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        named(inits, "fetch-certs").and_then(|c| c.restart_policy.as_deref()),
        None
    );
    assert!(named(&spec(&out.desired).containers, "fluent-bit").is_none());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn before_1_29_or_unknown_sidecars_are_appended_and_a_driver_is_warned() {
    for version in [Some("1.28"), None] {
        let (pod, ctx) = fixture(DRIVER_REVIEW, version);
        let out = run(
            &pod,
            &ctx,
            vec![rule("logs", Mode::Merge, |r| {
                r.pod.sidecars = vec![fluent_bit()]
            })],
        );
        let containers = &spec(&out.desired).containers;
        assert_eq!(containers.last(), Some(&fluent_bit_stored()), "{version:?}");
        assert_eq!(spec(&out.desired).init_containers, None, "{version:?}");
        warned(
            &out,
            &[
                "sidecar fluent-bit",
                "spec.containers",
                "stays Running after Spark exits",
                "rule logs",
            ],
        );
        // An executor ends when Spark stops it: no warning.
        let (pod, ctx) = fixture(EXECUTOR_REVIEW, version);
        let out = run(
            &pod,
            &ctx,
            vec![rule("logs", Mode::Merge, |r| {
                r.pod.sidecars = vec![fluent_bit()]
            })],
        );
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }
}

#[test]
fn a_sidecar_that_would_pass_for_the_spark_container_is_not_added() {
    let (pod, ctx) = executor();
    let decoy: Container = k8s(json!({"name": "decoy", "image": "x", "args": ["executor"]}));
    let out = run(
        &pod,
        &ctx,
        vec![rule("logs", Mode::Enforce, |r| {
            r.pod.sidecars = vec![decoy]
        })],
    );
    assert_eq!(spec(&out.desired).containers, spec(&pod).containers);
    assert!(out.denial.is_none());
    warned(
        &out,
        &[
            "sidecar decoy: not added",
            "Spark executor container",
            "rule logs",
        ],
    );
}

#[test]
fn containers_all_reaches_the_sidecars_the_policy_adds_native_or_appended_with_env_too() {
    for version in [Some("1.30"), None] {
        let (pod, ctx) = fixture(EXECUTOR_REVIEW, version);
        let rules = || {
            vec![
                rule("logs", Mode::Merge, |r| r.pod.sidecars = vec![fluent_bit()]),
                rule("all", Mode::Merge, |r| {
                    r.containers = ContainerSelection::All;
                    r.env = vec![k8s(json!({"name": "DEPLOY_ENV", "value": "prod"}))];
                    r.pod.env_from = vec![k8s(json!({"secretRef": {"name": "team-s3"}}))];
                    r.pod.container_security_context =
                        Some(k8s(json!({"allowPrivilegeEscalation": false})));
                }),
            ]
        };
        let out = run(&pod, &ctx, rules());
        let spec = spec(&out.desired);
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        let sidecar = named(&spec.containers, "fluent-bit")
            .or_else(|| named(inits, "fluent-bit"))
            .expect("sidecar");
        for container in [sidecar, named(&spec.containers, SPARK).expect("spark")] {
            assert_eq!(
                container.env_from.as_ref().map(Vec::len),
                Some(1),
                "{} {version:?}",
                container.name
            );
            let escalation = container
                .security_context
                .as_ref()
                .and_then(|s| s.allow_privilege_escalation);
            assert_eq!(escalation, Some(false), "{} {version:?}", container.name);
            let deploy: Vec<_> = container
                .env
                .iter()
                .flatten()
                .filter(|e| e.name == "DEPLOY_ENV")
                .collect();
            assert_eq!(deploy.len(), 1, "{} {version:?}", container.name);
        }
        // Reinvoked, the sidecar holds what the other fields added: nothing to warn about.
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let again = evaluate(&out.desired, &ctx, &policy(rules())).expect("a Spark pod");
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    }
}

/// On reinvocation the apiserver has defaulted what the webhook added; written here by hand
/// from its defaulting (`pkg/apis/core/v1/defaults.go`), the second pass must patch nothing.
#[test]
fn a_reinvoked_pod_defaulted_by_the_apiserver_gets_no_patch() {
    let (pod, ctx) = fixture(EXECUTOR_REVIEW, Some("1.30"));
    let rules = || {
        vec![rule("all", Mode::Enforce, |r| {
            r.pod.volumes = vec![hadoop_volume()];
            r.pod.sidecars = vec![k8s(json!({"name": "proxy", "image": "envoy",
                "ports": [{"containerPort": 15001}], "resources": {"limits": {"cpu": "0.5"}}}))];
            r.pod.init_containers = vec![fetch_certs()];
        })]
    };
    let first = run(&pod, &ctx, rules());
    let mut stored = serde_json::to_value(&first.desired).expect("json");
    let spec_json = &mut stored["spec"];
    for volume in spec_json["volumes"].as_array_mut().expect("volumes") {
        if volume["name"] == json!(HADOOP) {
            volume["configMap"]["defaultMode"] = json!(420);
        }
    }
    for init in spec_json["initContainers"].as_array_mut().expect("inits") {
        init["terminationMessagePath"] = json!("/dev/termination-log");
        init["terminationMessagePolicy"] = json!("File");
        let latest = init["image"].as_str().is_some_and(|i| !i.contains(':'));
        init["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
        if init["name"] == json!("proxy") {
            init["ports"][0]["protocol"] = json!("TCP");
            init["resources"] = json!({"limits": {"cpu": "500m"}, "requests": {"cpu": "500m"}});
        }
    }
    let stored: Pod = serde_json::from_value(stored).expect("pod");
    let again = evaluate(&stored, &ctx, &policy(rules())).expect("a Spark pod");
    assert_eq!(
        crate::patch::diff(stored, again.desired).expect("diff").0,
        Vec::new()
    );
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
}

/// SPEC §4a: injected containers count in quotas as stored. The desired pod is what quotas
/// charge; a sidecar adds its requests whether native (beside the main containers) or
/// appended, and an init container that runs to completion adds nothing when the main
/// containers ask for more.
#[test]
fn the_containers_the_policy_adds_are_charged_to_quotas() {
    use crate::quota::Charge;
    for version in [Some("1.29"), None] {
        let (pod, ctx) = fixture(EXECUTOR_REVIEW, version);
        let out = run(
            &pod,
            &ctx,
            vec![rule("logs", Mode::Merge, |r| {
                r.pod.sidecars = vec![fluent_bit()];
                r.pod.init_containers = vec![fetch_certs()];
            })],
        );
        let (before, after) = (Charge::of_pod(&pod), Charge::of_pod(&out.desired));
        assert_eq!(after.cpu - before.cpu, 50_000_000, "50m, {version:?}");
        assert_eq!(
            after.memory - before.memory,
            64 * (1 << 20) * 1_000_000_000,
            "64Mi, {version:?}"
        );
    }
}

/// `containers: all` resource defaults reach a sidecar the policy adds, native or appended, so
/// the pod is charged the same whichever way the cluster runs it.
#[test]
fn resource_defaults_reach_the_policys_sidecar_native_or_appended_alike() {
    use crate::policy::{ResourceAmounts, ResourcePolicy};
    use crate::quota::Charge;
    let rules = || {
        vec![
            rule("logs", Mode::Merge, |r| r.pod.sidecars = vec![fluent_bit()]),
            rule("limits", Mode::Merge, |r| {
                r.containers = ContainerSelection::All;
                r.executor_resources = Some(ResourcePolicy {
                    default: ResourceAmounts {
                        requests: Default::default(),
                        limits: [("cpu".to_owned(), size("1"))].into(),
                    },
                    ..ResourcePolicy::default()
                });
            }),
        ]
    };
    let mut charges = Vec::new();
    for version in [Some("1.30"), None] {
        let (pod, ctx) = fixture(EXECUTOR_REVIEW, version);
        let out = run(&pod, &ctx, rules());
        let spec = spec(&out.desired);
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        let sidecar = named(&spec.containers, "fluent-bit")
            .or_else(|| named(inits, "fluent-bit"))
            .expect("sidecar");
        let limit = sidecar
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("cpu"))
            .map(|q| q.0.as_str());
        assert_eq!(limit, Some("1"), "{version:?}");
        charges.push(Charge::of_pod(&out.desired));
    }
    assert_eq!(charges[0], charges[1]);
}

// --- envFrom, security contexts ------------------------------------------------------------

#[test]
fn env_from_is_added_once() {
    let (mut pod, ctx) = executor();
    let s3: k8s_openapi::api::core::v1::EnvFromSource =
        k8s(json!({"secretRef": {"name": "team-s3"}}));
    pod.spec.as_mut().expect("spec").containers[0].env_from = Some(vec![s3.clone()]);
    let other: k8s_openapi::api::core::v1::EnvFromSource =
        k8s(json!({"configMapRef": {"name": "defaults"}, "prefix": "D_"}));
    let out = run(
        &pod,
        &ctx,
        vec![
            rule("a", Mode::Merge, |r| {
                r.pod.env_from = vec![s3.clone(), other.clone()]
            }),
            rule("b", Mode::Enforce, |r| r.pod.env_from = vec![other.clone()]),
        ],
    );
    assert_eq!(
        spec(&out.desired).containers[0].env_from,
        Some(vec![s3, other])
    );
}

#[test]
fn pod_security_context_merges_field_by_field() {
    let (mut pod, ctx) = executor();
    pod.spec.as_mut().expect("spec").security_context = Some(k8s(json!({"fsGroup": 100})));
    let context = || {
        Some(k8s(
            json!({"runAsNonRoot": true, "fsGroup": 185, "seccompProfile": {"type": "RuntimeDefault"}}),
        ))
    };
    let out = run(
        &pod,
        &ctx,
        vec![rule("psa", Mode::Merge, |r| {
            r.pod.security_context = context()
        })],
    );
    let expected: k8s_openapi::api::core::v1::PodSecurityContext = k8s(
        json!({"runAsNonRoot": true, "fsGroup": 100, "seccompProfile": {"type": "RuntimeDefault"}}),
    );
    assert_eq!(spec(&out.desired).security_context, Some(expected));
    warned(
        &out,
        &[
            "securityContext.fsGroup",
            "100",
            "185",
            "rule psa",
            "mode merge",
        ],
    );
    let out = run(
        &pod,
        &ctx,
        vec![rule("psa", Mode::Enforce, |r| {
            r.pod.security_context = context()
        })],
    );
    assert_eq!(spec(&out.desired).security_context, context());
}

#[test]
fn container_security_context_merges_field_by_field_in_the_selected_containers() {
    let (mut pod, ctx) = executor();
    pod.spec.as_mut().expect("spec").containers[0].security_context = Some(k8s(
        json!({"allowPrivilegeEscalation": true, "runAsUser": 185}),
    ));
    let out = run(
        &pod,
        &ctx,
        vec![rule("restricted", Mode::Merge, |r| {
            r.pod.container_security_context = Some(k8s(
                json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
            ));
        })],
    );
    let expected: k8s_openapi::api::core::v1::SecurityContext = k8s(
        json!({"allowPrivilegeEscalation": true, "runAsUser": 185, "capabilities": {"drop": ["ALL"]}}),
    );
    assert_eq!(
        spec(&out.desired).containers[0].security_context,
        Some(expected)
    );
    warned(
        &out,
        &[
            "containerSecurityContext.allowPrivilegeEscalation of container spark-kubernetes-executor",
            "true",
            "false",
            "rule restricted",
            "mode merge",
        ],
    );
}

// --- placement -----------------------------------------------------------------------------

fn spread_rule() -> Rule {
    rule("spread", Mode::Merge, |r| {
        r.pod.topology_spread_constraints = vec![k8s(json!({
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"spark-app-selector": "{app_id}"},
                "matchExpressions": [{"key": "spark-role", "operator": "In", "values": ["{role}"]}]}}))];
    })
}

#[test]
fn topology_spread_templates_expand_per_pod_and_an_equal_constraint_is_not_added_again() {
    let (pod, ctx) = executor();
    let app_id = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("spark-app-selector"))
        .cloned()
        .expect("the fixture has an app id");
    let out = run(&pod, &ctx, vec![spread_rule()]);
    let expected: k8s_openapi::api::core::v1::TopologySpreadConstraint = k8s(json!({
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"spark-app-selector": app_id},
            "matchExpressions": [{"key": "spark-role", "operator": "In", "values": ["executor"]}]}}));
    assert_eq!(
        spec(&out.desired).topology_spread_constraints,
        Some(vec![expected.clone()])
    );
    // A pod that already carries it, as Spark's pod template may, keeps one.
    let mut pod = pod;
    pod.spec.as_mut().expect("spec").topology_spread_constraints = Some(vec![expected.clone()]);
    let out = run(&pod, &ctx, vec![spread_rule()]);
    assert_eq!(
        spec(&out.desired).topology_spread_constraints,
        Some(vec![expected])
    );
}

#[test]
fn a_selector_template_the_pod_has_no_value_for_leaves_the_term_out_and_warns() {
    let (mut pod, ctx) = executor();
    pod.metadata
        .labels
        .as_mut()
        .expect("labels")
        .remove("spark-app-selector");
    let out = run(&pod, &ctx, vec![spread_rule()]);
    assert_eq!(spec(&out.desired).topology_spread_constraints, None);
    warned(
        &out,
        &[
            "topologySpreadConstraints[0] not added",
            "{app_id}",
            "rule spread",
        ],
    );
}

#[test]
fn pod_anti_affinity_terms_expand_sanitise_and_are_appended_once() {
    let (mut pod, ctx) = executor();
    pod.metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("spark-app-name".into(), "Nightly ETL".into());
    let term = json!({"topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {"app": "{app_name}"}}});
    let anti = || {
        Some(k8s(json!({
            "requiredDuringSchedulingIgnoredDuringExecution": [term.clone(), term.clone()],
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term.clone()}],
        })))
    };
    let out = run(
        &pod,
        &ctx,
        vec![
            rule("apart", Mode::Merge, |r| r.pod.pod_anti_affinity = anti()),
            rule("again", Mode::Enforce, |r| r.pod.pod_anti_affinity = anti()),
        ],
    );
    let expanded = json!({"topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {"app": "Nightly-ETL"}}});
    let expected: k8s_openapi::api::core::v1::PodAntiAffinity = k8s(json!({
        "requiredDuringSchedulingIgnoredDuringExecution": [expanded.clone()],
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": expanded}],
    }));
    let affinity = spec(&out.desired).affinity.as_ref().expect("affinity");
    assert_eq!(affinity.pod_anti_affinity, Some(expected));
    // The fixture's node affinity is untouched.
    assert_eq!(
        affinity.node_affinity,
        spec(&pod)
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.clone())
    );
    warned(
        &out,
        &["label selector app", "\"Nightly ETL\"", "\"Nightly-ETL\""],
    );
}

#[test]
fn pod_affinity_terms_are_appended_after_the_pods_own() {
    let (mut pod, ctx) = executor();
    let own = json!({"topologyKey": "zone", "labelSelector": {"matchLabels": {"a": "b"}}});
    pod.spec.as_mut().expect("spec").affinity = Some(k8s(json!({"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [own.clone()]}})));
    let ours = json!({"topologyKey": "zone", "labelSelector": {"matchLabels": {"spark-app-selector": "{app_id}", "spark-role": "driver"}}});
    let out = run(
        &pod,
        &ctx,
        vec![rule("near-driver", Mode::Merge, |r| {
            r.pod.pod_affinity = Some(k8s(json!({
                "requiredDuringSchedulingIgnoredDuringExecution": [ours]})));
        })],
    );
    let terms = spec(&out.desired)
        .affinity
        .as_ref()
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .clone()
        })
        .expect("terms");
    assert_eq!(terms.len(), 2);
    assert_eq!(terms[0], k8s(own));
    let labels = terms[1]
        .label_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .expect("labels");
    assert_ne!(
        labels.get("spark-app-selector").map(String::as_str),
        Some("{app_id}")
    );
    assert!(labels["spark-app-selector"].starts_with("spark-"));
}

// --- pod-wide values -----------------------------------------------------------------------

#[test]
fn termination_grace_replaces_the_apiservers_default_and_merge_keeps_the_pods_own() {
    let (mut pod, ctx) = executor();
    assert_eq!(spec(&pod).termination_grace_period_seconds, Some(30));
    let grace = |mode| {
        rule("grace", mode, |r| {
            r.pod.termination_grace_period_seconds = Some(120)
        })
    };
    let out = run(&pod, &ctx, vec![grace(Mode::Merge)]);
    assert_eq!(
        spec(&out.desired).termination_grace_period_seconds,
        Some(120)
    );
    pod.spec
        .as_mut()
        .expect("spec")
        .termination_grace_period_seconds = Some(600);
    let out = run(&pod, &ctx, vec![grace(Mode::Merge)]);
    assert_eq!(
        spec(&out.desired).termination_grace_period_seconds,
        Some(600)
    );
    warned(
        &out,
        &[
            "terminationGracePeriodSeconds",
            "600",
            "120",
            "rule grace",
            "mode merge",
        ],
    );
    let out = run(&pod, &ctx, vec![grace(Mode::Enforce)]);
    assert_eq!(
        spec(&out.desired).termination_grace_period_seconds,
        Some(120)
    );
}

#[test]
fn a_changed_runtime_class_drops_the_overhead_the_plugin_wrote_for_the_old_one() {
    let (mut pod, ctx) = executor();
    let spec_mut = pod.spec.as_mut().expect("spec");
    spec_mut.runtime_class_name = Some("runc".into());
    spec_mut.overhead = Some(k8s(json!({"cpu": "250m"})));
    let out = run(
        &pod,
        &ctx,
        vec![rule("sandbox", Mode::Enforce, |r| {
            r.pod.runtime_class_name = Some("gvisor".into());
            r.pod.automount_service_account_token = Some(false);
        })],
    );
    let desired = spec(&out.desired);
    assert_eq!(desired.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(desired.overhead, None);
    assert_eq!(desired.automount_service_account_token, Some(false));
    let out = run(
        &pod,
        &ctx,
        vec![rule("sandbox", Mode::Merge, |r| {
            r.pod.runtime_class_name = Some("gvisor".into())
        })],
    );
    assert_eq!(
        spec(&out.desired).runtime_class_name.as_deref(),
        Some("runc")
    );
    assert!(spec(&out.desired).overhead.is_some());
    warned(
        &out,
        &["runtimeClassName", "\"runc\"", "\"gvisor\"", "mode merge"],
    );
}

#[test]
fn host_aliases_by_ip_and_image_pull_secrets_once() {
    let (mut pod, ctx) = executor();
    let spec_mut = pod.spec.as_mut().expect("spec");
    spec_mut.host_aliases = Some(vec![k8s(json!({"ip": "10.0.0.1", "hostnames": ["own"]}))]);
    spec_mut.image_pull_secrets = Some(vec![k8s(json!({"name": "registry-creds"}))]);
    let rules = |mode| {
        vec![rule("net", mode, |r| {
            r.pod.host_aliases = vec![
                k8s(json!({"ip": "10.0.0.1", "hostnames": ["policy"]})),
                k8s(json!({"ip": "10.0.0.2", "hostnames": ["metadata"]})),
            ];
            r.pod.image_pull_secrets = vec![
                k8s(json!({"name": "registry-creds"})),
                k8s(json!({"name": "mirror"})),
            ];
        })]
    };
    let out = run(&pod, &ctx, rules(Mode::Merge));
    let desired = spec(&out.desired);
    let hosts: Vec<(&str, Vec<String>)> = desired
        .host_aliases
        .iter()
        .flatten()
        .map(|a| (a.ip.as_str(), a.hostnames.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("10.0.0.1", vec!["own".to_owned()]),
            ("10.0.0.2", vec!["metadata".to_owned()])
        ]
    );
    let secrets: Vec<&str> = desired
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(secrets, ["registry-creds", "mirror"]);
    warned(
        &out,
        &[
            "hostAliases 10.0.0.1",
            "own",
            "policy",
            "rule net",
            "mode merge",
        ],
    );
    let out = run(&pod, &ctx, rules(Mode::Enforce));
    let first = &spec(&out.desired).host_aliases.as_ref().expect("aliases")[0];
    assert_eq!(first.hostnames, Some(vec!["policy".to_owned()]));
}

#[test]
fn dns_config_merges_field_by_field() {
    let (mut pod, ctx) = executor();
    pod.spec.as_mut().expect("spec").dns_config = Some(k8s(json!({"searches": ["own.svc"]})));
    let out = run(
        &pod,
        &ctx,
        vec![rule("dns", Mode::Merge, |r| {
            r.pod.dns_config = Some(k8s(
                json!({"searches": ["policy.svc"], "options": [{"name": "ndots", "value": "2"}]}),
            ));
        })],
    );
    let expected: k8s_openapi::api::core::v1::PodDNSConfig =
        k8s(json!({"searches": ["own.svc"], "options": [{"name": "ndots", "value": "2"}]}));
    assert_eq!(spec(&out.desired).dns_config, Some(expected));
    warned(
        &out,
        &["dnsConfig.searches", "own.svc", "policy.svc", "rule dns"],
    );
}

#[test]
fn a_rule_without_these_fields_changes_nothing_of_them() {
    let (pod, ctx) = executor();
    let out = run(&pod, &ctx, vec![rule("none", Mode::Enforce, |_| {})]);
    // Only the two annotations, which are metadata: the spec is the pod's.
    assert_eq!(out.desired.spec, pod.spec);
}
