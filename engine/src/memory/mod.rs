//! Live migration of a guest memory region between two processes over TCP: pre-copy,
//! post-copy and hybrid-copy (paper section 4) on real memory, with userfaultfd write-protect
//! dirty tracking at the source and userfaultfd MISSING demand faults at the destination.
//! See `docs/migration.md`.

pub mod bitmap;
pub mod dest;
mod dest_sync;
pub mod dirty;
pub mod link;
pub mod protocol;
pub mod session;
pub mod source;
mod source_sync;
pub mod sys;
pub mod throttle;
pub mod workload;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use sys::mmap::PAGE_SIZE;

/// Migration mechanism (defined with the model in `amvm-model`).
pub use amvm_model::Mode;

/// Source-side settings of one migration.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Mechanism.
    pub mode: Mode,
    /// Guest memory in bytes (rounded down to pages).
    pub mem_bytes: u64,
    /// Guest workload.
    pub workload: workload::WorkloadSpec,
    /// Link cap in bytes per second (`None` = unthrottled).
    pub bandwidth: Option<f64>,
    /// Push streams after resume.
    pub push_streams: u32,
    /// Neighbour pages sent after each demanded page.
    pub prefetch: usize,
    /// Active push starts this long after the guest resumes at the destination; until then the
    /// missing pages arrive only by demand (and prefetch). Zero (the default) pushes at once.
    pub push_delay: Duration,
    /// Pre-copy round limit.
    pub max_rounds: u32,
    /// Pre-copy stops iterating when the remainder fits this downtime.
    pub downtime_target: Duration,
    /// Workload run time before the migration starts.
    pub warmup: Duration,
    /// Use synchronous write-protect even when async is available.
    pub force_sync_wp: bool,
    /// Migration id (log span and `Hello`).
    pub migration_id: u64,
    /// How long a lost link may stay down before the migration gives up (reconnection
    /// attempts with backoff until then).
    pub recovery_timeout: Duration,
}

