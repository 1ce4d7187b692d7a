//! Operator rules (`scheduler/rules.rs`) on small clusters whose right answers are worked out by
//! hand, and a property test: no built-in strategy ever breaks a must-rule on random clusters.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

mod common;

use amvm_host::policy::PolicyRuntime;
use amvm_host::scheduler::rules::{
    Headroom, HostGroup, HostRelation, Maintenance, OperatorRules, Strength, VmGroup, VmHostRule, VmRelation,
};
use amvm_host::scheduler::{HostState, MigrationReason, Plan, Scheduler, Snapshot, Strategy};
use common::{cluster, mig, moves, runtime, three_hosts};
use proptest::prelude::{prop_assert, proptest, ProptestConfig};
use proptest::strategy::Strategy as _;

const OVER: MigrationReason = MigrationReason::Overload;
const UNDER: MigrationReason = MigrationReason::Underload;

fn plan_with(rt: &PolicyRuntime, rules: OperatorRules, snap: &Snapshot) -> Plan {
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.operator_rules = rules;
    let mut s = Scheduler::new(rt, &strategy).unwrap();
    let out = s.cycle(snap);
    assert!(out.failures.is_empty() && !out.aborted, "{:?}", out.failures);
    Plan { migrations: moves(&out.plan), ..out.plan }
}

/// `three_hosts` with host 2's VM at 0.05: thr-mmt-0.8 moves b (VM 1) to host 101 and empties
/// host 102 onto host 101 (see `scheduler.rs`).
fn with_light_host_2() -> Snapshot {
    let mut snap = three_hosts();
    snap.vms.cpu_history[9..12].copy_from_slice(&[0.05; 3]);
    snap
}

fn vm_group(vms: &[u32], relation: VmRelation, strength: Strength) -> VmGroup {
    VmGroup { name: "g".into(), vms: vms.to_vec(), relation, strength }
}

fn host_rule(vms: &[u32], hosts: &[u32], relation: HostRelation, strength: Strength) -> OperatorRules {
    OperatorRules {
        host_groups: vec![HostGroup { name: "rack".into(), hosts: hosts.to_vec() }],
        vm_host: vec![VmHostRule {
            name: "r".into(),
            vms: vms.to_vec(),
            host_group: "rack".into(),
            relation,
            strength,
        }],
        ..OperatorRules::default()
    }
}

#[test]
fn no_rules_baseline() {
    let rt = runtime();
    let plan = plan_with(&rt, OperatorRules::default(), &with_light_host_2());
    assert_eq!(plan.migrations, vec![mig(1, 100, 101, OVER), mig(3, 102, 101, UNDER)]);
    assert_eq!(plan.sleep, vec![102]);
}

#[test]
fn a_pinned_vm_never_moves_and_its_host_is_not_evacuated() {
    let rt = runtime();
    // VM 3 pinned: host 102 cannot be emptied, so it neither moves nor sleeps.
    let plan = plan_with(&rt, OperatorRules { pinned_vms: vec![3], ..Default::default() }, &with_light_host_2());
    assert_eq!(plan.migrations, vec![mig(1, 100, 101, OVER)]);
    assert!(plan.sleep.is_empty());
    // VM 1 pinned: MMT's choice is gone; only VM 0 may leave the overloaded host.
    let plan = plan_with(&rt, OperatorRules { pinned_vms: vec![1], ..Default::default() }, &three_hosts());
    assert!(plan.migrations.iter().all(|m| m.vm != 1), "{plan:?}");
    assert!(plan.migrations.iter().any(|m| m.vm == 0 && m.from == 100), "{plan:?}");
}

