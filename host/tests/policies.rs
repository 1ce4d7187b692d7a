//! The built-in policies' maths against hand-worked cases, through the compiled components
//! (the same bytes the `amvm` binary embeds).

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use amvm_host::policy::{types, ParamValue, ParamValues, PolicyInstance, PolicyRuntime, RuntimeConfig};
use amvm_host::scheduler::synthetic::{POWER_G4, POWER_G5};

fn runtime() -> PolicyRuntime {
    PolicyRuntime::new(RuntimeConfig::default()).unwrap()
}

fn instance(rt: &PolicyRuntime, name: &str, params: &[(&str, f64)]) -> PolicyInstance {
    let module = rt.builtin(name).unwrap();
    let params: ParamValues = params.iter().map(|(k, v)| (k.to_string(), ParamValue::Float(*v))).collect();
    rt.instantiate(&module, &params).unwrap()
}

fn ctx() -> types::Context {
    types::Context {
        cycle: 3,
        interval_s: 300.0,
        seed: 11,
        migration_mbps: 62.5,
        power_curves: POWER_G4.iter().chain(POWER_G5.iter()).copied().collect(),
    }
}

/// One host per history row (oldest first), window = the longest row, NaN-padded at the front.
fn hosts(rows: &[&[f32]], max_migration_s: f32) -> types::Hosts {
    let w = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    let mut cpu = Vec::new();
    for r in rows {
        cpu.extend(std::iter::repeat_n(f32::NAN, w - r.len()));
        cpu.extend_from_slice(r);
    }
    let n = rows.len();
    types::Hosts {
        n: n as u32,
        window: w as u32,
        cpu,
        mem: Vec::new(),
        net: Vec::new(),
        cpu_capacity: vec![1000.0; n],
        mem_capacity: vec![4096.0; n],
        max_migration_s: vec![max_migration_s; n],
        vm_count: vec![1; n],
    }
}

fn classify(p: &mut PolicyInstance, rows: &[&[f32]], mig: f32) -> Vec<u8> {
    p.classify(&ctx(), &hosts(rows, mig)).unwrap()
}

const N: u8 = 0;
const U: u8 = 1;
const O: u8 = 2;

#[test]
fn thr_is_strictly_above_upper_and_underload_below_lower() {
    let rt = runtime();
    let mut p = instance(&rt, "thr", &[("upper", 0.8), ("lower", 0.3)]);
    assert_eq!(classify(&mut p, &[&[0.81], &[0.8], &[0.5], &[0.29], &[0.1, f32::NAN]], 0.0), vec![O, N, N, U, U]);
    // The latest valid sample counts; a host with no sample at all is normal.
    assert_eq!(classify(&mut p, &[&[0.9, 0.5], &[f32::NAN, f32::NAN]], 0.0), vec![N, N]);
}

#[test]
fn mad_threshold_by_hand() {
    let rt = runtime();
    // 12 samples alternating 0.3/0.7 ending at 0.7: median 0.5, MAD 0.2.
    let alt: Vec<f32> = (0..12).map(|i| if i % 2 == 0 { 0.3 } else { 0.7 }).collect();
    // s = 2.5: upper = 1 - 0.5 = 0.5 < 0.7 → overloaded. s = 1: upper = 0.8 → normal.
    let mut p = instance(&rt, "mad", &[("safety", 2.5)]);
    assert_eq!(classify(&mut p, &[&alt], 0.0), vec![O]);
    let mut p = instance(&rt, "mad", &[("safety", 1.0)]);
    assert_eq!(classify(&mut p, &[&alt], 0.0), vec![N]);
    // Fewer than 12 samples: the static fallback 0.7 applies.
    let mut p = instance(&rt, "mad", &[("safety", 2.5)]);
    assert_eq!(classify(&mut p, &[&[0.3, 0.75], &[0.3, 0.65]], 0.0), vec![O, N]);
}

#[test]
fn iqr_threshold_by_hand() {
    let rt = runtime();
    // 0.30, 0.35, …, 0.85 (12 samples): Q1 = 3rd = 0.40, Q3 = 10th = 0.75, IQR = 0.35.
    let ramp: Vec<f32> = (0..12).map(|i| 0.30 + 0.05 * i as f32).collect();
    // s = 1.5: upper = 1 - 0.525 = 0.475 < 0.85 → overloaded; s = 0.1: upper = 0.965 → normal.
    let mut p = instance(&rt, "iqr", &[("safety", 1.5)]);
    assert_eq!(classify(&mut p, &[&ramp], 0.0), vec![O]);
    let mut p = instance(&rt, "iqr", &[("safety", 0.1)]);
    assert_eq!(classify(&mut p, &[&ramp], 0.0), vec![N]);
}

