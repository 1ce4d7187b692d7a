//! Experiments: offline A/B over replayed traces (the same runs and statistics as `amvm ab`,
//! on a background thread with progress) and the figures live shadow experiments compare.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Shared;
use crate::scheduler::{HostState, Plan, Snapshot};
use crate::sim::ab::run_ab;
use crate::sim::run::Decider;
use crate::sim::{report, Scenario, Trace};

/// An offline A/B request.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineSpec {
    /// Strategy A and B: built-in names, `npa`/`dvfs`, or a stored strategy as `id:N`.
    pub a: String,
    pub b: String,
    /// Traces: `embedded`, `synthetic:vms=…`, or day names listed by `GET /api/v1/traces`.
    pub traces: Vec<String>,
}

/// PlanetLab day directories under `root` (names only), sorted.
pub fn list_traces(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Resolves a trace name of a request: never a free path (the API is no file browser).
fn trace_spec(root: &Path, name: &str) -> Result<String> {
    if name == "embedded" || name.starts_with("synthetic:") {
        return Ok(name.to_string());
    }
    if list_traces(root).iter().any(|t| t == name) {
        return Ok(root.join(name).display().to_string());
    }
    anyhow::bail!("unknown trace {name:?}: use embedded, synthetic:vms=N, or a name from GET /api/v1/traces")
}

/// Resolves one side of an experiment into something that makes deciders.
fn side(shared: &Shared, spec: &str) -> Result<(String, Option<crate::scheduler::Strategy>)> {
    if let Some(b) = crate::sim::Baseline::parse(spec) {
        return Ok((b.name().to_string(), None));
    }
    let mut s = if let Some(id) = spec.strip_prefix("id:") {
        let id: i64 = id.parse().with_context(|| format!("{spec:?}: id:N expected"))?;
        let row = shared.store.strategy(id)?.with_context(|| format!("no strategy {id}"))?;
        super::parse_strategy(&row.toml)?
    } else {
        super::parse_strategy(spec)?
    };
    shared.resolve_modules(&mut s)?;
    crate::scheduler::Scheduler::new(&shared.runtime, &s)?;
    Ok((s.name.clone(), Some(s)))
}

/// Validates an offline A/B and runs it on a background thread; returns the experiment id.
pub fn start_offline(shared: &Arc<Shared>, spec: OfflineSpec, root: &Path, by: &str) -> Result<i64> {
    if spec.traces.is_empty() || spec.traces.len() > 50 {
        anyhow::bail!("give 1 to 50 traces");
    }
    let specs: Vec<String> = spec.traces.iter().map(|t| trace_spec(root, t)).collect::<Result<_>>()?;
    let (a_name, a) = side(shared, &spec.a).with_context(|| format!("strategy A {:?}", spec.a))?;
    let (b_name, b) = side(shared, &spec.b).with_context(|| format!("strategy B {:?}", spec.b))?;
    let id = shared.store.insert_experiment("offline", &serde_json::to_value(&spec)?, by)?;
    shared.store.audit(
        by,
        "experiment.start",
        &format!("experiment {id}"),
        &format!("offline {a_name} vs {b_name}"),
    )?;
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("amvm-experiment-{id}"))
        .spawn(move || {
            let outcome = run_offline(&shared, id, &specs, (&a_name, a.as_ref()), (&b_name, b.as_ref()));
            let (state, err) = match &outcome {
                Ok(()) => ("SUCCEEDED", None),
                Err(e) => ("FAILED", Some(format!("{e:#}"))),
            };
            if let Err(e) = shared.store.finish_experiment(id, state, None, None, err.as_deref()) {
                tracing::error!(error = %e, "cannot record the experiment's end");
            }
            shared.bus.publish("experiment", 0.0, serde_json::json!({ "id": id, "state": state, "error": err }));
        })
        .context("cannot start the experiment thread")?;
    Ok(id)
}

