//! Development certificates: a local CA, a server certificate and a client certificate,
//! for `mmc certs dev`, `mmc up --tls` and the tests. Production certificates come from
//! cert-manager or the organisation's own CA; the file layout is the same.
//!
//! Layout written by [`write_dev_set`] (each directory is what one Kubernetes Secret of
//! type `kubernetes.io/tls` with a `ca.crt` key holds, as cert-manager writes it):
//!
//! ```text
//! DIR/ca.crt                          the CA certificate (its key is not kept)
//! DIR/server/{tls.crt,tls.key,ca.crt} every service's listener identity
//! DIR/client/{tls.crt,tls.key,ca.crt} the gateway's identity towards the model services
//! ```

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clock skew) to `days` from now.
    pub fn days(days: u32) -> Self {
        let now = SystemTime::now();
        Self { not_before: now - Duration::from_secs(3600), not_after: now + Duration::from_secs(u64::from(days) * 86_400) }
    }
}

fn datetime(t: SystemTime) -> anyhow::Result<time::OffsetDateTime> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    Ok(time::OffsetDateTime::from_unix_timestamp(secs)?)
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority made on the spot.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl DevCa {
    /// A new CA named `name`, valid for `validity`.
    pub fn new(name: &str, validity: Validity) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = datetime(validity.not_before)?;
        params.not_after = datetime(validity.not_after)?;
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self { issuer: Issuer::new(params, key), cert_pem })
    }

    fn issue(&self, common_name: &str, names: &[String], usage: ExtendedKeyUsagePurpose, validity: Validity) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = datetime(validity.not_before)?;
        params.not_after = datetime(validity.not_after)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate for host names and IP addresses `names`.
    pub fn server(&self, names: &[String], validity: Validity) -> anyhow::Result<Issued> {
        let cn = names.first().map(String::as_str).unwrap_or("localhost");
        self.issue(cn, names, ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    /// A client certificate (mutual TLS) for `name`.
    pub fn client(&self, name: &str, validity: Validity) -> anyhow::Result<Issued> {
        self.issue(name, &[name.to_string()], ExtendedKeyUsagePurpose::ClientAuth, validity)
    }
}

/// Names every development server certificate holds, besides those asked for.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Writes a new CA, a server certificate for [`LOCAL_NAMES`] and `extra_names`, and a
/// client certificate, valid for `days`, in the layout of the module docs. Directories are 0700, keys 0600.
pub fn write_dev_set(dir: &Path, extra_names: &[String], days: u32) -> anyhow::Result<()> {
    let validity = Validity::days(days);
    let ca = DevCa::new("mmc development CA", validity)?;
    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(extra_names.iter().cloned());
    let server = ca.server(&names, validity)?;
    let client = ca.client("mmc-gateway", validity)?;
    private_dir(dir)?;
    write(&dir.join("ca.crt"), &ca.cert_pem, false)?;
    for (sub, issued) in [("server", &server), ("client", &client)] {
        let d = dir.join(sub);
        private_dir(&d)?;
        write(&d.join("tls.crt"), &issued.cert_pem, false)?;
        write(&d.join("tls.key"), &issued.key_pem, true)?;
        write(&d.join("ca.crt"), &ca.cert_pem, false)?;
    }
    Ok(())
}

/// Creates `dir` (and its parents) readable by its owner only.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("restricting {}", dir.display()))
}

/// Writes `text` to `path` (replacing it: a reader sees the old file or the new one),
/// private to the owner when `secret`.
pub fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