#[test]
fn lr_predicts_ahead_by_the_migration_time() {
    let rt = runtime();
    // y = 0.48 + 0.02 x for x = 1..10. With a 30 s migration (1 interval ahead) the prediction
    // at x = 11 is 0.70; with 301 s (2 intervals) at x = 12 it is 0.72.
    let line: Vec<f32> = (1..=10).map(|x| 0.48 + 0.02 * x as f32).collect();
    let mut p = instance(&rt, "lr", &[("safety", 1.4)]);
    assert_eq!(classify(&mut p, &[&line], 30.0), vec![N]); // 1.4 × 0.70 = 0.98 < 1
    assert_eq!(classify(&mut p, &[&line], 301.0), vec![O]); // 1.4 × 0.72 = 1.008 ≥ 1
    let mut p = instance(&rt, "lr", &[("safety", 1.2)]);
    assert_eq!(classify(&mut p, &[&line], 30.0), vec![N]); // 0.84
                                                           // Fewer than 10 samples: static fallback 0.7.
    assert_eq!(classify(&mut p, &[&[0.5, 0.71]], 30.0), vec![O]);
    // Only the newest 10 samples are fitted: an old plateau does not matter.
    let mut long = vec![0.0f32; 20];
    long.extend_from_slice(&line);
    let mut p = instance(&rt, "lr", &[("safety", 1.4)]);
    assert_eq!(classify(&mut p, &[&long], 301.0), vec![O]);
}

#[test]
fn lrr_resists_an_outlier_that_trips_lr() {
    let rt = runtime();
    // Flat 0.6 with one glitch to 0.0 at x = 2. Least squares: slope 0.02545, intercept 0.40,
    // prediction at x = 11: 0.68 → × 1.5 = 1.02 ≥ 1 → overloaded. The robust fit gives the
    // glitch zero weight after one bisquare iteration: flat 0.6 → × 1.5 = 0.9 → normal.
    let mut glitch = vec![0.6f32; 10];
    glitch[1] = 0.0;
    let mut lr = instance(&rt, "lr", &[("safety", 1.5)]);
    let mut lrr = instance(&rt, "lrr", &[("safety", 1.5)]);
    assert_eq!(classify(&mut lr, &[&glitch], 30.0), vec![O]);
    assert_eq!(classify(&mut lrr, &[&glitch], 30.0), vec![N]);
    // robust = 0: plain least squares, as CloudSim 3.0.3's LRR computes (lr-equals-lrr): the
    // glitch trips it as it trips LR.
    let params: ParamValues =
        [("safety".to_string(), ParamValue::Float(1.5)), ("robust".to_string(), ParamValue::Integer(0))]
            .into_iter()
            .collect();
    let mut plain = rt.instantiate(&rt.builtin("lrr").unwrap(), &params).unwrap();
    assert_eq!(classify(&mut plain, &[&glitch], 30.0), vec![O]);
    // On a clean line both agree: prediction 0.72 at x = 12, × 1.5 = 1.08 ≥ 1.
    let line: Vec<f32> = (1..=10).map(|x| 0.48 + 0.02 * x as f32).collect();
    assert_eq!(classify(&mut lrr, &[&line], 301.0), vec![O]);
    assert_eq!(classify(&mut lr, &[&line], 301.0), vec![O]);
}

#[test]
fn would_overload_adds_the_vm_history() {
    let rt = runtime();
    let mut p = instance(&rt, "thr", &[("upper", 0.8)]);
    let h = hosts(&[&[0.5], &[0.7]], 0.0);
    // A VM of 1000 MIPS at 25 % adds 0.25 to a 1000-MIPS host: 0.75 fits, 0.95 does not.
    let vm = types::Vms { n: 1, window: 1, cpu: vec![0.25], mips: vec![1000.0], ram_mb: vec![512.0] };
    assert_eq!(p.would_overload(&ctx(), &h, &vm).unwrap(), vec![false, true]);
}

fn vms(rows: &[&[f32]], ram: &[f32]) -> types::Vms {
    let w = rows[0].len();
    types::Vms {
        n: rows.len() as u32,
        window: w as u32,
        cpu: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        mips: vec![1000.0; rows.len()],
        ram_mb: ram.to_vec(),
    }
}

