//! In-memory mirror of the recent window of every series, for the scheduler.
//!
//! **API boundary:** the scheduler reads only through [`Mirror`] (`hosts`, `host_utilization`,
//! `vm_utilization`, `window`); it never touches RRD files. The collector feeds the mirror on
//! the receive path (counters are turned into per-second rates here, as RRD's `DERIVE` does), and
//! [`Mirror::reload`] fills it from the RRD files at start, so a restart loses no history.
//!
//! **Invariant:** a host is *up* while its last report is at most 4 report intervals old; a host
//! that is down must not be chosen as a migration destination.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::RwLock;

use rrd::ConsolidationFn;

use super::metric::{Kind, Metric};
use super::proto::parse_uuid;
use super::store::{fetch_file, Owner, SeriesKey, StoreError, VMS_DIR};

/// Missed intervals after which a host is down.
pub const DOWN_AFTER_INTERVALS: u64 = 4;

#[derive(Debug, Default)]
struct Ring {
    points: VecDeque<(u64, f64)>,
    /// Last raw counter reading (time, value), for counters.
    last_raw: Option<(u64, f64)>,
}

#[derive(Debug, Clone)]
struct HostInfo {
    last_seen: u64,
    interval_s: u64,
    os_name: String,
}

/// Liveness and placement of one host as the collector last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    pub cluster: String,
    pub host: String,
    pub up: bool,
    /// Unix seconds of the last report (or of the last stored sample after a reload).
    pub last_seen: u64,
    pub os_name: String,
    /// VMs the host reported in its latest report.
    pub vms: Vec<[u8; 16]>,
}

/// Time-aligned utilization windows (oldest first), each value a fraction 0..=1 except where noted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Utilization {
    /// CPU busy fraction.
    pub cpu: Vec<(u64, f64)>,
    /// Memory in use (not free, buffers or cache) over total; for a VM, guest memory in use.
    pub mem: Vec<(u64, f64)>,
    /// Network: for a host, max(in, out) B/s over NIC capacity (empty when capacity is unknown);
    /// for a VM, in + out bytes per second (absolute, no capacity known).
    pub net: Vec<(u64, f64)>,
}

#[derive(Debug, Default)]
struct Inner {
    series: HashMap<SeriesKey, Ring>,
    hosts: HashMap<(String, String), HostInfo>,
    vms_of: HashMap<(String, String), Vec<[u8; 16]>>,
    vm_names: HashMap<[u8; 16], String>,
}

/// The mirror. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Mirror {
    window: usize,
    inner: RwLock<Inner>,
}

