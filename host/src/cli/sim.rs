//! `amvm sim` (one simulated run) and `amvm ab` (two strategies over several traces).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::scheduler::Plan;
use crate::sim::ab::{run_ab, AbResult};
use crate::sim::scenario::Compat;
use crate::sim::strategy::{StrategySet, StrategySpec};
use crate::sim::{report, run, Baseline, Decider, RunOptions, RunReport, Scenario, Trace};

/// Arguments of `amvm sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Trace: a PlanetLab day directory, a `.csv`/`.json` export, `synthetic:vms=N,seed=S,…`,
    /// or `embedded` (the default: PlanetLab day 20110303 compiled into the binary).
    #[arg(long)]
    pub trace: Option<String>,
    /// Scenario TOML (default: the CloudSim 3.0.3 reference data centre, 800 hosts).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// `npa`, `dvfs`, a built-in strategy (`lr-mmt-1.2`, `thr-mmt-0.8`, …) or a strategy TOML file.
    #[arg(long, default_value = "lr-mmt-1.2")]
    pub strategy: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write `report.json` (with the time series) and `series.csv` into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Simulator semantics: `none` (default: our model with the real scheduler) or
    /// `cloudsim-3.0.3` (CloudSim's program, stock experiments only); overrides the scenario.
    #[arg(long)]
    pub compat: Option<String>,
}

/// Arguments of `amvm ab`.
#[derive(Debug, Args)]
pub struct AbArgs {
    /// Traces to run both strategies on (PlanetLab day directories, exports, synthetic specs).
    #[arg(long, num_args = 1.., required = true)]
    pub trace: Vec<String>,
    /// Scenario TOML (default: the CloudSim reference data centre).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Strategy A (the baseline of the comparison).
    #[arg(long)]
    pub a: String,
    /// Strategy B (the candidate).
    #[arg(long)]
    pub b: String,
    /// Write the whole result as JSON to this file (`-` = stdout); silences the progress bar.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with SVG charts to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Simulator semantics: `none` or `cloudsim-3.0.3` (see `amvm sim --help`).
    #[arg(long)]
    pub compat: Option<String>,
}

fn load_scenario(path: Option<&Path>, compat: Option<&str>) -> Result<Scenario> {
    let mut scenario = match path {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    if let Some(c) = compat {
        scenario.compat =
            Compat::parse(c).with_context(|| format!("--compat {c:?}: expected `none` or `cloudsim-3.0.3`"))?;
        scenario.validate(path.unwrap_or(Path::new("--compat")))?;
    }
    Ok(scenario)
}

/// Under `compat = "cloudsim-3.0.3"` nothing is compiled: the run only needs the name.
fn compat_decider(name: &str) -> Decider<'static> {
    match Baseline::parse(name) {
        Some(b) => Decider::Baseline(b),
        None => Decider::Strategy { name: name.to_string(), decide: Box::new(|_| (Plan::default(), 0)) },
    }
}

