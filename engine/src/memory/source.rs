//! The source half: runs the guest, tracks dirty pages, copies memory, serves demand requests
//! and pushes the rest.

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bitmap::Bitmap;
use super::dirty::DirtyTracker;
use super::link::Link;
use super::protocol::{self, flags, Kind, HEADER_LEN};
use super::session::Realtime;
use super::source_sync::{start_sync, Conns, Dialer, SyncThreads, Verdict};
use super::sys::mmap::{Region, PAGE_SIZE};
use super::throttle::Throttle;
use super::workload::{self, Guest, VcpuState};
use super::{proto, sys, DestStats, MemoryError, MigrationReport, Mode, SourceConfig};
use crate::model;

/// Pages per data frame.
pub(crate) const RUN: usize = 16;

/// Progress of a running migration, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Current phase.
    pub phase: &'static str,
    /// Bytes sent so far.
    pub bytes: u64,
    /// Guest memory size.
    pub mem_bytes: u64,
}

/// `StopCopy` arg: every page is needed (post-copy), no bitmap follows.
pub const STOP_ALL_NEEDED: u64 = 1;
/// `StopCopy` arg: the needed pages are the bitmap's plus every page discarded before (hybrid).
pub const STOP_DELTA: u64 = 2;

/// Sends pages `[first, first+count)` (≤ `RUN`), zero pages as `Zeros` runs.
pub(crate) fn send_run(
    link: &mut Link,
    region: &Region,
    first: usize,
    count: usize,
    fl: u16,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    buf.resize(HEADER_LEN + count * PAGE_SIZE, 0);
    region.read_pages(first, &mut buf[HEADER_LEN..]);
    let zero: Vec<bool> = (0..count)
        .map(|i| buf[HEADER_LEN + i * PAGE_SIZE..HEADER_LEN + (i + 1) * PAGE_SIZE].iter().all(|&b| b == 0))
        .collect();
    let mut i = 0;
    while i < count {
        let mut j = i + 1;
        while j < count && zero[j] == zero[i] {
            j += 1;
        }
        if zero[i] {
            link.send(Kind::Zeros, fl, (first + i) as u64, &((j - i) as u64).to_le_bytes())?;
        } else if i == 0 && j == count {
            link.send_prefixed(Kind::Pages, fl, first as u64, buf)?;
        } else {
            let mut part = vec![0u8; HEADER_LEN + (j - i) * PAGE_SIZE];
            part[HEADER_LEN..].copy_from_slice(&buf[HEADER_LEN + i * PAGE_SIZE..HEADER_LEN + j * PAGE_SIZE]);
            link.send_prefixed(Kind::Pages, fl, (first + i) as u64, &mut part)?;
        }
        i = j;
    }
    Ok(())
}

/// Sends (and clears) every set page of `set` in ascending runs; returns pages sent.
fn send_set(link: &mut Link, region: &Region, set: &Bitmap, fl: u16, mut tick: impl FnMut()) -> std::io::Result<u64> {
    let mut buf = Vec::new();
    let (mut i, mut sent) = (0usize, 0u64);
    while let Some(p) = set.next_set(i) {
        let mut n = 0;
        while n < RUN && set.clear(p + n) {
            n += 1;
        }
        send_run(link, region, p, n, fl, &mut buf)?;
        sent += n as u64;
        i = p + n;
        tick();
    }
    Ok(sent)
}

fn expect(rx: &mut BufReader<TcpStream>, want: Kind, phase: &'static str) -> Result<Vec<u8>, MemoryError> {
    let (h, payload) = protocol::read_frame(rx).map_err(proto(phase))?;
    if h.kind == Kind::Abort {
        return Err(MemoryError::Aborted(String::from_utf8_lossy(&payload).into_owned()));
    }
    if h.kind != want {
        return Err(proto(phase)(protocol::ProtocolError::Unexpected { got: h.kind, expected: phase }));
    }
    Ok(payload)
}

