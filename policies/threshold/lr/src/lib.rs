//! LR: predictive threshold by local regression (least squares over the last samples) (Beloglazov & Buyya, CCPE 2012). Fits the last `samples`
//! utilization samples at x = 1..=n and predicts at x = n + ceil(longest VM migration time /
//! interval); the host is overloaded when safety × prediction ≥ 1. With fewer samples it falls
//! back to a static threshold.
use amvm_sdk::prelude::*;
use amvm_sdk::rules::Predictive;

struct Policy(Predictive);

impl ThresholdPolicy for Policy {
    fn describe() -> Descriptor {
        let d = Descriptor::threshold("lr", env!("CARGO_PKG_VERSION"))
            .summary("Predictive threshold: overloaded when safety x predicted utilization >= 1");
        Predictive::declare(d)
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Policy(Predictive::configure(p)))
    }

    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass> {
        self.0.classify(ctx, hosts, stats::linear_fit)
    }
}

impl BoundedThresholdPolicy for Policy {
    fn headroom(&mut self, ctx: &Context, hosts: &Hosts) -> Headroom {
        self.0.headroom(ctx, hosts)
    }

    fn vm_load(&mut self, ctx: &Context, vms: &Vms) -> VmLoads {
        self.0.vm_load(ctx, vms)
    }
}

amvm_sdk::export!(bounded_threshold: Policy);
