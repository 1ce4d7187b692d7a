//! The overload rules of Beloglazov & Buyya's threshold family, shared by the built-in THR,
//! MAD, IQR, LR and LRR policies and available to policy authors who vary them.

use crate::describe::{Descriptor, ParamSpec, Params};
use crate::stats;
use crate::views::{Context, Headroom, HostClass, Hosts, VmLoads, Vms};

/// The underload parameter every threshold policy declares.
pub fn lower_param() -> ParamSpec {
    ParamSpec::float("lower", 0.3).range(0.0, 1.0).help(
        "Underload threshold (paper 3.3): hosts below it are evacuated, least utilized first; \
         1.0 tries every non-overloaded host, as Beloglazov & Buyya (the built-in strategies do)",
    )
}

fn fallback_param() -> ParamSpec {
    ParamSpec::float("fallback", 0.7).range(0.0, 1.0).help("Static threshold used while the history is shorter")
}

/// Adaptive threshold (MAD, IQR): `upper = 1 − safety × spread(history)`; overloaded when the
/// current utilization exceeds it. Falls back to a static threshold while the history has fewer
/// than `min_history` samples.
#[derive(Debug, Clone)]
pub struct Adaptive {
    pub safety: f64,
    pub min_history: usize,
    pub fallback: f32,
    pub lower: f32,
    scratch: Vec<f64>,
}

impl Adaptive {
    /// Declares `safety` (with its default), `min_history`, `fallback` and `lower` on `d`.
    pub fn declare(d: Descriptor, default_safety: f64, spread: &str) -> Descriptor {
        d.param(
            ParamSpec::float("safety", default_safety)
                .range(0.0, 100.0)
                .help(&format!("Safety parameter s: upper = 1 - s x {spread}")),
        )
        .param(
            ParamSpec::integer("min_history", 12)
                .range(3.0, 1000.0)
                .help("Samples needed before the adaptive rule applies"),
        )
        .param(fallback_param())
        .param(lower_param())
    }

    pub fn configure(p: &Params) -> Self {
        Adaptive {
            safety: p.float("safety"),
            min_history: p.integer("min_history").max(3) as usize,
            fallback: p.float("fallback") as f32,
            lower: p.float("lower") as f32,
            scratch: Vec::new(),
        }
    }

    /// Classifies every host with `spread` (e.g. [`stats::mad`], [`stats::iqr`]).
    pub fn classify(&mut self, hosts: &Hosts, spread: fn(&[f64]) -> f64) -> Vec<HostClass> {
        let (safety, min_history, fallback) = (self.safety, self.min_history, self.fallback);
        let history = &mut self.scratch;
        hosts.classify_each(self.lower, |_, row| {
            let Some(now) = stats::last_valid(row) else { return false };
            stats::valid_into(row, history);
            let upper = if history.len() >= min_history { 1.0 - safety * spread(history) } else { f64::from(fallback) };
            f64::from(now) > upper
        })
    }
}

/// Predictive threshold (LR, LRR): fits the newest `samples` utilization samples at
/// `x = 1..=n` and predicts at `x = n + ceil(longest VM migration time / interval)`; overloaded
/// when `safety × prediction ≥ 1`. Falls back to a static threshold while the history is
/// shorter or the fit fails.
#[derive(Debug, Clone)]
pub struct Predictive {
    pub safety: f64,
    pub samples: usize,
    pub fallback: f32,
    pub lower: f32,
    scratch: Vec<f64>,
}

impl Predictive {
    /// Declares `safety`, `samples`, `fallback` and `lower` on `d`.
    pub fn declare(d: Descriptor) -> Descriptor {
        d.param(ParamSpec::float("safety", 1.2).range(0.0, 100.0).help("Safety parameter s"))
            .param(ParamSpec::integer("samples", 10).range(3.0, 1000.0).help("Newest samples the regression fits"))
            .param(fallback_param())
            .param(lower_param())
    }

    pub fn configure(p: &Params) -> Self {
        Predictive {
            safety: p.float("safety"),
            samples: p.integer("samples").max(3) as usize,
            fallback: p.float("fallback") as f32,
            lower: p.float("lower") as f32,
            scratch: Vec::new(),
        }
    }

    /// Classifies every host with `fit` (e.g. [`stats::linear_fit`], [`stats::robust_linear_fit`]).
    pub fn classify(&mut self, ctx: &Context, hosts: &Hosts, fit: fn(&[f64]) -> Option<(f64, f64)>) -> Vec<HostClass> {
        let mut history = std::mem::take(&mut self.scratch);
        let classes = hosts.classify_each(self.lower, |i, row| self.overloaded(ctx, hosts, i, row, fit, &mut history));
        self.scratch = history;
        classes
    }

    /// The rule on one resource's history `row` of host `i`.
    fn overloaded(
        &self,
        ctx: &Context,
        hosts: &Hosts,
        i: usize,
        row: &[f32],
        fit: fn(&[f64]) -> Option<(f64, f64)>,
        history: &mut Vec<f64>,
    ) -> bool {
        let (safety, n, fallback) = (self.safety, self.samples, self.fallback);
        let interval = f64::from(ctx.interval_s.max(f32::MIN_POSITIVE));
        let Some(now) = stats::last_valid(row) else { return false };
        stats::valid_into(row, history);
        if history.len() < n {
            return now > fallback;
        }
        let Some((a, b)) = fit(&history[history.len() - n..]) else { return now > fallback };
        let steps = (f64::from(hosts.max_migration_s(i)) / interval).ceil();
        safety * (a + b * (n as f64 + steps)) >= 1.0
    }

