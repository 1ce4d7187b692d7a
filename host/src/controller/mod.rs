//! The controller: the consolidation loop as a service.
//!
//! A [`Controller`] owns a [`World`], the active strategy's [`Scheduler`], the shared
//! [`PolicyRuntime`], the state database ([`store::Store`]) and the [`events::EventBus`]. Each
//! cycle: **observe** (the world's snapshot) → **decide** (plan + decision trace) → **approve**
//! (automatic, or RECOMMENDED until an admin approves) → **act** (guards, journal, world) →
//! **record** (state, events, the API's view).
//!
//! The loop runs on its own thread (the scheduler and wasmtime are synchronous); the HTTP API
//! (`crate::api`) reads [`Shared`] and changes things through the database plus a
//! [`Command`] that wakes the loop. The database is the single source of truth for plans and
//! actions: the loop executes whatever is APPROVED, so an approval from the API and one found
//! in the journal after a restart take the same path.

mod cohorts;
pub mod events;
pub mod experiment;
pub mod live_volumes;
pub mod live_world;
pub mod sim_migration;
pub mod sim_world;
pub mod store;
pub mod world;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use self::events::EventBus;
use self::store::{state, ActionEnd, NewAction, NewPlan, Store};
use self::world::{ActionReq, ClusterMetrics, HostView, Outcome, Progress, Reconciled, VmView, World, WorldInfo};
use crate::policy::PolicyRuntime;
use crate::scheduler::rules::Maintenance;
use crate::scheduler::{MigrationReason, OperatorRules, Plan, Scheduler, Snapshot, Strategy};

pub use experiment::{predicted_power_w, OfflineSpec};

/// Guards every strategy gets, applied to each action before it reaches the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Guards {
    /// Migrations in flight touching one host (source or destination); 0 = no limit.
    pub max_concurrent_per_host: u32,
    /// Migrations in flight in the whole cluster; 0 = no limit.
    pub max_concurrent: u32,
    /// Migrations started per cycle; 0 = no limit.
    pub max_per_cycle: u32,
    /// Cycles a VM must wait after a migration before it moves again.
    pub vm_cooldown_cycles: u32,
    /// Global pause: no plans are made and nothing is executed while set.
    pub paused: bool,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_concurrent_per_host: 8,
            max_concurrent: 500,
            max_per_cycle: 500,
            vm_cooldown_cycles: 0,
            paused: false,
        }
    }
}

/// How a strategy's plans are approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Automation {
    /// Plans wait as RECOMMENDED until an admin approves or rejects them.
    Manual,
    /// Plans are approved as they are made.
    Automatic,
}

impl Automation {
    pub fn as_str(self) -> &'static str {
        match self {
            Automation::Manual => "manual",
            Automation::Automatic => "automatic",
        }
    }

    pub fn parse(text: &str) -> Option<Automation> {
        match text {
            "manual" => Some(Automation::Manual),
            "automatic" | "auto" => Some(Automation::Automatic),
            _ => None,
        }
    }
}

/// Controller settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where `state.db` lives.
    pub data_dir: PathBuf,
    /// Strategy activated when the database has none (a built-in name or TOML text).
    pub default_strategy: String,
    pub default_automation: Automation,
    /// Guards used when the database has none stored.
    pub guards: Guards,
    /// An unapproved plan expires after this long (s).
    pub plan_ttl_s: i64,
    /// A RECOMMENDED plan stays up for review at least this long before a newer plan supersedes it (s).
    pub review_s: i64,
}

impl ControllerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ControllerConfig {
            data_dir,
            default_strategy: "lr-mmt-1.2".into(),
            default_automation: Automation::Automatic,
            guards: Guards::default(),
            plan_ttl_s: 600,
            review_s: 30,
        }
    }
}

/// The active strategy as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ActiveStrategy {
    pub id: i64,
    pub name: String,
    pub version: i64,
    pub automation: Automation,
}

/// What the last cycle did.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct CycleSummary {
    pub cycle: u64,
    pub epoch: i64,
    pub step: i64,
    pub world_time: f64,
    pub plan_id: Option<i64>,
    pub migrations_planned: usize,
    pub hosts_to_sleep: usize,
    pub executed: usize,
    pub refused: usize,
    pub policy_failures: usize,
    pub aborted: bool,
    pub decide_ms: f64,
    pub policy_ms: f64,
    /// Why nothing was decided (paused, no strategy, …).
    pub skipped: Option<String>,
}

