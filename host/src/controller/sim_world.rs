//! The simulated world replayed in real time: one trace step (300 s of world time on the
//! PlanetLab data) every `pace`, migrations progressing over world time, energy and SLA metrics
//! accumulating live. When the trace ends the next day starts from the initial placement.
//!
//! The world is [`SimCluster`] itself (the same model `amvm sim` uses), so what the demo shows
//! is what an offline run of the same strategy computes. It is a deterministic function of the
//! trace and of the actions executed at each step, which is what makes
//! [`World::restore`] (rebuild from the journal after a crash) exact.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use amvm_model::Mode;

use super::sim_migration::MigrationModel;
use super::store::ActionRow;
use super::world::{
    ActionReq, ClusterMetrics, HostAccount, HostView, Outcome, Progress, Reconciled, SeriesData, SeriesQuery,
    SeriesSource, VmView, World, WorldInfo,
};
use crate::scheduler::{Cluster, Snapshot};
use crate::sim::scenario::InitialPlacement;
use crate::sim::{PowerAccounting, Scenario, SimCluster, Trace};

/// Floats of host history kept (3 per host per step); older steps are dropped first.
const HISTORY_FLOATS: usize = 48 << 20;

/// How the simulated world is set up.
#[derive(Debug, Clone)]
pub struct SimWorldConfig {
    pub scenario: Scenario,
    pub trace: Arc<Trace>,
    /// Real time per trace step.
    pub pace: Duration,
    /// World clock at the start of day 0 (Unix seconds).
    pub base_unix: f64,
}

