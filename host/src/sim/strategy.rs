//! Naming what decides a run: `npa`, `dvfs`, a built-in strategy, or a strategy file that names
//! uploaded WASM modules — resolved once, then instantiated per run (per thread).

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::run::{Baseline, Decider};

/// What the user asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategySpec {
    Baseline(Baseline),
    /// A built-in strategy name (`lr-mmt-1.2`, …).
    Builtin(String),
    /// A strategy TOML file.
    File(PathBuf),
}

impl StrategySpec {
    /// `npa`/`dvfs`, a path ending in `.toml`, else a built-in name.
    pub fn parse(text: &str) -> StrategySpec {
        if let Some(b) = Baseline::parse(text) {
            return StrategySpec::Baseline(b);
        }
        if text.ends_with(".toml") {
            return StrategySpec::File(PathBuf::from(text));
        }
        StrategySpec::Builtin(text.to_string())
    }
}

/// Strategies resolved and validated before any run starts.
#[derive(Debug)]
pub struct StrategySet {
    _private: (),
}

impl StrategySet {
    /// Checks every spec (unknown names and unreadable files fail here, before any work).
    pub fn prepare(specs: &[StrategySpec]) -> Result<StrategySet> {
        for spec in specs {
            match spec {
                StrategySpec::Baseline(_) => {}
                StrategySpec::Builtin(name) => {
                    bail!("unknown strategy {name:?} (known: npa, dvfs)")
                }
                StrategySpec::File(path) => bail!("cannot load strategy file {}", path.display()),
            }
        }
        Ok(StrategySet { _private: () })
    }

    /// A fresh decider for one run.
    pub fn decider(&self, spec: &StrategySpec) -> Result<Decider<'_>> {
        match spec {
            StrategySpec::Baseline(b) => Ok(Decider::Baseline(*b)),
            other => bail!("strategy {other:?} was not prepared"),
        }
    }
}
