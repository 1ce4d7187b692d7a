//! A strategy: one policy module per kind, their parameter values, the fallbacks used when a
//! module fails, and the host-side rules every strategy gets. Built-in strategies are named as in
//! the literature (`thr-mmt-0.8`, `lr-mc-1.2`, …); others come from TOML files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{ParamValue, ParamValues};

use super::rules::OperatorRules;

/// Where a policy module comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyChoice {
    /// A built-in name (`lr`, `mmt`, `pabfd`, …) or a path to a `.wasm` component (relative
    /// paths are resolved against the strategy file's folder).
    pub module: String,
    /// Parameter values; unspecified parameters take the module's declared defaults.
    #[serde(default)]
    pub params: ParamValues,
}

impl PolicyChoice {
    pub fn builtin(name: &str) -> Self {
        PolicyChoice { module: name.to_string(), params: ParamValues::new() }
    }

    pub fn with(mut self, name: &str, value: ParamValue) -> Self {
        self.params.insert(name.to_string(), value);
        self
    }

    /// Whether `module` names a file rather than a built-in.
    pub fn is_file(&self) -> bool {
        self.module.ends_with(".wasm") || self.module.contains('/')
    }
}

/// The built-ins a strategy falls back to when one of its modules fails in a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallbacks {
    pub threshold: PolicyChoice,
    pub selection: PolicyChoice,
    pub placement: PolicyChoice,
    #[serde(default = "default_migration_mode")]
    pub migration_mode: PolicyChoice,
}

impl Default for Fallbacks {
    fn default() -> Self {
        Fallbacks {
            threshold: PolicyChoice::builtin("thr"),
            selection: PolicyChoice::builtin("mmt"),
            placement: PolicyChoice::builtin("pabfd"),
            migration_mode: default_migration_mode(),
        }
    }
}

/// The built-in `model` policy: the paper's equations 1–7 pick each move's mechanism.
pub fn default_migration_mode() -> PolicyChoice {
    PolicyChoice::builtin("model")
}

/// Host-side rules every strategy gets (paper 3.3.1 and operational limits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// A host must be classified overloaded (or underloaded) in this many consecutive cycles
    /// before the scheduler acts on it (1 = act at once).
    pub persistence: u32,
    /// At most this many migrations in or out of one host at a time, counting those still
    /// running (0 = unlimited).
    pub max_migrations_per_host: u32,
    /// A VM that was moved cannot be moved again for this many cycles (0 = no cool-down).
    pub vm_cooldown_cycles: u32,
    /// Seed given to randomized policies.
    pub seed: u64,
    /// Policy time a cycle may spend in this strategy's modules before it falls back to the
    /// fallbacks for the rest of the cycle (default: the runtime's, 1 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle_budget_ms: Option<u64>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { persistence: 1, max_migrations_per_host: 0, vm_cooldown_cycles: 0, seed: 42, cycle_budget_ms: None }
    }
}

/// A named, versioned set of policies and rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    pub threshold: PolicyChoice,
    pub selection: PolicyChoice,
    pub placement: PolicyChoice,
    /// The mechanism of each migration (pre, post or hybrid): a `migration-mode` policy;
    /// the built-in `model` unless the strategy names another.
    #[serde(default = "default_migration_mode")]
    pub migration_mode: PolicyChoice,
    #[serde(default)]
    pub fallback: Fallbacks,
    #[serde(default)]
    pub rules: Rules,
    /// Operator rules: affinity groups, VM-host rules, pinned VMs, maintenance, reserve, …
    /// (`rules.rs`). A scenario's rules are added to these in the simulator.
    #[serde(default, skip_serializing_if = "OperatorRules::is_empty")]
    pub operator_rules: OperatorRules,
}

fn default_version() -> String {
    "1".into()
}

/// Why a strategy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error("unknown strategy {name:?}: {reason}. Built-in strategies are named <threshold>-<selection>-<parameter>[-<placement>], e.g. {examples}; or give a strategy TOML file")]
    Unknown { name: String, reason: String, examples: String },
    #[error("cannot read strategy file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid strategy file {path}: {message}")]
    Parse { path: String, message: String },
}

const THRESHOLDS: &[&str] = &["thr", "mad", "iqr", "lr", "lrr", "mhod", "otf"];
const SELECTIONS: &[&str] = &["mmt", "mc", "rs", "mu"];
const PLACEMENTS: &[&str] = &["pabfd", "spread", "pack"];

