//! Errors of the simulator: bad traces, bad scenarios, workloads that do not fit.

use std::path::PathBuf;

/// Everything that can go wrong before or during a simulated run. Every variant names the file
/// (and line) it comes from so the user can fix the input.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("trace directory {} does not exist", .0.display())]
    TraceDirMissing(PathBuf),
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trace directory {} holds no trace files", .0.display())]
    NoTraces(PathBuf),
    #[error("trace file {} is empty", .0.display())]
    TraceEmpty(PathBuf),
    #[error("{}:{line}: not a number: {text:?}", path.display())]
    TraceNotNumeric { path: PathBuf, line: usize, text: String },
    #[error("{}:{line}: CPU utilization {value} is outside 0..=100 %", path.display())]
    TraceOutOfRange { path: PathBuf, line: usize, value: f64 },
    #[error("trace file {} has {found} samples, expected {expected}", path.display())]
    TraceLength { path: PathBuf, expected: usize, found: usize },
    #[error("{}: {message}", path.display())]
    TraceFormat { path: PathBuf, message: String },
    #[error("VM order file {}: {message}", path.display())]
    VmOrder { path: PathBuf, message: String },
    #[error("invalid synthetic trace spec {spec:?}: {message}")]
    Synthetic { spec: String, message: String },
    #[error("scenario {}: {message}", path.display())]
    Scenario { path: PathBuf, message: String },
    #[error("scenario {}", path.display())]
    ScenarioParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("strategy: {0}")]
    Strategy(String),
    #[error("VM {vm} (trace {trace:?}, {mips} MIPS, {ram_mb} MB) fits on no host of the scenario")]
    VmDoesNotFit { vm: usize, trace: String, mips: f64, ram_mb: f64 },
}

/// Result alias of the simulator.
pub type Result<T> = std::result::Result<T, SimError>;
