//! `amvm lab`: several libvirt nodes on one machine (issue #10), each a root libvirtd in its own
//! namespaces ([`node`]), joined by a bridge, with direct-boot lab guests
//! (`scripts/build-guest.sh`) whose heartbeat and load are reachable from outside.
//!
//! **Invariant**: the state file (`DIR/state.json`) names every namespace (by inode), interface
//! and directory the lab created, and is written before each is created, so `down` — or an `up`
//! after a crash — removes all of it.

pub mod link;
pub mod live;
pub mod node;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amvm_engine::memory::Mode;
use amvm_engine::qemu::{libvirt, Heartbeat, MigrateOptions, Progress, QemuReport};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use virt::connect::Connect;
use virt::domain::Domain;

use node::NodeSpec;

/// The default lab directory.
pub const DEFAULT_DIR: &str = "/run/amvm-lab";

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub dir: PathBuf,
    pub nodes: usize,
    pub vms_per_node: usize,
    /// Guest memory (MiB).
    pub memory_mib: u32,
    /// Kernel command-line settings of the guests' workload (`amvm.mode=…`, see docs/lab.md).
    pub workload: String,
    /// Directory holding `vmlinuz` and `initrd.img` (`scripts/build-guest.sh`).
    pub image: PathBuf,
    /// First three octets of the lab network (`10.77.0`): the bridge is `.1`, node i `.(10+i)`.
    pub subnet: String,
    /// Prefix of the lab's interface names (bridge `PREFIXbr`, node i's veth `PREFIXi`).
    pub ifprefix: String,
    /// Try KVM first (when `/dev/kvm` opens); TCG otherwise or when a KVM guest does not come up.
    pub try_kvm: bool,
    /// Agents per node and (optionally) the controller; `None`: nodes and guests only.
    pub plane: Option<live::ControlPlane>,
}

/// One node as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub ip: String,
    pub uuid: String,
    pub dir: PathBuf,
    pub holder_pid: u32,
    /// Inode of the node's network namespace (what cleanup kills by).
    pub netns: u64,
    pub host_if: String,
    /// The node's `amvm agent`, once started.
    #[serde(default)]
    pub agent_pid: Option<u32>,
}

impl NodeRecord {
    /// The node's libvirt daemon, from outside the namespaces.
    pub fn uri(&self) -> String {
        format!("qemu+tcp://{}/system", self.ip)
    }
}

/// A lab as recorded in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub dir: PathBuf,
    pub bridge: String,
    pub ifprefix: String,
    pub subnet: String,
    pub nodes: Vec<NodeRecord>,
    /// Guests by name, with the node each was started on.
    pub vms: Vec<(String, String)>,
    pub memory_mib: u32,
    /// `kvm` or `tcg`, and why when TCG was chosen.
    pub accel: String,
    pub accel_note: String,
    /// The lab's cgroup v2 directory (one child per node: the freezer is its sleep).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// The lab's `amvm controller` (outside the namespaces), and its API.
    #[serde(default)]
    pub controller_pid: Option<u32>,
    #[serde(default)]
    pub api: Option<String>,
}

impl LabState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<LabState> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("no lab at {} (start one with `amvm lab up`)", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a lab state file", p.display()))
    }

    pub fn save(&self) -> Result<()> {
        let p = Self::path(&self.dir);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    pub fn node(&self, name: &str) -> Result<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!("no node {name:?} in the lab (nodes: {})", names.join(", "))
        })
    }
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("amvm lab needs root (namespaces, veth interfaces and libvirt daemons)");
    }
    for (tool, pkg) in [
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
        ("libvirtd", "libvirt-daemon-system"),
        ("virtlogd", "libvirt-daemon-system"),
    ] {
        let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            || Path::new("/usr/sbin").join(tool).is_file();
        if !found {
            bail!("{tool} is missing: install the Debian package {pkg} (scripts/install-deps.sh --tests installs it)");
        }
    }
    Ok(())
}

