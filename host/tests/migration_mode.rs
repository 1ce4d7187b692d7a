//! Migration mode per move (#12 item 4, #10): the strategy's `migration-mode` policy chooses
//! pre, post or hybrid for every migration of a plan; by default the built-in `model` (the
//! paper's equations 1–7) does, from the VM's memory, its measured dirty rate and the link.
#![allow(clippy::tests_outside_test_module)]

mod common;

use amvm_host::policy::{builtin, ParamValue, PolicyKind, PolicyRuntime};
use amvm_host::scheduler::{HostState, Mode, PolicyChoice, Scheduler, Snapshot, Strategy};
use amvm_model::{choose_mode, Params};
use common::{cluster, runtime};

/// Three underloaded hosts, one VM each: `thr-mmt-0.8` (lower 1.0) consolidates two of them.
/// VM `i` dirties `dirty[i]` MB/s.
fn consolidation(dirty: [f32; 3]) -> Snapshot {
    use HostState::Active;
    let mut snap = cluster(&[Active, Active, Active], &[(0, 0.3, 1024.0), (1, 0.2, 1024.0), (2, 0.1, 1024.0)]);
    snap.vms.dirty_mbps = dirty.to_vec();
    snap
}

fn plan_modes(rt: &PolicyRuntime, strategy: &Strategy, snap: &Snapshot) -> (Vec<(u32, Option<Mode>)>, Vec<String>) {
    let mut s = Scheduler::new(rt, strategy).unwrap();
    let out = s.cycle(snap);
    assert!(!out.aborted);
    let failures = out.failures.iter().map(|f| format!("{} {} {}", f.kind, f.module, f.code)).collect();
    (out.plan.migrations.iter().map(|m| (m.vm, m.mode)).collect(), failures)
}

/// What the paper's model says for a VM of `ram` MB dirtying `dirty` MB/s on a `link` MB/s link.
fn expected(ram: f32, dirty: f32, link: f32) -> Mode {
    const MB: f64 = 1048576.0;
    choose_mode(&Params::from_link(f64::from(ram) * MB, f64::from(link) * MB, f64::from(dirty) * MB)).mode
}

#[test]
fn the_built_in_model_is_a_migration_mode_policy_and_every_strategy_defaults_to_it() {
    let rt = runtime();
    let m = rt.builtin("model").unwrap();
    assert_eq!(m.kind(), PolicyKind::MigrationMode);
    assert_eq!(m.descriptor.name, "model");
    assert!(m.descriptor.params.iter().any(|p| p.name == "unmeasured-dirty-mbps"));
    for name in Strategy::builtin_names() {
        assert_eq!(Strategy::builtin(&name).unwrap().migration_mode, PolicyChoice::builtin("model"), "{name}");
    }
    // A strategy file without the section gets the default; the TOML round trip keeps it.
    let s = Strategy::builtin("thr-mmt-0.8").unwrap();
    let back = Strategy::from_toml(&s.to_toml()).unwrap();
    assert_eq!(back.migration_mode.module, "model");
    // A module of another kind in the slot is refused at load, naming both kinds.
    let mut wrong = s.clone();
    wrong.migration_mode = PolicyChoice::builtin("pabfd");
    let e = Scheduler::new(&rt, &wrong).unwrap_err().to_string();
    assert!(e.contains("placement") && e.contains("migration-mode"), "{e}");
}

#[test]
fn the_model_picks_each_moves_mode_from_its_dirty_rate_memory_and_link() {
    let rt = runtime();
    let strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    // VM 0 is idle, VM 1 dirties at 90 % of the 62.5 MB/s link, VM 2 faster than the link.
    let snap = consolidation([0.0, 56.0, 80.0]);
    let (modes, failures) = plan_modes(&rt, &strategy, &snap);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(modes.len() >= 2, "the underloaded hosts are consolidated: {modes:?}");
    let link = snap.migration_bandwidth_mbps;
    let mut seen = Vec::new();
    for (vm, mode) in &modes {
        let v = *vm as usize;
        let want = expected(snap.vms.ram_mb[v], snap.vms.dirty_mbps[v], link);
        assert_eq!(*mode, Some(want), "VM {vm}");
        seen.push(want);
    }
    // The inputs differ enough that the model does not answer one mode for all.
    assert!(seen.contains(&Mode::Pre) || expected(1024.0, 0.0, link) == Mode::Pre);
    assert_eq!(expected(1024.0, 0.0, link), Mode::Pre, "an idle VM pre-copies");
    assert_ne!(expected(1024.0, 80.0, link), Mode::Pre, "pre-copy cannot converge above the link");
}

#[test]
fn an_unmeasured_dirty_rate_is_estimated_from_cpu_and_fixed_forces_one_mode() {
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    let mut snap = consolidation([0.0; 3]);
    snap.vms.dirty_mbps.clear(); // a world that measures none (the simulator)
                                 // Every VM assumed to dirty 10 GB/s at full CPU: none can pre-copy.
    strategy.set("migration_mode.unmeasured-dirty-mbps=10000").unwrap();
    let (modes, failures) = plan_modes(&rt, &strategy, &snap);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!modes.is_empty());
    assert!(modes.iter().all(|(_, m)| matches!(m, Some(Mode::Post | Mode::Hybrid))), "{modes:?}");
    strategy.set("migration_mode.fixed=hybrid").unwrap();
    let (modes, _) = plan_modes(&rt, &strategy, &snap);
    assert!(modes.iter().all(|(_, m)| *m == Some(Mode::Hybrid)), "{modes:?}");
    // A bad fixed mode is refused when the strategy is loaded.
    strategy.set("migration_mode.fixed=sideways").unwrap();
    let e = Scheduler::new(&rt, &strategy).unwrap_err();
    let cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("sideways"), "{e}: {cause}");
}

#[test]
fn a_failing_mode_module_is_recorded_and_the_fallback_chooses() {
    let rt = runtime();
    let hostile = format!("{}/amvm_test_hostile_mode.wasm", builtin::WASM_DIR);
    let snap = consolidation([0.0, 56.0, 80.0]);
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.migration_mode = PolicyChoice { module: hostile.clone(), params: Default::default() };
    let (ok, failures) = plan_modes(&rt, &strategy, &snap);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(ok.iter().all(|(_, m)| *m == Some(Mode::Post)), "the module's own answers are used: {ok:?}");
    let (model, _) = plan_modes(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap(), &snap);
    for (act, code) in [("short", "invalid-output"), ("trap", "trap")] {
        strategy.migration_mode = PolicyChoice::builtin(&hostile).with("act", ParamValue::Text(act.into()));
        let (modes, failures) = plan_modes(&rt, &strategy, &snap);
        assert_eq!(failures, vec![format!("migration-mode hostile-mode {code}")], "{act}");
        // The same moves as without the failure, with the fallback's (the built-in model's) modes.
        assert_eq!(modes, model, "{act}");
    }
}
