//! `SimCluster`: the simulated world behind the scheduler's [`Cluster`] seam.
//!
//! Time advances in scheduling steps; inside a step the world stops at every migration
//! completion. At each stop every host re-divides its CPU among its VMs exactly as CloudSim
//! 3.0.3's `VmSchedulerTimeSharedOverSubscription` does, and the metrics integrate over the
//! span since the previous stop:
//!
//! - a VM asks `utilization(t) × MIPS`, capped at one core (1 vCPU);
//! - a migrating VM gets `1 − degradation` of that at its source, and its destination reserves
//!   `destination_share` of it (CloudSim: 90 % / 10 %);
//! - when a host is over-subscribed every VM gets `floor(share × capacity / Σ shares)`;
//! - energy over a span is the mean of the power at both ends, 0 when the host was idle at the
//!   start (CloudSim's `getEnergyLinearInterpolation`); NPA hosts draw full power always;
//! - a host is active when it allocates any MIPS; SLATAH counts the active time during which
//!   allocated < requested (the destination's reservation counts as a shortfall, as in CloudSim);
//! - PDM counts requested − allocated MIPS·s of VMs while they migrate.
//!
//! **Invariant**: every VM is on exactly one host's list as a resident (its source while it
//! migrates) and at most one more as an incoming migration; host memory is never overcommitted.

use std::sync::Arc;

use super::error::{Result, SimError};
use super::metrics::{Accumulator, RunReport, Series};
use super::power::PowerCurve;
use super::scenario::{InitialPlacement, Scenario, ShutdownCount};
use super::trace::Trace;
use crate::scheduler::{Cluster, HostState, HostTable, Mode, Plan, Snapshot, VmTable};

mod placement;

/// No destination: the VM is not migrating.
const NONE: u32 = u32::MAX;
/// Host memory the snapshot reports when memory does not limit migrations (finite, so policy
/// arithmetic stays finite).
const UNCHECKED_MEMORY_MB: f32 = 1.0e9;

/// How energy is accounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAccounting {
    /// Power follows utilization; idle (empty) hosts draw nothing.
    Dynamic,
    /// Non power-aware: every host at full power all the time (NPA).
    AlwaysMax,
}

/// One migration under way.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    vm: u32,
    from: u32,
    to: u32,
    start_s: f64,
    end_s: f64,
}

/// A host's state now (see [`SimCluster::host_live`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLive {
    pub utilization: f64,
    pub watts: f64,
    pub violating: bool,
    pub ram_used_mb: f64,
}

/// Metrics accumulated so far (see [`SimCluster::running`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running {
    pub energy_kwh: f64,
    pub slatah: f64,
    pub pdm: f64,
    pub migrations: u64,
    pub shutdowns: u64,
    pub rejected: u64,
}

/// The state a host's metrics integrate from (CloudSim's last `HostStateHistoryEntry`).
#[derive(Debug, Clone, Copy, Default)]
struct HostEntry {
    t: f64,
    allocated: f64,
    requested: f64,
    active: bool,
    utilization: f64,
}

/// The state a VM's metrics integrate from (CloudSim's last `VmStateHistoryEntry`).
#[derive(Debug, Clone, Copy, Default)]
struct VmEntry {
    t: f64,
    allocated: f64,
    requested: f64,
    migrating: bool,
}

/// The simulated data centre.
#[derive(Debug)]
pub struct SimCluster {
    trace: Arc<Trace>,
    accounting: PowerAccounting,
    interval_s: f64,
    /// `step_offset_s`: steps fall this long after each multiple of the interval.
    step_offset_s: f64,
    duration_s: f64,
    window: usize,
    degradation: f64,
    destination_share: f64,
    check_memory: bool,
    /// `migration.mode_accounting`: the plan's mode sets duration and loss.
    mode_accounting: bool,
    /// `migration.dirty_mbps_at_full_cpu` (MB/s at 100 % CPU).
    dirty_at_full: f64,
    /// `metrics.shutdowns`: how host shutdowns are counted.
    shutdowns: ShutdownCount,
    /// `metrics.final_interval`: whether the span after the last scheduling step is accounted.
    final_interval: bool,
    curves: Vec<PowerCurve>,
    // hosts (static)
    host_cap: Vec<f64>,
    host_core: Vec<f64>,
    host_ram: Vec<f64>,
    host_curve: Vec<usize>,
    host_mig_mbps: Vec<f64>,
    // VMs (static)
    vm_mips: Vec<f64>,
    vm_ram: Vec<f64>,
    // dynamic state
    host_vms: Vec<Vec<u32>>,
    host_ram_used: Vec<f64>,
    vm_host: Vec<u32>,
    vm_dest: Vec<u32>,
    in_flight: Vec<InFlight>,
    step: usize,
    now: f64,
    vm_req: Vec<f64>,
    host_entry: Vec<HostEntry>,
    /// Per host, whether its history's previous entry was active (`active-transitions`
    /// shutdowns; every history starts active, as CloudSim's does).
    host_was_active: Vec<bool>,
    vm_entry: Vec<VmEntry>,
    /// Share of its demand a migrating VM gets at its source (`1 − degradation`, or from its
    /// mode under mode accounting), set when its migration starts.
    vm_keep: Vec<f64>,
    snapshot: Snapshot,
    acc: Accumulator,
    series: Series,
    step_migrations: u32,
    finished: bool,
}

