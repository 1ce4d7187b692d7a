//! Host metrics of paper Table 1 from Linux: /proc, statvfs, /sys.
//!
//! Parsers take the file text, so they are tested on fixed inputs; [`HostProbe`] reads the files
//! and keeps the previous CPU jiffies to turn them into percentages over the interval.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::Path;

use crate::monitor::metric::Metric;
use crate::monitor::proto::Sample;

/// CPU jiffies: (user + nice, system + irq + softirq + steal, idle + iowait, total).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuTimes {
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub total: u64,
}

/// Parses the aggregate `cpu` line and counts `cpuN` lines of /proc/stat.
pub fn parse_stat(text: &str) -> Option<(CpuTimes, u32)> {
    let mut times = None;
    let mut ncpu = 0;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.map_while(|x| x.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                let g = |i: usize| v.get(i).copied().unwrap_or(0);
                // user nice system idle iowait irq softirq steal (guest time is inside user)
                times = Some(CpuTimes {
                    user: g(0) + g(1),
                    system: g(2) + g(5) + g(6) + g(7),
                    idle: g(3) + g(4),
                    total: (0..8).map(g).sum(),
                });
            }
            Some(name) if name.starts_with("cpu") => ncpu += 1,
            _ => {}
        }
    }
    Some((times?, ncpu))
}

/// Percentages (user, system, idle) between two readings; `None` if no time passed.
pub fn cpu_percent(prev: CpuTimes, now: CpuTimes) -> Option<(f64, f64, f64)> {
    let dt = now.total.checked_sub(prev.total).filter(|d| *d > 0)? as f64;
    let d = |a: u64, b: u64| a.saturating_sub(b) as f64 * 100.0 / dt;
    Some((d(now.user, prev.user), d(now.system, prev.system), d(now.idle, prev.idle)))
}

/// /proc/loadavg → (one, five, fifteen, running, total).
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64, f64, f64)> {
    let mut f = text.split_ascii_whitespace();
    let one = f.next()?.parse().ok()?;
    let five = f.next()?.parse().ok()?;
    let fifteen = f.next()?.parse().ok()?;
    let (run, total) = f.next()?.split_once('/')?;
    Some((one, five, fifteen, run.parse().ok()?, total.parse().ok()?))
}

/// /proc/meminfo → samples in bytes.
pub fn parse_meminfo(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let metric = match name {
            "MemTotal" => Metric::MemTotal,
            "MemFree" => Metric::MemFree,
            "Shmem" => Metric::MemShared,
            "Buffers" => Metric::MemBuffers,
            "Cached" => Metric::MemCached,
            "SwapTotal" => Metric::SwapTotal,
            "SwapFree" => Metric::SwapFree,
            _ => continue,
        };
        let kib: Option<f64> = rest.split_ascii_whitespace().next().and_then(|v| v.parse().ok());
        out.push((metric, kib.map(|k| k * 1024.0)));
    }
    out
}

/// Per-interface counters from /proc/net/dev: (name, rx bytes, rx packets, tx bytes, tx packets).
pub fn parse_net_dev(text: &str) -> Vec<(String, u64, u64, u64, u64)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest.split_ascii_whitespace().map_while(|x| x.parse().ok()).collect();
            (v.len() >= 10).then(|| (name.trim().to_string(), v[0], v[1], v[8], v[9]))
        })
        .collect()
}

/// A physical NIC is backed by a device (`/sys/class/net/X/device`) and is not a bridge, bond
/// member's master, tap or veth; that leaves out the tap and bridge devices through which a KVM
/// host's VM traffic passes again.
pub fn is_physical_nic(sys_class_net: &Path, name: &str) -> bool {
    let dir = sys_class_net.join(name);
    dir.join("device").exists() && !dir.join("bridge").exists() && !dir.join("tun_flags").exists()
}

/// Filesystems that live on local block devices, from /proc/self/mounts text:
/// (device, mount point), first mount point per device only.
pub fn local_mounts(mounts: &str) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(dev), Some(mnt), Some(fstype)) = (f.next(), f.next(), f.next()) else { continue };
        let local_fs =
            matches!(fstype, "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "f2fs" | "jfs" | "reiserfs" | "zfs" | "vfat");
        if local_fs && (dev.starts_with("/dev/") || fstype == "zfs") && seen.insert(dev.to_string()) {
            out.push((dev.to_string(), unescape_mount(mnt)));
        }
    }
    out
}

/// Undoes the octal escapes (`\040` for space) of /proc/mounts fields.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (total, free for unprivileged users) bytes of the filesystem at `path`.
pub fn statvfs(path: &str) -> Option<(f64, f64)> {
    let c = CString::new(path).ok()?;
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable struct for the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as f64;
    Some((st.f_blocks as f64 * frsize, st.f_bavail as f64 * frsize))
}

