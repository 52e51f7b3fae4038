//! `mmc-gateway`: the gateway binary; see the `mmc_gateway` library.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use mmc_gateway::http::openai::HttpState;
use mmc_gateway::{
    flows::{meeting::MeetingSettings, prompts::PromptLibrary, Flows},
    grpc::GatewayHandlers,
    store::{postgres, Fusion, Location, SearchIndex, Stores},
    upstream::{StagePolicy, Upstream, Upstreams},
};
use mmc_proto::gateway::v1::gateway_service_server::GatewayServiceServer;
use mmc_runtime::{server::ServiceSet, ServerArgs};

/// Command line of `mmc-gateway`.
#[derive(Parser, Debug)]
#[command(name = "mmc-gateway", version, about = "Gateway chaining the model services into the user flows.")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Embed service: comma-separated URLs; a host name is re-resolved and balanced over
    /// every address (Kubernetes headless Service).
    #[arg(long, env = "MMC_EMBED_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    embed_endpoint: String,
    /// Caption service endpoints (as `--embed-endpoint`).
    #[arg(long, env = "MMC_CAPTION_ENDPOINT", default_value = "http://127.0.0.1:50052")]
    caption_endpoint: String,
    /// Speech service endpoints (as `--embed-endpoint`).
    #[arg(long, env = "MMC_SPEECH_ENDPOINT", default_value = "http://127.0.0.1:50053")]
    speech_endpoint: String,
    /// Text-generation service endpoints (as `--embed-endpoint`).
    #[arg(long, env = "MMC_TEXTGEN_ENDPOINT", default_value = "http://127.0.0.1:50054")]
    textgen_endpoint: String,
    /// Directory of extra prompt versions (`<version>/{extract,summary,answer}.toml`); `v1`
    /// is built in.
    #[arg(long, env = "MMC_PROMPTS_DIR")]
    prompts_dir: Option<PathBuf>,
    /// Prompt version used when a meeting request names none.
    #[arg(long, env = "MMC_PROMPT_VERSION", default_value = "v1")]
    prompt_version: String,
    /// Transcript lines labelled at once by the text-generation service (its decode steps
    /// are interleaved).
    #[arg(long, env = "MMC_EXTRACT_CONCURRENCY", default_value_t = MeetingSettings::default().extract_concurrency)]
    extract_concurrency: usize,
    /// Meetings whose notes span more than this many seconds are summarized window by window
    /// and then as a whole (map-reduce); shorter ones in one call.
    #[arg(long, env = "MMC_SUMMARY_WINDOW_S", default_value_t = MeetingSettings::default().summary_window_ms / 1000)]
    summary_window_s: i64,
    /// How long a meeting (transcript, notes, history, vectors) is kept after it was
    /// summarized, e.g. `30d`, `12h`, `90s`; older ones are deleted (checked at start and
    /// then every tenth of the period, at most hourly). Empty: kept until deleted.
    #[arg(long, env = "MMC_MEETING_RETENTION", default_value = "")]
    meeting_retention: String,
    /// Speech model for meetings whose request names none (e.g. whisper-base-ct2: fewer
    /// misheard names and dates, a third of the speed); empty: the speech service's choice.
    #[arg(long, env = "MMC_MEETING_SPEECH_MODEL", default_value = "")]
    meeting_speech_model: String,
    /// Most notes summarized in one call (a window with more is split).
    #[arg(long, env = "MMC_SUMMARY_WINDOW_NOTES", default_value_t = MeetingSettings::default().summary_window_notes)]
    summary_window_notes: usize,
    /// Transcript segments less similar than this to a question are not used to answer it.
    #[arg(long, env = "MMC_ASK_MIN_RELEVANCE", default_value_t = MeetingSettings::default().min_relevance)]
    min_relevance: f32,
    /// Directory of the gateway's state (the image index, the meetings) when `--store` is
    /// not given; with PostgreSQL only scratch files (uploads being transcribed) go here.
    #[arg(long, env = "MMC_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Where images, thumbnails and meetings are kept: `postgres://USER:PASSWORD@HOST/DB`
    /// (PostgreSQL with pgvector, shared by any number of gateways; libpq URL parameters
    /// such as `sslmode=verify-full&sslrootcert=ca.pem` apply), or `redb:DIR` (embedded
    /// files, one gateway). Empty: embedded under `--data-dir`.
    #[arg(long, env = "MMC_STORE_URL", default_value = "", hide_env_values = true)]
    store: String,
    /// Most PostgreSQL connections this gateway opens (each store call holds one for
    /// milliseconds). Keep replicas x this under the server's `max_connections`.
    #[arg(long, env = "MMC_STORE_POOL_SIZE", default_value_t = postgres::POOL_CONNECTIONS)]
    store_pool_size: u32,
    /// Weight of the image vector in search scores; the caption vector gets the rest.
    #[arg(long, env = "MMC_SEARCH_IMAGE_WEIGHT", default_value_t = 0.5)]
    image_weight: f32,
    /// Search breadth of approximate image searches (HNSW `ef`, from 20 000 images on in the
    /// embedded store, always in PostgreSQL): neighbours the graph walk keeps, all re-scored
    /// exactly. Wider is slower and finds more of the true top results on hard data
    /// (docs/gateway.md has the sweep). At most 4 000.
    #[arg(long, env = "MMC_SEARCH_BREADTH", default_value_t = mmc_gateway::store::DEFAULT_SEARCH_BREADTH)]
    search_breadth: usize,
    /// How searches find approximate neighbours: `graph` (HNSW: fastest on real, clustered
    /// embeddings; the embedded store builds it in the background and saves it, PostgreSQL
    /// keeps pgvector's) or `scan` (compact codes of every image, kept in this process's
    /// memory and scanned whole: the same recall however the vectors are spread, no build,
    /// more time per search on clustered data). docs/gateway.md compares them.
    #[arg(long, env = "MMC_SEARCH_INDEX", default_value_t = SearchIndex::Graph)]
    search_index: SearchIndex,
    /// With the PostgreSQL store: hours a deleted image's entry stays in the change log
    /// (what `scan` gateways read to drop its code) before this gateway prunes it; 0 keeps
    /// them all. A scan gateway that missed a pruned entry sweeps its codes by itself.
    #[arg(long, env = "MMC_REMOVAL_RETENTION_HOURS", default_value_t = 168)]
    removal_retention_hours: u64,
    /// Encoder labels stored per image (and given to the caption decoder).
    #[arg(long, env = "MMC_TOP_LABELS", default_value_t = 5)]
    top_labels: u32,
    /// Longest one stage call may take, in milliseconds, even when the caller allows more.
    #[arg(long, env = "MMC_STAGE_TIMEOUT_MS", default_value_t = 60_000)]
    stage_timeout_ms: u64,
    /// Tries per idempotent stage when a service is unavailable or busy (1 = no retry).
    #[arg(long, env = "MMC_STAGE_ATTEMPTS", default_value_t = 3)]
    stage_attempts: u32,
    /// First retry backoff in milliseconds (doubled per retry, full jitter).
    #[arg(long, env = "MMC_RETRY_BACKOFF_MS", default_value_t = 200)]
    retry_backoff_ms: u64,
    /// Address of the HTTP API (OpenAI-compatible routes, `/healthz`); `off` = none.
    #[arg(long, env = "MMC_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: String,
    /// Largest audio file accepted by `POST /v1/audio/transcriptions`, in bytes.
    #[arg(long, env = "MMC_HTTP_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    http_max_upload_bytes: u64,
    /// `max_tokens` of an HTTP chat completion that sets none (0 = the text-generation
    /// service's default).
    #[arg(long, env = "MMC_HTTP_DEFAULT_MAX_TOKENS", default_value_t = 0)]
    http_default_max_tokens: u32,
    /// Largest `max_tokens` an HTTP chat completion may ask for (more is refused with 400,
    /// and `/openapi.json` states it).
    #[arg(long, env = "MMC_HTTP_MAX_TOKENS", default_value_t = 4096)]
    http_max_tokens: u32,
    /// Host names the HTTP API answers to besides loopback ones (comma-separated). A
    /// listener on loopback answers only to loopback names (no DNS rebinding); on another
    /// address, to any name unless this is set.
    #[arg(long, env = "MMC_HTTP_ALLOWED_HOSTS", value_delimiter = ',')]
    http_allowed_hosts: Vec<String>,
    /// Origins (`https://app.example`) whose web pages may call the HTTP API from the
    /// browser (CORS, comma-separated). Empty, the default: no cross-origin use at all.
    #[arg(long, env = "MMC_HTTP_CORS_ORIGINS", value_delimiter = ',')]
    http_cors_origins: Vec<String>,
    /// The API key the gateway sends to the model services (a file whose first line is the
    /// key), for services started with `--api-keys-file`.
    #[arg(long, env = "MMC_UPSTREAM_API_KEY_FILE")]
    upstream_api_key_file: Option<std::path::PathBuf>,
    /// The CA that the model services' certificates chain to (PEM, `ca.crt`): needed for
    /// `https://` endpoints.
    #[arg(long, env = "MMC_UPSTREAM_TLS_CA")]
    upstream_tls_ca: Option<PathBuf>,
    /// The gateway's client certificate towards the model services (PEM, `tls.crt`), for
    /// services that require one (`--tls-client-ca`: mutual TLS).
    #[arg(long, env = "MMC_UPSTREAM_TLS_CERT", requires_all = ["upstream_tls_key", "upstream_tls_ca"])]
    upstream_tls_cert: Option<PathBuf>,
    /// The private key of `--upstream-tls-cert` (PEM, `tls.key`).
    #[arg(long, env = "MMC_UPSTREAM_TLS_KEY", requires = "upstream_tls_cert")]
    upstream_tls_key: Option<PathBuf>,
    /// Serve without API keys on an address other than loopback. Without this flag the
    /// gateway refuses to start so: anyone who can reach it could read, change and delete
    /// what it stores. For a listener that only a trusted proxy or network reaches.
    #[arg(long, env = "MMC_ALLOW_UNAUTHENTICATED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allow_unauthenticated: bool,
}

