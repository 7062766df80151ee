//! End-to-end tests against a real kube-apiserver and etcd, and a real Spark.
//!
//! Every test here is `#[ignore]`: `tests/e2e/run.sh` starts the cluster, exports its
//! coordinates (`KUBECONFIG`, `E2E_*`) and runs them with `--ignored --test-threads=1`. Each test
//! works in its own namespace, registers its own webhook configuration scoped to that namespace,
//! starts its own `spark-admission serve` processes, and dumps the namespace's pods on failure.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");

#[path = "e2e/client_ca.rs"]
mod client_ca;
#[path = "e2e/cluster_defaults.rs"]
mod cluster_defaults;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/gang.rs"]
mod gang;
#[path = "e2e/pod_fields.rs"]
mod pod_fields;
#[path = "e2e/quotas.rs"]
mod quotas;
#[path = "e2e/spark_conf.rs"]
mod spark_conf;
#[path = "e2e/spark_conf_policy.rs"]
mod spark_conf_policy;
#[path = "e2e/spark_operator.rs"]
mod spark_operator;
const EXECUTOR_REVIEW: &str = include_str!("fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &str = include_str!("fixtures/spark-4.3/driver-review.json");

mod support;

use support::free_port;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run tests/e2e/run.sh"))
}

async fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .expect("KUBECONFIG points at the test cluster")
}

/// A namespace for one test, labelled so that only this test's webhooks see it. On a failed
/// test its pods are printed (the namespace is left in place: without a controller-manager it
/// could never finish terminating anyway).
struct TestNamespace {
    name: String,
}

