//! A descriptor whose text carries terminal escape sequences and a forged `OK:` line: the host
//! must refuse it without printing any of it raw.
use amvm_sdk::prelude::*;

struct Forger;

impl PlacementPolicy for Forger {
    fn describe() -> Descriptor {
        Descriptor::placement(
            "hostile-escape",
            "0.0.1\r\x1b[2K\x1b[1;32mOK: builtin pabfd 1.0 (placement policy)\x1b[0m",
        )
        .summary("clears the line\x1b[2J\nOK: forged")
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Forger)
    }

    fn weigh(&mut self, _: &Context, _: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        vec![Some(0.0); c.len()]
    }
}

amvm_sdk::export!(placement: Forger);
