//! Overload detection with headroom (`bounded-threshold`): the scheduler answers most
//! `would-overload` questions from the threshold module's own bounds. That must change no plan
//! when the module keeps its promise, must be refused at load when it does not
//! (`amvm policy check`, upload), and must be caught in the scheduler when such a module was
//! loaded anyway (the audits), with the plans then those of asking every question.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;
use std::sync::OnceLock;

use amvm_host::policy::{builtin, CheckOptions, ParamValues, PolicyKind, PolicyRuntime, RuntimeConfig};
use amvm_host::scheduler::synthetic::{advance, apply_instantly, SyntheticSpec};
use amvm_host::scheduler::{Scheduler, Snapshot, Strategy};
use proptest::prelude::*;

fn runtime() -> &'static PolicyRuntime {
    static RT: OnceLock<PolicyRuntime> = OnceLock::new();
    RT.get_or_init(|| PolicyRuntime::new(RuntimeConfig::default()).unwrap())
}

fn wasm(file: &str) -> PathBuf {
    PathBuf::from(builtin::WASM_DIR).join(file)
}

fn liar(lie: &str) -> Strategy {
    Strategy::from_toml(&format!(
        "name = \"liar\"\n[threshold]\nmodule = \"{}\"\nparams = {{ lie = \"{lie}\" }}\n\
         [selection]\nmodule = \"mmt\"\n[placement]\nmodule = \"pabfd\"\n[rules]\ncycle_budget_ms = 600000",
        wasm("amvm_test_hostile_headroom.wasm").display()
    ))
    .unwrap()
}

fn check(file: &str, params: &[(&str, &str)]) -> Result<String, String> {
    let bytes = std::fs::read(file).unwrap();
    let opts = CheckOptions {
        params: params.iter().map(|&(k, v)| (k.to_string(), v.to_string())).collect(),
        ..CheckOptions::default()
    };
    runtime().check(&bytes, file, &opts).map(|r| r.summary).map_err(|e| e.to_string())
}

