//! `compat = "cloudsim-3.0.3"`: the CloudSim 3.0.3 PlanetLab experiments, event by event.
//!
//! Our default world (`world.rs` + the real scheduler) follows CloudSim's *model*; this module
//! follows CloudSim's *program*: the same event times (steps at 300.1, 600.1, …, 86 100.1 s,
//! migration completions grouped by instant), the same per-host CPU bookkeeping
//! (`VmSchedulerTimeSharedOverSubscription` with its 0.9 / 0.1 factors and floor on
//! oversubscription), the same order of VMs in host lists (which decides ties), and the stock
//! `PowerVmAllocationPolicyMigration*` loop with its quirks:
//!
//! - the step-0 placement sees every host at idle power and already placed VMs at 0 MIPS;
//! - VMs whose demand is 0 at a stop are removed for good (`getCompletedVms`);
//! - energy is the trapezoid between stops, 0 when the host was idle at the start of the span;
//!   NPA bills max power from t = 0 to the last step (86 100.1 s, 287 intervals);
//! - a VM placed from an overloaded host can be placed again when its new host is evacuated in
//!   the same step: both migrations start and count;
//! - under-load evacuation has no threshold: least-utilized host first until none is left;
//! - hosts woken in the overload phase still count as switched off in the under-load phase;
//! - LR and LRR are the same (the tricube weights never zero, so plain least squares);
//! - every incoming migration counts as SLA violation time on its target (SLATAH);
//! - host shutdowns count active→inactive transitions starting from "active".
//!
//! Facts and algorithms come from the CloudSim 3.0.3 sources (notes in
//! `../shared/reference/cloudsim/README.md`); the code is ours. Selection `rs` uses a seeded
//! `java.util.Random` clone (CloudSim's is unseeded, so compare with the spread of its runs).

use std::sync::Arc;

use super::error::{Result, SimError};
use super::metrics::{RunReport, Series};
use super::scenario::Scenario;
use super::trace::Trace;

/// CloudSim's minimum time between events: cloudlets are submitted at t = 0.1 s.
const T0: f64 = 0.1;
/// `PowerVm.HISTORY_LENGTH`.
const HISTORY: usize = 30;
/// Samples the local-regression detectors fit.
const LR_LENGTH: usize = 10;
/// Fallback threshold of the adaptive detectors (`RunnerAbstract`).
const FALLBACK_THR: f64 = 0.7;
/// Non-zero samples IQR and MAD need.
const ROBUST_MIN: usize = 12;
/// Events at or after this time are never processed (`SIMULATION_LIMIT`).
const LIMIT_S: f64 = 86_400.0;

/// Overload detector of a stock experiment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Detector {
    Thr(f64),
    Iqr(f64),
    Mad(f64),
    Lr(f64),
    Lrr(f64),
}

/// VM selection of a stock experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Mmt,
    Mc,
    Mu,
    Rs,
}

/// A stock CloudSim PlanetLab experiment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Experiment {
    Npa,
    Dvfs,
    Migrating(Detector, Selection),
}

impl Experiment {
    /// `npa`, `dvfs`, `lr-mmt-1.2` or `lr_mmt_1.2` (CloudSim's naming), case-insensitive.
    pub fn parse(name: &str) -> Option<Experiment> {
        let n = name.to_ascii_lowercase().replace('_', "-");
        match n.as_str() {
            "npa" => return Some(Experiment::Npa),
            "dvfs" => return Some(Experiment::Dvfs),
            _ => {}
        }
        let parts: Vec<&str> = n.split('-').collect();
        if parts.len() != 3 {
            return None;
        }
        let p: f64 = parts[2].parse().ok()?;
        let det = match parts[0] {
            "thr" => Detector::Thr(p),
            "iqr" => Detector::Iqr(p),
            "mad" => Detector::Mad(p),
            "lr" => Detector::Lr(p),
            "lrr" => Detector::Lrr(p),
            _ => return None,
        };
        let sel = match parts[1] {
            "mmt" => Selection::Mmt,
            "mc" => Selection::Mc,
            "mu" => Selection::Mu,
            "rs" => Selection::Rs,
            _ => return None,
        };
        Some(Experiment::Migrating(det, sel))
    }
}

/// SPECpower interpolation exactly as `PowerModelSpecPower.getPower` computes it.
fn spec_power(curve: &[f64; 11], u: f64) -> f64 {
    let u = u.clamp(0.0, 1.0);
    // CloudSim first tests `u % 0.1 == 0` and then returns curve[u·10]; that test only holds for
    // 0 and the exact multiples 1, 2, 4, 8 × 0.1, where floor = ceil below gives the same value.
    // floor and ceil of a non-negative value, without the libm calls
    let x = u * 10.0;
    let u1 = x as usize;
    let u2 = if u1 as f64 == x { u1 } else { u1 + 1 };
    let (p1, p2) = (curve[u1], curve[u2]);
    let delta = (p2 - p1) / 10.0;
    p1 + delta * (u - u1 as f64 / 10.0) * 100.0
}

/// `UtilizationModelPlanetLabInMemory.getUtilization` over 289 samples (the last repeated).
fn planetlab_util(data: &[f64], interval: f64, time: f64) -> f64 {
    if time % interval == 0.0 {
        return data[((time as i64) / (interval as i64)) as usize];
    }
    let t1 = (time / interval).floor() as usize;
    let t2 = ((time / interval).ceil() as usize).min(data.len() - 1);
    let t1 = t1.min(data.len() - 1);
    let (u1, u2) = (data[t1], data[t2]);
    if t1 == t2 {
        return u1;
    }
    let delta = (u2 - u1) / ((t2 - t1) as f64 * interval);
    u1 + delta * (time - t1 as f64 * interval)
}

/// The interpolation of [`planetlab_util`] at one time, shared by every VM.
#[derive(Debug, Clone, Copy)]
struct Interp {
    exact: Option<usize>,
    t1: usize,
    t2: usize,
    den: f64,
    w: f64,
}

