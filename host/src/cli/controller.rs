//! `amvm demo` and `amvm controller`: the controller service (loop + API) on a world.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::api::{self, ApiConfig, AppState, Role, Tokens};
use crate::controller::live_volumes::LiveVolumesConfig;
use crate::controller::live_world::{LiveHost, LiveWorld, LiveWorldConfig};
use crate::controller::sim_world::{SimWorld, SimWorldConfig};
use crate::controller::world::World;
use crate::controller::{Automation, Controller, ControllerConfig, Guards};
use crate::monitor::{Collector, CollectorConfig};
use crate::openstack::{AgentFeed, Cloud, Nova, OpenStackWorld, OpenStackWorldConfig};
use crate::policy::{PolicyRuntime, RuntimeConfig};
use crate::sim::{Scenario, Trace};

/// `amvm demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address the API (and, once built, the dashboard) listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Keep the state here (default: a new temporary directory, removed at exit).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Real milliseconds per trace step (300 s of world time on PlanetLab data).
    #[arg(long, default_value_t = 1000)]
    pub step_ms: u64,
    /// World seconds per real second instead of --step-ms: `1` replays in real time (a 300 s
    /// step lasts 300 s and a migration its modelled 10–60 s), `10` ten times faster.
    #[arg(long, conflicts_with = "step_ms")]
    pub speed: Option<f64>,
    /// Strategy to start with: a built-in name or a strategy TOML file.
    #[arg(long, default_value = "lr-mmt-1.2")]
    pub strategy: String,
    /// `automatic` or `manual` (plans wait for an admin's approval).
    #[arg(long, default_value = "automatic")]
    pub automation: String,
    /// Trace to replay: `embedded` (PlanetLab 20110303), a PlanetLab day directory, a CSV/JSON
    /// trace or `synthetic:vms=N,…`.
    #[arg(long, default_value = "embedded")]
    pub trace: String,
    /// Hosts in the simulated data centre (default: the scenario's 800).
    #[arg(long)]
    pub hosts: Option<usize>,
    /// A RECOMMENDED plan stays up for review this long before a newer one supersedes it (s).
    #[arg(long, default_value_t = 30)]
    pub review_s: i64,
    /// An unapproved plan expires after this long (s).
    #[arg(long, default_value_t = 600)]
    pub plan_ttl_s: i64,
    /// Serve /metrics without a token.
    #[arg(long)]
    pub metrics_public: bool,
    /// Memory a simulated VM dirties per second at full CPU (MB/s; scaled by its load): the
    /// world's migration times, the migration-mode policy and the dashboard's progress all use
    /// it. The PlanetLab traces carry no memory activity; 32 is the `model` policy's own
    /// assumption for an unmeasured VM. 0 = none (`amvm sim`'s default).
    #[arg(long, default_value_t = 32.0)]
    pub dirty_mbps: f64,
    /// Let simulated hosts take VMs past their RAM, as CloudSim's PlanetLab setup does (RAM binds
    /// only at creation; `amvm sim`'s default). Without it the demo's hosts hold at most their
    /// RAM, as real ones do.
    #[arg(long)]
    pub no_memory_limit: bool,
}

