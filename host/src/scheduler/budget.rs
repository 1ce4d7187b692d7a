//! The scheduler's guard rails around policy modules: a **per-cycle policy-time budget** and the
//! hooks of the [circuit breaker](crate::policy::breaker).
//!
//! - Budget: the time a cycle spends in the strategy's own (primary) modules is summed call by
//!   call. Once it passes the budget (`rules.cycle_budget_ms`, else the runtime's
//!   `cycle_budget`, 1 s by default), every slot uses its fallback for the rest of the cycle
//!   and the overrun is recorded ([`BudgetOverrun`], in the cycle's outcome) and charged to the
//!   module that spent the most.
//! - Breaker: before a cycle, a module whose breaker is open is skipped (its slot starts on the
//!   fallback, recorded in `CycleOutcome::disabled`); after it, every primary module used is
//!   recorded as failing (a failed call, or the overrun) or not.
//! - Logs: the first failed call and the first overrun of each module are a `warn`, repeats
//!   are `debug`, so a module failing in every cycle does not flood the log.
//!
//! `cycle.rs` calls [`Guard::begin`], [`CycleBudget::charge`] and [`Guard::end`]; the rest is
//! here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::cycle::{PolicyFailure, Slot};
use crate::policy::breaker::Breaker;
use crate::policy::PolicyKind;

/// The cycle's policy time passed its budget.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetOverrun {
    pub budget_ms: f64,
    /// Primary-module time when the budget was found exceeded.
    pub spent_ms: f64,
    /// The module charged with it (the one that spent the most in this cycle) and its kind.
    pub module: String,
    pub kind: PolicyKind,
}

fn index(kind: PolicyKind) -> usize {
    match kind {
        PolicyKind::Threshold => 0,
        PolicyKind::Selection => 1,
        PolicyKind::Placement => 2,
        // Not charged to the cycle budget (one call per cycle, after the plan is made); kept
        // with placement should a caller charge it.
        PolicyKind::MigrationMode => 2,
    }
}

/// One cycle's budget.
#[derive(Debug)]
pub(super) struct CycleBudget {
    limit: Duration,
    spent: [Duration; 3],
    names: [String; 3],
    overrun: Option<BudgetOverrun>,
}

impl CycleBudget {
    pub(super) fn new(limit: Duration) -> Self {
        CycleBudget { limit, spent: [Duration::ZERO; 3], names: Default::default(), overrun: None }
    }

    /// Whether the budget is spent: every slot then uses its fallback.
    pub(super) fn exceeded(&self) -> bool {
        self.overrun.is_some()
    }

    /// Charges one call; fallback calls are not charged (the fallbacks are the trusted
    /// built-ins the budget falls back to).
    pub(super) fn charge(&mut self, kind: PolicyKind, module: &str, elapsed: Duration, primary: bool) {
        if !primary || self.overrun.is_some() {
            return;
        }
        let i = index(kind);
        self.spent[i] += elapsed;
        if self.names[i].is_empty() {
            self.names[i] = module.to_string();
        }
        let total: Duration = self.spent.iter().sum();
        if total > self.limit {
            let worst = (0..3).max_by_key(|&i| self.spent[i]).unwrap_or(i);
            let kind = [PolicyKind::Threshold, PolicyKind::Selection, PolicyKind::Placement][worst];
            self.overrun = Some(BudgetOverrun {
                budget_ms: self.limit.as_secs_f64() * 1e3,
                spent_ms: total.as_secs_f64() * 1e3,
                module: self.names[worst].clone(),
                kind,
            });
        }
    }

    pub(super) fn into_overrun(self) -> Option<BudgetOverrun> {
        self.overrun
    }
}

/// What the scheduler keeps across cycles: the breaker, the budget and what was logged.
pub(super) struct Guard {
    pub(super) breaker: Arc<Breaker>,
    pub(super) budget: Duration,
    warned: HashSet<(String, &'static str)>,
}

impl Guard {
    pub(super) fn new(breaker: Arc<Breaker>, budget: Duration) -> Self {
        Guard { breaker, budget, warned: HashSet::new() }
    }

    /// Before a cycle: slots whose primary module is disabled start on their fallback.
    /// Returns the names of the skipped modules.
    pub(super) fn begin(&self, cycle: u64, slots: [&mut Slot; 3]) -> Vec<String> {
        let mut disabled = Vec::new();
        for slot in slots {
            let m = slot.primary.module();
            slot.skipped = !self.breaker.allows(&m.sha256, &m.descriptor.name, cycle);
            slot.degraded = slot.skipped;
            if slot.skipped {
                disabled.push(m.descriptor.name.clone());
            }
        }
        disabled
    }

    /// After a cycle: logs its failures (deduplicated) and records every primary module used in
    /// the breaker.
    pub(super) fn end(
        &mut self,
        cycle: u64,
        slots: [&Slot; 3],
        failures: &[PolicyFailure],
        overrun: Option<&BudgetOverrun>,
    ) {
        for f in failures {
            // One warning per misbehaving module, whatever it did (a failed call, an overrun).
            if self.warned.insert((f.module.clone(), "misbehaved")) {
                tracing::warn!(module = %f.module, kind = %f.kind, fallback = f.fallback, cycle, error = %f.error, "policy call failed (repeats are logged at debug)");
            } else {
                tracing::debug!(module = %f.module, kind = %f.kind, fallback = f.fallback, cycle, error = %f.error, "policy call failed");
            }
        }
        // A failed call that also overran the budget is reported once, as the failure.
        if let Some(o) = overrun.filter(|o| !failures.iter().any(|f| f.module == o.module)) {
            if self.warned.insert((o.module.clone(), "misbehaved")) {
                tracing::warn!(module = %o.module, kind = %o.kind, cycle, spent_ms = o.spent_ms, budget_ms = o.budget_ms, "cycle policy-time budget exceeded: fallbacks used for the rest of the cycle (repeats are logged at debug)");
            } else {
                tracing::debug!(module = %o.module, cycle, spent_ms = o.spent_ms, "cycle policy-time budget exceeded");
            }
        }
        for slot in slots {
            if slot.skipped {
                continue;
            }
            let m = slot.primary.module();
            let kind = m.kind();
            let failed = failures.iter().find(|f| !f.fallback && f.kind == kind).map(|f| f.error.clone());
            let over = overrun
                .filter(|o| o.kind == kind)
                .map(|o| format!("cycle policy-time budget exceeded: {:.0} ms of {:.0} ms", o.spent_ms, o.budget_ms));
            self.breaker.record(&m.sha256, &m.descriptor.name, cycle, failed.or(over).as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_blames_the_biggest_spender() {
        let mut b = CycleBudget::new(Duration::from_millis(100));
        b.charge(PolicyKind::Threshold, "t", Duration::from_millis(30), true);
        b.charge(PolicyKind::Placement, "p", Duration::from_millis(500), false);
        assert!(!b.exceeded(), "fallback time is not charged");
        b.charge(PolicyKind::Placement, "p", Duration::from_millis(40), true);
        assert!(!b.exceeded());
        b.charge(PolicyKind::Placement, "p", Duration::from_millis(40), true);
        assert!(b.exceeded());
        let o = b.into_overrun().unwrap();
        assert_eq!((o.module.as_str(), o.kind), ("p", PolicyKind::Placement));
        assert!((o.spent_ms - 110.0).abs() < 1e-6, "{o:?}");
    }
}
