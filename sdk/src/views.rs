//! Typed views over the columnar batches a policy receives.
//!
//! Every batch is a set of parallel columns; histories are `n × window` row-major, oldest
//! sample first, NaN for a missing sample. Utilization is a fraction of capacity.

/// A host's class as a threshold policy sees it. Encoded on the wire as 0 / 1 / 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HostClass {
    Normal = 0,
    Underload = 1,
    Overload = 2,
}

/// Cycle-wide facts.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub cycle: u64,
    pub interval_s: f32,
    pub seed: u64,
    /// Bandwidth one live migration gets (MB/s).
    pub migration_mbps: f32,
    /// Watts at 0 %, 10 %, …, 100 % CPU; 11 values per model.
    pub power_curves: Vec<f32>,
}

impl Context {
    /// Number of power models in [`power_curves`](Self::power_curves).
    pub fn power_models(&self) -> usize {
        self.power_curves.len() / 11
    }

    /// Power (W) of `model` at CPU utilization `u` (0..=1), linear between the 10 % points.
    /// `None` for an unknown model or a utilization outside 0..=1.
    pub fn power(&self, model: u32, u: f32) -> Option<f32> {
        let curve = self.power_curves.get(model as usize * 11..model as usize * 11 + 11)?;
        crate::stats::power_at(curve, u)
    }

    /// Seed for randomized decisions: the same seed gives the same decisions.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Estimated live-migration time (s) of a VM with `ram_mb` of memory.
    pub fn migration_s(&self, ram_mb: f32) -> f32 {
        if self.migration_mbps > 0.0 {
            ram_mb / self.migration_mbps
        } else {
            f32::INFINITY
        }
    }
}

/// Hosts with their utilization histories.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    pub n: u32,
    pub window: u32,
    pub cpu: Vec<f32>,
    pub mem: Vec<f32>,
    pub net: Vec<f32>,
    pub cpu_capacity: Vec<f32>,
    pub mem_capacity: Vec<f32>,
    pub max_migration_s: Vec<f32>,
    pub vm_count: Vec<u32>,
}

impl Hosts {
    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn row<'a>(&self, col: &'a [f32], i: usize) -> Option<&'a [f32]> {
        let w = self.window as usize;
        col.get(i * w..(i + 1) * w)
    }

    /// CPU utilization history of host `i`, oldest first (NaN = no sample).
    pub fn cpu(&self, i: usize) -> &[f32] {
        self.row(&self.cpu, i).unwrap_or(&[])
    }

    /// Memory utilization history of host `i`, or `None` when memory is not monitored.
    pub fn mem(&self, i: usize) -> Option<&[f32]> {
        self.row(&self.mem, i)
    }

    /// Network utilization history of host `i`, or `None` when not monitored.
    pub fn net(&self, i: usize) -> Option<&[f32]> {
        self.row(&self.net, i)
    }

    /// Every monitored resource's history of host `i`: CPU first, then memory and network.
    pub fn resources(&self, i: usize) -> impl Iterator<Item = &[f32]> {
        std::iter::once(self.cpu(i)).chain(self.mem(i)).chain(self.net(i))
    }

    /// The latest known CPU utilization of host `i` (0 when there is none).
    pub fn cpu_now(&self, i: usize) -> f32 {
        crate::stats::last_valid(self.cpu(i)).unwrap_or(0.0)
    }

    pub fn cpu_capacity(&self, i: usize) -> f32 {
        self.cpu_capacity.get(i).copied().unwrap_or(0.0)
    }

    pub fn mem_capacity(&self, i: usize) -> f32 {
        self.mem_capacity.get(i).copied().unwrap_or(0.0)
    }

    /// Longest migration time (s) among the VMs of host `i`.
    pub fn max_migration_s(&self, i: usize) -> f32 {
        self.max_migration_s.get(i).copied().unwrap_or(0.0)
    }

    pub fn vm_count(&self, i: usize) -> u32 {
        self.vm_count.get(i).copied().unwrap_or(0)
    }

    /// These hosts with all of `add` placed on each of them: CPU histories gain
    /// `vm_util × vm_mips / host_mips`, memory histories (where monitored) gain
    /// `vm_ram / host_mem`, VM counts and longest migration times grow accordingly.
    /// A missing sample on either side counts as zero unless both are missing.
    pub fn with_added(&self, add: &Vms, ctx: &Context) -> Hosts {
        let mut out = self.clone();
        let w = self.window as usize;
        let vw = add.window as usize;
        for i in 0..self.len() {
            let cap = self.cpu_capacity(i);
            for v in 0..add.len() {
                let vm_row = add.cpu(v);
                let scale = if cap > 0.0 { add.mips(v) / cap } else { f32::INFINITY };
                for t in 0..w {
                    // Align the newest samples of both histories.
                    let vt = (t + vw).checked_sub(w);
                    let vu = vt.and_then(|vt| vm_row.get(vt).copied()).unwrap_or(f32::NAN);
                    let cell = &mut out.cpu[i * w + t];
                    *cell = add_samples(*cell, vu * scale);
                }
            }
            if !out.mem.is_empty() {
                let mem_cap = self.mem_capacity(i);
                let extra: f32 = (0..add.len()).map(|v| add.ram_mb(v)).sum::<f32>()
                    / if mem_cap > 0.0 { mem_cap } else { f32::INFINITY };
                for t in 0..w {
                    let cell = &mut out.mem[i * w + t];
                    *cell = add_samples(*cell, extra);
                }
            }
            out.vm_count[i] += add.n;
            let longest = (0..add.len()).map(|v| ctx.migration_s(add.ram_mb(v))).fold(0.0f32, f32::max);
            if let Some(m) = out.max_migration_s.get_mut(i) {
                *m = m.max(longest);
            }
        }
        out
    }
}

