//! The load benchmark's baseline: the same TLS listener, HTTP stack, drain and admin port as
//! `spark-admission serve` (through `Server::run_with_app`), with a `POST /mutate` that reads
//! the body, parses the AdmissionReview and answers `allowed: true` with no patch. What
//! spark-admission costs beyond this is the cost of the policy.
//!
//! `--parse full` (the default) parses the review the way a webhook built on kube-rs does,
//! `AdmissionReview<Pod>` whole; `--parse lean` uses spark-admission's own parse, which skips
//! `metadata.managedFields`. Against the first, the ratio is spark-admission against a typical
//! do-nothing webhook; against the second, it is the cost of the policy alone. `--patch FILE`
//! answers with a fixed patch, for the apiserver benchmark.
//!
//! ```sh
//! cargo run --release --example baseline_server -- --listen 127.0.0.1:9443 \
//!     --admin-listen 127.0.0.1:9080 --tls-cert certs/tls.crt --tls-key certs/tls.key
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use spark_admission::admission::{self, ResponseReview};
use spark_admission::server::{MAX_BODY_BYTES, Options, Server};
use spark_admission::state::State;

// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9080")]
    admin_listen: SocketAddr,
    #[arg(long)]
    tls_cert: PathBuf,
    #[arg(long)]
    tls_key: PathBuf,
    #[arg(long, value_enum, default_value = "full")]
    parse: Parse,
    /// Answer every review with this JSON Patch (a file as `spark-admission mutate --patch`
    /// prints it) instead of no patch: what the apiserver's handling of a patch costs, apart
    /// from computing it.
    #[arg(long)]
    patch: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Parse {
    /// The whole `AdmissionReview<Pod>`, managedFields included.
    Full,
    /// spark-admission's parse: managedFields skipped.
    Lean,
}

async fn mutate(parse: Parse, patch: Option<Arc<str>>, body: Bytes) -> Response {
    let parsed = match parse {
        Parse::Full => admission::parse_review_of::<Pod>(&body),
        Parse::Lean => admission::parse_review(&body),
    };
    match parsed {
        Ok(request) => {
            let mut review = ResponseReview::allowed(&request.uid);
            if let Some(patch) = patch {
                review.response.patch = Some(patch.to_string());
                review.response.patch_type = Some("JSONPatch".to_owned());
            }
            let body = serde_json::to_vec(&review).expect("a response serialises");
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let patch: Option<Arc<str>> = match &args.patch {
        Some(path) => {
            let text = std::fs::read(path)?;
            let _: json_patch::Patch = serde_json::from_slice(&text)?;
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode(text)
                    .into(),
            )
        }
        None => None,
    };
    let state = Arc::new(State::new());
    // Ready at once: the admin port's /readyz answers 200 like a server with a policy.
    state.set_policy(spark_admission::Policy::builtin_example());
    let options = Options {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        client_ca: None,
        policy_file: None,
        policy_configmap: None,
        guarded_configmap: Default::default(),
        request_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(5),
        reload_interval: Duration::from_secs(1),
        shutdown_delay: Duration::ZERO,
        drain_timeout: Duration::from_secs(10),
        limits: spark_admission::server::Limits::default(),
    };
    let app = Router::new()
        .route(
            "/mutate",
            post(move |body| mutate(args.parse, patch.clone(), body)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::bind(options, state).await?;
        eprintln!(
            "baseline listening on {} (admin {})",
            server.webhook_addr()?,
            server.admin_addr()?
        );
        server
            .run_with_app(app, async {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await?;
        anyhow::Ok(())
    })
}
