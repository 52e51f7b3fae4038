//! `k8s/`: every overlay renders, passes schema validation, and agrees with the code.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use serde_json::Value;

use crate::{
    code::{model_options, model_profile, Options, MODEL_SERVICES, SERVICES},
    containers::dockerfile_env,
    tools::{arr, get, kustomize, overlays, repo, run, run_ok, s, tool, yaml_docs},
};

/// Kubernetes version the objects are validated against (native gRPC probes: 1.27+).
const KUBERNETES_VERSION: &str = "1.33.0";

/// The rendered objects of one overlay.
struct Rendered {
    overlay: String,
    docs: Vec<Value>,
}

impl Rendered {
    fn of(overlay: &str, yaml: &str) -> Rendered {
        Rendered { overlay: overlay.to_string(), docs: yaml_docs(yaml) }
    }

    fn all<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs.iter().filter(move |d| s(d, &["kind"]) == kind)
    }

    fn find(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| s(d, &["kind"]) == kind && s(d, &["metadata", "name"]) == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.overlay))
    }

    /// The environment a container starts with: its ConfigMaps (`envFrom`), then `env`.
    fn env_of(&self, container: &Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for from in arr(container, &["envFrom"]) {
            let name = s(from, &["configMapRef", "name"]);
            let map = self.find("ConfigMap", name);
            for (k, v) in get(map, &["data"]).and_then(Value::as_object).into_iter().flatten() {
                env.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        for e in arr(container, &["env"]) {
            env.insert(s(e, &["name"]).to_string(), s(e, &["value"]).to_string());
        }
        env
    }
}

/// Whether a label selector (`matchLabels`) selects pods with these labels.
fn selects(selector: Option<&Value>, labels: &Value) -> bool {
    let Some(selector) = selector.and_then(Value::as_object) else { return false };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    arr(pod, &["spec", list]).iter().find(|c| s(c, &["name"]) == name).unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

fn port_named(c: &Value, name: &str) -> u64 {
    arr(c, &["ports"])
        .iter()
        .find(|p| s(p, &["name"]) == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("container {} has no port named {name}", s(c, &["name"])))
}

/// Expands Kubernetes' `$(VAR)` references in a command argument.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "unresolved variable in {arg:?}");
    out
}

#[test]
fn every_overlay_renders_and_passes_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    for (overlay, path) in overlays() {
        let yaml = kustomize(&path);
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let validate =
            |file: &std::path::Path| run(Command::new(tool("kubernetes-validate")).args(["--strict", "--quiet", "-k", KUBERNETES_VERSION]).arg(file));
        let out = validate(&file);
        assert!(
            out.status.success(),
            "{overlay}: objects do not validate against Kubernetes {KUBERNETES_VERSION}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The validator can fail: the same objects with one probe field misspelt are refused.
        let broken = dir.path().join(format!("{overlay}-broken.yaml"));
        std::fs::write(&broken, yaml.replacen("periodSeconds:", "periodSecs:", 1)).unwrap();
        assert!(!validate(&broken).status.success(), "{overlay}: kubernetes-validate accepted a misspelt field");
    }
}

#[test]
fn manifests_agree_with_the_code() {
    let image_env = dockerfile_env(&repo().join("deploy/docker/Dockerfile"));
    let models_dir_in_image = image_env.get("MMC_MODELS_DIR").expect("the image sets MMC_MODELS_DIR").clone();
    for (overlay, path) in overlays() {
        let r = Rendered::of(&overlay, &kustomize(&path));
        for svc in SERVICES {
            check_service(&r, svc, &models_dir_in_image);
        }
        check_gateway_endpoints(&r);
        check_gateway_state(&r);
        check_network_policies(&r);
    }
    assert!(
        overlays().iter().any(|(_, path)| kustomize(path).contains("MMC_STORE_URL")),
        "no overlay runs the gateway on PostgreSQL (k8s/overlays/postgres)"
    );
}

/// Where the gateway keeps its state decides how it may run: on PostgreSQL (the URL from a
/// Secret, never in the manifest) it is stateless, with two replicas at least, rolling
/// updates, an autoscaler and a budget that keeps one serving; on the embedded store it is
/// one replica on a volume, replaced by stopping the old pod first (two processes must
/// never open one redb file).
fn check_gateway_state(r: &Rendered) {
    let deployment = r.find("Deployment", "mmc-gateway");
    let server = container(&deployment["spec"]["template"], "containers", "server");
    let store = arr(server, &["env"]).iter().find(|e| s(e, &["name"]) == "MMC_STORE_URL");
    let volumes = arr(&deployment["spec"]["template"], &["spec", "volumes"]);
    let strategy = s(deployment, &["spec", "strategy", "type"]);
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
    let pdb = r.find("PodDisruptionBudget", "mmc-gateway");
    match store {
        Some(url) => {
            assert!(get(url, &["value"]).is_none(), "{}: the database URL (with its password) belongs in a Secret", r.overlay);
            let secret = s(url, &["valueFrom", "secretKeyRef", "name"]);
            assert!(!secret.is_empty(), "{}: MMC_STORE_URL is not read from a Secret", r.overlay);
            assert!(replicas >= 2 && strategy == "RollingUpdate", "{}: a stateless gateway runs ≥ 2 replicas with rolling updates", r.overlay);
            assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(), Some(0), "{}", r.overlay);
            assert!(volumes.iter().all(|v| get(v, &["persistentVolumeClaim"]).is_none()), "{}: a stateless gateway mounts a volume claim", r.overlay);
            assert!(r.all("PersistentVolumeClaim").next().is_none(), "{}: a claim nobody mounts", r.overlay);
            let hpa = r.find("HorizontalPodAutoscaler", "mmc-gateway");
            assert_eq!(s(hpa, &["spec", "scaleTargetRef", "name"]), "mmc-gateway");
            assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2), "{}: the autoscaler may go below two gateways", r.overlay);
            assert!(pdb["spec"]["minAvailable"].as_u64() >= Some(1), "{}: evictions may take every gateway at once", r.overlay);
            // Every gateway the autoscaler may start opens up to its pool of connections:
            // together they must fit PostgreSQL's default max_connections (100).
            let pool: u64 = match r.env_of(server).get("MMC_STORE_POOL_SIZE") {
                Some(v) => v.parse().unwrap_or_else(|_| panic!("{}: MMC_STORE_POOL_SIZE {v:?}", r.overlay)),
                None => Options::of("mmc-gateway", &[]).default("MMC_STORE_POOL_SIZE").parse().unwrap(),
            };
            let most = hpa["spec"]["maxReplicas"].as_u64().unwrap_or(replicas);
            assert!(most * pool <= 100, "{}: {most} gateways x {pool} connections exceed PostgreSQL's default max_connections", r.overlay);
        }
        None => {
            assert!(replicas == 1 && strategy == "Recreate", "{}: an embedded-store gateway must run alone (one redb writer)", r.overlay);
            assert!(volumes.iter().any(|v| get(v, &["persistentVolumeClaim"]).is_some()), "{}: the embedded store needs its volume", r.overlay);
            assert!(
                r.all("HorizontalPodAutoscaler").all(|h| s(h, &["metadata", "name"]) != "mmc-gateway"),
                "{}: a redb gateway cannot scale",
                r.overlay
            );
        }
    }
}

