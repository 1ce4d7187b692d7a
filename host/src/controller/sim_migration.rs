//! How a migration of the simulated world progresses, phase by phase, for the dashboard and the
//! `migration` events, in the mode the plan chose for it:
//! - hybrid (the paper's section 4): one full pre-copy round with dirty tracking, stop-copy of
//!   the vCPU state and the dirty bitmap, then demand requests and an active push of the pages
//!   dirtied during the round;
//! - pre-copy: rounds until the rest fits the downtime target (the paper's geometric series,
//!   `amvm_model::predict`), then stop-copy of the last round;
//! - post-copy: stop-copy of the vCPU state at once, then all of the RAM on demand and by push.
//!
//! The model is fixed when the migration starts from the world's own numbers (the VM's RAM, the
//! destination's migration bandwidth, the VM's dirty rate) and stretched to end when the world's
//! migration ends, so the dashboard shows the migration the simulator accounts. Its progress is
//! a monotone function of world time: bytes sent never run backwards, phases only move forward.

use super::world::Progress;
use amvm_model::{Mode, Params};
/// vCPU and device state sent during stop-copy, besides the dirty bitmap (bytes).
pub const CPU_STATE_BYTES: f64 = 2.0 * 1_048_576.0;
/// Pause and resume of the vCPUs around stop-copy (s).
pub const PAUSE_S: f64 = 0.05;
const PAGE: f64 = 4096.0;

/// One migration's plan of progress (world seconds from `start`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigrationModel {
    /// World time it started.
    pub start: f64,
    pub mode: Mode,
    pub ram_b: f64,
    pub bandwidth_bps: f64,
    pub dirty_bps: f64,
    /// Durations of the copy before the pause (the full round, or all pre-copy rounds; none
    /// for post-copy), of stop-copy and of the push.
    pub full_s: f64,
    pub stop_s: f64,
    pub push_s: f64,
    /// Bytes sent before the pause, during stop-copy (state, bitmap, pre-copy's last round)
    /// and by the push (pages dirtied in the full round; all of the RAM for post-copy).
    pub full_b: f64,
    pub state_b: f64,
    pub dirty_b: f64,
}

impl MigrationModel {
    /// A VM of `ram_mb` dirtying `dirty_mb_s` moving over `bandwidth_mb_s` in `mode`, from
    /// `start`.
    pub fn new(start: f64, mode: Mode, ram_mb: f64, bandwidth_mb_s: f64, dirty_mb_s: f64) -> MigrationModel {
        let ram_b = ram_mb.max(0.0) * 1_048_576.0;
        let bw = (bandwidth_mb_s * 1_048_576.0).max(1.0);
        let dirty_bps = dirty_mb_s.max(0.0) * 1_048_576.0;
        let bitmap_b = (ram_b / PAGE / 8.0).ceil();
        let m = MigrationModel {
            start,
            mode,
            ram_b,
            bandwidth_bps: bw,
            dirty_bps,
            full_s: 0.0,
            stop_s: 0.0,
            push_s: 0.0,
            full_b: 0.0,
            state_b: 0.0,
            dirty_b: 0.0,
        };
        match mode {
            Mode::Hybrid => {
                let full_s = ram_b / bw;
                let state_b = CPU_STATE_BYTES + bitmap_b;
                let dirty_b = (dirty_bps * full_s).min(ram_b);
                MigrationModel {
                    full_s,
                    full_b: ram_b,
                    stop_s: state_b / bw + PAUSE_S,
                    state_b,
                    push_s: dirty_b / bw,
                    dirty_b,
                    ..m
                }
            }
            Mode::Post => MigrationModel {
                stop_s: CPU_STATE_BYTES / bw + PAUSE_S,
                state_b: CPU_STATE_BYTES,
                push_s: ram_b / bw,
                dirty_b: ram_b,
                ..m
            },
            Mode::Pre => {
                let mut params = Params::from_link(ram_b, bw, dirty_bps);
                params.w_vcpu = CPU_STATE_BYTES + bitmap_b;
                params.epsilon = PAUSE_S;
                let p = amvm_model::predict(Mode::Pre, &params);
                // The pause sends the last round and the state: t_down covers both.
                let state_b = ((p.t_down - PAUSE_S).max(0.0) * bw).min(p.v_mig);
                let full_b = (p.v_mig - state_b).max(0.0);
                MigrationModel { full_s: full_b / bw, full_b, stop_s: p.t_down, state_b, ..m }
            }
        }
    }

