//! The server: the TLS webhook listener, the plain-HTTP admin listener, the certificate (and
//! client CA) reload loops, and the graceful drain on shutdown; it starts the policy source ([`crate::source`]:
//! the file's polling loop or the ConfigMap watch) beside them.
//!
//! Nothing here is on the policy path: requests are answered by [`routes`] from the shared
//! [`State`], which background tasks update.

pub mod connection;
pub mod limits;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::policy::ConfigMapRef;
use crate::source::file::FilePolicySource;
use crate::state::State;

pub use limits::Limits;
pub use routes::{MAX_BODY_BYTES, admin_router, router, router_guarding, router_with_budget};
pub use tls::{CertificateStore, WebhookTls};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not bind.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate pair is unusable at start.
    #[error("failed to load the serving certificate: {0}")]
    Certificate(#[from] tls::Error),
    /// The client CA bundle is unusable at start.
    #[error("failed to load --client-ca: {0}")]
    ClientCa(#[source] tls::Error),
    /// No Kubernetes client could be made for the ConfigMap watch.
    #[error("failed to create a Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    Kubernetes(#[source] kube::Error),
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Webhook (HTTPS) address.
    pub listen: SocketAddr,
    /// Admin (HTTP) address.
    pub admin_listen: SocketAddr,
    /// Serving certificate (PEM).
    pub tls_cert: PathBuf,
    /// Serving key (PEM).
    pub tls_key: PathBuf,
    /// CA bundle (PEM) that webhook clients' certificates must chain to; `None` asks clients
    /// for no certificate.
    pub client_ca: Option<PathBuf>,
    /// Policy file, re-read on change; `None` uses the policy already in the state.
    pub policy_file: Option<PathBuf>,
    /// Policy ConfigMap, watched through the API (instead of a file).
    pub policy_configmap: Option<ConfigMapRef>,
    /// The ConfigMap whose edits `/validate-policy` refuses when they would not load:
    /// `--guard-configmap`, else the watched one, else the default with `--policy-key`.
    pub guarded_configmap: ConfigMapRef,
    /// Longest time to receive a request body.
    pub request_timeout: Duration,
    /// Longest time to complete a TLS handshake.
    pub handshake_timeout: Duration,
    /// How often certificate and policy files are checked for changes.
    pub reload_interval: Duration,
    /// After SIGTERM, how long to keep accepting while readiness is false (so load balancers
    /// stop sending first).
    pub shutdown_delay: Duration,
    /// After that, how long in-flight requests may take before the process exits anyway.
    pub drain_timeout: Duration,
    /// Caps on connections, requests and body bytes, and the idle timeouts.
    pub limits: Limits,
}

/// A server bound to its ports, not yet serving.
pub struct Server {
    options: Options,
    state: Arc<State>,
    webhook: TcpListener,
    admin: TcpListener,
    certificates: Arc<CertificateStore>,
    tls: Arc<WebhookTls>,
    policy_source: Option<FilePolicySource>,
    kube_client: std::result::Result<kube::Client, String>,
}

impl Server {
    /// Loads the certificate, binds both ports and reads the policy file once (an invalid
    /// policy leaves the server not ready; it keeps watching the file).
    pub async fn bind(options: Options, state: Arc<State>) -> Result<Self> {
        let (certificates, not_after) =
            CertificateStore::load(&options.tls_cert, &options.tls_key)?;
        state.metrics.certificate_expiry.set(not_after);
        Metrics::count_result(&state.metrics.certificate_reload, true);
        let certificates = Arc::new(certificates);
        let tls = match &options.client_ca {
            Some(path) => {
                let (tls, summary) = WebhookTls::with_client_ca(certificates.clone(), path)
                    .map_err(Error::ClientCa)?;
                Metrics::count_result(&state.metrics.client_ca_reload, true);
                tracing::info!(client_ca = %path.display(), certificates = summary.certificates, "webhook clients must present a certificate from the client CA");
                tls
            }
            None => WebhookTls::new(certificates.clone())?,
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let webhook = bind(options.listen).await?;
        let admin = bind(options.admin_listen).await?;
        let mut policy_source = options.policy_file.clone().map(FilePolicySource::new);
        if let Some(source) = policy_source.as_mut() {
            crate::source::log_policy_update(source.poll(&*state));
        }
        // The ConfigMap source cannot work without a client; quotas need one only when the
        // policy has some, which may come later, so a missing client is reported then.
        let kube_client = match kube::Client::try_default().await {
            Ok(client) => Ok(client),
            Err(error) if options.policy_configmap.is_some() => {
                return Err(Error::Kubernetes(error));
            }
            Err(error) => Err(error.to_string()),
        };
        Ok(Self {
            options,
            state,
            webhook,
            admin,
            certificates,
            tls: Arc::new(tls),
            policy_source,
            kube_client,
        })
    }

    /// The bound webhook address (useful with port 0).
    pub fn webhook_addr(&self) -> std::io::Result<SocketAddr> {
        self.webhook.local_addr()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` completes, then drains: readiness turns false, the listener
    /// keeps accepting for `shutdown_delay`, then stops; in-flight requests finish (at most
    /// `drain_timeout`), idle keep-alive connections are closed, and this returns.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let budget = Arc::new(limits::RequestBudget::new(
            &self.options.limits,
            &self.state.metrics,
        ));
        let app = router_guarding(
            self.state.clone(),
            self.options.request_timeout,
            budget,
            self.options.guarded_configmap.clone(),
        );
        self.run_with_app(app, shutdown).await
    }

    /// [`Server::run`] with another webhook application on the same TLS listener, HTTP stack,
    /// drain, reload loop and admin port. The load benchmark serves its `allowed: true`
    /// baseline through this (`examples/baseline_server.rs`), so the two differ only in the
    /// application.
    pub async fn run_with_app(
        self,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Self {
            options,
            state,
            webhook,
            admin,
            certificates,
            tls,
            policy_source,
            kube_client,
        } = self;
        let (limits, lowered) = options
            .limits
            .clone()
            .fit_open_files(limits::open_files_limit());
        if let Some(note) = lowered {
            tracing::warn!("{note}");
        }
        let options = Options { limits, ..options };
        let app = app.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            close_connections_when_draining,
        ));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let background = Background::spawn(
            &state,
            &options,
            &certificates,
            &tls,
            policy_source,
            kube_client,
            &stop_rx,
        );
        let timeouts = connection::Timeouts {
            first_request: options.limits.first_request_timeout,
            idle: options.limits.idle_timeout,
            drain_idle: Duration::ZERO,
            write: options.limits.write_timeout,
        };
        let admin_task = spawn_admin(
            admin,
            admin_router(state.clone()),
            limits::ConnectionCap::new(
                options.limits.admin_max_connections,
                "admin",
                &state.metrics,
            ),
            timeouts,
            state.clone(),
            stop_rx.clone(),
        )?;
        let settings = ConnectionSettings {
            tls: tls.clone(),
            app,
            handshake_timeout: options.handshake_timeout,
            timeouts,
            // An HTTP/1.1 connection gets half the drain to end itself (see `serve_connection`).
            http1_drain_idle: options.drain_timeout / 2,
            state: state.clone(),
        };
        let connections = TaskTracker::new();
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        // Accept until the shutdown signal, then, with readiness false, for `shutdown_delay`
        // more, so that clients which have not yet noticed keep being served.
        let stop_accepting = {
            let state = state.clone();
            let delay = options.shutdown_delay;
            async move {
                shutdown.await;
                state.begin_shutdown();
                tracing::info!(
                    ?delay,
                    "shutting down: readiness is false, still accepting during the delay"
                );
                tokio::time::sleep(delay).await;
            }
        };
        let webhook_cap =
            limits::ConnectionCap::new(options.limits.max_connections, "webhook", &state.metrics);
        accept_webhook_connections(
            webhook,
            webhook_cap,
            &settings,
            &connections,
            &drain_rx,
            stop_accepting,
        )
        .await;
        connections.close();
        tracing::info!(
            connections = connections.len(),
            "listener closed; draining in-flight requests"
        );
        let _ = drain_tx.send(true);
        if tokio::time::timeout(options.drain_timeout, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?options.drain_timeout, "drain timed out; exiting with requests in flight");
        }
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        background.join().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The server's background tasks: certificate and client CA reloads, the policy source, and
/// the watches feeding the state, each through its narrow handle. All stop when `stop` turns
/// true.
struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn spawn(
        state: &Arc<State>,
        options: &Options,
        certificates: &Arc<CertificateStore>,
        tls: &Arc<WebhookTls>,
        policy_source: Option<FilePolicySource>,
        kube_client: std::result::Result<kube::Client, String>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let mut tasks = vec![tokio::spawn(certificate_reload_loop(
            state.clone(),
            certificates.clone(),
            options.reload_interval,
            stop.clone(),
        ))];
        if tls.verifies_clients() {
            tasks.push(tokio::spawn(tls::watch_client_ca(
                tls.clone(),
                state.metrics.client_ca_reload.clone(),
                options.reload_interval,
                stop.clone(),
            )));
        }
        let policy_sink = || state.clone() as Arc<dyn crate::source::PolicySink>;
        if let Some(source) = policy_source {
            tasks.push(tokio::spawn(crate::source::file::watch(
                source,
                policy_sink(),
                options.reload_interval,
                stop.clone(),
            )));
        }
        let client = match kube_client {
            Ok(client) => client,
            Err(error) => {
                tracing::info!(%error, "no Kubernetes client: the cluster's global default PriorityClass is not known, so a policy's priorityClassName under merge does not replace it (a pod the apiserver gave that class keeps it, with a warning)");
                tasks.push(tokio::spawn(report_quotas_without_client(
                    state.clone(),
                    error,
                    stop.clone(),
                )));
                return Self { tasks };
            }
        };
        state.quotas.set_client(client.clone());
        state
            .quotas
            .set_home(client.clone(), options.guarded_configmap.namespace.clone());
        state.executor_templates.set_client(client.clone());
        state
            .gang_reads
            .set_client(client.clone(), options.guarded_configmap.namespace.clone());
        if let Some(queue) = state.driver_events.take_queue() {
            tasks.push(tokio::spawn(crate::events::send_with(
                client.clone(),
                queue,
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::quota::watch::run(
            client.clone(),
            state.clone() as Arc<dyn crate::quota::watch::LedgerSink>,
            stop.clone(),
        )));
        // Before the admin port serves, so readiness never reports ready without it.
        state.await_cluster_facts();
        tasks.push(tokio::spawn(crate::cluster::watch_priority_classes(
            client.clone(),
            state.cluster_facts_sender(),
            crate::cluster::FIRST_LISTING_WAIT,
            stop.clone(),
        )));
        if let Some(source) = options.policy_configmap.clone() {
            tracing::info!(configmap = %source, "watching the policy ConfigMap");
            tasks.push(tokio::spawn(crate::source::configmap::watch(
                client,
                source,
                policy_sink(),
                stop.clone(),
            )));
        }
        Self { tasks }
    }

    /// Waits for every task to end (after `stop`).
    async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What every webhook connection is served with.
#[derive(Clone)]
struct ConnectionSettings {
    // Asked for its acceptor at each connection: a reloaded client CA is in the next one.
    tls: Arc<WebhookTls>,
    app: axum::Router,
    handshake_timeout: Duration,
    timeouts: connection::Timeouts,
    /// How long an idle HTTP/1.1 connection is left to end itself once the drain begins.
    http1_drain_idle: Duration,
    state: Arc<State>,
}

/// Accepts webhook connections until `stop_accepting` completes, each served on its own task
/// in `connections`; then closes the listener.
async fn accept_webhook_connections(
    webhook: TcpListener,
    cap: limits::ConnectionCap,
    settings: &ConnectionSettings,
    connections: &TaskTracker,
    drain: &tokio::sync::watch::Receiver<bool>,
    stop_accepting: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop_accepting);
    loop {
        tokio::select! {
            accepted = webhook.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Over the cap, with no connection that holds nothing to give way, the
                    // socket is closed at once: the client sees the refusal in a round trip
                    // instead of waiting in the backlog.
                    let Some(slot) = cap.admit() else {
                        tracing::debug!(%peer, "webhook listener full; connection refused");
                        continue;
                    };
                    connections.spawn(serve_connection(
                        tcp,
                        peer,
                        settings.clone(),
                        drain.clone(),
                        slot,
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stop_accepting => break,
        }
    }
}

/// Once shutdown has begun, every HTTP/1.1 response says `Connection: close`, and the
/// connection closes after it. The apiserver talks HTTP/1.1 to admission webhooks and never
/// retries a POST that met a closed connection, so closing a keep-alive connection from this
/// side can fail a pod creation if a request crosses the close; this way each busy connection
/// ends in a way the client knows about, during the shutdown delay, while the proxy or Service
/// sends new connections to other replicas. Only connections idle for the whole delay are left
/// for the drain to close.
async fn close_connections_when_draining(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(request).await;
    if http1 && state.is_shutting_down() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// One webhook connection: TLS, then HTTP/1.1 or HTTP/2 (by ALPN) until the client closes it,
/// it sends no request in time, or the drain ends it. HTTP/2 gets a GOAWAY when the drain
/// begins (its clients retry what the server did not take). HTTP/1.1 has no such signal, and
/// the apiserver does not retry a POST that meets a closed connection, so an HTTP/1.1
/// connection is left to end itself (its next response says `Connection: close`, or the
/// client closes it) for half the drain timeout before the server closes it.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    settings: ConnectionSettings,
    drain: tokio::sync::watch::Receiver<bool>,
    slot: limits::ConnectionSlot,
) {
    let ConnectionSettings {
        tls,
        app,
        handshake_timeout,
        timeouts,
        http1_drain_idle,
        state,
    } = settings;
    let opened = tokio::time::Instant::now();
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(handshake_timeout, tls.acceptor().accept(tcp));
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) if tls::is_client_certificate_refusal(&error) => {
                state.metrics.client_certificates_refused.inc();
                tracing::debug!(%peer, %error, "TLS handshake refused: no client certificate from the client CA");
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        () = slot.evicted() => {
            tracing::debug!(%peer, "closing a connection still in its TLS handshake, to make room for a new one");
            return;
        }
    };
    // Where a caller comes from, at debug level: what a NetworkPolicy for the webhook port
    // has to let in (deploy/README.md, "Who can call the webhook").
    tracing::debug!(%peer, client = tls::client_subject(&tls).as_deref().unwrap_or("-"), "TLS handshake done");
    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let timeouts = connection::Timeouts {
        drain_idle: if http2 {
            Duration::ZERO
        } else {
            http1_drain_idle
        },
        ..timeouts
    };
    connection::serve(
        tls, peer, app, drain, timeouts, opened, state, "webhook", slot,
    )
    .await;
}

/// Runs the admin listener on a thread and runtime of its own, so that however busy the
/// webhook's workers are (a flood of TLS handshakes takes every CPU cycle they get), the
/// kubelet's probes are scheduled by the kernel beside them rather than queued behind them.
/// The returned receiver completes when the admin listener has stopped.
fn spawn_admin(
    listener: TcpListener,
    app: axum::Router,
    cap: limits::ConnectionCap,
    timeouts: connection::Timeouts,
    state: Arc<State>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::sync::oneshot::Receiver<()>> {
    let addr = listener.local_addr().ok();
    let bind_error = |source| Error::Bind {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        source,
    };
    // The listener is registered with the calling runtime; it moves to the admin runtime.
    let listener = listener.into_std().map_err(bind_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(bind_error)?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("admin".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve_admin(listener, app, cap, timeouts, state, stop).await,
                    Err(error) => tracing::error!(%error, "the admin listener could not start"),
                }
            });
            let _ = done_tx.send(());
        })
        .map_err(bind_error)?;
    Ok(done_rx)
}

/// The admin listener: plain HTTP, its own connection cap, the same timeouts; stops accepting
/// when `stop` turns true and lets its connections finish their requests.
async fn serve_admin(
    listener: TcpListener,
    app: axum::Router,
    cap: limits::ConnectionCap,
    timeouts: connection::Timeouts,
    state: Arc<State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let connections = TaskTracker::new();
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Some(slot) = cap.admit() else {
                        tracing::debug!(%peer, "admin listener full; connection refused");
                        continue;
                    };
                    let (app, drain, state) = (app.clone(), drain_rx.clone(), state.clone());
                    connections.spawn(async move {
                        let opened = tokio::time::Instant::now();
                        connection::serve(
                            tcp, peer, app, drain, timeouts, opened, state, "admin", slot,
                        )
                        .await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
        }
    }
    drop(listener);
    connections.close();
    let _ = drain_tx.send(true);
    // Probes and scrapes are short; one that hangs must not hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
}

/// Without a Kubernetes client there is no pod watch: a policy with quotas can never go into
/// force, and the log says why each time one arrives.
async fn report_quotas_without_client(
    state: Arc<State>,
    error: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wanted = state.quota_watch_wanted();
    loop {
        tokio::select! {
            changed = wanted.wait_for(Option::is_some) => if changed.is_err() { return },
            _ = stop.wait_for(|stop| *stop) => return,
        }
        tracing::error!(%error, "the policy has quotas, which count Spark pods through the Kubernetes API, but no client could be made (in-cluster config or KUBECONFIG); it is not put in force");
        tokio::select! {
            changed = wanted.wait_for(Option::is_none) => if changed.is_err() { return },
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Every `interval`: re-reads the certificate pair (the policy file has its own loop,
/// [`crate::source::file::watch`]), as [`tls::reload_loop`] does.
async fn certificate_reload_loop(
    state: Arc<State>,
    certificates: Arc<CertificateStore>,
    interval: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let metrics = &state.metrics;
    tls::reload_loop(
        certificates,
        interval,
        stop,
        |not_after| {
            metrics.certificate_expiry.set(not_after);
            Metrics::count_result(&metrics.certificate_reload, true);
            tracing::info!(not_after, "serving certificate reloaded");
        },
        |error| {
            Metrics::count_result(&metrics.certificate_reload, false);
            tracing::error!(%error, "new serving certificate refused; the old one stays");
        },
    )
    .await;
}
