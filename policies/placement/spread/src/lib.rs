//! Spread: least loaded host first (utilization after placement). Hosts where the VM does not fit are filtered out; sleeping hosts are
//! used only when no awake host fits (unless `use_asleep` is set).
use amvm_sdk::prelude::*;

struct Policy {
    use_asleep: bool,
}

impl PlacementPolicy for Policy {
    fn describe() -> Descriptor {
        Descriptor::placement("spread", env!("CARGO_PKG_VERSION"))
            .summary("Spread: least loaded host first (utilization after placement)")
            .param(ParamSpec::flag("use_asleep", false).help("Weigh sleeping hosts like awake ones"))
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Policy { use_asleep: p.flag("use_asleep") })
    }

    fn weigh(&mut self, _: &Context, vm: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        let fits = |i: usize| {
            let cap = c.cpu_capacity(i);
            cap > 0.0 && c.cpu_used(i) + vm.cpu_mips <= cap && c.mem_used(i) + vm.ram_mb <= c.mem_capacity(i)
        };
        let awake_fits = (0..c.len()).any(|i| fits(i) && !c.asleep(i));
        (0..c.len())
            .map(|i| {
                if !fits(i) || (c.asleep(i) && awake_fits && !self.use_asleep) {
                    return None;
                }
                let util = (c.cpu_used(i) + vm.cpu_mips) / c.cpu_capacity(i);
                Some(util)
            })
            .collect()
    }
}

amvm_sdk::export!(placement: Policy);
