//! One decision cycle (paper 3.3, Beloglazov & Buyya's consolidation loop):
//!
//! 1. **Overload detection**: the threshold policy classifies every host (one call).
//! 2. **VM selection**: for each host overloaded for `persistence` cycles, the selection policy
//!    names VMs to leave until the threshold policy no longer calls the host overloaded.
//! 3. **Placement**: the selected VMs, by decreasing CPU demand, each go to the lowest-weighted
//!    candidate (one placement call per VM) that the threshold policy would not call overloaded
//!    with the VM added (checked on a short list, best weights first).
//! 4. **Underload**: underloaded hosts, least utilized first, are evacuated entirely onto other
//!    active hosts; an evacuation is committed only if every VM fits, else rolled back.
//!
//! **Invariant**: a failed policy call falls back to the strategy's fallback module for the rest
//! of the cycle and is recorded; if the fallback fails too, the cycle returns an empty plan.
//! Never a half-made plan.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::policy::{types, Breaker, HostBound, PolicyError, PolicyInstance, PolicyKind, PolicyRuntime};

use super::budget::{BudgetOverrun, CycleBudget, Guard};

use super::idmap::{IdMap, IdSet};
use super::index::CandIndex;
use super::rules::{OperatorRules, Refusal, RuleIndex};
use super::snapshot::{HostId, HostState, Migration, MigrationReason, Plan, Snapshot, VmId};
use super::strategy::{PolicyChoice, Strategy};
use super::trace::{
    Candidate, DecisionTrace, Evacuation, FilterCounts, HostClass, HostDecision, MigrationDecision, Unplaced,
    TOP_CANDIDATES,
};
use super::veto::{self, VetoGroups};
use super::work::Work;

/// Candidates checked by the first `would-overload` call during placement; each further call
/// checks four times as many (8, 32, 128, …), so a long run of vetoed hosts costs few calls.
const SHORTLIST: usize = 8;

/// Fewest candidates weighed per `weigh` call on the candidate index (groups are taken whole,
/// best bound first, until at least this many fitting hosts are gathered).
const MIN_WEIGH: usize = 32;

/// Fewest destinations for which a placement step uses the candidate index: below this a full
/// scan is cheaper than the extra bound call and the smaller weigh calls (the PlanetLab data
/// centre's 800 hosts ran 1.7× slower indexed). Either way the plans are the same.
const INDEX_MIN_HOSTS: usize = 2000;

/// Underloaded hosts whose VMs' loads one `vm-load` call covers (evacuations usually end at the
/// first VM, so the loads are asked ahead in blocks rather than all at once).
const EVACUATION_LOADS: usize = 64;

/// One in this many `would-overload` verdicts read from a `bounded-threshold` module's bounds is
/// also asked of the module (the first of each cycle always), so a module that breaks its
/// promise is caught and its bounds are no longer used.
const HEADROOM_AUDIT: u64 = 256;

/// Hosts of each verdict asked about at the start of a cycle's placements to audit the bounds.
const HEADROOM_AUDIT_HOSTS: usize = 8;

/// A weighed candidate: (should-rules broken, policy weight, host index).
type Ranked = (u32, f32, usize);

/// A weighed candidate without should-rules, ordered as the full scan ranks them: weight, then
/// host index.
#[derive(Debug, Clone, Copy)]
struct ByWeight(f32, usize);

impl PartialEq for ByWeight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for ByWeight {}

impl PartialOrd for ByWeight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByWeight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Why a scheduler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("strategy {strategy}: cannot load {kind} policy {module:?}")]
    Load {
        strategy: String,
        kind: PolicyKind,
        module: String,
        #[source]
        source: PolicyError,
    },
    #[error("strategy {strategy}: {module:?} is a {found} policy but is configured as the {expected} policy")]
    Kind { strategy: String, module: String, expected: PolicyKind, found: PolicyKind },
}

/// A policy call that failed during a cycle.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyFailure {
    pub kind: PolicyKind,
    pub module: String,
    /// Short machine-readable cause (`deadline`, `trap`, `invalid-output`, …).
    pub code: &'static str,
    pub error: String,
    /// Whether this was the fallback module failing (the cycle was then abandoned).
    pub fallback: bool,
}

/// Cost of a cycle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleStats {
    /// Policy calls made, by kind.
    pub threshold_calls: u64,
    pub selection_calls: u64,
    pub placement_calls: u64,
    /// Calls of the migration-mode policy (one per cycle with migrations).
    pub mode_calls: u64,
    /// Fuel consumed by all calls (deterministic cost figure).
    pub fuel: u64,
    /// Time inside policy calls, in total and by kind.
    pub policy_time: Duration,
    pub threshold_time: Duration,
    pub selection_time: Duration,
    pub placement_time: Duration,
    pub mode_time: Duration,
    /// The first call of the cycle: classifying every host at once.
    pub classify_all_time: Duration,
    /// Wall time of the whole cycle.
    pub elapsed: Duration,
    pub overloaded_hosts: u32,
    pub underloaded_hosts: u32,
    /// Placement searches (one per VM to place, rolled-back evacuations included) and those
    /// that found no host.
    pub placements: u64,
    pub placements_failed: u64,
    /// Underloaded hosts whose evacuation was attempted, and those committed.
    pub evacuations_tried: u64,
    pub evacuations_committed: u64,
    /// Candidate rows weighed (over all `weigh` calls) and host rows checked for overload
    /// (over all `would-overload` calls), and how many of those were vetoed.
    pub rows_weighed: u64,
    pub rows_checked: u64,
    pub vetoes: u64,
    /// `would-overload` answers the host read from a `bounded-threshold` module's headroom
    /// instead of asking.
    pub bounded_verdicts: u64,
    /// Candidate-index groups passed whole because the headroom of every member vetoes the VM.
    pub groups_vetoed: u64,
    /// Members of candidate-index groups looked at one by one (capacity, headroom) by indexed
    /// placements.
    pub hosts_scanned: u64,
    /// Placement searches the candidate index answered.
    pub indexed_searches: u64,
}

/// What a cycle decided.
#[derive(Debug, Clone, Default)]
pub struct CycleOutcome {
    pub plan: Plan,
    pub failures: Vec<PolicyFailure>,
    /// True when the cycle was abandoned (primary and fallback both failed): `plan` is empty.
    pub aborted: bool,
    pub stats: CycleStats,
    /// Why the plan is what it is (only when tracing is on, see [`Scheduler::set_tracing`]).
    pub trace: Option<DecisionTrace>,
    /// The cycle's policy-time budget was exceeded (fallbacks were used from then on).
    pub budget_overrun: Option<BudgetOverrun>,
    /// Modules skipped in this cycle because their circuit breaker is open.
    pub disabled: Vec<String>,
}

pub(super) struct Slot {
    pub(super) primary: PolicyInstance,
    fallback: PolicyInstance,
    /// The primary failed in this cycle: use the fallback until the cycle ends.
    pub(super) degraded: bool,
    /// The primary is disabled by its circuit breaker for this cycle (`budget.rs`).
    pub(super) skipped: bool,
}

struct Abort;

/// The scheduler: a strategy's policy instances plus the state the host-side rules keep across
/// cycles. World-agnostic: it sees only [`Snapshot`]s and returns [`Plan`]s.
pub struct Scheduler {
    strategy: Strategy,
    threshold: Slot,
    selection: Slot,
    placement: Slot,
    /// The migration-mode policy: called once per cycle on the finished plan, outside the
    /// cycle budget and the circuit breaker (its failure costs the plan nothing but the modes).
    migration_mode: Slot,
    over_streak: IdMap<HostId, u32>,
    under_streak: IdMap<HostId, u32>,
    moved_at: IdMap<VmId, u64>,
    tracing: bool,
    /// Placement over the candidate index when the module can bound its weights (`index.rs`).
    candidate_index: bool,
    /// Fewest destinations a placement step indexes (`INDEX_MIN_HOSTS`).
    index_min_hosts: usize,
    /// Answer `would-overload` from the threshold module's headroom when it exports one.
    headroom_veto: bool,
    /// The threshold module's bounds contradicted its own `would-overload` (an audit found it):
    /// they are not used again by this scheduler.
    headroom_distrusted: bool,
    /// Cycle budget and circuit breaker (`budget.rs`).
    guard: Guard,
    /// Operator rules added by the world or the operator (e.g. maintenance set through the
    /// controller's API) on top of the strategy's own.
    extra_rules: OperatorRules,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("strategy", &self.strategy.name).finish_non_exhaustive()
    }
}

fn instantiate(
    runtime: &PolicyRuntime,
    strategy: &Strategy,
    kind: PolicyKind,
    choice: &PolicyChoice,
) -> Result<PolicyInstance, SchedulerError> {
    let load_err =
        |source| SchedulerError::Load { strategy: strategy.name.clone(), kind, module: choice.module.clone(), source };
    let module = if choice.is_file() {
        runtime.load_file(std::path::Path::new(&choice.module)).map_err(load_err)?
    } else {
        runtime.builtin(&choice.module).map_err(load_err)?
    };
    if module.kind() != kind {
        return Err(SchedulerError::Kind {
            strategy: strategy.name.clone(),
            module: choice.module.clone(),
            expected: kind,
            found: module.kind(),
        });
    }
    runtime.instantiate(&module, &choice.params).map_err(load_err)
}

