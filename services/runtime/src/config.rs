//! Configuration: command-line flags, environment variables and a TOML file.
//!
//! Precedence, highest first: flag, environment variable, config file, built-in default.
//! Every option of every mmc binary has an environment variable named `MMC_` + the flag
//! name in upper snake case (`--max-concurrency` <-> `MMC_MAX_CONCURRENCY`), and the
//! config file (`--config FILE` or `MMC_CONFIG`) uses the flag names as keys:
//!
//! ```toml
//! listen = "0.0.0.0:50051"
//! max_concurrency = 32
//! ```
//!
//! The file is applied by exporting its keys as the matching `MMC_*` variables before
//! clap parses, so clap's own env handling gives the precedence above for free and the
//! file cannot drift from the flags.

use std::{ffi::OsString, net::SocketAddr, path::Path, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Parser, ValueEnum};

/// Options every gRPC service shares. Flatten it into the service's own `clap::Parser`.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address the gRPC server listens on (port 0 = any free port).
    #[arg(long, env = "MMC_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address of the Prometheus `/metrics` endpoint (its own port, so scraping never
    /// competes with inference traffic).
    #[arg(long, env = "MMC_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,

    /// Largest gRPC message accepted or sent, in bytes. Streams (audio uploads) are not
    /// bounded by it as a whole, only per message.
    #[arg(long, env = "MMC_MAX_MESSAGE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Deadline for a request that carries no `grpc-timeout`, and the cap for one that
    /// does, in milliseconds.
    #[arg(long, env = "MMC_REQUEST_TIMEOUT_MS", default_value_t = 600_000)]
    pub request_timeout_ms: u64,

    /// Requests handled at once (all connections together); one more is refused at once
    /// with RESOURCE_EXHAUSTED instead of queueing unboundedly. Health and reflection
    /// are never limited.
    #[arg(long, env = "MMC_MAX_CONCURRENCY", default_value_t = 64)]
    pub max_concurrency: usize,

    /// After a shutdown signal, how long the server reports NOT_SERVING but still accepts
    /// and serves, in milliseconds, so balancers (the gateway's watches health and reacts
    /// at once; Kubernetes endpoints take a readiness-probe period) stop sending first.
    #[arg(long, env = "MMC_DRAIN_GRACE_MS", default_value_t = 2_000)]
    pub drain_grace_ms: u64,

    /// How long in-flight requests may run, after the grace period, before they are cut.
    #[arg(long, env = "MMC_DRAIN_TIMEOUT_MS", default_value_t = 15_000)]
    pub drain_timeout_ms: u64,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "MMC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint for traces (e.g. http://otel-collector:4317); none = no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// HTTP listener (the gateway's): a client must send a request's headers within this
    /// many milliseconds of connecting or of its previous request, or the connection is
    /// closed (idle and half-open connections do not pile up).
    #[arg(long, env = "MMC_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,

    /// HTTP listener: longest pause, in milliseconds, between two pieces of a request body
    /// (an upload that trickles slower fails with a client error; a slow but moving upload
    /// of any length goes on).
    #[arg(long, env = "MMC_HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_body_timeout_ms: u64,

    /// HTTP listener: connections open at once; one more is closed at once.
    #[arg(long, env = "MMC_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,

    /// HTTP listener: connections open at once from one client address (0 = no cap), so
    /// one client cannot take every slot. Behind a proxy every client has its address:
    /// raise it or set 0 there.
    #[arg(long, env = "MMC_HTTP_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub http_max_connections_per_client: usize,

    /// Require an API key (`authorization: Bearer <key>`) on every request but health checks
    /// and reflection: one key, or `sha256:<hex digest>`, per line (see `mmc_runtime::auth`).
    #[arg(long, env = "MMC_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// Serve gRPC (and the gateway's HTTP API) over TLS with this certificate chain (PEM,
    /// cert-manager's `tls.crt`); checked for changes every few seconds and reloaded.
    #[arg(long, env = "MMC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of `--tls-cert` (PEM, `tls.key`).
    #[arg(long, env = "MMC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Mutual TLS: accept only clients presenting a valid certificate issued by this CA
    /// (PEM, `ca.crt`); the model services use it to accept nobody but the gateway.
    #[arg(long, env = "MMC_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// Calls a second each API key may make (a token bucket per key); 0 = no limit.
    #[arg(long, env = "MMC_API_KEY_RATE_PER_S", default_value_t = 0)]
    pub api_key_rate_per_s: u32,

    /// Calls an API key may make at once above its rate (at least the rate).
    #[arg(long, env = "MMC_API_KEY_BURST", default_value_t = 0)]
    pub api_key_burst: u32,
}

