//! Booting the lab guest under QEMU and talking to its workload over the serial console.
//!
//! **Acceleration**: KVM is tried first when `/dev/kvm` can be opened; on this kind of machine a
//! KVM guest kernel may hang at boot (nested virtualization without `vmx`), so if the guest's
//! first line does not appear within `kvm_boot_timeout` the VM is killed and the same guest is
//! booted under TCG. [`Guest::accel`] and [`Guest::fallback`] say which one ran and why — a
//! missing KVM is never a failed run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::qmp::{Qmp, QmpError};

/// The line the guest's init prints once the workload is about to start.
const UP_MARKER: &str = "amvm-guest up:";

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization (`-accel kvm`).
    Kvm,
    /// QEMU's binary translator (`-accel tcg`): slower, always available.
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A direct-boot guest: kernel and initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The image `scripts/build-guest.sh DIR` wrote.
    pub fn in_dir(dir: &Path) -> Result<GuestImage, GuestError> {
        let img = GuestImage { kernel: dir.join("vmlinuz"), initrd: dir.join("initrd.img") };
        for p in [&img.kernel, &img.initrd] {
            if !p.is_file() {
                return Err(GuestError::Image(format!(
                    "{} is missing: build the guest with `scripts/build-guest.sh {}`",
                    p.display(),
                    dir.display()
                )));
            }
        }
        Ok(img)
    }
}

