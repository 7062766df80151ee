//! Cluster-mode Spark kept inside its quota without refusals (SPEC §5a): a real
//! `spark-submit --deploy-mode cluster`, the driver's ConfigMap as the apiserver stored it, and
//! then the driver's own command run on that configuration.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;

use super::quotas::THREE_EXECUTORS;
use super::{
    Registration, SparkSubmit, TestNamespace, Webhook, client, development_pki, ensure_namespace,
    free_port, kubectl, labels, webhook_kubeconfig,
};

const LOWERED_ANNOTATION: &str = "spark-admission.io/spark-conf-lowered";

/// tests/e2e/capture_webhook.py: records every review the apiserver sends it, unchanged.
struct CaptureWebhook {
    child: Child,
    port: u16,
    ca_bundle: String,
    dir: tempfile::TempDir,
}

impl CaptureWebhook {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_bundle = development_pki(&dir.path().join("pki"));
        let port = free_port();
        let mut child = Command::new("python3")
            .arg("tests/e2e/capture_webhook.py")
            .arg(port.to_string())
            .arg(dir.path().join("pki/tls.crt"))
            .arg(dir.path().join("pki/tls.key"))
            .arg(dir.path().join("reviews"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening");
        Self {
            child,
            port,
            ca_bundle,
            dir,
        }
    }

    /// The `spark.properties` of every driver ConfigMap it was sent, by ConfigMap name.
    fn driver_properties(&self) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(self.dir.path().join("reviews")).unwrap() {
            let review: Value =
                serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
            let object = &review["request"]["object"];
            if let (Some(name), Some(text)) = (
                object["metadata"]["name"].as_str(),
                object["data"]["spark.properties"].as_str(),
            ) && name.starts_with("spark-drv-")
            {
                found.insert(name.to_owned(), text.to_owned());
            }
        }
        found
    }
}

impl Drop for CaptureWebhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The driver ConfigMap of the one application named `app_name`, as stored.
async fn stored_driver_configmap(
    client: &kube::Client,
    namespace: &str,
    app_name: &str,
) -> ConfigMap {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let drivers = pods
        .list(
            &ListParams::default().labels(&format!("spark-role=driver,spark-app-name={app_name}")),
        )
        .await
        .unwrap();
    assert_eq!(drivers.items.len(), 1, "one driver for {app_name}");
    driver_configmap(client, namespace, &drivers.items[0])
        .await
        .unwrap_or_else(|| panic!("no spark-drv ConfigMap owned by the driver of {app_name}"))
}

/// The `spark-drv-*-conf-map` ConfigMap stored in `namespace` and owned by `driver`, if any.
pub(super) async fn driver_configmap(
    client: &kube::Client,
    namespace: &str,
    driver: &Pod,
) -> Option<ConfigMap> {
    let driver_uid = driver.metadata.uid.clone().unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|map| {
            map.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("spark-drv-"))
                && map
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|owner| owner.uid == driver_uid)
        })
}

