//! Seeded synthetic clusters, for benchmarks, `amvm policy check` probes and tests.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::snapshot::{HostState, HostTable, Snapshot, VmTable};

/// SPECpower curves (W at 0 %, 10 %, …, 100 %) of the HP ProLiant ML110 G4 and G5 used by
/// Beloglazov & Buyya (`shared/data/power_models_specpower.csv`).
pub const POWER_G4: [f32; 11] = [86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0];
pub const POWER_G5: [f32; 11] = [93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0];

/// VM types (MIPS, RAM MB) of the PlanetLab reference setup.
pub const VM_TYPES: [(f32, f32); 4] = [(2500.0, 870.0), (2000.0, 1740.0), (1000.0, 1740.0), (500.0, 613.0)];

/// Shape of a synthetic cluster.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub hosts: usize,
    pub vms: usize,
    /// History samples per VM.
    pub window: usize,
    /// Host CPU capacity (MIPS) and memory (MB).
    pub host_mips: f32,
    pub host_mem_mb: f32,
    pub seed: u64,
}

impl SyntheticSpec {
    /// A cluster whose hosts average ~60 % CPU with a spread that leaves roughly a tenth of them
    /// above 80 % and a few percent below 30 % — a cluster with work to do.
    pub fn new(hosts: usize, vms: usize, seed: u64) -> Self {
        let per_host = (vms as f32 / hosts.max(1) as f32).max(1.0);
        SyntheticSpec {
            hosts,
            vms,
            window: 30,
            host_mips: 1250.0 * per_host,
            host_mem_mb: (1300.0 * per_host).max(4096.0) * 2.0,
            seed,
        }
    }

    /// Builds the snapshot: VM `i` on host `i % hosts`, each VM with an AR(1) utilization
    /// history around its own level.
    pub fn build(&self) -> Snapshot {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut hosts = HostTable::default();
        for h in 0..self.hosts {
            let state = if self.vms > h { HostState::Active } else { HostState::Asleep };
            hosts.push(h as u32, state, self.host_mips, self.host_mem_mb, (h % 2) as u32);
        }
        let w = self.window.max(1);
        let mut vms = VmTable::default();
        for i in 0..self.vms {
            let (mips, ram) = VM_TYPES[rng.random_range(0..VM_TYPES.len())];
            vms.id.push(i as u32);
            vms.host.push((i % self.hosts.max(1)) as u32);
            vms.mips.push(mips);
            vms.ram_mb.push(ram);
            vms.migrating.push(false);
            let level: f32 = rng.random_range(0.02..0.98);
            let mut u = level;
            for _ in 0..w {
                let noise: f32 = rng.random_range(-0.08..0.08);
                u = (0.7 * u + 0.3 * level + noise).clamp(0.0, 1.0);
                vms.cpu_history.push(u);
            }
        }
        Snapshot {
            cycle: 0,
            time_s: 0.0,
            unix_time_s: None,
            interval_s: 300.0,
            window: w,
            migration_bandwidth_mbps: 62.5,
            power_curves: vec![POWER_G4, POWER_G5],
            hosts,
            vms,
        }
    }
}

/// Applies a plan to a snapshot as if every migration completed at once: VMs change host,
/// evacuated hosts sleep, woken hosts become active, the cycle advances. For benchmarks and
/// tests that need a cluster in steady state; the simulator models migrations properly.
pub fn apply_instantly(snap: &mut Snapshot, plan: &super::Plan) {
    let hosts: std::collections::HashMap<u32, usize> =
        snap.hosts.id.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let vms: std::collections::HashMap<u32, usize> = snap.vms.id.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let host_index = |id: u32| hosts.get(&id).copied();
    let vm_index = |id: u32| vms.get(&id).copied();
    for m in &plan.migrations {
        if let (Some(v), Some(h)) = (vm_index(m.vm), host_index(m.to)) {
            snap.vms.host[v] = h as u32;
        }
    }
    for &id in &plan.wake {
        if let Some(h) = host_index(id) {
            snap.hosts.state[h] = HostState::Active;
        }
    }
    let mut occupied = vec![false; snap.hosts.len()];
    for &h in &snap.vms.host {
        if let Some(o) = occupied.get_mut(h as usize) {
            *o = true;
        }
    }
    for &id in &plan.sleep {
        if let Some(h) = host_index(id).filter(|&h| !occupied[h]) {
            snap.hosts.state[h] = HostState::Asleep;
        }
    }
    snap.cycle += 1;
    snap.time_s += f64::from(snap.interval_s);
}

/// Advances every VM's utilization by one sample (the oldest drops out): an AR(1) step around
/// the VM's own mean, so hosts drift into and out of overload from cycle to cycle.
pub fn advance(snap: &mut Snapshot, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ snap.cycle.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let w = snap.window;
    for row in snap.vms.cpu_history.chunks_mut(w) {
        let valid: Vec<f32> = row.iter().copied().filter(|v| !v.is_nan()).collect();
        let level = if valid.is_empty() { 0.5 } else { valid.iter().sum::<f32>() / valid.len() as f32 };
        let last = valid.last().copied().unwrap_or(level);
        let noise: f32 = rng.random_range(-0.08..0.08);
        row.copy_within(1.., 0);
        row[w - 1] = (0.7 * last + 0.3 * level + noise).clamp(0.0, 1.0);
    }
}
