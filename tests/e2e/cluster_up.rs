//! `mmc up` brings up five healthy services, restarts a crashed one, and stops them all
//! cleanly on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use mmc_proto::caption::v1::{caption_service_client::CaptionServiceClient, CaptionRequest};
use mmc_tests::{bin_dir, binary, eventually, find_processes, free_port_range, http_get, ChildGuard};
use nix::{sys::signal::Signal, unistd::Pid};
use tonic::transport::Channel;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

const SERVICES: [(&str, &str); 5] = [
    ("embed", "mmc.embed.v1.EmbedService"),
    ("caption", "mmc.caption.v1.CaptionService"),
    ("speech", "mmc.speech.v1.SpeechService"),
    ("textgen", "mmc.textgen.v1.TextGenService"),
    ("gateway", "mmc.gateway.v1.GatewayService"),
];

/// `mmc up` on the given port ranges, with the binaries of this build.
fn mmc_up(grpc_base: u16, metrics_base: u16) -> Command {
    let mut cmd = Command::new(binary("mmc"));
    cmd.args(["up", "--base-port", &grpc_base.to_string(), "--metrics-base-port", &metrics_base.to_string()])
        .arg("--bin-dir")
        .arg(bin_dir())
        // free_port_range(5) reserves base..=base+5: the last one is free for the HTTP API.
        .args(["--http-port", &(metrics_base + 5).to_string()]);
    // The gateway's state goes under target/, fresh per run, never into the source tree.
    let data = bin_dir().join("test-data").join(format!("mmc-up-{grpc_base}"));
    let _ = std::fs::remove_dir_all(&data);
    cmd.arg("--data-dir").arg(data);
    // As root (CI), the services run as nobody: `mmc up` refuses root services unasked.
    if nix::unistd::geteuid().is_root() {
        cmd.args(["--user", "nobody"]);
    }
    cmd
}

/// The real user id of process `pid`.
fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

async fn channel(port: u16) -> Option<Channel> {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).ok()?.connect().await.ok()
}

async fn health(port: u16, service: &str) -> Option<ServingStatus> {
    let ch = channel(port).await?;
    let r = HealthClient::new(ch).check(HealthCheckRequest { service: service.into() }).await.ok()?;
    Some(r.into_inner().status())
}

