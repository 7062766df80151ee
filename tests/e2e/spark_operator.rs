//! The Spark Operator path (issue 23): a submission made exactly as kubeflow/spark-operator's
//! controller makes it (`internal/controller/sparkapplication/submission.go`: its labels, the
//! driver pod name, `waitAppCompletion=false`, cores, memory and overhead, `secretKeyRef`, the
//! node selector, and since v2.4 the pod template files it writes for driver and executors),
//! with real spark-submit in cluster mode; then the driver's own command on the stored
//! configuration creates the executors. The policy's rules, its quota fitted into the driver's
//! ConfigMap (§5a) and its Spark configuration rule (§5b) all apply, and the operator's own
//! labels are kept.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::Api;

use super::spark_conf::{driver_configmap, executors_settled, properties_of};
use super::{Registration, SparkSubmit, TestNamespace, Webhook, client, labels};

/// The platform's policy: labels, the executor pool, a credential from a Secret, a Spark
/// setting for every cluster-mode application, and 3 executors per application.
const POLICY: &str = r#"
rules:
  - name: cost-labels
    labels: {cost-center: "{namespace}", team: analytics}
  - name: executor-pool
    match: {roles: [executor]}
    nodeSelector: {pool: spark}
    tolerations:
      - {key: dedicated, operator: Equal, value: spark, effect: NoSchedule}
  - name: warehouse-credentials
    env:
      - name: DB_PASS
        valueFrom: {secretKeyRef: {name: snowsec, key: db_pass}}
  - name: event-logs
    sparkConf:
      set: {spark.eventLog.enabled: "true", spark.eventLog.dir: "/tmp/spark-events/{namespace}"}
quotas:
  - name: three-executors
    perApplication: {maxExecutors: 3}
"#;

/// What the operator writes for `spec.driver.template` and `spec.executor.template` (a
/// PodTemplateSpec as YAML, without apiVersion and kind, as `util.WriteObjectToFile` does).
const DRIVER_TEMPLATE: &str = "\
metadata:
  labels:
    template-source: spark-application
spec:
  containers:
  - name: spark-kubernetes-driver
";
const EXECUTOR_TEMPLATE: &str = "\
metadata:
  labels:
    template-source: spark-application
spec:
  containers:
  - name: spark-kubernetes-executor
";

/// The arguments the operator's controller gives spark-submit for a SparkApplication named
/// `app` with submission id `submission`, 6 executors of 1 core and 512m (plus 128m overhead),
/// a node selector `zone: a`, a driver and executor `envSecretKeyRefs` AWS_KEY from Secret
/// `aws` key `access`, and both templates written under `templates` (the operator writes them
/// to `/tmp/spark/<submission id>/`). The master, the mode, the name, the image and the
/// namespace are given by [`SparkSubmit::start`] as the operator gives them.
fn operator_confs(
    app: &str,
    submission: &str,
    templates: &std::path::Path,
) -> Vec<(String, String)> {
    let driver_template = templates.join("driver-pod-template.yaml");
    let executor_template = templates.join("executor-pod-template.yaml");
    std::fs::write(&driver_template, DRIVER_TEMPLATE).unwrap();
    std::fs::write(&executor_template, EXECUTOR_TEMPLATE).unwrap();
    let label =
        |role: &str, key: &str| format!("spark.kubernetes.{role}.label.sparkoperator.k8s.io/{key}");
    let mut confs = vec![
        (
            "spark.kubernetes.submission.waitAppCompletion".to_owned(),
            "false".to_owned(),
        ),
        (
            "spark.kubernetes.driver.podTemplateFile".to_owned(),
            driver_template.display().to_string(),
        ),
        (
            "spark.kubernetes.driver.podTemplateContainerName".to_owned(),
            "spark-kubernetes-driver".to_owned(),
        ),
        (
            "spark.kubernetes.driver.pod.name".to_owned(),
            format!("{app}-driver"),
        ),
    ];
    for role in ["driver", "executor"] {
        confs.extend([
            (label(role, "app-name"), app.to_owned()),
            (label(role, "launched-by-spark-operator"), "true".to_owned()),
            (label(role, "submission-id"), submission.to_owned()),
            (
                format!("spark.kubernetes.{role}.container.image"),
                "apache/spark:4.0.0".to_owned(),
            ),
        ]);
    }
    confs.extend([
        ("spark.driver.cores".to_owned(), "1".to_owned()),
        (
            "spark.kubernetes.driver.limit.cores".to_owned(),
            "1200m".to_owned(),
        ),
        ("spark.driver.memory".to_owned(), "512m".to_owned()),
        ("spark.driver.memoryOverhead".to_owned(), "128m".to_owned()),
        (
            "spark.kubernetes.driver.secretKeyRef.AWS_KEY".to_owned(),
            "aws:access".to_owned(),
        ),
        (
            "spark.kubernetes.executor.podTemplateFile".to_owned(),
            executor_template.display().to_string(),
        ),
        (
            "spark.kubernetes.executor.podTemplateContainerName".to_owned(),
            "spark-kubernetes-executor".to_owned(),
        ),
        ("spark.executor.instances".to_owned(), "6".to_owned()),
        ("spark.executor.cores".to_owned(), "1".to_owned()),
        ("spark.executor.memory".to_owned(), "512m".to_owned()),
        (
            "spark.executor.memoryOverhead".to_owned(),
            "128m".to_owned(),
        ),
        (
            "spark.kubernetes.executor.secretKeyRef.AWS_KEY".to_owned(),
            "aws:access".to_owned(),
        ),
        (
            "spark.kubernetes.node.selector.zone".to_owned(),
            "a".to_owned(),
        ),
    ]);
    confs
}

