//! Shared by the lab-guest tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use amvm_engine::qemu::GuestImage;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The guest image under target/guest, (re)built by `scripts/build-guest.sh` when it is missing
/// or older than the workload's source or the script.
pub fn image() -> GuestImage {
    let dir = repo().join("target/guest");
    let built = mtime(&dir.join("initrd.img"));
    let sources = [repo().join("guest/src/main.rs"), repo().join("scripts/build-guest.sh")];
    if GuestImage::in_dir(&dir).is_err() || sources.iter().any(|s| mtime(s) > built) {
        let status =
            Command::new(repo().join("scripts/build-guest.sh")).arg(&dir).status().expect("run build-guest.sh");
        assert!(status.success(), "scripts/build-guest.sh failed");
    }
    GuestImage::in_dir(&dir).unwrap()
}
