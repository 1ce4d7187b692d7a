//! The scheduler core on small clusters whose right answers are worked out by hand.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use amvm_host::policy::{builtin, ParamValue};
use amvm_host::scheduler::{HostState, MigrationReason, PolicyChoice, Scheduler, Strategy};

mod common;
use common::{cluster, mig, moves, runtime, three_hosts};

#[test]
fn overload_then_underload_by_hand() {
    // thr-mmt-0.8 with PABFD:
    // - host 0 (0.9 > 0.8) is overloaded; MMT picks b (least RAM); host 0 drops to 0.5.
    // - b (0.4) costs +12 W on host 1 (0.3 → 0.7: 96 → 108) and +12.7 W on host 2
    //   (0.15 → 0.55: 91 → 103.7): host 1, which stays at 0.7 ≤ 0.8.
    // - Underload, least utilized first: host 1 received VMs, so only host 2 (0.15) is tried;
    //   its VM d (0.15) would take host 1 to 0.85 > 0.8, and host 0 is overloaded: the
    //   evacuation fails and host 2 stays up.
    let rt = runtime();
    let mut s = Scheduler::new(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap()).unwrap();
    let out = s.cycle(&three_hosts());
    assert!(out.failures.is_empty() && !out.aborted);
    assert_eq!(moves(&out.plan), vec![mig(1, 100, 101, MigrationReason::Overload)]);
    assert!(out.plan.sleep.is_empty() && out.plan.wake.is_empty());
    assert_eq!(out.stats.overloaded_hosts, 1);

    // With d at 0.05 instead, host 1 takes it (0.7 → 0.75, +2 W) and host 2 sleeps.
    let mut snap = three_hosts();
    snap.vms.cpu_history[9..12].copy_from_slice(&[0.05; 3]);
    let out = s.cycle(&snap);
    assert_eq!(
        moves(&out.plan),
        vec![mig(1, 100, 101, MigrationReason::Overload), mig(3, 102, 101, MigrationReason::Underload)]
    );
    assert_eq!(out.plan.sleep, vec![102]);
}

#[test]
fn what_a_move_costs_besides_ram_counts_in_vm_selection() {
    // As in the test above, MMT picks b (500 MB: 8 s on 62.5 MB/s) over a (1000 MB: 16 s). Give
    // b a volume whose remapping costs 10 s more (the live world's `extra_migration_s`): b now
    // takes 18 s, and a leaves instead.
    let rt = runtime();
    let mut s = Scheduler::new(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap()).unwrap();
    let mut snap = three_hosts();
    snap.vms.extra_migration_s = vec![0.0, 10.0, 0.0, 0.0];
    let out = s.cycle(&snap);
    let first = &moves(&out.plan)[0];
    assert_eq!((first.vm, first.from, first.reason), (0, 100, MigrationReason::Overload), "{:?}", out.plan);
    assert!(out.plan.migrations.iter().all(|m| m.vm != 1), "{:?}", out.plan);
    // At 7 s more, b takes 15 s, still less than a's 16 s: b leaves, as without a volume.
    snap.vms.extra_migration_s = vec![0.0, 7.0, 0.0, 0.0];
    assert_eq!(moves(&s.cycle(&snap).plan)[0], mig(1, 100, 101, MigrationReason::Overload));
}

#[test]
fn a_sleeping_host_is_woken_when_it_is_the_best_destination() {
    use HostState::{Active, Asleep};
    // Host 0 at 0.9 (a 0.6 / 2000 MB, b 0.3 / 300 MB); host 1 at 0.75 has no room under 0.8
    // for b (1.05 > 1 does not even fit); host 2 sleeps. b goes to host 2: PABFD compares
    // 86 → 96 W (+10 W) against nothing else.
    let snap = cluster(&[Active, Active, Asleep], &[(0, 0.6, 2000.0), (0, 0.3, 300.0), (1, 0.75, 500.0)]);
    let rt = runtime();
    let mut s = Scheduler::new(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap()).unwrap();
    let out = s.cycle(&snap);
    assert_eq!(moves(&out.plan), vec![mig(1, 100, 102, MigrationReason::Overload)]);
    assert_eq!(out.plan.wake, vec![102]);
}

