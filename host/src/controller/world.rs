//! The world a controller runs: the [`World`] trait and the views it gives the API.
//!
//! **API boundary**: the controller loop sees a world only through this trait, so the same
//! loop drives the simulated world replayed in real time (`sim_world.rs`) and the live world
//! (collector mirror in, plan out through agents; the real-VM issue). The scheduler sees only
//! the [`Snapshot`] it returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::ActionRow;
use crate::scheduler::{Mode, OperatorRules, Snapshot};

/// What a world is.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WorldInfo {
    /// `simulated`, `live` or `openstack`.
    pub kind: String,
    pub name: String,
    /// One line for operators: what is replayed or watched, at what pace.
    pub description: String,
    /// Seconds of world time between decision cycles.
    pub interval_s: f64,
    pub hosts: usize,
    pub vms: usize,
}

/// One action as the world executes it (ids are the journal's action ids).
#[derive(Debug, Clone, PartialEq)]
pub enum ActionReq {
    /// `mode`: the mechanism the plan chose (its migration-mode policy); `None`: the world's
    /// default.
    Migrate {
        id: i64,
        vm: u32,
        from: u32,
        to: u32,
        mode: Option<Mode>,
    },
    Sleep {
        id: i64,
        host: u32,
    },
    Wake {
        id: i64,
        host: u32,
    },
}

impl ActionReq {
    pub fn id(&self) -> i64 {
        match self {
            ActionReq::Migrate { id, .. } | ActionReq::Sleep { id, .. } | ActionReq::Wake { id, .. } => *id,
        }
    }

    /// The request for a journaled action row, if it is well-formed.
    pub fn from_row(a: &ActionRow) -> Option<ActionReq> {
        let u = |v: Option<i64>| v.and_then(|x| u32::try_from(x).ok());
        match a.kind.as_str() {
            "migrate" => Some(ActionReq::Migrate {
                id: a.id,
                vm: u(a.vm)?,
                from: u(a.from_host)?,
                to: u(a.to_host)?,
                mode: a.mode.as_deref().and_then(|m| m.parse().ok()),
            }),
            "sleep" => Some(ActionReq::Sleep { id: a.id, host: u(a.from_host)? }),
            "wake" => Some(ActionReq::Wake { id: a.id, host: u(a.to_host)? }),
            _ => None,
        }
    }
}

/// How an action ended in the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// With the migration's figures where the world knows them (downtime in ms, page faults).
    Succeeded {
        total_s: Option<f64>,
        bytes: Option<f64>,
        downtime_ms: Option<f64>,
        page_faults: Option<i64>,
    },
    Failed(String),
}

/// What the world says about a journaled action after a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum Reconciled {
    /// Still running: it will end through [`World::advance`].
    Ongoing,
    Ended(Outcome),
}

/// A migration under way.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Progress {
    pub action_id: i64,
    pub vm: u32,
    pub from: u32,
    pub to: u32,
    /// `full-round`, `stop-copy`, `demand-push`, `done`.
    pub phase: String,
    pub bytes_total: f64,
    pub bytes_sent: f64,
    pub bytes_remaining: f64,
    /// World seconds since it started, and the expected total.
    pub elapsed_s: f64,
    pub expected_s: f64,
    /// `hybrid` (one pre-copy round, then post-copy), `pre-copy` or `post-copy`.
    pub mode: String,
    /// Rate the VM dirties memory (bytes/s, world time) and the link's share for the move.
    pub dirty_rate_bps: f64,
    pub bandwidth_bps: f64,
    /// Predicted: pre-copy alone would never converge (dirty rate ≥ bandwidth).
    pub precopy_nonconvergent: bool,
    /// Downtime (stop-copy, s): expected, and whether it has happened yet.
    pub downtime_s: f64,
    /// Demand requests (page faults at the destination) so far.
    pub page_faults: u64,
}

/// A host as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostView {
    pub id: u32,
    pub name: String,
    /// `up`, `asleep`, `down` or `maintenance`.
    pub state: String,
    pub cores: u32,
    pub cpu_capacity_mips: f64,
    pub mem_capacity_mb: f64,
    /// CPU utilization now (0..1).
    pub cpu_util: f64,
    /// Memory allocated to VMs (0..1).
    pub mem_util: f64,
    /// Network utilization (0..1); `null` where the world does not measure it.
    pub net_util: Option<f64>,
    pub power_w: f64,
    /// Short of requested MIPS now (an SLA violation while active).
    pub overloaded: bool,
    pub vms: Vec<u32>,
    pub migrations_in_flight: u32,
}

/// A VM as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmView {
    pub id: u32,
    pub name: String,
    pub host: u32,
    pub mips: f64,
    pub ram_mb: f64,
    /// CPU utilization of its own capacity now (0..1).
    pub cpu_util: f64,
    /// Where `cpu_util` comes from: `trace` (simulated), `agent` (an AMVM agent on its node),
    /// `nova-diagnostics` (Nova's server diagnostics); `null` while nothing was measured yet.
    #[serde(default)]
    pub cpu_source: Option<String>,
    /// Destination while it migrates.
    pub migrating_to: Option<u32>,
}

