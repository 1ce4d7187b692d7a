//! # amvm-sdk: write AMVM consolidation policies in plain Rust
//!
//! A policy is a WebAssembly component that AMVM loads into a sandbox and calls once per host
//! list or candidate list in every decision cycle. This crate hides the component-model
//! bindings behind three plain traits:
//!
//! - [`ThresholdPolicy`] — overload detection: classify hosts as underloaded / normal /
//!   overloaded from their utilization history.
//! - [`SelectionPolicy`] — VM selection: which VM leaves an overloaded host next.
//! - [`PlacementPolicy`] — placement: filter and weigh candidate hosts for a VM (lowest wins).
//! - [`MigrationModePolicy`] — migration mode: pre-copy, post-copy or hybrid-copy for each move
//!   of a plan ([`model`] holds the paper's equations 1–7 to decide with).
//!
//! and one macro, [`export!`], that turns your type into the component's exports (this example
//! builds only for `wasm32-wasip2`; the same shape is compiled by the test suite as
//! `policies/examples/headroom`):
//!
//! ```text
//! use amvm_sdk::prelude::*;
//!
//! struct Spread;
//!
//! impl PlacementPolicy for Spread {
//!     fn describe() -> Descriptor {
//!         Descriptor::placement("my-spread", "0.1.0").summary("least loaded host first")
//!     }
//!     fn configure(_: &Params) -> Result<Self, String> {
//!         Ok(Spread)
//!     }
//!     fn weigh(&mut self, _: &Context, vm: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
//!         (0..c.len()).map(|i| Some(c.cpu_used(i) / c.cpu_capacity(i))).collect()
//!     }
//! }
//!
//! amvm_sdk::export!(placement: Spread);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate-type `cdylib`), then
//! `amvm policy check target/wasm32-wasip2/release/my_spread.wasm`. See `sdk/README.md`.
//!
//! The sandbox gives a policy no filesystem, network, clock or randomness: use
//! [`Context::seed`] for randomized decisions and `BTreeMap` (not `HashMap`, whose default
//! hasher asks the host for randomness and traps).

// The SDK refers to itself as `amvm_sdk` inside the export macros.
extern crate self as amvm_sdk;

pub mod describe;
#[doc(hidden)]
pub mod glue;
pub mod log;
pub mod rules;
pub mod stats;
pub mod views;

/// The paper's analytic migration model (equations 1–7) and its choice of mechanism, the same
/// code the host and the memory engine use.
pub use amvm_model as model;
pub use amvm_model::Mode;
pub use describe::{Descriptor, ParamSpec, Params, PolicyKind, Value};
pub use views::{Candidates, Context, Headroom, HostClass, HostGroups, Hosts, Moves, VmDemand, VmLoads, Vms};

