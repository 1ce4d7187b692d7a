//! Run metrics: energy, SLATAH, PDM, SLAV, ESV, migrations, shutdowns, host utilization, and the
//! time series behind the charts.

use serde::{Deserialize, Serialize};

/// Number of utilization histogram buckets (0.1 % resolution) used for the percentile.
const UTIL_BUCKETS: usize = 1001;

/// Everything one simulated run reports. Fractions (SLATAH, PDM, SLAV, utilization) are in
/// 0..=1, energy in kWh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub strategy: String,
    pub trace: String,
    pub trace_source: String,
    pub hosts: usize,
    pub vms: usize,
    pub energy_kwh: f64,
    pub migrations: u64,
    /// Planned migrations the world refused (VM unknown or already moving, wrong source,
    /// destination without memory): a sign of a faulty policy, 0 normally.
    pub rejected_migrations: u64,
    /// Time an active host's allocated MIPS fell short of its requested MIPS ÷ total active time.
    pub slatah: f64,
    /// MIPS·s lost to migration ÷ MIPS·s requested.
    pub pdm: f64,
    pub slav: f64,
    /// Energy × SLAV.
    pub esv: f64,
    /// Times a host became empty and was switched off.
    pub host_shutdowns: u64,
    /// Hosts with at least one VM, averaged over the cycles.
    pub mean_active_hosts: f64,
    /// CPU utilization of powered hosts, over every host and cycle.
    pub mean_host_utilization: f64,
    pub p95_host_utilization: f64,
    /// Scheduling cycles run.
    pub cycles: u64,
    /// Policy calls that failed and fell back (from the scheduler), summed over cycles.
    pub policy_failures: u64,
    pub simulated_s: f64,
    /// Wall time of the run (world and scheduler; policy compilation happens before).
    pub elapsed_ms: f64,
    /// Of `elapsed_ms`, the time spent deciding (scheduler cycles with their policy calls).
    #[serde(default)]
    pub scheduler_ms: f64,
    /// Migrations started per mode (pre, post, hybrid); one the plan gave no mode counts as
    /// pre-copy, the world's own default.
    #[serde(default)]
    pub migrations_by_mode: ModeCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
}

/// Migrations per mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeCounts {
    pub pre: u64,
    pub post: u64,
    pub hybrid: u64,
}

/// Per-step time series (one entry at t = 0 and one per scheduling step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub time_s: Vec<f64>,
    /// Hosts with at least one VM (after the step's migrations started).
    pub active_hosts: Vec<u32>,
    /// Active hosts whose allocated MIPS fell short of the requested.
    pub overloaded_hosts: Vec<u32>,
    /// Migrations started at this step.
    pub migrations: Vec<u32>,
    /// Energy used so far (kWh).
    pub energy_kwh: Vec<f64>,
}

/// Running sums the world updates as time advances.
#[derive(Debug, Clone)]
pub(crate) struct Accumulator {
    pub energy_ws: f64,
    pub host_active_s: f64,
    pub host_violation_s: f64,
    pub vm_requested_mips_s: f64,
    pub vm_migration_loss_mips_s: f64,
    pub migrations: u64,
    pub rejected: u64,
    pub shutdowns: u64,
    pub policy_failures: u64,
    pub cycles: u64,
    pub by_mode: ModeCounts,
    active_host_sum: f64,
    active_host_samples: u64,
    util_sum: f64,
    util_count: u64,
    util_hist: Vec<u64>,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            energy_ws: 0.0,
            host_active_s: 0.0,
            host_violation_s: 0.0,
            vm_requested_mips_s: 0.0,
            vm_migration_loss_mips_s: 0.0,
            migrations: 0,
            rejected: 0,
            shutdowns: 0,
            policy_failures: 0,
            cycles: 0,
            by_mode: ModeCounts::default(),
            active_host_sum: 0.0,
            active_host_samples: 0,
            util_sum: 0.0,
            util_count: 0,
            util_hist: vec![0; UTIL_BUCKETS],
        }
    }
}

impl Accumulator {
    /// Counts one started migration under its mode (none: pre-copy, the world's default).
    pub fn count_mode(&mut self, mode: Option<crate::scheduler::Mode>) {
        use crate::scheduler::Mode;
        match mode.unwrap_or(Mode::Pre) {
            Mode::Pre => self.by_mode.pre += 1,
            Mode::Post => self.by_mode.post += 1,
            Mode::Hybrid => self.by_mode.hybrid += 1,
        }
    }

    /// Records one powered host's utilization sample.
    pub fn utilization_sample(&mut self, u: f64) {
        let u = u.clamp(0.0, 1.0);
        self.util_sum += u;
        self.util_count += 1;
        let bucket = ((u * (UTIL_BUCKETS - 1) as f64).round() as usize).min(UTIL_BUCKETS - 1);
        self.util_hist[bucket] += 1;
    }

    pub fn active_hosts_sample(&mut self, n: usize) {
        self.active_host_sum += n as f64;
        self.active_host_samples += 1;
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.util_count == 0 {
            return 0.0;
        }
        let rank = (p * self.util_count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.util_hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return i as f64 / (UTIL_BUCKETS - 1) as f64;
            }
        }
        1.0
    }

    /// Final figures. `hosts`, `vms` and names are filled in by the caller.
    pub fn finish(&self) -> Figures {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let energy_kwh = self.energy_ws / 3.6e6;
        let slatah = ratio(self.host_violation_s, self.host_active_s);
        let pdm = ratio(self.vm_migration_loss_mips_s, self.vm_requested_mips_s);
        let slav = slatah * pdm;
        Figures {
            energy_kwh,
            slatah,
            pdm,
            slav,
            esv: energy_kwh * slav,
            mean_active_hosts: ratio(self.active_host_sum, self.active_host_samples as f64),
            mean_host_utilization: ratio(self.util_sum, self.util_count as f64),
            p95_host_utilization: self.percentile(0.95),
        }
    }
}

/// Derived metrics of an [`Accumulator`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Figures {
    pub energy_kwh: f64,
    pub slatah: f64,
    pub pdm: f64,
    pub slav: f64,
    pub esv: f64,
    pub mean_active_hosts: f64,
    pub mean_host_utilization: f64,
    pub p95_host_utilization: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_metrics_follow_their_definitions() {
        let mut acc =
            Accumulator { energy_ws: 7.2e6, host_active_s: 1000.0, host_violation_s: 50.0, ..Default::default() };
        acc.vm_requested_mips_s = 1e6;
        acc.vm_migration_loss_mips_s = 2e3;
        for u in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] {
            acc.utilization_sample(u);
        }
        let f = acc.finish();
        assert!((f.energy_kwh - 2.0).abs() < 1e-12);
        assert!((f.slatah - 0.05).abs() < 1e-12);
        assert!((f.pdm - 0.002).abs() < 1e-12);
        assert!((f.slav - 1e-4).abs() < 1e-15);
        assert!((f.esv - 2e-4).abs() < 1e-15);
        assert!((f.mean_host_utilization - 0.55).abs() < 1e-12);
        assert!((f.p95_host_utilization - 1.0).abs() < 1e-12);
    }
}