#[test]
fn anti_affinity_must_and_should() {
    let rt = runtime();
    // VM 1 may not join VM 2 on host 101: host 102 (0.15 → 0.55) takes it.
    let must = OperatorRules {
        vm_groups: vec![vm_group(&[1, 2], VmRelation::AntiAffinity, Strength::Must)],
        ..Default::default()
    };
    assert_eq!(plan_with(&rt, must.clone(), &three_hosts()).migrations, vec![mig(1, 100, 102, OVER)]);
    let should = OperatorRules {
        vm_groups: vec![vm_group(&[1, 2], VmRelation::AntiAffinity, Strength::Should)],
        ..Default::default()
    };
    assert_eq!(plan_with(&rt, should.clone(), &three_hosts()).migrations, vec![mig(1, 100, 102, OVER)]);
    // With host 102 down, the should-rule gives way and the must-rule leaves VM 1 where it is.
    let mut snap = three_hosts();
    snap.hosts.state[2] = HostState::Down;
    assert_eq!(plan_with(&rt, should, &snap).migrations, vec![mig(1, 100, 101, OVER)]);
    assert!(plan_with(&rt, must, &snap).migrations.is_empty());
}

#[test]
fn affinity_keeps_a_group_together() {
    let rt = runtime();
    // VMs 0 and 1 share host 100: neither leaves alone, so the overloaded host keeps both.
    let together = OperatorRules {
        vm_groups: vec![vm_group(&[0, 1], VmRelation::Affinity, Strength::Must)],
        ..Default::default()
    };
    let plan = plan_with(&rt, together, &three_hosts());
    assert!(plan.migrations.iter().all(|m| m.from != 100), "{plan:?}");
    // VMs 1 and 3 are apart: VM 1 may only go where VM 3 is (host 102), and host 102, having
    // received a VM, is not evacuated (host 101 at 0.3 is, onto 102: 0.45 → 0.75).
    let apart = OperatorRules {
        vm_groups: vec![vm_group(&[1, 3], VmRelation::Affinity, Strength::Must)],
        ..Default::default()
    };
    let plan = plan_with(&rt, apart, &with_light_host_2());
    assert_eq!(plan.migrations, vec![mig(1, 100, 102, OVER), mig(2, 101, 102, UNDER)]);
    assert_eq!(plan.sleep, vec![101]);
}

#[test]
fn an_evacuation_moves_a_keep_together_group_to_one_host() {
    use HostState::Active;
    // Host 0 at 0.1 holds VMs 0 and 1 (0.05 each), kept together; hosts 1 and 2 at 0.5 and 0.45.
    // thr-mmt-0.8 empties host 0 (least utilized): both VMs must land on one host.
    let snap =
        cluster(&[Active, Active, Active], &[(0, 0.05, 500.0), (0, 0.05, 500.0), (1, 0.5, 500.0), (2, 0.45, 500.0)]);
    let rt = runtime();
    let rules = OperatorRules {
        vm_groups: vec![vm_group(&[0, 1], VmRelation::Affinity, Strength::Must)],
        ..Default::default()
    };
    let plan = plan_with(&rt, rules, &snap);
    let dest: Vec<u32> = plan.migrations.iter().filter(|m| m.from == 100).map(|m| m.to).collect();
    assert_eq!(dest.len(), 2, "{plan:?}");
    assert_eq!(dest[0], dest[1], "{plan:?}");
    assert!(plan.sleep.contains(&100));
}

#[test]
fn vm_host_rules() {
    let rt = runtime();
    let must_on = host_rule(&[1], &[102], HostRelation::RunOn, Strength::Must);
    assert_eq!(plan_with(&rt, must_on, &three_hosts()).migrations, vec![mig(1, 100, 102, OVER)]);
    let must_not = host_rule(&[1], &[101], HostRelation::NotRunOn, Strength::Must);
    assert_eq!(plan_with(&rt, must_not, &three_hosts()).migrations, vec![mig(1, 100, 102, OVER)]);
    let should_on = host_rule(&[1], &[102], HostRelation::RunOn, Strength::Should);
    assert_eq!(plan_with(&rt, should_on, &three_hosts()).migrations, vec![mig(1, 100, 102, OVER)]);
    // A must-rule naming only a down host: VM 1 has nowhere to go.
    let mut snap = three_hosts();
    snap.hosts.state[2] = HostState::Down;
    let must_on = host_rule(&[1], &[102], HostRelation::RunOn, Strength::Must);
    assert!(plan_with(&rt, must_on, &snap).migrations.is_empty());
}

