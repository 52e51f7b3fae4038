//! TLS and mutual TLS between real processes: a model service that requires the
//! gateway's client certificate refuses plain clients, clients without a certificate, with
//! one from another CA, or with an expired one; the gateway with the right certificate
//! chains through it, and serves its own gRPC and HTTP over TLS; a listener picks up
//! renewed certificate files without a restart. Readiness is read from the metrics port's
//! plain `/healthz`, which is what Kubernetes probes when the service port speaks TLS.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, SystemTime},
};

use mmc_proto::{
    embed::v1::{embed_service_client::EmbedServiceClient, EmbedTextRequest},
    gateway::v1::{gateway_service_client::GatewayServiceClient, search_images_request::Query, SearchImagesRequest},
};
use mmc_runtime::certs::{write, DevCa, Issued, Validity, LOCAL_NAMES};
use mmc_tests::{binary, eventually, free_port_range, http_get, metric_value, ChildGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Writes `issued` as `dir/name.crt` and `dir/name.key`.
fn save(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    write(&crt, &issued.cert_pem, false).unwrap();
    write(&key, &issued.key_pem, true).unwrap();
    (crt, key)
}

/// Starts binary `name` on free ports with `args`, waiting until its metrics port's
/// `/healthz` says SERVING. Returns the process, the gRPC and the metrics address.
async fn start(name: &str, args: &[&str]) -> (ChildGuard, String, String) {
    let port = free_port_range(2);
    let (grpc, metrics) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{}", port + 1));
    let child = ChildGuard::spawn(Command::new(binary(name)).args(["--listen", &grpc, "--metrics-listen", &metrics]).args(args));
    let ready = eventually(Duration::from_secs(90), || async { http_get(&metrics, "/healthz").ok().filter(|(code, _)| *code == 200) }).await;
    assert!(ready.is_some(), "{name} did not report SERVING on its metrics port");
    (child, grpc, metrics)
}

/// An EmbedText call to `url` with `tls`: Ok, or the error as text.
async fn embed_once(url: &str, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let mut endpoint = Channel::from_shared(url.to_string()).unwrap().connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    let request = EmbedTextRequest { texts: vec!["a red bicycle".into()], ..Default::default() };
    EmbedServiceClient::new(channel).embed_text(request).await.map(|_| ()).map_err(|e| format!("{e:?}"))
}

fn tls_trusting(ca: &DevCa) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.cert_pem))
}

fn handshake_failures(metrics: &str) -> f64 {
    let (_, scrape) = http_get(metrics, "/metrics").unwrap();
    metric_value(&scrape, "mmc_tls_handshake_failures_total", &["listener=\"grpc\""]).unwrap_or(0.0)
}

