//! PABFD: power-aware best fit decreasing (Beloglazov & Buyya, CCPE 2012). The weight of a host
//! is the increase of its power draw if the VM were placed on it (SPECpower curve, linear between
//! the 10 % points); hosts where the VM does not fit are filtered out. The host side sorts VMs by
//! decreasing utilization and never places onto a host the threshold policy calls overloaded.
//!
//! Exported as `indexed-placement`: the weight of a host depends only on its own row, and
//! [`weigh_bound`](IndexedPlacementPolicy::weigh_bound) bounds it from below over a range of CPU
//! in use, so the host weighs only the hosts that can win.
use amvm_sdk::prelude::*;

struct Pabfd {
    wake_penalty_w: f32,
}

/// Power (W) at utilization `u`, in f64, as [`stats::power_at`] (clamped to 0..=1).
fn power64(curve: &[f32], u: f64) -> f64 {
    let x = u.clamp(0.0, 1.0) * 10.0;
    let lo = (x.floor() as usize).min(9);
    let frac = x - lo as f64;
    f64::from(curve[lo]) + (f64::from(curve[lo + 1]) - f64::from(curve[lo])) * frac
}

/// The least power increase `P(x + d) - P(x)` over `x` in `a..=b` (0 <= a <= b <= 1 - d): the
/// increase is linear between the curve's points and those points shifted by `-d`, so the
/// least is at an end or at one of them.
fn least_increase(curve: &[f32], a: f64, b: f64, d: f64) -> f64 {
    let f = |x: f64| power64(curve, x + d) - power64(curve, x);
    let mut best = f(a).min(f(b));
    for k in 0..=10 {
        for x in [f64::from(k) / 10.0, f64::from(k) / 10.0 - d] {
            if x > a && x < b {
                best = best.min(f(x));
            }
        }
    }
    best
}

impl PlacementPolicy for Pabfd {
    fn describe() -> Descriptor {
        Descriptor::placement("pabfd", env!("CARGO_PKG_VERSION"))
            .summary("Power-aware best fit decreasing: least power increase wins")
            .param(ParamSpec::float("wake_penalty_w", 0.0).range(0.0, 10_000.0).help(
                "Watts added to the weight of a sleeping host (0: as Beloglazov & Buyya, who \
                 compare only the dynamic power increase)",
            ))
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Pabfd { wake_penalty_w: p.float("wake_penalty_w") as f32 })
    }

    fn weigh(&mut self, ctx: &Context, vm: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        (0..c.len())
            .map(|i| {
                let cap = c.cpu_capacity(i);
                if cap <= 0.0 || c.mem_used(i) + vm.ram_mb > c.mem_capacity(i) {
                    return None;
                }
                let before = ctx.power(c.power_model(i), c.cpu_used(i) / cap)?;
                let after = ctx.power(c.power_model(i), (c.cpu_used(i) + vm.cpu_mips) / cap)?;
                let penalty = if c.asleep(i) { self.wake_penalty_w } else { 0.0 };
                Some(after - before + penalty)
            })
            .collect()
    }
}

impl IndexedPlacementPolicy for Pabfd {
    fn weigh_bound(&mut self, ctx: &Context, vm: &VmDemand, g: &HostGroups) -> Vec<Option<f32>> {
        (0..g.len())
            .map(|i| {
                let cap = g.cpu_capacity(i);
                let model = g.power_model(i) as usize;
                let curve = ctx.power_curves.get(model * 11..model * 11 + 11)?;
                if cap <= 0.0 || vm.ram_mb > g.mem_capacity(i) {
                    return None;
                }
                let (cap, d) = (f64::from(cap), f64::from(vm.cpu_mips));
                // Rows the host offers fit: cpu_used + demand <= capacity.
                let a = (f64::from(g.cpu_used_min(i)) / cap).max(0.0);
                let b = (f64::from(g.cpu_used_max(i)) / cap).min(1.0 - d / cap);
                if d.is_nan() || d < 0.0 {
                    return Some(f32::MIN);
                }
                if a > b + 1e-6 {
                    return None;
                }
                let least = least_increase(curve, a, b.max(a), d / cap);
                // `weigh` rounds in f32 (each power value within a few ulps of ~100 W): stay
                // well below what it can return.
                let peak = curve.iter().fold(0.0f32, |m, &w| m.max(w.abs()));
                let margin = 1e-3 + 1e-5 * f64::from(peak);
                let penalty = if g.asleep(i) { f64::from(self.wake_penalty_w) } else { 0.0 };
                Some((least + penalty - margin) as f32)
            })
            .collect()
    }
}

amvm_sdk::export!(indexed_placement: Pabfd);
