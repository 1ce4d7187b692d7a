//! AMVM as the consolidation engine of a real Nova (issue #14), against the fixture of
//! `scripts/openstack/lab.sh` (Debian 12's Zed packages, two nova-compute nodes, TCG guests):
//!
//! 1. `amvm controller --world openstack` lists the hypervisors and servers. An AMVM agent runs
//!    on cmp1 (in its namespaces, reporting to the controller's collector): cmp1's servers'
//!    utilization comes from it, cmp2's from Nova's server diagnostics.
//! 2. Two guests burning CPU on cmp1 overload it: the controller has one live-migrated to cmp2
//!    through Nova (`os-migrateLive`); the two members of an anti-affinity server group are
//!    never on one host, at any poll; a hand migration that would break the group is refused
//!    by Nova and recorded FAILED with Nova's reason.
//! 3. With the group and one burner deleted, both hosts are underloaded: one is evacuated and put
//!    to sleep, its compute service disabled (`amvm: asleep`); the last enabled host never is.
//! 4. A new burner overloads the awake host: the sleeping host's service is enabled and a
//!    burner moves there.

#![allow(clippy::tests_outside_test_module)]

mod lab_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amvm_host::openstack::{Cloud, Nova};
use lab_common::{repo, wait_for, Api};
use serde_json::{json, Value};

const LISTEN: &str = "127.0.0.1:8095";
const GLANCE: &str = "http://10.250.0.254:9292";
const FIXTURE_DIR: &str = "/tmp/amvm-openstack-test";
/// The controller's collector, on the fixture's bridge (the compute nodes reach it there).
const COLLECTOR: &str = "10.250.0.254:8651";

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for (p, what) in [
        ("/usr/bin/nova-api", "the fixture's packages: scripts/openstack/lab.sh deps"),
        ("/usr/bin/keystone-manage", "the fixture's packages: scripts/openstack/lab.sh deps"),
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ] {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing ({what})"));
        }
    }
    None
}

