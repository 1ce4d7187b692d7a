//! Shared helpers of the monitoring end-to-end tests: run the real `amvm collector` and
//! `amvm agent`, read the stock `rrdtool`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KEY: &str = "e2e-cluster-key-0123456789";

/// A collector child process; killed on drop.
pub struct CollectorProc {
    pub child: Child,
    pub addr: String,
    /// Lines printed on stdout (`--stats-every` JSON).
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CollectorProc {
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        let bin = amvm_tests::amvm_bin();
        assert!(
            bin.exists(),
            "{} not built: run `cargo build -p amvm-host` first (scripts/test.sh does)",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["collector", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--step", "1", "--flush-ms", "200", "--stats-every", "1"])
            .args(extra)
            .env("AMVM_CLUSTER_KEY", KEY)
            .env("AMVM_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn collector");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("amvm collector listening on udp://") {
                    let _ = tx.send(a.to_string());
                }
                eprintln!("[collector] {line}");
            }
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("collector did not report its address");
        Self { child, addr, stdout: lines }
    }

    /// The latest stats line, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let lines = self.stdout.lock().unwrap();
        serde_json::from_str(lines.last().expect("no stats yet")).unwrap()
    }

    /// Waits until `pred(stats)` holds.
    pub fn wait_stats(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !self.stdout.lock().unwrap().is_empty() {
                let s = self.stats();
                if pred(&s) {
                    return s;
                }
                assert!(Instant::now() < deadline, "timed out waiting for {what}; last stats {s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `amvm agent` to completion.
pub fn run_agent(addr: &str, args: &[&str]) {
    let out = Command::new(amvm_tests::amvm_bin())
        .args(["agent", "--collector", addr])
        .args(args)
        .env("AMVM_CLUSTER_KEY", KEY)
        .env("AMVM_LOG", "info")
        .output()
        .expect("run agent");
    eprintln!("[agent] {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "agent failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Known values of one RRD file over the last `secs` seconds, read with the stock `rrdtool`.
pub fn rrdtool_fetch(file: &Path, secs: u64) -> Vec<f64> {
    let out = Command::new("rrdtool")
        .arg("fetch")
        .arg(file)
        .args(["AVERAGE", "-s", &format!("-{secs}"), "-r", "1"])
        .output()
        .expect("rrdtool is installed by scripts/install-deps.sh");
    assert!(out.status.success(), "rrdtool fetch {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect()
}
