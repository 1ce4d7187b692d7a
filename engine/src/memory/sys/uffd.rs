//! userfaultfd(2): MISSING-mode demand faults (destination) and write-protect dirty tracking
//! (source). Constants and structures follow `include/uapi/linux/userfaultfd.h`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const UFFD_API: u64 = 0xAA;
const UFFDIO: u64 = 0xAA;

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (UFFDIO << 8) | nr
}
const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (UFFDIO << 8) | nr
}

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

const UFFDIO_API: u64 = iowr(0x3F, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = iowr(0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_UNREGISTER: u64 = ior(0x01, std::mem::size_of::<UffdioRange>());
const UFFDIO_WAKE: u64 = ior(0x02, std::mem::size_of::<UffdioRange>());
const UFFDIO_COPY: u64 = iowr(0x03, std::mem::size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, std::mem::size_of::<UffdioZeropage>());
const UFFDIO_WRITEPROTECT: u64 = iowr(0x06, std::mem::size_of::<UffdioWriteprotect>());

/// `UFFD_FEATURE_PAGEFAULT_FLAG_WP`.
pub const FEATURE_WP: u64 = 1 << 0;
/// `UFFD_FEATURE_WP_UNPOPULATED`.
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC` (Linux 6.7): the kernel resolves WP faults itself and records
/// them for `PAGEMAP_SCAN`.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;

const REGISTER_MODE_MISSING: u64 = 1 << 0;
const REGISTER_MODE_WP: u64 = 1 << 1;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const EVENT_PAGEFAULT: u8 = 0x12;
const PAGEFAULT_FLAG_WP: u64 = 1 << 1;

/// One page-fault event read from the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Faulting address (page-aligned by the kernel unless EXACT_ADDRESS is requested).
    pub addr: usize,
    /// The fault is a write-protect fault (else a missing-page fault).
    pub wp: bool,
}

/// Outcome of installing a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// The page was installed.
    Done,
    /// The page was already present (a push raced a demand reply or a guest write): discard.
    Exists,
    /// The kernel asked to retry (the address space was changing).
    Retry,
}

/// An open userfaultfd with the API handshake done.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    features: u64,
}

impl Uffd {
    /// Opens a non-blocking userfaultfd and negotiates `features`.
    pub fn open(features: u64) -> io::Result<Self> {
        // SAFETY: plain syscall with flag arguments; returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = i32::try_from(raw).map_err(|_| io::Error::other("userfaultfd returned a bad fd"))?;
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut api = UffdioApi { api: UFFD_API, features, ioctls: 0 };
        // SAFETY: UFFDIO_API with a properly sized, initialised struct on our own fd.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, &mut api as *mut UffdioApi) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, features: api.features })
    }

    /// Features the kernel granted.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Raw descriptor, for poll(2).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn register(&self, start: usize, len: usize, mode: u64) -> io::Result<()> {
        let mut reg = UffdioRegister { range: range(start, len), mode, ioctls: 0 };
        // SAFETY: UFFDIO_REGISTER with a valid struct; the kernel validates the range.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER as _, &mut reg as *mut UffdioRegister) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `[start, start+len)` for missing-page faults.
    pub fn register_missing(&self, start: usize, len: usize) -> io::Result<()> {
        self.register(start, len, REGISTER_MODE_MISSING)
    }

    /// Ends registration of `[start, start+len)`: later faults there are ordinary faults, and
    /// threads still waiting on it are woken to retry.
    pub fn unregister(&self, start: usize, len: usize) -> io::Result<()> {
        let mut r = range(start, len);
        // SAFETY: UFFDIO_UNREGISTER with a valid range struct.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_UNREGISTER as _, &mut r as *mut UffdioRange) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `[start, start+len)` for write-protect tracking.
    pub fn register_wp(&self, start: usize, len: usize) -> io::Result<()> {
        self.register(start, len, REGISTER_MODE_WP)
    }

    /// Sets (`protect = true`) or clears write protection on a range; clearing wakes waiters.
    pub fn write_protect(&self, start: usize, len: usize, protect: bool) -> io::Result<()> {
        let mut wp =
            UffdioWriteprotect { range: range(start, len), mode: if protect { WRITEPROTECT_MODE_WP } else { 0 } };
        // SAFETY: UFFDIO_WRITEPROTECT with a valid struct on a registered range.
        let rc =
            unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, &mut wp as *mut UffdioWriteprotect) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Atomically installs `src` (whole pages) at `dst` and wakes threads faulting there.
    /// Returns how many leading bytes were installed; `Install::Exists` means the page right
    /// after them was already present (the caller skips it and continues).
    pub fn copy(&self, dst: usize, src: &[u8]) -> io::Result<(Install, usize)> {
        let mut c = UffdioCopy { dst: dst as u64, src: src.as_ptr() as u64, len: src.len() as u64, mode: 0, copy: 0 };
        // SAFETY: `src` is a live buffer of `len` bytes; the kernel copies it into the
        // registered range at `dst` and fails with EEXIST if a page is already present.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_COPY as _, &mut c as *mut UffdioCopy) };
        let done = if rc == 0 { src.len() } else { usize::try_from(c.copy).unwrap_or(0) };
        Ok((install_result(rc)?, done))
    }

    /// Installs zero pages over `[dst, dst+len)` and wakes waiters.
    pub fn zeropage(&self, dst: usize, len: usize) -> io::Result<Install> {
        let mut z = UffdioZeropage { range: range(dst, len), mode: 0, zeropage: 0 };
        // SAFETY: UFFDIO_ZEROPAGE on a registered range with a valid struct.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_ZEROPAGE as _, &mut z as *mut UffdioZeropage) };
        install_result(rc)
    }

    /// Wakes threads blocked on `[start, start+len)` (after a page became present elsewhere).
    pub fn wake(&self, start: usize, len: usize) -> io::Result<()> {
        let mut r = range(start, len);
        // SAFETY: UFFDIO_WAKE with a valid range struct.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_WAKE as _, &mut r as *mut UffdioRange) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for events, then reads all queued page faults into `out`.
    pub fn read_faults(&self, timeout_ms: i32, out: &mut Vec<Fault>) -> io::Result<()> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if rc == 0 {
            return Ok(());
        }
        let mut buf = [0u8; 32 * 64];
        loop {
            // SAFETY: reading into a stack buffer of the stated length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return if e.kind() == io::ErrorKind::WouldBlock { Ok(()) } else { Err(e) };
            }
            let n = n as usize;
            for msg in buf[..n].chunks_exact(32) {
                if msg[0] != EVENT_PAGEFAULT {
                    continue;
                }
                let flags = u64::from_ne_bytes(msg[8..16].try_into().unwrap_or_default());
                let addr = u64::from_ne_bytes(msg[16..24].try_into().unwrap_or_default()) as usize;
                out.push(Fault { addr, wp: flags & PAGEFAULT_FLAG_WP != 0 });
            }
            if n < buf.len() {
                return Ok(());
            }
        }
    }
}

fn range(start: usize, len: usize) -> UffdioRange {
    UffdioRange { start: start as u64, len: len as u64 }
}

fn install_result(rc: i32) -> io::Result<Install> {
    if rc == 0 {
        return Ok(Install::Done);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(Install::Exists)
    } else if e.raw_os_error() == Some(libc::EAGAIN) {
        Ok(Install::Retry)
    } else {
        Err(e)
    }
}
