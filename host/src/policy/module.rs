//! Loading a policy module: recognise it, compile it once (cached by sha256), find its world,
//! and ask it to describe itself.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceType};
use wasmtime::Engine;

use super::bindings::{
    bounded_threshold::BoundedThresholdPre, indexed_placement::IndexedPlacementPre, migration_mode::MigrationModePre,
    placement::PlacementPre, selection::SelectionPre, threshold::ThresholdPre,
};
use super::descriptor::{Descriptor, PolicyKind};
use super::instance::StoreState;
use super::PolicyError;

/// A compiled, typed policy ready to instantiate.
pub(crate) enum WorldPre {
    Threshold(ThresholdPre<StoreState>),
    /// A threshold module that also exports `headroom` and `vm-load` (world `bounded-threshold`).
    BoundedThreshold(BoundedThresholdPre<StoreState>),
    Selection(SelectionPre<StoreState>),
    Placement(PlacementPre<StoreState>),
    /// A placement module that also exports `weigh-bound` (world `indexed-placement`).
    IndexedPlacement(IndexedPlacementPre<StoreState>),
    /// World `migration-mode` (0.1.1).
    MigrationMode(MigrationModePre<StoreState>),
}

impl WorldPre {
    /// The world the component's exports belong to.
    pub(crate) fn kind(&self) -> PolicyKind {
        match self {
            WorldPre::Threshold(_) | WorldPre::BoundedThreshold(_) => PolicyKind::Threshold,
            WorldPre::Selection(_) => PolicyKind::Selection,
            WorldPre::Placement(_) | WorldPre::IndexedPlacement(_) => PolicyKind::Placement,
            WorldPre::MigrationMode(_) => PolicyKind::MigrationMode,
        }
    }

    pub(crate) fn instance_pre(&self) -> &wasmtime::component::InstancePre<StoreState> {
        match self {
            WorldPre::Threshold(p) => p.instance_pre(),
            WorldPre::BoundedThreshold(p) => p.instance_pre(),
            WorldPre::Selection(p) => p.instance_pre(),
            WorldPre::Placement(p) => p.instance_pre(),
            WorldPre::IndexedPlacement(p) => p.instance_pre(),
            WorldPre::MigrationMode(p) => p.instance_pre(),
        }
    }
}

/// A loaded policy module. Cheap to share (`Arc`); instantiate with
/// [`PolicyRuntime::instantiate`](super::PolicyRuntime::instantiate).
pub struct PolicyModule {
    /// Hex sha256 of the module's bytes: its identity.
    pub sha256: String,
    /// Where it came from (`builtin:<name>` or a file path).
    pub source: String,
    /// What it says it is.
    pub descriptor: Descriptor,
    /// Imports other than `amvm:policy/host` (WASI, typically): present, but calling one fails
    /// the call with [`PolicyError::DeniedImport`] naming it.
    pub trapped_imports: Vec<String>,
    /// Size of the module in bytes.
    pub size: usize,
    pub(crate) pre: WorldPre,
}

impl std::fmt::Debug for PolicyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyModule")
            .field("sha256", &self.sha256)
            .field("source", &self.source)
            .field("descriptor", &self.descriptor)
            .finish_non_exhaustive()
    }
}

impl PolicyModule {
    pub fn kind(&self) -> PolicyKind {
        self.descriptor.kind
    }

    pub fn name(&self) -> &str {
        &self.descriptor.name
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Recognises the binary: a component, a core module, or not wasm at all.
pub(crate) fn sniff(bytes: &[u8]) -> Result<(), PolicyError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PolicyError::NotWasm);
    }
    // Core modules have version 1 layer 0; components have layer 1 (bytes 6..8 = 0x01 0x00).
    match bytes[6..8] {
        [0, 0] => Err(PolicyError::CoreModule),
        [1, 0] => Ok(()),
        _ => Err(PolicyError::Invalid(format!("unknown wasm binary version/layer {:02x?}", &bytes[4..8]))),
    }
}

