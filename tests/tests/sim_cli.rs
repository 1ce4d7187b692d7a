//! End-to-end: `amvm sim` and `amvm ab` through the real binary.
#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use amvm_tests::amvm_bin;

fn amvm(args: &[&str]) -> Output {
    Command::new(amvm_bin()).args(args).output().expect("run amvm")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "amvm failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `../shared/data/planetlab/<day>` relative to the repository, when the shared data is there.
fn shared_day(day: &str) -> Option<String> {
    let rel = format!("../shared/data/planetlab/{day}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").to_path_buf();
    if repo.join(&rel).is_dir() {
        Some(rel)
    } else {
        eprintln!("skipped: {rel} is not beside the repository");
        None
    }
}

fn small_scenario(dir: &Path, hosts: usize) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(&p, format!("[hosts]\ncount = {hosts}\n")).expect("write scenario");
    p
}

#[test]
fn sim_defaults_to_the_embedded_day_and_prints_json() {
    let out = amvm(&["sim", "--strategy", "dvfs", "--json"]);
    let v = json(&out);
    assert!(stderr(&out).contains("embedded PlanetLab day 20110303"), "{}", stderr(&out));
    assert_eq!(v["hosts"], 800);
    assert_eq!(v["vms"], 1052);
    assert_eq!(v["migrations"], 0);
    for key in ["energy_kwh", "slatah", "pdm", "slav", "esv", "host_shutdowns", "elapsed_ms"] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    let dvfs = v["energy_kwh"].as_f64().expect("energy");
    let npa = json(&amvm(&["sim", "--strategy", "npa", "--json"]))["energy_kwh"].as_f64().expect("energy");
    // NPA: 400 × 117 W + 400 × 135 W for 24 h.
    assert!((npa - 2419.2).abs() < 1e-6, "{npa}");
    assert!(dvfs > 100.0 && dvfs < npa, "{dvfs}");
}

#[test]
fn sim_accepts_shared_days_relative_to_the_repository_and_writes_series() {
    let Some(day) = shared_day("20110306") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let out = Command::new(amvm_bin())
        .current_dir(dir.path())
        .args(["sim", "--trace", &day, "--strategy", "dvfs", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run");
    // run from a temporary directory: the relative path still resolves from the repository
    let v = json(&out);
    assert_eq!(v["vms"], 898);
    let csv = std::fs::read_to_string(out_dir.join("series.csv")).expect("series.csv");
    assert_eq!(csv.lines().count(), 1 + 289, "header + t = 0 + 288 steps");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).expect("report")).expect("json");
    assert_eq!(report["series"]["active_hosts"].as_array().map(Vec::len), Some(289));
}

#[test]
fn bad_traces_are_named_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let day = dir.path().join("20200101");
    std::fs::create_dir(&day).expect("mkdir");
    let good: String = (0..288).map(|i| format!("{}\n", i % 50)).collect();
    std::fs::write(day.join("fine vm"), &good).expect("write");
    std::fs::write(day.join("broken vm"), good.replacen("7\n", "seven\n", 1)).expect("write");
    let out = amvm(&["sim", "--trace", day.to_str().expect("utf8"), "--strategy", "dvfs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken vm:8: not a number"), "{}", stderr(&out));

    std::fs::write(day.join("broken vm"), "").expect("write");
    let out = amvm(&["sim", "--trace", day.to_str().expect("utf8"), "--strategy", "dvfs"]);
    assert!(!out.status.success() && stderr(&out).contains("broken vm") && stderr(&out).contains("empty"));

    let out = amvm(&["sim", "--trace", "/no/such/day", "--strategy", "dvfs"]);
    assert!(!out.status.success() && stderr(&out).contains("/no/such/day"), "{}", stderr(&out));
}

#[test]
fn bad_strategy_and_scenario_are_clear_errors() {
    let out = amvm(&["sim", "--strategy", "no-such-strategy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-strategy"), "{}", stderr(&out));

    let dir = tempfile::tempdir().expect("tempdir");
    let zero = small_scenario(dir.path(), 0);
    let out = amvm(&["sim", "--scenario", zero.to_str().expect("utf8"), "--strategy", "dvfs"]);
    assert!(!out.status.success() && stderr(&out).contains("small.toml") && stderr(&out).contains("hosts.count"));

    // 3 hosts cannot hold 1052 VMs
    let tiny = small_scenario(dir.path(), 3);
    let out = amvm(&["sim", "--scenario", tiny.to_str().expect("utf8"), "--strategy", "dvfs"]);
    assert!(!out.status.success() && stderr(&out).contains("fits on no host"), "{}", stderr(&out));

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[hosts]\ncuont = 3\n").expect("write");
    let out = amvm(&["sim", "--scenario", typo.to_str().expect("utf8"), "--strategy", "dvfs"]);
    assert!(!out.status.success() && stderr(&out).contains("typo.toml") && stderr(&out).contains("cuont"));
}

#[test]
fn ab_writes_json_and_offline_html_with_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = small_scenario(dir.path(), 120);
    let (json_path, html_path) = (dir.path().join("ab.json"), dir.path().join("ab.html"));
    let out = amvm(&[
        "ab",
        "--scenario",
        scenario.to_str().expect("utf8"),
        "--trace",
        "synthetic:vms=100,seed=1",
        "synthetic:vms=100,seed=2",
        "synthetic:vms=100,seed=3",
        "--a",
        "npa",
        "--b",
        "dvfs",
        "--json",
        json_path.to_str().expect("utf8"),
        "--html",
        html_path.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json")).expect("parse");
    assert_eq!(v["traces"].as_array().map(Vec::len), Some(3));
    let energy =
        v["comparisons"].as_array().expect("comparisons").iter().find(|c| c["metric"] == "energy_kwh").expect("energy");
    assert!(energy["mean_diff"].as_f64().expect("diff") < 0.0);
    assert_eq!(energy["significant"], true);
    let verdict = energy["verdict"].as_str().expect("verdict");
    assert!(verdict.starts_with("dvfs uses") && verdict.contains("less energy than npa"), "{verdict}");
    let html = std::fs::read_to_string(&html_path).expect("html");
    assert!(html.starts_with("<!DOCTYPE html>") && html.matches("<svg").count() >= 4);
    assert!(
        !html.contains("http://")
            || html.matches("http://").count() == html.matches("http://www.w3.org/2000/svg").count()
    );
    assert!(html.contains(verdict.split(" (").next().expect("prefix")));
}

#[test]
fn ab_with_a_bad_trace_writes_no_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let html_path = dir.path().join("ab.html");
    let out = amvm(&[
        "ab",
        "--trace",
        "synthetic:vms=10,seed=1",
        "/no/such/day",
        "--a",
        "npa",
        "--b",
        "dvfs",
        "--html",
        html_path.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/no/such/day"));
    assert!(!html_path.exists());
}
