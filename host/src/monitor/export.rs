//! Exporting monitored history as a simulator trace: every VM's `vcpu_util` series of one
//! cluster, averaged into fixed steps (300 s like PlanetLab by default), written as the CSV the
//! simulator reads (`vm,time_s,cpu_pct`). This closes the loop monitoring → simulation: a
//! strategy can be A/B-tested offline on the cluster's own last day.
//!
//! Every VM gets a value at every step: a step without samples (the VM was not running yet, a
//! lost report) takes the nearest known step of that VM, and the number of filled steps is
//! reported. VMs without any sample in the window are left out and counted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rrd::ConsolidationFn;

use super::metric::Metric;
use super::store::{fetch_file, StoreError, VMS_DIR};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no VM series under {0} (is this a collector data directory, and the right cluster?)")]
    NoVms(PathBuf),
    #[error("no VM has samples in the requested window")]
    Empty,
    #[error("cannot read {0}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("step must be between 15 s and 1 day, and the window hold at least 2 steps")]
    Window,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An exported trace: VM names (UUIDs) and their utilization (percent) per step.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedTrace {
    pub step_s: u64,
    /// Start of the first step (unix seconds).
    pub start: u64,
    pub vms: Vec<(String, Vec<f64>)>,
    /// Steps filled from a neighbouring step, over all VMs.
    pub filled: usize,
    /// VMs with no sample in the window (left out).
    pub skipped: usize,
}

impl ExportedTrace {
    /// The simulator's CSV format, times relative to the first step.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("vm,time_s,cpu_pct\n");
        for (name, values) in &self.vms {
            for (i, v) in values.iter().enumerate() {
                let _ = writeln!(out, "{name},{},{v:.3}", i as u64 * self.step_s);
            }
        }
        out
    }
}

/// Averages the `vcpu_util` of every VM of `cluster` under `data` into `step_s` steps covering
/// `[start, end)` (both aligned down to the step).
pub fn export_vm_trace(
    data: &Path,
    cluster: &str,
    start: u64,
    end: u64,
    step_s: u64,
) -> Result<ExportedTrace, ExportError> {
    if !(15..=86_400).contains(&step_s) {
        return Err(ExportError::Window);
    }
    let (start, end) = (start / step_s * step_s, end / step_s * step_s);
    let steps = usize::try_from(end.saturating_sub(start) / step_s).map_err(|_| ExportError::Window)?;
    if steps < 2 {
        return Err(ExportError::Window);
    }
    let dir = data.join("rrds").join(cluster).join(VMS_DIR);
    let entries = std::fs::read_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ExportError::NoVms(dir.clone()),
        _ => ExportError::Io(dir.clone(), e),
    })?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ExportError::Io(dir.clone(), e))?;
        let file = entry.path().join(format!("{}.rrd", Metric::VcpuUtil.name()));
        if file.is_file() {
            files.push((entry.file_name().to_string_lossy().into_owned(), file));
        }
    }
    if files.is_empty() {
        return Err(ExportError::NoVms(dir));
    }
    files.sort();
    let mut out = ExportedTrace { step_s, start, vms: Vec::new(), filled: 0, skipped: 0 };
    for (name, file) in files {
        // The finest archive librrd has for the window; averaged into steps here.
        let points = fetch_file(&file, ConsolidationFn::Avg, start, end, 1)?;
        let mut sum = vec![0.0f64; steps];
        let mut count = vec![0u32; steps];
        for (t, v) in points.points {
            // librrd stamps a point with the end of its interval.
            let Some(v) = v else { continue };
            let t = t.saturating_sub(1);
            if t < start || t >= end {
                continue;
            }
            let i = ((t - start) / step_s) as usize;
            sum[i] += v.clamp(0.0, 100.0);
            count[i] += 1;
        }
        let known: Vec<Option<f64>> = sum.iter().zip(&count).map(|(s, &c)| (c > 0).then(|| s / f64::from(c))).collect();
        let Some(values) = fill_nearest(&known) else {
            out.skipped += 1;
            continue;
        };
        out.filled += known.iter().filter(|v| v.is_none()).count();
        out.vms.push((name, values));
    }
    if out.vms.is_empty() {
        return Err(ExportError::Empty);
    }
    Ok(out)
}