/// A stable UUID per lab interface prefix and node.
fn node_uuid(prefix: &str, i: usize) -> String {
    let h = prefix.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{h:08x}-0000-4000-8000-{i:012x}")
}

/// The domain XML of a lab guest: direct kernel boot, its serial console on a Unix socket
/// (commands) with a log file (heartbeats), no devices it does not need. `<acpi/>` is required:
/// without it libvirt 9.0 passes `-no-acpi`, which QEMU 9+ no longer has.
pub fn domain_xml(
    name: &str,
    domain_type: &str,
    memory_mib: u32,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
) -> String {
    format!(
        "<domain type='{domain_type}'>\n  <name>{name}</name>\n  <memory unit='MiB'>{memory_mib}</memory>\n  <vcpu>1</vcpu>\n  \
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>{cmdline}</cmdline></os>\n  <features><acpi/></features>\n  \
         <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>\n  <devices>\n    \
         <serial type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/{name}.console'/>\
         <log file='/var/log/libvirt/qemu/{name}.console.log' append='on'/><target port='0'/></serial>\n    \
         <memballoon model='none'/>\n  </devices>\n</domain>\n",
        kernel.display(),
        initrd.display()
    )
}

/// Where a guest's console log is, seen from outside, when it runs on `node`.
pub fn console_log(node: &NodeRecord, vm: &str) -> PathBuf {
    node.dir.join("var-log-libvirt/qemu").join(format!("{vm}.console.log"))
}

/// The last heartbeat in a guest's console log on `node`.
pub fn last_heartbeat(node: &NodeRecord, vm: &str) -> Option<Heartbeat> {
    let text = std::fs::read_to_string(console_log(node, vm)).ok()?;
    text.lines().rev().find_map(Heartbeat::parse)
}

