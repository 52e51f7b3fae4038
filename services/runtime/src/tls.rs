//! TLS on the listeners (optionally requiring client certificates: mutual TLS) and on the
//! gateway's channels to the model services.
//!
//! Why the listeners do their own handshakes instead of tonic's `ServerTlsConfig`: tonic's
//! configuration is fixed at start, and certificates are rotated while services run
//! (cert-manager renews a Kubernetes Secret; the kubelet swaps the mounted files). A
//! [`ServerTls`] checks its files every [`RELOAD_CHECK`] and builds a new configuration
//! when they change; each new connection uses the newest one, open connections keep
//! theirs. A change that does not load (a key that does not match, a half-written file)
//! is logged and the previous configuration stays.
//!
//! Every file is PEM, with the names cert-manager gives a Secret's keys: `tls.crt` (the
//! certificate chain), `tls.key` (its private key), `ca.crt` (the CA to trust).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, Weak},
    time::{Duration, SystemTime},
};

use rustls::{crypto::CryptoProvider, server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

/// How often a listener's certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// TLS handshakes that failed (no client certificate, an unknown CA, an expired
/// certificate, plain text on a TLS port, a timeout), labelled `listener`.
pub const HANDSHAKE_FAILURES: &str = "mmc_tls_handshake_failures_total";
/// Certificate reloads, labelled `result` (`ok` or `error`).
pub const RELOADS: &str = "mmc_tls_reloads_total";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{what} needs both a certificate and a key file")]
    Incomplete { what: &'static str },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The files of a listener's TLS identity and, for mutual TLS, the CA that client
/// certificates must chain to.
#[derive(Clone, Debug)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set: a client must present a certificate issued by this CA (and valid now).
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Every certificate in PEM file `path`.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&read(path)?).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|_| TlsError::NoKey { path: path.to_path_buf() })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn server_config(files: &ServerTlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => builder.with_client_cert_verifier(WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider()).build()?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(read_certs(&files.cert)?, read_key(&files.key)?)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// When and how big each file was: a change of either means "load again".
fn stamp(files: &ServerTlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// A listener's TLS configuration, rebuilt from its files when they change.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    /// Loads `files` for a listener speaking `alpn` (`h2` for gRPC, `http/1.1` for HTTP)
    /// and, inside a Tokio runtime, starts watching them.
    pub fn load(files: ServerTlsFiles, alpn: &'static [&'static [u8]]) -> Result<Self, TlsError> {
        let config = Arc::new(RwLock::new(Arc::new(server_config(&files, alpn)?)));
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(reload_on_change(Arc::downgrade(&config), files, alpn));
        }
        Ok(Self { config })
    }

    /// An acceptor with the newest configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().expect("TLS config lock").clone())
    }

    /// Runs the handshake on `stream` within `timeout`; a failure is counted and logged
    /// (at debug: scanners and plain-text clients are not the server's problem).
    pub async fn accept(&self, stream: TcpStream, peer: SocketAddr, timeout: Duration, listener: &'static str) -> Option<TlsStream<TcpStream>> {
        let reason = match tokio::time::timeout(timeout, self.acceptor().accept(stream)).await {
            Ok(Ok(tls)) => return Some(tls),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no handshake within {} ms", timeout.as_millis()),
        };
        metrics::counter!(HANDSHAKE_FAILURES, "listener" => listener).increment(1);
        tracing::debug!(%peer, listener, reason, "TLS handshake failed");
        None
    }
}

async fn reload_on_change(config: Weak<RwLock<Arc<ServerConfig>>>, files: ServerTlsFiles, alpn: &'static [&'static [u8]]) {
    let mut last = stamp(&files);
    loop {
        tokio::time::sleep(RELOAD_CHECK).await;
        let Some(config) = config.upgrade() else { return };
        let now = stamp(&files);
        if now == last {
            continue;
        }
        last = now;
        match server_config(&files, alpn) {
            Ok(fresh) => {
                *config.write().expect("TLS config lock") = Arc::new(fresh);
                metrics::counter!(RELOADS, "result" => "ok").increment(1);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                metrics::counter!(RELOADS, "result" => "error").increment(1);
                tracing::warn!(cert = %files.cert.display(), error = %e, "TLS files changed but do not load; keeping the previous ones");
            }
        }
    }
}

/// The connections of `listener` after their TLS handshakes, for tonic's
/// `serve_with_incoming*`. Handshakes run concurrently (a slow client holds up no other);
/// the accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a gRPC connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(stream) = tls.accept(stream, peer, handshake_timeout, "grpc").await {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The gateway's side of TLS towards the model services: the CA their certificates chain
/// to and, for mutual TLS, the gateway's own certificate. Used for `https://` endpoints.
#[derive(Clone, Debug)]
pub struct ClientTlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// tonic's client configuration, after checking that every file parses (so a bad path
    /// fails at start, not at the first call).
    pub fn load(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        read_certs(&self.ca)?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                read_certs(cert)?;
                read_key(key)?;
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err(TlsError::Incomplete { what: "a client certificate" }),
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{write, DevCa, Validity};

    fn files(dir: &Path, cert: &str, key: &str) -> ServerTlsFiles {
        write(&dir.join("c.crt"), cert, false).unwrap();
        write(&dir.join("c.key"), key, true).unwrap();
        ServerTlsFiles { cert: dir.join("c.crt"), key: dir.join("c.key"), client_ca: None }
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("mmc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = DevCa::new("t", Validity::days(1)).unwrap();
        let a = ca.server(&["localhost".into()], Validity::days(1)).unwrap();
        let b = ca.server(&["localhost".into()], Validity::days(1)).unwrap();
        assert!(server_config(&files(&dir, &a.cert_pem, &a.key_pem), &[b"h2"]).is_ok());
        // A key that is not the certificate's.
        assert!(server_config(&files(&dir, &a.cert_pem, &b.key_pem), &[b"h2"]).is_err());
        // Not PEM at all.
        let err = server_config(&files(&dir, "hello", &a.key_pem), &[b"h2"]).unwrap_err().to_string();
        assert!(err.contains("c.crt") && err.contains("no PEM certificate"), "{err}");
        let missing = ServerTlsFiles { cert: dir.join("missing.crt"), key: dir.join("c.key"), client_ca: None };
        let err = server_config(&missing, &[b"h2"]).unwrap_err().to_string();
        assert!(err.contains("missing.crt"), "{err}");
    }
}
