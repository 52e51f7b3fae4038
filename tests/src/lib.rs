//! Helpers for the end-to-end tests: locating the built binaries, free loopback ports,
//! child processes that are always cleaned up, and polling with a deadline.

pub mod postgres;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

/// `target/<profile>/`, where cargo put the workspace binaries. The e2e tests run the
/// real binaries, so `cargo build --workspace` must have run (the test script does).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash>
    exe.parent().and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

/// Path of a workspace binary, with a clear failure if it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} not found: run `cargo build --workspace` before the e2e tests", path.display());
    path
}

/// A base port such that `count` consecutive loopback ports are free right now.
///
/// Tests in one process run in parallel and start servers some time after asking, so a
/// process-wide cursor hands out disjoint ranges (a port is never offered twice), from
/// a start that differs between processes. The ports lie below the kernel's ephemeral
/// range: the OS hands those out to every `:0` listener and outgoing connection of the
/// other tests, which could take a port between the check here and the server's bind
/// (seen: a gateway's HTTP port taken that way).
pub fn free_port_range(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let (low, high) = (PORTS_LOW, ephemeral_low().saturating_sub(1).clamp(PORTS_LOW + 2_000, 60_000));
    let _ = CURSOR.compare_exchange(0, initial_port(low, high), Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let mut base = CURSOR.fetch_add(u32::from(count) + 1, Ordering::SeqCst);
        if base + u32::from(count) > high {
            CURSOR.store(low, Ordering::SeqCst);
            base = CURSOR.fetch_add(u32::from(count) + 1, Ordering::SeqCst);
        }
        let base = base as u16;
        let listeners: Vec<_> = (0..count).map(|i| TcpListener::bind(("127.0.0.1", base + i))).collect();
        if listeners.iter().all(|l| l.is_ok()) {
            return base;
        }
    }
}

/// Lowest port the tests use (above the well-known and most registered services).
const PORTS_LOW: u32 = 12_000;

/// First port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(32_768)
}

fn initial_port(low: u32, high: u32) -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    low + (nanos ^ std::process::id().wrapping_mul(7919)) % (high - low - 100)
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(Some(cmd.spawn().expect("spawn child process")))
    }

    pub fn pid(&self) -> i32 {
        self.0.as_ref().expect("child").id() as i32
    }

    /// Waits for exit up to `timeout`; None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.as_mut().expect("child").try_wait().expect("try_wait") {
                self.0 = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pids of running processes whose command line contains every one of `needles`.
pub fn find_processes(needles: &[&str]) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // Zombies have an empty command line; they are gone for our purposes.
        if !cmdline.is_empty() && needles.iter().all(|n| cmdline.contains(n)) {
            pids.push(pid);
        }
    }
    pids
}

/// Polls `f` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes of a file, hashed.
pub fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read file")))
}

/// `GET http://{addr}{path}` over a plain socket; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, "text/plain", b"", Duration::from_secs(10))
}

/// A raw HTTP/1.1 request on loopback (no client library: the test sees exactly what the
/// server sends); returns (status, body).
pub fn http_request(addr: &str, method: &str, path: &str, content_type: &str, body: &[u8], timeout: Duration) -> std::io::Result<(u16, String)> {
    http_request_as(addr, addr, &[], method, path, content_type, body, timeout)
}

/// [`http_request`] with `Host: host` and `headers` (what a browser on another site sends).
#[allow(clippy::too_many_arguments)]
pub fn http_request_as(
    addr: &str,
    host: &str,
    headers: &[(&str, &str)],
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_raw(addr, &request, timeout)
}

/// Sends the bytes of a whole HTTP/1.1 request (anything, malformed included) and reads
/// the answer until the server closes; returns (status, body), status 0 if none.
pub fn http_raw(addr: &str, request: &[u8], timeout: Duration) -> std::io::Result<(u16, String)> {
    let response = http_exchange(addr, request, timeout)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// As [`http_raw`], returning the whole answer: status line, headers and body.
pub fn http_exchange(addr: &str, request: &[u8], timeout: Duration) -> std::io::Result<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    // A server may answer and close while the body is still being sent (a body declared
    // over its limit gets 413 at once): the request goes out from another thread while this
    // one reads, so the answer is read before the connection is reset, and a failed write
    // is not an error of the request.
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(timeout))?;
    let request = request.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut writer, &request);
    });
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = sender.join();
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// A model service process started for a test, once its health check says SERVING.
pub struct Service {
    /// The process; killed when the value is dropped.
    pub process: ChildGuard,
    /// A connected gRPC channel.
    pub channel: tonic::transport::Channel,
    /// `host:port` of its Prometheus endpoint.
    pub metrics: String,
    /// `http://host:port` of its gRPC endpoint.
    pub url: String,
}