/// `amvm controller`.
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Controller configuration (see `docs/controller.md` and `controller.example.toml`).
    #[arg(long, required_unless_present = "world")]
    pub config: Option<PathBuf>,
    /// Run on this world without a configuration file: `openstack` (with `--cloud`), the
    /// configuration's `[world] kind` otherwise. With `--config`, overrides its `kind`.
    #[arg(long, value_parser = ["simulated", "live", "openstack"])]
    pub world: Option<String>,
    /// OpenStack: the cloud's name in `clouds.yaml` (`[world] cloud`).
    #[arg(long)]
    pub cloud: Option<String>,
    /// OpenStack: the `clouds.yaml` to read (default: `OS_CLIENT_CONFIG_FILE`, ./clouds.yaml,
    /// ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml).
    #[arg(long)]
    pub clouds_yaml: Option<PathBuf>,
    /// Without `--config`: the state directory (default ./amvm-data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Without `--config`: the API's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// The controller configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerFile {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// State directory (SQLite database, uploaded modules).
    pub data: PathBuf,
    /// Tokens file (`[[token]] name, role, token`); `AMVM_ADMIN_TOKEN` / `AMVM_READ_TOKEN` add to it.
    pub tokens: Option<PathBuf>,
    #[serde(default)]
    pub metrics_public: bool,
    #[serde(default = "default_strategy")]
    pub strategy: String,
    #[serde(default = "default_automation")]
    pub automation: String,
    #[serde(default)]
    pub guards: Guards,
    #[serde(default = "default_ttl")]
    pub plan_ttl_s: i64,
    #[serde(default = "default_review")]
    pub review_s: i64,
    #[serde(default = "default_upload_mib")]
    pub upload_limit_mib: usize,
    /// PlanetLab day directories offline experiments may use.
    pub traces: Option<PathBuf>,
    pub world: WorldFile,
    /// Volumes (docs/volumes.md): at start, volume moves left open are resolved.
    pub volumes: Option<VolumesFile>,
}

/// `[volumes]` of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumesFile {
    /// The volume driver's configuration (`/etc/amvm/volumes.toml`).
    pub config: PathBuf,
    /// The lab whose guests the volumes are attached to: volume moves left open are resolved
    /// through it at start. (A live world resolves them itself, through its agents.)
    pub lab: Option<PathBuf>,
    /// Live world: seconds one attached volume adds to its VM's migration time (default 1).
    pub move_overhead_s: Option<f64>,
    /// Live world: how often each node's reach of the array is checked again (default 30 s).
    pub recheck_s: Option<u64>,
}

/// `[world]` of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldFile {
    /// `simulated`, `live` or `openstack`.
    pub kind: String,
    #[serde(default = "default_trace")]
    pub trace: String,
    /// Scenario TOML (hosts, VM types, migration model); default: CloudSim's PlanetLab setup.
    pub scenario: Option<PathBuf>,
    #[serde(default = "default_step_ms")]
    pub step_ms: u64,
    /// World seconds per real second (overrides `step_ms`; 1 = real time).
    pub speed: Option<f64>,
    pub hosts: Option<usize>,
    /// Live and OpenStack: UDP address of the in-process collector the agents report to
    /// (OpenStack: optional, without it Nova's diagnostics give the VMs' utilization).
    pub collector: Option<String>,
    /// Live and OpenStack (with `collector`): file holding the cluster key (else `AMVM_CLUSTER_KEY`).
    pub key_file: Option<PathBuf>,
    /// Live and OpenStack: cluster name the agents report (`amvm agent --cluster`).
    pub cluster: Option<String>,
    /// Live: seconds between agent reports (the RRD step).
    pub report_interval_s: Option<u32>,
    /// Live: samples of each VM's history handed to the policies.
    pub window: Option<usize>,
    /// Live: MIPS of one core (host capacity = cores × this).
    pub core_mips: Option<f64>,
    /// Live: migration mode asked of the agents (`pre`, `post`, `hybrid`).
    pub mode: Option<String>,
    /// Live: link cap per migration, bytes/s.
    pub bandwidth_bps: Option<f64>,
    /// Live: the nodes.
    #[serde(default, rename = "host")]
    pub host_list: Vec<LiveHostFile>,
    /// OpenStack: the cloud's name in `clouds.yaml`.
    pub cloud: Option<String>,
    /// OpenStack: the `clouds.yaml` (default: openstacksdk's search path).
    pub clouds_yaml: Option<PathBuf>,
    /// OpenStack: a live migration running longer than this is aborted (s, default 600).
    pub migration_timeout_s: Option<u64>,
    /// OpenStack: power hook after a host's compute service was disabled to sleep it
    /// (`AMVM_SLEEP_HOST` names it).
    pub sleep_cmd: Option<String>,
    /// OpenStack: power hook before a sleeping host's service is enabled (`AMVM_WAKE_HOST`).
    pub wake_cmd: Option<String>,
    /// OpenStack: only these compute hosts (the audit scope); default every hypervisor.
    #[serde(default)]
    pub scope: Vec<String>,
}

