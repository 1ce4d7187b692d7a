//! The agent's control endpoint (`amvm agent --control ADDR:PORT`): the controller asks the agent
//! to live-migrate a VM, reports a migration's progress, cancels one, and puts the node to sleep
//! or wakes another node.
//!
//! ```text
//!  controller                                              agent
//!    │  REQUEST{nonce, time_ms, op} + HMAC    ───────────▶ │ length ≤ 64 KiB → verify tag →
//!    │                                                     │ time within ±30 s, nonce unseen →
//!    │ ◀───────────  REPLY{nonce, ok, result|error} + HMAC │ run the operation
//! ```
//!
//! Frame on a TCP connection (one request, one reply, then the connection closes):
//!
//! ```text
//!  ├────────────┼──────────────────┼─────────────────────────────────────────────┤
//!  │ len u32 BE │ JSON body (len)  │ HMAC-SHA256("amvm-control-v1 req|rep" ‖ len ‖ body) │
//! ```
//!
//! The tag uses the cluster key of the metric reports ([`ClusterKey::sign`]) with a label per
//! direction, so a metric datagram, a request and a reply can never stand in for one another. A
//! request is refused with a one-line error (sent as an authenticated reply) when its tag is
//! wrong, its time is more than [`MAX_SKEW_MS`] from the agent's clock, its nonce was seen
//! already (a replay), or its length is above [`MAX_FRAME`]; nothing a peer sends panics the
//! agent or allocates more than [`MAX_FRAME`].
//!
//! **Sleep and wake.** `sleep` answers first and then runs `--sleep-cmd` (which may freeze or
//! suspend the agent itself). A node that sleeps cannot wake itself, so `wake` runs the agent's
//! `--wake-cmd` for *another* node (`AMVM_WAKE_HOST` names it), like Wake-on-LAN sent from a
//! neighbour; the controller may equally run a wake command itself (`docs/controller.md`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amvm_engine::memory::Mode;
use amvm_engine::qemu::{libvirt, MigrateOptions, Phase, Progress, QemuReport};
use serde::{Deserialize, Serialize};

use crate::monitor::proto::{ClusterKey, TAG_LEN};

/// Largest body accepted in either direction.
pub const MAX_FRAME: usize = 64 * 1024;
/// A request whose time is further than this from the agent's clock is refused.
pub const MAX_SKEW_MS: u64 = 30_000;
/// Connections served at once; more are refused.
const MAX_CONNECTIONS: usize = 16;
/// Finished jobs kept for `progress` / `jobs`.
const KEEP_FINISHED: usize = 256;

const REQ_LABEL: &[u8] = b"amvm-control-v1 req";
const REP_LABEL: &[u8] = b"amvm-control-v1 rep";

/// Errors of the control protocol (client side and frame level).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the agent at {0}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("I/O with the agent failed")]
    Io(#[source] std::io::Error),
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("integrity check failed (wrong cluster key, forged or corrupted frame)")]
    Tag,
    #[error("malformed message: {0}")]
    Json(String),
    #[error("the reply does not answer this request (nonce mismatch)")]
    Nonce,
    #[error("the agent refused: {0}")]
    Refused(String),
}

/// One operation the controller asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// This agent's host name, libvirt URI and running jobs.
    Status,
    /// The domains of this node's libvirt daemon.
    Domains,
    /// Live-migrates domain `vm` (UUID or name) to the libvirt daemon at `to_uri`.
    Migrate {
        vm: String,
        to_uri: String,
        /// Where the migration stream goes (`tcp://10.77.0.12`); `None`: the destination's host name.
        migrate_uri: Option<String>,
        /// `pre`, `post` or `hybrid`.
        mode: String,
        /// Link cap for both phases (bytes/s); `None` = uncapped.
        bandwidth_bps: Option<f64>,
    },
    Progress {
        job: String,
    },
    Jobs,
    Cancel {
        job: String,
    },
    /// Puts this node to sleep (`--sleep-cmd`) after answering.
    Sleep,
    /// Wakes node `host` (`--wake-cmd` with `AMVM_WAKE_HOST=host`).
    Wake {
        host: String,
    },
    /// Whether this node reaches `addr` (`HOST:PORT`, e.g. the disk array's iSCSI portal): a
    /// TCP connection from the node's own network, within [`REACH_TIMEOUT`]. Answers
    /// [`Reach`].
    Reach {
        addr: String,
    },
}

