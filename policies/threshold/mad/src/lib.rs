//! MAD: adaptive threshold from the median absolute deviation of the utilization history (Beloglazov &
//! Buyya, CCPE 2012): upper = 1 − safety × MAD(history); overloaded when the current utilization
//! exceeds it. With fewer than `min_history` samples it falls back to a static threshold.
use amvm_sdk::prelude::*;
use amvm_sdk::rules::Adaptive;

struct Policy(Adaptive);

impl ThresholdPolicy for Policy {
    fn describe() -> Descriptor {
        let d = Descriptor::threshold("mad", env!("CARGO_PKG_VERSION"))
            .summary("Adaptive threshold: upper = 1 - safety x MAD of the utilization history");
        Adaptive::declare(d, 2.5, "MAD")
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Policy(Adaptive::configure(p)))
    }

    fn classify(&mut self, _: &Context, hosts: &Hosts) -> Vec<HostClass> {
        self.0.classify(hosts, stats::mad)
    }
}

amvm_sdk::export!(threshold: Policy);
