//! The webhook listener's TLS: the serving certificate and, with `serve --client-ca`, the CA
//! bundle that callers' client certificates must chain to. Both are loaded from PEM files,
//! swapped in place when the files change, and kept when a new file is bad.
//!
//! Each TLS handshake asks the store for the current pair, so a new certificate applies to new
//! connections at once while established connections keep theirs: rotation drops nothing. The
//! client CA works the same way one level up: each new connection takes the rustls
//! configuration in force when it arrives ([`WebhookTls::acceptor`]), and a new bundle swaps
//! in a new configuration. A client without a certificate from that CA is refused inside the
//! handshake, so nothing it sends ever reaches HTTP. This module never reads a request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::files::FileWatch;
use crate::metrics::{Metrics, ResultLabels};

/// Errors loading a certificate pair.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("failed to read certificate files: {0}")]
    Read(#[source] std::io::Error),
    /// The certificate file holds no PEM certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    /// The certificate PEM is broken.
    #[error("failed to parse certificate {path}: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The key PEM is broken or not a private key.
    #[error("failed to parse private key {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (unsupported key, or key and certificate do not match).
    #[error("certificate and key cannot be used together: {0}")]
    Pair(#[source] rustls::Error),
    /// The certificate could not be read as X.509 for its expiry.
    #[error("failed to read the certificate's expiry: {0}")]
    Expiry(String),
    /// The client CA file could not be read.
    #[error("failed to read the client CA bundle: {0}")]
    ReadClientCa(#[source] std::io::Error),
    /// The client CA file is not PEM.
    #[error("failed to parse the client CA bundle {path}: {source}")]
    ClientCaPem {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate of the client CA bundle cannot be a trust anchor.
    #[error("the client CA bundle {path}: certificate {number} {reason}")]
    ClientCaCertificate {
        /// The file.
        path: PathBuf,
        /// Its position in the file, from 1.
        number: usize,
        /// What is wrong, with the certificate's subject where it could be read.
        reason: String,
    },
    /// rustls refused to build a verifier from the bundle.
    #[error("the client CA bundle {path} cannot verify client certificates: {source}")]
    ClientVerifier {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loaded pair and its expiry.
struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: i64,
}

/// The current serving pair, reloadable.
pub struct CertificateStore {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    watch: std::sync::Mutex<FileWatch>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl std::fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish()
    }
}

/// What a reload found: of the serving pair (`T` is the new certificate's expiry, a Unix
/// timestamp) or of the client CA bundle (`T` is a [`ClientCaSummary`]).
#[derive(Debug)]
pub enum Reload<T> {
    /// The files did not change.
    Unchanged,
    /// What they hold now is in force for new connections.
    Reloaded(T),
    /// The files changed but what they hold is bad; the old stays in force.
    Failed(Error),
}

/// Files the TLS configuration is read from, re-read by [`reload_loop`].
pub trait Reloadable: Send + Sync + 'static {
    /// What a good new read brings, for the log and the metrics.
    type Loaded: Send + 'static;
    /// Re-reads the files; puts what they hold in force when it changed and is good.
    fn reload_if_changed(&self) -> Reload<Self::Loaded>;
    /// Forgets what was last read, so the next reload re-reads and re-checks the files even
    /// when they did not change (to retry files caught half-written).
    fn forget_last_read(&self);
}

/// Every `interval`, until `stop`: re-reads `files`, calling `reloaded` with what a good new
/// read brings and `refused` with why a bad one was refused. A write of several files (or an
/// in-place write of one) may be caught half done, so a failed read is read again on the next
/// tick before it is called bad, and the same failure is reported once. Reading files blocks,
/// so it runs on the blocking pool, away from the workers answering reviews.
pub async fn reload_loop<R: Reloadable>(
    files: Arc<R>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut reloaded: impl FnMut(R::Loaded),
    mut refused: impl FnMut(&Error),
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retrying = false;
    let mut last_reported: Option<String> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let tick = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || files.reload_if_changed())
        };
        let outcome = match tick.await {
            Ok(outcome) => outcome,
            Err(error) => {
                // Only a panic gets here; the files are shared, so the next tick reads again.
                tracing::error!(%error, "re-reading TLS files failed; trying again at the next interval");
                continue;
            }
        };
        match outcome {
            Reload::Unchanged => {}
            Reload::Reloaded(loaded) => {
                retrying = false;
                last_reported = None;
                reloaded(loaded);
            }
            Reload::Failed(_) if !retrying => {
                retrying = true;
                files.forget_last_read();
            }
            Reload::Failed(error) => {
                retrying = false;
                let message = error.to_string();
                if last_reported.as_ref() != Some(&message) {
                    refused(&error);
                    last_reported = Some(message);
                }
            }
        }
    }
}

