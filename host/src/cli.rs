//! Command line of the `amvm` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// AMVM: autonomous VM consolidation.
#[derive(Debug, Parser)]
#[command(name = "amvm", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information.
    Version,
}

/// Runs the command line and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("amvm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
