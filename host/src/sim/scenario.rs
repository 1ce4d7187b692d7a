//! The simulated data centre: hosts, VM types, timing and migration model, from a TOML file.
//!
//! [`Scenario::default`] is the reference setup of Beloglazov & Buyya (CCPE 2012) as CloudSim
//! 3.0.3's PlanetLab examples encode it (see `docs/simulation.md` for every constant).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{Result, SimError};
use super::power::PowerCurve;
use crate::scheduler::OperatorRules;

/// Most hosts a scenario may have.
pub const MAX_HOSTS: usize = 1_000_000;
/// Most scheduling steps a run may have.
pub const MAX_STEPS: usize = 1_000_000;

/// A whole scenario. Every field has the CloudSim reference value as its default, so a file
/// only lists what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Seconds between scheduling cycles (and trace samples are read at this step).
    pub interval_s: f64,
    /// Simulated time (s); 0 = the trace's length (samples × its interval).
    pub duration_s: f64,
    /// Scheduling steps fall this long after each multiple of `interval_s` (s; 0 ≤ x <
    /// interval), with the demand interpolated there. 0 (default); CloudSim 3.0.3's events fall
    /// at 300.1, 600.1, … s (its `event-offset`: cloudlets are submitted at 0.1 s).
    pub step_offset_s: f64,
    /// Samples of utilization history the policies see per VM.
    pub window: usize,
    pub hosts: Hosts,
    pub vms: Vms,
    pub migration: MigrationModel,
    /// How the run's metrics are counted where CloudSim 3.0.3 counts differently.
    pub metrics: MetricsModel,
    /// Operator rules (host and VM groups, pinned VMs, maintenance, …) every strategy run on
    /// this scenario obeys, in addition to the strategy's own (`[operator_rules]`).
    #[serde(skip_serializing_if = "OperatorRules::is_empty")]
    pub operator_rules: OperatorRules,
    /// `none` (our model, the real scheduler and policies) or `cloudsim-3.0.3` (CloudSim's
    /// program, event by event, for the stock experiments; see `sim::cloudsim`).
    pub compat: Compat,
    /// Seed of the `rs` selection under `compat = "cloudsim-3.0.3"` (CloudSim's is unseeded).
    pub compat_seed: u64,
}

/// Which simulator semantics a run follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compat {
    /// Our model: CloudSim's semantics without its quirks, the real scheduler and policies.
    #[default]
    #[serde(rename = "none")]
    None,
    /// CloudSim 3.0.3's PlanetLab experiments reproduced event by event.
    #[serde(rename = "cloudsim-3.0.3")]
    Cloudsim303,
}

impl Compat {
    /// `none` / `cloudsim-3.0.3` (also `cloudsim`).
    pub fn parse(text: &str) -> Option<Compat> {
        match text.to_ascii_lowercase().as_str() {
            "none" | "amvm" | "default" => Some(Compat::None),
            "cloudsim-3.0.3" | "cloudsim" | "cloudsim303" => Some(Compat::Cloudsim303),
            _ => None,
        }
    }
}

/// The host fleet: `count` hosts, host `i` of type `types[i % types.len()]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hosts {
    pub count: usize,
    pub types: Vec<HostType>,
}

/// One host model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostType {
    pub name: String,
    pub cores: u32,
    pub mips_per_core: f64,
    pub ram_mb: f64,
    pub bandwidth_mbit: f64,
    /// A model of the embedded SPECpower table (`HpProLiantMl110G4Xeon3040`, …) …
    #[serde(default)]
    pub power_model: Option<String>,
    /// … or eleven points of one's own: watts at 0 %, 10 %, …, 100 % CPU.
    #[serde(default)]
    pub power_w: Option<Vec<f64>>,
}

/// VM types and how traces map to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Vms {
    pub types: Vec<VmType>,
    /// `quarters`: VM `i` of `n` gets type `i / ceil(n / types)` (CloudSim); `round-robin`:
    /// `i % types`. A vm-order file's types win over both.
    pub assignment: Assignment,
    /// Where VMs start.
    pub initial_placement: InitialPlacement,
}