impl CertificateStore {
    /// Loads the pair; fails when it is unusable. Returns the store and the expiry.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<(Self, i64)> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut watch = FileWatch::new(vec![cert_path.to_owned(), key_path.to_owned()]);
        let contents = watch.changed().map_err(Error::Read)?.unwrap_or_default();
        let loaded = parse_pair(&provider, &contents, cert_path, key_path)?;
        Ok((
            Self {
                provider,
                current: RwLock::new(loaded.key),
                watch: std::sync::Mutex::new(watch),
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
            },
            loaded.not_after,
        ))
    }

    /// Re-reads the files; swaps in a new good pair, keeps the old one on a bad pair.
    pub fn reload_if_changed(&self) -> Reload<i64> {
        let changed = match self.watch.lock() {
            Ok(mut watch) => watch.changed(),
            Err(poisoned) => poisoned.into_inner().changed(),
        };
        let contents = match changed {
            Ok(None) => return Reload::Unchanged,
            Ok(Some(contents)) => contents,
            Err(e) => return Reload::Failed(Error::Read(e)),
        };
        match parse_pair(&self.provider, &contents, &self.cert_path, &self.key_path) {
            Ok(loaded) => {
                match self.current.write() {
                    Ok(mut current) => *current = loaded.key,
                    Err(poisoned) => *poisoned.into_inner() = loaded.key,
                }
                Reload::Reloaded(loaded.not_after)
            }
            Err(error) => Reload::Failed(error),
        }
    }

    /// Forgets what was last read, so the next reload re-reads and re-checks the files even
    /// when they did not change (used to retry a pair caught half-written).
    pub fn forget_last_read(&self) {
        let paths = vec![self.cert_path.clone(), self.key_path.clone()];
        match self.watch.lock() {
            Ok(mut watch) => *watch = FileWatch::new(paths),
            Err(poisoned) => *poisoned.into_inner() = FileWatch::new(paths),
        }
    }

    /// A rustls server configuration that takes its certificate from this store: TLS 1.2 and
    /// 1.3, ALPN h2 and http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>> {
        self.server_config_verifying(None)
    }

    /// [`CertificateStore::server_config`], requiring a client certificate that `verifier`
    /// accepts when one is given.
    fn server_config_verifying(
        self: &Arc<Self>,
        verifier: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::Pair)?;
        let verifying = verifier.is_some();
        let mut config = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        }
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if verifying {
            // A resumed session skips certificate verification: the client's chain comes from
            // the session, checked against the CA in force back then. The apiserver never
            // resumes (Go's client keeps no session cache unless told to), so every
            // connection gets a full handshake against the current bundle, at no cost.
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}

/// The webhook listener's rustls configuration: the serving certificate from a
/// [`CertificateStore`] and, with a client CA, mandatory client certificates.
pub struct WebhookTls {
    certificates: Arc<CertificateStore>,
    client_ca: Option<ClientCa>,
    config: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for WebhookTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTls")
            .field("certificates", &self.certificates)
            .field("client_ca", &self.client_ca.as_ref().map(|ca| &ca.path))
            .finish()
    }
}

/// The client CA bundle file and what was last read from it.
struct ClientCa {
    path: PathBuf,
    watch: Mutex<FileWatch>,
}

