//! Calling a module's `describe` with the descriptor's limits applied **while it is decoded**:
//! every string and list is lifted through a bounded type ([`super::bounded`]), so an
//! oversized field is refused before the host copies it. What passes is then checked for
//! content (printable text, names, finite bounds) by [`Descriptor::from_raw`](super::Descriptor).

use wasmtime::component::{ComponentType, Instance, Lift};
use wasmtime::Store;

use super::bindings::types;
use super::bounded::{BoundedList, BoundedString, Label};
use super::instance::StoreState;

/// Longest name (module or parameter), in bytes.
pub const MAX_NAME: usize = 64;
/// Longest version string.
pub const MAX_VERSION: usize = 64;
/// Longest summary or parameter help.
pub const MAX_SUMMARY: usize = 512;
/// Longest text value (a text parameter's default).
pub const MAX_TEXT: usize = 4096;
/// Most parameters a module may declare.
pub const MAX_PARAMS: usize = 64;

macro_rules! label {
    ($($t:ident = $s:literal),* $(,)?) => {$(
        #[derive(Debug)]
        pub(crate) struct $t;
        impl Label for $t {
            const WHAT: &'static str = $s;
        }
    )*};
}
label!(
    NameL = "name",
    VersionL = "version",
    SummaryL = "summary",
    ParamsL = "parameter list",
    ParamNameL = "parameter name",
    HelpL = "parameter help",
    TextL = "text default",
);

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawDescriptor {
    name: BoundedString<MAX_NAME, NameL>,
    version: BoundedString<MAX_VERSION, VersionL>,
    kind: RawKind,
    summary: BoundedString<MAX_SUMMARY, SummaryL>,
    params: BoundedList<RawParamSpec, MAX_PARAMS, ParamsL>,
}

// Variants are made by the `Lift` derive (from the discriminant), never by name.
#[allow(dead_code)]
#[derive(ComponentType, Lift, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
enum RawKind {
    #[component(name = "threshold")]
    Threshold,
    #[component(name = "selection")]
    Selection,
    #[component(name = "placement")]
    Placement,
}

#[allow(dead_code)]
#[derive(ComponentType, Lift, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
enum RawValueType {
    #[component(name = "float")]
    Float,
    #[component(name = "integer")]
    Integer,
    #[component(name = "flag")]
    Flag,
    #[component(name = "text")]
    Text,
}

#[derive(ComponentType, Lift)]
#[component(variant)]
enum RawValue {
    #[component(name = "float")]
    Float(f64),
    #[component(name = "integer")]
    Integer(i64),
    #[component(name = "flag")]
    Flag(bool),
    #[component(name = "text")]
    Text(BoundedString<MAX_TEXT, TextL>),
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct RawParamSpec {
    name: BoundedString<MAX_NAME, ParamNameL>,
    ty: RawValueType,
    default: RawValue,
    min: Option<f64>,
    max: Option<f64>,
    help: BoundedString<MAX_SUMMARY, HelpL>,
}

/// `mode-descriptor` (world `migration-mode`): a descriptor without `kind`, the world says it.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawModeDescriptor {
    name: BoundedString<MAX_NAME, NameL>,
    version: BoundedString<MAX_VERSION, VersionL>,
    summary: BoundedString<MAX_SUMMARY, SummaryL>,
    params: BoundedList<RawParamSpec, MAX_PARAMS, ParamsL>,
}

impl RawDescriptor {
    fn into_types(self) -> types::Descriptor {
        types::Descriptor {
            name: self.name.0,
            version: self.version.0,
            kind: match self.kind {
                RawKind::Threshold => types::PolicyKind::Threshold,
                RawKind::Selection => types::PolicyKind::Selection,
                RawKind::Placement => types::PolicyKind::Placement,
            },
            summary: self.summary.0,
            params: self
                .params
                .0
                .into_iter()
                .map(|p| types::ParamSpec {
                    name: p.name.0,
                    ty: match p.ty {
                        RawValueType::Float => types::ValueType::Float,
                        RawValueType::Integer => types::ValueType::Integer,
                        RawValueType::Flag => types::ValueType::Flag,
                        RawValueType::Text => types::ValueType::Text,
                    },
                    default: match p.default {
                        RawValue::Float(f) => types::Value::Float(f),
                        RawValue::Integer(i) => types::Value::Integer(i),
                        RawValue::Flag(b) => types::Value::Flag(b),
                        RawValue::Text(s) => types::Value::Text(s.0),
                    },
                    min: p.min,
                    max: p.max,
                    help: p.help.0,
                })
                .collect(),
        }
    }
}

/// Calls `describe` on an instance, lifting its result under the bounds above. A
/// `migration-mode` module (`mode_world`) returns a `mode-descriptor`; it comes back as a
/// descriptor with `kind: None`.
pub(crate) fn call(
    store: &mut Store<StoreState>,
    instance: &Instance,
    mode_world: bool,
) -> wasmtime::Result<(types::Descriptor, Option<types::PolicyKind>)> {
    if mode_world {
        let f = instance.get_typed_func::<(), (RawModeDescriptor,)>(&mut *store, "describe")?;
        let (raw,) = f.call(&mut *store, ())?;
        let as_full = RawDescriptor {
            name: raw.name,
            version: raw.version,
            kind: RawKind::Threshold,
            summary: raw.summary,
            params: raw.params,
        };
        return Ok((as_full.into_types(), None));
    }
    let f = instance.get_typed_func::<(), (RawDescriptor,)>(&mut *store, "describe")?;
    let (raw,) = f.call(&mut *store, ())?;
    let d = raw.into_types();
    let kind = d.kind;
    Ok((d, Some(kind)))
}
