//! The paper's analytic model (section 4.3, equations 1–7) and the classic pre-copy
//! geometric series, used to predict a migration and to check measurements against it. The
//! equations live in the `amvm-model` crate (shared with the host and the built-in `model`
//! policy); what is here ties them to the memory engine's workloads.
//!
//! Symbols (Table 3): `V_mem` memory, `V_dirty` memory dirtied during the full round, `V_mig`
//! data transferred, `T_down` downtime, `T_mig` total time, `T_resume` time from resume to
//! all pages present, `B` bandwidth, `D` dirty rate, `R` memory access rate, `F` page faults,
//! `W_vcpu` vCPU state size, `λ` network delay, `ε` resume overhead.

pub use amvm_model::{choose_mode, predict, predict_pre_with, Choice, Params, Prediction};

use crate::memory::workload::{table_pages, WorkloadSpec};
use crate::memory::PAGE_SIZE;

/// Expected `D` for a workload: unique bytes dirtied per second over a window of `t` seconds
/// at a measured write rate (pages/s), from the hot-set / scatter mix of the workload.
pub fn workload_dirty_rate(spec: &WorkloadSpec, mem_bytes: u64, write_rate: f64, t: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    let pages = (mem_bytes / PAGE_SIZE as u64) as f64;
    let table = table_pages(pages as usize) as f64;
    let data = (pages - table).max(1.0);
    let hot = (data * spec.hot_fraction).max(1.0);
    let (hot_w, cold_w) = (write_rate * t * spec.hot_prob, write_rate * t * (1.0 - spec.hot_prob));
    let hot_pages = if spec.sequential { hot_w.min(hot) } else { hot * (1.0 - (-hot_w / hot).exp()) };
    let cold_pages = data * (1.0 - (-cold_w / data).exp());
    let table_touched = (hot / 512.0).ceil().min(table) + table * (1.0 - (-cold_w / table.max(1.0)).exp());
    let unique = (hot_pages + cold_pages * (1.0 - hot / data) + table_touched).min(pages);
    unique * PAGE_SIZE as f64 / t
}
