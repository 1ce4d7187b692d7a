//! `amvm bench ingest`: synthetic agents over loopback into a real collector writing real RRD
//! files. Reports sustained RRD updates per second and receive-to-disk latency.
//!
//! Each synthetic host reports with a simulated clock that advances one step per report (a
//! backfill, starting a day ago), so a short run exercises many RRD rows per file. Senders keep a
//! window of unacknowledged frames and retransmit after a timeout, as the real agent does.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;

use crate::monitor::metric::{Metric, Scope};
use crate::monitor::proto::{self, ClusterKey, Frame, Report, VmReport};
use crate::monitor::{Collector, CollectorConfig};

/// Arguments of `amvm bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Synthetic hosts.
    #[arg(long, default_value_t = 500)]
    pub hosts: u32,
    /// VMs per synthetic host.
    #[arg(long, default_value_t = 4)]
    pub vms_per_host: u32,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Sender threads.
    #[arg(long, default_value_t = 1)]
    pub senders: u32,
    /// Unacknowledged frames per sender.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Collector RRD writer threads.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Collector flush interval (coalescing window) in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub flush_ms: u64,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Offered load in samples per second over all senders (0: as fast as acknowledgements allow).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print JSON only.
    #[arg(long)]
    pub json: bool,
}

struct Sim {
    report: Report,
    t: u64,
}

fn sim_hosts(first: u32, n: u32, vms: u32, start: u64) -> Vec<Sim> {
    (first..first + n)
        .map(|h| {
            let mut node = [0u8; 16];
            node[..4].copy_from_slice(&h.to_be_bytes());
            let vms = (0..vms)
                .map(|v| {
                    let mut uuid = [0xaa; 16];
                    uuid[..4].copy_from_slice(&h.to_be_bytes());
                    uuid[4..8].copy_from_slice(&v.to_be_bytes());
                    VmReport { uuid, name: format!("vm-{h}-{v}"), samples: Vec::new() }
                })
                .collect();
            Sim {
                report: Report {
                    cluster: "bench".into(),
                    host: format!("node{h:05}"),
                    node,
                    boot: rand::random(),
                    seq: 0,
                    time_ms: 0,
                    interval_ms: 15_000,
                    os_name: "Linux".into(),
                    host_samples: Vec::new(),
                    vms,
                    skipped: 0,
                },
                t: start,
            }
        })
        .collect()
}

/// Fills the next report of a simulated host: gauges wander, counters grow.
fn next_report(s: &mut Sim, i: u64) {
    s.t += 15;
    s.report.time_ms = s.t * 1000;
    let wave = ((i % 40) as f64) * 2.5;
    let val = |m: Metric| match m.kind() {
        crate::monitor::metric::Kind::Gauge => wave,
        crate::monitor::metric::Kind::Counter => (i * 15_000) as f64,
    };
    s.report.host_samples =
        Metric::ALL.iter().filter(|m| m.scope() == Scope::Host).map(|m| (*m, Some(val(*m)))).collect();
    for vm in &mut s.report.vms {
        vm.samples = Metric::ALL.iter().filter(|m| m.scope() == Scope::Vm).map(|m| (*m, Some(val(*m)))).collect();
    }
}

#[derive(Default)]
struct Counters {
    samples_sent: AtomicU64,
    frames: AtomicU64,
    retransmits: AtomicU64,
    unacked: AtomicU64,
}

/// How a sender paces itself.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Unacknowledged frames allowed.
    window: usize,
    /// Stop sending at this instant...
    until: Instant,
    /// ...or after this many rounds over the hosts.
    max_rounds: u64,
    /// Samples per second (0: unlimited).
    rate: f64,
}

