//! A running policy: one sandboxed instance in its own store, reused across calls and replaced
//! after a trap. Every call runs under a deadline (epoch interruption), a memory cap and fuel
//! metering; every output is validated before the scheduler sees it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, ResourceLimiter, Store, Trap};

use super::bindings::{
    bounded_threshold::BoundedThreshold, indexed_placement::IndexedPlacement, migration_mode::MigrationMode,
    placement::Placement, selection::Selection, threshold::Threshold, types, HostImports, Level,
};
use super::bounded::TooLong;
use super::descriptor::{to_raw_value, ParamValues, PolicyKind};
use super::module::{DeniedCall, PolicyModule, WorldPre};
use super::sanitize::sanitize;
use super::{PolicyError, RuntimeConfig};
pub use amvm_model::Mode;

/// Most log lines kept per instance, and longest line.
const LOG_LINES: usize = 32;
const LOG_LINE_CHARS: usize = 512;

/// Bytes charged against the memory cap per table element (a function or external reference).
const TABLE_ELEMENT_BYTES: usize = 16;
/// Most core instances, memories and tables one module may create in its store.
pub(crate) const MAX_INSTANCES: usize = 64;
pub(crate) const MAX_MEMORIES: usize = 8;
pub(crate) const MAX_TABLES: usize = 16;

/// The memory cap of one store: the **sum** of every linear memory and table the module creates
/// (all its core instances together), not each one on its own, plus caps on how many instances,
/// memories and tables it may create. Records whether the guest hit the cap.
pub(crate) struct Limiter {
    limit: usize,
    used: usize,
    hit: bool,
}

impl Limiter {
    pub(crate) fn new(limit: usize) -> Self {
        Limiter { limit, used: 0, hit: false }
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            self.hit = true;
            return false;
        }
        self.used = next;
        true
    }

    /// Bytes of memories and tables the store holds now.
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// Per-store state: limits and the policy's log.
pub struct StoreState {
    limiter: Limiter,
    log: VecDeque<(Level, String)>,
}

impl HostImports for StoreState {
    fn log(&mut self, level: Level, message: String) {
        // Sanitized once here: whatever reads the log (errors, `log()`, tracing) gets one
        // printable line.
        let message = sanitize(&message, LOG_LINE_CHARS);
        tracing::debug!(target: "amvm::policy::guest", ?level, "{message}");
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back((level, message));
    }
}

impl super::bindings::threshold::amvm::policy::types::Host for StoreState {}

/// A `bounded-threshold` module's bounds of one host (see `headroom` in `policy.wit`): one added
/// VM of load at most `accepts` surely fits, one of load at least `refuses` surely overloads
/// the host, for VMs migrating in at most `migration_s` seconds. NaN: no bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostBound {
    pub accepts: f32,
    pub refuses: f32,
    pub migration_s: f32,
}

impl HostBound {
    pub const UNKNOWN: HostBound = HostBound { accepts: f32::NAN, refuses: f32::NAN, migration_s: f32::NAN };
}

enum Bindings {
    Threshold(Threshold),
    BoundedThreshold(BoundedThreshold),
    Selection(Selection),
    Placement(Placement),
    IndexedPlacement(IndexedPlacement),
    MigrationMode(MigrationMode),
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

