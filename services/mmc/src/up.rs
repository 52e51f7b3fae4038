//! `mmc up`: run the cluster on one machine as supervised processes.
//!
//! Each service is its own process (as in a real deployment), on consecutive loopback
//! ports from `--base-port` (gRPC) and `--metrics-base-port` (Prometheus). The gateway
//! learns the other endpoints from `MMC_<SERVICE>_ENDPOINT` variables. A service that
//! exits is restarted with exponential backoff (1 s doubling to 30 s, reset after a
//! minute of uptime). Ctrl-C / SIGTERM sends SIGTERM to every service, waits for them to
//! drain, and kills any that outlive the grace period.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{ExitCode, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::{sleep, Instant},
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

use crate::cli_client::connect_with;

/// Exits during startup after which `mmc up` gives up on a service.
const STARTUP_ATTEMPTS: u32 = 3;

/// The services, in start order (the gateway last: it calls the others).
pub const SERVICES: [&str; 5] = ["embed", "caption", "speech", "textgen", "gateway"];

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Host the services bind to.
    #[arg(long, env = "MMC_HOST", default_value = "127.0.0.1")]
    host: String,
    /// gRPC port of the first service; the others follow (embed, caption, speech,
    /// textgen, gateway).
    #[arg(long, env = "MMC_BASE_PORT", default_value_t = 50051)]
    base_port: u16,
    /// Metrics port of the first service; the others follow in the same order.
    #[arg(long, env = "MMC_METRICS_BASE_PORT", default_value_t = 9464)]
    metrics_base_port: u16,
    /// Directory holding the mmc-<service> binaries (default: beside `mmc`).
    #[arg(long, env = "MMC_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// How long to wait for every service to report SERVING (model loading included).
    #[arg(long, env = "MMC_STARTUP_TIMEOUT_S", default_value_t = 600)]
    startup_timeout_s: u64,
    /// Grace period for services to drain after SIGTERM before they are killed.
    #[arg(long, env = "MMC_STOP_TIMEOUT_S", default_value_t = 20)]
    stop_timeout_s: u64,
    /// Directory of the cluster's state (the gateway's image index), made absolute and
    /// passed to the services as `MMC_DATA_DIR`.
    #[arg(long, env = "MMC_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Port of the gateway's HTTP API (OpenAI-compatible routes), on `--host`.
    #[arg(long, env = "MMC_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Require this API key on every service (a file whose first line is the key): each
    /// service gets it as `--api-keys-file`, the gateway also sends it to the others.
    /// Clients send it as `authorization: Bearer <key>` (`MMC_API_KEY` for `mmc`).
    #[arg(long, env = "MMC_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// TLS everywhere: every listener (gRPC and the gateway's HTTP) speaks TLS, and the
    /// model services accept only the gateway's client certificate (mutual TLS). Uses the
    /// certificates in `<data-dir>/tls` (`mmc certs dev --out <data-dir>/tls`), made there
    /// on first use; clients trust `<data-dir>/tls/ca.crt` (`MMC_TLS_CA` for `mmc`).
    #[arg(long, env = "MMC_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    tls: bool,
    /// When `mmc up` runs as root: run the services as this user instead (the data
    /// directory is given to it). A decoder flaw in a service then owns that user's
    /// files, not the machine.
    #[arg(long, env = "MMC_USER")]
    user: Option<String>,
    /// When `mmc up` runs as root without --user: run the services as root anyway (refused
    /// otherwise).
    #[arg(long, env = "MMC_ALLOW_ROOT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    allow_root: bool,
    /// The (uid, gid) the services run as (from --user), set by `run`.
    #[arg(skip)]
    run_as: Option<(u32, u32)>,
    /// Extra flags passed to every service (e.g. --service-arg=--log-format=json).
    #[arg(long = "service-arg", allow_hyphen_values = true)]
    service_args: Vec<String>,
}

/// One supervised service.
struct Supervised {
    name: &'static str,
    binary: PathBuf,
    grpc: String,
    metrics: String,
    /// Environment of this service only (on top of the shared one).
    own_env: Vec<(String, String)>,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restart_at: Option<Instant>,
    restarts: u32,
}

