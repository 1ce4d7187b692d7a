//! MU: minimum utilization (Beloglazov & Buyya, CCPE 2012). The VM using the smallest fraction
//! of its CPU migrates first (ties: the earlier VM).
use amvm_sdk::prelude::*;

struct Mu;

impl SelectionPolicy for Mu {
    fn describe() -> Descriptor {
        Descriptor::selection("mu", env!("CARGO_PKG_VERSION"))
            .summary("Minimum utilization: least CPU-utilized VM first")
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Mu)
    }

    fn select(&mut self, _: &Context, _: &Hosts, vms: &Vms) -> Vec<usize> {
        let mut order: Vec<usize> = (0..vms.len()).collect();
        order.sort_by(|&a, &b| vms.cpu_now(a).total_cmp(&vms.cpu_now(b)));
        order
    }
}

amvm_sdk::export!(selection: Mu);
