//! The live world: real nodes observed through the collector's [`Mirror`] and acted on through
//! the agents' control endpoints (`monitor/agent/control.rs`).
//!
//! - **observe**: every configured host with its capacity (cores × `core_mips`, memory from its
//!   reports) and the VMs it reported last, each with its vCPU utilization window from the mirror
//!   (`window` samples, oldest first, NaN where none). A host the collector calls down (silent for
//!   4 report intervals) is `Down`: never a destination, never acted on. A host this world put to
//!   sleep is `Asleep` (its agent is silent on purpose) until it is woken.
//! - **execute**: a migration goes to the *source* node's agent (`migrate`, with the destination's
//!   libvirt URI and stream address, the configured mode and link cap); a destination that sleeps
//!   is woken first. A wake runs the host's `wake_cmd` here (the controller can reach a sleeping
//!   node; the node cannot wake itself) or, without one, asks an awake agent to run its
//!   `--wake-cmd`. A sleep is carried out once the host has no VM and no migration left (as in the
//!   simulated world: with the last VM leaving).
//! - **advance**: polls the agents' jobs; a finished job ends its action with libvirt's figures
//!   (total time, bytes, downtime, page faults = post-copy requests).
//! - **SLA accounting** at every recorded cycle, over the time since the last one (the paper's
//!   metrics, as the simulated world counts them): an active host's time counts toward SLATAH's
//!   violation while its VMs' demand reaches its capacity (100 % CPU); each VM's demand is
//!   requested MIPS·s, and a VM migrating loses 10 % of its demand for the time it migrates
//!   (PDM), charged to the source. Energy per host from the same power curve.
//!
//! **Invariant**: the world never starts a second migration of a VM that is migrating, never
//! places onto a host that is down, and shows a VM on its source until the source's agent says
//! the job succeeded (the scheduler's snapshot counts a migrating VM at its destination).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amvm_engine::qemu::Phase;

use super::live_volumes::{self, AgentGuests, LiveVolumes, LiveVolumesConfig};
use super::sim_world::downsample;
use super::store::ActionRow;
use super::world::{
    ActionReq, ClusterMetrics, HostAccount, HostView, Outcome, Progress, Reconciled, SeriesData, SeriesQuery,
    SeriesSource, VmView, World, WorldInfo,
};
use crate::monitor::agent::control::{self, Client, ControlError, JobView, Op};
use crate::monitor::proto::{uuid_string, ClusterKey};
use crate::monitor::store::{Owner, SeriesKey};
use crate::monitor::{Metric, Mirror};
use crate::scheduler::{HostState, Mode, OperatorRules, Snapshot};
use crate::volume::{GuestHost, NodeRef, PreparedMove};

/// Watts at 0 %, 10 %, …, 100 % CPU used for the live hosts' power estimate (SPECpower's HP
/// ProLiant ML110 G4, the simulator's first reference host): the live world measures no power.
pub(crate) const POWER_CURVE: [f32; 11] = [86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0];
/// Failed polls of a job's agent after which the action is failed (the guest stays where libvirt
/// left it; the next snapshot shows where).
const MAX_POLL_FAILURES: u32 = 20;
/// Cycles a pending sleep waits for its host to empty before it is dropped.
const MAX_SLEEP_WAIT: u32 = 40;
/// A node answers `sleep` before it goes to sleep (the command may stop the agent itself): a
/// wake sent sooner than this after the answer could arrive before the sleep and be lost.
const SLEEP_SETTLE: Duration = Duration::from_secs(2);

/// One node of the live world.
#[derive(Debug, Clone)]
pub struct LiveHost {
    /// The host name its agent reports with (`amvm agent --name`).
    pub name: String,
    /// The agent's control endpoint.
    pub control: SocketAddr,
    /// The node's libvirt daemon as other nodes reach it (`qemu+tcp://10.77.0.12/system`).
    pub libvirt: String,
    /// Where migration streams to this node go (`tcp://10.77.0.12`); `None`: libvirt's default.
    pub migrate_uri: Option<String>,
    /// Shell command the controller runs to wake this node (`AMVM_WAKE_HOST` names it); `None`:
    /// an awake agent runs its `--wake-cmd`.
    pub wake_cmd: Option<String>,
    /// CPU cores offered to VMs (default: the cores the node reports).
    pub cores: Option<u32>,
}

/// How the live world is set up.
#[derive(Debug, Clone)]
pub struct LiveWorldConfig {
    pub cluster: String,
    pub hosts: Vec<LiveHost>,
    pub key: ClusterKey,
    /// Real time between decision cycles.
    pub pace: Duration,
    /// Samples per history row handed to the policies.
    pub window: usize,
    /// MIPS of one core (host capacity = cores × this; a VM's = vCPUs × this).
    pub core_mips: f64,
    /// Migration mode asked of the agents: `pre`, `post` or `hybrid`.
    pub mode: String,
    /// Link cap per migration (bytes/s); `None` = uncapped.
    pub bandwidth_bps: Option<f64>,
    /// Where VM ids are kept (a JSON list of UUIDs, index = id), so the journal's VM ids mean
    /// the same VMs after a restart; `None`: in memory only.
    pub ids_file: Option<std::path::PathBuf>,
    /// Where the names of the hosts this world put to sleep are kept: after a restart they are
    /// still asleep (silent on purpose, wakeable), not down.
    pub asleep_file: Option<std::path::PathBuf>,
    /// Disk-array volumes of the guests (`[volumes]`); `None`: the world ignores volumes.
    pub volumes: Option<LiveVolumesConfig>,
}

struct Running {
    vm: u32,
    from: u32,
    to: u32,
    job: String,
    /// `pre`, `post` or `hybrid`: the plan's choice, else the configured default.
    mode: String,
    started: Instant,
    last: Option<JobView>,
    poll_failures: u32,
    /// The moves of the VM's volumes, prepared before the migration started.
    volume_moves: Vec<PreparedMove>,
}

/// What the API shows of one VM, kept from the last snapshot.
#[derive(Debug, Clone)]
struct VmFacts {
    uuid: [u8; 16],
    name: String,
}

/// The live world.
pub struct LiveWorld {
    cfg: LiveWorldConfig,
    mirror: Arc<Mirror>,
    clients: Vec<Client>,
    snap: Snapshot,
    started: Instant,
    step: i64,
    /// VM ids by UUID (stable for the process's lifetime) and back.
    vm_ids: HashMap<[u8; 16], u32>,
    vm_facts: Vec<VmFacts>,
    asleep: HashSet<u32>,
    /// When each host was woken (it is active until its agent reports again).
    woken_at: HashMap<u32, Instant>,
    /// When each sleeping host's agent acknowledged the sleep.
    slept_at: HashMap<u32, Instant>,
    /// Sleep actions waiting for their host to empty: host → cycles waited.
    pending_sleep: HashMap<u32, u32>,
    running: HashMap<i64, Running>,
    /// VMs that just arrived: host until the destination's reports list them.
    arrived: HashMap<u32, (u32, Instant)>,
    executed: HashSet<i64>,
    /// Per snapshot VM row: the host it runs on now (the snapshot has a migrating VM on its
    /// destination).
    runs_on: Vec<u32>,
    /// Last known capacity per host (cores, memory MB), kept while it sleeps.
    capacity: Vec<Option<(u32, f64)>>,
    series: Arc<LiveSeries>,
    /// Migrations found still running by `reconcile` after a restart, taken over by `advance`.
    adopted: std::sync::Mutex<Vec<(i64, Running)>>,
    migrations_total: u64,
    shutdowns_total: u64,
    /// Energy since the world started (estimated from the power curve, kWh).
    energy_kwh: f64,
    /// Per host: energy, active and violation time, requested and lost MIPS·s (SLA accounting).
    accounts: Vec<HostAccount>,
    volumes: Option<LiveVolumes>,
    /// Each host as the volume workflow sees it (`None`: no address for its initiator).
    nodes: Vec<Option<NodeRef>>,
}