/// One VM model (1 vCPU as in the reference setup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmType {
    pub mips: f64,
    pub ram_mb: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    Quarters,
    RoundRobin,
}

/// Initial VM placement, done by the world before the first cycle (CloudSim does it at VM
/// creation, before any optimization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialPlacement {
    /// `first-fit` for NPA/DVFS, `power-aware` for consolidation strategies, as CloudSim does.
    Auto,
    /// CloudSim's `PowerVmAllocationPolicySimple`: first host with room for the full VM MIPS.
    FirstFit,
    /// CloudSim's PABFD at VM creation: the host whose power rises least over its idle power
    /// with the VM at full MIPS (so empty hosts win and the first cycle consolidates).
    PowerAware,
}

/// Live migration: time = RAM ÷ (destination link × `bandwidth_share`); while it runs the source
/// gives the VM `1 − degradation` of its demand and the destination reserves `destination_share`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationModel {
    pub bandwidth_share: f64,
    pub degradation: f64,
    pub destination_share: f64,
    /// Whether host memory limits migrations. CloudSim 3.0.3's PlanetLab cloudlets request no
    /// RAM once a VM runs (`UtilizationModelNull`), so RAM binds only at creation: `false`
    /// reproduces that (the snapshot then reports effectively unlimited host memory); `true`
    /// makes every destination hold the VM's full RAM.
    pub check_memory: bool,
    /// Mode accounting: the plan's mode of each migration (pre, post, hybrid) sets its
    /// duration and the VM's loss while it runs, from the paper's equations 1–7 (amvm-model):
    /// pre-copy's rounds, the downtime, post-copy's page faults. `false`: every migration takes
    /// RAM ÷ bandwidth and loses `degradation`, whatever its mode (CloudSim's model).
    pub mode_accounting: bool,
    /// The memory a VM dirties per second at 100 % CPU (MB/s), scaled by its utilization; the
    /// snapshot reports it as the VM's measured dirty rate. 0 (the default): the PlanetLab
    /// traces carry no memory activity, and pre-copy converges in its first round.
    pub dirty_mbps_at_full_cpu: f64,
}

/// Metric accounting choices of the default model, each named after the CloudSim 3.0.3 quirk it
/// switches on (docs/simulation.md, "CloudSim's quirks"). `compat = "cloudsim-3.0.3"` follows
/// CloudSim whatever these say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsModel {
    /// `last-vm-left` (default): a host shutdown is a host whose last VM has left.
    /// `active-transitions` (CloudSim's `shutdown-from-active`): every active → inactive change
    /// of a host's history counts, and every history starts "active", so a host idle at the
    /// first step counts once.
    pub shutdowns: ShutdownCount,
    /// `true` (default): the run is accounted to the trace's end. `false` (CloudSim's
    /// `npa-287-intervals`, part of `event-offset`): accounting stops at the last scheduling
    /// step, where only the migrations still in flight complete; NPA then bills 287 of a day's
    /// 288 intervals.
    pub final_interval: bool,
}

/// See [`MetricsModel::shutdowns`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownCount {
    #[default]
    LastVmLeft,
    ActiveTransitions,
}

impl Default for MetricsModel {
    fn default() -> Self {
        MetricsModel { shutdowns: ShutdownCount::LastVmLeft, final_interval: true }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            interval_s: 300.0,
            duration_s: 0.0,
            step_offset_s: 0.0,
            window: 30,
            hosts: Hosts::default(),
            vms: Vms::default(),
            migration: MigrationModel::default(),
            metrics: MetricsModel::default(),
            operator_rules: OperatorRules::default(),
            compat: Compat::None,
            compat_seed: 1,
        }
    }
}

