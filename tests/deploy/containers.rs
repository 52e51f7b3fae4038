//! `deploy/`: the Dockerfiles pass hadolint and build what the code is; the compose files
//! wire the services the way the code expects. No container engine runs here: the image
//! builds themselves are not exercised (docs/deploy.md says what is and is not checked).

use std::{collections::BTreeMap, path::Path, process::Command};

use serde_json::Value;

use crate::{
    code::{Options, MODEL_SERVICES, SERVICES},
    tools::{arr, get, repo, run, s, tool, yaml_docs},
};

/// The binaries every image must carry: the services and the CLI.
fn binaries() -> Vec<String> {
    std::iter::once("mmc".to_string()).chain(SERVICES.iter().map(|s| format!("mmc-{s}"))).collect()
}

/// A Dockerfile with continuation lines joined.
fn instructions(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') && cur.is_empty() || line.is_empty() {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The `ENV` of a Dockerfile's last stage (the image that runs).
pub fn dockerfile_env(path: &Path) -> BTreeMap<String, String> {
    let ins = instructions(path);
    let last = ins.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let mut env = BTreeMap::new();
    // Stages built FROM an earlier stage inherit its ENV: follow the chain.
    let mut stages = vec![last];
    while let Some(&i) = stages.last() {
        let parent = ins[i].split_whitespace().nth(1).unwrap().to_string();
        match ins[..i].iter().rposition(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {parent}"))) {
            Some(p) => stages.push(p),
            None => break,
        }
    }
    for &start in stages.iter().rev() {
        for l in ins[start + 1..].iter().take_while(|l| !l.starts_with("FROM ")) {
            if let Some(rest) = l.strip_prefix("ENV ") {
                for kv in rest.split_whitespace() {
                    if let Some((k, v)) = kv.split_once('=') {
                        env.insert(k.to_string(), v.to_string());
                    }
                }
            }
        }
    }
    env
}

fn hadolint(path: &Path) -> std::process::Output {
    run(Command::new(tool("hadolint")).arg("--config").arg(repo().join(".hadolint.yaml")).arg(path))
}

#[test]
fn dockerfiles_pass_hadolint_and_match_the_code() {
    let dir = repo().join("deploy/docker");
    let files = ["Dockerfile", "Dockerfile.cuda"];
    let server = Options::of("mmc-embed", &[]);
    let (grpc, metrics) = (server.default_port("MMC_LISTEN"), server.default_port("MMC_METRICS_LISTEN"));
    let http = Options::of("mmc-gateway", &[]).default_port("MMC_HTTP_LISTEN");
    for name in files {
        let path = dir.join(name);
        let out = hadolint(&path);
        assert!(out.status.success(), "hadolint {name}:\n{}", String::from_utf8_lossy(&out.stdout));
        let ins = instructions(&path);
        let env = dockerfile_env(&path);
        assert_eq!(env.get("MMC_LISTEN"), Some(&format!("0.0.0.0:{grpc}")), "{name}: MMC_LISTEN");
        assert_eq!(env.get("MMC_METRICS_LISTEN"), Some(&format!("0.0.0.0:{metrics}")), "{name}: MMC_METRICS_LISTEN");
        for k in env.keys().filter(|k| k.starts_with("MMC_")) {
            assert!(SERVICES.iter().any(|s| Options::of(&format!("mmc-{s}"), &[]).accepts(k)), "{name}: sets {k}, which no service reads");
        }
        assert_eq!(env.get("MMC_HTTP_LISTEN"), Some(&format!("0.0.0.0:{http}")), "{name}: MMC_HTTP_LISTEN");
        assert!(ins.iter().any(|l| l == &format!("EXPOSE {grpc} {metrics} {http}")), "{name}: EXPOSE {grpc} {metrics} {http}");
        let last_user = ins.iter().rev().find(|l| l.starts_with("USER ")).expect("USER");
        assert!(!last_user.contains(" 0") && !last_user.contains("root"), "{name}: runs as root ({last_user})");
        let build = ins.iter().find(|l| l.contains("cargo build")).expect("cargo build");
        assert!(build.contains("--release") && build.contains("--locked"), "{name}: {build}");
        for b in binaries() {
            assert!(build.contains(&format!("target/release/{b} ")), "{name}: does not copy {b} out of the build");
        }
        if name.ends_with(".cuda") {
            for svc in MODEL_SERVICES {
                assert!(build.contains(&format!("mmc-{svc}/cuda")), "{name}: mmc-{svc} built without its cuda feature");
                let manifest = std::fs::read_to_string(repo().join(format!("services/{svc}/Cargo.toml"))).unwrap();
                assert!(manifest.contains("\ncuda = ["), "services/{svc}: no `cuda` feature");
            }
            assert!(env.get("MMC_DEVICE").is_some_and(|d| d.starts_with("cuda")), "{name}: MMC_DEVICE");
        }
    }
    // hadolint can fail: a Dockerfile with an untagged base image and `cd` in RUN is refused.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "FROM debian\nRUN cd /tmp && ls\n").unwrap();
    assert!(!hadolint(bad.path()).status.success(), "hadolint accepted a bad Dockerfile");
}

fn compose(file: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("deploy").join(file)).unwrap();
    yaml_docs(&text).into_iter().next().expect("a compose document")
}