/// Waits until `vm` on `node` prints a heartbeat with `seq` above `after`.
pub fn wait_heartbeat(node: &NodeRecord, vm: &str, after: Option<u64>, timeout: Duration) -> Option<Heartbeat> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(h) = last_heartbeat(node, vm) {
            if after.is_none_or(|a| h.seq > a) {
                return Some(h);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one command line to a guest's console (its workload reads `load N`, `dirty MBPS`, …).
pub fn console_command(node: &NodeRecord, vm: &str, line: &str) -> Result<()> {
    let sock = node.dir.join("var-lib-libvirt/qemu").join(format!("{vm}.console"));
    let mut s = std::os::unix::net::UnixStream::connect(&sock)
        .with_context(|| format!("cannot reach {vm}'s console at {}", sock.display()))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    s.flush()?;
    // Give QEMU a moment to pass the line on before the connection closes.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// Removes everything a lab at `dir` created (from its state file, and any interface with its
/// prefix). Returns a line per thing removed.
pub fn down(dir: &Path) -> Result<Vec<String>> {
    require_root()?;
    let mut done = Vec::new();
    let Ok(state) = LabState::load(dir) else {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            done.push(format!("removed {} (no state file)", dir.display()));
        }
        return Ok(done);
    };
    if let Some(line) = live::stop_controller(&state) {
        done.push(line);
    }
    live::thaw_all(&state);
    let ns: Vec<u64> = state.nodes.iter().map(|n| n.netns).filter(|&n| n != 0).collect();
    let killed = node::kill_namespaces(&ns);
    live::remove_cgroups(&state);
    done.push(format!("stopped {killed} processes in {} node namespaces", ns.len()));
    for link in node::links_with_prefix(&state.ifprefix) {
        let _ = node::run(std::process::Command::new("ip").args(["link", "del", &link]));
        done.push(format!("deleted interface {link}"));
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    done.push(format!("removed {}", dir.display()));
    Ok(done)
}

/// Builds a lab (cleaning up a previous one at the same directory first); `say` gets progress.
pub fn up(cfg: &LabConfig, say: &mut dyn FnMut(&str)) -> Result<LabState> {
    require_root()?;
    if cfg.nodes < 1 || cfg.nodes > 200 {
        bail!("--nodes must be 1..=200 (got {})", cfg.nodes);
    }
    if cfg.ifprefix.is_empty() || cfg.ifprefix.len() > 8 || !cfg.ifprefix.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("the interface prefix must be 1–8 letters or digits (got {:?})", cfg.ifprefix);
    }
    let kernel = cfg.image.join("vmlinuz");
    let initrd = cfg.image.join("initrd.img");
    if !kernel.is_file() || !initrd.is_file() {
        bail!(
            "no lab guest in {}: build it with `scripts/build-guest.sh {}`",
            cfg.image.display(),
            cfg.image.display()
        );
    }
    if cfg.dir.exists() || !node::links_with_prefix(&cfg.ifprefix).is_empty() {
        say("cleaning up the previous lab");
        for line in down(&cfg.dir)? {
            say(&format!("  {line}"));
        }
        for link in node::links_with_prefix(&cfg.ifprefix) {
            node::run(std::process::Command::new("ip").args(["link", "del", &link]))?;
        }
    }
    std::fs::create_dir_all(&cfg.dir)?;
    let dir = std::fs::canonicalize(&cfg.dir)?;
    let img = dir.join("image");
    std::fs::create_dir_all(&img)?;
    std::fs::copy(&kernel, img.join("vmlinuz"))?;
    std::fs::copy(&initrd, img.join("initrd.img"))?;
    let bridge = format!("{}br", cfg.ifprefix);
    let mut state = LabState {
        dir: dir.clone(),
        bridge: bridge.clone(),
        ifprefix: cfg.ifprefix.clone(),
        subnet: cfg.subnet.clone(),
        nodes: Vec::new(),
        vms: Vec::new(),
        memory_mib: cfg.memory_mib,
        accel: String::new(),
        accel_note: String::new(),
        cgroup: None,
        controller_pid: None,
        api: None,
    };
    state.save()?;
    node::run(std::process::Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]))?;
    node::run(std::process::Command::new("ip").args(["addr", "add", &format!("{}.1/24", cfg.subnet), "dev", &bridge]))?;
    node::run(std::process::Command::new("ip").args(["link", "set", &bridge, "up"]))?;
    let names: Vec<String> = (1..=cfg.nodes).map(|i| format!("node{i}")).collect();
    let ip = |i: usize| format!("{}.{}", cfg.subnet, 10 + i);
    let mut hosts = String::from("127.0.0.1 localhost\n");
    for (i, n) in names.iter().enumerate() {
        hosts.push_str(&format!("{} {n}\n", ip(i + 1)));
    }
    for (i, name) in names.iter().enumerate() {
        let spec = NodeSpec {
            name: name.clone(),
            dir: dir.join(name),
            ip: ip(i + 1),
            uuid: node_uuid(&cfg.ifprefix, i + 1),
            hosts: hosts.clone(),
        };
        say(&format!("{name}: namespaces, libvirtd at {}", spec.ip));
        node::prepare(&spec)?;
        let (holder, netns) = node::start_holder(&spec)?;
        let host_if = format!("{}{}", cfg.ifprefix, i + 1);
        state.nodes.push(NodeRecord {
            name: name.clone(),
            ip: spec.ip.clone(),
            uuid: spec.uuid.clone(),
            dir: spec.dir.clone(),
            holder_pid: holder,
            netns,
            host_if: host_if.clone(),
            agent_pid: None,
        });
        state.save()?;
        node::connect(&spec, holder, &host_if, &bridge, 24)?;
        node::start_daemons(&spec, holder)?;
    }
    // Guests: KVM when it boots one here, else TCG (said so).
    let (mut domain_type, mut note) = ("qemu", String::from("TCG: KVM not tried"));
    let kvm_opens = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    if cfg.try_kvm && kvm_opens {
        domain_type = "kvm";
        note.clear();
    } else if cfg.try_kvm {
        note = "TCG: /dev/kvm does not open".into();
    }
    let mut k = 0;
    for nrec in state.nodes.clone().iter() {
        let conn = Connect::open(Some(&nrec.uri())).with_context(|| format!("cannot connect to {}", nrec.uri()))?;
        for _ in 0..cfg.vms_per_node {
            k += 1;
            let vm = format!("vm{k}");
            let cmdline = format!("console=ttyS0 quiet panic=-1 amvm.heartbeat=1000 {}", cfg.workload);
            let start = |ty: &str| -> Result<Option<Heartbeat>> {
                let xml = domain_xml(&vm, ty, cfg.memory_mib, &img.join("vmlinuz"), &img.join("initrd.img"), &cmdline);
                let dom =
                    Domain::define_xml(&conn, &xml).map_err(|e| anyhow::anyhow!("define {vm}: {}", e.message()))?;
                if let Err(e) = dom.create() {
                    let _ = dom.undefine();
                    bail!("start {vm}: {}", e.message());
                }
                // TCG boots the guest in a few seconds; a KVM guest that hangs here would hang for good.
                let hb = wait_heartbeat(nrec, &vm, None, Duration::from_secs(if ty == "kvm" { 15 } else { 30 }));
                if hb.is_none() {
                    let _ = dom.destroy();
                    let _ = dom.undefine();
                }
                Ok(hb)
            };
            let booted = match start(domain_type) {
                Ok(Some(h)) => Some(h),
                Ok(None) if domain_type == "kvm" => {
                    note = "TCG: a KVM guest did not print a heartbeat within 15 s".into();
                    None
                }
                Err(e) if domain_type == "kvm" => {
                    note = format!("TCG: KVM failed ({e:#})");
                    None
                }
                Ok(None) => bail!("{vm} on {} printed no heartbeat within 30 s (TCG)", nrec.name),
                Err(e) => return Err(e),
            };
            if booted.is_none() {
                domain_type = "qemu";
                say(&format!("  {}", note));
                if start(domain_type)?.is_none() {
                    bail!("{vm} on {} printed no heartbeat within 30 s (TCG)", nrec.name);
                }
            }
            say(&format!("{}: {vm} running ({})", nrec.name, if domain_type == "kvm" { "kvm" } else { "tcg" }));
            state.vms.push((vm, nrec.name.clone()));
            state.save()?;
        }
    }
    state.accel = if domain_type == "kvm" { "kvm".into() } else { "tcg".into() };
    state.accel_note = note;
    state.save()?;
    if let Some(plane) = &cfg.plane {
        live::start(&mut state, plane, say)?;
    }
    Ok(state)
}