impl Mirror {
    /// A mirror keeping the last `window` points of every series.
    pub fn new(window: usize) -> Self {
        Self { window: window.max(2), inner: RwLock::new(Inner::default()) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `host` reported at `now` (unix s) with the given interval and VM list.
    pub fn host_seen(
        &self,
        cluster: &str,
        host: &str,
        now: u64,
        interval_s: u64,
        os_name: &str,
        vms: Option<Vec<[u8; 16]>>,
    ) {
        let mut g = self.write();
        let key = (cluster.to_string(), host.to_string());
        let e =
            g.hosts.entry(key.clone()).or_insert_with(|| HostInfo { last_seen: 0, interval_s, os_name: String::new() });
        e.last_seen = e.last_seen.max(now);
        e.interval_s = interval_s.max(1);
        if !os_name.is_empty() {
            e.os_name = os_name.to_string();
        }
        if let Some(vms) = vms {
            g.vms_of.insert(key, vms);
        }
    }

    /// Records the domain names VMs were reported with.
    pub fn name_vms<'a>(&self, names: impl IntoIterator<Item = (&'a [u8; 16], &'a str)>) {
        let mut g = self.write();
        for (u, n) in names {
            if !n.is_empty() && g.vm_names.get(u).is_none_or(|old| old != n) {
                g.vm_names.insert(*u, n.to_string());
            }
        }
    }

    /// The name a VM was last reported with.
    pub fn vm_name(&self, vm: &[u8; 16]) -> Option<String> {
        self.read().vm_names.get(vm).cloned()
    }

    /// Adds samples of one report (raw values: counters as readings) at time `t` (unix s).
    pub fn push(&self, t: u64, samples: impl IntoIterator<Item = (SeriesKey, Option<f64>)>) {
        let mut g = self.write();
        for (key, v) in samples {
            let kind = key.metric.kind();
            let ring = g.series.entry(key).or_default();
            let value = match (kind, v) {
                (_, None) => None,
                (Kind::Gauge, Some(v)) => Some(v),
                (Kind::Counter, Some(raw)) => {
                    let prev = ring.last_raw.replace((t, raw));
                    match prev {
                        Some((pt, pv)) if t > pt && raw >= pv => Some((raw - pv) / (t - pt) as f64),
                        _ => None,
                    }
                }
            };
            if let Some(v) = value {
                if ring.points.back().is_some_and(|(lt, _)| *lt >= t) {
                    continue;
                }
                if ring.points.len() == self.window {
                    ring.points.pop_front();
                }
                ring.points.push_back((t, v));
            }
        }
    }

    /// The recent window of one series (oldest first; counters as per-second rates).
    pub fn window(&self, key: &SeriesKey) -> Vec<(u64, f64)> {
        self.read().series.get(key).map(|r| r.points.iter().copied().collect()).unwrap_or_default()
    }

    /// Every known host with its liveness at `now` (unix s).
    pub fn hosts(&self, now: u64) -> Vec<HostStatus> {
        let g = self.read();
        let mut out: Vec<HostStatus> = g
            .hosts
            .iter()
            .map(|((c, h), i)| HostStatus {
                cluster: c.clone(),
                host: h.clone(),
                up: now.saturating_sub(i.last_seen) <= DOWN_AFTER_INTERVALS * i.interval_s,
                last_seen: i.last_seen,
                os_name: i.os_name.clone(),
                vms: g.vms_of.get(&(c.clone(), h.clone())).cloned().unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| (&a.cluster, &a.host).cmp(&(&b.cluster, &b.host)));
        out
    }

    fn get(&self, g: &Inner, cluster: &str, owner: &Owner, metric: Metric) -> Vec<(u64, f64)> {
        let key = SeriesKey { cluster: cluster.to_string(), owner: owner.clone(), metric };
        g.series.get(&key).map(|r| r.points.iter().copied().collect()).unwrap_or_default()
    }

    /// CPU, memory and network utilization windows of one host.
    pub fn host_utilization(&self, cluster: &str, host: &str) -> Utilization {
        let g = self.read();
        let o = Owner::Host(host.to_string());
        let s = |m| self.get(&g, cluster, &o, m);
        let cpu =
            s(Metric::CpuIdle).into_iter().map(|(t, idle)| (t, ((100.0 - idle) / 100.0).clamp(0.0, 1.0))).collect();
        let mem = join(&[s(Metric::MemTotal), s(Metric::MemFree), s(Metric::MemBuffers), s(Metric::MemCached)], |v| {
            (v[0] > 0.0).then(|| ((v[0] - v[1] - v[2] - v[3]) / v[0]).clamp(0.0, 1.0))
        });
        let net = join(&[s(Metric::BytesIn), s(Metric::BytesOut), s(Metric::NetCapacity)], |v| {
            (v[2] > 0.0).then(|| v[0].max(v[1]) / v[2])
        });
        Utilization { cpu, mem, net }
    }

    /// CPU, memory and network utilization windows of one VM.
    pub fn vm_utilization(&self, cluster: &str, vm: [u8; 16]) -> Utilization {
        let g = self.read();
        let o = Owner::Vm(vm);
        let s = |m| self.get(&g, cluster, &o, m);
        let pct = |v: Vec<(u64, f64)>| v.into_iter().map(|(t, p)| (t, (p / 100.0).clamp(0.0, 1.0))).collect();
        Utilization {
            cpu: pct(s(Metric::VcpuUtil)),
            mem: pct(s(Metric::VmemUtil)),
            net: join(&[s(Metric::VbytesIn), s(Metric::VbytesOut)], |v| Some(v[0] + v[1])),
        }
    }

    /// Fills the mirror from the RRD files under `data` (the last `window` points at the finest
    /// resolution, AVERAGE). Hosts appear with their last stored sample as `last_seen`.
    /// Returns the number of series loaded.
    pub fn reload(&self, data: &Path, step: u64, now: u64) -> Result<usize, StoreError> {
        let root = data.join("rrds");
        let mut loaded = 0;
        let Ok(clusters) = std::fs::read_dir(&root) else { return Ok(0) };
        for cluster in clusters.flatten() {
            let cluster_name = cluster.file_name().to_string_lossy().into_owned();
            for owner_dir in std::fs::read_dir(cluster.path()).into_iter().flatten().flatten() {
                let name = owner_dir.file_name().to_string_lossy().into_owned();
                if name == VMS_DIR {
                    for vm in std::fs::read_dir(owner_dir.path()).into_iter().flatten().flatten() {
                        if let Some(u) = parse_uuid(&vm.file_name().to_string_lossy()) {
                            loaded += self.reload_owner(&vm.path(), &cluster_name, Owner::Vm(u), step, now);
                        }
                    }
                } else {
                    loaded += self.reload_owner(&owner_dir.path(), &cluster_name, Owner::Host(name), step, now);
                }
            }
        }
        Ok(loaded)
    }

    fn reload_owner(&self, dir: &Path, cluster: &str, owner: Owner, step: u64, now: u64) -> usize {
        let mut loaded = 0;
        let mut newest = 0;
        let start = now.saturating_sub(step * self.window as u64);
        for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            let Some(metric) = file.strip_suffix(".rrd").and_then(Metric::from_name) else { continue };
            let pts = match fetch_file(&f.path(), ConsolidationFn::Avg, start, now, step) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("mirror reload: skipping {}: {e:#}", f.path().display());
                    continue;
                }
            };
            let key = SeriesKey { cluster: cluster.to_string(), owner: owner.clone(), metric };
            let mut g = self.write();
            let ring = g.series.entry(key).or_default();
            for (t, v) in pts.points.into_iter().filter_map(|(t, v)| Some((t, v?))) {
                newest = newest.max(t);
                if ring.points.len() == self.window {
                    ring.points.pop_front();
                }
                ring.points.push_back((t, v));
            }
            loaded += 1;
        }
        if let (Owner::Host(h), true) = (&owner, newest > 0) {
            self.host_seen(cluster, h, newest, step, "", None);
        }
        loaded
    }
}

