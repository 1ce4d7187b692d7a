//! `amvm-workload`: the program a lab guest runs (issue #10, `scripts/build-guest.sh`).
//!
//! It generates one of the paper's workloads — **idle**, **cpu** (CPU-bound), **memory**
//! (memory-bound: writes pages of a working set at a set dirty rate) or **io** (I/O-bound:
//! writes and syncs a file) — at a load level, prints a heartbeat line on its standard output
//! (the guest's serial console) every `--heartbeat-ms`, and takes commands on its standard input
//! while it runs, so a test can overload a node on purpose:
//!
//! ```text
//! load 80          CPU duty cycle in percent (0–100)
//! dirty 120        dirty rate in MB/s (memory and io modes)
//! hot 20           memory mode: 80 % of writes go to the first 20 % of the working set
//!                  (0: one sequential sweep over all of it)
//! mode memory      idle | cpu | memory | io
//! volume /dev/vda 50   start the volume writer on a block device, 50 synced 4 KiB writes/s
//!                      (amvm_guest::volume); an `amvm-volume` line follows each heartbeat
//! verify           stop the writer and check every block it wrote (`amvm-verify ok=…`)
//! quit
//! ```
//!
//! Each heartbeat: `amvm-heartbeat seq=7 mode=memory load=80 dirty_mbps=120 dirtied_mb=840
//! uptime_ms=7003`. `seq` only grows: after a live migration the line that follows proves the
//! guest kept running.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use amvm_guest::volume;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Cpu,
    Memory,
    Io,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "idle" => Some(Mode::Idle),
            "cpu" => Some(Mode::Cpu),
            "memory" | "mem" => Some(Mode::Memory),
            "io" => Some(Mode::Io),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Idle => "idle",
            Mode::Cpu => "cpu",
            Mode::Memory => "memory",
            Mode::Io => "io",
        }
    }

    fn code(self) -> u32 {
        self as u32
    }

    fn from_code(c: u32) -> Mode {
        match c {
            1 => Mode::Cpu,
            2 => Mode::Memory,
            3 => Mode::Io,
            _ => Mode::Idle,
        }
    }
}

/// What the worker does now; changed by commands.
struct Control {
    mode: AtomicU32,
    load_pct: AtomicU32,
    dirty_mbps: AtomicU32,
    /// Hot share of the working set in percent (0: sequential sweep).
    hot_pct: AtomicU32,
    dirtied_bytes: AtomicU64,
    stop: AtomicBool,
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    load_pct: u32,
    dirty_mbps: u32,
    hot_pct: u32,
    mem_mb: usize,
    heartbeat_ms: u64,
    io_path: String,
}

