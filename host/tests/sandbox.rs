//! Hostile guests: each misbehaviour is contained with a clear error, and the runtime keeps
//! serving afterwards. The guests are built from `policies/testing/` with the built-ins.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;

#[path = "../../policies/testing/components.rs"]
mod components;

use amvm_host::policy::{
    builtin, types, ParamValue, ParamValues, PolicyError, PolicyInstance, PolicyRuntime, RuntimeConfig,
};

fn guest(name: &str) -> PathBuf {
    PathBuf::from(builtin::WASM_DIR).join(format!("amvm_test_hostile_{name}.wasm"))
}

fn runtime() -> PolicyRuntime {
    PolicyRuntime::new(RuntimeConfig::default()).unwrap()
}

fn hostile(rt: &PolicyRuntime, world: &str, mode: &str) -> PolicyInstance {
    let m = rt.load_file(&guest(world)).unwrap();
    let params: ParamValues = [("mode".to_string(), ParamValue::Text(mode.into()))].into_iter().collect();
    rt.instantiate(&m, &params).unwrap()
}

fn ctx() -> types::Context {
    types::Context { cycle: 0, interval_s: 300.0, seed: 1, migration_mbps: 62.5, power_curves: vec![80.0; 11] }
}

fn candidates(n: usize) -> types::Candidates {
    types::Candidates {
        n: n as u32,
        cpu_used: vec![100.0; n],
        cpu_capacity: vec![1000.0; n],
        mem_used: vec![100.0; n],
        mem_capacity: vec![1000.0; n],
        power_model: vec![0; n],
        vm_count: vec![1; n],
        asleep: vec![0; n],
    }
}

fn weigh(p: &mut PolicyInstance, n: usize) -> Result<Vec<Option<f32>>, PolicyError> {
    p.weigh(&ctx(), types::VmDemand { cpu_mips: 10.0, ram_mb: 10.0 }, &candidates(n))
}

fn hosts(n: usize) -> types::Hosts {
    types::Hosts {
        n: n as u32,
        window: 1,
        cpu: vec![0.5; n],
        mem: Vec::new(),
        net: Vec::new(),
        cpu_capacity: vec![1000.0; n],
        mem_capacity: vec![1000.0; n],
        max_migration_s: vec![1.0; n],
        vm_count: vec![2; n],
    }
}

fn vms(n: usize) -> types::Vms {
    types::Vms { n: n as u32, window: 1, cpu: vec![0.5; n], mips: vec![500.0; n], ram_mb: vec![100.0; n] }
}

/// After a trap the instance is rebuilt (on its next call), and the runtime serves a healthy
/// built-in.
fn still_serving(rt: &PolicyRuntime, p: &mut PolicyInstance) {
    assert!(p.restarts > 0, "a trapped call must replace the instance");
    let thr = rt.builtin("thr").unwrap();
    let mut ok = rt.instantiate(&thr, &ParamValues::new()).unwrap();
    assert_eq!(ok.classify(&ctx(), &hosts(3)).unwrap().len(), 3);
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let rt = runtime();
    let mut p = hostile(&rt, "placement", "loop");
    let err = weigh(&mut p, 4).unwrap_err();
    assert!(matches!(err, PolicyError::DeadlineExceeded { deadline_ms: 50 }), "{err}");
    assert!(p.last_call.elapsed.as_millis() < 2000, "interrupted promptly: {:?}", p.last_call.elapsed);
    still_serving(&rt, &mut p);
    // The replaced instance runs again (and loops again, and is stopped again).
    assert!(matches!(weigh(&mut p, 4).unwrap_err(), PolicyError::DeadlineExceeded { .. }));
}

#[test]
fn unbounded_memory_growth_hits_the_cap() {
    let rt = runtime();
    let mut p = hostile(&rt, "placement", "grow");
    let err = weigh(&mut p, 4).unwrap_err();
    assert!(matches!(err, PolicyError::MemoryLimit { limit_mib: 64 }), "{err}");
    still_serving(&rt, &mut p);
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    let rt = runtime();
    let mut p = hostile(&rt, "placement", "recurse");
    let err = weigh(&mut p, 4).unwrap_err();
    assert!(matches!(err, PolicyError::StackOverflow), "{err}");
    still_serving(&rt, &mut p);
}