impl Interp {
    fn at(time: f64, interval: f64, len: usize) -> Interp {
        if time % interval == 0.0 {
            let k = ((time as i64) / (interval as i64)) as usize;
            return Interp { exact: Some(k), t1: k, t2: k, den: 1.0, w: 0.0 };
        }
        let t1 = ((time / interval).floor() as usize).min(len - 1);
        let t2 = ((time / interval).ceil() as usize).min(len - 1);
        if t1 == t2 {
            return Interp { exact: Some(t1), t1, t2, den: 1.0, w: 0.0 };
        }
        Interp { exact: None, t1, t2, den: (t2 - t1) as f64 * interval, w: time - t1 as f64 * interval }
    }
    fn of(&self, data: &[f64]) -> f64 {
        if let Some(k) = self.exact {
            return data[k];
        }
        let (u1, u2) = (data[self.t1], data[self.t2]);
        let delta = (u2 - u1) / self.den;
        u1 + delta * self.w
    }
}

/// Commons-math `SimpleRegression` (with intercept) fed x = 1..=n: (intercept, slope).
pub fn simple_regression(y: &[f64]) -> (f64, f64) {
    let (mut n, mut xbar, mut ybar) = (0u64, 0.0, 0.0);
    let (mut sxx, mut sxy, mut sx, mut sy) = (0.0, 0.0, 0.0, 0.0);
    for (i, &yi) in y.iter().enumerate() {
        let x = (i + 1) as f64;
        if n == 0 {
            xbar = x;
            ybar = yi;
        } else {
            let fact1 = 1.0 + n as f64;
            let fact2 = n as f64 / (1.0 + n as f64);
            let dx = x - xbar;
            let dy = yi - ybar;
            sxx += dx * dx * fact2;
            sxy += dx * dy * fact2;
            xbar += dx / fact1;
            ybar += dy / fact1;
        }
        sx += x;
        sy += yi;
        n += 1;
    }
    let slope = if n < 2 || sxx.abs() < 10.0 * f64::MIN_POSITIVE { f64::NAN } else { sxy / sxx };
    ((sy - slope * sx) / n as f64, slope)
}

/// Commons-math `Percentile` (legacy estimation) at `p` % of `data`.
fn percentile(data: &[f64], p: f64) -> f64 {
    let mut s = data.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n == 1 {
        return s[0];
    }
    let pos = p * (n as f64 + 1.0) / 100.0;
    let fpos = pos.floor();
    let d = pos - fpos;
    if pos < 1.0 {
        return s[0];
    }
    if pos >= n as f64 {
        return s[n - 1];
    }
    let lower = s[fpos as usize - 1];
    let upper = s[fpos as usize];
    lower + d * (upper - lower)
}

/// `MathUtil.mad`.
pub fn mad(data: &[f64]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let m = percentile(data, 50.0);
    let dev: Vec<f64> = data.iter().map(|x| (m - x).abs()).collect();
    percentile(&dev, 50.0)
}

/// `MathUtil.iqr`.
pub fn iqr(data: &[f64]) -> f64 {
    let mut s = data.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let q1 = (0.25 * (n + 1.0)).round() as usize - 1;
    let q3 = (0.75 * (n + 1.0)).round() as usize - 1;
    s[q3] - s[q1]
}

/// `MathUtil.countNonZeroBeginning`: the length up to the last non-zero value (1 if none).
fn count_non_zero_beginning(data: &[f64]) -> usize {
    match data.iter().rposition(|&x| x != 0.0) {
        Some(j) => j + 1,
        None => 1,
    }
}

/// R² of an OLS fit (with intercept) of `y` on the columns `xs`, as commons-math's
/// `OLSMultipleLinearRegression` (Householder QR, threshold 0). `None` where it throws.
#[allow(clippy::needless_range_loop)] // a matrix algorithm: the indexes are the point
pub fn ols_r_squared(xs: &[&[f64]], y: &[f64]) -> Option<f64> {
    let m = y.len();
    let k = xs.len() + 1;
    if m == 0 || k > m || xs.is_empty() {
        return None;
    }
    // Column-major design matrix with the intercept first.
    let mut a: Vec<Vec<f64>> = Vec::with_capacity(k);
    a.push(vec![1.0; m]);
    for c in xs {
        a.push(c.to_vec());
    }
    let mut qrt: Vec<Vec<f64>> = a; // qrt[col][row], as commons' transposed storage
    let mut rdiag = vec![0.0; k];
    for minor in 0..k {
        let x_norm_sqr: f64 = (minor..m).map(|r| qrt[minor][r] * qrt[minor][r]).sum();
        let alpha = if qrt[minor][minor] > 0.0 { -x_norm_sqr.sqrt() } else { x_norm_sqr.sqrt() };
        rdiag[minor] = alpha;
        if alpha != 0.0 {
            qrt[minor][minor] -= alpha;
            for col in minor + 1..k {
                let mut alpha2 = 0.0;
                for row in minor..m {
                    alpha2 -= qrt[col][row] * qrt[minor][row];
                }
                alpha2 /= alpha * qrt[minor][minor];
                for row in minor..m {
                    let v = qrt[minor][row];
                    qrt[col][row] -= alpha2 * v;
                }
            }
        }
    }
    if rdiag.iter().any(|d| d.abs() <= 0.0) {
        return None;
    }
    // Solve: apply Householder to y, back-substitute.
    let mut yv = y.to_vec();
    for minor in 0..k {
        let mut dot = 0.0;
        for row in minor..m {
            dot += yv[row] * qrt[minor][row];
        }
        dot /= rdiag[minor] * qrt[minor][minor];
        for row in minor..m {
            yv[row] += dot * qrt[minor][row];
        }
    }
    let mut b = vec![0.0; k];
    for row in (0..k).rev() {
        yv[row] /= rdiag[row];
        let yr = yv[row];
        b[row] = yr;
        for i in 0..row {
            yv[i] -= yr * qrt[row][i];
        }
    }
    // Residuals against the original design.
    let mut ssr = 0.0;
    for r in 0..m {
        let mut pred = b[0];
        for (j, c) in xs.iter().enumerate() {
            pred += b[j + 1] * c[r];
        }
        let e = y[r] - pred;
        ssr += e * e;
    }
    let mean = y.iter().sum::<f64>() / m as f64;
    let ssto: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    Some(1.0 - ssr / ssto)
}

