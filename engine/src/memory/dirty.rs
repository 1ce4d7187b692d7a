//! Dirty-page tracking at the source with userfaultfd write-protect.
//!
//! Preferred: **asynchronous WP** (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7): the kernel resolves a
//! write to a protected page itself (about 1 µs) and `PAGEMAP_SCAN` returns the written pages
//! and protects them again in one call. Fallback: **synchronous WP**: a handler thread receives
//! each first write as a fault, records the page and unprotects it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::bitmap::Bitmap;
use super::sys::mmap::{Region, PAGE_SIZE};
use super::sys::pagemap::Pagemap;
use super::sys::uffd::{self, Uffd};

/// Which mechanism tracks dirty pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Asynchronous write-protect plus `PAGEMAP_SCAN`.
    AsyncWp,
    /// Synchronous write-protect faults handled by a thread.
    SyncWp,
}

impl Method {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::AsyncWp => "uffd-wp-async+pagemap-scan",
            Self::SyncWp => "uffd-wp-sync",
        }
    }
}

/// Tracks writes to one region.
#[derive(Debug)]
pub struct DirtyTracker {
    region: Arc<Region>,
    uffd: Arc<Uffd>,
    method: Method,
    pagemap: Option<Pagemap>,
    sync: Option<SyncState>,
}

#[derive(Debug)]
struct SyncState {
    dirty: Arc<Bitmap>,
    lock: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DirtyTracker {
    /// Registers `region` for write-protect tracking (async if the kernel can, unless
    /// `force_sync`). Nothing is protected until `start`.
    pub fn new(region: Arc<Region>, force_sync: bool) -> std::io::Result<Self> {
        if !force_sync {
            match Self::new_async(region.clone()) {
                Ok(t) => return Ok(t),
                Err(e) => tracing::warn!("async write-protect unavailable ({e}); using synchronous write-protect"),
            }
        }
        Self::new_sync(region)
    }

    fn new_async(region: Arc<Region>) -> std::io::Result<Self> {
        let want = uffd::FEATURE_WP | uffd::FEATURE_WP_ASYNC | uffd::FEATURE_WP_UNPOPULATED;
        let u = Uffd::open(want)?;
        if u.features() & uffd::FEATURE_WP_ASYNC == 0 {
            return Err(std::io::Error::other("kernel lacks UFFD_FEATURE_WP_ASYNC"));
        }
        u.register_wp(region.base_addr(), region.len_bytes())?;
        let pagemap = Pagemap::open()?;
        // Probe PAGEMAP_SCAN once (returns ENOTTY on kernels without it).
        pagemap.scan_written(region.base_addr(), PAGE_SIZE, |_, _| {})?;
        Ok(Self { region, uffd: Arc::new(u), method: Method::AsyncWp, pagemap: Some(pagemap), sync: None })
    }

    fn new_sync(region: Arc<Region>) -> std::io::Result<Self> {
        // Ask for WP on unpopulated pages too (Linux 6.4); older kernels refuse: retry without.
        let u =
            Uffd::open(uffd::FEATURE_WP | uffd::FEATURE_WP_UNPOPULATED).or_else(|_| Uffd::open(uffd::FEATURE_WP))?;
        let u = Arc::new(u);
        u.register_wp(region.base_addr(), region.len_bytes())?;
        let dirty = Arc::new(Bitmap::new(region.pages()));
        let lock = Arc::new(Mutex::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (u, dirty, lock, stop, region) = (u.clone(), dirty.clone(), lock.clone(), stop.clone(), region.clone());
            std::thread::Builder::new()
                .name("wp-faults".into())
                .spawn(move || sync_handler(&region, &u, &dirty, &lock, &stop))?
        };
        Ok(Self {
            region,
            uffd: u,
            method: Method::SyncWp,
            pagemap: None,
            sync: Some(SyncState { dirty, lock, stop, thread: Some(thread) }),
        })
    }

    /// The mechanism in use.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Write-protects the whole region: from now on every first write is recorded.
    pub fn start(&self) -> std::io::Result<()> {
        self.uffd.write_protect(self.region.base_addr(), self.region.len_bytes(), true)
    }

    /// Adds every page written since the last call (or `start`) to `out` and re-protects them.
    /// Returns how many pages were found.
    pub fn collect(&self, out: &Bitmap) -> std::io::Result<usize> {
        let mut n = 0;
        if let Some(pm) = &self.pagemap {
            pm.scan_written(self.region.base_addr(), self.region.len_bytes(), |first, count| {
                out.set_range(first, count);
                n += count;
            })?;
        } else if let Some(s) = &self.sync {
            let mut i = 0;
            while let Some(p) = s.dirty.next_set(i) {
                // Clear then protect under the handler's lock: a write after the clear either
                // lands before the protect (and is sent with this copy) or faults again.
                let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.dirty.clear(p);
                self.uffd.write_protect(self.region.page_addr(p), PAGE_SIZE, true)?;
                out.set(p);
                n += 1;
                i = p + 1;
            }
        }
        Ok(n)
    }
}

fn sync_handler(region: &Region, u: &Uffd, dirty: &Bitmap, lock: &Mutex<()>, stop: &AtomicBool) {
    let mut faults = Vec::new();
    while !stop.load(Ordering::Acquire) {
        faults.clear();
        if let Err(e) = u.read_faults(20, &mut faults) {
            tracing::error!("write-protect fault read failed: {e}");
            return;
        }
        for f in &faults {
            let page = (f.addr - region.base_addr()) / PAGE_SIZE;
            let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
            dirty.set(page);
            if let Err(e) = u.write_protect(f.addr & !(PAGE_SIZE - 1), PAGE_SIZE, false) {
                tracing::error!("cannot unprotect page {page}: {e}");
            }
        }
    }
}

impl Drop for DirtyTracker {
    fn drop(&mut self) {
        if let Some(s) = &mut self.sync {
            s.stop.store(true, Ordering::Release);
            // Unprotect everything so no vCPU stays blocked once the handler is gone.
            let _ = self.uffd.write_protect(self.region.base_addr(), self.region.len_bytes(), false);
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        } else {
            let _ = self.uffd.write_protect(self.region.base_addr(), self.region.len_bytes(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(force_sync: bool) {
        let region = Arc::new(Region::new(256).expect("mmap"));
        for p in 0..256 {
            region.write_u64(p, 0, 1);
        }
        let t = DirtyTracker::new(region.clone(), force_sync).expect("tracker");
        t.start().expect("protect");
        let writer = {
            let r = region.clone();
            std::thread::spawn(move || {
                for p in [3usize, 4, 100, 255] {
                    r.write_u64(p, 7, 42);
                }
            })
        };
        writer.join().expect("writer");
        let out = Bitmap::new(256);
        t.collect(&out).expect("collect");
        assert_eq!(out.ones(), vec![3, 4, 100, 255], "{:?}", t.method());
        // Re-protected: a second collect without writes finds nothing, a new write is seen.
        let out = Bitmap::new(256);
        t.collect(&out).expect("collect");
        assert_eq!(out.count(), 0);
        let r = region.clone();
        std::thread::spawn(move || r.write_u64(9, 0, 5)).join().expect("writer");
        t.collect(&out).expect("collect");
        assert_eq!(out.ones(), vec![9]);
    }

    #[test]
    fn async_tracker_sees_exactly_the_written_pages() {
        check(false);
    }

    #[test]
    fn sync_tracker_sees_exactly_the_written_pages() {
        check(true);
    }
}
