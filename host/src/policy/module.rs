//! Loading a policy module: recognise it, compile it once (cached by sha256), find its world,
//! and ask it to describe itself.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use super::bindings::{placement::PlacementPre, selection::SelectionPre, threshold::ThresholdPre};
use super::descriptor::{Descriptor, PolicyKind};
use super::instance::StoreState;
use super::PolicyError;

/// A compiled, typed policy ready to instantiate.
pub(crate) enum WorldPre {
    Threshold(ThresholdPre<StoreState>),
    Selection(SelectionPre<StoreState>),
    Placement(PlacementPre<StoreState>),
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
    /// Imports other than `amvm:policy/host` (WASI, typically): present, but trap when called.
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

/// Which world the component's exports name.
fn detect_world(engine: &Engine, component: &Component) -> Result<PolicyKind, PolicyError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let has = |n: &str| exports.iter().any(|e| e == n);
    let kind = if has("classify") || has("would-overload") {
        Some(PolicyKind::Threshold)
    } else if has("select") {
        Some(PolicyKind::Selection)
    } else if has("weigh") {
        Some(PolicyKind::Placement)
    } else {
        None
    };
    match kind {
        Some(_) if !has("describe") => Err(PolicyError::MissingDescribe),
        Some(kind) => Ok(kind),
        None if has("describe") => Err(PolicyError::UnknownWorld { exports: exports.join(", ") }),
        None => Err(PolicyError::UnknownWorld {
            exports: if exports.is_empty() { "nothing".into() } else { exports.join(", ") },
        }),
    }
}

/// Compiles and type-checks a component against its world. Returns the pre-instantiated form
/// and the imports that will trap.
pub(crate) fn prepare(engine: &Engine, component: &Component) -> Result<(WorldPre, Vec<String>), PolicyError> {
    let kind = detect_world(engine, component)?;
    let mut linker: Linker<StoreState> = Linker::new(engine);
    let internal = |e: wasmtime::Error| PolicyError::Internal(format!("{e:#}"));
    let host_import = "amvm:policy/host@0.1.0";
    let trapped: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| name != host_import)
        .collect();
    super::bindings::threshold::amvm::policy::host::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(
        &mut linker,
        |s| s,
    )
    .map_err(internal)?;
    linker.define_unknown_imports_as_traps(component).map_err(internal)?;
    let mismatch =
        |world: &'static str| move |e: wasmtime::Error| PolicyError::WorldMismatch { world, reason: format!("{e:#}") };
    let pre = linker.instantiate_pre(component).map_err(mismatch(kind.as_str()))?;
    let pre = match kind {
        PolicyKind::Threshold => WorldPre::Threshold(ThresholdPre::new(pre).map_err(mismatch("threshold"))?),
        PolicyKind::Selection => WorldPre::Selection(SelectionPre::new(pre).map_err(mismatch("selection"))?),
        PolicyKind::Placement => WorldPre::Placement(PlacementPre::new(pre).map_err(mismatch("placement"))?),
    };
    Ok((pre, trapped))
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
