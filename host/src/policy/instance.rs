//! A running policy: one sandboxed instance in its own store, reused across calls and replaced
//! after a trap. Every call runs under a deadline (epoch interruption), a memory cap and fuel
//! metering; every output is validated before the scheduler sees it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, Trap};

use super::bindings::{placement::Placement, selection::Selection, threshold::Threshold, types, HostImports, Level};
use super::descriptor::{to_raw_value, ParamValues, PolicyKind};
use super::module::{PolicyModule, WorldPre};
use super::{PolicyError, RuntimeConfig};

/// Most log lines kept per instance, and longest line.
const LOG_LINES: usize = 32;
const LOG_LINE_BYTES: usize = 1024;

/// Memory cap for one store, recording whether the guest hit it.
pub(crate) struct Limiter {
    memory_limit: usize,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Per-store state: limits and the policy's log.
pub struct StoreState {
    limiter: Limiter,
    log: VecDeque<(Level, String)>,
}

impl HostImports for StoreState {
    fn log(&mut self, level: Level, mut message: String) {
        if message.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        tracing::debug!(target: "amvm::policy::guest", ?level, "{message}");
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back((level, message));
    }
}

impl super::bindings::threshold::amvm::policy::types::Host for StoreState {}

enum Bindings {
    Threshold(Threshold),
    Selection(Selection),
    Placement(Placement),
}

struct Live {
    store: Store<StoreState>,
    bindings: Bindings,
}

/// Cost of the last call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    /// Fuel the call consumed: a deterministic cost figure (≈ wasm instructions).
    pub fuel: u64,
    pub elapsed: Duration,
}

/// One configured, sandboxed policy instance.
pub struct PolicyInstance {
    engine: Engine,
    module: Arc<PolicyModule>,
    params: Vec<types::Param>,
    config: RuntimeConfig,
    live: Option<Live>,
    /// Cost of the most recent call.
    pub last_call: CallStats,
    /// Total fuel over all calls.
    pub total_fuel: u64,
    /// Number of calls made (including failed ones).
    pub calls: u64,
    /// Times the instance was replaced after a failure.
    pub restarts: u64,
}

impl std::fmt::Debug for PolicyInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyInstance").field("module", &self.module.descriptor.name).finish_non_exhaustive()
    }
}

impl PolicyInstance {
    pub(crate) fn new(
        engine: Engine,
        module: Arc<PolicyModule>,
        params: &ParamValues,
        config: RuntimeConfig,
    ) -> Result<Self, PolicyError> {
        let params = module.descriptor.validate(params)?;
        let params =
            params.iter().map(|(name, v)| types::Param { name: name.clone(), value: to_raw_value(v) }).collect();
        let mut inst = PolicyInstance {
            engine,
            module,
            params,
            config,
            live: None,
            last_call: CallStats::default(),
            total_fuel: 0,
            calls: 0,
            restarts: 0,
        };
        inst.ensure_live()?;
        Ok(inst)
    }

    pub fn module(&self) -> &Arc<PolicyModule> {
        &self.module
    }

    pub fn kind(&self) -> PolicyKind {
        self.module.kind()
    }

    /// The last lines the policy logged.
    pub fn log(&self) -> Vec<String> {
        self.live.as_ref().map(|l| l.store.data().log.iter().map(|(_, m)| m.clone()).collect()).unwrap_or_default()
    }

