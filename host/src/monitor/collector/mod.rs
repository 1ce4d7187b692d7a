//! `amvm collector`: receives agent reports over UDP, feeds the mirror, and stores RRD files.
//!
//! Threads: one receiver (decode → authenticate → de-duplicate → ACK → mirror + writer queue),
//! `writers` RRD writer threads (see [`writer`]), and a liveness watcher that logs hosts going
//! down (silent for 4 intervals) and coming back.
//!
//! Why UDP: a frame is one self-contained datagram, so the collector keeps no per-connection
//! state that 10,000 agents (or a flood of junk) could exhaust, a collector restart is invisible
//! to agents, and one malformed frame costs exactly that frame. Reliability comes from an
//! authenticated ACK with bounded retransmission by the agent and de-duplication by
//! (node, boot id, sequence) here; ACKs are smaller than reports and sent only for authentic
//! frames, so the collector cannot be used as a reflector.

pub mod stats;
pub mod writer;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::metric::Metric;
use super::mirror::Mirror;
use super::proto::{self, Ack, ClusterKey, Frame, ProtoError, Report};
use super::store::{Owner, SeriesKey, VMS_DIR};
use stats::{Stats, StatsSnapshot};
use writer::{Writer, WriterConfig};

/// Errors of the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot bind {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot start collector threads")]
    Spawn(#[source] std::io::Error),
    #[error("cannot reload the mirror from RRD")]
    Reload(#[source] super::store::StoreError),
}

/// Collector settings.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub key: ClusterKey,
    /// RRD step in seconds (15 by default).
    pub step: u32,
    /// How long samples wait to be coalesced before a write.
    pub flush: Duration,
    pub writer_threads: usize,
    /// Points kept per series in the mirror.
    pub mirror_window: usize,
    /// Bound on queued samples per series.
    pub max_pending: usize,
}

impl CollectorConfig {
    /// Defaults for a production collector.
    pub fn new(listen: SocketAddr, data: PathBuf, key: ClusterKey) -> Self {
        Self {
            listen,
            data,
            key,
            step: 15,
            flush: Duration::from_secs(5),
            writer_threads: 2,
            mirror_window: 240,
            max_pending: 4096,
        }
    }
}

/// A running collector. Dropping it without [`Collector::shutdown`] leaves threads running.
#[derive(Debug)]
pub struct Collector {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    mirror: Arc<Mirror>,
    receiver: Option<JoinHandle<Writer>>,
    watcher: Option<JoinHandle<()>>,
}

/// De-duplication state of one node (IPsec-style sliding window over sequence numbers).
#[derive(Debug, Clone, Copy)]
struct NodeSeq {
    boot: [u8; 16],
    highest: u64,
    window: u64,
    last_time_ms: u64,
}

/// What to do with an authentic report.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    New,
    /// Seen already in this boot: acknowledge again, store nothing.
    Duplicate,
    /// From an older agent run or too old for the window: drop silently.
    Stale,
}