impl SimCluster {
    /// Builds the world for `trace` under `scenario` and places the VMs (`placement` resolved
    /// from `Auto` by the caller: first-fit for baselines, power-aware for strategies).
    pub fn new(
        scenario: &Scenario,
        trace: Arc<Trace>,
        placement: InitialPlacement,
        accounting: PowerAccounting,
    ) -> Result<SimCluster> {
        let origin = std::path::Path::new("scenario");
        scenario.validate(origin)?;
        let n_hosts = scenario.hosts.count;
        let mut curves: Vec<PowerCurve> = Vec::new();
        let mut type_curve = Vec::new();
        for t in &scenario.hosts.types {
            let curve = t.curve().ok_or_else(|| SimError::Scenario {
                path: origin.to_path_buf(),
                message: format!("host type {:?} has no power curve", t.name),
            })?;
            type_curve.push(curves.len());
            curves.push(curve);
        }
        let share = scenario.migration.bandwidth_share;
        let ht = |i: usize| scenario.host_type(i);
        let host_cap: Vec<f64> = (0..n_hosts).map(|i| ht(i).capacity()).collect();
        let host_core: Vec<f64> = (0..n_hosts).map(|i| ht(i).mips_per_core).collect();
        let host_ram: Vec<f64> = (0..n_hosts).map(|i| ht(i).ram_mb).collect();
        let host_curve: Vec<usize> = (0..n_hosts).map(|i| type_curve[i % type_curve.len()]).collect();
        let host_mig_mbps: Vec<f64> = (0..n_hosts).map(|i| ht(i).migration_mb_per_s(share)).collect();

        let n_vms = trace.vms.len();
        let mut vm_mips = Vec::with_capacity(n_vms);
        let mut vm_ram = Vec::with_capacity(n_vms);
        for (i, vm) in trace.vms.iter().enumerate() {
            let k = vm.vm_type.unwrap_or_else(|| scenario.vm_type_index(i, n_vms)).min(scenario.vms.types.len() - 1);
            vm_mips.push(scenario.vms.types[k].mips);
            vm_ram.push(scenario.vms.types[k].ram_mb);
        }

        let duration_s =
            if scenario.duration_s > 0.0 { scenario.duration_s } else { trace.samples() as f64 * trace.interval_s };
        if duration_s / scenario.interval_s > super::scenario::MAX_STEPS as f64 {
            return Err(SimError::Scenario {
                path: origin.to_path_buf(),
                message: format!("the trace lasts {duration_s} s: too many {} s steps", scenario.interval_s),
            });
        }
        let window = scenario.window;
        let mut sim = SimCluster {
            trace,
            accounting,
            interval_s: scenario.interval_s,
            step_offset_s: scenario.step_offset_s,
            duration_s,
            window,
            degradation: scenario.migration.degradation,
            destination_share: scenario.migration.destination_share,
            check_memory: scenario.migration.check_memory,
            mode_accounting: scenario.migration.mode_accounting,
            dirty_at_full: scenario.migration.dirty_mbps_at_full_cpu,
            shutdowns: scenario.metrics.shutdowns,
            final_interval: scenario.metrics.final_interval,
            curves,
            host_cap,
            host_core,
            host_ram,
            host_curve,
            host_mig_mbps,
            vm_mips,
            vm_ram,
            host_vms: vec![Vec::new(); n_hosts],
            host_ram_used: vec![0.0; n_hosts],
            vm_host: vec![NONE; n_vms],
            vm_dest: vec![NONE; n_vms],
            in_flight: Vec::new(),
            step: 0,
            now: 0.0,
            vm_req: vec![0.0; n_vms],
            host_entry: vec![HostEntry::default(); n_hosts],
            host_was_active: vec![true; n_hosts],
            vm_entry: vec![VmEntry::default(); n_vms],
            vm_keep: vec![1.0 - scenario.migration.degradation; n_vms],
            snapshot: Snapshot::default(),
            acc: Accumulator::default(),
            series: Series::default(),
            step_migrations: 0,
            finished: false,
        };
        placement::place_all(&mut sim, placement)?;
        sim.build_snapshot_tables();
        // CloudSim measures nothing before the first scheduling step: the entries at t = 0 are
        // inactive and idle, so the first span adds no energy and no SLA time.
        sim.record_series();
        Ok(sim)
    }

