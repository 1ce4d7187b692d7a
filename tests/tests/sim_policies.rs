//! End-to-end: the simulator runs the real scheduler over the real WASM policies — built-in and
//! uploaded modules named by a strategy file.
#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use amvm_tests::amvm_bin;

fn wasm(name: &str) -> PathBuf {
    // The policies workspace builds into target/policies beside the binary's profile dir.
    let bin = amvm_bin();
    let target = bin.parent().and_then(|p| p.parent()).expect("target dir");
    target.join("policies/wasm32-wasip2/release").join(name)
}

/// 40 hosts, 6 simulated hours, a seeded synthetic trace of 70 VMs.
fn sim(dir: &Path, strategy: &str) -> serde_json::Value {
    let scenario = dir.join("small.toml");
    std::fs::write(&scenario, "duration_s = 21600\n[hosts]\ncount = 40\n").expect("scenario");
    let out: Output = Command::new(amvm_bin())
        .args(["sim", "--trace", "synthetic:vms=70,seed=11,mean=15", "--scenario"])
        .arg(&scenario)
        .args(["--strategy", strategy, "--json"])
        .output()
        .expect("run amvm");
    assert!(out.status.success(), "{strategy}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn strategy_file(dir: &Path, name: &str, placement: &Path, extra: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[threshold]\nmodule = \"thr\"\nparams = {{ upper = 0.8 }}\n[selection]\nmodule = \"mmt\"\n\
         [placement]\nmodule = \"{}\"\n{extra}",
        placement.display()
    );
    std::fs::write(&path, text).expect("strategy file");
    path.display().to_string()
}

#[test]
fn builtin_strategy_consolidates_against_dvfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dvfs = sim(dir.path(), "dvfs");
    let thr = sim(dir.path(), "thr-mmt-0.8");
    assert_eq!(dvfs["migrations"], 0);
    assert!(thr["migrations"].as_u64().expect("migrations") > 0, "{thr}");
    assert!(thr["host_shutdowns"].as_u64().expect("shutdowns") > 0, "{thr}");
    assert!(thr["energy_kwh"].as_f64() < dvfs["energy_kwh"].as_f64(), "{thr} vs {dvfs}");
    assert!(thr["pdm"].as_f64().expect("pdm") > 0.0, "migrations cost performance: {thr}");
    assert_eq!(thr["policy_failures"], 0);
    assert_eq!(thr["rejected_migrations"], 0, "the scheduler's plans are feasible in the world");
}

#[test]
fn an_uploaded_placement_module_changes_the_outcome() {
    let headroom = wasm("amvm_example_headroom.wasm");
    assert!(headroom.is_file(), "{} is built by host/build.rs", headroom.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let builtin = sim(dir.path(), &strategy_file(dir.path(), "thr-pabfd", Path::new("pabfd"), ""));
    let uploaded = sim(dir.path(), &strategy_file(dir.path(), "thr-headroom", &headroom, ""));
    assert_eq!(builtin["strategy"], "thr-pabfd");
    assert_eq!(uploaded["strategy"], "thr-headroom");
    assert_eq!(uploaded["policy_failures"], 0, "{uploaded}");
    // Same threshold and selection, different placement module: a different consolidation.
    assert_ne!(builtin["mean_active_hosts"], uploaded["mean_active_hosts"], "{builtin} vs {uploaded}");
    assert_ne!(builtin["energy_kwh"], uploaded["energy_kwh"]);
}

#[test]
fn a_failing_uploaded_module_falls_back_and_the_run_completes() {
    let hostile = wasm("amvm_test_hostile_placement.wasm");
    assert!(hostile.is_file(), "{} is built by host/build.rs", hostile.display());
    let dir = tempfile::tempdir().expect("tempdir");
    // "nan" answers nonsense weights: rejected by output validation, PABFD takes over.
    let spec = strategy_file(dir.path(), "thr-hostile", &hostile, "");
    let text = std::fs::read_to_string(&spec).expect("read").replace(
        &format!("module = \"{}\"\n", hostile.display()),
        &format!("module = \"{}\"\nparams = {{ mode = \"nan\" }}\n", hostile.display()),
    );
    std::fs::write(&spec, text).expect("write");
    let hostile_run = sim(dir.path(), &spec);
    let reference = sim(dir.path(), &strategy_file(dir.path(), "thr-pabfd", Path::new("pabfd"), ""));
    assert!(hostile_run["policy_failures"].as_u64().expect("failures") > 0, "{hostile_run}");
    assert_eq!(hostile_run["rejected_migrations"], 0);
    assert_eq!(hostile_run["energy_kwh"], reference["energy_kwh"], "the fallback is the built-in PABFD");
}
