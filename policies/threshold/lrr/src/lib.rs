//! LRR: predictive threshold by robust local regression (tricube-weighted, bisquare robustness iterations) (Beloglazov & Buyya, CCPE 2012). Fits the last `samples`
//! utilization samples at x = 1..=n and predicts at x = n + ceil(longest VM migration time /
//! interval); the host is overloaded when safety × prediction ≥ 1. With fewer samples it falls
//! back to a static threshold.
use amvm_sdk::prelude::*;
use amvm_sdk::rules::Predictive;

struct Policy(Predictive);

impl ThresholdPolicy for Policy {
    fn describe() -> Descriptor {
        let d = Descriptor::threshold("lrr", env!("CARGO_PKG_VERSION"))
            .summary("Predictive threshold: overloaded when safety x predicted utilization >= 1");
        Predictive::declare(d)
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Policy(Predictive::configure(p)))
    }

    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass> {
        self.0.classify(ctx, hosts, stats::robust_linear_fit)
    }
}

amvm_sdk::export!(threshold: Policy);
