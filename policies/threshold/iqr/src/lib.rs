//! IQR: adaptive threshold from the interquartile range of the utilization history (Beloglazov &
//! Buyya, CCPE 2012): upper = 1 − safety × IQR(history); overloaded when the current utilization
//! exceeds it. With fewer than `min_history` samples it falls back to a static threshold.
use amvm_sdk::prelude::*;

struct Adaptive {
    safety: f64,
    min_history: usize,
    fallback: f32,
    lower: f32,
    scratch: Vec<f64>,
}

impl ThresholdPolicy for Adaptive {
    fn describe() -> Descriptor {
        Descriptor::threshold("iqr", env!("CARGO_PKG_VERSION"))
            .summary("Adaptive threshold: upper = 1 - safety x IQR of the utilization history")
            .param(ParamSpec::float("safety", 1.5).range(0.0, 100.0).help("Safety parameter s: upper = 1 - s x IQR"))
            .param(
                ParamSpec::integer("min_history", 12)
                    .range(3.0, 1000.0)
                    .help("Samples needed before the adaptive rule applies"),
            )
            .param(
                ParamSpec::float("fallback", 0.7)
                    .range(0.0, 1.0)
                    .help("Static threshold used while the history is shorter"),
            )
            .param(ParamSpec::float("lower", 0.3).range(0.0, 1.0).help(
                "Underload threshold (paper 3.3): hosts below it are evacuated, least utilized first; \
                 1.0 tries every non-overloaded host, as Beloglazov & Buyya (the built-in strategies do)",
            ))
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Adaptive {
            safety: p.float("safety"),
            min_history: p.integer("min_history").max(3) as usize,
            fallback: p.float("fallback") as f32,
            lower: p.float("lower") as f32,
            scratch: Vec::new(),
        })
    }

    fn classify(&mut self, _: &Context, hosts: &Hosts) -> Vec<HostClass> {
        let (safety, min_history, fallback) = (self.safety, self.min_history, self.fallback);
        let history = &mut self.scratch;
        hosts.classify_each(self.lower, |_, row| {
            let Some(now) = stats::last_valid(row) else { return false };
            stats::valid_into(row, history);
            let upper =
                if history.len() >= min_history { 1.0 - safety * stats::iqr(history) } else { f64::from(fallback) };
            f64::from(now) > upper
        })
    }
}

amvm_sdk::export!(threshold: Adaptive);
