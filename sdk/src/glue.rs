//! Glue between the generated bindings and the plain traits. Used by [`crate::export!`].

use crate::describe::{Descriptor, Params, PolicyKind, Value};
use crate::views::{Candidates, Context, HostGroups, Hosts, Moves, VmDemand, Vms};
use crate::{
    BoundedThresholdPolicy, IndexedPlacementPolicy, MigrationModePolicy, Mode, PlacementPolicy, SelectionPolicy,
    ThresholdPolicy,
};

pub use crate::bindings::amvm::policy::types;

fn value_to_raw(v: &Value) -> types::Value {
    match v {
        Value::Float(f) => types::Value::Float(*f),
        Value::Integer(i) => types::Value::Integer(*i),
        Value::Flag(b) => types::Value::Flag(*b),
        Value::Text(s) => types::Value::Text(s.clone()),
    }
}

fn value_from_raw(v: types::Value) -> Value {
    match v {
        types::Value::Float(f) => Value::Float(f),
        types::Value::Integer(i) => Value::Integer(i),
        types::Value::Flag(b) => Value::Flag(b),
        types::Value::Text(s) => Value::Text(s),
    }
}

/// Converts a descriptor to its wire form.
pub fn describe<P>(d: Descriptor) -> types::Descriptor {
    let params = param_specs(&d);
    types::Descriptor {
        name: d.name,
        version: d.version,
        kind: match d.kind {
            PolicyKind::Threshold => types::PolicyKind::Threshold,
            PolicyKind::Selection => types::PolicyKind::Selection,
            PolicyKind::Placement => types::PolicyKind::Placement,
            // A migration-mode descriptor exported through another world: the host goes by the
            // world's functions and refuses the module as a kind mismatch.
            PolicyKind::MigrationMode => types::PolicyKind::Threshold,
        },
        summary: d.summary,
        params,
    }
}

/// Converts a migration-mode descriptor to its wire form (no kind: the world says it).
pub fn describe_mode(d: Descriptor) -> types::ModeDescriptor {
    let params = param_specs(&d);
    types::ModeDescriptor { name: d.name, version: d.version, summary: d.summary, params }
}

fn param_specs(d: &Descriptor) -> Vec<types::ParamSpec> {
    d.params
        .iter()
        .map(|p| types::ParamSpec {
            name: p.name.clone(),
            ty: match p.default {
                Value::Float(_) => types::ValueType::Float,
                Value::Integer(_) => types::ValueType::Integer,
                Value::Flag(_) => types::ValueType::Flag,
                Value::Text(_) => types::ValueType::Text,
            },
            default: value_to_raw(&p.default),
            min: p.min,
            max: p.max,
            help: p.help.clone(),
        })
        .collect()
}

fn params(descriptor: &Descriptor, given: Vec<types::Param>) -> Params {
    Params::resolve(descriptor, given.into_iter().map(|p| (p.name, value_from_raw(p.value))))
}

fn context(c: types::Context) -> Context {
    Context {
        cycle: c.cycle,
        interval_s: c.interval_s,
        seed: c.seed,
        migration_mbps: c.migration_mbps,
        power_curves: c.power_curves,
    }
}

fn hosts(h: types::Hosts) -> Hosts {
    Hosts {
        n: h.n,
        window: h.window,
        cpu: h.cpu,
        mem: h.mem,
        net: h.net,
        cpu_capacity: h.cpu_capacity,
        mem_capacity: h.mem_capacity,
        max_migration_s: h.max_migration_s,
        vm_count: h.vm_count,
    }
}

fn vms(v: types::Vms) -> Vms {
    Vms { n: v.n, window: v.window, cpu: v.cpu, mips: v.mips, ram_mb: v.ram_mb }
}

fn candidates(c: types::Candidates) -> Candidates {
    Candidates {
        n: c.n,
        cpu_used: c.cpu_used,
        cpu_capacity: c.cpu_capacity,
        mem_used: c.mem_used,
        mem_capacity: c.mem_capacity,
        power_model: c.power_model,
        vm_count: c.vm_count,
        asleep: c.asleep,
    }
}

fn configure_with<P>(
    slot: &mut Option<P>,
    descriptor: Descriptor,
    given: Vec<types::Param>,
    build: fn(&Params) -> Result<P, String>,
) -> Result<(), String> {
    crate::log::install_panic_hook();
    *slot = Some(build(&params(&descriptor, given))?);
    Ok(())
}

fn configured<P>(
    slot: &mut Option<P>,
    descriptor: fn() -> Descriptor,
    build: fn(&Params) -> Result<P, String>,
) -> &mut P {
    if slot.is_none() {
        crate::log::install_panic_hook();
        match build(&Params::resolve(&descriptor(), [])) {
            Ok(p) => *slot = Some(p),
            Err(e) => panic!("policy has no valid default configuration: {e}"),
        }
    }
    match slot {
        Some(p) => p,
        None => unreachable!("configured above"),
    }
}