    /// Number of hosts and VMs.
    pub fn size(&self) -> (usize, usize) {
        (self.host_cap.len(), self.vm_mips.len())
    }

    /// Current simulated time (s).
    pub fn now(&self) -> f64 {
        self.now
    }

    /// The host each VM is on (its source while it migrates), by VM index.
    pub fn placement(&self) -> &[u32] {
        &self.vm_host
    }

    /// Advances to the next scheduling step. Returns `false` when the run has reached its end
    /// (the last span has then been accounted and no cycle follows).
    pub fn advance(&mut self) -> bool {
        if self.finished {
            return false;
        }
        self.step += 1;
        let target = self.step as f64 * self.interval_s + self.step_offset_s;
        let last = target >= self.duration_s - 1e-9;
        let target = target.min(self.duration_s);
        self.complete_migrations_until(target);
        if last && !self.final_interval {
            // Accounting stopped at the last step: only the migrations in flight completed.
        } else {
            self.update(target, true);
        }
        self.step_migrations = 0;
        if last {
            if self.shutdowns == ShutdownCount::ActiveTransitions {
                // The last entries end the host histories.
                for h in 0..self.host_entry.len() {
                    self.note_transition(h, self.host_entry[h].active);
                }
            }
            self.finished = true;
            self.record_series();
            return false;
        }
        self.push_history();
        self.acc.cycles += 1;
        true
    }

    /// Starts migrations `(vm, from, to)` (VM and host indexes) one by one, as the controller
    /// executes a plan's actions; `true` for each one the world accepted. Unlike
    /// [`Cluster::apply`] it records no series point (call [`SimCluster::record_series`] once per
    /// step).
    pub fn start_migrations(&mut self, moves: &[(u32, u32, u32, Option<Mode>)]) -> Vec<bool> {
        let started: Vec<bool> =
            moves.iter().map(|&(vm, from, to, mode)| self.start_migration(vm, from, to, mode)).collect();
        if started.iter().any(|&b| b) {
            self.update(self.now, false);
        }
        started
    }

    /// Migrations under way: `(vm, from, to, start_s, end_s)`.
    pub fn in_flight(&self) -> Vec<(u32, u32, u32, f64, f64)> {
        self.in_flight.iter().map(|m| (m.vm, m.from, m.to, m.start_s, m.end_s)).collect()
    }

    /// The snapshot the last [`Cluster::observe`] returned.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The snapshot the last [`Cluster::observe`] returned, for a world wrapper to adjust (e.g.
    /// hosts in maintenance reported down).
    pub fn snapshot_mut(&mut self) -> &mut Snapshot {
        &mut self.snapshot
    }

    /// Scheduling interval and run length (s), and the index of the current step.
    pub fn timing(&self) -> (f64, f64, usize) {
        (self.interval_s, self.duration_s, self.step)
    }

    /// The trace being replayed.
    pub fn trace(&self) -> &Arc<Trace> {
        &self.trace
    }

    /// Per host: CPU utilization now (allocated ÷ capacity), power now (W), whether it is short
    /// of requested MIPS (an SLA violation while active), and memory in use (MB).
    pub fn host_live(&self, h: usize) -> HostLive {
        let e = &self.host_entry[h];
        let curve = &self.curves[self.host_curve[h]];
        let watts = match self.accounting {
            PowerAccounting::AlwaysMax => curve.max_watts(),
            PowerAccounting::Dynamic if !e.active && self.host_vms[h].is_empty() => 0.0,
            PowerAccounting::Dynamic => curve.watts(e.utilization),
        };
        HostLive {
            utilization: e.utilization,
            watts,
            violating: e.active && e.allocated < e.requested,
            ram_used_mb: self.host_ram_used[h],
        }
    }

