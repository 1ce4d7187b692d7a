//! Initial VM placement: what CloudSim does when it creates the VMs, before any scheduling cycle.
//! Not a consolidation policy (those run in the scheduler): it only decides the starting state,
//! and it sizes every VM at its full MIPS as CloudSim does at creation.

use super::{SimCluster, NONE};
use crate::sim::error::{Result, SimError};
use crate::sim::scenario::InitialPlacement;

/// Places every VM in trace order. `Auto` counts as `PowerAware`.
pub(super) fn place_all(sim: &mut SimCluster, how: InitialPlacement) -> Result<()> {
    let n_hosts = sim.host_cap.len();
    // MIPS reserved at creation (full VM MIPS), as CloudSim's VM scheduler holds them.
    let mut reserved = vec![0.0f64; n_hosts];
    for v in 0..sim.vm_mips.len() {
        let (mips, ram) = (sim.vm_mips[v], sim.vm_ram[v]);
        let fits = |h: usize, reserved: &[f64]| {
            sim.host_core[h] >= mips
                && sim.host_cap[h] - reserved[h] >= mips
                && sim.host_ram_used[h] + ram <= sim.host_ram[h] + 1e-9
        };
        let chosen = match how {
            InitialPlacement::FirstFit => (0..n_hosts).find(|&h| fits(h, &reserved)),
            InitialPlacement::PowerAware | InitialPlacement::Auto => {
                // CloudSim's PABFD at creation compares the power with the VM against the host's
                // power at its last measured utilization, which is 0 before the first step.
                let mut best = None;
                let mut best_increase = f64::MAX;
                for h in 0..n_hosts {
                    if !fits(h, &reserved) {
                        continue;
                    }
                    let curve = &sim.curves[sim.host_curve[h]];
                    let after = (reserved[h] + mips) / sim.host_cap[h];
                    let increase = curve.watts(after) - curve.watts(0.0);
                    if increase < best_increase {
                        best_increase = increase;
                        best = Some(h);
                    }
                }
                best
            }
        };
        let Some(h) = chosen else {
            return Err(SimError::VmDoesNotFit { vm: v, trace: sim.trace.vms[v].name.clone(), mips, ram_mb: ram });
        };
        reserved[h] += mips;
        sim.host_ram_used[h] += ram;
        sim.host_vms[h].push(v as u32);
        sim.vm_host[v] = h as u32;
        sim.vm_dest[v] = NONE;
    }
    Ok(())
}