/// The generated component bindings. Policy authors do not need these.
#[doc(hidden)]
#[allow(clippy::all, unsafe_op_in_unsafe_fn, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "sdk-common",
        path: "wit",
        runtime_path: "amvm_sdk::__wit_bindgen::rt",
    });

    pub mod threshold {
        wit_bindgen::generate!({
            world: "threshold",
            path: "wit",
            with: {
                "amvm:policy/types@0.1.1": crate::bindings::amvm::policy::types,
                "amvm:policy/host@0.1.1": crate::bindings::amvm::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_threshold_world",
            default_bindings_module: "amvm_sdk::bindings::threshold",
            runtime_path: "amvm_sdk::__wit_bindgen::rt",
        });
    }

    pub mod bounded_threshold {
        wit_bindgen::generate!({
            world: "bounded-threshold",
            path: "wit",
            with: {
                "amvm:policy/types@0.1.1": crate::bindings::amvm::policy::types,
                "amvm:policy/host@0.1.1": crate::bindings::amvm::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_bounded_threshold_world",
            default_bindings_module: "amvm_sdk::bindings::bounded_threshold",
            runtime_path: "amvm_sdk::__wit_bindgen::rt",
        });
    }

    pub mod selection {
        wit_bindgen::generate!({
            world: "selection",
            path: "wit",
            with: {
                "amvm:policy/types@0.1.1": crate::bindings::amvm::policy::types,
                "amvm:policy/host@0.1.1": crate::bindings::amvm::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_selection_world",
            default_bindings_module: "amvm_sdk::bindings::selection",
            runtime_path: "amvm_sdk::__wit_bindgen::rt",
        });
    }

    pub mod indexed_placement {
        wit_bindgen::generate!({
            world: "indexed-placement",
            path: "wit",
            with: {
                "amvm:policy/types@0.1.1": crate::bindings::amvm::policy::types,
                "amvm:policy/host@0.1.1": crate::bindings::amvm::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_indexed_placement_world",
            default_bindings_module: "amvm_sdk::bindings::indexed_placement",
            runtime_path: "amvm_sdk::__wit_bindgen::rt",
        });
    }

    pub mod migration_mode {
        wit_bindgen::generate!({
            world: "migration-mode",
            path: "wit",
            with: {
                "amvm:policy/types@0.1.1": crate::bindings::amvm::policy::types,
                "amvm:policy/host@0.1.1": crate::bindings::amvm::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_migration_mode_world",
            default_bindings_module: "amvm_sdk::bindings::migration_mode",
            runtime_path: "amvm_sdk::__wit_bindgen::rt",
        });
    }

    pub mod placement {
        wit_bindgen::generate!({
            world: "placement",
            path: "wit",
            with: {
                "amvm:policy/types@0.1.1": crate::bindings::amvm::policy::types,
                "amvm:policy/host@0.1.1": crate::bindings::amvm::policy::host,
            },
            pub_export_macro: true,
            export_macro_name: "__export_placement_world",
            default_bindings_module: "amvm_sdk::bindings::placement",
            runtime_path: "amvm_sdk::__wit_bindgen::rt",
        });
    }
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Everything a policy author needs, in one `use`.
pub mod prelude {
    pub use crate::describe::{Descriptor, ParamSpec, Params, PolicyKind, Value};
    pub use crate::stats;
    pub use crate::views::{
        Candidates, Context, Headroom, HostClass, HostGroups, Hosts, Moves, VmDemand, VmLoads, Vms,
    };
    pub use crate::{
        BoundedThresholdPolicy, IndexedPlacementPolicy, MigrationModePolicy, Mode, PlacementPolicy, SelectionPolicy,
        ThresholdPolicy,
    };
}

/// Overload detection (the `threshold` world).
pub trait ThresholdPolicy: Sized + 'static {
    /// Name, version, kind and parameters. Called by `amvm policy inspect` and at upload.
    fn describe() -> Descriptor;
    /// Builds the policy from parameter values the host has validated against `describe`.
    fn configure(params: &Params) -> Result<Self, String>;
    /// One class per host in `hosts`.
    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass>;
    /// For each host: would it be overloaded with all of `add` placed on it? The default adds
    /// the VMs' CPU histories (and memory, where monitored) to each host's history and asks
    /// [`classify`](Self::classify).
    fn would_overload(&mut self, ctx: &Context, hosts: &Hosts, add: &Vms) -> Vec<bool> {
        let combined = hosts.with_added(add, ctx);
        self.classify(ctx, &combined).into_iter().map(|c| c == HostClass::Overload).collect()
    }
}

/// Overload detection with headroom (the `bounded-threshold` world): besides classifying, the
/// policy tells the host, per host, up to which load one added VM surely keeps it below overload
/// and from which load one added VM surely overloads it, and the load of each VM in the same
/// unit; the host then answers most [`would_overload`](ThresholdPolicy::would_overload)
/// questions itself. Implement it only when `classify` and `would_overload` are **row-local**
/// (a host's answer never depends on the other hosts of the batch) and the bounds hold for
/// every VM whose migration time is at most the host's `max_migration_s` (NaN where they
/// cannot be given); otherwise the host would place VMs where the policy would veto them.
/// Export with `amvm_sdk::export!(bounded_threshold: MyType)`.
pub trait BoundedThresholdPolicy: ThresholdPolicy {
    /// One pair of bounds per host of `hosts`.
    fn headroom(&mut self, ctx: &Context, hosts: &Hosts) -> Headroom;
    /// One load interval per VM of `vms`.
    fn vm_load(&mut self, ctx: &Context, vms: &Vms) -> VmLoads;
}

/// VM selection (the `selection` world).
pub trait SelectionPolicy: Sized + 'static {
    fn describe() -> Descriptor;
    fn configure(params: &Params) -> Result<Self, String>;
    /// Indexes into `vms` in the order the VMs should leave `host`, no duplicates. The host
    /// takes them one by one until `host` is no longer overloaded and calls again if the list
    /// runs out first, so returning just the single best VM is fine. Empty = migrate nothing.
    fn select(&mut self, ctx: &Context, host: &Hosts, vms: &Vms) -> Vec<usize>;
}

/// VM placement (the `placement` world).
pub trait PlacementPolicy: Sized + 'static {
    fn describe() -> Descriptor;
    fn configure(params: &Params) -> Result<Self, String>;
    /// One entry per candidate: a finite weight (lowest wins) or `None` to filter it out.
    fn weigh(&mut self, ctx: &Context, vm: &VmDemand, candidates: &Candidates) -> Vec<Option<f32>>;
}

/// Placement with a candidate index (the `indexed-placement` world): the host groups candidate
/// hosts (by capacity, power model, sleep state and a range of CPU in use), asks for a lower
/// bound of the weight per group, and weighs only the hosts of groups that can still win, so a
/// placement call does not grow with the cluster. Implement it only when
/// [`weigh`](PlacementPolicy::weigh) is **row-local** (a candidate's weight depends only on the
/// context, the VM and that candidate's row, never on the other candidates) and the bound is a
/// true lower bound for every row a group stands for; otherwise the host would pick a different
/// host than the full scan. Export with `amvm_sdk::export!(indexed_placement: MyType)`.
pub trait IndexedPlacementPolicy: PlacementPolicy {
    /// One entry per group: a lower bound of the weight of any row of the group, or `None` when
    /// [`weigh`](PlacementPolicy::weigh) filters out every such row.
    fn weigh_bound(&mut self, ctx: &Context, vm: &VmDemand, groups: &HostGroups) -> Vec<Option<f32>>;
}

/// Migration mode (the `migration-mode` world, contract 0.1.1): the mechanism of each
/// migration of a plan. Called once per decision cycle with every move the cycle decided; the
/// world migrates each VM with the mode returned for it. Export with
/// `amvm_sdk::export!(migration_mode: MyType)`.
pub trait MigrationModePolicy: Sized + 'static {
    /// Name, version and parameters (the kind is `MigrationMode`: use
    /// [`Descriptor::migration_mode`]).
    fn describe() -> Descriptor;
    fn configure(params: &Params) -> Result<Self, String>;
    /// One mode per row of `moves`.
    fn choose_mode(&mut self, ctx: &Context, moves: &Moves) -> Vec<Mode>;
}

/// Exports a policy type as the component's world.
///
/// `amvm_sdk::export!(threshold: MyType);`, `export!(bounded_threshold: MyType)` (a
/// [`BoundedThresholdPolicy`]), `export!(selection: MyType)`,
/// `export!(placement: MyType)` or `export!(indexed_placement: MyType)` (a
/// [`IndexedPlacementPolicy`]), `export!(migration_mode: MyType)` (a [`MigrationModePolicy`]).
/// Use it once per crate.
#[macro_export]
macro_rules! export {
    (threshold: $policy:ty) => {
        struct __AmvmExport;
        thread_local! {
            static __AMVM_POLICY: ::core::cell::RefCell<Option<$policy>> =
                const { ::core::cell::RefCell::new(None) };
        }
        impl $crate::bindings::threshold::Guest for __AmvmExport {
            fn describe() -> $crate::glue::types::Descriptor {
                $crate::glue::describe::<$policy>(<$policy as $crate::ThresholdPolicy>::describe())
            }
            fn configure(
                params: ::std::vec::Vec<$crate::glue::types::Param>,
            ) -> Result<(), ::std::string::String> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::configure_threshold::<$policy>(&mut p.borrow_mut(), params)
                })
            }
            fn classify(
                ctx: $crate::glue::types::Context,
                hosts: $crate::glue::types::Hosts,
            ) -> ::std::vec::Vec<u8> {
                __AMVM_POLICY.with(|p| $crate::glue::classify::<$policy>(&mut p.borrow_mut(), ctx, hosts))
            }
            fn would_overload(
                ctx: $crate::glue::types::Context,
                hosts: $crate::glue::types::Hosts,
                add: $crate::glue::types::Vms,
            ) -> ::std::vec::Vec<bool> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::would_overload::<$policy>(&mut p.borrow_mut(), ctx, hosts, add)
                })
            }
        }
        $crate::bindings::threshold::__export_threshold_world!(__AmvmExport with_types_in $crate::bindings::threshold);
    };
    (bounded_threshold: $policy:ty) => {
        struct __AmvmExport;
        thread_local! {
            static __AMVM_POLICY: ::core::cell::RefCell<Option<$policy>> =
                const { ::core::cell::RefCell::new(None) };
        }
        impl $crate::bindings::bounded_threshold::Guest for __AmvmExport {
            fn describe() -> $crate::glue::types::Descriptor {
                $crate::glue::describe::<$policy>(<$policy as $crate::ThresholdPolicy>::describe())
            }
            fn configure(
                params: ::std::vec::Vec<$crate::glue::types::Param>,
            ) -> Result<(), ::std::string::String> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::configure_threshold::<$policy>(&mut p.borrow_mut(), params)
                })
            }
            fn classify(
                ctx: $crate::glue::types::Context,
                hosts: $crate::glue::types::Hosts,
            ) -> ::std::vec::Vec<u8> {
                __AMVM_POLICY.with(|p| $crate::glue::classify::<$policy>(&mut p.borrow_mut(), ctx, hosts))
            }
            fn would_overload(
                ctx: $crate::glue::types::Context,
                hosts: $crate::glue::types::Hosts,
                add: $crate::glue::types::Vms,
            ) -> ::std::vec::Vec<bool> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::would_overload::<$policy>(&mut p.borrow_mut(), ctx, hosts, add)
                })
            }
            fn headroom(
                ctx: $crate::glue::types::Context,
                hosts: $crate::glue::types::Hosts,
            ) -> $crate::glue::types::Headroom {
                __AMVM_POLICY.with(|p| $crate::glue::headroom::<$policy>(&mut p.borrow_mut(), ctx, hosts))
            }
            fn vm_load(
                ctx: $crate::glue::types::Context,
                vms: $crate::glue::types::Vms,
            ) -> $crate::glue::types::VmLoads {
                __AMVM_POLICY.with(|p| $crate::glue::vm_load::<$policy>(&mut p.borrow_mut(), ctx, vms))
            }
        }
        $crate::bindings::bounded_threshold::__export_bounded_threshold_world!(__AmvmExport with_types_in $crate::bindings::bounded_threshold);
    };
    (selection: $policy:ty) => {
        struct __AmvmExport;
        thread_local! {
            static __AMVM_POLICY: ::core::cell::RefCell<Option<$policy>> =
                const { ::core::cell::RefCell::new(None) };
        }
        impl $crate::bindings::selection::Guest for __AmvmExport {
            fn describe() -> $crate::glue::types::Descriptor {
                $crate::glue::describe::<$policy>(<$policy as $crate::SelectionPolicy>::describe())
            }
            fn configure(
                params: ::std::vec::Vec<$crate::glue::types::Param>,
            ) -> Result<(), ::std::string::String> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::configure_selection::<$policy>(&mut p.borrow_mut(), params)
                })
            }
            fn select(
                ctx: $crate::glue::types::Context,
                host: $crate::glue::types::Hosts,
                vms: $crate::glue::types::Vms,
            ) -> ::std::vec::Vec<u32> {
                __AMVM_POLICY.with(|p| $crate::glue::select::<$policy>(&mut p.borrow_mut(), ctx, host, vms))
            }
        }
        $crate::bindings::selection::__export_selection_world!(__AmvmExport with_types_in $crate::bindings::selection);
    };
    (placement: $policy:ty) => {
        struct __AmvmExport;
        thread_local! {
            static __AMVM_POLICY: ::core::cell::RefCell<Option<$policy>> =
                const { ::core::cell::RefCell::new(None) };
        }
        impl $crate::bindings::placement::Guest for __AmvmExport {
            fn describe() -> $crate::glue::types::Descriptor {
                $crate::glue::describe::<$policy>(<$policy as $crate::PlacementPolicy>::describe())
            }
            fn configure(
                params: ::std::vec::Vec<$crate::glue::types::Param>,
            ) -> Result<(), ::std::string::String> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::configure_placement::<$policy>(&mut p.borrow_mut(), params)
                })
            }
            fn weigh(
                ctx: $crate::glue::types::Context,
                vm: $crate::glue::types::VmDemand,
                candidates: $crate::glue::types::Candidates,
            ) -> ::std::vec::Vec<Option<f32>> {
                __AMVM_POLICY.with(|p| $crate::glue::weigh::<$policy>(&mut p.borrow_mut(), ctx, vm, candidates))
            }
        }
        $crate::bindings::placement::__export_placement_world!(__AmvmExport with_types_in $crate::bindings::placement);
    };
    (migration_mode: $policy:ty) => {
        struct __AmvmExport;
        thread_local! {
            static __AMVM_POLICY: ::core::cell::RefCell<Option<$policy>> =
                const { ::core::cell::RefCell::new(None) };
        }
        impl $crate::bindings::migration_mode::Guest for __AmvmExport {
            fn describe() -> $crate::glue::types::ModeDescriptor {
                $crate::glue::describe_mode(<$policy as $crate::MigrationModePolicy>::describe())
            }
            fn configure(
                params: ::std::vec::Vec<$crate::glue::types::Param>,
            ) -> Result<(), ::std::string::String> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::configure_migration_mode::<$policy>(&mut p.borrow_mut(), params)
                })
            }
            fn choose_mode(
                ctx: $crate::glue::types::Context,
                moves: $crate::glue::types::Moves,
            ) -> ::std::vec::Vec<$crate::glue::types::CopyMode> {
                __AMVM_POLICY.with(|p| $crate::glue::choose_mode::<$policy>(&mut p.borrow_mut(), ctx, moves))
            }
        }
        $crate::bindings::migration_mode::__export_migration_mode_world!(__AmvmExport with_types_in $crate::bindings::migration_mode);
    };
    (indexed_placement: $policy:ty) => {
        struct __AmvmExport;
        thread_local! {
            static __AMVM_POLICY: ::core::cell::RefCell<Option<$policy>> =
                const { ::core::cell::RefCell::new(None) };
        }
        impl $crate::bindings::indexed_placement::Guest for __AmvmExport {
            fn describe() -> $crate::glue::types::Descriptor {
                $crate::glue::describe::<$policy>(<$policy as $crate::PlacementPolicy>::describe())
            }
            fn configure(
                params: ::std::vec::Vec<$crate::glue::types::Param>,
            ) -> Result<(), ::std::string::String> {
                __AMVM_POLICY.with(|p| {
                    $crate::glue::configure_placement::<$policy>(&mut p.borrow_mut(), params)
                })
            }
            fn weigh(
                ctx: $crate::glue::types::Context,
                vm: $crate::glue::types::VmDemand,
                candidates: $crate::glue::types::Candidates,
            ) -> ::std::vec::Vec<Option<f32>> {
                __AMVM_POLICY.with(|p| $crate::glue::weigh::<$policy>(&mut p.borrow_mut(), ctx, vm, candidates))
            }
            fn weigh_bound(
                ctx: $crate::glue::types::Context,
                vm: $crate::glue::types::VmDemand,
                groups: $crate::glue::types::HostGroups,
            ) -> ::std::vec::Vec<Option<f32>> {
                __AMVM_POLICY.with(|p| $crate::glue::weigh_bound::<$policy>(&mut p.borrow_mut(), ctx, vm, groups))
            }
        }
        $crate::bindings::indexed_placement::__export_indexed_placement_world!(__AmvmExport with_types_in $crate::bindings::indexed_placement);
    };
}