impl TestNamespace {
    async fn create(client: &Client, test: &str) -> Self {
        let name = format!("e2e-{test}-{}", std::process::id() % 100_000);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([("e2e-test".to_owned(), name.clone())])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = Command::new("kubectl")
                .args(["get", "pods", "-n", &self.name, "-o", "yaml"])
                .output();
            if let Ok(out) = out {
                eprintln!(
                    "--- pods in {} ---\n{}",
                    self.name,
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
}

/// A running `spark-admission serve` with its own certificate and policy file.
struct Webhook {
    child: Child,
    port: u16,
    admin_port: u16,
    ca_bundle: String,
    /// `serve`'s arguments, to start it again on the same ports.
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Webhook {
    async fn start(policy: &str) -> Self {
        Self::start_with(policy, &[], &[]).await
    }

    /// Starts with extra arguments and environment; `--policy-file` is left out when the
    /// arguments name another policy source.
    async fn start_with(policy: &str, extra_args: &[&str], extra_env: &[(&str, String)]) -> Self {
        Self::start_in(policy, extra_args, extra_env, None).await
    }

    /// Like [`Webhook::start_with`], serving a copy of `pki`'s CA and certificate (replicas
    /// behind one TCP proxy need one caBundle) instead of a PKI of its own.
    async fn start_in(
        policy: &str,
        extra_args: &[&str],
        extra_env: &[(&str, String)],
        pki: Option<&std::path::Path>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_bundle = match pki {
            None => development_pki(&dir.path().join("pki")),
            Some(source) => {
                let target = dir.path().join("pki");
                std::fs::create_dir_all(&target).unwrap();
                for file in ["ca.crt", "tls.crt", "tls.key"] {
                    std::fs::copy(source.join(file), target.join(file)).unwrap();
                }
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .encode(std::fs::read(target.join("ca.crt")).unwrap())
            }
        };
        std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let mut args: Vec<std::ffi::OsString> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin_port}").into(),
            "--tls-cert".into(),
            dir.path().join("pki/tls.crt").into(),
            "--tls-key".into(),
            dir.path().join("pki/tls.key").into(),
            "--log-level".into(),
            "debug".into(),
        ];
        args.extend(extra_args.iter().map(Into::into));
        if !extra_args.contains(&"--policy-configmap") {
            args.push("--policy-file".into());
            args.push(dir.path().join("policy.yaml").into());
        }
        let env: Vec<(String, String)> = extra_env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect();
        let child = Self::spawn(dir.path(), &args, &env);
        let webhook = Self {
            child,
            port,
            admin_port,
            ca_bundle,
            args,
            env,
            dir,
        };
        webhook.wait_ready().await;
        webhook
    }

    fn spawn(
        dir: &std::path::Path,
        args: &[std::ffi::OsString],
        env: &[(String, String)],
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .unwrap();
        Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        while self.admin("/readyz").await.as_deref() != Some("ready\n") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "webhook not ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`TERM`, `KILL`) to the process.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {signal}");
    }

    /// Waits for the process to exit; its exit status, or `None` past `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Starts the process again with the same arguments, ports and files; waits until ready.
    async fn restart(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "restart after the process has exited"
        );
        self.child = Self::spawn(self.dir.path(), &self.args, &self.env);
        self.wait_ready().await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    async fn admin(&self, path: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
            .await
            .ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    /// The value of one metric series (its name with labels, as exposed), 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        let metrics = self.admin("/metrics").await.unwrap_or_default();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The directory holding this webhook's `tls.crt`, `tls.key` and `ca.crt`.
    fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Replaces the policy file (re-read within the reload interval).
    fn write_policy(&self, policy: &str) {
        let path = self.dir.path().join("policy.yaml");
        let staging = self.dir.path().join("policy.yaml.new");
        std::fs::write(&staging, policy).unwrap();
        std::fs::rename(staging, path).unwrap();
    }

    /// `spark_admission_requests_total` summed over all label sets.
    async fn requests(&self) -> u64 {
        let metrics = self.admin("/metrics").await.unwrap_or_default();
        metrics
            .lines()
            .filter(|l| l.starts_with("spark_admission_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- webhook log (port {}) ---\n{}", self.port, self.log());
        }
        self.stop();
    }
}

/// A MutatingWebhookConfiguration for one webhook process, scoped to one namespace; deleted
/// when dropped.
struct Registration {
    client: Client,
    name: String,
}

impl Registration {
    async fn create(
        client: &Client,
        name: &str,
        webhook: &Webhook,
        namespace: &TestNamespace,
        failure_policy: &str,
        reinvocation: &str,
    ) -> Self {
        Self::create_for(
            client,
            name,
            &format!("https://127.0.0.1:{}/mutate", webhook.port),
            &webhook.ca_bundle,
            namespace,
            failure_policy,
            reinvocation,
        )
        .await
    }

    /// A registration as the deploy manifests make it (`failurePolicy: Fail`,
    /// `reinvocationPolicy: IfNeeded`) calling `/mutate` on `balancer`, which passes each request
    /// on to one of several replicas whose CA is `ca_bundle`.
    async fn through_balancer(
        client: &Client,
        name: &str,
        balancer: &Haproxy,
        ca_bundle: &str,
        namespace: &TestNamespace,
    ) -> Self {
        Self::create_for(
            client,
            name,
            &format!("https://127.0.0.1:{}/mutate", balancer.port),
            ca_bundle,
            namespace,
            "Fail",
            "IfNeeded",
        )
        .await
    }

    /// Both entries deploy/ registers, named `<prefix>-pods` and `<prefix>-conf`: Spark pods on
    /// `/mutate`, ConfigMaps on `/mutate-spark-conf`, the latter with `failurePolicy: Fail` so
    /// that a webhook failure fails the submission loudly instead of storing the ConfigMap
    /// untouched.
    async fn pods_and_driver_configmaps(
        client: &Client,
        prefix: &str,
        webhook: &Webhook,
        namespace: &TestNamespace,
    ) -> (Self, Self) {
        let pods = Self::create(
            client,
            &format!("{prefix}-pods"),
            webhook,
            namespace,
            "Fail",
            "IfNeeded",
        )
        .await;
        let configmaps = Self::create_for_configmaps(
            client,
            &format!("{prefix}-conf"),
            &format!("https://127.0.0.1:{}/mutate-spark-conf", webhook.port),
            &webhook.ca_bundle,
            namespace,
            "Fail",
        )
        .await;
        (pods, configmaps)
    }

    /// Like [`Registration::create_for`], for CREATE of ConfigMaps (which carry no labels to
    /// select them by) instead of Spark pods.
    async fn create_for_configmaps(
        client: &Client,
        name: &str,
        url: &str,
        ca_bundle: &str,
        namespace: &TestNamespace,
        failure_policy: &str,
    ) -> Self {
        Self::register(
            client,
            name,
            url,
            ca_bundle,
            namespace,
            failure_policy,
            "Never",
            "configmaps",
        )
        .await
    }

    /// A registration calling `url` (a webhook, or a load balancer in front of several) with
    /// `ca_bundle` (base64 PEM).
    async fn create_for(
        client: &Client,
        name: &str,
        url: &str,
        ca_bundle: &str,
        namespace: &TestNamespace,
        failure_policy: &str,
        reinvocation: &str,
    ) -> Self {
        Self::register(
            client,
            name,
            url,
            ca_bundle,
            namespace,
            failure_policy,
            reinvocation,
            "pods",
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn register(
        client: &Client,
        name: &str,
        url: &str,
        ca_bundle: &str,
        namespace: &TestNamespace,
        failure_policy: &str,
        reinvocation: &str,
        resource: &str,
    ) -> Self {
        // Spark pods are selected by their label; ConfigMaps have none to select by.
        let object_selector = (resource == "pods").then(|| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "spark-role".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec!["driver".to_owned(), "executor".to_owned()]),
            }]),
            match_labels: None,
        });
        let configuration = MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            webhooks: Some(vec![MutatingWebhook {
                name: format!("{name}.spark-admission.io"),
                admission_review_versions: vec!["v1".to_owned()],
                client_config: WebhookClientConfig {
                    url: Some(url.to_owned()),
                    ca_bundle: Some(ByteString(base64_decode(ca_bundle))),
                    service: None,
                },
                failure_policy: Some(failure_policy.to_owned()),
                reinvocation_policy: Some(reinvocation.to_owned()),
                side_effects: "None".to_owned(),
                timeout_seconds: Some(5),
                object_selector,
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "e2e-test".to_owned(),
                        namespace.name.clone(),
                    )])),
                    match_expressions: None,
                }),
                // As deploy/base/mutatingwebhook.yaml: pods are guarded on UPDATE (and resize)
                // too, ConfigMaps only reviewed at creation.
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".to_owned()]),
                    operations: Some(if resource == "pods" {
                        vec!["CREATE".to_owned(), "UPDATE".to_owned()]
                    } else {
                        vec!["CREATE".to_owned()]
                    }),
                    resources: Some(if resource == "pods" {
                        vec!["pods".to_owned(), "pods/resize".to_owned()]
                    } else {
                        vec![resource.to_owned()]
                    }),
                    scope: Some("Namespaced".to_owned()),
                }]),
                match_policy: None,
                match_conditions: None,
            }]),
        };
        let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &configuration)
            .await
            .expect("register webhook");
        // The apiserver picks up webhook configurations through an informer.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Self {
            client: client.clone(),
            name: name.to_owned(),
        }
    }

    async fn set_failure_policy(&self, policy: &str) {
        let api = Api::<MutatingWebhookConfiguration>::all(self.client.clone());
        let mut current = api.get(&self.name).await.unwrap();
        if let Some(webhooks) = current.webhooks.as_mut() {
            webhooks[0].failure_policy = Some(policy.to_owned());
        }
        api.replace(&self.name, &PostParams::default(), &current)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "mutatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ])
            .output();
    }
}

