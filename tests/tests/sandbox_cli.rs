//! Hostile modules through the real binary: `amvm policy check` and `amvm sim`, one case per
//! defect class of the sandbox (issue #13). Each must be contained: no panic (exit code 101),
//! under 60 s and 1 GiB, and at most 3 lines on stderr naming the cause, none of them carrying
//! the module's control characters.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amvm_tests::amvm_bin;

#[path = "../../policies/testing/components.rs"]
mod components;

fn wasm(name: &str) -> PathBuf {
    let bin = amvm_bin();
    let target = bin.parent().and_then(|p| p.parent()).expect("target dir");
    target.join("policies/wasm32-wasip2/release").join(name)
}

fn hostile(name: &str) -> String {
    wasm(&format!("amvm_test_hostile_{name}.wasm")).display().to_string()
}

/// What a run cost.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    max_rss_mib: u64,
}

/// Runs `amvm args`, measuring its wall time and peak memory (`wait4`'s rusage of that child).
// The child is reaped by `wait4` (which also reports its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(amvm_bin())
        .args(args)
        .env("AMVM_CACHE_DIR", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run amvm");
    let start = Instant::now();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not yet reaped; the pointers are to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed");
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("amvm {args:?} still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    Run {
        code,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed,
        // ru_maxrss is in KiB on Linux.
        max_rss_mib: (usage.ru_maxrss as u64) >> 10,
    }
}

/// The containment contract: no panic, under 60 s and 1 GiB, at most 3 lines on stderr, none
/// with a control character.
fn contained(r: &Run, what: &str) {
    // Shown with --nocapture: what containing each module cost.
    eprintln!("{what}: exit {}, {:.2} s, peak {} MiB", r.code, r.elapsed.as_secs_f64(), r.max_rss_mib);
    assert_ne!(r.code, 101, "{what}: panicked: {}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(60), "{what}: took {:?}", r.elapsed);
    assert!(r.max_rss_mib < 1024, "{what}: peak memory {} MiB", r.max_rss_mib);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines.len() <= 3, "{what}: {} lines on stderr:\n{}", lines.len(), r.stderr);
    for l in lines.iter().chain(r.stdout.lines().collect::<Vec<_>>().iter()) {
        assert!(!l.chars().any(|c| c.is_control() && c != '\t'), "{what}: control character in {l:?}");
    }
}

/// `policy check` refuses with exit 1 and one line naming `needle`.
fn check_refuses(module: &str, extra: &[&str], needle: &str) {
    let mut args = vec!["policy", "check", module];
    args.extend_from_slice(extra);
    let r = run(&args);
    contained(&r, module);
    assert_eq!(r.code, 1, "{module} {extra:?}: {}{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "no OK line: {}", r.stdout);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("FAIL: ") && r.stderr.contains(needle), "{module} {extra:?}: {}", r.stderr);
}

fn write_wat(dir: &Path, name: &str, wat: &str) -> String {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wat::parse_str(wat).expect("wat")).expect("write");
    path.display().to_string()
}

#[test]
fn check_contains_every_hostile_module() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // 1. world and kind
    check_refuses(&hostile("kind"), &[], "exports the placement world but its describe declares a threshold policy");
    check_refuses(&write_wat(d, "several", &components::several_worlds()), &[], "functions of several worlds");
    // 2. compile budget
    check_refuses(&write_wat(d, "bomb", &components::compile_bomb(27_000)), &[], "too complex to compile");
    let big = d.join("big.wasm");
    std::fs::write(&big, components::oversized(17)).expect("write");
    check_refuses(big.to_str().expect("utf-8"), &[], "module size");
    // 3. memory sum
    check_refuses(&write_wat(d, "memsum", &components::memory_sum(24, 40)), &[], "memory limit");
    check_refuses(&write_wat(d, "tabsum", &components::table_sum(10, 200_000)), &[], "memory limit");
    // 5. descriptor
    check_refuses(&hostile("escape"), &[], "non-printable character");
    check_refuses(&hostile("bounds"), &[], "bounds must be finite");
    check_refuses(&hostile("huge"), &[], "summary is longer than 512 bytes");
    // 6. messages
    let placement = hostile("placement");
    check_refuses(&placement, &["--param", "mode=fs"], "denied: the module called `wasi:filesystem/");
    check_refuses(&placement, &["--param", "mode=clock"], "`wasi:clocks/");
    check_refuses(&placement, &["--param", "mode=random"], "`wasi:random/");
    check_refuses(&placement, &["--param", "mode=reject"], "rejected its configuration: no\\r\\u{1b}[2K");
}