/// The API's read model, rebuilt after every cycle.
#[derive(Debug, Default)]
pub struct View {
    pub hosts: Vec<HostView>,
    /// `hosts` serialized once per cycle: `GET /hosts` serves bytes, not serde work.
    pub hosts_json: axum::body::Bytes,
    pub vms: Vec<VmView>,
    pub vms_json: axum::body::Bytes,
    pub metrics: ClusterMetrics,
    pub in_flight: Vec<Progress>,
    pub strategy: Option<ActiveStrategy>,
    pub guards: Guards,
    pub maintenance: Vec<u32>,
    /// Cluster-wide operator rules (`PUT /rules`), on top of the active strategy's own.
    pub operator_rules: OperatorRules,
    pub last_cycle: CycleSummary,
    pub world_time: f64,
    pub policy_failures: Vec<serde_json::Value>,
}

/// A request from the API to the loop.
#[derive(Debug)]
pub enum Command {
    /// Something changed in the database (approval, hand migration, cancel): look again.
    Wake,
    /// Rebuild the scheduler from the active strategy.
    ReloadStrategy,
    SetGuards(Guards),
    /// Replace the cluster-wide operator rules (validated by the caller).
    SetRules(Box<OperatorRules>),
    Maintenance {
        host: u32,
        on: bool,
    },
    /// Start a live shadow experiment: strategy B decides on every snapshot, nothing executes.
    StartShadow {
        experiment: i64,
        strategy: Box<Strategy>,
        name: String,
    },
    /// Start a live cohort experiment: odd hosts under strategy B, even hosts under the active one.
    StartCohorts {
        experiment: i64,
        strategy: Box<Strategy>,
        name: String,
    },
    StopExperiment {
        experiment: i64,
    },
    Shutdown,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub cycles: AtomicU64,
    pub plans: AtomicU64,
    pub actions_executed: AtomicU64,
    pub actions_refused: AtomicU64,
    pub policy_failures: AtomicU64,
    pub decide_us_total: AtomicU64,
}

/// What the API shares with the loop.
pub struct Shared {
    pub store: Arc<Store>,
    pub bus: EventBus,
    pub runtime: Arc<PolicyRuntime>,
    pub view: RwLock<Arc<View>>,
    pub info: WorldInfo,
    /// The world's metric series (readable without the loop).
    pub series: Arc<dyn world::SeriesSource>,
    pub counters: Counters,
    pub started: Instant,
    /// Where uploaded modules are written for the scheduler to load (`sha256:` references).
    pub modules_dir: PathBuf,
    cmd: std::sync::Mutex<Sender<Command>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Shared {
    /// Sends a command to the loop (a stopped loop ignores it).
    pub fn send(&self, c: Command) {
        let tx = self.cmd.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(c);
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resolves a strategy's `sha256:HEX` module references to stored module files.
    pub fn resolve_modules(&self, strategy: &mut Strategy) -> Result<()> {
        resolve_modules(&self.store, &self.modules_dir, strategy)
    }
}

/// Writes referenced uploaded modules to `dir` and points the strategy at the files.
pub fn resolve_modules(store: &Store, dir: &std::path::Path, strategy: &mut Strategy) -> Result<()> {
    let choices = [
        &mut strategy.threshold,
        &mut strategy.selection,
        &mut strategy.placement,
        &mut strategy.fallback.threshold,
        &mut strategy.fallback.selection,
        &mut strategy.fallback.placement,
    ];
    for c in choices {
        let Some(sha) = c.module.strip_prefix("sha256:") else { continue };
        let sha = sha.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!("module reference {:?} is not sha256:<64 hex digits>", c.module);
        }
        let path = dir.join(format!("{sha}.wasm"));
        if !path.is_file() {
            let bytes = store.module_bytes(&sha)?.with_context(|| format!("no uploaded module sha256:{sha}"))?;
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let tmp = dir.join(format!(".{sha}.tmp"));
            std::fs::write(&tmp, &bytes).with_context(|| format!("write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
        }
        c.module = path.display().to_string();
    }
    Ok(())
}

/// Parses a strategy given as TOML text or a built-in name.
pub fn parse_strategy(text: &str) -> Result<Strategy> {
    let t = text.trim();
    if t.contains('=') || t.contains('[') {
        Strategy::from_toml(t).map_err(|e| anyhow::anyhow!("strategy TOML: {e}"))
    } else {
        Strategy::builtin(t).map_err(|e| anyhow::anyhow!("{e}. Built-ins: {}", Strategy::builtin_names().join(", ")))
    }
}

/// A running controller: its shared state and its loop thread.
pub struct Controller {
    pub shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    /// Opens the state, restores the world from the journal, and starts the loop.
    pub fn start(cfg: ControllerConfig, world: Box<dyn World>, runtime: Arc<PolicyRuntime>) -> Result<Controller> {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("create {}", cfg.data_dir.display()))?;
        let store = Arc::new(Store::open(&cfg.data_dir.join("state.db"))?);
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            store,
            bus: EventBus::new(),
            runtime,
            view: RwLock::new(Arc::new(View::default())),
            info: world.info(),
            series: world.series(),
            counters: Counters::default(),
            started: Instant::now(),
            modules_dir: cfg.data_dir.join("modules"),
            cmd: std::sync::Mutex::new(tx),
        });
        let mut lp = Loop::new(cfg, world, shared.clone(), rx)?;
        lp.recover()?;
        lp.publish_view();
        let thread = std::thread::Builder::new()
            .name("amvm-controller".into())
            .spawn(move || lp.run())
            .context("cannot start the controller thread")?;
        Ok(Controller { shared, thread: Some(thread) })
    }