async fn reflected_services(port: u16) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let ch = channel(port).await.expect("connect for reflection");
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = ServerReflectionClient::new(ch).server_reflection_info(tokio_stream::iter([req])).await.expect("reflection call").into_inner();
    match stream.message().await.expect("reflection response").expect("one message").message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmc_up_serves_five_services_restarts_crashes_and_stops_cleanly() {
    let grpc_base = free_port_range(5);
    let metrics_base = free_port_range(5);
    let log_path = std::env::temp_dir().join(format!("mmc-up-e2e-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut mmc = ChildGuard::spawn(
        mmc_up(grpc_base, metrics_base).args(["--startup-timeout-s", "120", "--stop-timeout-s", "20"]).stdout(Stdio::piped()).stderr(log),
    );
    let stdout = mmc.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let up = line.contains("cluster is up");
                printed.push(line);
                if up {
                    break;
                }
            }
            Err(_) => {
                panic!("mmc up did not report the cluster up; stdout {printed:?}; log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default())
            }
        }
    }
    // The endpoint table follows.
    for _ in 0..SERVICES.len() + 1 {
        printed.push(rx.recv_timeout(Duration::from_secs(5)).expect("endpoint table"));
    }
    let table = printed.join("\n");

    for (i, (name, full)) in SERVICES.iter().enumerate() {
        let port = grpc_base + i as u16;
        assert!(table.contains(&format!("http://127.0.0.1:{port}")), "{name} endpoint printed:\n{table}");
        assert_eq!(health(port, "").await, Some(ServingStatus::Serving), "{name} overall health");
        assert_eq!(health(port, full).await, Some(ServingStatus::Serving), "{name} service health");
        let listed = reflected_services(port).await;
        assert!(listed.iter().any(|s| s == full), "{name} reflection lists {full}: {listed:?}");
        assert!(listed.iter().any(|s| s == "grpc.health.v1.Health"), "{name} reflection lists health: {listed:?}");
        // Only this process's own service is advertised.
        let others = SERVICES.iter().filter(|(n, _)| n != name).any(|(_, f)| listed.iter().any(|s| s == f));
        assert!(!others, "{name} advertises another service: {listed:?}");
    }

    // A malformed request gets INVALID_ARGUMENT; it shows in the metrics.
    let mut caption = CaptionServiceClient::new(channel(grpc_base + 1).await.unwrap());
    let err = caption.caption(CaptionRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for (i, (name, _)) in SERVICES.iter().enumerate() {
        let addr = format!("127.0.0.1:{}", metrics_base + i as u16);
        let (status, body) = http_get(&addr, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200, "{name} /metrics status");
        assert!(body.contains(&format!("mmc_serving{{service=\"{name}\"}} 1")), "{name} metrics:\n{body}");
    }
    let (_, body) = http_get(&format!("127.0.0.1:{}", metrics_base + 1), "/metrics").unwrap();
    assert!(
        body.lines().any(|l| l.starts_with("grpc_server_handled_total")
            && l.contains("grpc_method=\"Caption\"")
            && l.contains("grpc_code=\"INVALID_ARGUMENT\"")),
        "handled counter for the refused call:\n{body}"
    );

    // The demo flows run against the live cluster.
    let demo = Command::new(binary("mmc"))
        .args(["demo", "--gateway", &format!("http://127.0.0.1:{}", grpc_base + 4)])
        .args(["--textgen", &format!("http://127.0.0.1:{}", grpc_base + 3)])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "mmc demo failed: {out}\n{}", String::from_utf8_lossy(&demo.stderr));
    let cat_line = out.lines().find(|l| l.starts_with("\"a cat lying on a blanket\"")).unwrap_or_default();
    let best = cat_line.trim_start_matches("\"a cat lying on a blanket\"").trim_start();
    assert!(best.starts_with("cat.png"), "the cat query finds the cat photo first:\n{out}");
    let cat_alt = out.lines().skip_while(|l| *l != "cat.png").nth(1).unwrap_or_default();
    assert!(cat_alt.trim_start().starts_with("alt text") && cat_alt.to_lowercase().contains("cat"), "alt text of the cat photo:\n{out}");
    // The meeting section: a decision cited, the owner question answered from the meeting.
    let decision = out.lines().skip_while(|l| *l != "Decisions:").nth(1).unwrap_or_default();
    assert!(decision.contains("decided") && decision.contains("[at "), "a cited decision:\n{out}");
    let owner = out.lines().skip_while(|l| !l.starts_with("Q: Who will update the project plan?")).nth(1).unwrap_or_default();
    assert!(owner.starts_with("A: ") && owner.contains("Sarah") && owner.contains("[cites "), "the owner, cited:\n{out}");
    let notes = out.lines().skip_while(|l| !l.starts_with("Notes")).nth(1).unwrap_or_default().trim();
    assert!(notes.starts_with("{\"decisions\": [") && notes.ends_with('}'), "schema-shaped notes:\n{out}");

    // Crash one service: mmc up restarts it.
    let listen = format!("127.0.0.1:{}", grpc_base + 2);
    let pids = find_processes(&["mmc-speech", &listen]);
    assert_eq!(pids.len(), 1, "one speech process: {pids:?}");
    if nix::unistd::geteuid().is_root() {
        for (i, (name, _)) in SERVICES.iter().enumerate() {
            let pid = find_processes(&[&format!("mmc-{name}"), &format!("127.0.0.1:{}", grpc_base + i as u16)])[0];
            assert_eq!(uid_of(pid), 65534, "{name} runs as nobody, not root");
        }
    }
    nix::sys::signal::kill(Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    let restarted = eventually(Duration::from_secs(30), || async {
        let now = find_processes(&["mmc-speech", &listen]);
        let serving = health(grpc_base + 2, "").await == Some(ServingStatus::Serving);
        (serving && now.len() == 1 && now[0] != pids[0]).then(|| now[0])
    })
    .await;
    assert!(restarted.is_some(), "speech was not restarted; log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());

    // SIGTERM: every service drains and exits cleanly, then mmc exits 0.
    nix::sys::signal::kill(Pid::from_raw(mmc.pid()), Signal::SIGTERM).unwrap();
    let status = mmc.wait_timeout(Duration::from_secs(60)).expect("mmc up exits after SIGTERM");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "mmc up exit status {status}; log:\n{log}");
    for (name, _) in SERVICES {
        assert!(log.contains(&format!("mmc: {name} stopped\n")), "{name} stopped cleanly; log:\n{log}");
        let port = format!("127.0.0.1:{}", grpc_base + SERVICES.iter().position(|(n, _)| *n == name).unwrap() as u16);
        assert!(find_processes(&[&format!("mmc-{name}"), &port]).is_empty(), "{name} still running");
    }
    let _ = std::fs::remove_file(&log_path);
}