/// A guest as seen now.
#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    pub name: String,
    pub state: String,
    pub memory_mib: u64,
    pub heartbeat: Option<HeartbeatView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatView {
    pub seq: u64,
    pub mode: String,
    pub load: u32,
    pub dirty_mbps: u32,
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub ip: String,
    pub uuid: String,
    /// `up` when its libvirtd answers, else why not.
    pub state: String,
    pub hostname: Option<String>,
    pub vms: Vec<VmStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub dir: PathBuf,
    /// The lab controller's API and dashboard, when it runs one.
    pub api: Option<String>,
    pub accel: String,
    pub accel_note: String,
    pub nodes: Vec<NodeStatus>,
}

/// Every node with the guests its libvirtd runs.
pub fn status(state: &LabState) -> LabStatus {
    let nodes = state
        .nodes
        .iter()
        .map(|n| {
            let mut ns = NodeStatus {
                name: n.name.clone(),
                ip: n.ip.clone(),
                uuid: n.uuid.clone(),
                state: "up".into(),
                hostname: None,
                vms: Vec::new(),
            };
            if live::frozen(state, n) {
                // A frozen libvirtd would never answer.
                ns.state = "asleep (frozen)".into();
                return ns;
            }
            match Connect::open(Some(&n.uri())) {
                Ok(mut c) => {
                    ns.hostname = c.get_hostname().ok();
                    for d in c.list_all_domains(0).unwrap_or_default() {
                        let name = d.get_name().unwrap_or_default();
                        let info = d.get_info().ok();
                        let active = d.is_active().unwrap_or(false);
                        ns.vms.push(VmStatus {
                            heartbeat: active.then(|| last_heartbeat(n, &name)).flatten().map(|h| HeartbeatView {
                                seq: h.seq,
                                mode: h.mode,
                                load: h.load,
                                dirty_mbps: h.dirty_mbps,
                                uptime_ms: h.uptime_ms,
                            }),
                            state: if active { "running".into() } else { "shut off".into() },
                            memory_mib: info.map_or(0, |i| i.max_mem / 1024),
                            name,
                        });
                    }
                    ns.vms.sort_by(|a, b| a.name.cmp(&b.name));
                    let _ = c.close();
                }
                Err(e) => ns.state = format!("down: {}", e.message()),
            }
            ns
        })
        .collect();
    LabStatus {
        dir: state.dir.clone(),
        api: state.api.clone(),
        accel: state.accel.clone(),
        accel_note: state.accel_note.clone(),
        nodes,
    }
}