/// `[[world.host]]`: one node of the live world.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveHostFile {
    pub name: String,
    /// The agent's `--control` address.
    pub control: String,
    /// The node's libvirt daemon as the other nodes reach it.
    pub libvirt: String,
    pub migrate_uri: Option<String>,
    pub wake_cmd: Option<String>,
    pub cores: Option<u32>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_strategy() -> String {
    "lr-mmt-1.2".into()
}
fn default_automation() -> String {
    "automatic".into()
}
fn default_ttl() -> i64 {
    600
}
fn default_review() -> i64 {
    30
}
fn default_upload_mib() -> usize {
    16
}
fn default_trace() -> String {
    "embedded".into()
}
fn default_step_ms() -> u64 {
    1000
}

/// Everything a controller process needs, from either command.
struct Service {
    listen: SocketAddr,
    data: PathBuf,
    tokens: Tokens,
    generated_token: Option<String>,
    metrics_public: bool,
    cfg: ControllerConfig,
    world: WorldChoice,
    upload_limit: usize,
    traces_root: PathBuf,
}

fn load_strategy_arg(spec: &str) -> Result<String> {
    let p = Path::new(spec);
    if spec.ends_with(".toml") || p.is_file() {
        std::fs::read_to_string(p).with_context(|| format!("read strategy {}", p.display()))
    } else {
        Ok(spec.to_string())
    }
}

fn sim_world(
    trace: &str,
    scenario: Option<&Path>,
    hosts: Option<usize>,
    step_ms: u64,
    speed: Option<f64>,
) -> Result<SimWorldConfig> {
    let mut scenario = match scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    if let Some(h) = hosts {
        anyhow::ensure!(h > 0, "--hosts must be at least 1");
        scenario.hosts.count = h;
    }
    let trace = Arc::new(Trace::load(trace).with_context(|| format!("load trace {trace:?}"))?);
    let pace = match speed {
        Some(x) => {
            anyhow::ensure!(x.is_finite() && (0.001..=1e6).contains(&x), "--speed must be in 0.001..=1000000");
            Duration::from_secs_f64((scenario.interval_s / x).max(0.001))
        }
        None => {
            anyhow::ensure!(step_ms > 0, "the step must be at least 1 ms");
            Duration::from_millis(step_ms)
        }
    };
    Ok(SimWorldConfig { base_unix: SimWorldConfig::base_for(&trace), scenario, trace, pace })
}

/// The world a controller runs.
enum WorldChoice {
    Sim(SimWorldConfig),
    /// The live world and the collector feeding its mirror (run in this process).
    Live(LiveWorldConfig, CollectorConfig),
    /// The OpenStack world and, where agents run on the compute nodes, the collector they
    /// report to and their cluster name.
    OpenStack(Box<OpenStackWorldConfig>, Option<(CollectorConfig, String)>),
}

