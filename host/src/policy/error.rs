//! Errors of the policy runtime. Every way a module can fail maps to one variant; none panics
//! the host.
//!
//! **Invariant**: `Display` is exactly one line that names the cause. Every piece of text a
//! module controls (names, its refusal, its log, wasmtime's messages about its binary) goes
//! through [`clean`] (control characters escaped, length bounded), so a message can be printed,
//! logged or returned over HTTP as is.

use thiserror::Error;

use super::sanitize::clean;

/// Why loading, configuring or calling a policy module failed.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build with `--target wasm32-wasip2` (see sdk/README.md)"
    )]
    CoreModule,
    #[error("invalid WebAssembly component: {}", clean(.0))]
    Invalid(String),
    /// The binary is larger or more complex than the sandbox compiles (checked before compiling).
    #[error("too complex to compile: {}", clean(.0))]
    TooComplex(String),
    #[error("compilation took longer than {secs} s and was abandoned")]
    CompileTimeout { secs: u64 },
    #[error("the component exports no `describe` function: not an AMVM policy (amvm:policy@0.1.0)")]
    MissingDescribe,
    #[error("unknown policy world: the component exports {}; expected one of the worlds threshold, selection or placement of amvm:policy@0.1.0", clean(.exports))]
    UnknownWorld { exports: String },
    #[error("the component exports functions of several worlds ({}); a policy exports exactly one", clean(.worlds))]
    SeveralWorlds { worlds: String },
    #[error("the component exports {} besides the {world} world; a policy exports exactly one world", clean(.exports))]
    ExtraExports { world: &'static str, exports: String },
    #[error("the component does not match the {world} world: {}", clean(.reason))]
    WorldMismatch { world: &'static str, reason: String },
    #[error("the component exports the {world} world but its describe declares a {declared} policy")]
    KindMismatch { world: &'static str, declared: &'static str },
    #[error("the module is a {found} policy, but a {expected} policy is needed here")]
    WrongKind { expected: &'static str, found: &'static str },
    #[error("invalid descriptor: {}", clean(.0))]
    BadDescriptor(String),
    #[error("bad parameter: {}", clean(.0))]
    BadParameter(String),
    #[error("the module rejected its configuration: {}", clean(.0))]
    Rejected(String),
    #[error("deadline exceeded: the call ran longer than {deadline_ms} ms and was interrupted")]
    DeadlineExceeded { deadline_ms: u64 },
    #[error("memory limit: the module's memories and tables together would exceed {limit_mib} MiB")]
    MemoryLimit { limit_mib: u64 },
    #[error("resource limit: the module instantiates more {what} than the sandbox allows ({limit})")]
    ResourceLimit { what: &'static str, limit: usize },
    #[error("fuel exhausted: the call used more than {fuel} units")]
    FuelExhausted { fuel: u64 },
    #[error("stack overflow in the module (unbounded recursion?)")]
    StackOverflow,
    /// The module called an import the sandbox does not provide (WASI filesystem, clocks, …).
    #[error("denied: the module called `{}`, which the sandbox does not provide (policies get no filesystem, clock, randomness or network)", clean(.import))]
    DeniedImport { import: String },
    #[error("the module trapped: {}{}", clean(.message), log_suffix(.log))]
    Trap { message: String, log: Option<String> },
    #[error("invalid output from {function}: {}", clean(.reason))]
    InvalidOutput { function: &'static str, reason: String },
    #[error("cannot read {}: {source}", clean(.path))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy runtime error: {}", clean(.0))]
    Internal(String),
}

fn log_suffix(log: &Option<String>) -> String {
    match log {
        Some(line) => format!(" (module log: {})", clean(line)),
        None => String::new(),
    }
}

impl PolicyError {
    /// A short machine-readable name of the failure, for reports and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::NotWasm => "not-wasm",
            PolicyError::CoreModule => "core-module",
            PolicyError::Invalid(_) => "invalid",
            PolicyError::TooComplex(_) => "too-complex",
            PolicyError::CompileTimeout { .. } => "compile-timeout",
            PolicyError::MissingDescribe => "missing-describe",
            PolicyError::UnknownWorld { .. } => "unknown-world",
            PolicyError::SeveralWorlds { .. } => "several-worlds",
            PolicyError::ExtraExports { .. } => "extra-exports",
            PolicyError::WorldMismatch { .. } => "world-mismatch",
            PolicyError::KindMismatch { .. } => "kind-mismatch",
            PolicyError::WrongKind { .. } => "wrong-kind",
            PolicyError::BadDescriptor(_) => "bad-descriptor",
            PolicyError::BadParameter(_) => "bad-parameter",
            PolicyError::Rejected(_) => "rejected",
            PolicyError::DeadlineExceeded { .. } => "deadline",
            PolicyError::MemoryLimit { .. } => "memory-limit",
            PolicyError::ResourceLimit { .. } => "resource-limit",
            PolicyError::FuelExhausted { .. } => "fuel",
            PolicyError::StackOverflow => "stack-overflow",
            PolicyError::DeniedImport { .. } => "denied-import",
            PolicyError::Trap { .. } => "trap",
            PolicyError::InvalidOutput { .. } => "invalid-output",
            PolicyError::Io { .. } => "io",
            PolicyError::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_one_clean_line() {
        let evil = "a\nOK: forged\x1b[2J\u{202e}".repeat(100);
        let errors = [
            PolicyError::Invalid(evil.clone()),
            PolicyError::Rejected(evil.clone()),
            PolicyError::Trap { message: evil.clone(), log: Some(evil.clone()) },
            PolicyError::UnknownWorld { exports: evil.clone() },
            PolicyError::BadParameter(evil.clone()),
            PolicyError::DeniedImport { import: evil.clone() },
            PolicyError::Io { path: evil.clone(), source: std::io::Error::other("x") },
        ];
        for e in errors {
            let s = e.to_string();
            assert_eq!(s.lines().count(), 1, "{s}");
            assert!(!s.contains('\x1b') && !s.contains('\u{202e}'), "{s}");
            assert!(s.chars().count() < 1000, "{} chars", s.chars().count());
        }
    }
}