impl SourceConfig {
    /// Defaults for `mode`, `mem_bytes` and a workload preset.
    pub fn new(mode: Mode, mem_bytes: u64, workload: workload::WorkloadSpec) -> Self {
        Self {
            mode,
            mem_bytes,
            workload,
            bandwidth: None,
            push_streams: 1,
            prefetch: 8,
            push_delay: Duration::ZERO,
            max_rounds: 20,
            downtime_target: Duration::from_millis(5),
            warmup: Duration::from_millis(300),
            force_sync_wp: false,
            migration_id: std::process::id() as u64,
            recovery_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors of the memory migration engine.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// Invalid settings.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A system call failed.
    #[error("{context}")]
    Sys {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The peer broke the protocol or the link failed.
    #[error("migration protocol failed during {phase}")]
    Protocol {
        /// Phase in which it failed.
        phase: &'static str,
        /// Cause.
        #[source]
        source: protocol::ProtocolError,
    },
    /// The link failed before switch-over; the guest kept running on the source.
    #[error("migration failed before switch-over; the guest stays on the source (verified after: {verified})")]
    StayedOnSource {
        /// The source guest's memory verified after it resumed.
        verified: bool,
        /// Why the migration failed.
        #[source]
        source: Box<MemoryError>,
    },
    /// The peer aborted the migration.
    #[error("peer aborted: {0}")]
    Aborted(String),
    /// The link was lost and did not come back within the recovery timeout.
    #[error("link lost and not restored within {} ms; {left}", waited.as_millis())]
    RecoveryFailed {
        /// The recovery timeout that ran out.
        waited: Duration,
        /// Where the guest is left (never running on both sides).
        left: String,
        /// The failure that started the recovery.
        #[source]
        source: Box<MemoryError>,
    },
}

impl MemoryError {
    /// A lost or broken connection (as opposed to a refused handshake, a bad frame or a local
    /// failure): the cases recovery handles.
    pub fn is_link_loss(&self) -> bool {
        match self {
            Self::Protocol { source: protocol::ProtocolError::Io(_), .. } => true,
            Self::Sys { context, .. } => context.starts_with("cannot connect"),
            _ => false,
        }
    }
}

pub(crate) fn sys(context: &'static str) -> impl FnOnce(std::io::Error) -> MemoryError {
    move |source| MemoryError::Sys { context, source }
}

pub(crate) fn proto<E: Into<protocol::ProtocolError>>(phase: &'static str) -> impl FnOnce(E) -> MemoryError {
    move |e| MemoryError::Protocol { phase, source: e.into() }
}

/// What the destination reports back in `Complete`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestStats {
    /// Demand requests sent (userfaultfd MISSING faults that needed the network).
    pub page_faults: u64,
    /// Prefetched neighbours installed before any other copy of them arrived.
    pub prefetch_hits: u64,
    /// Pushed pages dropped because the page was already present (EEXIST).
    pub push_discarded: u64,
    /// Demand-fault service latency percentiles (fault read → page installed), µs.
    pub fault_latency_p50_us: f64,
    /// 99th percentile, µs.
    pub fault_latency_p99_us: f64,
    /// Pages installed after resume.
    pub pages_after_resume: u64,
    /// Milliseconds from resume to every page present.
    pub resume_to_complete_ms: f64,
    /// Guest writes and reads at the destination while pages were still missing.
    pub guest_writes_after_resume: u64,
    /// Reads likewise.
    pub guest_reads_after_resume: u64,
    /// Bytes the destination sent (handshakes, demand requests, acknowledgements).
    pub bytes_sent: u64,
    /// Pre-copy rounds received.
    pub rounds_received: u32,
    /// The verifier's result.
    pub verification: Option<workload::Verification>,
}

/// Result of one migration, as printed by `amvm migrate --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// Mechanism.
    pub mode: Mode,
    /// Workload preset.
    pub workload: String,
    /// Guest memory.
    pub mem_bytes: u64,
    /// Link cap (bytes/s), if any.
    pub bandwidth_bytes_per_s: Option<f64>,
    /// Start of migration to every page present at the destination.
    pub total_time_ms: f64,
    /// Guest paused at the source to guest running at the destination (acknowledged).
    pub downtime_ms: f64,
    /// All bytes on all connections, both directions, including headers.
    pub bytes_transferred: u64,
    /// Demand requests.
    pub page_faults: u64,
    /// Useful prefetched pages.
    pub prefetch_hits: u64,
    /// Pushed pages discarded at the destination.
    pub push_discarded: u64,
    /// Demand-fault latency p50 (µs).
    pub fault_latency_p50_us: f64,
    /// Demand-fault latency p99 (µs).
    pub fault_latency_p99_us: f64,
    /// Every page at the destination holds its last written version.
    pub verified: bool,
    /// Pre-copy rounds (including the first full round; 0 for post-copy).
    pub rounds: u32,
    /// Pages dirty at stop-copy (sent in the last pre-copy round or by demand/push).
    pub dirty_pages_at_stop: u64,
    /// Full-round duration (ms), the measured `V_mem / B`.
    pub full_round_ms: f64,
    /// Measured throughput of the full round (bytes/s).
    pub measured_bandwidth: f64,
    /// Guest page writes per second at the source during the migration.
    pub guest_write_rate: f64,
    /// Dirty-tracking mechanism.
    pub dirty_tracking: String,
    /// Times a lost link was restored after switch-over (0 on a clean run).
    #[serde(default)]
    pub link_recoveries: u32,
    /// Destination details.
    pub dest: DestStats,
    /// The analytic model's predictions for this run.
    pub model: crate::model::Prediction,
}

/// Nearest-rank percentile of `v` (sorted in place); 0 when empty.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn modes_parse() {
        assert_eq!("hybrid".parse::<Mode>().ok(), Some(Mode::Hybrid));
        assert!("sideways".parse::<Mode>().is_err());
    }
}