/// How long [`Op::Reach`] waits for a connection.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(1);

/// The answer to [`Op::Reach`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    pub reachable: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    nonce: u64,
    time_ms: u64,
    #[serde(flatten)]
    op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    nonce: u64,
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A migration job as the agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub job: String,
    /// The domain's name and UUID.
    pub vm: String,
    #[serde(default)]
    pub vm_uuid: String,
    pub to_uri: String,
    pub mode: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub elapsed_ms: f64,
    pub progress: Option<Progress>,
    pub report: Option<QemuReport>,
    pub error: Option<String>,
    /// Memory of the domain (bytes), known once the job started.
    pub memory_bytes: Option<f64>,
}

/// What `status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub host: String,
    pub libvirt: Option<String>,
    pub running_jobs: usize,
}

/// One domain of the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainView {
    pub uuid: String,
    pub name: String,
    pub active: bool,
    pub memory_mib: u64,
    pub vcpus: u32,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn write_frame(s: &mut impl Write, key: &ClusterKey, label: &[u8], body: &[u8]) -> Result<(), ControlError> {
    if body.len() > MAX_FRAME {
        return Err(ControlError::TooLarge(body.len()));
    }
    let len = (body.len() as u32).to_be_bytes();
    let mut signed = Vec::with_capacity(4 + body.len());
    signed.extend_from_slice(&len);
    signed.extend_from_slice(body);
    let tag = key.sign(label, &signed);
    signed.extend_from_slice(&tag);
    s.write_all(&signed).map_err(ControlError::Io)?;
    s.flush().map_err(ControlError::Io)
}

/// Reads one frame; the length is checked before anything is allocated, the tag before the body
/// is parsed.
fn read_frame(s: &mut impl Read, key: &ClusterKey, label: &[u8]) -> Result<Vec<u8>, ControlError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(ControlError::Io)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(ControlError::TooLarge(n));
    }
    let mut buf = vec![0u8; 4 + n + TAG_LEN];
    buf[..4].copy_from_slice(&len);
    s.read_exact(&mut buf[4..]).map_err(ControlError::Io)?;
    let (signed, tag) = buf.split_at(4 + n);
    if !key.verify(label, signed, tag) {
        return Err(ControlError::Tag);
    }
    Ok(signed[4..].to_vec())
}

/// The controller's side: one request per connection.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    key: ClusterKey,
    pub timeout: Duration,
}

impl Client {
    pub fn new(addr: SocketAddr, key: ClusterKey) -> Client {
        Client { addr, key, timeout: Duration::from_secs(10) }
    }

    /// Sends `op` and returns the agent's result (or its refusal as [`ControlError::Refused`]).
    pub fn call(&self, op: &Op) -> Result<serde_json::Value, ControlError> {
        let nonce: u64 = rand::random();
        let req = Request { nonce, time_ms: now_ms(), op: op.clone() };
        let body = serde_json::to_vec(&req).map_err(|e| ControlError::Json(e.to_string()))?;
        let mut s =
            TcpStream::connect_timeout(&self.addr, self.timeout).map_err(|e| ControlError::Connect(self.addr, e))?;
        s.set_read_timeout(Some(self.timeout)).map_err(ControlError::Io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(ControlError::Io)?;
        write_frame(&mut s, &self.key, REQ_LABEL, &body)?;
        let reply = read_frame(&mut s, &self.key, REP_LABEL)?;
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| ControlError::Json(e.to_string()))?;
        // A refusal of a frame the agent could not authenticate carries nonce 0.
        if reply.nonce != nonce && (reply.ok || reply.nonce != 0) {
            return Err(ControlError::Nonce);
        }
        if reply.ok {
            Ok(reply.result.unwrap_or(serde_json::Value::Null))
        } else {
            Err(ControlError::Refused(reply.error.unwrap_or_else(|| "no reason given".into())))
        }
    }

