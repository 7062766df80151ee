//! What the apiserver itself does to a pod around the webhook, checked on what it stores: the
//! global default PriorityClass its Priority plugin writes before the webhook runs (SPEC §4,
//! priorityClassName), and the canonical form it writes quantities in.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use spark_admission::policy::Quantity as PolicyQuantity;

use super::{
    DRIVER_REVIEW, EXECUTOR_REVIEW, Registration, TestNamespace, Webhook, client, ensure_namespace,
    fixture_pod, kubectl, spark_container, webhook_kubeconfig,
};

/// A PriorityClass for one test, deleted when dropped, even when the test fails: a global
/// default left behind would give every later test's pods its class (tests run one at a time
/// against one apiserver).
struct TestPriorityClass {
    name: String,
}

impl TestPriorityClass {
    async fn create(
        client: &kube::Client,
        name: &str,
        value: i32,
        global_default: bool,
        preemption_policy: &str,
    ) -> Self {
        let class = PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            value,
            global_default: Some(global_default),
            preemption_policy: Some(preemption_policy.to_owned()),
            ..PriorityClass::default()
        };
        Api::<PriorityClass>::all(client.clone())
            .create(&PostParams::default(), &class)
            .await
            .unwrap_or_else(|error| panic!("create PriorityClass {name}: {error}"));
        Self {
            name: name.to_owned(),
        }
    }
}

impl Drop for TestPriorityClass {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args(["delete", "priorityclass", &self.name, "--ignore-not-found"])
            .output();
    }
}

fn priority_of(pod: &Pod) -> (Option<&str>, Option<i32>, Option<&str>) {
    let spec = pod.spec.as_ref().unwrap();
    (
        spec.priority_class_name.as_deref(),
        spec.priority,
        spec.preemption_policy.as_deref(),
    )
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn priority_class_from_the_policy_replaces_the_clusters_global_default_under_merge() {
    let client = client().await;
    // The webhook runs as its own service account, bound to exactly deploy/'s RBAC, so the
    // PriorityClass watch is checked with the permissions it ships with.
    ensure_namespace(&client, "spark-admission").await;
    kubectl(&["apply", "-f", "deploy/base/rbac.yaml"]);
    let namespace = TestNamespace::create(&client, "priority-default").await;
    let batch = format!("{}-batch", namespace.name);
    let _batch = TestPriorityClass::create(&client, &batch, 4242, false, "Never").await;
    let urgent = format!("{}-urgent", namespace.name);
    let _urgent = TestPriorityClass::create(&client, &urgent, 5000, false, "Never").await;
    let first_default = format!("{}-default", namespace.name);
    let first_default_class =
        TestPriorityClass::create(&client, &first_default, 1000, true, "PreemptLowerPriority")
            .await;
    let kubeconfig_dir = tempfile::tempdir().unwrap();
    let kubeconfig = webhook_kubeconfig(kubeconfig_dir.path());
    // mode merge (the default): the pod's own class would win, but the global default is not
    // the pod's own.
    let webhook = Webhook::start_with(
        &format!("rules: [{{name: batch, priorityClassName: {batch}}}]"),
        &[],
        &[("KUBECONFIG", kubeconfig.display().to_string())],
    )
    .await;
    let _registration = Registration::create(
        &client,
        "e2e-priority-default",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);

    // Without the webhook the Priority plugin gives a pod naming no class the global default.
    let mut plain = fixture_pod(EXECUTOR_REVIEW, &namespace.name, "not-spark");
    plain.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "web".to_owned())]));
    let stored = pods.create(&PostParams::default(), &plain).await.unwrap();
    assert_eq!(
        priority_of(&stored),
        (
            Some(first_default.as_str()),
            Some(1000),
            Some("PreemptLowerPriority")
        )
    );

    // A Spark executor arrives at the webhook with that class, its value and its preemption
    // policy; the policy's class replaces them, and the apiserver, which runs the Priority
    // plugin again after a webhook changed the pod, stores the policy class's value and policy.
    let stored = pods
        .create(
            &PostParams::default(),
            &fixture_pod(EXECUTOR_REVIEW, &namespace.name, "exec-1"),
        )
        .await
        .expect("the apiserver accepts the pod");
    assert_eq!(
        priority_of(&stored),
        (Some(batch.as_str()), Some(4242), Some("Never"))
    );

    // A pod that names a class of its own keeps it under merge.
    let mut own = fixture_pod(DRIVER_REVIEW, &namespace.name, "driver");
    own.spec.as_mut().unwrap().priority_class_name = Some(urgent.clone());
    let stored = pods.create(&PostParams::default(), &own).await.unwrap();
    assert_eq!(
        priority_of(&stored),
        (Some(urgent.as_str()), Some(5000), Some("Never"))
    );

    // Another global default (Kubernetes allows one at a time) is followed by the watch: once
    // it is seen, pods given it get the policy's class again (until then the webhook keeps it,
    // with a warning).
    drop(first_default_class);
    let second_default = format!("{}-default2", namespace.name);
    let _second = TestPriorityClass::create(&client, &second_default, 1500, true, "Never").await;
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let name = format!("exec-after-{attempt}");
        let stored = pods
            .create(
                &PostParams::default(),
                &fixture_pod(EXECUTOR_REVIEW, &namespace.name, &name),
            )
            .await
            .expect("the apiserver accepts the pod");
        match priority_of(&stored) {
            (Some(class), Some(4242), _) if class == batch => break,
            (Some(class), Some(1500), _) if class == second_default => {}
            other => panic!("{name} stored with {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new global default was not followed: {}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "new global default followed after {:?} ({attempt} pods)",
        started.elapsed()
    );
}

