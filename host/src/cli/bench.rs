//! `amvm bench …`: benchmarks that print JSON. Speed targets are measured here, never asserted
//! in tests.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::policy::PolicyRuntime;
use crate::scheduler::synthetic::{advance, apply_instantly, SyntheticSpec};
use crate::scheduler::{HostState, Scheduler, Strategy};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Full decision cycles over a seeded synthetic cluster with the WASM policies.
    Policy(BenchPolicyArgs),
    /// Collector ingest: synthetic agents → real collector → real RRD files.
    Ingest(super::bench_ingest::IngestArgs),
    /// Live migration: the paper's grid (workloads × memory sizes × modes at a bandwidth cap),
    /// plus an unthrottled loopback run.
    Migration(super::migrate::BenchArgs),
    /// Live migration of real QEMU guests over QMP: pre, post, our hybrid and QEMU's own
    /// post-copy-after-pre-copy per memory size, beside the memory engine and the model.
    Qemu(super::bench_qemu::BenchQemuArgs),
    /// Controller API at scale: `GET /hosts`, a one-day series, SSE fan-out (JSON).
    Api(super::bench_api::BenchApiArgs),
}

#[derive(Debug, Args)]
pub struct BenchPolicyArgs {
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    #[arg(long, default_value_t = 100_000)]
    pub vms: usize,
    /// Decision cycles to time. Before each, every VM's utilization advances one sample (an
    /// AR(1) step), and each cycle's plan is applied as if migrations were instant: a cluster
    /// in steady state with load drifting into and out of overload.
    #[arg(long, default_value_t = 20)]
    pub cycles: u32,
    /// Strategy: a built-in name or a strategy TOML file.
    #[arg(long, default_value = "lr-mmt-1.2")]
    pub strategy: String,
    /// Cycles run first with their plans applied (as if migrations were instant) so the timed
    /// cycles see a cluster in steady state rather than a freshly scattered one.
    #[arg(long, default_value_t = 5)]
    pub settle: u32,
    /// Override a strategy setting, e.g. `threshold.lower=0.3` or `rules.persistence=2`
    /// (repeatable).
    #[arg(long = "set", value_name = "KIND.NAME=VALUE")]
    pub set: Vec<String>,
    /// Weigh every fitting candidate in each placement call (no candidate index): same plans,
    /// for comparison.
    #[arg(long)]
    pub full_scan: bool,
    /// Ask the threshold module every `would-overload` question, even when it exports
    /// `headroom` (world `bounded-threshold`): same plans, for comparison.
    #[arg(long)]
    pub no_headroom: bool,
    /// Seed of the synthetic cluster.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object (otherwise a short human summary, then the JSON).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: super::policy::LimitArgs,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Policy(args) => bench_policy(args),
        BenchCommand::Ingest(args) => super::bench_ingest::run(args),
        BenchCommand::Migration(args) => super::migrate::run_bench(args),
        BenchCommand::Api(args) => super::bench_api::run(args),
        BenchCommand::Qemu(args) => super::bench_qemu::run(args),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Folds a plan into a running FNV-1a digest (migrations in order, hosts to sleep and wake), so
/// two runs with the same seed can be compared plan for plan.
fn digest(mut h: u64, plan: &crate::scheduler::Plan) -> u64 {
    let mut eat = |x: u32| {
        for b in x.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for m in &plan.migrations {
        eat(m.vm);
        eat(m.from);
        eat(m.to);
    }
    eat(u32::MAX);
    plan.sleep.iter().for_each(|&id| eat(id));
    eat(u32::MAX);
    plan.wake.iter().for_each(|&id| eat(id));
    eat(u32::MAX);
    h
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench_policy(args: BenchPolicyArgs) -> anyhow::Result<ExitCode> {
    let runtime = PolicyRuntime::new(args.limits.config())?;
    let mut strategy = Strategy::resolve(&args.strategy)?;
    for assignment in &args.set {
        strategy.set(assignment).map_err(|e| anyhow::anyhow!("--set {e}"))?;
    }
    let t0 = std::time::Instant::now();
    let mut scheduler = Scheduler::new(&runtime, &strategy)?;
    scheduler.set_candidate_index(!args.full_scan);
    scheduler.set_headroom_veto(!args.no_headroom);
    let load_ms = ms(t0.elapsed());
    let mut snap = SyntheticSpec::new(args.hosts, args.vms, args.seed).build();
    let active_before = snap.hosts.state.iter().filter(|&&s| s == HostState::Active).count();
    // Settling: the first cycle on the scattered cluster is the cold case; later ones converge.
    let mut settle = Vec::new();
    let mut plans = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..args.settle {
        let out = scheduler.cycle(&snap);
        plans = digest(plans, &out.plan);
        settle.push(json!({"cycle_ms": ms(out.stats.elapsed), "migrations": out.plan.migrations.len()}));
        apply_instantly(&mut snap, &out.plan);
    }
    let active_after = snap.hosts.state.iter().filter(|&&s| s == HostState::Active).count();
    let first_timed = snap.cycle;
    let mut cycle_ms = Vec::new();
    let mut per_call = [Vec::new(), Vec::new(), Vec::new()];
    let mut classify_all_ms = Vec::new();
    let mut policy_ms = Vec::new();
    let mut last = None;
    let mut migrations = Vec::new();
    // Timed cycles that ran out of policy-time budget (fallbacks used) or skipped a module
    // disabled by its circuit breaker: those did not run the strategy as configured.
    let mut over_budget = 0u32;
    let mut disabled: Vec<String> = Vec::new();
    for c in 0..u64::from(args.cycles.max(1)) {
        snap.cycle = first_timed + c;
        advance(&mut snap, args.seed);
        let out = scheduler.cycle(&snap);
        plans = digest(plans, &out.plan);
        migrations.push(out.plan.migrations.len() as f64);
        over_budget += u32::from(out.budget_overrun.is_some());
        for m in &out.disabled {
            if !disabled.contains(m) {
                disabled.push(m.clone());
            }
        }
        apply_instantly(&mut snap, &out.plan);
        cycle_ms.push(ms(out.stats.elapsed));
        classify_all_ms.push(ms(out.stats.classify_all_time));
        policy_ms.push(ms(out.stats.policy_time));
        let s = &out.stats;
        for (i, (t, n)) in [
            (s.threshold_time, s.threshold_calls),
            (s.selection_time, s.selection_calls),
            (s.placement_time, s.placement_calls),
        ]
        .into_iter()
        .enumerate()
        {
            if n > 0 {
                per_call[i].push(t.as_secs_f64() * 1e6 / n as f64);
            }
        }
        last = Some(out);
    }
    let sort = |v: &mut Vec<f64>| v.sort_by(f64::total_cmp);
    sort(&mut cycle_ms);
    sort(&mut classify_all_ms);
    sort(&mut policy_ms);
    per_call.iter_mut().for_each(sort);
    let last = last.expect("at least one cycle ran");
    let out = json!({
        "bench": "policy",
        "strategy": strategy.name,
        "overrides": args.set,
        "candidate_index": !args.full_scan,
        "headroom_veto": !args.no_headroom,
        "hosts": args.hosts,
        "vms": args.vms,
        "cycles": args.cycles,
        "load_ms": load_ms,
        "settle": settle,
        "active_hosts_before_settle": active_before,
        "active_hosts_timed": active_after,
        "cycles_over_budget": over_budget,
        "modules_disabled": disabled,
        "cycle_ms_median": percentile(&cycle_ms, 50.0),
        "cycle_ms_p95": percentile(&cycle_ms, 95.0),
        "classify_all_ms_median": percentile(&classify_all_ms, 50.0),
        // Of a cycle, the time inside policy calls; the rest is host-side scheduling.
        "policy_ms_median": percentile(&policy_ms, 50.0),
        "threshold_call_us_median": percentile(&per_call[0], 50.0),
        "selection_call_us_median": percentile(&per_call[1], 50.0),
        "placement_call_us_median": percentile(&per_call[2], 50.0),
        "calls_per_cycle": {
            "threshold": last.stats.threshold_calls,
            "selection": last.stats.selection_calls,
            "placement": last.stats.placement_calls,
        },
        "fuel_per_cycle": last.stats.fuel,
        // What the last cycle did, in counts (deterministic, unlike times).
        "work_per_cycle": {
            "placements": last.stats.placements,
            "placements_failed": last.stats.placements_failed,
            "evacuations_tried": last.stats.evacuations_tried,
            "evacuations_committed": last.stats.evacuations_committed,
            "rows_weighed": last.stats.rows_weighed,
            "rows_checked": last.stats.rows_checked,
            "vetoes": last.stats.vetoes,
            "bounded_verdicts": last.stats.bounded_verdicts,
            "groups_vetoed": last.stats.groups_vetoed,
            "hosts_scanned": last.stats.hosts_scanned,
        },
        "overloaded_hosts": last.stats.overloaded_hosts,
        "underloaded_hosts": last.stats.underloaded_hosts,
        "migrations_per_cycle_mean": migrations.iter().sum::<f64>() / migrations.len().max(1) as f64,
        "migrations_last_cycle": last.plan.migrations.len(),
        // Digest of every plan (settling and timed): equal digests, equal plans.
        "plans_digest": format!("{plans:016x}"),
        "hosts_to_sleep": last.plan.sleep.len(),
        "failures": last.failures.len(),
    });
    if !args.json {
        eprintln!(
            "{} hosts / {} VMs, {}: cycle median {:.2} ms, p95 {:.2} ms ({} migrations in the last cycle)",
            args.hosts,
            args.vms,
            strategy.name,
            percentile(&cycle_ms, 50.0),
            percentile(&cycle_ms, 95.0),
            last.plan.migrations.len()
        );
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
