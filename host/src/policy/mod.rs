//! Policy runtime: loads policy modules (WebAssembly components of `amvm:policy@0.1.0`) and runs
//! them sandboxed with wasmtime.
//!
//! **Invariant**: nothing a module does can panic or stall the host. Each call runs under a
//! deadline (epoch interruption, default 50 ms), a memory cap (default 64 MiB), fuel metering
//! (reported per call as a deterministic cost) and output validation. A module gets no WASI
//! capabilities: the WASI imports `wasm32-wasip2` guests carry are defined as traps.
//!
//! Compiled modules are cached by the sha256 of their bytes, in memory and on disk (see
//! [`disk_cache`]); instances are reused across calls and replaced after a failure.

mod bindings;
mod bounded;
pub mod breaker;
pub mod builtin;
pub mod check;
mod describe;
pub mod descriptor;
mod disk_cache;
mod error;
mod instance;
pub mod limits;
mod module;
pub mod sanitize;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

pub use bindings::types;
pub use breaker::{Breaker, BreakerConfig, BreakerEvent, BreakerState};
pub use check::{CheckOptions, CheckReport};
pub use descriptor::{Descriptor, ParamSpec, ParamValue, ParamValues, PolicyKind, ValueType};
pub use error::PolicyError;
pub use instance::{CallStats, HostBound, PolicyInstance};
pub use limits::CompileLimits;
pub use module::{sha256_hex, PolicyModule};

/// Sandbox limits.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Longest a single call may run.
    pub deadline: Duration,
    /// Most memory a module may hold: all its linear memories and tables together.
    pub memory_limit_bytes: usize,
    /// Fuel given to each call (a backstop; the deadline normally ends runaway calls first).
    pub fuel_per_call: u64,
    /// Largest wasm stack.
    pub max_wasm_stack: usize,
    /// Where compiled modules are cached across processes (`None`: compile in every process).
    /// Defaults to `AMVM_CACHE_DIR`, else `~/.cache/amvm/modules`; `AMVM_CACHE_DIR=off` disables.
    pub module_cache_dir: Option<std::path::PathBuf>,
    /// Structural limits checked before a module is compiled.
    pub compile_limits: CompileLimits,
    /// Longest a compilation may take before the module is refused.
    pub compile_timeout: Duration,
    /// Policy time one decision cycle may spend in a strategy's modules before the scheduler
    /// falls back to the built-ins for the rest of the cycle (`scheduler::budget`); `amvm
    /// policy check` warns when a module's estimate at scale exceeds it.
    pub cycle_budget: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            deadline: Duration::from_millis(50),
            memory_limit_bytes: 64 << 20,
            fuel_per_call: 10_000_000_000,
            max_wasm_stack: 512 << 10,
            module_cache_dir: disk_cache::default_dir(),
            compile_limits: CompileLimits::default(),
            compile_timeout: Duration::from_secs(20),
            cycle_budget: Duration::from_secs(1),
        }
    }
}

/// Largest module accepted (bytes).
pub const MAX_MODULE_BYTES: usize = 16 << 20;

/// The engine, its epoch ticker and the compiled-module cache. Share it by reference.
pub struct PolicyRuntime {
    engine: Engine,
    config: RuntimeConfig,
    cache: Mutex<HashMap<String, Arc<PolicyModule>>>,
    disk: Option<disk_cache::DiskCache>,
}