    /// [`Client::call`] with the result decoded as `T`.
    pub fn call_as<T: for<'de> Deserialize<'de>>(&self, op: &Op) -> Result<T, ControlError> {
        serde_json::from_value(self.call(op)?).map_err(|e| ControlError::Json(e.to_string()))
    }
}

/// Settings of the control endpoint.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    pub key: ClusterKey,
    pub host: String,
    /// This node's libvirt daemon (`None`: migrations are refused).
    pub libvirt: Option<String>,
    /// Shell command that puts this node to sleep (`None`: sleep is refused).
    pub sleep_cmd: Option<String>,
    /// Shell command that wakes the node named by `AMVM_WAKE_HOST` (`None`: wake is refused).
    pub wake_cmd: Option<String>,
}

/// Nonces of accepted requests within twice the skew window, oldest first.
#[derive(Default)]
struct Seen {
    nonces: HashSet<u64>,
    order: VecDeque<(u64, u64)>,
}

struct Job {
    view: JobView,
    started: Instant,
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<String, Job>,
    finished: VecDeque<String>,
    next: u64,
}

struct Server {
    cfg: ControlConfig,
    jobs: Arc<Mutex<Jobs>>,
    boot: u32,
    /// Nonces seen within the skew window, with when they were seen.
    seen: Mutex<Seen>,
    sleeping: Arc<AtomicBool>,
    connections: AtomicUsize,
}