    /// Bytes of linear memory and tables the live instance holds (all its core instances
    /// together: what the memory cap limits).
    pub fn memory_bytes(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.store.data().limiter.used())
    }

    /// The last lines the policy logged.
    pub fn log(&self) -> Vec<String> {
        self.live.as_ref().map(|l| l.store.data().log.iter().map(|(_, m)| m.clone()).collect()).unwrap_or_default()
    }

    fn new_store(&self) -> Store<StoreState> {
        new_store(&self.engine, &self.config)
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
            WorldPre::BoundedThreshold(p) => p.instantiate(&mut *store).map(Bindings::BoundedThreshold),
            WorldPre::Selection(p) => p.instantiate(&mut *store).map(Bindings::Selection),
            WorldPre::Placement(p) => p.instantiate(&mut *store).map(Bindings::Placement),
            WorldPre::IndexedPlacement(p) => p.instantiate(&mut *store).map(Bindings::IndexedPlacement),
            WorldPre::MigrationMode(p) => p.instantiate(&mut *store).map(Bindings::MigrationMode),
        })?;
        let configured = self.guarded(&mut store, "configure", |store, _| match &bindings {
            Bindings::Threshold(b) => b.call_configure(&mut *store, &params),
            Bindings::BoundedThreshold(b) => b.call_configure(&mut *store, &params),
            Bindings::Selection(b) => b.call_configure(&mut *store, &params),
            Bindings::Placement(b) => b.call_configure(&mut *store, &params),
            Bindings::IndexedPlacement(b) => b.call_configure(&mut *store, &params),
            Bindings::MigrationMode(b) => b.call_configure(&mut *store, &params),
        })?;
        configured.map_err(|msg| PolicyError::Rejected(sanitize(&msg, super::sanitize::MESSAGE_CHARS)))?;
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
        result.map_err(|err| classify_error(&self.config, store, err))
    }

    /// Calls into the live instance; on any failure the instance is dropped and rebuilt on the
    /// next call (a trapped instance's state cannot be trusted).
    fn call<R>(
        &mut self,
        function: &'static str,
        f: impl FnOnce(&mut Store<StoreState>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        // A failed call is paid for again on the next one (instantiate and configure): the
        // reported cost covers both, so budgets see what a failing module really costs.
        let start = Instant::now();
        let fuel_before = self.total_fuel;
        let result = self.call_live(function, f);
        self.last_call = CallStats { fuel: self.total_fuel - fuel_before, elapsed: start.elapsed() };
        result
    }

    fn call_live<R>(
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
                tracing::debug!(policy = %self.module.descriptor.name, function, error = %e, "policy call failed; instance will be replaced");
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
            Bindings::BoundedThreshold(t) => t.call_classify(store, ctx, hosts),
            _ => Err(kind_lost()),
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
            Bindings::BoundedThreshold(t) => t.call_would_overload(store, ctx, hosts, add),
            _ => Err(kind_lost()),
        })?;
        check_len("would-overload", out.len(), hosts.n as usize)?;
        Ok(out)
    }

    /// Whether the module exports `headroom` and `vm-load` (world `bounded-threshold`): it is
    /// row-local and bounds `would-overload` for one VM.
    pub fn has_headroom(&self) -> bool {
        matches!(self.module.pre, WorldPre::BoundedThreshold(_))
    }

    /// What a `bounded-threshold` module's bounds say of `would-overload(host, [vm])` for a VM
    /// migrating in `migration_s` seconds with load `(low, high)`: `Some(false)` when the load
    /// lies wholly at or below the host's `accepts`, `Some(true)` when wholly at or above its
    /// `refuses`, else `None` (the module must be asked); `None` too when the VM's migration is
    /// longer than the bounds hold for. NaN decides nothing.
    pub fn headroom_verdict(b: HostBound, migration_s: f32, (low, high): (f32, f32)) -> Option<bool> {
        if migration_s.partial_cmp(&b.migration_s).is_none_or(|o| o.is_gt()) {
            None
        } else if high <= b.accepts {
            Some(false)
        } else if low >= b.refuses {
            Some(true)
        } else {
            None
        }
    }

    /// Threshold (`bounded-threshold` only): per host, its bounds, validated: one per host, and
    /// never `accepts > refuses` (that would promise both answers). NaN: no bound.
    pub fn headroom(&mut self, ctx: &types::Context, hosts: &types::Hosts) -> Result<Vec<HostBound>, PolicyError> {
        self.expect_kind(PolicyKind::Threshold)?;
        let out = self.call("headroom", |store, b| match b {
            Bindings::BoundedThreshold(t) => t.call_headroom(store, ctx, hosts),
            _ => Err(wasmtime::Error::msg("the module does not export headroom")),
        })?;
        let n = hosts.n as usize;
        check_len("headroom", out.accepts.len(), n)?;
        check_len("headroom", out.refuses.len(), n)?;
        check_len("headroom", out.migration_s.len(), n)?;
        let bounds: Vec<HostBound> = (0..n)
            .map(|i| HostBound { accepts: out.accepts[i], refuses: out.refuses[i], migration_s: out.migration_s[i] })
            .collect();
        if let Some(i) = bounds.iter().position(|b| b.accepts > b.refuses) {
            return Err(invalid(
                "headroom",
                format!("host {i} accepts up to {} but refuses from {}", bounds[i].accepts, bounds[i].refuses),
            ));
        }
        Ok(bounds)
    }

    /// Threshold (`bounded-threshold` only): per VM, its load `(low, high)`, validated: one
    /// pair per VM, never `low > high`. NaN: no bound.
    pub fn vm_load(&mut self, ctx: &types::Context, vms: &types::Vms) -> Result<Vec<(f32, f32)>, PolicyError> {
        self.expect_kind(PolicyKind::Threshold)?;
        let out = self.call("vm-load", |store, b| match b {
            Bindings::BoundedThreshold(t) => t.call_vm_load(store, ctx, vms),
            _ => Err(wasmtime::Error::msg("the module does not export vm-load")),
        })?;
        let n = vms.n as usize;
        check_len("vm-load", out.low.len(), n)?;
        check_len("vm-load", out.high.len(), n)?;
        let pairs: Vec<(f32, f32)> = out.low.into_iter().zip(out.high).collect();
        if let Some(i) = pairs.iter().position(|&(l, h)| l > h) {
            return Err(invalid("vm-load", format!("VM {i} has load from {} to {}", pairs[i].0, pairs[i].1)));
        }
        Ok(pairs)
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
            _ => Err(kind_lost()),
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
            Bindings::IndexedPlacement(p) => p.call_weigh(store, ctx, vm, candidates),
            _ => Err(kind_lost()),
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

    /// Whether the module exports `weigh-bound` (world `indexed-placement`): its weights are
    /// row-local and bounded per group of hosts.
    pub fn has_weigh_bound(&self) -> bool {
        matches!(self.module.pre, WorldPre::IndexedPlacement(_))
    }

    /// Placement (`indexed-placement` only): a lower bound of the weight per group of hosts, or
    /// none when every row of the group is filtered out; validated (not NaN; an infinite bound
    /// is no bound).
    pub fn weigh_bound(
        &mut self,
        ctx: &types::Context,
        vm: types::VmDemand,
        groups: &types::HostGroups,
    ) -> Result<Vec<Option<f32>>, PolicyError> {
        self.expect_kind(PolicyKind::Placement)?;
        let out = self.call("weigh-bound", |store, b| match b {
            Bindings::IndexedPlacement(p) => p.call_weigh_bound(store, ctx, vm, groups),
            _ => Err(wasmtime::Error::msg("the module does not export weigh-bound")),
        })?;
        check_len("weigh-bound", out.len(), groups.n as usize)?;
        if let Some(i) = out.iter().position(|b| b.is_some_and(f32::is_nan)) {
            return Err(invalid("weigh-bound", format!("bound NaN for group {i}")));
        }
        Ok(out)
    }

    /// Migration mode: one mechanism per move, validated (one per row).
    pub fn choose_mode(&mut self, ctx: &types::Context, moves: &types::Moves) -> Result<Vec<Mode>, PolicyError> {
        self.expect_kind(PolicyKind::MigrationMode)?;
        let out = self.call("choose-mode", |store, b| match b {
            Bindings::MigrationMode(m) => m.call_choose_mode(store, ctx, moves),
            _ => Err(kind_lost()),
        })?;
        check_len("choose-mode", out.len(), moves.n as usize)?;
        Ok(out
            .into_iter()
            .map(|m| match m {
                types::CopyMode::Pre => Mode::Pre,
                types::CopyMode::Post => Mode::Post,
                types::CopyMode::Hybrid => Mode::Hybrid,
            })
            .collect())
    }
}