fn add_samples(a: f32, b: f32) -> f32 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f32::NAN,
        (true, false) => b,
        (false, true) => a,
        (false, false) => a + b,
    }
}

/// Per host, the bounds of [`BoundedThresholdPolicy::headroom`](crate::BoundedThresholdPolicy::headroom),
/// in the policy's own unit of VM load: one added VM whose load is at most `accepts[i]` surely
/// leaves host `i` not overloaded; one whose load is at least `refuses[i]` surely overloads it.
/// NaN: no bound.
#[derive(Debug, Clone, Default)]
pub struct Headroom {
    pub accepts: Vec<f32>,
    pub refuses: Vec<f32>,
    /// The bounds of host `i` hold for one VM whose migration time (s, RAM ÷
    /// `ctx.migration_mbps`) is at most `migration_s[i]`. NaN: for no VM.
    pub migration_s: Vec<f32>,
}

impl Headroom {
    /// No bound for `n` hosts (every question is asked).
    pub fn unknown(n: usize) -> Headroom {
        Headroom { accepts: vec![f32::NAN; n], refuses: vec![f32::NAN; n], migration_s: vec![f32::NAN; n] }
    }
}

/// Per VM, its load `low..=high` in the unit of [`Headroom`]. NaN: no bound.
#[derive(Debug, Clone, Default)]
pub struct VmLoads {
    pub low: Vec<f32>,
    pub high: Vec<f32>,
}

/// VMs with their utilization histories.
#[derive(Debug, Clone, Default)]
pub struct Vms {
    pub n: u32,
    pub window: u32,
    /// CPU utilization of the VM's own capacity, `n × window`.
    pub cpu: Vec<f32>,
    pub mips: Vec<f32>,
    pub ram_mb: Vec<f32>,
}

impl Vms {
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// CPU utilization history of VM `v`, oldest first.
    pub fn cpu(&self, v: usize) -> &[f32] {
        let w = self.window as usize;
        self.cpu.get(v * w..(v + 1) * w).unwrap_or(&[])
    }

    /// The latest known CPU utilization of VM `v` (fraction of its own MIPS).
    pub fn cpu_now(&self, v: usize) -> f32 {
        crate::stats::last_valid(self.cpu(v)).unwrap_or(0.0)
    }

    pub fn mips(&self, v: usize) -> f32 {
        self.mips.get(v).copied().unwrap_or(0.0)
    }

    pub fn ram_mb(&self, v: usize) -> f32 {
        self.ram_mb.get(v).copied().unwrap_or(0.0)
    }
}

/// The VM being placed.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmDemand {
    /// Requested CPU now (MIPS).
    pub cpu_mips: f32,
    pub ram_mb: f32,
}

/// The migrations of one plan whose mechanism is to be chosen, one row per move.
#[derive(Debug, Clone, Default)]
pub struct Moves {
    pub n: u32,
    /// Memory of the VM (MB).
    pub ram_mb: Vec<f32>,
    /// Measured dirty rate (MB/s); NaN: not measured.
    pub dirty_mbps: Vec<f32>,
    /// CPU utilization of the VM now (fraction); NaN: no sample.
    pub cpu: Vec<f32>,
    /// Bandwidth the migration gets (MB/s).
    pub link_mbps: Vec<f32>,
}

impl Moves {
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn at(v: &[f32], i: usize) -> f32 {
        v.get(i).copied().unwrap_or(f32::NAN)
    }

    /// Memory of move `i`'s VM (MB).
    pub fn ram_mb(&self, i: usize) -> f32 {
        Self::at(&self.ram_mb, i)
    }

    /// Measured dirty rate of move `i`'s VM (MB/s), NaN when not measured.
    pub fn dirty_mbps(&self, i: usize) -> f32 {
        Self::at(&self.dirty_mbps, i)
    }

