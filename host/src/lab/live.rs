//! The autonomous loop on the lab: one `amvm agent` (metrics + control endpoint) per node inside
//! its namespaces, and one `amvm controller` (live world, collector in the same process) outside,
//! so the dashboard shows the lab.
//!
//! "Asleep" in the lab is the cgroup v2 freezer: each node's processes (holder, virtlogd, libvirtd,
//! its QEMUs, its agent) are moved into `amvm-lab-PREFIX/NODE`; the agent's `--sleep-cmd` writes
//! 1 to that cgroup's `cgroup.freeze` (freezing the agent too), and the controller — outside the
//! frozen node, like a Wake-on-LAN sender — writes 0 to wake it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::node;
use super::{LabState, NodeRecord};

/// The agents' control port inside each node.
pub const CONTROL_PORT: u16 = 7070;
/// The collector's UDP port on the lab bridge.
pub const COLLECTOR_PORT: u16 = 8649;

/// The lab's default strategy (`--strategy lab`): THR + MMT + PABFD with the overload threshold at
/// 0.6 of a node's cores (three full-load TCG guests on a 2-core machine measure about 0.7 of a
/// node, never the built-ins' 0.8), underload below 0.3 (the built-ins' 1.0 evacuates every
/// node that is not overloaded, which moves guests back and forth between three nodes), and a VM
/// cool-down of 5 cycles. The built-in `model` chooses each migration's mode, as in every strategy.
pub const LAB_STRATEGY: &str =
    "name = \"lab\"\nversion = \"1\"\n\n[threshold]\nmodule = \"thr\"\n\n[threshold.params]\n\
    upper = 0.6\nlower = 0.3\n\n[selection]\nmodule = \"mmt\"\n\n[placement]\nmodule = \"pabfd\"\n\n\
    [migration_mode]\nmodule = \"model\"\n\n[rules]\n\
    persistence = 1\nvm_cooldown_cycles = 5\n";

/// How the lab runs its controller.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// API and dashboard address.
    pub listen: String,
    pub strategy: String,
    /// Real milliseconds between decision cycles.
    pub step_ms: u64,
    /// Seconds between agent reports.
    pub report_interval_s: u32,
    /// Migration mode the controller asks for.
    pub mode: String,
    /// `false`: agents only (`--no-controller`).
    pub controller: bool,
    /// The disk-array driver's configuration: the controller's `[volumes]` (`--volumes`).
    pub volumes: Option<PathBuf>,
}

/// The cgroup v2 hierarchy (`/sys/fs/cgroup` on a unified system, `/sys/fs/cgroup/unified` on a
/// hybrid one), if there is one with the freezer (`cgroup.freeze`, Linux ≥ 5.2).
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").is_file() && p.join("cgroup.max.depth").is_file())
}

/// The node's cgroup.
pub fn node_cgroup(state: &LabState, n: &NodeRecord) -> Option<PathBuf> {
    state.cgroup.as_ref().map(|c| c.join(&n.name))
}

/// Whether the node is frozen (asleep).
pub fn frozen(state: &LabState, n: &NodeRecord) -> bool {
    node_cgroup(state, n)
        .and_then(|c| std::fs::read_to_string(c.join("cgroup.freeze")).ok())
        .is_some_and(|s| s.trim() == "1")
}

/// Moves every process of the node's namespaces into its cgroup (children inherit it).
fn adopt(cg: &Path, n: &NodeRecord) -> Result<()> {
    for pid in node::processes_in(&[n.netns]) {
        // A process that exited meanwhile cannot be moved: fine.
        let _ = std::fs::write(cg.join("cgroup.procs"), pid.to_string());
    }
    Ok(())
}