impl std::fmt::Debug for LiveWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveWorld").field("hosts", &self.cfg.hosts.len()).finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl LiveWorld {
    pub fn new(cfg: LiveWorldConfig, mirror: Arc<Mirror>) -> Result<LiveWorld, String> {
        if cfg.hosts.is_empty() {
            return Err("the live world needs at least one [[world.host]]".into());
        }
        let mut names = HashSet::new();
        for h in &cfg.hosts {
            if !crate::monitor::proto::valid_name(&h.name) {
                return Err(format!("host name {:?}: use 1-64 characters of A-Z a-z 0-9 . _ -", h.name));
            }
            if !names.insert(h.name.clone()) {
                return Err(format!("host {:?} is listed twice", h.name));
            }
        }
        if !(cfg.core_mips.is_finite() && cfg.core_mips > 0.0) {
            return Err("core_mips must be positive".into());
        }
        cfg.mode.parse::<amvm_engine::memory::Mode>().map_err(|e| format!("mode: {e}"))?;
        let clients = cfg
            .hosts
            .iter()
            .map(|h| {
                let mut c = Client::new(h.control, cfg.key.clone());
                c.timeout = Duration::from_secs(5);
                c
            })
            .collect();
        let series = Arc::new(LiveSeries {
            mirror: mirror.clone(),
            cluster: cfg.cluster.clone(),
            hosts: cfg.hosts.iter().map(|h| h.name.clone()).collect(),
            vms: RwLock::new(Vec::new()),
            history: RwLock::new(VecDeque::new()),
        });
        let mut vm_facts = Vec::new();
        let mut vm_ids = HashMap::new();
        if let Some(f) = cfg.ids_file.as_ref().filter(|f| f.exists()) {
            let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let list: Vec<String> =
                serde_json::from_str(&text).map_err(|e| format!("{} is not a list of VM UUIDs: {e}", f.display()))?;
            for u in list {
                let uuid = crate::monitor::proto::parse_uuid(&u)
                    .ok_or_else(|| format!("{}: bad VM UUID {u:?}", f.display()))?;
                vm_ids.insert(uuid, vm_facts.len() as u32);
                vm_facts.push(VmFacts { uuid, name: u });
            }
        }
        let mut asleep = HashSet::new();
        if let Some(f) = cfg.asleep_file.as_ref().filter(|f| f.exists()) {
            let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            let names: Vec<String> =
                serde_json::from_str(&text).map_err(|e| format!("{} is not a list of host names: {e}", f.display()))?;
            for n in names {
                match cfg.hosts.iter().position(|h| h.name == n) {
                    Some(i) => {
                        asleep.insert(i as u32);
                    }
                    None => tracing::warn!("{}: host {n:?} asleep but no longer configured", f.display()),
                }
            }
        }
        let volumes = match cfg.volumes.clone() {
            Some(v) => Some(LiveVolumes::open(v, cfg.hosts.len())?),
            None => None,
        };
        let nodes = cfg
            .hosts
            .iter()
            .map(|h| live_volumes::node_ref(&h.name, &h.libvirt, h.migrate_uri.as_deref()).ok())
            .collect();
        Ok(LiveWorld {
            volumes,
            nodes,
            capacity: vec![None; cfg.hosts.len()],
            runs_on: Vec::new(),
            cfg,
            mirror,
            clients,
            snap: Snapshot::default(),
            started: Instant::now(),
            step: 0,
            vm_ids,
            vm_facts,
            adopted: std::sync::Mutex::new(Vec::new()),
            asleep,
            woken_at: HashMap::new(),
            slept_at: HashMap::new(),
            pending_sleep: HashMap::new(),
            running: HashMap::new(),
            arrived: HashMap::new(),
            executed: HashSet::new(),
            series,
            migrations_total: 0,
            shutdowns_total: 0,
            energy_kwh: 0.0,
            accounts: Vec::new(),
        })
    }

    fn last(&self, owner: Owner, metric: Metric) -> Option<f64> {
        let key = SeriesKey { cluster: self.cfg.cluster.clone(), owner, metric };
        self.mirror.window(&key).last().map(|p| p.1)
    }

    fn host_index(&self, id: u32) -> Option<usize> {
        self.snap.hosts.id.iter().position(|&h| h == id)
    }

    fn vm_index(&self, id: u32) -> Option<usize> {
        self.snap.vms.id.iter().position(|&v| v == id)
    }

    fn state_of(&self, host: u32) -> HostState {
        self.host_index(host).map_or(HostState::Down, |h| self.snap.hosts.state[h])
    }

    fn vm_id(&mut self, uuid: [u8; 16]) -> u32 {
        if let Some(&id) = self.vm_ids.get(&uuid) {
            return id;
        }
        let id = self.vm_facts.len() as u32;
        self.vm_ids.insert(uuid, id);
        self.vm_facts.push(VmFacts { uuid, name: uuid_string(&uuid) });
        if let Some(f) = &self.cfg.ids_file {
            let list: Vec<String> = self.vm_facts.iter().map(|v| uuid_string(&v.uuid)).collect();
            let tmp = f.with_extension("tmp");
            let saved = serde_json::to_vec(&list)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&tmp, b))
                .and_then(|()| std::fs::rename(&tmp, f));
            if let Err(e) = saved {
                tracing::warn!("cannot save VM ids to {}: {e}", f.display());
            }
        }
        id
    }

    /// Wakes `host`: its own wake command here, else an awake agent's `--wake-cmd`.
    fn wake(&mut self, host: u32) -> Result<(), String> {
        if let Some(t) = self.slept_at.remove(&host) {
            std::thread::sleep(SLEEP_SETTLE.saturating_sub(t.elapsed()));
        }
        let h = &self.cfg.hosts[host as usize];
        let name = h.name.clone();
        match &h.wake_cmd {
            Some(cmd) => control::run_shell(cmd, &[("AMVM_WAKE_HOST", &name)])?,
            None => {
                let via = (0..self.cfg.hosts.len() as u32)
                    .find(|&o| o != host && self.state_of(o) == HostState::Active)
                    .ok_or_else(|| format!("no awake node to wake {name} from, and no wake_cmd for it"))?;
                self.clients[via as usize]
                    .call(&Op::Wake { host: name.clone() })
                    .map_err(|e| format!("waking {name} through {}: {e}", self.cfg.hosts[via as usize].name))?;
            }
        }
        tracing::info!(host = %name, "host woken");
        self.asleep.remove(&host);
        self.save_asleep();
        self.woken_at.insert(host, Instant::now());
        if let Some(i) = self.host_index(host) {
            self.snap.hosts.state[i] = HostState::Active;
        }
        Ok(())
    }

    fn start_migration(&mut self, id: i64, vm: u32, from: u32, to: u32, mode: Option<Mode>) -> Result<(), String> {
        let n = self.cfg.hosts.len() as u32;
        if from >= n || to >= n {
            return Err(format!("no host {}", from.max(to)));
        }
        if from == to {
            return Err("source and destination are the same host".into());
        }
        let v = self.vm_index(vm).ok_or_else(|| format!("no VM {vm}"))?;
        if self.snap.vms.migrating[v] || self.running.values().any(|r| r.vm == vm) {
            return Err(format!("VM {vm} is migrating already"));
        }
        let on = self.snap.hosts.id[self.snap.vms.host[v] as usize];
        if on != from {
            return Err(format!("VM {vm} is on host {on}, not {from}"));
        }
        match self.state_of(to) {
            HostState::Down => return Err(format!("host {} is down", self.cfg.hosts[to as usize].name)),
            HostState::Asleep => self.wake(to)?,
            HostState::Active => {}
        }
        self.pending_sleep.remove(&to);
        let mode = mode.map_or_else(|| self.cfg.mode.clone(), |m| m.name().to_string());
        let dst = &self.cfg.hosts[to as usize];
        let op = Op::Migrate {
            vm: uuid_string(&self.vm_facts[vm as usize].uuid),
            to_uri: dst.libvirt.clone(),
            migrate_uri: dst.migrate_uri.clone(),
            mode: mode.clone(),
            bandwidth_bps: self.cfg.bandwidth_bps,
        };
        let name = self.vm_facts[vm as usize].name.clone();
        let volume_moves = self.begin_volume_moves(&name, from, to, mode.parse().ok())?;
        let job: String = match self.clients[from as usize].call_as(&op) {
            Ok(j) => j,
            Err(e) => {
                let err = format!("agent of {}: {}", self.cfg.hosts[from as usize].name, e);
                let mut msg = err.clone();
                for r in self.finish_volume_moves(volume_moves, Err(err), Some(from)) {
                    if let Err(v) = r {
                        msg.push_str(&format!("; {v}"));
                    }
                }
                return Err(msg);
            }
        };
        tracing::info!(vm = %self.vm_facts[vm as usize].name, from = %self.cfg.hosts[from as usize].name, to = %dst.name, job, mode, "migration started");
        self.snap.vms.migrating[v] = true;
        self.running.insert(
            id,
            Running { vm, from, to, job, mode, started: Instant::now(), last: None, poll_failures: 0, volume_moves },
        );
        Ok(())
    }

    /// Prepares the moves of VM `name`'s volumes from host `from` to `to` (nothing without
    /// volumes).
    fn begin_volume_moves(
        &self,
        name: &str,
        from: u32,
        to: u32,
        mode: Option<Mode>,
    ) -> Result<Vec<PreparedMove>, String> {
        let Some(v) = self.volumes.as_ref().filter(|v| !v.volumes_of(name).is_empty()) else {
            return Ok(Vec::new());
        };
        let node = |h: u32| {
            self.nodes[h as usize].clone().ok_or_else(|| {
                format!("host {} has no address for its iSCSI initiator", self.cfg.hosts[h as usize].name)
            })
        };
        if !v.reaches(to as usize) {
            return Err(format!(
                "host {} does not reach the disk array of {name}'s volumes",
                self.cfg.hosts[to as usize].name
            ));
        }
        v.begin(name, &node(from)?, &node(to)?, mode)
    }

    /// Finishes prepared volume moves after their migration ended; the guest is on host `on`
    /// when known, else located through the agents.
    fn finish_volume_moves(
        &self,
        moves: Vec<PreparedMove>,
        migrated: Result<(), String>,
        on: Option<u32>,
    ) -> Vec<Result<String, String>> {
        let Some(v) = self.volumes.as_ref().filter(|_| !moves.is_empty()) else {
            return Vec::new();
        };
        let guests = self.agent_guests();
        let vm = moves[0].attachment.vm.clone();
        let locate = || match on.and_then(|h| self.nodes[h as usize].clone()) {
            Some(n) => Ok(n),
            None => guests.locate(&vm),
        };
        v.finish(moves, migrated, &locate)
    }

    fn agent_guests(&self) -> AgentGuests<'_> {
        AgentGuests {
            nodes: self
                .nodes
                .iter()
                .zip(&self.cfg.hosts)
                .map(|(n, h)| {
                    n.clone().unwrap_or_else(|| NodeRef {
                        name: h.name.clone(),
                        uri: h.libvirt.clone(),
                        initiator: amvm_engine::volume::Initiator::Iqn("unknown".into()),
                    })
                })
                .collect(),
            clients: &self.clients,
            awake: (0..self.cfg.hosts.len() as u32).map(|h| self.state_of(h) == HostState::Active).collect(),
        }
    }

    /// Volumes for the snapshot just built: attachments and the array's reach re-read, each
    /// VM's volume cost, and open moves resolved while no migration runs.
    fn observe_volumes(&mut self) {
        let Some(mut v) = self.volumes.take() else { return };
        let names: Vec<String> = self.cfg.hosts.iter().map(|h| h.name.clone()).collect();
        let awake: Vec<bool> = (0..names.len() as u32).map(|h| self.state_of(h) == HostState::Active).collect();
        let vms: Vec<(u32, String)> =
            self.snap.vms.id.iter().map(|&id| (id, self.vm_facts[id as usize].name.clone())).collect();
        v.refresh(&self.clients, &names, &awake, &vms);
        self.snap.vms.extra_migration_s = vms.iter().map(|(_, n)| v.extra_migration_s(n)).collect();
        if self.running.is_empty() && v.has_open_moves() {
            v.resolve(&self.agent_guests());
        }
        self.volumes = Some(v);
    }

    /// Puts hosts whose sleep is pending to sleep once nothing is on them or moving to or from them.
    fn carry_out_sleeps(&mut self) {
        let hosts: Vec<u32> = self.pending_sleep.keys().copied().collect();
        for host in hosts {
            let busy = self.running.values().any(|r| r.from == host || r.to == host);
            let has_vms = self.host_index(host).is_some_and(|h| self.runs_on.iter().any(|&vh| vh as usize == h));
            let name = self.cfg.hosts[host as usize].name.clone();
            if busy || has_vms {
                let waited = self.pending_sleep.entry(host).or_default();
                *waited += 1;
                if *waited > MAX_SLEEP_WAIT {
                    tracing::warn!(host = %name, "sleep dropped: the host did not empty");
                    self.pending_sleep.remove(&host);
                }
                continue;
            }
            self.pending_sleep.remove(&host);
            match self.clients[host as usize].call(&Op::Sleep) {
                Ok(_) => {
                    tracing::info!(host = %name, "host put to sleep");
                    self.asleep.insert(host);
                    self.save_asleep();
                    self.slept_at.insert(host, Instant::now());
                    self.shutdowns_total += 1;
                    if let Some(i) = self.host_index(host) {
                        self.snap.hosts.state[i] = HostState::Asleep;
                    }
                }
                Err(e) => tracing::warn!(host = %name, "sleep refused: {e}"),
            }
        }
    }

    fn poll(&mut self) -> Vec<(i64, Outcome)> {
        let mut ended = Vec::new();
        let ids: Vec<i64> = self.running.keys().copied().collect();
        for id in ids {
            let Some(r) = self.running.get_mut(&id) else { continue };
            let client = &self.clients[r.from as usize];
            match client.call_as::<JobView>(&Op::Progress { job: r.job.clone() }) {
                Ok(j) => {
                    r.poll_failures = 0;
                    let state = j.state.clone();
                    r.last = Some(j);
                    match state.as_str() {
                        "running" => {}
                        "succeeded" => {
                            let Some(r) = self.running.remove(&id) else { continue };
                            let rep = r.last.as_ref().and_then(|j| j.report.clone());
                            self.arrived.insert(r.vm, (r.to, Instant::now()));
                            self.migrations_total += 1;
                            for v in self.finish_volume_moves(r.volume_moves, Ok(()), Some(r.to)) {
                                match v {
                                    Ok(done) => tracing::info!(job = %r.job, "{done}"),
                                    Err(e) => {
                                        tracing::error!(job = %r.job, "the guest moved but its volume did not: {e}")
                                    }
                                }
                            }
                            ended.push((id, outcome_of(rep.as_ref())));
                        }
                        _ => {
                            let Some(r) = self.running.remove(&id) else { continue };
                            let why = r.last.and_then(|j| j.error).unwrap_or_else(|| state.clone());
                            let mut msg = format!("migration {state}: {why}");
                            for v in self.finish_volume_moves(r.volume_moves, Err(msg.clone()), None) {
                                match v {
                                    Ok(done) => msg.push_str(&format!("; {done}")),
                                    Err(e) => msg.push_str(&format!("; {e}")),
                                }
                            }
                            ended.push((id, Outcome::Failed(msg)));
                        }
                    }
                }
                Err(e) => {
                    r.poll_failures += 1;
                    tracing::warn!(job = %r.job, "cannot poll the migration: {e}");
                    if r.poll_failures >= MAX_POLL_FAILURES || matches!(e, ControlError::Refused(_)) {
                        let Some(r) = self.running.remove(&id) else { continue };
                        // Where the guest is cannot be told now: its volume moves stay open and
                        // are resolved from where the agents report it.
                        drop(r.volume_moves);
                        ended.push((
                            id,
                            Outcome::Failed(format!(
                                "lost track of job {} on {}: {e} (the next snapshot shows where the VM runs)",
                                r.job, self.cfg.hosts[r.from as usize].name
                            )),
                        ));
                    }
                }
            }
        }
        ended
    }

    /// The snapshot from the agents' reports. A host in maintenance is reported as it is (its
    /// VMs included): the controller's maintenance rule evacuates it and keeps VMs off it.
    fn build_snapshot(&mut self) {
        let now = unix_now();
        let statuses: HashMap<String, crate::monitor::HostStatus> = self
            .mirror
            .hosts(now)
            .into_iter()
            .filter(|s| s.cluster == self.cfg.cluster)
            .map(|s| (s.host.clone(), s))
            .collect();
        let window = self.cfg.window.max(1);
        let mut snap = Snapshot {
            cycle: self.step as u64,
            time_s: self.started.elapsed().as_secs_f64(),
            unix_time_s: Some(now as f64),
            interval_s: self.cfg.pace.as_secs_f32(),
            window,
            migration_bandwidth_mbps: self.cfg.bandwidth_bps.map_or(125.0, |b| (b / 1e6) as f32),
            power_curves: vec![POWER_CURVE],
            ..Default::default()
        };
        let grace = self.cfg.pace * 4;
        self.woken_at.retain(|_, t| t.elapsed() < grace);
        self.arrived.retain(|_, (_, t)| t.elapsed() < grace);
        let mut placed: HashMap<u32, usize> = HashMap::new();
        let mut vm_rows: Vec<(u32, usize)> = Vec::new();
        self.runs_on.clear();
        for (h, host) in self.cfg.hosts.clone().iter().enumerate() {
            let id = h as u32;
            let status = statuses.get(&host.name);
            let reporting = status.is_some_and(|s| s.up);
            let state = if self.asleep.contains(&id) {
                HostState::Asleep
            } else if reporting || self.woken_at.contains_key(&id) {
                HostState::Active
            } else {
                HostState::Down
            };
            let owner = || Owner::Host(host.name.clone());
            let cores = host.cores.or_else(|| self.last(owner(), Metric::CpuNum).map(|c| c.round().max(1.0) as u32));
            let mem = self.last(owner(), Metric::MemTotal).map(|b| b / 1_048_576.0);
            if let (Some(c), Some(m)) = (cores, mem) {
                self.capacity[h] = Some((c, m));
            }
            let (cores, mem) = self.capacity[h].unwrap_or((host.cores.unwrap_or(1), 0.0));
            snap.hosts.push(id, state, cores as f32 * self.cfg.core_mips as f32, mem as f32, 0);
            snap.hosts.core_mips.push(self.cfg.core_mips as f32);
            if state != HostState::Active || !reporting {
                continue;
            }
            for u in status.map(|s| s.vms.clone()).unwrap_or_default() {
                let vm = self.vm_id(u);
                // A VM listed by two nodes (the reports around a migration): the arrival wins.
                if placed.contains_key(&vm) && self.arrived.get(&vm).is_none_or(|(to, _)| *to != id) {
                    continue;
                }
                placed.insert(vm, h);
            }
        }
        // A migrating VM stays on its source until its job succeeded; an arrived one is on its
        // destination even before the destination reported it.
        for r in self.running.values() {
            placed.insert(r.vm, r.from as usize);
        }
        for (&vm, &(to, _)) in &self.arrived {
            if !self.running.values().any(|r| r.vm == vm) {
                placed.insert(vm, to as usize);
            }
        }
        vm_rows.extend(placed);
        vm_rows.sort_unstable();
        for &(vm, h) in &vm_rows {
            let uuid = self.vm_facts[vm as usize].uuid;
            if let Some(n) = self.mirror.vm_name(&uuid) {
                self.vm_facts[vm as usize].name = n;
            }
            let vcpus = self.last(Owner::Vm(uuid), Metric::VcpuNum).unwrap_or(1.0).max(1.0);
            let ram = self.last(Owner::Vm(uuid), Metric::VmemTotal).map_or(0.0, |b| b / 1_048_576.0);
            snap.vms.id.push(vm);
            // The scheduler sees a migrating VM on its destination (its load already counted
            // there, none left at the source): otherwise a source stays overloaded for the whole
            // move and every cycle selects more of its VMs. The API shows where it runs.
            let dest = self.running.values().find(|r| r.vm == vm).map_or(h, |r| r.to as usize);
            snap.vms.host.push(dest as u32);
            self.runs_on.push(h as u32);
            snap.vms.mips.push((vcpus * self.cfg.core_mips) as f32);
            snap.vms.ram_mb.push(ram as f32);
            snap.vms.migrating.push(self.running.values().any(|r| r.vm == vm));
            let dirty = self.last(Owner::Vm(uuid), Metric::VmemDirtyRate);
            snap.vms.dirty_mbps.push(dirty.map_or(f32::NAN, |b| (b / 1_048_576.0) as f32));
            let cpu = self.mirror.vm_utilization(&self.cfg.cluster, uuid).cpu;
            let tail = &cpu[cpu.len().saturating_sub(window)..];
            snap.vms.cpu_history.extend(std::iter::repeat_n(f32::NAN, window - tail.len()));
            snap.vms.cpu_history.extend(tail.iter().map(|&(_, v)| v as f32));
        }
        for r in self.running.values() {
            snap.hosts.migrations_in_flight[r.from as usize] += 1;
            snap.hosts.migrations_in_flight[r.to as usize] += 1;
        }
        debug_assert_eq!(self.runs_on.len(), snap.vms.len());
        *self.series.vms.write().unwrap_or_else(|p| p.into_inner()) = self.vm_facts.iter().map(|f| f.uuid).collect();
        self.snap = snap;
    }

    fn save_asleep(&self) {
        let Some(f) = &self.cfg.asleep_file else { return };
        let mut names: Vec<&str> = self.asleep.iter().map(|&h| self.cfg.hosts[h as usize].name.as_str()).collect();
        names.sort_unstable();
        let tmp = f.with_extension("tmp");
        let saved = serde_json::to_vec(&names)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, f));
        if let Err(e) = saved {
            tracing::warn!("cannot save the sleeping hosts to {}: {e}", f.display());
        }
    }

    /// Appends this cycle's cluster figures to the history the API reads.
    /// SLA accounting over the last `dt` seconds (see the module's documentation).
    fn account(&mut self, dt: f64) {
        let s = &self.snap;
        if self.accounts.len() < self.cfg.hosts.len() {
            self.accounts.resize(self.cfg.hosts.len(), HostAccount::default());
        }
        if dt.is_nan() || dt <= 0.0 {
            return;
        }
        let views = self.hosts(&[]);
        for (h, view) in views.iter().enumerate() {
            let host = s.hosts.id[h] as usize;
            if s.hosts.state[h] != HostState::Active || host >= self.accounts.len() {
                continue;
            }
            let a = &mut self.accounts[host];
            a.active_s += dt;
            a.energy_kwh += view.power_w * dt / 3.6e6;
            if view.cpu_capacity_mips > 0.0 && view.cpu_util >= 1.0 {
                a.violation_s += dt;
            }
        }
        for v in 0..s.vms.len() {
            let demand = self.vm_demand(v);
            if !demand.is_finite() {
                continue;
            }
            let at = self.runs_on.get(v).map(|&h| s.hosts.id[h as usize] as usize);
            let vm = s.vms.id[v];
            let migrating_from = self.running.values().find(|r| r.vm == vm).map(|r| r.from as usize);
            if let Some(a) = at.and_then(|h| self.accounts.get_mut(h)) {
                a.requested_mips_s += demand * dt;
            }
            if let Some(a) = migrating_from.and_then(|h| self.accounts.get_mut(h)) {
                a.migration_loss_mips_s += 0.1 * demand * dt;
            }
        }
    }

    fn record(&mut self, maintenance: &[u32]) {
        let unix = self.clock();
        let since = self.series.history.read().unwrap_or_else(|p| p.into_inner()).back().map(|l| l.unix);
        self.account(since.map_or(0.0, |t| (unix - t).clamp(0.0, 3600.0)));
        let hosts = self.hosts(maintenance);
        let m = self.metrics(maintenance);
        let mut h = self.series.history.write().unwrap_or_else(|p| p.into_inner());
        let energy =
            h.back().map_or(0.0, |last| last.energy_kwh + last.power_w * (unix - last.unix).clamp(0.0, 3600.0) / 3.6e6);
        self.energy_kwh = energy;
        if h.len() == HISTORY_CYCLES {
            h.pop_front();
        }
        h.push_back(CycleSample {
            unix,
            power_w: m.power_w,
            active_hosts: m.hosts_up as f64,
            cpu_mean: m.cpu_util_mean,
            mem_mean: m.mem_util_mean,
            energy_kwh: energy,
            host_power: hosts.iter().map(|h| h.power_w as f32).collect(),
        });
    }

    fn vm_demand(&self, v: usize) -> f64 {
        f64::from(self.snap.vm_demand_mips(v))
    }

    fn host_state_name(&self, h: usize, maintenance: &[u32]) -> &'static str {
        let id = self.snap.hosts.id[h];
        if maintenance.contains(&id) {
            return "maintenance";
        }
        match self.snap.hosts.state[h] {
            HostState::Active => "up",
            HostState::Asleep => "asleep",
            HostState::Down => "down",
        }
    }
}