    /// Stops the loop and waits for it.
    pub fn stop(mut self) {
        self.shared.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Shadow {
    experiment: i64,
    name: String,
    scheduler: Scheduler,
    cycles: u64,
    a_migrations: u64,
    b_migrations: u64,
    a_slept: u64,
    b_slept: u64,
    a_power_sum: f64,
    b_power_sum: f64,
}

struct Loop {
    cfg: ControllerConfig,
    world: Box<dyn World>,
    shared: Arc<Shared>,
    rx: Receiver<Command>,
    scheduler: Option<Scheduler>,
    active: Option<ActiveStrategy>,
    guards: Guards,
    maintenance: Vec<u32>,
    /// Cluster-wide operator rules; maintenance hosts are added to them each cycle.
    rules: OperatorRules,
    cycle: u64,
    /// Cycle at which each VM last started a migration (cool-down guard).
    moved_at: std::collections::HashMap<u32, u64>,
    executed_this_cycle: u32,
    last: CycleSummary,
    shadow: Option<Shadow>,
    cohorts: Option<cohorts::Cohorts>,
    last_failures: Vec<serde_json::Value>,
    stop: bool,
}

impl Loop {
    fn new(cfg: ControllerConfig, world: Box<dyn World>, shared: Arc<Shared>, rx: Receiver<Command>) -> Result<Loop> {
        let store = &shared.store;
        let guards = match store.setting("guards")? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "stored guards unreadable; using the configured ones");
                cfg.guards.clone()
            }),
            None => cfg.guards.clone(),
        };
        let maintenance = store.setting("maintenance")?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let cycle = store.setting("cycle")?.and_then(|t| t.parse().ok()).unwrap_or(0);
        let rules = match store.setting("operator_rules")? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "stored operator rules unreadable; starting without cluster rules");
                OperatorRules::default()
            }),
            None => OperatorRules::default(),
        };
        Ok(Loop {
            cfg,
            world,
            shared,
            rx,
            scheduler: None,
            active: None,
            guards,
            maintenance,
            rules,
            cycle,
            moved_at: Default::default(),
            executed_this_cycle: 0,
            last: CycleSummary::default(),
            shadow: None,
            cohorts: None,
            last_failures: Vec::new(),
            stop: false,
        })
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    fn publish(&self, kind: &'static str, data: serde_json::Value) {
        self.shared.bus.publish(kind, self.world.clock(), data);
    }

    /// Restart safety: rebuild the world from the journal, reconcile what was in flight,
    /// activate the stored (or default) strategy.
    fn recover(&mut self) -> Result<()> {
        let store = self.shared.store.clone();
        let pos: Option<(i64, i64)> = store.setting("position")?.and_then(|t| serde_json::from_str(&t).ok());
        if let Some((epoch, step)) = pos {
            let executed = store.executed_in_epoch(epoch)?;
            self.world.restore(epoch, step, &executed).map_err(|e| anyhow::anyhow!("rebuilding the world: {e}"))?;
            let mut ended = Vec::new();
            for a in store.actions_in(state::ONGOING)? {
                if let Reconciled::Ended(o) = self.world.reconcile(&a) {
                    ended.push(end_of(a.id, o));
                }
            }
            let n = ended.len();
            store.finish_actions(&ended)?;
            tracing::info!(epoch, step, replayed = executed.len(), reconciled = n, "world rebuilt from the journal");
            self.publish(
                "controller",
                serde_json::json!({ "event": "recovered", "epoch": epoch, "step": step, "replayed": executed.len(), "reconciled": n }),
            );
        }
        store.fail_orphaned_experiments(&["shadow", "offline", "cohorts"])?;
        if store.active_strategy_id()?.is_none() {
            let s = parse_strategy(&self.cfg.default_strategy)?;
            let (id, _) =
                store.insert_strategy(&s.name, &s.to_toml(), self.cfg.default_automation.as_str(), "controller")?;
            store.set_active_strategy(id)?;
            store.audit("controller", "strategy.activate", &format!("{} v1", s.name), "default strategy")?;
        }
        self.reload_strategy();
        Ok(())
    }

    fn reload_strategy(&mut self) {
        let store = self.shared.store.clone();
        let result = (|| -> Result<(Scheduler, ActiveStrategy)> {
            let id = store.active_strategy_id()?.context("no active strategy")?;
            let row = store.strategy(id)?.context("the active strategy is missing")?;
            let mut s = parse_strategy(&row.toml)?;
            self.shared.resolve_modules(&mut s)?;
            let mut scheduler = Scheduler::new(&self.shared.runtime, &s)?;
            scheduler.set_tracing(true);
            let automation = Automation::parse(&row.automation).unwrap_or(Automation::Automatic);
            Ok((scheduler, ActiveStrategy { id, name: row.name, version: row.version, automation }))
        })();
        match result {
            Ok((sch, active)) => {
                tracing::info!(strategy = %active.name, version = active.version, "strategy active");
                self.publish("controller", serde_json::json!({ "event": "strategy", "strategy": &active }));
                self.scheduler = Some(sch);
                self.active = Some(active);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot activate the strategy; keeping the previous one");
                self.publish("controller", serde_json::json!({ "event": "strategy-error", "error": format!("{e:#}") }));
            }
        }
    }

    fn run(mut self) {
        while !self.stop {
            if let Err(e) = self.tick() {
                tracing::error!(error = %format!("{e:#}"), "controller cycle failed");
                self.publish("controller", serde_json::json!({ "event": "error", "error": format!("{e:#}") }));
                self.wait(self.world.pace());
            }
        }
    }

    /// One cycle: advance the world, decide, execute, then wait out the pace while serving
    /// commands.
    fn tick(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let ended = self.world.advance();
        let (epoch, step) = self.world.position();
        self.store().set_setting("position", &serde_json::to_string(&(epoch, step))?)?;
        self.end_actions(ended)?;
        self.cycle += 1;
        if let Some(co) = self.cohorts.as_mut() {
            if let Some(record) = co.record(self.world.host_accounts(), self.cycle) {
                let (id, result) = (co.experiment, co.result());
                let store = &self.shared.store;
                store.insert_experiment_cycle(id, self.cycle as i64, &record)?;
                store.set_experiment_result(id, &result)?;
                self.shared.bus.publish(
                    "experiment",
                    self.world.clock(),
                    serde_json::json!({ "id": id, "cycle": record }),
                );
            }
        }
        self.store().set_setting("cycle", &self.cycle.to_string())?;
        self.executed_this_cycle = 0;
        self.expire_plans()?;
        self.decide()?;
        self.execute_approved()?;
        self.shared.counters.cycles.fetch_add(1, Ordering::Relaxed);
        self.publish_view();
        let cycle = serde_json::to_value(&self.last)?;
        self.publish("cycle", cycle);
        let pace = self.world.pace();
        let spent = t0.elapsed();
        self.wait(pace.saturating_sub(spent));
        self.world.end_step();
        Ok(())
    }

    /// Waits `d`, serving commands and sending migration progress every 100 ms.
    fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        let pace = self.world.pace().as_secs_f64().max(1e-3);
        let mut next_progress = Instant::now() + Duration::from_millis(100);
        loop {
            let now = Instant::now();
            if now >= until || self.stop {
                return;
            }
            let timeout = until.min(next_progress).saturating_duration_since(now);
            match self.rx.recv_timeout(timeout) {
                Ok(c) => {
                    if let Err(e) = self.command(c) {
                        tracing::error!(error = %format!("{e:#}"), "controller command failed");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(timeout);
                }
            }
            if Instant::now() >= next_progress {
                next_progress += Duration::from_millis(100);
                let fraction = 1.0 - until.saturating_duration_since(Instant::now()).as_secs_f64() / pace;
                let progress = self.world.in_flight(fraction);
                if !progress.is_empty() {
                    let data = serde_json::json!({ "fraction": fraction, "migrations": &progress });
                    self.publish("migration", data);
                }
            }
        }
    }

    fn command(&mut self, c: Command) -> Result<()> {
        match c {
            Command::Wake => {
                self.execute_approved()?;
                self.publish_view();
            }
            Command::ReloadStrategy => {
                self.reload_strategy();
                self.publish_view();
            }
            Command::SetGuards(g) => {
                self.store().set_setting("guards", &serde_json::to_string(&g)?)?;
                self.guards = g;
                self.publish("controller", serde_json::json!({ "event": "guards", "guards": &self.guards }));
                self.execute_approved()?;
                self.publish_view();
            }
            Command::SetRules(rules) => {
                self.store().set_setting("operator_rules", &serde_json::to_string(&rules)?)?;
                self.rules = *rules;
                self.publish("controller", serde_json::json!({ "event": "rules", "rules": &self.rules }));
                self.publish_view();
            }
            Command::Maintenance { host, on } => {
                self.maintenance.retain(|&h| h != host);
                if on {
                    self.maintenance.push(host);
                    self.maintenance.sort_unstable();
                }
                self.store().set_setting("maintenance", &serde_json::to_string(&self.maintenance)?)?;
                let state = if on { "maintenance" } else { "up" };
                self.publish("host", serde_json::json!({ "host": host, "state": state }));
                self.publish_view();
            }
            Command::StartShadow { experiment, strategy, name } => {
                let mut s = *strategy;
                self.shared.resolve_modules(&mut s)?;
                match Scheduler::new(&self.shared.runtime, &s) {
                    Ok(mut scheduler) => {
                        scheduler.set_tracing(true);
                        if let Some(old) = self.shadow.take() {
                            self.store().finish_experiment(
                                old.experiment,
                                "CANCELLED",
                                None,
                                None,
                                Some("replaced"),
                            )?;
                        }
                        self.shadow = Some(Shadow {
                            experiment,
                            name,
                            scheduler,
                            cycles: 0,
                            a_migrations: 0,
                            b_migrations: 0,
                            a_slept: 0,
                            b_slept: 0,
                            a_power_sum: 0.0,
                            b_power_sum: 0.0,
                        });
                    }
                    Err(e) => {
                        self.store().finish_experiment(experiment, "FAILED", None, None, Some(&format!("{e:#}")))?;
                    }
                }
            }
            Command::StartCohorts { experiment, strategy, name } => {
                let mut s = *strategy;
                self.shared.resolve_modules(&mut s)?;
                match Scheduler::new(&self.shared.runtime, &s) {
                    Ok(mut scheduler) => {
                        scheduler.set_tracing(true);
                        if let Some(old) = self.cohorts.take() {
                            self.store().finish_experiment(
                                old.experiment,
                                "CANCELLED",
                                None,
                                None,
                                Some("replaced"),
                            )?;
                        }
                        self.cohorts = Some(cohorts::Cohorts::new(experiment, name, scheduler));
                    }
                    Err(e) => {
                        self.store().finish_experiment(experiment, "FAILED", None, None, Some(&format!("{e:#}")))?;
                    }
                }
            }
            Command::StopExperiment { experiment } => {
                if self.cohorts.as_ref().is_some_and(|c| c.experiment == experiment) {
                    if let Some(c) = self.cohorts.take() {
                        self.store().finish_experiment(experiment, "SUCCEEDED", Some(&c.result()), None, None)?;
                        self.publish("experiment", serde_json::json!({ "id": experiment, "state": "SUCCEEDED" }));
                    }
                }
                if self.shadow.as_ref().is_some_and(|s| s.experiment == experiment) {
                    self.shadow = None;
                    self.store().finish_experiment(experiment, "SUCCEEDED", None, None, None)?;
                    self.publish("experiment", serde_json::json!({ "id": experiment, "state": "SUCCEEDED" }));
                }
            }
            Command::Shutdown => self.stop = true,
        }
        Ok(())
    }

    fn expire_plans(&mut self) -> Result<()> {
        for id in self.store().plans_expiring(state::RECOMMENDED, store::unix_now())? {
            let note = format!("expired after {} s without approval", self.cfg.plan_ttl_s);
            if self.store().transition_plan(id, &[state::RECOMMENDED], state::CANCELLED, None, Some(&note), true)? {
                self.publish("plan", serde_json::json!({ "id": id, "state": state::CANCELLED, "note": note }));
            }
        }
        Ok(())
    }

    fn decide(&mut self) -> Result<()> {
        let (epoch, step) = self.world.position();
        let mut summary =
            CycleSummary { cycle: self.cycle, epoch, step, world_time: self.world.clock(), ..Default::default() };
        if self.guards.paused {
            summary.skipped = Some("paused".into());
            self.last = summary;
            return Ok(());
        }
        let (Some(scheduler), Some(active)) = (self.scheduler.as_mut(), self.active.clone()) else {
            summary.skipped = Some("no strategy could be activated".into());
            self.last = summary;
            return Ok(());
        };
        let maintenance = self.maintenance.clone();
        self.world.observe(&maintenance);
        // Hosts in maintenance are emptied by the scheduler (operator rules), not hidden from it;
        // the world adds its own rules for what it just observed.
        let mut extra = self.rules.clone();
        if !maintenance.is_empty() {
            extra.maintenance.push(Maintenance { hosts: maintenance.clone(), windows: Vec::new() });
        }
        extra.merge(&self.world.rules());
        scheduler.set_extra_rules(extra.clone());
        if let Some(co) = self.cohorts.as_mut() {
            co.scheduler.set_extra_rules(extra.clone());
        }
        if let Some(sh) = self.shadow.as_mut() {
            sh.scheduler.set_extra_rules(extra);
        }
        let snap = self.world.snapshot();
        let t = Instant::now();
        let outcome = match self.cohorts.as_mut() {
            None => scheduler.cycle(snap),
            Some(co) => {
                // Each group decides over its own hosts and their VMs; the plans are merged.
                let a = cohorts::sub_snapshot(snap, |h| cohorts::group(snap.hosts.id[h]) == 0);
                let b = cohorts::sub_snapshot(snap, |h| cohorts::group(snap.hosts.id[h]) == 1);
                let mut oa = scheduler.cycle(&a);
                let ob = co.scheduler.cycle(&b);
                oa.plan.migrations.extend(ob.plan.migrations);
                oa.plan.sleep.extend(ob.plan.sleep);
                oa.plan.wake.extend(ob.plan.wake);
                oa.failures.extend(ob.failures);
                oa.aborted |= ob.aborted;
                if let (Some(ta), Some(tb)) = (oa.trace.as_mut(), ob.trace) {
                    ta.hosts.extend(tb.hosts);
                    ta.migrations.extend(tb.migrations);
                    ta.evacuations.extend(tb.evacuations);
                    ta.unplaced.extend(tb.unplaced);
                }
                co.planned(&oa.plan);
                oa
            }
        };
        let decide = t.elapsed();
        summary.decide_ms = decide.as_secs_f64() * 1e3;
        summary.policy_ms = outcome.stats.policy_time.as_secs_f64() * 1e3;
        summary.policy_failures = outcome.failures.len();
        summary.aborted = outcome.aborted;
        summary.migrations_planned = outcome.plan.migrations.len();
        summary.hosts_to_sleep = outcome.plan.sleep.len();
        self.shared.counters.decide_us_total.fetch_add(decide.as_micros() as u64, Ordering::Relaxed);
        self.shared.counters.policy_failures.fetch_add(outcome.failures.len() as u64, Ordering::Relaxed);
        self.last_failures = outcome.failures.iter().filter_map(|f| serde_json::to_value(f).ok()).collect();
        if !outcome.failures.is_empty() {
            let data = serde_json::json!({ "cycle": self.cycle, "failures": &self.last_failures });
            self.shared.bus.publish("policy", summary.world_time, data);
        }
        // The shadow strategy decides on the very same snapshot; its plan is recorded, never run.
        if let Some(sh) = self.shadow.as_mut() {
            let b = sh.scheduler.cycle(snap);
            let record = shadow_record(sh, snap, &outcome.plan, &b.plan, self.cycle);
            let trace = b.trace.as_ref().and_then(|t| serde_json::to_string(t).ok());
            let plan = plan_rows(&b.plan, epoch, step, self.cycle, None, "shadow", state::SHADOW, trace, None);
            let exp = sh.experiment;
            let result = shadow_result(sh);
            let store = &self.shared.store;
            store.insert_plan(&NewPlan { experiment_id: Some(exp), ..plan })?;
            store.insert_experiment_cycle(exp, self.cycle as i64, &record)?;
            store.set_experiment_result(exp, &result)?;
            self.shared.bus.publish(
                "experiment",
                summary.world_time,
                serde_json::json!({ "id": exp, "cycle": record }),
            );
        }
        let plan = outcome.plan;
        if plan.migrations.is_empty() && plan.sleep.is_empty() && plan.wake.is_empty() {
            self.last = summary;
            return Ok(());
        }
        let trace = outcome.trace.as_ref().and_then(|t| serde_json::to_string(t).ok());
        let now = store::unix_now();
        let (source, st, expires) = match active.automation {
            Automation::Automatic if self.cohorts.is_some() => ("cohorts", state::APPROVED, None),
            Automation::Automatic => ("automatic", state::APPROVED, None),
            Automation::Manual => {
                // A recommendation stays up for review for `review_s`; then a newer plan supersedes it.
                let pending = self.store().plans(Some(state::RECOMMENDED), 10)?;
                if pending.iter().any(|p| now - p.created_at < self.cfg.review_s) {
                    summary.skipped = Some("a recommended plan is still under review".into());
                    self.last = summary;
                    return Ok(());
                }
                for p in pending {
                    let note = "superseded by a newer plan";
                    if self.store().transition_plan(
                        p.id,
                        &[state::RECOMMENDED],
                        state::SUPERSEDED,
                        None,
                        Some(note),
                        true,
                    )? {
                        self.publish("plan", serde_json::json!({ "id": p.id, "state": state::SUPERSEDED }));
                    }
                }
                ("manual", state::RECOMMENDED, Some(now + self.cfg.plan_ttl_s))
            }
        };
        let row = plan_rows(&plan, epoch, step, self.cycle, Some(active.id), source, st, trace, expires);
        let (plan_id, _) = self.store().insert_plan(&row)?;
        self.shared.counters.plans.fetch_add(1, Ordering::Relaxed);
        summary.plan_id = Some(plan_id);
        self.publish(
            "plan",
            serde_json::json!({ "id": plan_id, "state": st, "migrations": plan.migrations.len(), "sleep": plan.sleep.len(), "strategy": active.name }),
        );
        self.last = summary;
        Ok(())
    }

    /// Executes every APPROVED action that the guards let through: journal first, then world.
    fn execute_approved(&mut self) -> Result<()> {
        if self.guards.paused {
            return Ok(());
        }
        let store = self.shared.store.clone();
        let approved = store.actions_in(state::APPROVED)?;
        if approved.is_empty() {
            return Ok(());
        }
        let (epoch, step) = self.world.position();
        let in_flight = self.world.in_flight(0.0);
        let mut per_host: std::collections::HashMap<u32, u32> = Default::default();
        for p in &in_flight {
            *per_host.entry(p.from).or_default() += 1;
            *per_host.entry(p.to).or_default() += 1;
        }
        let mut concurrent = in_flight.len() as u32;
        let g = self.guards.clone();
        let mut go = Vec::new();
        let mut refused = Vec::new();
        for a in &approved {
            let Some(req) = ActionReq::from_row(a) else {
                refused.push(ActionEnd::new(a.id, state::FAILED, Some("malformed action".into())));
                continue;
            };
            if let ActionReq::Migrate { vm, from, to, .. } = req {
                let why = if g.max_per_cycle > 0 && self.executed_this_cycle >= g.max_per_cycle {
                    Some(format!("guard: at most {} migrations per cycle", g.max_per_cycle))
                } else if g.max_concurrent > 0 && concurrent >= g.max_concurrent {
                    Some(format!("guard: at most {} concurrent migrations in the cluster", g.max_concurrent))
                } else if g.max_concurrent_per_host > 0
                    && (per_host.get(&from).copied().unwrap_or(0) >= g.max_concurrent_per_host
                        || per_host.get(&to).copied().unwrap_or(0) >= g.max_concurrent_per_host)
                {
                    Some(format!("guard: at most {} concurrent migrations per host", g.max_concurrent_per_host))
                } else if g.vm_cooldown_cycles > 0
                    && self
                        .moved_at
                        .get(&vm)
                        .is_some_and(|&c| self.cycle.saturating_sub(c) < u64::from(g.vm_cooldown_cycles))
                {
                    Some(format!("guard: VM cool-down of {} cycles", g.vm_cooldown_cycles))
                } else if self.maintenance.contains(&to) {
                    Some(format!("host {to} is in maintenance"))
                } else {
                    None
                };
                if let Some(why) = why {
                    refused.push(ActionEnd::new(a.id, state::CANCELLED, Some(why)));
                    continue;
                }
                self.executed_this_cycle += 1;
                concurrent += 1;
                *per_host.entry(from).or_default() += 1;
                *per_host.entry(to).or_default() += 1;
            }
            go.push(req);
        }
        let ids: Vec<i64> = go.iter().map(ActionReq::id).collect();
        store.mark_ongoing(&ids, epoch, step)?;
        let results = self.world.execute(&go);
        let mut ended = refused;
        let mut executed = 0;
        for (req, r) in go.iter().zip(results) {
            match r {
                Ok(()) => {
                    executed += 1;
                    match *req {
                        ActionReq::Migrate { vm, .. } => {
                            self.moved_at.insert(vm, self.cycle);
                        }
                        // Sleep and wake take effect at once in the worlds we have.
                        ActionReq::Sleep { id, .. } | ActionReq::Wake { id, .. } => {
                            ended.push(ActionEnd::new(id, state::SUCCEEDED, None));
                        }
                    }
                }
                Err(e) => ended.push(ActionEnd::new(req.id(), state::FAILED, Some(e))),
            }
        }
        let n_refused = ended.iter().filter(|e| e.state != state::SUCCEEDED).count();
        self.last.executed += executed;
        self.last.refused += n_refused;
        self.shared.counters.actions_executed.fetch_add(executed as u64, Ordering::Relaxed);
        self.shared.counters.actions_refused.fetch_add(n_refused as u64, Ordering::Relaxed);
        let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
        for e in ended.iter().filter(|e| e.state != state::SUCCEEDED) {
            *reasons.entry(e.note.clone().unwrap_or_default()).or_default() += 1;
        }
        if !reasons.is_empty() {
            let ids: Vec<i64> = ended.iter().filter(|e| e.state != state::SUCCEEDED).map(|e| e.id).collect();
            self.publish("action", serde_json::json!({ "refused": ids, "reasons": reasons }));
        }
        store.finish_actions(&ended)?;
        if executed > 0 {
            self.publish("action", serde_json::json!({ "started": ids, "state": state::ONGOING }));
        }
        Ok(())
    }

    fn end_actions(&mut self, ended: Vec<(i64, Outcome)>) -> Result<()> {
        if ended.is_empty() {
            return Ok(());
        }
        let ends: Vec<ActionEnd> = ended.into_iter().map(|(id, o)| end_of(id, o)).collect();
        let ok = ends.iter().filter(|e| e.state == state::SUCCEEDED).count();
        self.publish("action", serde_json::json!({ "ended": ends.len(), "succeeded": ok }));
        self.store().finish_actions(&ends)?;
        Ok(())
    }

    fn publish_view(&mut self) {
        let hosts = self.world.hosts(&self.maintenance);
        let vms = self.world.vms();
        let hosts_json = serde_json::to_vec(&hosts).map(axum::body::Bytes::from).unwrap_or_default();
        let vms_json = serde_json::to_vec(&vms).map(axum::body::Bytes::from).unwrap_or_default();
        let view = View {
            metrics: self.world.metrics(&self.maintenance),
            in_flight: self.world.in_flight(0.0),
            hosts,
            hosts_json,
            vms,
            vms_json,
            strategy: self.active.clone(),
            guards: self.guards.clone(),
            maintenance: self.maintenance.clone(),
            operator_rules: self.rules.clone(),
            last_cycle: self.last.clone(),
            world_time: self.world.clock(),
            policy_failures: self.last_failures.clone(),
        };
        *self.shared.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }
}

