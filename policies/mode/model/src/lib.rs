//! MODEL: the mechanism of each migration from the paper's analytic model (section 4.3,
//! equations 1–7; `amvm_sdk::model`): pre-copy when it is predicted to converge within the
//! downtime target, otherwise the cheaper of post-copy and hybrid-copy by predicted stall
//! (downtime + page faults × network delay) plus a tenth of the predicted total time.
//!
//! Inputs per move: the VM's memory, its measured dirty rate and the link. Where the world
//! measured no dirty rate (the simulator, an agent without libvirt's dirty-rate support), it is
//! estimated as `unmeasured-dirty-mbps` × the VM's CPU utilization.
use amvm_sdk::model::{choose_mode, Params as ModelParams};
use amvm_sdk::prelude::*;

struct Model {
    unmeasured_dirty_mbps: f64,
    downtime_s: f64,
    latency_s: f64,
    fixed: Option<Mode>,
}

const MB: f64 = 1024.0 * 1024.0;

impl Model {
    fn choose(&self, moves: &Moves, i: usize) -> Mode {
        if let Some(m) = self.fixed {
            return m;
        }
        let ram = f64::from(moves.ram_mb(i));
        let link = f64::from(moves.link_mbps(i));
        if !(ram.is_finite() && ram > 0.0 && link.is_finite() && link > 0.0) {
            // Nothing to predict from: pre-copy is the mechanism that never splits the guest.
            return Mode::Pre;
        }
        let measured = f64::from(moves.dirty_mbps(i));
        let dirty = if measured.is_finite() && measured >= 0.0 {
            measured
        } else {
            let cpu = f64::from(moves.cpu(i));
            if cpu.is_finite() {
                cpu.clamp(0.0, 1.0) * self.unmeasured_dirty_mbps
            } else {
                self.unmeasured_dirty_mbps
            }
        };
        let mut p = ModelParams::from_link(ram * MB, link * MB, dirty * MB);
        p.downtime_target = self.downtime_s;
        p.latency = self.latency_s;
        choose_mode(&p).mode
    }
}

impl MigrationModePolicy for Model {
    fn describe() -> Descriptor {
        Descriptor::migration_mode("model", env!("CARGO_PKG_VERSION"))
            .summary("The paper's model (eq. 1-7): pre-copy if it converges, else the cheaper of post and hybrid")
            .param(
                ParamSpec::float("unmeasured-dirty-mbps", 32.0)
                    .range(0.0, 100_000.0)
                    .help("Dirty rate assumed at 100 % CPU for a VM whose dirty rate was not measured (MB/s)"),
            )
            .param(
                ParamSpec::float("downtime-ms", 300.0)
                    .range(1.0, 60_000.0)
                    .help("Pre-copy downtime target: pre-copy converges when its stop-copy fits (ms)"),
            )
            .param(
                ParamSpec::float("latency-ms", 0.5)
                    .range(0.0, 1000.0)
                    .help("Network delay of one post-copy page request (ms)"),
            )
            .param(
                ParamSpec::text("fixed", "")
                    .help("pre, post or hybrid: use this mode for every move (empty: the model)"),
            )
    }

    fn configure(p: &Params) -> Result<Self, String> {
        let fixed = match p.text("fixed") {
            "" => None,
            s => Some(s.parse::<Mode>().map_err(|e| e.to_string())?),
        };
        Ok(Model {
            unmeasured_dirty_mbps: p.float("unmeasured-dirty-mbps"),
            downtime_s: p.float("downtime-ms") / 1000.0,
            latency_s: p.float("latency-ms") / 1000.0,
            fixed,
        })
    }

    fn choose_mode(&mut self, _: &Context, moves: &Moves) -> Vec<Mode> {
        (0..moves.len()).map(|i| self.choose(moves, i)).collect()
    }
}

amvm_sdk::export!(migration_mode: Model);
