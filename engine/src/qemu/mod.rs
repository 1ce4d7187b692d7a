//! The QEMU side of AMVM (issue #10): the lab guest booted directly from Debian's kernel and a
//! busybox initramfs (`scripts/build-guest.sh`), KVM when it boots a guest and TCG otherwise,
//! its QMP session, and live migration between two QEMU processes driven over QMP
//! ([`migrate`]: pre-copy, post-copy and hybrid-copy), and the same migration through a libvirt
//! daemon ([`libvirt::migrate_domain`]).

pub mod guest;
pub mod libvirt;
pub mod migrate;
pub mod qmp;

pub use guest::{Accel, Guest, GuestError, GuestImage, GuestOptions, Heartbeat};
pub use migrate::{migrate, HybridSwitch, MigrateError, MigrateOptions, Phase, Progress, QemuReport};
pub use qmp::{Qmp, QmpError};