fn check_service(r: &Rendered, svc: &str, models_dir_in_image: &str) {
    let opts = Options::of(&format!("mmc-{svc}"), &[]);
    let grpc = opts.default_port("MMC_LISTEN") as u64;
    let metrics = opts.default_port("MMC_METRICS_LISTEN") as u64;
    let name = format!("mmc-{svc}");
    let ctx = format!("{}/{name}", r.overlay);
    let model_service = MODEL_SERVICES.contains(&svc);

    let dep = r.find("Deployment", &name);
    let pod = &dep["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert!(selects(get(dep, &["spec", "selector", "matchLabels"]), labels), "{ctx}: selector does not select its pods");
    let server = container(pod, "containers", "server");
    assert_eq!(server["command"], serde_json::json!([name]), "{ctx}: runs the wrong binary");

    // Ports and probes: the binary's defaults. The default address is loopback, so the
    // manifest must move it to all interfaces, on the same port.
    assert_eq!(port_named(server, "grpc"), grpc, "{ctx}: grpc port differs from {name}'s default");
    assert_eq!(port_named(server, "metrics"), metrics, "{ctx}: metrics port differs from {name}'s default");
    let env = r.env_of(server);
    assert_eq!(env.get("MMC_LISTEN").map(String::as_str), Some(format!("0.0.0.0:{grpc}").as_str()), "{ctx}: MMC_LISTEN");
    assert_eq!(env.get("MMC_METRICS_LISTEN").map(String::as_str), Some(format!("0.0.0.0:{metrics}").as_str()), "{ctx}: MMC_METRICS_LISTEN");
    // A service with an HTTP API (the gateway) serves it on its default port too.
    let http = opts.accepts("MMC_HTTP_LISTEN").then(|| opts.default_port("MMC_HTTP_LISTEN") as u64);
    if let Some(http) = http {
        assert_eq!(port_named(server, "http"), http, "{ctx}: http port differs from {name}'s default");
        assert_eq!(env.get("MMC_HTTP_LISTEN").map(String::as_str), Some(format!("0.0.0.0:{http}").as_str()), "{ctx}: MMC_HTTP_LISTEN");
    }
    // Probes: plain HTTP on the metrics port (no TLS, no key), /healthz for readiness.
    for (probe, path) in [("startupProbe", "/healthz"), ("readinessProbe", "/healthz"), ("livenessProbe", "/livez")] {
        let port = &server[probe]["httpGet"]["port"];
        assert!(port == "metrics" || port.as_u64() == Some(metrics), "{ctx}: {probe} must be an HTTP probe on the metrics port");
        assert_eq!(s(server, &[probe, "httpGet", "path"]), path, "{ctx}: {probe} path");
    }
    // TLS: the files the container is told to use are mounted from a Secret.
    let mounts: Vec<&str> = arr(server, &["volumeMounts"]).iter().map(|m| s(m, &["mountPath"])).collect();
    for key in ["MMC_TLS_CERT", "MMC_TLS_KEY", "MMC_TLS_CLIENT_CA", "MMC_UPSTREAM_TLS_CA", "MMC_UPSTREAM_TLS_CERT", "MMC_UPSTREAM_TLS_KEY"] {
        if let Some(file) = env.get(key) {
            let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let mount = arr(server, &["volumeMounts"]).iter().find(|m| s(m, &["mountPath"]) == dir);
            let mount = mount.unwrap_or_else(|| panic!("{ctx}: {key}={file} is in no mounted volume ({mounts:?})"));
            let volume = arr(pod, &["spec", "volumes"]).iter().find(|v| v["name"] == mount["name"]).expect("the mount's volume");
            assert!(volume["secret"]["secretName"].is_string(), "{ctx}: {key} is not mounted from a Secret");
        }
    }
    if env.contains_key("MMC_TLS_CERT") {
        assert_eq!(env.contains_key("MMC_TLS_CLIENT_CA"), model_service, "{ctx}: model services (only) require the gateway's certificate");
    }
    let startup_s = server["startupProbe"]["periodSeconds"].as_u64().unwrap_or(10) * server["startupProbe"]["failureThreshold"].as_u64().unwrap_or(3);
    assert!(startup_s >= 300, "{ctx}: the startup probe allows {startup_s} s for model loading");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(s(annotations, &["prometheus.io/scrape"]), "true", "{ctx}: scrape annotation");
    assert_eq!(s(annotations, &["prometheus.io/port"]), metrics.to_string(), "{ctx}: scrape port annotation");

    // Every variable the manifests set is read (a typo would be silently ignored): the
    // container's own by this binary, the shared ConfigMaps' by some mmc binary.
    let own: Vec<&str> = arr(server, &["env"]).iter().map(|e| s(e, &["name"])).collect();
    for key in env.keys().filter(|k| k.starts_with("MMC_") || k.starts_with("OTEL_")) {
        if own.contains(&key.as_str()) {
            assert!(opts.accepts(key), "{ctx}: sets {key}, which {name} does not read");
        } else {
            assert!(
                SERVICES.iter().any(|s| Options::of(&format!("mmc-{s}"), &[]).accepts(key)) || Options::of("mmc", &["models", "fetch"]).accepts(key),
                "{ctx}: a ConfigMap sets {key}, which no mmc binary reads"
            );
        }
    }

    // Resources and security.
    for (k, path) in [("cpu request", ["requests", "cpu"]), ("memory request", ["requests", "memory"]), ("memory limit", ["limits", "memory"])] {
        assert!(get(&server["resources"], &path).is_some(), "{ctx}: no {k}");
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true, "{ctx}: runAsNonRoot");
    for c in arr(pod, &["spec", "containers"]).iter().chain(arr(pod, &["spec", "initContainers"])) {
        let sc = &c["securityContext"];
        let cname = s(c, &["name"]);
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{ctx}/{cname}: read-only root filesystem");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{ctx}/{cname}: allowPrivilegeEscalation");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{ctx}/{cname}: capabilities");
        assert!(get(c, &["capabilities", "add"]).is_none(), "{ctx}/{cname}: adds capabilities");
    }

    // Service, disruption budget, autoscaler.
    let service = r.find("Service", &name);
    assert!(selects(get(service, &["spec", "selector"]), labels), "{ctx}: Service does not select the pods");
    let sport = arr(service, &["spec", "ports"]).iter().find(|p| s(p, &["name"]) == "grpc").expect("Service port grpc");
    assert!(sport["targetPort"] == "grpc" || sport["targetPort"].as_u64() == Some(grpc), "{ctx}: Service targetPort");
    if let Some(http) = http {
        assert!(
            arr(service, &["spec", "ports"]).iter().any(|p| p["targetPort"] == "http" || p["targetPort"].as_u64() == Some(http)),
            "{ctx}: the Service does not expose the HTTP API"
        );
    }
    if model_service {
        assert_eq!(s(service, &["spec", "clusterIP"]), "None", "{ctx}: model services are headless (the gateway balances per pod)");
    }
    assert!(r.all("PodDisruptionBudget").any(|p| selects(get(p, &["spec", "selector", "matchLabels"]), labels)), "{ctx}: no PodDisruptionBudget");
    if model_service {
        let hpa = r
            .all("HorizontalPodAutoscaler")
            .find(|h| s(h, &["spec", "scaleTargetRef", "name"]) == name && s(h, &["spec", "scaleTargetRef", "kind"]) == "Deployment")
            .unwrap_or_else(|| panic!("{ctx}: no HorizontalPodAutoscaler"));
        assert!(hpa["spec"]["minReplicas"].as_u64().unwrap_or(1) >= 2, "{ctx}: one replica cannot keep the PDB and serve");
        assert!(dep["spec"].get("replicas").is_none(), "{ctx}: the HPA owns replicas; the Deployment must not set them");
        check_model_fetch(r, &ctx, svc, pod, &env, &opts, models_dir_in_image);
    }

    // Devices.
    let gpus = server["resources"]["limits"]["nvidia.com/gpu"].as_u64().unwrap_or(0);
    let device = env.get("MMC_DEVICE").map(String::as_str).unwrap_or("cpu");
    if r.overlay == "gpu" && model_service {
        assert!(gpus >= 1, "{ctx}: no nvidia.com/gpu limit");
        assert!(device.starts_with("cuda"), "{ctx}: MMC_DEVICE={device} on a GPU");
        assert!(s(server, &["image"]).contains("cuda"), "{ctx}: not the CUDA image");
        assert_eq!(s(pod, &["spec", "nodeSelector", "nvidia.com/gpu.present"]), "true", "{ctx}: not pinned to GPU nodes");
        assert!(arr(pod, &["spec", "tolerations"]).iter().any(|t| s(t, &["key"]) == "nvidia.com/gpu"), "{ctx}: GPU taint not tolerated");
    } else {
        assert_eq!(gpus, 0, "{ctx}: asks for a GPU");
        assert_eq!(device, "cpu", "{ctx}: MMC_DEVICE");
    }
    if r.overlay == "gpu" && !model_service {
        let terms = arr(pod, &["spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"]);
        assert!(
            terms
                .iter()
                .flat_map(|t| arr(t, &["matchExpressions"]))
                .any(|e| s(e, &["key"]) == "nvidia.com/gpu.present" && s(e, &["operator"]) == "DoesNotExist"),
            "{ctx}: the gateway must stay off GPU nodes"
        );
    }
}