impl SimWorldConfig {
    /// The trace's own date when its name is a PlanetLab day (`20110303`), else 2011-03-03.
    pub fn base_for(trace: &Trace) -> f64 {
        let name = trace.name.rsplit('/').next().unwrap_or("");
        let digits: String = name.chars().filter(char::is_ascii_digit).take(8).collect();
        let parse = |a: usize, b: usize| digits.get(a..b).and_then(|s| s.parse::<i64>().ok());
        match (digits.len(), parse(0, 4), parse(4, 6), parse(6, 8)) {
            (8, Some(y), Some(m), Some(d))
                if (1970..3000).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d) =>
            {
                days_from_civil(y, m, d) as f64 * 86_400.0
            }
            _ => days_from_civil(2011, 3, 3) as f64 * 86_400.0,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One recorded step.
#[derive(Debug)]
struct Sample {
    unix: f64,
    /// Simulated time within its day (for VM series read from the trace).
    sim_t: f64,
    host_cpu: Vec<f32>,
    host_mem: Vec<f32>,
    host_power: Vec<f32>,
    power_w: f64,
    active_hosts: f64,
    cpu_mean: f64,
    /// Mean memory utilization of the active hosts.
    mem_mean: f64,
    energy_kwh: f64,
}

/// The simulated world.
pub struct SimWorld {
    cfg: SimWorldConfig,
    sim: SimCluster,
    epoch: i64,
    /// Migrations under way: VM → action id.
    running: HashMap<u32, i64>,
    /// How each of them progresses (fixed when it starts), by VM.
    models: HashMap<u32, MigrationModel>,
    /// When the current step began in real time (a migration started mid-step starts at the
    /// matching world time), and whether the journal is being replayed (then: at the step's start).
    step_began: Instant,
    replaying: bool,
    /// Every action id this day's world has executed (an id is never executed twice).
    executed: HashSet<i64>,
    /// Actions that ended while the world was rebuilt, reported by `reconcile`.
    ended: HashMap<i64, Outcome>,
    history: Arc<SimSeries>,
    history_cap: usize,
    accounts: Vec<HostAccount>,
    host_names: Vec<String>,
}

impl std::fmt::Debug for SimWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimWorld").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl SimWorld {
    pub fn new(cfg: SimWorldConfig) -> Result<SimWorld, String> {
        let sim = Self::fresh(&cfg)?;
        let (hosts, _) = sim.size();
        let history_cap = (HISTORY_FLOATS / (3 * hosts.max(1))).clamp(16, 4 * 2016);
        let history = Arc::new(SimSeries {
            state: RwLock::new(SeriesState { samples: VecDeque::new(), clock: 0.0 }),
            trace: cfg.trace.clone(),
            interval_s: cfg.scenario.interval_s,
            hosts,
            vms: cfg.trace.vms.len(),
        });
        Ok(SimWorld {
            host_names: (0..hosts).map(|h| format!("host-{h:04}")).collect(),
            accounts: vec![HostAccount::default(); hosts],
            cfg,
            sim,
            epoch: 0,
            running: HashMap::new(),
            models: HashMap::new(),
            step_began: Instant::now(),
            replaying: false,
            executed: HashSet::new(),
            ended: HashMap::new(),
            history,
            history_cap,
        })
    }

    fn fresh(cfg: &SimWorldConfig) -> Result<SimCluster, String> {
        SimCluster::new(&cfg.scenario, cfg.trace.clone(), InitialPlacement::PowerAware, PowerAccounting::Dynamic)
            .map_err(|e| e.to_string())
    }

    fn day_s(&self) -> f64 {
        self.sim.timing().1
    }

    /// Starts a new day from the initial placement.
    fn next_day(&mut self) -> Result<(), String> {
        self.epoch += 1;
        self.sim = Self::fresh(&self.cfg)?;
        self.running.clear();
        self.models.clear();
        self.executed.clear();
        self.accounts.iter_mut().for_each(|a| *a = HostAccount::default());
        Ok(())
    }

    /// Advances the simulation one step and returns the actions that ended.
    fn step_once(&mut self) -> Vec<(i64, Outcome)> {
        let before = self.sim.in_flight();
        let t0 = self.sim.now();
        let more = self.sim.advance();
        self.account_migrations(&before, t0, self.sim.now());
        let after: HashSet<u32> = self.sim.in_flight().iter().map(|m| m.0).collect();
        let mut ended = Vec::new();
        for (vm, _, _, start, end) in before {
            if after.contains(&vm) {
                continue;
            }
            let model = self.models.remove(&vm);
            if let Some(id) = self.running.remove(&vm) {
                let ram = self.sim.vm_facts(vm as usize).1;
                let outcome = match model {
                    Some(m) => {
                        let done = m.progress(id, (vm, 0, 0), f64::INFINITY);
                        Outcome::Succeeded {
                            total_s: Some(m.total_s()),
                            bytes: Some(m.total_bytes()),
                            downtime_ms: Some(m.stop_s * 1000.0),
                            page_faults: Some(done.page_faults as i64),
                        }
                    }
                    None => Outcome::Succeeded {
                        total_s: Some(end - start),
                        bytes: Some(ram * 1_048_576.0),
                        downtime_ms: None,
                        page_faults: None,
                    },
                };
                ended.push((id, outcome));
            }
        }
        self.step_began = Instant::now();
        if !more {
            self.models.clear();
            for (_, id) in self.running.drain() {
                ended.push((id, Outcome::Failed("the simulated day ended before the migration completed".into())));
            }
            if let Err(e) = self.next_day() {
                tracing::error!(error = %e, "cannot start the next simulated day");
            }
            self.sim.advance();
        }
        self.account_step();
        ended
    }

    /// PDM's terms per source host over `[t0, t1]`: a migrating VM loses `degradation` of its
    /// demand while it moves (sampled at the step's end demand).
    fn account_migrations(&mut self, moving: &[(u32, u32, u32, f64, f64)], t0: f64, t1: f64) {
        let degradation = self.cfg.scenario.migration.degradation;
        for &(vm, from, _, start, end) in moving {
            let overlap = (end.min(t1) - start.max(t0)).max(0.0);
            let req = self.sim.vm_requested(vm as usize).min(self.sim.host_facts(from as usize).1);
            if let Some(a) = self.accounts.get_mut(from as usize) {
                a.migration_loss_mips_s += degradation * req * overlap;
            }
        }
    }

    fn account_step(&mut self) {
        let (interval, _, _) = self.sim.timing();
        let (hosts, _) = self.sim.size();
        let mut cpu = Vec::with_capacity(hosts);
        let mut mem = Vec::with_capacity(hosts);
        let mut power = Vec::with_capacity(hosts);
        let (mut total_w, mut active, mut cpu_sum, mut mem_sum) = (0.0, 0.0, 0.0, 0.0);
        for h in 0..hosts {
            let live = self.sim.host_live(h);
            let (_, _, ram, _) = self.sim.host_facts(h);
            cpu.push(live.utilization as f32);
            mem.push((live.ram_used_mb / ram.max(1.0)) as f32);
            power.push(live.watts as f32);
            total_w += live.watts;
            let requested: f64 = self.sim.vms_on(h).iter().map(|&v| self.sim.vm_requested(v as usize)).sum();
            let a = &mut self.accounts[h];
            a.energy_kwh += live.watts * interval / 3.6e6;
            a.requested_mips_s += requested * interval;
            if !self.sim.vms_on(h).is_empty() {
                active += 1.0;
                cpu_sum += live.utilization;
                mem_sum += live.ram_used_mb / ram.max(1.0);
                a.active_s += interval;
                if live.violating {
                    a.violation_s += interval;
                }
            }
        }
        let sample = Sample {
            unix: self.clock(),
            sim_t: self.sim.now(),
            host_cpu: cpu,
            host_mem: mem,
            host_power: power,
            power_w: total_w,
            active_hosts: active,
            cpu_mean: if active > 0.0 { cpu_sum / active } else { 0.0 },
            mem_mean: if active > 0.0 { mem_sum / active } else { 0.0 },
            energy_kwh: self.sim.running().energy_kwh,
        };
        let clock = self.clock();
        let mut h = self.history.state.write().unwrap_or_else(|p| p.into_inner());
        if h.samples.len() == self.history_cap {
            h.samples.pop_front();
        }
        h.samples.push_back(sample);
        h.clock = clock;
    }

    fn host_state(&self, h: usize, maintenance: &[u32]) -> &'static str {
        if maintenance.contains(&(h as u32)) {
            "maintenance"
        } else if self.sim.vms_on(h).is_empty() {
            "asleep"
        } else {
            "up"
        }
    }

