//! One simulated run: a world, something that decides, and the loop between them.

use std::sync::Arc;
use std::time::Instant;

use super::error::Result;
use super::metrics::RunReport;
use super::scenario::{Compat, InitialPlacement, Scenario};
use super::trace::Trace;
use super::world::{PowerAccounting, SimCluster};
use crate::scheduler::{Cluster, Plan, Snapshot};

/// The reference baselines of Beloglazov & Buyya: no scheduler at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Non power-aware: every host at full power, no migrations.
    Npa,
    /// Power follows utilization (DVFS), no migrations.
    Dvfs,
}

impl Baseline {
    /// `npa` / `dvfs` (case-insensitive).
    pub fn parse(name: &str) -> Option<Baseline> {
        match name.to_ascii_lowercase().as_str() {
            "npa" => Some(Baseline::Npa),
            "dvfs" => Some(Baseline::Dvfs),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Baseline::Npa => "npa",
            Baseline::Dvfs => "dvfs",
        }
    }
}

/// A function from snapshot to plan, plus the number of policy failures it saw.
pub type DecideFn<'a> = Box<dyn FnMut(&Snapshot) -> (Plan, usize) + 'a>;

/// What decides in a run.
pub enum Decider<'a> {
    Baseline(Baseline),
    /// A strategy: in production a [`Scheduler`](crate::scheduler) over the WASM policies; tests
    /// may pass hand-made plans.
    Strategy {
        name: String,
        decide: DecideFn<'a>,
    },
}

impl Decider<'_> {
    pub fn name(&self) -> String {
        match self {
            Decider::Baseline(b) => b.name().to_string(),
            Decider::Strategy { name, .. } => name.clone(),
        }
    }
}

impl std::fmt::Debug for Decider<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decider({})", self.name())
    }
}

/// Options of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Keep the per-step time series in the report.
    pub series: bool,
}

/// Runs `trace` under `scenario` to the end and reports.
pub fn run(scenario: &Scenario, trace: Arc<Trace>, decider: Decider<'_>, opts: RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let name = decider.name();
    if scenario.compat == Compat::Cloudsim303 {
        return super::cloudsim::run_compat(scenario, trace, &name, scenario.compat_seed, opts.series);
    }
    let (placement, accounting) = match &decider {
        Decider::Baseline(b) => (
            resolve(scenario.vms.initial_placement, InitialPlacement::FirstFit),
            if *b == Baseline::Npa { PowerAccounting::AlwaysMax } else { PowerAccounting::Dynamic },
        ),
        Decider::Strategy { .. } => {
            (resolve(scenario.vms.initial_placement, InitialPlacement::PowerAware), PowerAccounting::Dynamic)
        }
    };
    let mut sim = SimCluster::new(scenario, trace, placement, accounting)?;
    let mut deciding = std::time::Duration::ZERO;
    match decider {
        Decider::Baseline(_) => sim.run_to_end(),
        Decider::Strategy { mut decide, .. } => {
            while sim.advance() {
                let t = Instant::now();
                let (plan, failures) = decide(sim.observe());
                deciding += t.elapsed();
                sim.note_policy_failures(failures);
                sim.apply(&plan);
            }
        }
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut report = sim.report(&name, elapsed_ms, opts.series);
    report.scheduler_ms = deciding.as_secs_f64() * 1e3;
    Ok(report)
}

fn resolve(configured: InitialPlacement, auto: InitialPlacement) -> InitialPlacement {
    match configured {
        InitialPlacement::Auto => auto,
        other => other,
    }
}
