//! What a policy declares about itself: name, version, kind and typed parameters.
//!
//! The host renders parameters as a form, validates values against type and range before the
//! module sees them, and passes them to `configure`.

use std::collections::BTreeMap;

/// What a module decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Threshold,
    Selection,
    Placement,
    /// Migration mode (world `migration-mode`).
    MigrationMode,
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Integer(i64),
    Flag(bool),
    Text(String),
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub default: Value,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub help: String,
}

impl ParamSpec {
    /// A float parameter with its default.
    pub fn float(name: &str, default: f64) -> Self {
        Self::new(name, Value::Float(default))
    }

    /// An integer parameter with its default.
    pub fn integer(name: &str, default: i64) -> Self {
        Self::new(name, Value::Integer(default))
    }

    /// A boolean parameter with its default.
    pub fn flag(name: &str, default: bool) -> Self {
        Self::new(name, Value::Flag(default))
    }

    /// A text parameter with its default.
    pub fn text(name: &str, default: &str) -> Self {
        Self::new(name, Value::Text(default.to_string()))
    }

    fn new(name: &str, default: Value) -> Self {
        ParamSpec { name: name.to_string(), default, min: None, max: None, help: String::new() }
    }

    /// Inclusive bounds for a number.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    /// One line shown in `--help`-like listings and the dashboard's form.
    pub fn help(mut self, help: &str) -> Self {
        self.help = help.to_string();
        self
    }
}

/// What a module is.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub name: String,
    pub version: String,
    pub kind: PolicyKind,
    pub summary: String,
    pub params: Vec<ParamSpec>,
}

impl Descriptor {
    /// A threshold (overload detection) policy.
    pub fn threshold(name: &str, version: &str) -> Self {
        Self::new(name, version, PolicyKind::Threshold)
    }

    /// A VM selection policy.
    pub fn selection(name: &str, version: &str) -> Self {
        Self::new(name, version, PolicyKind::Selection)
    }

    /// A placement policy.
    pub fn placement(name: &str, version: &str) -> Self {
        Self::new(name, version, PolicyKind::Placement)
    }

    /// A migration-mode policy.
    pub fn migration_mode(name: &str, version: &str) -> Self {
        Self::new(name, version, PolicyKind::MigrationMode)
    }

    fn new(name: &str, version: &str, kind: PolicyKind) -> Self {
        Descriptor { name: name.into(), version: version.into(), kind, summary: String::new(), params: Vec::new() }
    }

    /// One sentence saying what the policy does.
    pub fn summary(mut self, summary: &str) -> Self {
        self.summary = summary.to_string();
        self
    }

    /// Declares a parameter.
    pub fn param(mut self, spec: ParamSpec) -> Self {
        self.params.push(spec);
        self
    }
}

/// Configured parameter values: what the host passed, with declared defaults for the rest.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: BTreeMap<String, Value>,
}

impl Params {
    /// Builds the values from the descriptor's defaults overlaid with `given`.
    pub fn resolve(descriptor: &Descriptor, given: impl IntoIterator<Item = (String, Value)>) -> Self {
        let mut values: BTreeMap<String, Value> =
            descriptor.params.iter().map(|p| (p.name.clone(), p.default.clone())).collect();
        values.extend(given);
        Params { values }
    }

    /// The raw value of a parameter.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// A number parameter as `f64` (integers convert). `NaN` when absent or not a number.
    pub fn float(&self, name: &str) -> f64 {
        match self.values.get(name) {
            Some(Value::Float(v)) => *v,
            Some(Value::Integer(v)) => *v as f64,
            _ => f64::NAN,
        }
    }

    /// An integer parameter; 0 when absent or not an integer.
    pub fn integer(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(Value::Integer(v)) => *v,
            Some(Value::Float(v)) => *v as i64,
            _ => 0,
        }
    }

    /// A boolean parameter; false when absent.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Flag(true)))
    }

    /// A text parameter; empty when absent.
    pub fn text(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(Value::Text(v)) => v,
            _ => "",
        }
    }
}