    fn vm_util(&self, v: usize) -> f64 {
        let (mips, _) = self.sim.vm_facts(v);
        if mips > 0.0 {
            self.sim.vm_requested(v) / mips
        } else {
            0.0
        }
    }
}

impl World for SimWorld {
    fn info(&self) -> WorldInfo {
        let (hosts, vms) = self.sim.size();
        let (interval, _, _) = self.sim.timing();
        WorldInfo {
            kind: "simulated".into(),
            name: self.cfg.trace.name.clone(),
            description: format!(
                "simulated data centre: trace {} ({} VMs) on {hosts} hosts, one {interval} s step every {} ms",
                self.cfg.trace.name,
                vms,
                self.cfg.pace.as_millis()
            ),
            interval_s: interval,
            hosts,
            vms,
        }
    }

    fn position(&self) -> (i64, i64) {
        (self.epoch, self.sim.timing().2 as i64)
    }

    fn clock(&self) -> f64 {
        self.cfg.base_unix + self.epoch as f64 * self.day_s() + self.sim.now()
    }

    fn pace(&self) -> Duration {
        self.cfg.pace
    }

    fn restore(&mut self, epoch: i64, step: i64, executed: &[ActionRow]) -> Result<(), String> {
        self.epoch = epoch;
        self.sim = Self::fresh(&self.cfg)?;
        self.running.clear();
        self.models.clear();
        self.executed.clear();
        self.ended.clear();
        self.replaying = true;
        let replayed = self.replay_journal(step, executed);
        self.replaying = false;
        self.step_began = Instant::now();
        replayed
    }

    fn reconcile(&self, action: &ActionRow) -> Reconciled {
        if let Some(o) = self.ended.get(&action.id) {
            return Reconciled::Ended(o.clone());
        }
        if self.running.values().any(|&id| id == action.id) {
            return Reconciled::Ongoing;
        }
        match action.kind.as_str() {
            "migrate" if self.executed.contains(&action.id) => Reconciled::Ended(Outcome::Succeeded {
                total_s: None,
                bytes: None,
                downtime_ms: None,
                page_faults: None,
            }),
            "sleep" | "wake" if self.executed.contains(&action.id) => Reconciled::Ended(Outcome::Succeeded {
                total_s: None,
                bytes: None,
                downtime_ms: None,
                page_faults: None,
            }),
            _ if action.exec_epoch != Some(self.epoch) => {
                Reconciled::Ended(Outcome::Failed("its simulated day ended while the controller was down".into()))
            }
            _ => Reconciled::Ended(Outcome::Failed("the world has no record of it".into())),
        }
    }