fn openstack_world(w: &WorldFile, rel: &dyn Fn(&Path) -> PathBuf, data: &Path) -> Result<WorldChoice> {
    let name =
        w.cloud.as_deref().context("world.kind = \"openstack\" needs `cloud` (its name in clouds.yaml; --cloud)")?;
    let file = w.clouds_yaml.as_deref().map(rel);
    let cloud = Cloud::load(file.as_deref(), name).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(w.step_ms >= 1000, "world.step_ms must be at least 1000 for an OpenStack cloud");
    let timeout = w.migration_timeout_s.unwrap_or(600);
    anyhow::ensure!((10..=86_400).contains(&timeout), "world.migration_timeout_s must be 10..=86400");
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    // Agents on the compute nodes are optional: without `collector`, Nova's diagnostics only.
    let collector = match &w.collector {
        Some(_) => Some(collector_config(w, rel, data, "")?.1),
        None => None,
    };
    Ok(WorldChoice::OpenStack(
        Box::new(OpenStackWorldConfig {
            nova: Nova::new(cloud, Duration::from_secs(30)),
            pace: Duration::from_millis(w.step_ms),
            window: w.window.unwrap_or(12).clamp(1, 240),
            core_mips: w.core_mips.unwrap_or(1000.0),
            migration_timeout: Duration::from_secs(timeout),
            sleep_cmd: w.sleep_cmd.clone(),
            wake_cmd: w.wake_cmd.clone(),
            scope: w.scope.clone(),
            ids_file: Some(data.join("openstack-ids.json")),
            agents: None,
        }),
        collector.map(|c| (c, w.cluster.clone().unwrap_or_else(|| "default".into()))),
    ))
}

/// The in-process collector the agents report to (`world.collector`, `key_file`,
/// `report_interval_s`), with the cluster key it checks.
fn collector_config(
    w: &WorldFile,
    rel: &dyn Fn(&Path) -> PathBuf,
    data: &Path,
    default_listen: &str,
) -> Result<(crate::monitor::proto::ClusterKey, CollectorConfig)> {
    let key = crate::monitor::key::load(w.key_file.as_deref().map(rel).as_deref())?;
    let listen = crate::monitor::agent::resolve(w.collector.as_deref().unwrap_or(default_listen))?;
    let mut col = CollectorConfig::new(listen, data.join("monitor"), key.clone());
    let interval = w.report_interval_s.unwrap_or(15);
    anyhow::ensure!((1..=3600).contains(&interval), "world.report_interval_s must be 1..=3600");
    col.step = interval;
    col.flush = Duration::from_secs(u64::from(interval).min(5));
    Ok((key, col))
}

fn live_world(
    w: &WorldFile,
    volumes: Option<&VolumesFile>,
    rel: &dyn Fn(&Path) -> PathBuf,
    data: &Path,
) -> Result<WorldChoice> {
    let (key, col) = collector_config(w, rel, data, "0.0.0.0:8649")?;
    let mut hosts = Vec::new();
    for h in &w.host_list {
        hosts.push(LiveHost {
            name: h.name.clone(),
            control: crate::monitor::agent::resolve(&h.control)
                .with_context(|| format!("world.host {:?}: control", h.name))?,
            libvirt: h.libvirt.clone(),
            migrate_uri: h.migrate_uri.clone(),
            wake_cmd: h.wake_cmd.clone(),
            cores: h.cores,
        });
    }
    anyhow::ensure!(w.step_ms >= 100, "world.step_ms must be at least 100 for the live world");
    let cfg = LiveWorldConfig {
        cluster: w.cluster.clone().unwrap_or_else(|| "default".into()),
        hosts,
        key,
        pace: Duration::from_millis(w.step_ms),
        window: w.window.unwrap_or(12).clamp(1, 240),
        core_mips: w.core_mips.unwrap_or(1000.0),
        mode: w.mode.clone().unwrap_or_else(|| "hybrid".into()),
        bandwidth_bps: w.bandwidth_bps,
        ids_file: Some(data.join("live-vm-ids.json")),
        asleep_file: Some(data.join("live-asleep.json")),
        volumes: volumes.map(|v| LiveVolumesConfig {
            db: data.join("state.db"),
            array_config: rel(&v.config),
            move_overhead_s: v.move_overhead_s.unwrap_or(crate::controller::live_volumes::DEFAULT_MOVE_OVERHEAD_S),
            recheck: Duration::from_secs(v.recheck_s.unwrap_or(30).max(1)),
        }),
    };
    Ok(WorldChoice::Live(cfg, col))
}

fn automation(text: &str) -> Result<Automation> {
    Automation::parse(text).with_context(|| format!("automation {text:?}: automatic or manual"))
}

