//! Builds the policies workspace (`policies/`) to WebAssembly components and embeds them, and
//! builds the dashboard (`web/`, Leptos) for `wasm32-unknown-unknown` and embeds its assets.
//!
//! The components are built with a nested `cargo build --target wasm32-wasip2 --release` into
//! `target/policies/` (a separate target directory, so it never contends with the outer build's
//! lock and is shared by debug, release and clippy builds). `AMVM_POLICIES_WASM_DIR` tells the
//! crate (and its tests) where the `.wasm` files are.
//!
//! The dashboard is built with a nested `cargo build --release --target wasm32-unknown-unknown
//! -p amvm-web` into `target/web/`, then `wasm-bindgen --target web` (the CLI must be the
//! version of the `wasm-bindgen` crate in Cargo.lock; scripts/install-deps.sh installs it). The
//! JS, `.wasm`, `index.html` and CSS (each with a gzip variant) go to `OUT_DIR/web/`, which
//! `src/api/web.rs` embeds. `AMVM_SKIP_WEB_BUILD=1` embeds a placeholder page instead.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const WEB_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    build_policies();
    build_web();
}

/// A nested cargo without the outer build's settings.
fn nested_cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
        "OUT_DIR",
        "TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn build_web() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ has a parent").to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/web");
    watch(&root.join("web"));
    println!("cargo:rerun-if-changed={}", root.join("Cargo.lock").display());
    println!("cargo:rerun-if-env-changed=AMVM_SKIP_WEB_BUILD");
    let files = ["index.html", "style.css", "amvm-web.js", "amvm-web_bg.wasm"];
    if std::env::var_os("AMVM_SKIP_WEB_BUILD").is_some_and(|v| !v.is_empty() && v != "0") {
        let page = "<!doctype html><title>AMVM</title><p>This amvm was built with AMVM_SKIP_WEB_BUILD: \
                    the dashboard is not included. The API is at <a href=\"/api/v1/status\">/api/v1/status</a>.";
        for f in files {
            std::fs::write(out.join(f), if f == "index.html" { page } else { "" }).expect("write placeholder");
            std::fs::write(out.join(format!("{f}.gz")), "").expect("write placeholder");
        }
        return;
    }
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("web"),
        None => root.join("target").join("web"),
    };
    let mut cmd = nested_cargo();
    cmd.current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "amvm-web", "--target", WEB_TARGET, "--target-dir"])
        .arg(&target_dir)
        // Small and fast: size-optimized, whole-program LTO, no debug info (the workspace's
        // release profile keeps line tables for the host binary).
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "z")
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build the dashboard: {e}"));
    if !status.success() {
        panic!(
            "building the dashboard (web/) for {WEB_TARGET} failed (see above). If the target is missing: \
             `rustup target add {WEB_TARGET}` (scripts/install-deps.sh does it); AMVM_SKIP_WEB_BUILD=1 builds without it."
        );
    }
    let wasm = target_dir.join(WEB_TARGET).join("release").join("amvm-web.wasm");
    let want = locked_version(&root.join("Cargo.lock"), "wasm-bindgen").unwrap_or_default();
    let have = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches("wasm-bindgen ").to_string());
    match have {
        None => panic!(
            "the dashboard needs the wasm-bindgen CLI {want}: `cargo install wasm-bindgen-cli --version {want}` \
             (scripts/install-deps.sh does it), or build with AMVM_SKIP_WEB_BUILD=1"
        ),
        Some(v) if !want.is_empty() && !v.starts_with(&want) => panic!(
            "wasm-bindgen CLI {v} does not match the wasm-bindgen crate {want} in Cargo.lock: \
             `cargo install wasm-bindgen-cli --version {want}` (scripts/install-deps.sh does it)"
        ),
        Some(_) => {}
    }
    let status = Command::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-name", "amvm-web", "--out-dir"])
        .arg(&out)
        .arg(&wasm)
        .status()
        .unwrap_or_else(|e| panic!("cannot run wasm-bindgen: {e}"));
    if !status.success() {
        panic!("wasm-bindgen failed on {}", wasm.display());
    }
    for f in ["index.html", "style.css"] {
        std::fs::copy(root.join("web").join("static").join(f), out.join(f)).expect("copy web/static");
    }
    for f in files {
        let gz = Command::new("gzip").args(["-9", "-n", "-c"]).arg(out.join(f)).output();
        let bytes = match gz {
            Ok(o) if o.status.success() => o.stdout,
            _ => Vec::new(), // served uncompressed
        };
        std::fs::write(out.join(format!("{f}.gz")), bytes).expect("write gzip variant");
    }
}

/// The version of `name` in a Cargo.lock.
fn locked_version(lock: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{name}\"") {
            let v = lines.next()?.trim().strip_prefix("version = \"")?.trim_end_matches('"').to_string();
            return Some(v);
        }
    }
    None
}

fn build_policies() {
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

    let mut cmd = nested_cargo();
    cmd.current_dir(&policies).args(["build", "--release", "--target", TARGET, "--target-dir"]).arg(&target_dir);
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