pub async fn run(mut args: UpArgs) -> anyhow::Result<ExitCode> {
    let run_as = run_as(&args)?;
    args.run_as = run_as.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw()));
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().context("mmc has no parent directory")?.to_path_buf(),
    };
    // The gateway refuses to listen beyond loopback without keys; say so once, here.
    let loopback = args.host == "localhost" || args.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let open_anyway = std::env::var("MMC_ALLOW_UNAUTHENTICATED").is_ok_and(|v| v == "true");
    if !loopback && args.api_key_file.is_none() && !open_anyway {
        bail!(
            "--host {} reaches beyond this machine: set --api-key-file (clients then send the key), \
             or MMC_ALLOW_UNAUTHENTICATED=true to serve without keys on purpose",
            args.host
        );
    }
    let data_dir = std::path::absolute(&args.data_dir).with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
    let tls_dir = data_dir.join("tls");
    let client_tls = if args.tls { Some(tls_setup(&tls_dir, &args.host)?) } else { None };
    let scheme = if args.tls { "https" } else { "http" };
    let mut services: Vec<Supervised> = Vec::new();
    let mut endpoints: HashMap<&str, String> = HashMap::new();
    for (i, name) in SERVICES.iter().copied().enumerate() {
        let binary = bin_dir.join(format!("mmc-{name}"));
        if !binary.is_file() {
            bail!("{} not found; build the workspace first (cargo build --release) or set --bin-dir", binary.display());
        }
        let grpc = format!("{}:{}", args.host, args.base_port + i as u16);
        let metrics = format!("{}:{}", args.host, args.metrics_base_port + i as u16);
        endpoints.insert(name, format!("{scheme}://{grpc}"));
        // Mutual TLS: a model service accepts only clients with a certificate of the CA,
        // i.e. the gateway; the gateway's own listeners take any client (API keys).
        let own_env = match (args.tls, name) {
            (true, "gateway") | (false, _) => vec![],
            (true, _) => vec![("MMC_TLS_CLIENT_CA".to_string(), tls_dir.join("server/ca.crt").to_string_lossy().into_owned())],
        };
        services.push(Supervised {
            name,
            binary,
            grpc,
            metrics,
            own_env,
            child: None,
            started: Instant::now(),
            backoff: Duration::from_secs(1),
            restart_at: None,
            restarts: 0,
        });
    }
    let mut env: Vec<(String, String)> = endpoints.iter().map(|(name, url)| (format!("MMC_{}_ENDPOINT", name.to_uppercase()), url.clone())).collect();
    env.push(("MMC_DATA_DIR".into(), data_dir.to_string_lossy().into_owned()));
    if let Some(user) = &run_as {
        // The services write the stores (and read the TLS keys) here.
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        give_to(&data_dir, user).with_context(|| format!("giving {} to user {}", data_dir.display(), user.name))?;
        println!("mmc: running the services as user {} (uid {})", user.name, user.uid);
    }
    if args.tls {
        let path = |p: &str| tls_dir.join(p).to_string_lossy().into_owned();
        for (var, file) in [
            ("MMC_TLS_CERT", "server/tls.crt"),
            ("MMC_TLS_KEY", "server/tls.key"),
            ("MMC_UPSTREAM_TLS_CA", "client/ca.crt"),
            ("MMC_UPSTREAM_TLS_CERT", "client/tls.crt"),
            ("MMC_UPSTREAM_TLS_KEY", "client/tls.key"),
        ] {
            env.push((var.into(), path(file)));
        }
    }
    if let Some(file) = &args.api_key_file {
        // Checked here, so a bad file stops `mmc up` with one message, not five.
        mmc_runtime::auth::read_client_key(file)?;
        let file = std::path::absolute(file)?.to_string_lossy().into_owned();
        env.push(("MMC_API_KEYS_FILE".into(), file.clone()));
        env.push(("MMC_UPSTREAM_API_KEY_FILE".into(), file));
    }

    for svc in &mut services {
        spawn(svc, &args, &env)?;
    }

    // Wait until all report SERVING (or a signal arrives, or the deadline passes).
    let deadline = Instant::now() + Duration::from_secs(args.startup_timeout_s);
    let signal = mmc_runtime::shutdown::signal();
    tokio::pin!(signal);
    let mut ready = vec![false; services.len()];
    while !ready.iter().all(|r| *r) {
        tokio::select! {
            s = &mut signal => {
                eprintln!("mmc: {s} during startup; stopping");
                return stop_all(&mut services, &args).await;
            }
            _ = sleep(Duration::from_millis(200)) => {}
        }
        for (i, svc) in services.iter_mut().enumerate() {
            if let Some(status) = svc.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                eprintln!("mmc: {} exited during startup ({status})", svc.name);
                svc.child = None;
                // A service that cannot start (missing model, port taken) will not start
                // on the next try either: give up with its log above rather than loop.
                if svc.restarts + 1 >= STARTUP_ATTEMPTS {
                    eprintln!(
                        "mmc: {} failed to start {STARTUP_ATTEMPTS} times; see its log above (models missing? run `mmc models fetch`)",
                        svc.name
                    );
                    stop_all(&mut services, &args).await?;
                    return Ok(ExitCode::FAILURE);
                }
                schedule_restart(svc);
            }
            restart_if_due(svc, &args, &env)?;
            if !ready[i] {
                ready[i] = is_serving(&format!("{scheme}://{}", svc.grpc), client_tls.clone()).await;
            }
        }
        if Instant::now() > deadline {
            let waiting: Vec<&str> = services.iter().zip(&ready).filter(|(_, r)| !**r).map(|(s, _)| s.name).collect();
            eprintln!("mmc: services not SERVING after {} s: {waiting:?}", args.startup_timeout_s);
            stop_all(&mut services, &args).await?;
            return Ok(ExitCode::FAILURE);
        }
    }

    println!("mmc: cluster is up");
    println!("{:<9} {:<28} METRICS", "SERVICE", "GRPC");
    for svc in &services {
        println!("{:<9} {:<28} http://{}/metrics", svc.name, format!("{scheme}://{}", svc.grpc), svc.metrics);
    }
    println!("{:<9} {scheme}://{}:{}/v1 (OpenAI-compatible HTTP API)", "", args.host, args.http_port);
    println!("{:<9} {scheme}://{}:{}/ (web UI: search, describe, meetings)", "", args.host, args.http_port);
    if args.tls {
        println!("mmc: TLS on; clients trust {} (MMC_TLS_CA for mmc)", tls_dir.join("ca.crt").display());
    }
    println!("mmc: Ctrl-C to stop");

    // Supervise.
    loop {
        tokio::select! {
            s = &mut signal => {
                eprintln!("mmc: {s}; stopping the cluster");
                return stop_all(&mut services, &args).await;
            }
            _ = sleep(Duration::from_millis(250)) => {}
        }
        for svc in &mut services {
            if let Some(status) = svc.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                eprintln!("mmc: {} exited unexpectedly ({status})", svc.name);
                svc.child = None;
                schedule_restart(svc);
            }
            restart_if_due(svc, &args, &env)?;
        }
    }
}

