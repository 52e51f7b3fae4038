//! `mmc certs dev`: a local CA and certificates for TLS and mutual TLS (see
//! `mmc_runtime::certs` for the layout). For development and one-machine clusters; in
//! production, certificates come from cert-manager or the organisation's CA.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Make a new CA, a server certificate (localhost, 127.0.0.1, ::1 and --name) and a
    /// client certificate for the gateway, in DIR/{ca.crt,server/,client/}.
    Dev(DevArgs),
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Directory to write (created; existing certificates in it are replaced).
    #[arg(long, default_value = "data/tls")]
    out: PathBuf,
    /// More host names or IP addresses for the server certificate (repeatable), e.g. the
    /// Kubernetes Service names `mmc-embed.mmc.svc`.
    #[arg(long = "name")]
    names: Vec<String>,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Dev(args) => {
            mmc_runtime::certs::write_dev_set(&args.out, &args.names, args.days)?;
            let d = args.out.display();
            println!("wrote {d}/ca.crt, {d}/server/{{tls.crt,tls.key,ca.crt}}, {d}/client/{{tls.crt,tls.key,ca.crt}} (valid {} days)", args.days);
            println!("services: --tls-cert {d}/server/tls.crt --tls-key {d}/server/tls.key [--tls-client-ca {d}/server/ca.crt]");
            println!("gateway:  --upstream-tls-ca {d}/client/ca.crt --upstream-tls-cert {d}/client/tls.crt --upstream-tls-key {d}/client/tls.key");
            println!("clients:  MMC_TLS_CA={d}/ca.crt");
            Ok(ExitCode::SUCCESS)
        }
    }
}
