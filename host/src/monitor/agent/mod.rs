//! `amvm agent`: collects host (Table 1) and VM (Table 2) metrics every interval and sends them
//! to the collector, retransmitting a frame (same sequence number) until it is acknowledged or
//! the retries run out. A node without libvirt still reports its host metrics.

pub mod control;
pub mod host;
pub mod vm;

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::metric::Metric;
use super::proto::{self, Ack, ClusterKey, Frame, Report};

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot resolve collector address {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("collector address {0} resolves to nothing")]
    NoAddress(String),
    #[error("cannot open the agent socket")]
    Socket(#[source] std::io::Error),
    #[error("invalid {0}")]
    Config(String),
    #[error("cannot encode report")]
    Encode(#[source] proto::ProtoError),
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub collector: SocketAddr,
    pub key: ClusterKey,
    pub cluster: String,
    pub host: String,
    pub node: [u8; 16],
    pub interval: Duration,
    /// libvirt URI for VM metrics; `None` for host metrics only.
    pub libvirt: Option<String>,
    pub ack_timeout: Duration,
    pub retries: u32,
    /// Stop after this many reports (tests); `None` runs until stopped.
    pub count: Option<u64>,
}

/// Resolves `HOST:PORT`.
pub fn resolve(addr: &str) -> Result<SocketAddr, AgentError> {
    addr.to_socket_addrs()
        .map_err(|e| AgentError::Resolve(addr.to_string(), e))?
        .next()
        .ok_or_else(|| AgentError::NoAddress(addr.to_string()))
}

/// This machine's host name made safe for the wire and the file layout.
pub fn default_host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    sanitize_name(raw.trim())
}

/// Maps a name onto `[A-Za-z0-9._-]{1,64}` not starting with `.`.
pub fn sanitize_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' })
        .take(64)
        .collect();
    while s.starts_with('.') {
        s.remove(0);
    }
    if s.is_empty() || s == super::store::VMS_DIR {
        s.insert_str(0, "host-");
    }
    s.truncate(64);
    s
}

/// Outcome counters of an agent run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AgentSummary {
    pub reports: u64,
    pub frames_sent: u64,
    pub frames_acked: u64,
    pub retransmits: u64,
}

/// Runs the agent until `stop` is set or `count` reports were sent.
pub fn run(cfg: &AgentConfig, stop: &AtomicBool) -> Result<AgentSummary, AgentError> {
    if !proto::valid_name(&cfg.cluster) {
        return Err(AgentError::Config(format!("cluster name {:?}", cfg.cluster)));
    }
    if !proto::valid_name(&cfg.host) || cfg.host == super::store::VMS_DIR {
        return Err(AgentError::Config(format!("host name {:?}", cfg.host)));
    }
    // libvirt's default handler prints every error to stderr, also the expected ones (a domain
    // that migrated away between the listing and its statistics); they are handled as values.
    virt::error::clear_error_callback();
    let bind: SocketAddr = if cfg.collector.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| AgentError::Config("bind".into()))?;
    let socket = UdpSocket::bind(bind).map_err(AgentError::Socket)?;
    socket.connect(cfg.collector).map_err(AgentError::Socket)?;
    let boot: [u8; 16] = rand::random();
    let started = Instant::now();
    let os_name = host::os_name();
    let mut hostp = host::HostProbe::default();
    let mut vmp = cfg.libvirt.as_deref().map(vm::VmProbe::new);
    let mut seq = 0u64;
    let mut summary = AgentSummary::default();
    let mut libvirt_warned = false;
    // Prime CPU deltas so the first report already has utilization.
    hostp.collect();
    if let Some(p) = vmp.as_mut() {
        let _ = p.collect();
    }
    std::thread::sleep(Duration::from_millis(200).min(cfg.interval));
    tracing::info!(collector = %cfg.collector, host = %cfg.host, interval = ?cfg.interval, "agent started");
    let mut next = Instant::now();
    while !stop.load(Relaxed) && cfg.count.is_none_or(|c| summary.reports < c) {
        let mut host_samples = hostp.collect();
        host_samples.push((Metric::Heartbeat, Some(started.elapsed().as_secs_f64().floor())));
        let vms = match vmp.as_mut().map(vm::VmProbe::collect) {
            Some(Ok(v)) => {
                libvirt_warned = false;
                v
            }
            Some(Err(e)) => {
                if !libvirt_warned {
                    tracing::warn!("VM metrics unavailable, reporting host metrics only: {e:#}");
                    libvirt_warned = true;
                }
                Vec::new()
            }
            None => Vec::new(),
        };
        let report = Report {
            cluster: cfg.cluster.clone(),
            host: cfg.host.clone(),
            node: cfg.node,
            boot,
            seq,
            time_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            interval_ms: cfg.interval.as_millis().min(u32::MAX as u128) as u32,
            os_name: os_name.clone(),
            host_samples,
            vms,
            skipped: 0,
        };
        let frames = report.encode(&cfg.key).map_err(AgentError::Encode)?;
        for (i, f) in frames.iter().enumerate() {
            send_reliably(&socket, cfg, f, &boot, seq + i as u64, &mut summary);
        }
        seq += frames.len() as u64;
        summary.reports += 1;
        next += cfg.interval;
        let now = Instant::now();
        if next > now {
            sleep_until(next, stop);
        } else {
            next = now; // fell behind (e.g. a slow libvirt): do not burst to catch up
        }
    }
    Ok(summary)
}

fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// Sends one frame and waits for its ACK, resending up to `retries` times.
fn send_reliably(socket: &UdpSocket, cfg: &AgentConfig, frame: &[u8], boot: &[u8; 16], seq: u64, s: &mut AgentSummary) {
    let want = Ack { node: cfg.node, boot: *boot, seq };
    let mut buf = [0u8; 256];
    for attempt in 0..=cfg.retries {
        if attempt > 0 {
            s.retransmits += 1;
        }
        if let Err(e) = socket.send(frame) {
            tracing::debug!("send to collector failed: {e}");
        }
        s.frames_sent += 1;
        let deadline = Instant::now() + cfg.ack_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match socket.recv(&mut buf) {
                Ok(n) => {
                    if let Ok(Frame::Ack(a)) = proto::decode(&buf[..n], &cfg.key) {
                        if a == want {
                            s.frames_acked += 1;
                            return;
                        }
                    }
                }
                // Timeout, or ICMP "port unreachable" while the collector is down.
                Err(_) => {
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                }
            }
        }
    }
    tracing::warn!(seq, "no acknowledgement from the collector; sample batch may be lost");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("node 1/x"), "node-1-x");
        assert_eq!(sanitize_name("..."), "host-");
        assert_eq!(sanitize_name("vms"), "host-vms");
        assert_eq!(sanitize_name(&"a".repeat(100)).len(), 64);
        assert!(proto::valid_name(&sanitize_name("ünïcode.example")));
    }
}