    /// The same phases and bytes, each phase's duration scaled so that the whole takes
    /// `total_s` (the world's own duration of this migration).
    pub fn stretched_to(self, total_s: f64) -> MigrationModel {
        let own = self.total_s();
        if !(total_s.is_finite() && total_s > 0.0 && own > 0.0) {
            return self;
        }
        let k = total_s / own;
        MigrationModel { full_s: self.full_s * k, stop_s: self.stop_s * k, push_s: self.push_s * k, ..self }
    }

    pub fn total_s(&self) -> f64 {
        self.full_s + self.stop_s + self.push_s
    }

    pub fn total_bytes(&self) -> f64 {
        self.full_b + self.state_b + self.dirty_b
    }

    /// Pre-copy alone would never converge: the VM dirties pages at least as fast as they go.
    pub fn precopy_nonconvergent(&self) -> bool {
        self.dirty_bps >= self.bandwidth_bps
    }

    /// Pages the VM will ask for on demand: those it touches among the pages still missing.
    fn demand_pages(&self) -> f64 {
        self.dirty_b / PAGE
    }

    /// Demand requests expected over the whole push: the VM touches dirtied pages at the dirty
    /// rate while the share still missing falls linearly to zero.
    fn faults_total(&self) -> f64 {
        (self.dirty_bps / PAGE * self.push_s / 2.0).min(self.demand_pages())
    }

    /// Phase and bytes sent at world time `t`.
    pub fn at(&self, t: f64) -> (&'static str, f64, f64) {
        let e = (t - self.start).max(0.0);
        let (full, stop) = (self.full_s, self.full_s + self.stop_s);
        if e < full {
            ("full-round", self.full_b * e / full, 0.0)
        } else if e < stop {
            ("stop-copy", self.full_b + self.state_b * (e - full) / self.stop_s.max(1e-9), 0.0)
        } else if e < self.total_s() && self.push_s > 0.0 {
            let x = ((e - stop) / self.push_s).clamp(0.0, 1.0);
            ("demand-push", self.full_b + self.state_b + self.dirty_b * x, self.faults_total() * (x - x * x / 2.0))
        } else {
            ("done", self.total_bytes(), self.faults_total() / 2.0)
        }
    }

