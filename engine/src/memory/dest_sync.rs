//! The destination after resume: the userfaultfd fault thread (demand requests), the
//! receivers that install pages, and the bookkeeping that survives a lost link.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::bitmap::Bitmap;
use super::link::Link;
use super::protocol::{self, flags, Kind};
use super::session::Sockets;
use super::sys::mmap::{Region, PAGE_SIZE};
use super::sys::uffd::{Install, Uffd};

/// State shared by the fault thread and the receivers; it outlives sessions.
pub(crate) struct Shared {
    pub region: Arc<Region>,
    pub uffd: Uffd,
    /// Pages present here (acknowledged: a resumed source re-sends only the others).
    pub present: Bitmap,
    /// Pages a demand request was issued for.
    pub requested: Bitmap,
    pub missing: AtomicUsize,
    pending: Mutex<HashMap<usize, Instant>>,
    pub latencies: Mutex<Vec<f64>>,
    pub faults: AtomicU64,
    pub prefetch_hits: AtomicU64,
    pub discarded: AtomicU64,
    pub installed: AtomicU64,
    /// A local failure (userfaultfd), not a link loss: the migration cannot go on.
    pub failed: AtomicBool,
    pub done: AtomicBool,
    /// The current session's demand connection; `None` while the link is down.
    demand: Mutex<Option<(Link, Arc<Sockets>)>>,
}

impl Shared {
    pub fn new(region: Arc<Region>, uffd: Uffd, present: Bitmap, missing: usize) -> Self {
        let pages = region.pages();
        Self {
            region,
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
            demand: Mutex::new(None),
        }
    }

    /// Installs a (new) demand connection and re-issues every request still unanswered: the
    /// replies of the lost session may never have arrived.
    pub fn attach_demand(&self, mut link: Link, sockets: Arc<Sockets>) {
        let mut g = self.demand.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        let mut i = 0;
        while let Some(p) = self.requested.next_set(i) {
            i = p + 1;
            if self.present.get(p) {
                continue;
            }
            if link.send(Kind::Demand, 0, p as u64, &[]).is_err() {
                sockets.kill();
                return;
            }
            n += 1;
        }
        if n > 0 {
            tracing::info!(requests = n, "re-issued outstanding demand requests");
        }
        *g = Some((link, sockets));
    }

    /// Forgets the demand connection (its session is gone).
    pub fn detach_demand(&self) {
        *self.demand.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Pages still missing, as a bitmap (the `Missing` frame).
    pub fn missing_bitmap(&self) -> Bitmap {
        self.present.complement()
    }
}

pub(crate) fn fault_loop(sh: &Shared) {
    let _rt = super::session::Realtime::raise("fault");
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
                // While the link is down the request is only recorded: `attach_demand` sends it.
                let mut g = sh.demand.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((link, sockets)) = g.as_mut() {
                    if link.send(Kind::Demand, 0, p as u64, &[]).is_err() {
                        sockets.kill();
                        *g = None;
                    }
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

/// Installs every page arriving on `rx` until the connection ends. A connection that ends
/// (or breaks the protocol) while pages are missing kills its whole session.
pub(crate) fn receive_loop(sh: &Shared, mut rx: BufReader<TcpStream>, sockets: &Sockets, demand: bool) {
    // Demand replies are latency-critical; pushes are bulk.
    let _rt = demand.then(|| super::session::Realtime::raise("install"));
    let mut buf = Vec::new();
    let pages = sh.region.pages();
    loop {
        let h = match protocol::read_header(&mut rx) {
            Ok(h) => h,
            Err(_) => {
                if sh.missing.load(Ordering::Acquire) > 0 {
                    sockets.kill();
                }
                return;
            }
        };
        let (first, n) = match (h.kind, super::dest::run_extent(&h, pages, &mut rx, &mut buf)) {
            (Kind::Pages | Kind::Zeros, Ok(x)) => x,
            _ => {
                if !sockets.is_dead() {
                    tracing::warn!(?h, "bad frame on a data connection");
                }
                sockets.kill();
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
                    sockets.kill();
                    return;
                }
            };
            let k = done / PAGE_SIZE;
            mark_installed(sh, first + i, k, h.flags);
            i += k;
            match res {
                Install::Done | Install::Retry => {}
                Install::Exists => {
                    // Already present: the race between push and demand, a zero page installed
                    // locally, or a page re-sent after a lost link. Ours is newer or equal.
                    if h.flags & flags::PUSH != 0 {
                        sh.discarded.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            }
        }
    }
}
