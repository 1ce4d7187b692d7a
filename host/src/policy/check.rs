//! `check`: load a module under the sandbox, configure it, probe-call it on a synthetic
//! cluster and estimate what it would cost at scale. The one path behind `amvm policy check`
//! and the controller's upload route, so both refuse a module with the same one-line reason.
//!
//! **Cost at scale** (an upper bound, stated in the report): each decision function is probed
//! at `probe_hosts` and at 4 × `probe_hosts` hosts; per-call fuel (deterministic) is fitted as
//! `a + b·n` and extrapolated to `at_hosts`, and time is that fuel × the measured time per fuel
//! unit. A cycle at `N` hosts is modelled as
//! [`CYCLE_MODEL`]: for threshold policies one `classify` over all hosts plus one
//! `would-overload` per moved VM, for selection one call per overloaded host, for placement one
//! `weigh` over all hosts per moved VM, with 5 % of hosts overloaded and one VM moved from
//! each. The scheduler offers fewer candidates than that in practice (one sleeping host per
//! type), so real cycles cost less.

use std::sync::Arc;

use serde::Serialize;

use super::sanitize::clean;
use super::PolicyRuntime;
use super::{types, Descriptor, ParamValue, ParamValues, PolicyError, PolicyInstance, PolicyKind, PolicyModule};
use crate::scheduler::synthetic::SyntheticSpec;

/// How the cost of a cycle at scale is modelled (printed with the estimate).
pub const CYCLE_MODEL: &str = "5 % of hosts overloaded, one VM moved from each";
/// Share of hosts overloaded per cycle in the model.
const OVERLOADED_SHARE: f64 = 0.05;

/// What to check a module with.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Parameter values as `(name, value)` text pairs, parsed against the declared types.
    pub params: Vec<(String, String)>,
    /// Hosts in the synthetic probe cluster.
    pub probe_hosts: usize,
    /// Cluster size the cost is extrapolated to.
    pub at_hosts: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { params: Vec::new(), probe_hosts: 100, at_hosts: 10_000 }
    }
}

/// A module that passed: what it is and what it costs.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    #[serde(skip)]
    pub module: Arc<PolicyModule>,
    /// The one-line `OK: …` text.
    pub summary: String,
    /// Fuel of the main probe call (at `probe_hosts` hosts).
    pub fuel_per_call: u64,
    /// Time of the main probe call, µs (best of three).
    pub time_per_call_us: f64,
    /// Estimated policy time of one cycle at `at_hosts` hosts (see the module docs).
    pub extrapolated_cycle_ms: f64,
    /// Estimated fuel of one cycle at `at_hosts` hosts.
    pub extrapolated_cycle_fuel: f64,
    pub at_hosts: usize,
    /// One line each: what would go wrong at scale (cycle budget, per-call deadline).
    pub warnings: Vec<String>,
}