/// The functions each world exports besides `describe` and `configure` (threshold: `headroom`
/// and `vm-load` in the optional `bounded-threshold` world; placement: `weigh`, and
/// `weigh-bound` in the optional `indexed-placement` world; migration mode: `choose-mode`).
const WORLDS: [(PolicyKind, &[&str]); 4] = [
    (PolicyKind::Threshold, &["classify", "would-overload", "headroom", "vm-load"]),
    (PolicyKind::Selection, &["select"]),
    (PolicyKind::Placement, &["weigh", "weigh-bound"]),
    (PolicyKind::MigrationMode, &["choose-mode"]),
];
const COMMON: [&str; 2] = ["describe", "configure"];

/// Which world the component's exports belong to. A policy exports exactly one world: the
/// functions of several worlds, or anything outside its world, are refused here, before any
/// call, so the world (not the module's own `describe`) decides which functions the host calls.
fn detect_world(engine: &Engine, component: &Component) -> Result<PolicyKind, PolicyError> {
    let ty = component.component_type();
    // Exported types (a hand-made component may export the types its functions use) are not
    // part of the policy's surface; everything else is.
    let exports: Vec<String> = ty
        .exports(engine)
        .filter(|(_, item)| !matches!(item.ty, ComponentItem::Type(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let has = |n: &str| exports.iter().any(|e| e == n);
    let found: Vec<(PolicyKind, Vec<&str>)> = WORLDS
        .iter()
        .map(|(kind, fns)| (*kind, fns.iter().copied().filter(|f| has(f)).collect::<Vec<_>>()))
        .filter(|(_, fns)| !fns.is_empty())
        .collect();
    let kind = match found.as_slice() {
        [] if exports.is_empty() => return Err(PolicyError::UnknownWorld { exports: "nothing".into() }),
        [] => return Err(PolicyError::UnknownWorld { exports: exports.join(", ") }),
        [(kind, _)] => *kind,
        several => {
            let worlds: Vec<String> = several.iter().map(|(k, fns)| format!("{k}: {}", fns.join(", "))).collect();
            return Err(PolicyError::SeveralWorlds { worlds: worlds.join("; ") });
        }
    };
    if !has("describe") {
        return Err(PolicyError::MissingDescribe);
    }
    let allowed = |e: &str| COMMON.contains(&e) || WORLDS.iter().any(|(k, fns)| *k == kind && fns.contains(&e));
    let extra: Vec<&str> = exports.iter().map(String::as_str).filter(|e| !allowed(e)).collect();
    if !extra.is_empty() {
        return Err(PolicyError::ExtraExports { world: kind.as_str(), exports: extra.join(", ") });
    }
    Ok(kind)
}

/// What a denied import returns when the module calls it: names the import, so the refusal says
/// what was denied (`wasi:filesystem/preopens@0.2.0#get-directories`), not just "trapped".
#[derive(Debug, thiserror::Error)]
#[error("denied import {0}")]
pub(crate) struct DeniedCall(pub String);

/// Resources of denied interfaces (never constructed: every function that could make one is
/// denied).
struct DeniedResource;

/// Defines every import other than `amvm:policy/host` as a function that fails with
/// [`DeniedCall`]. Returns the names of the denied imports.
fn deny_imports(
    linker: &mut Linker<StoreState>,
    engine: &Engine,
    component: &Component,
    host_import: impl Fn(&str) -> bool,
) -> Result<Vec<String>, PolicyError> {
    let mut denied = Vec::new();
    let mut root = linker.root();
    for (name, item) in component.component_type().imports(engine) {
        if host_import(name) {
            continue;
        }
        denied.push(name.to_string());
        deny_item(&mut root, engine, name, None, item.ty)?;
    }
    Ok(denied)
}

fn deny_item(
    linker: &mut LinkerInstance<'_, StoreState>,
    engine: &Engine,
    name: &str,
    parent: Option<&str>,
    item: ComponentItem,
) -> Result<(), PolicyError> {
    let full = match parent {
        Some(p) => format!("{p}#{name}"),
        None => name.to_string(),
    };
    let define = |e: wasmtime::Error| PolicyError::Invalid(format!("import `{full}`: {e}"));
    match item {
        ComponentItem::ComponentFunc(_) => {
            let what = full.clone();
            linker
                .func_new(name, move |_, _, _, _| Err(wasmtime::Error::new(DeniedCall(what.clone()))))
                .map_err(define)?;
        }
        ComponentItem::ComponentInstance(instance) => {
            let mut inner = linker.instance(name).map_err(define)?;
            for (export, item) in instance.exports(engine) {
                deny_item(&mut inner, engine, export, Some(&full), item.ty)?;
            }
        }
        ComponentItem::Resource(_) => {
            linker.resource(name, ResourceType::host::<DeniedResource>(), |_, _| Ok(())).map_err(define)?;
        }
        ComponentItem::Module(_) | ComponentItem::Component(_) => {
            return Err(PolicyError::Invalid(format!(
                "imports a module or component `{full}`; a policy imports only interfaces"
            )));
        }
        ComponentItem::CoreFunc(_) | ComponentItem::Type(_) => {}
    }
    Ok(())
}

/// Type-checks a compiled component against its world. Returns the pre-instantiated form and
/// the imports that are denied.
pub(crate) fn prepare(engine: &Engine, component: &Component) -> Result<(WorldPre, Vec<String>), PolicyError> {
    let kind = detect_world(engine, component)?;
    let exports = |f: &str| component.component_type().exports(engine).any(|(name, _)| name == f);
    let indexed = kind == PolicyKind::Placement && exports("weigh-bound");
    let bounded = kind == PolicyKind::Threshold && (exports("headroom") || exports("vm-load"));
    let mut linker: Linker<StoreState> = Linker::new(engine);
    let internal = |e: wasmtime::Error| PolicyError::Internal(format!("{e:#}"));
    // The host defines `amvm:policy/host@0.1.1`; a module built for any 0.1.x imports it
    // under its own version, which the linker matches semver-compatibly.
    let host_import = |name: &str| name.starts_with("amvm:policy/host@0.1.");
    super::bindings::threshold::amvm::policy::host::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(
        &mut linker,
        |s| s,
    )
    .map_err(internal)?;
    let denied = deny_imports(&mut linker, engine, component, host_import)?;
    let mismatch = |world: &'static str| {
        move |e: wasmtime::Error| PolicyError::WorldMismatch { world, reason: super::first_line(&e) }
    };
    let pre = linker.instantiate_pre(component).map_err(mismatch(kind.as_str()))?;
    let pre = match kind {
        PolicyKind::Threshold if bounded => {
            WorldPre::BoundedThreshold(BoundedThresholdPre::new(pre).map_err(mismatch("bounded-threshold"))?)
        }
        PolicyKind::Threshold => WorldPre::Threshold(ThresholdPre::new(pre).map_err(mismatch("threshold"))?),
        PolicyKind::Selection => WorldPre::Selection(SelectionPre::new(pre).map_err(mismatch("selection"))?),
        PolicyKind::Placement if indexed => {
            WorldPre::IndexedPlacement(IndexedPlacementPre::new(pre).map_err(mismatch("indexed-placement"))?)
        }
        PolicyKind::Placement => WorldPre::Placement(PlacementPre::new(pre).map_err(mismatch("placement"))?),
        PolicyKind::MigrationMode => {
            WorldPre::MigrationMode(MigrationModePre::new(pre).map_err(mismatch("migration-mode"))?)
        }
    };
    Ok((pre, denied))
}

pub(crate) fn new_module(
    sha256: String,
    source: String,
    size: usize,
    pre: WorldPre,
    trapped_imports: Vec<String>,
    descriptor: Descriptor,
) -> Arc<PolicyModule> {
    Arc::new(PolicyModule { sha256, source, descriptor, trapped_imports, size, pre })
}
