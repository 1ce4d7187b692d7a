//! The only place `unsafe` lives in the memory engine: the guest mapping, userfaultfd and
//! `PAGEMAP_SCAN`. Raw descriptors become `OwnedFd` right after the syscall.

pub mod mmap;
pub mod pagemap;
pub mod uffd;
