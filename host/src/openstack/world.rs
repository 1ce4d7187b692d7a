//! The OpenStack world: a Nova cloud observed and acted on through Nova's API.
//!
//! - **observe**: hypervisors are hosts (capacity = their vCPUs × `core_mips`, their memory), in
//!   the order they were first seen (ids kept in `ids_file` across restarts); servers are VMs
//!   (flavor → vCPUs and RAM) on their compute host. A VM's CPU utilization is the growth of its
//!   vCPU time between two cycles (Nova's server diagnostics) over the time between them and its
//!   vCPUs. Where an AMVM agent runs on the compute node (`agents`: it reports to the
//!   controller's collector under the hypervisor's host name) and reports the server's domain
//!   (libvirt's domain UUID is Nova's server UUID), the agent's latest vCPU utilization is used
//!   instead, and no diagnostics call is made for that server. A hypervisor Nova reports `down` is `Down`; one whose compute service AMVM disabled
//!   to sleep it is `Asleep`; one disabled by anyone else is `Down` (never a destination, never
//!   acted on: the operator took it out of scheduling).
//! - **execute**: a migration is `os-migrateLive` to the chosen host with `block_migration:
//!   auto`. Nova's scheduler still checks the destination, so a move that breaks a server group
//!   or overfills a host fails with Nova's reason, which is recorded and not retried. The mode
//!   is Nova's (`[libvirt] live_migration_permit_post_copy`); the plan's choice is shown, not
//!   applied. A sleep disables the host's compute service (`amvm: asleep`) once its last VM has
//!   left, then runs `sleep_cmd`; a wake runs `wake_cmd` and enables the service.
//! - **advance**: polls each migration's record: `completed` ends it, `error`/`failed`/
//!   `cancelled` fails it with the instance action's reason, and one that runs past
//!   `migration_timeout` is aborted (`DELETE /servers/{id}/migrations/{mid}`) and failed.
//! - **rules**: server groups become VM groups (`affinity`/`anti-affinity`: must,
//!   `soft-*`: should), aggregates and availability zones become host groups
//!   (`aggregate:NAME`, `az:NAME`) that a strategy's VM-host rules can name.
//! - The **last enabled compute host** is never put to sleep (Nova must be able to place new
//!   servers): `rules()` names it a never-sleep host, and a sleep of it is refused.
//! - In **maintenance** (the controller's list) a host's compute service is disabled
//!   (`amvm: maintenance`), so Nova places nothing there either; it is enabled again when the
//!   host leaves maintenance.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::nova::{MigrationProgress, Nova, NovaError, Server};
use crate::controller::live_world::{accounts_with_outgoing, cluster_metrics, power_w, POWER_CURVE};
use crate::controller::sim_world::downsample;
use crate::controller::store::ActionRow;
use crate::controller::world::{
    ActionReq, ClusterMetrics, HostAccount, HostView, Outcome, Progress, Reconciled, SeriesData, SeriesQuery,
    SeriesSource, VmView, World, WorldInfo,
};
use crate::monitor::proto::parse_uuid;
use crate::monitor::Mirror;
use crate::scheduler::rules::{HostGroup, Strength, VmGroup, VmRelation};
use crate::scheduler::{HostState, Mode, OperatorRules, Snapshot};

/// The disabled reason of a compute service AMVM put to sleep.
pub const ASLEEP_REASON: &str = "amvm: asleep";
/// The disabled reason of a compute service AMVM put in maintenance.
pub const MAINTENANCE_REASON: &str = "amvm: maintenance";
/// Cycles a pending sleep waits for its host to empty before it is dropped.
const MAX_SLEEP_WAIT: u32 = 40;
/// Cycles of history kept (a day at 5 s cycles).
const HISTORY_CYCLES: usize = 17_280;

/// How the OpenStack world is set up.
#[derive(Debug)]
pub struct OpenStackWorldConfig {
    pub nova: Nova,
    /// Real time between decision cycles.
    pub pace: Duration,
    /// Samples per history row handed to the policies.
    pub window: usize,
    /// MIPS of one vCPU (host capacity = vCPUs × this).
    pub core_mips: f64,
    /// A live migration still running after this long is aborted.
    pub migration_timeout: Duration,
    /// Run after a host's compute service was disabled to sleep it (`AMVM_SLEEP_HOST` names it):
    /// the power hook (`ipmitool … power soft`, `rtcwake`); `None`: the service is only disabled.
    pub sleep_cmd: Option<String>,
    /// Run before a sleeping host's service is enabled (`AMVM_WAKE_HOST`); `None`: enable only.
    pub wake_cmd: Option<String>,
    /// Only these compute hosts (by service host name); empty = every hypervisor (the audit scope).
    pub scope: Vec<String>,
    /// Where host and VM ids are kept, so the journal's ids mean the same after a restart.
    pub ids_file: Option<PathBuf>,
    /// AMVM agents on the compute nodes, through the controller's collector; `None`: Nova's
    /// server diagnostics only.
    pub agents: Option<AgentFeed>,
}

/// The agents' reports, as the controller's collector mirrors them.
#[derive(Debug, Clone)]
pub struct AgentFeed {
    pub mirror: Arc<Mirror>,
    /// The cluster name the agents report (`amvm agent --cluster`).
    pub cluster: String,
}

/// Where a VM's CPU utilization came from in the last cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CpuSource {
    Agent,
    Diagnostics,
}

impl CpuSource {
    fn as_str(self) -> &'static str {
        match self {
            CpuSource::Agent => "agent",
            CpuSource::Diagnostics => "nova-diagnostics",
        }
    }
}

