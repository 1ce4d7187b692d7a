//! Command line of the `amvm` binary. One file per command family; this file only dispatches.
//!
//! Each family module exposes a clap `Subcommand` or `Args` type and a `run` function returning
//! `anyhow::Result<ExitCode>`; errors print their whole cause chain and exit with status 1
//! (2 for command-line mistakes, from clap).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod bench_api;
pub mod bench_ingest;
pub mod bench_qemu;
pub mod controller;
pub mod ctl;
pub mod lab;
pub mod migrate;
pub mod monitor;
pub mod policy;
pub mod sim;
pub mod volume;

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
    /// Run the controller on the embedded PlanetLab day in real time, with its API on 127.0.0.1:8080.
    Demo(controller::DemoArgs),
    /// Run the controller service from a configuration file (the real-cluster form).
    Controller(controller::ControllerArgs),
    /// Talk to a running controller's API (status, plans, uploads, strategies, experiments).
    Ctl(ctl::CtlArgs),
    /// Inspect, check and list consolidation policies (WebAssembly components).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Benchmarks that print JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print version information.
    Version,
    /// Run the node agent: report host and VM metrics to a collector.
    Agent(monitor::AgentArgs),
    /// Run the metrics collector: receive agent reports, store RRD files.
    Collector(monitor::CollectorArgs),
    /// Read stored metrics (fetch values, draw graphs).
    #[command(subcommand)]
    Metrics(monitor::MetricsCommand),
    /// Simulate one strategy on a trace (CloudSim-comparable energy and SLA metrics).
    Sim(sim::SimArgs),
    /// A/B-test two strategies over the same traces.
    Ab(sim::AbArgs),
    /// Live-migrate a guest memory region between two local processes (pre/post/hybrid-copy).
    Migrate(migrate::MigrateArgs),
    /// Several libvirt nodes on this machine with lab guests: up, status, load, migrate, down.
    Lab(lab::LabArgs),
    /// Volumes on the disk array (tgtd): create, list, attach to a lab guest, migrate with it.
    Volume(volume::VolumeArgs),
    /// One half of a memory migration (`source` / `dest`), usable across two machines.
    Engine {
        #[command(subcommand)]
        cmd: migrate::EngineCommand,
    },
}

/// Runs the command line and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Demo(a) => controller::run_demo(a),
        Command::Controller(a) => controller::run_controller(a),
        Command::Ctl(a) => ctl::run(a),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Version => {
            println!("amvm {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(a) => monitor::run_agent(a),
        Command::Collector(a) => monitor::run_collector(a),
        Command::Metrics(m) => monitor::run_metrics(m),
        Command::Sim(args) => sim::run_sim(args),
        Command::Ab(args) => sim::run_ab_cmd(args),
        Command::Migrate(args) => migrate::run_migrate(&args),
        Command::Lab(a) => lab::run(a),
        Command::Volume(a) => volume::run(a),
        Command::Engine { cmd } => migrate::run_engine(cmd),
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
    // Colours only on a terminal: logs written to a file or a pipe stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}