fn spawn(svc: &mut Supervised, args: &UpArgs, env: &[(String, String)]) -> anyhow::Result<()> {
    let mut cmd = Command::new(&svc.binary);
    cmd.arg("--listen")
        .arg(&svc.grpc)
        .arg("--metrics-listen")
        .arg(&svc.metrics)
        .args(if svc.name == "gateway" { vec!["--http-listen".to_string(), format!("{}:{}", args.host, args.http_port)] } else { vec![] })
        .args(&args.service_args)
        .envs(env.iter().chain(&svc.own_env).map(|(k, v)| (k, v)))
        // All services stop together, so no balancer needs the NOT_SERVING grace period.
        .env("MMC_DRAIN_GRACE_MS", std::env::var("MMC_DRAIN_GRACE_MS").unwrap_or_else(|_| "0".into()))
        // The child must not inherit a listen address meant for another process.
        .env_remove("MMC_LISTEN")
        .env_remove("MMC_METRICS_LISTEN")
        .env_remove("MMC_HTTP_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((uid, gid)) = args.run_as {
        // std switches group, then user (dropping root's supplementary groups) before the
        // pre_exec hook below, so the parent-death signal is set as the new user and
        // survives.
        cmd.uid(uid).gid(gid);
    }
    // If `mmc up` itself dies without cleaning up (SIGKILL, OOM), the kernel sends its
    // services SIGTERM so none is left orphaned holding its port.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {}", svc.binary.display()))?;
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let name = svc.name;
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name:>7}] {line}");
            }
        });
    }
    svc.child = Some(child);
    svc.started = Instant::now();
    Ok(())
}