impl Default for Hosts {
    fn default() -> Self {
        let host = |name: &str, mips: f64, model: &str| HostType {
            name: name.into(),
            cores: 2,
            mips_per_core: mips,
            ram_mb: 4096.0,
            bandwidth_mbit: 1000.0,
            power_model: Some(model.into()),
            power_w: None,
        };
        Hosts {
            count: 800,
            types: vec![
                host("HP ProLiant ML110 G4", 1860.0, "HpProLiantMl110G4Xeon3040"),
                host("HP ProLiant ML110 G5", 2660.0, "HpProLiantMl110G5Xeon3075"),
            ],
        }
    }
}

impl Default for Vms {
    fn default() -> Self {
        let vm = |mips, ram_mb| VmType { mips, ram_mb };
        Vms {
            types: vec![vm(2500.0, 870.0), vm(2000.0, 1740.0), vm(1000.0, 1740.0), vm(500.0, 613.0)],
            assignment: Assignment::Quarters,
            initial_placement: InitialPlacement::Auto,
        }
    }
}

impl Default for MigrationModel {
    fn default() -> Self {
        MigrationModel {
            bandwidth_share: 0.5,
            degradation: 0.1,
            destination_share: 0.1,
            check_memory: false,
            mode_accounting: true,
            dirty_mbps_at_full_cpu: 0.0,
        }
    }
}

impl HostType {
    /// Total CPU capacity (MIPS).
    pub fn capacity(&self) -> f64 {
        f64::from(self.cores) * self.mips_per_core
    }

    /// Migration speed into this host (MB/s).
    pub fn migration_mb_per_s(&self, share: f64) -> f64 {
        self.bandwidth_mbit / 8.0 * share
    }