/// A `spark-submit` against the test apiserver, in its own process group (the JVM and the
/// Python workers), stopped when dropped. Its output goes to a log file.
struct SparkSubmit {
    child: Child,
    log_path: PathBuf,
    exit: Option<std::process::ExitStatus>,
}

impl SparkSubmit {
    /// Client mode: this process is the driver, running tests/e2e/spark_job.py (which keeps
    /// the driver alive until stopped), and asks the apiserver for executor pods.
    fn client_mode(namespace: &str, name: &str, confs: &[(&str, &str)]) -> Self {
        let mut confs = confs.to_vec();
        confs.extend([
            ("spark.driver.host", "127.0.0.1"),
            ("spark.driver.bindAddress", "127.0.0.1"),
            ("spark.scheduler.minRegisteredResourcesRatio", "0"),
        ]);
        Self::start(namespace, name, "client", &confs, "tests/e2e/spark_job.py")
    }

    /// Cluster mode: spark-submit creates the driver pod, its Service and its ConfigMap, then
    /// returns (no kubelet runs the driver here).
    fn cluster_mode(namespace: &str, name: &str, confs: &[(&str, &str)]) -> Self {
        let mut confs = confs.to_vec();
        confs.push(("spark.kubernetes.submission.waitAppCompletion", "false"));
        Self::start(
            namespace,
            name,
            "cluster",
            &confs,
            "local:///opt/spark/examples/src/main/python/pi.py",
        )
    }

    fn start(namespace: &str, name: &str, mode: &str, confs: &[(&str, &str)], app: &str) -> Self {
        let token = format!(
            "spark.kubernetes.authenticate.oauthToken={}",
            env("E2E_ADMIN_TOKEN")
        );
        let namespace_conf = format!("spark.kubernetes.namespace={namespace}");
        let mut command = Self::command();
        command
            .args(["--master", &format!("k8s://{}", env("E2E_APISERVER_URL"))])
            .args(["--deploy-mode", mode, "--name", name])
            .args(["--conf", &token])
            .args(["--conf", "spark.kubernetes.trust.certificates=true"])
            .args(["--conf", &namespace_conf])
            .args([
                "--conf",
                "spark.kubernetes.container.image=apache/spark:4.0.0",
            ])
            .args(["--conf", "spark.ui.enabled=false"])
            .args([
                "--conf",
                "spark.kubernetes.executor.deleteOnTermination=false",
            ]);
        for (key, value) in confs {
            command.args(["--conf", &format!("{key}={value}")]);
        }
        command.arg(app);
        Self::spawn(command, &format!("{namespace}-{name}"))
    }

