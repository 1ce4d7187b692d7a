//! A token bucket shared by every connection of a migration: emulates a link of fixed
//! bandwidth (the paper's Gigabit Ethernet). Demand replies take tokens without waiting
//! (they may run the bucket into debt); pushes then wait longer, so demand has priority.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared bandwidth limiter; `None` rate = unlimited.
#[derive(Debug)]
pub struct Throttle {
    rate: Option<f64>,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// A limiter of `bytes_per_sec` (or unlimited).
    pub fn new(bytes_per_sec: Option<f64>) -> Self {
        Self { rate: bytes_per_sec.filter(|r| *r > 0.0), state: Mutex::new((0.0, Instant::now())) }
    }

    /// Configured rate in bytes per second.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn take(&self, bytes: usize) -> Option<Duration> {
        let rate = self.rate?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Burst of 2 ms worth of bytes keeps queues short and the rate exact.
        let burst = rate * 0.002;
        st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * rate).min(burst);
        st.1 = now;
        st.0 -= bytes as f64;
        (st.0 < 0.0).then(|| Duration::from_secs_f64(-st.0 / rate))
    }

    /// Accounts `bytes` and sleeps until the link would have carried them.
    pub fn acquire(&self, bytes: usize) {
        if let Some(wait) = self.take(bytes) {
            std::thread::sleep(wait);
        }
    }

    /// Accounts `bytes` without waiting (demand replies).
    pub fn acquire_priority(&self, bytes: usize) {
        let _ = self.take(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let t = Throttle::new(None);
        assert!(t.take(1 << 30).is_none());
        assert!(t.rate().is_none());
    }

    #[test]
    fn debt_turns_into_wait_proportional_to_bytes() {
        let t = Throttle::new(Some(1_000_000.0));
        let w = t.take(100_000).expect("must wait");
        // 100 kB at 1 MB/s is 0.1 s (minus at most the tiny refill since creation).
        assert!(w > Duration::from_millis(90) && w <= Duration::from_millis(100), "{w:?}");
    }
}
