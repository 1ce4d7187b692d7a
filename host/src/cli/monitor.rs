//! `amvm agent`, `amvm collector`, `amvm metrics fetch|graph`: the monitoring command family.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rrd::ConsolidationFn;

use crate::monitor::agent::{self, AgentConfig};
use crate::monitor::store::{fetch_file, graph_png, SeriesKey};
use crate::monitor::{key, proto, Collector, CollectorConfig};

/// `amvm agent`: report this node's metrics to a collector.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Collector address, HOST:PORT.
    #[arg(long)]
    pub collector: String,
    /// Seconds between reports.
    #[arg(long, default_value_t = 15.0)]
    pub interval: f64,
    /// Cluster name (directory under rrds/).
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Host name to report (default: this machine's, sanitized).
    #[arg(long)]
    pub name: Option<String>,
    /// Node UUID (default: DMI product UUID, else machine-id).
    #[arg(long)]
    pub uuid: Option<String>,
    /// libvirt URI for VM metrics (`none` for host metrics only).
    #[arg(long, default_value = "qemu:///system")]
    pub libvirt: String,
    /// File holding the cluster key (else `AMVM_CLUSTER_KEY`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Stop after this many reports.
    #[arg(long)]
    pub count: Option<u64>,
    /// Serve the authenticated control endpoint (migrate, progress, cancel, sleep, wake) for the
    /// controller on this TCP address, HOST:PORT (off by default).
    #[arg(long)]
    pub control: Option<String>,
    /// Shell command that puts this node to sleep (`sleep` is refused without it), e.g.
    /// `systemctl suspend` or, in the lab, a write to the node's cgroup.freeze.
    #[arg(long)]
    pub sleep_cmd: Option<String>,
    /// Shell command that wakes another node, named by $AMVM_WAKE_HOST (`wake` is refused
    /// without it), e.g. `wakeonlan $(cat /etc/amvm/mac-$AMVM_WAKE_HOST)`.
    #[arg(long)]
    pub wake_cmd: Option<String>,
}

/// `amvm collector`: receive reports and store them as RRD files.
#[derive(Debug, Args)]
pub struct CollectorArgs {
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:8649")]
    pub listen: String,
    /// Data directory (RRD files go to DIR/rrds/...).
    #[arg(long)]
    pub data: PathBuf,
    /// RRD step in seconds (heartbeat is 4 steps).
    #[arg(long, default_value_t = 15)]
    pub step: u32,
    /// Milliseconds samples are coalesced before they are written.
    #[arg(long, default_value_t = 5000)]
    pub flush_ms: u64,
    /// RRD writer threads.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// File holding the cluster key (else `AMVM_CLUSTER_KEY`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Print counters as JSON to stdout every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub stats_every: u64,
}

/// `amvm metrics`: read stored series.
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Print a series' values.
    Fetch(FetchArgs),
    /// Render a series as a PNG graph.
    Graph(GraphArgs),
    /// Export every VM's CPU history as a simulator trace (CSV for `amvm sim --trace`/`amvm ab`).
    Export(ExportArgs),
}

/// `amvm metrics export`: the cluster's VMs as a trace the simulator replays.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Data directory of the collector.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Window ending now: e.g. 6h, 1d, 1w.
    #[arg(long, default_value = "1d")]
    pub since: String,
    /// Step of the trace in seconds (PlanetLab: 300).
    #[arg(long, default_value_t = 300)]
    pub step: u64,
    /// Output CSV file (`-` = stdout).
    #[arg(long)]
    pub out: PathBuf,
}