#[test]
fn policy_check_verifies_the_headroom_promise() {
    let lr = wasm("amvm_policy_lr.wasm").display().to_string();
    let ok = check(&lr, &[]).unwrap();
    assert!(ok.contains("headroom ok"), "{ok}");
    let honest = wasm("amvm_test_hostile_headroom.wasm").display().to_string();
    let ok = check(&honest, &[("lie", "none")]).unwrap();
    assert!(ok.contains("headroom ok"), "{ok}");
    for (lie, needle) in [
        ("accept-all", "says would-overload is false, but would-overload answers true"),
        ("refuse-all", "says would-overload is true, but would-overload answers false"),
        ("nonlocal", "must answer each host on its own"),
    ] {
        let err = check(&honest, &[("lie", lie)]).unwrap_err();
        assert!(err.contains(needle), "{lie}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    // A threshold module without bounds is checked as before.
    let thr = check(&wasm("amvm_policy_thr.wasm").display().to_string(), &[]).unwrap();
    assert!(thr.contains("would-overload ok") && !thr.contains("headroom"), "{thr}");
}

/// Plans of `a` and `b` over `cycles` cycles of the same evolving cluster; the first that
/// differ, as an error.
/// Returns the verdicts `a` read from bounds and the index groups it passed whole.
fn same_plans(
    a: &mut Scheduler,
    b: &mut Scheduler,
    mut snap: Snapshot,
    cycles: u32,
    seed: u64,
) -> Result<(u64, u64), String> {
    let (mut bounded, mut groups) = (0, 0);
    for c in 0..cycles {
        let x = a.cycle(&snap);
        let y = b.cycle(&snap);
        if !x.failures.is_empty() || !y.failures.is_empty() {
            return Err(format!("failures: {:?} {:?}", x.failures, y.failures));
        }
        if x.plan != y.plan {
            let (ma, mb) = (&x.plan.migrations, &y.plan.migrations);
            let i = ma.iter().zip(mb).position(|(p, q)| p != q).unwrap_or(ma.len().min(mb.len()));
            return Err(format!(
                "cycle {c}: plans differ at migration {i}: {:?} against {:?} ({} and {} migrations)",
                ma.get(i),
                mb.get(i),
                ma.len(),
                mb.len()
            ));
        }
        bounded += x.stats.bounded_verdicts;
        groups += x.stats.groups_vetoed;
        apply_instantly(&mut snap, &x.plan);
        advance(&mut snap, seed);
    }
    Ok((bounded, groups))
}

#[test]
fn lying_bounds_are_caught_by_the_audit_and_change_no_plan() {
    for lie in ["accept-all", "refuse-all"] {
        for index in [false, true] {
            let mut lying = Scheduler::new(runtime(), &liar(lie)).unwrap();
            let mut asking = Scheduler::new(runtime(), &liar(lie)).unwrap();
            asking.set_headroom_veto(false);
            if index {
                lying.set_candidate_index_min_hosts(0);
            }
            let snap = SyntheticSpec::new(300, 3000, 7).build();
            let first = lying.cycle(&snap);
            let f = first.failures.iter().find(|f| f.code == "invalid-output").unwrap_or_else(|| {
                panic!("{lie}, index {index}: the lie is recorded as a failure: {:?}", first.failures)
            });
            assert_eq!((f.module.as_str(), f.kind, f.fallback), ("hostile-headroom", PolicyKind::Threshold, false));
            assert!(f.error.contains("headroom") && f.error.contains("no longer used"), "{}", f.error);
            let reference = asking.cycle(&snap);
            assert!(!first.plan.migrations.is_empty(), "the cycle decided something");
            assert_eq!(first.plan, reference.plan, "{lie}, index {index}: caught before it changed a plan");
            // Later cycles do not use the bounds at all, and say nothing more.
            let mut next = snap.clone();
            apply_instantly(&mut next, &first.plan);
            advance(&mut next, 7);
            let second = lying.cycle(&next);
            assert!(second.failures.is_empty(), "{:?}", second.failures);
            assert_eq!(second.stats.bounded_verdicts, 0);
            assert_eq!(second.plan, asking.cycle(&next).plan);
        }
    }
}

#[test]
fn lr_bounds_change_no_plan_on_the_bench_cluster() {
    let st = Strategy::resolve("lr-mmt-1.2").unwrap();
    let mut bounded = Scheduler::new(runtime(), &st).unwrap();
    bounded.set_candidate_index_min_hosts(0);
    let mut asking = Scheduler::new(runtime(), &st).unwrap();
    asking.set_headroom_veto(false);
    asking.set_candidate_index(false);
    let (n, g) = same_plans(&mut bounded, &mut asking, SyntheticSpec::new(300, 3000, 7).build(), 4, 7).unwrap();
    assert!(n > 1000, "the bounds decided {n} verdicts");
    assert!(g > 100, "{g} index groups passed whole");
}

#[test]
fn a_threshold_module_of_the_older_contract_loads_and_decides_the_same() {
    // LR as built against amvm:policy@0.1.0 before `bounded-threshold` existed (the `threshold`
    // world only), kept as a fixture: a third party's module of that contract.
    let rt = runtime();
    let fixture = format!("{}/tests/fixtures/lr-threshold-0.1.0.wasm", env!("CARGO_MANIFEST_DIR"));
    let old = rt.load_file(std::path::Path::new(&fixture)).unwrap();
    assert_eq!(old.kind(), PolicyKind::Threshold);
    assert!(!rt.instantiate(&old, &ParamValues::new()).unwrap().has_headroom());
    assert!(rt.instantiate(&rt.builtin("lr").unwrap(), &ParamValues::new()).unwrap().has_headroom());
    let with_old = Strategy::from_toml(&format!(
        "name = \"old-lr\"\n[threshold]\nmodule = \"{fixture}\"\nparams = {{ safety = 1.2, lower = 1.0 }}\n\
         [selection]\nmodule = \"mmt\"\n[placement]\nmodule = \"pabfd\"\n[rules]\ncycle_budget_ms = 600000"
    ))
    .unwrap();
    let mut st = Strategy::resolve("lr-mmt-1.2").unwrap();
    st.set("rules.cycle_budget_ms=600000").unwrap();
    let mut a = Scheduler::new(rt, &with_old).unwrap();
    let mut b = Scheduler::new(rt, &st).unwrap();
    let (bounded, _) = same_plans(&mut b, &mut a, SyntheticSpec::new(200, 2000, 3).build(), 3, 3).unwrap();
    assert!(bounded > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// LR's bounds (and the candidate index's use of them) pick the hosts asking would.
    #[test]
    fn lr_bounds_pick_the_hosts_asking_picks(
        hosts in 4usize..120,
        per_host in 1usize..14,
        seed in 0u64..1000,
        strategy in prop::sample::select(vec!["lr-mmt-1.2", "lr-mc-1.2", "lr-mu-1.2"]),
        lower in prop::option::of(0.1f64..0.6),
        index in any::<bool>(),
    ) {
        let mut st = Strategy::resolve(strategy).unwrap();
        if let Some(l) = lower {
            st.set(&format!("threshold.lower={l}")).unwrap();
        }
        let mut bounded = Scheduler::new(runtime(), &st).unwrap();
        if index {
            bounded.set_candidate_index_min_hosts(0);
        }
        let mut asking = Scheduler::new(runtime(), &st).unwrap();
        asking.set_headroom_veto(false);
        asking.set_candidate_index(false);
        let snap = SyntheticSpec::new(hosts, hosts * per_host / 2 + 1, seed).build();
        prop_assert_eq!(same_plans(&mut bounded, &mut asking, snap, 3, seed).map(|_| ()), Ok(()));
    }
}
