//! `serve`: turns the command line into the server's options and state, starts the runtime and
//! waits for SIGTERM; and `certs`, which writes the certificates a deployment serves with.
//!
//! Nothing here answers a request: that is [`crate::server`]'s job, with the state built here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::{CertsArgs, ServeArgs, init_logging};
use crate::policy::{ConfigMapRef, Policy};

/// Runs the webhook until SIGTERM or SIGINT.
pub(super) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format, &args.log_level)?;
    let (tls_cert, tls_key) = match (args.tls_cert.clone(), args.tls_key.clone()) {
        (Some(cert), Some(key)) => (cert, key),
        _ => development_certificates(&args.certs_dir)?,
    };
    let state = crate::state::State::with_quota_options(crate::quota::Options {
        reservation_ttl: args.quota_reservation_ttl,
        confirm_margin: args.quota_confirm_margin,
        confirm_timeout: args.quota_confirm_timeout,
        namespace_margin: args.quota_namespace_margin,
        gang_expiry: args.quota_gang_expiry,
        watch_page_size: args.quota_watch_page_size,
        // A client certificate from the client CA is what makes a caller the apiserver.
        verified_callers: args.client_ca.is_some(),
    });
    let configmap = |(namespace, name): (String, String)| ConfigMapRef {
        namespace,
        name,
        key: args.policy_key.clone(),
    };
    let guarded_configmap = args
        .guard_configmap
        .clone()
        .or_else(|| args.policy_configmap.clone())
        .map(configmap)
        .unwrap_or_else(|| ConfigMapRef::default_with_key(args.policy_key.clone()));
    let state = Arc::new(state);
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
        client_ca: args.client_ca.clone(),
        policy_file: args.policy_file.clone(),
        policy_configmap: args.policy_configmap.clone().map(configmap),
        guarded_configmap,
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
            write_timeout: args.write_timeout,
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

/// Writes a CA and a serving certificate signed by it, and prints the caBundle; or with
/// `--client`, a client CA and a client certificate signed by it.
pub(super) fn certs(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.client {
        crate::certs::generate_client(name, args.days)?.write_client(&args.out)?;
        eprintln!(
            "wrote {dir}/{ca}, {dir}/{ca_key}, {dir}/{cert}, {dir}/{key}: give {dir}/{ca} to `serve --client-ca`, and {cert} and {key} to the kube-apiserver's webhook kubeconfig (deploy/README.md); keep {ca_key} off the cluster",
            dir = args.out.display(),
            ca = crate::certs::CLIENT_CA_CERT_FILE,
            ca_key = crate::certs::CLIENT_CA_KEY_FILE,
            cert = crate::certs::CLIENT_CERT_FILE,
            key = crate::certs::CLIENT_KEY_FILE,
        );
        return Ok(ExitCode::SUCCESS);
    }
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