fn lab(cmd: &str) -> std::process::Output {
    Command::new(repo().join("scripts/openstack/lab.sh"))
        .args([cmd, "--dir", FIXTURE_DIR])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Tears the fixture (and the controller) down however the test ends.
struct Fixture {
    controller: Option<Child>,
    agent: Option<Child>,
    log: Option<PathBuf>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The fixture's own account of what went wrong (its directory goes with `down`).
            for log in ["nova-conductor", "nova-scheduler", "nova-compute1", "nova-compute2"] {
                let path = PathBuf::from(FIXTURE_DIR).join(format!("logs/{log}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let bad: Vec<&str> =
                    text.lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARNING ")).collect();
                eprintln!("--- {log}: last errors and warnings ---");
                for l in &bad[bad.len().saturating_sub(12)..] {
                    eprintln!("{}", l.chars().take(400).collect::<String>());
                }
            }
            if let Some(l) = &self.log {
                let text = std::fs::read_to_string(l).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(80).collect();
                eprintln!("--- controller log (last 80 lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        for mut c in [self.controller.take(), self.agent.take()].into_iter().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let out = lab("down");
        if !out.status.success() {
            eprintln!("fixture down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn glance_upload(name: &str, file: &Path, props: Value) -> String {
    let http = amvm_host::openstack::keystone::http_agent(Duration::from_secs(60));
    let mut body = json!({"name": name, "disk_format": "raw", "container_format": "bare"});
    body.as_object_mut().unwrap().extend(props.as_object().unwrap().clone());
    let mut r = http.post(format!("{GLANCE}/v2/images")).send_json(&body).unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.body_mut().read_to_string().unwrap_or_default());
    let img: Value = r.body_mut().read_json().unwrap();
    let id = img["id"].as_str().unwrap().to_string();
    let bytes = std::fs::read(file).unwrap();
    let r = http
        .put(format!("{GLANCE}/v2/images/{id}/file"))
        .header("Content-Type", "application/octet-stream")
        .send(&bytes[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    id
}

fn boot(nova: &Nova, name: &str, image: &str, flavor: &str, az: Option<&str>, group: Option<&str>) -> String {
    let mut server = json!({"name": name, "imageRef": image, "flavorRef": flavor, "networks": "none"});
    if let Some(z) = az {
        server["availability_zone"] = json!(z);
    }
    let mut body = json!({ "server": server });
    if let Some(g) = group {
        body["os:scheduler_hints"] = json!({ "group": g });
    }
    let v = nova.raw("POST", "/servers", Some(&body)).unwrap();
    v["server"]["id"].as_str().unwrap().to_string()
}

/// `server id → host` of every ACTIVE server.
fn placement(nova: &Nova) -> std::collections::HashMap<String, String> {
    nova.servers().unwrap().into_iter().filter(|s| s.status == "ACTIVE").filter_map(|s| Some((s.id, s.host?))).collect()
}

fn service(nova: &Nova, host: &str) -> (String, Option<String>) {
    let s = nova.compute_services().unwrap().into_iter().find(|s| s.host == host).unwrap();
    (s.status, s.disabled_reason)
}

#[test]
fn controller_consolidates_a_real_nova_cloud() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP openstack: {why}");
        return;
    }
    let t0 = Instant::now();
    let image = lab_common::guest_image();
    let dir = tempfile::tempdir().unwrap();
    let up = lab("up");
    let mut fixture = Fixture { controller: None, agent: None, log: None };
    assert!(
        up.status.success(),
        "lab.sh up failed:\n{}\n{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    eprintln!("fixture up: {:.1} s", t0.elapsed().as_secs_f64());
    let clouds = PathBuf::from(FIXTURE_DIR).join("clouds.yaml");
    let nova = Nova::new(Cloud::load(Some(&clouds), "amvm-lab").unwrap(), Duration::from_secs(30));
    eprintln!("microversion {}", nova.connect().unwrap());

    // Images: the lab guest, burning its vCPU or idle.
    let root = dir.path().join("root.raw");
    std::fs::File::create(&root).unwrap().set_len(8 << 20).unwrap();
    let kernel = glance_upload("amvm-kernel", &image.join("vmlinuz"), json!({}));
    let initrd = glance_upload("amvm-initrd", &image.join("initrd.img"), json!({}));
    let root_image = |name: &str, mode: &str| {
        glance_upload(
            name,
            &root,
            json!({"kernel_id": kernel, "ramdisk_id": initrd,
                   "os_command_line": format!("console=ttyS0 panic=-1 {mode}")}),
        )
    };
    let burn = root_image("amvm-burn", "amvm.mode=cpu amvm.load=100");
    let idle = root_image("amvm-idle", "amvm.mode=idle");
    let flavor = nova
        .raw("POST", "/flavors", Some(&json!({"flavor": {"name": "amvm.t", "ram": 128, "vcpus": 1, "disk": 1}})))
        .unwrap()["flavor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let group = nova
        .raw("POST", "/os-server-groups", Some(&json!({"server_group": {"name": "apart", "policy": "anti-affinity"}})))
        .unwrap()["server_group"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b1 = boot(&nova, "b1", &burn, &flavor, Some("nova:cmp1"), None);
    let b2 = boot(&nova, "b2", &burn, &flavor, Some("nova:cmp1"), None);
    let g1 = boot(&nova, "g1", &idle, &flavor, None, Some(&group));
    let g2 = boot(&nova, "g2", &idle, &flavor, None, Some(&group));
    let apart = |p: &std::collections::HashMap<String, String>| {
        if let (Some(a), Some(b)) = (p.get(&g1), p.get(&g2)) {
            assert_ne!(a, b, "the anti-affinity group is on one host: {p:?}");
        }
    };
    let mut states = String::new();
    let p = wait_for("four servers ACTIVE", Duration::from_secs(180), || {
        let servers = nova.servers().ok()?;
        // A server in ERROR will not become ACTIVE: say why now.
        if let Some(s) = servers.iter().find(|s| s.status == "ERROR") {
            panic!("server {} is in ERROR: {:?}", s.name, nova.server_fault(&s.id));
        }
        let now: Vec<String> = servers.iter().map(|s| format!("{} {} {:?}", s.name, s.status, s.task_state)).collect();
        if now.join(", ") != states {
            states = now.join(", ");
            eprintln!("servers at {:.1} s: {states}", t0.elapsed().as_secs_f64());
        }
        let p = placement(&nova);
        (p.len() == 4).then_some(p)
    });
    apart(&p);
    assert_eq!((p[&b1].as_str(), p[&b2].as_str()), ("cmp1", "cmp1"));
    eprintln!("servers ACTIVE at {:.1} s: {p:?}", t0.elapsed().as_secs_f64());

    // An AMVM agent on cmp1, inside its namespaces (its libvirt, hostname cmp1).
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, "6f736c61622d6167656e742d6b65792d666f722d7468652d746573742d303031").unwrap();
    let hold1 = std::fs::read_to_string(PathBuf::from(FIXTURE_DIR).join("pids/hold1.pid")).unwrap();
    fixture.agent = Some(
        Command::new("nsenter")
            .args(["-t", hold1.trim(), "-m", "-u", "-n", env!("CARGO_BIN_EXE_amvm"), "agent", "--collector"])
            .arg(COLLECTOR)
            .args(["--cluster", "oslab", "--interval", "2", "--libvirt", "qemu:///system", "--key-file"])
            .arg(&key_file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The controller on the cloud.
    let strategy = dir.path().join("strategy.toml");
    std::fs::write(&strategy, amvm_host::lab::live::LAB_STRATEGY).unwrap();
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{LISTEN}\"\ndata = \"{}\"\nstrategy = \"{}\"\n\n[world]\nkind = \"openstack\"\ncloud = \
             \"amvm-lab\"\nclouds_yaml = \"{}\"\nstep_ms = 2000\nwindow = 3\nmigration_timeout_s = 120\ncollector = \"{COLLECTOR}\"\ncluster = \
             \"oslab\"\nkey_file = \"{}\"\nreport_interval_s = 2\n",
            dir.path().join("data").display(),
            strategy.display(),
            clouds.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let token = "openstack-test-token";
    let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
    fixture.log = Some(dir.path().join("controller.log"));
    let started = Instant::now();
    fixture.controller = Some(
        Command::new(env!("CARGO_BIN_EXE_amvm"))
            .args(["controller", "--config"])
            .arg(&config)
            .env("AMVM_ADMIN_TOKEN", token)
            .env("AMVM_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = Api { listen: LISTEN, token: token.into() };
    let dump = || std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
    wait_for("the API", Duration::from_secs(30), || std::net::TcpStream::connect(LISTEN).ok());
    let status = api.get("status");
    assert_eq!(status["world"]["kind"], "openstack", "{status}");
    let hosts = wait_for("both hypervisors and four VMs in the API", Duration::from_secs(30), || {
        let h = api.get("hosts");
        let vms = api.get("vms");
        (h.as_array()?.len() == 2 && vms.as_array()?.len() == 4).then_some(h)
    });
    let names: Vec<&str> = hosts.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cmp1", "cmp2"]);
    assert_eq!(hosts[0]["cores"], 2, "{hosts}");
    // Utilization: from the agent on cmp1 (the burners near 100 %), from Nova elsewhere.
    let t = Instant::now();
    let (mut agent_seen, mut nova_seen) = (None, None);
    wait_for("a burner on cmp1 measured by its agent, a server on cmp2 by Nova", Duration::from_secs(60), || {
        for v in api.get("vms").as_array()? {
            let (host, source) = (v["host"].as_u64()?, v["cpu_source"].as_str().unwrap_or("none"));
            // cmp2 has no agent (on cmp1, Nova's diagnostics stand in until the agent's first rate).
            assert!(host == 0 || source != "agent", "{v}");
            let name = v["name"].as_str().unwrap_or("");
            if host == 0 && source == "agent" && name.starts_with('b') && v["cpu_util"].as_f64()? > 0.5 {
                agent_seen = Some(v.clone());
            }
            if host == 1 && source == "nova-diagnostics" {
                nova_seen = Some(v.clone());
            }
        }
        (agent_seen.is_some() && nova_seen.is_some()).then_some(())
    });
    let vms = (agent_seen.unwrap(), nova_seen.unwrap());
    eprintln!("utilization sources after {:.1} s: {vms:?}", t.elapsed().as_secs_f64());
    let desc = api.get("status")["world"]["description"].as_str().unwrap_or("").to_string();
    assert!(desc.contains("from the AMVM agents of cluster \"oslab\" where they run"), "{desc}");

    // 2. Overload: a burner is live-migrated to cmp2 by the controller through Nova.
    let t = started;
    let moved = wait_for("a burner live-migrated to cmp2", Duration::from_secs(180), || {
        let p = placement(&nova);
        apart(&p);
        let m = api.get("migrations");
        let done = m.as_array()?.iter().any(|a| a["state"] == "SUCCEEDED");
        [&b1, &b2].into_iter().find(|b| p.get(*b).map(String::as_str) == Some("cmp2") && done).cloned()
    });
    eprintln!("overload: burner {moved} moved to cmp2 {:.1} s after the controller started", t.elapsed().as_secs_f64());
    let migs = api.get("migrations");
    let ok = migs.as_array().unwrap().iter().find(|a| a["state"] == "SUCCEEDED").unwrap();
    assert_eq!(ok["to_host"], 1, "{migs}");
    assert!(ok["total_s"].as_f64().unwrap_or(0.0) > 0.0, "{ok}");

    // A hand migration that would break the anti-affinity group: Nova's scheduler refuses it,
    // and the action is recorded FAILED with Nova's reason.
    let p = placement(&nova);
    let vms = api.get("vms");
    let g1_id = vms.as_array().unwrap().iter().find(|v| v["name"] == "g1").unwrap()["id"].as_u64().unwrap();
    let onto = if p[&g2] == "cmp1" { 0 } else { 1 };
    let resp = api.once("POST", "migrations", &json!({"vm": g1_id, "to": onto}).to_string()).unwrap();
    assert!(resp.starts_with("HTTP/1.0 202") || resp.starts_with("HTTP/1.1 202"), "{resp}");
    let t = Instant::now();
    let note = wait_for("the refused hand migration recorded", Duration::from_secs(90), || {
        let p = placement(&nova);
        apart(&p);
        let m = api.get("migrations");
        let a = m.as_array()?.iter().find(|a| a["vm"] == g1_id && a["state"] == "FAILED")?;
        Some(a["note"].as_str().unwrap_or("").to_string())
    });
    eprintln!("refused: {:.1} s: {note}", t.elapsed().as_secs_f64());
    assert!(note.starts_with("Nova: migration error"), "{note}");
    apart(&placement(&nova));

    // 3. The group deleted and the moved burner too: one burner is left, at about a quarter of
    // a host, so both hosts are underloaded; one is evacuated (its burner moved to the other, if
    // it has one) and put to sleep, its compute service disabled by AMVM.
    for s in [&g1, &g2, &moved] {
        nova.raw("DELETE", &format!("/servers/{s}"), None).unwrap();
    }
    let t = Instant::now();
    let (asleep, awake) =
        wait_for("a host asleep, its compute service disabled by AMVM", Duration::from_secs(120), || {
            let h = api.get("hosts");
            let i = (0..2).find(|&i| h[i]["state"] == "asleep")?;
            let (name, other) = (["cmp1", "cmp2"][i], ["cmp1", "cmp2"][1 - i]);
            let (status, reason) = service(&nova, name);
            (status == "disabled" && reason.as_deref() == Some("amvm: asleep")).then_some((name, other))
        });
    eprintln!(
        "underload: {asleep} asleep {:.1} s after the group and a burner were deleted",
        t.elapsed().as_secs_f64()
    );
    // The other is the last enabled host: it is never put to sleep.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(service(&nova, awake).0, "enabled", "{}", dump());
    let p = placement(&nova);
    assert!(p.values().all(|h| h == awake), "{p:?}");

    // 4. A new burner lands on the only enabled host: overloaded again, the sleeping host's
    // service is enabled and a burner moves there.
    let b3 = boot(&nova, "b3", &burn, &flavor, None, None);
    let t = Instant::now();
    let p = wait_for("a burner moved to the woken host", Duration::from_secs(240), || {
        let p = placement(&nova);
        let there = p.values().filter(|h| *h == asleep).count();
        (p.len() == 2 && there == 1).then_some(p)
    });
    assert_eq!(service(&nova, asleep).0, "enabled");
    eprintln!(
        "wake: {asleep} enabled and a burner there {:.1} s after b3 was booted: {p:?}",
        t.elapsed().as_secs_f64()
    );
    assert!(p.contains_key(&b3));
    // Nova shows the server on its destination a moment before its migration record completes.
    wait_for("the second migration SUCCEEDED in the journal", Duration::from_secs(30), || {
        let migs = api.get("migrations");
        (migs.as_array()?.iter().filter(|a| a["state"] == "SUCCEEDED").count() >= 2).then_some(())
    });
    eprintln!("total {:.1} s", t0.elapsed().as_secs_f64());
}
