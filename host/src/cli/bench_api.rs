//! `amvm bench api`: latency of the controller's API at scale, over real HTTP on loopback.
//!
//! A simulated world of `--hosts` hosts and `--vms` VMs (seeded synthetic trace) is advanced one
//! day (so series have a day of history), the controller runs paused (it keeps stepping the
//! world and rebuilding the API's view every `--step-ms`, but decides nothing), and the API
//! serves on an ephemeral port. Measured: `GET /api/v1/hosts`, a one-day host series at
//! `points=300`, and server-sent-event fan-out (publish → every one of `--sse-clients` clients
//! has the event).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::api::{self, ApiConfig, AppState, Role, Tokens};
use crate::controller::sim_world::{SimWorld, SimWorldConfig};
use crate::controller::world::World;
use crate::controller::{Controller, ControllerConfig, Guards};
use crate::policy::{PolicyRuntime, RuntimeConfig};
use crate::sim::trace::SyntheticSpec;
use crate::sim::{Scenario, Trace};

#[derive(Debug, Clone, Args)]
pub struct BenchApiArgs {
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    #[arg(long, default_value_t = 100_000)]
    pub vms: usize,
    /// Requests per measured route.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    #[arg(long, default_value_t = 100)]
    pub sse_clients: usize,
    /// Events published for the fan-out measurement.
    #[arg(long, default_value_t = 50)]
    pub sse_events: usize,
    /// Real milliseconds per world step while measuring.
    #[arg(long, default_value_t = 1000)]
    pub step_ms: u64,
    /// Print JSON (the default prints it too; kept for symmetry with the other benches).
    #[arg(long)]
    pub json: bool,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn get(addr: &str, path: &str, token: &str) -> Result<usize> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")?;
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut body)?;
    anyhow::ensure!(
        body.starts_with(b"HTTP/1.1 200"),
        "{path}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    Ok(body.len())
}

