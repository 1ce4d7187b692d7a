//! Reading trace files from disk, with errors that name the file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Trace, VmTrace, PLANETLAB_INTERVAL_S, PLANETLAB_SAMPLES};
use crate::sim::error::{Result, SimError};

/// Resolves a relative path: as given (from the working directory) if it exists, else relative
/// to the repository this binary was built from, else relative to any ancestor of the working
/// directory. `../shared/data/planetlab/<day>` thus works from the repository and from its
/// sub-crates. Returns the path unchanged when nothing matches.
pub fn resolve_path(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    let mut candidates: Vec<PathBuf> = repo.into_iter().collect();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().skip(1).map(Path::to_path_buf));
    }
    candidates.into_iter().map(|base| base.join(path)).find(|p| p.exists()).unwrap_or_else(|| path.to_path_buf())
}

/// Parses one CPU percentage per line (0–100, integer or decimal). Trailing blank lines are
/// ignored; anything else that is not a number is an error naming `path` and the line.
pub fn parse_percent_lines(path: &Path, text: &str, expected: Option<usize>) -> Result<Vec<f64>> {
    let body = text.trim_end();
    if body.is_empty() {
        return Err(SimError::TraceEmpty(path.to_path_buf()));
    }
    let mut out = Vec::with_capacity(expected.unwrap_or(PLANETLAB_SAMPLES));
    for (i, raw) in body.lines().enumerate() {
        let line = i + 1;
        let value = parse_percent(path, line, raw.trim())?;
        // CloudSim: Integer.valueOf(line) / 100.0
        out.push(value / 100.0);
    }
    if let Some(expected) = expected {
        if out.len() != expected {
            return Err(SimError::TraceLength { path: path.to_path_buf(), expected, found: out.len() });
        }
    }
    Ok(out)
}

fn parse_percent(path: &Path, line: usize, text: &str) -> Result<f64> {
    let value = text.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| SimError::TraceNotNumeric {
        path: path.to_path_buf(),
        line,
        text: text.chars().take(40).collect(),
    })?;
    if !(0.0..=100.0).contains(&value) {
        return Err(SimError::TraceOutOfRange { path: path.to_path_buf(), line, value });
    }
    Ok(value)
}

/// A PlanetLab day directory.
pub(super) fn planetlab_dir(dir: &Path) -> Result<Trace> {
    let io = |source| SimError::Io { path: dir.to_path_buf(), source };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let is_file = entry.file_type().map_err(io)?.is_file();
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_file && !name.starts_with('.') {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(SimError::NoTraces(dir.to_path_buf()));
    }
    names.sort();
    let mut vms = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|source| SimError::Io { path: path.clone(), source })?;
        let util = parse_percent_lines(&path, &String::from_utf8_lossy(&bytes), Some(PLANETLAB_SAMPLES))?;
        vms.push(VmTrace { name, util, vm_type: None });
    }
    let day = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "trace".into());
    let order_path = dir.parent().map(|p| p.join("vm-order").join(format!("{day}.tsv")));
    let (vms, order) = match order_path.filter(|p| p.is_file()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| SimError::Io { path: path.clone(), source })?;
            (apply_vm_order(vms, &path, &text)?, "vm-order file")
        }
        None => (vms, "file name"),
    };
    Ok(Trace { name: day, source: dir.display().to_string(), interval_s: PLANETLAB_INTERVAL_S, vms, order })
}

/// Reorders `vms` as a vm-order file (`index  type  mips  trace`, tab-separated) lists them and
/// takes their types from it. Every trace must be listed exactly once.
pub(super) fn apply_vm_order(vms: Vec<VmTrace>, path: &Path, text: &str) -> Result<Vec<VmTrace>> {
    let err = |message: String| SimError::VmOrder { path: path.to_path_buf(), message };
    let mut by_name: HashMap<String, VmTrace> = vms.into_iter().map(|v| (v.name.clone(), v)).collect();
    let total = by_name.len();
    let mut out = Vec::with_capacity(total);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        if fields.len() != 4 {
            return Err(err(format!("line {}: expected `index<TAB>type<TAB>mips<TAB>trace`", i + 1)));
        }
        let vm_type = fields[1].trim().parse::<usize>().map_err(|_| err(format!("line {}: bad type", i + 1)))?;
        let name = fields[3];
        let mut vm = by_name
            .remove(name)
            .ok_or_else(|| err(format!("line {}: trace {name:?} is not in the day directory", i + 1)))?;
        vm.vm_type = Some(vm_type);
        out.push(vm);
    }
    if out.len() != total {
        return Err(err(format!("lists {} of the {total} traces", out.len())));
    }
    Ok(out)
}