#[test]
fn selection_orders_by_hand() {
    let rt = runtime();
    let host = hosts(&[&[0.9]], 0.0);
    let v = vms(&[&[0.5], &[0.2], &[0.9]], &[1740.0, 613.0, 870.0]);
    let mut mmt = instance(&rt, "mmt", &[]);
    assert_eq!(mmt.select(&ctx(), &host, &v).unwrap(), vec![1, 2, 0]);
    let mut mu = instance(&rt, "mu", &[]);
    assert_eq!(mu.select(&ctx(), &host, &v).unwrap(), vec![1, 0, 2]);
}

#[test]
fn random_selection_is_a_seeded_permutation() {
    let rt = runtime();
    let host = hosts(&[&[0.9]], 0.0);
    let rows: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32 / 10.0]).collect();
    let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
    let v = vms(&refs, &[1000.0; 8]);
    let mut rs = instance(&rt, "rs", &[]);
    let a = rs.select(&ctx(), &host, &v).unwrap();
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..8).collect::<Vec<u32>>());
    // Same seed and cycle in a fresh instance: same order. Other cycles: some other order.
    let mut rs2 = instance(&rt, "rs", &[]);
    assert_eq!(rs2.select(&ctx(), &host, &v).unwrap(), a);
    let differs = (4..10).any(|c| {
        let mut other = ctx();
        other.cycle = c;
        rs2.select(&other, &host, &v).unwrap() != a
    });
    assert!(differs);
}

#[test]
fn max_correlation_by_hand() {
    let rt = runtime();
    let host = hosts(&[&[0.9]], 0.0);
    // v1 and v2 are v0 plus independent noise: v0 is explained best by the other two
    // (R² 0.991), then v1 (0.985), then v2 (0.980).
    let v0: Vec<f32> = (0..12).map(|i| ((i * 7) % 11) as f32 / 20.0).collect();
    let v1: Vec<f32> = (0..12).map(|i| v0[i] + ((i * 5) % 3) as f32 / 40.0).collect();
    let v2: Vec<f32> = (0..12).map(|i| v0[i] + ((i * 3) % 4) as f32 / 50.0 + (i % 2) as f32 / 60.0).collect();
    let mut mc = instance(&rt, "mc", &[]);
    assert_eq!(mc.select(&ctx(), &host, &vms(&[&v0, &v1, &v2], &[900.0, 800.0, 700.0])).unwrap(), vec![0]);
    // Reordered: v0 is now index 2.
    assert_eq!(mc.select(&ctx(), &host, &vms(&[&v2, &v1, &v0], &[900.0, 800.0, 700.0])).unwrap(), vec![2]);
    // Too little history for a regression (3 samples, 3 coefficients): minimum migration time.
    let short = vms(&[&v0[..3], &v1[..3], &v2[..3]], &[900.0, 600.0, 700.0]);
    assert_eq!(mc.select(&ctx(), &host, &short).unwrap(), vec![1]);
}

fn candidates(used: &[f32], cap: &[f32], model: &[u32], asleep: &[u8]) -> types::Candidates {
    let n = used.len();
    types::Candidates {
        n: n as u32,
        cpu_used: used.to_vec(),
        cpu_capacity: cap.to_vec(),
        mem_used: vec![1000.0; n],
        mem_capacity: vec![4096.0; n],
        power_model: model.to_vec(),
        vm_count: vec![1; n],
        asleep: asleep.to_vec(),
    }
}

fn close(a: Option<f32>, b: f32) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-3)
}

#[test]
fn pabfd_weighs_the_power_increase() {
    let rt = runtime();
    let vm = types::VmDemand { cpu_mips: 500.0, ram_mb: 613.0 };
    // A: G4, 1860 of 3720 used (50 %) → 63.44 %: 102 → 106 + 2 × 0.344 = 106.688 W: +4.688.
    // B: G5 asleep, 0 → 9.40 %: 93.7 → 93.7 + 3.3 × 0.9398 = 96.801 W: +3.101.
    // C: G4, 3500 used: 4000 > 3720 → filtered out.
    let c = candidates(&[1860.0, 0.0, 3500.0], &[3720.0, 5320.0, 3720.0], &[0, 1, 0], &[0, 1, 0]);
    let mut p = instance(&rt, "pabfd", &[]);
    let w = p.weigh(&ctx(), vm, &c).unwrap();
    assert!(close(w[0], 4.688) && close(w[1], 3.101) && w[2].is_none(), "{w:?}");
    let mut p = instance(&rt, "pabfd", &[("wake_penalty_w", 10.0)]);
    let w = p.weigh(&ctx(), vm, &c).unwrap();
    assert!(close(w[1], 13.101), "{w:?}");
}

