//! The destination half: receives memory, resumes the guest, catches its faults on missing
//! pages with userfaultfd, requests them on the demand connection and installs whatever
//! arrives (demand replies, prefetched neighbours, pushes) with `UFFDIO_COPY`.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bitmap::Bitmap;
use super::link::Link;
use super::protocol::{self, flags, Hello, Kind, ProtocolError, Role};
use super::source::STOP_ALL_NEEDED;
use super::sys::mmap::{Region, PAGE_SIZE};
use super::sys::uffd::{Install, Uffd};
use super::throttle::Throttle;
use super::workload::{self, Guest, VcpuState};
use super::{percentile, proto, sys, DestStats, MemoryError};

/// Destination settings.
#[derive(Debug, Clone)]
pub struct DestOptions {
    /// Largest guest accepted, in pages.
    pub max_pages: u64,
    /// How long the guest keeps running after the last page arrived, before it is stopped
    /// and verified.
    pub run_after: Duration,
}

impl Default for DestOptions {
    fn default() -> Self {
        Self { max_pages: 64 << 20, run_after: Duration::from_millis(100) }
    }
}

struct Shared {
    region: Arc<Region>,
    uffd: Uffd,
    present: Bitmap,
    requested: Bitmap,
    missing: AtomicUsize,
    pending: Mutex<HashMap<usize, Instant>>,
    latencies: Mutex<Vec<f64>>,
    faults: AtomicU64,
    prefetch_hits: AtomicU64,
    discarded: AtomicU64,
    installed: AtomicU64,
    failed: AtomicBool,
    done: AtomicBool,
}

fn accept(listener: &TcpListener, bytes: &Arc<AtomicU64>) -> Result<(Hello, Link, BufReader<TcpStream>), MemoryError> {
    let (s, peer) = listener.accept().map_err(sys("accept failed"))?;
    s.set_nodelay(true).map_err(sys("setsockopt"))?;
    let mut rx = BufReader::with_capacity(256 << 10, s.try_clone().map_err(sys("dup socket"))?);
    let link = Link::new(s, Arc::new(Throttle::new(None)), bytes.clone(), true);
    let (h, payload) = protocol::read_frame(&mut rx).map_err(proto("handshake"))?;
    if h.kind != Kind::Hello {
        return Err(proto("handshake")(ProtocolError::Unexpected { got: h.kind, expected: "Hello" }));
    }
    let hello: Hello = protocol::parse_json(&payload, "hello").map_err(proto("handshake"))?;
    protocol::check_hello(&hello).map_err(proto("handshake"))?;
    tracing::debug!(%peer, role = ?hello.role, "connection");
    Ok((hello, link, rx))
}