/// Starts workspace binary `name` on free loopback ports with `extra` flags and waits (up to
/// `timeout`, model loading included) until it reports SERVING.
pub async fn start_service(name: &str, extra: &[&str], timeout: Duration) -> Service {
    start_service_on(name, free_port_range(2), extra, timeout).await
}

/// [`start_service`] on gRPC port `port` (metrics on `port + 1`): for restarting a service
/// where its callers expect it.
pub async fn start_service_on(name: &str, port: u16, extra: &[&str], timeout: Duration) -> Service {
    launch(name, port, extra, timeout, std::process::Stdio::inherit()).await
}

/// [`start_service`] with the service's log (its stderr) written to file `log`, for tests
/// that read what it logged.
pub async fn start_service_logged(name: &str, extra: &[&str], timeout: Duration, log: &Path) -> Service {
    let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    launch(name, free_port_range(2), extra, timeout, file.into()).await
}

async fn launch(name: &str, port: u16, extra: &[&str], timeout: Duration, stderr: std::process::Stdio) -> Service {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let metrics = format!("127.0.0.1:{}", port + 1);
    // The gateway's HTTP API would take its default port: tests that use it pass
    // --http-listen; the others get any free port, so parallel tests never collide.
    let http: &[&str] = if name == "mmc-gateway" && !extra.contains(&"--http-listen") { &["--http-listen", "127.0.0.1:0"] } else { &[] };
    let process = ChildGuard::spawn(
        Command::new(binary(name))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", &metrics])
            .args(http)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(stderr),
    );
    let url = format!("http://127.0.0.1:{port}");
    let channel = eventually(timeout, || async {
        let ch = tonic::transport::Channel::from_shared(url.clone()).unwrap().connect().await.ok()?;
        let status = HealthClient::new(ch.clone()).check(HealthCheckRequest { service: String::new() }).await.ok()?;
        (status.into_inner().status() == ServingStatus::Serving).then_some(ch)
    })
    .await
    .unwrap_or_else(|| panic!("{name} did not become SERVING within {timeout:?}"));
    Service { process, channel, metrics, url }
}

/// The value of Prometheus sample `name` whose labels include every `key="value"` in
/// `labels` (other labels, such as `service`, are ignored), if the scrape has one.
pub fn metric_value(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    scrape.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, label_set) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|want| label_set.contains(want))).then(|| value.parse().ok())?
    })
}

