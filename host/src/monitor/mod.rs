//! Performance monitoring (paper section 3.2): node agent, wire protocol, collector, RRD store,
//! and the in-memory mirror the scheduler reads. See `docs/monitoring.md`.
//!
//! ```text
//!  amvm agent (per node)             amvm collector (controller)
//!   /proc, statvfs, libvirt ──UDP──▶ receive → dedupe → ACK ─┬─▶ Mirror (scheduler reads)
//!                          ◀─ACK───                          └─▶ coalescing writers → RRD files
//! ```

pub mod agent;
pub mod collector;
pub mod export;
pub mod key;
pub mod metric;
pub mod mirror;
pub mod proto;
pub mod sock;
pub mod store;

pub use collector::{Collector, CollectorConfig};
pub use metric::Metric;
pub use mirror::{HostStatus, Mirror, Utilization};