    fn observe(&mut self, _maintenance: &[u32]) -> &Snapshot {
        // Maintenance reaches the scheduler as an operator rule (evacuate, accept nothing).
        self.sim.observe();
        self.sim.snapshot_mut()
    }

    fn snapshot(&self) -> &Snapshot {
        self.sim.snapshot()
    }

    fn execute(&mut self, actions: &[ActionReq]) -> Vec<Result<(), String>> {
        let mut results = vec![Ok(()); actions.len()];
        let mut moves = Vec::new();
        let mut at = Vec::new();
        for (i, a) in actions.iter().enumerate() {
            if !self.executed.insert(a.id()) {
                results[i] = Err("already executed (the journal replayed it)".into());
                continue;
            }
            match *a {
                ActionReq::Migrate { vm, from, to, mode, .. } => {
                    moves.push((vm, from, to, mode));
                    at.push(i);
                }
                // The simulated hosts sleep when their last VM has left and wake when one
                // arrives: nothing to do but to check the request.
                ActionReq::Sleep { host, .. } | ActionReq::Wake { host, .. } => {
                    if host as usize >= self.sim.size().0 {
                        results[i] = Err(format!("no host {host}"));
                    }
                }
            }
        }
        // A migration started mid-step (an approval) starts at the matching world time.
        let (interval, pace) = (self.sim.timing().0, self.cfg.pace.as_secs_f64().max(1e-3));
        let into_step = if self.replaying { 0.0 } else { (self.step_began.elapsed().as_secs_f64() / pace).min(1.0) };
        let start = self.sim.now() + into_step * interval;
        for (k, ok) in self.sim.start_migrations(&moves).into_iter().enumerate() {
            let ((vm, from, to, mode), i) = (moves[k], at[k]);
            if ok {
                // A move without a mode runs as the world's classic copy: one pre-copy pass.
                self.models.insert(vm, self.migration_model(vm, mode.unwrap_or(Mode::Pre), start));
                self.running.insert(vm, actions[i].id());
            } else {
                results[i] = Err(format!(
                    "refused by the world: VM {vm} is not on host {from}, is already moving, or host {to} has no room"
                ));
            }
        }
        results
    }

    fn end_step(&mut self) {
        self.sim.record_series();
    }

    fn advance(&mut self) -> Vec<(i64, Outcome)> {
        self.step_once()
    }

    fn in_flight(&self, fraction: f64) -> Vec<Progress> {
        let (interval, _, _) = self.sim.timing();
        let t = self.sim.now() + fraction.clamp(0.0, 1.0) * interval;
        self.sim
            .in_flight()
            .into_iter()
            .filter_map(|(vm, from, to, start, _)| {
                let id = *self.running.get(&vm)?;
                let model = self.models.get(&vm).copied().unwrap_or_else(|| self.migration_model(vm, Mode::Pre, start));
                Some(model.progress(id, (vm, from, to), t))
            })
            .collect()
    }

    fn hosts(&self, maintenance: &[u32]) -> Vec<HostView> {
        let (hosts, _) = self.sim.size();
        let mut inflight = vec![0u32; hosts];
        for (_, from, to, _, _) in self.sim.in_flight() {
            inflight[from as usize] += 1;
            inflight[to as usize] += 1;
        }
        (0..hosts)
            .map(|h| {
                let live = self.sim.host_live(h);
                let (cap, core, ram, _) = self.sim.host_facts(h);
                HostView {
                    id: h as u32,
                    name: self.host_names[h].clone(),
                    state: self.host_state(h, maintenance).into(),
                    cores: if core > 0.0 { (cap / core).round() as u32 } else { 0 },
                    cpu_capacity_mips: cap,
                    mem_capacity_mb: ram,
                    cpu_util: live.utilization,
                    mem_util: live.ram_used_mb / ram.max(1.0),
                    net_util: None,
                    power_w: live.watts,
                    overloaded: live.violating,
                    vms: self.sim.vms_on(h).to_vec(),
                    migrations_in_flight: inflight[h],
                }
            })
            .collect()
    }