pub fn run(a: BenchApiArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let mut scenario = Scenario::default();
    scenario.hosts.count = a.hosts;
    // The reference hosts (2 cores, 4 GB) hold two VMs each; 100,000 VMs on 10,000 hosts need
    // bigger machines: 8× the memory and 6× the cores of the reference types.
    for t in &mut scenario.hosts.types {
        t.ram_mb *= 8.0;
        t.cores *= 6;
    }
    let trace = Arc::new(Trace::synthetic(&SyntheticSpec { vms: a.vms, ..SyntheticSpec::default() })?);
    let mut world = SimWorld::new(SimWorldConfig {
        base_unix: SimWorldConfig::base_for(&trace),
        scenario,
        trace,
        pace: Duration::from_millis(a.step_ms),
    })
    .map_err(anyhow::Error::msg)?;
    let steps = 287;
    for _ in 0..steps - 1 {
        world.advance();
        world.end_step();
    }
    let setup_s = t0.elapsed().as_secs_f64();
    eprintln!("bench api: world of {} hosts / {} VMs with one day of history in {setup_s:.1} s", a.hosts, a.vms);
    let dir = tempfile::tempdir()?;
    let mut cfg = ControllerConfig::new(dir.path().to_path_buf());
    cfg.guards = Guards { paused: true, ..Guards::default() };
    let runtime = Arc::new(PolicyRuntime::new(RuntimeConfig::default())?);
    let controller = Controller::start(cfg, Box::new(world), runtime)?;
    let shared = controller.shared.clone();
    let token = api::auth::generate();
    let mut tokens = Tokens::default();
    tokens.add("bench", Role::Admin, &token).map_err(anyhow::Error::msg)?;
    let state = AppState {
        shared: shared.clone(),
        cfg: Arc::new(ApiConfig {
            tokens,
            metrics_public: true,
            upload_limit: api::DEFAULT_UPLOAD_LIMIT,
            traces_root: std::env::temp_dir(),
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(api::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    // Wait for the first view.
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.view().hosts.len() < a.hosts {
        anyhow::ensure!(Instant::now() < deadline, "the controller did not publish its view");
        std::thread::sleep(Duration::from_millis(50));
    }
    let now = shared.view().world_time;

    let mut hosts_ms = Vec::new();
    let mut hosts_bytes = 0;
    for _ in 0..a.requests {
        let t = Instant::now();
        hosts_bytes = get(&addr, "/api/v1/hosts", &token)?;
        hosts_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut series_ms = Vec::new();
    for i in 0..a.requests {
        let h = (i * 7919) % a.hosts;
        let path = format!(
            "/api/v1/series?target=host&id={h}&metric=cpu&from={}&to={now}&points=300&cf=AVERAGE",
            now - 86_400.0
        );
        let t = Instant::now();
        get(&addr, &path, &token)?;
        series_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // SSE fan-out: every client reads the stream; the latency of an event is the time from
    // publishing to the last client having it.
    let epoch = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, u64, f64)>();
    let mut readers = Vec::new();
    for c in 0..a.sse_clients {
        let (addr, token, tx) = (addr.clone(), token.clone(), tx.clone());
        let n = a.sse_events;
        readers.push(std::thread::spawn(move || -> Result<()> {
            let mut s = TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(s, "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let mut got = 0;
            while got < n {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    break;
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    if let Some(k) = d.split("\"bench_seq\":").nth(1) {
                        let seq: u64 =
                            k.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0);
                        let _ = tx.send((c, seq, epoch.elapsed().as_secs_f64()));
                        got += 1;
                    }
                }
            }
            Ok(())
        }));
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.bus.subscribers() < a.sse_clients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let subscribed = shared.bus.subscribers();
    let mut sent = Vec::new();
    for i in 0..a.sse_events {
        sent.push(epoch.elapsed().as_secs_f64());
        shared.bus.publish("bench", 0.0, serde_json::json!({ "bench_seq": i }));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut last = vec![0.0f64; a.sse_events];
    let mut delivered = vec![0usize; a.sse_events];
    let mut all_ms = Vec::new();
    while let Ok((_, seq, t)) = rx.recv_timeout(Duration::from_secs(10)) {
        let i = seq as usize;
        if i < a.sse_events {
            delivered[i] += 1;
            last[i] = last[i].max(t);
            all_ms.push((t - sent[i]) * 1e3);
        }
    }
    let mut fanout_ms: Vec<f64> = (0..a.sse_events).map(|i| (last[i] - sent[i]) * 1e3).collect();
    let complete = delivered.iter().filter(|&&d| d == a.sse_clients).count();
    for r in readers {
        let _ = r.join();
    }
    let _ = stop_tx.send(());
    let _ = rt.block_on(server);
    controller.stop();

    let out = serde_json::json!({
        "hosts": a.hosts,
        "vms": a.vms,
        "setup_s": setup_s,
        "hosts_request": { "requests": a.requests, "bytes": hosts_bytes, "p50_ms": pct(&mut hosts_ms, 0.5), "p99_ms": pct(&mut hosts_ms, 0.99) },
        "series_1day_points300": { "requests": a.requests, "p50_ms": pct(&mut series_ms, 0.5), "p99_ms": pct(&mut series_ms, 0.99) },
        "sse_fanout": {
            "clients": a.sse_clients,
            "subscribed": subscribed,
            "events": a.sse_events,
            "events_delivered_to_all": complete,
            "per_client_p50_ms": pct(&mut all_ms, 0.5),
            "per_client_p99_ms": pct(&mut all_ms, 0.99),
            "last_client_p50_ms": pct(&mut fanout_ms, 0.5),
            "last_client_p99_ms": pct(&mut fanout_ms, 0.99),
        },
        "goal_p99_ms": 20.0,
        "controller": "paused (world stepping, view rebuilt every step)",
        "hosts_model": "reference PlanetLab host types with 8x RAM and 6x cores",
    });
    println!("{}", serde_json::to_string_pretty(&out).context("json")?);
    Ok(ExitCode::SUCCESS)
}
