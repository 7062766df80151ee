//! The command line: clap structs (their doc comments are the help text), dispatch to the
//! commands (one file each: [`serve`], [`mutate`], [`check`] with `usage` and `test`, and
//! [`kube_state_metrics`] for `check --kube-state-metrics`) and the log setup. Nothing here
//! decides anything about a pod.
//!
//! Exit codes are part of the contract: 0 success (for `mutate`: admitted), 1 bad input or
//! policy, 2 bad usage, 3 the pod would be denied. `test` has its own: 0 every case passed, 1
//! a case failed, 2 a suite could not be read or is invalid.

mod check;
mod input;
mod kube_state_metrics;
mod mutate;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Write a CA and a serving certificate signed by it, and print the caBundle; or with
    /// --client, a client CA and the client certificate the kube-apiserver presents to a
    /// server run with --client-ca.
    Certs(CertsArgs),
    /// Validate a policy file; prints every error with its path and exits 1, or a summary (or,
    /// with --kube-state-metrics, the pod labels for kube-state-metrics to expose).
    Check(CheckArgs),
    /// Apply a policy to one pod or driver ConfigMap (or its AdmissionReview) and print it
    /// mutated.
    Mutate(MutateArgs),
    /// Show, per quota, each namespace's and each application's usage against its limits,
    /// from the cluster's Spark pods (through KUBECONFIG) or a pod list.
    Usage(UsageArgs),
    /// Run policy test suites (*.test.yaml): each case's pod or driver ConfigMap goes through
    /// the webhook's review and its answer is checked. Exit 0 when every case passes, 1 when
    /// one fails, 2 when a suite cannot be read or is invalid.
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
    /// CA bundle (PEM) that callers of the webhook port must present a client certificate
    /// from, re-read when it changes: a client without one is refused in the TLS handshake,
    /// before any HTTP. Make the kube-apiserver present one with its AdmissionConfiguration
    /// (deploy/README.md); `certs --client` writes a CA and a client pair. With it, in-flight
    /// admissions also count against namespace quota limits (the callers are verified). The
    /// admin port is not affected.
    #[arg(long, env = "SPARK_ADMISSION_CLIENT_CA")]
    client_ca: Option<PathBuf>,
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
    /// credentials, else KUBECONFIG). Needs list/watch on that ConfigMap and create on
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
    /// Most connections the webhook port holds at once; past it, the connection that has held
    /// nothing useful the longest (in its handshake, no request yet, idle, or not taking its
    /// answer) gives way to the new one, and without one the new one is closed at accept
    /// (counted in spark_admission_connections_refused_total).
    #[arg(long, env = "SPARK_ADMISSION_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most webhook requests answered at once (a request takes its slot once its body is
    /// complete); past it, a request waits up to --queue-timeout (at most this many wait), then
    /// gets 503.
    #[arg(long, env = "SPARK_ADMISSION_MAX_REQUESTS_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_in_flight: u32,
    /// Most request body bytes held at once (e.g. 32Mi): charged as they arrive (a declared
    /// Content-Length reserves nothing), kept until the answer is handed over; a body with no
    /// room waits up to --queue-timeout, then gets 503.
    #[arg(long, env = "SPARK_ADMISSION_MAX_BODY_BYTES_IN_FLIGHT", default_value = "32Mi", value_parser = parse_bytes)]
    max_body_bytes_in_flight: usize,
    /// Longest wait for a request slot (taken once the body is complete) or for room for body
    /// bytes, before 503.
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
    /// Longest time an answer may take to be handed over once ready, and a socket write may
    /// stay blocked; past it the connection is closed (an HTTP/2 client that opens no window,
    /// a peer that stops reading). The apiserver stops waiting after the webhook's
    /// timeoutSeconds (5 in deploy/), so no write it still waits for is cut.
    #[arg(long, env = "SPARK_ADMISSION_WRITE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    write_timeout: Duration,
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
    /// Quotas, with `--client-ca`: when a namespace is within this many pods like the one
    /// admitted of a per-namespace limit, the decision is also made on the admissions every
    /// replica has in flight there (a Lease in the webhook's namespace, written with
    /// compare-and-swap), so namespace limits are exact across replicas.
    #[arg(
        long,
        env = "SPARK_ADMISSION_QUOTA_NAMESPACE_MARGIN",
        default_value_t = 20
    )]
    quota_namespace_margin: u32,
    /// Quotas: longest wait for that LIST, and for the admissions in flight near a namespace
    /// limit to be read and written; past it, this replica's own count decides.
    #[arg(long, env = "SPARK_ADMISSION_QUOTA_CONFIRM_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    quota_confirm_timeout: Duration,
    /// Gang admission: how long after its driver was created the room granted to a
    /// cluster-mode submission's minimum executors is held for them (it is released earlier
    /// as they appear).
    #[arg(long, env = "SPARK_ADMISSION_QUOTA_GANG_EXPIRY", default_value = "5m", value_parser = parse_duration)]
    quota_gang_expiry: Duration,
    /// Quotas: pods per page of the pod watch's initial LIST. Smaller pages lower the memory
    /// peak of a (re)start for more LIST calls (BENCHMARKS.md, "Scale: 100,000 tracked pods").
    #[arg(long, env = "SPARK_ADMISSION_QUOTA_WATCH_PAGE_SIZE", default_value_t = crate::quota::watch::PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    quota_watch_page_size: u32,
}

