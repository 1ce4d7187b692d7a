//! What a module declares (`describe`), in host-side form, and validation of parameter values
//! against it before the module ever sees them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::bindings::types;
use super::PolicyError;

/// What a module decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    Threshold,
    Selection,
    Placement,
    /// The mechanism of each migration (world `migration-mode`, contract 0.1.1).
    MigrationMode,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Threshold => "threshold",
            PolicyKind::Selection => "selection",
            PolicyKind::Placement => "placement",
            PolicyKind::MigrationMode => "migration-mode",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parameter value (TOML and JSON: a number, a boolean or a string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Flag(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Flag(b) => write!(f, "{b}"),
            ParamValue::Integer(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl ParamValue {
    fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Flag(_) => "flag",
            ParamValue::Integer(_) => "integer",
            ParamValue::Float(_) => "float",
            ParamValue::Text(_) => "text",
        }
    }

    /// Parses `text` as a value of type `ty` (command-line `name=value` pairs).
    pub fn parse_as(ty: ValueType, text: &str) -> Result<ParamValue, String> {
        match ty {
            ValueType::Float => text.parse().map(ParamValue::Float).map_err(|_| format!("{text:?} is not a number")),
            ValueType::Integer => {
                text.parse().map(ParamValue::Integer).map_err(|_| format!("{text:?} is not an integer"))
            }
            ValueType::Flag => text.parse().map(ParamValue::Flag).map_err(|_| format!("{text:?} is not true/false")),
            ValueType::Text => Ok(ParamValue::Text(text.to_string())),
        }
    }
}

/// The declared type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueType {
    Float,
    Integer,
    Flag,
    Text,
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ValueType,
    pub default: ParamValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    pub help: String,
}

/// What a module is, as it describes itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    pub name: String,
    pub version: String,
    pub kind: PolicyKind,
    pub summary: String,
    pub params: Vec<ParamSpec>,
}

/// Parameter values by name.
pub type ParamValues = BTreeMap<String, ParamValue>;

fn from_raw_value(v: types::Value) -> ParamValue {
    match v {
        types::Value::Float(f) => ParamValue::Float(f),
        types::Value::Integer(i) => ParamValue::Integer(i),
        types::Value::Flag(b) => ParamValue::Flag(b),
        types::Value::Text(s) => ParamValue::Text(s),
    }
}

pub(crate) fn to_raw_value(v: &ParamValue) -> types::Value {
    match v {
        ParamValue::Float(f) => types::Value::Float(*f),
        ParamValue::Integer(i) => types::Value::Integer(*i),
        ParamValue::Flag(b) => types::Value::Flag(*b),
        ParamValue::Text(s) => types::Value::Text(s.clone()),
    }
}

use super::describe::{MAX_NAME, MAX_PARAMS, MAX_SUMMARY, MAX_TEXT, MAX_VERSION};
use super::sanitize::{clean, is_unsafe_char};

/// Text a module shows to people: bounded, and printable (no control characters, no terminal
/// escape sequences, no invisible formatting characters), so nothing it declares can forge or
/// garble the host's output.
fn check_text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is longer than {max} bytes"));
    }
    if let Some(c) = s.chars().find(|&c| is_unsafe_char(c)) {
        return Err(format!("{what} {:?} contains the non-printable character U+{:04X}", clean(s), c as u32));
    }
    Ok(())
}

/// A module or parameter name: ASCII letters, digits, '-', '_' or '.', starting with a letter or
/// digit.
fn check_name(what: &str, s: &str) -> Result<(), String> {
    check_text(what, s, MAX_NAME)?;
    let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(format!(
            "{what} {:?} must be ASCII letters, digits, '-', '_' or '.', starting with a letter or digit",
            clean(s)
        ));
    }
    Ok(())
}

impl Descriptor {
    /// Converts and checks what a module's `describe` returned (its sizes were already bounded
    /// while it was decoded): printable text of bounded length, well-formed names, finite and
    /// ordered bounds, defaults of the declared type within them.
    pub(crate) fn from_raw(raw: types::Descriptor) -> Result<Descriptor, PolicyError> {
        let bad = PolicyError::BadDescriptor;
        check_name("name", &raw.name).map_err(bad)?;
        check_text("version", &raw.version, MAX_VERSION).map_err(bad)?;
        if raw.version.is_empty() {
            return Err(bad("version is empty".into()));
        }
        check_text("summary", &raw.summary, MAX_SUMMARY).map_err(bad)?;
        if raw.params.len() > MAX_PARAMS {
            return Err(bad(format!("{} parameters declared; at most {MAX_PARAMS}", raw.params.len())));
        }
        let mut params = Vec::with_capacity(raw.params.len());
        for p in raw.params {
            check_name("parameter name", &p.name).map_err(bad)?;
            check_text(&format!("help of {}", p.name), &p.help, MAX_SUMMARY).map_err(bad)?;
            for (which, bound) in [("minimum", p.min), ("maximum", p.max)] {
                if let Some(b) = bound.filter(|b| !b.is_finite()) {
                    return Err(bad(format!("{} of {} is {b}; bounds must be finite", which, p.name)));
                }
            }
            if let (Some(min), Some(max)) = (p.min, p.max) {
                if min > max {
                    return Err(bad(format!("{}: minimum {min} is above maximum {max}", p.name)));
                }
            }
            let ty = match p.ty {
                types::ValueType::Float => ValueType::Float,
                types::ValueType::Integer => ValueType::Integer,
                types::ValueType::Flag => ValueType::Flag,
                types::ValueType::Text => ValueType::Text,
            };
            if let types::Value::Text(t) = &p.default {
                check_text(&format!("default of {}", p.name), t, MAX_TEXT).map_err(bad)?;
            }
            let spec = ParamSpec {
                name: p.name,
                ty,
                default: from_raw_value(p.default),
                min: p.min,
                max: p.max,
                help: p.help,
            };
            if params.iter().any(|q: &ParamSpec| q.name == spec.name) {
                return Err(bad(format!("parameter {} declared twice", spec.name)));
            }
            spec.check(&spec.default).map_err(|e| bad(format!("default of {e}")))?;
            params.push(spec);
        }
        let kind = match raw.kind {
            types::PolicyKind::Threshold => PolicyKind::Threshold,
            types::PolicyKind::Selection => PolicyKind::Selection,
            types::PolicyKind::Placement => PolicyKind::Placement,
        };
        Ok(Descriptor { name: raw.name, version: raw.version, kind, summary: raw.summary, params })
    }

