//! The QEMU side of AMVM (issue #10): the lab guest booted directly from Debian's kernel and a
//! busybox initramfs (`scripts/build-guest.sh`), KVM when it boots a guest and TCG otherwise.
//! The libvirt and QMP migration backends will live here beside it.

pub mod guest;

pub use guest::{Accel, Guest, GuestError, GuestImage, GuestOptions, Heartbeat};
