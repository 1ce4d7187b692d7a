//! The candidate index (`scheduler/index.rs`) must not change a decision: with a placement
//! module exporting `weigh-bound` (the built-in PABFD), the scheduler weighs only the groups of
//! hosts that can still win, and must pick exactly the hosts the full scan picks.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use std::sync::OnceLock;

use amvm_host::policy::{types, ParamValues, PolicyRuntime, RuntimeConfig};
use amvm_host::scheduler::synthetic::{advance, apply_instantly, SyntheticSpec, POWER_G4, POWER_G5};
use amvm_host::scheduler::{HostState, Scheduler, Snapshot, Strategy};
use proptest::prelude::*;

fn runtime() -> &'static PolicyRuntime {
    static RT: OnceLock<PolicyRuntime> = OnceLock::new();
    RT.get_or_init(|| PolicyRuntime::new(RuntimeConfig::default()).unwrap())
}

/// A synthetic cluster made uneven: some hosts of a second size, some asleep and empty.
fn cluster(hosts: usize, vms: usize, seed: u64, big_every: usize, asleep_every: usize) -> Snapshot {
    let mut snap = SyntheticSpec::new(hosts, vms, seed).build();
    for h in 0..hosts {
        if big_every > 0 && h % big_every == 0 {
            snap.hosts.cpu_capacity[h] *= 1.5;
            snap.hosts.mem_capacity[h] *= 1.5;
        }
    }
    if asleep_every > 0 {
        // Move the VMs of every `asleep_every`-th host to its neighbour and put it to sleep.
        for vm in 0..snap.vms.len() {
            let h = snap.vms.host[vm] as usize;
            if h % asleep_every == 1 && h + 1 < hosts {
                snap.vms.host[vm] = (h + 1) as u32;
            }
        }
        for h in (1..hosts).step_by(asleep_every) {
            if h + 1 < hosts {
                snap.hosts.state[h] = HostState::Asleep;
            }
        }
    }
    snap
}

/// Runs `cycles` cycles with and without the index on the same evolving cluster; every plan
/// must be equal.
fn same_plans(strategy: &str, lower: Option<f64>, mut snap: Snapshot, cycles: u32, seed: u64) -> Result<(), String> {
    let mut st = Strategy::resolve(strategy).map_err(|e| e.to_string())?;
    if let Some(l) = lower {
        st.set(&format!("threshold.lower={l}")).map_err(|e| e.to_string())?;
    }
    let mut indexed = Scheduler::new(runtime(), &st).map_err(|e| e.to_string())?;
    indexed.set_candidate_index_min_hosts(0);
    let mut full = Scheduler::new(runtime(), &st).map_err(|e| e.to_string())?;
    full.set_candidate_index(false);
    for c in 0..cycles {
        let a = indexed.cycle(&snap);
        let b = full.cycle(&snap);
        if !a.failures.is_empty() || !b.failures.is_empty() {
            return Err(format!("failures: {:?} {:?}", a.failures, b.failures));
        }
        if a.plan != b.plan {
            let (ma, mb) = (&a.plan.migrations, &b.plan.migrations);
            let i = ma.iter().zip(mb).position(|(x, y)| x != y).unwrap_or(ma.len().min(mb.len()));
            return Err(format!(
                "cycle {c}: plans differ at migration {i}: indexed {:?}, full scan {:?} ({} and {} migrations)",
                ma.get(i),
                mb.get(i),
                ma.len(),
                mb.len()
            ));
        }
        // The index was used (it may decide without a call: an evacuation no indexed host can
        // take, groups that cannot offer a winner).
        if a.stats.indexed_searches == 0 && b.stats.placement_calls > 0 {
            return Err("the indexed scheduler answered no placement from the index".into());
        }
        apply_instantly(&mut snap, &a.plan);
        advance(&mut snap, seed);
    }
    Ok(())
}