    /// Static host facts: CPU capacity (MIPS), one core (MIPS), RAM (MB), power curve index.
    pub fn host_facts(&self, h: usize) -> (f64, f64, f64, usize) {
        (self.host_cap[h], self.host_core[h], self.host_ram[h], self.host_curve[h])
    }

    /// The VMs resident on host `h` (a leaving VM counts at its source), as VM indexes.
    pub fn vms_on(&self, h: usize) -> &[u32] {
        &self.host_vms[h]
    }

    /// Static VM facts: MIPS and RAM (MB).
    pub fn vm_facts(&self, v: usize) -> (f64, f64) {
        (self.vm_mips[v], self.vm_ram[v])
    }

    /// VM `v`'s migration into host `to`: the destination's migration bandwidth and the VM's
    /// dirty rate now (MB/s), the numbers its migration's duration comes from.
    pub fn migration_link(&self, v: usize, to: usize) -> (f64, f64) {
        (self.host_mig_mbps[to], self.dirty_mbps(v))
    }

    /// The VM's requested MIPS at the last stop.
    pub fn vm_requested(&self, v: usize) -> f64 {
        self.vm_req[v]
    }

    /// Energy, SLATAH, PDM, migrations and host shutdowns so far.
    pub fn running(&self) -> Running {
        let f = self.acc.finish();
        Running {
            energy_kwh: f.energy_kwh,
            slatah: f.slatah,
            pdm: f.pdm,
            migrations: self.acc.migrations,
            shutdowns: self.acc.shutdowns,
            rejected: self.acc.rejected,
        }
    }

    /// Adds policy failures reported by the scheduler to the run's count.
    pub fn note_policy_failures(&mut self, n: usize) {
        self.acc.policy_failures += n as u64;
    }

    /// Runs the remaining steps without any scheduler (baselines, tests).
    pub fn run_to_end(&mut self) {
        while self.advance() {
            self.apply(&Plan::default());
        }
    }

    /// The final report (the run must have been advanced to its end).
    pub fn report(&self, strategy: &str, elapsed_ms: f64, with_series: bool) -> RunReport {
        let f = self.acc.finish();
        RunReport {
            strategy: strategy.to_string(),
            trace: self.trace.name.clone(),
            trace_source: self.trace.source.clone(),
            hosts: self.host_cap.len(),
            vms: self.vm_mips.len(),
            energy_kwh: f.energy_kwh,
            migrations: self.acc.migrations,
            rejected_migrations: self.acc.rejected,
            slatah: f.slatah,
            pdm: f.pdm,
            slav: f.slav,
            esv: f.esv,
            host_shutdowns: self.acc.shutdowns,
            mean_active_hosts: f.mean_active_hosts,
            mean_host_utilization: f.mean_host_utilization,
            p95_host_utilization: f.p95_host_utilization,
            cycles: self.acc.cycles,
            policy_failures: self.acc.policy_failures,
            simulated_s: self.now,
            elapsed_ms,
            scheduler_ms: 0.0,
            migrations_by_mode: self.acc.by_mode,
            series: with_series.then(|| self.series.clone()),
        }
    }

    /// Appends the current step to the time series (call after the step's plan was applied).
    pub fn record_series(&mut self) {
        let active = self.host_vms.iter().filter(|v| !v.is_empty()).count();
        let overloaded = self.host_entry.iter().filter(|e| e.active && e.allocated < e.requested).count();
        self.series.time_s.push(self.now);
        self.series.active_hosts.push(active as u32);
        self.series.overloaded_hosts.push(overloaded as u32);
        self.series.migrations.push(self.step_migrations);
        self.series.energy_kwh.push(self.acc.energy_ws / 3.6e6);
        if self.now > 0.0 {
            self.acc.active_hosts_sample(active);
        }
    }

    fn complete_migrations_until(&mut self, limit: f64) {
        loop {
            let Some(t) = self.in_flight.iter().map(|m| m.end_s).filter(|&e| e <= limit).min_by(f64::total_cmp) else {
                return;
            };
            self.update(t, true);
            let mut i = 0;
            while i < self.in_flight.len() {
                if self.in_flight[i].end_s <= t {
                    let m = self.in_flight.remove(i);
                    self.finish_migration(m);
                } else {
                    i += 1;
                }
            }
            self.update(t, false);
        }
    }