#[test]
fn panic_is_a_trap_that_carries_the_message() {
    let rt = runtime();
    let mut p = hostile(&rt, "placement", "panic");
    let err = weigh(&mut p, 4).unwrap_err();
    let PolicyError::Trap { log, .. } = &err else { panic!("expected a trap, got {err}") };
    assert!(log.as_deref().unwrap_or_default().contains("panics on purpose"), "{err}");
    still_serving(&rt, &mut p);
}

#[test]
fn non_finite_and_misshapen_outputs_are_rejected() {
    let rt = runtime();
    for (mode, needle) in
        [("nan", "must be finite"), ("inf", "must be finite"), ("short", "2 entries for 4"), ("huge", "entries for 4")]
    {
        let mut p = hostile(&rt, "placement", mode);
        let err = weigh(&mut p, 4).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidOutput { function: "weigh", .. }), "{mode}: {err}");
        assert!(err.to_string().contains(needle), "{mode}: {err}");
        // The module ran to completion; only its answer was refused. It keeps serving.
        assert_eq!(p.restarts, 0);
        assert!(weigh(&mut p, 4).is_err());
    }
}

#[test]
fn selection_indexes_are_checked() {
    let rt = runtime();
    let mut p = hostile(&rt, "selection", "out-of-range");
    let err = p.select(&ctx(), &hosts(1), &vms(3)).unwrap_err();
    assert!(err.to_string().contains("index 8 out of range"), "{err}");
    let mut p = hostile(&rt, "selection", "duplicate");
    let err = p.select(&ctx(), &hosts(1), &vms(3)).unwrap_err();
    assert!(err.to_string().contains("returned twice"), "{err}");
    let mut p = hostile(&rt, "selection", "ok");
    assert_eq!(p.select(&ctx(), &hosts(1), &vms(3)).unwrap(), vec![0, 1, 2]);
}

#[test]
fn threshold_classes_are_checked() {
    let rt = runtime();
    let mut p = hostile(&rt, "threshold", "bad-class");
    let err = p.classify(&ctx(), &hosts(3)).unwrap_err();
    assert!(err.to_string().contains("class 7"), "{err}");
    let mut p = hostile(&rt, "threshold", "short");
    let err = p.would_overload(&ctx(), &hosts(4), &vms(1)).unwrap_err();
    assert!(err.to_string().contains("2 entries for 4"), "{err}");
}

#[test]
fn wasi_filesystem_is_not_available() {
    let rt = runtime();
    let m = rt.load_file(&guest("placement")).unwrap();
    assert!(
        m.trapped_imports.iter().any(|i| i.starts_with("wasi:filesystem")),
        "the fs guest imports WASI filesystem: {:?}",
        m.trapped_imports
    );
    let mut p = hostile(&rt, "placement", "fs");
    match weigh(&mut p, 4) {
        // Calling the denied import ends the call, naming what was denied.
        Err(PolicyError::DeniedImport { import }) => assert!(import.starts_with("wasi:filesystem/"), "{import}"),
        other => panic!("reading a file must not succeed: {other:?} log {:?}", p.log()),
    }
    assert!(!p.log().iter().any(|l| l.starts_with("fs: read")));
    still_serving(&rt, &mut p);
}

