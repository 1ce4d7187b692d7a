//! Scheduler core: one decision cycle over a cluster snapshot (overload detection → VM selection
//! → placement → underload evacuation), world-agnostic. See `cycle.rs` for the algorithm and
//! `snapshot.rs` for the seam.

mod budget;
mod cycle;
mod idmap;
mod index;
pub mod rules;
pub mod snapshot;
pub mod strategy;
pub mod synthetic;
pub mod trace;
mod veto;
mod work;

pub use budget::BudgetOverrun;
pub use cycle::{CycleOutcome, CycleStats, PolicyFailure, Scheduler, SchedulerError};
pub use rules::OperatorRules;
pub use snapshot::{
    Cluster, HostId, HostState, HostTable, Migration, MigrationReason, Mode, Plan, Snapshot, VmId, VmTable,
};
pub use strategy::{Fallbacks, PolicyChoice, Rules, Strategy, StrategyError};
pub use trace::DecisionTrace;
