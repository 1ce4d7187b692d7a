//! The metric catalogue: paper Table 1 (host) and Table 2 (VM), with wire ids, RRD names and types.
//!
//! **Invariant:** wire ids are never reused or renumbered; a retired metric keeps its id reserved.
//! A receiver that meets an id it does not know skips the sample (forward compatibility).

/// How a series is stored in RRD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A level (load, bytes of memory, percent): stored as-is.
    Gauge,
    /// A monotonically increasing counter (bytes, packets): stored as `DERIVE` with minimum 0, so
    /// RRD turns it into a per-second rate and a counter reset becomes unknown, not a spike.
    Counter,
}

/// Whether a metric describes a compute node or one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Host,
    Vm,
}

macro_rules! metrics {
    ($( $variant:ident = $id:literal, $name:literal, $scope:ident, $kind:ident, $help:literal; )*) => {
        /// One metric of Tables 1 and 2. The discriminant is the wire id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Metric {
            $( #[doc = $help] $variant = $id, )*
        }

        impl Metric {
            /// Every metric, in wire-id order.
            pub const ALL: &'static [Metric] = &[ $( Metric::$variant, )* ];

            /// Looks a wire id up; `None` for ids this build does not know.
            pub fn from_id(id: u16) -> Option<Metric> {
                match id { $( $id => Some(Metric::$variant), )* _ => None }
            }

            /// Series name: the RRD file stem and its data-source name.
            pub fn name(self) -> &'static str {
                match self { $( Metric::$variant => $name, )* }
            }

            /// Host or VM.
            pub fn scope(self) -> Scope {
                match self { $( Metric::$variant => Scope::$scope, )* }
            }

            /// Gauge or counter.
            pub fn kind(self) -> Kind {
                match self { $( Metric::$variant => Kind::$kind, )* }
            }

            /// One-line description with the unit.
            pub fn help(self) -> &'static str {
                match self { $( Metric::$variant => $help, )* }
            }
        }
    };
}

metrics! {
    Heartbeat = 1, "heartbeat", Host, Gauge, "Seconds since the agent started (s)";
    LoadOne = 2, "load_one", Host, Gauge, "Load average over 1 minute";
    LoadFive = 3, "load_five", Host, Gauge, "Load average over 5 minutes";
    LoadFifteen = 4, "load_fifteen", Host, Gauge, "Load average over 15 minutes";
    ProcRun = 5, "proc_run", Host, Gauge, "Runnable processes";
    ProcTotal = 6, "proc_total", Host, Gauge, "Total processes (scheduling entities)";
    CpuNum = 7, "cpu_num", Host, Gauge, "Online CPUs";
    CpuUser = 8, "cpu_user", Host, Gauge, "User CPU time, nice included (%)";
    CpuSystem = 9, "cpu_system", Host, Gauge, "System CPU time, irq and softirq included (%)";
    CpuIdle = 10, "cpu_idle", Host, Gauge, "Idle CPU time, iowait included (%)";
    MemTotal = 11, "mem_total", Host, Gauge, "Memory size (bytes)";
    MemFree = 12, "mem_free", Host, Gauge, "Free memory (bytes)";
    MemShared = 13, "mem_shared", Host, Gauge, "Shared memory, Shmem (bytes)";
    MemBuffers = 14, "mem_buffers", Host, Gauge, "Buffer memory (bytes)";
    MemCached = 15, "mem_cached", Host, Gauge, "Page cache (bytes)";
    SwapTotal = 16, "swap_total", Host, Gauge, "Swap size (bytes)";
    SwapFree = 17, "swap_free", Host, Gauge, "Free swap (bytes)";
    DiskTotal = 18, "disk_total", Host, Gauge, "Local filesystems, one per device (bytes)";
    DiskFree = 19, "disk_free", Host, Gauge, "Free space on local filesystems (bytes)";
    BytesIn = 20, "bytes_in", Host, Counter, "Bytes received by physical NICs (B/s in RRD)";
    BytesOut = 21, "bytes_out", Host, Counter, "Bytes sent by physical NICs (B/s in RRD)";
    PktsIn = 22, "pkts_in", Host, Counter, "Packets received by physical NICs (pkt/s in RRD)";
    PktsOut = 23, "pkts_out", Host, Counter, "Packets sent by physical NICs (pkt/s in RRD)";
    NetCapacity = 24, "net_capacity", Host, Gauge, "Sum of physical NIC link speeds (B/s)";
    VcpuNum = 64, "vcpu_num", Vm, Gauge, "Virtual CPUs";
    VcpuUtil = 65, "vcpu_util", Vm, Gauge, "vCPU utilization: cpu time over wall time x vCPUs (%)";
    VmemTotal = 66, "vmem_total", Vm, Gauge, "Guest memory size (bytes)";
    VmemUtil = 67, "vmem_util", Vm, Gauge, "Guest memory in use (%)";
    VdiskTotal = 68, "vdisk_total", Vm, Gauge, "Virtual disk capacity (bytes)";
    VdiskFree = 69, "vdisk_free", Vm, Gauge, "Virtual disk space not allocated (bytes)";
    VdiskBytesRead = 70, "vdisk_bytes_read", Vm, Counter, "Bytes read from virtual disks (B/s in RRD)";
    VdiskBytesWritten = 71, "vdisk_bytes_written", Vm, Counter, "Bytes written to virtual disks (B/s in RRD)";
    VpktsIn = 72, "vpkts_in", Vm, Counter, "Packets received by the VM (pkt/s in RRD)";
    VpktsOut = 73, "vpkts_out", Vm, Counter, "Packets sent by the VM (pkt/s in RRD)";
    VbytesIn = 74, "vbytes_in", Vm, Counter, "Bytes received by the VM (B/s in RRD)";
    VbytesOut = 75, "vbytes_out", Vm, Counter, "Bytes sent by the VM (B/s in RRD)";
    VmemDirtyRate = 76, "vmem_dirty_rate", Vm, Gauge, "Guest memory dirty rate, sampled by QEMU (bytes/s)";
    VmNode = 77, "vm_node", Vm, Gauge, "Node the VM ran on: its number in the cluster's nodes.json (set by the collector)";
}

impl Metric {
    /// Looks a series name up (`cpu_idle`, `vbytes_in`, ...).
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_and_round_trip() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(Metric::from_id(*m as u16), Some(*m));
            assert_eq!(Metric::from_name(m.name()), Some(*m));
            for other in &Metric::ALL[i + 1..] {
                assert_ne!(m.name(), other.name());
            }
            // RRD data-source names: 1..19 chars of [a-zA-Z0-9_].
            assert!(m.name().len() < 20 && m.name().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        assert_eq!(Metric::from_id(999), None);
        assert_eq!(Metric::from_name("nope"), None);
    }
}