#[test]
fn compose_files_wire_the_services_as_the_code_expects() {
    let c = compose("compose.yaml");
    let services = c["services"].as_object().expect("services");
    let image_env = dockerfile_env(&repo().join("deploy/docker/Dockerfile"));
    let models_dir = &image_env["MMC_MODELS_DIR"];
    let fetch = &c["services"]["models"];
    let cmd: Vec<&str> = arr(fetch, &["command"]).iter().filter_map(Value::as_str).collect();
    assert_eq!(&cmd[..3], ["mmc", "models", "fetch"], "compose: the models service does not fetch");
    let fetch_volume =
        arr(fetch, &["volumes"]).iter().filter_map(Value::as_str).find(|v| v.ends_with(&format!(":{models_dir}"))).expect("models volume");
    for svc in SERVICES {
        let def = services.get(svc).unwrap_or_else(|| panic!("compose: no service {svc}"));
        let opts = Options::of(&format!("mmc-{svc}"), &[]);
        let grpc = opts.default_port("MMC_LISTEN");
        assert_eq!(def["command"], serde_json::json!([format!("mmc-{svc}")]), "compose/{svc}: command");
        let health: Vec<&str> = arr(def, &["healthcheck", "test"]).iter().filter_map(Value::as_str).collect();
        assert_eq!(health, ["CMD", "mmc", "health", &format!("http://127.0.0.1:{grpc}")], "compose/{svc}: healthcheck");
        assert_eq!(def["read_only"], true, "compose/{svc}: read-only root filesystem");
        for (k, _) in get(def, &["environment"]).and_then(Value::as_object).into_iter().flatten() {
            assert!(k.starts_with("OTEL_") && opts.accepts(k) || opts.accepts(k), "compose/{svc}: sets {k}, which mmc-{svc} does not read");
        }
        if MODEL_SERVICES.contains(&svc) {
            let (volume, _) = fetch_volume.split_once(':').unwrap();
            assert!(
                arr(def, &["volumes"]).iter().filter_map(Value::as_str).any(|v| v.starts_with(&format!("{volume}:{models_dir}"))),
                "compose/{svc}: does not mount the fetched models at {models_dir}"
            );
            assert_eq!(
                s(def, &["depends_on", "models", "condition"]),
                "service_completed_successfully",
                "compose/{svc}: starts before the models are fetched"
            );
        }
    }
    // The gateway reaches each model service by its compose name on the service's port,
    // and publishes its gRPC and HTTP ports.
    let gateway = Options::of("mmc-gateway", &[]);
    let published: Vec<&str> = arr(&c, &["services", "gateway", "ports"]).iter().filter_map(Value::as_str).collect();
    for port in [gateway.default_port("MMC_LISTEN"), gateway.default_port("MMC_HTTP_LISTEN")] {
        assert!(published.iter().any(|p| p.ends_with(&format!(":{port}"))), "compose/gateway: port {port} not published ({published:?})");
    }
    for svc in MODEL_SERVICES {
        let key = format!("MMC_{}_ENDPOINT", svc.to_uppercase());
        assert!(gateway.accepts(&key));
        let port = Options::of(&format!("mmc-{svc}"), &[]).default_port("MMC_LISTEN");
        assert_eq!(s(&c, &["services", "gateway", "environment", &key]), format!("http://{svc}:{port}"), "compose/gateway: {key}");
        assert_eq!(s(&c, &["services", "gateway", "depends_on", svc, "condition"]), "service_healthy", "compose/gateway: waits for {svc}");
    }

    // The GPU override: every model service on a GPU with the CUDA image, the gateway not.
    let gpu = compose("compose.gpu.yaml");
    for svc in MODEL_SERVICES {
        let def = &gpu["services"][svc];
        assert_eq!(s(def, &["environment", "MMC_DEVICE"]), "cuda", "compose.gpu/{svc}: MMC_DEVICE");
        assert!(Options::of(&format!("mmc-{svc}"), &[]).accepts("MMC_DEVICE"));
        let devices = arr(def, &["deploy", "resources", "reservations", "devices"]);
        assert!(devices.iter().any(|d| arr(d, &["capabilities"]).iter().any(|c| c == "gpu")), "compose.gpu/{svc}: no GPU reserved");
        assert!(s(def, &["build", "dockerfile"]).ends_with("Dockerfile.cuda"), "compose.gpu/{svc}: not the CUDA image");
    }
    assert!(gpu["services"].get("gateway").is_none(), "compose.gpu: the gateway needs no GPU");
}

