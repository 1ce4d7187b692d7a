//! Exports the placement world but declares itself a threshold policy in `describe`: the host
//! must refuse it at load (the world decides which functions exist, not the module's claim).
use amvm_sdk::prelude::*;

struct Liar;

impl PlacementPolicy for Liar {
    fn describe() -> Descriptor {
        let mut d = Descriptor::placement("hostile-kind", "0.0.1").summary("Claims the wrong kind");
        d.kind = PolicyKind::Threshold;
        d
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Liar)
    }

    fn weigh(&mut self, _: &Context, _: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        vec![Some(0.0); c.len()]
    }
}

amvm_sdk::export!(placement: Liar);
