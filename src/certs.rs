//! Development certificates: a CA and a serving certificate signed by it, for local runs,
//! tests and clusters without cert-manager. No openssl needed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Errors from generating or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters (for example an invalid DNS name).
    #[error("failed to generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// File names, as in a Kubernetes TLS Secret (plus the CA).
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// The serving certificate.
pub const CERT_FILE: &str = "tls.crt";
/// The serving key.
pub const KEY_FILE: &str = "tls.key";

/// A CA and a serving pair, PEM encoded.
#[derive(Debug, Clone)]
pub struct Generated {
    /// CA certificate (the webhook's `caBundle`, base64 encoded).
    pub ca_cert: String,
    /// CA private key.
    pub ca_key: String,
    /// Serving certificate.
    pub cert: String,
    /// Serving private key.
    pub key: String,
}

/// Generates a CA valid for ten years and a serving certificate for `names` (DNS names or IP
/// addresses) valid for `days`.
pub fn generate(names: &[String], days: u32) -> Result<Generated> {
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "spark-admission CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(3650);
    let ca_key = KeyPair::generate()?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("spark-admission"),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Generated {
        ca_cert: ca.pem(),
        ca_key: ca.key().serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

impl Generated {
    /// Writes the four files into `dir` (created if needed); keys are readable by the owner only.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        for (name, content, private) in [
            (CA_CERT_FILE, &self.ca_cert, false),
            (CA_KEY_FILE, &self.ca_key, true),
            (CERT_FILE, &self.cert, false),
            (KEY_FILE, &self.key, true),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(write_error(&path))?;
            if private {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(write_error(&path))?;
            }
        }
        Ok(())
    }

    /// The CA certificate base64 encoded, as a webhook configuration's `caBundle`.
    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.ca_cert.as_bytes())
    }
}
