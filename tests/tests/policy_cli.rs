//! `amvm policy …` and `amvm bench policy` through the real binary.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use std::process::Command;

use amvm_tests::amvm_bin;

fn amvm(args: &[&str]) -> std::process::Output {
    Command::new(amvm_bin()).args(args).output().expect("run amvm")
}

fn wasm(name: &str) -> String {
    // The policies workspace builds into target/policies beside the binary's profile dir.
    let bin = amvm_bin();
    let target = bin.parent().and_then(|p| p.parent()).expect("target dir");
    target.join("policies/wasm32-wasip2/release").join(name).display().to_string()
}

#[test]
fn list_shows_every_builtin() {
    let out = amvm(&["policy", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for n in ["thr", "mad", "iqr", "lr", "lrr", "mhod", "otf", "mmt", "mc", "rs", "mu", "pabfd", "spread", "pack"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let strategies = v["strategies"].as_array().unwrap();
    for s in ["lr-mmt-1.2", "mhod-mmt-0.1", "otf-mmt-0.2"] {
        assert!(strategies.iter().any(|x| x == s), "{s} missing");
    }
}

#[test]
fn check_accepts_a_good_module_with_one_ok_line() {
    let example = wasm("amvm_example_headroom.wasm");
    let out = amvm(&["policy", "check", &example, "--param", "max_util=0.8"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.starts_with("OK: headroom 0.1.0 (placement policy"), "{stdout}");
    let out = amvm(&["policy", "check", "lr"]);
    assert!(out.status.success());
}

#[test]
fn a_builtin_is_found_by_name_even_beside_a_folder_of_that_name() {
    // The repository root has a `model/` crate; `model` is also the built-in migration-mode
    // policy, and `builtin:NAME` is how output names built-ins.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert!(root.join("model").is_dir());
    for spec in ["model", "builtin:model", "builtin:lr"] {
        let out = Command::new(amvm_bin()).args(["policy", "check", spec]).current_dir(root).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{spec}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("OK: "), "{spec}: {stdout}");
    }
}

fn check_fails(args: &[&str], needle: &str) {
    let out = amvm(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[test]
fn check_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    check_fails(&["policy", "check", garbage.to_str().unwrap()], "not a WebAssembly file");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    check_fails(&["policy", "check", core.to_str().unwrap()], "core WebAssembly module, not a component");
    check_fails(&["policy", "check", &dir.path().join("missing.wasm").display().to_string()], "cannot read");
    let hostile = wasm("amvm_test_hostile_placement.wasm");
    check_fails(&["policy", "check", &hostile, "--param", "mode=loop"], "deadline exceeded");
    check_fails(&["policy", "check", &hostile, "--param", "mode=grow"], "memory limit");
    check_fails(&["policy", "check", &hostile, "--param", "mode=panic"], "panics on purpose");
    check_fails(&["policy", "check", &hostile, "--param", "mode=nan"], "invalid output");
    check_fails(&["policy", "check", &hostile, "--param", "nope=1"], "no such parameter");
    check_fails(&["policy", "check", "thr", "--param", "upper=7"], "above its maximum");
}

#[test]
fn inspect_shows_parameters_and_trapped_imports() {
    let out = amvm(&["policy", "inspect", "lr", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["world"], "threshold");
    assert!(v["params"].as_array().unwrap().iter().any(|p| p["name"] == "safety"));
    let out = amvm(&["policy", "inspect", &wasm("amvm_test_hostile_placement.wasm")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wasi:filesystem"), "{text}");
}

#[test]
fn bench_policy_prints_json() {
    let out = amvm(&["bench", "policy", "--hosts", "200", "--vms", "2000", "--cycles", "3", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["cycle_ms_median"].as_f64().unwrap() > 0.0);
    assert_eq!(v["hosts"], 200);
    assert_eq!(v["failures"], 0);
}
