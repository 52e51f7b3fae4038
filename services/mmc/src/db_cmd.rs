//! `mmc db`: the gateway's stores (PostgreSQL schema, copies between stores). The work is
//! done by `mmc-store` (built with the gateway, which owns the store code), found beside
//! this binary, so `mmc` itself stays free of database drivers.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Apply the PostgreSQL schema (a gateway also does at start): `--store postgres://…`.
    Migrate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Copy images and meetings between stores without running any model, resumable:
    /// `--from redb:DATA_DIR --to postgres://…`.
    Copy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub fn run(cmd: DbCommand) -> anyhow::Result<ExitCode> {
    let (sub, args) = match cmd {
        DbCommand::Migrate { args } => ("migrate", args),
        DbCommand::Copy { args } => ("copy", args),
    };
    let exe = std::env::current_exe()?.parent().context("mmc has no parent directory")?.join("mmc-store");
    let status = std::process::Command::new(&exe).arg(sub).args(&args).status().with_context(|| format!("running {}", exe.display()))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
