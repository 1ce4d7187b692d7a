//! OTF: overload time fraction threshold (Beloglazov & Buyya, TPDS 2013; OpenStack Neat's `otf`).
//! A host is overloaded when its current utilization is at or above `threshold` and the fraction
//! of time it has spent overloaded — counting the migration that would end it — reaches `otf`:
//! `(migration steps + overloaded samples) / (migration steps + samples) ≥ otf`, once the history
//! holds `limit` samples. Neat counts samples since the host started; a policy here sees the
//! utilization history the host keeps (`window` samples), so the fraction is over that window.
use amvm_sdk::prelude::*;

struct Otf {
    otf: f64,
    threshold: f32,
    limit: usize,
    lower: f32,
}

/// The OTF decision for one utilization history (oldest first, NaN = no sample).
fn overloaded(row: &[f32], threshold: f32, otf: f64, limit: usize, migration_steps: f64) -> bool {
    let Some(now) = stats::last_valid(row) else { return false };
    let valid = row.iter().filter(|v| !v.is_nan());
    let total = valid.clone().count();
    if now < threshold || total < limit {
        return false;
    }
    let over = valid.filter(|&&u| u >= threshold).count();
    (migration_steps + over as f64) / (migration_steps + total as f64) >= otf
}

impl ThresholdPolicy for Otf {
    fn describe() -> Descriptor {
        Descriptor::threshold("otf", env!("CARGO_PKG_VERSION"))
            .summary("Overload time fraction: overloaded when the share of time above threshold reaches otf")
            .param(ParamSpec::float("otf", 0.2).range(0.0, 1.0).help("Allowed fraction of time overloaded"))
            .param(
                ParamSpec::float("threshold", 0.8)
                    .range(0.0, 2.0)
                    .help("Utilization at or above which a sample counts as overloaded"),
            )
            .param(ParamSpec::integer("limit", 10).range(1.0, 10_000.0).help("Samples needed before deciding"))
            .param(amvm_sdk::rules::lower_param())
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Otf {
            otf: p.float("otf"),
            threshold: p.float("threshold") as f32,
            limit: p.integer("limit").max(1) as usize,
            lower: p.float("lower") as f32,
        })
    }

    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass> {
        let (otf, threshold, limit) = (self.otf, self.threshold, self.limit);
        let interval = f64::from(ctx.interval_s.max(f32::MIN_POSITIVE));
        hosts.classify_each(self.lower, |i, row| {
            let steps = f64::from(hosts.max_migration_s(i)) / interval;
            overloaded(row, threshold, otf, limit, steps)
        })
    }
}

amvm_sdk::export!(threshold: Otf);