#[test]
fn check_reports_the_cost_at_scale() {
    let r = run(&["policy", "check", "pabfd", "--at-hosts", "5000", "--json"]);
    contained(&r, "pabfd");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["at_hosts"], 5000);
    assert!(v["fuel_per_call"].as_u64().expect("fuel") > 0, "{v}");
    assert!(v["extrapolated_cycle_ms"].as_f64().expect("ms") > 0.0, "{v}");
    assert!(v["summary"].as_str().expect("summary").contains("per cycle at 5000 hosts"), "{v}");
    // A legal but slow module (~tens of ms per call) passes, with a warning about scale.
    let r = run(&["policy", "check", &hostile("placement"), "--param", "mode=slow", "--param", "spin=3000000"]);
    contained(&r, "slow");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("OK: hostile-placement") && r.stdout.contains("at 10000 hosts"), "{}", r.stdout);
    assert!(r.stderr.starts_with("warning: at 10000 hosts a cycle would spend"), "{}", r.stderr);
}

fn strategy(dir: &Path, name: &str, threshold: &str, placement: &str, rules: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n[threshold]\n{threshold}\n[selection]\nmodule = \"mmt\"\n[placement]\n{placement}\n[rules]\n{rules}\n"
        ),
    )
    .expect("strategy");
    path.display().to_string()
}

/// One simulated day on a 100-host synthetic cluster.
fn sim(dir: &Path, strategy: &str) -> Run {
    let scenario = dir.join("day.toml");
    std::fs::write(&scenario, "duration_s = 86400\n[hosts]\ncount = 100\n").expect("scenario");
    let scenario = scenario.display().to_string();
    run(&[
        "sim",
        "--trace",
        "synthetic:vms=180,seed=5,mean=25",
        "--scenario",
        &scenario,
        "--strategy",
        strategy,
        "--json",
    ])
}

#[test]
fn simulations_contain_hostile_modules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let placement = |m: &str| format!("module = \"{m}\"");
    let thr = "module = \"thr\"";
    // Refused at load: the simulation does not start, one line names the cause.
    for (module, needle) in [
        (hostile("kind"), "declares a threshold policy"),
        (write_wat(d, "memsum", &components::memory_sum(24, 40)), "memory limit"),
        (write_wat(d, "bomb", &components::compile_bomb(27_000)), "too complex to compile"),
        (hostile("escape"), "non-printable character"),
    ] {
        let s = strategy(d, "refused", thr, &placement(&module), "");
        let r = sim(d, &s);
        contained(&r, &module);
        assert_ne!(r.code, 0, "{module}");
        assert!(r.stderr.contains(needle), "{module}: {}", r.stderr);
    }
    // Misbehaving at run time: the simulation completes on the fallbacks, the breaker disables
    // the module, and the log says so in a few lines.
    let h = hostile("threshold");
    // `slow` is legal (~20 ms per call, under the deadline) but over this strategy's 12 ms cycle
    // budget, which the built-ins keep to.
    for (mode, rules) in [("loop", ""), ("slow", "cycle_budget_ms = 12")] {
        let needle = "disabled by the circuit breaker";
        let params = format!("module = \"{h}\"\nparams = {{ mode = \"{mode}\" }}");
        let s = strategy(d, mode, &params, "module = \"pabfd\"", rules);
        let r = sim(d, &s);
        contained(&r, mode);
        assert_eq!(r.code, 0, "{mode}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{mode}: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
        assert!(v["migrations"].as_u64().is_some(), "{v}");
    }
}

#[test]
fn list_shows_the_sandbox_settings() {
    let r = run(&["policy", "list", "--json"]);
    contained(&r, "list");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["breaker"]["config"]["trip_after"], 3, "{v}");
    assert_eq!(v["breaker"]["cycle_budget_ms"], 1000, "{v}");
    assert!(v["breaker"]["modules"].is_array(), "{v}");
    assert_eq!(v["policies"][0]["breaker"]["state"], "closed", "{v}");
}