    /// The power curve (validated by [`Scenario::validate`]).
    pub fn curve(&self) -> Option<PowerCurve> {
        if let Some(points) = &self.power_w {
            let arr: [f64; 11] = points.as_slice().try_into().ok()?;
            return Some(PowerCurve(arr));
        }
        PowerCurve::specpower(self.power_model.as_deref()?)
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io { path: path.to_path_buf(), source })?;
        let scenario: Scenario =
            toml::from_str(&text).map_err(|source| SimError::ScenarioParse { path: path.to_path_buf(), source })?;
        scenario.validate(path)?;
        Ok(scenario)
    }

    /// Checks every value; `origin` names the file in errors.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let err = |message: String| SimError::Scenario { path: origin.to_path_buf(), message };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.interval_s) {
            return Err(err("interval_s must be > 0".into()));
        }
        if !(self.step_offset_s.is_finite() && (0.0..self.interval_s).contains(&self.step_offset_s)) {
            return Err(err(format!("step_offset_s must be in [0, interval_s = {}) s", self.interval_s)));
        }
        if !(self.duration_s.is_finite() && self.duration_s >= 0.0) {
            return Err(err("duration_s must be ≥ 0 (0 = the trace's length)".into()));
        }
        if self.window == 0 || self.window > 10_000 {
            return Err(err("window must be 1..=10000 samples".into()));
        }
        if self.hosts.count > MAX_HOSTS {
            return Err(err(format!("hosts.count {} is above the simulator's limit of {MAX_HOSTS}", self.hosts.count)));
        }
        if self.duration_s / self.interval_s > MAX_STEPS as f64 {
            return Err(err(format!("duration_s / interval_s is above the simulator's limit of {MAX_STEPS} steps")));
        }
        if self.hosts.count == 0 {
            return Err(err("hosts.count is 0: a scenario needs at least one host".into()));
        }
        if self.hosts.types.is_empty() {
            return Err(err("hosts.types is empty".into()));
        }
        self.operator_rules.validate().map_err(|e| err(e.to_string()))?;
        if self.compat == Compat::Cloudsim303 && !self.operator_rules.is_empty() {
            return Err(err(
                "operator_rules cannot be combined with compat = \"cloudsim-3.0.3\": that mode replays CloudSim's own \
                 allocation loop, which has no rules (use the default model)"
                    .into(),
            ));
        }
        for t in &self.hosts.types {
            if t.cores == 0 || !positive(t.mips_per_core) || !positive(t.ram_mb) || !positive(t.bandwidth_mbit) {
                return Err(err(format!(
                    "host type {:?}: cores, mips_per_core, ram_mb, bandwidth_mbit must be > 0",
                    t.name
                )));
            }
            match (&t.power_model, &t.power_w) {
                (Some(_), Some(_)) => {
                    return Err(err(format!("host type {:?}: give power_model or power_w, not both", t.name)))
                }
                (None, None) => return Err(err(format!("host type {:?}: needs power_model or power_w", t.name))),
                (Some(m), None) if PowerCurve::specpower(m).is_none() => {
                    let known: Vec<String> = super::power::specpower_models().into_iter().map(|m| m.0).collect();
                    return Err(err(format!(
                        "host type {:?}: unknown power_model {m:?} (known: {})",
                        t.name,
                        known.join(", ")
                    )));
                }
                (None, Some(w)) if w.len() != 11 || w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) => {
                    return Err(err(format!("host type {:?}: power_w needs 11 finite watt values ≥ 0", t.name)))
                }
                _ => {}
            }
        }
        if self.vms.types.is_empty() {
            return Err(err("vms.types is empty".into()));
        }
        if self.vms.types.iter().any(|t| !positive(t.mips) || !positive(t.ram_mb)) {
            return Err(err("every VM type needs mips > 0 and ram_mb > 0".into()));
        }
        let m = &self.migration;
        if !(positive(m.bandwidth_share) && m.bandwidth_share <= 1.0) {
            return Err(err("migration.bandwidth_share must be in (0, 1]".into()));
        }
        if !(0.0..1.0).contains(&m.degradation) || !(0.0..=1.0).contains(&m.destination_share) {
            return Err(err("migration.degradation must be in [0, 1) and destination_share in [0, 1]".into()));
        }
        if !(m.dirty_mbps_at_full_cpu.is_finite() && m.dirty_mbps_at_full_cpu >= 0.0) {
            return Err(err("migration.dirty_mbps_at_full_cpu must be a finite number ≥ 0 (MB/s)".into()));
        }
        Ok(())
    }

    /// The host type of host `i`.
    pub fn host_type(&self, i: usize) -> &HostType {
        &self.hosts.types[i % self.hosts.types.len()]
    }

    /// The VM type of VM `i` of `n` (when the trace does not fix it).
    pub fn vm_type_index(&self, i: usize, n: usize) -> usize {
        let k = self.vms.types.len();
        match self.vms.assignment {
            Assignment::Quarters => (i / n.div_ceil(k).max(1)).min(k - 1),
            Assignment::RoundRobin => i % k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_cloudsim_reference() {
        let s = Scenario::default();
        s.validate(Path::new("default")).expect("valid");
        assert_eq!(s.hosts.count, 800);
        assert_eq!(s.host_type(0).capacity(), 3720.0);
        assert_eq!(s.host_type(1).capacity(), 5320.0);
        assert_eq!(s.host_type(1).migration_mb_per_s(s.migration.bandwidth_share), 62.5);
        // 1052 VMs: ceil(1052/4) = 263 per type
        assert_eq!(s.vm_type_index(262, 1052), 0);
        assert_eq!(s.vm_type_index(263, 1052), 1);
        assert_eq!(s.vm_type_index(1051, 1052), 3);
    }

    #[test]
    fn partial_file_overrides_defaults_and_bad_values_are_named() {
        let s: Scenario = toml::from_str("[hosts]\ncount = 3\n").expect("parse");
        assert_eq!(s.hosts.count, 3);
        assert_eq!(s.hosts.types.len(), 2);
        let zero: Scenario = toml::from_str("[hosts]\ncount = 0\n").expect("parse");
        let e = zero.validate(Path::new("x.toml")).expect_err("zero hosts");
        assert!(e.to_string().contains("x.toml") && e.to_string().contains("hosts.count"), "{e}");
        assert!(toml::from_str::<Scenario>("bogus = 1\n").is_err());
    }
}
