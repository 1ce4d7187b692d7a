//! Offline A/B testing: two strategies over the same traces, compared per metric with the paired
//! mean difference, a 95 % confidence interval (Student t over the traces) and a verdict in words.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::Result;
use super::metrics::RunReport;
use super::run::{run, Decider, RunOptions};
use super::scenario::Scenario;
use super::trace::Trace;

/// Both runs on one trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbTrace {
    pub trace: String,
    pub a: RunReport,
    pub b: RunReport,
}

/// One metric compared over all traces. Differences are B − A.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub n: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    pub mean_diff: f64,
    /// 95 % confidence interval of the mean difference; `None` with a single trace.
    pub ci95: Option<(f64, f64)>,
    /// Mean difference relative to A's mean (%), `None` when A's mean is 0.
    pub relative_pct: Option<f64>,
    pub relative_ci95_pct: Option<(f64, f64)>,
    /// The interval excludes 0.
    pub significant: bool,
    pub verdict: String,
}

/// The whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbResult {
    pub a: String,
    pub b: String,
    pub traces: Vec<AbTrace>,
    pub comparisons: Vec<Comparison>,
    pub elapsed_ms: f64,
}

/// The metrics compared, with the words of their verdicts: (field, noun phrase, fewer/less
/// wording, more wording).
const METRICS: &[(&str, &str, &str, &str)] = &[
    ("energy_kwh", "energy", "uses {p} less energy", "uses {p} more energy"),
    ("slav", "SLA violations (SLAV)", "has {p} fewer SLA violations (SLAV)", "has {p} more SLA violations (SLAV)"),
    ("esv", "energy × SLAV (ESV)", "has {p} lower ESV", "has {p} higher ESV"),
    ("slatah", "overload time (SLATAH)", "has {p} less overload time (SLATAH)", "has {p} more overload time (SLATAH)"),
    ("pdm", "migration degradation (PDM)", "loses {p} less to migrations (PDM)", "loses {p} more to migrations (PDM)"),
    ("migrations", "migrations", "makes {p} fewer migrations", "makes {p} more migrations"),
    ("host_shutdowns", "host shutdowns", "shuts hosts down {p} less often", "shuts hosts down {p} more often"),
    ("mean_active_hosts", "active hosts", "keeps {p} fewer hosts active", "keeps {p} more hosts active"),
    ("mean_host_utilization", "host utilization", "runs hosts {p} less utilized", "runs hosts {p} more utilized"),
];

/// Value of a compared metric in a report.
pub fn metric_value(r: &RunReport, metric: &str) -> f64 {
    match metric {
        "energy_kwh" => r.energy_kwh,
        "slav" => r.slav,
        "esv" => r.esv,
        "slatah" => r.slatah,
        "pdm" => r.pdm,
        "migrations" => r.migrations as f64,
        "host_shutdowns" => r.host_shutdowns as f64,
        "mean_active_hosts" => r.mean_active_hosts,
        "mean_host_utilization" => r.mean_host_utilization,
        _ => f64::NAN,
    }
}

