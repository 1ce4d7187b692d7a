//! The controller moves a VM with a volume (issue #11, items 3 and 4, on the live world): a
//! private tgtd on this machine is the disk array, `amvm lab up --volumes` runs two libvirt nodes
//! with an agent in each and a controller whose live world knows the array. An operator creates
//! a volume and attaches it to a guest with `amvm volume`; the guest writes a checksummed,
//! sequence-numbered pattern to it. The guest's node is put into maintenance through the API:
//! while the other node cannot reach the array's portal (a firewall rule in its namespace) the
//! guest stays where it is — a node that cannot reach the array is no destination, not even to
//! evacuate; once the rule is gone the controller live-migrates the guest there through the
//! agents, moving the volume's mapping with it. Afterwards the volume is mapped to exactly the
//! node the guest runs on, the controller's database records that connection and the move, and
//! every block the guest wrote verifies, in the guest and on the array's backing file.
//!
//! Needs root, libvirt's daemons, tgt, qemu-block-extra and iptables
//! (scripts/install-deps.sh --tests); skips with the reason otherwise.

#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use amvm_engine::volume::daemon::{free_port, TgtDaemon};
use amvm_engine::volume::{ArrayConfig, DiskArray, Initiator, TgtArray};
use amvm_host::lab::{self, LabState, NodeRecord};
use lab_common::{console, field, wait_for, writes_continue, Api};
use serde_json::Value;

mod lab_common;

const AMVM: &str = env!("CARGO_BIN_EXE_amvm");
const LISTEN: &str = "127.0.0.1:18495";
const SUBNET: &str = "10.81.0";
const IFPREFIX: &str = "avlv";

