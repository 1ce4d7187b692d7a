//! MC: maximum correlation (Beloglazov & Buyya, CCPE 2012). The VM whose CPU utilization is
//! best explained by the others' (highest R² of a multiple linear regression on the other VMs'
//! histories) migrates first: correlated VMs peak together. When there is too little history
//! for the regression it falls back to minimum migration time.
use amvm_sdk::prelude::*;

struct Mc;

fn mmt_first(vms: &Vms) -> Vec<usize> {
    (0..vms.len()).min_by(|&a, &b| vms.ram_mb(a).total_cmp(&vms.ram_mb(b))).into_iter().collect()
}

impl SelectionPolicy for Mc {
    fn describe() -> Descriptor {
        Descriptor::selection("mc", env!("CARGO_PKG_VERSION"))
            .summary("Maximum correlation: the VM most correlated with the others first")
    }

    fn configure(_: &Params) -> Result<Self, String> {
        Ok(Mc)
    }

    fn select(&mut self, _: &Context, _: &Hosts, vms: &Vms) -> Vec<usize> {
        let n = vms.len();
        if n == 0 {
            return Vec::new();
        }
        // The newest m samples of every VM, m = the shortest valid history.
        let rows: Vec<Vec<f64>> = (0..n).map(|v| stats::valid(vms.cpu(v))).collect();
        let m = rows.iter().map(Vec::len).min().unwrap_or(0);
        let rows: Vec<&[f64]> = rows.iter().map(|r| &r[r.len() - m..]).collect();
        let Some(r2) = stats::r_squared_each(&rows) else {
            return mmt_first(vms);
        };
        let mut best: Option<(usize, f64)> = None;
        for (i, &r) in r2.iter().enumerate() {
            if best.is_none_or(|(_, b)| r > b) {
                best = Some((i, r));
            }
        }
        best.map(|(i, _)| i).into_iter().collect()
    }
}

amvm_sdk::export!(selection: Mc);