    fn new_store(&self) -> Store<StoreState> {
        let state = StoreState {
            limiter: Limiter { memory_limit: self.config.memory_limit_bytes, hit: false },
            log: VecDeque::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
    }

    /// Instantiates (or re-instantiates after a failure) and configures the module.
    fn ensure_live(&mut self) -> Result<(), PolicyError> {
        if self.live.is_some() {
            return Ok(());
        }
        let mut store = self.new_store();
        let params = self.params.clone();
        let bindings = self.guarded(&mut store, "instantiate", |store, pre| match pre {
            WorldPre::Threshold(p) => p.instantiate(&mut *store).map(Bindings::Threshold),
            WorldPre::Selection(p) => p.instantiate(&mut *store).map(Bindings::Selection),
            WorldPre::Placement(p) => p.instantiate(&mut *store).map(Bindings::Placement),
        })?;
        let configured = self.guarded(&mut store, "configure", |store, _| match &bindings {
            Bindings::Threshold(b) => b.call_configure(&mut *store, &params),
            Bindings::Selection(b) => b.call_configure(&mut *store, &params),
            Bindings::Placement(b) => b.call_configure(&mut *store, &params),
        })?;
        configured.map_err(|msg| PolicyError::Rejected(truncate(msg)))?;
        self.live = Some(Live { store, bindings });
        Ok(())
    }

    /// Runs `f` under the sandbox's deadline and fuel budget and turns every failure into a
    /// [`PolicyError`].
    fn guarded<R>(
        &mut self,
        store: &mut Store<StoreState>,
        _what: &'static str,
        f: impl FnOnce(&mut Store<StoreState>, &WorldPre) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        let ticks = self.config.deadline.as_millis().max(1) as u64;
        store.set_epoch_deadline(ticks);
        let budget = self.config.fuel_per_call;
        store.set_fuel(budget).map_err(|e| PolicyError::Internal(format!("{e:#}")))?;
        store.data_mut().limiter.hit = false;
        let start = Instant::now();
        let result = f(store, &self.module.pre);
        let fuel = budget.saturating_sub(store.get_fuel().unwrap_or(0));
        self.last_call = CallStats { fuel, elapsed: start.elapsed() };
        self.total_fuel += fuel;
        self.calls += 1;
        result.map_err(|err| self.classify_error(store, err))
    }

    fn classify_error(&self, store: &Store<StoreState>, err: wasmtime::Error) -> PolicyError {
        let state = store.data();
        if let Some(trap) = err.downcast_ref::<Trap>() {
            match trap {
                Trap::Interrupt => {
                    return PolicyError::DeadlineExceeded { deadline_ms: self.config.deadline.as_millis() as u64 }
                }
                Trap::OutOfFuel => return PolicyError::FuelExhausted { fuel: self.config.fuel_per_call },
                Trap::StackOverflow => return PolicyError::StackOverflow,
                _ => {}
            }
        }
        if state.limiter.hit {
            return PolicyError::MemoryLimit { limit_mib: (self.config.memory_limit_bytes >> 20) as u64 };
        }
        let message = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => err.to_string(),
        };
        let log = state.log.iter().rev().find(|(l, _)| matches!(l, Level::Error)).map(|(_, m)| m.clone());
        PolicyError::Trap { message: truncate(message), log }
    }