/// Which series and window.
#[derive(Debug, Args)]
pub struct SeriesArgs {
    /// Data directory of the collector.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Host name (for host metrics).
    #[arg(long)]
    pub host: Option<String>,
    /// VM UUID (for VM metrics).
    #[arg(long)]
    pub vm: Option<String>,
    /// Metric name, e.g. cpu_idle, vcpu_util.
    #[arg(long)]
    pub metric: String,
    /// Window ending now: e.g. 90s, 30m, 1h, 2d, 1w.
    #[arg(long, default_value = "1h")]
    pub since: String,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub series: SeriesArgs,
    /// Consolidation: average or max.
    #[arg(long, default_value = "average")]
    pub cf: String,
    /// Resolution in seconds (librrd picks the best archive).
    #[arg(long, default_value_t = 1)]
    pub resolution: u64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub series: SeriesArgs,
    /// Output PNG file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses `90s`, `30m`, `1h`, `2d`, `1w` (or plain seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("bad duration unit in {s:?} (use s, m, h, d or w)"),
    };
    n.checked_mul(mult).filter(|v| *v > 0).with_context(|| format!("bad duration {s:?}"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn stop_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

pub fn run_agent(a: AgentArgs) -> anyhow::Result<ExitCode> {
    let key = key::load(a.key_file.as_deref())?;
    if !(a.interval.is_finite() && a.interval >= 0.1 && a.interval <= 86_400.0) {
        bail!("--interval must be between 0.1 and 86400 seconds");
    }
    let node = match &a.uuid {
        Some(u) => proto::parse_uuid(u).with_context(|| format!("bad --uuid {u:?}"))?,
        None => agent::host::node_uuid().context("no node UUID (no DMI product_uuid or machine-id); pass --uuid")?,
    };
    let host = match &a.name {
        Some(n) if proto::valid_name(n) => n.clone(),
        Some(n) => bail!("bad --name {n:?}: use 1-64 characters of A-Z a-z 0-9 . _ -"),
        None => agent::default_host_name(),
    };
    let cfg = AgentConfig {
        collector: agent::resolve(&a.collector)?,
        key,
        cluster: a.cluster,
        host,
        node,
        interval: Duration::from_secs_f64(a.interval),
        libvirt: (a.libvirt != "none").then_some(a.libvirt),
        ack_timeout: Duration::from_secs_f64((a.interval / 4.0).clamp(0.05, 1.0)),
        retries: 3,
        count: a.count,
    };
    let control = match &a.control {
        Some(addr) => Some(
            agent::control::ControlServer::start(agent::control::ControlConfig {
                listen: agent::resolve(addr)?,
                key: cfg.key.clone(),
                host: cfg.host.clone(),
                libvirt: cfg.libvirt.clone(),
                sleep_cmd: a.sleep_cmd.clone(),
                wake_cmd: a.wake_cmd.clone(),
            })
            .with_context(|| format!("cannot serve the control endpoint on {addr}"))?,
        ),
        None => {
            anyhow::ensure!(a.sleep_cmd.is_none() && a.wake_cmd.is_none(), "--sleep-cmd and --wake-cmd need --control");
            None
        }
    };
    let summary = agent::run(&cfg, &stop_flag())?;
    if let Some(c) = control {
        c.stop();
    }
    tracing::info!(?summary, "agent finished");
    Ok(ExitCode::SUCCESS)
}

pub fn run_collector(a: CollectorArgs) -> anyhow::Result<ExitCode> {
    let key = key::load(a.key_file.as_deref())?;
    let listen = agent::resolve(&a.listen)?;
    if a.step == 0 {
        bail!("--step must be positive");
    }
    let mut cfg = CollectorConfig::new(listen, a.data, key);
    cfg.step = a.step;
    cfg.flush = Duration::from_millis(a.flush_ms.max(1));
    cfg.writer_threads = a.writers.clamp(1, 64);
    let c = Collector::start(cfg)?;
    install_stop_handler();
    eprintln!("amvm collector listening on udp://{}", c.local_addr());
    let mut last = std::time::Instant::now();
    while !STOP.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if a.stats_every > 0 && last.elapsed() >= Duration::from_secs(a.stats_every) {
            println!("{}", serde_json::to_string(&c.stats())?);
            last = std::time::Instant::now();
        }
    }
    // SIGINT/SIGTERM: write what is pending before exiting.
    let stats = c.shutdown();
    eprintln!("amvm collector stopped: {}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn install_stop_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
    }
}

pub fn run_metrics(cmd: MetricsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MetricsCommand::Fetch(f) => fetch(f),
        MetricsCommand::Graph(g) => graph(g),
        MetricsCommand::Export(e) => export(e),
    }
}

fn export(e: ExportArgs) -> anyhow::Result<ExitCode> {
    let end = now();
    let start = end.saturating_sub(parse_duration(&e.since)?);
    let trace = crate::monitor::export::export_vm_trace(&e.data, &e.cluster, start, end, e.step)?;
    let csv = trace.to_csv();
    if e.out.as_os_str() == "-" {
        print!("{csv}");
    } else {
        std::fs::write(&e.out, csv).with_context(|| format!("cannot write {}", e.out.display()))?;
    }
    let steps = trace.vms.first().map_or(0, |v| v.1.len());
    eprintln!(
        "amvm metrics export: {} VMs × {steps} steps of {} s; {} empty steps filled from the nearest sample, {} VMs without samples left out",
        trace.vms.len(),
        trace.step_s,
        trace.filled,
        trace.skipped
    );
    Ok(ExitCode::SUCCESS)
}

fn series(s: &SeriesArgs) -> anyhow::Result<(SeriesKey, PathBuf, u64, u64)> {
    let key = SeriesKey::parse(&s.cluster, s.host.as_deref(), s.vm.as_deref(), &s.metric)?;
    let path = key.path(&s.data);
    if !path.exists() {
        bail!("no such series: {} does not exist", path.display());
    }
    let end = now();
    Ok((key, path, end.saturating_sub(parse_duration(&s.since)?), end))
}

fn fetch(f: FetchArgs) -> anyhow::Result<ExitCode> {
    let (key, path, start, end) = series(&f.series)?;
    let cf = match f.cf.to_ascii_lowercase().as_str() {
        "average" | "avg" => ConsolidationFn::Avg,
        "max" => ConsolidationFn::Max,
        other => bail!("bad --cf {other:?}: use average or max"),
    };
    let pts = fetch_file(&path, cf, start, end, f.resolution)?;
    if f.json {
        let points: Vec<serde_json::Value> = pts.points.iter().map(|(t, v)| serde_json::json!([t, v])).collect();
        let out = serde_json::json!({
            "metric": key.metric.name(), "file": path, "step": pts.step, "points": points,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("# {} ({}) step {} s", key.metric.name(), key.metric.help(), pts.step);
        for (t, v) in &pts.points {
            match v {
                Some(v) => println!("{t} {v}"),
                None => println!("{t} nan"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn graph(g: GraphArgs) -> anyhow::Result<ExitCode> {
    let (key, path, start, end) = series(&g.series)?;
    let title = format!("{} {}", g.series.host.as_deref().or(g.series.vm.as_deref()).unwrap_or(""), key.metric.name());
    let png = graph_png(&path, key.metric, &title, start, end)?;
    std::fs::write(&g.out, png).with_context(|| format!("cannot write {}", g.out.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("1h").unwrap(), 3600);
        assert_eq!(parse_duration("2d").unwrap(), 172_800);
        assert_eq!(parse_duration("15").unwrap(), 15);
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
    }
}