/// The init container fetches exactly the models its service loads, into the volume the
/// server reads them from; and its command line works (run here against the models CI
/// fetched: verified, not downloaded again).
fn check_model_fetch(
    r: &Rendered,
    ctx: &str,
    svc: &str,
    pod: &Value,
    server_env: &BTreeMap<String, String>,
    opts: &Options,
    models_dir_in_image: &str,
) {
    let init = container(pod, "initContainers", "fetch-models");
    let env = r.env_of(init);
    let argv: Vec<String> = arr(init, &["command"]).iter().chain(arr(init, &["args"])).map(|a| expand(a.as_str().unwrap(), &env)).collect();
    assert_eq!(&argv[..3], ["mmc", "models", "fetch"], "{ctx}: init container does not run `mmc models fetch`");
    let flag = |f: &str| argv.iter().position(|a| a == f).map(|i| argv[i + 1].clone());
    let profile = flag("--profile").unwrap_or_else(|| "bundled".into());
    let fetched: BTreeSet<String> = flag("--only").expect("--only").split(',').map(str::to_string).collect();
    let mut loaded = BTreeSet::new();
    for key in model_options(svc) {
        assert!(opts.accepts(key), "{ctx}: mmc-{svc} has no {key}");
        let id = server_env.get(*key).cloned().unwrap_or_else(|| opts.default(key).to_string());
        assert_eq!(model_profile(&id).as_deref(), Some(profile.as_str()), "{ctx}: {key}={id} is not a {profile} model of the manifest");
        if profile == "bundled" {
            assert_eq!(id, opts.default(key), "{ctx}: the bundled profile ConfigMap disagrees with mmc-{svc}'s default {key}");
        }
        loaded.insert(id);
    }
    assert_eq!(fetched, loaded, "{ctx}: the init container fetches other models than the service loads");
    assert_eq!(server_env.get("MMC_PROFILE"), Some(&profile), "{ctx}: the server reports another profile than is fetched");

    // Same volume: written by the init container where the image's MMC_MODELS_DIR points.
    let mount =
        |c: &Value| arr(c, &["volumeMounts"]).iter().find(|m| s(m, &["mountPath"]) == models_dir_in_image).map(|m| s(m, &["name"]).to_string());
    let server = container(pod, "containers", "server");
    let (w, rd) = (mount(init), mount(server));
    assert!(w.is_some() && w == rd, "{ctx}: init and server do not share a volume at {models_dir_in_image}");

    // The exact command line, run here (clap refuses any flag it does not know).
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    run_ok(Command::new(mmc_tests::binary("mmc")).args(&args).env("MMC_MODELS_DIR", mmc_tests::models_dir()));
}