#[test]
fn sleeping_hosts_are_offered_one_per_type_and_a_woken_one_joins_the_others() {
    use HostState::{Active, Asleep};
    // Host 0 at 1.25 (a 0.5 / 2000 MB, b 0.4 / 300 MB, c 0.35 / 400 MB); hosts 1-3 sleep, all of
    // one type. MMT takes b (0.85 still > 0.8), then c (0.5). Placement by decreasing demand:
    // - b: the empty sleepers are interchangeable; host 1, the lowest-numbered, stands for them.
    // - c: host 1 (woken by this plan, 0.4 → 0.75: 99.5 → 107 W, +7.5 W) against an empty
    //   sleeper (0 → 0.35: 86 → 94.3 W, +8.3 W): host 1.
    let vms = [(0, 0.5, 2000.0), (0, 0.4, 300.0), (0, 0.35, 400.0)];
    let snap = cluster(&[Active, Asleep, Asleep, Asleep], &vms);
    let rt = runtime();
    let mut s = Scheduler::new(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap()).unwrap();
    let out = s.cycle(&snap);
    let over = MigrationReason::Overload;
    assert_eq!(moves(&out.plan), vec![mig(1, 100, 101, over), mig(2, 100, 101, over)]);
    assert_eq!(out.plan.wake, vec![101]);

    // Host 3 of another type (2000 MIPS) is offered too although a lower-numbered sleeper is:
    // b costs +6.6 W there (0 → 0.2) against +13.5 W on a small host; then c +6 W (0.2 → 0.375)
    // against +8.3 W.
    let mut snap = cluster(&[Active, Asleep, Asleep, Asleep], &vms);
    snap.hosts.cpu_capacity[3] = 2000.0;
    let out = s.cycle(&snap);
    assert_eq!(moves(&out.plan), vec![mig(1, 100, 103, over), mig(2, 100, 103, over)]);
    assert_eq!(out.plan.wake, vec![103]);
}

#[test]
fn evacuation_is_all_or_nothing() {
    use HostState::Active;
    // Host 0 at 0.7 (one VM), host 1 with two VMs of 0.06: the first fits on host 0 (0.76),
    // the second would bring it to 0.82 > 0.8, so the evacuation of host 1 is rolled back; and
    // host 0 cannot be evacuated onto host 1 (0.12 + 0.7 = 0.82) either.
    let snap = cluster(&[Active, Active], &[(0, 0.7, 500.0), (1, 0.06, 500.0), (1, 0.06, 500.0)]);
    let rt = runtime();
    let mut s = Scheduler::new(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap()).unwrap();
    let out = s.cycle(&snap);
    assert!(out.plan.migrations.is_empty(), "{:?}", out.plan);
    assert!(out.plan.sleep.is_empty());
    // With VMs of 0.04 both move (0.78) and host 1 sleeps.
    let snap = cluster(&[Active, Active], &[(0, 0.7, 500.0), (1, 0.04, 500.0), (1, 0.04, 500.0)]);
    let out = s.cycle(&snap);
    assert_eq!(out.plan.migrations.len(), 2, "{:?}", out.plan);
    assert_eq!(out.plan.sleep, vec![101]);
}

#[test]
fn persistence_waits_for_consecutive_cycles() {
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.rules.persistence = 2;
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    let mut snap = three_hosts();
    let first = s.cycle(&snap);
    assert!(first.plan.migrations.is_empty(), "cycle 1 only observes: {:?}", first.plan);
    snap.cycle = 1;
    let second = s.cycle(&snap);
    assert_eq!(second.plan.migrations.len(), 1);
    assert_eq!(second.plan.migrations[0].reason, MigrationReason::Overload);
    // A host that recovers resets its count.
    let mut calm = three_hosts();
    calm.vms.cpu_history[0..3].copy_from_slice(&[0.3; 3]);
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    s.cycle(&snap);
    s.cycle(&calm);
    let third = s.cycle(&snap);
    assert!(third.plan.migrations.iter().all(|m| m.reason != MigrationReason::Overload));
}