const USAGE: &str = "usage: amvm-workload [--mode idle|cpu|memory|io] [--load PCT] [--dirty-mbps N] \
[--hot PCT] [--mem-mb N] [--heartbeat-ms N] [--io-path FILE]\n\
commands on stdin: load PCT | dirty MBPS | hot PCT | mode M | quit";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        mode: Mode::Idle,
        load_pct: 0,
        dirty_mbps: 0,
        hot_pct: 0,
        mem_mb: 64,
        heartbeat_ms: 1000,
        io_path: "/tmp/amvm-io".into(),
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number\n{USAGE}"));
        match flag.as_str() {
            "--mode" => a.mode = Mode::parse(&value).ok_or_else(|| format!("unknown mode {value:?}\n{USAGE}"))?,
            "--load" => a.load_pct = num(&value)?.min(100) as u32,
            "--dirty-mbps" => a.dirty_mbps = num(&value)?.min(100_000) as u32,
            "--hot" => a.hot_pct = num(&value)?.min(100) as u32,
            "--mem-mb" => a.mem_mb = num(&value)?.clamp(1, 1 << 20) as usize,
            "--heartbeat-ms" => a.heartbeat_ms = num(&value)?.max(10),
            "--io-path" => a.io_path = value,
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// Applies one command line; `Err` says why it was not understood.
fn command(c: &Control, line: &str) -> Result<(), String> {
    let mut words = line.split_whitespace();
    let (Some(verb), arg) = (words.next(), words.next()) else { return Ok(()) };
    let num = || arg.and_then(|a| a.parse::<u32>().ok()).ok_or_else(|| format!("{verb} needs a number"));
    match verb {
        "load" => c.load_pct.store(num()?.min(100), Ordering::Relaxed),
        "dirty" => c.dirty_mbps.store(num()?.min(100_000), Ordering::Relaxed),
        "hot" => c.hot_pct.store(num()?.min(100), Ordering::Relaxed),
        "mode" => {
            let m = arg.and_then(Mode::parse).ok_or("mode needs idle, cpu, memory or io")?;
            c.mode.store(m.code(), Ordering::Relaxed);
        }
        "quit" => c.stop.store(true, Ordering::Relaxed),
        other => return Err(format!("unknown command {other:?} (load, dirty, hot, mode, quit)")),
    }
    Ok(())
}

/// The volume writer while it runs (issue #11).
struct VolumeRun {
    dev: String,
    run: u64,
    blocks: u64,
    acked: Arc<AtomicU64>,
    write_errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Volume commands: `volume DEV [WRITES_PER_S]`, `verify`; `None`: not a volume command.
fn volume_command(state: &Mutex<Option<VolumeRun>>, line: &str) -> Option<Result<String, String>> {
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    match verb {
        "volume" => Some((|| {
            if st.is_some() {
                return Err("the volume writer already runs (verify stops it)".to_string());
            }
            let dev = words.next().ok_or("volume needs a device, e.g. volume /dev/vdb 50")?.to_string();
            let rate: u64 = match words.next() {
                Some(r) => r.parse().map_err(|_| format!("volume: {r:?} is not a number of writes per second"))?,
                None => 50,
            };
            let run = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1);
            let mut w = volume::Writer::open(std::path::Path::new(&dev), run, 4096)
                .map_err(|e| format!("volume: cannot open {dev}: {e}"))?;
            let (acked, write_errors, stop) =
                (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
            let blocks = w.blocks;
            let thread = {
                let (acked, write_errors, stop) = (acked.clone(), write_errors.clone(), stop.clone());
                std::thread::spawn(move || {
                    let period = Duration::from_secs_f64(1.0 / rate.clamp(1, 10_000) as f64);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match w.step() {
                            Ok(()) => acked.store(w.acked, Ordering::Release),
                            Err(_) => {
                                // Not acknowledged: the same seq is written again.
                                write_errors.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                        if let Some(rest) = period.checked_sub(t.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                })
            };
            let msg = format!("amvm-volume-started dev={dev} run={run} blocks={blocks}");
            *st = Some(VolumeRun { dev, run, blocks, acked, write_errors, stop, thread });
            Ok(msg)
        })()),
        "verify" => Some((|| {
            let r = st.take().ok_or("verify: no volume writer ran (start one with `volume DEV`)")?;
            r.stop.store(true, Ordering::Relaxed);
            let _ = r.thread.join();
            let acked = r.acked.load(Ordering::Acquire);
            let v = volume::verify(std::path::Path::new(&r.dev), r.run, r.blocks, acked)
                .map_err(|e| format!("verify: cannot read {}: {e}", r.dev))?;
            Ok(format!("{} write_errors={}", v.line(acked), r.write_errors.load(Ordering::Relaxed)))
        })()),
        _ => None,
    }
}

/// Spins for `d` (CPU-bound work that the compiler cannot drop).
fn spin(d: Duration) {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..1000u64 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        }
    }
}

/// The worker: 10 ms ticks; in each, `load` % of it busy and the tick's share of the dirty rate
/// written (pages of the working set, or blocks of the I/O file), the rest asleep.
fn work(c: &Control, mem_mb: usize, io_path: &str) {
    const TICK: Duration = Duration::from_millis(10);
    let mut memory: Vec<u8> = Vec::new();
    let mut cursor = 0usize;
    let mut io: Option<std::fs::File> = None;
    let mut io_written = 0u64;
    let mut debt = 0f64; // bytes still to dirty
    let mut rng = 0x9e37_79b9_7f4a_7c15u64; // xorshift state for the hot-set writes
    let mut last = Instant::now();
    while !c.stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let dt = start.duration_since(last).as_secs_f64();
        last = start;
        let mode = Mode::from_code(c.mode.load(Ordering::Relaxed));
        let load = f64::from(c.load_pct.load(Ordering::Relaxed)) / 100.0;
        let rate = f64::from(c.dirty_mbps.load(Ordering::Relaxed)) * 1e6;
        match mode {
            Mode::Memory => {
                if memory.is_empty() {
                    memory = vec![1u8; mem_mb << 20]; // touched once: resident
                }
                debt = (debt + rate * dt).min(memory.len() as f64);
                let mut dirtied = 0u64;
                let pages = memory.len() / PAGE;
                let hot = (pages * c.hot_pct.load(Ordering::Relaxed) as usize / 100).max(1);
                while debt >= PAGE as f64 {
                    if c.hot_pct.load(Ordering::Relaxed) == 0 {
                        memory[cursor] = memory[cursor].wrapping_add(1);
                        cursor = (cursor + PAGE) % memory.len();
                    } else {
                        // 80 % of the writes into the hot set, the rest anywhere.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let page = if rng % 10 < 8 { (rng >> 8) as usize % hot } else { (rng >> 8) as usize % pages };
                        memory[page * PAGE] = memory[page * PAGE].wrapping_add(1);
                    }
                    debt -= PAGE as f64;
                    dirtied += PAGE as u64;
                }
                c.dirtied_bytes.fetch_add(dirtied, Ordering::Relaxed);
            }
            Mode::Io => {
                if io.is_none() {
                    io = std::fs::File::create(io_path).ok();
                }
                debt = (debt + rate * dt).min(64.0 * 1024.0 * 1024.0);
                if let Some(f) = io.as_mut() {
                    let block = [0x5au8; 64 * 1024];
                    let mut dirtied = 0u64;
                    while debt >= block.len() as f64 {
                        if f.write_all(&block).is_err() {
                            break;
                        }
                        io_written += block.len() as u64;
                        if io_written >= 64 << 20 {
                            // Keep the file bounded: start over.
                            let _ = f.sync_data();
                            let _ = f.set_len(0);
                            io_written = 0;
                        }
                        debt -= block.len() as f64;
                        dirtied += block.len() as u64;
                    }
                    let _ = f.sync_data();
                    c.dirtied_bytes.fetch_add(dirtied, Ordering::Relaxed);
                }
            }
            Mode::Idle | Mode::Cpu => {
                if !memory.is_empty() && mode == Mode::Idle {
                    memory = Vec::new();
                }
            }
        }
        if mode != Mode::Idle {
            let busy = TICK.mul_f64(load).saturating_sub(start.elapsed());
            spin(busy);
        }
        if let Some(rest) = TICK.checked_sub(start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let c = Arc::new(Control {
        mode: AtomicU32::new(args.mode.code()),
        load_pct: AtomicU32::new(args.load_pct),
        dirty_mbps: AtomicU32::new(args.dirty_mbps),
        hot_pct: AtomicU32::new(args.hot_pct),
        dirtied_bytes: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let worker = {
        let c = c.clone();
        let (mem_mb, io_path) = (args.mem_mb, args.io_path.clone());
        std::thread::spawn(move || work(&c, mem_mb, &io_path))
    };
    let vol: Arc<Mutex<Option<VolumeRun>>> = Arc::new(Mutex::new(None));
    {
        // Commands from the console; end of input leaves the workload running.
        let c = c.clone();
        let vol = vol.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Some(r) = volume_command(&vol, &line) {
                    match r {
                        Ok(msg) => println!("{msg}"),
                        Err(e) => println!("amvm-error {e}"),
                    }
                    let _ = std::io::stdout().flush();
                    continue;
                }
                match command(&c, &line) {
                    Ok(()) => println!("amvm-ok {}", line.trim()),
                    Err(e) => println!("amvm-error {e}"),
                }
            }
        });
    }
    let started = Instant::now();
    let period = Duration::from_millis(args.heartbeat_ms);
    let mut seq = 0u64;
    while !c.stop.load(Ordering::Relaxed) {
        seq += 1;
        println!(
            "amvm-heartbeat seq={seq} mode={} load={} dirty_mbps={} dirtied_mb={} uptime_ms={}",
            Mode::from_code(c.mode.load(Ordering::Relaxed)).name(),
            c.load_pct.load(Ordering::Relaxed),
            c.dirty_mbps.load(Ordering::Relaxed),
            c.dirtied_bytes.load(Ordering::Relaxed) >> 20,
            started.elapsed().as_millis()
        );
        if let Some(r) = vol.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            println!(
                "amvm-volume dev={} run={} acked={} write_errors={}",
                r.dev,
                r.run,
                r.acked.load(Ordering::Acquire),
                r.write_errors.load(Ordering::Relaxed)
            );
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(period);
    }
    let _ = worker.join();
    println!("amvm-stopped seq={seq}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> Control {
        Control {
            mode: AtomicU32::new(0),
            load_pct: AtomicU32::new(0),
            dirty_mbps: AtomicU32::new(0),
            hot_pct: AtomicU32::new(0),
            dirtied_bytes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    #[test]
    fn commands_change_the_load_and_bad_ones_say_why() {
        let c = control();
        command(&c, "load 80").unwrap();
        command(&c, "dirty 120").unwrap();
        command(&c, "mode memory").unwrap();
        command(&c, "hot 20").unwrap();
        assert_eq!(c.hot_pct.load(Ordering::Relaxed), 20);
        assert_eq!(c.load_pct.load(Ordering::Relaxed), 80);
        assert_eq!(c.dirty_mbps.load(Ordering::Relaxed), 120);
        assert_eq!(Mode::from_code(c.mode.load(Ordering::Relaxed)), Mode::Memory);
        command(&c, "load 250").unwrap();
        assert_eq!(c.load_pct.load(Ordering::Relaxed), 100, "clamped");
        assert!(command(&c, "load lots").unwrap_err().contains("number"));
        assert!(command(&c, "mode turbo").unwrap_err().contains("idle, cpu"));
        assert!(command(&c, "jump").unwrap_err().contains("unknown command"));
        command(&c, "").unwrap();
        command(&c, "quit").unwrap();
        assert!(c.stop.load(Ordering::Relaxed));
    }

    #[test]
    fn the_volume_writer_runs_and_verifies() {
        let path = std::env::temp_dir().join(format!("amvm-vol-main-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 64 * volume::BLOCK]).unwrap();
        let st = Mutex::new(None);
        assert!(volume_command(&st, "load 5").is_none());
        assert!(volume_command(&st, "verify").unwrap().unwrap_err().contains("no volume writer"));
        assert!(volume_command(&st, "volume /nonexistent/dev").unwrap().unwrap_err().contains("cannot open"));
        let started = volume_command(&st, &format!("volume {} 500", path.display())).unwrap().unwrap();
        assert!(started.contains("blocks=64"), "{started}");
        assert!(volume_command(&st, &format!("volume {}", path.display())).unwrap().is_err(), "twice");
        std::thread::sleep(Duration::from_millis(300));
        let v = volume_command(&st, "verify").unwrap().unwrap();
        assert!(v.starts_with("amvm-verify ok=true"), "{v}");
        assert!(!v.contains("acked=0 "), "{v}");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn arguments_parse_and_errors_teach() {
        let a = parse_args(["--mode", "cpu", "--load", "30"].map(String::from).into_iter()).unwrap();
        assert_eq!((a.mode, a.load_pct), (Mode::Cpu, 30));
        assert!(parse_args(["--mode"].map(String::from).into_iter()).unwrap_err().contains("needs a value"));
        assert!(parse_args(["--load", "x"].map(String::from).into_iter()).unwrap_err().contains("not a number"));
        assert!(parse_args(["--frobnicate", "1"].map(String::from).into_iter()).unwrap_err().contains("usage"));
    }

    #[test]
    fn the_memory_workload_dirties_at_its_rate() {
        let c = Arc::new(control());
        c.mode.store(Mode::Memory.code(), Ordering::Relaxed);
        c.dirty_mbps.store(50, Ordering::Relaxed);
        let w = {
            let c = c.clone();
            std::thread::spawn(move || work(&c, 8, "/dev/null"))
        };
        std::thread::sleep(Duration::from_millis(600));
        c.stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        let mb = c.dirtied_bytes.load(Ordering::Relaxed) as f64 / 1e6;
        // 50 MB/s for ~0.6 s: well above zero and not above the rate allows.
        assert!(mb > 10.0 && mb < 40.0, "{mb} MB");
    }
}