    /// The progress record at world time `t`.
    pub fn progress(&self, action_id: i64, (vm, from, to): (u32, u32, u32), t: f64) -> Progress {
        let (phase, sent, faults) = self.at(t);
        let total = self.total_bytes();
        let sent = sent.min(total);
        Progress {
            action_id,
            vm,
            from,
            to,
            phase: phase.into(),
            bytes_total: total,
            bytes_sent: sent,
            bytes_remaining: (total - sent).max(0.0),
            elapsed_s: (t - self.start).clamp(0.0, self.total_s()),
            expected_s: self.total_s(),
            mode: self.mode.name().into(),
            dirty_rate_bps: self.dirty_bps,
            bandwidth_bps: self.bandwidth_bps,
            precopy_nonconvergent: self.precopy_nonconvergent(),
            downtime_s: self.stop_s,
            page_faults: faults.round() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_monotone_and_walks_the_phases_in_order() {
        let m = MigrationModel::new(1000.0, Mode::Hybrid, 1740.0, 62.5, 62.6);
        let order = ["full-round", "stop-copy", "demand-push", "done"];
        let (mut last_sent, mut last_phase, mut last_faults) = (-1.0, 0, 0.0);
        let mut seen = [false; 4];
        let steps = 20_000;
        for i in 0..=steps {
            let t = 1000.0 + m.total_s() * 1.1 * f64::from(i) / f64::from(steps);
            let (phase, sent, faults) = m.at(t);
            let k = order.iter().position(|p| *p == phase).unwrap();
            assert!(k >= last_phase, "phase went back at {t}");
            assert!(sent >= last_sent, "bytes went back at {t}");
            assert!(faults >= last_faults);
            (last_sent, last_phase, last_faults) = (sent, k, faults);
            seen[k] = true;
        }
        assert_eq!(seen, [true; 4]);
        assert!((last_sent - m.total_bytes()).abs() < 1.0);
        assert!(m.precopy_nonconvergent(), "a busy 1.7 GB VM outruns half a gigabit");
        assert!(!MigrationModel::new(0.0, Mode::Hybrid, 613.0, 62.5, 7.4).precopy_nonconvergent());
    }

    #[test]
    fn an_idle_vm_has_nothing_to_push() {
        let m = MigrationModel::new(0.0, Mode::Hybrid, 1024.0, 62.5, 0.0);
        assert_eq!(m.dirty_b, 0.0);
        assert_eq!(m.at(m.full_s + m.stop_s + 0.001).0, "done");
        let p = m.progress(7, (1, 2, 3), 1e9);
        assert_eq!((p.phase.as_str(), p.bytes_remaining, p.page_faults), ("done", 0.0, 0));
    }

    #[test]
    fn each_mode_walks_its_own_phases_and_reports_itself() {
        let walk = |m: &MigrationModel| {
            let mut seen = Vec::new();
            let mut last = -1.0;
            for i in 0..=10_000 {
                let (phase, sent, _) = m.at(m.start + m.total_s() * 1.01 * f64::from(i) / 10_000.0);
                assert!(sent >= last, "{:?}: bytes went back", m.mode);
                last = sent;
                if seen.last() != Some(&phase) {
                    seen.push(phase);
                }
            }
            assert!((last - m.total_bytes()).abs() < 1.0, "{:?} ends with everything sent", m.mode);
            seen
        };
        let pre = MigrationModel::new(0.0, Mode::Pre, 1024.0, 62.5, 12.3);
        let post = MigrationModel::new(0.0, Mode::Post, 1024.0, 62.5, 12.3);
        let hybrid = MigrationModel::new(0.0, Mode::Hybrid, 1024.0, 62.5, 12.3);
        assert_eq!(walk(&pre), ["full-round", "stop-copy", "done"]);
        assert_eq!(walk(&post), ["stop-copy", "demand-push", "done"]);
        assert_eq!(walk(&hybrid), ["full-round", "stop-copy", "demand-push", "done"]);
        // Pre-copy resends what the rounds dirtied and pauses longer than the others; post-copy
        // sends the RAM once and faults on it.
        assert!(pre.total_bytes() > pre.ram_b && pre.stop_s > hybrid.stop_s);
        assert!((post.total_bytes() - post.ram_b - CPU_STATE_BYTES).abs() < 1.0);
        assert!(post.progress(1, (1, 2, 3), 1e9).page_faults > hybrid.progress(1, (1, 2, 3), 1e9).page_faults);
        assert_eq!(pre.progress(1, (1, 2, 3), 0.0).mode, "pre");
        assert_eq!(post.progress(1, (1, 2, 3), 0.0).mode, "post");
    }

    #[test]
    fn stretched_to_the_world_s_duration_it_ends_with_the_world_s_migration() {
        let m = MigrationModel::new(100.0, Mode::Hybrid, 1024.0, 62.5, 12.3);
        let s = m.stretched_to(m.total_s() * 1.5);
        assert!((s.total_s() - m.total_s() * 1.5).abs() < 1e-9);
        assert_eq!((s.total_bytes(), s.dirty_bps, s.bandwidth_bps), (m.total_bytes(), m.dirty_bps, m.bandwidth_bps));
        // Still running where the unstretched model is done; everything sent at the new end.
        assert_ne!(s.at(100.0 + m.total_s() + 0.01).0, "done");
        let end = s.at(100.0 + s.total_s() + 1e-6);
        assert_eq!(end.0, "done");
        assert!((end.1 - m.total_bytes()).abs() < 1.0);
        assert_eq!(m.stretched_to(0.0), m, "no duration: unchanged");
    }
}