impl NodeSeq {
    fn check(slot: &mut Option<NodeSeq>, r: &Report) -> Verdict {
        let Some(s) = slot else {
            *slot = Some(NodeSeq { boot: r.boot, highest: r.seq, window: 1, last_time_ms: r.time_ms });
            return Verdict::New;
        };
        if s.boot != r.boot {
            // A new agent run (fresh random boot id) must also be newer; replayed frames of an
            // earlier run are not.
            if r.time_ms <= s.last_time_ms {
                return Verdict::Stale;
            }
            *s = NodeSeq { boot: r.boot, highest: r.seq, window: 1, last_time_ms: r.time_ms };
            return Verdict::New;
        }
        s.last_time_ms = s.last_time_ms.max(r.time_ms);
        if r.seq > s.highest {
            let shift = r.seq - s.highest;
            s.window = if shift >= 64 { 1 } else { (s.window << shift) | 1 };
            s.highest = r.seq;
            return Verdict::New;
        }
        let back = s.highest - r.seq;
        if back >= 64 {
            return Verdict::Stale;
        }
        if s.window & (1 << back) != 0 {
            return Verdict::Duplicate;
        }
        s.window |= 1 << back;
        Verdict::New
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Collector {
    /// Binds the socket, reloads the mirror from RRD, and starts the threads.
    pub fn start(cfg: CollectorConfig) -> Result<Self, CollectorError> {
        let socket = UdpSocket::bind(cfg.listen).map_err(|e| CollectorError::Bind(cfg.listen, e))?;
        let local_addr = socket.local_addr().map_err(|e| CollectorError::Bind(cfg.listen, e))?;
        super::sock::set_recv_buffer(&socket, 8 << 20);
        socket.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| CollectorError::Bind(cfg.listen, e))?;
        let mirror = Arc::new(Mirror::new(cfg.mirror_window));
        let loaded = mirror.reload(&cfg.data, cfg.step.into(), unix_now()).map_err(CollectorError::Reload)?;
        tracing::info!(%local_addr, data = %cfg.data.display(), loaded, "collector started");
        let stats = Arc::new(Stats::default());
        let writer = Writer::start(
            WriterConfig {
                data: cfg.data.clone(),
                step: cfg.step,
                flush: cfg.flush,
                threads: cfg.writer_threads,
                max_pending: cfg.max_pending,
            },
            stats.clone(),
        )
        .map_err(CollectorError::Spawn)?;
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (stop, stats, mirror, key) = (stop.clone(), stats.clone(), mirror.clone(), cfg.key.clone());
            std::thread::Builder::new()
                .name("collector-recv".into())
                .spawn(move || {
                    receive_loop(&socket, &key, &stop, &stats, &mirror, &writer);
                    writer
                })
                .map_err(CollectorError::Spawn)?
        };
        let watcher = {
            let (stop, mirror) = (stop.clone(), mirror.clone());
            std::thread::Builder::new()
                .name("collector-liveness".into())
                .spawn(move || liveness_loop(&stop, &mirror))
                .map_err(CollectorError::Spawn)?
        };
        Ok(Self { local_addr, stop, stats, mirror, receiver: Some(receiver), watcher: Some(watcher) })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The mirror the scheduler reads.
    pub fn mirror(&self) -> Arc<Mirror> {
        self.mirror.clone()
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Forgets latency observations so far (after a benchmark's warm-up).
    pub fn reset_latency(&self) {
        self.stats.latency_us.reset();
    }

    /// Stops receiving, writes everything pending, and joins the threads.
    pub fn shutdown(mut self) -> StatsSnapshot {
        self.stop.store(true, Relaxed);
        if let Some(r) = self.receiver.take() {
            if let Ok(writer) = r.join() {
                writer.shutdown();
            }
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        self.stats.snapshot()
    }
}

fn receive_loop(
    socket: &UdpSocket,
    key: &ClusterKey,
    stop: &AtomicBool,
    stats: &Stats,
    mirror: &Mirror,
    writer: &Writer,
) {
    let mut buf = vec![0u8; proto::MAX_FRAME];
    let mut nodes: HashMap<[u8; 16], Option<NodeSeq>> = HashMap::new();
    let mut numbers = NodeNumbers::new(writer.data());
    let mut last_warn = Instant::now() - Duration::from_secs(60);
    let mut bad_since_warn = 0u64;
    while !stop.load(Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::warn!("collector receive: {e}");
                continue;
            }
        };
        let received = Instant::now();
        let report = match proto::decode(&buf[..n], key) {
            Ok(Frame::Report(r)) if r.host != VMS_DIR => r,
            Ok(_) => {
                stats.frames_rejected_malformed.fetch_add(1, Relaxed);
                continue;
            }
            Err(e) => {
                let counter =
                    if e == ProtoError::Tag { &stats.frames_rejected_auth } else { &stats.frames_rejected_malformed };
                counter.fetch_add(1, Relaxed);
                bad_since_warn += 1;
                tracing::debug!(%peer, "rejected frame: {e}");
                // One warning per 10 s at most: a flood must not turn into a log flood.
                if last_warn.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(%peer, count = bad_since_warn, "rejected frames (latest: {e})");
                    last_warn = Instant::now();
                    bad_since_warn = 0;
                }
                continue;
            }
        };
        let verdict = NodeSeq::check(nodes.entry(report.node).or_default(), &report);
        if verdict != Verdict::Stale {
            let ack = Ack { node: report.node, boot: report.boot, seq: report.seq }.encode(key);
            let _ = socket.send_to(&ack, peer);
        }
        if verdict != Verdict::New {
            stats.frames_duplicate.fetch_add(1, Relaxed);
            continue;
        }
        stats.frames_ok.fetch_add(1, Relaxed);
        let node = numbers.number(&report.cluster, &report.host);
        ingest(&report, node, received, stats, mirror, writer);
    }
}

/// Numbers for the nodes of each cluster, in the order the collector first heard from them,
/// kept in `DATA/rrds/<cluster>/nodes.json` (a JSON list of names: number = position + 1). Each
/// VM's `vm_node` series holds its node's number, so the RRD files say where a VM ran, and when
/// it moved, without moving its files (they are keyed by UUID).
pub struct NodeNumbers {
    data: PathBuf,
    clusters: HashMap<String, Vec<String>>,
}

impl NodeNumbers {
    pub fn new(data: &Path) -> NodeNumbers {
        NodeNumbers { data: data.to_path_buf(), clusters: HashMap::new() }
    }

