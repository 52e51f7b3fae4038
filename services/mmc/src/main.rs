//! `mmc`: the one command for the cluster.
//!
//! - `mmc up`: starts the five services as separate processes, waits until each reports
//!   SERVING, prints the endpoints, restarts crashed services with backoff, and stops
//!   them all cleanly on Ctrl-C / SIGTERM.
//! - `mmc models fetch|list`: model weights per profile (see `mmc-models`).
//! - `mmc certs dev`: a local CA and certificates for `mmc up --tls`.
//! - `mmc health`, `mmc services`: client commands against running services.
//! - `mmc index|search|describe|summarize|ask` (gateway) and `mmc transcribe` (speech):
//!   the user flows from a shell, `--json` for scripts (see `client_cmd`).
//! - `mmc demo`: the user flows available so far, against a running cluster.
//! - `mmc eval meetings`: the meeting chain scored on the evaluation set (see `eval`).
//! - `mmc bench jobs`: the user jobs timed end to end, per stage (see `bench`).

mod bench;
mod bench_models;
mod certs_cmd;
mod cli_client;
mod client_cmd;
mod db_cmd;
mod demo;
mod eval;
mod models_cmd;
mod review_cmd;
mod speak;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "mmc", version, about = "Multimodal gRPC inference cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the cluster (all five services) and supervise it.
    Up(up::UpArgs),
    /// Fetch, verify and list model weights.
    #[command(subcommand)]
    Models(models_cmd::ModelsCommand),
    /// Check the health of services (grpc.health.v1).
    Health(cli_client::HealthArgs),
    /// List the gRPC services a server exposes (server reflection).
    Services(cli_client::ServicesArgs),
    /// Run the available user flows against a running cluster and print the results.
    Demo(demo::DemoArgs),
    /// Index images (a directory or files) for search: caption, labels, vectors.
    Index(client_cmd::IndexArgs),
    /// Search the indexed images by words or by an image.
    Search(client_cmd::SearchArgs),
    /// Describe an image: alt text and a detailed description.
    Describe(client_cmd::DescribeArgs),
    /// Transcribe a recording (text, SRT, WebVTT or JSON).
    Transcribe(client_cmd::TranscribeArgs),
    /// Summarize a meeting recording: summary, decisions, action items, with timestamps.
    Summarize(client_cmd::SummarizeArgs),
    /// Ask a question about a summarized meeting; the answer cites the transcript.
    Ask(client_cmd::AskArgs),
    /// List the images whose alt text waits for a person's review; approve them.
    Review(review_cmd::ReviewArgs),
    /// Stored meetings: list, export (Markdown, JSON, iCalendar to-dos), delete.
    #[command(subcommand)]
    Meeting(review_cmd::MeetingCommand),
    /// Certificates for TLS and mutual TLS (`mmc certs dev`).
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// Score the flows on an evaluation set (`mmc eval meetings`, `mmc eval alt-text`).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Time the user jobs through a running gateway, per stage (`mmc bench jobs`).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The gateway's stores: apply the PostgreSQL schema, copy between stores.
    #[command(subcommand)]
    Db(db_cmd::DbCommand),
}

fn main() -> ExitCode {
    let cli: Cli = mmc_runtime::config::parse();
    let result = match cli.command {
        Command::Models(cmd) => models_cmd::run(cmd),
        Command::Certs(cmd) => certs_cmd::run(cmd),
        Command::Db(cmd) => db_cmd::run(cmd),
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
            match runtime {
                Ok(rt) => rt.block_on(async move {
                    match command {
                        Command::Up(args) => up::run(args).await,
                        Command::Health(args) => cli_client::health(args).await,
                        Command::Services(args) => cli_client::services(args).await,
                        Command::Demo(args) => demo::run(args).await,
                        Command::Index(args) => client_cmd::index(args).await,
                        Command::Search(args) => client_cmd::search(args).await,
                        Command::Describe(args) => client_cmd::describe(args).await,
                        Command::Transcribe(args) => client_cmd::transcribe(args).await,
                        Command::Summarize(args) => client_cmd::summarize(args).await,
                        Command::Ask(args) => client_cmd::ask(args).await,
                        Command::Review(args) => review_cmd::review(args).await,
                        Command::Meeting(cmd) => review_cmd::meeting(cmd).await,
                        Command::Eval(cmd) => eval::run(cmd).await,
                        Command::Bench(cmd) => bench::run(cmd).await,
                        Command::Models(_) | Command::Certs(_) | Command::Db(_) => unreachable!("handled above"),
                    }
                }),
                Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmc: error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error as the user reads it: its contexts, then, for a call a server refused, the
/// gRPC code, the server's message and the request id that finds the call in the
/// server's log (`x-request-id`) instead of tonic's debug dump.
fn report(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|cause| match cause.downcast_ref::<tonic::Status>() {
            Some(status) => {
                let id = status.metadata().get(mmc_runtime::request_id::HEADER).and_then(|v| v.to_str().ok());
                let code = mmc_runtime::policy::code_name(status.code());
                match id {
                    Some(id) => format!("{code}: {} (request id {id})", status.message()),
                    None => format!("{code}: {}", status.message()),
                }
            }
            None => cause.to_string(),
        })
        .collect();
    parts.join(": ")
}
