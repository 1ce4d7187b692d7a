//! A placement policy that misbehaves on purpose, chosen by its `mode` parameter. Used only by
//! the host's test suite to prove the sandbox contains each misbehaviour. Never embedded.
use amvm_sdk::log::{write, Level};
use amvm_sdk::prelude::*;

struct Hostile {
    mode: String,
}

#[inline(never)]
fn recurse(depth: u64, acc: &mut [u64; 16]) -> u64 {
    acc[(depth % 16) as usize] = depth;
    if acc[0] == u64::MAX {
        return 0;
    }
    recurse(depth + 1, acc) + acc[(depth % 7) as usize]
}

impl PlacementPolicy for Hostile {
    fn describe() -> Descriptor {
        Descriptor::placement("hostile-placement", "0.0.1").summary("Test guest that misbehaves on purpose").param(
            ParamSpec::text("mode", "ok").help("ok | loop | grow | recurse | panic | nan | inf | short | huge | fs"),
        )
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Hostile { mode: p.text("mode").to_string() })
    }

    fn weigh(&mut self, _: &Context, _: &VmDemand, c: &Candidates) -> Vec<Option<f32>> {
        let n = c.len();
        match self.mode.as_str() {
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let mut acc = [0u64; 16];
                let r = recurse(1, &mut acc);
                vec![Some(r as f32); n]
            }
            "panic" => panic!("hostile guest panics on purpose"),
            "nan" => vec![Some(f32::NAN); n],
            "inf" => vec![Some(f32::INFINITY); n],
            "short" => vec![Some(0.0); n / 2],
            "huge" => vec![Some(0.0); n * 1000 + 100_000],
            "fs" => {
                match std::fs::read_to_string("/etc/passwd") {
                    Ok(s) => write(Level::Error, &format!("fs: read {} bytes", s.len())),
                    Err(e) => write(Level::Info, &format!("fs: denied: {e}")),
                }
                vec![Some(0.0); n]
            }
            _ => vec![Some(0.0); n],
        }
    }
}

amvm_sdk::export!(placement: Hostile);