    /// The file of `cluster`'s numbers.
    pub fn path(data: &Path, cluster: &str) -> PathBuf {
        data.join("rrds").join(cluster).join("nodes.json")
    }

    /// `host`'s number in `cluster` (given, and saved, on first sight). 0 when the file cannot be
    /// written (the series then says "unknown node" rather than a wrong one).
    pub fn number(&mut self, cluster: &str, host: &str) -> u32 {
        let path = Self::path(&self.data, cluster);
        let list = self.clusters.entry(cluster.to_string()).or_insert_with(|| {
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok()).unwrap_or_default()
        });
        if let Some(i) = list.iter().position(|h| h == host) {
            return i as u32 + 1;
        }
        list.push(host.to_string());
        let saved = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&list).unwrap_or_default())?;
            std::fs::rename(&tmp, &path)
        });
        match saved {
            Ok(()) => list.len() as u32,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot save node numbers: {e}");
                list.pop();
                0
            }
        }
    }
}

fn ingest(r: &Report, node: u32, received: Instant, stats: &Stats, mirror: &Mirror, writer: &Writer) {
    let now = unix_now();
    // Agent clocks may drift; a timestamp from the future would block later RRD updates.
    let agent_t = r.time_ms / 1000;
    let t = if agent_t > now + 300 { now } else { agent_t };
    let interval_s = u64::from(r.interval_ms).div_ceil(1000).max(1);
    let first_frame = !r.host_samples.is_empty();
    mirror.host_seen(
        &r.cluster,
        &r.host,
        now,
        interval_s,
        &r.os_name,
        first_frame.then(|| r.vms.iter().map(|v| v.uuid).collect()),
    );
    mirror.name_vms(r.vms.iter().map(|v| (&v.uuid, v.name.as_str())));
    let host_owner = Owner::Host(r.host.clone());
    let mut samples: Vec<(SeriesKey, Option<f64>)> = Vec::with_capacity(r.host_samples.len() + r.vms.len() * 12);
    for (m, v) in &r.host_samples {
        samples.push((SeriesKey { cluster: r.cluster.clone(), owner: host_owner.clone(), metric: *m }, clean(*m, *v)));
    }
    for vm in &r.vms {
        // vm_node is the collector's own: an agent's value for it is ignored.
        for (m, v) in vm.samples.iter().filter(|(m, _)| *m != Metric::VmNode) {
            samples
                .push((SeriesKey { cluster: r.cluster.clone(), owner: Owner::Vm(vm.uuid), metric: *m }, clean(*m, *v)));
        }
        let at = (node > 0).then_some(f64::from(node));
        samples.push((SeriesKey { cluster: r.cluster.clone(), owner: Owner::Vm(vm.uuid), metric: Metric::VmNode }, at));
    }
    stats.samples_received.fetch_add(samples.len() as u64, Relaxed);
    writer.enqueue(samples.iter().map(|(k, v)| (k.clone(), t, *v)), received);
    mirror.push(t, samples);
}

/// librrd takes only non-negative integers for `DERIVE` sources; anything else from a (buggy)
/// agent becomes unknown instead of failing the whole batch of that file.
fn clean(metric: super::metric::Metric, v: Option<f64>) -> Option<f64> {
    match metric.kind() {
        super::metric::Kind::Gauge => v,
        super::metric::Kind::Counter => v.filter(|x| (0.0..9.0e18).contains(x)).map(f64::trunc),
    }
}

