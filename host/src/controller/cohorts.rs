//! Live cohorts: the hosts split in two groups (even ids → A, the active strategy; odd ids → B),
//! each decided by its own strategy over the snapshot of its own hosts and their VMs, so VMs
//! never cross groups. Every cycle records each group's energy, SLATAH, PDM and migrations; the
//! result compares the groups with `amvm ab`'s paired statistics over cycles.

use serde_json::{json, Value};

use super::world::HostAccount;
use crate::scheduler::{HostTable, Plan, Scheduler, Snapshot, VmTable};
use crate::sim::ab::t95;

/// A running cohort experiment.
pub struct Cohorts {
    pub experiment: i64,
    pub name: String,
    pub scheduler: Scheduler,
    /// Per-cycle samples: [energy kWh, SLATAH, PDM, migrations] for A then B.
    samples: Vec<[f64; 8]>,
    last: Option<Vec<HostAccount>>,
    pending_migrations: [f64; 2],
}

/// Group of a host id: 0 = A, 1 = B.
pub fn group(host: u32) -> usize {
    (host % 2) as usize
}

/// The part of `snap` on the hosts `keep` selects (by index), with the VMs on them. Ids are kept,
/// so a plan made on it names the world's hosts and VMs.
pub fn sub_snapshot(snap: &Snapshot, keep: impl Fn(usize) -> bool) -> Snapshot {
    let n = snap.hosts.len();
    let w = snap.window;
    let mut index = vec![u32::MAX; n];
    let mut hosts = HostTable::default();
    let hw = |col: &Vec<f32>, h: usize| -> Vec<f32> {
        if col.is_empty() {
            Vec::new()
        } else {
            col[h * w..(h + 1) * w].to_vec()
        }
    };
    for h in (0..n).filter(|&h| keep(h)) {
        index[h] = hosts.len() as u32;
        hosts.push(
            snap.hosts.id[h],
            snap.hosts.state[h],
            snap.hosts.cpu_capacity[h],
            snap.hosts.mem_capacity[h],
            snap.hosts.power_model[h],
        );
        *hosts.migrations_in_flight.last_mut().expect("pushed") = snap.hosts.migrations_in_flight[h];
        if !snap.hosts.core_mips.is_empty() {
            hosts.core_mips.push(snap.hosts.core_mips[h]);
        }
        hosts.mem_history.extend(hw(&snap.hosts.mem_history, h));
        hosts.net_history.extend(hw(&snap.hosts.net_history, h));
    }
    let mut vms = VmTable::default();
    for v in 0..snap.vms.len() {
        let h = snap.vms.host[v] as usize;
        if h >= n || index[h] == u32::MAX {
            continue;
        }
        vms.id.push(snap.vms.id[v]);
        vms.host.push(index[h]);
        vms.mips.push(snap.vms.mips[v]);
        vms.ram_mb.push(snap.vms.ram_mb[v]);
        vms.cpu_history.extend_from_slice(&snap.vms.cpu_history[v * w..(v + 1) * w]);
        vms.migrating.push(snap.vms.migrating[v]);
        if !snap.vms.dirty_mbps.is_empty() {
            vms.dirty_mbps.push(snap.vms.dirty_mbps[v]);
        }
        if !snap.vms.extra_migration_s.is_empty() {
            vms.extra_migration_s.push(snap.vms.extra_migration_s[v]);
        }
    }
    Snapshot {
        cycle: snap.cycle,
        time_s: snap.time_s,
        unix_time_s: snap.unix_time_s,
        interval_s: snap.interval_s,
        window: w,
        migration_bandwidth_mbps: snap.migration_bandwidth_mbps,
        power_curves: snap.power_curves.clone(),
        hosts,
        vms,
    }
}

impl Cohorts {
    pub fn new(experiment: i64, name: String, scheduler: Scheduler) -> Cohorts {
        Cohorts { experiment, name, scheduler, samples: Vec::new(), last: None, pending_migrations: [0.0; 2] }
    }

    /// Counts a merged plan's migrations per group (they run in the next step).
    pub fn planned(&mut self, plan: &Plan) {
        for m in &plan.migrations {
            self.pending_migrations[group(m.from)] += 1.0;
        }
    }

