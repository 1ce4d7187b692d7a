//! One migration with both halves in this process (threads), printing the JSON report.
//! Usage: `local_migrate MODE MEM_MIB WORKLOAD [BANDWIDTH_BYTES_PER_S]`.
//! `amvm migrate` is the real two-process front end; this is for quick engine experiments.

use std::net::TcpListener;

use amvm_engine::memory::dest::{run_dest, DestOptions};
use amvm_engine::memory::source::run_source;
use amvm_engine::memory::workload::WorkloadSpec;
use amvm_engine::memory::SourceConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: local_migrate MODE MEM_MIB WORKLOAD [BANDWIDTH_BYTES_PER_S]";
    let mode = a.get(1).ok_or(usage)?.parse()?;
    let mib: u64 = a.get(2).ok_or(usage)?.parse()?;
    let spec = WorkloadSpec::preset(a.get(3).ok_or(usage)?).ok_or("unknown workload")?;
    let mut cfg = SourceConfig::new(mode, mib << 20, spec);
    cfg.bandwidth = a.get(4).map(|b| b.parse()).transpose()?;
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?.to_string();
    let dest = std::thread::spawn(move || run_dest(&l, &DestOptions::default()));
    let report = run_source(&cfg, &addr, &|_| {})?;
    dest.join().map_err(|_| "destination panicked")??;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