/// Reads host metrics; keeps the previous CPU reading between calls.
#[derive(Debug, Default)]
pub struct HostProbe {
    prev_cpu: Option<CpuTimes>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl HostProbe {
    /// Collects one set of Table 1 samples (everything but the heartbeat). A file that cannot be
    /// read yields unknown values for its metrics, never an error.
    pub fn collect(&mut self) -> Vec<Sample> {
        let mut out = Vec::with_capacity(24);
        let load = read("/proc/loadavg").as_deref().and_then(parse_loadavg);
        for (i, m) in [Metric::LoadOne, Metric::LoadFive, Metric::LoadFifteen, Metric::ProcRun, Metric::ProcTotal]
            .into_iter()
            .enumerate()
        {
            out.push((m, load.map(|l| [l.0, l.1, l.2, l.3, l.4][i])));
        }
        let stat = read("/proc/stat").as_deref().and_then(parse_stat);
        out.push((Metric::CpuNum, stat.map(|s| f64::from(s.1))));
        let pct = match (self.prev_cpu, stat) {
            (Some(prev), Some((now, _))) => cpu_percent(prev, now),
            _ => None,
        };
        self.prev_cpu = stat.map(|s| s.0);
        out.push((Metric::CpuUser, pct.map(|p| p.0)));
        out.push((Metric::CpuSystem, pct.map(|p| p.1)));
        out.push((Metric::CpuIdle, pct.map(|p| p.2)));
        out.extend(parse_meminfo(&read("/proc/meminfo").unwrap_or_default()));

        let (mut total, mut free, mut any) = (0.0, 0.0, false);
        for (_, mnt) in local_mounts(&read("/proc/self/mounts").unwrap_or_default()) {
            if let Some((t, f)) = statvfs(&mnt) {
                total += t;
                free += f;
                any = true;
            }
        }
        out.push((Metric::DiskTotal, any.then_some(total)));
        out.push((Metric::DiskFree, any.then_some(free)));

        let sys = Path::new("/sys/class/net");
        let nics: Vec<_> = parse_net_dev(&read("/proc/net/dev").unwrap_or_default())
            .into_iter()
            .filter(|n| is_physical_nic(sys, &n.0))
            .collect();
        let sum = |f: fn(&(String, u64, u64, u64, u64)) -> u64| {
            (!nics.is_empty()).then(|| nics.iter().map(f).sum::<u64>() as f64)
        };
        out.push((Metric::BytesIn, sum(|n| n.1)));
        out.push((Metric::PktsIn, sum(|n| n.2)));
        out.push((Metric::BytesOut, sum(|n| n.3)));
        out.push((Metric::PktsOut, sum(|n| n.4)));
        // Link speed in Mbit/s; -1 or unreadable for virtual or down links.
        let speed: f64 = nics
            .iter()
            .filter_map(|n| read(&format!("/sys/class/net/{}/speed", n.0))?.trim().parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(|mbit| mbit * 1e6 / 8.0)
            .sum();
        out.push((Metric::NetCapacity, (speed > 0.0).then_some(speed)));
        out
    }
}

/// `uname -sr`-style OS name, e.g. `Linux 6.18.0`.
pub fn os_name() -> String {
    let sys = read("/proc/sys/kernel/ostype").unwrap_or_else(|| "Linux".into());
    let rel = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} {}", sys.trim(), rel.trim()).trim().to_string()
}

/// The node's UUID: DMI product UUID, else the machine id.
pub fn node_uuid() -> Option<[u8; 16]> {
    ["/sys/class/dmi/id/product_uuid", "/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| crate::monitor::proto::parse_uuid(&read(p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat =
            "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\ncpu1 50 3 25 400 10 2 1 0 0 0\nintr 1\n";
        let (t, n) = parse_stat(stat).unwrap();
        assert_eq!(n, 2);
        assert_eq!(t, CpuTimes { user: 105, system: 55, idle: 820, total: 980 });
        let later = CpuTimes { user: 155, system: 65, idle: 860, total: 1080 };
        let (u, s, i) = cpu_percent(t, later).unwrap();
        assert!((u - 50.0).abs() < 1e-9 && (s - 10.0).abs() < 1e-9 && (i - 40.0).abs() < 1e-9);
        assert_eq!(cpu_percent(t, t), None);
        assert_eq!(parse_stat("garbage"), None);

        assert_eq!(parse_loadavg("0.50 1.00 1.50 3/412 12345\n"), Some((0.5, 1.0, 1.5, 3.0, 412.0)));
        assert_eq!(parse_loadavg("0.5 x"), None);

        let mem = parse_meminfo("MemTotal:  1000 kB\nMemFree: 10 kB\nShmem: 1 kB\nBogus: 5 kB\nSwapFree: x kB\n");
        assert_eq!(
            mem,
            vec![
                (Metric::MemTotal, Some(1_024_000.0)),
                (Metric::MemFree, Some(10_240.0)),
                (Metric::MemShared, Some(1024.0)),
                (Metric::SwapFree, None)
            ]
        );

        let dev = "Inter-|   Receive\n face |bytes\n  eth0: 100 2 0 0 0 0 0 0 300 4 0 0 0 0 0 0\n lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev)[0], ("eth0".to_string(), 100, 2, 300, 4));

        let mounts = "/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n/dev/sda1 /var/lib/x ext4 rw 0 0\n/dev/sdb1 /mnt/my\\040disk xfs rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
        assert_eq!(
            local_mounts(mounts),
            vec![("/dev/sda1".into(), "/".into()), ("/dev/sdb1".into(), "/mnt/my disk".into())]
        );
    }

    #[test]
    fn probes_this_machine() {
        let mut p = HostProbe::default();
        let first = p.collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let second = p.collect();
        let get = |s: &[Sample], m| s.iter().find(|x| x.0 == m).and_then(|x| x.1);
        assert!(get(&first, Metric::CpuIdle).is_none()); // no previous reading yet
        assert!(get(&second, Metric::MemTotal).unwrap() > 0.0);
        assert!(get(&second, Metric::CpuNum).unwrap() >= 1.0);
        assert!(get(&second, Metric::ProcTotal).unwrap() >= 1.0);
        assert!(!os_name().is_empty());
    }
}