/// The executor pods of application `app` once `driver` has created `count` of them and 15 s
/// more have passed (long enough for Spark to ask again if it thought one missing).
pub(super) async fn executors_settled(
    pods: &Api<Pod>,
    app: &str,
    driver: &mut SparkSubmit,
    count: usize,
) -> Vec<Pod> {
    let selector = format!("spark-role=executor,spark-app-selector={app}");
    let executors = || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    };
    let started = Instant::now();
    while executors().await.len() < count {
        assert!(
            started.elapsed() < Duration::from_secs(120) && driver.exit_code().is_none(),
            "{count} executors not created: {}",
            driver.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    executors().await
}

pub(super) fn properties_of(map: &ConfigMap) -> String {
    map.data.as_ref().unwrap()["spark.properties"].clone()
}

async fn submit(namespace: &str, app_name: &str, confs: &[(&str, &str)]) {
    let mut spark = SparkSubmit::cluster_mode(namespace, app_name, confs);
    let code = spark.wait_exit(Duration::from_secs(120)).await;
    assert_eq!(code, Some(0), "{app_name} submitted:\n{}", spark.log());
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn cluster_mode_executor_counts_are_lowered_to_the_quota_and_the_driver_then_runs_unrefused()
{
    let client = client().await;
    let namespace = TestNamespace::create(&client, "spark-conf").await;
    let webhook = Webhook::start(THREE_EXECUTORS).await;
    let capture = CaptureWebhook::start();
    let _pods = Registration::create(
        &client,
        "e2e-spark-conf-pods",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    // Configurations are called in name order: the capture sees the ConfigMap as spark-submit
    // sent it, before spark-admission.
    let _capture = Registration::create_for_configmaps(
        &client,
        "e2e-spark-conf-a-capture",
        &format!("https://127.0.0.1:{}/", capture.port),
        &capture.ca_bundle,
        &namespace,
        "Ignore",
    )
    .await;
    let _conf = Registration::create_for_configmaps(
        &client,
        "e2e-spark-conf-b-ours",
        &format!("https://127.0.0.1:{}/mutate-spark-conf", webhook.port),
        &webhook.ca_bundle,
        &namespace,
        "Ignore",
    )
    .await;

    // 6 asked under maxExecutors 3: lowered to 3, every other byte as spark-submit wrote it.
    submit(
        &namespace.name,
        "six-asked",
        &[("spark.executor.instances", "6")],
    )
    .await;
    let stored = stored_driver_configmap(&client, &namespace.name, "six-asked").await;
    let name = stored.metadata.name.clone().unwrap();
    let sent = capture.driver_properties().remove(&name).expect("captured");
    assert!(sent.contains("\nspark.executor.instances=6\n"), "{sent}");
    assert_eq!(
        properties_of(&stored),
        sent.replace(
            "\nspark.executor.instances=6\n",
            "\nspark.executor.instances=3\n"
        ),
        "only spark.executor.instances changed"
    );
    assert_eq!(
        stored
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get(LOWERED_ANNOTATION),
        Some(
            &"spark.executor.instances=3 (was 6) to fit quota three-executors (maxExecutors 3)"
                .to_owned()
        )
    );
    assert_eq!(
        webhook
            .metric("spark_admission_spark_conf_lowered_total{quota=\"three-executors\"}")
            .await,
        1.0
    );

    // 2 asked: untouched.
    submit(
        &namespace.name,
        "two-asked",
        &[("spark.executor.instances", "2")],
    )
    .await;
    let untouched = stored_driver_configmap(&client, &namespace.name, "two-asked").await;
    let sent = capture
        .driver_properties()
        .remove(untouched.metadata.name.as_deref().unwrap())
        .expect("captured");
    assert_eq!(properties_of(&untouched), sent);
    assert!(
        !untouched
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(LOWERED_ANNOTATION)
    );

    // Dynamic allocation: maxExecutors lowered.
    submit(
        &namespace.name,
        "dynamic",
        &[
            ("spark.dynamicAllocation.enabled", "true"),
            ("spark.dynamicAllocation.shuffleTracking.enabled", "true"),
            ("spark.dynamicAllocation.minExecutors", "1"),
            ("spark.dynamicAllocation.maxExecutors", "10"),
        ],
    )
    .await;
    let dynamic = stored_driver_configmap(&client, &namespace.name, "dynamic").await;
    let text = properties_of(&dynamic);
    assert!(
        text.contains("\nspark.dynamicAllocation.maxExecutors=3\n"),
        "{text}"
    );
    assert!(
        text.contains("\nspark.dynamicAllocation.minExecutors=1\n"),
        "{text}"
    );

    // A ConfigMap that is not Spark's, and one named like Spark's that cannot be read, are
    // created as sent.
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace.name);
    for (name, text) in [
        ("settings", "spark.executor.instances=6\n"),
        (
            "spark-drv-broken-conf-map",
            "spark.executor.instances=6\nbad=\\u12\n",
        ),
    ] {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "data": {"spark.properties": text},
        }))
        .unwrap();
        let created = maps.create(&PostParams::default(), &map).await.unwrap();
        assert_eq!(properties_of(&created), text, "{name}");
        assert!(created.metadata.annotations.is_none(), "{name}");
    }

    // The driver's own command on the stored configuration: exactly 3 executors, no refusal,
    // alive after 60 s.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), properties_of(&stored)).unwrap();
    let mut driver =
        SparkSubmit::driver_from_properties(&format!("{}-driver", namespace.name), file.path());
    let app = labels(
        &Api::<Pod>::namespaced(client.clone(), &namespace.name)
            .list(&ListParams::default().labels("spark-role=driver,spark-app-name=six-asked"))
            .await
            .unwrap()
            .items[0],
    )["spark-app-selector"]
        .clone();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let executors = || {
        let pods = pods.clone();
        let selector = format!("spark-role=executor,spark-app-selector={app}");
        async move {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    let started = Instant::now();
    while executors().await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120) && driver.exit_code().is_none(),
            "3 executors not created: {}",
            driver.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let since_three = Instant::now();
    while since_three.elapsed() < Duration::from_secs(60) {
        assert_eq!(
            driver.exit_code(),
            None,
            "the driver keeps running:\n{}",
            driver.log()
        );
        assert!(executors().await <= 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(executors().await, 3, "exactly 3 executor pods");
    let log = driver.log();
    assert!(!log.contains("denied the request"), "no refusal:\n{log}");
    assert!(!log.contains("Failed to create executor pod"), "{log}");
    assert_eq!(
        webhook
            .metric("spark_admission_quota_denied_total{quota=\"three-executors\",scope=\"application\"}")
            .await,
        0.0
    );
}

/// An executor pod template whose sidecar asks for 500m: every executor Spark makes from it is
/// 1.5 CPUs (1 core for Spark, by default, and the sidecar).
const TEMPLATE_WITH_SIDECAR: &str = "\
apiVersion: v1
kind: Pod
spec:
  containers:
  - name: spark-kubernetes-executor
  - name: log-shipper
    image: busybox
    resources:
      requests: {cpu: 500m, memory: 64Mi}
";

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn an_executor_templates_sidecar_counts_in_the_fitted_count_and_every_executor_is_admitted() {
    let client = client().await;
    // The webhook runs as its own service account with exactly deploy/'s RBAC, so the two GETs
    // that read the template are checked with the permissions it ships with.
    ensure_namespace(&client, "spark-admission").await;
    kubectl(&["apply", "-f", "deploy/base/rbac.yaml"]);
    let kubeconfig_dir = tempfile::tempdir().unwrap();
    let kubeconfig = webhook_kubeconfig(kubeconfig_dir.path());
    // 5.5 CPUs per application: after the 1-CPU driver, 4 executors of the Spark container
    // alone would be let through (4.5 / 1), but only 3 of 1.5 CPUs fit.
    let webhook = Webhook::start_with(
        "quotas: [{name: five-and-a-half, perApplication: {maxCpu: '5.5'}}]",
        &[],
        &[("KUBECONFIG", kubeconfig.display().to_string())],
    )
    .await;
    let namespace = TestNamespace::create(&client, "spark-conf-template").await;
    let _registrations = Registration::pods_and_driver_configmaps(
        &client,
        "e2e-spark-conf-template",
        &webhook,
        &namespace,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("executor-template.yaml");
    std::fs::write(&template, TEMPLATE_WITH_SIDECAR).unwrap();
    submit(
        &namespace.name,
        "templated",
        &[
            ("spark.executor.instances", "6"),
            (
                "spark.kubernetes.executor.podTemplateFile",
                template.to_str().unwrap(),
            ),
        ],
    )
    .await;
    let stored = stored_driver_configmap(&client, &namespace.name, "templated").await;
    let text = properties_of(&stored);
    assert!(text.contains("\nspark.executor.instances=3\n"), "{text}");
    assert_eq!(
        stored
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get(LOWERED_ANNOTATION)
            .map(String::as_str),
        Some(
            "spark.executor.instances=3 (was 6) to fit quota five-and-a-half (maxCpu 5.5 with 1 CPU in use, 1.5 CPU per executor)"
        )
    );

    // The change is on the driver pod's Events too (sent with deploy/'s RBAC).
    let driver_pod = stored.metadata.owner_references.as_ref().unwrap()[0]
        .name
        .clone();
    let started = Instant::now();
    let event = loop {
        let events: Value = serde_json::from_str(&kubectl(&[
            "get",
            "events",
            "-n",
            &namespace.name,
            "-o",
            "json",
        ]))
        .unwrap();
        let found = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["involvedObject"]["name"] == driver_pod.as_str()
                    && e["reason"] == "SparkConfLowered"
            })
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no SparkConfLowered Event on {driver_pod}: {events}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        event["message"],
        "spark-admission lowered spark.executor.instances=3 (was 6) to fit quota five-and-a-half (maxCpu 5.5 with 1 CPU in use, 1.5 CPU per executor)"
    );
    assert_eq!(event["type"], "Normal");

    // The driver's own command on that configuration, with the template where the driver pod
    // would mount it: 3 executors, each with the sidecar, every one admitted.
    let stored_template_path = "/opt/spark/pod-template/pod-spec-template.yml";
    assert!(
        text.contains(&format!(
            "spark.kubernetes.executor.podTemplateFile={stored_template_path}"
        )),
        "{text}"
    );
    let file = dir.path().join("spark.properties");
    std::fs::write(
        &file,
        text.replace(stored_template_path, template.to_str().unwrap()),
    )
    .unwrap();
    let mut driver =
        SparkSubmit::driver_from_properties(&format!("{}-driver", namespace.name), &file);
    let app = labels(
        &Api::<Pod>::namespaced(client.clone(), &namespace.name)
            .list(&ListParams::default().labels("spark-role=driver,spark-app-name=templated"))
            .await
            .unwrap()
            .items[0],
    )["spark-app-selector"]
        .clone();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let created = executors_settled(&pods, &app, &mut driver, 3).await;
    assert_eq!(created.len(), 3, "exactly 3 executor pods");
    for executor in &created {
        let names: Vec<&str> = executor
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(names.contains(&"log-shipper"), "{names:?}");
    }
    assert_eq!(
        driver.exit_code(),
        None,
        "the driver keeps running:\n{}",
        driver.log()
    );
    let log = driver.log();
    assert!(!log.contains("denied the request"), "no refusal:\n{log}");
    assert_eq!(
        webhook
            .metric(
                "spark_admission_quota_denied_total{quota=\"five-and-a-half\",scope=\"application\"}"
            )
            .await,
        0.0
    );
}
