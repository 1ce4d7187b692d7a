//! Trace-driven simulator and offline A/B testing of consolidation strategies.
//!
//! [`SimCluster`] is the simulated world behind the scheduler's
//! [`Cluster`](crate::scheduler::Cluster) seam: it replays a [`Trace`] on the hosts of a
//! [`Scenario`], hands the scheduler one [`Snapshot`](crate::scheduler::Snapshot) per step and
//! carries out its [`Plan`](crate::scheduler::Plan) — migrations take time and cost performance,
//! empty hosts switch off — while it integrates energy and SLA metrics ([`RunReport`]). The same
//! scheduler and the same WASM policies run here as on a live cluster; the simulator has no
//! copies of the algorithms. [`ab`] compares two strategies over several traces, [`report`]
//! renders the result as one self-contained HTML file.
//!
//! **API boundary**: everything the scheduler sees goes through the `Cluster` trait.

pub mod ab;
pub mod cloudsim;
pub mod error;
pub mod metrics;
pub mod power;
pub mod report;
pub mod run;
pub mod scenario;
pub mod strategy;
pub mod trace;
pub mod world;

pub use error::SimError;
pub use metrics::{RunReport, Series};
pub use run::{run, Baseline, Decider, RunOptions};
pub use scenario::Scenario;
pub use trace::Trace;
pub use world::{PowerAccounting, SimCluster};
