//! The overload rules of Beloglazov & Buyya's threshold family, shared by the built-in THR,
//! MAD, IQR, LR and LRR policies and available to policy authors who vary them.

use crate::describe::{Descriptor, ParamSpec, Params};
use crate::stats;
use crate::views::{Context, HostClass, Hosts};

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
        let (safety, n, fallback) = (self.safety, self.samples, self.fallback);
        let history = &mut self.scratch;
        let interval = f64::from(ctx.interval_s.max(f32::MIN_POSITIVE));
        hosts.classify_each(self.lower, |i, row| {
            let Some(now) = stats::last_valid(row) else { return false };
            stats::valid_into(row, history);
            if history.len() < n {
                return now > fallback;
            }
            let Some((a, b)) = fit(&history[history.len() - n..]) else { return now > fallback };
            let steps = (f64::from(hosts.max_migration_s(i)) / interval).ceil();
            safety * (a + b * (n as f64 + steps)) >= 1.0
        })
    }
}