/// CSV exported by our monitoring: `vm,time_s,cpu_pct`, samples of a VM at consecutive steps.
pub(super) fn csv_file(path: &Path) -> Result<Trace> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Io { path: path.to_path_buf(), source })?;
    let fmt = |line: usize, message: &str| SimError::TraceFormat {
        path: path.to_path_buf(),
        message: format!("line {line}: {message}"),
    };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| SimError::TraceEmpty(path.to_path_buf()))?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    if cols != ["vm", "time_s", "cpu_pct"] {
        return Err(fmt(1, "header must be `vm,time_s,cpu_pct`"));
    }
    let mut order: Vec<String> = Vec::new();
    let mut series: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for (i, line) in lines {
        let n = i + 1;
        let fields: Vec<&str> = line.rsplitn(3, ',').collect();
        if fields.len() != 3 {
            return Err(fmt(n, "expected 3 fields"));
        }
        let (vm, time, pct) = (fields[2].trim(), fields[1].trim(), fields[0].trim());
        let time =
            time.parse::<f64>().ok().filter(|t| t.is_finite() && *t >= 0.0).ok_or_else(|| {
                SimError::TraceNotNumeric { path: path.to_path_buf(), line: n, text: time.to_string() }
            })?;
        let pct = parse_percent(path, n, pct)?;
        if !series.contains_key(vm) {
            order.push(vm.to_string());
        }
        series.entry(vm.to_string()).or_default().push((time, pct / 100.0));
    }
    if order.is_empty() {
        return Err(SimError::TraceEmpty(path.to_path_buf()));
    }
    let mut interval = None;
    let mut vms = Vec::with_capacity(order.len());
    for name in order {
        let mut samples = series.remove(&name).unwrap_or_default();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in samples.windows(2) {
            let step = w[1].0 - w[0].0;
            match interval {
                None if step > 0.0 => interval = Some(step),
                Some(i) if (step - i).abs() <= 1e-6 * i => {}
                _ => {
                    return Err(SimError::TraceFormat {
                        path: path.to_path_buf(),
                        message: format!("VM {name:?}: samples are not evenly spaced (step {step} s)"),
                    })
                }
            }
        }
        vms.push(VmTrace { name, util: samples.into_iter().map(|s| s.1).collect(), vm_type: None });
    }
    finish_file_trace(path, vms, interval)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTrace {
    interval_s: f64,
    vms: Vec<JsonVm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonVm {
    name: String,
    cpu_pct: Vec<f64>,
}

/// JSON: `{"interval_s": 300, "vms": [{"name": "…", "cpu_pct": […]}]}`.
pub(super) fn json_file(path: &Path) -> Result<Trace> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Io { path: path.to_path_buf(), source })?;
    if text.trim().is_empty() {
        return Err(SimError::TraceEmpty(path.to_path_buf()));
    }
    let parsed: JsonTrace = serde_json::from_str(&text)
        .map_err(|e| SimError::TraceFormat { path: path.to_path_buf(), message: format!("line {}: {e}", e.line()) })?;
    if !(parsed.interval_s.is_finite() && parsed.interval_s > 0.0) {
        return Err(SimError::TraceFormat { path: path.to_path_buf(), message: "interval_s must be > 0".into() });
    }
    let mut vms = Vec::with_capacity(parsed.vms.len());
    for vm in parsed.vms {
        let mut util = Vec::with_capacity(vm.cpu_pct.len());
        for (i, v) in vm.cpu_pct.iter().enumerate() {
            if !(0.0..=100.0).contains(v) {
                return Err(SimError::TraceFormat {
                    path: path.to_path_buf(),
                    message: format!("VM {:?} sample {i}: CPU utilization {v} is outside 0..=100 %", vm.name),
                });
            }
            util.push(v / 100.0);
        }
        vms.push(VmTrace { name: vm.name, util, vm_type: None });
    }
    finish_file_trace(path, vms, Some(parsed.interval_s))
}

fn finish_file_trace(path: &Path, vms: Vec<VmTrace>, interval: Option<f64>) -> Result<Trace> {
    let Some(first) = vms.first() else {
        return Err(SimError::TraceEmpty(path.to_path_buf()));
    };
    let expected = first.util.len();
    if let Some(bad) = vms.iter().find(|v| v.util.len() != expected || v.util.len() < 2) {
        return Err(SimError::TraceFormat {
            path: path.to_path_buf(),
            message: format!(
                "VM {:?} has {} samples, expected {expected} like VM {:?} (and at least 2)",
                bad.name,
                bad.util.len(),
                first.name
            ),
        });
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "trace".into());
    Ok(Trace {
        name,
        source: path.display().to_string(),
        interval_s: interval.unwrap_or(PLANETLAB_INTERVAL_S),
        vms,
        order: "file",
    })
}