    /// Checks `values` against the declared parameters: every name known, every value of the
    /// declared type (an integer is accepted for a float) and within range. Returns the values
    /// the module will receive (integers widened to floats where declared).
    pub fn validate(&self, values: &ParamValues) -> Result<ParamValues, PolicyError> {
        let mut out = ParamValues::new();
        for (name, value) in values {
            let Some(spec) = self.params.iter().find(|p| &p.name == name) else {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                return Err(PolicyError::BadParameter(format!(
                    "{} has no parameter {name:?} (known: {})",
                    self.name,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            };
            let value = match (spec.ty, value) {
                (ValueType::Float, ParamValue::Integer(i)) => ParamValue::Float(*i as f64),
                _ => value.clone(),
            };
            spec.check(&value).map_err(PolicyError::BadParameter)?;
            out.insert(name.clone(), value);
        }
        Ok(out)
    }
}

impl ParamSpec {
    fn check(&self, value: &ParamValue) -> Result<(), String> {
        let number = match (self.ty, value) {
            (ValueType::Float, ParamValue::Float(f)) => Some(*f),
            (ValueType::Integer, ParamValue::Integer(i)) => Some(*i as f64),
            (ValueType::Flag, ParamValue::Flag(_)) => None,
            (ValueType::Text, ParamValue::Text(s)) if s.len() <= MAX_TEXT => None,
            (ValueType::Text, ParamValue::Text(_)) => {
                return Err(format!("{} is longer than {MAX_TEXT} bytes", self.name))
            }
            _ => {
                return Err(format!(
                    "{} must be {}, not {} ({value})",
                    self.name,
                    match self.ty {
                        ValueType::Float => "a number",
                        ValueType::Integer => "an integer",
                        ValueType::Flag => "true or false",
                        ValueType::Text => "text",
                    },
                    value.type_name()
                ))
            }
        };
        if let Some(x) = number {
            if !x.is_finite() {
                return Err(format!("{} must be finite, not {x}", self.name));
            }
            if let Some(min) = self.min.filter(|&m| x < m) {
                return Err(format!("{} = {x} is below its minimum {min}", self.name));
            }
            if let Some(max) = self.max.filter(|&m| x > m) {
                return Err(format!("{} = {x} is above its maximum {max}", self.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> types::Descriptor {
        types::Descriptor {
            name: "p".into(),
            version: "1.0".into(),
            kind: types::PolicyKind::Placement,
            summary: "a policy".into(),
            params: vec![types::ParamSpec {
                name: "x".into(),
                ty: types::ValueType::Float,
                default: types::Value::Float(0.5),
                min: Some(0.0),
                max: Some(1.0),
                help: "help".into(),
            }],
        }
    }

    fn check(edit: impl FnOnce(&mut types::Descriptor), needle: &str) {
        let mut d = raw();
        edit(&mut d);
        let e = Descriptor::from_raw(d).unwrap_err();
        assert!(matches!(e, PolicyError::BadDescriptor(_)), "{e}");
        let text = e.to_string();
        assert!(text.contains(needle), "{text}");
        assert_eq!(text.lines().count(), 1);
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn descriptor_text_must_be_printable_and_bounded() {
        assert!(Descriptor::from_raw(raw()).is_ok());
        check(|d| d.summary = "x\n\x1b[1;32mOK: forged".into(), "non-printable character U+000A");
        check(|d| d.version = "1\x1b[2J".into(), "version");
        check(|d| d.params[0].help = "\u{202e}gnp.exe".into(), "U+202E");
        check(|d| d.summary = "s".repeat(MAX_SUMMARY + 1), "summary is longer than 512 bytes");
        check(|d| d.name = "bad name".into(), "name");
        check(|d| d.params[0].name = "\x1b".into(), "parameter name");
        check(|d| d.version.clear(), "version is empty");
    }

    #[test]
    fn bounds_must_be_finite_and_ordered() {
        check(|d| d.params[0].min = Some(f64::NAN), "minimum of x is NaN");
        check(|d| d.params[0].max = Some(f64::INFINITY), "maximum of x is inf");
        check(|d| d.params[0].min = Some(f64::NEG_INFINITY), "bounds must be finite");
        check(|d| (d.params[0].min, d.params[0].max) = (Some(2.0), Some(1.0)), "above maximum");
        // With finite bounds the range check holds: a default outside is refused.
        check(|d| d.params[0].default = types::Value::Float(3.0), "above its maximum");
    }
}
