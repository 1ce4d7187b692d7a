//! The "guest": a memory region plus vCPU threads running a workload, and the verifier.
//!
//! Layout of guest memory: pages `[0, T)` hold the **version table** (one u64 per page: how many
//! times that page was written), pages `[T, N)` are data. A write to data page `p` bumps its
//! version `v` and rewrites the whole page with `content(p, v)` (incompressible pseudo-random
//! words; all zero on every `zero_every`-th version). Version 0 is the booted state, so every
//! data page starts non-zero and in use. The table lives in guest memory and migrates like any
//! other page; the vCPU state carries each thread's write counter, so the verifier checks
//! (a) every data page equals `content(p, table[p])` and (b) the table sums to the number of
//! writes performed: a lost page write or a lost table write both fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::sys::mmap::{Region, PAGE_SIZE};

const WORDS: usize = PAGE_SIZE / 8;

/// Parameters of a workload (rates are totals over all vCPUs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Preset name (`idle`, `memory`, `cpu`, `io`, `custom`).
    pub name: String,
    /// Page writes per second.
    pub writes_per_s: f64,
    /// Page reads (one word) per second.
    pub reads_per_s: f64,
    /// Fraction of data pages forming the hot set.
    pub hot_fraction: f64,
    /// Probability that an access goes to the hot set (else uniform over all data pages).
    pub hot_prob: f64,
    /// Hot-set accesses walk sequentially (frame buffer, buffer cache) instead of a local
    /// random walk.
    pub sequential: bool,
    /// Maximum stride of the local random walk inside the hot set, in pages.
    pub stride: u32,
    /// Every n-th version of a page is all zeros (0 = never).
    pub zero_every: u32,
    /// Busy-wait between operations instead of sleeping (CPU-bound guest).
    pub spin: bool,
    /// vCPU threads.
    pub vcpus: u32,
}

impl WorkloadSpec {
    /// The paper's four workloads plus defaults for `custom`.
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self {
            name: name.to_string(),
            writes_per_s: 0.0,
            reads_per_s: 0.0,
            hot_fraction: 0.01,
            hot_prob: 1.0,
            sequential: false,
            stride: 4,
            zero_every: 0,
            spin: false,
            vcpus: 1,
        };
        Some(match name {
            // A booted, quiet guest: a few timer/log writes.
            "idle" => Self { writes_per_s: 20.0, reads_per_s: 200.0, hot_fraction: 0.001, ..base },
            // V8-like: the allocation pointer sweeps a young-generation hot set (bump
            // allocation, sequential) faster than a Gigabit link, plus scattered old-gen writes.
            "memory" => Self {
                writes_per_s: 40_000.0,
                reads_per_s: 40_000.0,
                hot_fraction: 0.08,
                hot_prob: 0.9,
                sequential: true,
                ..base
            },
            // Video playback: CPU busy, a frame buffer rewritten sequentially at a low rate.
            "cpu" => Self {
                writes_per_s: 3_000.0,
                reads_per_s: 3_000.0,
                hot_fraction: 0.02,
                hot_prob: 0.98,
                sequential: true,
                spin: true,
                ..base
            },
            // Buffer cache under bonnie++: sequential file pages, some freed (zeroed).
            "io" => Self {
                writes_per_s: 4_000.0,
                reads_per_s: 2_000.0,
                hot_fraction: 0.25,
                hot_prob: 0.95,
                sequential: true,
                zero_every: 8,
                ..base
            },
            "custom" => Self { writes_per_s: 1_000.0, reads_per_s: 1_000.0, hot_fraction: 0.05, hot_prob: 0.9, ..base },
            _ => return None,
        })
    }
}

