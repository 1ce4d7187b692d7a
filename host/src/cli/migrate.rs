//! `amvm migrate`, `amvm engine source|dest` and `amvm bench migration`: the memory
//! migration engine (pre-, post-, hybrid-copy) run as two processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use amvm_engine::memory::dest::{run_dest, DestOptions};
use amvm_engine::memory::source::{run_source, Progress};
use amvm_engine::memory::workload::WorkloadSpec;
use amvm_engine::memory::{MigrationReport, Mode, SourceConfig};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

/// Options shared by `amvm migrate` and `amvm engine source`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Mechanism: pre, post or hybrid.
    #[arg(long, default_value = "hybrid")]
    pub mode: String,
    /// Guest memory, e.g. 256M, 1G, 4GiB.
    #[arg(long, default_value = "256M")]
    pub mem: String,
    /// Workload: idle, memory, cpu, io or custom.
    #[arg(long, default_value = "memory")]
    pub workload: String,
    /// Link cap, e.g. 1gbit, 100mbit, 125MB (bytes per second); unlimited when absent.
    #[arg(long)]
    pub bandwidth: Option<String>,
    /// Push streams after resume.
    #[arg(long, default_value_t = 1)]
    pub streams: u32,
    /// Neighbour pages prefetched with each demand reply.
    #[arg(long, default_value_t = 8)]
    pub prefetch: usize,
    /// Hybrid/post-copy: start active push this many milliseconds after resume (pure demand until then).
    #[arg(long, default_value_t = 0)]
    pub push_delay_ms: u64,
    /// Pre-copy round limit.
    #[arg(long, default_value_t = 20)]
    pub max_rounds: u32,
    /// Pre-copy downtime target in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub downtime_ms: f64,
    /// Custom workload: page writes per second (overrides the preset).
    #[arg(long)]
    pub write_rate: Option<f64>,
    /// Custom workload: page reads per second (overrides the preset).
    #[arg(long)]
    pub read_rate: Option<f64>,
    /// Custom workload: hot-set fraction of memory (overrides the preset).
    #[arg(long)]
    pub hot_fraction: Option<f64>,
    /// Custom workload: probability an access hits the hot set (locality).
    #[arg(long)]
    pub hot_prob: Option<f64>,
    /// Use synchronous write-protect dirty tracking even where async is available.
    #[arg(long)]
    pub sync_wp: bool,
    /// Workload warm-up before the migration starts, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub warmup_ms: u64,
    /// How long a lost link may stay down before the migration gives up, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub recovery_timeout_ms: u64,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl MigrateArgs {
    /// The command line's defaults (the `#[arg]` attributes above are their one source).
    pub fn defaults() -> MigrateArgs {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: MigrateArgs,
        }
        <Defaults as clap::Parser>::parse_from(["amvm"]).args
    }
}

/// `amvm engine …`: one half of a migration (usable across two machines).
#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Receive a guest: listen, migrate it in, run and verify it.
    Dest {
        /// Address to listen on (port 0 picks a free port; the chosen one is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// How long to wait for a source that lost its link, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        recovery_timeout_ms: u64,
    },
    /// Boot a guest with a workload and migrate it to a listening destination.
    Source {
        /// Destination address.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        args: Box<MigrateArgs>,
    },
}

/// Options of `amvm bench migration`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Memory sizes (comma separated).
    #[arg(long, default_value = "256M,512M,1G,2G,4G", value_delimiter = ',')]
    pub sizes: Vec<String>,
    /// Workloads (comma separated).
    #[arg(long, default_value = "idle,memory,cpu,io", value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Modes (comma separated).
    #[arg(long, default_value = "pre,post,hybrid", value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Link cap of the grid.
    #[arg(long, default_value = "1gbit")]
    pub bandwidth: String,
    /// Memory size of the unthrottled loopback runs (empty to skip them).
    #[arg(long, default_value = "1G")]
    pub loopback_size: String,
    /// Print the whole result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print a Markdown table.
    #[arg(long)]
    pub markdown: bool,
}

/// Parses `256M`, `1G`, `4GiB`, `512MB`, `1048576` into bytes (binary multiples).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let i = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(i);
    let n: f64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => bail!("bad size unit {u:?} in {s:?}"),
    };
    let v = n * mult as f64;
    if !(v.is_finite() && v >= 1.0) {
        bail!("bad size {s:?}");
    }
    Ok(v as u64)
}

