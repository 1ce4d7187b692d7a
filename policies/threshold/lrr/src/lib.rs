//! LRR: predictive threshold by robust local regression (tricube-weighted, one bisquare robustness iteration) (Beloglazov & Buyya, CCPE 2012). Fits the last `samples`
//! utilization samples at x = 1..=n and predicts at x = n + ceil(longest VM migration time /
//! interval); the host is overloaded when safety × prediction ≥ 1. With fewer samples it falls
//! back to a static threshold.
use amvm_sdk::prelude::*;

struct Predictive {
    safety: f64,
    samples: usize,
    fallback: f32,
    lower: f32,
    scratch: Vec<f64>,
}

impl ThresholdPolicy for Predictive {
    fn describe() -> Descriptor {
        Descriptor::threshold("lrr", env!("CARGO_PKG_VERSION"))
            .summary("Predictive threshold: overloaded when safety x predicted utilization >= 1")
            .param(ParamSpec::float("safety", 1.2).range(0.0, 100.0).help("Safety parameter s"))
            .param(ParamSpec::integer("samples", 10).range(3.0, 1000.0).help("Newest samples the regression fits"))
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
        Ok(Predictive {
            safety: p.float("safety"),
            samples: p.integer("samples").max(3) as usize,
            fallback: p.float("fallback") as f32,
            lower: p.float("lower") as f32,
            scratch: Vec::new(),
        })
    }

    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass> {
        let (safety, n, fallback) = (self.safety, self.samples, self.fallback);
        let history = &mut self.scratch;
        let interval = f64::from(ctx.interval_s.max(f32::MIN_POSITIVE));
        hosts.classify_each(self.lower, |i, row| {
            let Some(now) = stats::last_valid(row) else { return false };
            stats::valid_into(row, history);
            if history.len() < n {
                return now > fallback;
            }
            let Some((a, b)) = stats::robust_linear_fit(&history[history.len() - n..]) else {
                return now > fallback;
            };
            let steps = (f64::from(hosts.max_migration_s(i)) / interval).ceil();
            let predicted = a + b * (n as f64 + steps);
            safety * predicted >= 1.0
        })
    }
}

amvm_sdk::export!(threshold: Predictive);