/// Thaws and removes the lab's cgroups (after their processes were killed).
pub fn remove_cgroups(state: &LabState) {
    let Some(root) = &state.cgroup else { return };
    for n in &state.nodes {
        let cg = root.join(&n.name);
        let _ = std::fs::write(cg.join("cgroup.freeze"), "0");
    }
    for n in &state.nodes {
        let cg = root.join(&n.name);
        if cg.exists() {
            let _ = std::fs::write(cg.join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&cg).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = std::fs::remove_dir(root);
}

/// Thaws every node (before processes are signalled: a frozen process does not act on SIGTERM).
pub fn thaw_all(state: &LabState) {
    for n in &state.nodes {
        if let Some(cg) = node_cgroup(state, n) {
            let _ = std::fs::write(cg.join("cgroup.freeze"), "0");
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Starts the agents and, unless disabled, the controller; records their PIDs in the state.
pub fn start(state: &mut LabState, plane: &ControlPlane, say: &mut dyn FnMut(&str)) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the amvm binary")?;
    let key_file = state.dir.join("cluster.key");
    let key: [u8; 32] = rand::random();
    std::fs::write(&key_file, hex::encode(key))?;
    let collector = format!("{}.1:{COLLECTOR_PORT}", state.subnet);
    let cgroup = match cgroup2_root() {
        Some(root) => {
            let cg = root.join(format!("amvm-lab-{}", state.ifprefix));
            state.cgroup = Some(cg.clone());
            state.save()?;
            std::fs::create_dir_all(&cg).with_context(|| format!("cannot create the cgroup {}", cg.display()))?;
            Some(cg)
        }
        None => {
            say("no cgroup v2 hierarchy with the freezer: nodes cannot sleep (agents get no --sleep-cmd)");
            None
        }
    };
    for n in state.nodes.clone() {
        let cg = cgroup.as_ref().map(|c| c.join(&n.name));
        if let Some(cg) = &cg {
            std::fs::create_dir_all(cg)?;
            adopt(cg, &n)?;
        }
        let log = std::fs::File::create(n.dir.join("agent.log"))?;
        let mut cmd = node::nsenter(n.holder_pid, &n.dir);
        cmd.arg(&exe)
            .args(["agent", "--collector", &collector, "--name", &n.name, "--uuid", &n.uuid])
            .args(["--interval", &plane.report_interval_s.to_string(), "--libvirt", "qemu:///system"])
            .arg("--key-file")
            .arg(&key_file)
            .args(["--control", &format!("{}:{CONTROL_PORT}", n.ip)]);
        if let Some(cg) = &cg {
            let freeze = cg.join("cgroup.freeze");
            cmd.args(["--sleep-cmd", &format!("echo 1 > {}", shell_quote(&freeze.to_string_lossy()))]);
        }
        let child = cmd
            .env("AMVM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start amvm agent")?;
        // nsenter without a PID namespace execs the agent in place: this PID is the agent's.
        if let Some(r) = state.nodes.iter_mut().find(|r| r.name == n.name) {
            r.agent_pid = Some(child.id());
        }
        state.save()?;
        if let Some(cg) = &cg {
            let _ = std::fs::write(cg.join("cgroup.procs"), child.id().to_string());
        }
        say(&format!(
            "{}: agent (metrics every {} s, control on {}:{CONTROL_PORT})",
            n.name, plane.report_interval_s, n.ip
        ));
    }
    for n in &state.nodes {
        wait_tcp(&format!("{}:{CONTROL_PORT}", n.ip), Duration::from_secs(15)).with_context(|| {
            format!("{}: the agent's control endpoint does not answer (see {}/agent.log)", n.name, n.dir.display())
        })?;
    }
    if !plane.controller {
        return Ok(());
    }
    if let Err(e) = std::net::TcpListener::bind(&plane.listen) {
        bail!(
            "cannot use {} for the lab controller ({e}): pass --listen ADDR:PORT, or --no-controller (the nodes and \
             agents are up; `amvm lab down` removes them)",
            plane.listen
        );
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    std::fs::write(
        state.dir.join("tokens.toml"),
        format!("[[token]]\nname = \"lab\"\nrole = \"admin\"\ntoken = \"{token}\"\n"),
    )?;
    std::fs::write(state.dir.join("admin.token"), &token)?;
    let mut toml = format!(
        "# written by `amvm lab up`\nlisten = \"{}\"\ndata = \"controller\"\ntokens = \"tokens.toml\"\n\
         strategy = \"{}\"\nautomation = \"automatic\"\n\n[world]\nkind = \"live\"\ncollector = \"{collector}\"\n\
         key_file = \"cluster.key\"\nreport_interval_s = {}\nstep_ms = {}\nwindow = 3\nmode = \"{}\"\n",
        plane.listen,
        if plane.strategy == "lab" {
            state.dir.join("strategy.toml").display().to_string()
        } else {
            plane.strategy.clone()
        },
        plane.report_interval_s,
        plane.step_ms,
        plane.mode
    );
    for n in &state.nodes {
        toml.push_str(&format!(
            "\n[[world.host]]\nname = \"{}\"\ncontrol = \"{}:{CONTROL_PORT}\"\nlibvirt = \"{}\"\nmigrate_uri = \"tcp://{}\"\n",
            n.name,
            n.ip,
            n.uri(),
            n.ip
        ));
        if let Some(cg) = node_cgroup(state, n) {
            let freeze = cg.join("cgroup.freeze");
            let cmd = format!("echo 0 > {}", shell_quote(&freeze.to_string_lossy()));
            toml.push_str(&format!("wake_cmd = {}\n", toml_string(&cmd)));
        }
    }
    if let Some(v) = &plane.volumes {
        // Reach of the array re-checked every 2 s (a lab changes fast); moves a killed controller
        // left open are finished at its start through this lab.
        toml.push_str(&format!(
            "\n[volumes]\nconfig = {}\nlab = \".\"\nrecheck_s = 2\n",
            toml_string(&v.to_string_lossy())
        ));
    }
    if plane.strategy == "lab" {
        std::fs::write(state.dir.join("strategy.toml"), LAB_STRATEGY)?;
    }
    let config = state.dir.join("controller.toml");
    std::fs::write(&config, toml)?;
    let log = std::fs::File::create(state.dir.join("controller.log"))?;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&exe)
        .arg("controller")
        .arg("--config")
        .arg(&config)
        .current_dir(&state.dir)
        .env("AMVM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start amvm controller")?;
    state.controller_pid = Some(child.id());
    state.api = Some(format!("http://{}", plane.listen));
    state.save()?;
    let answered = wait_tcp(&plane.listen, Duration::from_secs(30));
    if answered.is_err() || child.try_wait().ok().flatten().is_some() {
        let log = std::fs::read_to_string(state.dir.join("controller.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        bail!(
            "the lab controller did not start on {} (see {}/controller.log): {}",
            plane.listen,
            state.dir.display(),
            tail.join(" | ")
        );
    }
    say(&format!(
        "controller: http://{}/ (live world, {}; token in {}/admin.token)",
        plane.listen,
        plane.strategy,
        state.dir.display()
    ));
    Ok(())
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn wait_tcp(addr: &str, timeout: Duration) -> Result<()> {
    let a: std::net::SocketAddr = addr.parse().with_context(|| format!("bad address {addr}"))?;
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Stops the controller by its recorded PID (only if that PID still runs `amvm controller`).
pub fn stop_controller(state: &LabState) -> Option<String> {
    let pid = state.controller_pid?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    if !args.iter().any(|a| *a == b"controller") {
        return None;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    Some(format!("stopped the controller (pid {pid})"))
}