pub fn run_demo(a: DemoArgs) -> Result<ExitCode> {
    let (data, _tmp) = match &a.data {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("amvm-demo-").tempdir().context("create a temporary directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let mut tokens = Tokens::load(None).map_err(anyhow::Error::msg)?;
    let mut generated = None;
    if tokens.is_empty() {
        let t = api::auth::generate();
        tokens.add("admin", Role::Admin, &t).map_err(anyhow::Error::msg)?;
        generated = Some(t);
    }
    let mut cfg = ControllerConfig::new(data.clone());
    cfg.default_strategy = load_strategy_arg(&a.strategy)?;
    cfg.default_automation = automation(&a.automation)?;
    cfg.review_s = a.review_s;
    cfg.plan_ttl_s = a.plan_ttl_s;
    let service = Service {
        listen: a.listen,
        data,
        tokens,
        generated_token: generated,
        metrics_public: a.metrics_public,
        cfg,
        world: WorldChoice::Sim({
            anyhow::ensure!(a.dirty_mbps.is_finite() && a.dirty_mbps >= 0.0, "--dirty-mbps must be ≥ 0");
            let mut w = sim_world(&a.trace, None, a.hosts, a.step_ms, a.speed)?;
            w.scenario.migration.dirty_mbps_at_full_cpu = a.dirty_mbps;
            w.scenario.migration.check_memory = !a.no_memory_limit;
            w
        }),
        upload_limit: api::DEFAULT_UPLOAD_LIMIT,
        traces_root: crate::controller::experiment::default_traces_root(),
    };
    run_service(service)
}

/// The configuration `amvm controller --world KIND` runs without a file: defaults everywhere.
fn file_from_args(a: &ControllerArgs) -> Result<ControllerFile> {
    let kind = a.world.clone().context("--world or --config")?;
    let data = a.data.clone().unwrap_or_else(|| PathBuf::from("amvm-data"));
    let text =
        format!("data = {:?}\nlisten = \"{}\"\n[world]\nkind = {kind:?}\n", data.display().to_string(), a.listen);
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}", e.message()))
}

pub fn run_controller(a: ControllerArgs) -> Result<ExitCode> {
    let (mut f, config): (ControllerFile, PathBuf) = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            let f = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
            (f, path.clone())
        }
        None => (file_from_args(&a)?, PathBuf::from("./(command line)")),
    };
    if let Some(k) = &a.world {
        f.world.kind = k.clone();
    }
    if a.cloud.is_some() {
        f.world.cloud = a.cloud.clone();
    }
    if let Some(c) = &a.clouds_yaml {
        f.world.clouds_yaml = Some(std::path::absolute(c)?);
    }
    anyhow::ensure!(
        ["simulated", "live", "openstack"].contains(&f.world.kind.as_str()),
        "{}: world.kind {:?}: \"simulated\", \"live\" or \"openstack\"",
        config.display(),
        f.world.kind
    );
    let base = config.parent().unwrap_or(Path::new("."));
    let rel = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    let mut tokens = Tokens::load(f.tokens.as_deref().map(rel).as_deref()).map_err(anyhow::Error::msg)?;
    let mut generated = None;
    if tokens.is_empty() && a.config.is_none() {
        let t = api::auth::generate();
        tokens.add("admin", Role::Admin, &t).map_err(anyhow::Error::msg)?;
        generated = Some(t);
    }
    anyhow::ensure!(
        !tokens.is_empty(),
        "no API tokens: set `tokens = \"tokens.toml\"` in the configuration or AMVM_ADMIN_TOKEN"
    );
    let data = rel(&f.data);
    if let Some((v, lab)) = f.volumes.as_ref().and_then(|v| Some((v, v.lab.as_ref()?))) {
        // A controller killed during a volume move left its intent record: finish it first
        // (on a first start the data directory does not exist yet).
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        for r in crate::volume::resolve_at_start(&data.join("state.db"), &rel(&v.config), &rel(lab))? {
            println!("volume move {} resolved: {} on {} ({})", r.id, r.volume, r.node, r.note);
        }
    }
    let data2 = data.clone();
    let mut cfg = ControllerConfig::new(data.clone());
    cfg.default_strategy = load_strategy_arg(&f.strategy)?;
    cfg.default_automation = automation(&f.automation)?;
    cfg.guards = f.guards.clone();
    cfg.plan_ttl_s = f.plan_ttl_s;
    cfg.review_s = f.review_s;
    let service = Service {
        listen: f.listen,
        data,
        tokens,
        generated_token: generated,
        metrics_public: f.metrics_public,
        cfg,
        world: if f.world.kind == "live" {
            live_world(&f.world, f.volumes.as_ref(), &rel, &data2)?
        } else if f.world.kind == "openstack" {
            openstack_world(&f.world, &rel, &data2)?
        } else {
            WorldChoice::Sim(sim_world(
                &f.world.trace,
                f.world.scenario.as_deref().map(rel).as_deref(),
                f.world.hosts,
                f.world.step_ms,
                f.world.speed,
            )?)
        },
        upload_limit: f.upload_limit_mib.max(1) << 20,
        traces_root: f.traces.as_deref().map(rel).unwrap_or_else(crate::controller::experiment::default_traces_root),
    };
    run_service(service)
}

