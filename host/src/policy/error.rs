//! Errors of the policy runtime. Every way a module can fail maps to one variant; none panics
//! the host.

use thiserror::Error;

/// Why loading, configuring or calling a policy module failed.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build with `--target wasm32-wasip2` (see sdk/README.md)"
    )]
    CoreModule,
    #[error("invalid WebAssembly component: {0}")]
    Invalid(String),
    #[error("the component exports no `describe` function: not an AMVM policy (amvm:policy@0.1.0)")]
    MissingDescribe,
    #[error("unknown policy world: the component exports {exports}; expected one of the worlds threshold, selection or placement of amvm:policy@0.1.0")]
    UnknownWorld { exports: String },
    #[error("the component does not match the {world} world: {reason}")]
    WorldMismatch { world: &'static str, reason: String },
    #[error("the module is a {found} policy, but a {expected} policy is needed here")]
    WrongKind { expected: &'static str, found: &'static str },
    #[error("bad parameter: {0}")]
    BadParameter(String),
    #[error("the module rejected its configuration: {0}")]
    Rejected(String),
    #[error("deadline exceeded: the call ran longer than {deadline_ms} ms and was interrupted")]
    DeadlineExceeded { deadline_ms: u64 },
    #[error("memory limit: the module tried to grow its memory beyond {limit_mib} MiB")]
    MemoryLimit { limit_mib: u64 },
    #[error("fuel exhausted: the call used more than {fuel} units")]
    FuelExhausted { fuel: u64 },
    #[error("stack overflow in the module (unbounded recursion?)")]
    StackOverflow,
    #[error("the module trapped: {message}{}", log_suffix(.log))]
    Trap { message: String, log: Option<String> },
    #[error("invalid output from {function}: {reason}")]
    InvalidOutput { function: &'static str, reason: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy runtime error: {0}")]
    Internal(String),
}

fn log_suffix(log: &Option<String>) -> String {
    match log {
        Some(line) => format!(" (module log: {line})"),
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
            PolicyError::MissingDescribe => "missing-describe",
            PolicyError::UnknownWorld { .. } => "unknown-world",
            PolicyError::WorldMismatch { .. } => "world-mismatch",
            PolicyError::WrongKind { .. } => "wrong-kind",
            PolicyError::BadParameter(_) => "bad-parameter",
            PolicyError::Rejected(_) => "rejected",
            PolicyError::DeadlineExceeded { .. } => "deadline",
            PolicyError::MemoryLimit { .. } => "memory-limit",
            PolicyError::FuelExhausted { .. } => "fuel",
            PolicyError::StackOverflow => "stack-overflow",
            PolicyError::Trap { .. } => "trap",
            PolicyError::InvalidOutput { .. } => "invalid-output",
            PolicyError::Io { .. } => "io",
            PolicyError::Internal(_) => "internal",
        }
    }
}