    /// What the Spark image's entrypoint runs in a cluster-mode driver pod: client mode with
    /// the driver's `spark.properties` (from its ConfigMap), run here since no kubelet runs the
    /// pod. Overrides only what differs outside a pod: the addresses, and the apiserver and
    /// token the driver would find in its service account (KUBECONFIG is unset so that the
    /// Kubernetes client takes them). The application is tests/e2e/spark_job.py, which keeps
    /// the driver alive.
    fn driver_from_properties(label: &str, properties: &std::path::Path) -> Self {
        let mut command = Self::command();
        command
            .args(["--conf", "spark.driver.bindAddress=127.0.0.1"])
            .args(["--conf", "spark.executorEnv.SPARK_DRIVER_POD_IP=127.0.0.1"])
            .args(["--deploy-mode", "client", "--properties-file"])
            .arg(properties)
            .args([
                "--conf",
                &format!(
                    "spark.kubernetes.driver.master={}",
                    env("E2E_APISERVER_URL")
                ),
            ])
            .args([
                "--conf",
                &format!(
                    "spark.kubernetes.authenticate.driver.mounted.oauthToken={}",
                    env("E2E_ADMIN_TOKEN")
                ),
            ])
            .args(["--class", "org.apache.spark.deploy.PythonRunner"])
            .arg("tests/e2e/spark_job.py")
            .env_remove("KUBECONFIG");
        Self::spawn(command, label)
    }

    /// `spark-submit` from the e2e venv, in a process group of its own.
    fn command() -> Command {
        let venv = PathBuf::from(
            std::env::var("E2E_VENV")
                .unwrap_or_else(|_| "/var/cache/spark-admission-e2e/venv".into()),
        );
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("setsid");
        command
            .arg(venv.join("bin/spark-submit"))
            .env("PATH", path)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env("PYSPARK_PYTHON", venv.join("bin/python"))
            .env("PYSPARK_DRIVER_PYTHON", venv.join("bin/python"));
        command
    }