/// Runs service binary `name` with an empty models directory and returns its stderr after
/// it exits; asserts it failed. Every model service must refuse to start without its
/// models and say how to get them.
pub fn startup_error_without_models(name: &str) -> String {
    let empty = tempfile::tempdir().unwrap();
    let port = free_port_range(2);
    let out = Command::new(binary(name))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", &format!("127.0.0.1:{}", port + 1)])
        .env("MMC_MODELS_DIR", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{name} started without its models");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The models directory the tests use: `MMC_MODELS_DIR`, else the repository's `models/`
/// (where `mmc models fetch` puts them by default).
pub fn models_dir() -> PathBuf {
    std::env::var_os("MMC_MODELS_DIR").map(Into::into).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

/// A tool installed by `deploy/test-tools.sh` (`$MMC_TOOLS_DIR/deploy-tools/bin`: kubectl,
/// kubernetes-validate, hadolint, schemathesis, and `python` with openai, requests, PyYAML).
pub fn deploy_tool(name: &str) -> PathBuf {
    let path = tools_root().join("deploy-tools/bin").join(name);
    assert!(path.exists(), "{} is missing: run `bash deploy/test-tools.sh` (deploy/setup.sh --test runs it)", path.display());
    path
}

/// Where `deploy/setup.sh` installs tools: `$MMC_TOOLS_DIR`, else `~/.cache/mmc`.
pub fn tools_root() -> PathBuf {
    std::env::var_os("MMC_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mmc"))
}

/// Starts the named model services (`mmc-embed`...) concurrently, each on free ports, and
/// then a gateway wired to them (its data in `data_dir`, `gateway_args` added).
pub async fn start_cluster(models: &[&str], data_dir: &std::path::Path, gateway_args: &[&str]) -> (Vec<Service>, Service) {
    let services = futures::future::join_all(models.iter().map(|m| start_service(m, &[], Duration::from_secs(90)))).await;
    let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.to_str().expect("utf-8 path").into()];
    for (name, s) in models.iter().zip(&services) {
        let flag = format!("--{}-endpoint", name.trim_start_matches("mmc-"));
        args.extend([flag, s.url.clone()]);
    }
    args.extend(gateway_args.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(30)).await;
    (services, gateway)
}

/// The test meeting, shared by the gRPC and web UI tests: (voice, line). Three
/// decisions, three action items with named owners. (Not the demo's meeting: the flow
/// must not be tuned to one script.)
pub const MEETING_SCRIPT: [(&str, &str); 8] = [
    ("en-gb", "Hello everyone, thanks for joining the budget review."),
    ("en-us", "We agreed to reduce the marketing budget by ten percent."),
    ("en-gb", "Laura will send the revised budget to finance on Monday."),
    ("en-us+f3", "The team decided to delay the office move until June."),
    ("en-us", "Kevin will book the conference room for the workshop."),
    ("en-gb", "We decided to stop the print advertising campaign."),
    ("en-us+f3", "Olivia will prepare the sales report by Thursday."),
    ("en-us", "That is all for today, thank you."),
];

/// The four services of the meeting flows (speech, text generation, embeddings, then the
/// gateway over them, storing into `data`): `(speech, textgen, embed, gateway)`.
pub async fn start_meeting_services(data: &Path) -> (Service, Service, Service, Service) {
    start_meeting_services_with(data, &[]).await
}

/// [`start_meeting_services`] with more gateway options.
pub async fn start_meeting_services_with(data: &Path, gateway_args: &[&str]) -> (Service, Service, Service, Service) {
    let (speech, textgen, embed) = tokio::join!(
        start_service("mmc-speech", &[], Duration::from_secs(60)),
        start_service("mmc-textgen", &[], Duration::from_secs(60)),
        start_service("mmc-embed", &[], Duration::from_secs(60)),
    );
    let mut args = vec![
        "--speech-endpoint",
        &speech.url,
        "--textgen-endpoint",
        &textgen.url,
        "--embed-endpoint",
        &embed.url,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend(gateway_args);
    let gateway = start_service("mmc-gateway", &args, Duration::from_secs(30)).await;
    (speech, textgen, embed, gateway)
}

/// Runs a tool the tests need (sox, espeak-ng, opusenc...), which must succeed.
pub fn run_tool(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (deploy/setup.sh --test installs it)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// [`MEETING_SCRIPT`] spoken line by line in its voices, 0.6 s apart, as one 16 kHz WAV
/// in `dir` (espeak-ng and sox, which `deploy/setup.sh --test` installs).
pub fn synthesize_meeting(dir: &Path) -> PathBuf {
    synthesize_lines(dir, "meeting", &MEETING_SCRIPT)
}

/// `lines` (espeak-ng voice, text) spoken in turn, 0.6 s apart, as `<dir>/<name>.wav`
/// (16 kHz mono).
pub fn synthesize_lines(dir: &Path, name: &str, lines: &[(&str, &str)]) -> PathBuf {
    let mut parts = Vec::new();
    let gap = dir.join("gap.wav");
    run_tool(Command::new("sox").args(["-n", "-r", "16000", "-c", "1", "-b", "16"]).arg(&gap).args(["trim", "0", "0.6"]));
    for (i, (voice, line)) in lines.iter().enumerate() {
        let raw = dir.join(format!("{name}-line{i}.wav"));
        run_tool(Command::new("espeak-ng").args(["-v", voice, "-s", "150", "-w"]).arg(&raw).arg(line));
        let resampled = dir.join(format!("{name}-line{i}-16k.wav"));
        run_tool(Command::new("sox").arg(&raw).args(["-r", "16000", "-c", "1", "-b", "16"]).arg(&resampled));
        parts.push(resampled);
        parts.push(gap.clone());
    }
    let joined = dir.join(format!("{name}.wav"));
    run_tool(Command::new("sox").args(&parts).arg(&joined));
    joined
}

/// The stage names a proto documents for `message.timings` ("Per-stage times (a, b or c)"),
/// as groups of alternatives, read from `proto/<proto>`.
pub fn documented_stages(proto: &str, message: &str) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto").join(proto);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text.find(&format!("message {message} {{")).unwrap_or_else(|| panic!("no message {message} in {proto}"));
    let body = &text[start..start + text[start..].find("\n}").expect("message ends")];
    let open = body.find("Per-stage times (").unwrap_or_else(|| panic!("{message} documents no stages")) + "Per-stage times (".len();
    let inner = &body[open..open + body[open..].find(')').expect("stage list closes")];
    inner.split(',').map(|group| group.split(" or ").map(|s| s.trim().to_string()).collect()).collect()
}

/// Asserts that the stages a response reported are the ones its proto documents: each
/// reported stage is documented, and each documented stage (one of its alternatives) was
/// reported.
pub fn assert_documented_stages<'a>(proto: &str, message: &str, reported: impl IntoIterator<Item = &'a str>) {
    let groups = documented_stages(proto, message);
    let reported: Vec<&str> = reported.into_iter().collect();
    for stage in &reported {
        assert!(groups.iter().flatten().any(|d| d == stage), "{message} reports stage {stage:?}, which {proto} does not document: {groups:?}");
    }
    for group in &groups {
        assert!(group.iter().any(|d| reported.contains(&d.as_str())), "{proto} documents {group:?} for {message}, not reported: {reported:?}");
    }
}
