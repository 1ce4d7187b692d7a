//! THR: static utilization threshold (Beloglazov & Buyya, CCPE 2012). A host is overloaded when
//! its current utilization of any monitored resource exceeds `upper`.
use amvm_sdk::prelude::*;

struct Thr {
    upper: f32,
    lower: f32,
}

impl ThresholdPolicy for Thr {
    fn describe() -> Descriptor {
        Descriptor::threshold("thr", env!("CARGO_PKG_VERSION"))
            .summary("Static threshold: overloaded when current utilization > upper")
            .param(ParamSpec::float("upper", 0.8).range(0.0, 1.0).help("Overload threshold (fraction of capacity)"))
            .param(amvm_sdk::rules::lower_param())
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Thr { upper: p.float("upper") as f32, lower: p.float("lower") as f32 })
    }

    fn classify(&mut self, _: &Context, hosts: &Hosts) -> Vec<HostClass> {
        let upper = self.upper;
        hosts.classify_each(self.lower, |_, row| stats::last_valid(row).is_some_and(|u| u > upper))
    }
}

amvm_sdk::export!(threshold: Thr);
