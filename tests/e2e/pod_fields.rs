//! SPEC §4a end to end: the pod fields a platform team sets (volumes, mounts, init containers,
//! sidecars, security contexts, pull secrets, topology spread, pod affinity, local dirs and the
//! plain spec fields) on the pods of a real spark-submit, client and cluster mode, as the test
//! apiserver (1.20) stores them; and every example policy's answers accepted by it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use super::{
    DRIVER_REVIEW, EXECUTOR_REVIEW, Registration, SparkSubmit, TestNamespace, Webhook, client,
    create_fixture, labels, spark_container,
};

/// Every field of §4a that a 1.20 apiserver stores, on a realistic platform: hadoop conf, a
/// log shipper with a shared log volume, a restricted security context, executors kept in their
/// driver's zone, and bigger, bounded scratch space.
const POD_POLICY: &str = r#"
rules:
  - name: platform-pods
    volumes:
      - {name: hadoop-conf, configMap: {name: hadoop-conf}}
      - {name: spark-logs, emptyDir: {}}
    volumeMounts:
      - {name: hadoop-conf, mountPath: /etc/hadoop/conf, readOnly: true}
      - {name: spark-logs, mountPath: /var/log/spark}
    envFrom:
      - secretRef: {name: team-s3}
    initContainers:
      - {name: fetch-certs, image: "busybox:1.36", command: ["/bin/true"]}
    sidecars:
      - name: fluent-bit
        image: "fluent/fluent-bit:3.0"
        resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 64Mi}}
        volumeMounts: [{name: spark-logs, mountPath: /var/log/spark, readOnly: true}]
    securityContext:
      runAsNonRoot: true
      runAsUser: 185
      fsGroup: 185
      seccompProfile: {type: RuntimeDefault}
    containerSecurityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
    imagePullSecrets: [{name: registry-creds}]
    terminationGracePeriodSeconds: 120
    runtimeClassName: e2e-runc
    dnsConfig:
      options: [{name: ndots, value: "2"}]
    hostAliases:
      - {ip: 10.0.0.10, hostnames: [metastore.internal]}
  - name: executors-near-their-driver
    match: {roles: [executor]}
    automountServiceAccountToken: false
    topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
        labelSelector: {matchLabels: {spark-app-selector: "{app_id}"}}
    podAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: topology.kubernetes.io/zone
            labelSelector: {matchLabels: {spark-app-selector: "{app_id}", spark-role: driver}}
    localDirs:
      sizeLimit: 20Gi
"#;

/// A RuntimeClass named as the policy names one: the apiserver's RuntimeClass plugin refuses a
/// pod whose class does not exist.
async fn ensure_runtime_class(client: &kube::Client, name: &str) {
    use k8s_openapi::api::node::v1::RuntimeClass;
    let classes: Api<RuntimeClass> = Api::all(client.clone());
    let class: RuntimeClass = serde_json::from_value(json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": name}, "handler": "runc",
    }))
    .unwrap();
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("create RuntimeClass {name}: {error}"),
    }
}

fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().unwrap()
}

fn count<T>(items: &Option<Vec<T>>, what: impl Fn(&T) -> bool) -> usize {
    items.iter().flatten().filter(|item| what(item)).count()
}

fn mount_of<'c>(container: &'c Container, path: &str) -> Option<&'c str> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
        .map(|m| m.name.as_str())
}

