//! The built-in policies, compiled to components by `host/build.rs` and embedded in the binary
//! so users install nothing extra.

macro_rules! builtin {
    ($name:literal, $file:literal) => {
        ($name, include_bytes!(concat!(env!("AMVM_POLICIES_WASM_DIR"), "/", $file)) as &'static [u8])
    };
}

/// Built-in policy components by name.
pub const BUILTINS: &[(&str, &[u8])] = &[
    builtin!("thr", "amvm_policy_thr.wasm"),
    builtin!("mad", "amvm_policy_mad.wasm"),
    builtin!("iqr", "amvm_policy_iqr.wasm"),
    builtin!("lr", "amvm_policy_lr.wasm"),
    builtin!("lrr", "amvm_policy_lrr.wasm"),
    builtin!("mhod", "amvm_policy_mhod.wasm"),
    builtin!("otf", "amvm_policy_otf.wasm"),
    builtin!("mmt", "amvm_policy_mmt.wasm"),
    builtin!("mc", "amvm_policy_mc.wasm"),
    builtin!("rs", "amvm_policy_rs.wasm"),
    builtin!("mu", "amvm_policy_mu.wasm"),
    builtin!("pabfd", "amvm_policy_pabfd.wasm"),
    builtin!("spread", "amvm_policy_spread.wasm"),
    builtin!("pack", "amvm_policy_pack.wasm"),
    builtin!("model", "amvm_policy_model.wasm"),
];

/// The bytes of a built-in policy.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Directory holding every component the policies workspace built, including the test-only
/// misbehaving guests (`amvm_test_hostile_*.wasm`).
pub const WASM_DIR: &str = env!("AMVM_POLICIES_WASM_DIR");