/// Sends reports round-robin over `hosts` until `until` or after `max_rounds` rounds, then waits
/// for the outstanding acknowledgements. Returns the hosts (their clocks and sequence numbers).
fn sender(
    addr: std::net::SocketAddr,
    key: ClusterKey,
    mut hosts: Vec<Sim>,
    pace: Pace,
    c: &Counters,
) -> anyhow::Result<Vec<Sim>> {
    let Pace { window, until, max_rounds, rate } = pace;
    let start = Instant::now();
    let mut mine = 0u64;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(2)))?;
    let mut inflight: HashMap<([u8; 16], u64), (Vec<u8>, Instant)> = HashMap::new();
    let mut buf = [0u8; 256];
    let mut round = 0u64;
    let mut next = 0usize;
    let mut drain: Option<Instant> = None;
    let per_report: u64 = hosts.first().map_or(0, |h| 24 + h.report.vms.len() as u64 * 12);
    loop {
        let sending = Instant::now() < until && round < max_rounds;
        if !sending && inflight.is_empty() {
            break;
        }
        if !sending && *drain.get_or_insert_with(|| Instant::now() + Duration::from_secs(10)) < Instant::now() {
            c.unacked.fetch_add(inflight.len() as u64, Relaxed);
            break;
        }
        while sending && inflight.len() < window {
            if rate > 0.0 && mine as f64 > start.elapsed().as_secs_f64() * rate {
                break; // ahead of the offered rate
            }
            mine += per_report;
            let s = &mut hosts[next];
            next_report(s, round);
            let frames = s.report.encode(&key)?;
            let nframes = frames.len() as u64;
            for (i, f) in frames.into_iter().enumerate() {
                let _ = sock.send(&f);
                c.frames.fetch_add(1, Relaxed);
                inflight.insert((s.report.node, s.report.seq + i as u64), (f, Instant::now()));
            }
            s.report.seq += nframes;
            c.samples_sent.fetch_add(per_report, Relaxed);
            next += 1;
            if next == hosts.len() {
                next = 0;
                round += 1;
            }
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                if let Ok(Frame::Ack(a)) = proto::decode(&buf[..n], &key) {
                    inflight.remove(&(a.node, a.seq));
                }
            }
            Err(_) => {
                let now = Instant::now();
                for (f, sent) in inflight.values_mut() {
                    if now.duration_since(*sent) > Duration::from_millis(300) {
                        let _ = sock.send(f);
                        *sent = now;
                        c.retransmits.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
    Ok(hosts)
}

/// Runs one phase on all sender threads.
fn phase(
    addr: std::net::SocketAddr,
    key: &ClusterKey,
    groups: Vec<Vec<Sim>>,
    pace: Pace,
    c: &Arc<Counters>,
) -> anyhow::Result<Vec<Vec<Sim>>> {
    let pace = Pace { rate: pace.rate / groups.len().max(1) as f64, ..pace };
    let threads: Vec<_> = groups
        .into_iter()
        .map(|hosts| {
            let (key, c) = (key.clone(), c.clone());
            std::thread::spawn(move || sender(addr, key, hosts, pace, &c))
        })
        .collect();
    threads.into_iter().map(|t| t.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))?).collect()
}

/// Runs the benchmark.
pub fn run(a: IngestArgs) -> anyhow::Result<ExitCode> {
    let tmp;
    let data = match &a.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("amvm-bench-ingest").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let key = ClusterKey::new(b"bench-ingest-cluster-key".to_vec())?;
    let mut cfg = CollectorConfig::new("127.0.0.1:0".parse()?, data.clone(), key.clone());
    cfg.flush = Duration::from_millis(a.flush_ms.max(1));
    cfg.writer_threads = a.writers.max(1);
    cfg.max_pending = 1 << 16;
    let collector = Collector::start(cfg).context("starting the collector")?;
    let addr = collector.local_addr();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let start_t = (now - 86_400) / 15 * 15;
    let counters = Arc::new(Counters::default());
    let senders = a.senders.clamp(1, 16);
    let per = a.hosts.max(1).div_ceil(senders);
    let groups: Vec<Vec<Sim>> = (0..senders)
        .map(|s| s * per)
        .filter(|first| *first < a.hosts.max(1))
        .map(|first| sim_hosts(first, per.min(a.hosts.max(1) - first), a.vms_per_host, start_t))
        .collect();
    let window = a.window.max(1);

    // Warm-up: one report per host creates every RRD file (creation writes whole archives and is
    // not the steady state being measured).
    let warm = Instant::now();
    let far = warm + Duration::from_secs(3600);
    let groups = phase(addr, &key, groups, Pace { window, until: far, max_rounds: 1, rate: 0.0 }, &counters)?;
    while collector.stats().samples_written < counters.samples_sent.load(Relaxed) {
        if warm.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("warm-up did not finish writing within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let warmup_s = warm.elapsed().as_secs_f64();
    let warm_sent = counters.samples_sent.load(Relaxed);
    let base = collector.stats();
    collector.reset_latency();

    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(a.seconds.max(1));
    phase(addr, &key, groups, Pace { window, until, max_rounds: u64::MAX, rate: a.rate as f64 }, &counters)?;
    let sent_done = t0.elapsed();
    let stats = collector.shutdown();
    // Measured phase: from its first send until its last sample is on disk (final flush included).
    let elapsed = t0.elapsed().as_secs_f64();
    let written = stats.samples_written - base.samples_written;
    let calls = stats.rrd_calls - base.rrd_calls;
    let out = serde_json::json!({
        "hosts": a.hosts,
        "vms_per_host": a.vms_per_host,
        "seconds_sending": sent_done.as_secs_f64(),
        "seconds_total": elapsed,
        "writers": a.writers,
        "flush_ms": a.flush_ms,
        "offered_rate": a.rate,
        "samples_sent_measured": counters.samples_sent.load(Relaxed) - warm_sent,
        "warmup_s": warmup_s,
        "files_created_in_warmup": base.files_created,
        "samples_sent": counters.samples_sent.load(Relaxed),
        "samples_received": stats.samples_received,
        "samples_written": stats.samples_written,
        "samples_dropped": stats.samples_dropped,
        "updates_per_s": written as f64 / elapsed,
        "rrd_calls": calls,
        "samples_per_rrd_call": written as f64 / calls.max(1) as f64,
        "frames": counters.frames.load(Relaxed),
        "retransmits": counters.retransmits.load(Relaxed),
        "unacked_frames": counters.unacked.load(Relaxed),
        "duplicates": stats.frames_duplicate,
        "write_errors": stats.write_errors,
        "p50_receive_to_disk_ms": stats.p50_latency_us.map(|u| u as f64 / 1000.0),
        "p99_receive_to_disk_ms": stats.p99_latency_us.map(|u| u as f64 / 1000.0),
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}