/// The node a guest runs on now.
pub fn locate<'a>(state: &'a LabState, vm: &str) -> Result<&'a NodeRecord> {
    // A node without the guest is no error to print: libvirt's default handler would.
    virt::error::clear_error_callback();
    for n in &state.nodes {
        if live::frozen(state, n) {
            continue;
        }
        let Ok(mut c) = Connect::open(Some(&n.uri())) else { continue };
        let found = Domain::lookup_by_name(&c, vm).ok().is_some_and(|d| d.is_active().unwrap_or(false));
        let _ = c.close();
        if found {
            return Ok(n);
        }
    }
    bail!("no node runs {vm:?} (see `amvm lab status`)")
}

/// Sets a guest's CPU load (percent of its vCPU).
pub fn set_load<'a>(state: &'a LabState, vm: &str, level: u32) -> Result<&'a NodeRecord> {
    if level > 100 {
        bail!("load is a percentage of the guest's vCPU: 0..=100 (got {level})");
    }
    let n = locate(state, vm)?;
    console_command(n, vm, &format!("load {level}"))?;
    Ok(n)
}

/// A link cut to make during a lab migration: `after` post-copy has started, for `length`.
#[derive(Debug, Clone, Copy)]
pub struct LinkCutPlan {
    pub after: Duration,
    pub length: Duration,
}

/// A link cut during a lab migration, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct LinkCutReport {
    /// How long the cut was asked to last (ms).
    pub requested_ms: u64,
    /// From the migration's start to the cut (ms): the first progress sample in post-copy.
    pub cut_after_ms: f64,
    /// How long it lasted (ms).
    pub lasted_ms: f64,
    /// The node whose packet filter cut the link (the source) and its peer.
    pub node: String,
    pub peer: String,
}

/// A lab migration: libvirt's report, from where to where, and the link cut if one was asked.
#[derive(Debug, Clone, Serialize)]
pub struct LabMigration {
    #[serde(flatten)]
    pub report: QemuReport,
    pub from: String,
    pub to: String,
    pub link_cut: Option<LinkCutReport>,
}

