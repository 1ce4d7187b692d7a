//! Small clusters shared by the scheduler's integration tests.

#![allow(dead_code)]

use amvm_host::policy::{PolicyRuntime, RuntimeConfig};
use amvm_host::scheduler::synthetic::POWER_G4;
use amvm_host::scheduler::{HostState, HostTable, Migration, MigrationReason, Snapshot, VmTable};

pub fn runtime() -> PolicyRuntime {
    PolicyRuntime::new(RuntimeConfig::default()).unwrap()
}

/// Hosts of 1000 MIPS / 4096 MB on the G4 power curve, ids 100, 101, …; VMs of 1000 MIPS with a
/// flat history at `util`, ids 0, 1, …. `vms` = (host index, utilization, RAM MB).
pub fn cluster(hosts: &[HostState], vms: &[(u32, f32, f32)]) -> Snapshot {
    let mut h = HostTable::default();
    for (i, &state) in hosts.iter().enumerate() {
        h.push(100 + i as u32, state, 1000.0, 4096.0, 0);
    }
    let window = 3;
    let mut v = VmTable::default();
    for (i, &(host, util, ram)) in vms.iter().enumerate() {
        v.id.push(i as u32);
        v.host.push(host);
        v.mips.push(1000.0);
        v.ram_mb.push(ram);
        v.migrating.push(false);
        v.cpu_history.extend([util; 3]);
    }
    Snapshot {
        cycle: 0,
        time_s: 0.0,
        unix_time_s: None,
        interval_s: 300.0,
        window,
        migration_bandwidth_mbps: 62.5,
        power_curves: vec![POWER_G4],
        hosts: h,
        vms: v,
    }
}

pub fn mig(vm: u32, from: u32, to: u32, reason: MigrationReason) -> Migration {
    Migration { vm, from, to, reason, mode: None }
}

/// Host 0 at 0.9 (VMs a 0.5/1000 MB, b 0.4/500 MB), host 1 at 0.3, host 2 at 0.15.
pub fn three_hosts() -> Snapshot {
    use HostState::Active;
    cluster(&[Active, Active, Active], &[(0, 0.5, 1000.0), (0, 0.4, 500.0), (1, 0.3, 1000.0), (2, 0.15, 1000.0)])
}

/// The plan's migrations without their modes (which every one must have: the strategy's
/// migration-mode policy names one per move), for comparing with [`mig`].
pub fn moves(plan: &amvm_host::scheduler::Plan) -> Vec<Migration> {
    plan.migrations
        .iter()
        .map(|m| {
            assert!(m.mode.is_some(), "a planned migration without a mode: {m:?}");
            Migration { mode: None, ..m.clone() }
        })
        .collect()
}