/// Parses `(name, value)` pairs against the module's declared parameter types.
pub fn parse_params(descriptor: &Descriptor, pairs: &[(String, String)]) -> Result<ParamValues, PolicyError> {
    let mut values = ParamValues::new();
    for (name, text) in pairs {
        let Some(spec) = descriptor.params.iter().find(|p| &p.name == name) else {
            let known: Vec<&str> = descriptor.params.iter().map(|p| p.name.as_str()).collect();
            return Err(PolicyError::BadParameter(format!(
                "{name}: {} has no such parameter (known: {})",
                descriptor.name,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        let value =
            ParamValue::parse_as(spec.ty, text).map_err(|e| PolicyError::BadParameter(format!("{name}: {e}")))?;
        values.insert(name.clone(), value);
    }
    Ok(values)
}

/// One probe: time (best of three) and fuel of the decision call at `n` hosts.
#[derive(Debug, Clone, Copy)]
struct Probe {
    n: usize,
    time_us: f64,
    fuel: f64,
}

/// Time and fuel of one call at `n` hosts. Fuel is deterministic, so it is fitted `a + b·n`
/// through the two probes; time is fuel × the best time per fuel unit measured (timings are
/// noisy, fuel is not).
fn at(p1: Probe, p2: Probe, n: usize) -> (f64, f64) {
    let dn = (p2.n as f64 - p1.n as f64).max(1.0);
    let slope = ((p2.fuel - p1.fuel) / dn).max(0.0);
    let fuel = (p2.fuel + slope * (n as f64 - p2.n as f64)).max(p1.fuel.min(p2.fuel));
    let per_fuel = |p: Probe| if p.fuel > 0.0 { p.time_us / p.fuel } else { f64::INFINITY };
    let us_per_fuel = per_fuel(p1).min(per_fuel(p2));
    let time = if us_per_fuel.is_finite() { fuel * us_per_fuel } else { p1.time_us.min(p2.time_us) };
    (time, fuel)
}

/// The synthetic cluster a probe runs on.
struct Cluster {
    ctx: types::Context,
    hosts: types::Hosts,
    /// VMs of host 0, and one VM to add.
    host0_vms: types::Vms,
    one_vm: types::Vms,
    candidates: types::Candidates,
}

fn cluster(hosts: usize) -> Cluster {
    let snap = SyntheticSpec::new(hosts.max(2), hosts.max(2) * 4, 7).build();
    let ctx = types::Context {
        cycle: 0,
        interval_s: snap.interval_s,
        seed: 7,
        migration_mbps: snap.migration_bandwidth_mbps,
        power_curves: snap.power_curves.iter().flat_map(|c| c.iter().copied()).collect(),
    };
    let w = snap.window;
    let n = snap.hosts.len();
    // Host rows: the sum of each host's VMs (VM i is on host i % n).
    let mut cpu = vec![0.0f32; n * w];
    for vm in 0..snap.vms.len() {
        let h = snap.vms.host[vm] as usize;
        for t in 0..w {
            cpu[h * w + t] += snap.vms.cpu_history[vm * w + t] * snap.vms.mips[vm] / snap.hosts.cpu_capacity[h];
        }
    }
    let hosts_rec = types::Hosts {
        n: n as u32,
        window: w as u32,
        cpu,
        mem: Vec::new(),
        net: Vec::new(),
        cpu_capacity: snap.hosts.cpu_capacity.clone(),
        mem_capacity: snap.hosts.mem_capacity.clone(),
        max_migration_s: vec![27.8; n],
        vm_count: vec![4; n],
    };
    let vms_rec = |idx: &[usize]| types::Vms {
        n: idx.len() as u32,
        window: w as u32,
        cpu: idx.iter().flat_map(|&v| snap.vms.cpu_history[v * w..(v + 1) * w].iter().copied()).collect(),
        mips: idx.iter().map(|&v| snap.vms.mips[v]).collect(),
        ram_mb: idx.iter().map(|&v| snap.vms.ram_mb[v]).collect(),
    };
    let on_host: Vec<usize> = (0..snap.vms.len()).filter(|&v| snap.vms.host[v] == 0).collect();
    let candidates = types::Candidates {
        n: n as u32,
        cpu_used: (0..n).map(|h| hosts_rec.cpu[h * w + w - 1] * hosts_rec.cpu_capacity[h]).collect(),
        cpu_capacity: hosts_rec.cpu_capacity.clone(),
        mem_used: vec![4.0 * 1300.0; n],
        mem_capacity: hosts_rec.mem_capacity.clone(),
        power_model: (0..n).map(|h| (h % 2) as u32).collect(),
        vm_count: vec![4; n],
        asleep: vec![0; n],
    };
    Cluster { ctx, host0_vms: vms_rec(&on_host), one_vm: vms_rec(&[0]), hosts: hosts_rec, candidates }
}

fn first_host(h: &types::Hosts) -> types::Hosts {
    let w = h.window as usize;
    types::Hosts {
        n: 1,
        cpu: h.cpu[..w].to_vec(),
        cpu_capacity: vec![h.cpu_capacity[0]],
        mem_capacity: vec![h.mem_capacity[0]],
        max_migration_s: vec![27.8],
        vm_count: vec![4],
        ..h.clone()
    }
}

/// An `indexed-placement` module keeps its two promises on the probe: a subset of the candidates
/// weighs as in the whole list (row-local weights), and each candidate's own one-row group is
/// bounded by its weight. A broken promise would make the candidate index pick other hosts than
/// the full scan, so it is refused at load.
fn check_bounds(
    inst: &mut PolicyInstance,
    c: &Cluster,
    vm: types::VmDemand,
    weights: &[Option<f32>],
) -> Result<(), PolicyError> {
    let cand = &c.candidates;
    let n = (cand.n as usize).min(64);
    let take = |col: &Vec<f32>| col[..n].to_vec();
    let subset = types::Candidates {
        n: n as u32,
        cpu_used: take(&cand.cpu_used),
        cpu_capacity: take(&cand.cpu_capacity),
        mem_used: take(&cand.mem_used),
        mem_capacity: take(&cand.mem_capacity),
        power_model: cand.power_model[..n].to_vec(),
        vm_count: cand.vm_count[..n].to_vec(),
        asleep: cand.asleep[..n].to_vec(),
    };
    let part = inst.weigh(&c.ctx, vm, &subset)?;
    if let Some(i) = (0..n).find(|&i| part[i].map(f32::to_bits) != weights[i].map(f32::to_bits)) {
        return Err(PolicyError::InvalidOutput {
            function: "weigh",
            reason: format!(
                "candidate {i} weighs {:?} among {n} candidates but {:?} among all; an indexed-placement \
                 module must weigh each row on its own",
                part[i], weights[i]
            ),
        });
    }
    // One group per candidate row: its own CPU in use as both ends of the band.
    let groups = types::HostGroups {
        n: n as u32,
        cpu_used_min: subset.cpu_used.clone(),
        cpu_used_max: subset.cpu_used,
        cpu_capacity: subset.cpu_capacity,
        mem_capacity: subset.mem_capacity,
        power_model: subset.power_model,
        asleep: subset.asleep,
    };
    let bounds = inst.weigh_bound(&c.ctx, vm, &groups)?;
    for i in 0..n {
        let fits = cand.cpu_used[i] + vm.cpu_mips <= cand.cpu_capacity[i]
            && cand.mem_used[i] + vm.ram_mb <= cand.mem_capacity[i];
        let broken = match (bounds[i], weights[i]) {
            (_, None) => false,
            (None, Some(_)) => fits,
            (Some(b), Some(w)) => fits && b > w,
        };
        if broken {
            return Err(PolicyError::InvalidOutput {
                function: "weigh-bound",
                reason: format!("bound {:?} for the group of candidate {i}, which weighs {:?}", bounds[i], weights[i]),
            });
        }
    }
    Ok(())
}

/// The first `n` host rows of `h`.
fn host_rows(h: &types::Hosts, n: usize) -> types::Hosts {
    let w = h.window as usize;
    let rows = |col: &Vec<f32>| if col.is_empty() { Vec::new() } else { col[..n * w].to_vec() };
    types::Hosts {
        n: n as u32,
        window: h.window,
        cpu: rows(&h.cpu),
        mem: rows(&h.mem),
        net: rows(&h.net),
        cpu_capacity: h.cpu_capacity[..n].to_vec(),
        mem_capacity: h.mem_capacity[..n].to_vec(),
        max_migration_s: h.max_migration_s[..n].to_vec(),
        vm_count: h.vm_count[..n].to_vec(),
    }
}

/// VM `v` of `vms` alone.
fn vm_row(vms: &types::Vms, v: usize) -> types::Vms {
    let w = vms.window as usize;
    types::Vms {
        n: 1,
        window: vms.window,
        cpu: vms.cpu[v * w..(v + 1) * w].to_vec(),
        mips: vec![vms.mips[v]],
        ram_mb: vec![vms.ram_mb[v]],
    }
}

/// A `bounded-threshold` module keeps its promises on the probe: `would-overload` is row-local
/// (a host answers the same in a shorter batch), and wherever its headroom and VM loads decide
/// `would-overload` for one VM, the call answers the same. A broken promise would make the
/// scheduler place VMs where the module vetoes them (or skip hosts it accepts), so it is
/// refused at load. Returns how many verdicts the bounds decided.
fn check_headroom(inst: &mut PolicyInstance, c: &Cluster) -> Result<usize, PolicyError> {
    let n = (c.hosts.n as usize).min(64);
    let hosts = host_rows(&c.hosts, n);
    let half = host_rows(&c.hosts, n.div_ceil(2));
    let head = inst.headroom(&c.ctx, &hosts)?;
    let vms = &c.host0_vms;
    let loads = inst.vm_load(&c.ctx, vms)?;
    let bw = c.ctx.migration_mbps;
    let mut decided = 0;
    for (v, &load) in loads.iter().enumerate().take(8) {
        let one = vm_row(vms, v);
        let answers = inst.would_overload(&c.ctx, &hosts, &one)?;
        let part = inst.would_overload(&c.ctx, &half, &one)?;
        if let Some(h) = (0..part.len()).find(|&h| part[h] != answers[h]) {
            return Err(PolicyError::InvalidOutput {
                function: "would-overload",
                reason: format!(
                    "host {h} answers {} for VM {v} among {} hosts but {} among {n}; a bounded-threshold \
                     module must answer each host on its own",
                    part[h],
                    part.len(),
                    answers[h]
                ),
            });
        }
        let migration_s = if bw > 0.0 { vms.ram_mb[v] / bw } else { f32::INFINITY };
        for h in 0..n {
            let Some(said) = PolicyInstance::headroom_verdict(head[h], migration_s, load) else { continue };
            decided += 1;
            if said != answers[h] {
                return Err(PolicyError::InvalidOutput {
                    function: "headroom",
                    reason: format!(
                        "host {h} has headroom (accepts {}, refuses {}) and VM {v} a load of {}..{}, which says \
                         would-overload is {said}, but would-overload answers {}",
                        head[h].accepts, head[h].refuses, load.0, load.1, answers[h]
                    ),
                });
            }
        }
    }
    Ok(decided)
}

/// Runs the main decision call three times; returns what it said (for the OK line) and its cost.
fn probe(inst: &mut PolicyInstance, c: &Cluster) -> Result<(String, Probe), PolicyError> {
    let n = c.hosts.n as usize;
    let mut best = f64::INFINITY;
    let mut fuel = 0;
    let mut what = String::new();
    for _ in 0..3 {
        what = match inst.kind() {
            PolicyKind::Threshold => {
                let classes = inst.classify(&c.ctx, &c.hosts)?;
                let over = classes.iter().filter(|&&k| k == 2).count();
                format!("classify({n} hosts): {over} overloaded")
            }
            PolicyKind::Selection => {
                let order = inst.select(&c.ctx, &first_host(&c.hosts), &c.host0_vms)?;
                format!("select({} VMs): {} named", c.host0_vms.n, order.len())
            }
            PolicyKind::Placement => {
                let vm = types::VmDemand { cpu_mips: 500.0, ram_mb: 613.0 };
                let weights = inst.weigh(&c.ctx, vm, &c.candidates)?;
                let kept = weights.iter().filter(|w| w.is_some()).count();
                if inst.has_weigh_bound() {
                    // The cost reported is the weigh call's.
                    let cost = inst.last_call;
                    check_bounds(inst, c, vm, &weights)?;
                    inst.last_call = cost;
                }
                format!("weigh({n} candidates): {kept} kept")
            }
            PolicyKind::MigrationMode => {
                // One move per host of the probe cluster: dirty rates from idle to twice the link.
                let moves = types::Moves {
                    n: n as u32,
                    ram_mb: (0..n).map(|i| [613.0, 1740.0, 870.0][i % 3]).collect(),
                    dirty_mbps: (0..n).map(|i| if i % 5 == 4 { f32::NAN } else { (i % 5) as f32 * 31.25 }).collect(),
                    cpu: (0..n).map(|i| (i % 10) as f32 / 10.0).collect(),
                    link_mbps: vec![c.ctx.migration_mbps; n],
                };
                let modes = inst.choose_mode(&c.ctx, &moves)?;
                let count = |m| modes.iter().filter(|&&x| x == m).count();
                use amvm_model::Mode;
                format!(
                    "choose-mode({n} moves): {} pre, {} post, {} hybrid",
                    count(Mode::Pre),
                    count(Mode::Post),
                    count(Mode::Hybrid)
                )
            }
        };
        best = best.min(inst.last_call.elapsed.as_secs_f64() * 1e6);
        fuel = inst.last_call.fuel;
    }
    Ok((what, Probe { n, time_us: best, fuel: fuel as f64 }))
}

impl PolicyRuntime {
    /// Loads `bytes` (from `source`, for messages), configures the module with `opts.params`,
    /// probe-calls every decision function and estimates the cost of a cycle at
    /// `opts.at_hosts` hosts. Any refusal is a [`PolicyError`] whose `Display` is one line.
    pub fn check(&self, bytes: &[u8], source: &str, opts: &CheckOptions) -> Result<CheckReport, PolicyError> {
        let m = self.load(bytes, source)?;
        let params = parse_params(&m.descriptor, &opts.params)?;
        let mut inst = self.instantiate(&m, &params)?;
        let small = cluster(opts.probe_hosts.max(2));
        let large = cluster(opts.probe_hosts.max(2) * 4);
        let (what, p1) = probe(&mut inst, &small)?;
        let (_, p2) = probe(&mut inst, &large)?;
        let (time_at, fuel_at) = at(p1, p2, opts.at_hosts);
        let moved = (opts.at_hosts as f64 * OVERLOADED_SHARE).ceil();
        let (mut cycle_us, mut cycle_fuel) = match m.kind() {
            PolicyKind::Threshold => (time_at, fuel_at),
            PolicyKind::Selection | PolicyKind::Placement => (0.0, 0.0),
            // One call per cycle over the cycle's moves (a share of the hosts).
            PolicyKind::MigrationMode => (time_at * OVERLOADED_SHARE.min(1.0), fuel_at * OVERLOADED_SHARE.min(1.0)),
        };
        let mut extra = String::new();
        match m.kind() {
            PolicyKind::Threshold => {
                // would-overload runs on short lists: its cost at 8 hosts stands for every call.
                inst.would_overload(&small.ctx, &small.hosts, &small.one_vm)?;
                let w = inst.last_call;
                cycle_us += moved * w.elapsed.as_secs_f64() * 1e6 * 8.0 / small.hosts.n as f64;
                cycle_fuel += moved * w.fuel as f64 * 8.0 / small.hosts.n as f64;
                extra = "; would-overload ok".into();
                if inst.has_headroom() {
                    let decided = check_headroom(&mut inst, &small)?;
                    extra = format!("{extra}; headroom ok ({decided} verdicts checked)");
                }
            }
            // A selection call sees one host: its cost does not grow with the cluster.
            PolicyKind::Selection => {
                cycle_us += moved * p1.time_us;
                cycle_fuel += moved * p1.fuel;
            }
            PolicyKind::Placement => {
                cycle_us += moved * time_at;
                cycle_fuel += moved * fuel_at;
            }
            PolicyKind::MigrationMode => {}
        }
        let cycle_ms = cycle_us / 1000.0;
        let mut warnings = Vec::new();
        let budget_ms = self.config().cycle_budget.as_secs_f64() * 1000.0;
        if cycle_ms > budget_ms {
            warnings.push(format!(
                "at {} hosts a cycle would spend about {cycle_ms:.0} ms in this module, over the cycle budget of {budget_ms:.0} ms ({CYCLE_MODEL}): the scheduler would fall back to the built-in",
                opts.at_hosts
            ));
        }
        let deadline_ms = self.config().deadline.as_secs_f64() * 1000.0;
        if m.kind() != PolicyKind::Selection && time_at / 1000.0 > deadline_ms {
            warnings.push(format!(
                "at {} hosts one call would take about {:.0} ms, over the per-call deadline of {deadline_ms:.0} ms",
                opts.at_hosts,
                time_at / 1000.0
            ));
        }
        let summary = format!(
            "OK: {} {} ({} policy, sha256 {}…): {what}{extra}, {:.0} µs, fuel {}; ~{:.1} ms per cycle at {} hosts",
            clean(&m.descriptor.name),
            clean(&m.descriptor.version),
            m.kind(),
            &m.sha256[..12],
            p1.time_us,
            p1.fuel,
            cycle_ms,
            opts.at_hosts
        );
        Ok(CheckReport {
            module: m,
            summary,
            fuel_per_call: p1.fuel as u64,
            time_per_call_us: p1.time_us,
            extrapolated_cycle_ms: cycle_ms,
            extrapolated_cycle_fuel: cycle_fuel,
            at_hosts: opts.at_hosts,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_extrapolation() {
        let p1 = Probe { n: 100, time_us: 10.0, fuel: 1000.0 };
        let p2 = Probe { n: 400, time_us: 40.0, fuel: 4000.0 };
        let (t, f) = at(p1, p2, 10_000);
        assert!((t - 1000.0).abs() < 1e-6 && (f - 100_000.0).abs() < 1e-6, "{t} {f}");
        // Constant work stays constant, whatever the timing noise; time follows fuel.
        let (t, f) =
            at(Probe { n: 100, time_us: 5.0, fuel: 500.0 }, Probe { n: 400, time_us: 9.0, fuel: 500.0 }, 10_000);
        assert!((f - 500.0).abs() < 1e-6 && (t - 5.0).abs() < 1e-6, "{t} {f}");
    }
}