/// Pages of the version table for a guest of `pages` pages.
pub fn table_pages(pages: usize) -> usize {
    (pages * 8).div_ceil(PAGE_SIZE)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Word `i` of data page `p` at version `v`.
fn content_word(p: usize, v: u64, i: usize) -> u64 {
    mix((p as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ i as u64)
}

fn is_zero_version(spec: &WorkloadSpec, v: u64) -> bool {
    spec.zero_every > 0 && v > 0 && v.is_multiple_of(u64::from(spec.zero_every))
}

/// Writes `content(p, v)` into guest memory.
fn write_content(region: &Region, spec: &WorkloadSpec, p: usize, v: u64) {
    let zero = is_zero_version(spec, v);
    for i in 0..WORDS {
        region.write_u64(p, i, if zero { 0 } else { content_word(p, v, i) });
    }
}

fn table_get(region: &Region, p: usize) -> u64 {
    region.read_u64(p / WORDS, p % WORDS)
}

fn table_set(region: &Region, p: usize, v: u64) {
    region.write_u64(p / WORDS, p % WORDS, v)
}

/// One vCPU's architectural state: where it is in its workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    /// First data page this vCPU owns.
    pub first: usize,
    /// One past its last page.
    pub end: usize,
    /// Hot set start and length.
    pub hot_start: usize,
    /// Hot set length in pages.
    pub hot_len: usize,
    /// Position of writes in the hot set.
    pub cursor: usize,
    /// Position of reads in the hot set.
    #[serde(default)]
    pub read_cursor: usize,
    /// PRNG state.
    pub rng: u64,
    /// Page writes performed so far.
    pub writes: u64,
    /// Reads performed so far.
    pub reads: u64,
    /// Running hash of values read (keeps reads observable).
    pub sink: u64,
}

/// Everything the destination needs besides memory to resume the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuState {
    /// Workload parameters.
    pub spec: WorkloadSpec,
    /// Guest pages.
    pub pages: usize,
    /// Per-vCPU state.
    pub threads: Vec<ThreadState>,
}

impl VcpuState {
    /// Total page writes performed by the guest.
    pub fn writes(&self) -> u64 {
        self.threads.iter().map(|t| t.writes).sum()
    }
    /// Total reads performed by the guest.
    pub fn reads(&self) -> u64 {
        self.threads.iter().map(|t| t.reads).sum()
    }
}

/// A running (or paused) guest.
#[derive(Debug)]
pub struct Guest {
    region: Arc<Region>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<ThreadState>>,
    spec: WorkloadSpec,
}

/// Fills every data page with its version-0 content (a booted guest whose memory is in use).
pub fn boot(region: &Region, spec: &WorkloadSpec) -> VcpuState {
    let pages = region.pages();
    let t = table_pages(pages).min(pages);
    for p in 0..t {
        // Populate the (all-zero) version table: a booted guest's memory is all in use.
        for w in 0..WORDS {
            region.write_u64(p, w, 0);
        }
    }
    for p in t..pages {
        write_content(region, spec, p, 0);
    }
    let vcpus = (spec.vcpus.max(1) as usize).min((pages - t).max(1));
    let data = pages - t;
    let threads = (0..vcpus)
        .map(|i| {
            let first = t + data * i / vcpus;
            let end = t + data * (i + 1) / vcpus;
            let len = end.saturating_sub(first).max(1);
            let hot_len = ((len as f64 * spec.hot_fraction) as usize).clamp(1, len);
            ThreadState {
                first,
                end,
                hot_start: first + (len - hot_len) / 3,
                hot_len,
                cursor: 0,
                read_cursor: 0,
                rng: mix(0x5eed ^ i as u64) | 1,
                writes: 0,
                reads: 0,
                sink: 0,
            }
        })
        .collect();
    VcpuState { spec: spec.clone(), pages, threads }
}

impl Guest {
    /// Starts vCPU threads from `state` on `region`.
    pub fn start(region: Arc<Region>, state: VcpuState) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = state
            .threads
            .into_iter()
            .enumerate()
            .filter(|(_, t)| t.end > t.first)
            .map(|(i, t)| {
                let (region, stop, spec) = (region.clone(), stop.clone(), state.spec.clone());
                let vcpus = state.spec.vcpus.max(1) as f64;
                std::thread::Builder::new()
                    .name(format!("vcpu{i}"))
                    .spawn(move || run_vcpu(&region, &spec, t, vcpus, &stop))
                    .unwrap_or_else(|e| panic!("cannot spawn a vCPU thread: {e}"))
            })
            .collect();
        Self { region, stop, threads, spec: state.spec }
    }

    /// Asks the vCPUs to stop at their next safe point without waiting for them (a vCPU
    /// blocked on a missing page stays blocked until the page arrives).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops the vCPUs at a safe point (between two operations) and returns their state.
    pub fn stop(self) -> VcpuState {
        self.stop.store(true, Ordering::Release);
        let threads = self.threads.into_iter().filter_map(|h| h.join().ok()).collect();
        VcpuState { spec: self.spec, pages: self.region.pages(), threads }
    }
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn pick_page(spec: &WorkloadSpec, t: &mut ThreadState, read: bool) -> usize {
    let r = next(&mut t.rng);
    let hot = (r >> 11) as f64 / (1u64 << 53) as f64 <= spec.hot_prob;
    if hot {
        let step = if spec.sequential {
            1
        } else {
            let s = u64::from(spec.stride.max(1));
            (next(&mut t.rng) % (2 * s + 1)) as i64 - s as i64
        };
        let c = if read { &mut t.read_cursor } else { &mut t.cursor };
        *c = (*c as i64 + step).rem_euclid(t.hot_len as i64) as usize;
        t.hot_start + *c
    } else {
        t.first + (next(&mut t.rng) % (t.end - t.first) as u64) as usize
    }
}