    /// Records one step from the world's per-host accounts; returns the cycle's record.
    pub fn record(&mut self, accounts: Vec<HostAccount>, cycle: u64) -> Option<Value> {
        let last = self.last.replace(accounts.clone())?;
        if last.len() != accounts.len() {
            return None;
        }
        let mut g = [[0.0f64; 5]; 2]; // energy, active, violation, requested, loss
        for (h, (now, before)) in accounts.iter().zip(&last).enumerate() {
            // A new day resets the accounts: count the new day's values alone.
            let d = |a: f64, b: f64| if a >= b { a - b } else { a };
            let k = group(h as u32);
            g[k][0] += d(now.energy_kwh, before.energy_kwh);
            g[k][1] += d(now.active_s, before.active_s);
            g[k][2] += d(now.violation_s, before.violation_s);
            g[k][3] += d(now.requested_mips_s, before.requested_mips_s);
            g[k][4] += d(now.migration_loss_mips_s, before.migration_loss_mips_s);
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mut sample = [0.0; 8];
        for k in 0..2 {
            sample[4 * k] = g[k][0];
            sample[4 * k + 1] = ratio(g[k][2], g[k][1]);
            sample[4 * k + 2] = ratio(g[k][4], g[k][3]);
            sample[4 * k + 3] = self.pending_migrations[k];
        }
        self.pending_migrations = [0.0; 2];
        self.samples.push(sample);
        let side = |k: usize| json!({ "energy_kwh": sample[4 * k], "slatah": sample[4 * k + 1], "pdm": sample[4 * k + 2], "migrations": sample[4 * k + 3] });
        Some(json!({ "cycle": cycle, "a": side(0), "b": side(1) }))
    }

    /// Totals per group and paired comparisons over cycles (mean difference B − A with a 95 %
    /// Student-t interval, as `amvm ab` does over traces).
    pub fn result(&self) -> Value {
        let n = self.samples.len();
        let names = ["energy_kwh", "slatah", "pdm", "migrations"];
        let mut comparisons = Vec::new();
        for (i, metric) in names.iter().enumerate() {
            let a: Vec<f64> = self.samples.iter().map(|s| s[i]).collect();
            let b: Vec<f64> = self.samples.iter().map(|s| s[4 + i]).collect();
            let diffs: Vec<f64> = a.iter().zip(&b).map(|(x, y)| y - x).collect();
            let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
            let md = mean(&diffs);
            let sd =
                if n > 1 { (diffs.iter().map(|d| (d - md).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
            let half = if n > 1 { t95(n - 1) * sd / (n as f64).sqrt() } else { f64::NAN };
            let significant = n > 1 && (md - half > 0.0 || md + half < 0.0);
            comparisons.push(json!({
                "metric": metric, "n": n, "mean_a": mean(&a), "mean_b": mean(&b), "mean_diff": md,
                "ci95_low": md - half, "ci95_high": md + half, "significant": significant,
                "verdict": if !significant { format!("no significant difference in {metric} per cycle") }
                    else if md < 0.0 { format!("{} has lower {metric} per cycle", self.name) }
                    else { format!("{} has higher {metric} per cycle", self.name) },
            }));
        }
        let total = |k: usize, i: usize| self.samples.iter().map(|s| s[4 * k + i]).sum::<f64>();
        json!({
            "b": self.name,
            "split": "even host ids: A (the active strategy); odd host ids: B",
            "cycles": n,
            "a_energy_kwh": total(0, 0), "b_energy_kwh": total(1, 0),
            "a_migrations": total(0, 3), "b_migrations": total(1, 3),
            "comparisons": comparisons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::HostState;

    #[test]
    fn a_sub_snapshot_keeps_ids_and_only_its_hosts_vms() {
        let mut hosts = HostTable::default();
        for h in 0..4 {
            hosts.push(h, HostState::Active, 1000.0, 1000.0, 0);
        }
        let snap = Snapshot {
            window: 2,
            hosts,
            vms: VmTable {
                id: vec![10, 11, 12],
                host: vec![0, 1, 3],
                mips: vec![1.0; 3],
                ram_mb: vec![1.0; 3],
                cpu_history: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                migrating: vec![false; 3],
                dirty_mbps: Vec::new(),
                extra_migration_s: Vec::new(),
            },
            ..Snapshot::default()
        };
        let odd = sub_snapshot(&snap, |h| h % 2 == 1);
        assert_eq!(odd.hosts.id, vec![1, 3]);
        assert_eq!(odd.vms.id, vec![11, 12]);
        assert_eq!(odd.vms.host, vec![0, 1]);
        assert_eq!(odd.vms.cpu_history, vec![0.3, 0.4, 0.5, 0.6]);
    }
}
