//! End-to-end: a real `amvm demo` process — auth, server-sent events with `Last-Event-ID`
//! resume, and restart safety under `kill -9` at random points of plan execution.
#![cfg(test)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amvm_tests::amvm_bin;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const TOKEN: &str = "e2e-admin-token-0123456789";

/// The demo process, killed (SIGKILL) when dropped, so a failing test leaves nothing running.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Demo {
    fn kill9(mut self) {
        self.0.kill().expect("kill -9");
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(port: u16, data: &Path, extra: &[&str]) -> Demo {
    let child = Command::new(amvm_bin())
        .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .args([
            "--step-ms",
            "60",
            "--hosts",
            "120",
            "--trace",
            "synthetic:vms=180,mean=25,seed=5",
            "--strategy",
            "thr-mmt-0.8",
        ])
        .args(extra)
        .env("AMVM_ADMIN_TOKEN", TOKEN)
        .env_remove("AMVM_READ_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start amvm demo");
    let mut child = Demo(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("amvm demo exited at start ({status}); see its stderr above");
        }
        if http(port, "GET", "/healthz", None).map(|r| r.0 == 200).unwrap_or(false) {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("amvm demo did not come up on port {port}");
}

/// One HTTP/1.1 request; (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    Ok((status, body))
}

fn get(port: u16, path: &str) -> Value {
    let (s, body) = http(port, "GET", path, Some(TOKEN)).expect("request");
    assert_eq!(s, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body:.200}"))
}

fn post(port: u16, path: &str) -> Value {
    let (s, body) = http(port, "POST", path, Some(TOKEN)).expect("request");
    assert_eq!(s, 200, "POST {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Reads SSE events from an open stream until `n` events with ids have arrived.
fn read_events(port: u16, last_id: Option<u64>, n: usize) -> Vec<(u64, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let resume = last_id.map_or_else(String::new, |id| format!("Last-Event-ID: {id}\r\n"));
    write!(s, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{resume}\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    let (mut id, mut kind) = (None, String::new());
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = l.strip_prefix("event: ") {
            kind = v.to_string();
        } else if l.is_empty() {
            if let Some(i) = id.take() {
                out.push((i, std::mem::take(&mut kind)));
            }
        }
    }
    out
}

#[test]
fn demo_serves_the_api_with_auth_and_events_resume_after_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start(port, dir.path(), &[]);
    let (s, body) = http(port, "GET", "/api/v1/status", None).unwrap();
    assert_eq!(s, 401, "{body}");
    let (s, _) = http(port, "POST", "/api/v1/pause", Some("wrong-token-wrong-token")).unwrap();
    assert_eq!(s, 401);
    assert_eq!(get(port, "/api/v1/guards")["paused"], false, "a refused call changed nothing");
    let status = get(port, "/api/v1/status");
    assert_eq!(status["world"]["hosts"], 120);
    assert_eq!(status["strategy"]["name"], "thr-mmt-0.8");

    let first = read_events(port, None, 10);
    assert!(first.iter().any(|e| e.1 == "cycle"), "cycle events: {first:?}");
    assert!(first.windows(2).all(|w| w[1].0 > w[0].0), "ids increase: {first:?}");
    let resume_after = first[2].0;
    let resumed = read_events(port, Some(resume_after), 5);
    assert_eq!(resumed[0].0, resume_after + 1, "resume starts right after Last-Event-ID: {resumed:?}");
    assert!(resumed.windows(2).all(|w| w[1].0 == w[0].0 + 1), "no event missed: {resumed:?}");

    let doc = get(port, "/api/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    child.kill9();
}

/// Checks the journal against the world: every migration the journal says reached the world
/// (SUCCEEDED or ONGOING in the world's current day) is one the world counts, once; every
/// ONGOING one is migrating in the world; every VM is where its last migration took it.
fn check_journal(port: u16) {
    post(port, "/api/v1/pause");
    std::thread::sleep(Duration::from_millis(400));
    for attempt in 0..5 {
        let status = get(port, "/api/v1/status");
        let epoch = status["last_cycle"]["epoch"].as_i64().unwrap();
        let migs = get(port, "/api/v1/migrations?limit=10000");
        let vms = get(port, "/api/v1/vms");
        let status2 = get(port, "/api/v1/status");
        if status2["last_cycle"]["epoch"].as_i64().unwrap() != epoch {
            assert!(attempt < 4, "the day kept changing");
            continue;
        }
        let migs = migs.as_array().unwrap();
        let vms = vms.as_array().unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut executed = 0;
        let mut last: std::collections::HashMap<i64, (i64, i64)> = Default::default();
        for m in migs {
            assert!(ids.insert(m["id"].as_i64().unwrap()), "an action listed twice");
            let st = m["state"].as_str().unwrap();
            assert_ne!(st, "APPROVED", "an approved action was left behind: {m}");
            if m["exec_epoch"].as_i64() != Some(epoch) {
                continue;
            }
            let vm = m["vm"].as_i64().unwrap();
            let to = m["to_host"].as_i64().unwrap();
            match st {
                "ONGOING" => {
                    executed += 1;
                    let v = &vms[vm as usize];
                    assert_eq!(
                        v["migrating_to"].as_i64(),
                        Some(to),
                        "journal says VM {vm} moves to {to}, the world: {v}"
                    );
                }
                "SUCCEEDED" => {
                    executed += 1;
                    let seq = m["exec_seq"].as_i64().unwrap();
                    if last.get(&vm).is_none_or(|&(s, _)| seq > s) {
                        last.insert(vm, (seq, to));
                    }
                }
                _ => {}
            }
        }
        let world = status["metrics"]["migrations_today"].as_i64().unwrap();
        assert_eq!(world, executed, "the world performed {world} migrations today, the journal says {executed}");
        for (vm, (_, to)) in last {
            let v = &vms[vm as usize];
            if v["migrating_to"].is_null() {
                assert_eq!(v["host"].as_i64(), Some(to), "VM {vm} should be on {to}: {v}");
            }
        }
        post(port, "/api/v1/resume");
        return;
    }
}

#[test]
fn kill_9_at_random_points_loses_and_repeats_no_action() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261201);
    let mut total_actions = 0;
    for run in 0..20 {
        let child = start(port, dir.path(), &[]);
        if run % 5 == 4 {
            check_journal(port);
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(50..700)));
        child.kill9();
    }
    let child = start(port, dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(500));
    check_journal(port);
    let migs = get(port, "/api/v1/migrations?limit=10000");
    total_actions += migs.as_array().unwrap().len();
    assert!(total_actions > 50, "the runs executed work: {total_actions} migrations journaled");
    let status = get(port, "/api/v1/status");
    assert!(status["last_cycle"]["cycle"].as_u64().unwrap() > 20, "cycles carried over restarts: {status}");
    child.kill9();
}
