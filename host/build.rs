//! Builds the policies workspace (`policies/`) to WebAssembly components and embeds them.
//!
//! The components are built with a nested `cargo build --target wasm32-wasip2 --release` into
//! `target/policies/` (a separate target directory, so it never contends with the outer build's
//! lock and is shared by debug, release and clippy builds). `AMVM_POLICIES_WASM_DIR` tells the
//! crate (and its tests) where the `.wasm` files are.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ has a parent").to_path_buf();
    let policies = root.join("policies");
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("policies"),
        None => root.join("target").join("policies"),
    };

    for dir in ["policies", "sdk"] {
        watch(&root.join(dir));
    }
    println!("cargo:rerun-if-env-changed=AMVM_SKIP_POLICY_BUILD");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&policies)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PKG_NAME")
        .env_remove("OUT_DIR")
        .env_remove("TARGET");
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build the policies: {e}"));
    if !status.success() {
        panic!(
            "building the built-in policies for {TARGET} failed (see above). If the target is missing: \
             `rustup target add {TARGET}` (scripts/install-deps.sh does it)."
        );
    }
    let wasm_dir = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=AMVM_POLICIES_WASM_DIR={}", wasm_dir.display());
}

/// Re-runs this script when any file under `dir` changes (except build output).
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            watch(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
