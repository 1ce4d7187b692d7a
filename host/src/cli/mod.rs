//! Command line of the `amvm` binary. One file per command family; this file only dispatches.
//!
//! Each family module exposes a clap `Subcommand` or `Args` type and a `run` function returning
//! `anyhow::Result<ExitCode>`; errors print their whole cause chain and exit with status 1
//! (2 for command-line mistakes, from clap).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod migrate;

/// AMVM: autonomous VM consolidation.
#[derive(Debug, Parser)]
#[command(name = "amvm", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `amvm_host=debug`); also `AMVM_LOG`.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information.
    Version,
    /// Live-migrate a guest memory region between two local processes (pre/post/hybrid-copy).
    Migrate(migrate::MigrateArgs),
    /// One half of a memory migration (`source` / `dest`), usable across two machines.
    Engine {
        #[command(subcommand)]
        cmd: migrate::EngineCommand,
    },
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        cmd: migrate::BenchCommand,
    },
}

/// Runs the command line and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Version => {
            println!("amvm {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate(args) => migrate::run_migrate(&args),
        Command::Engine { cmd } => migrate::run_engine(cmd),
        Command::Bench { cmd } => migrate::run_bench(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("amvm: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str) {
    let filter = std::env::var("AMVM_LOG").unwrap_or_else(|_| default.to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