    /// Weights of the newest `samples` values in the least-squares prediction one interval
    /// ahead (`x = n + 1` over `x = 1..=n`): the prediction is `Σ c_t y_t`, linear in the history,
    /// so the prediction of a host plus a VM is the host's plus the VM's.
    fn horizon_weights(&self) -> Vec<f64> {
        let n = self.samples as f64;
        let mean = (n + 1.0) / 2.0;
        let sxx: f64 = (1..=self.samples).map(|t| (t as f64 - mean).powi(2)).sum();
        (1..=self.samples).map(|t| 1.0 / n + (n + 1.0 - mean) * (t as f64 - mean) / sxx).collect()
    }

    /// Headroom for [`BoundedThresholdPolicy`](crate::BoundedThresholdPolicy) with the plain
    /// least-squares fit (LR): the load unit is predicted CPU demand in MIPS. One VM with a full
    /// history (its newest `samples` samples present) added to host `i` overloads it when
    /// `safety × (P_host + mips / capacity × P_vm) ≥ 1`, i.e. when `mips × P_vm ≥ capacity ×
    /// (1 / safety − P_host)`, a missing host sample counting as zero (the VM's fills it).
    /// Bounds are given for hosts predicting one interval ahead (their longest migration is at
    /// most the interval), for VMs whose migration is no longer than the interval (so the
    /// horizon stays), and without a memory history (an added VM shifts it by its own RAM); the
    /// allowance covers f32 rounding of the combined history many times over. With a window
    /// shorter than `samples` the rule is the static fallback on the newest sample, bounded the
    /// same way for VMs of any migration time.
    pub fn headroom(&mut self, ctx: &Context, hosts: &Hosts) -> Headroom {
        let len = hosts.len();
        let w = hosts.window as usize;
        let n = self.samples;
        let mut out = Headroom::unknown(len);
        if !hosts.mem.is_empty() || self.safety <= 0.0 || w == 0 {
            return out;
        }
        let interval = f64::from(ctx.interval_s.max(f32::MIN_POSITIVE));
        let weights = self.horizon_weights();
        let mut history = std::mem::take(&mut self.scratch);
        for i in 0..len {
            let cap = f64::from(hosts.cpu_capacity(i));
            let row = hosts.cpu(i);
            if !(cap > 0.0 && cap.is_finite()) || row.len() != w {
                continue;
            }
            // The network history does not change with an added VM: overloaded there, the host
            // refuses every VM.
            if let Some(net) = hosts.net(i) {
                if self.overloaded(ctx, hosts, i, net, stats::linear_fit, &mut history) {
                    // A longer migration would move the network prediction's horizon.
                    out.accepts[i] = f32::NEG_INFINITY;
                    out.refuses[i] = f32::NEG_INFINITY;
                    out.migration_s[i] = hosts.max_migration_s(i);
                    continue;
                }
            }
            let cell = |t: usize| if row[t].is_nan() { 0.0 } else { f64::from(row[t]) };
            let (level, spread, limit, migration_s) = if w < n {
                let h = cell(w - 1);
                (h, h.abs(), f64::from(self.fallback), f32::INFINITY)
            } else {
                let steps = (f64::from(hosts.max_migration_s(i)) / interval).ceil();
                if steps != 1.0 {
                    continue;
                }
                let tail = w - n;
                let p: f64 = weights.iter().enumerate().map(|(t, c)| c * cell(tail + t)).sum();
                let a: f64 = weights.iter().enumerate().map(|(t, c)| (c * cell(tail + t)).abs()).sum();
                // The combined longest migration stays within one interval.
                (p, a, 1.0 / self.safety, ctx.interval_s)
            };
            let room = cap * (limit - level);
            let allowance = 1e-5 * (cap * spread + room.abs() + cap * 1e-3);
            if room.is_finite() && allowance.is_finite() {
                out.accepts[i] = (room - allowance) as f32;
                out.refuses[i] = (room + allowance) as f32;
                out.migration_s[i] = migration_s;
            }
        }
        self.scratch = history;
        out
    }

    /// VM loads matching [`Self::headroom`]: `mips × P_vm`, the VM's predicted utilization one
    /// interval ahead (or its newest sample, with a window shorter than `samples`), with its
    /// rounding allowance; NaN for a VM missing one of the samples used.
    pub fn vm_load(&mut self, _: &Context, vms: &Vms) -> VmLoads {
        let len = vms.len();
        let w = vms.window as usize;
        let n = self.samples;
        let weights = self.horizon_weights();
        let mut out = VmLoads { low: vec![f32::NAN; len], high: vec![f32::NAN; len] };
        for v in 0..len {
            let row = vms.cpu(v);
            let mips = f64::from(vms.mips(v));
            if row.len() != w || w == 0 || !(mips >= 0.0 && mips.is_finite()) {
                continue;
            }
            let used = if w < n { &row[w - 1..] } else { &row[w - n..] };
            if used.iter().any(|x| !x.is_finite()) {
                continue;
            }
            let (p, a) = if w < n {
                let u = f64::from(used[0]);
                (u, u.abs())
            } else {
                let p: f64 = weights.iter().zip(used).map(|(c, &u)| c * f64::from(u)).sum();
                let a: f64 = weights.iter().zip(used).map(|(c, &u)| (c * f64::from(u)).abs()).sum();
                (p, a)
            };
            let load = mips * p;
            let allowance = 1e-5 * (mips * a + load.abs() + mips * 1e-3);
            out.low[v] = (load - allowance) as f32;
            out.high[v] = (load + allowance) as f32;
        }
        out
    }
}
