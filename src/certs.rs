//! Development certificates: a CA and a serving certificate signed by it, for local runs,
//! tests and clusters without cert-manager; and a CA with a client certificate signed by it,
//! the pair the kube-apiserver presents to a webhook run with `serve --client-ca`. No openssl
//! needed.

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
/// The client CA certificate (what `serve --client-ca` is given).
pub const CLIENT_CA_CERT_FILE: &str = "client-ca.crt";
/// The client CA's private key.
pub const CLIENT_CA_KEY_FILE: &str = "client-ca.key";
/// The client certificate (what the kube-apiserver presents).
pub const CLIENT_CERT_FILE: &str = "client.crt";
/// The client key.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// A CA and a pair it signed (serving or client), PEM encoded.
#[derive(Debug, Clone)]
pub struct Generated {
    /// CA certificate (for a serving pair: the webhook's `caBundle`, base64 encoded; for a
    /// client pair: the file `serve --client-ca` is given).
    pub ca_cert: String,
    /// CA private key.
    pub ca_key: String,
    /// The certificate signed by the CA.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// A self-signed CA valid for ten years with the key `ca_key`, allowed only to sign
/// certificates.
fn new_ca(
    common_name: &str,
    now: time::OffsetDateTime,
    ca_key: KeyPair,
) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(3650);
    Ok(CertifiedIssuer::self_signed(ca_params, ca_key)?)
}

/// Generates a CA valid for ten years and a serving certificate for `names` (DNS names or IP
/// addresses) valid for `days`.
pub fn generate(names: &[String], days: u32) -> Result<Generated> {
    let now = time::OffsetDateTime::now_utc();
    let ca = new_ca("spark-admission CA", now, KeyPair::generate()?)?;

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

/// Generates a client CA valid for ten years and a client certificate signed by it for
/// `common_name`, valid for `days`: extended key usage clientAuth only, no subject alternative
/// names (a client is not reached by name). The CA is new each time, made for this one use:
/// `serve --client-ca` accepts every certificate it signs, so it must sign nothing else.
pub fn generate_client(common_name: &str, days: u32) -> Result<Generated> {
    let now = time::OffsetDateTime::now_utc();
    // Each client CA gets a name of its own (from its key): during a rotation the old and the
    // new CA sit in one bundle, and a verifier finds a client's issuer by name.
    let ca_key = KeyPair::generate()?;
    let fingerprint = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(ca_key.public_key_raw());
        digest[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let ca = new_ca(
        &format!("spark-admission client CA {fingerprint}"),
        now,
        ca_key,
    )?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
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
    /// Writes a serving pair's four files into `dir` (created if needed): `ca.crt`, `ca.key`,
    /// `tls.crt`, `tls.key`; keys are readable by the owner only.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_as(dir, [CA_CERT_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE])
    }

    /// Writes a client pair's four files into `dir` (created if needed): `client-ca.crt`,
    /// `client-ca.key`, `client.crt`, `client.key`, so they can sit beside a serving pair.
    pub fn write_client(&self, dir: &Path) -> Result<()> {
        self.write_as(
            dir,
            [
                CLIENT_CA_CERT_FILE,
                CLIENT_CA_KEY_FILE,
                CLIENT_CERT_FILE,
                CLIENT_KEY_FILE,
            ],
        )
    }

    fn write_as(&self, dir: &Path, [ca_cert, ca_key, cert, key]: [&str; 4]) -> Result<()> {
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        for (name, content, private) in [
            (ca_cert, &self.ca_cert, false),
            (ca_key, &self.ca_key, true),
            (cert, &self.cert, false),
            (key, &self.key, true),
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
