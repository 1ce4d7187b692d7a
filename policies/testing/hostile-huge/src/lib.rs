//! A descriptor of of about 9 MB (an 8 MiB summary and 2,000 parameters): the host must
//! refuse it while decoding, before copying it.
use amvm_sdk::prelude::*;

struct Huge;

impl PlacementPolicy for Huge {
    fn describe() -> Descriptor {
        let mut d = Descriptor::placement("hostile-huge", "0.0.1").summary(&"x".repeat(8 << 20));
        for i in 0..2_000 {
            d = d.param(ParamSpec::float(&format!("p{i}"), 0.0).help(&"h".repeat(256)));
        }
        d
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Huge)
    }

    fn weigh(&mut self, _: &Context, _: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        vec![Some(0.0); c.len()]
    }
}

amvm_sdk::export!(placement: Huge);