fn liveness_loop(stop: &AtomicBool, mirror: &Mirror) {
    let mut was_up: HashMap<(String, String), bool> = HashMap::new();
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        for h in mirror.hosts(unix_now()) {
            let prev = was_up.insert((h.cluster.clone(), h.host.clone()), h.up);
            match (prev, h.up) {
                (Some(true), false) => {
                    tracing::warn!(cluster = %h.cluster, host = %h.host, "host down: no report for 4 intervals")
                }
                (Some(false), true) => tracing::info!(cluster = %h.cluster, host = %h.host, "host up again"),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(boot: u8, seq: u64, time_ms: u64) -> Report {
        Report {
            cluster: "c".into(),
            host: "h".into(),
            node: [1; 16],
            boot: [boot; 16],
            seq,
            time_ms,
            interval_ms: 15_000,
            os_name: String::new(),
            host_samples: Vec::new(),
            vms: Vec::new(),
            skipped: 0,
        }
    }

    #[test]
    fn reports_reach_rrd_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = ClusterKey::new(b"collector-test-key-123".to_vec()).unwrap();
        let mut cfg = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into(), key.clone());
        cfg.step = 1;
        cfg.flush = Duration::from_millis(100);
        let c = Collector::start(cfg.clone()).unwrap();
        let agent = crate::monitor::agent::AgentConfig {
            collector: c.local_addr(),
            key,
            cluster: "c".into(),
            host: "h".into(),
            node: [5; 16],
            interval: Duration::from_millis(1100),
            libvirt: None,
            ack_timeout: Duration::from_millis(500),
            retries: 3,
            count: Some(3),
        };
        let summary = crate::monitor::agent::run(&agent, &AtomicBool::new(false)).unwrap();
        assert_eq!(summary.frames_acked, 3);
        let live = c.mirror().host_utilization("c", "h");
        assert_eq!(live.mem.len(), 3, "{live:?}");
        let stats = c.shutdown();
        assert_eq!((stats.frames_ok, stats.write_errors), (3, 0));
        assert_eq!(stats.samples_written, stats.samples_received);
        assert!(dir.path().join("rrds/c/h/mem_total.rrd").exists());

        // A restarted collector has the history back, and the host is down once silent.
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        let c = Collector::start(cfg).unwrap();
        let m = c.mirror();
        let reloaded = m.host_utilization("c", "h");
        assert!(reloaded.mem.len() >= 2, "{reloaded:?}");
        assert!(reloaded.mem.iter().all(|(_, v)| (0.0..=1.0).contains(v)));
        let hosts = m.hosts(unix_now());
        assert_eq!(hosts.len(), 1);
        assert!(hosts[0].up);
        assert!(!m.hosts(unix_now() + 10)[0].up);
        c.shutdown();
    }

    #[test]
    fn node_numbers_are_stable_per_cluster_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = NodeNumbers::new(dir.path());
        assert_eq!((n.number("c", "node-b"), n.number("c", "node-a"), n.number("c", "node-b")), (1, 2, 1));
        assert_eq!(n.number("other", "node-a"), 1, "numbers are per cluster");
        let saved: Vec<String> =
            serde_json::from_slice(&std::fs::read(NodeNumbers::path(dir.path(), "c")).unwrap()).unwrap();
        assert_eq!(saved, ["node-b", "node-a"]);
        // A new collector reads them back and goes on counting.
        let mut again = NodeNumbers::new(dir.path());
        assert_eq!((again.number("c", "node-a"), again.number("c", "node-c")), (2, 3));
        // Unwritable: 0 (unknown), never a number another node has.
        let mut ro = NodeNumbers::new(Path::new("/proc/amvm-no-such-dir"));
        assert_eq!(ro.number("c", "x"), 0);
    }

    #[test]
    fn counters_are_made_rrd_safe() {
        use crate::monitor::metric::Metric;
        assert_eq!(clean(Metric::BytesIn, Some(1500.7)), Some(1500.0));
        assert_eq!(clean(Metric::BytesIn, Some(-1.0)), None);
        assert_eq!(clean(Metric::BytesIn, Some(1e300)), None);
        assert_eq!(clean(Metric::CpuIdle, Some(-1.5)), Some(-1.5));
    }

    #[test]
    fn sequence_window_dedupes_and_rejects_replays() {
        let mut s = None;
        let check = |s: &mut Option<NodeSeq>, b, q, t| NodeSeq::check(s, &report(b, q, t));
        assert_eq!(check(&mut s, 1, 10, 1000), Verdict::New);
        assert_eq!(check(&mut s, 1, 10, 1000), Verdict::Duplicate);
        assert_eq!(check(&mut s, 1, 12, 1002), Verdict::New);
        assert_eq!(check(&mut s, 1, 11, 1001), Verdict::New); // reordered, not lost
        assert_eq!(check(&mut s, 1, 11, 1001), Verdict::Duplicate);
        assert_eq!(check(&mut s, 1, 200, 1200), Verdict::New);
        assert_eq!(check(&mut s, 1, 12, 1002), Verdict::Stale); // beyond the window
        assert_eq!(check(&mut s, 2, 0, 900), Verdict::Stale); // replay of an older run
        assert_eq!(check(&mut s, 2, 0, 2000), Verdict::New); // agent restarted
        assert_eq!(check(&mut s, 2, 0, 2000), Verdict::Duplicate);
    }
}
