//! Helpers shared by the end-to-end tests in `tests/tests/`.

use std::path::PathBuf;

/// Path of the `amvm` binary built by this workspace (`target/<profile>/amvm`).
pub fn amvm_bin() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop(); // deps/
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("amvm")
}