    fn finish_migration(&mut self, m: InFlight) {
        let (v, from, to) = (m.vm, m.from as usize, m.to as usize);
        self.host_vms[from].retain(|&x| x != v);
        self.host_ram_used[from] -= self.vm_ram[v as usize];
        self.host_vms[to].retain(|&x| x != v);
        self.host_vms[to].push(v);
        self.vm_host[v as usize] = m.to;
        self.vm_dest[v as usize] = NONE;
        if self.host_vms[from].is_empty() && self.shutdowns == ShutdownCount::LastVmLeft {
            self.acc.shutdowns += 1;
        }
    }

    /// `active-transitions` shutdowns: host `h`'s history entry that is being superseded (at a
    /// later time) was `active`; a change from active to inactive counts.
    fn note_transition(&mut self, h: usize, active: bool) {
        if self.shutdowns == ShutdownCount::ActiveTransitions {
            if self.host_was_active[h] && !active {
                self.acc.shutdowns += 1;
            }
            self.host_was_active[h] = active;
        }
    }

    /// Re-divides CPU on every host at time `t`. With `accumulate`, first integrates the metrics
    /// over the span since the previous stop; without, replaces the state at the same instant.
    fn update(&mut self, t: f64, accumulate: bool) {
        let dt = if accumulate { t - self.now } else { 0.0 };
        if accumulate {
            for (v, req) in self.vm_req.iter_mut().enumerate() {
                *req = self.trace.utilization(v, t) * self.vm_mips[v];
            }
        }
        let dest_share = self.destination_share;
        let dynamic = self.accounting == PowerAccounting::Dynamic;
        for h in 0..self.host_cap.len() {
            if dynamic && self.host_vms[h].is_empty() {
                let e = &mut self.host_entry[h];
                if !e.active && e.utilization == 0.0 && e.requested == 0.0 {
                    let later = accumulate && t > e.t && e.t > 0.0;
                    e.t = t; // switched off before and after: no energy, no active time
                    if later {
                        self.note_transition(h, false);
                    }
                    continue;
                }
            }
            let cap = self.host_cap[h];
            let core = self.host_core[h];
            // Pass 1: do the shares fit (CloudSim allocates VM by VM and re-divides on overflow)?
            let mut available = cap;
            let mut oversubscribed = false;
            let mut total_share = 0.0;
            for &v in &self.host_vms[h] {
                let vi = v as usize;
                let mut share = self.vm_req[vi].min(core);
                if self.vm_dest[vi] == h as u32 {
                    share *= dest_share;
                }
                total_share += share;
                if available >= share {
                    available -= share;
                } else {
                    oversubscribed = true;
                    available = 0.0;
                }
            }
            let scale = if total_share > 0.0 { cap / total_share } else { 0.0 };
            // Pass 2: allocations, VM entries, host totals.
            let mut host_alloc = 0.0;
            let mut host_req = 0.0;
            for &v in &self.host_vms[h] {
                let vi = v as usize;
                let req = self.vm_req[vi];
                let capped = req.min(core);
                let incoming = self.vm_dest[vi] == h as u32;
                let outgoing = self.vm_dest[vi] != NONE && !incoming;
                let degr_keep = self.vm_keep[vi];
                let alloc = match (oversubscribed, outgoing, incoming) {
                    (false, true, _) => capped * degr_keep,
                    (false, _, true) => capped * dest_share,
                    (false, _, _) => capped,
                    (true, true, _) => (capped * scale * degr_keep).floor(),
                    (true, _, true) => (capped * dest_share * scale).floor(),
                    (true, _, _) => (capped * scale).floor(),
                };
                if incoming {
                    host_alloc += alloc;
                } else {
                    let e = &mut self.vm_entry[vi];
                    if accumulate {
                        let span = t - e.t;
                        self.acc.vm_requested_mips_s += e.requested * span;
                        if e.migrating && e.allocated < e.requested {
                            self.acc.vm_migration_loss_mips_s += (e.requested - e.allocated) * span;
                        }
                    }
                    *e = VmEntry { t, allocated: alloc, requested: req, migrating: outgoing };
                    // The host still runs the whole VM while it leaves.
                    host_alloc += match (outgoing, oversubscribed) {
                        (true, false) => capped,
                        (true, true) if degr_keep > 0.0 => alloc / degr_keep,
                        _ => alloc,
                    };
                }
                host_req += req;
            }
            let mut utilization = host_alloc / cap;
            if utilization > 1.0 {
                utilization = 1.0;
            }
            // The entries at t = 0 are no history yet (CloudSim's begin at the first step).
            if accumulate && t > self.host_entry[h].t && self.host_entry[h].t > 0.0 {
                self.note_transition(h, self.host_entry[h].active);
            }
            let e = &mut self.host_entry[h];
            if accumulate {
                let span = t - e.t;
                if e.active {
                    self.acc.host_active_s += span;
                    if e.allocated < e.requested {
                        self.acc.host_violation_s += span;
                    }
                }
                let curve = &self.curves[self.host_curve[h]];
                self.acc.energy_ws += match self.accounting {
                    PowerAccounting::AlwaysMax => curve.max_watts() * dt,
                    PowerAccounting::Dynamic if e.utilization == 0.0 => 0.0,
                    PowerAccounting::Dynamic => (curve.watts(e.utilization) + curve.watts(utilization)) / 2.0 * span,
                };
            }
            *e = HostEntry { t, allocated: host_alloc, requested: host_req, active: host_alloc > 0.0, utilization };
        }
        self.now = t;
    }