#[test]
fn maintenance_empties_a_host_now_and_only_inside_its_windows() {
    use HostState::{Active, Asleep};
    // Host 101 (VM 2 at 0.3) goes into maintenance. Host 100 is overloaded, so VM 1 (0.4) goes to
    // host 102 (0.15 → 0.55); VM 2 then would take host 102 to 0.85 > 0.8, so the sleeping host
    // 103 is woken for it. Nothing goes to 101, which does not sleep either.
    let vms = [(0, 0.5, 1000.0), (0, 0.4, 500.0), (1, 0.3, 1000.0), (2, 0.15, 1000.0)];
    let snap = cluster(&[Active, Active, Active, Asleep], &vms);
    let rt = runtime();
    let now =
        OperatorRules { maintenance: vec![Maintenance { hosts: vec![101], windows: vec![] }], ..Default::default() };
    let plan = plan_with(&rt, now, &snap);
    assert_eq!(plan.migrations, vec![mig(1, 100, 102, OVER), mig(2, 101, 103, MigrationReason::Maintenance)]);
    assert_eq!(plan.wake, vec![103]);
    assert!(!plan.sleep.contains(&101));
    // Time 0 of a world without a clock is Monday 00:00 UTC.
    let window = |w: &str| OperatorRules {
        maintenance: vec![Maintenance { hosts: vec![101], windows: vec![w.into()] }],
        ..Default::default()
    };
    let inside = plan_with(&rt, window("Mon 00:00-01:00"), &snap);
    assert!(inside.migrations.iter().any(|m| m.reason == MigrationReason::Maintenance));
    let outside = plan_with(&rt, window("Tue 00:00-01:00"), &snap);
    assert!(outside.migrations.iter().all(|m| m.reason != MigrationReason::Maintenance), "{outside:?}");
}

#[test]
fn never_sleep_and_reserve_hosts() {
    use HostState::{Active, Asleep};
    let rt = runtime();
    let plan = plan_with(&rt, OperatorRules { never_sleep: vec![102], ..Default::default() }, &with_light_host_2());
    assert_eq!(plan.migrations, vec![mig(1, 100, 101, OVER)]);
    assert!(plan.sleep.is_empty());
    // A sleeping reserve host is woken and receives nothing: VM 1 goes to host 101, not to the
    // empty host 103 that would otherwise be as good.
    let vms = [(0, 0.5, 1000.0), (0, 0.4, 500.0), (1, 0.3, 1000.0), (2, 0.15, 1000.0)];
    let snap = cluster(&[Active, Active, Active, Asleep], &vms);
    let plan = plan_with(&rt, OperatorRules { reserve: vec![103], ..Default::default() }, &snap);
    assert_eq!(plan.wake, vec![103]);
    assert!(plan.migrations.iter().all(|m| m.to != 103), "{plan:?}");
    // A reserve host's VMs leave (0.75 on host 101 is under 0.8), and it stays awake.
    let plan = plan_with(&rt, OperatorRules { reserve: vec![102], ..Default::default() }, &with_light_host_2());
    assert_eq!(plan.migrations, vec![mig(1, 100, 101, OVER), mig(3, 102, 101, MigrationReason::Maintenance)]);
    assert!(plan.sleep.is_empty());
}

#[test]
fn headroom_and_inflow() {
    use HostState::{Active, Asleep};
    let rt = runtime();
    // Host 101 keeps 35 % free: VM 1 (0.3 → 0.7 > 0.65) goes to host 102 instead.
    let rules =
        OperatorRules { headroom: vec![Headroom { hosts: vec![101], cpu: 0.35, mem: 0.0 }], ..Default::default() };
    assert_eq!(plan_with(&rt, rules, &three_hosts()).migrations, vec![mig(1, 100, 102, OVER)]);
    // Host 0 at 1.25 sheds b and c; both would go to the first woken sleeper (see
    // `scheduler.rs`), but one migration per host per plan sends c to the next one.
    let snap = cluster(&[Active, Asleep, Asleep, Asleep], &[(0, 0.5, 2000.0), (0, 0.4, 300.0), (0, 0.35, 400.0)]);
    let plan = plan_with(&rt, OperatorRules { max_inflow_per_host: 1, ..Default::default() }, &snap);
    assert_eq!(plan.migrations, vec![mig(1, 100, 101, OVER), mig(2, 100, 102, OVER)]);
}

