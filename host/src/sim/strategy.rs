//! Naming what decides a run: `npa`, `dvfs`, a built-in strategy, or a strategy file that names
//! uploaded WASM modules — resolved and checked once, then a fresh [`Scheduler`] per run (per
//! thread) over one shared [`PolicyRuntime`]. The simulator calls the real scheduler and the
//! real policies: there is no simulator-only copy of any algorithm.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::run::{Baseline, Decider};
use super::trace::resolve_path;
use crate::policy::{PolicyRuntime, RuntimeConfig};
use crate::scheduler::{Scheduler, Strategy};

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
        Ok(StrategySet { runtime, strategies })
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
