//! IQR: adaptive threshold from the interquartile range of the utilization history (Beloglazov &
//! Buyya, CCPE 2012): upper = 1 − safety × IQR(history); overloaded when the current utilization
//! exceeds it. With fewer than `min_history` samples it falls back to a static threshold.
use amvm_sdk::prelude::*;
use amvm_sdk::rules::Adaptive;

struct Policy(Adaptive);

impl ThresholdPolicy for Policy {
    fn describe() -> Descriptor {
        let d = Descriptor::threshold("iqr", env!("CARGO_PKG_VERSION"))
            .summary("Adaptive threshold: upper = 1 - safety x IQR of the utilization history");
        Adaptive::declare(d, 1.5, "IQR")
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Policy(Adaptive::configure(p)))
    }

    fn classify(&mut self, _: &Context, hosts: &Hosts) -> Vec<HostClass> {
        self.0.classify(hosts, stats::iqr)
    }
}

amvm_sdk::export!(threshold: Policy);