    fn vms(&self) -> Vec<VmView> {
        let dest: HashMap<u32, u32> = self.sim.in_flight().into_iter().map(|m| (m.0, m.2)).collect();
        let trace = self.sim.trace();
        self.sim
            .placement()
            .iter()
            .enumerate()
            .map(|(v, &h)| {
                let (mips, ram) = self.sim.vm_facts(v);
                VmView {
                    id: v as u32,
                    name: trace.vms.get(v).map_or_else(|| format!("vm-{v}"), |t| t.name.clone()),
                    host: h,
                    mips,
                    ram_mb: ram,
                    cpu_util: self.vm_util(v),
                    cpu_source: Some("trace".into()),
                    migrating_to: dest.get(&(v as u32)).copied(),
                }
            })
            .collect()
    }

    fn metrics(&self, maintenance: &[u32]) -> ClusterMetrics {
        let (hosts, vms) = self.sim.size();
        let r = self.sim.running();
        let mut m = ClusterMetrics { hosts, vms, ..Default::default() };
        let mut utils = Vec::new();
        let mut mem_sum = 0.0;
        for h in 0..hosts {
            let live = self.sim.host_live(h);
            m.power_w += live.watts;
            match self.host_state(h, maintenance) {
                "maintenance" => m.hosts_maintenance += 1,
                "asleep" => m.hosts_asleep += 1,
                _ => {
                    m.hosts_up += 1;
                    utils.push(live.utilization);
                    let (_, _, ram, _) = self.sim.host_facts(h);
                    mem_sum += live.ram_used_mb / ram.max(1.0);
                }
            }
        }
        let n = utils.len().max(1) as f64;
        m.mem_util_mean = mem_sum / n;
        m.cpu_util_mean = utils.iter().sum::<f64>() / n;
        m.load_stddev = (utils.iter().map(|u| (u - m.cpu_util_mean).powi(2)).sum::<f64>() / n).sqrt();
        m.energy_kwh_today = r.energy_kwh;
        m.slatah = r.slatah;
        m.pdm = r.pdm;
        m.migrations_in_flight = self.sim.in_flight().len();
        m.migrations_today = r.migrations;
        m.host_shutdowns_today = r.shutdowns;
        m
    }

    fn series(&self) -> Arc<dyn SeriesSource> {
        self.history.clone()
    }

    fn host_accounts(&self) -> Vec<HostAccount> {
        let mut accounts = self.accounts.clone();
        for m in self.sim.in_flight() {
            accounts[m.1 as usize].migrations_out += 1;
        }
        accounts
    }
}

/// Reads one value of a recorded step.
type Getter = Box<dyn Fn(&Sample) -> Option<f64>>;

/// The simulated world's recorded history, shared with the API.
struct SimSeries {
    state: RwLock<SeriesState>,
    trace: Arc<Trace>,
    interval_s: f64,
    hosts: usize,
    vms: usize,
}

struct SeriesState {
    samples: VecDeque<Sample>,
    clock: f64,
}