/// `java.util.Random` (48-bit LCG), for `rs` runs that can be repeated.
#[derive(Debug, Clone)]
pub struct JavaRandom(u64);

impl JavaRandom {
    pub fn new(seed: u64) -> JavaRandom {
        JavaRandom((seed ^ 0x5DEE_CE66D) & ((1 << 48) - 1))
    }
    fn next(&mut self, bits: u32) -> i32 {
        self.0 = (self.0.wrapping_mul(0x5DEE_CE66D).wrapping_add(0xB)) & ((1 << 48) - 1);
        (self.0 >> (48 - bits)) as i32
    }
    pub fn next_int(&mut self, bound: i32) -> i32 {
        if bound & -bound == bound {
            return ((bound as i64 * self.next(31) as i64) >> 31) as i32;
        }
        loop {
            let bits = self.next(31);
            let val = bits % bound;
            if bits - val + (bound - 1) >= 0 {
                return val;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    t: f64,
    alloc: f64,
    req: f64,
    flag: bool,
}

#[derive(Debug)]
struct Host {
    total: f64,
    pe: f64,
    curve: usize,
    ram_cap: f64,
    ram_used: f64,
    /// `getVmList()`, in CloudSim's order.
    vms: Vec<u32>,
    /// `getVmsMigratingIn()`.
    mig_in: Vec<u32>,
    /// The VM scheduler's `mipsMapRequested` and `mipsMap` (one PE per VM).
    req: Vec<(u32, f64)>,
    alloc: Vec<(u32, f64)>,
    available: f64,
    util_mips: f64,
    prev_util_mips: f64,
    entry: Option<Entry>,
    prev_active: bool,
    /// Cached `getUtilizationHistory` sums over `vms` (valid while `hsum_epoch` matches); boxed
    /// so that the hosts scanned by every placement stay small.
    hsum: Box<std::cell::Cell<[f64; HISTORY]>>,
    hsum_key: std::cell::Cell<(u64, u64)>,
    /// Bumped whenever `vms` changes.
    list_ver: u64,
    /// `host.getPower()` at the last update, and at the one before.
    p_now: f64,
    p_prev: f64,
}

#[derive(Debug)]
struct Vm {
    mips: f64,
    ram: f64,
    data: Vec<f64>,
    /// `vm.getHost()`.
    host: Option<u32>,
    /// The allocation policy's `vmTable`.
    table: Option<u32>,
    in_migration: bool,
    instantiating: bool,
    alive: bool,
    /// Requested MIPS at the cloudlet scheduler's previous time.
    req: f64,
    /// `PowerVm` utilization history, newest first.
    hist: Vec<f64>,
    hist_time: f64,
    /// Utilization at the cloudlet scheduler's previous time (what `req` was computed from).
    util: f64,
    entry: Option<Entry>,
}

/// Totals of a run.
#[derive(Debug, Default, Clone)]
struct Totals {
    energy_ws: f64,
    migrations: u64,
    host_active_s: f64,
    host_violation_s: f64,
    vm_requested: f64,
    vm_under_migration: f64,
    shutdowns: u64,
}

/// One CloudSim-exact run.
#[derive(Debug)]
pub struct CloudsimRun {
    exp: Experiment,
    hosts: Vec<Host>,
    vms: Vec<Vm>,
    curves: Vec<[f64; 11]>,
    interval: f64,
    mig_mbps: f64,
    last_process: f64,
    totals: Totals,
    events: Vec<(f64, u64, u32, u32)>,
    seq: u64,
    /// Bumped whenever a VM history or a host's VM list changes (invalidates `Host::hsum`).
    epoch: std::cell::Cell<u64>,
    /// The interpolation at the current stop.
    interp: Interp,
    interp_t: f64,
    rng: JavaRandom,
    /// (time, active hosts after the step, migrations started at the step, energy so far kWh)
    pub steps: Vec<(f64, u32, u32, f64)>,
    /// Step-0 placement (host per VM).
    pub initial: Vec<u32>,
}

impl CloudsimRun {
    /// Builds hosts and VMs from `scenario` and `trace`, and makes the step-0 placement.
    pub fn new(scenario: &Scenario, trace: &Trace, exp: Experiment, seed: u64) -> Result<CloudsimRun> {
        let origin = std::path::Path::new("scenario");
        scenario.validate(origin)?;
        let mut curves = Vec::new();
        for t in &scenario.hosts.types {
            let c = t.curve().ok_or_else(|| SimError::Scenario {
                path: origin.to_path_buf(),
                message: format!("host type {:?} has no power curve", t.name),
            })?;
            curves.push(c.0);
        }
        let n_types = scenario.hosts.types.len();
        let hosts: Vec<Host> = (0..scenario.hosts.count)
            .map(|i| {
                let t = scenario.host_type(i);
                let total = t.capacity();
                Host {
                    total,
                    pe: t.mips_per_core,
                    curve: i % n_types,
                    ram_cap: t.ram_mb,
                    ram_used: 0.0,
                    vms: Vec::new(),
                    mig_in: Vec::new(),
                    req: Vec::new(),
                    alloc: Vec::new(),
                    available: total,
                    util_mips: 0.0,
                    prev_util_mips: 0.0,
                    entry: None,
                    prev_active: true,
                    hsum: Box::new(std::cell::Cell::new([0.0; HISTORY])),
                    hsum_key: std::cell::Cell::new((u64::MAX, 0)),
                    list_ver: 0,
                    p_now: curves[i % n_types][0],
                    p_prev: curves[i % n_types][0],
                }
            })
            .collect();
        let n = trace.vms.len();
        let vms: Vec<Vm> = trace
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let k = v.vm_type.unwrap_or_else(|| scenario.vm_type_index(i, n)).min(scenario.vms.types.len() - 1);
                let mut data = v.util.clone();
                data.push(*data.last().unwrap_or(&0.0));
                Vm {
                    mips: scenario.vms.types[k].mips,
                    ram: scenario.vms.types[k].ram_mb,
                    data,
                    host: None,
                    table: None,
                    in_migration: false,
                    instantiating: true,
                    alive: true,
                    req: 0.0,
                    hist: Vec::with_capacity(HISTORY + 1),
                    hist_time: 0.0,
                    util: 0.0,
                    entry: None,
                }
            })
            .collect();
        let mig_mbps = scenario.host_type(0).migration_mb_per_s(scenario.migration.bandwidth_share);
        let mut run = CloudsimRun {
            exp,
            hosts,
            vms,
            curves,
            interval: scenario.interval_s,
            mig_mbps,
            last_process: 0.0,
            totals: Totals::default(),
            events: Vec::new(),
            seq: 0,
            epoch: std::cell::Cell::new(0),
            interp: Interp { exact: Some(0), t1: 0, t2: 0, den: 1.0, w: 0.0 },
            interp_t: 0.0,
            rng: JavaRandom::new(seed),
            steps: Vec::new(),
            initial: Vec::new(),
        };
        run.place_initial()?;
        Ok(run)
    }

    // ---- VM facts ------------------------------------------------------------------------

    fn util_at(&self, v: u32, t: f64) -> f64 {
        if t == self.interp_t {
            return self.interp.of(&self.vms[v as usize].data);
        }
        planetlab_util(&self.vms[v as usize].data, self.interval, t)
    }

    fn set_time(&mut self, t: f64) {
        if t != self.interp_t {
            let len = self.vms.first().map_or(1, |v| v.data.len());
            self.interp = Interp::at(t, self.interval, len);
            self.interp_t = t;
        }
    }

    fn bump(&mut self, h: u32) {
        self.hosts[h as usize].list_ver += 1;
    }

    /// `vm.getCurrentRequestedTotalMips()`.
    fn request(&self, v: u32) -> f64 {
        let vm = &self.vms[v as usize];
        if vm.instantiating {
            vm.mips
        } else {
            vm.req
        }
    }

    /// `PowerVm.updateVmProcessing`: the cloudlet scheduler's time moves to `t`; at steps the
    /// utilization history grows.
    fn vm_update(&mut self, v: u32, t: f64, step: bool) {
        let u = self.util_at(v, t);
        let vm = &mut self.vms[v as usize];
        vm.util = u;
        vm.req = u * vm.mips;
        if step && t > vm.hist_time {
            if t != 0.0 || u != 0.0 {
                if vm.hist.len() == HISTORY {
                    vm.hist.pop();
                }
                vm.hist.insert(0, u);
                self.epoch.set(self.epoch.get() + 1);
            }
            vm.hist_time = t;
        }
    }

    // ---- the VM scheduler ---------------------------------------------------------------

    fn sched_allocate(&mut self, h: u32, v: u32, r: f64) {
        self.sched_allocate_in(h, v, r, false);
    }

    /// [`Self::sched_allocate`]; `fresh`: `v` is not in the scheduler's maps yet (they are being
    /// rebuilt VM by VM), so it is appended without looking.
    fn sched_allocate_in(&mut self, h: u32, v: u32, r: f64, fresh: bool) {
        let out = self.vms[v as usize].in_migration;
        let host = &mut self.hosts[h as usize];
        let incoming = host.mig_in.contains(&v);
        let out = out && !incoming;
        match if fresh { None } else { host.req.iter_mut().find(|e| e.0 == v) } {
            Some(e) => e.1 = r,
            None => host.req.push((v, r)),
        }
        let capped = r.min(host.pe);
        let total = if incoming { capped * 0.1 } else { capped };
        if host.available >= total {
            let a = if out {
                capped * 0.9
            } else if incoming {
                capped * 0.1
            } else {
                capped
            };
            match if fresh { None } else { host.alloc.iter_mut().find(|e| e.0 == v) } {
                Some(e) => e.1 = a,
                None => host.alloc.push((v, a)),
            }
            host.available -= total;
        } else {
            self.redistribute(h);
        }
    }

    fn redistribute(&mut self, h: u32) {
        let vms = &self.vms;
        let host = &mut self.hosts[h as usize];
        let mut total_req = 0.0;
        for &(v, r) in &host.req {
            let c = r.min(host.pe);
            total_req += if host.mig_in.contains(&v) { c * 0.1 } else { c };
        }
        let factor = host.total / total_req;
        host.alloc.clear();
        for &(v, r) in &host.req {
            let c = r.min(host.pe);
            let incoming = host.mig_in.contains(&v);
            let a = if vms[v as usize].in_migration && !incoming {
                c * factor * 0.9
            } else if incoming {
                c * 0.1 * factor
            } else {
                c * factor
            };
            host.alloc.push((v, a.floor()));
        }
        host.available = 0.0;
    }

    fn sched_deallocate(&mut self, h: u32, v: u32) {
        let host = &mut self.hosts[h as usize];
        host.req.retain(|e| e.0 != v);
        host.alloc.clear();
        host.available = host.total;
        let rest = std::mem::take(&mut host.req);
        for &(u, r) in &rest {
            self.sched_allocate_in(h, u, r, true);
        }
        let host = &mut self.hosts[h as usize];
        debug_assert_eq!(host.req.len(), rest.len());
        host.req = rest;
    }

    fn sched_clear(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        host.req.clear();
        host.alloc.clear();
        host.available = host.total;
    }

    fn allocated(&self, h: u32, v: u32) -> f64 {
        self.hosts[h as usize].alloc.iter().find(|e| e.0 == v).map_or(0.0, |e| e.1)
    }

    // ---- host operations ----------------------------------------------------------------

    fn suitable(&self, h: u32, v: u32) -> bool {
        let host = &self.hosts[h as usize];
        let r = self.request(v);
        let vm = &self.vms[v as usize];
        let ram_ok = !vm.instantiating || host.ram_used + vm.ram <= host.ram_cap;
        host.pe >= r && host.available >= r && ram_ok
    }

    fn vm_create(&mut self, h: u32, v: u32) {
        if self.vms[v as usize].instantiating {
            self.hosts[h as usize].ram_used += self.vms[v as usize].ram;
        }
        let r = self.request(v);
        self.sched_allocate(h, v, r);
        self.hosts[h as usize].vms.push(v);
        self.vms[v as usize].host = Some(h);
        self.bump(h);
    }

    fn vm_destroy(&mut self, h: u32, v: u32) {
        if self.vms[v as usize].instantiating {
            self.hosts[h as usize].ram_used -= self.vms[v as usize].ram;
        }
        self.sched_deallocate(h, v);
        let host = &mut self.hosts[h as usize];
        if let Some(i) = host.vms.iter().position(|&x| x == v) {
            host.vms.remove(i);
        }
        self.vms[v as usize].host = None;
        self.bump(h);
    }

    fn utilization(&self, h: u32) -> f64 {
        let host = &self.hosts[h as usize];
        let u = host.util_mips / host.total;
        if u > 1.0 && u < 1.01 {
            1.0
        } else {
            u
        }
    }

    fn prev_utilization(&self, h: u32) -> f64 {
        let host = &self.hosts[h as usize];
        let u = host.prev_util_mips / host.total;
        if u > 1.0 && u < 1.01 {
            1.0
        } else {
            u
        }
    }

    fn power(&self, h: u32, u: f64) -> f64 {
        spec_power(&self.curves[self.hosts[h as usize].curve], u)
    }

    /// `HostDynamicWorkload.updateVmsProcessing`.
    fn host_update(&mut self, h: u32, t: f64) {
        if self.hosts[h as usize].vms.is_empty() && self.hosts[h as usize].req.is_empty() {
            let host = &mut self.hosts[h as usize];
            host.prev_util_mips = host.util_mips;
            host.p_prev = host.p_now;
            host.util_mips = 0.0;
            host.available = host.total;
            self.host_entry(h, Entry { t, alloc: 0.0, req: 0.0, flag: false });
            let idle = self.curves[self.hosts[h as usize].curve][0];
            self.hosts[h as usize].p_now = idle;
            return;
        }
        self.set_time(t);
        let step = (t - T0) % self.interval == 0.0;
        let list = std::mem::take(&mut self.hosts[h as usize].vms);
        for &v in &list {
            self.vm_update(v, t, step);
        }
        {
            let host = &mut self.hosts[h as usize];
            host.prev_util_mips = host.util_mips;
            host.p_prev = host.p_now;
            host.util_mips = 0.0;
        }
        self.sched_clear(h);
        for &v in &list {
            let r = self.request(v);
            self.sched_allocate_in(h, v, r, true);
        }
        let mut util = 0.0;
        let mut host_req = 0.0;
        for (i, &v) in list.iter().enumerate() {
            let r = self.request(v);
            // The maps were rebuilt in list order: the VM's entry is at its place.
            let mut a = match self.hosts[h as usize].alloc.get(i) {
                Some(&(u, a)) if u == v => a,
                _ => self.allocated(h, v),
            };
            if !self.hosts[h as usize].mig_in.contains(&v) {
                let mig = self.vms[v as usize].in_migration;
                self.vm_entry(v, Entry { t, alloc: a, req: r, flag: mig });
                if mig {
                    a /= 0.9;
                }
            }
            util += a;
            host_req += r;
        }
        self.hosts[h as usize].util_mips = util;
        self.hosts[h as usize].vms = list;
        self.host_entry(h, Entry { t, alloc: util, req: host_req, flag: util > 0.0 });
        self.hosts[h as usize].p_now = self.power(h, self.utilization(h));
    }

    fn vm_entry(&mut self, v: u32, e: Entry) {
        let vm = &mut self.vms[v as usize];
        if let Some(last) = vm.entry {
            if last.t == e.t {
                vm.entry = Some(e);
                return;
            }
            let dt = e.t - last.t;
            self.totals.vm_requested += last.req * dt;
            if last.alloc < last.req && last.flag {
                self.totals.vm_under_migration += (last.req - last.alloc) * dt;
            }
        }
        vm.entry = Some(e);
    }

    fn host_entry(&mut self, h: u32, e: Entry) {
        let host = &mut self.hosts[h as usize];
        if let Some(last) = host.entry {
            if last.t == e.t {
                host.entry = Some(e);
                return;
            }
            let dt = e.t - last.t;
            if last.flag {
                self.totals.host_active_s += dt;
                if last.alloc < last.req {
                    self.totals.host_violation_s += dt;
                }
            }
            if host.prev_active && !last.flag {
                self.totals.shutdowns += 1;
            }
            host.prev_active = last.flag;
        }
        host.entry = Some(e);
    }

    // ---- datacenter ---------------------------------------------------------------------

    /// `updateCloudetProcessingWithoutSchedulingFutureEventsForce` (and NPA's variant).
    fn dc_update(&mut self, t: f64) {
        let dt = t - self.last_process;
        let n = self.hosts.len() as u32;
        if self.exp == Experiment::Npa && dt > 0.0 {
            for h in 0..n {
                self.totals.energy_ws += self.power(h, 1.0) * dt;
            }
        }
        for h in 0..n {
            self.host_update(h, t);
        }
        if self.exp != Experiment::Npa && dt > 0.0 {
            for h in 0..n {
                if self.hosts[h as usize].prev_util_mips == 0.0 {
                    continue;
                }
                if self.prev_utilization(h) != 0.0 {
                    // P(previous utilization) and P(utilization), kept from the host updates
                    let (pf, pt) = (self.hosts[h as usize].p_prev, self.hosts[h as usize].p_now);
                    self.totals.energy_ws += (pf + (pt - pf) / 2.0) * dt;
                }
            }
        }
        for h in 0..n {
            let done: Vec<u32> = self.hosts[h as usize]
                .vms
                .iter()
                .copied()
                .filter(|&v| !self.vms[v as usize].in_migration && self.request(v) == 0.0)
                .collect();
            for v in done {
                if let Some(th) = self.vms[v as usize].table.take() {
                    self.vm_destroy(th, v);
                }
                self.vms[v as usize].alive = false;
            }
        }
        self.last_process = t;
    }

    fn place_initial(&mut self) -> Result<()> {
        let n = self.vms.len() as u32;
        let all: Vec<u32> = (0..self.hosts.len() as u32).collect();
        for v in 0..n {
            let host = match self.exp {
                Experiment::Npa | Experiment::Dvfs => (0..self.hosts.len() as u32).find(|&h| self.suitable(h, v)),
                Experiment::Migrating(..) => self.find_host(v, &all),
            };
            let Some(h) = host else {
                let vm = &self.vms[v as usize];
                return Err(SimError::VmDoesNotFit {
                    vm: v as usize,
                    trace: String::new(),
                    mips: vm.mips,
                    ram_mb: vm.ram,
                });
            };
            self.vm_create(h, v);
            self.vms[v as usize].table = Some(h);
            self.initial.push(h);
            // `processVmCreate` clears the flag at once; with no cloudlet yet the VM asks 0 MIPS
            // until the first step, so later creations see it at 0 (its full MIPS stays allocated).
            let vm = &mut self.vms[v as usize];
            vm.instantiating = false;
            vm.req = 0.0;
        }
        Ok(())
    }

    // ---- the allocation policy -----------------------------------------------------------

    /// `PowerHostUtilizationHistory.getUtilizationHistory` with `extra` appended to the VM list
    /// (the candidate of `isHostOverUtilizedAfterAllocation`): the sums and the trimmed length.
    fn host_history(&self, h: u32, extra: Option<u32>) -> ([f64; HISTORY], usize) {
        let host = &self.hosts[h as usize];
        let key = (self.epoch.get(), host.list_ver);
        let mut hist = if host.hsum_key.get() == key {
            host.hsum.get()
        } else {
            let mut sum = [0.0; HISTORY];
            for &v in &host.vms {
                let vm = &self.vms[v as usize];
                for (i, u) in vm.hist.iter().enumerate() {
                    sum[i] += u * vm.mips / host.total;
                }
            }
            host.hsum.set(sum);
            host.hsum_key.set(key);
            sum
        };
        if let Some(v) = extra {
            let vm = &self.vms[v as usize];
            for (i, u) in vm.hist.iter().enumerate() {
                hist[i] += u * vm.mips / host.total;
            }
        }
        let len = count_non_zero_beginning(&hist);
        (hist, len)
    }

    fn requested_utilization(&self, h: u32, extra: Option<u32>) -> f64 {
        let host = &self.hosts[h as usize];
        let mut total = 0.0;
        for &v in &host.vms {
            total += self.request(v);
        }
        if let Some(v) = extra {
            total += self.request(v);
        }
        total / host.total
    }

    /// `isHostOverUtilized(host)`, with `extra` as if it had been created on the host.
    fn is_over(&self, h: u32, extra: Option<u32>) -> bool {
        let Experiment::Migrating(det, _) = self.exp else { return false };
        match det {
            Detector::Thr(th) => self.requested_utilization(h, extra) > th,
            Detector::Iqr(s) | Detector::Mad(s) => {
                let (hist, len) = self.host_history(h, extra);
                let data = &hist[..len];
                if count_non_zero_beginning(data) < ROBUST_MIN {
                    return self.requested_utilization(h, extra) > FALLBACK_THR;
                }
                let spread = if matches!(det, Detector::Iqr(_)) { iqr(data) } else { mad(data) };
                self.requested_utilization(h, extra) > 1.0 - s * spread
            }
            Detector::Lr(s) | Detector::Lrr(s) => {
                let (hist, len) = self.host_history(h, extra);
                if len < LR_LENGTH {
                    return self.requested_utilization(h, extra) > FALLBACK_THR;
                }
                let mut y = [0.0; LR_LENGTH];
                for (i, slot) in y.iter_mut().enumerate() {
                    *slot = hist[LR_LENGTH - i - 1];
                }
                let (a, b) = simple_regression(&y);
                let host = &self.hosts[h as usize];
                let mut max_ram = host.vms.iter().map(|&v| self.vms[v as usize].ram).fold(f64::MIN, f64::max);
                if let Some(v) = extra {
                    max_ram = max_ram.max(self.vms[v as usize].ram);
                }
                let mig_intervals = (max_ram / self.mig_mbps / self.interval).ceil();
                let predicted = (a + b * (LR_LENGTH as f64 + mig_intervals)) * s;
                predicted >= 1.0
            }
        }
    }

    /// `getUtilizationOfCpuMips` of the PABFD placement.
    fn pabfd_util_mips(&self, h: u32) -> f64 {
        let host = &self.hosts[h as usize];
        let mut m = 0.0;
        if host.mig_in.is_empty() && host.alloc.len() == host.vms.len() {
            // The scheduler's map is kept in VM-list order: the same sum.
            for &(_, a) in &host.alloc {
                m += a;
            }
            return m;
        }
        for &v in &host.vms {
            let a = self.allocated(h, v);
            if host.mig_in.contains(&v) {
                m += a * 0.9 / 0.1;
            }
            m += a;
        }
        m
    }

    /// `isHostOverUtilizedAfterAllocation`: CloudSim creates the VM, tests, destroys it; the
    /// allocation after that is the one before, so testing with the VM appended is the same.
    fn over_after_allocation(&self, h: u32, v: u32) -> bool {
        self.is_over(h, Some(v))
    }

    /// PABFD `findHostForVm(vm, excludedHosts)`.
    /// `candidates` are the hosts not excluded, in id order (ties go to the first).
    fn find_host(&self, v: u32, candidates: &[u32]) -> Option<u32> {
        let mut min_power = f64::MAX;
        let mut best = None;
        let r = self.request(v);
        // P(r / total) per host type, for the hosts using no CPU (most of them).
        let mut idle_after: Vec<(usize, u64, f64)> = Vec::new();
        for &h in candidates {
            let host = &self.hosts[h as usize];
            if host.available < r || host.pe < r || !self.suitable(h, v) {
                continue;
            }
            let used = self.pabfd_util_mips(h);
            let after = (used + r) / host.total;
            let p_after = if used == 0.0 {
                let key = (host.curve, host.total.to_bits());
                match idle_after.iter().find(|e| (e.0, e.1) == key) {
                    Some(e) => e.2,
                    None => {
                        let p = self.power(h, after);
                        idle_after.push((key.0, key.1, p));
                        p
                    }
                }
            } else {
                self.power(h, after)
            };
            let diff = p_after - host.p_now;
            // Only a host that would win is tested for overload (CloudSim tests every one
            // first; the test changes nothing, so the chosen host is the same).
            if diff >= min_power || diff.is_nan() || (used != 0.0 && self.over_after_allocation(h, v)) {
                continue;
            }
            min_power = diff;
            best = Some(h);
        }
        best
    }

    fn select_vm(&mut self, h: u32, t: f64) -> Option<u32> {
        let Experiment::Migrating(_, sel) = self.exp else { return None };
        let migratable: Vec<u32> =
            self.hosts[h as usize].vms.iter().copied().filter(|&v| !self.vms[v as usize].in_migration).collect();
        if migratable.is_empty() {
            return None;
        }
        let argmin = |metric: &dyn Fn(u32) -> f64| {
            let mut best = None;
            let mut min = f64::MAX;
            for &v in &migratable {
                let m = metric(v);
                if m < min {
                    min = m;
                    best = Some(v);
                }
            }
            best
        };
        match sel {
            Selection::Mmt => argmin(&|v| self.vms[v as usize].ram),
            Selection::Mu => argmin(&|v| self.util_at(v, t) * self.vms[v as usize].mips / self.vms[v as usize].mips),

            Selection::Rs => Some(migratable[self.rng.next_int(migratable.len() as i32) as usize]),
            Selection::Mc => {
                let m = migratable.iter().map(|&v| self.vms[v as usize].hist.len()).min().unwrap_or(0);
                let rows: Vec<&[f64]> = migratable.iter().map(|&v| &self.vms[v as usize].hist[..m]).collect();
                let mut metrics = Vec::with_capacity(rows.len());
                for i in 0..rows.len() {
                    let others: Vec<&[f64]> =
                        rows.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| *r).collect();
                    match ols_r_squared(&others, rows[i]) {
                        Some(r2) => metrics.push(r2),
                        None => return argmin(&|v| self.vms[v as usize].ram),
                    }
                }
                let mut max = f64::from_bits(1); // Java's Double.MIN_VALUE
                let mut idx = 0;
                for (i, &r2) in metrics.iter().enumerate() {
                    if r2 > max {
                        max = r2;
                        idx = i;
                    }
                }
                Some(migratable[idx])
            }
        }
    }

