//! Naming what decides a run: `npa`, `dvfs`, a built-in strategy, or a strategy file that names
//! uploaded WASM modules — resolved and checked once, then a fresh [`Scheduler`] per run (per
//! thread) over one shared [`PolicyRuntime`]. The simulator calls the real scheduler and the
//! real policies: there is no simulator-only copy of any algorithm.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::run::{Baseline, Decider};
use super::trace::resolve_path;
use crate::policy::{PolicyRuntime, RuntimeConfig};
use crate::scheduler::{OperatorRules, Scheduler, Strategy};

/// Per-call policy deadline in simulations.
pub const SIM_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the user asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategySpec {
    Baseline(Baseline),
    /// A built-in strategy name (`lr-mmt-1.2`, …).
    Builtin(String),
    /// A strategy TOML file.
    File(PathBuf),
}

impl StrategySpec {
    /// `npa`/`dvfs`, a path ending in `.toml` (or an existing file), else a built-in name.
    pub fn parse(text: &str) -> StrategySpec {
        if let Some(b) = Baseline::parse(text) {
            return StrategySpec::Baseline(b);
        }
        if text.ends_with(".toml") || std::path::Path::new(text).is_file() {
            return StrategySpec::File(PathBuf::from(text));
        }
        StrategySpec::Builtin(text.to_string())
    }
}

/// Strategies resolved and validated before any run starts.
#[derive(Debug)]
pub struct StrategySet {
    runtime: Option<PolicyRuntime>,
    strategies: Vec<(StrategySpec, Strategy)>,
    /// The scenario's operator rules, added to every strategy's own.
    scenario_rules: OperatorRules,
}

impl StrategySet {
    /// Resolves every spec and builds its scheduler once, so unknown names, unreadable files and
    /// modules that do not load fail here, before any trace is read.
    pub fn prepare(specs: &[StrategySpec]) -> Result<StrategySet> {
        let mut strategies = Vec::new();
        for spec in specs {
            let strategy = match spec {
                StrategySpec::Baseline(_) => continue,
                StrategySpec::Builtin(name) => Strategy::builtin(name).map_err(|e| {
                    anyhow::anyhow!("{e}. Also: npa, dvfs. Built-ins: {}", Strategy::builtin_names().join(", "))
                })?,
                StrategySpec::File(path) => Strategy::from_toml_file(&resolve_path(path))?,
            };
            strategies.push((spec.clone(), strategy));
        }
        let runtime = if strategies.is_empty() {
            None
        } else {
            // Offline runs are not latency-bound: a generous per-call deadline keeps a loaded
            // machine (or a debug build) from failing good policies; fuel still stops runaways.
            let config = RuntimeConfig { deadline: SIM_CALL_DEADLINE, ..RuntimeConfig::default() };
            Some(PolicyRuntime::new(config).context("cannot start the policy runtime")?)
        };
        if let Some(rt) = &runtime {
            for (_, s) in &strategies {
                Scheduler::new(rt, s)?;
            }
        }
        Ok(StrategySet { runtime, strategies, scenario_rules: OperatorRules::default() })
    }

    /// Adds a scenario's operator rules to every strategy run from this set (so a rule change
    /// can be A/B-tested offline with unchanged strategies).
    pub fn set_scenario_rules(&mut self, rules: OperatorRules) {
        self.scenario_rules = rules;
    }

    /// The display name of a spec (the strategy's own name for files).
    pub fn name(&self, spec: &StrategySpec) -> String {
        match spec {
            StrategySpec::Baseline(b) => b.name().to_string(),
            other => self
                .strategies
                .iter()
                .find(|(s, _)| s == other)
                .map_or_else(|| format!("{other:?}"), |(_, s)| s.name.clone()),
        }
    }

