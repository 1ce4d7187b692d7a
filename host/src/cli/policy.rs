//! `amvm policy …`: list the built-ins, inspect and check modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::policy::{
    builtin, BreakerConfig, CheckOptions, CheckReport, Descriptor, PolicyError, PolicyKind, PolicyModule,
    PolicyRuntime, RuntimeConfig,
};
use crate::scheduler::Strategy;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the built-in policies (with their parameters) and built-in strategies.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show what a policy module declares: world, name, version, parameters, imports.
    Inspect {
        /// A policy component (`.wasm`) or a built-in name (`lr`, `mmt`, …).
        module: String,
        #[arg(long)]
        json: bool,
    },
    /// Load a module under the sandbox, configure it and probe-call it on a synthetic cluster.
    ///
    /// Exits 0 with one OK line (with the cost extrapolated to `--at-hosts`; warnings on stderr),
    /// or non-zero with one line saying what is wrong (not wasm, core module instead of
    /// component, too complex to compile, wrong or several worlds, kind mismatch, invalid
    /// descriptor, denied WASI import, trap, deadline exceeded, memory limit, invalid output …).
    Check {
        /// A policy component (`.wasm`) or a built-in name.
        module: String,
        /// Parameter values, `name=value` (repeatable); others take their declared defaults.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Hosts in the synthetic probe cluster.
        #[arg(long, default_value_t = CheckOptions::default().probe_hosts)]
        hosts: usize,
        /// Cluster size the measured cost is extrapolated to (warns past the cycle budget).
        #[arg(long, default_value_t = CheckOptions::default().at_hosts)]
        at_hosts: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// Sandbox limits (defaults: 50 ms per call, 64 MiB memory).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Per-call deadline in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub deadline_ms: u64,
    /// Memory cap per module in MiB (all its memories and tables together).
    #[arg(long, default_value_t = 64)]
    pub memory_mib: usize,
}

impl LimitArgs {
    pub fn config(&self) -> RuntimeConfig {
        RuntimeConfig {
            deadline: std::time::Duration::from_millis(self.deadline_ms.max(1)),
            memory_limit_bytes: self.memory_mib.max(1) << 20,
            ..RuntimeConfig::default()
        }
    }
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::List { json } => list(json),
        PolicyCommand::Inspect { module, json } => inspect(&module, json),
        PolicyCommand::Check { module, params, hosts, at_hosts, json, limits } => {
            check(&module, &params, CheckOptions { params: Vec::new(), probe_hosts: hosts, at_hosts }, json, &limits)
        }
    }
}

fn load(runtime: &PolicyRuntime, spec: &str) -> Result<std::sync::Arc<PolicyModule>, PolicyError> {
    // `builtin:NAME` (how modules are named in output) or a bare name; a folder of that name in
    // the working directory (the repository has `model/`) is not a module file.
    let spec = spec.strip_prefix("builtin:").unwrap_or(spec);
    let path = Path::new(spec);
    if path.is_file() || spec.ends_with(".wasm") || spec.contains('/') {
        runtime.load_file(path)
    } else {
        runtime.builtin(spec)
    }
}