/// Joins series on equal timestamps and maps each complete row through `f`.
fn join(series: &[Vec<(u64, f64)>], f: impl Fn(&[f64]) -> Option<f64>) -> Vec<(u64, f64)> {
    let Some(first) = series.first() else { return Vec::new() };
    let maps: Vec<HashMap<u64, f64>> = series.iter().skip(1).map(|s| s.iter().copied().collect()).collect();
    let mut row = Vec::with_capacity(series.len());
    first
        .iter()
        .filter_map(|(t, v0)| {
            row.clear();
            row.push(*v0);
            for m in &maps {
                row.push(*m.get(t)?);
            }
            f(&row).map(|v| (*t, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hk(m: Metric) -> SeriesKey {
        SeriesKey { cluster: "c".into(), owner: Owner::Host("h".into()), metric: m }
    }

    #[test]
    fn counters_become_rates_and_utilization_joins() {
        let m = Mirror::new(3);
        for i in 0..5u64 {
            let t = 1000 + 15 * i;
            m.push(
                t,
                [
                    (hk(Metric::CpuIdle), Some(75.0)),
                    (hk(Metric::MemTotal), Some(1000.0)),
                    (hk(Metric::MemFree), Some(100.0)),
                    (hk(Metric::MemBuffers), Some(100.0)),
                    (hk(Metric::MemCached), Some(200.0)),
                    (hk(Metric::BytesIn), Some(1500.0 * i as f64)),
                    (hk(Metric::BytesOut), Some(150.0 * i as f64)),
                    (hk(Metric::NetCapacity), Some(1000.0)),
                ],
            );
        }
        assert_eq!(m.window(&hk(Metric::BytesIn)), vec![(1030, 100.0), (1045, 100.0), (1060, 100.0)]);
        let u = m.host_utilization("c", "h");
        assert_eq!(u.cpu.len(), 3);
        assert!(u.cpu.iter().all(|(_, v)| (*v - 0.25).abs() < 1e-9));
        assert!(u.mem.iter().all(|(_, v)| (*v - 0.6).abs() < 1e-9));
        assert_eq!(u.net, vec![(1030, 0.1), (1045, 0.1), (1060, 0.1)]);
        // A counter reset yields no negative rate.
        m.push(2000, [(hk(Metric::BytesIn), Some(0.0))]);
        assert!(m.window(&hk(Metric::BytesIn)).iter().all(|(_, v)| *v >= 0.0));
    }

    #[test]
    fn hosts_go_down_after_four_silent_intervals() {
        let m = Mirror::new(10);
        m.host_seen("c", "h", 1000, 15, "Linux", Some(vec![[1; 16]]));
        assert!(m.hosts(1060)[0].up);
        assert!(!m.hosts(1061)[0].up);
        assert_eq!(m.hosts(1000)[0].vms, vec![[1; 16]]);
    }
}