impl Scheduler {
    /// Loads and configures the strategy's modules and fallbacks.
    pub fn new(runtime: &PolicyRuntime, strategy: &Strategy) -> Result<Scheduler, SchedulerError> {
        let slot = |kind, primary: &PolicyChoice, fallback: &PolicyChoice| -> Result<Slot, SchedulerError> {
            Ok(Slot {
                primary: instantiate(runtime, strategy, kind, primary)?,
                fallback: instantiate(runtime, strategy, kind, fallback)?,
                degraded: false,
                skipped: false,
            })
        };
        Ok(Scheduler {
            threshold: slot(PolicyKind::Threshold, &strategy.threshold, &strategy.fallback.threshold)?,
            selection: slot(PolicyKind::Selection, &strategy.selection, &strategy.fallback.selection)?,
            placement: slot(PolicyKind::Placement, &strategy.placement, &strategy.fallback.placement)?,
            migration_mode: slot(
                PolicyKind::MigrationMode,
                &strategy.migration_mode,
                &strategy.fallback.migration_mode,
            )?,
            strategy: strategy.clone(),
            over_streak: IdMap::default(),
            under_streak: IdMap::default(),
            moved_at: IdMap::default(),
            tracing: false,
            candidate_index: true,
            index_min_hosts: INDEX_MIN_HOSTS,
            headroom_veto: true,
            headroom_distrusted: false,
            extra_rules: OperatorRules::default(),
            guard: Guard::new(
                Arc::new(Breaker::default()),
                strategy.rules.cycle_budget_ms.map_or(runtime.config().cycle_budget, std::time::Duration::from_millis),
            ),
        })
    }

    /// The circuit breaker this scheduler consults (its own unless [`Self::set_breaker`]).
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.guard.breaker
    }

    /// Shares a circuit breaker (the controller's, which it exposes to operators).
    pub fn set_breaker(&mut self, breaker: Arc<Breaker>) {
        self.guard.breaker = breaker;
    }

    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// Collect a [`DecisionTrace`] with every cycle's outcome (off by default: offline runs do
    /// not pay for it).
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
    }

    /// Off: weigh every fitting candidate in every placement call, even when the placement
    /// module exports `weigh-bound` (on by default; the plans are the same, only slower — for
    /// comparisons and benchmarks).
    pub fn set_candidate_index(&mut self, on: bool) {
        self.candidate_index = on;
    }

    /// Index placement steps with at least `hosts` destinations (default 2000; below that a
    /// full scan is cheaper). Tests set 0 to index small clusters too.
    pub fn set_candidate_index_min_hosts(&mut self, hosts: usize) {
        self.index_min_hosts = hosts;
    }

    /// Off: ask the threshold module every `would-overload` question, even when it exports
    /// `headroom` (on by default; the plans are the same, only slower — for comparisons).
    pub fn set_headroom_veto(&mut self, on: bool) {
        self.headroom_veto = on;
    }

    /// Adds operator rules to the strategy's own (replacing those set before).
    pub fn set_extra_rules(&mut self, rules: OperatorRules) {
        self.extra_rules = rules;
    }

    /// Runs one decision cycle over `snap`.
    pub fn cycle(&mut self, snap: &Snapshot) -> CycleOutcome {
        let start = Instant::now();
        let disabled = self.guard.begin(snap.cycle, [&mut self.threshold, &mut self.selection, &mut self.placement]);
        let rules = if self.extra_rules.is_empty() {
            RuleIndex::new(&self.strategy.operator_rules, snap)
        } else {
            let mut merged = self.strategy.operator_rules.clone();
            merged.merge(&self.extra_rules);
            RuleIndex::new(&merged, snap)
        };
        let mut cycle = Cycle {
            rules,
            ctx: types::Context {
                cycle: snap.cycle,
                interval_s: snap.interval_s,
                seed: self.strategy.rules.seed,
                migration_mbps: snap.migration_bandwidth_mbps,
                power_curves: snap.power_curves.iter().flat_map(|c| c.iter().copied()).collect(),
            },
            work: Work::new(snap),
            failures: Vec::new(),
            stats: CycleStats::default(),
            migrations: Vec::new(),
            scratch: None,
            host_class: Vec::new(),
            class_rep: Vec::new(),
            n_classes: 0,
            index: None,
            trace: self.tracing.then(DecisionTrace::default),
            last_place: None,
            veto_log: Vec::new(),
            budget: CycleBudget::new(self.guard.budget),
            headroom: Vec::new(),
            headroom_at: Vec::new(),
            vm_load: Vec::new(),
            audit_in: 0,
            bounds_audited: false,
            veto: VetoGroups::default(),
            stale_headroom: Vec::new(),
            group_first: Vec::new(),
        };
        (cycle.host_class, cycle.class_rep) = host_classes(snap);
        cycle.n_classes = cycle.class_rep.len();
        let result = cycle.run(self).map(|mut plan| {
            cycle.choose_modes(self, &mut plan);
            plan
        });
        let budget_overrun = cycle.budget.into_overrun();
        self.guard.end(
            snap.cycle,
            [&self.threshold, &self.selection, &self.placement],
            &cycle.failures,
            budget_overrun.as_ref(),
        );
        let mut outcome = CycleOutcome {
            failures: cycle.failures,
            stats: cycle.stats,
            budget_overrun,
            disabled,
            trace: cycle.trace,
            ..Default::default()
        };
        match result {
            Ok(plan) => {
                for m in &plan.migrations {
                    self.moved_at.insert(m.vm, snap.cycle);
                }
                outcome.plan = plan;
            }
            Err(Abort) => outcome.aborted = true,
        }
        outcome.stats.elapsed = start.elapsed();
        outcome
    }
}

/// What the headroom says of host `h` for the group summaries ([`VetoGroups`]): its `refuses`
/// and `migration_s` when it has CPU in use and current bounds without NaN.
fn bounded_of(work: &Work, headroom: &[HostBound], headroom_at: &[u64], h: usize) -> veto::Bounded {
    let b = headroom.get(h)?;
    let current = work.cpu_used[h] > 0.0 && headroom_at.get(h) == Some(&work.version[h]);
    (current && !b.refuses.is_nan() && !b.migration_s.is_nan()).then_some((b.refuses, b.migration_s))
}

/// Replaces `v`'s contents with `items`, keeping its memory.
fn refill<T>(v: &mut Vec<T>, items: impl Iterator<Item = T>) {
    v.clear();
    v.extend(items);
}

/// Groups hosts by everything a candidate row says about an empty host: the class of each host
/// and the first host of each class.
fn host_classes(snap: &Snapshot) -> (Vec<usize>, Vec<usize>) {
    let mut keys: HashMap<(u32, u32, u32, u32), usize> = HashMap::new();
    let mut rep = Vec::new();
    let class = (0..snap.hosts.len())
        .map(|h| {
            let key = (
                snap.hosts.cpu_capacity[h].to_bits(),
                snap.hosts.mem_capacity[h].to_bits(),
                snap.hosts.power_model[h],
                snap.hosts.core_mips.get(h).copied().unwrap_or(f32::INFINITY).to_bits(),
            );
            let next = keys.len();
            let c = *keys.entry(key).or_insert(next);
            if c == rep.len() {
                rep.push(h);
            }
            c
        })
        .collect();
    (class, rep)
}

/// The placement instance the next call goes to.
fn placement_now(s: &Scheduler) -> &PolicyInstance {
    if s.placement.degraded {
        &s.placement.fallback
    } else {
        &s.placement.primary
    }
}

struct Cycle<'a> {
    /// Operator rules resolved against this snapshot.
    rules: RuleIndex,
    ctx: types::Context,
    work: Work<'a>,
    failures: Vec<PolicyFailure>,
    stats: CycleStats,
    /// (vm index, from host index, to host index, reason)
    migrations: Vec<(usize, usize, usize, MigrationReason)>,
    /// Candidate columns of the last placement call, kept so the next one reuses their memory.
    scratch: Option<types::Candidates>,
    /// Host type per host (capacity, memory, power model, core speed), the first host of each
    /// type, and how many types.
    host_class: Vec<usize>,
    class_rep: Vec<usize>,
    n_classes: usize,
    /// The destinations of the current placement step grouped for `weigh-bound` (only with an
    /// `indexed-placement` module and tracing off), kept in step with `work` by [`Self::sync_index`].
    index: Option<CandIndex>,
    trace: Option<DecisionTrace>,
    /// The last placement call's candidates, filter counts and ranked top (tracing only).
    last_place: Option<(u32, FilterCounts, Vec<Candidate>)>,
    /// Hosts the threshold policy vetoed in the current placement call (tracing only).
    veto_log: Vec<usize>,
    budget: CycleBudget,
    /// A `bounded-threshold` module's headroom per host, `(accepts, refuses)`, and the host's
    /// `work.version` it was computed at (`u64::MAX`: never); empty when not in use.
    headroom: Vec<HostBound>,
    headroom_at: Vec<u64>,
    /// Its load per VM, `(low, high)`, once asked (`None`: not yet).
    vm_load: Vec<Option<(f32, f32)>>,
    /// Bound-decided verdicts until the next one is audited (`HEADROOM_AUDIT`).
    audit_in: u64,
    /// [`Self::audit_bounds`] ran in this cycle.
    bounds_audited: bool,
    /// Per candidate-index group, its members by what their headroom says ([`VetoGroups`]).
    veto: VetoGroups,
    /// Per candidate-index group, at the group's stamp, its lowest-numbered member (ties of
    /// weight go to the lowest host number, so a weighed host tied with an unweighed group's
    /// bound still ranks first when its number is lower than every member's).
    group_first: Vec<(u64, usize)>,
    /// Indexed hosts that changed since the last indexed search: their headroom is asked anew
    /// (one call) before the next one, so the group summaries see current bounds.
    stale_headroom: Vec<usize>,
}