/// A running control endpoint.
pub struct ControlServer {
    pub local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlServer {
    /// Binds and serves in a background thread.
    pub fn start(cfg: ControlConfig) -> std::io::Result<ControlServer> {
        let listener = TcpListener::bind(cfg.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = Arc::new(Server {
            cfg,
            jobs: Arc::new(Mutex::new(Jobs::default())),
            boot: rand::random(),
            seen: Mutex::new(Default::default()),
            sleeping: Arc::new(AtomicBool::new(false)),
            connections: AtomicUsize::new(0),
        });
        let st = stop.clone();
        let thread = std::thread::Builder::new().name("agent-control".into()).spawn(move || {
            while !st.load(Relaxed) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        if server.connections.load(Relaxed) >= MAX_CONNECTIONS {
                            tracing::warn!(%peer, "control: too many connections; refused");
                            continue;
                        }
                        server.connections.fetch_add(1, Relaxed);
                        let sv = server.clone();
                        let spawned = std::thread::Builder::new().name("agent-control-conn".into()).spawn(move || {
                            sv.serve(conn, peer);
                            sv.connections.fetch_sub(1, Relaxed);
                        });
                        if spawned.is_err() {
                            server.connections.fetch_sub(1, Relaxed);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!("control: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
        tracing::info!(%local_addr, "agent control endpoint listening");
        Ok(ControlServer { local_addr, stop, thread: Some(thread) })
    }

    /// Stops accepting connections (running migrations finish on their own threads).
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Server {
    fn serve(&self, mut conn: TcpStream, peer: SocketAddr) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        let (nonce, result) = match read_frame(&mut conn, &self.cfg.key, REQ_LABEL) {
            Ok(body) => match serde_json::from_slice::<Request>(&body) {
                Ok(req) => (req.nonce, self.check_fresh(&req).and_then(|()| self.handle(req.op))),
                Err(e) => (0, Err(format!("malformed request: {e}"))),
            },
            Err(ControlError::Io(e)) => {
                tracing::debug!(%peer, "control: connection dropped: {e}");
                return;
            }
            Err(e) => (0, Err(e.to_string())),
        };
        if let Err(e) = &result {
            tracing::warn!(%peer, "control request refused: {e}");
        }
        let reply = match result {
            Ok(v) => Reply { nonce, ok: true, result: Some(v), error: None },
            Err(e) => Reply { nonce, ok: false, result: None, error: Some(e) },
        };
        if let Ok(body) = serde_json::to_vec(&reply) {
            let _ = write_frame(&mut conn, &self.cfg.key, REP_LABEL, &body);
        }
    }

    /// Refuses stale or replayed requests.
    fn check_fresh(&self, req: &Request) -> Result<(), String> {
        let now = now_ms();
        if req.time_ms.abs_diff(now) > MAX_SKEW_MS {
            return Err(format!(
                "request time is {} ms from the agent's clock (at most {MAX_SKEW_MS} ms): stale or replayed",
                req.time_ms.abs_diff(now)
            ));
        }
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Seen { nonces, order } = &mut *g;
        while order.front().is_some_and(|(t, _)| now.saturating_sub(*t) > 2 * MAX_SKEW_MS) {
            if let Some((_, n)) = order.pop_front() {
                nonces.remove(&n);
            }
        }
        if !nonces.insert(req.nonce) {
            return Err("replayed request (nonce already seen)".into());
        }
        order.push_back((now, req.nonce));
        Ok(())
    }

    fn handle(&self, op: Op) -> Result<serde_json::Value, String> {
        match op {
            Op::Status => {
                let running = self.jobs().by_id.values().filter(|j| j.view.state == "running").count();
                json(&AgentStatus {
                    host: self.cfg.host.clone(),
                    libvirt: self.cfg.libvirt.clone(),
                    running_jobs: running,
                })
            }
            Op::Domains => json(&self.domains()?),
            Op::Migrate { vm, to_uri, migrate_uri, mode, bandwidth_bps } => {
                self.migrate(vm, to_uri, migrate_uri, &mode, bandwidth_bps).map(serde_json::Value::String)
            }
            Op::Progress { job } => {
                let g = self.jobs();
                let j = g.by_id.get(&job).ok_or_else(|| format!("no job {job:?} on this agent (restarted?)"))?;
                let mut v = j.view.clone();
                if v.state == "running" {
                    v.elapsed_ms = j.started.elapsed().as_secs_f64() * 1e3;
                }
                json(&v)
            }
            Op::Jobs => {
                let g = self.jobs();
                let mut v: Vec<JobView> = g.by_id.values().map(|j| j.view.clone()).collect();
                v.sort_by(|a, b| a.job.cmp(&b.job));
                json(&v)
            }
            Op::Cancel { job } => {
                let (vm, state) = {
                    let g = self.jobs();
                    let j = g.by_id.get(&job).ok_or_else(|| format!("no job {job:?} on this agent"))?;
                    (j.view.vm.clone(), j.view.state.clone())
                };
                if state != "running" {
                    return Err(format!("job {job} has already ended ({state})"));
                }
                if self
                    .jobs()
                    .by_id
                    .get(&job)
                    .and_then(|j| j.view.progress.as_ref())
                    .is_some_and(|p| p.phase == Phase::PostCopy)
                {
                    return Err(format!("job {job} is in post-copy: the guest already runs on the destination"));
                }
                let uri = self.cfg.libvirt.as_deref().ok_or("this agent has no libvirt daemon")?;
                // Marked first: the job may end as soon as the abort lands.
                update(&self.jobs, &job, |v| v.error = Some("cancel requested".into()));
                if let Err(e) = libvirt::abort_migration(uri, &vm) {
                    update(&self.jobs, &job, |v| v.error = None);
                    return Err(e.to_string());
                }
                Ok(serde_json::Value::Null)
            }
            Op::Sleep => {
                let cmd = self.cfg.sleep_cmd.clone().ok_or("this agent has no --sleep-cmd")?;
                if self.jobs().by_id.values().any(|j| j.view.state == "running") {
                    return Err("a migration is running on this node".into());
                }
                if self.cfg.libvirt.is_some() {
                    let active: Vec<String> =
                        self.domains()?.into_iter().filter(|d| d.active).map(|d| d.name).collect();
                    if !active.is_empty() {
                        return Err(format!("guests still run on this node: {}", active.join(", ")));
                    }
                }
                if self.sleeping.swap(true, Relaxed) {
                    return Err("already going to sleep".into());
                }
                // Answer first: the command may freeze this very process.
                let host = self.cfg.host.clone();
                let flag = self.sleeping.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    tracing::info!(host, "going to sleep");
                    if let Err(e) = run_shell(&cmd, &[]) {
                        tracing::warn!("sleep command failed: {e}");
                    }
                    // Back from sleep (or the command failed): a later sleep is accepted.
                    flag.store(false, Relaxed);
                });
                Ok(serde_json::Value::Null)
            }
            Op::Wake { host } => {
                let cmd = self.cfg.wake_cmd.as_deref().ok_or("this agent has no --wake-cmd")?;
                if !crate::monitor::proto::valid_name(&host) {
                    return Err(format!("bad host name {host:?}"));
                }
                run_shell(cmd, &[("AMVM_WAKE_HOST", &host)])?;
                Ok(serde_json::Value::Null)
            }
            Op::Reach { addr } => {
                use std::net::ToSocketAddrs;
                let target = addr
                    .to_socket_addrs()
                    .map_err(|e| format!("bad address {addr:?}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{addr:?} resolves to no address"))?;
                let r = match std::net::TcpStream::connect_timeout(&target, REACH_TIMEOUT) {
                    Ok(_) => Reach { reachable: true, error: None },
                    Err(e) => Reach { reachable: false, error: Some(e.to_string()) },
                };
                json(&r)
            }
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        lock(&self.jobs)
    }

    fn domains(&self) -> Result<Vec<DomainView>, String> {
        let uri = self.cfg.libvirt.as_deref().ok_or("this agent has no libvirt daemon")?;
        let mut c = virt::connect::Connect::open(Some(uri)).map_err(|e| format!("libvirt {uri}: {}", e.message()))?;
        let mut out = Vec::new();
        for d in c.list_all_domains(0).map_err(|e| format!("list domains: {}", e.message()))? {
            let info = d.get_info().ok();
            out.push(DomainView {
                uuid: d.get_uuid_string().unwrap_or_default(),
                name: d.get_name().unwrap_or_default(),
                active: d.is_active().unwrap_or(false),
                memory_mib: info.as_ref().map_or(0, |i| i.max_mem / 1024),
                vcpus: info.map_or(0, |i| i.nr_virt_cpu),
            });
        }
        let _ = c.close();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn migrate(
        &self,
        vm: String,
        to_uri: String,
        migrate_uri: Option<String>,
        mode: &str,
        bandwidth: Option<f64>,
    ) -> Result<String, String> {
        let src = self.cfg.libvirt.clone().ok_or("this agent has no libvirt daemon")?;
        let mode: Mode = mode.parse().map_err(|e| format!("{e}"))?;
        if bandwidth.is_some_and(|b| !(b.is_finite() && b >= 1e5)) {
            return Err("bandwidth_bps must be at least 100000 (or absent)".into());
        }
        // Resolve the domain now so a bad name is refused at once, not as a failed job.
        let doms = self.domains()?;
        let d = doms
            .iter()
            .find(|d| d.uuid == vm || d.name == vm)
            .ok_or_else(|| format!("no domain {vm:?} on {}", self.cfg.host))?;
        if !d.active {
            return Err(format!("domain {} is not running", d.name));
        }
        let (name, uuid, memory) = (d.name.clone(), d.uuid.clone(), d.memory_mib as f64 * 1_048_576.0);
        let id = {
            let mut g = self.jobs();
            if g.by_id.values().any(|j| j.view.state == "running" && (j.view.vm == name || j.view.vm == vm)) {
                return Err(format!("{name} is migrating already"));
            }
            g.next += 1;
            let id = format!("{:08x}-{}", self.boot, g.next);
            g.by_id.insert(
                id.clone(),
                Job {
                    view: JobView {
                        job: id.clone(),
                        vm: name.clone(),
                        vm_uuid: uuid,
                        to_uri: to_uri.clone(),
                        mode: mode.name().to_string(),
                        state: "running".into(),
                        elapsed_ms: 0.0,
                        progress: None,
                        report: None,
                        error: None,
                        memory_bytes: Some(memory),
                    },
                    started: Instant::now(),
                },
            );
            id
        };
        let mut opts = MigrateOptions::new(mode);
        opts.bandwidth = bandwidth;
        let job = id.clone();
        let table = self.jobs.clone();
        std::thread::Builder::new()
            .name(format!("migrate-{name}"))
            .spawn(move || {
                tracing::info!(job, vm = %name, to = %to_uri, mode = mode.name(), "migration started");
                let started = Instant::now();
                let result = libvirt::migrate_domain(
                    &src,
                    &to_uri,
                    &name,
                    migrate_uri.as_deref(),
                    &opts,
                    &mut |p: &Progress| update(&table, &job, |v| v.progress = Some(p.clone())),
                );
                let elapsed = started.elapsed().as_secs_f64() * 1e3;
                update(&table, &job, |v| {
                    v.elapsed_ms = elapsed;
                    match result {
                        Ok(r) => {
                            tracing::info!(job = %v.job, vm = %v.vm, total_ms = r.total_time_ms, downtime_ms = r.downtime_ms, "migration succeeded");
                            v.state = "succeeded".into();
                            v.report = Some(r);
                        }
                        Err(e) => {
                            let cancelled = v.error.is_some();
                            tracing::warn!(job = %v.job, vm = %v.vm, "migration failed: {e}");
                            v.state = if cancelled { "cancelled" } else { "failed" }.into();
                            v.error = Some(e.to_string());
                        }
                    }
                });
                let mut g = lock(&table);
                g.finished.push_back(job);
                while g.finished.len() > KEEP_FINISHED {
                    if let Some(old) = g.finished.pop_front() {
                        g.by_id.remove(&old);
                    }
                }
            })
            .map_err(|e| format!("cannot start the migration thread: {e}"))?;
        Ok(id)
    }
}

fn lock(jobs: &Mutex<Jobs>) -> std::sync::MutexGuard<'_, Jobs> {
    jobs.lock().unwrap_or_else(|p| p.into_inner())
}

fn update(jobs: &Mutex<Jobs>, job: &str, f: impl FnOnce(&mut JobView)) {
    if let Some(j) = lock(jobs).by_id.get_mut(job) {
        f(&mut j.view);
    }
}

fn json<T: Serialize>(v: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Runs `sh -c CMD` and waits; a non-zero exit is an error naming its status and stderr.
pub fn run_shell(cmd: &str, env: &[(&str, &str)]) -> Result<(), String> {
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd).stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::new(vec![b; 32]).unwrap()
    }

    fn server(wake_cmd: Option<&str>) -> ControlServer {
        ControlServer::start(ControlConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            key: key(7),
            host: "node1".into(),
            libvirt: None,
            sleep_cmd: None,
            wake_cmd: wake_cmd.map(str::to_string),
        })
        .unwrap()
    }

    /// Sends raw bytes and reads the reply frame with `k`.
    fn raw(addr: SocketAddr, bytes: &[u8], k: &ClusterKey) -> Result<Reply, ControlError> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let body = read_frame(&mut s, k, REP_LABEL)?;
        serde_json::from_slice(&body).map_err(|e| ControlError::Json(e.to_string()))
    }

    fn signed(k: &ClusterKey, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, k, REQ_LABEL, body).unwrap();
        v
    }

    #[test]
    fn good_request_is_answered() {
        let s = server(None);
        let c = Client::new(s.local_addr, key(7));
        let st: AgentStatus = c.call_as(&Op::Status).unwrap();
        assert_eq!(st.host, "node1");
        assert_eq!(st.running_jobs, 0);
        let jobs: Vec<JobView> = c.call_as(&Op::Jobs).unwrap();
        assert!(jobs.is_empty());
        // An operation the node cannot do is a clear refusal, not a crash.
        match c.call(&Op::Migrate {
            vm: "vm1".into(),
            to_uri: "x".into(),
            migrate_uri: None,
            mode: "hybrid".into(),
            bandwidth_bps: None,
        }) {
            Err(ControlError::Refused(e)) => assert!(e.contains("no libvirt"), "{e}"),
            other => panic!("{other:?}"),
        }
        match c.call(&Op::Progress { job: "nope".into() }) {
            Err(ControlError::Refused(e)) => assert!(e.contains("no job"), "{e}"),
            other => panic!("{other:?}"),
        }
        s.stop();
    }

    #[test]
    fn reach_connects_from_the_node() {
        let s = server(None);
        let c = Client::new(s.local_addr, key(7));
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let r: Reach = c.call_as(&Op::Reach { addr: open.local_addr().unwrap().to_string() }).unwrap();
        assert!(r.reachable && r.error.is_none(), "{r:?}");
        // A port nothing listens on (the listener dropped) is refused.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let r: Reach = c.call_as(&Op::Reach { addr: closed.to_string() }).unwrap();
        assert!(!r.reachable && r.error.is_some(), "{r:?}");
        assert!(matches!(c.call(&Op::Reach { addr: "no port".into() }), Err(ControlError::Refused(_))));
        s.stop();
    }

    #[test]
    fn bad_mac_is_refused() {
        let s = server(None);
        // Wrong key: the agent refuses, and its reply does not verify under the wrong key either.
        let c = Client::new(s.local_addr, key(8));
        assert!(matches!(c.call(&Op::Status), Err(ControlError::Tag)));
        // A tampered frame (one body byte flipped) read back with the right key.
        let body = serde_json::to_vec(&Request { nonce: 5, time_ms: now_ms(), op: Op::Status }).unwrap();
        let mut frame = signed(&key(7), &body);
        frame[6] ^= 1;
        let r = raw(s.local_addr, &frame, &key(7)).unwrap();
        assert!(!r.ok && r.error.as_deref().unwrap().contains("integrity"), "{r:?}");
        s.stop();
    }

    #[test]
    fn replay_stale_and_oversized_are_refused() {
        let s = server(Some("test \"$AMVM_WAKE_HOST\" = node2"));
        let k = key(7);
        let body = serde_json::to_vec(&Request { nonce: 42, time_ms: now_ms(), op: Op::Status }).unwrap();
        let frame = signed(&k, &body);
        assert!(raw(s.local_addr, &frame, &k).unwrap().ok);
        let again = raw(s.local_addr, &frame, &k).unwrap();
        assert!(!again.ok && again.error.as_deref().unwrap().contains("replayed"), "{again:?}");
        let old = serde_json::to_vec(&Request { nonce: 43, time_ms: now_ms() - 60_000, op: Op::Status }).unwrap();
        let r = raw(s.local_addr, &signed(&k, &old), &k).unwrap();
        assert!(!r.ok && r.error.as_deref().unwrap().contains("stale"), "{r:?}");
        let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(&[0; 64]);
        let r = raw(s.local_addr, &big, &k).unwrap();
        assert!(!r.ok && r.error.as_deref().unwrap().contains("limit"), "{r:?}");
        let r = raw(s.local_addr, &signed(&k, b"{not json"), &k).unwrap();
        assert!(!r.ok && r.error.as_deref().unwrap().contains("malformed"), "{r:?}");
        // Wake runs the command for the named node; a failing command is reported.
        let c = Client::new(s.local_addr, k);
        c.call(&Op::Wake { host: "node2".into() }).unwrap();
        assert!(matches!(c.call(&Op::Wake { host: "node3".into() }), Err(ControlError::Refused(_))));
        assert!(matches!(c.call(&Op::Sleep), Err(ControlError::Refused(e)) if e.contains("--sleep-cmd")));
        s.stop();
    }
}