impl Strategy {
    /// The built-in strategies of Beloglazov & Buyya (CCPE 2012), with their usual parameters.
    pub fn builtin_names() -> Vec<String> {
        let mut names = vec!["thr-mmt-0.8".to_string(), "iqr-mmt-1.5".into(), "mad-mmt-2.5".into()];
        names.extend(["lr-mmt-1.2", "lrr-mmt-1.2", "lr-mc-1.2", "lr-rs-1.2", "lr-mu-1.2"].map(String::from));
        names.extend(
            ["thr-mc-0.8", "thr-rs-0.8", "thr-mu-0.8", "iqr-mc-1.5", "mad-mc-2.5", "lrr-mc-1.2"].map(String::from),
        );
        // Neat's detectors (Beloglazov & Buyya, TPDS 2013) with their defaults: the parameter
        // is the overload time fraction.
        names.extend(["mhod-mmt-0.1", "otf-mmt-0.2"].map(String::from));
        names
    }

    /// Parses a built-in strategy name: `<threshold>-<selection>-<parameter>[-<placement>]`, where
    /// the parameter is THR's upper threshold or the adaptive policies' safety parameter.
    pub fn builtin(name: &str) -> Result<Strategy, StrategyError> {
        let unknown = |reason: String| StrategyError::Unknown {
            name: name.to_string(),
            reason,
            examples: "thr-mmt-0.8, iqr-mmt-1.5, mad-mmt-2.5, lr-mmt-1.2, lrr-mc-1.2, thr-mmt-0.8-spread".into(),
        };
        let parts: Vec<&str> = name.split('-').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(unknown("expected three or four parts separated by '-'".into()));
        }
        let (threshold, selection, param) = (parts[0], parts[1], parts[2]);
        let placement = parts.get(3).copied().unwrap_or("pabfd");
        if !THRESHOLDS.contains(&threshold) {
            return Err(unknown(format!("{threshold:?} is not a threshold policy ({})", THRESHOLDS.join(", "))));
        }
        if !SELECTIONS.contains(&selection) {
            return Err(unknown(format!("{selection:?} is not a selection policy ({})", SELECTIONS.join(", "))));
        }
        if !PLACEMENTS.contains(&placement) {
            return Err(unknown(format!("{placement:?} is not a placement policy ({})", PLACEMENTS.join(", "))));
        }
        let value: f64 = param.parse().map_err(|_| unknown(format!("{param:?} is not a number")))?;
        let key = match threshold {
            "thr" => "upper",
            "mhod" | "otf" => "otf",
            _ => "safety",
        };
        // `lower = 1.0`: every non-overloaded host is a candidate for evacuation, least utilized
        // first — Beloglazov & Buyya's underload rule, so results compare with CloudSim's.
        Ok(Strategy {
            name: name.to_string(),
            version: default_version(),
            threshold: PolicyChoice::builtin(threshold)
                .with(key, ParamValue::Float(value))
                .with("lower", ParamValue::Float(1.0)),
            selection: PolicyChoice::builtin(selection),
            placement: PolicyChoice::builtin(placement),
            migration_mode: default_migration_mode(),
            fallback: Fallbacks::default(),
            rules: Rules::default(),
            operator_rules: OperatorRules::default(),
        })
    }

    /// Reads a strategy TOML file. Relative module paths are resolved against its folder.
    pub fn from_toml_file(path: &Path) -> Result<Strategy, StrategyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| StrategyError::Io { path: path.display().to_string(), source })?;
        let mut s = Strategy::from_toml(&text)
            .map_err(|message| StrategyError::Parse { path: path.display().to_string(), message })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for choice in [&mut s.threshold, &mut s.selection, &mut s.placement, &mut s.migration_mode] {
            if choice.is_file() && Path::new(&choice.module).is_relative() {
                choice.module = base.join(&choice.module).display().to_string();
            }
        }
        Ok(s)
    }

    /// Parses strategy TOML.
    pub fn from_toml(text: &str) -> Result<Strategy, String> {
        let s: Strategy = toml::from_str(text).map_err(|e| e.to_string())?;
        s.operator_rules.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// The strategy as TOML (what `from_toml` reads).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render strategy: {e}\n"))
    }

    /// Overrides one setting: `threshold.NAME=VALUE`, `selection.NAME=VALUE`,
    /// `placement.NAME=VALUE`, `migration_mode.NAME=VALUE` (module parameters; numbers,
    /// `true`/`false` or text; `migration_mode.module=NAME` picks the module) or
    /// `rules.persistence|max_migrations_per_host|vm_cooldown_cycles|seed=N`.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (path, value) =
            assignment.split_once('=').ok_or_else(|| format!("{assignment:?}: expected KIND.NAME=VALUE"))?;
        let (kind, name) = path.split_once('.').ok_or_else(|| format!("{path:?}: expected KIND.NAME"))?;
        let parsed = if let Ok(i) = value.parse::<i64>() {
            ParamValue::Integer(i)
        } else if let Ok(f) = value.parse::<f64>() {
            ParamValue::Float(f)
        } else if let Ok(b) = value.parse::<bool>() {
            ParamValue::Flag(b)
        } else {
            ParamValue::Text(value.to_string())
        };
        let choice = match kind {
            "threshold" => &mut self.threshold,
            "selection" => &mut self.selection,
            "placement" => &mut self.placement,
            "migration_mode" | "migration-mode" if name == "module" => {
                self.migration_mode = PolicyChoice::builtin(value);
                return Ok(());
            }
            "migration_mode" | "migration-mode" => &mut self.migration_mode,
            "rules" => {
                let n: u64 = value.parse().map_err(|_| format!("rules.{name}: {value:?} is not a whole number"))?;
                let small = u32::try_from(n).map_err(|_| format!("rules.{name}: {n} is too large"));
                match name {
                    "persistence" => self.rules.persistence = small?,
                    "max_migrations_per_host" => self.rules.max_migrations_per_host = small?,
                    "vm_cooldown_cycles" => self.rules.vm_cooldown_cycles = small?,
                    "seed" => self.rules.seed = n,
                    "cycle_budget_ms" => self.rules.cycle_budget_ms = Some(n),
                    _ => {
                        return Err(format!(
                            "unknown rule {name:?} (persistence, max_migrations_per_host, vm_cooldown_cycles, seed, \
                             cycle_budget_ms)"
                        ))
                    }
                }
                return Ok(());
            }
            _ => return Err(format!("{kind:?}: expected threshold, selection, placement, migration_mode or rules")),
        };
        // Integers are widened where the module declares a float (checked when loaded).
        choice.params.insert(name.to_string(), parsed);
        Ok(())
    }

    /// A built-in name or a TOML file.
    pub fn resolve(spec: &str) -> Result<Strategy, StrategyError> {
        let path = PathBuf::from(spec);
        if spec.ends_with(".toml") || path.is_file() {
            Strategy::from_toml_file(&path)
        } else {
            Strategy::builtin(spec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_parse() {
        for name in Strategy::builtin_names() {
            let s = Strategy::builtin(&name).unwrap();
            assert_eq!(s.placement.module, "pabfd");
        }
        let s = Strategy::builtin("lr-mc-1.2").unwrap();
        assert_eq!(s.threshold.module, "lr");
        assert_eq!(s.threshold.params.get("safety"), Some(&ParamValue::Float(1.2)));
        assert_eq!(s.selection.module, "mc");
        let s = Strategy::builtin("thr-mmt-0.8-spread").unwrap();
        assert_eq!(s.threshold.params.get("upper"), Some(&ParamValue::Float(0.8)));
        assert_eq!(s.placement.module, "spread");
    }

    #[test]
    fn bad_names_say_why() {
        for (name, needle) in [
            ("foo", "three or four"),
            ("xx-mmt-0.8", "not a threshold"),
            ("thr-zz-0.8", "not a selection"),
            ("thr-mmt-abc", "not a number"),
            ("thr-mmt-0.8-zz", "not a placement"),
        ] {
            let e = Strategy::builtin(name).unwrap_err().to_string();
            assert!(e.contains(needle), "{name}: {e}");
        }
    }

    #[test]
    fn settings_override() {
        let mut s = Strategy::builtin("lr-mmt-1.2").unwrap();
        assert_eq!(s.threshold.params.get("lower"), Some(&ParamValue::Float(1.0)));
        s.set("threshold.lower=0.3").unwrap();
        s.set("rules.persistence=3").unwrap();
        s.set("placement.use_asleep=true").unwrap();
        assert_eq!(s.threshold.params.get("lower"), Some(&ParamValue::Float(0.3)));
        assert_eq!(s.rules.persistence, 3);
        assert_eq!(s.placement.params.get("use_asleep"), Some(&ParamValue::Flag(true)));
        assert!(s.set("nope").is_err());
        assert!(s.set("rules.persistence=-1").is_err());
        assert!(s.set("rules.bogus=1").is_err());
        assert!(s.set("engine.x=1").is_err());
    }

    #[test]
    fn toml_round_trip() {
        let s = Strategy::builtin("lr-mmt-1.2").unwrap();
        let back = Strategy::from_toml(&s.to_toml()).unwrap();
        assert_eq!(s, back);
        let e = Strategy::from_toml("name = 'x'\n[threshold]\nmodule='thr'\n").unwrap_err();
        assert!(e.contains("selection"), "{e}");
    }
}