#[test]
fn cooldown_and_migration_limits_hold() {
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.rules.vm_cooldown_cycles = 3;
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    let snap = three_hosts();
    let first = s.cycle(&snap);
    assert!(first.plan.migrations.iter().any(|m| m.vm == 1));
    // Same state again next cycle (as if the move had not happened): b is cooling down, so
    // host 0 must shed a instead.
    let mut again = snap.clone();
    again.cycle = 1;
    let second = s.cycle(&again);
    assert!(second.plan.migrations.iter().all(|m| m.vm != 1 && m.vm != 3), "{:?}", second.plan);
    assert_eq!(second.plan.migrations.len(), 1, "{:?}", second.plan);
    assert_eq!((second.plan.migrations[0].vm, second.plan.migrations[0].from), (0, 100));

    // At most one migration per host: b leaves host 0 for host 1; host 1 then has no slot
    // left, so nothing else moves.
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.rules.max_migrations_per_host = 1;
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    let out = s.cycle(&three_hosts());
    assert_eq!(moves(&out.plan), vec![mig(1, 100, 101, MigrationReason::Overload)]);
}

fn hostile(world: &str, mode: &str) -> PolicyChoice {
    let path = format!("{}/amvm_test_hostile_{world}.wasm", builtin::WASM_DIR);
    PolicyChoice { module: path, params: [("mode".to_string(), ParamValue::Text(mode.into()))].into_iter().collect() }
}

#[test]
fn a_failing_module_falls_back_and_is_recorded() {
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.threshold = hostile("threshold", "bad-class");
    strategy.fallback.threshold = PolicyChoice::builtin("thr").with("upper", ParamValue::Float(0.8));
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    let out = s.cycle(&three_hosts());
    assert!(!out.aborted);
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].code, "invalid-output");
    assert!(!out.failures[0].fallback);
    // The fallback decides exactly as thr-mmt-0.8 does.
    let mut reference = Scheduler::new(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap()).unwrap();
    assert_eq!(out.plan, reference.cycle(&three_hosts()).plan);
}

#[test]
fn when_the_fallback_fails_too_the_plan_is_empty() {
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.placement = hostile("placement", "nan");
    strategy.fallback.placement = hostile("placement", "loop");
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    let out = s.cycle(&three_hosts());
    assert!(out.aborted);
    assert!(out.plan.migrations.is_empty() && out.plan.sleep.is_empty());
    let codes: Vec<&str> = out.failures.iter().map(|f| f.code).collect();
    assert_eq!(codes, vec!["invalid-output", "deadline"]);
    // The next cycle tries the primary again (and falls back again).
    let next = s.cycle(&three_hosts());
    assert_eq!(next.failures.len(), 2);
}

#[test]
fn an_uploaded_module_changes_the_outcome() {
    // A selection module that names every VM in index order: host 0 sheds a (index 0) first,
    // not b as MMT would.
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.selection = hostile("selection", "ok");
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    let out = s.cycle(&three_hosts());
    assert_eq!(out.plan.migrations[0].vm, 0);
}

#[test]
fn wrong_kinds_are_refused_at_load() {
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.selection = PolicyChoice::builtin("pabfd");
    let err = Scheduler::new(&rt, &strategy).unwrap_err().to_string();
    assert!(err.contains("is a placement policy"), "{err}");
}

#[test]
fn down_hosts_are_never_touched() {
    use HostState::{Active, Down};
    let snap =
        cluster(&[Active, Down, Active], &[(0, 0.5, 1000.0), (0, 0.4, 500.0), (1, 0.05, 1000.0), (2, 0.3, 1000.0)]);
    let rt = runtime();
    let mut s = Scheduler::new(&rt, &Strategy::builtin("thr-mmt-0.8").unwrap()).unwrap();
    let out = s.cycle(&snap);
    assert!(out.plan.migrations.iter().all(|m| m.from != 101 && m.to != 101), "{:?}", out.plan);
    assert!(!out.plan.sleep.contains(&101));
}
