//! Client commands against running services: health and reflection.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Args;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// gRPC endpoints to check, e.g. http://127.0.0.1:50051 (repeatable).
    #[arg(required = true)]
    endpoints: Vec<String>,
    /// Service name to check; empty = the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// gRPC endpoint, e.g. http://127.0.0.1:50051.
    endpoint: String,
}

/// Sends the API key of `MMC_API_KEY` (when set) with every call: servers started with
/// `--api-keys-file` refuse calls without one. (An environment variable, not a flag, so the
/// key does not show in process lists or shell history.)
#[derive(Clone)]
pub struct ApiKey(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("authorization", key.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the API key.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, ApiKey>;

/// A channel to `endpoint` sending `MMC_API_KEY`; `https://` endpoints use
/// [`tls_from_env`].
pub async fn connect(endpoint: &str) -> anyhow::Result<Authed> {
    let tls = if endpoint.starts_with("https://") { Some(tls_from_env()?) } else { None };
    connect_with(endpoint, tls).await
}

/// TLS for `https://` endpoints: trust the CA in file `MMC_TLS_CA` (e.g. `mmc certs dev`'s
/// `ca.crt`), else the public web CAs; present the client certificate of
/// `MMC_CLIENT_CERT` / `MMC_CLIENT_KEY` when set (a model service with mutual TLS).
pub fn tls_from_env() -> anyhow::Result<ClientTlsConfig> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let (cert, key) = (var("MMC_CLIENT_CERT"), var("MMC_CLIENT_KEY"));
    match var("MMC_TLS_CA") {
        Some(ca) => Ok(mmc_runtime::tls::ClientTlsFiles { ca, cert, key }.load().context("MMC_TLS_CA / MMC_CLIENT_CERT / MMC_CLIENT_KEY")?),
        None if cert.is_none() && key.is_none() => Ok(ClientTlsConfig::new().with_webpki_roots()),
        None => anyhow::bail!("MMC_CLIENT_CERT needs MMC_TLS_CA (the CA that signed the server's certificate)"),
    }
}

/// [`connect`] with an explicit TLS configuration (for `https://` endpoints).
pub async fn connect_with(endpoint: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<Authed> {
    let key = match std::env::var("MMC_API_KEY") {
        Ok(k) if !k.trim().is_empty() => Some(mmc_runtime::auth::bearer(k.trim()).context("MMC_API_KEY")?),
        _ => None,
    };
    let mut builder =
        Endpoint::from_shared(endpoint.to_string()).with_context(|| format!("bad endpoint {endpoint}"))?.connect_timeout(Duration::from_secs(3));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).with_context(|| format!("TLS for {endpoint}"))?;
    }
    let channel = builder.connect().await.with_context(|| format!("connecting to {endpoint}"))?;
    Ok(tonic::service::interceptor::InterceptedService::new(channel, ApiKey(key)))
}

/// Prints `ENDPOINT STATUS` per endpoint; exit code 0 only if all are SERVING.
pub async fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let mut all_serving = true;
    for endpoint in &args.endpoints {
        let status = match connect(endpoint).await {
            Ok(ch) => match HealthClient::new(ch).check(HealthCheckRequest { service: args.service.clone() }).await {
                Ok(r) => format!("{:?}", r.into_inner().status()).to_uppercase(),
                Err(s) => format!("ERROR {:?}: {}", s.code(), s.message()),
            },
            Err(e) => format!("UNREACHABLE ({e:#})"),
        };
        all_serving &= status == "SERVING";
        println!("{endpoint} {status}");
    }
    Ok(if all_serving { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Prints the services a server lists through gRPC reflection, one per line.
pub async fn services(args: ServicesArgs) -> anyhow::Result<ExitCode> {
    let ch = connect(&args.endpoint).await?;
    for name in list_services(ch).await? {
        println!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Service names listed by `grpc.reflection.v1`.
pub async fn list_services(ch: Authed) -> anyhow::Result<Vec<String>> {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream =
        ServerReflectionClient::new(ch).server_reflection_info(tokio_stream::iter([request])).await.context("reflection call")?.into_inner();
    let response = stream.message().await?.context("empty reflection response")?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => anyhow::bail!("unexpected reflection response {other:?}"),
    }
}