/// Cluster totals now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterMetrics {
    pub hosts: usize,
    pub hosts_up: usize,
    pub hosts_asleep: usize,
    pub hosts_down: usize,
    pub hosts_maintenance: usize,
    pub vms: usize,
    pub power_w: f64,
    /// Energy since the start of the world's day (kWh).
    pub energy_kwh_today: f64,
    /// SLA time per active host and performance degradation due to migrations, so far today (0..1).
    pub slatah: f64,
    pub pdm: f64,
    pub migrations_in_flight: usize,
    /// Migrations the world performed today.
    pub migrations_today: u64,
    pub host_shutdowns_today: u64,
    /// Mean CPU utilization of active hosts, and its standard deviation (load balance).
    pub cpu_util_mean: f64,
    pub load_stddev: f64,
    /// Mean memory utilization of active hosts.
    #[serde(default)]
    pub mem_util_mean: f64,
}

/// A metric series request.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
pub struct SeriesQuery {
    /// `host`, `vm` or `cluster`.
    pub target: String,
    /// Host or VM id (ignored for `cluster`).
    pub id: Option<u32>,
    /// `cpu`, `mem`, `power` (hosts, cluster), `active_hosts`, `energy` (cluster).
    pub metric: String,
    /// Unix seconds (world clock); default: one day before `to`.
    pub from: Option<f64>,
    /// Unix seconds (world clock); default: now.
    pub to: Option<f64>,
    /// `AVERAGE` (default) or `MAX` per output point.
    pub cf: Option<String>,
    /// Points wanted (server-side downsampling); default 300, at most 5000.
    pub points: Option<usize>,
}

/// A metric series answer.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SeriesData {
    pub target: String,
    pub id: Option<u32>,
    pub metric: String,
    pub unit: String,
    pub cf: String,
    pub from: f64,
    pub to: f64,
    /// Seconds each point covers.
    pub step_s: f64,
    /// Point times (Unix seconds, end of the span each covers) and values (`null` = no data).
    pub t: Vec<f64>,
    pub v: Vec<Option<f64>>,
}

/// Metric series of a world, readable from any thread (the RRD store for the live world, the
/// recorded history for the simulated one).
pub trait SeriesSource: Send + Sync {
    fn series(&self, q: &SeriesQuery) -> Result<SeriesData, String>;
}

/// A world the controller runs.
pub trait World: Send {
    fn info(&self) -> WorldInfo;
    /// The world's position: day (epoch) and step within it. Persisted with the journal.
    fn position(&self) -> (i64, i64);
    /// World time, Unix seconds.
    fn clock(&self) -> f64;
    /// Real time between decision cycles.
    fn pace(&self) -> Duration;
    /// Rebuilds the world at `(epoch, step)` from the actions journaled as executed in that epoch
    /// (in execution order). A live world has nothing to rebuild and ignores the log.
    fn restore(&mut self, epoch: i64, step: i64, executed: &[ActionRow]) -> Result<(), String>;
    /// After a restart: what happened to an action journaled as ONGOING.
    fn reconcile(&self, action: &ActionRow) -> Reconciled;
    /// The state for the next decision cycle; hosts in `maintenance` are reported down (never a
    /// destination, never acted on).
    fn observe(&mut self, maintenance: &[u32]) -> &Snapshot;
    /// The snapshot the last [`World::observe`] returned.
    fn snapshot(&self) -> &Snapshot;
    /// Operator rules the world itself imposes as of the last [`World::observe`], on top of the
    /// strategy's and the cluster's (the live world: VMs with volumes run only on nodes that
    /// reach the disk array). None by default.
    fn rules(&self) -> OperatorRules {
        OperatorRules::default()
    }
    /// Starts actions; one result per request (an `Err` is the world's refusal reason).
    fn execute(&mut self, actions: &[ActionReq]) -> Vec<Result<(), String>>;
    /// Closes the current step's bookkeeping (after every action of the step was executed).
    fn end_step(&mut self);
    /// Moves to the next decision point; returns the actions that ended on the way.
    fn advance(&mut self) -> Vec<(i64, Outcome)>;
    /// Migrations under way, with progress interpolated to `fraction` (0..1) of the pace.
    fn in_flight(&self, fraction: f64) -> Vec<Progress>;
    fn hosts(&self, maintenance: &[u32]) -> Vec<HostView>;
    fn vms(&self) -> Vec<VmView>;
    fn metrics(&self, maintenance: &[u32]) -> ClusterMetrics;
    /// Where the API reads metric series from, without waiting for the loop.
    fn series(&self) -> std::sync::Arc<dyn SeriesSource>;
    /// The world's history for hosts in `hosts` over the current day: energy (kWh), active
    /// time and violation time (s) per host, for live cohort experiments.
    fn host_accounts(&self) -> Vec<HostAccount>;
}

/// Per-host accounting since the start of the day (see [`World::host_accounts`]).
#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema)]
pub struct HostAccount {
    pub energy_kwh: f64,
    pub active_s: f64,
    pub violation_s: f64,
    pub migrations_out: u64,
    /// MIPS·s its VMs requested, and what migrations out of it cost them (PDM's terms).
    pub requested_mips_s: f64,
    pub migration_loss_mips_s: f64,
}