fn end_of(id: i64, o: Outcome) -> ActionEnd {
    match o {
        Outcome::Succeeded { total_s, bytes, downtime_ms, page_faults } => {
            ActionEnd { id, state: state::SUCCEEDED, note: None, total_s, bytes, downtime_ms, page_faults }
        }
        Outcome::Failed(e) => ActionEnd::new(id, state::FAILED, Some(e)),
    }
}

/// The journal rows for a plan.
#[allow(clippy::too_many_arguments)]
fn plan_rows(
    plan: &Plan,
    epoch: i64,
    step: i64,
    cycle: u64,
    strategy_id: Option<i64>,
    source: &str,
    st: &'static str,
    trace: Option<String>,
    expires_at: Option<i64>,
) -> NewPlan {
    let mut actions: Vec<NewAction> = plan
        .wake
        .iter()
        .map(|&h| NewAction {
            kind: "wake",
            vm: None,
            from_host: None,
            to_host: Some(h.into()),
            reason: None,
            mode: None,
        })
        .collect();
    actions.extend(plan.migrations.iter().map(|m| NewAction {
        kind: "migrate",
        vm: Some(m.vm.into()),
        from_host: Some(m.from.into()),
        to_host: Some(m.to.into()),
        reason: Some(match m.reason {
            MigrationReason::Overload => "overload".into(),
            MigrationReason::Underload => "underload".into(),
            MigrationReason::Maintenance => "maintenance".into(),
        }),
        mode: m.mode.map(|x| x.name().into()),
    }));
    actions.extend(plan.sleep.iter().map(|&h| NewAction {
        kind: "sleep",
        vm: None,
        from_host: Some(h.into()),
        to_host: None,
        reason: Some("evacuated".into()),
        mode: None,
    }));
    NewPlan {
        epoch,
        step,
        cycle: cycle as i64,
        strategy_id,
        source: source.into(),
        state: st,
        note: None,
        trace,
        expires_at,
        experiment_id: None,
        actions,
    }
}