/// Class 6: every denied WASI interface is named, in one line, without a backtrace.
#[test]
fn denied_wasi_calls_name_the_interface() {
    let rt = runtime();
    for (mode, interface) in [("fs", "wasi:filesystem/"), ("clock", "wasi:clocks/"), ("random", "wasi:random/")] {
        let mut p = hostile(&rt, "placement", mode);
        let err = weigh(&mut p, 4).unwrap_err();
        assert!(matches!(err, PolicyError::DeniedImport { .. }), "{mode}: {err}");
        let text = err.to_string();
        assert!(text.starts_with("denied: the module called `") && text.contains(interface), "{mode}: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains("backtrace"), "{text}");
    }
}

/// Class 6: a module's refusal is shown as one sanitized, truncated line.
#[test]
fn a_refusal_is_one_clean_line() {
    let rt = runtime();
    let m = rt.load_file(&guest("placement")).unwrap();
    let params: ParamValues = [("mode".to_string(), ParamValue::Text("reject".into()))].into_iter().collect();
    let err = rt.instantiate(&m, &params).unwrap_err();
    assert!(matches!(err, PolicyError::Rejected(_)), "{err}");
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
    assert!(text.contains("\\u{1b}[2K") && text.ends_with('…'), "escaped and truncated: {text}");
    assert!(text.chars().count() < 300, "{} chars", text.chars().count());
}

fn load_err(rt: &PolicyRuntime, name: &str) -> PolicyError {
    rt.load_file(&PathBuf::from(builtin::WASM_DIR).join(format!("amvm_test_hostile_{name}.wasm"))).unwrap_err()
}

/// Class 1: the world decides; a module declaring another kind is refused at load, before any
/// decision call, and never panics.
#[test]
fn a_kind_that_contradicts_the_world_is_refused_at_load() {
    let rt = runtime();
    let err = load_err(&rt, "kind");
    assert!(matches!(err, PolicyError::KindMismatch { world: "placement", declared: "threshold" }), "{err}");
    let wat = components::several_worlds();
    let err = rt.load(&wat::parse_str(&wat).unwrap(), "several").unwrap_err();
    assert!(matches!(err, PolicyError::SeveralWorlds { .. }), "{err}");
    assert!(err.to_string().contains("threshold: classify; placement: weigh"), "{err}");
    let extra = components::placement_skeleton("extra", "").replace(
        "(export \"weigh\" (func $weigh))",
        "(export \"weigh\" (func $weigh)) (export \"backdoor\" (func $weigh))",
    );
    let err = rt.load(&wat::parse_str(&extra).unwrap(), "extra").unwrap_err();
    assert!(matches!(err, PolicyError::ExtraExports { world: "placement", .. }), "{err}");
    // The skeleton itself is a valid placement policy.
    let ok = rt.load(&wat::parse_str(components::placement_skeleton("skeleton", "")).unwrap(), "ok").unwrap();
    assert_eq!(ok.name(), "skeleton");
}

/// Class 5: descriptor text is printable and bounded, bounds are finite, and the limits apply
/// while the descriptor is decoded.
#[test]
fn hostile_descriptors_are_refused_in_one_clean_line() {
    // What is checked is the descriptor, not timing: a loaded machine must not turn the refusal
    // into a deadline.
    let rt =
        PolicyRuntime::new(RuntimeConfig { deadline: std::time::Duration::from_secs(2), ..RuntimeConfig::default() })
            .unwrap();
    for (name, needle) in [
        ("escape", "non-printable character"),
        ("bounds", "bounds must be finite"),
        ("huge", "summary is longer than 512 bytes"),
    ] {
        let err = load_err(&rt, name);
        assert!(matches!(err, PolicyError::BadDescriptor(_)), "{name}: {err}");
        let text = err.to_string();
        assert!(text.contains(needle), "{name}: {text}");
        assert_eq!(text.lines().count(), 1, "{name}: {text}");
        assert!(!text.chars().any(|c| c.is_control()), "{name}: {text:?}");
        assert!(text.len() < 600, "{name}: {} bytes", text.len());
    }
}

/// Class 3: the memory cap is the sum over every memory and table a module instantiates.
#[test]
fn the_memory_cap_is_the_sum_of_all_memories_and_tables() {
    let rt = runtime();
    // One 40 MiB memory fits under the 64 MiB cap.
    let one = wat::parse_str(components::memory_sum(1, 40)).unwrap();
    rt.load(&one, "one").unwrap();
    // Twenty-four of them, each under the cap, do not.
    let many = wat::parse_str(components::memory_sum(24, 40)).unwrap();
    let err = rt.load(&many, "many").unwrap_err();
    assert!(matches!(err, PolicyError::MemoryLimit { limit_mib: 64 }), "{err}");
    // Tables count too (16 bytes per element): 40 MiB of memory and one table of 200,000
    // elements fit, ten such tables do not.
    rt.load(&wat::parse_str(components::table_sum(1, 200_000)).unwrap(), "one table").unwrap();
    let tables = wat::parse_str(components::table_sum(10, 200_000)).unwrap();
    let err = rt.load(&tables, "tables").unwrap_err();
    assert!(matches!(err, PolicyError::MemoryLimit { .. }), "{err}");
    // And instances are counted before anything is compiled.
    let err = rt.load(&wat::parse_str(components::memory_sum(70, 0)).unwrap(), "instances").unwrap_err();
    assert!(err.to_string().contains("instances"), "{err}");
}

/// Class 2: structure is checked before compiling; a compile bomb is refused at once.
#[test]
fn code_too_costly_to_compile_is_refused_before_compiling() {
    let rt = runtime();
    let bomb = wat::parse_str(components::compile_bomb(27_000)).unwrap();
    let err = rt.load(&bomb, "bomb").unwrap_err();
    assert!(matches!(err, PolicyError::TooComplex(_)), "{err}");
    let err = rt.load(&components::oversized(17), "big").unwrap_err();
    assert!(err.to_string().contains("module size"), "{err}");
    still_serving_after_refusals(&rt);
}

fn still_serving_after_refusals(rt: &PolicyRuntime) {
    let thr = rt.builtin("thr").unwrap();
    let mut ok = rt.instantiate(&thr, &ParamValues::new()).unwrap();
    assert_eq!(ok.classify(&ctx(), &hosts(3)).unwrap().len(), 3);
}

#[test]
fn garbage_core_modules_and_foreign_components_are_refused() {
    let rt = runtime();
    let err = rt.load(b"this is not wasm at all", "garbage").unwrap_err();
    assert!(matches!(err, PolicyError::NotWasm), "{err}");
    let err = rt.load(&[0, b'a', b's', b'm', 1, 0, 0], "truncated").unwrap_err();
    assert!(matches!(err, PolicyError::NotWasm), "{err}");
    let core = wat::parse_str("(module (func (export \"weigh\")))").unwrap();
    assert!(matches!(rt.load(&core, "core").unwrap_err(), PolicyError::CoreModule));
    let empty = wat::parse_str("(component)").unwrap();
    let err = rt.load(&empty, "empty").unwrap_err();
    assert!(matches!(err, PolicyError::UnknownWorld { .. }), "{err}");
    let no_describe = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $f (result u32) (canon lift (core func $i "f")))
            (export "weigh" (func $f)))"#,
    )
    .unwrap();
    assert!(matches!(rt.load(&no_describe, "no-describe").unwrap_err(), PolicyError::MissingDescribe));
    // Right names, wrong types: `weigh` and `describe` that do not match the placement world.
    let wrong_types = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $f (result u32) (canon lift (core func $i "f")))
            (export "weigh" (func $f))
            (export "describe" (func $f)))"#,
    )
    .unwrap();
    let err = rt.load(&wrong_types, "wrong-types").unwrap_err();
    assert!(matches!(err, PolicyError::WorldMismatch { world: "placement", .. }), "{err}");
    // Corrupted component bytes.
    let mut bytes = std::fs::read(guest("selection")).unwrap();
    let mid = bytes.len() / 2;
    bytes.truncate(mid);
    assert!(matches!(rt.load(&bytes, "truncated").unwrap_err(), PolicyError::Invalid(_)));
    // The runtime still serves.
    let thr = rt.builtin("thr").unwrap();
    rt.instantiate(&thr, &ParamValues::new()).unwrap();
}

#[test]
fn a_module_of_one_kind_is_refused_as_another() {
    let rt = runtime();
    let mut p = rt.instantiate(&rt.builtin("mmt").unwrap(), &ParamValues::new()).unwrap();
    let err = p.classify(&ctx(), &hosts(1)).unwrap_err();
    assert!(matches!(err, PolicyError::WrongKind { expected: "threshold", found: "selection" }), "{err}");
}

#[test]
fn fuel_is_metered_per_call() {
    let rt = runtime();
    let mut p = rt.instantiate(&rt.builtin("mad").unwrap(), &ParamValues::new()).unwrap();
    p.classify(&ctx(), &hosts(10)).unwrap();
    let small = p.last_call.fuel;
    p.classify(&ctx(), &hosts(1000)).unwrap();
    let large = p.last_call.fuel;
    assert!(small > 0 && large > 10 * small, "fuel grows with work: {small} vs {large}");
    // Deterministic: the same call on a fresh instance costs the same fuel.
    let mut q = rt.instantiate(&rt.builtin("mad").unwrap(), &ParamValues::new()).unwrap();
    q.classify(&ctx(), &hosts(10)).unwrap();
    assert_eq!(q.last_call.fuel, small);
}