/// Watts of an active host at CPU utilization `util` (0..1), interpolated on [`POWER_CURVE`].
pub(crate) fn power_w(util: f64) -> f64 {
    let util = util.clamp(0.0, 1.0);
    let i = (util * 10.0).floor().min(9.0) as usize;
    let f = util * 10.0 - i as f64;
    f64::from(POWER_CURVE[i]) * (1.0 - f) + f64::from(POWER_CURVE[i + 1]) * f
}

/// `base` (the world's own counters: VMs, migrations, energy, shutdowns) completed with the
/// totals of the host views (counts by state, power, mean and spread of active hosts' CPU, mean
/// memory) and the SLA metrics of the per-host accounts (the live and the OpenStack worlds).
pub(crate) fn cluster_metrics(hosts: &[HostView], accounts: &[HostAccount], base: ClusterMetrics) -> ClusterMetrics {
    let active: Vec<&HostView> = hosts.iter().filter(|h| h.state == "up").collect();
    let n = active.len().max(1) as f64;
    let mean = active.iter().map(|h| h.cpu_util).sum::<f64>() / n;
    let var = active.iter().map(|h| (h.cpu_util - mean).powi(2)).sum::<f64>() / n;
    ClusterMetrics {
        hosts: hosts.len(),
        hosts_up: active.len(),
        hosts_asleep: hosts.iter().filter(|h| h.state == "asleep").count(),
        hosts_down: hosts.iter().filter(|h| h.state == "down").count(),
        hosts_maintenance: hosts.iter().filter(|h| h.state == "maintenance").count(),
        power_w: hosts.iter().map(|h| h.power_w).sum(),
        cpu_util_mean: mean,
        load_stddev: var.sqrt(),
        mem_util_mean: active.iter().map(|h| h.mem_util).sum::<f64>() / n,
        slatah: ratio(accounts.iter().map(|a| (a.violation_s, a.active_s))),
        pdm: ratio(accounts.iter().map(|a| (a.migration_loss_mips_s, a.requested_mips_s))),
        ..base
    }
}