    fn spawn(mut command: Command, label: &str) -> Self {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = std::env::temp_dir().join(format!("{label}-{run}-spark-submit.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spark-submit starts");
        Self {
            child,
            log_path,
            exit: None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The exit code once spark-submit has exited (-1 for a signal).
    fn exit_code(&mut self) -> Option<i32> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().unwrap();
        }
        self.exit.map(|status| status.code().unwrap_or(-1))
    }

    /// Waits at most `limit` for spark-submit to exit; its exit code, if it did.
    async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(code) = self.exit_code() {
                return Some(code);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// Stops the whole process group: TERM, then KILL after 10 s.
    fn stop(&mut self) {
        if self.exit_code().is_some() {
            return;
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let started = Instant::now();
        while self.exit_code().is_none() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.exit_code().is_none() {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for SparkSubmit {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- spark-submit log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// A CA and a serving certificate for 127.0.0.1 in `dir` (`spark-admission certs`); the
/// base64 caBundle for a webhook configuration.
fn development_pki(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["certs", "--dns", "127.0.0.1", "localhost", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Creates the pod of a fixture review as `name` in the namespace of `pods`.
async fn create_fixture(pods: &Api<Pod>, review: &str, name: &str) -> kube::Result<Pod> {
    let namespace = pods.namespace().unwrap_or("default").to_owned();
    pods.create(
        &PostParams::default(),
        &fixture_pod(review, &namespace, name),
    )
    .await
}

/// The pod of a fixture review, ready to create in `namespace`.
fn fixture_pod(review: &str, namespace: &str, name: &str) -> Pod {
    let review: Value = serde_json::from_str(review).unwrap();
    let mut pod: Pod = serde_json::from_value(review["request"]["object"].clone()).unwrap();
    pod.metadata.managed_fields = None;
    pod.metadata.namespace = Some(namespace.to_owned());
    pod.metadata.name = Some(name.to_owned());
    // The apiserver fills these again itself.
    if let Some(spec) = pod.spec.as_mut() {
        spec.priority = None;
        spec.preemption_policy = None;
    }
    pod
}

fn spark_container(pod: &Pod) -> &k8s_openapi::api::core::v1::Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .find(|c| c.name.starts_with("spark-kubernetes-"))
        .unwrap_or(&spec.containers[0])
}

fn labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

fn env_count(pod: &Pod, name: &str) -> usize {
    spark_container(pod)
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == name)
        .count()
}

fn toleration_count(pod: &Pod, key: &str) -> usize {
    pod.spec
        .as_ref()
        .unwrap()
        .tolerations
        .iter()
        .flatten()
        .filter(|t| t.key.as_deref() == Some(key))
        .count()
}

const POLICY: &str = r#"
rules:
  - name: cost-labels
    labels: {cost-center: "{namespace}", spark-app: "{app_name}"}
  - name: pool
    match: {roles: [executor]}
    nodeSelector: {pool: spark, disk: ssd}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions: [{key: node.kubernetes.io/instance-type, operator: In, values: [m5.2xlarge]}]
    tolerations:
      - {key: dedicated, operator: Equal, value: spark, effect: NoSchedule}
  - name: credentials
    env:
      - name: DB_PASS
        valueFrom: {secretKeyRef: {name: snowsec, key: db_pass}}
  - name: defaults
    resources:
      executor: {default: {limits: {cpu: "3"}}}
      driver: {default: {limits: {cpu: "2"}}}
"#;

fn assert_policy_applied(pod: &Pod, namespace: &str) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = labels(pod);
    assert_eq!(
        labels.get("cost-center"),
        Some(&namespace.to_owned()),
        "{name}"
    );
    // Every pod here is a fixture's or the e2e Spark job's, both of application nightly-etl.
    assert_eq!(
        labels.get("spark-app").map(String::as_str),
        Some("nightly-etl"),
        "{name}"
    );
    assert_eq!(
        annotation(pod, "spark-admission.io/policy-hash"),
        Some(support::policy_hash(POLICY)),
        "{name}"
    );
    assert_eq!(env_count(pod, "DB_PASS"), 1, "{name}");
    let spec = pod.spec.as_ref().unwrap();
    if labels.get("spark-role").map(String::as_str) == Some("executor") {
        assert_eq!(
            annotation(pod, "spark-admission.io/applied-rules").as_deref(),
            Some("cost-labels,pool,credentials,defaults")
        );
        let selector = spec.node_selector.clone().unwrap_or_default();
        assert_eq!(
            selector.get("pool").map(String::as_str),
            Some("spark"),
            "{name}"
        );
        assert_eq!(
            selector.get("disk").map(String::as_str),
            Some("ssd"),
            "{name}"
        );
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1, "{name}");
        assert_eq!(toleration_count(pod, "dedicated"), 1, "{name}");
        let limits = spark_container(pod)
            .resources
            .as_ref()
            .unwrap()
            .limits
            .clone()
            .unwrap_or_default();
        assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("3"), "{name}");
    }
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn fixture_pods_are_stored_with_the_policy_and_other_pods_never_reach_the_webhook() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "fixtures").await;
    let webhook = Webhook::start(POLICY).await;
    let _registration = Registration::create(
        &client,
        "e2e-fixtures",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);

    for (review, name) in [(EXECUTOR_REVIEW, "exec-1"), (DRIVER_REVIEW, "driver")] {
        create_fixture(&pods, review, name).await.expect("create");
        let stored = pods.get(name).await.unwrap();
        assert_policy_applied(&stored, &namespace.name);
    }
    let before = webhook.requests().await;
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &plain)
        .await
        .expect("create plain pod");
    let stored = pods.get("web").await.unwrap();
    assert_eq!(
        annotation(&stored, "spark-admission.io/applied-rules"),
        None
    );
    assert_eq!(labels(&stored).len(), 1);
    assert_eq!(
        webhook.requests().await,
        before,
        "a non-Spark pod never reaches the webhook"
    );
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn spark_submit_executors_carry_the_whole_policy_and_the_driver_keeps_running() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "spark").await;
    let webhook = Webhook::start(POLICY).await;
    let _registration = Registration::create(
        &client,
        "e2e-spark",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let mut spark = SparkSubmit::client_mode(
        &namespace.name,
        "nightly-etl",
        &[("spark.executor.instances", "3")],
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let started = Instant::now();
    let executors = loop {
        let list = pods
            .list(&ListParams::default().labels("spark-role=executor"))
            .await
            .unwrap();
        if list.items.len() >= 3 {
            break list.items;
        }
        if started.elapsed() > Duration::from_secs(120) || spark.exit_code().is_some() {
            panic!(
                "3 executor pods not created ({} found); spark-submit log:\n{}",
                list.items.len(),
                spark.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let still_running = spark.exit_code().is_none();
    spark.stop();
    assert!(
        still_running,
        "the driver process must keep running: {}",
        spark.log()
    );
    for pod in &executors {
        assert_eq!(
            labels(pod).get("spark-app").map(String::as_str),
            Some("nightly-etl")
        );
        assert_policy_applied(pod, &namespace.name);
    }
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn priority_class_from_the_policy_is_accepted_with_the_right_priority() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "priority").await;
    let class_name = format!("{}-batch", namespace.name);
    let class = PriorityClass {
        metadata: ObjectMeta {
            name: Some(class_name.clone()),
            ..ObjectMeta::default()
        },
        value: 4242,
        ..PriorityClass::default()
    };
    Api::<PriorityClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("priority class");
    let webhook = Webhook::start(&format!(
        "rules: [{{name: batch, priorityClassName: {class_name}}}]"
    ))
    .await;
    let _registration = Registration::create(
        &client,
        "e2e-priority",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    // As the apiserver sends it to webhooks, the pod already has priority 0 from the Priority
    // plugin (the fixture shows it); the webhook must make room for the class's value.
    create_fixture(&pods, EXECUTOR_REVIEW, "exec-1")
        .await
        .expect("the apiserver accepts the pod");
    let stored = pods.get("exec-1").await.unwrap();
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some(class_name.as_str())
    );
    assert_eq!(spec.priority, Some(4242));
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn a_policy_max_makes_the_apiserver_refuse_the_pod_with_the_webhooks_message() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "deny").await;
    let webhook =
        Webhook::start("rules: [{name: caps, resources: {executor: {max: {memory: 2Gi}}}}]").await;
    let _registration = Registration::create(
        &client, "e2e-deny", &webhook, &namespace, "Fail", "IfNeeded",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let error = create_fixture(&pods, EXECUTOR_REVIEW, "exec-1")
        .await
        .expect_err("denied");
    let message = error.to_string();
    assert!(
        message.contains("denied the request") && message.contains("container spark-kubernetes-executor requests memory 2432Mi, over the max 2Gi set by rule caps"),
        "{message}"
    );
    assert!(pods.get_opt("exec-1").await.unwrap().is_none());
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn with_the_webhook_down_fail_refuses_spark_pods_and_ignore_admits_them_unpatched() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "failure").await;
    let mut webhook = Webhook::start(POLICY).await;
    let registration = Registration::create(
        &client,
        "e2e-failure",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    webhook.stop();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let error = create_fixture(&pods, EXECUTOR_REVIEW, "exec-1")
        .await
        .expect_err("refused while the webhook is down");
    let message = error.to_string();
    assert!(
        message.contains("failed calling webhook")
            && message.contains("e2e-failure.spark-admission.io"),
        "{message}"
    );
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &plain)
        .await
        .expect("other pods are created normally");

    registration.set_failure_policy("Ignore").await;
    create_fixture(&pods, EXECUTOR_REVIEW, "exec-2")
        .await
        .expect("admitted with failurePolicy Ignore");
    let stored = pods.get("exec-2").await.unwrap();
    assert_eq!(
        annotation(&stored, "spark-admission.io/applied-rules"),
        None,
        "unpatched"
    );
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn reinvocation_after_a_second_webhook_stores_the_pod_once_without_duplicates() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "reinvoke").await;
    let ours = Webhook::start(POLICY).await;
    // A second mutating webhook that runs after ours (configurations are called in name order)
    // and changes the pod, so the apiserver reinvokes ours.
    let second = Webhook::start(
        "rules: [{name: second, labels: {second: 'yes'}, env: [{name: FROM_SECOND, value: '1'}], tolerations: [{key: second, operator: Exists}]}]",
    )
    .await;
    let _a =
        Registration::create(&client, "e2e-a-ours", &ours, &namespace, "Fail", "IfNeeded").await;
    let _b = Registration::create(
        &client,
        "e2e-b-second",
        &second,
        &namespace,
        "Fail",
        "Never",
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    create_fixture(&pods, EXECUTOR_REVIEW, "exec-1")
        .await
        .expect("create");
    let stored = pods.get("exec-1").await.unwrap();
    assert_policy_applied(&stored, &namespace.name);
    assert_eq!(
        labels(&stored).get("second").map(String::as_str),
        Some("yes")
    );
    assert_eq!(env_count(&stored, "FROM_SECOND"), 1);
    assert_eq!(toleration_count(&stored, "dedicated"), 1);
    assert_eq!(toleration_count(&stored, "second"), 1);
    assert_eq!(
        ours.requests().await,
        2,
        "ours was called, then reinvoked once"
    );
    assert_eq!(second.requests().await, 1);
    let all = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1, "stored once");
}

/// Creates `namespace` unless it exists.
async fn ensure_namespace(client: &Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 409 => {}
        Err(error) => panic!("create namespace {name}: {error}"),
    }
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// haproxy with the configuration `config(dir, port)` writes (`dir` for files it refers to,
/// `port` to listen on); stopped when dropped.
struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(config: impl FnOnce(&std::path::Path, u16) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config(dir.path(), port)).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("haproxy.log")).unwrap(),
            ))
            .spawn()
            .expect("haproxy starts (installed by tests/e2e/setup.sh)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "haproxy not listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kubeconfig in `dir` for the webhook's own service account (bound to deploy/'s RBAC).