    /// Calls into the live instance; on any failure the instance is dropped and rebuilt on the
    /// next call (a trapped instance's state cannot be trusted).
    fn call<R>(
        &mut self,
        function: &'static str,
        f: impl FnOnce(&mut Store<StoreState>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        if let Err(e) = self.ensure_live() {
            self.restarts += 1;
            return Err(e);
        }
        let Some(mut live) = self.live.take() else {
            return Err(PolicyError::Internal("instance missing after instantiation".into()));
        };
        let result = self.guarded(&mut live.store, function, |store, _| f(store, &live.bindings));
        match result {
            Ok(r) => {
                self.live = Some(live);
                Ok(r)
            }
            Err(e) => {
                tracing::warn!(policy = %self.module.descriptor.name, function, error = %e, "policy call failed; instance will be replaced");
                self.restarts += 1;
                Err(e)
            }
        }
    }

    fn expect_kind(&self, kind: PolicyKind) -> Result<(), PolicyError> {
        if self.kind() != kind {
            return Err(PolicyError::WrongKind { expected: kind.as_str(), found: self.kind().as_str() });
        }
        Ok(())
    }

    /// Threshold: one class per host (0 normal, 1 underload, 2 overload), validated.
    pub fn classify(&mut self, ctx: &types::Context, hosts: &types::Hosts) -> Result<Vec<u8>, PolicyError> {
        self.expect_kind(PolicyKind::Threshold)?;
        let out = self.call("classify", |store, b| match b {
            Bindings::Threshold(t) => t.call_classify(store, ctx, hosts),
            _ => unreachable!("kind checked"),
        })?;
        check_len("classify", out.len(), hosts.n as usize)?;
        if let Some((i, c)) = out.iter().enumerate().find(|(_, &c)| c > 2) {
            return Err(invalid(
                "classify",
                format!("class {c} for host {i}; expected 0 (normal), 1 (underload) or 2 (overload)"),
            ));
        }
        Ok(out)
    }

    /// Threshold: would each host be overloaded with `add` placed on it?
    pub fn would_overload(
        &mut self,
        ctx: &types::Context,
        hosts: &types::Hosts,
        add: &types::Vms,
    ) -> Result<Vec<bool>, PolicyError> {
        self.expect_kind(PolicyKind::Threshold)?;
        let out = self.call("would-overload", |store, b| match b {
            Bindings::Threshold(t) => t.call_would_overload(store, ctx, hosts, add),
            _ => unreachable!("kind checked"),
        })?;
        check_len("would-overload", out.len(), hosts.n as usize)?;
        Ok(out)
    }

    /// Selection: indexes into `vms`, in order, validated (in range, no duplicates).
    pub fn select(
        &mut self,
        ctx: &types::Context,
        host: &types::Hosts,
        vms: &types::Vms,
    ) -> Result<Vec<u32>, PolicyError> {
        self.expect_kind(PolicyKind::Selection)?;
        let out = self.call("select", |store, b| match b {
            Bindings::Selection(s) => s.call_select(store, ctx, host, vms),
            _ => unreachable!("kind checked"),
        })?;
        let n = vms.n as usize;
        if out.len() > n {
            return Err(invalid("select", format!("{} indexes for {n} VMs", out.len())));
        }
        let mut seen = vec![false; n];
        for &i in &out {
            let slot = seen
                .get_mut(i as usize)
                .ok_or_else(|| invalid("select", format!("index {i} out of range (0..{n})")))?;
            if std::mem::replace(slot, true) {
                return Err(invalid("select", format!("index {i} returned twice")));
            }
        }
        Ok(out)
    }

    /// Placement: one weight (or none) per candidate, validated (finite).
    pub fn weigh(
        &mut self,
        ctx: &types::Context,
        vm: types::VmDemand,
        candidates: &types::Candidates,
    ) -> Result<Vec<Option<f32>>, PolicyError> {
        self.expect_kind(PolicyKind::Placement)?;
        let out = self.call("weigh", |store, b| match b {
            Bindings::Placement(p) => p.call_weigh(store, ctx, vm, candidates),
            _ => unreachable!("kind checked"),
        })?;
        check_len("weigh", out.len(), candidates.n as usize)?;
        if let Some((i, w)) = out.iter().enumerate().find_map(|(i, w)| w.filter(|w| !w.is_finite()).map(|w| (i, w))) {
            return Err(invalid(
                "weigh",
                format!("weight {w} for candidate {i}; weights must be finite (use none to filter)"),
            ));
        }
        Ok(out)
    }
}

/// Instantiates a module without configuring it and asks it to describe itself (used at load,
/// before parameters can be validated).
pub(crate) fn describe_unconfigured(
    engine: &Engine,
    pre: &WorldPre,
    config: &RuntimeConfig,
) -> Result<types::Descriptor, PolicyError> {
    let state =
        StoreState { limiter: Limiter { memory_limit: config.memory_limit_bytes, hit: false }, log: VecDeque::new() };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(config.deadline.as_millis().max(1) as u64);
    store.set_fuel(config.fuel_per_call).map_err(|e| PolicyError::Internal(format!("{e:#}")))?;
    let map = |e: wasmtime::Error, store: &Store<StoreState>| {
        if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
            return PolicyError::DeadlineExceeded { deadline_ms: config.deadline.as_millis() as u64 };
        }
        if store.data().limiter.hit {
            return PolicyError::MemoryLimit { limit_mib: (config.memory_limit_bytes >> 20) as u64 };
        }
        PolicyError::Trap { message: truncate(format!("{e}")), log: None }
    };
    let result = match pre {
        WorldPre::Threshold(p) => p.instantiate(&mut store).and_then(|b| b.call_describe(&mut store)),
        WorldPre::Selection(p) => p.instantiate(&mut store).and_then(|b| b.call_describe(&mut store)),
        WorldPre::Placement(p) => p.instantiate(&mut store).and_then(|b| b.call_describe(&mut store)),
    };
    result.map_err(|e| map(e, &store))
}

fn invalid(function: &'static str, reason: String) -> PolicyError {
    PolicyError::InvalidOutput { function, reason }
}

fn check_len(function: &'static str, got: usize, want: usize) -> Result<(), PolicyError> {
    if got != want {
        return Err(invalid(function, format!("{got} entries for {want} inputs")));
    }
    Ok(())
}

fn truncate(mut s: String) -> String {
    if s.len() > 512 {
        let mut cut = 512;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