#[test]
fn the_index_changes_no_plan_on_the_bench_cluster() {
    same_plans("lr-mmt-1.2", None, cluster(300, 3000, 7, 0, 0), 4, 7).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_index_picks_the_hosts_of_the_full_scan(
        hosts in 4usize..120,
        per_host in 1usize..14,
        seed in 0u64..1000,
        big_every in 0usize..5,
        asleep_every in 0usize..6,
        strategy in prop::sample::select(vec!["lr-mmt-1.2", "thr-mmt-0.8", "mad-mc-2.5", "iqr-mu-1.5"]),
        lower in prop::option::of(0.1f64..0.6),
    ) {
        let snap = cluster(hosts, hosts * per_host / 2 + 1, seed, big_every, asleep_every);
        prop_assert_eq!(same_plans(strategy, lower, snap, 3, seed), Ok(()));
    }

    /// PABFD's `weigh-bound` is below the weight `weigh` gives every row its group stands for.
    #[test]
    fn pabfd_bounds_are_below_its_weights(
        cap in 500.0f32..40_000.0,
        model in 0u32..2,
        asleep in any::<bool>(),
        penalty in prop::sample::select(vec![0.0f64, 25.0]),
        demand_frac in 0.0f32..1.0,
        lo_frac in 0.0f32..1.0,
        width_frac in 0.0f32..0.3,
        at in prop::collection::vec(0.0f32..=1.0, 1..40),
    ) {
        let rt = runtime();
        let module = rt.builtin("pabfd").unwrap();
        let mut params = ParamValues::new();
        params.insert("wake_penalty_w".into(), amvm_host::policy::ParamValue::Float(penalty));
        let mut p = rt.instantiate(&module, &params).unwrap();
        prop_assert!(p.has_weigh_bound());
        let ctx = types::Context {
            cycle: 0,
            interval_s: 300.0,
            seed: 0,
            migration_mbps: 62.5,
            power_curves: POWER_G4.iter().chain(POWER_G5.iter()).copied().collect(),
        };
        let demand = demand_frac * cap * 0.5;
        let vm = types::VmDemand { cpu_mips: demand, ram_mb: 512.0 };
        let lo = lo_frac * cap;
        let hi = lo + width_frac * cap;
        let groups = types::HostGroups {
            n: 1,
            cpu_used_min: vec![lo],
            cpu_used_max: vec![hi],
            cpu_capacity: vec![cap],
            mem_capacity: vec![4096.0],
            power_model: vec![model],
            asleep: vec![u8::from(asleep)],
        };
        let bound = p.weigh_bound(&ctx, vm, &groups).unwrap()[0];
        // Rows of the group that the host would offer (the VM fits).
        let used: Vec<f32> = at.iter().map(|&t| lo + (hi - lo) * t).filter(|&u| u + demand <= cap).collect();
        let n = used.len();
        let cand = types::Candidates {
            n: n as u32,
            cpu_used: used.clone(),
            cpu_capacity: vec![cap; n],
            mem_used: vec![1024.0; n],
            mem_capacity: vec![4096.0; n],
            power_model: vec![model; n],
            vm_count: vec![3; n],
            asleep: vec![u8::from(asleep); n],
        };
        let weights = p.weigh(&ctx, vm, &cand).unwrap();
        for (u, w) in used.iter().zip(&weights) {
            if let Some(w) = w {
                let b = bound.ok_or_else(|| TestCaseError::fail(format!("no bound, but row {u} weighs {w}")))?;
                prop_assert!(b <= *w, "bound {} above weight {} of row {} (group {}..={})", b, w, u, lo, hi);
            }
        }
    }
}

/// PABFD as built against `amvm:policy@0.1.0` before `indexed-placement` existed (the
/// `placement` world only), kept as a fixture: a third party's module of that contract.
fn old_pabfd() -> String {
    format!("{}/tests/fixtures/pabfd-placement-0.1.0.wasm", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_placement_module_of_the_older_contract_loads_and_decides_the_same() {
    let rt = runtime();
    let old = rt.load_file(std::path::Path::new(&old_pabfd())).unwrap();
    assert_eq!(old.kind(), amvm_host::policy::PolicyKind::Placement);
    let mut inst = rt.instantiate(&old, &ParamValues::new()).unwrap();
    assert!(!inst.has_weigh_bound());
    // Asking it for bounds is an error, never a panic.
    let ctx =
        types::Context { cycle: 0, interval_s: 300.0, seed: 0, migration_mbps: 62.5, power_curves: POWER_G4.to_vec() };
    let groups = types::HostGroups {
        n: 0,
        cpu_used_min: vec![],
        cpu_used_max: vec![],
        cpu_capacity: vec![],
        mem_capacity: vec![],
        power_model: vec![],
        asleep: vec![],
    };
    assert!(inst.weigh_bound(&ctx, types::VmDemand { cpu_mips: 1.0, ram_mb: 1.0 }, &groups).is_err());
    for name in ["spread", "pack"] {
        let m = rt.builtin(name).unwrap();
        assert!(!rt.instantiate(&m, &ParamValues::new()).unwrap().has_weigh_bound(), "{name}");
    }

    // The strategy with the old module (weighed over every candidate) and the built-in (over
    // the index) make the same plans.
    let mut with_old = Strategy::resolve("lr-mmt-1.2").unwrap();
    with_old.placement.module = old_pabfd();
    let mut a = Scheduler::new(rt, &with_old).unwrap();
    let mut b = Scheduler::new(rt, &Strategy::resolve("lr-mmt-1.2").unwrap()).unwrap();
    b.set_candidate_index_min_hosts(0);
    let mut snap = cluster(200, 2000, 3, 3, 4);
    let mut moved = 0;
    for _ in 0..3 {
        let (pa, pb) = (a.cycle(&snap), b.cycle(&snap));
        assert!(pa.failures.is_empty() && pb.failures.is_empty());
        assert_eq!(pa.plan, pb.plan);
        moved += pa.plan.migrations.len();
        apply_instantly(&mut snap, &pa.plan);
        advance(&mut snap, 3);
    }
    assert!(moved > 0);
}
