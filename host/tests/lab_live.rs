//! The autonomous loop on real VMs (issue #10): `amvm lab up` with three libvirt nodes, an agent
//! in each and a controller on the live world outside. The controller consolidates the idle
//! guests and puts the emptied nodes to sleep (their cgroups frozen); overloading the remaining
//! node with `amvm lab load` makes it wake a node and live-migrate a guest there through the
//! agents; the guest's heartbeat continues on its new node; lowering the load again empties
//! nodes and puts them back to sleep; `down` leaves nothing behind.
//! Needs root and libvirt's daemons (scripts/install-deps.sh --tests); skips with the reason
//! otherwise.
//!
//! Strategy: the lab's default (`lab::live::LAB_STRATEGY`: THR + MMT + PABFD, upper 0.6, lower
//! 0.3, a 5-cycle VM cool-down). Then, with the controller paused, the agent's `cancel` on a real
//! pre-copy through its control endpoint: the guest stays on its source.

#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use amvm_host::monitor::agent::control::{Client, JobView, Op};
use lab_common::{wait_for, Api};
use serde_json::Value;

mod lab_common;

const AMVM: &str = env!("CARGO_BIN_EXE_amvm");
const LISTEN: &str = "127.0.0.1:18491";

fn amvm(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(AMVM).arg("lab").arg("--dir").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "amvm lab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Node name → guests it runs (from `amvm lab status --json`), frozen nodes as `None`.
fn placement(dir: &Path) -> Vec<(String, Option<Vec<String>>)> {
    let st: Value = serde_json::from_str(&amvm(dir, &["status", "--json"])).unwrap();
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["name"].as_str().unwrap().to_string();
            if n["state"].as_str().unwrap().starts_with("asleep") {
                return (name, None);
            }
            let vms = n["vms"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["state"] == "running")
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect();
            (name, Some(vms))
        })
        .collect()
}

fn frozen(cgroup: &Path, node: &str) -> bool {
    let events = std::fs::read_to_string(cgroup.join(node).join("cgroup.events")).unwrap_or_default();
    events.lines().any(|l| l == "frozen 1")
}

/// Kills the controller `old` with SIGKILL (as a crash), reaps it when this test started it, and
/// starts it again on the same configuration, recording its PID in the lab's state file.
fn restart_controller(dir: &Path, old: u32, child: Option<std::process::Child>) -> std::process::Child {
    // SAFETY: kill has no memory-safety preconditions; the PID is the lab controller's.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);
    match child {
        Some(mut c) => {
            c.wait().unwrap();
        }
        None => wait_for("the old controller gone", Duration::from_secs(10), || {
            let stat = std::fs::read_to_string(format!("/proc/{old}/stat")).unwrap_or_default();
            (stat.is_empty() || stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))).then_some(())
        }),
    }
    let log = std::fs::OpenOptions::new().append(true).open(dir.join("controller.log")).unwrap();
    let c = Command::new(AMVM)
        .arg("controller")
        .arg("--config")
        .arg(dir.join("controller.toml"))
        .current_dir(dir)
        .env("AMVM_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut st = amvm_host::lab::LabState::load(dir).unwrap();
    st.controller_pid = Some(c.id());
    st.save().unwrap();
    c
}

