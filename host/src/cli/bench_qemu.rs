//! `amvm bench qemu`: the migration grid on real QEMU guests (issue #10): pre-copy, post-copy,
//! our hybrid (switch when pre-copy stalls) and QEMU's own post-copy-after-pre-copy (switch
//! after the first pass, as `virsh migrate --postcopy-after-precopy`), per memory size, side by
//! side with the memory engine on a matching synthetic workload and with the paper's model.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amvm_engine::memory::Mode;
use amvm_engine::model;
use amvm_engine::qemu::migrate::{measure_dirty_rate, model_mode};
use amvm_engine::qemu::{migrate, Guest, GuestImage, GuestOptions, HybridSwitch, MigrateError, MigrateOptions};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::migrate::{migrate_two_processes, parse_rate, parse_size, MigrateArgs};

#[derive(Debug, Args)]
pub struct BenchQemuArgs {
    /// Guest memory sizes (comma separated; this machine holds two guests of each at once).
    #[arg(long, default_value = "256M,512M,1G", value_delimiter = ',')]
    pub sizes: Vec<String>,
    /// Link cap for both phases (max-bandwidth and max-postcopy-bandwidth).
    #[arg(long, default_value = "1gbit")]
    pub bandwidth: String,
    /// The guest's memory-bound workload: MB/s it writes, into a working set of half its memory
    /// with 80 % of the writes in a hot fifth of it.
    #[arg(long, default_value_t = 100)]
    pub dirty_mbps: u32,
    /// Share of the working set that takes 80 % of the writes, in percent (0: one sequential
    /// sweep over all of it, the hardest case for pre-copy).
    #[arg(long, default_value_t = 20)]
    pub hot: u32,
    /// Variants: pre, post, hybrid (ours), qemu-hybrid (switch after the first pass).
    #[arg(long, default_value = "pre,post,hybrid,qemu-hybrid", value_delimiter = ',')]
    pub modes: Vec<String>,
    /// A pre-copy phase still running after this many seconds is cancelled (not converging).
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Also run the memory engine on a matching synthetic workload.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub memory_engine: bool,
    /// Guest image directory (`scripts/build-guest.sh DIR`).
    #[arg(long, default_value = "target/guest")]
    pub image: PathBuf,
    /// Print one JSON object only.
    #[arg(long)]
    pub json: bool,
    /// Print a Markdown table.
    #[arg(long)]
    pub markdown: bool,
}

fn variant(name: &str) -> Result<(Mode, HybridSwitch)> {
    Ok(match name {
        "pre" => (Mode::Pre, HybridSwitch::AtStall),
        "post" => (Mode::Post, HybridSwitch::AtStall),
        "hybrid" => (Mode::Hybrid, HybridSwitch::AtStall),
        "qemu-hybrid" => (Mode::Hybrid, HybridSwitch::AfterFirstPass),
        other => bail!("unknown variant {other:?} (pre, post, hybrid, qemu-hybrid)"),
    })
}

/// Waits for a heartbeat newer than `after` and returns its sequence number.
fn alive(g: &Guest, after: u64) -> Option<u64> {
    g.heartbeat(Duration::from_secs(20), |h| h.seq > after).ok().map(|h| h.seq)
}

