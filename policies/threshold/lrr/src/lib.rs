//! LRR: predictive threshold by robust local regression (tricube-weighted, bisquare robustness iterations) (Beloglazov & Buyya, CCPE 2012). Fits the last `samples`
//! utilization samples at x = 1..=n and predicts at x = n + ceil(longest VM migration time /
//! interval); the host is overloaded when safety × prediction ≥ 1. With fewer samples it falls
//! back to a static threshold.
use amvm_sdk::prelude::*;
use amvm_sdk::rules::Predictive;

/// The predictive rule and whether its fit is robust (`robust`, 1 by default; 0 is plain least
/// squares, as CloudSim 3.0.3's LRR computes: its robust weights are never 0, so it falls back
/// to the unweighted fit — the `lr-equals-lrr` quirk of docs/simulation.md).
struct Policy(Predictive, bool);

impl ThresholdPolicy for Policy {
    fn describe() -> Descriptor {
        let d = Descriptor::threshold("lrr", env!("CARGO_PKG_VERSION"))
            .summary("Predictive threshold: overloaded when safety x predicted utilization >= 1");
        Predictive::declare(d).param(
            ParamSpec::integer("robust", 1)
                .range(0.0, 1.0)
                .help("1: robust (bisquare) fit; 0: plain least squares, as CloudSim 3.0.3's LRR (= LR)"),
        )
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Policy(Predictive::configure(p), p.integer("robust") == 1))
    }

    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass> {
        let fit = if self.1 { stats::robust_linear_fit } else { stats::linear_fit };
        self.0.classify(ctx, hosts, fit)
    }
}

amvm_sdk::export!(threshold: Policy);