/// What a client CA bundle held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCaSummary {
    /// CA certificates in the bundle.
    pub certificates: usize,
    /// The earliest expiry among them, as a Unix timestamp.
    pub not_after: i64,
}

impl WebhookTls {
    /// Serves `certificates` and asks for no client certificate.
    pub fn new(certificates: Arc<CertificateStore>) -> Result<Self> {
        let config = certificates.server_config_verifying(None)?;
        Ok(Self {
            certificates,
            client_ca: None,
            config: RwLock::new(config),
        })
    }

    /// Serves `certificates` and requires every client to present a certificate that chains
    /// to a CA of the PEM bundle `client_ca`; fails when the bundle is unusable.
    pub fn with_client_ca(
        certificates: Arc<CertificateStore>,
        client_ca: &Path,
    ) -> Result<(Self, ClientCaSummary)> {
        let mut watch = FileWatch::new(vec![client_ca.to_owned()]);
        let contents = watch
            .changed()
            .map_err(Error::ReadClientCa)?
            .unwrap_or_default();
        let (verifier, summary) = parse_client_ca(&certificates.provider, &contents, client_ca)?;
        let config = certificates.server_config_verifying(Some(verifier))?;
        Ok((
            Self {
                certificates,
                client_ca: Some(ClientCa {
                    path: client_ca.to_owned(),
                    watch: Mutex::new(watch),
                }),
                config: RwLock::new(config),
            },
            summary,
        ))
    }

    /// Whether clients must present a certificate.
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    /// An acceptor with the configuration in force, for one new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.config.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Re-reads the client CA bundle; a good new one applies to new connections, a bad one
    /// leaves the old one in force.
    pub fn reload_client_ca_if_changed(&self) -> Reload<ClientCaSummary> {
        let Some(client_ca) = &self.client_ca else {
            return Reload::Unchanged;
        };
        let changed = match client_ca.watch.lock() {
            Ok(mut watch) => watch.changed(),
            Err(poisoned) => poisoned.into_inner().changed(),
        };
        let contents = match changed {
            Ok(None) => return Reload::Unchanged,
            Ok(Some(contents)) => contents,
            Err(error) => return Reload::Failed(Error::ReadClientCa(error)),
        };
        let parsed = parse_client_ca(&self.certificates.provider, &contents, &client_ca.path)
            .and_then(|(verifier, summary)| {
                Ok((
                    self.certificates.server_config_verifying(Some(verifier))?,
                    summary,
                ))
            });
        match parsed {
            Ok((config, summary)) => {
                match self.config.write() {
                    Ok(mut current) => *current = config,
                    Err(poisoned) => *poisoned.into_inner() = config,
                }
                Reload::Reloaded(summary)
            }
            Err(error) => Reload::Failed(error),
        }
    }

    /// Forgets what was last read of the client CA bundle, so the next reload re-reads and
    /// re-checks it even when it did not change (used to retry a file caught half-written).
    pub fn forget_client_ca_read(&self) {
        if let Some(client_ca) = &self.client_ca {
            let fresh = FileWatch::new(vec![client_ca.path.clone()]);
            match client_ca.watch.lock() {
                Ok(mut watch) => *watch = fresh,
                Err(poisoned) => *poisoned.into_inner() = fresh,
            }
        }
    }
}

/// The subject of the client certificate `stream`'s peer presented, if any (for logs: which
/// caller a connection came from).
pub fn client_subject<IO>(stream: &tokio_rustls::server::TlsStream<IO>) -> Option<String> {
    let leaf = stream.get_ref().1.peer_certificates()?.first()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(certificate.subject().to_string())
}

/// Whether a failed handshake was a client refused for its certificate: none presented, or
/// one that does not chain to the client CA (unknown issuer, expired, not for client auth).
pub fn is_client_certificate_refusal(error: &std::io::Error) -> bool {
    let Some(error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    // On the server side the only certificate verified is the client's.
    matches!(
        error,
        rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)
    )
}

impl Reloadable for CertificateStore {
    type Loaded = i64;