fn schedule_restart(svc: &mut Supervised) {
    // A service that ran for a minute was healthy: start the backoff over.
    if svc.started.elapsed() > Duration::from_secs(60) {
        svc.backoff = Duration::from_secs(1);
    }
    eprintln!("mmc: restarting {} in {} s", svc.name, svc.backoff.as_secs());
    svc.restart_at = Some(Instant::now() + svc.backoff);
    svc.backoff = (svc.backoff * 2).min(Duration::from_secs(30));
}

fn restart_if_due(svc: &mut Supervised, args: &UpArgs, env: &[(String, String)]) -> anyhow::Result<()> {
    if svc.restart_at.is_some_and(|t| Instant::now() >= t) {
        svc.restart_at = None;
        svc.restarts += 1;
        spawn(svc, args, env)?;
        eprintln!("mmc: restarted {} (restart #{})", svc.name, svc.restarts);
    }
    Ok(())
}

async fn is_serving(url: &str, tls: Option<tonic::transport::ClientTlsConfig>) -> bool {
    let Ok(ch) = connect_with(url, tls).await else { return false };
    matches!(
        HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await,
        Ok(r) if r.get_ref().status() == ServingStatus::Serving
    )
}

/// Whom the services run as: `--user` (root only), or `mmc up`'s own user; root only
/// with `--allow-root`.
fn run_as(args: &UpArgs) -> anyhow::Result<Option<nix::unistd::User>> {
    use nix::unistd::{geteuid, User};
    let root = geteuid().is_root();
    match &args.user {
        Some(name) => {
            let user = User::from_name(name)?.with_context(|| format!("--user {name}: no such user"))?;
            if user.uid == geteuid() {
                Ok(None)
            } else if root {
                Ok(Some(user))
            } else {
                bail!("--user {name}: switching users needs root (mmc up runs as uid {})", geteuid())
            }
        }
        None if root && args.allow_root => {
            eprintln!("mmc: warning: the services run as root (--allow-root)");
            Ok(None)
        }
        None if root => bail!(
            "mmc up runs as root, and the services would too (they parse untrusted images and audio): \
             pass --user NAME to run them as that user (e.g. --user nobody), or --allow-root"
        ),
        None => Ok(None),
    }
}

/// Makes `path` and everything under it owned by `user`.
fn give_to(path: &std::path::Path, user: &nix::unistd::User) -> anyhow::Result<()> {
    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            give_to(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// The certificates of `mmc up --tls` in `dir` (made on first use, for `host` too), and
/// the client configuration `mmc up` checks health with (the gateway's identity).
fn tls_setup(dir: &std::path::Path, host: &str) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    if !dir.join("server/tls.crt").is_file() {
        let extra: Vec<String> = if mmc_runtime::certs::LOCAL_NAMES.contains(&host) { vec![] } else { vec![host.to_string()] };
        mmc_runtime::certs::write_dev_set(dir, &extra, 365)?;
        println!("mmc: made a development CA and certificates in {} (mmc certs dev)", dir.display());
    }
    let client = |p: &str| Some(dir.join(p));
    mmc_runtime::tls::ClientTlsFiles { ca: dir.join("client/ca.crt"), cert: client("client/tls.crt"), key: client("client/tls.key") }
        .load()
        .with_context(|| format!("the TLS files in {}", dir.display()))
}

/// SIGTERM to all, wait for them to drain, SIGKILL stragglers. Exit code 0 only if
/// every service exited cleanly.
async fn stop_all(services: &mut [Supervised], args: &UpArgs) -> anyhow::Result<ExitCode> {
    for svc in services.iter() {
        if let Some(pid) = svc.child.as_ref().and_then(|c| c.id()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.stop_timeout_s);
    let mut clean = true;
    for svc in services.iter_mut() {
        let Some(child) = svc.child.as_mut() else { continue };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, child.wait()).await {
            Ok(Ok(status)) if status.success() => eprintln!("mmc: {} stopped", svc.name),
            Ok(Ok(status)) => {
                clean = false;
                eprintln!("mmc: {} stopped with {status}", svc.name);
            }
            Ok(Err(e)) => {
                clean = false;
                eprintln!("mmc: waiting for {}: {e}", svc.name);
            }
            Err(_) => {
                clean = false;
                eprintln!("mmc: {} did not stop within {} s; killing it", svc.name, args.stop_timeout_s);
                let _ = child.kill().await;
            }
        }
        svc.child = None;
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
