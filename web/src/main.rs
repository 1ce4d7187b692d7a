//! AMVM web dashboard: a Leptos client-side app for `wasm32-unknown-unknown`.
//!
//! `host/build.rs` builds it in release, runs the wasm-bindgen CLI and embeds the output in the
//! `amvm` binary, which serves it at `/` (see `host/src/api/web.rs`). On other targets this is an
//! empty binary: the workspace's clippy and tests compile it for the host.

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod chart;
#[cfg(target_arch = "wasm32")]
mod fmt;
#[cfg(target_arch = "wasm32")]
mod pages;
#[cfg(target_arch = "wasm32")]
mod store;

#[cfg(target_arch = "wasm32")]
fn main() {
    leptos::mount::mount_to_body(app::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("amvm-web is the dashboard's WebAssembly app; `amvm demo` serves it");
}
