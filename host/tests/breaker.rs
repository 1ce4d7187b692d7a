//! Class 4: a per-cycle policy-time budget and a circuit breaker. A legal but slow module is
//! cut off once the cycle's budget is spent (the fallback decides the rest of the cycle, the
//! overrun is recorded); a module failing in consecutive cycles is disabled, retried after a
//! back-off, and re-enabled by an operator.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;

use amvm_host::policy::{builtin, BreakerState, PolicyKind, PolicyRuntime, RuntimeConfig};
use amvm_host::scheduler::synthetic::SyntheticSpec;
use amvm_host::scheduler::{Scheduler, Strategy};

fn guest(name: &str) -> String {
    PathBuf::from(builtin::WASM_DIR).join(format!("amvm_test_hostile_{name}.wasm")).display().to_string()
}

fn strategy(mode: &str, rules: &str) -> Strategy {
    Strategy::from_toml(&format!(
        "name = \"hostile\"\n[threshold]\nmodule = \"{}\"\nparams = {{ mode = \"{mode}\" }}\n\
         [selection]\nmodule = \"mmt\"\n[placement]\nmodule = \"pabfd\"\n[rules]\n{rules}",
        guest("threshold")
    ))
    .unwrap()
}

#[test]
fn a_slow_module_is_cut_off_by_the_cycle_budget_and_then_disabled() {
    let rt = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
    // Each classify call takes tens of ms; the budget is 5 ms.
    let mut s = Scheduler::new(&rt, &strategy("slow", "cycle_budget_ms = 5")).unwrap();
    let mut snap = SyntheticSpec::new(20, 60, 3).build();
    let sha = s.breaker().states().first().map(|m| m.sha256.clone());
    assert!(sha.is_none(), "nothing recorded before the first cycle");
    for cycle in 0..3 {
        snap.cycle = cycle;
        let out = s.cycle(&snap);
        let o = out.budget_overrun.as_ref().expect("the budget is exceeded in every cycle");
        assert_eq!((o.module.as_str(), o.kind), ("hostile-threshold", PolicyKind::Threshold), "{o:?}");
        assert!(o.spent_ms > o.budget_ms, "{o:?}");
        assert!(!out.aborted, "the fallback decided the rest of the cycle");
        assert!(out.disabled.is_empty());
    }
    let states = s.breaker().states();
    assert_eq!(states.len(), 3, "every primary module is tracked: {states:?}");
    let t = states.iter().find(|m| m.module == "hostile-threshold").unwrap();
    let BreakerState::Open { since_cycle: 2, retry_at_cycle: 14, reason } = &t.state else {
        panic!("open after 3 over-budget cycles: {t:?}")
    };
    assert!(reason.contains("cycle policy-time budget exceeded"), "{reason}");
    // Disabled: the fallback decides from the start and the module costs nothing.
    snap.cycle = 3;
    let out = s.cycle(&snap);
    assert_eq!(out.disabled, vec!["hostile-threshold".to_string()]);
    assert!(out.budget_overrun.is_none() && out.failures.is_empty(), "{:?}", out.failures);
    assert!(out.stats.policy_time.as_millis() < 50, "{:?}", out.stats.policy_time);
    // The operator re-enables it.
    assert!(s.breaker().reset(&t.sha256));
    snap.cycle = 4;
    assert!(s.cycle(&snap).disabled.is_empty());
}

#[test]
fn a_failing_module_is_disabled_after_consecutive_failures_and_retried_after_a_back_off() {
    let rt = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
    let mut s = Scheduler::new(&rt, &strategy("loop", "")).unwrap();
    let mut snap = SyntheticSpec::new(20, 60, 3).build();
    let mut failing_cycles = Vec::new();
    for cycle in 0..40 {
        snap.cycle = cycle;
        let out = s.cycle(&snap);
        if out.failures.iter().any(|f| f.module == "hostile-threshold" && f.code == "deadline") {
            failing_cycles.push(cycle);
        }
        assert!(!out.aborted, "cycle {cycle}: the fallback decides");
    }
    // Three failing cycles, a 12-cycle back-off, a failed trial, a 24-cycle back-off.
    assert_eq!(failing_cycles, vec![0, 1, 2, 14, 38], "calls paid for in 40 cycles");
    let sha = s.breaker().states().into_iter().find(|m| m.module == "hostile-threshold").unwrap();
    assert_eq!(sha.trips, 3);
    assert!(sha.state.is_open(), "{sha:?}");
}