/// Services never run as root by accident: as root, `mmc up` refuses to start them without
/// --user (or --allow-root); as anyone else, --user of another user is refused.
#[test]
fn mmc_up_will_not_run_services_as_root_unasked() {
    let mut cmd = Command::new(binary("mmc"));
    cmd.args(["up", "--base-port", "1", "--metrics-base-port", "6"])
        .arg("--bin-dir")
        .arg(bin_dir())
        .env_remove("MMC_USER")
        .env_remove("MMC_ALLOW_ROOT");
    let root = nix::unistd::geteuid().is_root();
    if !root {
        cmd.args(["--user", "root"]);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mmc up started: {stderr}");
    let expected = if root { "pass --user NAME" } else { "switching users needs root" };
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn mmc_up_gives_up_on_a_service_that_cannot_start() {
    let empty = tempfile::tempdir().unwrap();
    let grpc_base = free_port_range(5);
    let metrics_base = free_port_range(5);
    let mut mmc = ChildGuard::spawn(mmc_up(grpc_base, metrics_base).env("MMC_MODELS_DIR", empty.path()).stdout(Stdio::null()).stderr(Stdio::piped()));
    let pipe = mmc.0.as_mut().unwrap().stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(pipe), &mut text);
        text
    });
    let status = mmc.wait_timeout(Duration::from_secs(90)).expect("mmc up gives up instead of looping");
    assert!(!status.success());
    let stderr = reader.join().unwrap();
    // Both model services with bundled models (embed, textgen) need them; whichever
    // exhausts its retries first stops the cluster.
    assert!(["embed", "textgen"].iter().any(|s| stderr.contains(&format!("{s} failed to start 3 times"))), "{stderr}");
    assert!(stderr.contains("mmc models fetch"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_do_not_outlive_a_killed_mmc_up() {
    let grpc_base = free_port_range(5);
    let metrics_base = free_port_range(5);
    let mut mmc = ChildGuard::spawn(mmc_up(grpc_base, metrics_base).stdout(Stdio::null()).stderr(Stdio::null()));
    let listen = format!("127.0.0.1:{grpc_base}");
    let started = eventually(Duration::from_secs(60), || async { (!find_processes(&["mmc-embed", &listen]).is_empty()).then_some(()) }).await;
    assert!(started.is_some(), "mmc-embed started");
    // SIGKILL: mmc up gets no chance to clean up; the kernel's parent-death signal must.
    nix::sys::signal::kill(Pid::from_raw(mmc.pid()), Signal::SIGKILL).unwrap();
    mmc.wait_timeout(Duration::from_secs(10)).expect("mmc up killed");
    let gone = eventually(Duration::from_secs(30), || async {
        let left: Vec<i32> = (0..5u16).flat_map(|i| find_processes(&["mmc-", &format!("127.0.0.1:{}", grpc_base + i)])).collect();
        left.is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "services outlived mmc up");
}