    /// CPU utilization of move `i`'s VM (fraction), NaN when unknown.
    pub fn cpu(&self, i: usize) -> f32 {
        Self::at(&self.cpu, i)
    }

    /// Bandwidth of move `i` (MB/s).
    pub fn link_mbps(&self, i: usize) -> f32 {
        Self::at(&self.link_mbps, i)
    }
}

/// Candidate destination hosts for one VM.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub n: u32,
    pub cpu_used: Vec<f32>,
    pub cpu_capacity: Vec<f32>,
    pub mem_used: Vec<f32>,
    pub mem_capacity: Vec<f32>,
    pub power_model: Vec<u32>,
    pub vm_count: Vec<u32>,
    pub asleep: Vec<u8>,
}

impl Candidates {
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// CPU in use now (MIPS).
    pub fn cpu_used(&self, i: usize) -> f32 {
        self.cpu_used.get(i).copied().unwrap_or(0.0)
    }

    pub fn cpu_capacity(&self, i: usize) -> f32 {
        self.cpu_capacity.get(i).copied().unwrap_or(0.0)
    }

    /// CPU utilization now (fraction).
    pub fn cpu_util(&self, i: usize) -> f32 {
        let cap = self.cpu_capacity(i);
        if cap > 0.0 {
            self.cpu_used(i) / cap
        } else {
            f32::INFINITY
        }
    }

    pub fn mem_used(&self, i: usize) -> f32 {
        self.mem_used.get(i).copied().unwrap_or(0.0)
    }

    pub fn mem_capacity(&self, i: usize) -> f32 {
        self.mem_capacity.get(i).copied().unwrap_or(0.0)
    }

    pub fn power_model(&self, i: usize) -> u32 {
        self.power_model.get(i).copied().unwrap_or(0)
    }

    pub fn vm_count(&self, i: usize) -> u32 {
        self.vm_count.get(i).copied().unwrap_or(0)
    }

    /// Whether host `i` is asleep and would be woken for the VM.
    pub fn asleep(&self, i: usize) -> bool {
        self.asleep.get(i).is_some_and(|&a| a != 0)
    }
}

/// Groups of candidate hosts for [`IndexedPlacementPolicy::weigh_bound`](crate::IndexedPlacementPolicy::weigh_bound):
/// group `i` stands for every candidate row whose CPU in use lies in
/// `cpu_used_min(i)..=cpu_used_max(i)` and whose CPU capacity, memory capacity, power model and
/// sleep state are the group's, with any memory in use and VM count.
#[derive(Debug, Clone, Default)]
pub struct HostGroups {
    pub n: u32,
    pub cpu_used_min: Vec<f32>,
    pub cpu_used_max: Vec<f32>,
    pub cpu_capacity: Vec<f32>,
    pub mem_capacity: Vec<f32>,
    pub power_model: Vec<u32>,
    pub asleep: Vec<u8>,
}

impl HostGroups {
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Least CPU in use (MIPS) of a row of group `i`.
    pub fn cpu_used_min(&self, i: usize) -> f32 {
        self.cpu_used_min.get(i).copied().unwrap_or(0.0)
    }

    /// Most CPU in use (MIPS) of a row of group `i`.
    pub fn cpu_used_max(&self, i: usize) -> f32 {
        self.cpu_used_max.get(i).copied().unwrap_or(0.0)
    }

    pub fn cpu_capacity(&self, i: usize) -> f32 {
        self.cpu_capacity.get(i).copied().unwrap_or(0.0)
    }

    pub fn mem_capacity(&self, i: usize) -> f32 {
        self.mem_capacity.get(i).copied().unwrap_or(0.0)
    }

    pub fn power_model(&self, i: usize) -> u32 {
        self.power_model.get(i).copied().unwrap_or(0)
    }

    pub fn asleep(&self, i: usize) -> bool {
        self.asleep.get(i).is_some_and(|&a| a != 0)
    }
}

impl Hosts {
    /// Classifies every host with one rule applied to each monitored resource (CPU, memory,
    /// network; paper 3.3.1): a host is overloaded when `overloaded(host, history)` holds for any
    /// resource, underloaded when every resource's latest sample is below `lower`, otherwise
    /// normal. A host without any CPU sample is normal.
    pub fn classify_each(&self, lower: f32, mut overloaded: impl FnMut(usize, &[f32]) -> bool) -> Vec<HostClass> {
        (0..self.len())
            .map(|i| {
                if crate::stats::last_valid(self.cpu(i)).is_none() {
                    return HostClass::Normal;
                }
                let mut all_below = true;
                for row in self.resources(i) {
                    if overloaded(i, row) {
                        return HostClass::Overload;
                    }
                    if crate::stats::last_valid(row).is_some_and(|u| u >= lower) {
                        all_below = false;
                    }
                }
                if all_below {
                    HostClass::Underload
                } else {
                    HostClass::Normal
                }
            })
            .collect()
    }
}