/// Parses a rate: `1gbit`, `100mbit`, `10kbit` (bits/s) or `125MB` / `125M` (bytes/s) into bytes/s.
pub fn parse_rate(s: &str) -> Result<f64> {
    let l = s.trim().to_ascii_lowercase();
    let l = l.strip_suffix("/s").unwrap_or(&l).to_string();
    for (suffix, bits) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)] {
        if let Some(n) = l.strip_suffix(suffix) {
            let n: f64 = n.trim().parse().with_context(|| format!("bad rate {s:?}"))?;
            if !(n.is_finite() && n > 0.0) {
                bail!("bad rate {s:?}");
            }
            return Ok(n * bits / 8.0);
        }
    }
    Ok(parse_size(&l).with_context(|| format!("bad rate {s:?} (e.g. 1gbit, 100mbit, 125MB)"))? as f64)
}

fn config(a: &MigrateArgs) -> Result<SourceConfig> {
    let mode: Mode = a.mode.parse()?;
    let mem = parse_size(&a.mem)?;
    let mut spec = WorkloadSpec::preset(&a.workload)
        .with_context(|| format!("unknown workload {:?} (idle, memory, cpu, io, custom)", a.workload))?;
    if let Some(r) = a.write_rate {
        spec.writes_per_s = r.max(0.0);
    }
    if let Some(r) = a.read_rate {
        spec.reads_per_s = r.max(0.0);
    }
    if let Some(h) = a.hot_fraction {
        spec.hot_fraction = h.clamp(0.0, 1.0);
    }
    if let Some(h) = a.hot_prob {
        spec.hot_prob = h.clamp(0.0, 1.0);
    }
    let mut cfg = SourceConfig::new(mode, mem, spec);
    cfg.bandwidth = a.bandwidth.as_deref().map(parse_rate).transpose()?;
    cfg.push_streams = a.streams.clamp(1, 16);
    cfg.prefetch = a.prefetch.min(512);
    cfg.push_delay = Duration::from_millis(a.push_delay_ms.min(60_000));
    cfg.max_rounds = a.max_rounds.max(1);
    cfg.downtime_target = Duration::from_secs_f64(a.downtime_ms.max(0.0) / 1e3);
    cfg.warmup = Duration::from_millis(a.warmup_ms);
    cfg.force_sync_wp = a.sync_wp;
    cfg.recovery_timeout = Duration::from_millis(a.recovery_timeout_ms);
    Ok(cfg)
}