fn webhook_kubeconfig(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("webhook.kubeconfig");
    let minified = kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "--context",
        "e2e-webhook-sa",
    ]);
    std::fs::write(&path, minified).unwrap();
    path
}

/// The policy ConfigMap as deploy/ ships it (no labels: it is known by namespace and name), or
/// with the `spark-admission.io/policy` label that earlier versions selected it by.
fn policy_configmap(version: &str, policy: &str, labelled: bool) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("spark-admission-policy".to_owned()),
            namespace: Some("spark-admission".to_owned()),
            labels: labelled.then(|| {
                BTreeMap::from([("spark-admission.io/policy".to_owned(), "true".to_owned())])
            }),
            annotations: Some(BTreeMap::from([(
                "e2e/version".to_owned(),
                version.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "policy.yaml".to_owned(),
            policy.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

async fn put_policy(client: &Client, version: &str, policy: &str) -> Result<(), kube::Error> {
    put_policy_with(client, version, policy, false).await
}

async fn put_policy_with(
    client: &Client,
    version: &str,
    policy: &str,
    labelled: bool,
) -> Result<(), kube::Error> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), "spark-admission");
    let mut config_map = policy_configmap(version, policy, labelled);
    match api.get_opt("spark-admission-policy").await? {
        Some(current) => {
            config_map.metadata.resource_version = current.metadata.resource_version;
            api.replace(
                "spark-admission-policy",
                &PostParams::default(),
                &config_map,
            )
            .await
            .map(|_| ())
        }
        None => api
            .create(&PostParams::default(), &config_map)
            .await
            .map(|_| ()),
    }
}

fn versioned_policy(version: &str) -> String {
    format!("rules: [{{name: versioned, labels: {{policy-version: {version}}}}}]")
}

/// Creates pods until one comes out with `policy-version: version`; returns how long it took.
async fn wait_for_policy(
    pods: &Api<Pod>,
    version: &str,
    counter: &mut u32,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        *counter += 1;
        let name = format!("exec-{counter}");
        create_fixture(pods, EXECUTOR_REVIEW, &name)
            .await
            .expect("create pod");
        let stored = pods.get(&name).await.unwrap();
        if labels(&stored).get("policy-version").map(String::as_str) == Some(version) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "policy {version} not in force after {limit:?}; pod has {:?}",
            labels(&stored)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct ValidatingRegistration {
    name: String,
}

impl ValidatingRegistration {
    async fn create(client: &Client, name: &str, webhook: &Webhook) -> Self {
        let configuration = ValidatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            webhooks: Some(vec![ValidatingWebhook {
                name: format!("{name}.spark-admission.io"),
                admission_review_versions: vec!["v1".to_owned()],
                client_config: WebhookClientConfig {
                    url: Some(format!(
                        "https://127.0.0.1:{}/validate-policy",
                        webhook.port
                    )),
                    ca_bundle: Some(ByteString(base64_decode(&webhook.ca_bundle))),
                    service: None,
                },
                failure_policy: Some("Fail".to_owned()),
                side_effects: "None".to_owned(),
                timeout_seconds: Some(5),
                // As deploy/base/validatingwebhook.yaml: the policy's namespace, by the label
                // Kubernetes 1.21+ puts on every namespace (set by hand on this 1.20 apiserver).
                // Its matchConditions on the name are left out: 1.20 has no such field, so the
                // server's own check of the name is what this test exercises.
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_owned(),
                        "spark-admission".to_owned(),
                    )])),
                    match_expressions: None,
                }),
                rules: Some(vec![RuleWithOperations {
                    api_groups: Some(vec![String::new()]),
                    api_versions: Some(vec!["v1".to_owned()]),
                    operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                    resources: Some(vec!["configmaps".to_owned()]),
                    scope: Some("Namespaced".to_owned()),
                }]),
                ..ValidatingWebhook::default()
            }]),
        };
        let api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &configuration)
            .await
            .expect("register validating webhook");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Self {
            name: name.to_owned(),
        }
    }
}