/// The accounts of `hosts` hosts with each migration under way (by source) counted out.
pub(crate) fn accounts_with_outgoing(
    accounts: &[HostAccount],
    hosts: usize,
    sources: impl Iterator<Item = u32>,
) -> Vec<HostAccount> {
    let mut a = accounts.to_vec();
    a.resize(hosts, HostAccount::default());
    for from in sources {
        if let Some(h) = a.get_mut(from as usize) {
            h.migrations_out += 1;
        }
    }
    a
}

/// Σ numerators / Σ denominators (0 without any denominator).
pub(crate) fn ratio(parts: impl Iterator<Item = (f64, f64)>) -> f64 {
    let (n, d) = parts.fold((0.0, 0.0), |(n, d), (a, b)| (n + a, d + b));
    if d > 0.0 {
        n / d
    } else {
        0.0
    }
}

fn outcome_of(rep: Option<&amvm_engine::qemu::QemuReport>) -> Outcome {
    Outcome::Succeeded {
        total_s: rep.map(|x| x.total_time_ms / 1e3),
        bytes: rep.map(|x| x.bytes_transferred as f64),
        downtime_ms: rep.map(|x| x.downtime_ms),
        page_faults: rep.map(|x| x.page_faults as i64),
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Setup | Phase::PreCopy => "full-round",
        Phase::PostCopy => "demand-push",
        Phase::Completed => "done",
    }
}