fn run_vcpu(region: &Region, spec: &WorkloadSpec, mut t: ThreadState, vcpus: f64, stop: &AtomicBool) -> ThreadState {
    let (w_rate, r_rate) = (spec.writes_per_s / vcpus, spec.reads_per_s / vcpus);
    let start = Instant::now();
    let (w0, r0) = (t.writes, t.reads);
    while !stop.load(Ordering::Acquire) {
        let el = start.elapsed().as_secs_f64();
        let due_w = ((el * w_rate) as u64).saturating_sub(t.writes - w0).min(64);
        let due_r = ((el * r_rate) as u64).saturating_sub(t.reads - r0).min(64);
        if due_w == 0 && due_r == 0 {
            if spec.spin {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
            continue;
        }
        for _ in 0..due_w {
            let p = pick_page(spec, &mut t, false);
            let v = table_get(region, p) + 1;
            write_content(region, spec, p, v);
            table_set(region, p, v);
            t.writes += 1;
        }
        for _ in 0..due_r {
            let p = pick_page(spec, &mut t, true);
            let w = (next(&mut t.rng) % WORDS as u64) as usize;
            t.sink = t.sink.rotate_left(5) ^ region.read_u64(p, w);
            t.reads += 1;
        }
    }
    t
}

/// Verifier result: proof that no write was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Data pages checked.
    pub pages_checked: usize,
    /// Pages whose content differs from their recorded version.
    pub bad_pages: usize,
    /// First such page.
    pub first_bad: Option<usize>,
    /// Sum of the version table.
    pub table_sum: u64,
    /// Writes the vCPUs performed.
    pub writes: u64,
    /// Everything matched.
    pub ok: bool,
}

/// Checks every data page of a stopped guest against its version table and vCPU state.
pub fn verify(region: &Region, state: &VcpuState) -> Verification {
    let pages = region.pages();
    let t = table_pages(pages).min(pages);
    let (mut bad, mut first_bad, mut sum) = (0usize, None, 0u64);
    for p in t..pages {
        let v = table_get(region, p);
        sum = sum.wrapping_add(v);
        let zero = is_zero_version(&state.spec, v);
        let ok = (0..WORDS).all(|i| region.read_u64(p, i) == if zero { 0 } else { content_word(p, v, i) });
        if !ok {
            bad += 1;
            first_bad.get_or_insert(p);
        }
    }
    let writes = state.writes();
    Verification {
        pages_checked: pages - t,
        bad_pages: bad,
        first_bad,
        table_sum: sum,
        writes,
        ok: bad == 0 && sum == writes && state.pages == pages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_guest_verifies_and_a_lost_write_is_caught() {
        let region = Arc::new(Region::new(2048).expect("mmap"));
        let mut spec = WorkloadSpec::preset("io").expect("preset");
        spec.writes_per_s = 20_000.0;
        spec.vcpus = 2;
        let state = boot(&region, &spec);
        let g = Guest::start(region.clone(), state);
        std::thread::sleep(Duration::from_millis(100));
        let state = g.stop();
        assert!(state.writes() > 100, "workload did not run: {}", state.writes());
        let v = verify(&region, &state);
        assert!(v.ok, "{v:?}");
        // Roll one written page back to version 0 content: the verifier must notice.
        let p = (table_pages(2048)..2048).find(|&p| table_get(&region, p) > 0).expect("a written page");
        write_content(&region, &spec, p, 0);
        let v = verify(&region, &state);
        assert!(!v.ok && v.first_bad == Some(p), "{v:?}");
        // Losing the table update instead is caught by the sum.
        write_content(&region, &spec, p, table_get(&region, p));
        table_set(&region, p, table_get(&region, p) - 1);
        write_content(&region, &spec, p, table_get(&region, p));
        let v = verify(&region, &state);
        assert!(!v.ok && v.bad_pages == 0 && v.table_sum + 1 == v.writes, "{v:?}");
    }

    #[test]
    fn every_preset_parses() {
        for n in ["idle", "memory", "cpu", "io", "custom"] {
            assert!(WorkloadSpec::preset(n).is_some(), "{n}");
        }
        assert!(WorkloadSpec::preset("nope").is_none());
    }
}