impl SeriesSource for SimSeries {
    fn series(&self, q: &SeriesQuery) -> Result<SeriesData, String> {
        let (interval, hosts, vms) = (self.interval_s, self.hosts, self.vms);
        let id = q.id.map(|i| i as usize);
        let (unit, value): (&str, Getter) = match (q.target.as_str(), q.metric.as_str()) {
            ("host", metric) => {
                let h = id.filter(|&h| h < hosts).ok_or_else(|| format!("no host {:?}", q.id))?;
                match metric {
                    "cpu" => ("ratio", Box::new(move |s: &Sample| s.host_cpu.get(h).map(|&x| f64::from(x)))),
                    "mem" => ("ratio", Box::new(move |s: &Sample| s.host_mem.get(h).map(|&x| f64::from(x)))),
                    "power" => ("W", Box::new(move |s: &Sample| s.host_power.get(h).map(|&x| f64::from(x)))),
                    "net" => ("ratio", Box::new(|_: &Sample| None)),
                    other => return Err(format!("unknown host metric {other:?} (cpu, mem, power, net)")),
                }
            }
            ("vm", "cpu") => {
                let v = id.filter(|&v| v < vms).ok_or_else(|| format!("no VM {:?}", q.id))?;
                let trace = self.trace.clone();
                ("ratio", Box::new(move |s: &Sample| Some(trace.utilization(v, s.sim_t))))
            }
            ("vm", other) => return Err(format!("unknown VM metric {other:?} (cpu)")),
            ("cluster", "power") => ("W", Box::new(|s: &Sample| Some(s.power_w))),
            ("cluster", "active_hosts") => ("hosts", Box::new(|s: &Sample| Some(s.active_hosts))),
            ("cluster", "cpu") => ("ratio", Box::new(|s: &Sample| Some(s.cpu_mean))),
            ("cluster", "energy") => ("kWh", Box::new(|s: &Sample| Some(s.energy_kwh))),
            ("cluster", "mem") => ("ratio", Box::new(|s: &Sample| Some(s.mem_mean))),
            // The simulated world models no network: the series exists, without samples.
            ("cluster", "net") => ("ratio", Box::new(|_: &Sample| None)),
            ("cluster", other) => {
                return Err(format!("unknown cluster metric {other:?} (cpu, mem, net, power, active_hosts, energy)"))
            }
            (other, _) => return Err(format!("unknown target {other:?} (host, vm, cluster)")),
        };
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let samples: Vec<(f64, Option<f64>)> = state.samples.iter().map(|s| (s.unix, value(s))).collect();
        downsample(q, unit, interval, state.clock, &samples)
    }
}

impl SimWorld {
    /// Replays the journal's executed actions step by step up to `step` (see [`World::restore`]).
    fn replay_journal(&mut self, step: i64, executed: &[ActionRow]) -> Result<(), String> {
        self.history.state.write().unwrap_or_else(|p| p.into_inner()).samples.clear();
        self.accounts.iter_mut().for_each(|a| *a = HostAccount::default());
        let mut log = executed.iter().peekable();
        for s in 1..=step.max(0) {
            let (before, t0) = (self.sim.in_flight(), self.sim.now());
            if !self.sim.advance() {
                return Err(format!("the journal says step {step}, but the trace ends at step {s}"));
            }
            self.account_migrations(&before, t0, self.sim.now());
            // Ended migrations are recorded for `reconcile` (the journal may not know yet).
            for (id, outcome) in self.collect_ended() {
                self.ended.insert(id, outcome);
            }
            self.account_step();
            let mut batch = Vec::new();
            while let Some(a) = log.next_if(|a| a.exec_step == Some(s)) {
                match ActionReq::from_row(a) {
                    Some(req) => batch.push(req),
                    None => tracing::warn!(action = a.id, "journaled action is malformed; not replayed"),
                }
            }
            for (req, r) in batch.iter().zip(self.execute(&batch)) {
                if let Err(e) = r {
                    self.ended.insert(req.id(), Outcome::Failed(e));
                }
            }
            if s < step {
                self.end_step();
            }
        }
        if let Some(a) = log.next() {
            return Err(format!("journaled action {} has execution step {:?} past the world's", a.id, a.exec_step));
        }
        Ok(())
    }

    /// The dashboard's model of VM `vm`'s migration: the world's RAM, link and dirty rate, in
    /// the plan's mode, stretched to the world's own duration of it.
    fn migration_model(&self, vm: u32, mode: Mode, start: f64) -> MigrationModel {
        let ram = self.sim.vm_facts(vm as usize).1;
        let Some((_, _, to, s, e)) = self.sim.in_flight().into_iter().find(|m| m.0 == vm) else {
            return MigrationModel::new(start, mode, ram, ram, 0.0);
        };
        let (bw, dirty) = self.sim.migration_link(vm as usize, to as usize);
        MigrationModel::new(start, mode, ram, bw, dirty).stretched_to(e - s)
    }