fn amvm(args: &[&str]) -> String {
    let out = Command::new(AMVM).args(args).output().unwrap();
    assert!(out.status.success(), "amvm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// iptables in a node's network namespace (entered through its holder process).
fn node_iptables(n: &NodeRecord, args: &[&str]) {
    let st = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", n.holder_pid))
        .arg("iptables")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "iptables {args:?} in {}'s namespace", n.name);
}

#[test]
fn the_controller_moves_a_guest_with_its_volume_only_to_a_node_that_reaches_the_array() {
    let extra = [
        ("/usr/sbin/tgtd", "tgt"),
        ("/usr/sbin/iptables", "iptables"),
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so", "qemu-block-extra (bookworm-backports)"),
    ];
    if let Some(why) = lab_common::skip_reason(&extra, true) {
        eprintln!("skipping the live lab volume test: {why}");
        return;
    }
    let dir = std::env::temp_dir().join("amvm-lab-volume-live");
    if dir.exists() {
        amvm(&["lab", "--dir", dir.to_str().unwrap(), "down"]);
    }
    if std::net::TcpStream::connect(LISTEN).is_ok() {
        eprintln!("skipping the live lab volume test: something already listens on {LISTEN}");
        return;
    }
    let image = lab_common::guest_image();
    let t0 = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let control = 21000 + ((std::process::id() + 5000) % 10000) as u16;
    let portal = free_port();
    let _tgtd = TgtDaemon::start(control, portal).expect("start tgtd");
    let cfg_path = work.path().join("volumes.toml");
    let cfg = ArrayConfig::local(&format!("{SUBNET}.1:{portal}"), control, &work.path().join("pool"));
    std::fs::write(&cfg_path, cfg.to_toml()).unwrap();
    let array = TgtArray::new(&cfg_path);

    let d = dir.to_str().unwrap();
    let up = Command::new(AMVM)
        .args(["lab", "--dir", d, "up", "--nodes", "2", "--vms-per-node", "1", "--tcg", "--memory-mib", "160"])
        .args(["--workload", "amvm.mode=memory amvm.mem=32 amvm.dirty=4 amvm.hot=20 amvm.load=5"])
        .arg("--image")
        .arg(&image)
        .args(["--subnet", SUBNET, "--ifprefix", IFPREFIX, "--listen", LISTEN, "--step-ms", "2000"])
        .arg("--volumes")
        .arg(&cfg_path)
        .status()
        .unwrap();
    assert!(up.success(), "amvm lab up --volumes failed");
    let api = Api { listen: LISTEN, token: std::fs::read_to_string(dir.join("admin.token")).unwrap() };
    // Paused while the operator attaches the volume (idle guests would be consolidated).
    api.call("POST", "pause", "");
    let ongoing = || api.get("migrations").as_array().unwrap().iter().any(|m| m["state"] == "ONGOING");
    wait_for("no migration under way, paused", Duration::from_secs(90), || (!ongoing()).then_some(()));
    let state = LabState::load(&dir).unwrap();
    eprintln!("lab up and paused after {:.1} s", t0.elapsed().as_secs_f64());

    // The remapping's cost, measured on this array: map to a node, unmap from it.
    array.create("probe", 1 << 20, None).unwrap();
    let who = Initiator::parse(&state.nodes[0].ip).unwrap();
    let t = Instant::now();
    array.map("probe", &who).unwrap();
    let map_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    array.unmap("probe", &who).unwrap();
    let unmap_ms = t.elapsed().as_secs_f64() * 1e3;
    array.delete("probe", true).unwrap();
    eprintln!("volume remapping on this array: map {map_ms:.0} ms, unmap {unmap_ms:.0} ms");

    // The operator's commands: create and attach, on the lab controller's database.
    let db = dir.join("controller/state.db");
    let vol_args = |rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["volume", "--config", cfg_path.to_str().unwrap(), "--db", db.to_str().unwrap(), "--lab", d]
                .iter()
                .map(|s| s.to_string())
                .collect();
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let run = |rest: &[&str]| {
        let a = vol_args(rest);
        amvm(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let vm = "vm1";
    let vol = "vol1";
    run(&["create", vol, "--size", "64M"]);
    let attached = run(&["attach", vol, "--vm", vm]);
    eprintln!("{}", attached.trim());
    let src = lab::locate(&state, vm).unwrap().clone();
    let dst = state.nodes.iter().find(|n| n.name != src.name).unwrap().clone();
    assert_eq!(array.get(vol).unwrap().acl, vec![src.ip.clone()]);

    // The guest writes to it (libvirt's vdb is the guest's only disk, /dev/vda).
    wait_for("the guest's volume writer started", Duration::from_secs(30), || {
        lab::console_command(&src, vm, "volume /dev/vda 40").ok()?;
        std::thread::sleep(Duration::from_millis(700));
        console(&state, vm).contains("amvm-volume-started").then_some(())
    });
    let text = console(&state, vm);
    let started = text.lines().find(|l| l.starts_with("amvm-volume-started")).unwrap().to_string();
    let run_id: u64 = field(&started, "run").parse().unwrap();
    let blocks: u64 = field(&started, "blocks").parse().unwrap();
    let mut last = writes_continue(&state, vm, 0);

    // The destination cannot reach the array's portal; the guest's node goes into maintenance.
    let rule = ["OUTPUT", "-p", "tcp", "-d", &format!("{SUBNET}.1"), "--dport", &portal.to_string(), "-j", "REJECT"];
    let mut add = vec!["-I"];
    add.extend(rule);
    node_iptables(&dst, &add);
    let src_id = state.nodes.iter().position(|n| n.name == src.name).unwrap();
    let vms = api.get("vms");
    let vm_id =
        vms.as_array().unwrap().iter().find(|v| v["name"] == vm).expect("vm1 in the API")["id"].as_i64().unwrap();
    api.call("POST", "resume", "");
    api.call("POST", &format!("hosts/{src_id}/maintenance"), "{\"on\":true}");
    // Long enough for the agents' reach to be re-checked (2 s) and for several decision cycles
    // (2 s each): the guest must stay, as no other node reaches the array.
    std::thread::sleep(Duration::from_secs(16));
    let migs = api.get("migrations");
    let of_vm: Vec<&Value> = migs.as_array().unwrap().iter().filter(|m| m["vm"].as_i64() == Some(vm_id)).collect();
    assert!(
        of_vm.iter().all(|m| m["state"] != "SUCCEEDED" && m["state"] != "ONGOING"),
        "{vm} moved to a node that cannot reach the array: {of_vm:?}"
    );
    assert_eq!(
        lab::locate(&state, vm).unwrap().name,
        src.name,
        "{vm} stays on {} while {} cannot reach the array",
        src.name,
        dst.name
    );
    last = writes_continue(&state, vm, last);
    eprintln!("{} unreachable from {}: {vm} stayed on {} in maintenance", cfg.portal, dst.name, src.name);

    // The rule gone, the controller evacuates the node: the guest and its volume move.
    let mut del = vec!["-D"];
    del.extend(rule);
    node_iptables(&dst, &del);
    let t_move = Instant::now();
    let m = wait_for(&format!("{vm} migrated by the controller"), Duration::from_secs(150), || {
        let all = api.get("migrations");
        all.as_array()?.iter().find(|m| m["state"] == "SUCCEEDED" && m["vm"].as_i64() == Some(vm_id)).cloned()
    });
    eprintln!("controller's migration after {:.1} s: {m}", t_move.elapsed().as_secs_f64());
    assert_eq!(m["reason"], "maintenance", "{m}");
    let here = lab::locate(&state, vm).unwrap().clone();
    assert_eq!(here.name, dst.name, "{vm} runs on the node that reaches the array");

    // Mapped to exactly that node; the database records the connection and the move.
    let v = array.get(vol).unwrap();
    assert_eq!(v.acl, vec![dst.ip.clone()], "{vol} is mapped to {} only", dst.name);
    assert!(
        v.sessions.iter().all(|s| s.connections.iter().all(|(_, ip)| *ip == dst.ip)),
        "only the destination's session is open: {:?}",
        v.sessions
    );
    let atts = api.get("volumes");
    let a = atts.as_array().unwrap().iter().find(|a| a["volume"] == vol).expect("the attachment in the API");
    assert_eq!((a["node"].as_str(), a["initiator"].as_str()), (Some(dst.name.as_str()), Some(dst.ip.as_str())), "{a}");
    let moves = api.get("volumes/moves");
    let done: Vec<&Value> = moves.as_array().unwrap().iter().filter(|m| m["state"] == "SUCCEEDED").collect();
    assert_eq!(done.len(), 1, "one volume move: {moves}");
    assert_eq!(
        (done[0]["from_node"].as_str(), done[0]["to_node"].as_str()),
        (Some(src.name.as_str()), Some(dst.name.as_str()))
    );
    assert_eq!(done[0]["mode"], m["mode"], "the volume move carries the migration's mode");
    assert!(moves.as_array().unwrap().iter().all(|m| m["state"] != "ONGOING"), "a move left open: {moves}");
    let listed = run(&["list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["attachment"]["node"], dst.name.as_str(), "{listed}");

    // The controller killed for real during a volume move: the guest is sent back (its node out
    // of maintenance, the other one in), the controller gets SIGKILL once the move's journal
    // says the migration has begun, and a new controller process on the same database finishes
    // the move (the source's agent carries the migration on meanwhile).
    last = writes_continue(&state, vm, last);
    let dst_id = state.nodes.iter().position(|n| n.name == dst.name).unwrap();
    api.call("POST", &format!("hosts/{src_id}/maintenance"), "{\"on\":false}");
    api.call("POST", &format!("hosts/{dst_id}/maintenance"), "{\"on\":true}");
    let open_move = |step: &str| -> Option<Value> {
        let all = api.get("volumes/moves");
        all.as_array()?.iter().find(|m| m["state"] == "ONGOING" && m["vm"] == vm && m["step"] == step).cloned()
    };
    let second = wait_for("a second volume move at its migration", Duration::from_secs(150), || open_move("migrate"));
    let mut lab_state = LabState::load(&dir).unwrap();
    let pid = lab_state.controller_pid.expect("the lab's controller pid");
    // SAFETY: kill has no memory-safety preconditions; the PID is the lab's controller.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0, "kill -9 {pid}");
    wait_for("the killed controller gone", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
    let still_migrating = amvm_engine::qemu::libvirt::domain_activity(&src.uri(), vm).is_ok_and(|(on, _)| on)
        && amvm_engine::qemu::libvirt::domain_activity(&dst.uri(), vm).is_ok_and(|(on, _)| on);
    eprintln!(
        "controller (pid {pid}) killed during volume move {} at step {} (the guest on both nodes: {still_migrating})",
        second["id"], second["step"]
    );
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new().append(true).open(dir.join("controller.log")).unwrap();
    let mut restarted = Command::new(AMVM)
        .args(["controller", "--config"])
        .arg(dir.join("controller.toml"))
        .current_dir(&dir)
        .env("AMVM_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    lab_state.controller_pid = Some(restarted.id());
    lab_state.save().unwrap();
    wait_for("the restarted controller's API", Duration::from_secs(30), || {
        std::net::TcpStream::connect(LISTEN).ok().map(drop)
    });
    let t_restart = Instant::now();
    let resolved = wait_for("the open volume move finished by the new controller", Duration::from_secs(120), || {
        let all = api.get("volumes/moves");
        all.as_array()?.iter().find(|m| m["id"] == second["id"] && m["state"] != "ONGOING").cloned()
    });
    eprintln!("after the restart ({:.1} s): {resolved}", t_restart.elapsed().as_secs_f64());
    assert_eq!(resolved["state"], "RESOLVED", "{resolved}");
    let here = lab::locate(&state, vm).unwrap().clone();
    let v = array.get(vol).unwrap();
    assert_eq!(v.acl, vec![here.ip.clone()], "{vol} is mapped to {} only, where {vm} runs", here.name);
    let atts = api.get("volumes");
    let a = atts.as_array().unwrap().iter().find(|a| a["volume"] == vol).expect("the attachment in the API");
    assert_eq!(a["node"].as_str(), Some(here.name.as_str()), "the recorded connection: {a}");
    eprintln!("volume move {} resolved: {vm} on {}, {vol} mapped there only", second["id"], here.name);
    let log = std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("volume move")) {
        eprintln!("  controller.log: {}", l.trim());
    }

    // The writes went on and every acknowledged one verifies.
    last = writes_continue(&state, vm, last);
    let seen = console(&state, vm).lines().filter(|l| l.starts_with("amvm-verify")).count();
    lab::console_command(&here, vm, "verify").unwrap();
    let verdict = wait_for("the guest's verdict", Duration::from_secs(60), || {
        console(&state, vm).lines().filter(|l| l.starts_with("amvm-verify")).nth(seen).map(str::to_string)
    });
    eprintln!("guest: {verdict}");
    assert!(verdict.contains("ok=true") && verdict.contains("errors=0"), "{verdict}");
    let final_acked: u64 = field(&verdict, "acked").parse().unwrap();
    assert!(final_acked >= last);
    let file = amvm_guest::volume::verify(Path::new(&v.path), run_id, blocks, final_acked).unwrap();
    assert!(file.ok(), "the array's file: {file:?}");

    api.call("POST", &format!("hosts/{dst_id}/maintenance"), "{\"on\":false}");
    api.call("POST", "pause", "");
    amvm(&["lab", "--dir", d, "down"]);
    // `down` stopped the restarted controller by its PID; reap it.
    let _ = restarted.wait();
    assert!(lab::node::links_with_prefix(IFPREFIX).is_empty(), "interfaces left");
    eprintln!("live lab volume test: {:.1} s", t0.elapsed().as_secs_f64());
}
