//! The batched, coalescing RRD writer.
//!
//! The receive path appends samples to a pending map (one per writer shard, keyed by series) under
//! a mutex held only for the append; it never waits for disk. Each writer thread wakes every flush
//! interval (or at once when it fell behind), swaps its shard's map for an empty one, and writes
//! every series with **one** librrd call carrying all of that series' pending samples. Under load,
//! flushes take longer, more samples accumulate per file, and each call carries more of them: the
//! write path's throughput grows with the load instead of collapsing (as rrdcached does).
//!
//! **Invariant:** the pending map holds at most `max_pending` samples per series; beyond that the
//! oldest are dropped and counted (`samples_dropped`), so a stalled disk bounds memory.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stats::Stats;
use crate::monitor::store::{create_file, update_file, SeriesKey};

#[derive(Debug, Default)]
struct Pending {
    series: HashMap<SeriesKey, Vec<(u64, Option<f64>, Instant)>>,
}

#[derive(Debug)]
struct Shard {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The write side of the collector: shards of pending samples and their writer threads.
#[derive(Debug)]
pub struct Writer {
    data: PathBuf,
    shards: Vec<Arc<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    max_pending: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub data: PathBuf,
    pub step: u32,
    pub flush: Duration,
    pub threads: usize,
    pub max_pending: usize,
}

impl Writer {
    /// The data directory the files go to.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// Starts the writer threads.
    pub fn start(cfg: WriterConfig, stats: Arc<Stats>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let n = cfg.threads.max(1);
        let shards: Vec<Arc<Shard>> =
            (0..n).map(|_| Arc::new(Shard { pending: Mutex::new(Pending::default()), wake: Condvar::new() })).collect();
        let mut threads = Vec::with_capacity(n);
        for (i, shard) in shards.iter().enumerate() {
            let (shard, stop, stats, cfg) = (shard.clone(), stop.clone(), stats.clone(), cfg.clone());
            threads.push(std::thread::Builder::new().name(format!("rrd-writer-{i}")).spawn(move || {
                writer_loop(&shard, &stop, &stats, &cfg);
            })?);
        }
        Ok(Self {
            data: cfg.data.clone(),
            shards,
            hasher: Default::default(),
            max_pending: cfg.max_pending.max(1),
            stop,
            threads,
            stats,
        })
    }

    /// Queues samples of one report; never blocks on disk.
    pub fn enqueue(&self, samples: impl IntoIterator<Item = (SeriesKey, u64, Option<f64>)>, received: Instant) {
        let n = self.shards.len();
        let mut locked: Vec<Option<std::sync::MutexGuard<'_, Pending>>> = (0..n).map(|_| None).collect();
        for (key, t, v) in samples {
            let i = (self.hasher.hash_one(&key) % n as u64) as usize;
            let guard =
                locked[i].get_or_insert_with(|| self.shards[i].pending.lock().unwrap_or_else(|p| p.into_inner()));
            let q = guard.series.entry(key).or_default();
            if q.len() >= self.max_pending {
                q.remove(0);
                self.stats.samples_dropped.fetch_add(1, Relaxed);
            }
            q.push((t, v, received));
        }
    }

    /// Flushes everything pending and stops the threads.
    pub fn shutdown(self) {
        self.stop.store(true, Relaxed);
        for s in &self.shards {
            s.wake.notify_all();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn writer_loop(shard: &Shard, stop: &AtomicBool, stats: &Stats, cfg: &WriterConfig) {
    let mut known: HashSet<PathBuf> = HashSet::new();
    let mut last = Instant::now();
    loop {
        let batch = {
            let mut g = shard.pending.lock().unwrap_or_else(|p| p.into_inner());
            // A writer that fell behind (its last flush took longer than the interval) goes again
            // at once; the longer wait means more samples per file in this batch.
            let wait = cfg.flush.saturating_sub(last.elapsed());
            if !stop.load(Relaxed) && !wait.is_zero() {
                g = shard.wake.wait_timeout(g, wait).unwrap_or_else(|p| p.into_inner()).0;
            }
            last = Instant::now();
            std::mem::take(&mut g.series)
        };
        let stopping = stop.load(Relaxed);
        write_batch(batch, &mut known, stats, cfg);
        if stopping {
            // One more pass for anything queued while the last batch was written.
            let rest = std::mem::take(&mut shard.pending.lock().unwrap_or_else(|p| p.into_inner()).series);
            write_batch(rest, &mut known, stats, cfg);
            return;
        }
        tracing::trace!(elapsed = ?last.elapsed(), "rrd flush");
    }
}

fn write_batch(
    batch: HashMap<SeriesKey, Vec<(u64, Option<f64>, Instant)>>,
    known: &mut HashSet<PathBuf>,
    stats: &Stats,
    cfg: &WriterConfig,
) {
    let mut samples: Vec<(u64, Option<f64>)> = Vec::new();
    for (key, mut q) in batch {
        q.sort_by_key(|s| s.0);
        q.dedup_by_key(|s| s.0); // keeps the first of equal timestamps (a retransmit's twin)
        let path = key.path(&cfg.data);
        if let Err(e) = ensure_file(&path, &key, cfg.step, q[0].0, known, stats) {
            stats.write_errors.fetch_add(1, Relaxed);
            tracing::warn!("{e:#}");
            continue;
        }
        samples.clear();
        samples.extend(q.iter().map(|s| (s.0, s.1)));
        stats.rrd_calls.fetch_add(1, Relaxed);
        match update_file(&path, &samples) {
            Ok(()) => {
                let now = Instant::now();
                stats.samples_written.fetch_add(q.len() as u64, Relaxed);
                for s in &q {
                    stats.latency_us.record(now.duration_since(s.2).as_micros() as u64, 1);
                }
            }
            Err(e) => {
                stats.write_errors.fetch_add(1, Relaxed);
                tracing::warn!("{e:#}");
                known.remove(&path);
            }
        }
    }
}

fn ensure_file(
    path: &Path,
    key: &SeriesKey,
    step: u32,
    first_ts: u64,
    known: &mut HashSet<PathBuf>,
    stats: &Stats,
) -> Result<(), crate::monitor::store::StoreError> {
    if known.contains(path) {
        return Ok(());
    }
    if !path.exists() {
        create_file(path, key.metric, step, first_ts)?;
        stats.files_created.fetch_add(1, Relaxed);
    }
    known.insert(path.to_path_buf());
    Ok(())
}
