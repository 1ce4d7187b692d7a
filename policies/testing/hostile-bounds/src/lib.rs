//! Declares a parameter whose bounds are NaN and infinite, which would switch range checks off:
//! the host must refuse the descriptor.
use amvm_sdk::prelude::*;

struct Unbounded;

impl PlacementPolicy for Unbounded {
    fn describe() -> Descriptor {
        Descriptor::placement("hostile-bounds", "0.0.1")
            .summary("Parameter bounds that are not numbers")
            .param(ParamSpec::float("x", 0.5).range(f64::NAN, f64::INFINITY).help("any value gets through"))
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Unbounded)
    }

    fn weigh(&mut self, _: &Context, _: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        vec![Some(0.0); c.len()]
    }
}

amvm_sdk::export!(placement: Unbounded);