/// `amvm sim`.
pub fn run_sim(args: SimArgs) -> Result<ExitCode> {
    let scenario = load_scenario(args.scenario.as_deref(), args.compat.as_deref())?;
    let compat = scenario.compat == Compat::Cloudsim303;
    let spec = StrategySpec::parse(&args.strategy);
    let mut strategies =
        if compat { StrategySet::prepare(&[])? } else { StrategySet::prepare(std::slice::from_ref(&spec))? };
    strategies.set_scenario_rules(scenario.operator_rules.clone());
    let trace_spec = match &args.trace {
        Some(t) => t.clone(),
        None => {
            eprintln!(
                "amvm sim: no --trace given, using the embedded PlanetLab day {}",
                crate::sim::trace::EMBEDDED_DAY
            );
            "embedded".to_string()
        }
    };
    let trace = Arc::new(Trace::load(&trace_spec)?);
    let decider = if compat { compat_decider(&args.strategy) } else { strategies.decider(&spec)? };
    let report = run(&scenario, trace, decider, RunOptions { series: args.out.is_some() })?;
    if let Some(dir) = &args.out {
        write_out_dir(dir, &report)?;
    }
    if args.json {
        let mut plain = report.clone();
        plain.series = None;
        println!("{}", serde_json::to_string(&plain)?);
    } else {
        print_run(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// `amvm ab`.
pub fn run_ab_cmd(args: AbArgs) -> Result<ExitCode> {
    let scenario = load_scenario(args.scenario.as_deref(), args.compat.as_deref())?;
    let compat = scenario.compat == Compat::Cloudsim303;
    let (spec_a, spec_b) = (StrategySpec::parse(&args.a), StrategySpec::parse(&args.b));
    let mut strategies =
        if compat { StrategySet::prepare(&[])? } else { StrategySet::prepare(&[spec_a.clone(), spec_b.clone()])? };
    strategies.set_scenario_rules(scenario.operator_rules.clone());
    let traces = load_traces(&args.trace)?;
    let quiet = args.json.is_some();
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(2 * traces.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs {elapsed}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix("amvm ab");
        bar
    };
    let make_a =
        || if compat { Ok(compat_decider(&args.a)) } else { strategies.decider(&spec_a).map_err(to_sim_error) };
    let make_b =
        || if compat { Ok(compat_decider(&args.b)) } else { strategies.decider(&spec_b).map_err(to_sim_error) };
    let result = run_ab(&scenario, &traces, (&args.a, &make_a), (&args.b, &make_b), &|| bar.inc(1));
    bar.finish_and_clear();
    let result = result?;
    // Everything ran: only now write files, so a failure never leaves a partial report.
    if let Some(path) = &args.html {
        write_atomic(path, report::html(&result).as_bytes())?;
    }
    match args.json.as_deref() {
        Some(p) if p == Path::new("-") => println!("{}", serde_json::to_string_pretty(&result)?),
        Some(p) => write_atomic(p, serde_json::to_string_pretty(&result)?.as_bytes())?,
        None => print_ab(&result),
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads every trace, on as many threads as there are cores; the first failure (in argument
/// order) wins.
fn load_traces(specs: &[String]) -> Result<Vec<Arc<Trace>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, specs.len().max(1));
    let chunk = specs.len().div_ceil(threads).max(1);
    let loaded: Vec<Vec<Result<Trace, crate::sim::SimError>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|t| Trace::load(t)).collect()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut out = Vec::with_capacity(specs.len());
    for trace in loaded.into_iter().flatten() {
        out.push(Arc::new(trace?));
    }
    if out.len() != specs.len() {
        anyhow::bail!("loading traces failed");
    }
    Ok(out)
}

fn to_sim_error(e: anyhow::Error) -> crate::sim::SimError {
    crate::sim::SimError::Strategy(format!("{e:#}"))
}

fn print_run(r: &RunReport) {
    println!("{} on {} ({} VMs, {} hosts, {})", r.strategy, r.trace, r.vms, r.hosts, r.trace_source);
    println!("  energy              {:.2} kWh", r.energy_kwh);
    println!("  migrations          {}", r.migrations);
    println!("  SLATAH              {:.2} %", r.slatah * 100.0);
    println!("  PDM                 {:.3} %", r.pdm * 100.0);
    println!("  SLAV                {:.3e}", r.slav);
    println!("  ESV                 {:.3e}", r.esv);
    println!("  host shutdowns      {}", r.host_shutdowns);
    println!("  active hosts        {:.1} on average", r.mean_active_hosts);
    println!(
        "  host utilization    {:.1} % mean, {:.1} % p95",
        r.mean_host_utilization * 100.0,
        r.p95_host_utilization * 100.0
    );
    if r.rejected_migrations > 0 || r.policy_failures > 0 {
        println!("  refused migrations  {}, policy failures {}", r.rejected_migrations, r.policy_failures);
    }
    println!("  elapsed             {:.0} ms ({:.0} ms deciding)", r.elapsed_ms, r.scheduler_ms);
}

fn print_ab(ab: &AbResult) {
    println!("A = {}, B = {}, {} trace(s), {:.0} ms", ab.a, ab.b, ab.traces.len(), ab.elapsed_ms);
    println!(
        "{:<12} {:>10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>11} {:>11}",
        "trace", "energy A", "energy B", "migr A", "migr B", "SLATAH A", "SLATAH B", "SLAV A", "SLAV B"
    );
    for t in &ab.traces {
        println!(
            "{:<12} {:>10.2} {:>10.2} {:>8} {:>8} {:>8.2}% {:>8.2}% {:>11.3e} {:>11.3e}",
            t.trace,
            t.a.energy_kwh,
            t.b.energy_kwh,
            t.a.migrations,
            t.b.migrations,
            t.a.slatah * 100.0,
            t.b.slatah * 100.0,
            t.a.slav,
            t.b.slav
        );
    }
    println!();
    for c in &ab.comparisons {
        println!("- {}", c.verdict);
    }
}

fn write_out_dir(dir: &Path, r: &RunReport) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join("report.json"), serde_json::to_string_pretty(r)?.as_bytes())?;
    let mut csv = String::from("time_s,active_hosts,overloaded_hosts,migrations,energy_kwh\n");
    if let Some(s) = &r.series {
        for i in 0..s.time_s.len() {
            csv.push_str(&format!(
                "{},{},{},{},{:.6}\n",
                s.time_s[i], s.active_hosts[i], s.overloaded_hosts[i], s.migrations[i], s.energy_kwh[i]
            ));
        }
    }
    write_atomic(&dir.join("series.csv"), csv.as_bytes())
}

/// Writes through a temporary file in the same directory and renames, so readers never see a
/// half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(bytes).with_context(|| format!("cannot write {}", tmp.0.display()))?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn tempfile_in(dir: &Path, target: &Path) -> Result<(PathBuf, std::fs::File)> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", target.display()))?;
    Ok((tmp, file))
}