impl Drop for ValidatingRegistration {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "validatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ])
            .output();
    }
}

#[tokio::test]
#[ignore = "needs the e2e cluster: tests/e2e/run.sh"]
async fn policy_configmap_edits_apply_live_invalid_ones_are_refused_or_ignored_and_the_watch_survives_a_restart()
 {
    let client = client().await;
    ensure_namespace(&client, "spark-admission").await;
    // The webhook runs as its own user, bound to exactly the RBAC rules in deploy/.
    // Kubernetes 1.21+ sets this label on every namespace; the 1.20 test apiserver does not.
    kubectl(&[
        "label",
        "namespace",
        "spark-admission",
        "kubernetes.io/metadata.name=spark-admission",
        "--overwrite",
    ]);
    kubectl(&["apply", "-f", "deploy/base/rbac.yaml"]);
    // Labelled as earlier versions of deploy/ made it, so the edits below can drop the label.
    put_policy_with(&client, "v1", &versioned_policy("one"), true)
        .await
        .expect("initial policy");
    let kubeconfig_dir = tempfile::tempdir().unwrap();
    let webhook_kubeconfig = webhook_kubeconfig(kubeconfig_dir.path());
    let webhook = Webhook::start_with(
        "",
        &[
            "--policy-configmap",
            "spark-admission/spark-admission-policy",
        ],
        &[("KUBECONFIG", webhook_kubeconfig.display().to_string())],
    )
    .await;
    let namespace = TestNamespace::create(&client, "configmap").await;
    let _mutating = Registration::create(
        &client,
        "e2e-configmap",
        &webhook,
        &namespace,
        "Fail",
        "IfNeeded",
    )
    .await;
    let validating = ValidatingRegistration::create(&client, "e2e-validate-policy", &webhook).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace.name);
    let mut counter = 0;
    wait_for_policy(&pods, "one", &mut counter, Duration::from_secs(5)).await;

    // A valid edit is in force for pods created within 2 s.
    put_policy(&client, "v2", &versioned_policy("two"))
        .await
        .expect("valid edit");
    let took = wait_for_policy(&pods, "two", &mut counter, Duration::from_secs(2)).await;
    eprintln!("policy edit in force after {took:?}");

    // An invalid edit is refused at apply time with every error, though it also drops the
    // label the ConfigMap was once selected by.
    let invalid = "rules: [{name: Bad_Name, nodeSelectr: {pool: spark}}]";
    let error = put_policy(&client, "bad", invalid)
        .await
        .expect_err("refused by /validate-policy");
    let message = error.to_string();
    assert!(
        message.contains("rules[0].name") && message.contains("rules[0].nodeSelectr"),
        "{message}"
    );

    // Other ConfigMaps are not the policy, whatever their labels: stored without a look.
    let other = Api::<ConfigMap>::namespaced(client.clone(), "spark-admission");
    let mut decoy = policy_configmap("decoy", invalid, true);
    decoy.metadata.name = Some("not-the-policy".to_owned());
    let _ = other
        .delete("not-the-policy", &DeleteParams::default())
        .await;
    other
        .create(&PostParams::default(), &decoy)
        .await
        .expect("another ConfigMap is not checked");

    // Without the validating webhook it is stored, ignored, and reported as an Event.
    drop(validating);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    put_policy(&client, "bad", invalid)
        .await
        .expect("stored without the validating webhook");
    let events =
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "spark-admission");
    let started = Instant::now();
    loop {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=spark-admission-policy"))
            .await
            .unwrap();
        if let Some(event) = list
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some("InvalidPolicy"))
        {
            let note = event.message.clone().unwrap_or_default();
            assert!(note.contains("rules[0].nodeSelectr"), "{note}");
            assert_eq!(event.type_.as_deref(), Some("Warning"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no InvalidPolicy event; webhook log:\n{}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_policy(&pods, "two", &mut counter, Duration::from_secs(1)).await;
    let metrics = webhook.admin("/metrics").await.unwrap_or_default();
    assert!(
        metrics.contains("spark_admission_policy_reload_total{result=\"error\"} 1"),
        "{metrics}"
    );

    // The watch survives an apiserver restart.
    let restarted = Command::new("tests/e2e/cluster.sh")
        .args(["restart-apiserver", &env("E2E_DIR")])
        .output()
        .unwrap();
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let started = Instant::now();
    while put_policy(&client, "v3", &versioned_policy("three"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "apiserver did not come back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = wait_for_policy(&pods, "three", &mut counter, Duration::from_secs(30)).await;
    eprintln!("after the apiserver restart, policy edit in force after {took:?}");
    assert_eq!(
        webhook.admin("/readyz").await.as_deref(),
        Some("ready\n"),
        "still ready"
    );
}
