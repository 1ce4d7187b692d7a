//! Workload traces: per-VM CPU utilization over time.
//!
//! Sources:
//! - **PlanetLab** day directories (CloudSim's format): one file per VM, one integer CPU percentage
//!   per line, 288 lines at 300 s steps; file names may contain spaces. When the directory has a
//!   sibling `vm-order/<day>.tsv` (`index  type  mips  trace`), its order and VM types are used so
//!   runs compare with CloudSim 3.0.3, which took files in filesystem order; otherwise files are
//!   taken in byte order of their names.
//! - The **embedded** default day (`20110303`), compiled into the binary.
//! - **CSV** exported by our monitoring: header `vm,time_s,cpu_pct`, one row per sample.
//! - **JSON**: `{"interval_s": 300, "vms": [{"name": "…", "cpu_pct": [12, 15, …]}]}`.
//! - **Synthetic**, seeded: `synthetic:vms=200,samples=288,seed=7,mean=12,interval=300`.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::{Result, SimError};

mod load;

pub use load::{parse_percent_lines, resolve_path};

/// Name of the day compiled into the binary.
pub const EMBEDDED_DAY: &str = "20110303";
static EMBEDDED_DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/data/planetlab/20110303");
const EMBEDDED_ORDER: &str = include_str!("../../data/planetlab/vm-order/20110303.tsv");

/// Samples per PlanetLab trace file (one day at 300 s).
pub const PLANETLAB_SAMPLES: usize = 288;
/// Sampling interval of PlanetLab traces (s).
pub const PLANETLAB_INTERVAL_S: f64 = 300.0;

/// One VM's utilization series.
#[derive(Debug, Clone)]
pub struct VmTrace {
    /// Trace (file) name.
    pub name: String,
    /// CPU utilization as a fraction of the VM's own capacity, one sample per interval.
    pub util: Vec<f64>,
    /// VM type index from a vm-order file; `None` lets the scenario assign types.
    pub vm_type: Option<usize>,
}

/// A set of VM traces sharing one sampling interval (one PlanetLab day, one export …).
#[derive(Debug, Clone)]
pub struct Trace {
    /// Short name (the day, the file stem, `synthetic-<seed>`).
    pub name: String,
    /// Where it came from (path, `embedded:20110303`, the synthetic spec).
    pub source: String,
    /// Seconds between samples.
    pub interval_s: f64,
    pub vms: Vec<VmTrace>,
    /// How the VM order was decided (`vm-order file`, `file name`, `file`, `generated`).
    pub order: &'static str,
}

impl Trace {
    /// Samples per VM (all VMs have the same count).
    pub fn samples(&self) -> usize {
        self.vms.first().map_or(0, |v| v.util.len())
    }

    /// Utilization of `vm` at time `t` (s), as CloudSim's `UtilizationModelPlanetLabInMemory`
    /// computes it: the sample at multiples of the interval, linear between neighbours, the last
    /// sample held beyond the end.
    pub fn utilization(&self, vm: usize, t: f64) -> f64 {
        let data = &self.vms[vm].util;
        let n = data.len();
        if n == 0 {
            return 0.0;
        }
        let pos = t / self.interval_s;
        let k = pos.floor();
        if k < 0.0 {
            return data[0];
        }
        let k = k as usize;
        if k >= n - 1 {
            return data[n - 1];
        }
        if pos == k as f64 {
            return data[k];
        }
        let (u1, u2) = (data[k], data[k + 1]);
        u1 + (u2 - u1) / self.interval_s * (t - k as f64 * self.interval_s)
    }