impl ServerArgs {
    /// The API keys of `--api-keys-file` with their rate limit, if any; the same instance
    /// (and buckets) for every caller in the process.
    pub fn api_keys(&self) -> anyhow::Result<Option<crate::auth::ApiKeys>> {
        self.api_keys_file.as_deref().map(|p| crate::auth::ApiKeys::shared(p, self.api_key_rate_per_s, self.api_key_burst)).transpose()
    }

    /// The listener's TLS files, if TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::ServerTlsFiles> {
        Some(crate::tls::ServerTlsFiles { cert: self.tls_cert.clone()?, key: self.tls_key.clone()?, client_ca: self.tls_client_ca.clone() })
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses `T` from the process arguments, environment and config file (see module docs).
/// Exits with clap's usage message on bad input.
pub fn parse<T: Parser>() -> T {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Err(e) = apply_config_file(&args) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    T::parse_from(args)
}

/// Finds `--config FILE` / `--config=FILE` / `MMC_CONFIG` and exports the file's keys as
/// `MMC_*` variables that are not already set. Must run before any thread starts.
fn apply_config_file(args: &[OsString]) -> anyhow::Result<()> {
    let mut path: Option<OsString> = std::env::var_os("MMC_CONFIG");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            path = it.next().cloned();
        } else if let Some(v) = s.strip_prefix("--config=") {
            path = Some(v.into());
        }
    }
    let Some(path) = path else { return Ok(()) };
    for (key, value) in read_config_file(Path::new(&path))? {
        if std::env::var_os(&key).is_none() {
            std::env::set_var(key, value);
        }
    }
    Ok(())
}

/// Reads a flat TOML file into `(MMC_KEY, value)` pairs.
pub fn read_config_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!("config key {key:?} in {}: only strings, numbers and booleans are supported, got {}", path.display(), other.type_str()),
        };
        out.push((env_name(&key), value));
    }
    Ok(out)
}

/// `max-concurrency` / `max_concurrency` -> `MMC_MAX_CONCURRENCY`.
pub fn env_name(key: &str) -> String {
    format!("MMC_{}", key.replace('-', "_").to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn config_file_keys_map_to_env_names() {
        let dir = std::env::temp_dir().join(format!("mmc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:7000\"\nmax-concurrency = 3\nlog_format = \"json\"\n").unwrap();
        let pairs = read_config_file(&file).unwrap();
        assert!(pairs.contains(&("MMC_LISTEN".into(), "127.0.0.1:7000".into())));
        assert!(pairs.contains(&("MMC_MAX_CONCURRENCY".into(), "3".into())));
        assert!(pairs.contains(&("MMC_LOG_FORMAT".into(), "json".into())));
    }

    #[test]
    fn nested_tables_are_rejected_with_the_key_named() {
        let dir = std::env::temp_dir().join(format!("mmc-config-n-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[server]\nlisten = 1\n").unwrap();
        let err = read_config_file(&file).unwrap_err().to_string();
        assert!(err.contains("server"), "{err}");
    }

    #[test]
    fn flags_win_over_defaults() {
        let cli = Cli::parse_from(["x", "--max-concurrency", "5", "--listen", "127.0.0.1:1"]);
        assert_eq!(cli.server.max_concurrency, 5);
        assert_eq!(cli.server.listen.port(), 1);
        assert_eq!(cli.server.request_timeout(), Duration::from_secs(600));
    }
}