#[test]
fn spread_and_pack_by_hand() {
    let rt = runtime();
    let vm = types::VmDemand { cpu_mips: 100.0, ram_mb: 100.0 };
    let c = candidates(&[200.0, 700.0, 0.0, 950.0], &[1000.0; 4], &[0; 4], &[0, 0, 1, 0]);
    let mut spread = instance(&rt, "spread", &[]);
    let w = spread.weigh(&ctx(), vm, &c).unwrap();
    // Utilization after placement; the sleeping host is skipped while an awake one fits.
    assert!(close(w[0], 0.3) && close(w[1], 0.8) && w[2].is_none() && w[3].is_none(), "{w:?}");
    let mut pack = instance(&rt, "pack", &[]);
    let w = pack.weigh(&ctx(), vm, &c).unwrap();
    assert!(close(w[0], -0.3) && close(w[1], -0.8) && w[2].is_none() && w[3].is_none(), "{w:?}");
}

#[test]
fn every_builtin_describes_itself() {
    let rt = runtime();
    let all = rt.builtins().unwrap();
    assert_eq!(all.len(), 15);
    for m in all {
        assert!(!m.descriptor.summary.is_empty(), "{}", m.descriptor.name);
        assert_eq!(m.sha256.len(), 64);
    }
    let lr = rt.builtin("lr").unwrap();
    let safety = lr.descriptor.params.iter().find(|p| p.name == "safety").unwrap();
    assert_eq!(safety.default, ParamValue::Float(1.2));
    // Loading the same bytes again hits the cache.
    assert!(std::sync::Arc::ptr_eq(&lr, &rt.builtin("lr").unwrap()));
}

#[test]
fn parameters_are_validated_before_the_module_sees_them() {
    let rt = runtime();
    let m = rt.builtin("thr").unwrap();
    let bad = |k: &str, v: ParamValue| {
        let params: ParamValues = [(k.to_string(), v)].into_iter().collect();
        rt.instantiate(&m, &params).unwrap_err().to_string()
    };
    assert!(bad("upper", ParamValue::Float(1.5)).contains("above its maximum"));
    assert!(bad("upper", ParamValue::Text("x".into())).contains("must be a number"));
    assert!(bad("nope", ParamValue::Float(0.5)).contains("no parameter"));
    assert!(bad("upper", ParamValue::Float(f64::NAN)).contains("finite"));
    // An integer is fine where a float is declared.
    let ok: ParamValues = [("upper".to_string(), ParamValue::Integer(1))].into_iter().collect();
    rt.instantiate(&m, &ok).unwrap();
}

#[test]
fn otf_counts_the_overloaded_share_of_the_history() {
    let rt = runtime();
    let mut p = instance(&rt, "otf", &[("otf", 0.2), ("lower", 0.0)]);
    // 10 samples, 2 at or above 0.8, now 0.9; migration 300 s = 1 step: (1 + 2) / (1 + 10) ≥ 0.2.
    let mut row = [0.5f32; 10];
    row[3] = 0.85;
    row[9] = 0.9;
    assert_eq!(classify(&mut p, &[&row], 300.0), vec![O]);
    // Without the migration step 2 / 10 = 0.2 still; with otf 0.25 it is not.
    assert_eq!(classify(&mut p, &[&row], 0.0), vec![O]);
    let mut strict = instance(&rt, "otf", &[("otf", 0.25), ("lower", 0.0)]);
    assert_eq!(classify(&mut strict, &[&row], 0.0), vec![N]);
    // Below the threshold now, or fewer than `limit` (10) samples: never overloaded.
    row[9] = 0.7;
    assert_eq!(classify(&mut p, &[&row, &[0.9; 5]], 300.0), vec![N, N]);
}

#[test]
fn mhod_by_hand() {
    let rt = runtime();
    let mut p = instance(&rt, "mhod", &[("lower", 0.0)]);
    // Always above 0.8: state 1 throughout, p11 = 29/30 (the first transition comes from the
    // initial state 0). Every policy keeps the host overloaded all the time (OTF 1 > 0.1): no
    // feasible policy, so migrate.
    let hot = [0.9f32; 30];
    // Below 0.8 now; above only in the last sample (p11 unknown = 0); too short a history.
    let mut cooling = [0.9f32; 30];
    cooling[29] = 0.5;
    let mut spike = [0.3f32; 30];
    spike[29] = 0.95;
    let short = [0.9f32; 8];
    assert_eq!(classify(&mut p, &[&hot, &cooling, &spike, &short], 300.0), vec![O, N, N, N]);
    // An OTF budget of 1 allows anything: a feasible policy exists, not overloaded.
    let mut lax = instance(&rt, "mhod", &[("otf", 1.0), ("lower", 0.0)]);
    assert_eq!(classify(&mut lax, &[&hot], 300.0), vec![N]);
}