    fn reload_if_changed(&self) -> Reload<i64> {
        CertificateStore::reload_if_changed(self)
    }

    fn forget_last_read(&self) {
        CertificateStore::forget_last_read(self);
    }
}

impl Reloadable for WebhookTls {
    type Loaded = ClientCaSummary;

    fn reload_if_changed(&self) -> Reload<ClientCaSummary> {
        self.reload_client_ca_if_changed()
    }

    fn forget_last_read(&self) {
        self.forget_client_ca_read();
    }
}

/// Every `interval`, re-reads the client CA bundle of `tls` (a no-op without one), until
/// `stop`, as [`reload_loop`] does; reloads are counted in `reloads` (`ok`, `error`).
pub async fn watch_client_ca(
    tls: Arc<WebhookTls>,
    reloads: Family<ResultLabels, Counter>,
    interval: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if !tls.verifies_clients() {
        return;
    }
    let refusals = reloads.clone();
    reload_loop(
        tls,
        interval,
        stop,
        |summary: ClientCaSummary| {
            Metrics::count_result(&reloads, true);
            tracing::info!(
                certificates = summary.certificates,
                not_after = summary.not_after,
                "client CA bundle reloaded; new connections are verified against it"
            );
        },
        |error| {
            Metrics::count_result(&refusals, false);
            tracing::error!(%error, "new client CA bundle refused; the old one stays");
        },
    )
    .await;
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

fn parse_pair(
    provider: &CryptoProvider,
    contents: &[Vec<u8>],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Loaded> {
    let (cert_pem, key_pem) = match contents {
        [cert, key] => (cert.as_slice(), key.as_slice()),
        _ => return Err(Error::NoCertificate(cert_path.to_owned())),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Certificate {
            path: cert_path.to_owned(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(Error::NoCertificate(cert_path.to_owned()));
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| Error::Expiry(e.to_string()))?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| Error::Key {
        path: key_path.to_owned(),
        source,
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(Error::Pair)?;
    Ok(Loaded {
        key: Arc::new(certified),
        not_after,
    })
}

/// A verifier requiring a client certificate chaining to one of the CA certificates in
/// `contents` (the one file's bytes), and what the bundle held.
fn parse_client_ca(
    provider: &Arc<CryptoProvider>,
    contents: &[Vec<u8>],
    path: &Path,
) -> Result<(Arc<dyn ClientCertVerifier>, ClientCaSummary)> {
    let pem = contents.first().map(Vec::as_slice).unwrap_or_default();
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::ClientCaPem {
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(Error::NoCertificate(path.to_owned()));
    }
    let refuse = |number: usize, reason: String| Error::ClientCaCertificate {
        path: path.to_owned(),
        number,
        reason,
    };
    let mut roots = RootCertStore::empty();
    let mut not_after = i64::MAX;
    for (index, certificate) in certificates.into_iter().enumerate() {
        let number = index + 1;
        let (_, x509) = x509_parser::parse_x509_certificate(&certificate)
            .map_err(|e| refuse(number, format!("is not an X.509 certificate: {e}")))?;
        // A leaf given by mistake (the apiserver's own client certificate, or the serving
        // one) would load as an anchor and then match nothing, which would show only as
        // every call refused; say so now instead.
        if !x509.is_ca() {
            return Err(refuse(
                number,
                format!(
                    "({}) is not a CA certificate (no basicConstraints CA:TRUE): give the CA that issued the kube-apiserver's client certificate, not a certificate it issued",
                    x509.subject()
                ),
            ));
        }
        not_after = not_after.min(x509.validity().not_after.timestamp());
        let subject = x509.subject().to_string();
        roots
            .add(certificate)
            .map_err(|e| refuse(number, format!("({subject}) cannot be a trust anchor: {e}")))?;
    }
    let summary = ClientCaSummary {
        certificates: roots.len(),
        not_after,
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| Error::ClientVerifier {
            path: path.to_owned(),
            source,
        })?;
    Ok((verifier, summary))
}
