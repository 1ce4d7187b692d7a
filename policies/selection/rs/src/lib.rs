//! RS: random selection (Beloglazov & Buyya, CCPE 2012), seeded: the order is a uniform random
//! permutation drawn from the cycle's seed, so a run is reproducible.
use amvm_sdk::prelude::*;

struct Rs {
    rng: Option<(u64, stats::SplitMix64)>,
}

impl SelectionPolicy for Rs {
    fn describe() -> Descriptor {
        Descriptor::selection("rs", env!("CARGO_PKG_VERSION")).summary("Random selection (seeded, reproducible)")
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Rs { rng: None })
    }

    fn select(&mut self, ctx: &Context, _: &Hosts, vms: &Vms) -> Vec<usize> {
        // One generator per cycle, seeded from the run's seed and the cycle number.
        let rng = match &mut self.rng {
            Some((cycle, rng)) if *cycle == ctx.cycle => rng,
            slot => {
                let seed = ctx.seed ^ ctx.cycle.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                &mut slot.insert((ctx.cycle, stats::SplitMix64::new(seed))).1
            }
        };
        let mut order: Vec<usize> = (0..vms.len()).collect();
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        order
    }
}

amvm_sdk::export!(selection: Rs);