/// Removes directory `path` when dropped.
fn removed_on_drop(path: &str) -> impl Drop + '_ {
    struct Remove<'a>(&'a str);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    Remove(path)
}

/// The Spark container of `pod`.
fn spark_container(pod: &Pod) -> &Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .find(|c| c.name.starts_with("spark-kubernetes-"))
        .unwrap()
}

/// The env var `name` of `container` as a `secret:key` reference.
fn secret_ref(container: &Container, name: &str) -> Option<String> {
    let var = container.env.as_ref()?.iter().find(|e| e.name == name)?;
    let secret = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some(format!("{}:{}", secret.name, secret.key))
}

/// The policy's credential and the operator's `secretKeyRef`, on the Spark container.
fn assert_credentials(pod: &Pod) {
    let container = spark_container(pod);
    assert_eq!(
        secret_ref(container, "DB_PASS").as_deref(),
        Some("snowsec:db_pass")
    );
    assert_eq!(
        secret_ref(container, "AWS_KEY").as_deref(),
        Some("aws:access")
    );
}

/// What the operator's labels and the policy's rules put on every pod of the application.
fn assert_operator_and_policy_labels(pod: &Pod, namespace: &str, app: &str, submission: &str) {
    let found = labels(pod);
    let expected = BTreeMap::from([
        ("sparkoperator.k8s.io/app-name", app),
        ("sparkoperator.k8s.io/launched-by-spark-operator", "true"),
        ("sparkoperator.k8s.io/submission-id", submission),
        ("template-source", "spark-application"),
        ("cost-center", namespace),
        ("team", "analytics"),
    ]);
    for (key, value) in expected {
        assert_eq!(
            found.get(key).map(String::as_str),
            Some(value),
            "{key} on {:?}: {found:?}",
            pod.metadata.name
        );
    }
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn an_operator_shaped_submission_is_stored_with_the_policy_and_its_executor_count_fitted() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "spark-operator").await;
    let webhook = Webhook::start(POLICY).await;
    let _registrations = Registration::pods_and_driver_configmaps(
        &client,
        "e2e-spark-operator",
        &webhook,
        &namespace,
    )
    .await;
    let (app, submission) = ("pyspark-pi", "3f1c9a52-7d0e-4b8e-9d65-0c8a7e5b2f10");
    let templates = tempfile::tempdir().unwrap();
    let confs = operator_confs(app, submission, templates.path());
    let confs: Vec<(&str, &str)> = confs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut spark = SparkSubmit::start(
        &namespace.name,
        app,
        "cluster",
        &confs,
        "local:///opt/spark/examples/src/main/python/pi.py",
    );
    let code = spark.wait_exit(Duration::from_secs(120)).await;
    assert_eq!(code, Some(0), "submitted:\n{}", spark.log());

    // The driver, by the name the operator gave it: the operator's labels and its template's,
    // the policy's labels and credential, the operator's node selector and secretKeyRef, and
    // no executor-pool rule (it matches executors only).
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let driver = pods.get(&format!("{app}-driver")).await.unwrap();
    assert_operator_and_policy_labels(&driver, &namespace.name, app, submission);
    assert_credentials(&driver);
    let selector = driver
        .spec
        .as_ref()
        .unwrap()
        .node_selector
        .clone()
        .unwrap_or_default();
    assert_eq!(
        selector,
        BTreeMap::from([("zone".to_owned(), "a".to_owned())])
    );

    // The driver's configuration: 6 executors fitted to 3 (§5a), the Spark rule applied (§5b),
    // the operator's own settings as it sent them.
    let conf = driver_configmap(&client, &namespace.name, &driver)
        .await
        .expect("the driver's ConfigMap");
    let text = properties_of(&conf);
    for line in [
        "spark.executor.instances=3",
        "spark.eventLog.enabled=true",
        &format!("spark.eventLog.dir=/tmp/spark-events/{}", namespace.name),
        "spark.kubernetes.submission.waitAppCompletion=false",
        &format!("spark.kubernetes.executor.label.sparkoperator.k8s.io/submission-id={submission}"),
        "spark.executor.memoryOverhead=128m",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }

    // The driver's own command on that configuration, with the executor template where the
    // driver pod mounts it: 3 executors, each with the operator's labels, the template's and
    // the policy's, on the Spark pool, and none refused.
    let mounted = "/opt/spark/pod-template/pod-spec-template.yml";
    assert!(
        text.lines()
            .any(|l| l == format!("spark.kubernetes.executor.podTemplateFile={mounted}")),
        "{text}"
    );
    let executor_template = templates.path().join("executor-pod-template.yaml");
    let file = templates.path().join("spark.properties");
    std::fs::write(
        &file,
        text.replace(mounted, &executor_template.display().to_string()),
    )
    .unwrap();
    // The event log directory the rule set, which Spark needs to exist.
    let events = format!("/tmp/spark-events/{}", namespace.name);
    std::fs::create_dir_all(&events).unwrap();
    let _events = removed_on_drop(&events);
    let mut driver_process =
        SparkSubmit::driver_from_properties(&format!("{}-driver", namespace.name), &file);
    let id = labels(&driver)["spark-app-selector"].clone();
    let created = executors_settled(&pods, &id, &mut driver_process, 3).await;
    assert_eq!(created.len(), 3, "exactly 3 executor pods");
    for executor in &created {
        assert_operator_and_policy_labels(executor, &namespace.name, app, submission);
        let spec = executor.spec.as_ref().unwrap();
        assert_eq!(
            spec.node_selector.clone().unwrap_or_default(),
            BTreeMap::from([
                ("pool".to_owned(), "spark".to_owned()),
                ("zone".to_owned(), "a".to_owned())
            ])
        );
        let tolerations = spec.tolerations.clone().unwrap_or_default();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("dedicated")
                    && t.value.as_deref() == Some("spark")),
            "{tolerations:?}"
        );
        assert_credentials(executor);
    }
    assert_eq!(
        driver_process.exit_code(),
        None,
        "the driver keeps running:\n{}",
        driver_process.log()
    );
    assert!(!driver_process.log().contains("denied the request"));
    assert_eq!(
        webhook
            .metric("spark_admission_quota_denied_total{quota=\"three-executors\",scope=\"application\"}")
            .await,
        0.0
    );
    assert_eq!(
        webhook
            .metric("spark_admission_spark_conf_lowered_total{quota=\"three-executors\"}")
            .await,
        1.0
    );
}