/// Checks the fields every Spark pod gets from `platform-pods`, each exactly once (the
/// registration reinvokes the webhook, which must add nothing the second time).
fn assert_platform_fields(pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = spec(pod);
    let volume = |volume: &str| {
        spec.volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .unwrap_or_else(|| panic!("{name}: no volume {volume}"))
    };
    assert_eq!(
        volume("hadoop-conf")
            .config_map
            .as_ref()
            .map(|c| c.name.as_str()),
        Some("hadoop-conf"),
        "{name}"
    );
    assert!(volume("spark-logs").empty_dir.is_some(), "{name}");
    assert_eq!(
        count(&spec.volumes, |v| v.name == "hadoop-conf"),
        1,
        "{name}"
    );
    let spark = spark_container(pod);
    assert_eq!(
        mount_of(spark, "/etc/hadoop/conf"),
        Some("hadoop-conf"),
        "{name}"
    );
    assert_eq!(
        mount_of(spark, "/var/log/spark"),
        Some("spark-logs"),
        "{name}"
    );
    assert_eq!(
        count(&spark.env_from, |e| e
            .secret_ref
            .as_ref()
            .is_some_and(|s| s.name == "team-s3")),
        1,
        "{name}"
    );
    let security = spark
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()]),
        "{name}"
    );
    // Init containers go before the pod's own (Spark's have none).
    let init = spec.init_containers.as_deref().unwrap_or_default();
    assert_eq!(
        init.first().map(|c| c.name.as_str()),
        Some("fetch-certs"),
        "{name}"
    );
    assert_eq!(count(&spec.init_containers, |c| c.name == "fetch-certs"), 1);
    // 1.20 has no native sidecars: the sidecar is one more container (SPEC §4a), never an init
    // container that would never exit.
    assert!(
        init.iter().all(|c| c.restart_policy.is_none()),
        "{name}: {init:?}"
    );
    let sidecars: Vec<&Container> = spec
        .containers
        .iter()
        .filter(|c| c.name == "fluent-bit")
        .collect();
    assert_eq!(sidecars.len(), 1, "{name}: one fluent-bit container");
    assert_eq!(mount_of(sidecars[0], "/var/log/spark"), Some("spark-logs"));
    let pod_security = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true), "{name}");
    assert_eq!(pod_security.run_as_user, Some(185), "{name}");
    assert_eq!(pod_security.fs_group, Some(185), "{name}");
    assert_eq!(
        pod_security
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}"
    );
    assert_eq!(
        count(&spec.image_pull_secrets, |s| s.name == "registry-creds"),
        1,
        "{name}"
    );
    assert_eq!(spec.termination_grace_period_seconds, Some(120), "{name}");
    assert_eq!(
        spec.runtime_class_name.as_deref(),
        Some("e2e-runc"),
        "{name}"
    );
    let options = spec
        .dns_config
        .as_ref()
        .and_then(|d| d.options.clone())
        .unwrap_or_default();
    assert!(
        options
            .iter()
            .any(|o| o.name.as_deref() == Some("ndots") && o.value.as_deref() == Some("2")),
        "{name}: {options:?}"
    );
    assert_eq!(
        count(&spec.host_aliases, |a| a.ip == "10.0.0.10"
            && a.hostnames.as_deref()
                == Some(&["metastore.internal".to_owned()][..])),
        1,
        "{name}"
    );
}

/// The executor-only fields: no token, spread and packed by its own application id, and its
/// Spark scratch space bounded.
fn assert_executor_fields(pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let app_id = labels(pod)
        .get("spark-app-selector")
        .cloned()
        .expect("spark-app-selector");
    let spec = spec(pod);
    assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
    let spread = spec
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    assert_eq!(spread.len(), 1, "{name}: {spread:?}");
    assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
    assert_eq!(
        spread[0]
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(
            "spark-app-selector".to_owned(),
            app_id.clone()
        )])),
        "{name}: the template became this pod's application id"
    );
    let preferred = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    assert_eq!(preferred.len(), 1, "{name}: {preferred:?}");
    assert_eq!(
        preferred[0]
            .pod_affinity_term
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(BTreeMap::from([
            ("spark-app-selector".to_owned(), app_id),
            ("spark-role".to_owned(), "driver".to_owned()),
        ])),
        "{name}"
    );
    let local_dirs: Vec<_> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name.starts_with("spark-local-dir-"))
        .collect();
    assert!(!local_dirs.is_empty(), "{name}: Spark's local dir volume");
    for volume in local_dirs {
        let size = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .map(|q| q.0.as_str());
        assert_eq!(size, Some("20Gi"), "{name}: {}", volume.name);
    }
}

