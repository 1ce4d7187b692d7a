//! The cluster state one decision cycle sees, and the plan it produces.
//!
//! **API boundary**: this file is the seam between the scheduler and the worlds it runs in
//! (`SimCluster` in `crate::sim`, the live controller later). Nothing here knows which world
//! produced it. State is columnar (one `Vec` per field) because that is how it travels to the
//! policies and because a 10,000-host cycle must stay in milliseconds.

use serde::{Deserialize, Serialize};

pub use amvm_model::Mode;

/// Stable identifier of a host across cycles.
pub type HostId = u32;
/// Stable identifier of a VM across cycles (and across its migrations).
pub type VmId = u32;

/// Power state of a host as the world reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    /// Running and able to take VMs.
    Active,
    /// Switched off or sleeping; can be woken to take VMs.
    Asleep,
    /// Not reporting (heartbeat lost) or failed: never a destination, never acted on.
    Down,
}

/// Hosts, one entry per index in every field.
#[derive(Debug, Clone, Default)]
pub struct HostTable {
    pub id: Vec<HostId>,
    pub state: Vec<HostState>,
    /// CPU capacity (MIPS).
    pub cpu_capacity: Vec<f32>,
    /// Memory capacity (MB).
    pub mem_capacity: Vec<f32>,
    /// Index into [`Snapshot::power_curves`].
    pub power_model: Vec<u32>,
    /// Migrations in or out of this host still running from earlier cycles.
    pub migrations_in_flight: Vec<u32>,
    /// CPU capacity of one core (MIPS). A single-vCPU VM never demands more than one core, so
    /// a host whose cores are slower than the VM's demand cannot take it (as CloudSim's
    /// `isSuitableForVm`). Empty = no per-core limit.
    pub core_mips: Vec<f32>,
    /// Measured memory utilization, `len × window`, oldest first; empty when not monitored.
    pub mem_history: Vec<f32>,
    /// Measured network utilization, `len × window`, oldest first; empty when not monitored.
    pub net_history: Vec<f32>,
}

impl HostTable {
    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// Appends one host.
    pub fn push(&mut self, id: HostId, state: HostState, cpu_capacity: f32, mem_capacity: f32, power_model: u32) {
        self.id.push(id);
        self.state.push(state);
        self.cpu_capacity.push(cpu_capacity);
        self.mem_capacity.push(mem_capacity);
        self.power_model.push(power_model);
        self.migrations_in_flight.push(0);
    }
}

/// VMs, one entry per index in every field.
#[derive(Debug, Clone, Default)]
pub struct VmTable {
    pub id: Vec<VmId>,
    /// Index (not id) of the VM's current host in [`Snapshot::hosts`].
    pub host: Vec<u32>,
    /// CPU capacity of the VM (MIPS).
    pub mips: Vec<f32>,
    /// Memory (MB).
    pub ram_mb: Vec<f32>,
    /// CPU utilization of the VM's own capacity, `len × window`, oldest first, NaN = no sample.
    /// The last column is the current demand.
    pub cpu_history: Vec<f32>,
    /// True while the VM is being migrated: it cannot be selected again.
    pub migrating: Vec<bool>,
    /// Memory the VM dirties per second (MB/s) as last measured, NaN where not measured;
    /// empty when the world measures none (the simulator). The migration-mode policy reads it.
    pub dirty_mbps: Vec<f32>,
    /// Seconds a move of the VM costs besides copying its RAM (the live world: remapping its
    /// volumes to the destination, per attached volume); empty = none. Part of its migration time
    /// wherever the scheduler and the policies see one.
    pub extra_migration_s: Vec<f32>,
}

impl VmTable {
    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// What a move of VM `vm` costs besides its RAM, in seconds.
    pub fn extra_migration_s(&self, vm: usize) -> f32 {
        self.extra_migration_s.get(vm).copied().unwrap_or(0.0)
    }
}

/// Everything one decision cycle sees.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Decision cycle number, 0-based.
    pub cycle: u64,
    /// Seconds since the start of the run.
    pub time_s: f64,
    /// Wall-clock time of the cycle (Unix seconds) when the world has one; operator rules'
    /// weekly maintenance windows use it (else `time_s` counted from a Monday 00:00 UTC).
    pub unix_time_s: Option<f64>,
    /// Seconds between samples and between cycles.
    pub interval_s: f32,
    /// Samples per history row.
    pub window: usize,
    /// Host link bandwidth available to one migration (MB/s); migration time = RAM / this.
    pub migration_bandwidth_mbps: f32,
    /// Power curves, watts at 0 %, 10 %, …, 100 % CPU.
    pub power_curves: Vec<[f32; 11]>,
    pub hosts: HostTable,
    pub vms: VmTable,
}

impl Snapshot {
    /// The VM's current CPU demand (MIPS): the last sample of its history, 0 when unknown.
    pub fn vm_demand_mips(&self, vm: usize) -> f32 {
        let last = self.vms.cpu_history[(vm + 1) * self.window - 1];
        if last.is_finite() {
            last * self.vms.mips[vm]
        } else {
            0.0
        }
    }
}

/// Why a VM moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationReason {
    /// Its host was overloaded.
    Overload,
    /// Its host was underloaded and is being emptied.
    Underload,
    /// Its host is in maintenance or in reserve (operator rules) and is being emptied.
    Maintenance,
}

/// One live migration to perform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub vm: VmId,
    pub from: HostId,
    pub to: HostId,
    pub reason: MigrationReason,
    /// The mechanism, chosen by the strategy's migration-mode policy; `None` when none was
    /// chosen (the policy and its fallback failed): the world then uses its own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// What one decision cycle asks the world to do. Migrations are listed in the order they were
/// decided; a world may run them concurrently.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub migrations: Vec<Migration>,
    /// Hosts emptied by this plan: switch them off or to sleep once their VMs have left.
    pub sleep: Vec<HostId>,
    /// Asleep hosts that receive VMs: wake them before the migrations start.
    pub wake: Vec<HostId>,
}

/// A world the scheduler can run in.
pub trait Cluster {
    /// The state for the next decision cycle.
    fn observe(&mut self) -> &Snapshot;
    /// Carries out (or, in shadow mode, records) a plan.
    fn apply(&mut self, plan: &Plan);
}
