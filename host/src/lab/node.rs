//! One lab node: a root libvirt daemon in its own mount + UTS + network namespace
//! (`../shared/reference/libvirt-lab.md`). Two privileged daemons cannot share a mount namespace
//! (their driver state directories are fixed), so each node gets private copies of
//! `/etc/libvirt`, `/var/lib/libvirt`, `/var/cache/libvirt`, `/run/libvirt`, `/var/log/libvirt`
//! and `/etc/hosts`, bind-mounted over the real paths inside its namespace; its own host name
//! and host UUID; and a veth into the lab's bridge.
//!
//! A *holder* process (`sleep infinity`, started by `unshare`) keeps the namespaces alive; every
//! process the lab starts inside a node is entered with `nsenter` into the holder's namespaces.
//! Cleanup does not trust PIDs alone: it kills every process whose network namespace is one of
//! the lab's (by the namespace's inode, recorded as soon as it exists).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Host paths each node replaces with a private copy (the directory name under the node's
/// directory is the path with `/` turned into `-`).
const PRIVATE: [&str; 5] = ["etc/libvirt", "var/lib/libvirt", "var/cache/libvirt", "run/libvirt", "var/log/libvirt"];

/// The holder: bind-mounts the private copies, names the node, brings up loopback, records its
/// PID and keeps the namespaces alive. `$0` = node directory, `$1` = host name.
const HOLDER: &str = r#"set -e
D="$0"
for p in etc/libvirt var/lib/libvirt var/cache/libvirt run/libvirt var/log/libvirt; do
  mount --bind "$D/$(echo "$p" | tr / -)" "/$p"
done
mount --bind "$D/hosts" /etc/hosts
hostname "$1"
ip link set lo up
echo $$ > "$D/holder.pid"
exec sleep infinity
"#;

/// The directory name of a private copy of `p`.
fn private_name(p: &str) -> String {
    p.replace('/', "-")
}

/// Runs a command, failing with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nsenter` into a node's namespaces (mount, UTS, network), working directory `wd`.
pub(crate) fn nsenter(holder: u32, wd: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg("-t").arg(holder.to_string()).args(["-m", "-u", "-n"]).arg(format!("--wd={}", wd.display())).arg("--");
    c
}