/// How to boot it.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    pub memory_mb: u32,
    /// Workload settings for the kernel command line, e.g. `amvm.mode=cpu amvm.load=50`.
    pub workload: String,
    /// `None`: KVM if it boots the guest, else TCG.
    pub accel: Option<Accel>,
    pub kvm_boot_timeout: Duration,
    pub tcg_boot_timeout: Duration,
    pub qemu: PathBuf,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            memory_mb: 256,
            workload: String::new(),
            accel: None,
            kvm_boot_timeout: Duration::from_secs(20),
            tcg_boot_timeout: Duration::from_secs(180),
            qemu: PathBuf::from("qemu-system-x86_64"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("guest image: {0}")]
    Image(String),
    #[error("cannot start {qemu}: {source} (Debian package qemu-system-x86)")]
    Spawn {
        qemu: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest did not boot under {accel} within {secs} s; its last console lines: {tail}")]
    Boot { accel: &'static str, secs: u64, tail: String },
    #[error("no console line matching {what} within {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("the guest's console closed (QEMU exited)")]
    Closed,
    #[error("cannot write to the guest's console: {0}")]
    Console(#[source] std::io::Error),
    #[error("runtime directory {path}: {source}")]
    RunDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Qmp(#[from] QmpError),
}

/// One `amvm-heartbeat` line of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub seq: u64,
    pub mode: String,
    pub load: u32,
    pub dirty_mbps: u32,
    pub dirtied_mb: u64,
    pub uptime_ms: u64,
}

impl Heartbeat {
    /// Parses `amvm-heartbeat seq=7 mode=cpu load=80 dirty_mbps=0 dirtied_mb=0 uptime_ms=7003`
    /// anywhere in a console line.
    pub fn parse(line: &str) -> Option<Heartbeat> {
        let rest = &line[line.find("amvm-heartbeat ")? + "amvm-heartbeat ".len()..];
        let field =
            |k: &str| rest.split_whitespace().find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
        Some(Heartbeat {
            seq: field("seq")?.parse().ok()?,
            mode: field("mode")?.to_string(),
            load: field("load")?.parse().ok()?,
            dirty_mbps: field("dirty_mbps")?.parse().ok()?,
            dirtied_mb: field("dirtied_mb")?.parse().ok()?,
            uptime_ms: field("uptime_ms")?.parse().ok()?,
        })
    }
}

/// A running guest. Dropping it kills QEMU and removes its runtime directory.
pub struct Guest {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    run_dir: PathBuf,
    /// The guest's QMP session (`run_dir/qmp.sock`).
    pub qmp: Qmp,
    /// Memory size (MiB) it was started with.
    pub memory_mb: u32,
    /// The acceleration it runs under.
    pub accel: Accel,
    /// Why KVM was not used, when it was not.
    pub fallback: Option<String>,
    /// From QEMU's start to the guest's first line.
    pub boot_time: Duration,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest").field("accel", &self.accel).field("pid", &self.child.id()).finish_non_exhaustive()
    }
}

/// QEMU's version (major, minor) from `QEMU --version`.
pub fn qemu_version(qemu: &Path) -> Option<(u32, u32)> {
    let out = Command::new(qemu).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut it = v.split('.').map(|x| x.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// Whether this process can open `/dev/kvm`.
pub fn kvm_available() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm cannot be opened: {e}"))
}

impl Guest {
    /// Boots `image`: KVM first when available and not overridden, TCG if KVM is absent or the
    /// guest does not come up under it.
    pub fn boot(image: &GuestImage, opts: &GuestOptions) -> Result<Guest, GuestError> {
        match opts.accel {
            Some(a) => Self::boot_with(image, opts, a, None, false),
            None => {
                let reason = match kvm_available() {
                    Ok(()) => match Self::boot_with(image, opts, Accel::Kvm, None, false) {
                        Ok(g) => return Ok(g),
                        Err(e) => format!("KVM: {e}"),
                    },
                    Err(why) => why,
                };
                tracing::warn!(reason = %reason, "falling back to TCG");
                Self::boot_with(image, opts, Accel::Tcg, Some(reason), false)
            }
        }
    }

    /// Starts an empty QEMU waiting for an incoming migration of a guest booted from `image`
    /// with `opts` under `accel` (which must be the source's): `-incoming defer`, so the
    /// migration's capabilities can be set before `migrate-incoming`. The guest's console
    /// continues on this process once the migration completes.
    pub fn incoming(image: &GuestImage, opts: &GuestOptions, accel: Accel) -> Result<Guest, GuestError> {
        Self::boot_with(image, opts, accel, None, true)
    }

    fn boot_with(
        image: &GuestImage,
        opts: &GuestOptions,
        accel: Accel,
        fallback: Option<String>,
        incoming: bool,
    ) -> Result<Guest, GuestError> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run_dir = std::env::temp_dir().join(format!(
            "amvm-guest-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)
            .map_err(|source| GuestError::RunDir { path: run_dir.display().to_string(), source })?;
        let qmp_path = run_dir.join("qmp.sock");
        // `pti=on` under TCG with QEMU < 9.0: QEMU 7.2's migration bitmap sync does not re-arm
        // TCG's dirty tracking, so writes through TLB entries that outlive a sync (the kernel's
        // global pages: its stacks) are not seen by pre-copy and the guest crashes on the
        // destination (fixed in QEMU 9.0: "physmem: Fix migration dirty bitmap coherency with
        // TCG memory access"). Page-table isolation reloads CR3 on every return to user space,
        // which flushes TCG's TLB: it narrows the window, it does not close it (docs/lab.md).
        let old_qemu = qemu_version(&opts.qemu).is_some_and(|(major, _)| major < 9);
        if accel == Accel::Tcg && old_qemu {
            tracing::warn!("QEMU older than 9.0 under TCG: pre-copy can lose guest writes; use QEMU >= 9.0");
        }
        let tcg_fix = if accel == Accel::Tcg && old_qemu { " pti=on" } else { "" };
        let append = format!("console=ttyS0 quiet panic=-1{tcg_fix} {}", opts.workload);
        let mut cmd = Command::new(&opts.qemu);
        cmd.args(["-accel", accel.name(), "-m", &opts.memory_mb.to_string(), "-smp", "1"])
            .args(["-nographic", "-no-reboot", "-monitor", "none", "-nodefaults", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &append])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if accel == Accel::Kvm {
            cmd.args(["-cpu", "host"]);
        }
        if incoming {
            cmd.args(["-incoming", "defer"]);
        }
        let start = Instant::now();
        let mut child =
            cmd.spawn().map_err(|source| GuestError::Spawn { qemu: opts.qemu.display().to_string(), source })?;
        let stdin = child.stdin.take().ok_or(GuestError::Closed)?;
        let (tx, lines) = mpsc::channel();
        for out in [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // QEMU creates the socket at start; if it exits first, say what it printed.
        let qmp_deadline = Instant::now() + Duration::from_secs(10);
        let qmp = loop {
            match Qmp::connect(&qmp_path, Duration::from_millis(200)) {
                Ok(q) => break q,
                Err(e) => {
                    let exited = !matches!(child.try_wait(), Ok(None));
                    if exited || Instant::now() >= qmp_deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        let _ = std::fs::remove_dir_all(&run_dir);
                        let printed: Vec<String> = lines.try_iter().take(5).collect();
                        if exited {
                            return Err(GuestError::Boot {
                                accel: accel.name(),
                                secs: start.elapsed().as_secs(),
                                tail: printed.join(" | "),
                            });
                        }
                        return Err(e.into());
                    }
                }
            }
        };
        let mut guest = Guest {
            child,
            stdin,
            lines,
            run_dir,
            qmp,
            memory_mb: opts.memory_mb,
            accel,
            fallback,
            boot_time: Duration::ZERO,
        };
        if incoming {
            return Ok(guest);
        }
        let timeout = if accel == Accel::Kvm { opts.kvm_boot_timeout } else { opts.tcg_boot_timeout };
        let mut tail: Vec<String> = Vec::new();
        let deadline = start + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match guest.lines.recv_timeout(left) {
                Ok(line) if line.contains(UP_MARKER) => break,
                Ok(line) => {
                    tail.push(line);
                    if tail.len() > 5 {
                        tail.remove(0);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(GuestError::Boot {
                        accel: accel.name(),
                        secs: timeout.as_secs(),
                        tail: tail.join(" | "),
                    });
                }
            }
        }
        guest.boot_time = start.elapsed();
        Ok(guest)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The guest's run state as QMP reports it (`running`, `paused`, `postmigrate`, `inmigrate`,
    /// `finish-migrate`, …).
    pub fn run_state(&mut self) -> Result<String, GuestError> {
        let st = self.qmp.execute("query-status", serde_json::Value::Null)?;
        Ok(st["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// Stops QEMU at once (the source after a completed migration).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends one workload command (`load 80`, `dirty 120`, `mode memory`, `quit`).
    pub fn send(&mut self, command: &str) -> Result<(), GuestError> {
        writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush()).map_err(GuestError::Console)
    }

    /// The next console line satisfying `want`, skipping others.
    pub fn wait_line(&self, what: &str, timeout: Duration, want: impl Fn(&str) -> bool) -> Result<String, GuestError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if want(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(GuestError::Timeout { what: what.into(), secs: timeout.as_secs() })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(GuestError::Closed),
            }
        }
    }

    /// The next heartbeat satisfying `want`.
    pub fn heartbeat(&self, timeout: Duration, want: impl Fn(&Heartbeat) -> bool) -> Result<Heartbeat, GuestError> {
        let line = self.wait_line("a heartbeat", timeout, |l| Heartbeat::parse(l).is_some_and(|h| want(&h)))?;
        Heartbeat::parse(&line).ok_or(GuestError::Closed)
    }

    /// Asks the workload to stop (the guest powers off) and waits for QEMU to exit.
    pub fn shutdown(mut self, timeout: Duration) -> Result<std::process::ExitStatus, GuestError> {
        self.send("quit")?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(GuestError::Timeout { what: "QEMU to exit".into(), secs: timeout.as_secs() })
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_parse_from_console_lines() {
        let h =
            Heartbeat::parse("\r[x] amvm-heartbeat seq=7 mode=cpu load=80 dirty_mbps=0 dirtied_mb=3 uptime_ms=7003")
                .unwrap();
        assert_eq!((h.seq, h.mode.as_str(), h.load, h.dirtied_mb, h.uptime_ms), (7, "cpu", 80, 3, 7003));
        assert!(Heartbeat::parse("amvm-heartbeat seq=x mode=cpu").is_none());
        assert!(Heartbeat::parse("random console noise").is_none());
    }

    #[test]
    fn a_missing_image_says_how_to_build_it() {
        let e = GuestImage::in_dir(Path::new("/nonexistent/guest")).unwrap_err().to_string();
        assert!(e.contains("scripts/build-guest.sh"), "{e}");
    }
}