fn main() -> ExitCode {
    let args: Args = mmc_runtime::config::parse();
    if !(0.0..=1.0).contains(&args.image_weight) {
        eprintln!("--image-weight must be in [0, 1]");
        return ExitCode::FAILURE;
    }
    if !(1..=mmc_gateway::store::MAX_SEARCH_BREADTH).contains(&args.search_breadth) {
        eprintln!("--search-breadth must be in [1, {}]", mmc_gateway::store::MAX_SEARCH_BREADTH);
        return ExitCode::FAILURE;
    }
    let http_listen: Option<std::net::SocketAddr> = match args.http_listen.as_str() {
        "off" | "" => None,
        addr => match addr.parse() {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("--http-listen {addr:?}: {e} (an address like 127.0.0.1:8080, or off)");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Some(file) = &args.upstream_api_key_file {
        let key = mmc_runtime::auth::read_client_key(file).and_then(|k| mmc_runtime::auth::bearer(&k));
        match key {
            Ok(value) => mmc_gateway::upstream::set_api_key(value),
            Err(e) => {
                eprintln!("--upstream-api-key-file: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Keys are required beyond loopback (the laptop case stays key-free).
    let open_to_network = std::iter::once(args.server.listen).chain(http_listen).find(|a| !a.ip().is_loopback());
    if let (Some(addr), None, false) = (open_to_network, &args.server.api_keys_file, args.allow_unauthenticated) {
        eprintln!(
            "mmc-gateway: listening on {addr}, beyond this machine, needs API keys: set --api-keys-file \
             (docs/deploy.md, Security), or --allow-unauthenticated to serve without them on purpose"
        );
        return ExitCode::FAILURE;
    }
    let retention = match parse_retention(&args.meeting_retention) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("--meeting-retention: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The HTTP API takes the same keys as the gRPC server.
    let http_keys = match args.server.api_keys() {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("--api-keys-file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = args.server.clone();
    mmc_runtime::server::run("gateway", args.server.clone(), move || async move {
        // Built inside the runtime: the balancer spawns its workers.
        let location = Location::parse(&args.store, &args.data_dir);
        let stores = match &location {
            // A gateway started with its database waits for it a while.
            Location::Postgres(url) => {
                let retention = (args.removal_retention_hours > 0).then(|| Duration::from_secs(args.removal_retention_hours.saturating_mul(3600)));
                postgres::open_waiting(url, STORE_WAIT, args.store_pool_size, args.search_index, retention).await
            }
            Location::Embedded(_) => Stores::open_with(&location, args.search_index).await,
        }
        .with_context(|| format!("opening the store {}", location.redacted()))?;
        let mut prompts = PromptLibrary::bundled();
        if let Some(dir) = &args.prompts_dir {
            prompts.load_dir(dir).context("--prompts-dir")?;
        }
        prompts.default_version = args.prompt_version.clone();
        prompts.resolve("").context("--prompt-version")?;
        let tls = match &args.upstream_tls_ca {
            Some(ca) => Some(
                mmc_runtime::tls::ClientTlsFiles { ca: ca.clone(), cert: args.upstream_tls_cert.clone(), key: args.upstream_tls_key.clone() }
                    .load()
                    .context("--upstream-tls-ca/--upstream-tls-cert/--upstream-tls-key")?,
            ),
            None => None,
        };
        let tls = tls.as_ref();
        let flows = Flows {
            upstream: Upstreams {
                embed: Upstream::connect("embed", &args.embed_endpoint, tls).context("--embed-endpoint")?,
                caption: Upstream::connect("caption", &args.caption_endpoint, tls).context("--caption-endpoint")?,
                speech: Upstream::connect("speech", &args.speech_endpoint, tls).context("--speech-endpoint")?,
                textgen: Upstream::connect("textgen", &args.textgen_endpoint, tls).context("--textgen-endpoint")?,
                policy: StagePolicy {
                    stage_timeout: Duration::from_millis(args.stage_timeout_ms),
                    attempts: args.stage_attempts.max(1),
                    backoff: Duration::from_millis(args.retry_backoff_ms),
                },
                top_labels: args.top_labels.clamp(1, 20),
            },
            store: stores.images,
            thumbnails: stores.thumbnails,
            fusion: Fusion { image_weight: args.image_weight },
            search_breadth: args.search_breadth,
            meetings: stores.meetings,
            prompts,
            example_cache: Default::default(),
            meeting: MeetingSettings {
                extract_concurrency: args.extract_concurrency.max(1),
                min_relevance: args.min_relevance,
                summary_window_ms: args.summary_window_s.max(1) * 1000,
                summary_window_notes: args.summary_window_notes.max(1),
                speech_model: args.meeting_speech_model.trim().to_string(),
                ..MeetingSettings::default()
            },
        };
        let flows = Arc::new(flows);
        let images = flows.store.clone();
        tokio::spawn(refresh_gauges(flows.clone()));
        if let Some(retention) = retention {
            tokio::spawn(expire_meetings(flows.clone(), retention));
        }
        let handlers = GatewayHandlers::new(flows.clone(), server.request_timeout());
        let mut services = ServiceSet::new().message_limit(server.max_message_bytes).add(GatewayServiceServer::new(handlers.clone()));
        if let Some(addr) = http_listen {
            let state = HttpState {
                flows,
                request_timeout: server.request_timeout(),
                max_upload_bytes: args.http_max_upload_bytes,
                default_max_tokens: args.http_default_max_tokens,
                max_tokens: args.http_max_tokens,
                allowed_hosts: mmc_gateway::http::guard::AllowedHosts::for_listener(addr.ip(), &args.http_allowed_hosts),
                api_keys: http_keys,
                cors_origins: args
                    .http_cors_origins
                    .iter()
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect(),
            };
            services = services.http(addr, mmc_gateway::http::router(Arc::new(state)));
        }
        let served = mmc_runtime::server::serve(&server, services, async { Ok(()) }).await;
        // After the drain: the embedded store saves its graph, so the next start loads it
        // instead of building it again (minutes at a million images).
        if let Err(e) = images.persist().await {
            tracing::warn!("saving the image index's graph failed (the next start rebuilds it): {e}");
        }
        served
    })
}

/// `30d`, `12h`, `15m`, `90s` (or plain seconds) as a duration; empty or `0`: none.
fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a period such as 30d, 12h, 15m or 90s"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be d, h, m or s")),
    };
    Ok((n > 0).then(|| Duration::from_secs(n * seconds)))
}

/// How long a starting gateway waits for its PostgreSQL database to accept connections.
const STORE_WAIT: Duration = Duration::from_secs(60);

/// Keeps the store's gauges current: other gateways sharing the database change it too.
async fn refresh_gauges(flows: Arc<Flows>) {
    loop {
        flows.refresh_gauges().await;
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}

/// Deletes meetings older than `retention`, at start and then every tenth of it (at least
/// every second, at most every hour), for as long as the gateway runs.
async fn expire_meetings(flows: Arc<Flows>, retention: Duration) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let cutoff = now.saturating_sub(retention).as_millis() as i64;
        if let Err(e) = flows.expire_meetings(cutoff).await {
            tracing::warn!(error = %e, "deleting meetings past their retention period failed; trying again later");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_periods_parse_with_their_units() {
        assert_eq!(parse_retention(""), Ok(None));
        assert_eq!(parse_retention("0"), Ok(None));
        assert_eq!(parse_retention("30d"), Ok(Some(Duration::from_secs(30 * 86_400))));
        assert_eq!(parse_retention("12h"), Ok(Some(Duration::from_secs(12 * 3600))));
        assert_eq!(parse_retention("90"), Ok(Some(Duration::from_secs(90))));
        assert!(parse_retention("2w").is_err());
        assert!(parse_retention("soon").is_err());
    }
}