    /// Loads a trace from a command-line spec: a PlanetLab day directory, a `.csv` or `.json`
    /// file, `synthetic:…`, or `embedded` for the day compiled into the binary.
    pub fn load(spec: &str) -> Result<Trace> {
        if spec == "embedded" || spec == format!("embedded:{EMBEDDED_DAY}") {
            return Trace::embedded();
        }
        if let Some(rest) = spec.strip_prefix("synthetic:") {
            return Trace::synthetic(&SyntheticSpec::parse(rest)?);
        }
        let path = resolve_path(Path::new(spec));
        if path.is_dir() {
            return load::planetlab_dir(&path);
        }
        if !path.exists() {
            return Err(SimError::TraceDirMissing(PathBuf::from(spec)));
        }
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => load::csv_file(&path),
            Some("json") => load::json_file(&path),
            _ => Err(SimError::TraceFormat {
                path,
                message: "expected a PlanetLab day directory, a .csv or a .json trace".into(),
            }),
        }
    }

    /// The PlanetLab day compiled into the binary, in CloudSim's VM order.
    pub fn embedded() -> Result<Trace> {
        let mut files: Vec<(String, &[u8])> = EMBEDDED_DIR
            .files()
            .filter_map(|f| Some((f.path().file_name()?.to_str()?.to_string(), f.contents())))
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let origin = PathBuf::from(format!("embedded:{EMBEDDED_DAY}"));
        let mut vms = Vec::with_capacity(files.len());
        for (name, bytes) in &files {
            let path = origin.join(name);
            let text = String::from_utf8_lossy(bytes);
            let util = parse_percent_lines(&path, &text, Some(PLANETLAB_SAMPLES))?;
            vms.push(VmTrace { name: name.clone(), util, vm_type: None });
        }
        let vms = load::apply_vm_order(vms, &origin.join("vm-order.tsv"), EMBEDDED_ORDER)?;
        Ok(Trace {
            name: EMBEDDED_DAY.to_string(),
            source: format!("embedded:{EMBEDDED_DAY}"),
            interval_s: PLANETLAB_INTERVAL_S,
            vms,
            order: "vm-order file",
        })
    }

    /// A seeded synthetic trace: each VM has a log-normal base level, a daily sine with a random
    /// phase and AR(1) noise, rounded to integer percentages like PlanetLab's.
    pub fn synthetic(spec: &SyntheticSpec) -> Result<Trace> {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let day_samples = (86_400.0 / spec.interval_s).max(1.0);
        let mut vms = Vec::with_capacity(spec.vms);
        for i in 0..spec.vms {
            let base = spec.mean * (0.9 * normal(&mut rng) - 0.405).exp();
            let amplitude = base * rng.random_range(0.0..0.8);
            let phase = rng.random_range(0.0..std::f64::consts::TAU);
            let mut noise = 0.0;
            let mut util = Vec::with_capacity(spec.samples);
            for s in 0..spec.samples {
                noise = 0.8 * noise + 0.6 * base.max(1.0) * normal(&mut rng);
                let daily = amplitude * (std::f64::consts::TAU * s as f64 / day_samples + phase).sin();
                let pct = (base + daily + noise).round().clamp(0.0, 99.0);
                util.push(pct / 100.0);
            }
            vms.push(VmTrace { name: format!("synthetic-{i:05}"), util, vm_type: None });
        }
        Ok(Trace {
            name: format!("synthetic-{}", spec.seed),
            source: format!("synthetic:{}", spec.canonical()),
            interval_s: spec.interval_s,
            vms,
            order: "generated",
        })
    }
}

/// Parameters of a synthetic trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub vms: usize,
    pub samples: usize,
    pub seed: u64,
    /// Mean CPU utilization (%) the base levels centre on.
    pub mean: f64,
    pub interval_s: f64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec { vms: 1000, samples: PLANETLAB_SAMPLES, seed: 1, mean: 12.0, interval_s: PLANETLAB_INTERVAL_S }
    }
}

impl SyntheticSpec {
    /// Parses `vms=200,samples=288,seed=7,mean=12,interval=300` (every key optional).
    pub fn parse(text: &str) -> Result<SyntheticSpec> {
        let err = |message: String| SimError::Synthetic { spec: text.to_string(), message };
        let mut spec = SyntheticSpec::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| err(format!("{part:?} is not key=value")))?;
            let num = value.trim().parse::<f64>().map_err(|_| err(format!("{key}: {value:?} is not a number")))?;
            if !num.is_finite() || num < 0.0 {
                return Err(err(format!("{key} must be a finite number ≥ 0")));
            }
            match key.trim() {
                "vms" => spec.vms = num as usize,
                "samples" => spec.samples = num as usize,
                "seed" => spec.seed = num as u64,
                "mean" => spec.mean = num,
                "interval" => spec.interval_s = num,
                other => return Err(err(format!("unknown key {other:?} (vms, samples, seed, mean, interval)"))),
            }
        }
        if spec.vms == 0 || spec.samples < 2 || spec.interval_s <= 0.0 || spec.mean > 100.0 {
            return Err(err("need vms ≥ 1, samples ≥ 2, interval > 0, mean ≤ 100".into()));
        }
        Ok(spec)
    }

    fn canonical(&self) -> String {
        format!(
            "vms={},samples={},seed={},mean={},interval={}",
            self.vms, self.samples, self.seed, self.mean, self.interval_s
        )
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests;