#[test]
fn refused_candidates_carry_their_reason_into_the_trace() {
    let rt = runtime();
    let mut strategy = Strategy::builtin("thr-mmt-0.8").unwrap();
    strategy.operator_rules = OperatorRules {
        vm_groups: vec![vm_group(&[1, 2], VmRelation::AntiAffinity, Strength::Must)],
        ..Default::default()
    };
    let mut s = Scheduler::new(&rt, &strategy).unwrap();
    s.set_tracing(true);
    let out = s.cycle(&three_hosts());
    let trace = out.trace.unwrap();
    let d = trace.migrations.iter().find(|d| d.vm == 1).unwrap();
    assert!(d.filtered.contains(&("keep-apart must rule".to_string(), 1)), "{:?}", d.filtered);
}

#[test]
fn bad_rules_are_refused_with_a_reason() {
    let text = r#"
name = "s"
[threshold]
module = "thr"
[selection]
module = "mmt"
[placement]
module = "pabfd"
[[operator_rules.vm_host]]
name = "db"
vms = [1]
host_group = "rack-z"
relation = "run-on"
"#;
    let e = Strategy::from_toml(text).unwrap_err();
    assert!(e.contains("rack-z"), "{e}");
    let e = Strategy::from_toml(&text.replace("run-on", "sideways")).unwrap_err();
    assert!(e.contains("sideways") || e.contains("unknown variant"), "{e}");
    let ok = text.replace(
        "[[operator_rules.vm_host]]",
        "[[operator_rules.host_groups]]\nname = \"rack-z\"\nhosts = [1]\n[[operator_rules.vm_host]]",
    );
    let s = Strategy::from_toml(&ok).unwrap();
    assert_eq!(s.operator_rules.vm_host[0].strength, Strength::Must);
    // A strategy with rules survives its own TOML.
    assert_eq!(Strategy::from_toml(&s.to_toml()).unwrap(), s);
}

// ---- property: no built-in strategy breaks a must-rule ----

#[derive(Debug, Clone)]
struct Case {
    snap: Snapshot,
    rules: OperatorRules,
}

fn case() -> impl proptest::strategy::Strategy<Value = Case> {
    (3usize..9, 3usize..18).prop_flat_map(|(nh, nv)| {
        (
            proptest::collection::vec(0u8..10, nh), // host states
            proptest::collection::vec((0..nh as u32, 0.02f32..0.9, 200f32..1800.0), nv), // VMs
            proptest::collection::vec(proptest::collection::vec(0.0f32..1.0, 3), nv), // histories
            proptest::collection::vec(0u8..16, nv), // VM roles
            proptest::collection::vec(0u8..16, nh), // host roles
            0u32..3,
        )
            .prop_map(move |(states, vms, hist, vm_roles, host_roles, inflow)| {
                let states: Vec<HostState> =
                    states.iter().map(|&s| if s < 7 { HostState::Active } else { HostState::Asleep }).collect();
                let mut snap = cluster(&states, &vms);
                for (v, h) in hist.iter().enumerate() {
                    // A drifting history ending at the VM's current level.
                    let now = vms[v].1;
                    snap.vms.cpu_history[v * 3..v * 3 + 3].copy_from_slice(&[h[0], h[1].max(now * 0.5), now]);
                    let host = snap.vms.host[v] as usize;
                    snap.hosts.state[host] = HostState::Active;
                }
                let id = |h: usize| 100 + h as u32;
                let pick = |roles: &[u8], r: u8| -> Vec<u32> {
                    roles.iter().enumerate().filter(|(_, &x)| x == r).map(|(i, _)| i as u32).collect()
                };
                let hosts_with =
                    |r: u8| -> Vec<u32> { pick(&host_roles, r).into_iter().map(|h| id(h as usize)).collect() };
                let mut rules = OperatorRules {
                    pinned_vms: pick(&vm_roles, 0),
                    maintenance: vec![Maintenance { hosts: hosts_with(0), windows: vec![] }],
                    reserve: hosts_with(1),
                    never_sleep: hosts_with(2),
                    headroom: vec![Headroom { hosts: hosts_with(3), cpu: 0.2, mem: 0.1 }],
                    host_groups: vec![HostGroup {
                        name: "g".into(),
                        hosts: hosts_with(4).into_iter().chain(hosts_with(5)).collect(),
                    }],
                    max_inflow_per_host: inflow,
                    ..Default::default()
                };
                for (r, rel) in
                    [(1, VmRelation::AntiAffinity), (2, VmRelation::AntiAffinity), (3, VmRelation::Affinity)]
                {
                    let vms = pick(&vm_roles, r);
                    if vms.len() >= 2 {
                        rules.vm_groups.push(VmGroup {
                            name: format!("g{r}"),
                            vms,
                            relation: rel,
                            strength: Strength::Must,
                        });
                    }
                }
                for (r, rel) in [(4, HostRelation::RunOn), (5, HostRelation::NotRunOn)] {
                    let vms = pick(&vm_roles, r);
                    if !vms.is_empty() {
                        rules.vm_host.push(VmHostRule {
                            name: format!("r{r}"),
                            vms,
                            host_group: "g".into(),
                            relation: rel,
                            strength: Strength::Must,
                        });
                    }
                }
                // Should-rules that compete with nothing above.
                let soft = pick(&vm_roles, 6);
                if soft.len() >= 2 {
                    rules.vm_groups.push(VmGroup {
                        name: "soft".into(),
                        vms: soft,
                        relation: VmRelation::Affinity,
                        strength: Strength::Should,
                    });
                }
                Case { snap, rules }
            })
    })
}