/// The JSON-array form of the first `keyword` instruction (`CMD`, `HEALTHCHECK`) in stage
/// `stage` of a Dockerfile.
fn stage_command(path: &Path, stage: &str, keyword: &str) -> Vec<String> {
    let ins = instructions(path);
    let start = ins.iter().position(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {stage}"))).expect("stage");
    let line = ins[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("FROM "))
        .find(|l| l.starts_with(keyword))
        .unwrap_or_else(|| panic!("stage {stage} has no {keyword}"));
    let json = &line[line.rfind("CMD [").expect("exec-form CMD") + 4..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// What of the CPU image can run without a container engine: its commands, with its
/// environment, on the binaries CI built. The fetch target's command on the models CI
/// fetched (verified in place, nothing downloaded); the gateway started with the runtime
/// image's environment (port remapped, as `docker run -p` would), probed by the image's
/// HEALTHCHECK command, logging JSON as the image asks.
#[test]
fn the_cpu_images_commands_work_with_its_environment() {
    let path = repo().join("deploy/docker/Dockerfile");
    let fetch = stage_command(&path, "fetch", "CMD ");
    assert_eq!(&fetch[..3], ["mmc", "models", "fetch"]);
    crate::tools::run_ok(Command::new(mmc_tests::binary(&fetch[0])).args(&fetch[1..]).env("MMC_MODELS_DIR", mmc_tests::models_dir()));

    let env = dockerfile_env(&path);
    let data = tempfile::tempdir().unwrap();
    // The image listens on every interface, where the gateway wants API keys.
    let keys = data.path().join("keys");
    std::fs::write(&keys, "image-test-key-0123456789\n").unwrap();
    let port = mmc_tests::free_port_range(3);
    let image_port = env["MMC_LISTEN"].rsplit(':').next().unwrap().to_string();
    let http_addr = format!("127.0.0.1:{}", port + 2);
    let mut gateway = Command::new(mmc_tests::binary("mmc-gateway"));
    gateway
        .env_clear()
        .envs(env.iter().filter(|(k, _)| k.starts_with("MMC_")))
        .env("MMC_LISTEN", format!("0.0.0.0:{port}"))
        .env("MMC_METRICS_LISTEN", format!("0.0.0.0:{}", port + 1))
        .env("MMC_HTTP_LISTEN", &http_addr)
        .env("MMC_DATA_DIR", data.path())
        .env("MMC_API_KEYS_FILE", &keys)
        .env("MMC_MODELS_DIR", mmc_tests::models_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut guard = mmc_tests::ChildGuard::spawn(&mut gateway);
    let health = stage_command(&path, "runtime", "HEALTHCHECK ");
    let health: Vec<String> = health.iter().map(|a| a.replace(&format!(":{image_port}"), &format!(":{port}"))).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = run(Command::new(mmc_tests::binary(&health[0])).args(&health[1..]));
        if out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the image's HEALTHCHECK never passed: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (status, _) = mmc_tests::http_get(&http_addr, "/healthz").expect("the HTTP API answers");
    assert_eq!(status, 200, "/healthz once SERVING");
    let child = guard.0.take().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let first = logs.lines().next().expect("the gateway logged nothing");
    assert!(serde_json::from_str::<Value>(first).is_ok(), "MMC_LOG_FORMAT=json from the image, but the log is: {first}");
}