/// A pod of one container per quantity, requesting it as CPU.
fn quantity_pod(name: &str, quantities: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            containers: quantities
                .iter()
                .enumerate()
                .map(|(i, quantity)| Container {
                    name: format!("c{i}"),
                    image: Some("spark".to_owned()),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "cpu".to_owned(),
                            Quantity((*quantity).to_owned()),
                        )])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Pod::default()
    }
}

fn resource(container: &Container, kind: &str, name: &str) -> Option<String> {
    let resources = container.resources.as_ref()?;
    let map = if kind == "requests" {
        resources.requests.as_ref()
    } else {
        resources.limits.as_ref()
    };
    map?.get(name).map(|q| q.0.clone())
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn quantities_are_stored_as_written_here() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "quantities").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);

    // The canonical form against the apiserver's own: a plain pod (no webhook) carrying each
    // text, read back as stored.
    let inputs = [
        " 2",
        "2 ",
        "1000.0",
        "1e3",
        "+2",
        "02",
        "0.5",
        "2000m",
        "1024Mi",
        "1.5Gi",
        "0.5Gi",
        "1.5e3",
        "10e3",
        ".001Ki",
        "1048576Ki",
        "0.1",
        "0.0001",
        "1.08",
        ".001e12",
        "64Gi",
        "2432Mi",
        "00",
        "12345E",
        "100u",
        "1e-4",
        "1500u",
        "1.0001",
        "+1e-3",
    ];
    let stored = pods
        .create(&PostParams::default(), &quantity_pod("table", &inputs))
        .await
        .expect("the apiserver accepts every text");
    let containers = &stored.spec.as_ref().unwrap().containers;
    for (input, container) in inputs.iter().zip(containers) {
        let written = PolicyQuantity::parse(input).unwrap().as_pod_resource();
        assert_eq!(
            resource(container, "requests", "cpu").as_deref(),
            Some(written.as_str()),
            "{input:?}"
        );
    }

    // The policy's quantities as it writes them into Spark pods: defaults into an executor
    // that asks for nothing, a clamp on the driver.
    let webhook = Webhook::start(
        r#"
rules:
  - name: sizes
    resources:
      executor:
        default:
          requests: {cpu: " 2", memory: 1e3}
          limits: {memory: 1e3, ephemeral-storage: 1024Mi}
      driver:
        max: {cpu: "0.5"}
        onExceed: clamp
"#,
    )
    .await;
    let _registration = Registration::create(
        &client,
        "e2e-quantities",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let mut executor = fixture_pod(EXECUTOR_REVIEW, &namespace.name, "exec-1");
    for container in &mut executor.spec.as_mut().unwrap().containers {
        container.resources = None;
    }
    let stored = pods
        .create(&PostParams::default(), &executor)
        .await
        .expect("the apiserver accepts the pod");
    let spark = spark_container(&stored);
    assert_eq!(resource(spark, "requests", "cpu").as_deref(), Some("2"));
    assert_eq!(resource(spark, "requests", "memory").as_deref(), Some("1k"));
    assert_eq!(resource(spark, "limits", "memory").as_deref(), Some("1k"));
    assert_eq!(
        resource(spark, "limits", "ephemeral-storage").as_deref(),
        Some("1Gi")
    );

    let stored = pods
        .create(
            &PostParams::default(),
            &fixture_pod(DRIVER_REVIEW, &namespace.name, "driver"),
        )
        .await
        .expect("the apiserver accepts the pod");
    assert_eq!(
        resource(spark_container(&stored), "requests", "cpu").as_deref(),
        Some("500m")
    );
}