impl Cycle<'_> {
    /// Records a host the threshold policy classified (tracing only).
    fn trace_host(&mut self, h: usize, class: HostClass, streak: u32, persistence: u32) {
        let Some(t) = self.trace.as_mut() else { return };
        let w = self.work.w;
        let outcome = if streak >= persistence { "acted on" } else { "waiting for persistence" };
        t.hosts.push(HostDecision {
            host: self.work.snap.hosts.id[h],
            class,
            cpu_history: self.work.hosts.cpu.get(h * w..(h + 1) * w).map(<[f32]>::to_vec).unwrap_or_default(),
            streak,
            persistence,
            outcome: outcome.to_string(),
            selection_order: Vec::new(),
        });
    }

    /// Records why `vm` went from `from` to `to` (tracing only).
    fn trace_migration(&mut self, vm: usize, from: usize, to: usize, reason: MigrationReason) {
        let Some(t) = self.trace.as_mut() else { return };
        let snap = self.work.snap;
        let (candidates, filtered, top) = self.last_place.take().unwrap_or_default();
        t.migrations.push(MigrationDecision {
            vm: snap.vms.id[vm],
            from: snap.hosts.id[from],
            to: snap.hosts.id[to],
            reason: match reason {
                MigrationReason::Overload => "overload".into(),
                MigrationReason::Underload => "underload".into(),
                MigrationReason::Maintenance => "maintenance".into(),
            },
            candidates,
            filtered: filtered.list(),
            top,
        });
    }
    /// Calls a policy with fallback and accounting.
    fn call<R>(
        &mut self,
        slot: &mut Slot,
        mut f: impl FnMut(&mut PolicyInstance, &types::Context) -> Result<R, PolicyError>,
    ) -> Result<R, Abort> {
        loop {
            if self.budget.exceeded() {
                slot.degraded = true;
            }
            let fallback = slot.degraded;
            let inst = if fallback { &mut slot.fallback } else { &mut slot.primary };
            let result = f(inst, &self.ctx);
            self.charge(inst, fallback);
            match result {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.failures.push(PolicyFailure {
                        kind: inst.kind(),
                        module: inst.module().descriptor.name.clone(),
                        code: e.code(),
                        error: e.to_string(),
                        fallback,
                    });
                    if fallback {
                        return Err(Abort);
                    }
                    slot.degraded = true;
                }
            }
        }
    }

    /// Accounts for the call `inst` just made.
    fn charge(&mut self, inst: &PolicyInstance, fallback: bool) {
        self.stats.fuel += inst.last_call.fuel;
        self.stats.policy_time += inst.last_call.elapsed;
        let t = inst.last_call.elapsed;
        self.budget.charge(inst.kind(), &inst.module().descriptor.name, t, !fallback);
        match inst.kind() {
            PolicyKind::Threshold => {
                if self.stats.threshold_calls == 0 {
                    self.stats.classify_all_time = t;
                }
                self.stats.threshold_calls += 1;
                self.stats.threshold_time += t;
            }
            PolicyKind::Selection => {
                self.stats.selection_calls += 1;
                self.stats.selection_time += t;
            }
            PolicyKind::Placement => {
                self.stats.placement_calls += 1;
                self.stats.placement_time += t;
            }
            PolicyKind::MigrationMode => {
                self.stats.mode_calls += 1;
                self.stats.mode_time += t;
            }
        }
    }

    /// Asks the migration-mode policy for the mechanism of every migration of `plan` (one call),
    /// falling back to the fallback module when it fails; when both fail the modes stay `None`
    /// and the world uses its default. Not charged to the cycle budget: the plan is made.
    fn choose_modes(&mut self, s: &mut Scheduler, plan: &mut Plan) {
        if plan.migrations.is_empty() {
            return;
        }
        let snap = self.work.snap;
        let w = snap.window;
        let n = self.migrations.len();
        let mut moves = types::Moves {
            n: n as u32,
            ram_mb: Vec::with_capacity(n),
            dirty_mbps: Vec::with_capacity(n),
            cpu: Vec::with_capacity(n),
            link_mbps: vec![snap.migration_bandwidth_mbps; n],
        };
        for &(vm, ..) in &self.migrations {
            moves.ram_mb.push(snap.vms.ram_mb[vm]);
            moves.dirty_mbps.push(snap.vms.dirty_mbps.get(vm).copied().unwrap_or(f32::NAN));
            moves.cpu.push(if w == 0 { f32::NAN } else { snap.vms.cpu_history[(vm + 1) * w - 1] });
        }
        // The primary is asked every cycle: one call, so a failure costs little to retry.
        let slot = &mut s.migration_mode;
        for fallback in [false, true] {
            let inst = if fallback { &mut slot.fallback } else { &mut slot.primary };
            let result = inst.choose_mode(&self.ctx, &moves);
            self.charge_mode(inst);
            match result {
                Ok(modes) => {
                    for (m, mode) in plan.migrations.iter_mut().zip(modes) {
                        m.mode = Some(mode);
                    }
                    return;
                }
                Err(e) => {
                    self.failures.push(PolicyFailure {
                        kind: PolicyKind::MigrationMode,
                        module: inst.module().descriptor.name.clone(),
                        code: e.code(),
                        error: e.to_string(),
                        fallback,
                    });
                }
            }
        }
    }

    fn charge_mode(&mut self, inst: &PolicyInstance) {
        self.stats.fuel += inst.last_call.fuel;
        self.stats.policy_time += inst.last_call.elapsed;
        self.stats.mode_calls += 1;
        self.stats.mode_time += inst.last_call.elapsed;
    }

    /// Whether `would-overload` answers come from the threshold module's headroom: the primary
    /// exports it, is in use, and the bounds were set up in this cycle.
    fn bounded(&self, s: &Scheduler) -> bool {
        !self.headroom.is_empty() && !s.threshold.degraded && s.threshold.primary.has_headroom()
    }

    /// A call of the primary threshold module's `headroom` or `vm-load`: these have no fallback
    /// (the bounds only save questions), so a failure records it, puts the slot on its fallback
    /// as any failed call does, and returns `None` (the bounds are then no longer used).
    fn call_bound<R>(
        &mut self,
        s: &mut Scheduler,
        f: impl FnOnce(&mut PolicyInstance, &types::Context) -> Result<R, PolicyError>,
    ) -> Option<R> {
        if self.budget.exceeded() {
            s.threshold.degraded = true;
        }
        if !self.bounded(s) {
            return None;
        }
        let inst = &mut s.threshold.primary;
        let result = f(inst, &self.ctx);
        self.charge(&s.threshold.primary, false);
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                let inst = &s.threshold.primary;
                self.failures.push(PolicyFailure {
                    kind: inst.kind(),
                    module: inst.module().descriptor.name.clone(),
                    code: e.code(),
                    error: e.to_string(),
                    fallback: false,
                });
                s.threshold.degraded = true;
                None
            }
        }
    }

    /// Sets up the headroom of every host (one call) when the threshold module exports it.
    fn init_bounds(&mut self, s: &mut Scheduler) {
        if !s.headroom_veto || s.headroom_distrusted || s.threshold.degraded || !s.threshold.primary.has_headroom() {
            return;
        }
        let n = self.work.snap.hosts.len();
        self.headroom = vec![HostBound::UNKNOWN; n];
        self.headroom_at = vec![u64::MAX; n];
        self.vm_load = vec![None; self.work.snap.vms.len()];
        let empty = self.work.host_batch(&[]);
        let all = std::mem::replace(&mut self.work.hosts, empty);
        let out = self.call_bound(s, |p, ctx| p.headroom(ctx, &all));
        self.work.hosts = all;
        match out {
            Some(out) => {
                for (h, b) in out.into_iter().enumerate() {
                    self.headroom[h] = b;
                    self.headroom_at[h] = self.work.version[h];
                }
            }
            None => self.headroom.clear(),
        }
    }

    /// Fresh headroom for those of `hosts` that changed since theirs was computed (one call).
    fn refresh_headroom(&mut self, s: &mut Scheduler, hosts: &[usize]) {
        let stale: Vec<usize> =
            hosts.iter().copied().filter(|&h| self.headroom_at[h] != self.work.version[h]).collect();
        if stale.is_empty() {
            return;
        }
        let batch = self.work.host_batch(&stale);
        if let Some(out) = self.call_bound(s, |p, ctx| p.headroom(ctx, &batch)) {
            for (&h, b) in stale.iter().zip(out) {
                self.headroom[h] = b;
                self.headroom_at[h] = self.work.version[h];
            }
        }
    }

    /// The loads of those of `vms` not asked yet (one call).
    fn ensure_vm_loads(&mut self, s: &mut Scheduler, vms: &[usize]) {
        if !self.bounded(s) {
            return;
        }
        let unknown: Vec<usize> = vms.iter().copied().filter(|&v| self.vm_load[v].is_none()).collect();
        if unknown.is_empty() {
            return;
        }
        let batch = self.work.vm_batch(&unknown);
        if let Some(out) = self.call_bound(s, |p, ctx| p.vm_load(ctx, &batch)) {
            for (&v, l) in unknown.iter().zip(out) {
                self.vm_load[v] = Some(l);
            }
        }
    }

    /// The threshold module's answer to `would-overload(h, [vm])` read from its bounds, when
    /// they decide it (the caller checks [`Self::bounded`]): the headroom is current and decides
    /// for the VM ([`PolicyInstance::headroom_verdict`]).
    fn bounded_verdict(&self, h: usize, vm: usize) -> Option<bool> {
        if self.headroom_at.get(h) != Some(&self.work.version[h]) {
            return None;
        }
        let load = self.vm_load.get(vm).copied().flatten()?;
        PolicyInstance::headroom_verdict(self.headroom[h], self.vm_migration_s(vm), load)
    }

    /// The VM's migration time as the threshold module sees it (`Context::migration_s`).
    fn vm_migration_s(&self, vm: usize) -> f32 {
        let bw = self.work.snap.migration_bandwidth_mbps;
        if bw > 0.0 {
            self.work.snap.vms.ram_mb[vm] / bw + self.work.snap.vms.extra_migration_s(vm)
        } else {
            f32::INFINITY
        }
    }

    /// The threshold module's bounds said `said` of `would-overload(h, [vm])` and the module
    /// answered `answer`: it broke its `bounded-threshold` promise. Recorded as a failure of the
    /// module; its bounds are dropped for this cycle and never used again by this scheduler.
    fn headroom_lie(&mut self, s: &mut Scheduler, h: usize, vm: usize, said: bool, answer: bool) {
        let snap = self.work.snap;
        let e = PolicyError::InvalidOutput {
            function: "headroom",
            reason: format!(
                "the bounds of host {} and VM {} say would-overload is {said}, but would-overload answers {answer}; \
                 the bounds are no longer used",
                snap.hosts.id[h], snap.vms.id[vm]
            ),
        };
        self.failures.push(PolicyFailure {
            kind: PolicyKind::Threshold,
            module: s.threshold.primary.module().descriptor.name.clone(),
            code: e.code(),
            error: e.to_string(),
            fallback: false,
        });
        self.headroom.clear();
        s.headroom_distrusted = true;
    }

    /// Audits the bounds once a cycle, at the first placement or evacuation: `would-overload` for
    /// its first VM, asked of up to `HEADROOM_AUDIT_HOSTS` hosts the bounds accept and as many they
    /// refuse (one call). This is what catches bounds that veto hosts wrongly: such hosts are
    /// never weighed, so the audits of [`Self::first_acceptable`] would not meet them.
    fn audit_bounds(&mut self, s: &mut Scheduler, vms: &[usize]) -> Result<(), Abort> {
        if self.bounds_audited || !self.bounded(s) {
            return Ok(());
        }
        let Some(&vm) = vms.iter().find(|&&v| self.vm_load[v].is_some()) else { return Ok(()) };
        self.bounds_audited = true;
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for h in 0..self.work.snap.hosts.len() {
            if self.work.state[h] != HostState::Active || self.work.cpu_used[h] <= 0.0 {
                continue;
            }
            match self.bounded_verdict(h, vm) {
                Some(true) if yes.len() < HEADROOM_AUDIT_HOSTS => yes.push(h),
                Some(false) if no.len() < HEADROOM_AUDIT_HOSTS => no.push(h),
                _ => {}
            }
            if yes.len() == HEADROOM_AUDIT_HOSTS && no.len() == HEADROOM_AUDIT_HOSTS {
                break;
            }
        }
        let said: Vec<(usize, bool)> = yes.iter().map(|&h| (h, true)).chain(no.iter().map(|&h| (h, false))).collect();
        if said.is_empty() {
            return Ok(());
        }
        let hosts: Vec<usize> = said.iter().map(|&(h, _)| h).collect();
        let batch = self.work.host_batch(&hosts);
        let add = self.work.vm_batch(&[vm]);
        self.stats.rows_checked += hosts.len() as u64;
        let answers = self.call(&mut s.threshold, |p, ctx| p.would_overload(ctx, &batch, &add))?;
        if let Some((&(h, said), &answer)) = said.iter().zip(&answers).find(|&(&(_, v), &a)| v != a) {
            self.headroom_lie(s, h, vm, said, answer);
        }
        Ok(())
    }

    /// The lowest-numbered member of candidate-index group `g` (`usize::MAX` when empty).
    fn group_first(&mut self, ix: &CandIndex, g: usize) -> usize {
        if self.group_first.is_empty() {
            self.group_first = vec![(u64::MAX, usize::MAX); ix.groups()];
        }
        let stamp = ix.stamp(g);
        if self.group_first[g].0 != stamp {
            self.group_first[g] = (stamp, ix.members(g).iter().copied().min().unwrap_or(usize::MAX));
        }
        self.group_first[g].1
    }

    /// `h` is a host the threshold module surely vetoes for the VM of `veto` (its migration
    /// time and load, [`Self::veto_key`]): never weighed, it cannot win.
    fn surely_vetoed_for(&self, h: usize, (migration_s, load): (f32, Option<(f32, f32)>)) -> bool {
        let Some(load) = load else { return false };
        self.work.cpu_used[h] > 0.0
            && self.headroom_at[h] == self.work.version[h]
            && PolicyInstance::headroom_verdict(self.headroom[h], migration_s, load) == Some(true)
    }

    /// Builds the headroom summary of index group `g` ([`VetoGroups::build`]) if not built yet.
    fn summarize(&mut self, ix: &CandIndex, g: usize) {
        let (work, headroom, headroom_at) = (&self.work, &self.headroom, &self.headroom_at);
        self.veto.build(g, ix.members(g), |h| bounded_of(work, headroom, headroom_at, h));
    }

    /// What [`Self::surely_vetoed_for`] needs of `vm`, computed once per placement.
    fn veto_key(&self, vm: usize) -> (f32, Option<(f32, f32)>) {
        (self.vm_migration_s(vm), self.vm_load.get(vm).copied().flatten())
    }

    fn run(&mut self, s: &mut Scheduler) -> Result<Plan, Abort> {
        let snap = self.work.snap;
        let n = snap.hosts.len();
        let rules = s.strategy.rules.clone();
        let persistence = rules.persistence.max(1);

        // 1. Overload detection over all hosts at once.
        let empty = self.work.host_batch(&[]);
        let all = std::mem::replace(&mut self.work.hosts, empty);
        let classes = self.call(&mut s.threshold, |p, ctx| p.classify(ctx, &all));
        self.work.hosts = all;
        let classes = classes?;

        let mut overloaded = Vec::new();
        let mut underloaded = Vec::new();
        let mut excluded_dest = vec![false; n];
        for h in 0..n {
            let id = snap.hosts.id[h];
            let active = self.work.state[h] == HostState::Active;
            let (over, under) = (active && classes[h] == 2, active && classes[h] == 1);
            let os = s.over_streak.entry(id).or_insert(0);
            *os = if over { *os + 1 } else { 0 };
            let us = s.under_streak.entry(id).or_insert(0);
            *us = if under { *us + 1 } else { 0 };
            let (os, us) = (*os, *us);
            if over {
                excluded_dest[h] = true; // an overloaded host never receives VMs
                self.stats.overloaded_hosts += 1;
                if os >= persistence {
                    overloaded.push(h);
                }
                self.trace_host(h, HostClass::Overload, os, persistence);
            }
            if under {
                self.stats.underloaded_hosts += 1;
                if us >= persistence {
                    underloaded.push(h);
                }
                self.trace_host(h, HostClass::Underload, us, persistence);
            }
            if self.work.state[h] == HostState::Down {
                excluded_dest[h] = true;
            }
        }

        let movable = |vm: usize| -> bool {
            !snap.vms.migrating[vm]
                && (rules.vm_cooldown_cycles == 0
                    || s.moved_at
                        .get(&snap.vms.id[vm])
                        .is_none_or(|&c| snap.cycle.saturating_sub(c) >= u64::from(rules.vm_cooldown_cycles)))
        };
        let movable: Vec<bool> = (0..snap.vms.len()).map(|vm| movable(vm) && !self.rules.is_pinned(vm)).collect();
        // Selection off an overloaded host also respects keep-together rules (`rules.rs`).
        let alone: Vec<bool> = if self.rules.active {
            (0..snap.vms.len()).map(|vm| movable[vm] && self.rules.movable_alone(vm, &self.work.vm_host)).collect()
        } else {
            movable.clone()
        };
        let limit = rules.max_migrations_per_host;
        let room = |work: &Work, h: usize| limit == 0 || work.migrations[h] < limit;

        // 2. VM selection on overloaded hosts.
        let mut to_place: Vec<(usize, usize)> = Vec::new(); // (vm, source host)
        for &h in &overloaded {
            let mut still_over = true;
            while still_over {
                let candidates: Vec<usize> = self.work.vms_on[h].iter().copied().filter(|&vm| alone[vm]).collect();
                if candidates.is_empty() || !room(&self.work, h) {
                    break;
                }
                let host = self.work.host_batch(&[h]);
                let vms = self.work.selection_batch(&candidates);
                let order = self.call(&mut s.selection, |p, ctx| p.select(ctx, &host, &vms))?;
                if order.is_empty() {
                    break;
                }
                for i in order {
                    let vm = candidates[i as usize];
                    if let Some(t) = self.trace.as_mut() {
                        let id = snap.hosts.id[h];
                        if let Some(d) = t.hosts.iter_mut().rev().find(|d| d.host == id) {
                            d.selection_order.push(snap.vms.id[vm]);
                        }
                    }
                    if !room(&self.work, h) {
                        still_over = false;
                        break;
                    }
                    self.work.detach(vm);
                    // Reserve the source's share of this migration while placing.
                    self.work.migrations[h] += 1;
                    to_place.push((vm, h));
                    let batch = self.work.host_batch(&[h]);
                    let class = self.call(&mut s.threshold, |p, ctx| p.classify(ctx, &batch))?;
                    if class[0] != 2 {
                        still_over = false;
                        break;
                    }
                }
            }
        }

        // 2b. Hosts in maintenance or in reserve are emptied, whatever their load.
        if self.rules.active {
            let emptied: Vec<usize> = (0..n).filter(|&h| self.rules.must_empty(h)).collect();
            for h in emptied {
                excluded_dest[h] = true;
                let vms: Vec<usize> = self.work.vms_on[h].clone();
                for vm in vms {
                    if !movable[vm] || !room(&self.work, h) {
                        if let Some(t) = self.trace.as_mut() {
                            let why = if self.rules.is_pinned(vm) {
                                "pinned (never migrates) on a host to be emptied"
                            } else if snap.vms.migrating[vm] {
                                "already migrating"
                            } else if !room(&self.work, h) {
                                "no migration slot left on the host to be emptied"
                            } else {
                                "in its cool-down"
                            };
                            t.unplaced.push(Unplaced {
                                vm: snap.vms.id[vm],
                                from: snap.hosts.id[h],
                                reason: why.into(),
                            });
                        }
                        continue;
                    }
                    self.work.detach(vm);
                    self.work.migrations[h] += 1;
                    to_place.push((vm, h));
                }
            }
        }

        // 3. Placement of the selected VMs, by decreasing CPU demand.
        to_place.sort_by(|a, b| self.work.demand(b.0).total_cmp(&self.work.demand(a.0)));
        if !to_place.is_empty() || !underloaded.is_empty() {
            self.init_bounds(s);
            let vms: Vec<usize> = to_place.iter().map(|&(vm, _)| vm).collect();
            self.ensure_vm_loads(s, &vms);
            self.audit_bounds(s, &vms)?;
        }
        // Hosts with VMs are offered one by one; empty sleeping hosts one per type.
        let (mut pool, sleeping): (Vec<usize>, Vec<usize>) =
            (0..n).filter(|&h| !excluded_dest[h]).partition(|&h| self.work.state[h] != HostState::Asleep);
        if !to_place.is_empty() {
            self.build_index(s, pool.iter().copied());
        }
        for &(vm, from) in &to_place {
            self.work.migrations[from] -= 1; // the reservation becomes the real count in place()
            let emptying = self.rules.must_empty(from);
            match self.find_host(s, vm, from, (Some(&pool), &sleeping), &room, emptying)? {
                Some(to) => {
                    if self.work.state[to] == HostState::Asleep && self.work.vms_on[to].is_empty() {
                        pool.push(to); // woken by this plan: from now on a host like any other
                        self.index_insert(to);
                    }
                    let reason = if emptying { MigrationReason::Maintenance } else { MigrationReason::Overload };
                    self.work.place(vm, from, to);
                    self.migrations.push((vm, from, to, reason));
                    self.trace_migration(vm, from, to, reason);
                }
                None => {
                    self.work.reattach(vm, from);
                    if let Some(t) = self.trace.as_mut() {
                        let n = self.last_place.take().map_or(0, |p| p.0);
                        t.unplaced.push(Unplaced {
                            vm: snap.vms.id[vm],
                            from: snap.hosts.id[from],
                            reason: if n == 0 {
                                "no host passed the capacity filter".into()
                            } else {
                                format!("all {n} candidates were vetoed as overloaded or weighed out")
                            },
                        });
                    }
                }
            }
        }

        // 3b. A must keep-together group emptied off a host in pieces (a member placed, a mate
        // left behind — pinned, no slot, no room, the inflow limit — or sent elsewhere): its
        // moves off that host are undone, so the group stays whole where it was.
        if self.rules.active {
            let groups: Vec<Vec<usize>> = self.rules.must_affinity_groups().map(<[usize]>::to_vec).collect();
            for members in groups {
                let mut hosts: Vec<usize> = members.iter().map(|&m| self.work.vm_host[m]).collect();
                hosts.sort_unstable();
                hosts.dedup();
                if hosts.len() <= 1 {
                    continue;
                }
                let mut i = self.migrations.len();
                while i > 0 {
                    i -= 1;
                    let (vm, from, to, reason) = self.migrations[i];
                    if reason != MigrationReason::Maintenance || !members.contains(&vm) {
                        continue;
                    }
                    self.migrations.remove(i);
                    self.work.undo_move(vm, from, to);
                    if let Some(t) = self.trace.as_mut() {
                        let id = snap.vms.id[vm];
                        t.migrations.retain(|d| !(d.vm == id && d.reason == "maintenance"));
                        t.unplaced.push(Unplaced {
                            vm: id,
                            from: snap.hosts.id[from],
                            reason: "its keep-together group cannot leave the host as a whole".into(),
                        });
                    }
                }
            }
        }

        // 4. Underload: evacuate least-utilized hosts entirely, all or nothing.
        let mut involved: IdSet<usize> = overloaded.iter().copied().collect();
        involved.extend(self.migrations.iter().map(|m| m.2));
        let mut evacuated = Vec::new();
        underloaded.retain(|&h| !involved.contains(&h));
        // Least utilized first. Sorting once is exact: a host's utilization changes only when it
        // receives VMs, and a host that receives VMs is no longer a candidate. Hosts at zero and
        // hosts with migrations in flight are skipped (as Beloglazov & Buyya).
        underloaded.retain(|&h| self.work.util(h) > 0.0 && snap.hosts.migrations_in_flight[h] == 0);
        underloaded.sort_by(|&a, &b| self.work.util(a).total_cmp(&self.work.util(b)).then(a.cmp(&b)));
        // Evacuation destinations: active hosts only (no waking to empty another host), indexed
        // once and shrunk as sources are tried.
        self.index = None;
        if !underloaded.is_empty() {
            let dest: Vec<usize> =
                (0..n).filter(|&d| !excluded_dest[d] && self.work.state[d] == HostState::Active).collect();
            self.build_index(s, dest.into_iter());
        }
        for (i, &h) in underloaded.iter().enumerate() {
            if involved.contains(&h) || self.rules.keeps_awake(h) {
                continue;
            }
            if self.bounded(s) && self.work.vms_on[h].iter().any(|&vm| self.vm_load[vm].is_none()) {
                // The loads of the VMs of the next sources too, in one call.
                let next: Vec<usize> = underloaded[i..(i + EVACUATION_LOADS).min(underloaded.len())]
                    .iter()
                    .flat_map(|&u| self.work.vms_on[u].iter().copied())
                    .collect();
                self.ensure_vm_loads(s, &next);
                self.audit_bounds(s, &next)?;
            }
            excluded_dest[h] = true;
            if let Some(ix) = self.index.as_mut() {
                ix.remove(h);
                self.veto.touch(h);
            }
            let mut vms: Vec<usize> = self.work.vms_on[h].clone();
            if vms.is_empty() {
                continue;
            }
            let util_before = self.work.util(h);
            let refuse = |c: &mut Self, why: String| {
                if let Some(t) = c.trace.as_mut() {
                    let utilization = util_before;
                    t.evacuations.push(Evacuation {
                        host: snap.hosts.id[h],
                        utilization,
                        committed: false,
                        moves: Vec::new(),
                        refused: Some(why),
                    });
                }
            };
            if let Some(&vm) = vms.iter().find(|&&vm| !movable[vm]) {
                let why = if self.rules.is_pinned(vm) {
                    "is pinned (never migrates)"
                } else if snap.vms.migrating[vm] {
                    "is migrating"
                } else {
                    "is in its cool-down"
                };
                refuse(self, format!("VM {} {why}", snap.vms.id[vm]));
                continue;
            }
            if limit > 0 && self.work.migrations[h] + vms.len() as u32 > limit {
                // not enough migration slots on the source to empty it
                refuse(self, format!("{} VMs but only {limit} migrations per host", vms.len()));
                continue;
            }
            vms.sort_by(|&a, &b| self.work.demand(b).total_cmp(&self.work.demand(a)));
            self.stats.evacuations_tried += 1;
            let mut placed: Vec<(usize, usize)> = Vec::new();
            let mut complete = true;
            // Without the index, the destinations are listed for each source.
            let pool: Option<Vec<usize>> = self
                .index
                .is_none()
                .then(|| (0..n).filter(|&d| !excluded_dest[d] && self.work.state[d] == HostState::Active).collect());
            for &vm in &vms {
                self.work.detach(vm);
                match self.find_host(s, vm, h, (pool.as_deref(), &[]), &room, true)? {
                    Some(to) => {
                        self.work.place(vm, h, to);
                        placed.push((vm, to));
                    }
                    None => {
                        self.work.reattach(vm, h);
                        complete = false;
                        if self.trace.is_some() {
                            let n = self.last_place.take().map_or(0, |p| p.0);
                            refuse(self, format!("VM {} fits on none of {n} candidates", snap.vms.id[vm]));
                        }
                        break;
                    }
                }
                if let (true, Some(&(_, to))) = (self.trace.is_some(), placed.last()) {
                    self.trace_migration(vm, h, to, MigrationReason::Underload);
                }
            }
            if complete {
                self.stats.evacuations_committed += 1;
                for &(vm, to) in &placed {
                    self.migrations.push((vm, h, to, MigrationReason::Underload));
                    involved.insert(to);
                }
                evacuated.push(h);
                if let Some(t) = self.trace.as_mut() {
                    t.evacuations.push(Evacuation {
                        host: snap.hosts.id[h],
                        utilization: util_before,
                        committed: true,
                        moves: placed.iter().map(|&(vm, to)| (snap.vms.id[vm], snap.hosts.id[to])).collect(),
                        refused: None,
                    });
                }
            } else {
                for &(vm, to) in placed.iter().rev() {
                    self.work.undo_move(vm, h, to);
                }
                if let Some(t) = self.trace.as_mut() {
                    // Decisions recorded for the rolled-back moves are not part of the plan.
                    let keep = t.migrations.len().saturating_sub(placed.len());
                    t.migrations.truncate(keep);
                }
            }
        }

        Ok(self.plan(evacuated))
    }

    /// The best host for `vm` (currently detached from `from`) among `pool` and one sleeping host
    /// per type from `sleeping`: among candidates that fit and that no operator must-rule
    /// forbids, those breaking the fewest should-rules, then the lowest weight, that the
    /// threshold policy would not call overloaded with the VM added. `evacuating`: `from` is
    /// being emptied entirely (its keep-together mates follow the VM).
    /// `pool: None`: the hosts of the candidate index.
    fn find_host(
        &mut self,
        s: &mut Scheduler,
        vm: usize,
        from: usize,
        (pool, sleeping): (Option<&[usize]>, &[usize]),
        room: &impl Fn(&Work, usize) -> bool,
        evacuating: bool,
    ) -> Result<Option<usize>, Abort> {
        let found = self.search_host(s, vm, from, (pool, sleeping), room, evacuating)?;
        self.stats.placements += 1;
        self.stats.placements_failed += u64::from(found.is_none());
        Ok(found)
    }

    fn search_host(
        &mut self,
        s: &mut Scheduler,
        vm: usize,
        from: usize,
        (pool, sleeping): (Option<&[usize]>, &[usize]),
        room: &impl Fn(&Work, usize) -> bool,
        evacuating: bool,
    ) -> Result<Option<usize>, Abort> {
        if self.index.is_some()
            && self.trace.is_none()
            && !(self.rules.active && self.rules.has_vm_rules(vm))
            && placement_now(s).has_weigh_bound()
        {
            if let Some(found) = self.find_host_indexed(s, vm, from, sleeping, room)? {
                return Ok(found);
            }
        }
        let listed;
        let pool = match pool {
            Some(p) => p,
            None => {
                listed = self.index.as_ref().map(CandIndex::hosts).unwrap_or_default();
                &listed
            }
        };
        let snap = self.work.snap;
        let demand = self.work.demand(vm);
        let ram = snap.vms.ram_mb[vm];
        let core_limit = |h: usize| snap.hosts.core_mips.get(h).copied().unwrap_or(f32::INFINITY);
        let work = &self.work;
        let rules = &self.rules;
        let vm_rules = rules.active && rules.has_vm_rules(vm);
        let fits = |h: usize| {
            h != from
                && work.state[h] != HostState::Down
                && room(work, h)
                // Capacity filter: the VM fits (in total, and on one core).
                && work.cpu_used[h] + demand <= work.hosts.cpu_capacity[h]
                && work.mem_used[h] + ram <= work.hosts.mem_capacity[h]
                && demand <= core_limit(h)
        };
        // Operator must-rules; `Ok(n)`: n should-rules broken.
        let judge = |h: usize| -> Result<u32, Refusal> {
            if !rules.active {
                return Ok(0);
            }
            if let Some(r) = rules.host_refusal(h, work.cpu_used[h] + demand, work.mem_used[h] + ram, work.inflow[h]) {
                return Err(r);
            }
            if vm_rules {
                rules.vm_verdict(vm, from, h, &work.vm_host, evacuating)
            } else {
                Ok(0)
            }
        };
        let mut idx: Vec<usize> = Vec::with_capacity(pool.len());
        let mut broken: Vec<u32> = Vec::new();
        for &h in pool {
            if !fits(h) {
                continue;
            }
            if let Ok(b) = judge(h) {
                idx.push(h);
                if vm_rules {
                    broken.push(b);
                }
            }
        }
        let mut filtered = FilterCounts::default();
        if self.trace.is_some() {
            self.veto_log.clear();
            for &h in pool {
                if h == from {
                    filtered.source += 1;
                } else if work.state[h] == HostState::Down {
                    filtered.down += 1;
                } else if !room(work, h) {
                    filtered.migration_slots += 1;
                } else if work.cpu_used[h] + demand > work.hosts.cpu_capacity[h] {
                    filtered.cpu += 1;
                } else if work.mem_used[h] + ram > work.hosts.mem_capacity[h] {
                    filtered.memory += 1;
                } else if demand > core_limit(h) {
                    filtered.core += 1;
                } else if let Err(r) = judge(h) {
                    filtered.count_rule(r);
                }
            }
        }
        // Empty sleeping hosts of one type are interchangeable: their candidate rows are equal,
        // so a policy weighs them equally and the lowest-numbered would win the tie. Only that
        // one is offered (a day of PlanetLab on 800 hosts offers ~90 candidates instead of ~750).
        // Sleeping hosts that already received a VM in this cycle are in `pool`. A host an
        // operator rule refuses does not stand for its type; with VM rules, one host per type
        // and number of broken should-rules is offered.
        let mut seen: Vec<(usize, u32)> = Vec::new();
        for &h in sleeping {
            if !vm_rules && seen.len() == self.n_classes {
                break;
            }
            if !work.vms_on[h].is_empty() {
                continue;
            }
            let b = match judge(h) {
                Ok(b) => b,
                Err(r) => {
                    if self.trace.is_some() {
                        filtered.count_rule(r);
                    }
                    continue;
                }
            };
            let key = (self.host_class[h], b);
            if !seen.contains(&key) {
                seen.push(key);
                if fits(h) {
                    idx.push(h);
                    if vm_rules {
                        broken.push(b);
                    }
                }
            }
        }
        if idx.is_empty() {
            if self.trace.is_some() {
                self.last_place = Some((0, filtered, Vec::new()));
            }
            return Ok(None);
        }
        // Columns gathered one at a time (cache- and vector-friendly at 10,000 candidates).
        let cand = self.gather(&idx);
        let demand_rec = types::VmDemand { cpu_mips: demand, ram_mb: ram };
        self.stats.rows_weighed += u64::from(cand.n);
        let weights = self.call(&mut s.placement, |p, ctx| p.weigh(ctx, demand_rec, &cand));
        self.scratch = Some(cand);
        let weights = weights?;
        // Rank: fewest broken should-rules, then lowest weight, then lowest host index.
        let by_weight = |a: &Ranked, b: &Ranked| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2));
        let ranked_iter = || {
            weights
                .iter()
                .zip(idx.iter())
                .enumerate()
                .filter_map(|(i, (w, &h))| w.map(|w| (broken.get(i).copied().unwrap_or(0), w, h)))
        };
        let add = self.work.vm_batch(&[vm]);
        // The first short list in one pass, without ranking every candidate: usually it decides.
        let mut top: Vec<Ranked> = Vec::with_capacity(SHORTLIST + 1);
        for e in ranked_iter() {
            if top.len() == SHORTLIST && by_weight(&e, &top[SHORTLIST - 1]).is_ge() {
                continue;
            }
            let at = top.partition_point(|x| by_weight(x, &e).is_lt());
            top.insert(at, e);
            top.truncate(SHORTLIST);
        }
        let first = self.first_acceptable(s, &top, vm, &add)?;
        if self.trace.is_some() {
            let top = top
                .iter()
                .take(TOP_CANDIDATES)
                .map(|&(_, weight, h)| Candidate { host: snap.hosts.id[h], weight, vetoed: self.veto_log.contains(&h) })
                .collect();
            self.last_place = Some((idx.len() as u32, filtered, top));
        }
        if let Some(h) = first {
            return Ok(Some(h));
        }
        let mut ranked: Vec<Ranked> = ranked_iter().collect();
        if ranked.len() <= SHORTLIST {
            return Ok(None);
        }
        // The SHORTLIST best (already checked) first, then longer lists ordered only as far as
        // they are checked.
        ranked.select_nth_unstable_by(SHORTLIST - 1, by_weight);
        let mut start = SHORTLIST;
        let mut size = SHORTLIST * 4;
        while start < ranked.len() {
            let end = (start + size).min(ranked.len());
            if end < ranked.len() {
                ranked[start..].select_nth_unstable_by(end - start - 1, by_weight);
            }
            ranked[start..end].sort_unstable_by(by_weight);
            if let Some(h) = self.first_acceptable(s, &ranked[start..end], vm, &add)? {
                return Ok(Some(h));
            }
            start = end;
            size *= 4;
        }
        Ok(None)
    }

    /// Indexes `dest` as the destinations of a placement step, when the placement module can
    /// bound its weights and tracing is off (the trace lists every candidate).
    fn build_index(&mut self, s: &Scheduler, dest: impl Iterator<Item = usize>) {
        self.index = None;
        if !s.candidate_index || self.trace.is_some() || !placement_now(s).has_weigh_bound() {
            return;
        }
        let dest: Vec<usize> = dest.collect();
        if dest.len() < s.index_min_hosts {
            return;
        }
        self.work.dirty.clear();
        let ix = CandIndex::new(self.work.snap.hosts.len(), self.n_classes);
        self.veto = VetoGroups::new(self.work.snap.hosts.len(), ix.groups());
        self.index = Some(ix);
        self.group_first.clear();
        for h in dest {
            self.index_insert(h);
        }
    }

    fn index_key(&self, h: usize) -> usize {
        let w = &self.work;
        CandIndex::key(self.host_class[h], w.state[h] == HostState::Asleep, w.cpu_used[h], w.hosts.cpu_capacity[h])
    }

    fn index_insert(&mut self, h: usize) {
        let key = self.index_key(h);
        if let Some(ix) = self.index.as_mut() {
            ix.insert(h, key);
        }
    }

    /// Moves the hosts whose load changed to their groups.
    fn sync_index(&mut self) {
        let dirty = std::mem::take(&mut self.work.dirty);
        if !self.headroom.is_empty() {
            self.stale_headroom.extend_from_slice(&dirty);
        }
        self.veto.touch_all(&dirty);
        for &h in &dirty {
            let key = self.index_key(h);
            if let Some(ix) = self.index.as_mut() {
                ix.update(h, key);
            }
        }
        self.work.dirty = dirty;
        self.work.dirty.clear();
    }

    /// Whether `vm` (detached from `from`) may go to `h` on the host side: capacity, migration
    /// slots, operator host rules (the indexed path runs only for VMs without VM rules).
    fn admissible(&self, h: usize, from: usize, demand: f32, ram: f32, room: &impl Fn(&Work, usize) -> bool) -> bool {
        let work = &self.work;
        let core_limit = work.snap.hosts.core_mips.get(h).copied().unwrap_or(f32::INFINITY);
        h != from
            && work.state[h] != HostState::Down
            && room(work, h)
            && work.cpu_used[h] + demand <= work.hosts.cpu_capacity[h]
            && work.mem_used[h] + ram <= work.hosts.mem_capacity[h]
            && demand <= core_limit
            && (!self.rules.active
                || self
                    .rules
                    .host_refusal(h, work.cpu_used[h] + demand, work.mem_used[h] + ram, work.inflow[h])
                    .is_none())
    }

    /// Candidate rows of `idx`, into the previous call's buffers.
    fn gather(&mut self, idx: &[usize]) -> types::Candidates {
        let work = &self.work;
        let mut cand = self.scratch.take().unwrap_or_else(|| types::Candidates {
            n: 0,
            cpu_used: Vec::new(),
            cpu_capacity: Vec::new(),
            mem_used: Vec::new(),
            mem_capacity: Vec::new(),
            power_model: Vec::new(),
            vm_count: Vec::new(),
            asleep: Vec::new(),
        });
        cand.n = idx.len() as u32;
        refill(&mut cand.cpu_used, idx.iter().map(|&h| work.cpu_used[h]));
        refill(&mut cand.cpu_capacity, idx.iter().map(|&h| work.hosts.cpu_capacity[h]));
        refill(&mut cand.mem_used, idx.iter().map(|&h| work.mem_used[h]));
        refill(&mut cand.mem_capacity, idx.iter().map(|&h| work.hosts.mem_capacity[h]));
        refill(&mut cand.power_model, idx.iter().map(|&h| work.snap.hosts.power_model[h]));
        refill(&mut cand.vm_count, idx.iter().map(|&h| work.vms_on[h].len() as u32));
        refill(&mut cand.asleep, idx.iter().map(|&h| u8::from(work.state[h] == HostState::Asleep)));
        cand
    }

    /// [`Self::find_host`] over the candidate index, for a module exporting `weigh-bound` and a
    /// VM without VM rules: the same host as the full scan, weighing only the groups whose
    /// bound can still beat the best weights found. Groups are weighed best bound first; a
    /// weighed host is checked for overload once its weight is below every unweighed group's
    /// bound (so it ranks before every unweighed host), in the full scan's order (weight, then
    /// host index), in chunks of 8, 32, 128, … `None`: the placement module changed mid-way (it
    /// failed or the budget ran out), so the caller scans instead.
    fn find_host_indexed(
        &mut self,
        s: &mut Scheduler,
        vm: usize,
        from: usize,
        sleeping: &[usize],
        room: &impl Fn(&Work, usize) -> bool,
    ) -> Result<Option<Option<usize>>, Abort> {
        let degraded = s.placement.degraded;
        self.sync_index();
        if self.bounded(s) && !self.stale_headroom.is_empty() {
            let mut stale = std::mem::take(&mut self.stale_headroom);
            stale.sort_unstable();
            stale.dedup();
            // Only destinations need it (an evacuated source changed, but is no longer one).
            if let Some(ix) = self.index.as_ref() {
                stale.retain(|&h| ix.contains(h));
            }
            self.refresh_headroom(s, &stale);
            stale.clear();
            self.stale_headroom = stale;
        }
        if let Some(ix) = self.index.as_ref() {
            let (work, headroom, headroom_at) = (&self.work, &self.headroom, &self.headroom_at);
            self.veto.settle(|h| ix.group_of(h), |h| bounded_of(work, headroom, headroom_at, h));
        }
        let snap = self.work.snap;
        let demand = self.work.demand(vm);
        let ram = snap.vms.ram_mb[vm];
        let demand_rec = types::VmDemand { cpu_mips: demand, ram_mb: ram };
        let Some(ix) = self.index.take() else { return Ok(None) };
        self.stats.indexed_searches += 1;
        if sleeping.is_empty() && self.bounded(s) && !self.any_candidate(&ix, vm, from, room) {
            // No host passes capacity and the headroom: the search would weigh nobody.
            self.index = Some(ix);
            return Ok(Some(None));
        }
        let groups = self.live_groups(s, &ix, vm);
        let mut hg = types::HostGroups {
            n: groups.len() as u32,
            cpu_used_min: Vec::with_capacity(groups.len()),
            cpu_used_max: Vec::with_capacity(groups.len()),
            cpu_capacity: Vec::with_capacity(groups.len()),
            mem_capacity: Vec::with_capacity(groups.len()),
            power_model: Vec::with_capacity(groups.len()),
            asleep: Vec::with_capacity(groups.len()),
        };
        for &g in &groups {
            let (class, asleep) = CandIndex::group_class(g);
            let rep = self.class_rep[class];
            let cap = self.work.hosts.cpu_capacity[rep];
            let (lo, hi) = CandIndex::range(g, cap);
            hg.cpu_used_min.push(lo);
            hg.cpu_used_max.push(hi);
            hg.cpu_capacity.push(cap);
            hg.mem_capacity.push(self.work.hosts.mem_capacity[rep]);
            hg.power_model.push(snap.hosts.power_model[rep]);
            hg.asleep.push(u8::from(asleep));
        }
        let result = self.indexed_search(s, &ix, (vm, from, demand_rec), (&groups, &hg), sleeping, room, degraded);
        self.index = Some(ix);
        result
    }

    /// The index groups that can hold a destination for `vm`: nonempty, with room for its CPU
    /// on the host type (every member uses at least the group's lowest CPU) and its demand
    /// within one core, and with a member the headroom does not surely veto. Only these are
    /// bounded and weighed; the others could not offer a winner, so leaving them out changes
    /// no choice.
    fn live_groups(&mut self, s: &Scheduler, ix: &CandIndex, vm: usize) -> Vec<usize> {
        let demand = self.work.demand(vm);
        let (migration_s, load) = self.veto_key(vm);
        let bounded = self.bounded(s);
        let mut live = Vec::new();
        for g in ix.nonempty() {
            let rep = self.class_rep[CandIndex::group_class(g).0];
            let cap = self.work.hosts.cpu_capacity[rep];
            let core = self.work.snap.hosts.core_mips.get(rep).copied().unwrap_or(f32::INFINITY);
            if CandIndex::range(g, cap).0 + demand > cap || demand > core {
                continue;
            }
            if let (true, Some((low, _))) = (bounded, load) {
                self.summarize(ix, g);
                if self.veto.candidates(g, low, migration_s).is_some_and(|(o, r)| o.is_empty() && r.is_empty()) {
                    continue;
                }
            }
            live.push(g);
        }
        live
    }

    /// Whether some indexed host passes the host side for `vm` (detached from `from`) as
    /// [`Self::indexed_search`] filters them, bounds aside: capacity, slots, host rules, and
    /// not surely vetoed by the headroom (the caller checks [`Self::bounded`]). When none does,
    /// the search would find nothing: an evacuation that cannot start costs no policy call.
    fn any_candidate(&mut self, ix: &CandIndex, vm: usize, from: usize, room: &impl Fn(&Work, usize) -> bool) -> bool {
        let demand = self.work.demand(vm);
        let ram = self.work.snap.vms.ram_mb[vm];
        let veto = self.veto_key(vm);
        let Some((low, _)) = veto.1 else { return true };
        let keep = |c: &Self, h: usize| c.admissible(h, from, demand, ram, room) && !c.surely_vetoed_for(h, veto);
        for g in ix.nonempty() {
            self.summarize(ix, g);
            let found = match self.veto.candidates(g, low, veto.0) {
                Some((others, ranked)) => {
                    self.stats.hosts_scanned += (others.len() + ranked.len()) as u64;
                    others.iter().copied().chain(ranked.iter().map(|&(_, _, h)| h)).any(|h| keep(self, h))
                }
                None => {
                    self.stats.hosts_scanned += ix.members(g).len() as u64;
                    ix.members(g).iter().any(|&h| keep(self, h))
                }
            };
            if found {
                return true;
            }
        }
        false
    }

    #[allow(clippy::too_many_arguments)]
    fn indexed_search(
        &mut self,
        s: &mut Scheduler,
        ix: &CandIndex,
        (vm, from, demand_rec): (usize, usize, types::VmDemand),
        (groups, hg): (&[usize], &types::HostGroups),
        sleeping: &[usize],
        room: &impl Fn(&Work, usize) -> bool,
        degraded: bool,
    ) -> Result<Option<Option<usize>>, Abort> {
        let (demand, ram) = (demand_rec.cpu_mips, demand_rec.ram_mb);
        let bounds = self.call(&mut s.placement, |p, ctx| p.weigh_bound(ctx, demand_rec, hg))?;
        if s.placement.degraded != degraded {
            return Ok(None);
        }
        let mut order: Vec<(f32, usize)> = groups.iter().zip(&bounds).filter_map(|(&g, b)| b.map(|b| (b, g))).collect();
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // For each position of `order`, the lowest host number in it and the groups after it of
        // the same bound: a weighed host of exactly that weight and a lower number ranks before
        // all of them.
        let mut tie_first = vec![usize::MAX; order.len()];
        for i in (0..order.len()).rev() {
            let own = self.group_first(ix, order[i].1);
            let after = if i + 1 < order.len() && order[i + 1].0 == order[i].0 { tie_first[i + 1] } else { usize::MAX };
            tie_first[i] = own.min(after);
        }
        // One empty sleeping host per type, as in the full scan; weighed with the first groups.
        let mut fresh: Vec<usize> = Vec::new();
        let mut seen: Vec<usize> = Vec::new();
        for &h in sleeping {
            if seen.len() == self.n_classes {
                break;
            }
            if !self.work.vms_on[h].is_empty() {
                continue;
            }
            if self.rules.active {
                let w = &self.work;
                if self.rules.host_refusal(h, w.cpu_used[h] + demand, w.mem_used[h] + ram, w.inflow[h]).is_some() {
                    continue;
                }
            }
            let class = self.host_class[h];
            if !seen.contains(&class) {
                seen.push(class);
                if self.admissible(h, from, demand, ram, room) {
                    fresh.push(h);
                }
            }
        }
        let add = self.work.vm_batch(&[vm]);
        // Weighed hosts that rank before every unweighed one (a min-heap in the full scan's
        // order), and the others (unordered: they move over when the groups left can no
        // longer beat them).
        let mut safe: BinaryHeap<Reverse<ByWeight>> = BinaryHeap::new();
        let mut later: Vec<ByWeight> = Vec::new();
        let mut later_best: Option<ByWeight> = None;
        let mut next = 0;
        let mut chunk = SHORTLIST;
        loop {
            // Weigh groups until `chunk` weighed hosts rank before every unweighed one.
            while safe.len() < chunk && !(next == order.len() && fresh.is_empty()) {
                // At least as many as the veto will check next: a VM vetoed everywhere costs a
                // few calls, not one per group.
                let want = MIN_WEIGH.max(chunk - safe.len());
                while next < order.len() && fresh.len() < want {
                    let bounded = self.bounded(s);
                    let g = order[next].1;
                    let veto = self.veto_key(vm);
                    if bounded && veto.1.is_some() {
                        self.summarize(ix, g);
                    }
                    let keep = |c: &Self, h: usize| {
                        c.admissible(h, from, demand, ram, room) && !(bounded && c.surely_vetoed_for(h, veto))
                    };
                    let survivors = match (bounded, veto) {
                        (true, (migration_s, Some((low, _)))) => self.veto.candidates(g, low, migration_s),
                        _ => None,
                    };
                    if let Some((others, ranked)) = survivors {
                        self.stats.groups_vetoed += u64::from(ranked.is_empty());
                        self.stats.hosts_scanned += (others.len() + ranked.len()) as u64;
                        let hosts = others.iter().copied().chain(ranked.iter().map(|&(_, _, h)| h));
                        fresh.extend(hosts.filter(|&h| keep(self, h)));
                    } else {
                        self.stats.hosts_scanned += ix.members(g).len() as u64;
                        fresh.extend(ix.members(g).iter().copied().filter(|&h| keep(self, h)));
                    }
                    next += 1;
                }
                if !fresh.is_empty() {
                    let cand = self.gather(&fresh);
                    self.stats.rows_weighed += u64::from(cand.n);
                    let weights = self.call(&mut s.placement, |p, ctx| p.weigh(ctx, demand_rec, &cand));
                    self.scratch = Some(cand);
                    let weights = weights?;
                    if s.placement.degraded != degraded {
                        return Ok(None);
                    }
                    for (&h, w) in fresh.iter().zip(&weights) {
                        if let Some(w) = *w {
                            let e = ByWeight(w, h);
                            later_best = Some(later_best.map_or(e, |b: ByWeight| b.min(e)));
                            later.push(e);
                        }
                    }
                    fresh.clear();
                }
                let (t, first) = order.get(next).map_or((f32::INFINITY, usize::MAX), |o| (o.0, tie_first[next]));
                // Signed zeros rank apart (`total_cmp`) but compare equal: no tie rule there.
                // Weights are finite, so the hosts that rank first are exactly those that pass
                // (none when the best of them does not).
                let ranks_first = |&ByWeight(w, h): &ByWeight| w < t || (w == t && w != 0.0 && h < first);
                if later_best.is_some_and(|b| ranks_first(&b)) {
                    later_best = None;
                    let mut i = 0;
                    while i < later.len() {
                        if ranks_first(&later[i]) {
                            safe.push(Reverse(later.swap_remove(i)));
                        } else {
                            later_best = Some(later_best.map_or(later[i], |b: ByWeight| b.min(later[i])));
                            i += 1;
                        }
                    }
                }
            }
            let take = safe.len().min(chunk);
            if take == 0 {
                return Ok(Some(None));
            }
            let batch: Vec<Ranked> =
                (0..take).filter_map(|_| safe.pop()).map(|Reverse(ByWeight(w, h))| (0, w, h)).collect();
            if let Some(h) = self.first_acceptable(s, &batch, vm, &add)? {
                return Ok(Some(Some(h)));
            }
            chunk *= 4;
        }
    }

    /// The first host of `chunk` (ranked best first) that the threshold policy would not call
    /// overloaded with the VM `add` (= `vm`) on it; one `would-overload` call for the hosts of
    /// the chunk the threshold module's headroom does not decide (`bounded-threshold`).
    fn first_acceptable(
        &mut self,
        s: &mut Scheduler,
        chunk: &[Ranked],
        vm: usize,
        add: &types::Vms,
    ) -> Result<Option<usize>, Abort> {
        // A host using no CPU yet is not checked (as Beloglazov & Buyya): the VM alone defines
        // its load.
        // Hosts after the first unchecked one are never reached, so they are not asked about.
        let mut reach = chunk.iter().position(|&(_, _, h)| self.work.cpu_used[h] <= 0.0).map_or(chunk.len(), |i| i + 1);
        let mut known: Vec<Option<bool>> = vec![None; reach];
        if self.bounded(s) {
            let checked: Vec<usize> =
                chunk[..reach].iter().map(|&(_, _, h)| h).filter(|&h| self.work.cpu_used[h] > 0.0).collect();
            self.ensure_vm_loads(s, &[vm]);
            self.refresh_headroom(s, &checked);
            if self.bounded(s) {
                for (i, &(_, _, h)) in chunk[..reach].iter().enumerate() {
                    if self.work.cpu_used[h] <= 0.0 {
                        break;
                    }
                    known[i] = self.bounded_verdict(h, vm);
                    if known[i] == Some(false) {
                        // Surely accepted: the hosts after it are never reached.
                        reach = i + 1;
                        break;
                    }
                }
            }
        }
        let chunk = &chunk[..reach];
        // Every HEADROOM_AUDIT-th bound-decided verdict is asked as well.
        let decided = known.iter().filter(|k| k.is_some()).count() as u64;
        let audit = if decided > 0 && self.audit_in == 0 { known.iter().position(Option::is_some) } else { None };
        self.audit_in = if audit.is_some() { HEADROOM_AUDIT } else { self.audit_in.saturating_sub(decided) };
        let check: Vec<usize> = chunk
            .iter()
            .zip(&known)
            .enumerate()
            .filter(|&(i, (&(_, _, h), k))| (k.is_none() || audit == Some(i)) && self.work.cpu_used[h] > 0.0)
            .map(|(_, (&(_, _, h), _))| h)
            .collect();
        let verdict = if check.is_empty() {
            Vec::new()
        } else {
            let batch = self.work.host_batch(&check);
            self.stats.rows_checked += check.len() as u64;
            self.call(&mut s.threshold, |p, ctx| p.would_overload(ctx, &batch, add))?
        };
        // `check` is `chunk` without its unchecked and bound-decided (but audited) hosts, in the
        // same order.
        let mut verdicts = verdict.iter();
        for (i, (&(_, _, h), k)) in chunk.iter().zip(&known).enumerate() {
            let over = self.work.cpu_used[h] > 0.0
                && match k {
                    Some(v) if audit == Some(i) => {
                        let answer = verdicts.next().copied().unwrap_or(*v);
                        if answer != *v {
                            // The bounds lied: this chunk again, every host asked.
                            self.headroom_lie(s, h, vm, *v, answer);
                            return self.first_acceptable(s, chunk, vm, add);
                        }
                        self.stats.bounded_verdicts += 1;
                        *v
                    }
                    Some(v) => {
                        self.stats.bounded_verdicts += 1;
                        *v
                    }
                    None => verdicts.next().is_some_and(|&v| v),
                };
            if !over {
                return Ok(Some(h));
            }
            self.stats.vetoes += 1;
            if self.trace.is_some() {
                self.veto_log.push(h);
            }
        }
        Ok(None)
    }

    fn plan(&mut self, evacuated: Vec<usize>) -> Plan {
        let snap = self.work.snap;
        let mut plan = Plan::default();
        let mut wake = IdSet::default();
        for &(vm, from, to, reason) in &self.migrations {
            plan.migrations.push(Migration {
                vm: snap.vms.id[vm],
                from: snap.hosts.id[from],
                to: snap.hosts.id[to],
                reason,
                mode: None,
            });
            if snap.hosts.state[to] == HostState::Asleep && wake.insert(to) {
                plan.wake.push(snap.hosts.id[to]);
            }
        }
        let mut sleep: IdSet<usize> = evacuated.into_iter().collect();
        // Active hosts left without VMs and without migrations in flight sleep too.
        for h in 0..snap.hosts.len() {
            if snap.hosts.state[h] == HostState::Active
                && self.work.vms_on[h].is_empty()
                && snap.hosts.migrations_in_flight[h] == 0
            {
                sleep.insert(h);
            }
        }
        if self.rules.active {
            // Never-sleep, reserve and maintenance hosts stay awake; reserve hosts are woken.
            sleep.retain(|&h| !self.rules.keeps_awake(h));
            for h in 0..snap.hosts.len() {
                if self.rules.in_reserve(h) && snap.hosts.state[h] == HostState::Asleep && wake.insert(h) {
                    plan.wake.push(snap.hosts.id[h]);
                }
            }
        }
        let mut sleep: Vec<usize> = sleep.into_iter().collect();
        sleep.sort_unstable();
        plan.sleep = sleep.into_iter().map(|h| snap.hosts.id[h]).collect();
        plan
    }
}