#[derive(Debug, clap::Args)]
struct CertsArgs {
    /// DNS names (or IP addresses) of the serving certificate, e.g.
    /// spark-admission.spark-admission.svc.
    #[arg(long, required_unless_present = "client", num_args = 1..)]
    dns: Vec<String>,
    /// Instead of a serving pair: a new client CA and a client certificate with this common
    /// name (e.g. kube-apiserver), written as client-ca.crt, client-ca.key, client.crt and
    /// client.key. `serve --client-ca` takes client-ca.crt; the kube-apiserver presents
    /// client.crt and client.key (deploy/README.md).
    #[arg(long, value_name = "NAME", conflicts_with = "dns")]
    client: Option<String>,
    /// Directory for ca.crt, ca.key, tls.crt and tls.key (with --client: client-ca.crt,
    /// client-ca.key, client.crt and client.key).
    #[arg(long)]
    out: PathBuf,
    /// Validity of the serving (or client) certificate, in days.
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
    /// Instead of the summary, print the value of kube-state-metrics'
    /// --metric-labels-allowlist for the pod labels the policy sets, plus spark-role,
    /// spark-app-selector and spark-app-name (`pods=[...]`, sorted), and on standard error the
    /// `label_...` name kube-state-metrics gives each on kube_pod_labels. Exits 1 if two keys
    /// would become the same Prometheus label.
    #[arg(long)]
    kube_state_metrics: bool,
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
    /// A pod or a cluster-mode driver's ConfigMap (spark-drv-<id>-conf-map), YAML or JSON, or
    /// an AdmissionReview of either; - for standard input.
    input: PathBuf,
    /// Namespace for an object that names none (an AdmissionReview's own namespace wins).
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Output format of the mutated object.
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    output: OutputFormat,
    /// Print the JSON Patch the webhook would answer with, instead of the object.
    #[arg(long, conflicts_with = "diff")]
    patch: bool,
    /// Print a readable diff from the object to the mutated object, instead of the object.
    #[arg(long)]
    diff: bool,
    /// The cluster's Spark pods to evaluate quotas against, as a pod list (JSON or YAML, e.g.
    /// `kubectl get pods -A -l spark-role -o json > pods.json`): a pod's quotas, or the room a
    /// driver ConfigMap's executor counts are fitted to. Without it, quotas are not evaluated.
    #[arg(long)]
    pods: Option<PathBuf>,
    /// The cluster's global default PriorityClass (`globalDefault: true`), which the apiserver
    /// writes into a pod naming no class before webhooks run: a pod with it then counts as
    /// having no class under merge, as in the server (which watches PriorityClasses). Without
    /// it, no global default is known.
    #[arg(long, value_name = "NAME")]
    global_default_priority_class: Option<String>,
    /// The cluster's Kubernetes version (`1.29`, `v1.30.2`), which the server reads from the
    /// apiserver's `/version`: from 1.29 a rule's sidecars are native (init containers with
    /// `restartPolicy: Always`). Without it the version is not known and sidecars are appended
    /// to `spec.containers`, as on older clusters.
    #[arg(long, value_name = "VERSION", value_parser = parse_kubernetes_version)]
    kubernetes_version: Option<crate::engine::KubernetesVersion>,
}

fn parse_kubernetes_version(text: &str) -> Result<crate::engine::KubernetesVersion, String> {
    crate::engine::KubernetesVersion::parse(text).ok_or_else(|| {
        format!("{text:?} is not a Kubernetes version; write MAJOR.MINOR, such as 1.29 or v1.30.2")
    })
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
    /// The directory whose files suites may read (what a suite names must resolve inside it,
    /// links followed); by default the current directory. The suites named on the command
    /// line may be anywhere.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => report(serve::serve(*args)),
        Command::Certs(args) => report(serve::certs(&args)),
        Command::Check(args) => report(check::check(&args)),
        Command::Mutate(args) => report(mutate::mutate(&args)),
        Command::Usage(args) => report(check::usage(&args)),
        Command::Test(args) => report(check::test(&args)),
    }
}

/// The error and its causes, each said once. This crate's errors carry their cause in their own
/// message too (so that a log line or an HTTP answer is whole on its own), so printing the
/// chain as anyhow's `{:#}` does would repeat every cause.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
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
