//! Example placement policy from `sdk/README.md`: prefer the awake host that keeps the most
//! CPU headroom after placement, never going above `max_util`.
use amvm_sdk::prelude::*;

struct Headroom {
    max_util: f32,
}

impl PlacementPolicy for Headroom {
    fn describe() -> Descriptor {
        Descriptor::placement("headroom", env!("CARGO_PKG_VERSION"))
            .summary("Most CPU headroom after placement; sleeping hosts last")
            .param(ParamSpec::float("max_util", 0.9).range(0.1, 1.0).help("Never fill a host above this utilization"))
    }

    fn configure(params: &Params) -> Result<Self, String> {
        Ok(Headroom { max_util: params.float("max_util") as f32 })
    }

    fn weigh(&mut self, _ctx: &Context, vm: &VmDemand, hosts: &Candidates) -> Vec<Option<f32>> {
        (0..hosts.len())
            .map(|i| {
                let after = (hosts.cpu_used(i) + vm.cpu_mips) / hosts.cpu_capacity(i);
                if after > self.max_util {
                    return None; // filtered out
                }
                // Lowest weight wins: less utilization after placement is better; waking a
                // sleeping host costs a full unit.
                Some(after + if hosts.asleep(i) { 1.0 } else { 0.0 })
            })
            .collect()
    }
}

amvm_sdk::export!(placement: Headroom);
