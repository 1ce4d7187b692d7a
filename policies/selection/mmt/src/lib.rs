//! MMT: minimum migration time (Beloglazov & Buyya, CCPE 2012). The VM with the least memory
//! migrates first (ties: the earlier VM).
use amvm_sdk::prelude::*;

struct Mmt;

impl SelectionPolicy for Mmt {
    fn describe() -> Descriptor {
        Descriptor::selection("mmt", env!("CARGO_PKG_VERSION")).summary("Minimum migration time: least memory first")
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Mmt)
    }

    fn select(&mut self, _: &Context, _: &Hosts, vms: &Vms) -> Vec<usize> {
        let mut order: Vec<usize> = (0..vms.len()).collect();
        order.sort_by(|&a, &b| vms.ram_mb(a).total_cmp(&vms.ram_mb(b)));
        order
    }
}

amvm_sdk::export!(selection: Mmt);