/// Whether an agent's host name names this hypervisor: its compute service's host or its
/// hypervisor host name, compared without case and, where one side is a bare name, by the first
/// DNS label (`cmp1` matches `cmp1.example.org`).
fn agent_names_hypervisor(agent: &str, service_host: &str, hypervisor_hostname: &str) -> bool {
    let label = |s: &str| s.split('.').next().unwrap_or("").to_ascii_lowercase();
    let a = agent.to_ascii_lowercase();
    [service_host, hypervisor_hostname].iter().any(|n| {
        let n = n.to_ascii_lowercase();
        !n.is_empty() && (n == a || (!a.contains('.') && label(&n) == a) || (!n.contains('.') && label(&a) == n))
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ids {
    hosts: Vec<String>,
    vms: Vec<String>,
}

#[derive(Debug, Clone)]
struct HostFacts {
    /// The compute service's host name (what `os-migrateLive` names).
    name: String,
    service_id: String,
    vcpus: u32,
    memory_mb: f64,
    state: HostState,
    /// Disabled by AMVM for maintenance.
    in_maintenance: bool,
    /// The domains an AMVM agent on this node reported last (while it is up), and the time of
    /// its last host sample (the agent's clock): a VM sample older than that is not this
    /// report's (the domain is paused, or its statistics failed).
    agent_vms: Option<(HashSet<[u8; 16]>, u64)>,
}

#[derive(Debug, Clone)]
struct VmFacts {
    uuid: String,
    name: String,
    vcpus: u32,
    ram_mb: f64,
    volumes: usize,
    /// Host index, while Nova lists the server on a known host.
    host: Option<usize>,
    /// vCPU time (ns) and when it was read.
    cpu_time: Option<(f64, Instant)>,
    history: VecDeque<f32>,
    source: Option<CpuSource>,
}

#[derive(Debug, Clone)]
struct Running {
    vm: u32,
    from: u32,
    to: u32,
    started: Instant,
    request_id: Option<String>,
    /// Migration records of the server that existed before this one (ids).
    before: i64,
    progress: Option<MigrationProgress>,
    mode: String,
}

/// The OpenStack world.
pub struct OpenStackWorld {
    cfg: OpenStackWorldConfig,
    snap: Snapshot,
    step: i64,
    ids: Ids,
    hosts: Vec<HostFacts>,
    vms: Vec<Option<VmFacts>>,
    /// Per snapshot VM row: the host it runs on now (the snapshot has a migrating VM on its
    /// destination).
    runs_on: Vec<u32>,
    running: HashMap<i64, Running>,
    adopted: std::sync::Mutex<Vec<(i64, Running)>>,
    pending_sleep: HashMap<u32, u32>,
    executed: HashSet<i64>,
    rules: OperatorRules,
    accounts: Vec<HostAccount>,
    migrations_total: u64,
    shutdowns_total: u64,
    energy_kwh: f64,
    series: Arc<OsSeries>,
    /// The last inventory error (shown in the description until an inventory succeeds).
    last_error: Option<String>,
}

impl std::fmt::Debug for OpenStackWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackWorld").field("cloud", &self.cfg.nova.cloud().name).finish_non_exhaustive()
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl OpenStackWorld {
    /// Connects (Keystone, microversion) and takes a first inventory: a cloud that cannot be
    /// reached or refuses the credentials is an error here, not a silent empty world.
    pub fn new(cfg: OpenStackWorldConfig) -> Result<OpenStackWorld, String> {
        if !(cfg.core_mips.is_finite() && cfg.core_mips > 0.0) {
            return Err("core_mips must be positive".into());
        }
        let mv = cfg.nova.connect().map_err(|e| e.to_string())?;
        tracing::info!("OpenStack cloud {:?}: compute API microversion {mv}", cfg.nova.cloud().name);
        let ids = match cfg.ids_file.as_ref().filter(|f| f.exists()) {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: not an AMVM ids file: {e}", f.display()))?
            }
            None => Ids::default(),
        };
        let mut w = OpenStackWorld {
            snap: Snapshot::default(),
            step: 0,
            vms: vec![None; ids.vms.len()],
            hosts: Vec::new(),
            ids,
            runs_on: Vec::new(),
            running: HashMap::new(),
            adopted: std::sync::Mutex::new(Vec::new()),
            pending_sleep: HashMap::new(),
            executed: HashSet::new(),
            rules: OperatorRules::default(),
            accounts: Vec::new(),
            migrations_total: 0,
            shutdowns_total: 0,
            energy_kwh: 0.0,
            series: Arc::new(OsSeries { hosts: RwLock::new(Vec::new()), history: RwLock::new(VecDeque::new()) }),
            last_error: None,
            cfg,
        };
        w.inventory(&[])?;
        if w.hosts.is_empty() {
            return Err(format!(
                "cloud {:?} has no hypervisor{}",
                w.cfg.nova.cloud().name,
                if w.cfg.scope.is_empty() { String::new() } else { format!(" in scope {:?}", w.cfg.scope) }
            ));
        }
        Ok(w)
    }

    fn save_ids(&self) {
        let Some(f) = &self.cfg.ids_file else { return };
        let tmp = f.with_extension("tmp");
        let saved = serde_json::to_vec(&self.ids)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, f));
        if let Err(e) = saved {
            tracing::warn!("cannot save host and VM ids to {}: {e}", f.display());
        }
    }

    fn host_id(&mut self, name: &str) -> u32 {
        if let Some(i) = self.ids.hosts.iter().position(|h| h == name) {
            return i as u32;
        }
        self.ids.hosts.push(name.into());
        self.save_ids();
        (self.ids.hosts.len() - 1) as u32
    }

    fn vm_id(&mut self, uuid: &str) -> u32 {
        if let Some(i) = self.ids.vms.iter().position(|v| v == uuid) {
            return i as u32;
        }
        self.ids.vms.push(uuid.into());
        self.vms.push(None);
        self.save_ids();
        (self.ids.vms.len() - 1) as u32
    }

    /// Reads hypervisors, services, servers, diagnostics, server groups and aggregates; applies
    /// maintenance to the compute services.
    fn inventory(&mut self, maintenance: &[u32]) -> Result<(), String> {
        let hvs = self.cfg.nova.hypervisors().map_err(|e| format!("listing hypervisors: {e}"))?;
        let servers = self.cfg.nova.servers().map_err(|e| format!("listing servers: {e}"))?;
        let mut hvs: Vec<_> =
            hvs.into_iter().filter(|h| self.cfg.scope.is_empty() || self.cfg.scope.contains(&h.service.host)).collect();
        hvs.sort_by(|a, b| a.service.host.cmp(&b.service.host));
        let agents: Vec<_> = match &self.cfg.agents {
            Some(a) => {
                a.mirror.hosts(unix_now() as u64).into_iter().filter(|h| h.cluster == a.cluster && h.up).collect()
            }
            None => Vec::new(),
        };
        let mut facts: Vec<Option<HostFacts>> = vec![None; self.ids.hosts.len().max(self.hosts.len())];
        for h in &hvs {
            let id = self.host_id(&h.service.host) as usize;
            if facts.len() <= id {
                facts.resize(id + 1, None);
            }
            let reason = h.service.disabled_reason.as_deref().unwrap_or("");
            let mut in_maintenance = h.status == "disabled" && reason.starts_with(MAINTENANCE_REASON);
            let wants_maintenance = maintenance.contains(&(id as u32));
            // Maintenance: the compute service is disabled while AMVM keeps the host in it.
            if wants_maintenance && h.status == "enabled" {
                match self.cfg.nova.set_service(&h.service.id, false, MAINTENANCE_REASON) {
                    Ok(()) => in_maintenance = true,
                    Err(e) => {
                        tracing::warn!("cannot disable {}'s compute service for maintenance: {e}", h.service.host)
                    }
                }
            } else if !wants_maintenance && in_maintenance {
                match self.cfg.nova.set_service(&h.service.id, true, "") {
                    Ok(()) => in_maintenance = false,
                    Err(e) => {
                        tracing::warn!("cannot enable {}'s compute service after maintenance: {e}", h.service.host)
                    }
                }
            }
            let state = if h.state != "up" {
                HostState::Down
            } else if h.status == "disabled" && reason.starts_with(ASLEEP_REASON) {
                HostState::Asleep
            } else if h.status == "disabled" && !in_maintenance && !wants_maintenance {
                HostState::Down
            } else {
                HostState::Active
            };
            facts[id] = Some(HostFacts {
                name: h.service.host.clone(),
                service_id: h.service.id.clone(),
                vcpus: h.vcpus.max(1),
                memory_mb: h.memory_mb,
                state,
                in_maintenance,
                agent_vms: agents
                    .iter()
                    .find(|a| agent_names_hypervisor(&a.host, &h.service.host, &h.hypervisor_hostname))
                    .and_then(|a| {
                        let feed = self.cfg.agents.as_ref()?;
                        let at = feed.mirror.host_utilization(&feed.cluster, &a.host).cpu.last().map_or(0, |p| p.0);
                        Some((a.vms.iter().copied().collect(), at))
                    }),
            });
        }
        // A host that disappeared from Nova (deleted service) stays in the id list, down.
        self.hosts = facts
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                f.unwrap_or_else(|| HostFacts {
                    name: self.ids.hosts[i].clone(),
                    service_id: String::new(),
                    vcpus: 1,
                    memory_mb: 0.0,
                    state: HostState::Down,
                    in_maintenance: false,
                    agent_vms: None,
                })
            })
            .collect();
        let mut listed = HashSet::new();
        let now = Instant::now();
        for s in servers {
            let id = self.vm_id(&s.id) as usize;
            listed.insert(id);
            let host = s.host.as_deref().and_then(|h| self.hosts.iter().position(|x| x.name == h));
            let running = is_running(&s);
            let f = self.vms[id].get_or_insert_with(|| VmFacts {
                uuid: s.id.clone(),
                name: s.name.clone(),
                vcpus: s.vcpus,
                ram_mb: s.ram_mb,
                volumes: 0,
                host,
                cpu_time: None,
                history: VecDeque::new(),
                source: None,
            });
            f.name = s.name.clone();
            f.vcpus = s.vcpus;
            f.ram_mb = s.ram_mb;
            f.volumes = s.volumes.len();
            f.host = if running { host } else { None };
            let active_host = host.is_some_and(|h| self.hosts[h].state == HostState::Active);
            if !running || !active_host {
                f.cpu_time = None;
                f.source = None;
                continue;
            }
            // Utilization: the agent's latest sample where an agent on the node reports the
            // domain, else vCPU time grown since the last cycle, over wall time and vCPUs.
            let from_agent = match (&self.cfg.agents, host.and_then(|h| self.hosts[h].agent_vms.as_ref())) {
                (Some(a), Some((reported, at))) => parse_uuid(&s.id)
                    .filter(|u| reported.contains(u))
                    .and_then(|u| a.mirror.vm_utilization(&a.cluster, u).cpu.last().copied())
                    .filter(|&(t, _)| t >= *at)
                    .map(|p| p.1),
                _ => None,
            };
            if let Some(u) = from_agent {
                f.history.push_back(u.clamp(0.0, 1.0) as f32);
                f.cpu_time = None;
                f.source = Some(CpuSource::Agent);
            } else {
                f.source = None;
                match self.cfg.nova.cpu_time_ns(&s.id) {
                    Ok(Some(t)) => {
                        if let Some((t0, at)) = f.cpu_time {
                            let dt = now.duration_since(at).as_secs_f64() * 1e9 * f64::from(f.vcpus);
                            if dt > 0.0 && t >= t0 {
                                f.history.push_back(((t - t0) / dt).clamp(0.0, 1.0) as f32);
                                f.source = Some(CpuSource::Diagnostics);
                            }
                        }
                        f.cpu_time = Some((t, now));
                    }
                    Ok(None) => f.cpu_time = None,
                    Err(e) => {
                        tracing::debug!("diagnostics of {}: {e}", s.id);
                        f.cpu_time = None;
                    }
                }
            }
            while f.history.len() > self.cfg.window.max(1) {
                f.history.pop_front();
            }
        }
        for (i, v) in self.vms.iter_mut().enumerate() {
            if !listed.contains(&i) {
                *v = None;
            }
        }
        self.rules = self.nova_rules();
        self.last_error = None;
        Ok(())
    }

    /// Server groups and aggregates as operator rules (see the module's documentation).
    fn nova_rules(&self) -> OperatorRules {
        let mut r = OperatorRules::default();
        match self.cfg.nova.server_groups() {
            Ok(groups) => {
                for g in groups {
                    let vms: Vec<u32> = g
                        .members
                        .iter()
                        .filter_map(|m| self.ids.vms.iter().position(|v| v == m))
                        .filter(|&i| self.vms[i].as_ref().is_some_and(|v| v.host.is_some()))
                        .map(|i| i as u32)
                        .collect();
                    let (relation, strength) = match g.policy.as_str() {
                        "affinity" => (VmRelation::Affinity, Strength::Must),
                        "anti-affinity" => (VmRelation::AntiAffinity, Strength::Must),
                        "soft-affinity" => (VmRelation::Affinity, Strength::Should),
                        "soft-anti-affinity" => (VmRelation::AntiAffinity, Strength::Should),
                        other => {
                            tracing::warn!("server group {:?}: unknown policy {other:?}, ignored", g.name);
                            continue;
                        }
                    };
                    if vms.len() >= 2 {
                        let name = format!("nova:{}", if g.name.is_empty() { &g.id } else { &g.name });
                        r.vm_groups.push(VmGroup { name, vms, relation, strength });
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read Nova's server groups: {e}"),
        }
        match self.cfg.nova.aggregates() {
            Ok(aggs) => {
                let mut zones: HashMap<String, Vec<u32>> = HashMap::new();
                for a in aggs {
                    let hosts: Vec<u32> = a
                        .hosts
                        .iter()
                        .filter_map(|h| self.hosts.iter().position(|x| &x.name == h))
                        .map(|i| i as u32)
                        .collect();
                    if let Some(z) = &a.availability_zone {
                        zones.entry(format!("az:{z}")).or_default().extend(&hosts);
                    }
                    r.host_groups.push(HostGroup { name: format!("aggregate:{}", a.name), hosts });
                }
                let mut zones: Vec<_> = zones.into_iter().collect();
                zones.sort();
                for (name, mut hosts) in zones {
                    hosts.sort_unstable();
                    hosts.dedup();
                    r.host_groups.push(HostGroup { name, hosts });
                }
            }
            Err(e) => tracing::warn!("cannot read Nova's aggregates: {e}"),
        }
        r
    }

    fn build_snapshot(&mut self) {
        let window = self.cfg.window.max(1);
        let mut snap = Snapshot {
            cycle: self.step as u64,
            time_s: self.step as f64 * self.cfg.pace.as_secs_f64(),
            unix_time_s: Some(unix_now()),
            interval_s: self.cfg.pace.as_secs_f32(),
            window,
            power_curves: vec![POWER_CURVE],
            ..Default::default()
        };
        for (i, h) in self.hosts.iter().enumerate() {
            snap.hosts.push(i as u32, h.state, (f64::from(h.vcpus) * self.cfg.core_mips) as f32, h.memory_mb as f32, 0);
            snap.hosts.core_mips.push(self.cfg.core_mips as f32);
        }
        self.runs_on.clear();
        for (id, v) in self.vms.iter().enumerate() {
            let Some(v) = v else { continue };
            let Some(h) = v.host else { continue };
            if self.hosts[h].state != HostState::Active {
                continue;
            }
            let running = self.running.values().find(|r| r.vm as usize == id);
            snap.vms.id.push(id as u32);
            snap.vms.host.push(running.map_or(h as u32, |r| r.to));
            self.runs_on.push(h as u32);
            snap.vms.mips.push((f64::from(v.vcpus) * self.cfg.core_mips) as f32);
            snap.vms.ram_mb.push(v.ram_mb as f32);
            snap.vms.migrating.push(running.is_some());
            snap.vms.dirty_mbps.push(f32::NAN);
            snap.vms.cpu_history.extend(std::iter::repeat_n(f32::NAN, window - v.history.len().min(window)));
            snap.vms.cpu_history.extend(v.history.iter().rev().take(window).rev());
        }
        for r in self.running.values() {
            for h in [r.from, r.to] {
                if let Some(x) = snap.hosts.migrations_in_flight.get_mut(h as usize) {
                    *x += 1;
                }
            }
        }
        self.snap = snap;
    }

    fn name_of(&self, host: u32) -> &str {
        self.hosts.get(host as usize).map_or("?", |h| h.name.as_str())
    }

    fn wake(&mut self, host: u32) -> Result<(), String> {
        let h = self.hosts.get(host as usize).ok_or_else(|| format!("no host {host}"))?.clone();
        if let Some(cmd) = &self.cfg.wake_cmd {
            crate::monitor::agent::control::run_shell(cmd, &[("AMVM_WAKE_HOST", &h.name)])?;
        }
        self.cfg
            .nova
            .set_service(&h.service_id, true, "")
            .map_err(|e| format!("enabling {}'s compute service: {e}", h.name))?;
        self.hosts[host as usize].state = HostState::Active;
        Ok(())
    }

    /// Carries out pending sleeps whose host has emptied.
    fn sleep_emptied(&mut self) {
        let mut done = Vec::new();
        for (&host, waited) in self.pending_sleep.iter_mut() {
            *waited += 1;
            // The inventory was just read: `vms` is where Nova has the servers now.
            let busy = self.running.values().any(|r| r.to == host || r.from == host)
                || self.vms.iter().flatten().any(|v| v.host == Some(host as usize));
            if busy {
                if *waited > MAX_SLEEP_WAIT {
                    tracing::warn!("sleep of {} dropped: it still runs VMs", self.hosts[host as usize].name);
                    done.push(host);
                }
                continue;
            }
            done.push(host);
        }
        for host in done {
            self.pending_sleep.remove(&host);
            let busy = self.vms.iter().flatten().any(|v| v.host == Some(host as usize));
            let h = self.hosts[host as usize].clone();
            if busy || h.state != HostState::Active {
                continue;
            }
            if let Err(e) = self.cfg.nova.set_service(&h.service_id, false, ASLEEP_REASON) {
                tracing::warn!("cannot disable {}'s compute service to sleep it: {e}", h.name);
                continue;
            }
            if let Some(cmd) = &self.cfg.sleep_cmd {
                if let Err(e) = crate::monitor::agent::control::run_shell(cmd, &[("AMVM_SLEEP_HOST", &h.name)]) {
                    tracing::warn!("sleep command for {}: {e} (its compute service stays disabled)", h.name);
                }
            }
            self.hosts[host as usize].state = HostState::Asleep;
            self.shutdowns_total += 1;
            tracing::info!("{}: compute service disabled ({ASLEEP_REASON})", h.name);
        }
    }

    fn start_migration(&mut self, id: i64, vm: u32, from: u32, to: u32, mode: Option<Mode>) -> Result<(), String> {
        let v = self
            .vms
            .get(vm as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("VM {vm} is not in the cloud any more"))?
            .clone();
        if v.host != Some(from as usize) {
            return Err(format!("{} is not on {} any more", v.name, self.name_of(from)));
        }
        if self.running.values().any(|r| r.vm == vm) {
            return Err(format!("{} is migrating already", v.name));
        }
        match self.hosts.get(to as usize).map(|h| h.state) {
            Some(HostState::Active) => {}
            Some(HostState::Asleep) => self.wake(to)?,
            _ => return Err(format!("destination {} is down", self.name_of(to))),
        }
        let before = self.cfg.nova.migrations(&v.uuid).map_err(|e| e.to_string())?.first().map_or(0, |m| m.id);
        let dest = self.hosts[to as usize].name.clone();
        let request_id = self.cfg.nova.live_migrate(&v.uuid, &dest).map_err(|e| match e {
            NovaError::Refused { message, .. } => {
                format!("Nova refused the live migration of {} to {dest}: {message}", v.name)
            }
            other => format!("live migration of {} to {dest}: {other}", v.name),
        })?;
        let mode = mode.map_or("nova", |m| match m {
            Mode::Pre => "pre",
            Mode::Post => "post",
            Mode::Hybrid => "hybrid",
        });
        tracing::info!("{}: live migration {} → {dest} asked of Nova ({mode} planned)", v.name, self.name_of(from));
        self.running.insert(
            id,
            Running { vm, from, to, started: Instant::now(), request_id, before, progress: None, mode: mode.into() },
        );
        Ok(())
    }

    /// Why a migration failed, as Nova says it.
    fn failure_reason(&self, uuid: &str, r: &Running, status: &str) -> String {
        let why = r
            .request_id
            .as_deref()
            .and_then(|rid| self.cfg.nova.action_failure(uuid, rid).ok().flatten())
            .or_else(|| self.cfg.nova.server_fault(uuid).ok().flatten());
        match why {
            Some(w) => format!("Nova: migration {status}: {w}"),
            None => format!("Nova: migration {status}"),
        }
    }

    /// Where one migration stands: `None` while it runs.
    fn poll(&mut self, id: i64) -> Option<Outcome> {
        let r = self.running.get(&id)?.clone();
        let uuid = self.ids.vms.get(r.vm as usize)?.clone();
        let nova = &self.cfg.nova;
        if let Ok(p) = nova.migrations_in_progress(&uuid) {
            if let Some(x) = self.running.get_mut(&id) {
                x.progress = p.into_iter().find(|m| m.id > r.before).or(x.progress.take());
            }
        }
        let record = match nova.migrations(&uuid) {
            Ok(m) => m.into_iter().find(|m| m.id > r.before),
            Err(e) => {
                tracing::warn!("migration records of {uuid}: {e}");
                None
            }
        };
        let elapsed = r.started.elapsed();
        match record.as_ref().map(|m| m.status.as_str()) {
            Some("completed") => Some(Outcome::Succeeded {
                total_s: Some(elapsed.as_secs_f64()),
                bytes: self.running[&id].progress.as_ref().and_then(|p| {
                    Some(p.memory_processed_bytes.unwrap_or(0.0) + p.disk_processed_bytes.unwrap_or(0.0))
                        .filter(|&b| b > 0.0)
                }),
                downtime_ms: None,
                page_faults: None,
            }),
            Some(s @ ("error" | "failed" | "cancelled")) => Some(Outcome::Failed(self.failure_reason(&uuid, &r, s))),
            _ if elapsed > self.cfg.migration_timeout => {
                let abort = record.as_ref().map(|m| nova.abort_migration(&uuid, m.id));
                let what = match abort {
                    Some(Ok(())) => "aborted".to_string(),
                    Some(Err(e)) => format!("the abort failed: {e}"),
                    None => "Nova never started it".to_string(),
                };
                Some(Outcome::Failed(format!(
                    "timed out after {:.0} s ({what}); the next inventory shows where the server runs",
                    elapsed.as_secs_f64()
                )))
            }
            // No record a while after the request: the conductor refused it before creating one.
            None if elapsed > Duration::from_secs(60) => {
                Some(Outcome::Failed(self.failure_reason(&uuid, &r, "refused")))
            }
            _ => None,
        }
    }

    fn account(&mut self, dt: f64) {
        if self.accounts.len() < self.hosts.len() {
            self.accounts.resize(self.hosts.len(), HostAccount::default());
        }
        if dt.is_nan() || dt <= 0.0 {
            return;
        }
        let views = self.hosts(&[]);
        for v in &views {
            let Some(a) = self.accounts.get_mut(v.id as usize) else { continue };
            if self.snap.hosts.state[v.id as usize] != HostState::Active {
                continue;
            }
            a.active_s += dt;
            a.energy_kwh += v.power_w * dt / 3.6e6;
            if v.cpu_capacity_mips > 0.0 && v.cpu_util >= 1.0 {
                a.violation_s += dt;
            }
        }
        for v in 0..self.snap.vms.len() {
            let demand = f64::from(self.snap.vm_demand_mips(v));
            let vm = self.snap.vms.id[v];
            if let Some(a) = self.accounts.get_mut(self.runs_on[v] as usize) {
                a.requested_mips_s += demand * dt;
            }
            if let Some(from) = self.running.values().find(|r| r.vm == vm).map(|r| r.from as usize) {
                if let Some(a) = self.accounts.get_mut(from) {
                    a.migration_loss_mips_s += 0.1 * demand * dt;
                }
            }
        }
    }

    fn record(&mut self, maintenance: &[u32]) {
        let unix = unix_now();
        let since = self.series.history.read().unwrap_or_else(|p| p.into_inner()).back().map(|c| c.unix);
        self.account(since.map_or(0.0, |t| (unix - t).clamp(0.0, 3600.0)));
        let hosts = self.hosts(maintenance);
        let m = self.metrics(maintenance);
        *self.series.hosts.write().unwrap_or_else(|p| p.into_inner()) =
            self.hosts.iter().map(|h| h.name.clone()).collect();
        let mut h = self.series.history.write().unwrap_or_else(|p| p.into_inner());
        let energy =
            h.back().map_or(0.0, |last| last.energy_kwh + last.power_w * (unix - last.unix).clamp(0.0, 3600.0) / 3.6e6);
        self.energy_kwh = energy;
        if h.len() == HISTORY_CYCLES {
            h.pop_front();
        }
        let mut vm_cpu = vec![f32::NAN; self.vms.len()];
        for (row, &id) in self.snap.vms.id.iter().enumerate() {
            vm_cpu[id as usize] = self.snap.vms.cpu_history[(row + 1) * self.snap.window - 1];
        }
        h.push_back(Cycle {
            unix,
            power_w: m.power_w,
            active_hosts: m.hosts_up as f64,
            cpu_mean: m.cpu_util_mean,
            mem_mean: m.mem_util_mean,
            energy_kwh: energy,
            host_cpu: hosts.iter().map(|h| h.cpu_util as f32).collect(),
            host_mem: hosts.iter().map(|h| h.mem_util as f32).collect(),
            host_power: hosts.iter().map(|h| h.power_w as f32).collect(),
            vm_cpu,
        });
    }
}

/// A server that is running somewhere (live-migratable or migrating).
fn is_running(s: &Server) -> bool {
    matches!(s.status.as_str(), "ACTIVE" | "MIGRATING" | "PAUSED")
}

impl World for OpenStackWorld {
    fn info(&self) -> WorldInfo {
        let c = self.cfg.nova.cloud();
        WorldInfo {
            kind: "openstack".into(),
            name: c.name.clone(),
            description: format!(
                "OpenStack cloud {:?} ({}): {} hypervisors through Nova's API, live migrations by Nova, a decision \
                 every {:.1} s, CPU utilization {}{}",
                c.name,
                c.auth_url,
                self.hosts.len(),
                self.cfg.pace.as_secs_f64(),
                match &self.cfg.agents {
                    None => "from Nova's server diagnostics".to_string(),
                    Some(a) => format!(
                        "from the AMVM agents of cluster {:?} where they run, Nova's server diagnostics elsewhere",
                        a.cluster
                    ),
                },
                self.last_error.as_deref().map(|e| format!(" — last inventory failed: {e}")).unwrap_or_default()
            ),
            interval_s: self.cfg.pace.as_secs_f64(),
            hosts: self.hosts.len(),
            vms: self.snap.vms.len(),
        }
    }

    fn position(&self) -> (i64, i64) {
        (0, self.step)
    }

    fn clock(&self) -> f64 {
        unix_now()
    }

    fn pace(&self) -> Duration {
        self.cfg.pace
    }

    fn restore(&mut self, _epoch: i64, step: i64, _executed: &[ActionRow]) -> Result<(), String> {
        self.step = step;
        Ok(())
    }

    fn reconcile(&self, action: &ActionRow) -> Reconciled {
        let Some(ActionReq::Migrate { vm, from, to, .. }) = ActionReq::from_row(action) else {
            return Reconciled::Ended(Outcome::Succeeded {
                total_s: None,
                bytes: None,
                downtime_ms: None,
                page_faults: None,
            });
        };
        let Some(uuid) = self.ids.vms.get(vm as usize) else {
            return Reconciled::Ended(Outcome::Failed(format!("after a restart: VM {vm} is unknown")));
        };
        let dest = self.name_of(to).to_string();
        match self.cfg.nova.migrations(uuid) {
            Ok(m) => match m.into_iter().find(|m| m.dest_compute.as_deref() == Some(dest.as_str())) {
                Some(m) if m.status == "completed" => Reconciled::Ended(Outcome::Succeeded {
                    total_s: None,
                    bytes: None,
                    downtime_ms: None,
                    page_faults: None,
                }),
                Some(m) if matches!(m.status.as_str(), "error" | "failed" | "cancelled") => {
                    Reconciled::Ended(Outcome::Failed(format!("Nova: migration {}", m.status)))
                }
                Some(m) => {
                    let r = Running {
                        vm,
                        from,
                        to,
                        started: Instant::now(),
                        request_id: None,
                        before: m.id - 1,
                        progress: None,
                        mode: action.mode.clone().unwrap_or_else(|| "nova".into()),
                    };
                    self.adopted.lock().unwrap_or_else(|p| p.into_inner()).push((action.id, r));
                    Reconciled::Ongoing
                }
                None => Reconciled::Ended(Outcome::Failed(
                    "after a restart Nova has no live migration of this server to that host: it was never started"
                        .into(),
                )),
            },
            Err(e) => Reconciled::Ended(Outcome::Failed(format!("after a restart Nova cannot say: {e}"))),
        }
    }

    fn observe(&mut self, maintenance: &[u32]) -> &Snapshot {
        for (id, r) in self.adopted.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            self.running.insert(id, r);
        }
        self.step += 1;
        if let Err(e) = self.inventory(maintenance) {
            // Keep the last picture: acting on a half-read cloud is worse than waiting a cycle.
            tracing::warn!("OpenStack inventory failed: {e}");
            self.last_error = Some(e);
        }
        // Sleeps first: the snapshot the scheduler decides on must show a host put to sleep now
        // as asleep, not as an empty active host (it would be chosen as a destination, and the
        // migrations sent to a disabled compute service).
        self.sleep_emptied();
        self.build_snapshot();
        self.record(maintenance);
        &self.snap
    }

    fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    fn rules(&self) -> OperatorRules {
        let mut r = self.rules.clone();
        // The last enabled compute host is never put to sleep (see `execute`): tell the
        // scheduler, so that it does not evacuate that host to plan a sleep that is refused.
        let mut awake = (0..self.hosts.len() as u32)
            .filter(|&h| self.hosts[h as usize].state == HostState::Active && !self.pending_sleep.contains_key(&h));
        if let (Some(last), None) = (awake.next(), awake.next()) {
            r.never_sleep.push(last);
        }
        r
    }

    fn execute(&mut self, actions: &[ActionReq]) -> Vec<Result<(), String>> {
        let results: Vec<Result<(), String>> = actions
            .iter()
            .map(|a| {
                if !self.executed.insert(a.id()) {
                    return Err(format!("action {} was executed already", a.id()));
                }
                match *a {
                    ActionReq::Migrate { id, vm, from, to, mode } => self.start_migration(id, vm, from, to, mode),
                    ActionReq::Wake { host, .. } => match self.hosts.get(host as usize).map(|h| h.state) {
                        Some(HostState::Asleep) => self.wake(host),
                        Some(_) => Ok(()),
                        None => Err(format!("no host {host}")),
                    },
                    ActionReq::Sleep { host, .. } => match self.hosts.get(host as usize).map(|h| h.state) {
                        Some(HostState::Active) => {
                            // Nova places new servers only on enabled hosts: one stays awake.
                            let others = (0..self.hosts.len() as u32).any(|h| {
                                h != host
                                    && self.hosts[h as usize].state == HostState::Active
                                    && !self.pending_sleep.contains_key(&h)
                            });
                            if !others {
                                return Err(format!(
                                    "{} is the last enabled compute host: Nova could not place new servers",
                                    self.name_of(host)
                                ));
                            }
                            self.pending_sleep.insert(host, 0);
                            Ok(())
                        }
                        Some(HostState::Asleep) => Ok(()),
                        Some(_) => Err(format!("host {} is down", self.name_of(host))),
                        None => Err(format!("no host {host}")),
                    },
                }
            })
            .collect();
        for (a, r) in actions.iter().zip(&results) {
            match r {
                Ok(()) => tracing::info!("action {}: {a:?} started", a.id()),
                Err(e) => tracing::warn!("action {}: {a:?} refused: {e}", a.id()),
            }
        }
        results
    }

    fn end_step(&mut self) {}

    fn advance(&mut self) -> Vec<(i64, Outcome)> {
        let mut ended = Vec::new();
        let ids: Vec<i64> = self.running.keys().copied().collect();
        for id in ids {
            if let Some(o) = self.poll(id) {
                let r = self.running.remove(&id).expect("polled");
                if matches!(o, Outcome::Succeeded { .. }) {
                    self.migrations_total += 1;
                    if let Some(Some(v)) = self.vms.get_mut(r.vm as usize) {
                        v.host = Some(r.to as usize);
                    }
                }
                ended.push((id, o));
            }
        }
        ended
    }

    fn in_flight(&self, _fraction: f64) -> Vec<Progress> {
        let mut out: Vec<Progress> = self
            .running
            .iter()
            .map(|(&id, r)| {
                let p = r.progress.as_ref();
                let total = p.and_then(|p| p.memory_total_bytes).unwrap_or_else(|| {
                    self.vms.get(r.vm as usize).and_then(Option::as_ref).map_or(0.0, |v| v.ram_mb * 1_048_576.0)
                });
                let sent = p.and_then(|p| p.memory_processed_bytes).unwrap_or(0.0);
                let elapsed = r.started.elapsed().as_secs_f64();
                Progress {
                    action_id: id,
                    vm: r.vm,
                    from: r.from,
                    to: r.to,
                    phase: "full-round".into(),
                    bytes_total: total,
                    bytes_sent: sent,
                    bytes_remaining: p.and_then(|p| p.memory_remaining_bytes).unwrap_or(total - sent).max(0.0),
                    elapsed_s: elapsed,
                    expected_s: self.cfg.migration_timeout.as_secs_f64().min(elapsed.max(1.0) * 2.0),
                    mode: match r.mode.as_str() {
                        "pre" => "pre-copy",
                        "post" => "post-copy",
                        "hybrid" => "hybrid",
                        _ => "pre-copy",
                    }
                    .into(),
                    dirty_rate_bps: 0.0,
                    bandwidth_bps: if elapsed > 0.0 { sent / elapsed } else { 0.0 },
                    precopy_nonconvergent: false,
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
                let rows: Vec<usize> = (0..s.vms.len()).filter(|&v| self.runs_on[v] as usize == h).collect();
                let cap = f64::from(s.hosts.cpu_capacity[h]);
                let mem = f64::from(s.hosts.mem_capacity[h]);
                let demand: f64 = rows.iter().map(|&v| f64::from(s.vm_demand_mips(v))).sum::<f64>() + 0.0;
                let ram: f64 = rows.iter().map(|&v| f64::from(s.vms.ram_mb[v])).sum::<f64>() + 0.0;
                let util = if cap > 0.0 { (demand / cap).min(1.0) } else { 0.0 };
                let id = s.hosts.id[h];
                let state = if maintenance.contains(&id) || self.hosts.get(h).is_some_and(|f| f.in_maintenance) {
                    "maintenance"
                } else {
                    match s.hosts.state[h] {
                        HostState::Active => "up",
                        HostState::Asleep => "asleep",
                        HostState::Down => "down",
                    }
                };
                HostView {
                    id,
                    name: self.name_of(id).into(),
                    state: state.into(),
                    cores: self.hosts.get(h).map_or(0, |f| f.vcpus),
                    cpu_capacity_mips: cap,
                    mem_capacity_mb: mem,
                    cpu_util: util,
                    mem_util: if mem > 0.0 { (ram / mem).min(1.0) } else { 0.0 },
                    net_util: None,
                    power_w: if s.hosts.state[h] == HostState::Active { power_w(util) } else { 0.0 },
                    overloaded: demand > cap,
                    vms: rows.iter().map(|&v| s.vms.id[v]).collect(),
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
                    name: self.vms[id as usize]
                        .as_ref()
                        .map_or_else(|| self.ids.vms[id as usize].clone(), |f| f.name.clone()),
                    host: self.runs_on[v],
                    mips: f64::from(s.vms.mips[v]),
                    ram_mb: f64::from(s.vms.ram_mb[v]),
                    cpu_util: if last.is_finite() { f64::from(last) } else { 0.0 },
                    cpu_source: self.vms[id as usize].as_ref().and_then(|f| f.source).map(|c| c.as_str().to_string()),
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
        accounts_with_outgoing(&self.accounts, self.hosts.len(), self.running.values().map(|r| r.from))
    }
}

/// One decision cycle's figures.
#[derive(Debug, Clone)]
struct Cycle {
    unix: f64,
    power_w: f64,
    active_hosts: f64,
    cpu_mean: f64,
    mem_mean: f64,
    energy_kwh: f64,
    host_cpu: Vec<f32>,
    host_mem: Vec<f32>,
    host_power: Vec<f32>,
    /// By VM id (NaN: not running, or no sample yet).
    vm_cpu: Vec<f32>,
}

/// Reads one series' value from a recorded cycle.
type Pick = Box<dyn Fn(&Cycle) -> Option<f64>>;

/// Series of the OpenStack world: the cycles it recorded (Nova keeps no history).
struct OsSeries {
    hosts: RwLock<Vec<String>>,
    history: RwLock<VecDeque<Cycle>>,
}

impl SeriesSource for OsSeries {
    fn series(&self, q: &SeriesQuery) -> Result<SeriesData, String> {
        let id = q.id.map(|i| i as usize);
        let n_hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner()).len();
        let host = || id.filter(|&h| h < n_hosts).ok_or_else(|| format!("no host {:?}", q.id));
        let pick = |v: &[f32], i: usize| v.get(i).copied().filter(|x| x.is_finite()).map(f64::from);
        let (unit, f): (&str, Pick) = match (q.target.as_str(), q.metric.as_str()) {
            ("cluster", "power") => ("W", Box::new(|c| Some(c.power_w))),
            ("cluster", "active_hosts") => ("hosts", Box::new(|c| Some(c.active_hosts))),
            ("cluster", "cpu") => ("ratio", Box::new(|c| Some(c.cpu_mean))),
            ("cluster", "mem") => ("ratio", Box::new(|c| Some(c.mem_mean))),
            ("cluster", "energy") => ("kWh", Box::new(|c| Some(c.energy_kwh))),
            ("cluster", "net") => ("ratio", Box::new(|_| None)),
            ("cluster", other) => {
                return Err(format!("unknown cluster metric {other:?} (cpu, mem, net, power, active_hosts, energy)"))
            }
            ("host", m) => {
                let h = host()?;
                match m {
                    "cpu" => ("ratio", Box::new(move |c| pick(&c.host_cpu, h))),
                    "mem" => ("ratio", Box::new(move |c| pick(&c.host_mem, h))),
                    "power" => ("W", Box::new(move |c| pick(&c.host_power, h))),
                    "net" => ("ratio", Box::new(|_| None)),
                    other => return Err(format!("unknown host metric {other:?} (cpu, mem, net, power)")),
                }
            }
            ("vm", m) => {
                let v = id.ok_or("a VM series needs an id")?;
                match m {
                    "cpu" => ("ratio", Box::new(move |c| pick(&c.vm_cpu, v))),
                    "mem" => ("ratio", Box::new(|_| None)),
                    other => return Err(format!("unknown VM metric {other:?} (cpu, mem)")),
                }
            }
            (other, _) => return Err(format!("unknown target {other:?} (host, vm, cluster)")),
        };
        let h = self.history.read().unwrap_or_else(|p| p.into_inner());
        let samples: Vec<(f64, Option<f64>)> = h.iter().map(|c| (c.unix, f(c))).collect();
        let step = samples.windows(2).last().map_or(5.0, |w| (w[1].0 - w[0].0).max(0.1));
        downsample(q, unit, step, unix_now(), &samples)
    }
}

#[cfg(test)]
mod tests {
    use super::agent_names_hypervisor;

    #[test]
    fn an_agent_is_matched_to_its_hypervisor_by_host_name() {
        // The compute service's host or the hypervisor's host name, without case.
        assert!(agent_names_hypervisor("cmp1", "cmp1", "cmp1.example.org"));
        assert!(agent_names_hypervisor("CMP1", "cmp1", ""));
        assert!(agent_names_hypervisor("node7", "cmp7", "node7"));
        // A bare name against a fully qualified one, either way round.
        assert!(agent_names_hypervisor("cmp1", "cmp1.example.org", "cmp1.example.org"));
        assert!(agent_names_hypervisor("cmp1.example.org", "cmp1", "cmp1"));
        // Never a prefix, another domain or an empty name.
        assert!(!agent_names_hypervisor("cmp1", "cmp10", "cmp10.example.org"));
        assert!(!agent_names_hypervisor("cmp1.a.org", "cmp1.b.org", "cmp1.b.org"));
        assert!(!agent_names_hypervisor("", "", ""));
        assert!(!agent_names_hypervisor("cmp", "", "cmp1"));
    }
}