#[test]
fn the_controller_consolidates_sleeps_wakes_and_migrates_real_guests() {
    if let Some(why) = lab_common::skip_reason(&[], true) {
        eprintln!("skipping the live lab test: {why}");
        return;
    }
    let dir = std::env::temp_dir().join("amvm-lab-live-test");
    if dir.exists() {
        // A run of this test that failed left its lab (and controller) behind.
        amvm(&dir, &["down"]);
    }
    if std::net::TcpStream::connect(LISTEN).is_ok() {
        eprintln!("skipping the live lab test: something already listens on {LISTEN}");
        return;
    }
    let image = lab_common::guest_image();
    let t0 = Instant::now();
    let up = Command::new(AMVM)
        .arg("lab")
        .arg("--dir")
        .arg(&dir)
        .args(["up", "--nodes", "3", "--vms-per-node", "1", "--tcg", "--memory-mib", "192"])
        .args(["--workload", "amvm.mode=memory amvm.mem=48 amvm.dirty=4 amvm.hot=20 amvm.load=5"])
        .arg("--image")
        .arg(&image)
        .args(["--subnet", "10.80.0", "--ifprefix", "amvml", "--listen", LISTEN, "--step-ms", "2000"])
        .status()
        .unwrap();
    assert!(up.success(), "amvm lab up failed");
    let state = amvm_host::lab::LabState::load(&dir).unwrap();
    let cgroup = state.cgroup.clone().expect("the lab made its cgroups");
    let api = Api { listen: LISTEN, token: std::fs::read_to_string(dir.join("admin.token")).unwrap() };
    eprintln!("lab up after {:.1} s", t0.elapsed().as_secs_f64());

    // The controller sees the three nodes and the three guests through the agents.
    wait_for("3 hosts and 3 VMs in the API", Duration::from_secs(30), || {
        let hosts = api.get("hosts");
        let vms = api.get("vms");
        let names: Vec<&str> = hosts.as_array()?.iter().filter_map(|h| h["name"].as_str()).collect();
        (names == ["node1", "node2", "node3"] && vms.as_array()?.len() == 3).then_some(())
    });
    let status = api.get("status");
    eprintln!("world: {}", status["world"]);

    // Idle guests: consolidated onto one node, the two emptied nodes asleep (frozen).
    let (awake, t_sleep) =
        wait_for("consolidation onto one node and two nodes asleep", Duration::from_secs(90), || {
            let p = placement(&dir);
            let asleep: Vec<&String> = p.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| n).collect();
            let full: Vec<&(String, Option<Vec<String>>)> =
                p.iter().filter(|(_, v)| v.as_ref().is_some_and(|v| v.len() == 3)).collect();
            (asleep.len() == 2 && full.len() == 1 && asleep.iter().all(|n| frozen(&cgroup, n)))
                .then(|| (full[0].0.clone(), t0.elapsed()))
        });
    eprintln!("consolidated onto {awake}, two nodes frozen, after {:.1} s", t_sleep.as_secs_f64());
    let hosts = api.get("hosts");
    let asleep_api = hosts.as_array().unwrap().iter().filter(|h| h["state"] == "asleep").count();
    assert_eq!(asleep_api, 2, "the API shows the frozen nodes asleep: {hosts}");

    // A controller crash (SIGKILL) and restart: the nodes it put to sleep are still asleep (not
    // down), the VMs keep their ids.
    let ids = |v: &Value| -> Vec<(String, u64)> {
        let mut x: Vec<(String, u64)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["id"].as_u64().unwrap()))
            .collect();
        x.sort();
        x
    };
    let before = ids(&api.get("vms"));
    // From now on migrations are capped at 10 MB/s (about 20 s for a guest), so that the second
    // restart below happens while one runs.
    let config = dir.join("controller.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("kind = \"live\"\n", "kind = \"live\"\nbandwidth_bps = 10000000\n")).unwrap();
    let old = state.controller_pid.expect("the controller's PID is recorded");
    let mut restarted = restart_controller(&dir, old, None);
    let t_restart = Instant::now();
    wait_for("the restarted controller with two hosts asleep and the same VMs", Duration::from_secs(40), || {
        std::net::TcpStream::connect(LISTEN).ok()?;
        let hosts = api.get("hosts");
        let asleep = hosts.as_array()?.iter().filter(|h| h["state"] == "asleep").count();
        (asleep == 2 && ids(&api.get("vms")) == before).then_some(())
    });
    eprintln!("controller restarted: hosts and VM ids as before after {:.1} s", t_restart.elapsed().as_secs_f64());

    // Overload the remaining node: the controller wakes a node and moves a guest there.
    for vm in ["vm1", "vm2", "vm3"] {
        amvm(&dir, &["load", vm, "100"]);
    }
    let t_load = Instant::now();
    // Crash the controller while the move runs: the restarted one takes the job over from the
    // source's agent and ends the action with its figures.
    let key_text = std::fs::read(dir.join("cluster.key")).unwrap();
    let key = amvm_host::monitor::proto::ClusterKey::new(key_text.trim_ascii().to_vec()).unwrap();
    let agent_of = |n: &amvm_host::lab::NodeRecord| {
        Client::new(format!("{}:{}", n.ip, amvm_host::lab::live::CONTROL_PORT).parse().unwrap(), key.clone())
    };
    // (Journaled ONGOING comes before the request reaches the agent: wait for its running job.)
    let ongoing = wait_for("a migration under way at its source's agent", Duration::from_secs(60), || {
        let all = api.get("migrations");
        let m = all.as_array()?.iter().find(|m| m["state"] == "ONGOING")?;
        let from = &state.nodes[m["from_host"].as_u64()? as usize];
        let jobs: Vec<JobView> = agent_of(from).call_as(&Op::Jobs).ok()?;
        jobs.iter().any(|j| j.state == "running").then(|| m["id"].as_i64()).flatten()
    });
    restarted = restart_controller(&dir, restarted.id(), Some(restarted));
    let reconciled = wait_for("the migration ended after the restart", Duration::from_secs(90), || {
        std::net::TcpStream::connect(LISTEN).ok()?;
        let m = api.get(&format!("migrations/{ongoing}"));
        let m = m["migration"].clone();
        (m["state"] != "ONGOING").then_some(m)
    });
    eprintln!("after the restart during migration {ongoing}: {reconciled}");
    assert_eq!(reconciled["state"], "SUCCEEDED", "{reconciled}");
    assert!(reconciled["total_s"].as_f64().unwrap() > 0.0, "the figures came from the agent: {reconciled}");
    let (moved, to) = wait_for("a guest live-migrated off the overloaded node", Duration::from_secs(90), || {
        let p = placement(&dir);
        p.iter().filter(|(n, _)| *n != awake).find_map(|(n, v)| {
            let v = v.as_ref()?;
            // Only complete moves: the guest runs there and no longer on the overloaded node.
            let src = p.iter().find(|(s, _)| *s == awake)?.1.as_ref()?;
            v.iter().find(|g| !src.contains(g)).map(|g| (g.clone(), n.clone()))
        })
    });
    let overload_to_move = t_load.elapsed();
    eprintln!("{moved} moved {awake} -> {to} {:.1} s after the overload", overload_to_move.as_secs_f64());
    assert!(!frozen(&cgroup, &to), "the destination was woken");
    let dst = state.node(&to).unwrap();
    // The guest was just seen there: under TCG its first heartbeat there may take a moment.
    let hb = amvm_host::lab::wait_heartbeat(dst, &moved, None, Duration::from_secs(15))
        .expect("a heartbeat on the destination");
    let next = amvm_host::lab::wait_heartbeat(dst, &moved, Some(hb.seq), Duration::from_secs(15))
        .expect("the heartbeat continues on the destination");
    assert!(next.seq > hb.seq && next.load == 100, "{next:?}");
    // The RRD says where it runs: its vm_node series holds the destination's number.
    let uuid = {
        let c = virt::connect::Connect::open(Some(&dst.uri())).unwrap();
        virt::domain::Domain::lookup_by_name(&c, &moved).unwrap().get_uuid_string().unwrap()
    };
    let rrds = dir.join("controller/monitor/rrds/default");
    let nodes: Vec<String> = serde_json::from_slice(&std::fs::read(rrds.join("nodes.json")).unwrap()).unwrap();
    let number = nodes.iter().position(|n| *n == to).expect("the destination in nodes.json") as f64 + 1.0;
    let file = rrds.join("vms").join(&uuid).join("vm_node.rrd");
    let before = nodes.iter().position(|n| *n == awake).expect("the overloaded node in nodes.json") as f64 + 1.0;
    let rrdtool = |args: &[&str]| -> String {
        let out = std::process::Command::new("rrdtool").args(&args[..1]).arg(&file).args(&args[1..]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The last value fed: a consolidated step can average the two nodes, or be a gap.
    wait_for("the VM's vm_node series at its destination", Duration::from_secs(90), || {
        let last = rrdtool(&["lastupdate"]);
        let v: f64 = last.lines().last()?.split_once(':')?.1.trim().parse().ok()?;
        ((v - number).abs() < 1e-6).then_some(())
    });
    let fetched = rrdtool(&["fetch", "AVERAGE", "-s", "-900", "-r", "2"]);
    let series: Vec<f64> = fetched
        .lines()
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect();
    eprintln!("{moved}'s vm_node in the RRD is now {number} ({to}; nodes.json {nodes:?})");
    assert!(
        series.iter().any(|x| (x - before).abs() < 1e-6),
        "the series shows it on {awake} ({before}) before the move: {series:?}"
    );

    // The journal has the migration with libvirt's figures.
    let migrations = api.get("migrations");
    let done: Vec<&Value> = migrations
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "SUCCEEDED" && m["reason"] == "overload")
        .collect();
    let m = wait_for("the overload migration journaled as SUCCEEDED", Duration::from_secs(20), || {
        if let Some(m) = done.first() {
            return Some((*m).clone());
        }
        let all = api.get("migrations");
        all.as_array()?.iter().find(|m| m["state"] == "SUCCEEDED" && m["reason"] == "overload").cloned()
    });
    eprintln!(
        "overload migration: {:.2} s, {} ms downtime, {:.1} MB, {} page faults",
        m["total_s"].as_f64().unwrap(),
        m["downtime_ms"],
        m["bytes"].as_f64().unwrap() / 1e6,
        m["page_faults"]
    );
    assert!(m["total_s"].as_f64().unwrap() > 0.0 && m["bytes"].as_f64().unwrap() > 1e6);
    // SLA accounting on real nodes: the migration cost its guest (PDM), over a cycle or more.
    let metrics = api.get("status")["metrics"].clone();
    eprintln!("live SLA accounting: SLATAH {}, PDM {}", metrics["slatah"], metrics["pdm"]);
    assert!(metrics["pdm"].as_f64().unwrap() > 0.0, "a migration under way counts toward PDM: {metrics}");
    // The mode is the plan's: the strategy's migration-mode policy (the built-in model) chose it
    // from the guest's memory, dirty rate (a few MB/s) and the uncapped link, where pre-copy
    // converges.
    assert_eq!(m["mode"], "pre", "the model's choice for a guest dirtying 4 MB/s: {m}");
    // Each guest runs on exactly one node. An incoming migration's domain also counts as active
    // while the move runs, and at full load the controller keeps moving guests, so the
    // controller is paused (it then starts nothing new but follows the moves under way to their
    // end) and the check waits for a moment with none in flight.
    let ongoing = || api.get("migrations").as_array().unwrap().iter().any(|m| m["state"] == "ONGOING");
    api.call("POST", "pause", "");
    wait_for("the moves under way to end, paused", Duration::from_secs(90), || (!ongoing()).then_some(()));
    wait_for("every guest on exactly one node", Duration::from_secs(30), || {
        let p = placement(&dir);
        ["vm1", "vm2", "vm3"]
            .iter()
            .all(|vm| p.iter().filter(|(_, v)| v.as_ref().is_some_and(|v| v.iter().any(|g| g == vm))).count() == 1)
            .then_some(())
    });

    // The API shows every guest on the node it runs on (the moved one may have moved again
    // since: at full load the lab's thresholds keep guests moving).
    let p = placement(&dir);
    let vms = api.get("vms");
    for vm in ["vm1", "vm2", "vm3"] {
        let node = p.iter().find(|(_, v)| v.as_ref().is_some_and(|v| v.iter().any(|g| g == vm))).unwrap().0.clone();
        let id = state.nodes.iter().position(|n| n.name == node).unwrap() as u64;
        let row = vms.as_array().unwrap().iter().find(|v| v["name"] == vm).unwrap();
        assert_eq!(row["host"].as_u64(), Some(id), "{vm} runs on {node}: {row}");
    }
    eprintln!(
        "{moved} moved to {to}; now on {}",
        amvm_host::lab::locate(&state, &moved).map(|n| n.name.clone()).unwrap_or_default()
    );

    // Cancel through the agent's control endpoint, the controller paused: a pre-copy capped at
    // 2 MB/s is aborted and the guest keeps running on its source.
    // It needs a quiet moment with two awake nodes that both run guests (a node without guests
    // may be about to sleep): the controller keeps deciding until then, and is paused for it.
    let ongoing_any = || api.get("migrations").as_array().unwrap().iter().any(|m| m["state"] == "ONGOING");
    // Paused, the controller starts nothing new but still follows the moves under way to their
    // end; a moment that does not fit is resumed and tried again a little later.
    let (src, dst) = wait_for("two awake nodes with guests and no migration, paused", Duration::from_secs(240), || {
        api.call("POST", "pause", "");
        let quiet = Instant::now() + Duration::from_secs(60);
        while ongoing_any() && Instant::now() < quiet {
            std::thread::sleep(Duration::from_millis(500));
        }
        let p = placement(&dir);
        let busy: Vec<&String> =
            p.iter().filter(|(_, v)| v.as_ref().is_some_and(|v| !v.is_empty())).map(|(n, _)| n).collect();
        if ongoing_any() || busy.len() < 2 {
            api.call("POST", "resume", "");
            std::thread::sleep(Duration::from_secs(4));
            return None;
        }
        // The guest that moved for the overload, wherever it runs now, to another busy node.
        let src = amvm_host::lab::locate(&state, &moved).ok()?.clone();
        let dst = busy.iter().find(|n| ***n != src.name).and_then(|n| state.node(n).ok())?.clone();
        Some((src, dst))
    });
    let src = &src;
    let agent = agent_of(src);
    let job: String = agent
        .call_as(&Op::Migrate {
            vm: moved.clone(),
            to_uri: dst.uri(),
            migrate_uri: Some(format!("tcp://{}", dst.ip)),
            mode: "pre".into(),
            bandwidth_bps: Some(2e6),
        })
        .unwrap();
    wait_for("the pre-copy under way", Duration::from_secs(20), || {
        let j: JobView = agent.call_as(&Op::Progress { job: job.clone() }).unwrap();
        j.progress.filter(|p| p.bytes_sent > 0).map(|_| ())
    });
    agent.call(&Op::Cancel { job: job.clone() }).unwrap();
    // libvirt's abort waits for QEMU's migration thread: seen to take over 20 s on two cores
    // busy with TCG guests (a clean-clone CI rehearsal).
    let j = wait_for("the cancelled job to end", Duration::from_secs(60), || {
        let j: JobView = agent.call_as(&Op::Progress { job: job.clone() }).unwrap();
        (j.state != "running").then_some(j)
    });
    eprintln!("cancelled: {} ({:?})", j.state, j.error);
    assert_eq!(j.state, "cancelled", "{j:?}");
    assert_eq!(amvm_host::lab::locate(&state, &moved).unwrap().name, src.name, "the guest stays on its source");
    let hb = amvm_host::lab::last_heartbeat(src, &moved).unwrap();
    amvm_host::lab::wait_heartbeat(src, &moved, Some(hb.seq), Duration::from_secs(15))
        .expect("the heartbeat continues on the source after the cancel");

    // Lower the load again, controller resumed: the underloaded nodes are evacuated and sleep.
    api.call("POST", "resume", "");
    for vm in ["vm1", "vm2", "vm3"] {
        amvm(&dir, &["load", vm, "5"]);
    }
    let t_low = Instant::now();
    let home = wait_for("re-consolidation after the load dropped", Duration::from_secs(90), || {
        let p = placement(&dir);
        let asleep = p.iter().filter(|(n, v)| v.is_none() && frozen(&cgroup, n)).count();
        let full = p.iter().find(|(_, v)| v.as_ref().is_some_and(|v| v.len() == 3))?;
        (asleep == 2).then(|| full.0.clone())
    });
    eprintln!(
        "load lowered: all guests on {home}, two nodes asleep again after {:.1} s",
        t_low.elapsed().as_secs_f64()
    );

    // A node whose agent stops reporting is down in the API (4 report intervals), and nothing is
    // sent to it afterwards.
    let home_rec = state.node(&home).unwrap();
    let home_id = state.nodes.iter().position(|n| n.name == home).unwrap() as u64;
    let agent_pid = home_rec.agent_pid.expect("the agent's PID is recorded");
    // SAFETY: kill has no memory-safety preconditions; the PID is the lab agent's (recorded by `up`).
    assert_eq!(unsafe { libc::kill(agent_pid as i32, libc::SIGKILL) }, 0);
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let t_kill = Instant::now();
    wait_for("the silent node down in the API", Duration::from_secs(30), || {
        let hosts = api.get("hosts");
        hosts.as_array()?.iter().any(|h| h["name"] == home.as_str() && h["state"] == "down").then_some(())
    });
    eprintln!("{home} down in the API {:.1} s after its agent was killed", t_kill.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(4));
    let late: Vec<Value> = api
        .get("migrations")
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["to_host"].as_u64() == Some(home_id) && m["started_at"].as_u64().is_some_and(|t| t > killed_at))
        .cloned()
        .collect();
    assert!(late.is_empty(), "migrations sent to a down node: {late:?}");

    let ns: Vec<u64> = state.nodes.iter().map(|n| n.netns).collect();
    let controller = state.controller_pid;
    amvm(&dir, &["down"]);
    assert!(amvm_host::lab::node::processes_in(&ns).is_empty(), "processes left in the lab's namespaces");
    assert!(amvm_host::lab::node::links_with_prefix("amvml").is_empty(), "interfaces left");
    assert!(!dir.exists(), "lab directory left");
    assert!(!cgroup.exists(), "cgroup left");
    // `down` stopped the restarted controller by the PID in the state file (this test reaps it).
    let status = restarted.wait().unwrap();
    eprintln!("restarted controller ended: {status}");
    let _ = controller;
    eprintln!("live lab test: {:.1} s", t0.elapsed().as_secs_f64());
}