    /// Appends the current demand to every VM's history row and samples host utilization.
    fn push_history(&mut self) {
        let w = self.window;
        let hist = &mut self.snapshot.vms.cpu_history;
        for (v, row) in hist.chunks_exact_mut(w).enumerate() {
            row.copy_within(1.., 0);
            row[w - 1] = (self.vm_req[v] / self.vm_mips[v]) as f32;
        }
        if self.mode_accounting {
            // The world's dirty rates, as an agent would measure them, for the mode policy.
            let n = self.vm_mips.len();
            let mut dirty = std::mem::take(&mut self.snapshot.vms.dirty_mbps);
            dirty.resize(n, 0.0);
            for (v, d) in dirty.iter_mut().enumerate() {
                *d = self.dirty_mbps(v) as f32;
            }
            self.snapshot.vms.dirty_mbps = dirty;
        }
        for e in &self.host_entry {
            if e.utilization > 0.0 {
                self.acc.utilization_sample(e.utilization);
            }
        }
    }

    fn build_snapshot_tables(&mut self) {
        let mut hosts = HostTable::default();
        for h in 0..self.host_cap.len() {
            let mem = if self.check_memory { self.host_ram[h] as f32 } else { UNCHECKED_MEMORY_MB };
            hosts.push(h as u32, HostState::Asleep, self.host_cap[h] as f32, mem, self.host_curve[h] as u32);
        }
        // VMs have one vCPU: a host whose cores are slower than a VM's demand cannot take it
        // (CloudSim's `isSuitableForVm` compares against one PE's capacity).
        hosts.core_mips = self.host_core.iter().map(|&c| c as f32).collect();
        let n = self.vm_mips.len();
        let vms = VmTable {
            id: (0..n as u32).collect(),
            host: self.vm_host.clone(),
            mips: self.vm_mips.iter().map(|&m| m as f32).collect(),
            ram_mb: self.vm_ram.iter().map(|&m| m as f32).collect(),
            cpu_history: vec![f32::NAN; n * self.window],
            migrating: vec![false; n],
            dirty_mbps: Vec::new(),
            extra_migration_s: Vec::new(),
        };
        let min_bw = self.host_mig_mbps.iter().copied().fold(f64::INFINITY, f64::min);
        self.snapshot = Snapshot {
            cycle: 0,
            time_s: 0.0,
            unix_time_s: None,
            interval_s: self.interval_s as f32,
            window: self.window,
            migration_bandwidth_mbps: min_bw as f32,
            power_curves: self.curves.iter().map(PowerCurve::as_f32).collect(),
            hosts,
            vms,
        };
    }