/// Runs `amvm engine …`.
pub fn run_engine(cmd: EngineCommand) -> Result<ExitCode> {
    match cmd {
        EngineCommand::Dest { listen, recovery_timeout_ms } => {
            let l = TcpListener::bind(&listen).with_context(|| format!("cannot listen on {listen}"))?;
            println!("listening {}", l.local_addr()?);
            std::io::stdout().flush()?;
            let opts =
                DestOptions { recovery_timeout: Duration::from_millis(recovery_timeout_ms), ..DestOptions::default() };
            let stats = run_dest(&l, &opts)?;
            let ok = stats.verification.as_ref().is_some_and(|v| v.ok);
            println!("{}", serde_json::to_string(&stats)?);
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        EngineCommand::Source { to, args } => {
            let cfg = config(&args)?;
            let bar = indicatif::ProgressBar::new(cfg.mem_bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let progress = |p: Progress| {
                bar.set_message(p.phase);
                bar.set_position(p.bytes);
            };
            let report = run_source(&cfg, &to, &progress);
            bar.finish_and_clear();
            let report = report?;
            print_report(&report, args.json)?;
            Ok(if report.verified { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn print_report(r: &MigrationReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let m = &r.model;
    println!("{} {} MiB {}: verified={}", r.mode.name(), r.mem_bytes >> 20, r.workload, r.verified);
    println!("                 measured     model");
    println!("total time     {:9.1} ms {:9.1} ms", r.total_time_ms, m.t_mig * 1e3);
    println!("downtime       {:9.2} ms {:9.2} ms", r.downtime_ms, m.t_down * 1e3);
    println!("transferred    {:9.1} MiB {:8.1} MiB", r.bytes_transferred as f64 / 1048576.0, m.v_mig / 1048576.0);
    println!("page faults    {:9} {:12.0}", r.page_faults, m.faults);
    println!(
        "rounds {}  dirty at stop {} pages  prefetch hits {}  push discarded {}  fault p50/p99 {:.0}/{:.0} µs  tracking {}",
        r.rounds, r.dirty_pages_at_stop, r.prefetch_hits, r.push_discarded, r.fault_latency_p50_us, r.fault_latency_p99_us, r.dirty_tracking
    );
    Ok(())
}

fn source_argv(a: &MigrateArgs) -> Vec<String> {
    let mut v = vec![
        "--mode".into(),
        a.mode.clone(),
        "--mem".into(),
        a.mem.clone(),
        "--workload".into(),
        a.workload.clone(),
        "--streams".into(),
        a.streams.to_string(),
        "--prefetch".into(),
        a.prefetch.to_string(),
        "--push-delay-ms".into(),
        a.push_delay_ms.to_string(),
        "--max-rounds".into(),
        a.max_rounds.to_string(),
        "--downtime-ms".into(),
        a.downtime_ms.to_string(),
        "--warmup-ms".into(),
        a.warmup_ms.to_string(),
        "--recovery-timeout-ms".into(),
        a.recovery_timeout_ms.to_string(),
        "--json".into(),
    ];
    let opt = [
        ("--bandwidth", a.bandwidth.clone()),
        ("--write-rate", a.write_rate.map(|x| x.to_string())),
        ("--read-rate", a.read_rate.map(|x| x.to_string())),
        ("--hot-fraction", a.hot_fraction.map(|x| x.to_string())),
        ("--hot-prob", a.hot_prob.map(|x| x.to_string())),
    ];
    for (k, val) in opt {
        if let Some(val) = val {
            v.push(k.into());
            v.push(val);
        }
    }
    if a.sync_wp {
        v.push("--sync-wp".into());
    }
    v
}

/// Runs one migration as two child processes of this executable; returns the source report.
pub fn migrate_two_processes(a: &MigrateArgs) -> Result<MigrationReport> {
    config(a)?; // reject bad arguments before starting anything
    let exe = std::env::current_exe().context("cannot find the amvm executable")?;
    let mut dest = Command::new(&exe)
        .args(["engine", "dest", "--listen", "127.0.0.1:0", "--recovery-timeout-ms"])
        .arg(a.recovery_timeout_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the destination process")?;
    let mut out = BufReader::new(dest.stdout.take().context("no destination stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("listening ") else {
        let _ = dest.kill();
        bail!("destination did not start: {line:?}");
    };
    let src = Command::new(&exe)
        .args(["engine", "source", "--to", addr])
        .args(source_argv(a))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the source process")?;
    let src_out = src.wait_with_output()?;
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let dest_status = dest.wait()?;
    let text = String::from_utf8_lossy(&src_out.stdout);
    let report: MigrationReport = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("source failed ({}) and printed no report", src_out.status))?;
    if !dest_status.success() {
        tracing::warn!("destination exited with {dest_status}");
    }
    Ok(report)
}

/// Runs `amvm migrate`.
pub fn run_migrate(a: &MigrateArgs) -> Result<ExitCode> {
    let r = migrate_two_processes(a)?;
    print_report(&r, a.json)?;
    Ok(if r.verified { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Raw TCP throughput over loopback (bytes/s), for comparison with unthrottled migrations.
pub fn loopback_throughput(bytes: u64) -> Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let rx = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf)?;
            if k == 0 {
                return Ok(n);
            }
            n += k as u64;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    drop(s);
    let got = rx.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    Ok(got as f64 / t.elapsed().as_secs_f64())
}

/// Runs `amvm bench …`.
pub fn run_bench(b: BenchArgs) -> Result<ExitCode> {
    let base = MigrateArgs { bandwidth: Some(b.bandwidth.clone()), json: true, ..MigrateArgs::defaults() };
    parse_rate(&b.bandwidth)?;
    let mut runs = Vec::new();
    let one = |args: MigrateArgs, runs: &mut Vec<serde_json::Value>| -> Result<()> {
        eprintln!("bench: {} {} {} bandwidth={:?}", args.mode, args.mem, args.workload, args.bandwidth);
        match migrate_two_processes(&args) {
            Ok(r) => {
                eprintln!(
                    "  total {:.0} ms, down {:.2} ms, {:.1} MiB, faults {}, verified {}",
                    r.total_time_ms,
                    r.downtime_ms,
                    r.bytes_transferred as f64 / 1048576.0,
                    r.page_faults,
                    r.verified
                );
                runs.push(serde_json::to_value(&r)?);
            }
            Err(e) => {
                eprintln!("  failed: {e:#}");
                runs.push(serde_json::json!({"mode": args.mode, "mem": args.mem, "workload": args.workload, "error": format!("{e:#}")}));
            }
        }
        Ok(())
    };
    for w in &b.workloads {
        for s in &b.sizes {
            for m in &b.modes {
                one(MigrateArgs { mode: m.clone(), mem: s.clone(), workload: w.clone(), ..base.clone() }, &mut runs)?;
            }
        }
    }
    let mut loopback = Vec::new();
    let mut raw = None;
    if !b.loopback_size.is_empty() {
        raw = Some(loopback_throughput(parse_size(&b.loopback_size)?.max(1 << 28))?);
        for w in &b.workloads {
            for m in &b.modes {
                let args = MigrateArgs {
                    mode: m.clone(),
                    mem: b.loopback_size.clone(),
                    workload: w.clone(),
                    bandwidth: None,
                    ..base.clone()
                };
                one(args, &mut loopback)?;
            }
        }
    }
    let result = serde_json::json!({
        "bandwidth": b.bandwidth,
        "runs": runs,
        "loopback": { "raw_tcp_bytes_per_s": raw, "runs": loopback },
    });
    if b.markdown {
        println!("{}", markdown(&result));
    }
    if b.json || !b.markdown {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn markdown(result: &serde_json::Value) -> String {
    let mut s = String::new();
    s.push_str("| workload | mem | mode | total ms (model) | downtime ms (model) | MiB sent (model) | faults (model) | p50/p99 µs | verified |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let mut rows = |runs: &serde_json::Value, label: &str| {
        for r in runs.as_array().into_iter().flatten() {
            let Ok(r) = serde_json::from_value::<MigrationReport>(r.clone()) else {
                s.push_str(&format!("| {} | {} | {} | error: {} |\n", r["workload"], r["mem"], r["mode"], r["error"]));
                continue;
            };
            s.push_str(&format!(
                "| {} | {} MiB{} | {} | {:.0} ({:.0}) | {:.2} ({:.2}) | {:.1} ({:.1}) | {} ({:.0}) | {:.0}/{:.0} | {} |\n",
                r.workload,
                r.mem_bytes >> 20,
                label,
                r.mode.name(),
                r.total_time_ms,
                r.model.t_mig * 1e3,
                r.downtime_ms,
                r.model.t_down * 1e3,
                r.bytes_transferred as f64 / 1048576.0,
                r.model.v_mig / 1048576.0,
                r.page_faults,
                r.model.faults,
                r.fault_latency_p50_us,
                r.fault_latency_p99_us,
                r.verified
            ));
        }
    };
    rows(&result["runs"], "");
    rows(&result["loopback"]["runs"], " loopback");
    if let Some(raw) = result["loopback"]["raw_tcp_bytes_per_s"].as_f64() {
        s.push_str(&format!("\nRaw TCP loopback throughput in the same run: {:.0} MiB/s\n", raw / 1048576.0));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_command_lines() {
        let d = MigrateArgs::defaults();
        assert_eq!((d.mode.as_str(), d.mem.as_str(), d.workload.as_str()), ("hybrid", "256M", "memory"));
        assert_eq!((d.streams, d.prefetch, d.max_rounds, d.warmup_ms), (1, 8, 20, 300));
        assert_eq!((d.downtime_ms, d.recovery_timeout_ms, d.bandwidth, d.json), (5.0, 30_000, None, false));
    }

    #[test]
    fn sizes_and_rates_parse() {
        assert_eq!(parse_size("256M").ok(), Some(256 << 20));
        assert_eq!(parse_size("4GiB").ok(), Some(4 << 30));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_rate("1gbit").ok(), Some(125e6));
        assert_eq!(parse_rate("100Mbit/s").ok(), Some(12.5e6));
        assert_eq!(parse_rate("1M").ok(), Some(1048576.0));
        assert!(parse_rate("fast").is_err());
    }
}
