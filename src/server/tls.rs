//! The serving certificate: loaded from PEM files, swapped in place when the files change, and
//! kept when a new pair is bad.
//!
//! Each TLS handshake asks the store for the current pair, so a new certificate applies to new
//! connections at once while established connections keep theirs: rotation drops nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::files::FileWatch;

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

/// What a reload found.
#[derive(Debug)]
pub enum Reload {
    /// The files did not change.
    Unchanged,
    /// A new pair is in force; its expiry as a Unix timestamp.
    Reloaded {
        /// Expiry of the new certificate.
        not_after: i64,
    },
    /// The files changed but the new pair is bad; the old pair stays.
    Failed(Error),
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
    pub fn reload_if_changed(&self) -> Reload {
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
                Reload::Reloaded {
                    not_after: loaded.not_after,
                }
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
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::Pair)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
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