/// A store under the sandbox's limits.
fn new_store(engine: &Engine, config: &RuntimeConfig) -> Store<StoreState> {
    let state = StoreState { limiter: Limiter::new(config.memory_limit_bytes), log: VecDeque::new() };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store
}

/// The world was checked when the module was loaded; a binding of another world here is a bug
/// in the host, reported as an error rather than a panic.
fn kind_lost() -> wasmtime::Error {
    wasmtime::Error::msg("host bug: the instance's world differs from its module's")
}

/// Turns a failed call into the one error that names its cause.
fn classify_error(config: &RuntimeConfig, store: &Store<StoreState>, err: wasmtime::Error) -> PolicyError {
    let state = store.data();
    if let Some(trap) = err.downcast_ref::<Trap>() {
        match trap {
            Trap::Interrupt => {
                return PolicyError::DeadlineExceeded { deadline_ms: config.deadline.as_millis() as u64 }
            }
            Trap::OutOfFuel => return PolicyError::FuelExhausted { fuel: config.fuel_per_call },
            Trap::StackOverflow => return PolicyError::StackOverflow,
            _ => {}
        }
    }
    // Before the denied import: a guest out of memory reports it on stderr, which is denied.
    if state.limiter.hit {
        return PolicyError::MemoryLimit { limit_mib: (config.memory_limit_bytes >> 20) as u64 };
    }
    if let Some(DeniedCall(import)) = err.downcast_ref::<DeniedCall>() {
        return PolicyError::DeniedImport { import: import.clone() };
    }
    if let Some(too_long) = err.downcast_ref::<TooLong>() {
        return PolicyError::BadDescriptor(too_long.to_string());
    }
    let message = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.to_string(),
    };
    for (what, limit) in [("instance", MAX_INSTANCES), ("memory", MAX_MEMORIES), ("table", MAX_TABLES)] {
        if message.contains("resource limit exceeded") && message.contains(&format!("{what} count")) {
            let what = match what {
                "instance" => "instances",
                "memory" => "memories",
                _ => "tables",
            };
            return PolicyError::ResourceLimit { what, limit };
        }
    }
    let log = state.log.iter().rev().find(|(l, _)| matches!(l, Level::Error)).map(|(_, m)| m.clone());
    PolicyError::Trap { message, log }
}

/// Instantiates a module without configuring it and asks it to describe itself (used at load,
/// before parameters can be validated), with the descriptor's limits applied while it is
/// decoded ([`super::describe`]).
/// Instantiating a module and reading its descriptor happen once per load, not in any cycle:
/// they get at least this long (fuel and the memory cap still apply), so a loaded machine does
/// not turn a descriptor refusal into a deadline.
pub const LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn describe_unconfigured(
    engine: &Engine,
    pre: &WorldPre,
    config: &RuntimeConfig,
) -> Result<(types::Descriptor, Option<types::PolicyKind>), PolicyError> {
    let config = &RuntimeConfig { deadline: config.deadline.max(LOAD_DEADLINE), ..config.clone() };
    let mut store = new_store(engine, config);
    store.set_epoch_deadline(config.deadline.as_millis().max(1) as u64);
    store.set_fuel(config.fuel_per_call).map_err(|e| PolicyError::Internal(format!("{e:#}")))?;
    let mode_world = matches!(pre, WorldPre::MigrationMode(_));
    let result = pre
        .instance_pre()
        .instantiate(&mut store)
        .and_then(|instance| super::describe::call(&mut store, &instance, mode_world));
    result.map_err(|e| classify_error(config, &store, e))
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