async fn pods_of(
    pods: &Api<Pod>,
    selector: &str,
    at_least: usize,
    spark: &mut SparkSubmit,
) -> Vec<Pod> {
    let started = Instant::now();
    loop {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        if list.items.len() >= at_least {
            return list.items;
        }
        if started.elapsed() > Duration::from_secs(120) || spark.exit_code().is_some_and(|c| c != 0)
        {
            panic!(
                "{at_least} pods {selector} not created ({} found); spark-submit log:\n{}",
                list.items.len(),
                spark.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn a_real_spark_submit_stores_every_pod_field_of_the_policy_in_client_and_cluster_mode() {
    let client = client().await;
    ensure_runtime_class(&client, "e2e-runc").await;
    let namespace = TestNamespace::create(&client, "podfields").await;
    let webhook = Webhook::start(POD_POLICY).await;
    let _registration = Registration::create(
        &client,
        "e2e-podfields",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);

    let mut spark = SparkSubmit::client_mode(
        &namespace.name,
        "nightly-etl",
        &[("spark.executor.instances", "2")],
    );
    let executors = pods_of(&pods, "spark-role=executor", 2, &mut spark).await;
    spark.stop();
    for pod in &executors {
        assert_platform_fields(pod);
        assert_executor_fields(pod);
    }

    let mut submit = SparkSubmit::cluster_mode(&namespace.name, "hourly-report", &[]);
    let drivers = pods_of(&pods, "spark-role=driver", 1, &mut submit).await;
    let code = submit.wait_exit(Duration::from_secs(120)).await;
    assert_eq!(code, Some(0), "spark-submit:\n{}", submit.log());
    assert_platform_fields(&drivers[0]);
    let driver_spec = spec(&drivers[0]);
    // The driver keeps its token: it creates its executors with it.
    assert_eq!(driver_spec.automount_service_account_token, None);
    assert_eq!(driver_spec.topology_spread_constraints, None);
    // 1.20, learnt from /version: the sidecar is appended, and a driver created by kubectl
    // shows the user why that matters (kubectl prints the answer's warnings).
    assert!(
        webhook.log().contains("the apiserver's version"),
        "{}",
        webhook.log()
    );
    let pod = serde_json::to_string(&super::fixture_pod(
        DRIVER_REVIEW,
        &namespace.name,
        "driver-by-kubectl",
    ))
    .unwrap();
    let mut kubectl = std::process::Command::new("kubectl")
        .args(["create", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut kubectl.stdin.take().unwrap(), pod.as_bytes()).unwrap();
    let out = kubectl.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "Warning: sidecar fluent-bit: appended to spec.containers, not a native sidecar"
        ) && stderr.contains("this driver pod stays Running after Spark exits"),
        "kubectl shows the driver's sidecar warning: {stderr}"
    );
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn ephemeral_local_dirs_are_stored_as_generic_ephemeral_volumes() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "ephemeral").await;
    let webhook = Webhook::start(
        r#"
rules:
  - name: shuffle-scratch
    match: {roles: [executor]}
    localDirs:
      ephemeral: {storageClassName: fast-ssd, size: 200Gi}
"#,
    )
    .await;
    let _registration = Registration::create(
        &client,
        "e2e-ephemeral",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let stored = create_fixture(&pods, EXECUTOR_REVIEW, "exec-ephemeral")
        .await
        .expect("the apiserver stores the pod");
    let volume = spec(&stored)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "spark-local-dir-1")
        .expect("Spark's local dir")
        .clone();
    assert!(volume.empty_dir.is_none(), "{volume:?}");
    let stored_json = serde_json::to_value(&volume).unwrap();
    let template = &stored_json["ephemeral"]["volumeClaimTemplate"]["spec"];
    assert_eq!(template["storageClassName"], "fast-ssd", "{stored_json}");
    assert_eq!(
        template["resources"]["requests"]["storage"], "200Gi",
        "{stored_json}"
    );
    assert_eq!(template["accessModes"], json!(["ReadWriteOnce"]));
    // Read back as stored, not as answered.
    let again = pods.get("exec-ephemeral").await.unwrap();
    assert_eq!(
        serde_json::to_value(&again.spec.unwrap().volumes).unwrap()[1]["ephemeral"],
        stored_json["ephemeral"]
    );
}

/// Names the example policies give to PriorityClasses and RuntimeClasses, which must exist for
/// the apiserver's own plugins to accept a pod naming them.
fn named_classes(policy: &Value, field: &str, found: &mut Vec<String>) {
    match policy {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::String(name) if key == field => found.push(name.clone()),
                    other => named_classes(other, field, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| named_classes(v, field, found)),
        _ => {}
    }
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn the_apiserver_accepts_every_pod_the_webhook_answers_for_every_example_policy() {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let client = client().await;
    let mut policies: Vec<std::path::PathBuf> = std::fs::read_dir("examples/policies")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    policies.sort();
    assert!(policies.len() >= 5, "{policies:?}");
    let mut admitted = 0;
    for (index, path) in policies.iter().enumerate() {
        let text = std::fs::read_to_string(path).unwrap();
        let document: Value = serde_saphyr::from_str(&text).unwrap();
        let mut classes = Vec::new();
        named_classes(&document, "priorityClassName", &mut classes);
        for class in classes {
            let priority: PriorityClass = serde_json::from_value(json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": class}, "value": 1000,
            }))
            .unwrap();
            let _ = Api::<PriorityClass>::all(client.clone())
                .create(&PostParams::default(), &priority)
                .await;
        }
        let mut runtimes = Vec::new();
        named_classes(&document, "runtimeClassName", &mut runtimes);
        for runtime in runtimes {
            ensure_runtime_class(&client, &runtime).await;
        }
        let namespace = TestNamespace::create(&client, &format!("examples{index}")).await;
        let webhook = Webhook::start(&text).await;
        let _registration = Registration::create(
            &client,
            &format!("e2e-examples-{index}"),
            &webhook,
            &namespace,
            "Fail",
            "IfNeeded",
        )
        .await;
        let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
        for (review, name) in [(DRIVER_REVIEW, "driver"), (EXECUTOR_REVIEW, "exec-1")] {
            match create_fixture(&pods, review, name).await {
                Ok(stored) => {
                    admitted += 1;
                    assert!(
                        stored
                            .metadata
                            .annotations
                            .as_ref()
                            .is_some_and(|a| a.contains_key("spark-admission.io/policy-hash")),
                        "{}: {name} went through the webhook",
                        path.display()
                    );
                }
                // A refusal must be the policy's own (a cap, a quota), never the apiserver
                // finding the answered pod invalid.
                Err(kube::Error::Api(status)) => assert!(
                    status.message.contains("denied the request") && status.code != 422,
                    "{}: {name}: {status:?}",
                    path.display()
                ),
                Err(error) => panic!("{}: {name}: {error}", path.display()),
            }
        }
    }
    assert!(
        admitted >= policies.len(),
        "most answers are admissions ({admitted})"
    );
}