fn run_offline(
    shared: &Shared,
    id: i64,
    specs: &[String],
    (a_name, a): (&str, Option<&crate::scheduler::Strategy>),
    (b_name, b): (&str, Option<&crate::scheduler::Strategy>),
) -> Result<()> {
    let traces: Vec<Arc<Trace>> =
        specs.iter().map(|s| Trace::load(s).map(Arc::new)).collect::<std::result::Result<_, _>>()?;
    let scenario = Scenario::default();
    let runtime = &shared.runtime;
    let make = |name: &str, s: Option<&crate::scheduler::Strategy>| -> crate::sim::error::Result<Decider<'_>> {
        match s {
            None => Ok(Decider::Baseline(crate::sim::Baseline::parse(name).unwrap_or(crate::sim::Baseline::Dvfs))),
            Some(s) => {
                let mut scheduler = crate::scheduler::Scheduler::new(runtime, s)
                    .map_err(|e| crate::sim::SimError::Strategy(format!("{e:#}")))?;
                Ok(Decider::Strategy {
                    name: s.name.clone(),
                    decide: Box::new(move |snap| {
                        let o = scheduler.cycle(snap);
                        (o.plan, o.failures.len())
                    }),
                })
            }
        }
    };
    let make_a = || make(a_name, a);
    let make_b = || make(b_name, b);
    let done = AtomicUsize::new(0);
    let total = (2 * traces.len()) as f64;
    let progress = || {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        let p = n as f64 / total;
        let _ = shared.store.experiment_progress(id, p);
        shared.bus.publish("experiment", 0.0, serde_json::json!({ "id": id, "progress": p, "runs_done": n }));
    };
    let result = run_ab(&scenario, &traces, (a_name, &make_a), (b_name, &make_b), &progress)?;
    let html = report::html(&result);
    let json = serde_json::to_value(&result)?;
    shared.store.finish_experiment(id, "SUCCEEDED", Some(&json), Some(&html), None)?;
    Ok(())
}

/// The traces root: `--traces DIR`, else `shared/data/planetlab` next to the checkout.
pub fn default_traces_root() -> PathBuf {
    crate::sim::trace::resolve_path(Path::new("../shared/data/planetlab"))
}

/// Power the cluster would draw with `plan` carried out on `snap`'s current demand (W): each
/// host's CPU demand after the moves, through its power curve; hosts left empty draw nothing.
pub fn predicted_power_w(snap: &Snapshot, plan: &Plan) -> f64 {
    let n = snap.hosts.len();
    let mut demand = vec![0.0f64; n];
    let mut vms = vec![0u32; n];
    let index: std::collections::HashMap<u32, usize> =
        snap.hosts.id.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut host_of: Vec<usize> = snap.vms.host.iter().map(|&h| h as usize).collect();
    let vm_index: std::collections::HashMap<u32, usize> =
        snap.vms.id.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    for m in &plan.migrations {
        if let (Some(&v), Some(&to)) = (vm_index.get(&m.vm), index.get(&m.to)) {
            host_of[v] = to;
        }
    }
    for (v, &h) in host_of.iter().enumerate() {
        if h < n {
            demand[h] += f64::from(snap.vm_demand_mips(v));
            vms[h] += 1;
        }
    }
    (0..n)
        .filter(|&h| vms[h] > 0 && snap.hosts.state[h] != HostState::Down)
        .map(|h| {
            let u = (demand[h] / f64::from(snap.hosts.cpu_capacity[h]).max(1.0)).clamp(0.0, 1.0);
            let curve = snap.power_curves.get(snap.hosts.power_model[h] as usize).copied().unwrap_or([0.0; 11]);
            let x = u * 10.0;
            let k = (x.floor() as usize).min(9);
            let (lo, hi) = (f64::from(curve[k]), f64::from(curve[k + 1]));
            lo + (hi - lo) * (x - k as f64)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{HostTable, Migration, MigrationReason, VmTable};

    #[test]
    fn consolidating_two_hosts_onto_one_predicts_less_power() {
        let mut hosts = HostTable::default();
        hosts.push(0, HostState::Active, 1000.0, 1000.0, 0);
        hosts.push(1, HostState::Active, 1000.0, 1000.0, 0);
        let snap = Snapshot {
            window: 1,
            power_curves: vec![[100.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0, 170.0, 180.0, 190.0, 200.0]],
            hosts,
            vms: VmTable {
                id: vec![0, 1],
                host: vec![0, 1],
                mips: vec![1000.0, 1000.0],
                ram_mb: vec![1.0, 1.0],
                cpu_history: vec![0.2, 0.3],
                migrating: vec![false, false],
                dirty_mbps: Vec::new(),
                extra_migration_s: Vec::new(),
            },
            ..Snapshot::default()
        };
        let before = predicted_power_w(&snap, &Plan::default());
        assert!((before - (120.0 + 130.0)).abs() < 1e-6, "{before}");
        let plan = Plan {
            migrations: vec![Migration { vm: 0, from: 0, to: 1, reason: MigrationReason::Underload, mode: None }],
            ..Plan::default()
        };
        let after = predicted_power_w(&snap, &plan);
        assert!((after - 150.0).abs() < 1e-6, "{after}");
    }
}