fn list(json: bool) -> anyhow::Result<ExitCode> {
    let runtime = PolicyRuntime::new(RuntimeConfig::default())?;
    // This process has run no cycles: every breaker is closed. A controller lists its own.
    let breaker = crate::policy::Breaker::default();
    let modules = runtime.builtins()?;
    if json {
        let out = json!({
            "policies": modules.iter().map(|m| json!({
                "name": m.descriptor.name,
                "version": m.descriptor.version,
                "kind": m.descriptor.kind,
                "summary": m.descriptor.summary,
                "params": m.descriptor.params,
                "sha256": m.sha256,
                "bytes": m.size,
                "breaker": breaker.state(&m.sha256),
            })).collect::<Vec<_>>(),
            "strategies": Strategy::builtin_names(),
            "breaker": breaker_json(&runtime, &breaker),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for kind in [PolicyKind::Threshold, PolicyKind::Selection, PolicyKind::Placement, PolicyKind::MigrationMode] {
        println!("{} policies:", kind);
        for m in modules.iter().filter(|m| m.kind() == kind) {
            println!("  {:<8} {}", m.descriptor.name, m.descriptor.summary);
            for p in &m.descriptor.params {
                println!("           --param {}={}  {}{}", p.name, p.default, p.help, range_text(p.min, p.max));
            }
        }
    }
    println!("strategies (amvm sim --strategy NAME; <threshold>-<selection>-<parameter>[-<placement>]):");
    println!("  {}", Strategy::builtin_names().join(" "));
    let b = BreakerConfig::default();
    println!(
        "sandbox: cycle budget {} ms of policy time; circuit breaker disables a module after {} failing cycles, retries after {} cycles (doubling, at most {}); the controller shows each module's breaker state",
        runtime.config().cycle_budget.as_millis(),
        b.trip_after,
        b.backoff_cycles,
        b.max_backoff_cycles
    );
    Ok(ExitCode::SUCCESS)
}

/// The breaker settings and the states of every module a breaker has seen (in this process:
/// none; the controller serves its own scheduler's breaker the same way).
fn breaker_json(runtime: &PolicyRuntime, breaker: &crate::policy::Breaker) -> serde_json::Value {
    json!({
        "config": breaker.config(),
        "cycle_budget_ms": runtime.config().cycle_budget.as_millis() as u64,
        "modules": breaker.states(),
    })
}

fn range_text(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!(" [{a}..{b}]"),
        (Some(a), None) => format!(" [>= {a}]"),
        (None, Some(b)) => format!(" [<= {b}]"),
        (None, None) => String::new(),
    }
}

pub fn describe_json(m: &PolicyModule) -> serde_json::Value {
    json!({
        "source": m.source,
        "sha256": m.sha256,
        "bytes": m.size,
        "world": m.descriptor.kind,
        "name": m.descriptor.name,
        "version": m.descriptor.version,
        "summary": m.descriptor.summary,
        "params": m.descriptor.params,
        "trapped_imports": m.trapped_imports,
    })
}

fn inspect(spec: &str, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = PolicyRuntime::new(RuntimeConfig::default())?;
    let m = load(&runtime, spec).with_context(|| spec.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&describe_json(&m))?);
        return Ok(ExitCode::SUCCESS);
    }
    let d: &Descriptor = &m.descriptor;
    println!("{} {} ({} policy, amvm:policy@0.1.x)", d.name, d.version, d.kind);
    if !d.summary.is_empty() {
        println!("  {}", d.summary);
    }
    println!("  source  {}", m.source);
    println!("  sha256  {}", m.sha256);
    println!("  size    {} bytes", m.size);
    if d.params.is_empty() {
        println!("  parameters: none");
    } else {
        println!("  parameters:");
        for p in &d.params {
            println!(
                "    {:<16} {:<8} default {}{}  {}",
                p.name,
                format!("{:?}", p.ty).to_lowercase(),
                p.default,
                range_text(p.min, p.max),
                p.help
            );
        }
    }
    if !m.trapped_imports.is_empty() {
        let names: Vec<String> = m.trapped_imports.iter().map(|i| crate::policy::sanitize::clean(i)).collect();
        println!("  imports the sandbox denies (calling one fails the call, naming it): {}", names.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits `name=value` pairs.
fn split_params(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => bail!("--param {:?}: expected NAME=VALUE", crate::policy::sanitize::clean(pair)),
        })
        .collect()
}

/// The bytes and display name of a module given as a path or a built-in name.
fn module_bytes(spec: &str) -> Result<(std::borrow::Cow<'static, [u8]>, String), PolicyError> {
    let spec = spec.strip_prefix("builtin:").unwrap_or(spec);
    let path = Path::new(spec);
    if path.is_file() || spec.ends_with(".wasm") || spec.contains('/') {
        let bytes =
            std::fs::read(path).map_err(|source| PolicyError::Io { path: path.display().to_string(), source })?;
        return Ok((bytes.into(), path.display().to_string()));
    }
    match builtin::bytes(spec) {
        Some(b) => Ok((b.into(), format!("builtin:{spec}"))),
        None => Err(PolicyError::BadParameter(format!(
            "no built-in policy {spec:?} (built-ins: {})",
            builtin::BUILTINS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Loads, configures and probe-calls a module through [`PolicyRuntime::check`].
pub fn probe(runtime: &PolicyRuntime, spec: &str, opts: &CheckOptions) -> Result<CheckReport, PolicyError> {
    let (bytes, source) = module_bytes(spec)?;
    runtime.check(&bytes, &source, opts)
}

fn check(spec: &str, pairs: &[String], opts: CheckOptions, json: bool, limits: &LimitArgs) -> anyhow::Result<ExitCode> {
    let runtime = PolicyRuntime::new(limits.config())?;
    let name = crate::policy::sanitize::clean(&PathBuf::from(spec).display().to_string());
    let params = match split_params(pairs) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("FAIL: {name}: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match probe(&runtime, spec, &CheckOptions { params, ..opts }) {
        Ok(report) if json => {
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(report) => {
            println!("{}", report.summary);
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // `PolicyError`'s Display is one sanitized line naming the cause.
            eprintln!("FAIL: {name}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