/// `GET path` over TLS (HTTP/1.1), trusting `ca_pem`: the status code.
async fn https_get(addr: &str, path: &str, ca_pem: &str) -> std::io::Result<u16> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_the_gateway_and_refuses_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let valid = Validity::days(30);
    let ca = DevCa::new("test CA", valid).unwrap();
    let names: Vec<String> = LOCAL_NAMES.iter().map(|s| s.to_string()).collect();
    let (server_crt, server_key) = save(d, "server", &ca.server(&names, valid).unwrap());
    let (client_crt, client_key) = save(d, "client", &ca.client("mmc-gateway", valid).unwrap());
    let now = SystemTime::now();
    let expired = Validity { not_before: now - Duration::from_secs(10 * 86_400), not_after: now - Duration::from_secs(86_400) };
    let expired_client = ca.client("mmc-gateway", expired).unwrap();
    let other_ca = DevCa::new("another CA", valid).unwrap();
    let foreign_client = other_ca.client("mmc-gateway", valid).unwrap();
    let ca_file = d.join("ca.crt");
    write(&ca_file, &ca.cert_pem, false).unwrap();
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();

    let tls_args = ["--tls-cert".to_string(), p(&server_crt), "--tls-key".into(), p(&server_key)];
    let mut embed_args: Vec<String> = tls_args.to_vec();
    embed_args.extend(["--tls-client-ca".into(), p(&ca_file)]);
    let embed_args: Vec<&str> = embed_args.iter().map(String::as_str).collect();
    let (_embed, grpc, metrics) = start("mmc-embed", &embed_args).await;
    let url = format!("https://{grpc}");

    // Refused: plain text, no certificate, another CA's certificate, an expired one.
    let with = |issued: &Issued| tls_trusting(&ca).identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem));
    let refused = [
        ("a plain-text client", embed_once(&format!("http://{grpc}"), None).await),
        ("a client without a certificate", embed_once(&url, Some(tls_trusting(&ca))).await),
        ("a certificate from another CA", embed_once(&url, Some(with(&foreign_client))).await),
        ("an expired certificate", embed_once(&url, Some(with(&expired_client))).await),
    ];
    for (who, result) in &refused {
        assert!(result.is_err(), "{who} was served");
    }
    // The service refused them (not the client giving up): one failed handshake each.
    let failures = handshake_failures(&metrics);
    assert!(failures >= 4.0, "handshake failures counted: {failures}; results: {refused:?}");
    // The right certificate is served.
    let client = Issued { cert_pem: std::fs::read_to_string(&client_crt).unwrap(), key_pem: std::fs::read_to_string(&client_key).unwrap() };
    embed_once(&url, Some(with(&client))).await.expect("the gateway's certificate is accepted");

    // The gateway: https with its client certificate upstream, TLS on its own listeners.
    let data = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port_range(1));
    let mut gateway_args: Vec<String> = tls_args.to_vec();
    gateway_args.extend([
        "--embed-endpoint".into(),
        url.clone(),
        "--upstream-tls-ca".into(),
        p(&ca_file),
        "--upstream-tls-cert".into(),
        p(&client_crt),
        "--upstream-tls-key".into(),
        p(&client_key),
        "--data-dir".into(),
        data.path().to_str().unwrap().into(),
        "--http-listen".into(),
        http.clone(),
    ]);
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let (_gateway, gateway_grpc, _) = start("mmc-gateway", &gateway_args).await;
    let channel = Channel::from_shared(format!("https://{gateway_grpc}")).unwrap().tls_config(tls_trusting(&ca)).unwrap().connect().await.unwrap();
    let request = SearchImagesRequest { query: Some(Query::Text("a red bicycle".into())), top_k: 3, score_threshold: -1.0, ..Default::default() };
    GatewayServiceClient::new(channel).search_images(request).await.expect("a search through TLS and mutual TLS");
    assert_eq!(https_get(&http, "/healthz", &ca.cert_pem).await.unwrap(), 200, "the HTTP API over TLS");
    let plain = mmc_tests::http_request(&http, "GET", "/healthz", "text/plain", b"", Duration::from_secs(5));
    assert!(!matches!(plain, Ok((200, _))), "the HTTP API answered plain text: {plain:?}");
}

/// Renewed files (cert-manager updating a Secret) are picked up without a restart: new
/// connections get the new certificate. `mmc certs dev` makes both sets.
#[tokio::test(flavor = "multi_thread")]
async fn a_listener_reloads_its_certificate_when_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let certs = |sub: &str| {
        let out = Command::new(binary("mmc")).args(["certs", "dev", "--out"]).arg(dir.path().join(sub)).output().unwrap();
        assert!(out.status.success(), "mmc certs dev: {}", String::from_utf8_lossy(&out.stderr));
        dir.path().join(sub)
    };
    let (first, second) = (certs("first"), certs("second"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(first.join("server/tls.key")).unwrap().permissions().mode() & 0o777, 0o600, "keys are private");
    assert_eq!(std::fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o700, "the directory is private");
    // The listener's files: a copy of the first set.
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::fs::copy(first.join("server").join(f), live.join(f)).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let (crt, key) = (live.join("tls.crt"), live.join("tls.key"));
    let args = [
        "--tls-cert",
        crt.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
        "--http-listen",
        "off",
    ];
    let (_gateway, grpc, _) = start("mmc-gateway", &args).await;
    let health = |ca: PathBuf| {
        let url = format!("https://{grpc}");
        async move {
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
            let channel = Channel::from_shared(url).unwrap().tls_config(tls).unwrap().connect().await.ok()?;
            use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
            HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.ok().map(|_| ())
        }
    };
    assert!(health(first.join("ca.crt")).await.is_some(), "the first certificate is served");
    assert!(health(second.join("ca.crt")).await.is_none(), "a client of the second CA does not trust the first certificate");

    for f in ["tls.key", "tls.crt"] {
        std::fs::copy(second.join("server").join(f), live.join(f)).unwrap();
    }
    let reloaded = eventually(Duration::from_secs(20), || health(second.join("ca.crt"))).await;
    assert!(reloaded.is_some(), "the renewed certificate was not picked up");
    assert!(health(first.join("ca.crt")).await.is_none(), "the old certificate is still served");
}