    /// A fresh decider for one run.
    pub fn decider(&self, spec: &StrategySpec) -> Result<Decider<'_>> {
        if let StrategySpec::Baseline(b) = spec {
            return Ok(Decider::Baseline(*b));
        }
        let strategy = self
            .strategies
            .iter()
            .find(|(s, _)| s == spec)
            .map(|(_, s)| s)
            .with_context(|| format!("strategy {spec:?} was not prepared"))?;
        let runtime = self.runtime.as_ref().context("policy runtime missing")?;
        let mut scheduler = Scheduler::new(runtime, strategy)?;
        scheduler.set_extra_rules(self.scenario_rules.clone());
        Ok(Decider::Strategy {
            name: strategy.name.clone(),
            decide: Box::new(move |snap| {
                let outcome = scheduler.cycle(snap);
                if outcome.aborted {
                    tracing::warn!(cycle = snap.cycle, "scheduler abandoned the cycle: no migrations");
                }
                (outcome.plan, outcome.failures.len())
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sim::run::{run, RunOptions};
    use crate::sim::scenario::{HostType, Scenario, VmType};
    use crate::sim::trace::{Trace, VmTrace};

    #[test]
    fn real_scheduler_consolidation_by_hand() {
        // Two hosts (1 core × 1000 MIPS, power 100 + 100·u W, 50 MB/s migrations), two VMs of
        // 1000 MIPS / 500 MB at 20 % and 30 %. Power-aware creation puts one VM on each host.
        // At t = 300 thr-mmt-0.8 evacuates the least utilized host (0) onto host 1 (0.5 ≤ 0.8):
        // one 10 s migration; afterwards host 1 is alone and stays.
        // [300, 310]: host 0 u = 0.2 → 120 W × 10; host 1 runs 300 + 10 % of 200, u = 0.32 →
        //   132 W × 10 and allocates 320 of 500 requested (violation); PDM loss 20 × 10.
        // [310, 900]: host 1 u = 0.5 → 150 W × 590; host 0 off.
        let mut s = Scenario { interval_s: 300.0, duration_s: 900.0, window: 3, ..Scenario::default() };
        s.hosts.count = 2;
        s.hosts.types = vec![HostType {
            name: "unit".into(),
            cores: 1,
            mips_per_core: 1000.0,
            ram_mb: 1024.0,
            bandwidth_mbit: 800.0,
            power_model: None,
            power_w: Some((0..=10).map(|i| 100.0 + 10.0 * f64::from(i)).collect()),
        }];
        s.vms.types = vec![VmType { mips: 1000.0, ram_mb: 500.0 }];
        let vm = |name: &str, pct: f64| VmTrace { name: name.into(), util: vec![pct / 100.0; 4], vm_type: None };
        let trace = Arc::new(Trace {
            name: "hand".into(),
            source: "test".into(),
            interval_s: 300.0,
            vms: vec![vm("a", 20.0), vm("b", 30.0)],
            order: "file",
        });
        let spec = StrategySpec::parse("thr-mmt-0.8");
        let set = StrategySet::prepare(std::slice::from_ref(&spec)).expect("prepare");
        let r = run(&s, Arc::clone(&trace), set.decider(&spec).expect("decider"), RunOptions::default()).expect("run");
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert_eq!((r.migrations, r.host_shutdowns, r.rejected_migrations, r.policy_failures), (1, 1, 0, 0));
        // Mode accounting (the default): the model policy picks pre-copy (no dirty rate), whose
        // stop-copy adds the downtime t_d = 1 MiB of vCPU state ÷ 50 MiB/s + 5 ms = 25 ms to the
        // move (T = 10.025 s) and loses it whole: PDM loss 20 × (10 % × 10 + 0.025).
        assert_eq!(r.migrations_by_mode.pre, 1);
        let td = 1.0 / 50.0 + 0.005;
        let t = 10.0 + td;
        assert!(close(r.energy_kwh, (120.0 * t + 132.0 * t + 150.0 * (600.0 - t)) / 3.6e6), "{}", r.energy_kwh);
        assert!(close(r.slatah, t / (600.0 + t)), "{}", r.slatah);
        assert!(close(r.pdm, 200.0 * (1.0 + td) / 300_000.0), "{}", r.pdm);
        // Without it, CloudSim's model: 10 s, 10 % lost.
        s.migration.mode_accounting = false;
        let r = run(&s, trace, set.decider(&spec).expect("decider"), RunOptions::default()).expect("run");
        assert!(close(r.energy_kwh, (1200.0 + 1320.0 + 88_500.0) / 3.6e6), "{}", r.energy_kwh);
        assert!(close(r.slatah, 10.0 / 610.0), "{}", r.slatah);
        assert!(close(r.pdm, 200.0 / 300_000.0), "{}", r.pdm);
    }

    #[test]
    fn unknown_strategies_fail_before_any_run() {
        let e = StrategySet::prepare(&[StrategySpec::parse("lr-zz-1.2")]).expect_err("unknown");
        assert!(format!("{e:#}").contains("lr-zz-1.2"), "{e:#}");
        let e = StrategySet::prepare(&[StrategySpec::parse("/no/such/strategy.toml")]).expect_err("missing");
        assert!(format!("{e:#}").contains("/no/such/strategy.toml"), "{e:#}");
    }
}