pub fn configure_threshold<P: ThresholdPolicy>(slot: &mut Option<P>, given: Vec<types::Param>) -> Result<(), String> {
    configure_with(slot, P::describe(), given, P::configure)
}

pub fn configure_selection<P: SelectionPolicy>(slot: &mut Option<P>, given: Vec<types::Param>) -> Result<(), String> {
    configure_with(slot, P::describe(), given, P::configure)
}

pub fn configure_placement<P: PlacementPolicy>(slot: &mut Option<P>, given: Vec<types::Param>) -> Result<(), String> {
    configure_with(slot, P::describe(), given, P::configure)
}

pub fn configure_migration_mode<P: MigrationModePolicy>(
    slot: &mut Option<P>,
    given: Vec<types::Param>,
) -> Result<(), String> {
    configure_with(slot, P::describe(), given, P::configure)
}

pub fn choose_mode<P: MigrationModePolicy>(
    slot: &mut Option<P>,
    ctx: types::Context,
    m: types::Moves,
) -> Vec<types::CopyMode> {
    let p = configured(slot, P::describe, P::configure);
    let moves = Moves { n: m.n, ram_mb: m.ram_mb, dirty_mbps: m.dirty_mbps, cpu: m.cpu, link_mbps: m.link_mbps };
    p.choose_mode(&context(ctx), &moves)
        .into_iter()
        .map(|mode| match mode {
            Mode::Pre => types::CopyMode::Pre,
            Mode::Post => types::CopyMode::Post,
            Mode::Hybrid => types::CopyMode::Hybrid,
        })
        .collect()
}

pub fn classify<P: ThresholdPolicy>(slot: &mut Option<P>, ctx: types::Context, h: types::Hosts) -> Vec<u8> {
    let p = configured(slot, P::describe, P::configure);
    p.classify(&context(ctx), &hosts(h)).into_iter().map(|c| c as u8).collect()
}

pub fn would_overload<P: ThresholdPolicy>(
    slot: &mut Option<P>,
    ctx: types::Context,
    h: types::Hosts,
    add: types::Vms,
) -> Vec<bool> {
    let p = configured(slot, P::describe, P::configure);
    p.would_overload(&context(ctx), &hosts(h), &vms(add))
}

pub fn headroom<P: BoundedThresholdPolicy>(
    slot: &mut Option<P>,
    ctx: types::Context,
    h: types::Hosts,
) -> types::Headroom {
    let p = configured(slot, P::describe, P::configure);
    let r = p.headroom(&context(ctx), &hosts(h));
    types::Headroom { accepts: r.accepts, refuses: r.refuses, migration_s: r.migration_s }
}

pub fn vm_load<P: BoundedThresholdPolicy>(slot: &mut Option<P>, ctx: types::Context, v: types::Vms) -> types::VmLoads {
    let p = configured(slot, P::describe, P::configure);
    let r = p.vm_load(&context(ctx), &vms(v));
    types::VmLoads { low: r.low, high: r.high }
}

pub fn select<P: SelectionPolicy>(
    slot: &mut Option<P>,
    ctx: types::Context,
    host: types::Hosts,
    v: types::Vms,
) -> Vec<u32> {
    let p = configured(slot, P::describe, P::configure);
    p.select(&context(ctx), &hosts(host), &vms(v)).into_iter().map(|i| i as u32).collect()
}

pub fn weigh<P: PlacementPolicy>(
    slot: &mut Option<P>,
    ctx: types::Context,
    vm: types::VmDemand,
    c: types::Candidates,
) -> Vec<Option<f32>> {
    let p = configured(slot, P::describe, P::configure);
    p.weigh(&context(ctx), &VmDemand { cpu_mips: vm.cpu_mips, ram_mb: vm.ram_mb }, &candidates(c))
}

pub fn weigh_bound<P: IndexedPlacementPolicy>(
    slot: &mut Option<P>,
    ctx: types::Context,
    vm: types::VmDemand,
    g: types::HostGroups,
) -> Vec<Option<f32>> {
    let p = configured(slot, P::describe, P::configure);
    let groups = HostGroups {
        n: g.n,
        cpu_used_min: g.cpu_used_min,
        cpu_used_max: g.cpu_used_max,
        cpu_capacity: g.cpu_capacity,
        mem_capacity: g.mem_capacity,
        power_model: g.power_model,
        asleep: g.asleep,
    };
    p.weigh_bound(&context(ctx), &VmDemand { cpu_mips: vm.cpu_mips, ram_mb: vm.ram_mb }, &groups)
}
