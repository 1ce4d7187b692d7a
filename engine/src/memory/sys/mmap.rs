//! Guest memory: one private anonymous mapping, accessed like a VMM accesses guest RAM.
//!
//! Guest memory is shared between the guest's vCPU threads and the migration threads, which
//! read and write it concurrently by design (exactly as a hypervisor does). All access goes
//! through raw-pointer copies in this module; no Rust reference to guest memory ever escapes.

use std::io;
use std::ptr::NonNull;

/// Size of one guest page in bytes.
pub const PAGE_SIZE: usize = 4096;

/// A page-aligned anonymous private mapping of `pages` pages.
#[derive(Debug)]
pub struct Region {
    base: NonNull<u8>,
    pages: usize,
}

// SAFETY: the mapping is plain memory owned by this value; concurrent access is by raw copies
// only, the same contract a VMM has with guest RAM (torn pages are caught by dirty tracking).
unsafe impl Send for Region {}
// SAFETY: see `Send`; shared access never creates Rust references into the mapping.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `pages` pages of zero-filled, not yet populated memory.
    pub fn new(pages: usize) -> io::Result<Self> {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad region size"))?;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, pages })
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Start address of the mapping.
    pub fn base_addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// Address of page `page` (must be in range).
    pub fn page_addr(&self, page: usize) -> usize {
        assert!(page < self.pages, "page {page} out of range");
        self.base_addr() + page * PAGE_SIZE
    }

    /// Copies `out.len() / PAGE_SIZE` pages starting at `first` out of guest memory.
    pub fn read_pages(&self, first: usize, out: &mut [u8]) {
        let n = out.len() / PAGE_SIZE;
        assert!(out.len().is_multiple_of(PAGE_SIZE) && first + n <= self.pages, "read out of range");
        // SAFETY: the source range lies inside the mapping (checked above) and `out` is a
        // distinct Rust buffer; concurrent guest writes can tear a page, which dirty tracking
        // detects (the page is sent again).
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(first * PAGE_SIZE), out.as_mut_ptr(), out.len());
        }
    }

    /// Copies pages into guest memory starting at `first` (used while the guest is stopped).
    pub fn write_pages(&self, first: usize, data: &[u8]) {
        let n = data.len() / PAGE_SIZE;
        assert!(data.len().is_multiple_of(PAGE_SIZE) && first + n <= self.pages, "write out of range");
        // SAFETY: the destination range lies inside the mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(first * PAGE_SIZE), data.len());
        }
    }

    /// Reads the `word`-th u64 of page `page`.
    pub fn read_u64(&self, page: usize, word: usize) -> u64 {
        assert!(page < self.pages && word < PAGE_SIZE / 8, "read_u64 out of range");
        // SAFETY: in range and 8-byte aligned (pages are page-aligned); volatile because other
        // threads and the kernel (userfaultfd) change guest memory behind the compiler's back.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().add(page * PAGE_SIZE + word * 8).cast::<u64>()) }
    }

    /// Writes the `word`-th u64 of page `page`.
    pub fn write_u64(&self, page: usize, word: usize, value: u64) {
        assert!(page < self.pages && word < PAGE_SIZE / 8, "write_u64 out of range");
        // SAFETY: in range and aligned, see `read_u64`.
        unsafe { std::ptr::write_volatile(self.base.as_ptr().add(page * PAGE_SIZE + word * 8).cast::<u64>(), value) }
    }

    /// Drops the contents of pages `[first, first + count)`: they read as zero and, under
    /// userfaultfd MISSING registration, fault again on next access.
    pub fn discard(&self, first: usize, count: usize) -> io::Result<()> {
        assert!(first + count <= self.pages, "discard out of range");
        if count == 0 {
            return Ok(());
        }
        // SAFETY: the range lies inside our own mapping; MADV_DONTNEED on private anonymous
        // memory only replaces contents with zero-fill-on-demand.
        let rc = unsafe {
            libc::madvise(self.base.as_ptr().add(first * PAGE_SIZE).cast(), count * PAGE_SIZE, libc::MADV_DONTNEED)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; nothing refers to it after drop.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len_bytes());
        }
    }
}
