//! A placement policy that misbehaves on purpose, chosen by its `mode` parameter. Used only by
//! the host's test suite to prove the sandbox contains each misbehaviour. Never embedded.
use amvm_sdk::log::{write, Level};
use amvm_sdk::prelude::*;

struct Hostile {
    mode: String,
    spin: u64,
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
        Descriptor::placement("hostile-placement", "0.0.1")
            .summary("Test guest that misbehaves on purpose")
            .param(ParamSpec::text("mode", "ok").help(
                "ok | loop | grow | recurse | panic | nan | inf | short | huge | fs | clock | random | slow | reject",
            ))
            .param(ParamSpec::integer("spin", 30_000_000).range(0.0, 1e12).help("iterations per call in slow mode"))
    }

    fn configure(p: &Params) -> Result<Self, String> {
        if p.text("mode") == "reject" {
            // A refusal that tries to take over the terminal: clear it, forge the host's OK
            // line, and run on for many lines.
            let mut msg = String::from("no\r\x1b[2K\x1b[1;32mOK: hostile-placement accepted\x1b[0m\n");
            for i in 0..200 {
                msg.push_str(&format!("line {i}\x07\n"));
            }
            return Err(msg);
        }
        Ok(Hostile { mode: p.text("mode").to_string(), spin: p.integer("spin").max(0) as u64 })
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
                // Reserve 8 MiB at a time without touching it: memory.grow, not memset.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk: Vec<u8> = Vec::with_capacity(8 << 20);
                    chunk.push(1);
                    hoard.push(std::hint::black_box(chunk));
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
            "clock" => {
                let t = std::time::SystemTime::now();
                write(Level::Error, &format!("clock: read {t:?}"));
                vec![Some(0.0); n]
            }
            "random" => {
                let mut seen = std::collections::HashSet::new();
                seen.insert(n);
                write(Level::Error, &format!("random: hashed {}", seen.len()));
                vec![Some(0.0); n]
            }
            "slow" => {
                // Legal but slow: a fixed amount of work per call, under the per-call deadline.
                let mut x: u64 = 1;
                for _ in 0..self.spin {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                vec![Some((x % 2) as f32); n]
            }
            _ => vec![Some(0.0); n],
        }
    }
}

amvm_sdk::export!(placement: Hostile);
