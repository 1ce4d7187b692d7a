//! `/metrics` in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::controller::Shared;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let v = if v.is_finite() { *v } else { 0.0 };
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Label value escaped as the format requires (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(super) fn render(shared: &Shared) -> String {
    let v = shared.view();
    let m = &v.metrics;
    let c = &shared.counters;
    let mut out = String::with_capacity(4096);
    let one = |x: f64| vec![(String::new(), x)];
    metric(&mut out, "amvm_up", "gauge", "1 while the controller serves.", &one(1.0));
    metric(
        &mut out,
        "amvm_hosts",
        "gauge",
        "Hosts by state.",
        &[
            ("state=\"up\"".into(), m.hosts_up as f64),
            ("state=\"asleep\"".into(), m.hosts_asleep as f64),
            ("state=\"down\"".into(), m.hosts_down as f64),
            ("state=\"maintenance\"".into(), m.hosts_maintenance as f64),
        ],
    );
    metric(&mut out, "amvm_vms", "gauge", "VMs in the world.", &one(m.vms as f64));
    metric(&mut out, "amvm_power_watts", "gauge", "Power the cluster draws now.", &one(m.power_w));
    metric(&mut out, "amvm_energy_today_kwh", "gauge", "Energy since the world's day began.", &one(m.energy_kwh_today));
    metric(&mut out, "amvm_slatah_ratio", "gauge", "SLA time per active host so far today.", &one(m.slatah));
    metric(&mut out, "amvm_pdm_ratio", "gauge", "Performance degradation due to migrations so far today.", &one(m.pdm));
    metric(
        &mut out,
        "amvm_migrations_in_flight",
        "gauge",
        "Migrations under way.",
        &one(m.migrations_in_flight as f64),
    );
    metric(
        &mut out,
        "amvm_load_stddev",
        "gauge",
        "Standard deviation of active hosts' CPU utilization.",
        &one(m.load_stddev),
    );
    metric(
        &mut out,
        "amvm_cycles_total",
        "counter",
        "Decision cycles run.",
        &one(c.cycles.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "amvm_plans_total",
        "counter",
        "Non-empty plans made.",
        &one(c.plans.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "amvm_actions_executed_total",
        "counter",
        "Actions that reached the world.",
        &one(c.actions_executed.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "amvm_actions_refused_total",
        "counter",
        "Actions refused by a guard or by the world.",
        &one(c.actions_refused.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "amvm_policy_failures_total",
        "counter",
        "Policy calls that failed (the strategy fell back).",
        &one(c.policy_failures.load(Ordering::Relaxed) as f64),
    );
    metric(
        &mut out,
        "amvm_decide_seconds_total",
        "counter",
        "Time spent deciding.",
        &one(c.decide_us_total.load(Ordering::Relaxed) as f64 / 1e6),
    );
    metric(
        &mut out,
        "amvm_last_cycle_decide_seconds",
        "gauge",
        "Time the last cycle spent deciding.",
        &one(v.last_cycle.decide_ms / 1e3),
    );
    metric(
        &mut out,
        "amvm_event_subscribers",
        "gauge",
        "Clients on /api/v1/events.",
        &one(shared.bus.subscribers() as f64),
    );
    if let Ok(counts) = shared.store.action_counts() {
        let samples: Vec<(String, f64)> = counts
            .iter()
            .map(|(k, s, n)| (format!("kind=\"{}\",state=\"{}\"", label(k), label(s)), *n as f64))
            .collect();
        metric(&mut out, "amvm_actions", "gauge", "Journaled actions by kind and state.", &samples);
    }
    if let Some(s) = &v.strategy {
        metric(
            &mut out,
            "amvm_strategy_info",
            "gauge",
            "The active strategy.",
            &[(
                format!(
                    "name=\"{}\",version=\"{}\",automation=\"{}\"",
                    label(&s.name),
                    s.version,
                    s.automation.as_str()
                ),
                1.0,
            )],
        );
    }
    out
}
