//! A threshold policy that answers nonsense on purpose (`mode`: ok | bad-class | short |
//! overload-all | loop | slow). It implements the raw component bindings, not the SDK trait, because the SDK
//! cannot express an invalid class. Test suite only.
use std::cell::RefCell;

use amvm_sdk::bindings::amvm::policy::types::{
    Context, Descriptor, Hosts, Param, ParamSpec, PolicyKind, Value, ValueType, Vms,
};
use amvm_sdk::bindings::threshold::Guest;

thread_local! {
    static MODE: RefCell<String> = const { RefCell::new(String::new()) };
}

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Descriptor {
        Descriptor {
            name: "hostile-threshold".into(),
            version: "0.0.1".into(),
            kind: PolicyKind::Threshold,
            summary: "Test guest that misbehaves on purpose".into(),
            params: vec![ParamSpec {
                name: "mode".into(),
                ty: ValueType::Text,
                default: Value::Text("ok".into()),
                min: None,
                max: None,
                help: "ok | bad-class | short | overload-all | loop | slow".into(),
            }],
        }
    }

    fn configure(params: Vec<Param>) -> Result<(), String> {
        for p in params {
            if let (true, Value::Text(m)) = (p.name == "mode", p.value) {
                MODE.with(|mode| *mode.borrow_mut() = m);
            }
        }
        Ok(())
    }

    fn classify(_: Context, hosts: Hosts) -> Vec<u8> {
        let n = hosts.n as usize;
        MODE.with(|m| match m.borrow().as_str() {
            "bad-class" => vec![7; n],
            "short" => vec![0; n / 2],
            "overload-all" => vec![2; n],
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "slow" => {
                // Legal but slow: a fixed amount of work per call, under the per-call deadline.
                let mut x: u64 = 1;
                for _ in 0..16_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                vec![(x % 2) as u8; n]
            }
            _ => vec![0; n],
        })
    }

    fn would_overload(_: Context, hosts: Hosts, _: Vms) -> Vec<bool> {
        let n = hosts.n as usize;
        MODE.with(|m| match m.borrow().as_str() {
            "short" => vec![false; n / 2],
            "overload-all" => vec![true; n],
            _ => vec![false; n],
        })
    }
}

amvm_sdk::bindings::threshold::__export_threshold_world!(Hostile with_types_in amvm_sdk::bindings::threshold);