impl World for LiveWorld {
    fn info(&self) -> WorldInfo {
        WorldInfo {
            kind: "live".into(),
            name: self.cfg.cluster.clone(),
            description: format!(
                "live cluster {:?}: {} nodes through their agents, {} migrations{}, a decision every {:.1} s",
                self.cfg.cluster,
                self.cfg.hosts.len(),
                self.cfg.mode,
                self.cfg.bandwidth_bps.map(|b| format!(" capped at {:.0} Mbit/s", b * 8e-6)).unwrap_or_default(),
                self.cfg.pace.as_secs_f64()
            ),
            interval_s: self.cfg.pace.as_secs_f64(),
            hosts: self.cfg.hosts.len(),
            vms: self.snap.vms.len(),
        }
    }

    fn position(&self) -> (i64, i64) {
        (0, self.step)
    }

    fn clock(&self) -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    }

    fn pace(&self) -> Duration {
        self.cfg.pace
    }

    fn restore(&mut self, _epoch: i64, step: i64, _executed: &[ActionRow]) -> Result<(), String> {
        // Nothing to rebuild: the nodes are the state. Keep counting steps from where we were.
        self.step = step;
        Ok(())
    }

    fn reconcile(&self, action: &ActionRow) -> Reconciled {
        // The source's agent says what became of the migration (its newest job for this VM to
        // that destination): still running (taken over), or ended with its figures or reason.
        let Some(ActionReq::Migrate { vm, from, to, .. }) = ActionReq::from_row(action) else {
            // Sleep and wake end when they are handed over.
            return Reconciled::Ended(Outcome::Succeeded {
                total_s: None,
                bytes: None,
                downtime_ms: None,
                page_faults: None,
            });
        };
        let n = self.cfg.hosts.len() as u32;
        let (Some(facts), true) = (self.vm_facts.get(vm as usize), from < n && to < n) else {
            return Reconciled::Ended(Outcome::Failed(format!("after a restart: VM {vm} or its hosts are unknown")));
        };
        let uuid = uuid_string(&facts.uuid);
        let dst = &self.cfg.hosts[to as usize].libvirt;
        let jobs: Vec<JobView> = match self.clients[from as usize].call_as(&Op::Jobs) {
            Ok(j) => j,
            Err(e) => {
                return Reconciled::Ended(Outcome::Failed(format!(
                    "after a restart the source's agent cannot say what became of the migration: {e}"
                )))
            }
        };
        let Some(j) =
            jobs.into_iter().filter(|j| j.vm_uuid == uuid && &j.to_uri == dst).max_by(|a, b| a.job.cmp(&b.job))
        else {
            return Reconciled::Ended(Outcome::Failed(
                "after a restart the source's agent has no job for this migration: the controller stopped before \
                 sending it, or the agent restarted; the VM was not moved by it"
                    .into(),
            ));
        };
        match j.state.as_str() {
            "running" => {
                let r = Running {
                    vm,
                    from,
                    to,
                    job: j.job.clone(),
                    mode: action.mode.clone().unwrap_or_else(|| self.cfg.mode.clone()),
                    started: Instant::now(),
                    last: Some(j),
                    poll_failures: 0,
                    // Its volume moves were journaled by the controller before it stopped:
                    // they are resolved once the migration has ended.
                    volume_moves: Vec::new(),
                };
                self.adopted.lock().unwrap_or_else(|p| p.into_inner()).push((action.id, r));
                Reconciled::Ongoing
            }
            "succeeded" => Reconciled::Ended(outcome_of(j.report.as_ref())),
            other => Reconciled::Ended(Outcome::Failed(format!(
                "migration {other}: {}",
                j.error.unwrap_or_else(|| other.to_string())
            ))),
        }
    }

    fn observe(&mut self, maintenance: &[u32]) -> &Snapshot {
        self.build_snapshot();
        self.observe_volumes();
        self.record(maintenance);
        &self.snap
    }

    fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    fn rules(&self) -> OperatorRules {
        self.volumes.as_ref().map(LiveVolumes::rules).unwrap_or_default()
    }

    fn execute(&mut self, actions: &[ActionReq]) -> Vec<Result<(), String>> {
        actions
            .iter()
            .map(|a| {
                if !self.executed.insert(a.id()) {
                    return Err(format!("action {} was executed already", a.id()));
                }
                match *a {
                    ActionReq::Migrate { id, vm, from, to, mode } => self.start_migration(id, vm, from, to, mode),
                    ActionReq::Wake { host, .. } => {
                        if host as usize >= self.cfg.hosts.len() {
                            return Err(format!("no host {host}"));
                        }
                        if self.state_of(host) == HostState::Asleep {
                            self.wake(host)
                        } else {
                            Ok(())
                        }
                    }
                    ActionReq::Sleep { host, .. } => {
                        if host as usize >= self.cfg.hosts.len() {
                            return Err(format!("no host {host}"));
                        }
                        if self.state_of(host) != HostState::Active {
                            return Err(format!("host {} is not up", self.cfg.hosts[host as usize].name));
                        }
                        self.pending_sleep.insert(host, 0);
                        Ok(())
                    }
                }
            })
            .collect()
    }

    fn end_step(&mut self) {}

    fn advance(&mut self) -> Vec<(i64, Outcome)> {
        self.step += 1;
        let adopted = std::mem::take(&mut *self.adopted.lock().unwrap_or_else(|p| p.into_inner()));
        for (id, r) in adopted {
            self.executed.insert(id);
            self.running.insert(id, r);
        }
        let ended = self.poll();
        // Sleeps need the placement as it is now.
        self.build_snapshot();
        self.carry_out_sleeps();
        ended
    }

    fn in_flight(&self, _fraction: f64) -> Vec<Progress> {
        let mut out: Vec<Progress> = self
            .running
            .iter()
            .map(|(&id, r)| {
                let j = r.last.as_ref();
                let p = j.and_then(|j| j.progress.as_ref());
                let total = j.and_then(|j| j.memory_bytes).unwrap_or(0.0);
                let bw = self.cfg.bandwidth_bps.unwrap_or(125e6);
                Progress {
                    action_id: id,
                    vm: r.vm,
                    from: r.from,
                    to: r.to,
                    phase: p.map_or("full-round", |p| phase_name(p.phase)).into(),
                    bytes_total: total,
                    bytes_sent: p.map_or(0.0, |p| p.bytes_sent as f64),
                    bytes_remaining: p.map_or(total, |p| p.bytes_remaining as f64),
                    elapsed_s: r.started.elapsed().as_secs_f64(),
                    expected_s: total / bw,
                    mode: match r.mode.as_str() {
                        "pre" => "pre-copy",
                        "post" => "post-copy",
                        _ => "hybrid",
                    }
                    .into(),
                    dirty_rate_bps: p.map_or(0.0, |p| p.dirty_rate_bytes_per_s),
                    bandwidth_bps: p.map_or(bw, |p| p.throughput_bytes_per_s),
                    precopy_nonconvergent: p.is_some_and(|p| p.non_convergence),
                    downtime_s: 0.0,
                    page_faults: 0,
                }
            })
            .collect();
        out.sort_by_key(|p| p.action_id);
        out
    }

    fn hosts(&self, maintenance: &[u32]) -> Vec<HostView> {
        let s = &self.snap;
        (0..s.hosts.len())
            .map(|h| {
                let vms: Vec<usize> = (0..s.vms.len()).filter(|&v| self.runs_on[v] as usize == h).collect();
                let cap = f64::from(s.hosts.cpu_capacity[h]);
                let mem = f64::from(s.hosts.mem_capacity[h]);
                // (+ 0.0: an empty float sum is -0.0.)
                let demand: f64 = vms.iter().map(|&v| self.vm_demand(v)).sum::<f64>() + 0.0;
                let ram: f64 = vms.iter().map(|&v| f64::from(s.vms.ram_mb[v])).sum::<f64>() + 0.0;
                let util = if cap > 0.0 { (demand / cap).min(1.0) } else { 0.0 };
                let active = s.hosts.state[h] == HostState::Active;
                let power = if active { power_w(util) } else { 0.0 };
                HostView {
                    id: s.hosts.id[h],
                    name: self.cfg.hosts[h].name.clone(),
                    state: self.host_state_name(h, maintenance).into(),
                    cores: (cap / self.cfg.core_mips).round() as u32,
                    cpu_capacity_mips: cap,
                    mem_capacity_mb: mem,
                    cpu_util: util,
                    mem_util: if mem > 0.0 { (ram / mem).min(1.0) } else { 0.0 },
                    net_util: None,
                    power_w: power,
                    overloaded: demand > cap,
                    vms: vms.iter().map(|&v| s.vms.id[v]).collect(),
                    migrations_in_flight: s.hosts.migrations_in_flight[h],
                }
            })
            .collect()
    }

    fn vms(&self) -> Vec<VmView> {
        let s = &self.snap;
        (0..s.vms.len())
            .map(|v| {
                let id = s.vms.id[v];
                let last = s.vms.cpu_history[(v + 1) * s.window - 1];
                VmView {
                    id,
                    name: self.vm_facts[id as usize].name.clone(),
                    host: s.hosts.id[self.runs_on[v] as usize],
                    mips: f64::from(s.vms.mips[v]),
                    ram_mb: f64::from(s.vms.ram_mb[v]),
                    cpu_util: if last.is_finite() { f64::from(last) } else { 0.0 },
                    cpu_source: last.is_finite().then(|| "agent".into()),
                    migrating_to: self.running.values().find(|r| r.vm == id).map(|r| r.to),
                }
            })
            .collect()
    }

    fn metrics(&self, maintenance: &[u32]) -> ClusterMetrics {
        cluster_metrics(
            &self.hosts(maintenance),
            &self.accounts,
            ClusterMetrics {
                vms: self.snap.vms.len(),
                migrations_in_flight: self.running.len(),
                migrations_today: self.migrations_total,
                energy_kwh_today: self.energy_kwh,
                host_shutdowns_today: self.shutdowns_total,
                ..Default::default()
            },
        )
    }

    fn series(&self) -> Arc<dyn SeriesSource> {
        self.series.clone()
    }

    fn host_accounts(&self) -> Vec<HostAccount> {
        accounts_with_outgoing(&self.accounts, self.cfg.hosts.len(), self.running.values().map(|r| r.from))
    }
}