fn shadow_record(sh: &mut Shadow, snap: &Snapshot, a: &Plan, b: &Plan, cycle: u64) -> serde_json::Value {
    let (pa, pb) = (predicted_power_w(snap, a), predicted_power_w(snap, b));
    sh.cycles += 1;
    sh.a_migrations += a.migrations.len() as u64;
    sh.b_migrations += b.migrations.len() as u64;
    sh.a_slept += a.sleep.len() as u64;
    sh.b_slept += b.sleep.len() as u64;
    sh.a_power_sum += pa;
    sh.b_power_sum += pb;
    serde_json::json!({
        "cycle": cycle,
        "a": { "migrations": a.migrations.len(), "sleep": a.sleep.len(), "predicted_power_w": pa },
        "b": { "migrations": b.migrations.len(), "sleep": b.sleep.len(), "predicted_power_w": pb },
    })
}

fn shadow_result(sh: &Shadow) -> serde_json::Value {
    let n = sh.cycles.max(1) as f64;
    serde_json::json!({
        "b": sh.name,
        "cycles": sh.cycles,
        "a_migrations": sh.a_migrations,
        "b_migrations": sh.b_migrations,
        "a_hosts_slept": sh.a_slept,
        "b_hosts_slept": sh.b_slept,
        "a_mean_predicted_power_w": sh.a_power_sum / n,
        "b_mean_predicted_power_w": sh.b_power_sum / n,
        "b_executed_actions": 0,
    })
}