pub fn run(a: BenchQemuArgs) -> Result<ExitCode> {
    let bandwidth = parse_rate(&a.bandwidth)?;
    let variants: Vec<(String, Mode, HybridSwitch)> =
        a.modes.iter().map(|m| variant(m).map(|(mode, s)| (m.clone(), mode, s))).collect::<Result<_>>()?;
    let image = GuestImage::in_dir(&a.image)?;
    let mut rows = Vec::new();
    let mut picks = std::collections::BTreeMap::<String, u32>::new();
    for size in &a.sizes {
        let mem_mb = (parse_size(size)? >> 20) as u32;
        if mem_mb < 128 {
            bail!("{size}: a guest needs at least 128M");
        }
        let gopts = GuestOptions {
            memory_mb: mem_mb,
            workload: format!(
                "amvm.mode=memory amvm.mem={} amvm.dirty={} amvm.hot={} amvm.heartbeat=250",
                mem_mb / 2,
                a.dirty_mbps,
                a.hot.min(100)
            ),
            ..GuestOptions::default()
        };
        eprintln!("bench qemu: booting a {mem_mb} MiB guest");
        let mut g = Guest::boot(&image, &gopts).context("boot the guest")?;
        if let Some(why) = &g.fallback {
            eprintln!("  TCG (KVM did not boot the guest: {why})");
        }
        // Warm: the working set is resident and being written.
        g.heartbeat(Duration::from_secs(120), |h| h.dirtied_mb > u64::from(mem_mb / 2))
            .context("the workload did not start writing")?;
        let measured = measure_dirty_rate(&mut g, 2)?;
        let choice = model_mode(&mut g, bandwidth)?;
        *picks.entry(choice.mode.name().to_string()).or_default() += 1;
        eprintln!(
            "  dirty rate {:.1} MB/s (QEMU calc-dirty-rate); the model picks {}",
            measured / 1e6,
            choice.mode.name()
        );
        let mut seq = alive(&g, 0).unwrap_or(0);
        for (name, mode, switch) in &variants {
            let opts = MigrateOptions {
                switch: *switch,
                bandwidth: Some(bandwidth),
                timeout: Duration::from_secs(a.timeout_s),
                ..MigrateOptions::new(*mode)
            };
            let mut dst = Guest::incoming(&image, &gopts, g.accel)?;
            let t0 = Instant::now();
            let result = migrate(&mut g, &mut dst, &opts, &mut |_| {});
            let wall = t0.elapsed().as_secs_f64() * 1e3;
            let mut row =
                json!({ "size_mb": mem_mb, "variant": name, "dirty_rate_measured": measured, "wall_ms": wall });
            match result {
                Ok(r) => {
                    g.kill();
                    g = dst;
                    let next = alive(&g, seq);
                    eprintln!(
                        "  {name:11} total {:7.0} ms  down {:4.0} ms  {:7.1} MiB  faults {:5}  passes {}  as {}{}",
                        r.total_time_ms,
                        r.downtime_ms,
                        r.bytes_transferred as f64 / 1048576.0,
                        r.page_faults,
                        r.passes,
                        r.completed_as,
                        if next.is_some() { "" } else { "  GUEST DEAD AFTERWARDS" }
                    );
                    row["report"] = serde_json::to_value(&r)?;
                    row["guest_alive"] = json!(next.is_some());
                    let Some(s) = next else {
                        rows.push(row);
                        bail!("the guest did not survive the {name} migration (see the report above)");
                    };
                    seq = s;
                }
                Err(MigrateError::NotConverged { secs, sent, remaining }) => {
                    drop(dst);
                    eprintln!(
                        "  {name:11} did not converge in {secs} s ({sent} bytes sent, {remaining} left); cancelled"
                    );
                    row["not_converged"] = json!({ "secs": secs, "bytes_sent": sent, "bytes_remaining": remaining });
                    row["guest_alive"] = json!(alive(&g, seq).is_some());
                }
                Err(e) => return Err(e).context(format!("{name} migration of the {mem_mb} MiB guest")),
            }
            let pred = model::predict(*mode, &choice.pre.params);
            row["model"] = json!({
                "t_mig_ms": pred.t_mig * 1e3, "t_down_ms": pred.t_down * 1e3,
                "v_mig_bytes": pred.v_mig, "faults": pred.faults, "rounds": pred.rounds,
            });
            if a.memory_engine && name != "qemu-hybrid" {
                let args = MigrateArgs {
                    mode: mode.name().to_string(),
                    mem: format!("{mem_mb}M"),
                    workload: "custom".into(),
                    bandwidth: Some(a.bandwidth.clone()),
                    downtime_ms: 300.0,
                    write_rate: Some(f64::from(a.dirty_mbps) * 1e6 / 4096.0),
                    read_rate: Some(f64::from(a.dirty_mbps) * 1e6 / 4096.0),
                    hot_fraction: Some(if a.hot == 0 { 0.5 } else { f64::from(a.hot.min(100)) / 200.0 }),
                    hot_prob: Some(if a.hot == 0 { 1.0 } else { 0.8 }),
                    json: true,
                    ..MigrateArgs::defaults()
                };
                match migrate_two_processes(&args) {
                    Ok(m) => {
                        row["memory_engine"] = json!({
                            "total_time_ms": m.total_time_ms, "downtime_ms": m.downtime_ms,
                            "bytes_transferred": m.bytes_transferred, "page_faults": m.page_faults,
                            "rounds": m.rounds, "verified": m.verified,
                        })
                    }
                    Err(e) => row["memory_engine"] = json!({ "error": format!("{e:#}") }),
                }
            }
            rows.push(row);
        }
        let _ = g.shutdown(Duration::from_secs(20));
    }
    let guest_accel = rows.first().and_then(|r| r["report"]["accel"].as_str()).unwrap_or("?").to_string();
    let out = json!({
        "bench": "qemu",
        "bandwidth_bytes_per_s": bandwidth,
        "workload": format!(
            "memory: {} MB/s into half the guest's memory{}",
            a.dirty_mbps,
            if a.hot == 0 { ", sequential sweep".to_string() } else { format!(", 80 % into a hot {} %", a.hot) }
        ),
        "accel": guest_accel,
        "model_picks": picks,
        "runs": rows,
    });
    if a.markdown {
        println!("{}", markdown(&out));
    }
    if a.json || !a.markdown {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn markdown(out: &Value) -> String {
    let mut s = String::from(
        "| size | variant | total ms | downtime ms | MiB sent | page faults | passes | ended as | model: total ms / down ms / MiB / faults | memory engine: total ms / down ms / MiB / faults |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |\n",
    );
    let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1048576.0;
    for r in out["runs"].as_array().into_iter().flatten() {
        let m = &r["model"];
        let model = format!(
            "{:.0} / {:.0} / {:.0} / {:.0}",
            m["t_mig_ms"].as_f64().unwrap_or(0.0),
            m["t_down_ms"].as_f64().unwrap_or(0.0),
            mib(&m["v_mig_bytes"]),
            m["faults"].as_f64().unwrap_or(0.0)
        );
        let e = &r["memory_engine"];
        let engine = if e.is_null() {
            "–".to_string()
        } else if let Some(err) = e["error"].as_str() {
            format!("failed: {}", err.chars().take(60).collect::<String>())
        } else {
            format!(
                "{:.0} / {:.1} / {:.0} / {}",
                e["total_time_ms"].as_f64().unwrap_or(0.0),
                e["downtime_ms"].as_f64().unwrap_or(0.0),
                mib(&e["bytes_transferred"]),
                e["page_faults"]
            )
        };
        let line = if let Some(nc) = r.get("not_converged") {
            format!(
                "| {} MiB | {} | > {} s | – | {:.0} | – | – | not converged | {model} | {engine} |\n",
                r["size_mb"],
                r["variant"].as_str().unwrap_or("?"),
                nc["secs"],
                mib(&nc["bytes_sent"])
            )
        } else {
            let q = &r["report"];
            format!(
                "| {} MiB | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {model} | {engine} |\n",
                r["size_mb"],
                r["variant"].as_str().unwrap_or("?"),
                q["total_time_ms"].as_f64().unwrap_or(0.0),
                q["downtime_ms"].as_f64().unwrap_or(0.0),
                mib(&q["bytes_transferred"]),
                q["page_faults"],
                q["passes"],
                q["completed_as"].as_str().unwrap_or("?")
            )
        };
        s.push_str(&line);
    }
    s
}