/// Two-sided 95 % Student t quantile for `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// Compares A and B per metric over paired runs.
pub fn compare(a_name: &str, b_name: &str, pairs: &[AbTrace]) -> Vec<Comparison> {
    METRICS
        .iter()
        .map(|&(metric, noun, less, more)| {
            let a: Vec<f64> = pairs.iter().map(|p| metric_value(&p.a, metric)).collect();
            let b: Vec<f64> = pairs.iter().map(|p| metric_value(&p.b, metric)).collect();
            compare_one(metric, noun, less, more, a_name, b_name, &a, &b)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn compare_one(
    metric: &str,
    noun: &str,
    less: &str,
    more: &str,
    a_name: &str,
    b_name: &str,
    a: &[f64],
    b: &[f64],
) -> Comparison {
    let n = a.len();
    let mean = |x: &[f64]| {
        if x.is_empty() {
            0.0
        } else {
            x.iter().sum::<f64>() / x.len() as f64
        }
    };
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let (mean_a, mean_b, mean_diff) = (mean(a), mean(b), mean(&diffs));
    let ci95 = (n >= 2).then(|| {
        let var = diffs.iter().map(|d| (d - mean_diff).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = t95(n - 1) * (var / n as f64).sqrt();
        (mean_diff - half, mean_diff + half)
    });
    let significant = ci95.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0);
    let rel = |x: f64| (mean_a != 0.0).then(|| x / mean_a.abs() * 100.0);
    let relative_pct = rel(mean_diff);
    let relative_ci95_pct = ci95.and_then(|(lo, hi)| Some((rel(lo)?, rel(hi)?)));

    let fmt_amount = |x: f64| match relative_pct {
        Some(_) => format!("{:.1} %", (x / mean_a.abs() * 100.0).abs()),
        None => format!("{} ", short(x.abs())).trim_end().to_string(),
    };
    let verdict = if mean_diff == 0.0 {
        format!("{b_name} and {a_name} do not differ in {noun}")
    } else {
        let phrase = if mean_diff < 0.0 { less } else { more };
        let mut v = format!("{b_name} {} than {a_name}", phrase.replace("{p}", &fmt_amount(mean_diff)));
        match (ci95, relative_ci95_pct) {
            (Some(_), Some((lo, hi))) => v.push_str(&format!(" (95 % CI {lo:+.1} % … {hi:+.1} %)")),
            (Some((lo, hi)), None) => v.push_str(&format!(" (95 % CI {} … {})", short(lo), short(hi))),
            _ => {}
        }
        v.push_str(match (ci95.is_some(), significant) {
            (false, _) => "; one trace, no confidence interval",
            (true, true) => "; significant",
            (true, false) => "; not significant",
        });
        v
    };
    Comparison {
        metric: metric.to_string(),
        n,
        mean_a,
        mean_b,
        mean_diff,
        ci95,
        relative_pct,
        relative_ci95_pct,
        significant,
        verdict,
    }
}

/// A number in few characters (3 significant digits).
pub fn short(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 0.01 {
        format!("{x:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{x:.3e}")
    }
}

/// Builds a [`Decider`] for one run; called on the worker thread that runs it.
pub type DeciderFactory<'a> = dyn Fn() -> Result<Decider<'a>> + Sync + 'a;

/// Runs A and B on every trace (on as many threads as the machine has cores, at most 2 × traces)
/// and compares them. `progress` is called after each finished run.
pub fn run_ab<'a>(
    scenario: &Scenario,
    traces: &[Arc<Trace>],
    (a_name, make_a): (&str, &DeciderFactory<'a>),
    (b_name, make_b): (&str, &DeciderFactory<'a>),
    progress: &(dyn Fn() + Sync),
) -> Result<AbResult> {
    let started = Instant::now();
    let jobs = traces.len() * 2;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<crate::sim::RunReport>>>> = Mutex::new((0..jobs).map(|_| None).collect());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= jobs {
                    break;
                }
                let trace = Arc::clone(&traces[job / 2]);
                let make = if job.is_multiple_of(2) { make_a } else { make_b };
                let outcome = make().and_then(|d| run(scenario, trace, d, RunOptions { series: true }));
                let failed = outcome.is_err();
                if let Ok(mut slots) = results.lock() {
                    slots[job] = Some(outcome);
                }
                progress();
                if failed {
                    next.store(jobs, Ordering::Relaxed);
                }
            });
        }
    });
    let slots = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut reports = Vec::with_capacity(jobs);
    for slot in slots {
        match slot {
            Some(Ok(r)) => reports.push(r),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    // A job can only be missing after another one failed, which returned above.
    let mut pairs = Vec::with_capacity(traces.len());
    let mut it = reports.into_iter();
    while let (Some(mut a), Some(mut b)) = (it.next(), it.next()) {
        a.strategy = a_name.to_string();
        b.strategy = b_name.to_string();
        pairs.push(AbTrace { trace: a.trace.clone(), a, b });
    }
    let comparisons = compare(a_name, b_name, &pairs);
    Ok(AbResult {
        a: a_name.to_string(),
        b: b_name.to_string(),
        traces: pairs,
        comparisons,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_difference_and_interval_by_hand() {
        // diffs 2.1, 2.0, 1.9: mean 2, sd 0.1, se 0.1/sqrt(3), t(2) = 4.303
        let c = compare_one(
            "energy_kwh",
            "energy",
            "uses {p} less energy",
            "uses {p} more energy",
            "A",
            "B",
            &[10.0, 10.0, 10.0],
            &[12.1, 12.0, 11.9],
        );
        assert!((c.mean_diff - 2.0).abs() < 1e-12);
        let (lo, hi) = c.ci95.expect("ci");
        let half = 4.303 * 0.1 / 3f64.sqrt();
        assert!((lo - (2.0 - half)).abs() < 1e-9 && (hi - (2.0 + half)).abs() < 1e-9);
        assert!(c.significant);
        assert!((c.relative_pct.expect("rel") - 20.0).abs() < 1e-9);
        assert!(c.verdict.starts_with("B uses 20.0 % more energy than A"), "{}", c.verdict);
        assert!(c.verdict.ends_with("; significant"), "{}", c.verdict);
    }

    #[test]
    fn noisy_difference_is_not_significant_and_one_trace_has_no_interval() {
        let c = compare_one("slav", "SLAV", "has {p} fewer", "has {p} more", "A", "B", &[1.0, 1.0], &[0.5, 1.7]);
        assert!(!c.significant, "{c:?}");
        assert!(c.verdict.contains("more") && c.verdict.ends_with("not significant"), "{}", c.verdict);
        let one = compare_one("slav", "SLAV", "has {p} fewer", "has {p} more", "A", "B", &[2.0], &[1.0]);
        assert!(
            one.ci95.is_none() && one.verdict.contains("fewer") && one.verdict.contains("one trace"),
            "{}",
            one.verdict
        );
    }

    #[test]
    fn t_quantiles() {
        assert_eq!(t95(9), 2.262);
        assert!(t95(0).is_nan());
        assert_eq!(t95(1000), 1.96);
    }
}