/// Every must-rule the plan could break, checked on the mapping after the plan.
fn check_plan(c: &Case, plan: &Plan) -> Result<(), String> {
    let snap = &c.snap;
    let r = &c.rules;
    let host_index = |id: u32| (id - 100) as usize;
    let before: Vec<usize> = snap.vms.host.iter().map(|&h| h as usize).collect();
    let mut after = before.clone();
    let mut inflow = vec![0u32; snap.hosts.len()];
    for m in &plan.migrations {
        let v = m.vm as usize;
        if r.pinned_vms.contains(&m.vm) {
            return Err(format!("pinned VM {} moved", m.vm));
        }
        if r.maintenance[0].hosts.contains(&m.to) || r.reserve.contains(&m.to) {
            return Err(format!("VM {} moved onto maintenance/reserve host {}", m.vm, m.to));
        }
        after[v] = host_index(m.to);
        inflow[host_index(m.to)] += 1;
    }
    if r.max_inflow_per_host > 0 && inflow.iter().any(|&n| n > r.max_inflow_per_host) {
        return Err(format!("inflow {inflow:?} above {}", r.max_inflow_per_host));
    }
    for h in &plan.sleep {
        if r.never_sleep.contains(h) || r.reserve.contains(h) || r.maintenance[0].hosts.contains(h) {
            return Err(format!("host {h} put to sleep"));
        }
    }
    let moved: Vec<usize> = plan.migrations.iter().map(|m| m.vm as usize).collect();
    for g in r.vm_groups.iter().filter(|g| g.strength == Strength::Must) {
        let members: Vec<usize> = g.vms.iter().map(|&v| v as usize).collect();
        match g.relation {
            VmRelation::AntiAffinity => {
                for &v in members.iter().filter(|v| moved.contains(v)) {
                    if members.iter().any(|&o| o != v && after[o] == after[v]) {
                        return Err(format!("keep-apart group {:?} broken by VM {v}", g.vms));
                    }
                }
            }
            VmRelation::Affinity => {
                let together = |map: &[usize]| members.iter().all(|&o| map[o] == map[members[0]]);
                if together(&before) && !together(&after) {
                    return Err(format!("keep-together group {:?} split", g.vms));
                }
            }
        }
    }
    for rule in &r.vm_host {
        let group = &r.host_groups[0].hosts;
        for m in plan.migrations.iter().filter(|m| rule.vms.contains(&m.vm)) {
            let inside = group.contains(&m.to);
            if inside != (rule.relation == HostRelation::RunOn) {
                return Err(format!("VM {} moved to {} against rule {:?}", m.vm, m.to, rule.name));
            }
        }
    }
    // Headroom: every destination stays within its reserve.
    let head = &r.headroom[0];
    for &h in plan.migrations.iter().map(|m| host_index(m.to)).collect::<std::collections::BTreeSet<_>>().iter() {
        if !head.hosts.contains(&(100 + h as u32)) {
            continue;
        }
        let used: f32 = (0..snap.vms.len()).filter(|&v| after[v] == h).map(|v| snap.vm_demand_mips(v)).sum();
        let ram: f32 = (0..snap.vms.len()).filter(|&v| after[v] == h).map(|v| snap.vms.ram_mb[v]).sum();
        let (cap, mem) = (snap.hosts.cpu_capacity[h], snap.hosts.mem_capacity[h]);
        // Only what the plan added is bound by the reserve.
        let added = plan.migrations.iter().any(|m| host_index(m.to) == h);
        if added && (used > cap * (1.0 - head.cpu) + 1e-3 || ram > mem * (1.0 - head.mem) + 1e-3) {
            return Err(format!("host {} over its headroom: {used} MIPS, {ram} MB", 100 + h));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_builtin_strategy_breaks_a_must_rule(c in case()) {
        let rt = shared_runtime();
        for name in Strategy::builtin_names() {
            let mut strategy = Strategy::builtin(&name).unwrap();
            strategy.operator_rules = c.rules.clone();
            let mut s = Scheduler::new(rt, &strategy).unwrap();
            let out = s.cycle(&c.snap);
            prop_assert!(!out.aborted, "{name}: aborted {:?}", out.failures);
            if let Err(e) = check_plan(&c, &out.plan) {
                prop_assert!(false, "{name}: {e}\nrules {:?}\nplan {:?}", c.rules, out.plan);
            }
        }
    }
}

fn shared_runtime() -> &'static PolicyRuntime {
    static RT: std::sync::OnceLock<PolicyRuntime> = std::sync::OnceLock::new();
    RT.get_or_init(runtime)
}

// ---- the simulator honours a scenario's rules ----

fn sim_migrations(rules: OperatorRules) -> u64 {
    use amvm_host::sim::strategy::{StrategySet, StrategySpec};
    use amvm_host::sim::trace::SyntheticSpec;
    use amvm_host::sim::{run, RunOptions, Scenario, Trace};
    let mut scenario = Scenario::default();
    scenario.hosts.count = 40;
    scenario.operator_rules = rules;
    scenario.validate(std::path::Path::new("test")).unwrap();
    let trace = std::sync::Arc::new(
        Trace::synthetic(&SyntheticSpec { vms: 50, samples: 48, mean: 30.0, seed: 5, ..SyntheticSpec::default() })
            .unwrap(),
    );
    let spec = StrategySpec::parse("lr-mmt-1.2");
    let mut set = StrategySet::prepare(std::slice::from_ref(&spec)).unwrap();
    set.set_scenario_rules(scenario.operator_rules.clone());
    let report = run(&scenario, trace, set.decider(&spec).unwrap(), RunOptions::default()).unwrap();
    report.migrations
}

#[test]
fn the_simulator_honours_a_scenarios_rules() {
    let free = sim_migrations(OperatorRules::default());
    assert!(free > 0, "the unconstrained run migrates");
    let pinned = OperatorRules { pinned_vms: (0..50).collect(), ..Default::default() };
    assert_eq!(sim_migrations(pinned), 0, "pinned VMs never migrate");
    let capped = OperatorRules { max_inflow_per_host: 1, ..Default::default() };
    let n = sim_migrations(capped);
    assert!(n > 0 && n != free, "an inflow cap changes the run: {n} vs {free}");
}

#[test]
fn a_scenario_with_bad_rules_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[[operator_rules.vm_host]]\nname = \"x\"\nvms = [1]\nhost_group = \"nope\"\nrelation = \"run-on\"\n",
    )
    .unwrap();
    let e = amvm_host::sim::Scenario::load(&path).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}
