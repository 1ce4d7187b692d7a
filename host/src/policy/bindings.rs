//! Host-side bindings of the `amvm:policy@0.1.x` worlds (`sdk/wit/policy.wit`), generated once
//! per world; the shared `types` and `host` interfaces are generated once and reused.

pub mod threshold {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "threshold",
    });
}

pub mod selection {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "selection",
        with: {
            "amvm:policy/types": super::threshold::amvm::policy::types,
            "amvm:policy/host": super::threshold::amvm::policy::host,
        },
    });
}

pub mod placement {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "placement",
        with: {
            "amvm:policy/types": super::threshold::amvm::policy::types,
            "amvm:policy/host": super::threshold::amvm::policy::host,
        },
    });
}

pub mod bounded_threshold {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "bounded-threshold",
        with: {
            "amvm:policy/types": super::threshold::amvm::policy::types,
            "amvm:policy/host": super::threshold::amvm::policy::host,
        },
    });
}

pub mod indexed_placement {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "indexed-placement",
        with: {
            "amvm:policy/types": super::threshold::amvm::policy::types,
            "amvm:policy/host": super::threshold::amvm::policy::host,
        },
    });
}

pub mod migration_mode {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "migration-mode",
        with: {
            "amvm:policy/types": super::threshold::amvm::policy::types,
            "amvm:policy/host": super::threshold::amvm::policy::host,
        },
    });
}

pub use threshold::amvm::policy::host::{Host as HostImports, Level};
pub use threshold::amvm::policy::types;