/// Cluster figures recorded at each decision cycle (the mirror keeps per-host and per-VM series
/// only).
#[derive(Debug, Clone)]
struct CycleSample {
    unix: f64,
    power_w: f64,
    active_hosts: f64,
    cpu_mean: f64,
    mem_mean: f64,
    energy_kwh: f64,
    host_power: Vec<f32>,
}

/// Cycles of cluster history kept (a day at 5 s cycles).
const HISTORY_CYCLES: usize = 17_280;

/// Series of the live world: per host and VM from the collector's mirror (its recent window),
/// cluster-wide and power from the cycles this world recorded.
struct LiveSeries {
    mirror: Arc<Mirror>,
    cluster: String,
    hosts: Vec<String>,
    vms: RwLock<Vec<[u8; 16]>>,
    history: RwLock<VecDeque<CycleSample>>,
}

impl SeriesSource for LiveSeries {
    fn series(&self, q: &SeriesQuery) -> Result<SeriesData, String> {
        let id = q.id.map(|i| i as usize);
        let recorded = |unit: &str, f: &dyn Fn(&CycleSample) -> Option<f64>| {
            let h = self.history.read().unwrap_or_else(|p| p.into_inner());
            let samples: Vec<(f64, Option<f64>)> = h.iter().map(|c| (c.unix, f(c))).collect();
            let step = samples.windows(2).last().map_or(5.0, |w| (w[1].0 - w[0].0).max(0.1));
            downsample(q, unit, step, unix_now() as f64, &samples)
        };
        let points: Vec<(u64, f64)> = match (q.target.as_str(), q.metric.as_str()) {
            ("host", "power") => {
                let h = id.filter(|&h| h < self.hosts.len()).ok_or_else(|| format!("no host {:?}", q.id))?;
                return recorded("W", &|c| c.host_power.get(h).map(|&w| f64::from(w)));
            }
            ("cluster", "power") => return recorded("W", &|c| Some(c.power_w)),
            ("cluster", "active_hosts") => return recorded("hosts", &|c| Some(c.active_hosts)),
            ("cluster", "cpu") => return recorded("ratio", &|c| Some(c.cpu_mean)),
            ("cluster", "mem") => return recorded("ratio", &|c| Some(c.mem_mean)),
            ("cluster", "energy") => return recorded("kWh", &|c| Some(c.energy_kwh)),
            ("cluster", "net") => return recorded("ratio", &|_| None),
            ("host", m) => {
                let name = id.and_then(|h| self.hosts.get(h)).ok_or_else(|| format!("no host {:?}", q.id))?;
                let u = self.mirror.host_utilization(&self.cluster, name);
                match m {
                    "cpu" => u.cpu,
                    "mem" => u.mem,
                    "net" => u.net,
                    other => return Err(format!("unknown host metric {other:?} (cpu, mem, net, power)")),
                }
            }
            ("vm", m) => {
                let vms = self.vms.read().unwrap_or_else(|p| p.into_inner());
                let uuid = *id.and_then(|v| vms.get(v)).ok_or_else(|| format!("no VM {:?}", q.id))?;
                let u = self.mirror.vm_utilization(&self.cluster, uuid);
                match m {
                    "cpu" => u.cpu,
                    "mem" => u.mem,
                    other => return Err(format!("unknown VM metric {other:?} (cpu, mem)")),
                }
            }
            ("cluster", other) => {
                return Err(format!("unknown cluster metric {other:?} (cpu, mem, net, power, active_hosts, energy)"))
            }
            (other, _) => return Err(format!("unknown target {other:?} (host, vm, cluster)")),
        };
        let unit = "ratio";
        let samples: Vec<(f64, Option<f64>)> = points.into_iter().map(|(t, v)| (t as f64, Some(v))).collect();
        let step = samples.windows(2).last().map_or(15.0, |w| (w[1].0 - w[0].0).max(1.0));
        downsample(q, unit, step, unix_now() as f64, &samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::agent::control::{ControlConfig, ControlServer};

    fn key() -> ClusterKey {
        ClusterKey::new(vec![3; 32]).unwrap()
    }

    fn agent(name: &str) -> ControlServer {
        ControlServer::start(ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            key: key(),
            host: name.into(),
            libvirt: None,
            sleep_cmd: Some("true".into()),
            wake_cmd: None,
        })
        .unwrap()
    }

    /// The tests' world: cluster "default", 1 s pace, a window of 4, 1000 MIPS per core,
    /// hybrid migrations, no link cap, no state files, no volumes.
    fn config(hosts: Vec<LiveHost>) -> LiveWorldConfig {
        LiveWorldConfig {
            cluster: "default".into(),
            hosts,
            key: key(),
            pace: Duration::from_secs(1),
            window: 4,
            core_mips: 1000.0,
            mode: "hybrid".into(),
            bandwidth_bps: None,
            ids_file: None,
            asleep_file: None,
            volumes: None,
        }
    }

    fn hk(h: &str, m: Metric) -> SeriesKey {
        SeriesKey { cluster: "default".into(), owner: Owner::Host(h.into()), metric: m }
    }

    fn vk(u: [u8; 16], m: Metric) -> SeriesKey {
        SeriesKey { cluster: "default".into(), owner: Owner::Vm(u), metric: m }
    }

    #[test]
    fn volumes_cost_migration_time_pin_vms_to_nodes_that_reach_the_array_and_move_first() {
        use crate::controller::store::{state, Store, VolumeAttachment};
        let now = unix_now();
        let mirror = Arc::new(Mirror::new(20));
        let (with, without) = ([1u8; 16], [2u8; 16]);
        for (h, vms) in [("n1", vec![with, without]), ("n2", vec![])] {
            mirror.host_seen("default", h, now, 2, "Linux", Some(vms));
            mirror.push(now, [(hk(h, Metric::CpuNum), Some(2.0)), (hk(h, Metric::MemTotal), Some(4096.0 * 1048576.0))]);
        }
        for u in [with, without] {
            mirror
                .push(now, [(vk(u, Metric::VcpuNum), Some(1.0)), (vk(u, Metric::VmemTotal), Some(256.0 * 1048576.0))]);
        }
        mirror.name_vms([(&with, "vm1"), (&without, "vm2")]);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = Store::open(&db).unwrap();
        store
            .put_attachment(&VolumeAttachment {
                volume: "vol1".into(),
                vm: "vm1".into(),
                node: "n1".into(),
                initiator: "127.0.0.1".into(),
                portal: "127.0.0.1:3260".into(),
                iqn: "iqn.test:vol1".into(),
                lun: 1,
                target_dev: "vdb".into(),
                updated_at: 0,
            })
            .unwrap();
        // The array's portal: a socket that accepts (every node reaches it), then one that
        // refuses. No tgtd answers its management port, so a move's check-array fails.
        let portal = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let array_config = dir.path().join("volumes.toml");
        let write = |portal: &str| {
            let c = amvm_engine::volume::ArrayConfig::local(portal, 1, &dir.path().join("pool"));
            std::fs::write(&array_config, c.to_toml()).unwrap();
        };
        write(&portal.local_addr().unwrap().to_string());
        let agents = [agent("n1"), agent("n2")];
        let hosts = ["n1", "n2"]
            .iter()
            .zip(&agents)
            .map(|(n, a)| LiveHost {
                name: (*n).into(),
                control: a.local_addr,
                libvirt: "qemu+tcp://127.0.0.1/system".into(),
                migrate_uri: None,
                wake_cmd: None,
                cores: None,
            })
            .collect();
        let cfg = LiveWorldConfig {
            bandwidth_bps: Some(100e6),
            volumes: Some(LiveVolumesConfig {
                db: db.clone(),
                array_config: array_config.clone(),
                move_overhead_s: 2.0,
                recheck: Duration::ZERO,
            }),
            ..config(hosts)
        };
        let mut w = LiveWorld::new(cfg, mirror).unwrap();
        let s = w.observe(&[]).clone();
        let names: Vec<String> = s.vms.id.iter().map(|&id| w.vm_facts[id as usize].name.clone()).collect();
        let (v1, v2) = (names.iter().position(|n| n == "vm1").unwrap(), names.iter().position(|n| n == "vm2").unwrap());
        // The volume's remapping is part of vm1's migration time, not of vm2's.
        assert_eq!(s.vms.extra_migration_s[v1], 2.0);
        assert_eq!(s.vms.extra_migration_s[v2], 0.0);
        // Both nodes reach the array: vm1 may run on either.
        let r = w.rules();
        assert_eq!(r.host_groups[0].hosts, vec![0, 1]);
        assert_eq!(r.vm_host[0].vms, vec![s.vms.id[v1]]);
        assert_eq!(r.vm_host[0].relation, crate::scheduler::rules::HostRelation::RunOn);
        r.validate().unwrap();

        // The portal stops answering: no node reaches it, so vm1 has no destination, and a
        // migration asked for anyway is refused before any agent is called.
        drop(portal);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        write(&closed.to_string());
        w.observe(&[]);
        assert!(w.rules().host_groups[0].hosts.is_empty(), "{:?}", w.rules());
        let vm1 = s.vms.id[v1];
        let res = w.execute(&[ActionReq::Migrate { id: 1, vm: vm1, from: 0, to: 1, mode: None }]);
        assert!(res[0].as_ref().unwrap_err().contains("does not reach the disk array"), "{res:?}");
        assert!(store.volume_moves(None, 10).unwrap().is_empty(), "nothing was journaled");

        // It answers again, but the array's management does not: the move is journaled, fails
        // at check-array, and nothing was changed; the guest was never sent.
        let portal = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        write(&portal.local_addr().unwrap().to_string());
        w.observe(&[]);
        assert_eq!(w.rules().host_groups[0].hosts, vec![0, 1]);
        let res = w.execute(&[ActionReq::Migrate { id: 2, vm: vm1, from: 0, to: 1, mode: None }]);
        let err = res[0].as_ref().unwrap_err();
        assert!(err.contains("volume vol1") && err.contains("check-array"), "{err}");
        let moves = store.volume_moves(None, 10).unwrap();
        assert_eq!((moves.len(), moves[0].state.as_str()), (1, state::FAILED), "{moves:?}");
        assert_eq!(store.attachment("vol1").unwrap().unwrap().node, "n1");
        assert!(w.running.is_empty());
        // vm2 has no volume: its migration goes straight to the agent (which has no libvirt).
        let vm2 = s.vms.id[v2];
        let res = w.execute(&[ActionReq::Migrate { id: 3, vm: vm2, from: 0, to: 1, mode: None }]);
        assert!(res[0].as_ref().unwrap_err().contains("no libvirt"), "{res:?}");
        assert_eq!(store.volume_moves(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn sla_accounting_counts_time_at_full_cpu_and_what_migrations_cost() {
        let now = unix_now();
        let mirror = Arc::new(Mirror::new(20));
        let (busy, idle) = ([1u8; 16], [2u8; 16]);
        // n1: one core, its VM at 100 % of its vCPU (demand = capacity); n2: two cores, a VM at 25 %.
        for (h, cores, vms) in [("n1", 1.0, vec![busy]), ("n2", 2.0, vec![idle])] {
            mirror.host_seen("default", h, now, 2, "Linux", Some(vms));
            mirror
                .push(now, [(hk(h, Metric::CpuNum), Some(cores)), (hk(h, Metric::MemTotal), Some(4096.0 * 1048576.0))]);
        }
        for (u, util) in [(busy, 100.0), (idle, 25.0)] {
            for i in 0..3 {
                mirror.push(
                    now - 4 + 2 * i,
                    [
                        (vk(u, Metric::VcpuNum), Some(1.0)),
                        (vk(u, Metric::VmemTotal), Some(256.0 * 1048576.0)),
                        (vk(u, Metric::VcpuUtil), Some(util)),
                    ],
                );
            }
        }
        mirror.name_vms([(&busy, "busy"), (&idle, "idle")]);
        let agents = [agent("n1"), agent("n2")];
        let hosts = ["n1", "n2"]
            .iter()
            .zip(&agents)
            .map(|(n, a)| LiveHost {
                name: (*n).into(),
                control: a.local_addr,
                libvirt: format!("qemu+tcp://{n}/system"),
                migrate_uri: None,
                wake_cmd: None,
                cores: None,
            })
            .collect();
        let cfg = config(hosts);
        let mut w = LiveWorld::new(cfg, mirror).unwrap();
        w.observe(&[]);
        assert_eq!(w.metrics(&[]).slatah, 0.0, "nothing accounted yet");
        w.account(10.0);
        let a = w.host_accounts();
        assert_eq!((a[0].active_s, a[0].violation_s), (10.0, 10.0), "n1 at 100 % CPU for 10 s");
        assert_eq!((a[1].active_s, a[1].violation_s), (10.0, 0.0));
        assert!((a[0].requested_mips_s - 10_000.0).abs() < 1e-6 && (a[1].requested_mips_s - 2_500.0).abs() < 1e-6);
        assert!(a[0].energy_kwh > a[1].energy_kwh && a[1].energy_kwh > 0.0, "{a:?}");
        let m = w.metrics(&[]);
        assert!((m.slatah - 0.5).abs() < 1e-9 && m.pdm == 0.0, "{m:?}");

        // The idle VM migrates n2 → n1 for 20 s: it loses 10 % of its demand, charged to n2.
        let idle_id =
            w.snap.vms.id[w.snap.vms.id.iter().position(|&id| w.vm_facts[id as usize].name == "idle").unwrap()];
        w.running.insert(
            7,
            Running {
                vm: idle_id,
                from: 1,
                to: 0,
                job: "j".into(),
                mode: "hybrid".into(),
                started: Instant::now(),
                last: None,
                poll_failures: 0,
                volume_moves: Vec::new(),
            },
        );
        w.account(20.0);
        let a = w.host_accounts();
        assert!((a[1].migration_loss_mips_s - 0.1 * 250.0 * 20.0).abs() < 1e-6, "{a:?}");
        assert_eq!(a[1].migrations_out, 1);
        let m = w.metrics(&[]);
        let requested = 3.0 * (10_000.0 + 2_500.0);
        assert!((m.pdm - 500.0 / requested).abs() < 1e-9, "{m:?}");
        for a in agents {
            a.stop();
        }
    }

    #[test]
    fn snapshot_from_the_mirror_and_actions_through_the_agents() {
        let now = unix_now();
        let mirror = Arc::new(Mirror::new(20));
        let vm = [1u8; 16];
        for (h, vms) in [("n1", vec![vm]), ("n2", vec![])] {
            mirror.host_seen("default", h, now, 2, "Linux", Some(vms));
            mirror.push(now, [(hk(h, Metric::CpuNum), Some(2.0)), (hk(h, Metric::MemTotal), Some(4096.0 * 1048576.0))]);
        }
        mirror.host_seen("default", "n3", now - 60, 2, "Linux", Some(vec![]));
        for i in 0..3 {
            mirror.push(
                now - 4 + 2 * i,
                [
                    (vk(vm, Metric::VcpuNum), Some(1.0)),
                    (vk(vm, Metric::VmemTotal), Some(256.0 * 1048576.0)),
                    (vk(vm, Metric::VcpuUtil), Some(50.0)),
                ],
            );
        }
        mirror.name_vms([(&vm, "vm1")]);
        let agents = [agent("n1"), agent("n2"), agent("n3")];
        let hosts = ["n1", "n2", "n3"]
            .iter()
            .zip(&agents)
            .map(|(n, a)| LiveHost {
                name: (*n).into(),
                control: a.local_addr,
                libvirt: format!("qemu+tcp://{n}/system"),
                migrate_uri: None,
                wake_cmd: Some("test \"$AMVM_WAKE_HOST\" = n2".into()),
                cores: None,
            })
            .collect();
        let cfg = config(hosts);
        let mut w = LiveWorld::new(cfg, mirror).unwrap();
        let s = w.observe(&[]).clone();
        assert_eq!(s.hosts.state, vec![HostState::Active, HostState::Active, HostState::Down]);
        // n3 never reported its size: one core until it does.
        assert_eq!(s.hosts.cpu_capacity, vec![2000.0, 2000.0, 1000.0]);
        assert_eq!(s.vms.len(), 1);
        assert_eq!(s.vms.host, vec![0]);
        assert_eq!(s.vms.ram_mb, vec![256.0]);
        assert!(s.vms.cpu_history[0].is_nan());
        assert!((s.vm_demand_mips(0) - 500.0).abs() < 1e-3);
        assert_eq!(w.vms()[0].name, "vm1");
        // A down host is never a destination.
        let r = w.execute(&[ActionReq::Migrate { id: 1, vm: 0, from: 0, to: 2, mode: None }]);
        assert!(r[0].as_ref().unwrap_err().contains("down"), "{r:?}");
        // An action id runs once.
        assert!(w.execute(&[ActionReq::Migrate { id: 1, vm: 0, from: 0, to: 1, mode: None }])[0].is_err());
        // Sleep happens once the host is empty (n2 is): through its agent.
        assert_eq!(w.execute(&[ActionReq::Sleep { id: 2, host: 1 }]), vec![Ok(())]);
        assert!(w.advance().is_empty());
        assert_eq!(w.observe(&[]).hosts.state[1], HostState::Asleep);
        assert_eq!(w.hosts(&[])[1].state, "asleep");
        // A sleeping destination is woken (its wake command runs here) before the move is sent;
        // the source agent has no libvirt here, so the move itself is refused with its reason.
        let r = w.execute(&[ActionReq::Migrate { id: 3, vm: 0, from: 0, to: 1, mode: None }]);
        assert!(r[0].as_ref().unwrap_err().contains("no libvirt"), "{r:?}");
        assert_eq!(w.observe(&[]).hosts.state[1], HostState::Active);
        // Cluster series come from the cycles recorded.
        let q = SeriesQuery {
            target: "cluster".into(),
            id: None,
            metric: "active_hosts".into(),
            from: None,
            to: None,
            cf: None,
            points: Some(10),
        };
        let d = w.series().series(&q).unwrap();
        assert!(d.v.iter().flatten().any(|&v| v >= 1.0), "{d:?}");
        // VM ids survive a restart through the ids file.
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("ids.json");
        let asleep = dir.path().join("asleep.json");
        let cfg2 = LiveWorldConfig { ids_file: Some(ids.clone()), asleep_file: Some(asleep), ..w.cfg.clone() };
        let mut w2 = LiveWorld::new(cfg2.clone(), w.mirror.clone()).unwrap();
        w2.vm_id([9; 16]);
        w2.vm_id(vm);
        w2.asleep.insert(2);
        w2.save_asleep();
        let w3 = LiveWorld::new(cfg2, w.mirror.clone()).unwrap();
        assert_eq!(w3.asleep, HashSet::from([2]), "a host put to sleep is still asleep after a restart");
        assert_eq!(w3.vm_ids.get(&vm), Some(&1));
        assert_eq!(w3.vm_ids.get(&[9; 16]), Some(&0));
        for a in agents {
            a.stop();
        }
    }
}