/// Runs the destination half of one migration on `listener`; returns once the guest runs
/// here with all its memory and has been verified.
pub fn run_dest(listener: &TcpListener, opts: &DestOptions) -> Result<DestStats, MemoryError> {
    let bytes = Arc::new(AtomicU64::new(0));
    let (hello, mut control, mut control_rx) = accept(listener, &bytes)?;
    let span = tracing::info_span!("migration", id = hello.migration_id, mode = %hello.mode, side = "dest");
    let _enter = span.enter();
    let reject = |control: &mut Link, why: String| {
        let _ = control.send(Kind::Abort, 0, 0, why.as_bytes());
        MemoryError::Config(why)
    };
    if hello.role != Role::Control || hello.pages < 64 || hello.pages > opts.max_pages {
        return Err(reject(&mut control, format!("refusing {:?} connection for {} pages", hello.role, hello.pages)));
    }
    let pages = hello.pages as usize;
    let region = Arc::new(Region::new(pages).map_err(sys("cannot map guest memory"))?);
    control.send(Kind::HelloAck, 0, 0, &[]).map_err(proto("handshake"))?;
    let mut data_rx = Vec::new();
    let mut demand_link = None;
    if hello.mode != "pre" {
        for _ in 0..=hello.push_streams.max(1) {
            let (h, mut link, rx) = accept(listener, &bytes)?;
            if h.migration_id != hello.migration_id {
                return Err(reject(&mut link, "connection of another migration".into()));
            }
            link.send(Kind::HelloAck, 0, 0, &[]).map_err(proto("handshake"))?;
            if h.role == Role::Demand {
                demand_link = Some(link);
            }
            data_rx.push(rx);
        }
    }

    // Pre-resume: rounds are written straight into memory (the guest is not running here).
    let mut stats = DestStats::default();
    let mut buf = Vec::new();
    // Pages holding data written by the rounds (the rest read as zero / are missing).
    let populated = Bitmap::new(pages);
    let stop_payload = loop {
        let h = protocol::read_header(&mut control_rx).map_err(proto("memory rounds"))?;
        match h.kind {
            Kind::Pages | Kind::Zeros => {
                let (first, n) = run_extent(&h, pages, &mut control_rx, &mut buf).map_err(proto("memory rounds"))?;
                if h.kind == Kind::Pages {
                    region.write_pages(first, &buf);
                    populated.set_range(first, n);
                } else {
                    region.discard(first, n).map_err(sys("madvise"))?;
                    populated.clear_range(first, n);
                }
            }
            Kind::Discard => {
                let (first, n) = run_extent(&h, pages, &mut control_rx, &mut buf).map_err(proto("memory rounds"))?;
                region.discard(first, n).map_err(sys("madvise"))?;
                populated.clear_range(first, n);
            }
            Kind::RoundEnd => {
                stats.rounds_received += 1;
                control.send(Kind::RoundEnd, 0, h.arg, &[]).map_err(proto("round end"))?;
            }
            Kind::StopCopy => {
                let mut p = vec![0u8; h.len as usize];
                control_rx.read_exact(&mut p).map_err(|e| proto("stop-copy")(ProtocolError::Io(e)))?;
                break (h.arg, p);
            }
            Kind::Abort => return Err(MemoryError::Aborted("source aborted".into())),
            got => {
                return Err(proto("memory rounds")(ProtocolError::Unexpected {
                    got,
                    expected: "page data or StopCopy",
                }))
            }
        }
    };
    let t_stop = Instant::now();
    let (vcpu_json, bm) = protocol::split_stop_copy(&stop_payload.1).map_err(proto("stop-copy"))?;
    let state: VcpuState = protocol::parse_json(vcpu_json, "vCPU state").map_err(proto("stop-copy"))?;
    if state.pages != pages {
        return Err(reject(&mut control, "vCPU state does not match the guest size".into()));
    }
    let needed = if stop_payload.0 == STOP_ALL_NEEDED {
        Bitmap::full(pages)
    } else {
        Bitmap::decode(bm, pages).ok_or_else(|| proto("stop-copy")(ProtocolError::Malformed("dirty bitmap")))?
    };
    let missing = needed.count();
    let writes_before = state.writes();
    let reads_before = state.reads();

    if missing == 0 {
        // Pre-copy: everything is here already.
        let guest = Guest::start(region.clone(), state);
        control.send(Kind::Resumed, 0, 0, &[]).map_err(proto("resume"))?;
        tracing::info!("guest resumed with all memory present");
        return finish(guest, &region, stats, opts, &mut control, &bytes, writes_before, reads_before, None);
    }

    // Post-/hybrid-copy: drop stale copies of dirty pages, then catch faults on them.
    // Word-at-a-time: the stop-copy must stay short even for multi-GiB guests.
    let present = needed.complement();
    // Only copies the rounds left in place need dropping; early discards did the rest.
    let stale = needed.and(&populated);
    let mut i = 0;
    while let Some(p) = stale.next_set(i) {
        let mut n = 0;
        while p + n < pages && stale.get(p + n) {
            n += 1;
        }
        region.discard(p, n).map_err(sys("madvise"))?;
        i = p + n;
    }
    tracing::debug!(us = t_stop.elapsed().as_micros() as u64, "stale copies dropped");
    let uffd = Uffd::open(0).map_err(sys("cannot open userfaultfd"))?;
    uffd.register_missing(region.base_addr(), region.len_bytes())
        .map_err(sys("cannot register guest memory with userfaultfd"))?;
    let sh = Arc::new(Shared {
        region: region.clone(),
        uffd,
        present,
        requested: Bitmap::new(pages),
        missing: AtomicUsize::new(missing),
        pending: Mutex::new(HashMap::new()),
        latencies: Mutex::new(Vec::new()),
        faults: AtomicU64::new(0),
        prefetch_hits: AtomicU64::new(0),
        discarded: AtomicU64::new(0),
        installed: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let mut demand_link = demand_link.ok_or_else(|| MemoryError::Config("no demand connection".into()))?;
    let fault_thread = {
        let sh = sh.clone();
        std::thread::Builder::new()
            .name("uffd-faults".into())
            .spawn(move || fault_loop(&sh, &mut demand_link))
            .map_err(sys("spawn"))?
    };
    let receivers: Vec<_> = data_rx
        .into_iter()
        .map(|rx| {
            let sh = sh.clone();
            std::thread::spawn(move || receive_loop(&sh, rx))
        })
        .collect();
    let guest = Guest::start(region.clone(), state);
    let t_resume = Instant::now();
    control.send(Kind::Resumed, 0, 0, &[]).map_err(proto("resume"))?;
    tracing::info!(missing, stop_copy_us = t_stop.elapsed().as_micros() as u64, "guest resumed; fetching dirty pages");
    while sh.missing.load(Ordering::Acquire) > 0 {
        if sh.failed.load(Ordering::Acquire) {
            // The guest stays paused on its missing pages; the source still holds them.
            return Err(MemoryError::Aborted("link lost during the dirty-page phase".into()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    stats.resume_to_complete_ms = t_resume.elapsed().as_secs_f64() * 1e3;
    tracing::info!(ms = stats.resume_to_complete_ms, "all pages present");
    // Every page is here: hand the region back to the kernel's ordinary fault handling
    // (untouched zero pages now fill on demand) and stop the fault thread.
    sh.uffd.unregister(region.base_addr(), region.len_bytes()).map_err(sys("cannot unregister userfaultfd"))?;
    sh.done.store(true, Ordering::Release);
    let _ = fault_thread.join();
    stats.page_faults = sh.faults.load(Ordering::Relaxed);
    stats.prefetch_hits = sh.prefetch_hits.load(Ordering::Relaxed);
    stats.push_discarded = sh.discarded.load(Ordering::Relaxed);
    stats.pages_after_resume = sh.installed.load(Ordering::Relaxed);
    let mut lat = sh.latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    stats.fault_latency_p50_us = percentile(&mut lat, 0.50);
    stats.fault_latency_p99_us = percentile(&mut lat, 0.99);
    finish(guest, &region, stats, opts, &mut control, &bytes, writes_before, reads_before, Some(receivers))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    guest: Guest,
    region: &Region,
    mut stats: DestStats,
    opts: &DestOptions,
    control: &mut Link,
    bytes: &AtomicU64,
    writes_before: u64,
    reads_before: u64,
    receivers: Option<Vec<std::thread::JoinHandle<()>>>,
) -> Result<DestStats, MemoryError> {
    std::thread::sleep(opts.run_after);
    let state = guest.stop();
    stats.guest_writes_after_resume = state.writes() - writes_before;
    stats.guest_reads_after_resume = state.reads() - reads_before;
    let v = workload::verify(region, &state);
    if !v.ok {
        tracing::error!(?v, "verification failed: writes were lost");
    }
    stats.verification = Some(v);
    stats.bytes_sent = bytes.load(Ordering::Relaxed) + 512; // + the Complete frame itself (upper bound)
    control.send_json(Kind::Complete, &stats).map_err(proto("completion"))?;
    drop(receivers); // receivers end when the source closes its push streams
    Ok(stats)
}

/// Validates a `Pages`/`Zeros` header and reads its payload; returns `(first, count)`.
fn run_extent(
    h: &protocol::Header,
    pages: usize,
    rx: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<(usize, usize), ProtocolError> {
    let first = usize::try_from(h.arg).map_err(|_| ProtocolError::Malformed("page index"))?;
    let n = if h.kind == Kind::Pages {
        if !(h.len as usize).is_multiple_of(PAGE_SIZE) {
            return Err(ProtocolError::Malformed("page run"));
        }
        buf.resize(h.len as usize, 0);
        rx.read_exact(buf)?;
        h.len as usize / PAGE_SIZE
    } else {
        let mut c = [0u8; 8];
        if h.len != 8 {
            return Err(ProtocolError::Malformed("zero run"));
        }
        rx.read_exact(&mut c)?;
        buf.clear();
        usize::try_from(u64::from_le_bytes(c)).map_err(|_| ProtocolError::Malformed("zero run"))?
    };
    if n == 0 || first.checked_add(n).is_none_or(|e| e > pages) {
        return Err(ProtocolError::Malformed("page range"));
    }
    Ok((first, n))
}

fn fault_loop(sh: &Shared, demand: &mut Link) {
    let mut faults = Vec::new();
    let base = sh.region.base_addr();
    while !sh.done.load(Ordering::Acquire) {
        faults.clear();
        if let Err(e) = sh.uffd.read_faults(5, &mut faults) {
            tracing::error!("userfaultfd read failed: {e}");
            sh.failed.store(true, Ordering::Release);
            return;
        }
        for f in &faults {
            let p = (f.addr - base) / PAGE_SIZE;
            let addr = base + p * PAGE_SIZE;
            if sh.present.get(p) {
                // Present but never populated: a zero page from the rounds. Install it locally.
                if let Ok(Install::Exists) = sh.uffd.zeropage(addr, PAGE_SIZE) {
                    let _ = sh.uffd.wake(addr, PAGE_SIZE);
                }
                continue;
            }
            if sh.requested.set(p) {
                sh.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(p, Instant::now());
                sh.faults.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(page = p, "demand request");
                if demand.send(Kind::Demand, 0, p as u64, &[]).is_err() {
                    sh.failed.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

fn mark_installed(sh: &Shared, first: usize, n: usize, fl: u16) {
    for q in first..first + n {
        if sh.present.set(q) {
            sh.missing.fetch_sub(1, Ordering::AcqRel);
            sh.installed.fetch_add(1, Ordering::Relaxed);
            if fl & flags::PREFETCH != 0 {
                sh.prefetch_hits.fetch_add(1, Ordering::Relaxed);
            }
            if sh.requested.get(q) {
                if let Some(t) = sh.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&q) {
                    sh.latencies.lock().unwrap_or_else(|e| e.into_inner()).push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
    }
}

fn receive_loop(sh: &Shared, mut rx: BufReader<TcpStream>) {
    let mut buf = Vec::new();
    let pages = sh.region.pages();
    loop {
        let h = match protocol::read_header(&mut rx) {
            Ok(h) => h,
            Err(_) => {
                if sh.missing.load(Ordering::Acquire) > 0 {
                    sh.failed.store(true, Ordering::Release);
                }
                return;
            }
        };
        let (first, n) = match (h.kind, run_extent(&h, pages, &mut rx, &mut buf)) {
            (Kind::Pages | Kind::Zeros, Ok(x)) => x,
            _ => {
                tracing::warn!(?h, "bad frame on a data connection");
                sh.failed.store(true, Ordering::Release);
                return;
            }
        };
        let mut i = 0;
        while i < n {
            let addr = sh.region.page_addr(first + i);
            let r = if h.kind == Kind::Pages {
                sh.uffd.copy(addr, &buf[i * PAGE_SIZE..n * PAGE_SIZE])
            } else {
                sh.uffd.zeropage(addr, PAGE_SIZE).map(|r| (r, if r == Install::Done { PAGE_SIZE } else { 0 }))
            };
            let (res, done) = match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!("installing page {} failed: {e}", first + i);
                    sh.failed.store(true, Ordering::Release);
                    return;
                }
            };
            let k = done / PAGE_SIZE;
            mark_installed(sh, first + i, k, h.flags);
            i += k;
            match res {
                Install::Done => {}
                Install::Retry => {}
                Install::Exists => {
                    // Already present: the race between push and demand (or a zero page
                    // installed locally). The page here is newer or equal: discard ours.
                    if h.flags & flags::PUSH != 0 {
                        sh.discarded.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            }
        }
    }
}
