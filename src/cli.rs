//! The command line: clap structs (their doc comments are the help text) and the commands.
//!
//! Exit codes are part of the contract: 0 success (for `mutate`: admitted), 1 bad input or
//! policy, 2 bad usage, 3 the pod would be denied. `test` has its own: 0 every case passed, 1
//! a case failed, 2 a suite could not be read or is invalid.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::engine::{self, RequestContext};
use crate::policy::Policy;

/// Applies one cluster policy to every Apache Spark driver and executor pod: a Kubernetes
/// mutating admission webhook and the tools to check and try its policy.
#[derive(Debug, Parser)]
#[command(name = "spark-admission", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the webhook server (HTTPS) and its admin port (HTTP: /healthz, /readyz, /metrics).
    Serve(Box<ServeArgs>),
    /// Write a CA and a serving certificate signed by it, and print the caBundle.
    Certs(CertsArgs),
    /// Validate a policy file; prints every error with its path and exits 1, or a summary.
    Check(CheckArgs),
    /// Apply a policy to one pod (or AdmissionReview) and print the mutated pod.
    Mutate(MutateArgs),
    /// Show, per quota, each namespace's and each application's usage against its limits,
    /// from the cluster's Spark pods (through KUBECONFIG) or a pod list.
    Usage(UsageArgs),
    /// Run policy test suites (*.test.yaml): each case's pod goes through the webhook's review
    /// and its answer is checked. Exit 0 when every case passes, 1 when one fails, 2 when a
    /// suite cannot be read or is invalid.
    Test(TestArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Webhook (HTTPS) address.
    #[arg(long, env = "SPARK_ADMISSION_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Admin (plain HTTP) address: /healthz, /readyz, /metrics.
    #[arg(
        long,
        env = "SPARK_ADMISSION_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    admin_listen: SocketAddr,
    /// Serving certificate (PEM), re-read when it changes. Without --tls-cert and --tls-key, a
    /// development CA and certificate for localhost are generated into --certs-dir (kept if
    /// present).
    #[arg(long, env = "SPARK_ADMISSION_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Serving private key (PEM), re-read when it changes.
    #[arg(long, env = "SPARK_ADMISSION_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where development certificates are kept when no --tls-cert is given.
    #[arg(long, env = "SPARK_ADMISSION_CERTS_DIR", default_value = "certs")]
    certs_dir: PathBuf,
    /// Policy file (YAML or JSON; a mounted ConfigMap works), re-read when it changes. Without
    /// it, the built-in example policy is used.
    #[arg(
        long,
        env = "SPARK_ADMISSION_POLICY_FILE",
        conflicts_with = "policy_configmap"
    )]
    policy_file: Option<PathBuf>,
    /// Policy ConfigMap as NAMESPACE/NAME, watched through the Kubernetes API (in-cluster
    /// credentials, else KUBECONFIG). Needs get/list/watch on that ConfigMap and create on
    /// events.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_CONFIGMAP", value_parser = parse_configmap)]
    policy_configmap: Option<(String, String)>,
    /// The policy ConfigMap that /validate-policy guards, as NAMESPACE/NAME: every CREATE and
    /// UPDATE of it is checked, whatever its labels; other ConfigMaps are allowed unread.
    /// Default: --policy-configmap if given, else spark-admission/spark-admission-policy (what
    /// deploy/ mounts for --policy-file).
    #[arg(long, env = "SPARK_ADMISSION_GUARD_CONFIGMAP", value_parser = parse_configmap)]
    guard_configmap: Option<(String, String)>,
    /// ConfigMap data key that holds the policy (for --policy-configmap and /validate-policy).
    #[arg(
        long,
        env = "SPARK_ADMISSION_POLICY_KEY",
        default_value = "policy.yaml"
    )]
    policy_key: String,
    /// Log format.
    #[arg(
        long,
        env = "SPARK_ADMISSION_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "SPARK_ADMISSION_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Longest time to receive a request body (the apiserver's webhook timeout is 5s at most
    /// in the deploy manifests).
    #[arg(long, env = "SPARK_ADMISSION_REQUEST_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Longest time for a TLS handshake (a request's headers are bounded by
    /// --first-request-timeout and --idle-timeout).
    #[arg(long, env = "SPARK_ADMISSION_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// How often the certificate and policy files are checked for changes.
    #[arg(long, env = "SPARK_ADMISSION_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    reload_interval: Duration,
    /// After SIGTERM, how long to keep serving with readiness false before closing the
    /// listener (set it to the time endpoints take to update, e.g. 5s, in a cluster).
    #[arg(long, env = "SPARK_ADMISSION_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    shutdown_delay: Duration,
    /// Longest time in-flight requests may take to finish after the listener closed.
    #[arg(long, env = "SPARK_ADMISSION_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Most connections the webhook port holds at once; past it, new connections are closed at
    /// accept (counted in spark_admission_connections_refused_total).
    #[arg(long, env = "SPARK_ADMISSION_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most webhook requests in flight at once; past it, a request waits up to
    /// --queue-timeout (at most this many wait), then gets 503.
    #[arg(long, env = "SPARK_ADMISSION_MAX_REQUESTS_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_in_flight: u32,
    /// Most request body bytes held at once (e.g. 32Mi); a request reserves its
    /// Content-Length before its body is read, and waits or gets 503 like the above.
    #[arg(long, env = "SPARK_ADMISSION_MAX_BODY_BYTES_IN_FLIGHT", default_value = "32Mi", value_parser = parse_bytes)]
    max_body_bytes_in_flight: usize,
    /// Longest wait for a request slot or body bytes before 503.
    #[arg(long, env = "SPARK_ADMISSION_QUEUE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    queue_timeout: Duration,
    /// A connection (either port) that sends no request this long after it opened (after
    /// TLS) is closed.
    #[arg(long, env = "SPARK_ADMISSION_FIRST_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    first_request_timeout: Duration,
    /// A keep-alive connection (either port) with no request in flight is closed after this
    /// long; above the apiserver's own 90s, so the apiserver closes its idle connections first.
    #[arg(long, env = "SPARK_ADMISSION_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Most connections the admin port holds at once (kubelet probes, Prometheus).
    #[arg(long, env = "SPARK_ADMISSION_ADMIN_MAX_CONNECTIONS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    admin_max_connections: u32,
    /// Quotas: how long a pod this replica admitted counts before the pod watch shows it (a
    /// pod a later admission step refused stops counting after this).
    #[arg(long, env = "SPARK_ADMISSION_QUOTA_RESERVATION_TTL", default_value = "30s", value_parser = parse_duration)]
    quota_reservation_ttl: Duration,
    /// Quotas: when an application is within this many pods of a per-application limit, its
    /// pods are counted with a consistent LIST before deciding, so the limit is exact across
    /// replicas.
    #[arg(
        long,
        env = "SPARK_ADMISSION_QUOTA_CONFIRM_MARGIN",
        default_value_t = 10
    )]
    quota_confirm_margin: u32,
    /// Quotas: longest wait for that LIST; past it, this replica's own count decides.
    #[arg(long, env = "SPARK_ADMISSION_QUOTA_CONFIRM_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    quota_confirm_timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct CertsArgs {
    /// DNS names (or IP addresses) of the serving certificate, e.g.
    /// spark-admission.spark-admission.svc.
    #[arg(long, required = true, num_args = 1..)]
    dns: Vec<String>,
    /// Directory for ca.crt, ca.key, tls.crt and tls.key.
    #[arg(long)]
    out: PathBuf,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