/// The gateway's upstream endpoints name Services that select the right pods, on their port.
fn check_gateway_endpoints(r: &Rendered) {
    let opts = Options::of("mmc-gateway", &[]);
    let gateway = &r.find("Deployment", "mmc-gateway")["spec"]["template"];
    let env = r.env_of(container(gateway, "containers", "server"));
    for svc in MODEL_SERVICES {
        let key = format!("MMC_{}_ENDPOINT", svc.to_uppercase());
        assert!(opts.accepts(&key), "mmc-gateway has no {key}");
        let url = env.get(&key).unwrap_or_else(|| panic!("{}: the gateway's {key} is not set (its default is loopback)", r.overlay));
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or_else(|| panic!("{key}={url}: expected http(s)://service:port"));
        if url.starts_with("https://") {
            assert!(env.contains_key("MMC_UPSTREAM_TLS_CA"), "{key}={url}: https without MMC_UPSTREAM_TLS_CA");
        }
        let (host, port) = rest.split_once(':').unwrap_or_else(|| panic!("{key}={url}: no port"));
        let port: u64 = port.trim_end_matches('/').parse().unwrap();
        let service = r.find("Service", host);
        assert!(arr(service, &["spec", "ports"]).iter().any(|p| p["port"].as_u64() == Some(port)), "{key}={url}: Service {host} has no port {port}");
        let pods = &r.find("Deployment", &format!("mmc-{svc}"))["spec"]["template"]["metadata"]["labels"];
        assert!(selects(get(service, &["spec", "selector"]), pods), "{key}={url}: Service {host} does not select mmc-{svc}'s pods");
    }
}

