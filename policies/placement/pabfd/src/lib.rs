//! PABFD: power-aware best fit decreasing (Beloglazov & Buyya, CCPE 2012). The weight of a host
//! is the increase of its power draw if the VM were placed on it (SPECpower curve, linear between
//! the 10 % points); hosts where the VM does not fit are filtered out. The host side sorts VMs by
//! decreasing utilization and never places onto a host the threshold policy calls overloaded.
use amvm_sdk::prelude::*;

struct Pabfd {
    wake_penalty_w: f32,
}

impl PlacementPolicy for Pabfd {
    fn describe() -> Descriptor {
        Descriptor::placement("pabfd", env!("CARGO_PKG_VERSION"))
            .summary("Power-aware best fit decreasing: least power increase wins")
            .param(ParamSpec::float("wake_penalty_w", 0.0).range(0.0, 10_000.0).help(
                "Watts added to the weight of a sleeping host (0: as Beloglazov & Buyya, who \
                 compare only the dynamic power increase)",
            ))
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Pabfd { wake_penalty_w: p.float("wake_penalty_w") as f32 })
    }

    fn weigh(&mut self, ctx: &Context, vm: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        (0..c.len())
            .map(|i| {
                let cap = c.cpu_capacity(i);
                if cap <= 0.0 || c.mem_used(i) + vm.ram_mb > c.mem_capacity(i) {
                    return None;
                }
                let before = ctx.power(c.power_model(i), c.cpu_used(i) / cap)?;
                let after = ctx.power(c.power_model(i), (c.cpu_used(i) + vm.cpu_mips) / cap)?;
                let penalty = if c.asleep(i) { self.wake_penalty_w } else { 0.0 };
                Some(after - before + penalty)
            })
            .collect()
    }
}

amvm_sdk::export!(placement: Pabfd);