/// Each missing value takes the nearest known one (the earlier on a tie); `None` if none is known.
fn fill_nearest(known: &[Option<f64>]) -> Option<Vec<f64>> {
    let idx: Vec<usize> = known.iter().enumerate().filter_map(|(i, v)| v.map(|_| i)).collect();
    if idx.is_empty() {
        return None;
    }
    let mut k = 0;
    Some(
        (0..known.len())
            .map(|i| {
                while k + 1 < idx.len() && idx[k + 1] <= i {
                    k += 1;
                }
                let mut best = idx[k];
                if let Some(&next) = idx.get(k + 1) {
                    if next.abs_diff(i) < best.abs_diff(i) {
                        best = next;
                    }
                }
                known[best].unwrap_or(0.0)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::store::{create_file, update_file};
    use super::*;

    #[test]
    fn real_rrd_files_export_to_a_trace_the_simulator_loads() {
        let dir = tempfile::tempdir().unwrap();
        let vms = dir.path().join("rrds").join("lab").join(VMS_DIR);
        let t0 = 1_700_000_000 / 300 * 300;
        let file = |uuid: &str| vms.join(uuid).join("vcpu_util.rrd");
        let (a, b, c) = (
            "00000000-0000-0000-0000-00000000000a",
            "00000000-0000-0000-0000-00000000000b",
            "00000000-0000-0000-0000-00000000000c",
        );
        for u in [a, b, c] {
            create_file(&file(u), Metric::VcpuUtil, 15, t0).unwrap();
        }
        // A at 20 % for 40 minutes; B at 50 % for 20 minutes, then 10 %; C never reports.
        let a_samples: Vec<(u64, Option<f64>)> = (1..=160).map(|i| (t0 + 15 * i, Some(20.0))).collect();
        let b_samples: Vec<(u64, Option<f64>)> =
            (1..=160).map(|i| (t0 + 15 * i, Some(if i <= 80 { 50.0 } else { 10.0 }))).collect();
        update_file(&file(a), &a_samples).unwrap();
        update_file(&file(b), &b_samples).unwrap();

        let t = export_vm_trace(dir.path(), "lab", t0, t0 + 2400, 300).unwrap();
        assert_eq!((t.vms.len(), t.skipped, t.filled), (2, 1, 0), "{t:?}");
        assert_eq!(t.vms[0].0, a);
        assert!(t.vms[0].1.iter().all(|v| (v - 20.0).abs() < 1e-6), "{:?}", t.vms[0].1);
        let expect_b = [50.0, 50.0, 50.0, 50.0, 10.0, 10.0, 10.0, 10.0];
        assert!(t.vms[1].1.iter().zip(expect_b).all(|(v, e)| (v - e).abs() < 1e-6), "{:?}", t.vms[1].1);

        // The CSV is a trace the simulator replays.
        let csv = dir.path().join("lab.csv");
        std::fs::write(&csv, t.to_csv()).unwrap();
        let trace = crate::sim::trace::Trace::load(csv.to_str().unwrap()).unwrap();
        assert_eq!((trace.vms.len(), trace.samples(), trace.interval_s), (2, 8, 300.0));
        assert!((trace.utilization(1, 0.0) - 0.5).abs() < 1e-9);

        // A window past the data: nothing to export, a clear error; a wrong cluster likewise.
        assert!(matches!(export_vm_trace(dir.path(), "lab", t0 + 86_400, t0 + 90_000, 300), Err(ExportError::Empty)));
        assert!(matches!(export_vm_trace(dir.path(), "nope", t0, t0 + 2400, 300), Err(ExportError::NoVms(_))));
        assert!(matches!(export_vm_trace(dir.path(), "lab", t0, t0 + 300, 300), Err(ExportError::Window)));
    }

    #[test]
    fn gaps_take_the_nearest_known_step() {
        let k = [None, Some(1.0), None, None, Some(4.0), None];
        assert_eq!(fill_nearest(&k), Some(vec![1.0, 1.0, 1.0, 4.0, 4.0, 4.0]));
        assert_eq!(fill_nearest(&[None, None]), None);
        assert_eq!(fill_nearest(&[Some(2.0)]), Some(vec![2.0]));
    }
}