impl std::fmt::Debug for PolicyRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRuntime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PolicyRuntime {
    /// A runtime with the given limits. Starts the epoch ticker thread (1 ms), which stops when
    /// the runtime is dropped.
    pub fn new(config: RuntimeConfig) -> Result<Self, PolicyError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .max_wasm_stack(config.max_wasm_stack)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&wasm).map_err(|e| PolicyError::Internal(format!("{e:#}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("amvm-policy-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(1));
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| PolicyError::Internal(format!("cannot start the epoch ticker: {e}")))?;
        let disk = config.module_cache_dir.as_deref().map(|dir| disk_cache::DiskCache::new(dir, &engine));
        Ok(PolicyRuntime { engine, config, cache: Mutex::new(HashMap::new()), disk })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Loads a module from bytes: recognises it, checks its structure against the compile
    /// limits, compiles it (once per sha256, under a time limit), checks that it exports exactly
    /// one world, reads its descriptor under the descriptor's limits and checks that the kind it
    /// declares is the world it exports. Nothing of the module runs before its structure is
    /// checked, and no decision function is called before its world and kind agree.
    pub fn load(&self, bytes: &[u8], source: &str) -> Result<Arc<PolicyModule>, PolicyError> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(PolicyError::TooComplex(format!(
                "module size (bytes) {} exceeds the limit of {MAX_MODULE_BYTES}",
                bytes.len()
            )));
        }
        module::sniff(bytes)?;
        let sha = sha256_hex(bytes);
        if let Some(m) = self.cache.lock().map_err(|_| PolicyError::Internal("cache poisoned".into()))?.get(&sha) {
            return Ok(m.clone());
        }
        limits::check_structure(bytes, &self.config.compile_limits, self.config.memory_limit_bytes as u64)?;
        let component = match self.disk.as_ref().and_then(|d| d.load(&self.engine, &sha)) {
            Some(c) => c,
            None => {
                let c = self.compile(bytes)?;
                if let Some(d) = &self.disk {
                    d.store(&sha, &c);
                }
                c
            }
        };
        let (pre, trapped) = module::prepare(&self.engine, &component)?;
        let (raw, declared) = instance::describe_unconfigured(&self.engine, &pre, &self.config)?;
        let mut descriptor = Descriptor::from_raw(raw)?;
        if declared.is_none() {
            // A `mode-descriptor` names no kind: its world is its kind.
            descriptor.kind = pre.kind();
        }
        if descriptor.kind != pre.kind() {
            return Err(PolicyError::KindMismatch { world: pre.kind().as_str(), declared: descriptor.kind.as_str() });
        }
        let module = module::new_module(sha.clone(), source.to_string(), bytes.len(), pre, trapped, descriptor);
        tracing::debug!(name = %module.descriptor.name, %sha, source = %sanitize::clean(source), "policy module loaded");
        self.cache.lock().map_err(|_| PolicyError::Internal("cache poisoned".into()))?.insert(sha, module.clone());
        Ok(module)
    }

    /// Compiles on a separate thread and gives up after `compile_timeout`. The structural limits
    /// already bound what Cranelift is given; the timeout is the second line. An abandoned
    /// compilation finishes in the background (it cannot be interrupted) and is discarded.
    fn compile(&self, bytes: &[u8]) -> Result<Component, PolicyError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let engine = self.engine.clone();
        let owned = bytes.to_vec();
        std::thread::Builder::new()
            .name("amvm-policy-compile".into())
            .spawn(move || {
                let _ = tx.send(Component::new(&engine, &owned));
            })
            .map_err(|e| PolicyError::Internal(format!("cannot start the compiler thread: {e}")))?;
        match rx.recv_timeout(self.config.compile_timeout) {
            Ok(result) => result.map_err(|e| PolicyError::Invalid(first_line(&e))),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(PolicyError::CompileTimeout { secs: self.config.compile_timeout.as_secs() })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(PolicyError::Internal("the compiler thread stopped without a result".into()))
            }
        }
    }

    /// Loads a module from a file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<PolicyModule>, PolicyError> {
        let bytes =
            std::fs::read(path).map_err(|source| PolicyError::Io { path: path.display().to_string(), source })?;
        self.load(&bytes, &path.display().to_string())
    }

    /// Loads a built-in policy by name (`thr`, `mad`, … `pack`).
    pub fn builtin(&self, name: &str) -> Result<Arc<PolicyModule>, PolicyError> {
        let bytes = builtin::bytes(name).ok_or_else(|| {
            let names: Vec<&str> = builtin::BUILTINS.iter().map(|(n, _)| *n).collect();
            PolicyError::BadParameter(format!("no built-in policy {name:?} (built-ins: {})", names.join(", ")))
        })?;
        self.load(bytes, &format!("builtin:{name}"))
    }

    /// Every built-in policy, loaded.
    pub fn builtins(&self) -> Result<Vec<Arc<PolicyModule>>, PolicyError> {
        builtin::BUILTINS.iter().map(|(name, _)| self.builtin(name)).collect()
    }

    /// A configured instance of `module` with `params` (validated against its descriptor).
    pub fn instantiate(&self, module: &Arc<PolicyModule>, params: &ParamValues) -> Result<PolicyInstance, PolicyError> {
        PolicyInstance::new(self.engine.clone(), module.clone(), params, self.config.clone())
    }
}

pub(crate) fn first_line(e: &wasmtime::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or_default().to_string()
}
