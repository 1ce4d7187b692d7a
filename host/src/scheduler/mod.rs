//! Scheduler core: one decision cycle over a cluster snapshot (overload detection → VM selection
//! → placement → underload evacuation), world-agnostic.

pub mod snapshot;

pub use snapshot::{
    Cluster, HostId, HostState, HostTable, Migration, MigrationReason, Plan, Snapshot, VmId,
    VmTable,
};
