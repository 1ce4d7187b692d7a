//! The lab guest's workload library: the volume writer and verifier ([`volume`]), shared with
//! the host's tests, which check a volume's backing file with the same verifier.

pub mod volume;