/// Parses `NAMESPACE/NAME`.
fn parse_configmap(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

/// Parses a byte count: `1048576`, `512Ki`, `32Mi`, `1Gi`.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count; use e.g. 1048576, 512Ki, 32Mi"))?;
    let scale: usize = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("{text:?} has unit {unit:?}; use Ki, Mi or Gi")),
    };
    value
        .checked_mul(scale)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} must be above zero and fit in memory"))
}

/// Parses `500ms`, `3s`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 500ms, 3s, 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" | "" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("{text:?} has unit {unit:?}; use ms, s or m")),
    }
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The policy file (YAML or JSON), or - for standard input.
    policy: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
struct MutateArgs {
    /// The policy file (YAML or JSON).
    #[arg(long, short = 'p')]
    policy: PathBuf,
    /// A pod (YAML or JSON) or an AdmissionReview; - for standard input.
    input: PathBuf,
    /// Namespace for a pod that names none (an AdmissionReview's own namespace wins).
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Output format of the mutated pod.
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    output: OutputFormat,
    /// Print the JSON Patch the webhook would answer with, instead of the pod.
    #[arg(long, conflicts_with = "diff")]
    patch: bool,
    /// Print a readable diff from the pod to the mutated pod, instead of the pod.
    #[arg(long)]
    diff: bool,
    /// The cluster's Spark pods to evaluate quotas against, as a pod list (JSON or YAML, e.g.
    /// `kubectl get pods -A -l spark-role -o json > pods.json`). Without it, quotas are not
    /// evaluated.
    #[arg(long)]
    pods: Option<PathBuf>,
    /// The cluster's global default PriorityClass (`globalDefault: true`), which the apiserver
    /// writes into a pod naming no class before webhooks run: a pod with it then counts as
    /// having no class under merge, as in the server (which watches PriorityClasses). Without
    /// it, no global default is known.
    #[arg(long, value_name = "NAME")]
    global_default_priority_class: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum UsageFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
struct UsageArgs {
    /// The policy file (YAML or JSON) whose quotas to report.
    #[arg(long, short = 'p')]
    policy: PathBuf,
    /// Read the pods from this pod list (JSON or YAML) instead of the cluster.
    #[arg(long)]
    pods: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: UsageFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TestFormat {
    /// One line per case, a diff under each failure, then the counts.
    Text,
    /// JUnit XML on standard output (the text report goes to standard error).
    Junit,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Suite files, or directories searched recursively for files named *.test.yaml or
    /// *.test.yml.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Report format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: TestFormat,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => report(serve(*args)),
        Command::Certs(args) => report(certs(&args)),
        Command::Check(args) => report(check(&args)),
        Command::Mutate(args) => report(mutate(&args)),
        Command::Usage(args) => report(usage(&args)),
        Command::Test(args) => report(test(&args)),
    }
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("--log-level {level:?} is not a level or tracing filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("failed to set up logging: {e}"))
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format, &args.log_level)?;
    let (tls_cert, tls_key) = match (args.tls_cert.clone(), args.tls_key.clone()) {
        (Some(cert), Some(key)) => (cert, key),
        _ => development_certificates(&args.certs_dir)?,
    };
    let state = Arc::new(crate::state::State::with_quota_options(
        args.policy_key.clone(),
        crate::quota::Options {
            reservation_ttl: args.quota_reservation_ttl,
            confirm_margin: args.quota_confirm_margin,
            confirm_timeout: args.quota_confirm_timeout,
        },
    ));
    if let Some((namespace, name)) = args
        .guard_configmap
        .clone()
        .or_else(|| args.policy_configmap.clone())
    {
        state
            .policy_configmap
            .set(crate::source::configmap::ConfigMapRef {
                namespace,
                name,
                key: args.policy_key.clone(),
            });
    }
    if args.policy_file.is_none() && args.policy_configmap.is_none() {
        let policy = Policy::builtin_example();
        tracing::info!(policy = %policy.summary(), "no --policy-file: using the built-in example policy");
        state.set_policy(policy);
    }
    let options = crate::server::Options {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls_cert,
        tls_key,
        policy_file: args.policy_file.clone(),
        policy_configmap: args.policy_configmap.clone().map(|(namespace, name)| {
            crate::source::configmap::ConfigMapRef {
                namespace,
                name,
                key: args.policy_key.clone(),
            }
        }),
        request_timeout: args.request_timeout,
        handshake_timeout: args.handshake_timeout,
        reload_interval: args.reload_interval,
        shutdown_delay: args.shutdown_delay,
        drain_timeout: args.drain_timeout,
        limits: crate::server::Limits {
            max_connections: args.max_connections as usize,
            max_requests_in_flight: args.max_requests_in_flight as usize,
            max_body_bytes_in_flight: args.max_body_bytes_in_flight,
            queue_timeout: args.queue_timeout,
            first_request_timeout: args.first_request_timeout,
            idle_timeout: args.idle_timeout,
            admin_max_connections: args.admin_max_connections as usize,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let server = crate::server::Server::bind(options, state).await?;
        let webhook = server.webhook_addr()?;
        let admin = server.admin_addr()?;
        tracing::info!(%webhook, %admin, "listening");
        if args.tls_cert.is_none() {
            tracing::info!(
                "try it: curl --cacert {}/{} -H 'Content-Type: application/json' --data @tests/fixtures/spark-4.3/executor-review.json https://localhost:{}/mutate",
                args.certs_dir.display(),
                crate::certs::CA_CERT_FILE,
                webhook.port()
            );
        }
        server.run(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The development pair in `dir`, generated for localhost when missing.
fn development_certificates(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join(crate::certs::CERT_FILE);
    let key = dir.join(crate::certs::KEY_FILE);
    if cert.exists() && key.exists() {
        tracing::info!(cert = %cert.display(), "using the development certificate already in place");
    } else {
        let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
        crate::certs::generate(&names, 365)?.write(dir)?;
        tracing::info!(dir = %dir.display(), "generated a development CA and a certificate for localhost");
    }
    Ok((cert, key))
}

fn certs(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let generated = crate::certs::generate(&args.dns, args.days)?;
    generated.write(&args.out)?;
    eprintln!(
        "wrote {dir}/{ca}, {dir}/{ca_key}, {dir}/{cert}, {dir}/{key}; the caBundle for the webhook configuration:",
        dir = args.out.display(),
        ca = crate::certs::CA_CERT_FILE,
        ca_key = crate::certs::CA_KEY_FILE,
        cert = crate::certs::CERT_FILE,
        key = crate::certs::KEY_FILE,
    );
    println!("{}", generated.ca_bundle());
    Ok(ExitCode::SUCCESS)
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("failed to read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
    }
}

/// Loads and validates a policy file; on failure prints every problem and returns `None`.
fn load_policy(path: &Path) -> anyhow::Result<Option<Policy>> {
    let text = read_input(path)?;
    match Policy::parse(&text) {
        Ok(policy) => Ok(Some(policy)),
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            Ok(None)
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    println!("{}: ok, {}", args.policy.display(), policy.summary());
    Ok(ExitCode::SUCCESS)
}

/// A document read as JSON when it is JSON (exact, fast), else as YAML.
fn parse_document(text: &str) -> anyhow::Result<Value> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(_) => crate::policy::from_yaml(text)
            .map_err(|e| anyhow::anyhow!("input is neither JSON nor YAML: {e}")),
    }
}

/// The pod to mutate, with what the request says about it.
struct Input {
    pod: Value,
    namespace: String,
    operation: String,
}

fn read_pod_input(args: &MutateArgs) -> anyhow::Result<Input> {
    let document = parse_document(&read_input(&args.input)?)?;
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Pod");
    match kind {
        "AdmissionReview" => {
            let request = document
                .get("request")
                .context("AdmissionReview has no request")?;
            let pod = request
                .get("object")
                .filter(|o| !o.is_null())
                .context("AdmissionReview request has no object")?
                .clone();
            let namespace = request
                .get("namespace")
                .and_then(Value::as_str)
                .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
                .unwrap_or(&args.namespace)
                .to_owned();
            let operation = request
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("CREATE")
                .to_owned();
            Ok(Input {
                pod,
                namespace,
                operation,
            })
        }
        "Pod" => {
            let namespace = document
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&args.namespace)
                .to_owned();
            Ok(Input {
                pod: document,
                namespace,
                operation: "CREATE".to_owned(),
            })
        }
        other => bail!("input is a {other}; expected a Pod or an AdmissionReview"),
    }
}

fn mutate(args: &MutateArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    let input = read_pod_input(args)?;
    let quota_pods = match &args.pods {
        Some(path) => Some(read_pod_list(path)?),
        None => {
            if !policy.quotas.is_empty() {
                let names: Vec<&str> = policy.quotas.iter().map(|q| q.name.as_str()).collect();
                eprintln!(
                    "note: quotas ({}) need the cluster's Spark pods and are not evaluated; give them with --pods",
                    names.join(", ")
                );
            }
            None
        }
    };
    let mut pod: Pod =
        serde_json::from_value(input.pod.clone()).context("input is not a valid pod")?;
    pod.metadata.managed_fields = None;

    let evaluation = if input.operation == "CREATE" {
        engine::evaluate(
            &pod,
            &RequestContext {
                namespace: input.namespace.clone(),
                cluster: engine::ClusterFacts {
                    global_default_priority_class: args.global_default_priority_class.clone(),
                },
            },
            &policy,
        )
    } else {
        eprintln!(
            "operation {} is allowed unchanged; only CREATE is mutated",
            input.operation
        );
        None
    };
    let patch = match evaluation {
        None => {
            if input.operation == "CREATE" {
                eprintln!(
                    "not a Spark pod (no spark-role label of driver or executor): allowed unchanged"
                );
            }
            json_patch::Patch(Vec::new())
        }
        Some(evaluation) => {
            eprintln!(
                "{} pod in namespace {}; rules applied: {}",
                evaluation.role,
                input.namespace,
                if evaluation.applied_rules.is_empty() {
                    "none".to_owned()
                } else {
                    evaluation.applied_rules.join(", ")
                }
            );
            for warning in &evaluation.warnings {
                eprintln!("warning: {warning}");
            }
            if let Some(denial) = &evaluation.denial {
                eprintln!("denied: {denial}");
                return Ok(ExitCode::from(3));
            }
            if let Some(ledger) = quota_pods {
                let claim = crate::quota::Claim::new(
                    &policy,
                    &evaluation.spark,
                    &evaluation.desired,
                    "mutate",
                );
                match claim {
                    None => eprintln!("quotas: none applies to this pod"),
                    Some(claim) => {
                        let names: Vec<&str> = claim
                            .quotas
                            .iter()
                            .filter_map(|&i| policy.quotas.get(i))
                            .map(|q| q.name.as_str())
                            .collect();
                        let decision = crate::quota::Tracker::offline(ledger).admit_locally(
                            &policy.quotas,
                            &claim,
                            true,
                        );
                        if !decision.admitted() {
                            for violation in &decision.violations {
                                eprintln!("denied: {violation}");
                            }
                            return Ok(ExitCode::from(3));
                        }
                        eprintln!("quotas: within {} with these pods", names.join(", "));
                    }
                }
            }
            crate::patch::diff(pod, evaluation.desired)?
        }
    };

    let mut out = std::io::stdout().lock();
    if args.patch {
        writeln!(out, "{}", serde_json::to_string_pretty(&patch)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The apiserver applies the patch to the pod as it sent it; so does this.
    let mut mutated = input.pod.clone();
    json_patch::patch(&mut mutated, &patch)
        .context("failed to apply the patch to the input pod")?;
    if args.diff {
        let color = out.is_terminal() && std::env::var_os("NO_COLOR").is_none();
        write!(
            out,
            "{}",
            readable_diff(&to_yaml(&input.pod)?, &to_yaml(&mutated)?, color)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    match args.output {
        OutputFormat::Yaml => write!(out, "{}", to_yaml(&mutated)?)?,
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&mutated)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A ledger of the live Spark pods in a pod list (a `List`/`PodList` with `items`, a JSON
/// array, or a single pod), as the server's watch would hold them.
fn read_pod_list(path: &Path) -> anyhow::Result<crate::quota::Ledger> {
    let document = parse_document(&read_input(path)?)
        .with_context(|| format!("{} is not a pod list", path.display()))?;
    let pods = crate::suite::pod_list(document)
        .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))?;
    Ok(crate::quota::watch::ledger_of(&pods))
}

fn usage(args: &UsageArgs) -> anyhow::Result<ExitCode> {
    let Some(policy) = load_policy(&args.policy)? else {
        return Ok(ExitCode::from(1));
    };
    if policy.quotas.is_empty() {
        eprintln!("{}: the policy has no quotas", args.policy.display());
        return Ok(ExitCode::SUCCESS);
    }
    let ledger = match &args.pods {
        Some(path) => read_pod_list(path)?,
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            runtime.block_on(crate::quota::watch::list_cluster())?
        }
    };
    let rows = crate::quota::report::usage(&policy, &ledger, true);
    let mut out = std::io::stdout().lock();
    match args.output {
        UsageFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        UsageFormat::Table => write!(out, "{}", usage_table(&rows))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per quota and scope; each limit as `used/limit (percent)`.
fn usage_table(rows: &[crate::quota::report::ScopeUsage]) -> String {
    const RESOURCES: [&str; 4] = ["applications", "executors", "cpu", "memory"];
    let mut table = vec![vec![
        "QUOTA".to_owned(),
        "NAMESPACE".to_owned(),
        "APPLICATION".to_owned(),
        "APPLICATIONS".to_owned(),
        "EXECUTORS".to_owned(),
        "CPU".to_owned(),
        "MEMORY".to_owned(),
    ]];
    for row in rows {
        let application = match (&row.application, &row.application_name) {
            (Some(id), Some(name)) => format!("{id} ({name})"),
            (Some(id), None) => id.clone(),
            (None, _) => "-".to_owned(),
        };
        let mut line = vec![row.quota.clone(), row.namespace.clone(), application];
        for resource in RESOURCES {
            line.push(
                row.measures
                    .iter()
                    .find(|m| m.resource == resource)
                    .map_or_else(
                        || "-".to_owned(),
                        |m| format!("{}/{} ({:.0}%)", m.used, m.limit, m.ratio * 100.0),
                    ),
            );
        }
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|column| {
            table
                .iter()
                .map(|line| line[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    if rows.is_empty() {
        text.push_str("(no Spark pods in the namespaces the quotas select)\n");
    }
    text
}

fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let (reports, totals) = crate::suite::run_paths(&args.paths);
    let text = crate::suite::text_report(&reports, totals);
    match args.output {
        TestFormat::Text => {
            print!("{text}");
            std::io::stdout().flush()?;
        }
        TestFormat::Junit => {
            eprint!("{text}");
            let mut out = std::io::stdout().lock();
            write!(out, "{}", crate::suite::junit::write(&reports))?;
            out.flush()?;
        }
    }
    Ok(ExitCode::from(totals.exit_code()))
}

fn to_yaml(value: &Value) -> anyhow::Result<String> {
    serde_saphyr::to_string(value).context("failed to write YAML")
}

/// A unified diff with three lines of context, coloured for terminals.
fn readable_diff(before: &str, after: &str, color: bool) -> String {
    let diff = similar::TextDiff::from_lines(before, after);
    let mut text = String::new();
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let header = hunk.header().to_string();
        text.push_str(&paint(&format!("{header}\n"), "36", color));
        for change in hunk.iter_changes() {
            let (sign, code) = match change.tag() {
                similar::ChangeTag::Delete => ("-", "31"),
                similar::ChangeTag::Insert => ("+", "32"),
                similar::ChangeTag::Equal => (" ", ""),
            };
            let line = format!("{sign}{}", change.value());
            let line = if line.ends_with('\n') {
                line
            } else {
                format!("{line}\n")
            };
            text.push_str(&paint(&line, code, color && !code.is_empty()));
        }
    }
    text
}

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        let body = text.trim_end_matches('\n');
        format!("\x1b[{code}m{body}\x1b[0m\n")
    } else {
        text.to_owned()
    }
}