/// Live-migrates a guest to node `to` through libvirt. With `cut_link`, the link between the
/// source and the destination is cut ([`link::LinkCut`]) once post-copy has run for
/// `cut_link.after` and restored after `cut_link.length`; the backend resumes the broken post-copy
/// (`VIR_MIGRATE_POSTCOPY_RESUME`) once the link is back.
pub fn migrate(
    state: &LabState,
    vm: &str,
    to: &str,
    opts: &MigrateOptions,
    cut_link: Option<LinkCutPlan>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<LabMigration> {
    let dst = state.node(to)?;
    let src = locate(state, vm)?;
    if src.name == dst.name {
        bail!("{vm} already runs on {to}");
    }
    if cut_link.is_some() && opts.mode == Mode::Pre {
        bail!("a link cut is for post-copy recovery: use --mode post or hybrid");
    }
    let uri = format!("tcp://{}", dst.ip);
    // The cut is made from the progress callback and lifted by a thread after `cut_link`, so the
    // backend keeps polling (and resuming) meanwhile.
    let mut lifter: Option<std::thread::JoinHandle<Result<f64>>> = None;
    let mut cut_after_ms = 0.0;
    let mut cut_error = None;
    let mut postcopy_at: Option<f64> = None;
    let result = libvirt::migrate_domain(&src.uri(), &dst.uri(), vm, Some(&uri), opts, &mut |p| {
        if let Some(plan) = cut_link {
            // Post-copy has begun when the source is paused for it (libvirt's own post-copy
            // states appear as soon as the switch is asked for, before QEMU has made it).
            if p.phase == amvm_engine::qemu::Phase::PostCopy
                && postcopy_at.is_none()
                && source_paused_for_postcopy(src, vm)
            {
                postcopy_at = Some(p.elapsed_ms);
            }
            let due = postcopy_at.is_some_and(|t| p.elapsed_ms - t >= plan.after.as_secs_f64() * 1e3);
            if due && p.phase == amvm_engine::qemu::Phase::PostCopy && lifter.is_none() && cut_error.is_none() {
                let len = plan.length;
                match link::LinkCut::cut(src, dst) {
                    Ok(cut) => {
                        cut_after_ms = p.elapsed_ms;
                        lifter = Some(std::thread::spawn(move || {
                            std::thread::sleep(len);
                            Ok(cut.restore()?.as_secs_f64() * 1e3)
                        }));
                    }
                    Err(e) => cut_error = Some(e),
                }
            }
        }
        on_progress(p);
    });
    // The link is always restored before returning, whatever the migration's outcome.
    let lasted = lifter.map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the link-restore thread panicked"))));
    let report = result.with_context(|| format!("migrating {vm} from {} to {to}", src.name))?;
    if let Some(e) = cut_error {
        return Err(e.context(format!("{vm} migrated to {to}, but the link cut was not made")));
    }
    let link_cut = match (cut_link, lasted) {
        (Some(plan), Some(lasted)) => Some(LinkCutReport {
            requested_ms: plan.length.as_millis() as u64,
            cut_after_ms,
            lasted_ms: lasted.context("cannot restore the link")?,
            node: src.name.clone(),
            peer: dst.name.clone(),
        }),
        (Some(_), None) => bail!("{vm} migrated to {to} before the cut was due: the link was not cut"),
        _ => None,
    };
    Ok(LabMigration { report, from: src.name.clone(), to: to.to_string(), link_cut })
}

/// Whether `vm` on `node` is paused for a running post-copy (the guest now runs on the destination).
fn source_paused_for_postcopy(node: &NodeRecord, vm: &str) -> bool {
    let Ok(mut c) = Connect::open(Some(&node.uri())) else { return false };
    let paused = Domain::lookup_by_name(&c, vm)
        .ok()
        .and_then(|d| d.get_state().ok())
        .is_some_and(|(st, r)| st == virt::sys::VIR_DOMAIN_PAUSED && r == virt::sys::VIR_DOMAIN_PAUSED_POSTCOPY as i32);
    let _ = c.close();
    paused
}

/// Parses `pre|post|hybrid`.
pub fn parse_mode(s: &str) -> Result<Mode> {
    s.parse::<Mode>().map_err(|e| anyhow::anyhow!("{e}"))
}
