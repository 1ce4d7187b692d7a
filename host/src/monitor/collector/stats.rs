//! Collector counters and the receive-to-disk latency histogram (lock-free, shared by threads).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Log-linear histogram of microsecond latencies: 8 buckets per power of two.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

const SUB: u32 = 8;

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: (0..64 * SUB).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        if us < SUB as u64 {
            return us as usize;
        }
        let octave = 63 - us.leading_zeros(); // >= 3
        let sub = (us >> (octave - 3)) & (SUB as u64 - 1);
        (octave * SUB + sub as u32) as usize
    }

    fn upper(index: usize) -> u64 {
        let i = index as u32;
        if i < SUB {
            return i as u64;
        }
        let octave = i / SUB;
        let sub = (i % SUB) as u64;
        ((SUB as u64 + sub + 1) << (octave - 3)).saturating_sub(1)
    }

    /// Forgets every observation (benchmarks reset after their warm-up).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
    }

    /// Records `n` observations of `us` microseconds.
    pub fn record(&self, us: u64, n: u64) {
        self.buckets[Self::index(us).min(self.buckets.len() - 1)].fetch_add(n, Relaxed);
    }

    /// The `q` quantile (0..=1) in microseconds (upper bound of its bucket; ≤ 12.5 % high).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(Self::upper(i));
            }
        }
        None
    }
}

/// Counters of one collector.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames_ok: AtomicU64,
    pub frames_duplicate: AtomicU64,
    pub frames_rejected_auth: AtomicU64,
    pub frames_rejected_malformed: AtomicU64,
    pub samples_received: AtomicU64,
    pub samples_dropped: AtomicU64,
    pub samples_written: AtomicU64,
    pub rrd_calls: AtomicU64,
    pub write_errors: AtomicU64,
    pub files_created: AtomicU64,
    pub latency_us: Histogram,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub frames_ok: u64,
    pub frames_duplicate: u64,
    pub frames_rejected_auth: u64,
    pub frames_rejected_malformed: u64,
    pub samples_received: u64,
    pub samples_dropped: u64,
    pub samples_written: u64,
    pub rrd_calls: u64,
    pub write_errors: u64,
    pub files_created: u64,
    pub p50_latency_us: Option<u64>,
    pub p99_latency_us: Option<u64>,
}

impl Stats {
    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            frames_ok: self.frames_ok.load(Relaxed),
            frames_duplicate: self.frames_duplicate.load(Relaxed),
            frames_rejected_auth: self.frames_rejected_auth.load(Relaxed),
            frames_rejected_malformed: self.frames_rejected_malformed.load(Relaxed),
            samples_received: self.samples_received.load(Relaxed),
            samples_dropped: self.samples_dropped.load(Relaxed),
            samples_written: self.samples_written.load(Relaxed),
            rrd_calls: self.rrd_calls.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            files_created: self.files_created.load(Relaxed),
            p50_latency_us: self.latency_us.quantile(0.5),
            p99_latency_us: self.latency_us.quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.99), None);
        for us in 1..=10_000u64 {
            h.record(us, 1);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((5000..=5000 * 9 / 8 + 1).contains(&p50), "{p50}");
        assert!((9900..=9900 * 9 / 8 + 1).contains(&p99), "{p99}");
        for us in [0u64, 1, 7, 8, 9, 15, 16, 1000, u64::MAX / 2] {
            assert!(Histogram::upper(Histogram::index(us)) >= us, "{us}");
        }
    }
}
