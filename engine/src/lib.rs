//! AMVM migration engines. See `ARCHITECTURE.md` and `docs/migration.md`.
//!
//! - [`memory`]: our own live-migration engine (pre-copy, post-copy, hybrid-copy) moving a
//!   guest memory region between two processes with userfaultfd.
//! - [`model`]: the paper's analytic model (equations 1–7).
//! - [`volume`]: volumes on an iSCSI disk array (tgtd) and how a guest attaches them.

pub mod memory;
pub mod model;
pub mod qemu;
pub mod volume;