/// The inode of a process's network namespace (`net:[4026532…]`).
pub(crate) fn netns_of(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_string_lossy();
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Copies the directory tree of `from` into `to` (directories only: `/var/lib/libvirt/images`
/// may hold large files that a node does not need).
fn copy_dirs(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let Ok(entries) = std::fs::read_dir(from) else { return Ok(()) };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            copy_dirs(&e.path(), &to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// What a node needs to be created.
pub(crate) struct NodeSpec {
    pub name: String,
    pub dir: PathBuf,
    pub ip: String,
    pub uuid: String,
    /// Lines of the shared `/etc/hosts` (every node by name).
    pub hosts: String,
}

/// Writes a node's private directories and configuration.
pub(crate) fn prepare(spec: &NodeSpec) -> Result<()> {
    let d = &spec.dir;
    std::fs::create_dir_all(d)?;
    for p in PRIVATE {
        // The real path must exist to be bind-mounted over (harmless where libvirt is installed).
        std::fs::create_dir_all(Path::new("/").join(p)).with_context(|| format!("cannot create /{p}"))?;
        std::fs::create_dir_all(d.join(private_name(p)))?;
    }
    run(Command::new("cp").arg("-a").arg("/etc/libvirt/.").arg(d.join("etc-libvirt")))
        .context("cannot copy /etc/libvirt (is libvirt-daemon-system installed?)")?;
    // No default network (dnsmasq, NAT) inside a node: guests need none.
    let autostart = d.join("etc-libvirt/qemu/networks/autostart");
    if autostart.is_dir() {
        std::fs::remove_dir_all(&autostart)?;
    }
    copy_dirs(Path::new("/var/lib/libvirt"), &d.join("var-lib-libvirt"))?;
    std::fs::create_dir_all(d.join("var-lib-libvirt/qemu"))?;
    std::fs::create_dir_all(d.join("var-log-libvirt/qemu"))?;
    append(
        &d.join("etc-libvirt/libvirtd.conf"),
        &format!(
            "\n# amvm lab node {}\nhost_uuid = \"{}\"\nlisten_tls = 0\nlisten_tcp = 1\nauth_tcp = \"none\"\n\
             log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
            spec.name, spec.uuid
        ),
    )?;
    // The nodes share the host's cgroup tree (they would both use machine/qemu-1-<name>); QEMU
    // runs as root with its capabilities so that it may open userfaultfd for post-copy.
    append(
        &d.join("etc-libvirt/qemu.conf"),
        "\n# amvm lab\ncgroup_controllers = [ ]\nuser = \"root\"\ngroup = \"root\"\nclear_emulator_capabilities = 0\n",
    )?;
    std::fs::write(d.join("hosts"), &spec.hosts)?;
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Starts the holder of a node; returns its PID and network namespace inode.
pub(crate) fn start_holder(spec: &NodeSpec) -> Result<(u32, u64)> {
    use std::os::unix::process::CommandExt;
    let pid_file = spec.dir.join("holder.pid");
    let _ = std::fs::remove_file(&pid_file);
    let log = std::fs::File::create(spec.dir.join("holder.log"))?;
    Command::new("unshare")
        .args(["--net", "--uts", "--mount", "--propagation", "private", "--", "sh", "-c", HOLDER])
        .arg(&spec.dir)
        .arg(&spec.name)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot run unshare (util-linux)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            let ns = netns_of(pid).context("the holder has no network namespace")?;
            return Ok((pid, ns));
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(spec.dir.join("holder.log")).unwrap_or_default();
            bail!("node {}: its namespaces did not come up within 10 s: {}", spec.name, log.trim());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gives the node its address on the lab bridge (a veth pair, `host_if` on the bridge side).
pub(crate) fn connect(spec: &NodeSpec, holder: u32, host_if: &str, bridge: &str, prefix_len: u8) -> Result<()> {
    run(Command::new("ip")
        .args(["link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns"])
        .arg(holder.to_string()))?;
    run(Command::new("ip").args(["link", "set", host_if, "master", bridge, "up"]))?;
    let mut c = Command::new("nsenter");
    c.arg("-t").arg(holder.to_string()).arg("-n").args([
        "ip",
        "addr",
        "add",
        &format!("{}/{prefix_len}", spec.ip),
        "dev",
        "eth0",
    ]);
    run(&mut c)?;
    let mut c = Command::new("nsenter");
    c.arg("-t").arg(holder.to_string()).arg("-n").args(["ip", "link", "set", "eth0", "up"]);
    run(&mut c)?;
    Ok(())
}

/// Starts virtlogd and libvirtd inside the node and waits until libvirtd answers on TCP.
pub(crate) fn start_daemons(spec: &NodeSpec, holder: u32) -> Result<()> {
    let d = &spec.dir;
    run(nsenter(holder, d).args(["virtlogd", "-d", "-p"]).arg(d.join("virtlogd.pid")))
        .context("cannot start virtlogd (libvirt-daemon-system)")?;
    run(nsenter(holder, d).args(["libvirtd", "-d", "-l", "-p"]).arg(d.join("libvirtd.pid")))
        .context("cannot start libvirtd (libvirt-daemon-system)")?;
    let addr: std::net::SocketAddr = format!("{}:16509", spec.ip).parse()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(d.join("var-log-libvirt/libvirtd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "node {}: libvirtd does not answer on {addr} after 20 s; its log ends: {}",
                spec.name,
                tail.join(" | ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// PIDs of every process in one of the network namespaces `ns`.
pub fn processes_in(ns: &[u64]) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && netns_of(pid).is_some_and(|n| ns.contains(&n)))
        .collect()
}

/// Kills every process in the namespaces `ns` (TERM, then KILL after 5 s); returns how many
/// there were.
pub(crate) fn kill_namespaces(ns: &[u64]) -> usize {
    let pids = processes_in(ns);
    for &p in &pids {
        // SAFETY: plain syscall on a PID.
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(ns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in processes_in(ns) {
        // SAFETY: as above.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(ns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    pids.len()
}

/// Network interfaces whose name starts with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)).collect()
}
