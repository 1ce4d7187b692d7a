//! Logging to the host (the only service a policy has). Messages are bounded and kept by the
//! host beside the call that wrote them; panics are routed here so a trap carries its reason.

/// Log levels.
pub use crate::bindings::amvm::policy::host::Level;

/// Writes a line to the policy's log. Outside a component (native tests) it goes to stderr.
pub fn write(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    crate::bindings::amvm::policy::host::log(level, message);
    #[cfg(not(target_family = "wasm"))]
    eprintln!("[policy {level:?}] {message}");
}

/// Routes panic messages to the host log (installed by the export glue before the first call).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        write(Level::Error, &format!("policy panicked: {info}"));
    }));
}