/// Runs the source half of one migration to the destination listening at `addr`.
pub fn run_source(
    cfg: &SourceConfig,
    addr: &str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<MigrationReport, MemoryError> {
    let span = tracing::info_span!("migration", id = cfg.migration_id, mode = cfg.mode.name(), side = "source");
    let _enter = span.enter();
    let pages = usize::try_from(cfg.mem_bytes / PAGE_SIZE as u64).unwrap_or(0);
    if pages < 64 {
        return Err(MemoryError::Config(format!("guest memory of {} bytes is below 64 pages", cfg.mem_bytes)));
    }
    let region = Arc::new(Region::new(pages).map_err(sys("cannot map guest memory"))?);
    tracing::info!(pages, "booting guest");
    let booted = workload::boot(&region, &cfg.workload);
    let tracker = match cfg.mode {
        Mode::Post => None,
        _ => Some(DirtyTracker::new(region.clone(), cfg.force_sync_wp).map_err(sys("cannot start dirty tracking"))?),
    };
    let boot_time = Instant::now();
    let mut guest = Some(Guest::start(region.clone(), booted));
    std::thread::sleep(cfg.warmup);

    let throttle = Arc::new(Throttle::new(cfg.bandwidth));
    let bytes = Arc::new(AtomicU64::new(0));
    let dial = Dialer { cfg, addr, pages, throttle: &throttle, bytes: &bytes };
    let mut state_holder = None;
    let mut connected = false;
    let switch =
        switch_over(cfg, &dial, &region, &mut guest, tracker.as_ref(), progress, &mut state_holder, &mut connected);
    let (mut conns, t0, mut sw) = match switch {
        Ok(v) => v,
        Err(e) => {
            if connected && e.is_link_loss() {
                // Tell the destination (if it can be reached soon) that the guest stays here.
                notify_kept(&dial);
            }
            return Err(keep_on_source(&region, guest.take(), state_holder.take(), e));
        }
    };
    let write_rate = sw.writes as f64 / (sw.t_pause - boot_time).as_secs_f64().max(1e-9);
    let mut pushed = 0u64;
    let mut sync = sw.sync.take();
    let mut needed = sw.needed.clone();
    let mut recoveries = 0u32;

    let confirmed = expect(&mut conns.control_rx, Kind::Resumed, "resume");
    let downtime = sw.t_pause.elapsed();
    let _ = std::mem::replace(&mut sw.rt, Realtime::off());
    if let Err(e) = confirmed {
        // Did the destination resume the guest? Only it knows.
        conns.sockets.kill();
        pushed += join_sync(sync.take());
        if !e.is_link_loss() {
            return Err(keep_on_source(&region, None, state_holder.take(), e));
        }
        tracing::warn!("link lost during switch-over: {e:#}; asking the destination whether it resumed");
        match dial.resume(cfg.recovery_timeout) {
            Ok(Some(Verdict::NotResumed(mut c))) => {
                let _ = c.control.send(Kind::Abort, 0, 0, b"link lost before switch-over; the source keeps the guest");
                c.sockets.kill();
                return Err(keep_on_source(&region, None, state_holder.take(), e));
            }
            Ok(Some(Verdict::Resumed(c, missing))) => {
                recoveries += 1;
                conns = c;
                needed = Arc::new(missing);
                if cfg.mode != Mode::Pre {
                    sync = Some(start_sync(&region, &needed, &mut conns, cfg.prefetch, Duration::ZERO, true));
                }
            }
            Ok(None) | Err(_) => {
                return Err(MemoryError::RecoveryFailed {
                    waited: cfg.recovery_timeout,
                    left: "the stop-copy was sent but the destination never confirmed it resumed: the guest may \
                           run there, so the source does not restart it (it stays paused here)"
                        .into(),
                    source: Box::new(e),
                });
            }
        }
    }
    // Committed: the guest runs at the destination; the source never restarts it.
    drop(state_holder);
    if let Some(s) = &sync {
        s.go.store(true, Ordering::Release);
    }
    // After a lost link the downtime lasted until the destination's `Status(1)`.
    let downtime = if recoveries > 0 { sw.t_pause.elapsed() } else { downtime };
    let resumed_at = t0.elapsed();
    // Unprotecting all memory takes a while on large guests: only after the switch-over.
    drop(tracker);
    tracing::info!(downtime_us = downtime.as_micros() as u64, "guest resumed at the destination");
    progress(Progress { phase: "dirty-sync", bytes: bytes.load(Ordering::Relaxed), mem_bytes: cfg.mem_bytes });

    loop {
        match drive(&mut conns, &mut sync, &mut pushed) {
            Ok(stats) => {
                if let Some(s) = &sync {
                    s.done.store(true, Ordering::Release);
                }
                let _ = conns.control.send(Kind::CompleteAck, 0, 0, &[]);
                conns.sockets.kill();
                join_sync(sync.take());
                // Total time ends when the last page is present at the destination (not after
                // the verification that follows).
                let total = resumed_at + Duration::from_secs_f64(stats.resume_to_complete_ms.max(0.0) / 1e3);
                let sent = bytes.load(Ordering::Relaxed);
                let mut r = report(cfg, &sw.info, stats, total, downtime, sent, write_rate, sw.reads_rate);
                r.link_recoveries = recoveries;
                return Ok(r);
            }
            Err(e) if e.is_link_loss() => {
                conns.sockets.kill();
                pushed += join_sync(sync.take());
                tracing::warn!("link lost after switch-over: {e:#}; reconnecting");
                match dial.resume(cfg.recovery_timeout) {
                    Ok(Some(Verdict::Resumed(c, missing))) => {
                        recoveries += 1;
                        tracing::info!(missing_pages = missing.count(), "link restored");
                        conns = c;
                        needed = Arc::new(missing);
                        if cfg.mode != Mode::Pre {
                            sync = Some(start_sync(&region, &needed, &mut conns, cfg.prefetch, Duration::ZERO, true));
                        }
                    }
                    Ok(Some(Verdict::NotResumed(_))) => {
                        return Err(MemoryError::Aborted(
                            "the destination denies running the guest it confirmed it resumed".into(),
                        ))
                    }
                    Ok(None) | Err(_) => {
                        return Err(MemoryError::RecoveryFailed {
                            waited: cfg.recovery_timeout,
                            left: format!(
                                "the guest belongs to the destination (it resumed there) but up to {} pages had not \
                                 been acknowledged; the source gives them up and does not restart the guest",
                                needed.count()
                            ),
                            source: Box::new(e),
                        })
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A failure before the destination resumed: the guest keeps running here (never neither).
fn keep_on_source(region: &Arc<Region>, guest: Option<Guest>, state: Option<VcpuState>, e: MemoryError) -> MemoryError {
    let restart = state.map(|st| Guest::start(region.clone(), st));
    let Some(g) = guest.or(restart) else { return e };
    tracing::warn!("migration failed before switch-over; the guest runs on the source: {e:#}");
    std::thread::sleep(Duration::from_millis(50));
    let state = g.stop();
    let verified = workload::verify(region, &state).ok;
    MemoryError::StayedOnSource { verified, source: Box::new(e) }
}

/// Best effort, for at most 2 s: tells a destination waiting for a resume that the guest
/// stays on the source, so it can give up at once instead of at its recovery timeout.
fn notify_kept(dial: &Dialer<'_>) {
    if let Ok(Some(v)) = dial.resume(dial.cfg.recovery_timeout.min(Duration::from_secs(2))) {
        let mut c = match v {
            Verdict::NotResumed(c) | Verdict::Resumed(c, _) => c,
        };
        let _ = c.control.send(Kind::Abort, 0, 0, b"link lost before switch-over; the source keeps the guest");
        c.sockets.kill();
    }
}

/// Joins a session's threads (after its sockets were killed or it completed); pages pushed.
fn join_sync(sync: Option<SyncThreads>) -> u64 {
    let Some(s) = sync else { return 0 };
    let pushed = s.threads.into_iter().map(|t| t.join().map_or(0, |(n, _)| n)).sum();
    if let Some(d) = s.demand {
        let _ = d.join();
    }
    pushed
}

/// The dirty-page phase of one session: waits for the pushes, then for `Complete`.
fn drive(conns: &mut Conns, sync: &mut Option<SyncThreads>, pushed: &mut u64) -> Result<DestStats, MemoryError> {
    if let Some(s) = sync {
        let mut lost = false;
        for t in std::mem::take(&mut s.threads) {
            match t.join() {
                Ok((n, link)) => {
                    *pushed += n;
                    match link {
                        Some(l) => conns.push.push(l),
                        None => lost = true,
                    }
                }
                Err(_) => lost = true,
            }
        }
        if lost {
            let e = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "push stream lost");
            return Err(proto("push")(e));
        }
        conns.control.send(Kind::PushDone, 0, *pushed, &[]).map_err(proto("push"))?;
    }
    let payload = expect(&mut conns.control_rx, Kind::Complete, "completion")?;
    protocol::parse_json(&payload, "complete").map_err(proto("completion"))
}

/// Ends a round and waits until the destination has processed it, so no copy is still in
/// flight in socket buffers when the vCPUs stop (that would count as downtime).
fn round_end(conns: &mut Conns, round: u32) -> Result<(), MemoryError> {
    conns.control.send(Kind::RoundEnd, 0, u64::from(round), &[]).map_err(proto("round end"))?;
    expect(&mut conns.control_rx, Kind::RoundEnd, "round acknowledgement")?;
    Ok(())
}

/// Sends `Discard` runs for every page of `fresh` below `cursor` and adds them to `dirty`.
fn send_discards(link: &mut Link, fresh: &Bitmap, dirty: &Bitmap, cursor: usize) -> Result<(), MemoryError> {
    let mut j = 0;
    while let Some(q) = fresh.next_set(j) {
        if q >= cursor {
            break;
        }
        let mut n = 0;
        while q + n < cursor && fresh.get(q + n) {
            dirty.set(q + n);
            n += 1;
        }
        link.send(Kind::Discard, 0, q as u64, &(n as u64).to_le_bytes()).map_err(proto("full round"))?;
        j = q + n;
    }
    Ok(())
}

/// Hybrid-copy's full round. Every 20 ms the dirty log is scanned: pages written after they
/// were sent join the dirty set and the destination drops its stale copies at once (so the
/// stop-copy only drops the last few); pages written before the round reached them are simply
/// sent fresh.
fn full_round_with_discards(
    link: &mut Link,
    region: &Region,
    tracker: &DirtyTracker,
    all: &Bitmap,
    dirty: &Bitmap,
    tick: &mut impl FnMut(&'static str),
) -> Result<(), MemoryError> {
    let mut buf = Vec::new();
    let mut last = Instant::now();
    let mut i = 0usize;
    let scan = |cursor: usize, link: &mut Link| -> Result<(), MemoryError> {
        let fresh = Bitmap::new(region.pages());
        tracker.collect(&fresh).map_err(sys("dirty scan failed"))?;
        send_discards(link, &fresh, dirty, cursor)
    };
    while let Some(p) = all.next_set(i) {
        let mut n = 0;
        while n < RUN && all.clear(p + n) {
            n += 1;
        }
        send_run(link, region, p, n, flags::ROUND, &mut buf).map_err(proto("full round"))?;
        i = p + n;
        tick("full-round");
        if last.elapsed() >= Duration::from_millis(20) {
            scan(i, link)?;
            last = Instant::now();
        }
    }
    scan(region.pages(), link)
}

/// Facts gathered up to switch-over.
struct Info {
    rounds: u32,
    dirty_at_stop: u64,
    full_round: Duration,
    round_bytes: u64,
    tracking: String,
    vcpu_bytes: usize,
}

struct Switched {
    t_pause: Instant,
    writes: u64,
    reads_rate: f64,
    sync: Option<SyncThreads>,
    /// Pages the destination lacks after the stop-copy.
    needed: Arc<Bitmap>,
    info: Info,
    /// Real-time priority of the switch-over, dropped once the destination confirmed.
    rt: Realtime,
}

#[allow(clippy::too_many_arguments)]
fn switch_over(
    cfg: &SourceConfig,
    dial: &Dialer<'_>,
    region: &Arc<Region>,
    guest: &mut Option<Guest>,
    tracker: Option<&DirtyTracker>,
    progress: &(dyn Fn(Progress) + Sync),
    state_holder: &mut Option<VcpuState>,
    connected: &mut bool,
) -> Result<(Conns, Instant, Switched), MemoryError> {
    let (pages, bytes) = (dial.pages, dial.bytes);
    let mut conns = dial.session()?;
    *connected = true;
    let mut go = |conns: &mut Conns| -> Result<(Instant, Switched), MemoryError> {
        let t0 = Instant::now();
        let mut info = Info {
            rounds: 0,
            dirty_at_stop: 0,
            full_round: Duration::ZERO,
            round_bytes: 0,
            tracking: "none".into(),
            vcpu_bytes: 0,
        };
        let mut tick_n = 0u32;
        let mut tick = |phase| {
            tick_n += 1;
            if tick_n.is_multiple_of(256) {
                progress(Progress { phase, bytes: bytes.load(Ordering::Relaxed), mem_bytes: cfg.mem_bytes });
            }
        };
        let dirty = Arc::new(Bitmap::new(pages));
        if let Some(t) = tracker {
            info.tracking = t.method().name().into();
            t.start().map_err(sys("cannot write-protect guest memory"))?;
            let all = Bitmap::full(pages);
            if cfg.mode == Mode::Hybrid {
                full_round_with_discards(&mut conns.control, region, t, &all, &dirty, &mut tick)?;
            } else {
                send_set(&mut conns.control, region, &all, flags::ROUND, || tick("full-round"))
                    .map_err(proto("full round"))?;
            }
            round_end(conns, 0)?;
            if cfg.mode == Mode::Hybrid {
                // The destination has drained the round: drop what was dirtied meanwhile, so the
                // stop-copy has almost nothing left to drop.
                let fresh = Bitmap::new(pages);
                t.collect(&fresh).map_err(sys("dirty scan failed"))?;
                send_discards(&mut conns.control, &fresh, &dirty, pages)?;
            }
            info.full_round = t0.elapsed();
            info.round_bytes = bytes.load(Ordering::Relaxed);
            info.rounds = 1;
            tracing::info!(ms = info.full_round.as_millis() as u64, "full round done");
        }
        if cfg.mode == Mode::Pre {
            let b_eff = (info.round_bytes as f64 / info.full_round.as_secs_f64().max(1e-9))
                .min(cfg.bandwidth.unwrap_or(f64::MAX));
            if let Some(t) = tracker {
                loop {
                    let n = t.collect(&dirty).map_err(sys("dirty scan failed"))?;
                    let _ = n;
                    let remain = dirty.count() as f64 * PAGE_SIZE as f64 / b_eff;
                    if remain <= cfg.downtime_target.as_secs_f64() || info.rounds >= cfg.max_rounds {
                        break;
                    }
                    let sent = send_set(&mut conns.control, region, &dirty, flags::ROUND, || tick("pre-copy"))
                        .map_err(proto("pre-copy round"))?;
                    round_end(conns, info.rounds)?;
                    tracing::debug!(round = info.rounds, sent, "pre-copy round");
                    info.rounds += 1;
                }
            }
        }
        // Stop: pause the vCPUs at a safe point. Until the destination confirms the resume this
        // thread runs at real-time priority: the downtime must not wait for a CPU.
        let rt = Realtime::raise("switch");
        let t_pause = Instant::now();
        let state = guest.take().map(Guest::stop).ok_or_else(|| MemoryError::Config("guest already stopped".into()))?;
        *state_holder = Some(state.clone());
        let vcpu = serde_json::to_vec(&state).map_err(|e| MemoryError::Config(format!("vCPU state: {e}")))?;
        info.vcpu_bytes = vcpu.len();
        let (writes, reads) = (state.writes(), state.reads());
        let reads_rate = reads as f64 / t_pause.elapsed().as_secs_f64().max(1e-9);
        let _ = reads_rate;
        let t_stopped = t_pause.elapsed();
        // Hybrid: the destination already dropped (and knows) every page discarded so far; the
        // stop-copy carries only the pages written since the last discard pass.
        let last = Bitmap::new(pages);
        if let Some(t) = tracker {
            t.collect(if cfg.mode == Mode::Hybrid { &last } else { &dirty }).map_err(sys("dirty scan failed"))?;
        }
        dirty.union_with(&last);
        info.dirty_at_stop = dirty.count() as u64;
        tracing::debug!(
            stop_us = t_stopped.as_micros() as u64,
            scan_us = (t_pause.elapsed() - t_stopped).as_micros() as u64,
            "vCPUs stopped, final dirty scan done"
        );
        let (sync, needed) = match cfg.mode {
            Mode::Pre => {
                send_set(&mut conns.control, region, &dirty, flags::ROUND, || {}).map_err(proto("stop-copy"))?;
                let p = protocol::stop_copy_payload(&vcpu, &Bitmap::new(pages).encode());
                conns.control.send(Kind::StopCopy, 0, 0, &p).map_err(proto("stop-copy"))?;
                (None, dirty)
            }
            Mode::Hybrid => {
                let p = protocol::stop_copy_payload(&vcpu, &last.encode());
                let s = start_sync(region, &dirty, conns, cfg.prefetch, cfg.push_delay, false);
                conns.control.send(Kind::StopCopy, 0, STOP_DELTA, &p).map_err(proto("stop-copy"))?;
                (Some(s), dirty)
            }
            Mode::Post => {
                info.dirty_at_stop = pages as u64;
                let all = Arc::new(Bitmap::full(pages));
                let s = start_sync(region, &all, conns, cfg.prefetch, cfg.push_delay, false);
                let p = protocol::stop_copy_payload(&vcpu, &[]);
                conns.control.send(Kind::StopCopy, 0, STOP_ALL_NEEDED, &p).map_err(proto("stop-copy"))?;
                (Some(s), all)
            }
        };
        tracing::debug!(us = t_pause.elapsed().as_micros() as u64, "stop-copy sent");
        // The stop-copy is sent; the source keeps the vCPU state until the destination confirms
        // it resumed (`Resumed`, or `Status(1)` after a lost link): only then is it committed.
        Ok((t0, Switched { t_pause, writes, reads_rate: reads as f64, sync, needed, info, rt }))
    };
    match go(&mut conns) {
        Ok((t0, sw)) => Ok((conns, t0, sw)),
        Err(e) => {
            if !e.is_link_loss() {
                // A local failure: tell the destination at once rather than let it wait for a resume.
                let why = format!("source failed before switch-over: {e}; the guest stays on the source");
                let _ = conns.control.send(Kind::Abort, 0, 0, why.as_bytes());
            }
            conns.sockets.kill();
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &SourceConfig,
    info: &Info,
    d: DestStats,
    total: Duration,
    down: Duration,
    src_bytes: u64,
    write_rate: f64,
    _reads: f64,
) -> MigrationReport {
    let measured_bw = if info.full_round > Duration::ZERO {
        info.round_bytes as f64 / info.full_round.as_secs_f64()
    } else {
        src_bytes as f64 / total.as_secs_f64().max(1e-9)
    };
    let b = cfg.bandwidth.map_or(measured_bw, |cap| cap.min(measured_bw));
    let access_rate = cfg.workload.writes_per_s + cfg.workload.reads_per_s;
    let params = model::Params {
        v_mem: cfg.mem_bytes as f64,
        bandwidth: b,
        dirty_rate: model::workload_dirty_rate(&cfg.workload, cfg.mem_bytes, write_rate, cfg.mem_bytes as f64 / b),
        access_rate,
        w_vcpu: info.vcpu_bytes as f64,
        latency: d.fault_latency_p50_us * 1e-6,
        epsilon: 0.5e-3,
        max_rounds: cfg.max_rounds,
        downtime_target: cfg.downtime_target.as_secs_f64(),
    };
    let verified = d.verification.as_ref().is_some_and(|v| v.ok);
    MigrationReport {
        mode: cfg.mode,
        workload: cfg.workload.name.clone(),
        mem_bytes: cfg.mem_bytes,
        bandwidth_bytes_per_s: cfg.bandwidth,
        total_time_ms: total.as_secs_f64() * 1e3,
        downtime_ms: down.as_secs_f64() * 1e3,
        bytes_transferred: src_bytes + d.bytes_sent,
        page_faults: d.page_faults,
        prefetch_hits: d.prefetch_hits,
        push_discarded: d.push_discarded,
        fault_latency_p50_us: d.fault_latency_p50_us,
        fault_latency_p99_us: d.fault_latency_p99_us,
        verified,
        rounds: info.rounds,
        dirty_pages_at_stop: info.dirty_at_stop,
        full_round_ms: info.full_round.as_secs_f64() * 1e3,
        measured_bandwidth: measured_bw,
        guest_write_rate: write_rate,
        dirty_tracking: info.tracking.clone(),
        link_recoveries: 0,
        model: if cfg.mode == Mode::Pre {
            // Rounds are short: use the workload's saturating dirty function per round.
            let rate = |t: f64| model::workload_dirty_rate(&cfg.workload, cfg.mem_bytes, write_rate, t) * t;
            model::predict_pre_with(&params, rate)
        } else {
            model::predict(cfg.mode, &params)
        },
        dest: d,
    }
}