    fn refresh_snapshot(&mut self) {
        let s = &mut self.snapshot;
        s.cycle = self.acc.cycles.saturating_sub(1);
        s.time_s = self.now;
        for (h, vms) in self.host_vms.iter().enumerate() {
            s.hosts.state[h] = if vms.is_empty() { HostState::Asleep } else { HostState::Active };
            s.hosts.migrations_in_flight[h] = 0;
        }
        for m in &self.in_flight {
            s.hosts.migrations_in_flight[m.from as usize] += 1;
            s.hosts.migrations_in_flight[m.to as usize] += 1;
        }
        s.vms.host.copy_from_slice(&self.vm_host);
        for (flag, dest) in s.vms.migrating.iter_mut().zip(&self.vm_dest) {
            *flag = *dest != NONE;
        }
    }

    /// The dirty rate the world assumes for VM `v` now (MB/s): its utilization × the scenario's
    /// `dirty_mbps_at_full_cpu`.
    fn dirty_mbps(&self, v: usize) -> f64 {
        (self.vm_req[v] / self.vm_mips[v]).clamp(0.0, 1.0) * self.dirty_at_full
    }

    /// Duration (s) of VM `v`'s migration to host `to` in `mode`, and the share of its demand
    /// it keeps while it runs. Without mode accounting (or without a mode): RAM ÷ bandwidth
    /// and `1 − degradation`. With it, the paper's model (amvm-model, eqs. 1–7) on the VM's RAM,
    /// the destination's migration bandwidth and the VM's dirty rate gives the duration; the
    /// loss is `degradation` over the copy rounds while the VM runs at its source (pre-copy's
    /// rounds, hybrid's first pass), all of it during the downtime, and each post-copy page
    /// fault's network delay (eq. 6 × λ), spread over the whole move as one share.
    fn migration_cost(&self, v: usize, to: usize, mode: Option<Mode>) -> (f64, f64) {
        let (ram, bw) = (self.vm_ram[v], self.host_mig_mbps[to]);
        let classic = (ram / bw, 1.0 - self.degradation);
        let Some(mode) = mode.filter(|_| self.mode_accounting) else { return classic };
        const MB: f64 = 1024.0 * 1024.0;
        let p = amvm_model::Params::from_link(ram * MB, bw * MB, self.dirty_mbps(v) * MB);
        let pred = amvm_model::predict(mode, &p);
        if !(pred.t_mig.is_finite() && pred.t_mig > 0.0) {
            return classic;
        }
        let at_source = match mode {
            Mode::Pre => pred.t_mig - pred.t_down,
            Mode::Hybrid => ram / bw,
            Mode::Post => 0.0,
        };
        let lost_s = self.degradation * at_source.max(0.0) + pred.t_down + pred.faults * p.latency;
        // Never below 1 %: the host still runs the VM (its use is the allocation ÷ this share).
        (pred.t_mig, (1.0 - lost_s / pred.t_mig).clamp(0.01, 1.0))
    }

    /// Starts one migration if the world allows it; `false` (and a count) when it does not.
    fn start_migration(&mut self, vm: u32, from: u32, to: u32, mode: Option<Mode>) -> bool {
        let (vi, n_hosts) = (vm as usize, self.host_cap.len());
        let ok = vi < self.vm_mips.len()
            && self.vm_dest[vi] == NONE
            && self.vm_host[vi] == from
            && (to as usize) < n_hosts
            && to != from
            && (!self.check_memory
                || self.host_ram_used[to as usize] + self.vm_ram[vi] <= self.host_ram[to as usize] + 1e-9);
        if !ok {
            self.acc.rejected += 1;
            tracing::debug!(vm, from, to, "migration refused by the simulated world");
            return false;
        }
        let ti = to as usize;
        self.vm_dest[vi] = to;
        self.host_vms[ti].push(vm);
        self.host_ram_used[ti] += self.vm_ram[vi];
        let (duration_s, keep) = self.migration_cost(vi, ti, mode);
        self.vm_keep[vi] = keep;
        let end_s = self.now + duration_s;
        self.acc.count_mode(mode);
        self.in_flight.push(InFlight { vm, from, to, start_s: self.now, end_s });
        self.acc.migrations += 1;
        self.step_migrations += 1;
        true
    }
}

impl Cluster for SimCluster {
    fn observe(&mut self) -> &Snapshot {
        self.refresh_snapshot();
        &self.snapshot
    }

    fn apply(&mut self, plan: &Plan) {
        let mut started = 0;
        for m in &plan.migrations {
            if self.start_migration(m.vm, m.from, m.to, m.mode) {
                started += 1;
            }
        }
        if started > 0 {
            self.update(self.now, false);
        }
        self.record_series();
    }
}

#[cfg(test)]
mod tests;
