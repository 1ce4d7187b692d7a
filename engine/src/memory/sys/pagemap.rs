//! `PAGEMAP_SCAN` (Linux 6.7+) on `/proc/self/pagemap`: returns the pages written since the
//! last scan under asynchronous userfaultfd write-protect and re-protects them atomically.
//! Structures follow `include/uapi/linux/fs.h`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::mmap::PAGE_SIZE;

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGEMAP_SCAN: u64 = (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// A `/proc/self/pagemap` handle for dirty scans.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
}

impl Pagemap {
    /// Opens `/proc/self/pagemap`.
    pub fn open() -> io::Result<Self> {
        Ok(Self { file: File::open("/proc/self/pagemap")? })
    }

    /// Calls `f(first_page_offset, count)` for every run of pages written in `[start, start+len)`
    /// since the last scan, and write-protects them again (async WP must be active).
    pub fn scan_written(&self, start: usize, len: usize, mut f: impl FnMut(usize, usize)) -> io::Result<()> {
        let mut regions = vec![PageRegion::default(); 512];
        let end = (start + len) as u64;
        let mut cur = start as u64;
        while cur < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                start: cur,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                category_mask: PAGE_IS_WRITTEN,
                return_mask: PAGE_IS_WRITTEN,
                ..Default::default()
            };
            // SAFETY: PAGEMAP_SCAN with a correctly sized argument whose `vec` points at a live
            // buffer of `vec_len` regions; the kernel writes at most that many.
            let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            for r in &regions[..rc as usize] {
                let first = (r.start as usize - start) / PAGE_SIZE;
                let count = (r.end - r.start) as usize / PAGE_SIZE;
                f(first, count);
            }
            if arg.walk_end <= cur {
                return Err(io::Error::other("PAGEMAP_SCAN made no progress"));
            }
            cur = arg.walk_end;
        }
        Ok(())
    }
}