    /// `optimizeAllocation`: the migration map.
    fn optimize(&mut self, t: f64) -> Vec<(u32, u32)> {
        let n = self.hosts.len();
        let over: Vec<u32> = (0..n as u32).filter(|&h| self.is_over(h, None)).collect();
        let mut is_over = vec![false; n];
        for &h in &over {
            is_over[h as usize] = true;
        }
        // save the allocation
        let mut saved: Vec<(u32, u32)> = Vec::new();
        for (h, host) in self.hosts.iter().enumerate() {
            for &v in &host.vms {
                if !host.mig_in.contains(&v) {
                    saved.push((h as u32, v));
                }
            }
        }
        // VMs from overloaded hosts
        let mut to_migrate = Vec::new();
        for &h in &over {
            while let Some(v) = self.select_vm(h, t) {
                to_migrate.push(v);
                self.vm_destroy(h, v);
                if !self.is_over(h, None) {
                    break;
                }
            }
        }
        let mut map = Vec::new();
        self.sort_by_cpu(&mut to_migrate, t);
        let not_over: Vec<u32> = (0..n as u32).filter(|&h| !is_over[h as usize]).collect();
        for v in to_migrate {
            if let Some(x) = self.find_host(v, &not_over) {
                self.vm_create(x, v);
                map.push((v, x));
            }
        }
        // under-loaded hosts
        let switched_off: Vec<bool> = (0..n as u32).map(|h| self.utilization(h) == 0.0).collect();
        let mut ex_under: Vec<bool> = (0..n).map(|h| is_over[h] || switched_off[h]).collect();
        let mut placeable: Vec<u32> = (0..n as u32).filter(|&h| !ex_under[h as usize]).collect();
        while let Some(u) = self.under_utilized(&ex_under) {
            ex_under[u as usize] = true;
            if let Ok(i) = placeable.binary_search(&u) {
                placeable.remove(i);
            }
            let mut vms: Vec<u32> =
                self.hosts[u as usize].vms.iter().copied().filter(|&v| !self.vms[v as usize].in_migration).collect();
            if vms.is_empty() {
                continue;
            }
            self.sort_by_cpu(&mut vms, t);
            let mut placed: Vec<(u32, u32)> = Vec::new();
            let mut ok = true;
            for v in vms {
                match self.find_host(v, &placeable) {
                    Some(x) => {
                        self.vm_create(x, v);
                        placed.push((v, x));
                    }
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                for &(v, x) in &placed {
                    self.vm_destroy(x, v);
                }
                continue;
            }
            for &(_, x) in &placed {
                ex_under[x as usize] = true;
            }
            map.extend(placed);
        }
        self.restore(&saved);
        map
    }

    fn sort_by_cpu(&self, vms: &mut [u32], t: f64) {
        // Stable, descending by current MIPS (`PowerVmList.sortByCpuUtilization`).
        let mut keyed: Vec<(f64, u32)> =
            vms.iter().map(|&v| (self.util_at(v, t) * self.vms[v as usize].mips, v)).collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (slot, (_, v)) in vms.iter_mut().zip(keyed) {
            *slot = v;
        }
    }

    fn under_utilized(&self, excluded: &[bool]) -> Option<u32> {
        let mut min = 1.0;
        let mut best = None;
        for h in 0..self.hosts.len() as u32 {
            if excluded[h as usize] {
                continue;
            }
            let u = self.utilization(h);
            if u > 0.0 && u < min && !self.all_out_or_any_in(h) {
                min = u;
                best = Some(h);
            }
        }
        best
    }

    fn all_out_or_any_in(&self, h: u32) -> bool {
        let host = &self.hosts[h as usize];
        for &v in &host.vms {
            if !self.vms[v as usize].in_migration {
                return false;
            }
            if host.mig_in.contains(&v) {
                return true;
            }
        }
        true
    }

    fn restore(&mut self, saved: &[(u32, u32)]) {
        for h in 0..self.hosts.len() as u32 {
            self.bump(h);
        }
        for h in 0..self.hosts.len() as u32 {
            let list = std::mem::take(&mut self.hosts[h as usize].vms);
            for v in list {
                self.vms[v as usize].host = None;
            }
            self.sched_clear(h);
            let incoming = self.hosts[h as usize].mig_in.clone();
            for v in incoming {
                if !self.hosts[h as usize].vms.contains(&v) {
                    self.hosts[h as usize].vms.push(v);
                }
                let r = self.request(v);
                self.sched_allocate(h, v, r);
            }
        }
        for &(h, v) in saved {
            self.vm_create(h, v);
            self.vms[v as usize].table = Some(h);
        }
    }

    // ---- migrations ---------------------------------------------------------------------

    fn start_migration(&mut self, v: u32, x: u32, t: f64) {
        if !self.hosts[x as usize].mig_in.contains(&v) {
            self.vms[v as usize].in_migration = true;
            self.hosts[x as usize].mig_in.push(v);
            let r = self.request(v);
            self.sched_allocate(x, v, r);
            self.hosts[x as usize].vms.push(v);
            self.bump(x);
            self.host_update(x, t);
            if let Some(src) = self.vms[v as usize].host {
                self.host_update(src, t);
            }
        }
        self.totals.migrations += 1;
        let end = t + self.vms[v as usize].ram / self.mig_mbps;
        self.events.push((end, self.seq, v, x));
        self.seq += 1;
    }

    fn finish_migration(&mut self, v: u32, x: u32) {
        if let Some(src) = self.vms[v as usize].table.take() {
            self.vm_destroy(src, v);
        }
        self.sched_deallocate(x, v);
        {
            let host = &mut self.hosts[x as usize];
            host.mig_in.retain(|&u| u != v);
            if let Some(i) = host.vms.iter().position(|&u| u == v) {
                host.vms.remove(i);
            }
        }
        self.bump(x);
        self.vms[v as usize].in_migration = false;
        self.vm_create(x, v);
        self.vms[v as usize].table = Some(x);
    }

    /// Processes migration completions before `until`, grouped by instant.
    fn complete_until(&mut self, until: f64) {
        loop {
            let Some(t) = self.events.iter().map(|e| e.0).filter(|&e| e < until).min_by(f64::total_cmp) else {
                return;
            };
            let mut now: Vec<(f64, u64, u32, u32)> = Vec::new();
            self.events.retain(|e| {
                if e.0 == t {
                    now.push(*e);
                    false
                } else {
                    true
                }
            });
            now.sort_by_key(|e| e.1);
            if t > self.last_process {
                self.dc_update(t);
            }
            for (_, _, v, x) in now {
                self.finish_migration(v, x);
            }
            self.dc_update(t);
        }
    }

    /// Runs the day to its end.
    pub fn run(&mut self) {
        let mut t = T0 + self.interval;
        while t < LIMIT_S {
            self.complete_until(t);
            self.dc_update(t);
            let mut started = 0;
            if matches!(self.exp, Experiment::Migrating(..)) {
                let map = self.optimize(t);
                started = map.len() as u32;
                for (v, x) in map {
                    self.start_migration(v, x, t);
                }
            }
            let active = self.hosts.iter().filter(|h| !h.vms.is_empty() || h.util_mips > 0.0).count() as u32;
            self.steps.push((t, active, started, self.totals.energy_ws / 3.6e6));
            t += self.interval;
        }
        self.complete_until(LIMIT_S);
        // the last entries end the host histories
        for host in &mut self.hosts {
            if let Some(last) = host.entry {
                if host.prev_active && !last.flag {
                    self.totals.shutdowns += 1;
                }
            }
        }
    }

    /// The run's report in our format.
    pub fn report(&self, strategy: &str, trace: &Trace, elapsed_ms: f64, with_series: bool) -> RunReport {
        let tt = &self.totals;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let energy_kwh = tt.energy_ws / 3.6e6;
        let slatah = ratio(tt.host_violation_s, tt.host_active_s);
        let pdm = ratio(tt.vm_under_migration, tt.vm_requested);
        let slav = slatah * pdm;
        let mean_active = if self.steps.is_empty() {
            0.0
        } else {
            self.steps.iter().map(|s| f64::from(s.1)).sum::<f64>() / self.steps.len() as f64
        };
        let series = with_series.then(|| Series {
            time_s: self.steps.iter().map(|s| s.0).collect(),
            active_hosts: self.steps.iter().map(|s| s.1).collect(),
            overloaded_hosts: vec![0; self.steps.len()],
            migrations: self.steps.iter().map(|s| s.2).collect(),
            energy_kwh: self.steps.iter().map(|s| s.3).collect(),
        });
        RunReport {
            strategy: strategy.to_string(),
            trace: trace.name.clone(),
            trace_source: trace.source.clone(),
            hosts: self.hosts.len(),
            vms: self.vms.len(),
            energy_kwh,
            migrations: tt.migrations,
            rejected_migrations: 0,
            slatah,
            pdm,
            slav,
            esv: energy_kwh * slav,
            host_shutdowns: tt.shutdowns,
            mean_active_hosts: mean_active,
            mean_host_utilization: 0.0,
            p95_host_utilization: 0.0,
            cycles: self.steps.len() as u64,
            policy_failures: 0,
            simulated_s: self.last_process,
            elapsed_ms,
            scheduler_ms: 0.0,
            // CloudSim ignores the mode: every migration is its RAM ÷ bandwidth copy.
            migrations_by_mode: Default::default(),
            series,
        }
    }
}

/// Runs `experiment` (a stock name) CloudSim-exactly.
pub fn run_compat(
    scenario: &Scenario,
    trace: Arc<Trace>,
    experiment: &str,
    seed: u64,
    with_series: bool,
) -> Result<RunReport> {
    let started = std::time::Instant::now();
    let exp = Experiment::parse(experiment).ok_or_else(|| {
        SimError::Strategy(format!(
            "compat = \"cloudsim-3.0.3\" runs CloudSim's stock experiments only (npa, dvfs, \
             thr|iqr|mad|lr|lrr-mmt|mc|mu|rs-PARAM); {experiment:?} is not one"
        ))
    })?;
    let mut run = CloudsimRun::new(scenario, &trace, exp, seed)?;
    run.run();
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    let mut r = run.report(experiment, &trace, elapsed, with_series);
    r.scheduler_ms = 0.0;
    Ok(r)
}

#[cfg(test)]
mod tests;