    fn collect_ended(&mut self) -> Vec<(i64, Outcome)> {
        let after: HashSet<u32> = self.sim.in_flight().iter().map(|m| m.0).collect();
        let done: Vec<u32> = self.running.keys().copied().filter(|vm| !after.contains(vm)).collect();
        self.models.retain(|vm, _| after.contains(vm));
        done.into_iter()
            .filter_map(|vm| self.running.remove(&vm))
            .map(|id| (id, Outcome::Succeeded { total_s: None, bytes: None, downtime_ms: None, page_faults: None }))
            .collect()
    }
}

/// Buckets `samples` (time-ordered) into at most `points` spans over `[from, to]`, by AVERAGE or
/// MAX: server-side downsampling, so a year of data costs the browser `points` values.
pub fn downsample(
    q: &SeriesQuery,
    unit: &str,
    interval_s: f64,
    now: f64,
    samples: &[(f64, Option<f64>)],
) -> Result<SeriesData, String> {
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - 86_400.0);
    if !from.is_finite() || !to.is_finite() || from >= to {
        return Err(format!("empty or invalid time range [{from}, {to}]"));
    }
    let cf = q.cf.as_deref().unwrap_or("AVERAGE").to_ascii_uppercase();
    if cf != "AVERAGE" && cf != "MAX" {
        return Err(format!("cf must be AVERAGE or MAX, not {cf:?}"));
    }
    let points = q.points.unwrap_or(300);
    if points == 0 || points > 5000 {
        return Err(format!("points must be 1..=5000, not {points}"));
    }
    let span = to - from;
    let step = (span / points as f64).max(interval_s);
    let n = ((span / step).ceil() as usize).clamp(1, points);
    let mut sum = vec![0.0; n];
    let mut count = vec![0u32; n];
    let mut max = vec![f64::NEG_INFINITY; n];
    let start = samples.partition_point(|s| s.0 <= from);
    for &(t, v) in &samples[start..] {
        if t > to {
            break;
        }
        let Some(v) = v.filter(|v| v.is_finite()) else { continue };
        let k = (((t - from) / step).ceil() as usize).saturating_sub(1).min(n - 1);
        sum[k] += v;
        count[k] += 1;
        max[k] = max[k].max(v);
    }
    let v = (0..n)
        .map(|k| (count[k] > 0).then(|| if cf == "MAX" { max[k] } else { sum[k] / f64::from(count[k]) }))
        .collect();
    Ok(SeriesData {
        target: q.target.clone(),
        id: q.id,
        metric: q.metric.clone(),
        unit: unit.into(),
        cf,
        from,
        to,
        step_s: step,
        t: (0..n).map(|k| from + (k + 1) as f64 * step).collect(),
        v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planetlab_day_names_give_their_date() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2011, 3, 3) * 86_400, 1_299_110_400);
    }

    #[test]
    fn downsampling_averages_and_takes_maxima_per_bucket() {
        let q = |cf: &str, points| SeriesQuery {
            target: "cluster".into(),
            id: None,
            metric: "power".into(),
            from: Some(0.0),
            to: Some(1200.0),
            cf: Some(cf.into()),
            points: Some(points),
        };
        let samples: Vec<(f64, Option<f64>)> =
            vec![(300.0, Some(1.0)), (600.0, Some(3.0)), (900.0, None), (1200.0, Some(5.0))];
        let avg = downsample(&q("AVERAGE", 2), "W", 300.0, 1200.0, &samples).unwrap();
        assert_eq!(avg.v, vec![Some(2.0), Some(5.0)]);
        let max = downsample(&q("max", 2), "W", 300.0, 1200.0, &samples).unwrap();
        assert_eq!(max.v, vec![Some(3.0), Some(5.0)]);
        // Never finer than the data.
        let fine = downsample(&q("AVERAGE", 1000), "W", 300.0, 1200.0, &samples).unwrap();
        assert_eq!(fine.v.len(), 4);
        assert_eq!(fine.v[2], None);
        assert!(downsample(&q("MIN", 2), "W", 300.0, 1200.0, &samples).is_err());
        assert!(downsample(&q("AVERAGE", 0), "W", 300.0, 1200.0, &samples).is_err());
    }
}