/// Only the gateway reaches the model services' gRPC port; the rest is denied by default.
fn check_network_policies(r: &Rendered) {
    let policies: Vec<&Value> = r.all("NetworkPolicy").collect();
    assert!(
        policies.iter().any(|p| p["spec"]["podSelector"] == serde_json::json!({})
            && arr(p, &["spec", "policyTypes"]).iter().any(|t| t == "Ingress")
            && arr(p, &["spec", "ingress"]).is_empty()),
        "{}: no default-deny ingress policy",
        r.overlay
    );
    let gateway_labels = &r.find("Deployment", "mmc-gateway")["spec"]["template"]["metadata"]["labels"];
    for svc in MODEL_SERVICES {
        let dep = r.find("Deployment", &format!("mmc-{svc}"));
        let labels = &dep["spec"]["template"]["metadata"]["labels"];
        let grpc = port_named(container(&dep["spec"]["template"], "containers", "server"), "grpc");
        let mut gateway_allowed = false;
        let applies = |p: &&&Value| {
            let sel = &p["spec"]["podSelector"];
            sel.get("matchLabels").is_none() && sel.get("matchExpressions").is_none() || selects(sel.get("matchLabels"), labels)
        };
        for p in policies.iter().filter(applies) {
            for rule in arr(p, &["spec", "ingress"]) {
                let ports = arr(rule, &["ports"]);
                assert!(!ports.is_empty(), "{}: {} opens every port of mmc-{svc}", r.overlay, s(p, &["metadata", "name"]));
                if !ports.iter().any(|pt| pt["port"] == "grpc" || pt["port"].as_u64() == Some(grpc)) {
                    continue;
                }
                assert!(!arr(rule, &["from"]).is_empty(), "{}: {} opens mmc-{svc}'s gRPC port to everyone", r.overlay, s(p, &["metadata", "name"]));
                for peer in arr(rule, &["from"]) {
                    assert!(
                        peer.get("namespaceSelector").is_none() && selects(get(peer, &["podSelector", "matchLabels"]), gateway_labels),
                        "{}: {} lets more than the gateway reach mmc-{svc}'s gRPC port",
                        r.overlay,
                        s(p, &["metadata", "name"])
                    );
                    gateway_allowed = true;
                }
            }
        }
        assert!(gateway_allowed, "{}: the gateway cannot reach mmc-{svc}", r.overlay);
    }
}
