//! `amvm policy …`: list the built-ins, inspect and check modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::policy::{
    types, Descriptor, ParamValue, ParamValues, PolicyError, PolicyKind, PolicyModule, PolicyRuntime, RuntimeConfig,
};
use crate::scheduler::synthetic::SyntheticSpec;
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
    /// Exits 0 with one OK line, or non-zero with one line saying what is wrong (not wasm, core
    /// module instead of component, wrong world, missing describe, trap, deadline exceeded,
    /// memory limit, invalid output …).
    Check {
        /// A policy component (`.wasm`) or a built-in name.
        module: String,
        /// Parameter values, `name=value` (repeatable); others take their declared defaults.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Hosts in the synthetic probe cluster.
        #[arg(long, default_value_t = 100)]
        hosts: usize,
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
    /// Memory cap per module in MiB.
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
        PolicyCommand::Check { module, params, hosts, limits } => check(&module, &params, hosts, &limits),
    }
}

fn load(runtime: &PolicyRuntime, spec: &str) -> Result<std::sync::Arc<PolicyModule>, PolicyError> {
    let path = Path::new(spec);
    if path.exists() || spec.ends_with(".wasm") || spec.contains('/') {
        runtime.load_file(path)
    } else {
        runtime.builtin(spec)
    }
}

fn list(json: bool) -> anyhow::Result<ExitCode> {
    let runtime = PolicyRuntime::new(RuntimeConfig::default())?;
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
            })).collect::<Vec<_>>(),
            "strategies": Strategy::builtin_names(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for kind in [PolicyKind::Threshold, PolicyKind::Selection, PolicyKind::Placement] {
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
    Ok(ExitCode::SUCCESS)
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
    println!("{} {} ({} policy, amvm:policy@0.1.0)", d.name, d.version, d.kind);
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
        println!("  imports the sandbox does not provide (calling them traps): {}", m.trapped_imports.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `name=value` pairs against the module's declared parameter types.
pub fn parse_params(descriptor: &Descriptor, pairs: &[String]) -> anyhow::Result<ParamValues> {
    let mut values = ParamValues::new();
    for pair in pairs {
        let Some((name, text)) = pair.split_once('=') else {
            bail!("--param {pair:?}: expected NAME=VALUE");
        };
        let Some(spec) = descriptor.params.iter().find(|p| p.name == name) else {
            let known: Vec<&str> = descriptor.params.iter().map(|p| p.name.as_str()).collect();
            bail!("--param {name}: {} has no such parameter (known: {})", descriptor.name, known.join(", "));
        };
        let value = ParamValue::parse_as(spec.ty, text).map_err(|e| anyhow::anyhow!("--param {name}: {e}"))?;
        values.insert(name.to_string(), value);
    }
    Ok(values)
}

/// Loads, configures and probe-calls a module. Returns a one-line summary.
pub fn probe(runtime: &PolicyRuntime, spec: &str, pairs: &[String], hosts: usize) -> anyhow::Result<String> {
    let m = load(runtime, spec)?;
    let params = parse_params(&m.descriptor, pairs)?;
    let mut inst = runtime.instantiate(&m, &params)?;
    let snap = SyntheticSpec::new(hosts.max(2), hosts.max(2) * 4, 7).build();
    let ctx = types::Context {
        cycle: 0,
        interval_s: snap.interval_s,
        seed: 7,
        migration_mbps: snap.migration_bandwidth_mbps,
        power_curves: snap.power_curves.iter().flat_map(|c| c.iter().copied()).collect(),
    };
    let w = snap.window;
    let n = snap.hosts.len();
    // Host rows: the sum of each host's VMs (VM i is on host i % n).
    let mut cpu = vec![0.0f32; n * w];
    for vm in 0..snap.vms.len() {
        let h = snap.vms.host[vm] as usize;
        for t in 0..w {
            cpu[h * w + t] += snap.vms.cpu_history[vm * w + t] * snap.vms.mips[vm] / snap.hosts.cpu_capacity[h];
        }
    }
    let hosts_rec = types::Hosts {
        n: n as u32,
        window: w as u32,
        cpu,
        mem: Vec::new(),
        net: Vec::new(),
        cpu_capacity: snap.hosts.cpu_capacity.clone(),
        mem_capacity: snap.hosts.mem_capacity.clone(),
        max_migration_s: vec![27.8; n],
        vm_count: vec![4; n],
    };
    let vms_rec = |idx: &[usize]| types::Vms {
        n: idx.len() as u32,
        window: w as u32,
        cpu: idx.iter().flat_map(|&v| snap.vms.cpu_history[v * w..(v + 1) * w].iter().copied()).collect(),
        mips: idx.iter().map(|&v| snap.vms.mips[v]).collect(),
        ram_mb: idx.iter().map(|&v| snap.vms.ram_mb[v]).collect(),
    };
    let what = match m.kind() {
        PolicyKind::Threshold => {
            let classes = inst.classify(&ctx, &hosts_rec)?;
            let over = classes.iter().filter(|&&c| c == 2).count();
            let add = vms_rec(&[0]);
            inst.would_overload(&ctx, &hosts_rec, &add)?;
            format!("classify({n} hosts): {over} overloaded; would-overload ok")
        }
        PolicyKind::Selection => {
            let one = types::Hosts {
                n: 1,
                cpu: hosts_rec.cpu[..w].to_vec(),
                cpu_capacity: vec![hosts_rec.cpu_capacity[0]],
                mem_capacity: vec![hosts_rec.mem_capacity[0]],
                max_migration_s: vec![27.8],
                vm_count: vec![4],
                ..hosts_rec.clone()
            };
            let on_host: Vec<usize> = (0..snap.vms.len()).filter(|&v| snap.vms.host[v] == 0).collect();
            let order = inst.select(&ctx, &one, &vms_rec(&on_host))?;
            format!("select({} VMs): {} named", on_host.len(), order.len())
        }
        PolicyKind::Placement => {
            let c = types::Candidates {
                n: n as u32,
                cpu_used: (0..n).map(|h| hosts_rec.cpu[h * w + w - 1] * hosts_rec.cpu_capacity[h]).collect(),
                cpu_capacity: hosts_rec.cpu_capacity.clone(),
                mem_used: vec![4.0 * 1300.0; n],
                mem_capacity: hosts_rec.mem_capacity.clone(),
                power_model: (0..n).map(|h| (h % 2) as u32).collect(),
                vm_count: vec![4; n],
                asleep: vec![0; n],
            };
            let weights = inst.weigh(&ctx, types::VmDemand { cpu_mips: 500.0, ram_mb: 613.0 }, &c)?;
            let kept = weights.iter().filter(|w| w.is_some()).count();
            format!("weigh({n} candidates): {kept} kept")
        }
    };
    Ok(format!(
        "OK: {} {} ({} policy, sha256 {}…): {what}, {} µs, fuel {}",
        m.descriptor.name,
        m.descriptor.version,
        m.kind(),
        &m.sha256[..12],
        inst.last_call.elapsed.as_micros(),
        inst.last_call.fuel
    ))
}

fn check(spec: &str, pairs: &[String], hosts: usize, limits: &LimitArgs) -> anyhow::Result<ExitCode> {
    let runtime = PolicyRuntime::new(limits.config())?;
    match probe(&runtime, spec, pairs, hosts) {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let name = PathBuf::from(spec);
            eprintln!("FAIL: {}: {e:#}", name.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