fn run_service(s: Service) -> Result<ExitCode> {
    let runtime = Arc::new(PolicyRuntime::new(RuntimeConfig::default()).context("cannot start the policy runtime")?);
    let mut collector = None;
    let world: Box<dyn World> = match s.world {
        WorldChoice::Sim(w) => {
            Box::new(SimWorld::new(w).map_err(|e| anyhow::anyhow!("cannot build the simulated world: {e}"))?)
        }
        WorldChoice::Live(w, c) => {
            let col = Collector::start(c).context("cannot start the collector")?;
            println!("collector: UDP {}", col.local_addr());
            let world = LiveWorld::new(w, col.mirror()).map_err(|e| anyhow::anyhow!("the live world: {e}"))?;
            collector = Some(col);
            Box::new(world)
        }
        WorldChoice::OpenStack(mut w, agents) => {
            if let Some((c, cluster)) = agents {
                let col = Collector::start(c).context("cannot start the collector")?;
                println!("collector: UDP {} (agents of cluster {cluster:?} on the compute nodes)", col.local_addr());
                w.agents = Some(AgentFeed { mirror: col.mirror(), cluster });
                collector = Some(col);
            }
            Box::new(OpenStackWorld::new(*w).map_err(|e| anyhow::anyhow!("the OpenStack world: {e}"))?)
        }
    };
    let controller = Controller::start(s.cfg, world, runtime)?;
    let shared = controller.shared.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("amvm-api")
        .build()
        .context("cannot start the async runtime")?;
    let state = AppState {
        shared: shared.clone(),
        cfg: Arc::new(ApiConfig {
            tokens: s.tokens,
            metrics_public: s.metrics_public,
            upload_limit: s.upload_limit,
            traces_root: s.traces_root,
        }),
    };
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(s.listen)
            .await
            .with_context(|| format!("cannot listen on {} (is another amvm running? use --listen)", s.listen))?;
        let addr = listener.local_addr()?;
        println!("AMVM controller: http://{addr}/  (API http://{addr}/api/v1/status)");
        println!("world: {}", shared.info.description);
        println!("state: {}", std::fs::canonicalize(&s.data).unwrap_or(s.data.clone()).display());
        match &s.generated_token {
            Some(t) => println!("admin token: {t}   (export AMVM_TOKEN={t} for `amvm ctl`)"),
            None => println!("admin token: from AMVM_ADMIN_TOKEN / the tokens file"),
        }
        println!("Ctrl-C stops it.");
        api::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the API server failed")
    });
    controller.stop();
    if let Some(c) = collector {
        c.shutdown();
    }
    result?;
    eprintln!("amvm: controller stopped");
    Ok(ExitCode::SUCCESS)
}
