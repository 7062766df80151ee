//! Creates Spark executor pods through a kube-apiserver as fast as `--concurrency` allows and
//! reports pod creations per second and the p50/p99 of each create call: the figure a Spark
//! dynamic-allocation burst sees, with or without a mutating webhook in the path.
//!
//! ```sh
//! KUBECONFIG=... cargo run --release --example pod_churn -- --namespace bench --pods 500
//! ```
//!
//! The pod is the real executor fixture's (`tests/fixtures/spark-4.3/executor-review.json`),
//! managedFields and priority stripped, with a unique name per pod. `--warmup` pods are created
//! first and not measured. `--apps N` spreads the pods over N applications (the
//! `spark-app-selector` label), for a cluster that looks busy to the quota watch. Prints one
//! human line on stderr and one JSON object on stdout. Used by `benches/apiserver.sh`,
//! `benches/quota_memory.sh` and `QUOTAS=1 QUOTA_PODS=N benches/load.sh`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

const EXECUTOR_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/executor-review.json");

#[derive(Parser)]
struct Args {
    /// Namespace to create the pods in (must exist).
    #[arg(long)]
    namespace: String,
    /// Measured pods.
    #[arg(long, default_value_t = 500)]
    pods: usize,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Unmeasured pods first.
    #[arg(long, default_value_t = 30)]
    warmup: usize,
    /// Name prefix of the pods (unique per run).
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Spread the pods over this many Spark applications (`spark-app-selector` values), as
    /// a busy cluster's pods are; 1 keeps the fixture's application for every pod.
    #[arg(long, default_value_t = 1)]
    apps: usize,
    /// A label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

fn template(namespace: &str) -> Pod {
    let review: serde_json::Value = serde_json::from_slice(EXECUTOR_REVIEW).unwrap();
    let mut pod: Pod = serde_json::from_value(review["request"]["object"].clone()).unwrap();
    pod.metadata.managed_fields = None;
    pod.metadata.namespace = Some(namespace.to_owned());
    pod.metadata.generate_name = None;
    pod.metadata.uid = None;
    pod.metadata.resource_version = None;
    pod.metadata.creation_timestamp = None;
    if let Some(spec) = pod.spec.as_mut() {
        // The apiserver fills these from the priority class.
        spec.priority = None;
        spec.preemption_policy = None;
    }
    pod.status = None;
    pod
}

async fn create_all(
    api: &Api<Pod>,
    template: &Pod,
    prefix: &str,
    count: usize,
    concurrency: usize,
    apps: usize,
) -> (Vec<Duration>, u64, Option<String>) {
    let prefix_hash = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        prefix.hash(&mut hasher);
        hasher.finish()
    };
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (api, template, prefix) = (api.clone(), template.clone(), prefix.to_owned());
        let (next, errors, first_error) = (next.clone(), errors.clone(), first_error.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let mut pod = template.clone();
                pod.metadata.name = Some(format!("{prefix}-{i}"));
                if apps > 1 {
                    // Spark's application ids are `spark-` and 32 hex digits; the prefix's
                    // hash keeps the applications of separate runs apart.
                    let app = format!("spark-{:016x}{:016x}", prefix_hash, i % apps);
                    if let Some(labels) = pod.metadata.labels.as_mut() {
                        labels.insert("spark-app-selector".to_owned(), app);
                    }
                }
                let started = Instant::now();
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(error) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| error.to_string());
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let first = first_error.lock().unwrap().clone();
    (all, errors.load(Ordering::Relaxed), first)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let api = Api::<Pod>::namespaced(client, &args.namespace);
    let template = template(&args.namespace);

    let (_, warmup_errors, warmup_error) = create_all(
        &api,
        &template,
        &format!("{}-warmup", args.prefix),
        args.warmup,
        args.concurrency,
        args.apps,
    )
    .await;
    anyhow::ensure!(
        args.warmup == 0 || warmup_errors < args.warmup as u64,
        "every warmup create failed: {}",
        warmup_error.unwrap_or_default()
    );

    let started = Instant::now();
    let (mut latencies, errors, first_error) = create_all(
        &api,
        &template,
        &args.prefix,
        args.pods,
        args.concurrency,
        args.apps,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let report = serde_json::json!({
        "label": args.label,
        "namespace": args.namespace,
        "pods": args.pods,
        "created": latencies.len(),
        "errors": errors,
        "first_error": first_error,
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "creates_per_s": latencies.len() as f64 / elapsed,
        "p50_ms": percentile(&latencies, 50.0),
        "p90_ms": percentile(&latencies, 90.0),
        "p99_ms": percentile(&latencies, 99.0),
        "max_ms": latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
    });
    eprintln!(
        "{}: {} pods in {:.2} s: {:.0} creates/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, errors {}{}",
        args.label,
        latencies.len(),
        elapsed,
        report["creates_per_s"].as_f64().unwrap_or(f64::NAN),
        report["p50_ms"].as_f64().unwrap_or(f64::NAN),
        report["p90_ms"].as_f64().unwrap_or(f64::NAN),
        report["p99_ms"].as_f64().unwrap_or(f64::NAN),
        errors,
        first_error
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    );
    println!("{report}");
    Ok(())
}
