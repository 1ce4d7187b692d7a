//! The destination half: receives memory, resumes the guest, catches its faults on missing
//! pages with userfaultfd, requests them on the demand connection and installs whatever
//! arrives (demand replies, prefetched neighbours, pushes) with `UFFDIO_COPY`.
//!
//! Link loss: before it resumed the guest the destination waits (up to the recovery timeout)
//! for the source to come back and tells it `Status(0)`: the source keeps the guest. After it
//! resumed, the guest keeps running on what it has (vCPUs that touch a missing page block in
//! userfaultfd), and a resumed session starts with `Missing`, the pages still lacking.

use std::io::{BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bitmap::Bitmap;
use super::dest_sync::{fault_loop, receive_loop, Shared};
use super::link::Link;
use super::protocol::{self, Hello, Kind, ProtocolError, Role};
use super::session::{self, Sockets};
use super::source::{STOP_ALL_NEEDED, STOP_DELTA};
use super::sys::mmap::{Region, PAGE_SIZE};
use super::sys::uffd::Uffd;
use super::throttle::Throttle;
use super::workload::{self, Guest, VcpuState};
use super::{percentile, proto, sys, DestStats, MemoryError};

/// Destination settings.
#[derive(Debug, Clone)]
pub struct DestOptions {
    /// Largest guest accepted, in pages.
    pub max_pages: u64,
    /// How long the guest keeps running after the last page arrived, before it is stopped
    /// and verified.
    pub run_after: Duration,
    /// How long to wait for a source that lost its link to come back.
    pub recovery_timeout: Duration,
}

impl Default for DestOptions {
    fn default() -> Self {
        Self { max_pages: 64 << 20, run_after: Duration::from_millis(100), recovery_timeout: Duration::from_secs(30) }
    }
}

/// One accepted connection after its `Hello`.
struct Accepted {
    hello: Hello,
    link: Link,
    rx: BufReader<TcpStream>,
    sock: TcpStream,
}

/// The connections of one session.
struct Session {
    control: Link,
    control_rx: Option<BufReader<TcpStream>>,
    demand: Option<Link>,
    data_rx: Vec<(Role, BufReader<TcpStream>)>,
    sockets: Arc<Sockets>,
}

fn accept(listener: &TcpListener, bytes: &Arc<AtomicU64>, deadline: Option<Instant>) -> Result<Accepted, MemoryError> {
    let (s, peer) = match deadline {
        None => listener.accept().map_err(sys("accept failed"))?,
        Some(d) => {
            listener.set_nonblocking(true).map_err(sys("listener"))?;
            let r = loop {
                match listener.accept() {
                    Ok(x) => break Ok(x),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < d => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => break Err(e),
                }
            };
            listener.set_nonblocking(false).map_err(sys("listener"))?;
            r.map_err(sys("accept failed"))?
        }
    };
    s.set_nonblocking(false).map_err(sys("setsockopt"))?;
    session::tune(&s).map_err(sys("setsockopt"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(sys("setsockopt"))?;
    let mut rx = BufReader::with_capacity(256 << 10, s.try_clone().map_err(sys("dup socket"))?);
    let sock = s.try_clone().map_err(sys("dup socket"))?;
    let link = Link::new(s, Arc::new(Throttle::new(None)), bytes.clone(), true);
    let (h, payload) = protocol::read_frame(&mut rx).map_err(proto("handshake"))?;
    if h.kind != Kind::Hello {
        return Err(proto("handshake")(ProtocolError::Unexpected { got: h.kind, expected: "Hello" }));
    }
    let hello: Hello = protocol::parse_json(&payload, "hello").map_err(proto("handshake"))?;
    protocol::check_hello(&hello).map_err(proto("handshake"))?;
    sock.set_read_timeout(None).map_err(sys("setsockopt"))?;
    tracing::debug!(%peer, role = ?hello.role, resume = hello.resume, "connection");
    Ok(Accepted { hello, link, rx, sock })
}

/// Waits until `deadline` for the source to resume migration `first.migration_id`: answers
/// its control `Hello{resume}` with `Status(resumed)` and, when the guest runs here, accepts
/// the data connections of the new session. `None` when the deadline passes.
fn accept_resume(
    listener: &TcpListener,
    first: &Hello,
    resumed: bool,
    deadline: Instant,
    bytes: &Arc<AtomicU64>,
) -> Option<Session> {
    let mut carried: Option<Accepted> = None;
    'session: loop {
        let mut c = match carried.take() {
            Some(c) => c,
            None => match accept(listener, bytes, Some(deadline)) {
                Ok(c) => c,
                Err(e) if Instant::now() >= deadline => {
                    tracing::debug!("no resume before the deadline: {e:#}");
                    return None;
                }
                Err(e) => {
                    tracing::debug!("resume attempt failed: {e:#}");
                    continue;
                }
            },
        };
        if c.hello.migration_id != first.migration_id || c.hello.role != Role::Control || !c.hello.resume {
            let _ = c.link.send(Kind::Abort, 0, 0, b"not a resume of the migration in progress");
            continue;
        }
        if c.link.send(Kind::Status, 0, u64::from(resumed), &[]).is_err() {
            continue;
        }
        let sockets = Arc::new(Sockets::default());
        let _ = sockets.add(&c.sock);
        let mut s = Session { control: c.link, control_rx: Some(c.rx), demand: None, data_rx: Vec::new(), sockets };
        if !resumed || first.mode == "pre" {
            return Some(s);
        }
        while s.data_rx.len() < first.push_streams.max(1) as usize + 1 {
            let mut d = match accept(listener, bytes, Some(deadline)) {
                Ok(d) => d,
                Err(_) if Instant::now() >= deadline => return None,
                Err(_) => continue 'session,
            };
            if d.hello.role == Role::Control {
                // The source gave up on this attempt and started another.
                s.sockets.kill();
                carried = Some(d);
                continue 'session;
            }
            if d.hello.migration_id != first.migration_id || !d.hello.resume {
                let _ = d.link.send(Kind::Abort, 0, 0, b"connection of another migration");
                continue;
            }
            if d.link.send(Kind::HelloAck, 0, 0, &[]).is_err() {
                continue 'session;
            }
            let _ = s.sockets.add(&d.sock);
            if d.hello.role == Role::Demand {
                s.demand = Some(d.link);
            }
            s.data_rx.push((d.hello.role, d.rx));
        }
        return Some(s);
    }
}

/// The link broke before the guest resumed here: wait for the source to learn that (it then
/// keeps the guest) and give up.
fn never_resumed(listener: &TcpListener, hello: &Hello, opts: &DestOptions, cause: MemoryError) -> MemoryError {
    tracing::warn!("link lost before switch-over: {cause:#}; waiting for the source");
    let deadline = Instant::now() + opts.recovery_timeout;
    let bytes = Arc::new(AtomicU64::new(0));
    while let Some(mut s) = accept_resume(listener, hello, false, deadline, &bytes) {
        let Some(rx) = s.control_rx.as_mut() else { continue };
        let _ = rx.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
        if let Ok((h, _)) = protocol::read_frame(rx) {
            if h.kind == Kind::Abort {
                return MemoryError::Aborted(
                    "link lost before switch-over; the guest never resumed here and stays on the source".into(),
                );
            }
        }
    }
    MemoryError::RecoveryFailed {
        waited: opts.recovery_timeout,
        left: "the link broke before switch-over: the guest never resumed here, so it is on the source".into(),
        source: Box::new(cause),
    }
}

/// Runs the destination half of one migration on `listener`; returns once the guest runs
/// here with all its memory and has been verified.
pub fn run_dest(listener: &TcpListener, opts: &DestOptions) -> Result<DestStats, MemoryError> {
    let bytes = Arc::new(AtomicU64::new(0));
    let Accepted { hello, link: mut control, rx: control_rx, sock } = accept(listener, &bytes, None)?;
    let span = tracing::info_span!("migration", id = hello.migration_id, mode = %hello.mode, side = "dest");
    let _enter = span.enter();
    let reject = |control: &mut Link, why: String| {
        let _ = control.send(Kind::Abort, 0, 0, why.as_bytes());
        MemoryError::Config(why)
    };
    if hello.role != Role::Control || hello.resume || hello.pages < 64 || hello.pages > opts.max_pages {
        return Err(reject(&mut control, format!("refusing {:?} connection for {} pages", hello.role, hello.pages)));
    }
    let pages = hello.pages as usize;
    let region = Arc::new(Region::new(pages).map_err(sys("cannot map guest memory"))?);
    control.send(Kind::HelloAck, 0, 0, &[]).map_err(proto("handshake"))?;
    let sockets = Arc::new(Sockets::default());
    sockets.add(&sock).map_err(sys("dup socket"))?;
    let mut s = Session { control, control_rx: Some(control_rx), demand: None, data_rx: Vec::new(), sockets };
    if hello.mode != "pre" {
        for _ in 0..=hello.push_streams.max(1) {
            let mut d = accept(listener, &bytes, None)?;
            if d.hello.migration_id != hello.migration_id || d.hello.resume {
                return Err(reject(&mut d.link, "connection of another migration".into()));
            }
            d.link.send(Kind::HelloAck, 0, 0, &[]).map_err(proto("handshake"))?;
            s.sockets.add(&d.sock).map_err(sys("dup socket"))?;
            if d.hello.role == Role::Demand {
                s.demand = Some(d.link);
            }
            s.data_rx.push((d.hello.role, d.rx));
        }
    }

    let mut stats = DestStats::default();
    // Pages holding data written by the rounds (the rest read as zero / are missing).
    let populated = Bitmap::new(pages);
    // Pages the source declared dirty during the rounds (`Discard`).
    let discarded = Bitmap::new(pages);
    let seen = (&populated, &discarded);
    let (stop_payload, rt) = match receive_rounds(&mut s, &region, seen, &mut stats, &hello.mode) {
        Ok(p) => p,
        Err(e) if e.is_link_loss() => {
            s.sockets.kill();
            return Err(never_resumed(listener, &hello, opts, e));
        }
        Err(e) => return Err(e),
    };
    // The guest is paused from here until `Resumed`: this is the downtime.
    let rt = rt.unwrap_or_else(|| session::Realtime::raise("switch"));
    let t_stop = Instant::now();
    let (vcpu_json, bm) = protocol::split_stop_copy(&stop_payload.1).map_err(proto("stop-copy"))?;
    let state: VcpuState = protocol::parse_json(vcpu_json, "vCPU state").map_err(proto("stop-copy"))?;
    if state.pages != pages {
        return Err(reject(&mut s.control, "vCPU state does not match the guest size".into()));
    }
    let needed = if stop_payload.0 == STOP_ALL_NEEDED {
        Bitmap::full(pages)
    } else {
        let b = Bitmap::decode(bm, pages)
            .filter(|b| b.len() == pages)
            .ok_or_else(|| proto("stop-copy")(ProtocolError::Malformed("dirty bitmap")))?;
        if stop_payload.0 == STOP_DELTA {
            b.union_with(&discarded);
        }
        b
    };
    let missing = needed.count();
    tracing::debug!(us = t_stop.elapsed().as_micros() as u64, missing, "stop-copy decoded");
    let (writes_before, reads_before) = (state.writes(), state.reads());

    let sh = if missing == 0 {
        None
    } else {
        // Post-/hybrid-copy: drop stale copies of dirty pages, then catch faults on them.
        // Only copies the rounds left in place need dropping; early discards did the rest.
        let stale = needed.and(&populated);
        let mut i = 0;
        while let Some(p) = stale.next_set(i) {
            let mut n = 0;
            while p + n < pages && stale.get(p + n) {
                n += 1;
            }
            region.discard(p, n).map_err(sys("madvise"))?;
            i = p + n;
        }
        tracing::debug!(us = t_stop.elapsed().as_micros() as u64, "stale copies dropped");
        let uffd = Uffd::open(0).map_err(sys("cannot open userfaultfd"))?;
        uffd.register_missing(region.base_addr(), region.len_bytes())
            .map_err(sys("cannot register guest memory with userfaultfd"))?;
        tracing::debug!(us = t_stop.elapsed().as_micros() as u64, "userfaultfd registered");
        Some(Arc::new(Shared::new(region.clone(), uffd, needed.complement(), missing)))
    };
    let fault_thread = match &sh {
        Some(sh) => {
            let sh = sh.clone();
            Some(
                std::thread::Builder::new()
                    .name("uffd-faults".into())
                    .spawn(move || fault_loop(&sh))
                    .map_err(sys("spawn"))?,
            )
        }
        None => None,
    };
    let mut threads = start_session(&mut s, sh.as_ref());
    let guest = Guest::start(region.clone(), state);
    let t_resume = Instant::now();
    if s.control.send(Kind::Resumed, 0, 0, &[]).is_err() {
        s.sockets.kill();
    }
    drop(rt);
    tracing::info!(missing, stop_copy_us = t_stop.elapsed().as_micros() as u64, "guest resumed");
    let end = Ending { guest: Some(guest), region: &region, opts, writes_before, reads_before };
    after_resume(listener, &hello, s, &mut threads, sh, fault_thread, end, stats, t_resume, &bytes)
}

/// Things needed to stop and verify the guest once every page is here.
struct Ending<'a> {
    guest: Option<Guest>,
    region: &'a Region,
    opts: &'a DestOptions,
    writes_before: u64,
    reads_before: u64,
}

/// Threads of one session: receivers and the control watcher (which reports `CompleteAck`).
struct SessionThreads {
    receivers: Vec<JoinHandle<()>>,
    watcher: Option<JoinHandle<bool>>,
}

fn start_session(s: &mut Session, sh: Option<&Arc<Shared>>) -> SessionThreads {
    let mut receivers = Vec::new();
    if let Some(sh) = sh {
        if let Some(d) = s.demand.take() {
            sh.attach_demand(d, s.sockets.clone());
        }
        for (role, rx) in s.data_rx.drain(..) {
            let (sh, sockets) = (sh.clone(), s.sockets.clone());
            receivers.push(std::thread::spawn(move || receive_loop(&sh, rx, &sockets, role == Role::Demand)));
        }
    }
    // The control connection carries `PushDone` and, at the end, `CompleteAck`; its loss is a
    // link loss like any other.
    let watcher = s.control_rx.take().map(|mut rx| {
        let sockets = s.sockets.clone();
        std::thread::spawn(move || loop {
            match protocol::read_frame(&mut rx) {
                Ok((h, _)) if h.kind == Kind::CompleteAck => return true,
                Ok((h, _)) if h.kind == Kind::PushDone => {}
                Ok((h, _)) => {
                    tracing::warn!(?h, "unexpected frame on the control connection");
                    sockets.kill();
                    return false;
                }
                Err(_) => {
                    sockets.kill();
                    return false;
                }
            }
        })
    });
    SessionThreads { receivers, watcher }
}

#[allow(clippy::too_many_arguments)]
fn after_resume(
    listener: &TcpListener,
    hello: &Hello,
    mut s: Session,
    threads: &mut SessionThreads,
    sh: Option<Arc<Shared>>,
    fault_thread: Option<JoinHandle<()>>,
    mut end: Ending<'_>,
    mut stats: DestStats,
    t_resume: Instant,
    bytes: &Arc<AtomicU64>,
) -> Result<DestStats, MemoryError> {
    let mut fault_thread = fault_thread;
    let mut concluded = false;
    let missing = |sh: &Option<Arc<Shared>>| sh.as_ref().map_or(0, |sh| sh.missing.load(Ordering::Acquire));
    loop {
        while missing(&sh) > 0 && !s.sockets.is_dead() {
            if sh.as_ref().is_some_and(|sh| sh.failed.load(Ordering::Acquire)) {
                // A local failure: the guest stays paused on its missing pages; the source holds them.
                s.sockets.kill();
                pause_forever(end.guest.take(), sh);
                return Err(MemoryError::Aborted("installing pages failed; the guest is paused here".into()));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if missing(&sh) == 0 {
            if !concluded {
                if let Some(sh) = &sh {
                    stats.resume_to_complete_ms = t_resume.elapsed().as_secs_f64() * 1e3;
                    tracing::info!(ms = stats.resume_to_complete_ms, "all pages present");
                    // Every page is here: hand the region back to the kernel's ordinary fault
                    // handling (untouched zero pages now fill on demand) and stop the fault thread.
                    sh.uffd
                        .unregister(end.region.base_addr(), end.region.len_bytes())
                        .map_err(sys("cannot unregister userfaultfd"))?;
                    sh.done.store(true, Ordering::Release);
                    if let Some(t) = fault_thread.take() {
                        let _ = t.join();
                    }
                    collect_stats(sh, &mut stats);
                }
                conclude(&mut end, &mut stats);
                concluded = true;
            }
            stats.bytes_sent = bytes.load(Ordering::Relaxed) + 512; // + the Complete frame (upper bound)
            if s.control.send_json(Kind::Complete, &stats).is_ok() {
                if let Some(w) = threads.watcher.take() {
                    if w.join().unwrap_or(false) {
                        s.sockets.kill(); // ends the receivers of the last session
                        return Ok(stats);
                    }
                }
            }
        }
        // The link is lost: the guest keeps running on what it has here.
        s.sockets.kill();
        if let Some(sh) = &sh {
            sh.detach_demand();
        }
        for t in threads.receivers.drain(..) {
            let _ = t.join();
        }
        if let Some(w) = threads.watcher.take() {
            let _ = w.join();
        }
        let lacking = missing(&sh);
        tracing::warn!(missing_pages = lacking, "link lost after switch-over; waiting for the source to resume");
        let deadline = Instant::now() + end.opts.recovery_timeout;
        let Some(mut next) = accept_resume(listener, hello, true, deadline, bytes) else {
            if concluded {
                // Every page arrived and the guest verified: only the source's acknowledgement of
                // `Complete` is missing.
                tracing::warn!("the source did not acknowledge completion; the guest is complete here");
                return Ok(stats);
            }
            let lacking = missing(&sh);
            pause_forever(end.guest.take(), sh);
            return Err(MemoryError::RecoveryFailed {
                waited: end.opts.recovery_timeout,
                left: format!(
                    "the guest stays paused at the destination: {lacking} pages are still only at the source; \
                     it runs nowhere (the source does not restart it after switch-over)"
                ),
                source: Box::new(MemoryError::Aborted("link lost during the dirty-page phase".into())),
            });
        };
        let bm = sh.as_ref().map_or_else(|| Bitmap::new(end.region.pages()), |sh| sh.missing_bitmap());
        tracing::info!(missing_pages = bm.count(), "link restored; resuming the dirty-page phase");
        if next.control.send(Kind::Missing, 0, 0, &bm.encode()).is_err() {
            next.sockets.kill();
        }
        *threads = start_session(&mut next, sh.as_ref());
        s = next;
    }
}

fn collect_stats(sh: &Shared, stats: &mut DestStats) {
    stats.page_faults = sh.faults.load(Ordering::Relaxed);
    stats.prefetch_hits = sh.prefetch_hits.load(Ordering::Relaxed);
    stats.push_discarded = sh.discarded.load(Ordering::Relaxed);
    stats.pages_after_resume = sh.installed.load(Ordering::Relaxed);
    let mut lat = sh.latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    stats.fault_latency_p50_us = percentile(&mut lat, 0.50);
    stats.fault_latency_p99_us = percentile(&mut lat, 0.99);
}

/// Stops the guest that cannot complete without joining vCPUs blocked on missing pages, and
/// keeps the userfaultfd open for good: the blocked vCPUs stay paused instead of reading zero
/// pages (closing it would let the kernel fill the holes with zeros).
fn pause_forever(guest: Option<Guest>, sh: Option<Arc<Shared>>) {
    if let Some(g) = guest {
        g.request_stop();
        std::mem::forget(g);
    }
    if let Some(sh) = sh {
        std::mem::forget(sh);
    }
}

/// Lets the guest run `run_after`, stops it and verifies its memory.
fn conclude(end: &mut Ending<'_>, stats: &mut DestStats) {
    std::thread::sleep(end.opts.run_after);
    let Some(guest) = end.guest.take() else { return };
    let state = guest.stop();
    stats.guest_writes_after_resume = state.writes() - end.writes_before;
    stats.guest_reads_after_resume = state.reads() - end.reads_before;
    let v = workload::verify(end.region, &state);
    if !v.ok {
        tracing::error!(?v, "verification failed: writes were lost");
    }
    stats.verification = Some(v);
}

/// A `StopCopy` frame's `arg` and payload.
type StopCopyFrame = (u64, Vec<u8>);

/// Pre-resume: rounds are written straight into memory (the guest is not running here).
/// Returns the `StopCopy` frame's `(arg, payload)`, and the real-time priority taken once
/// only small frames can come before it (post-copy: at once; hybrid: after its one round), so
/// that reading the stop-copy does not wait for a CPU.
fn receive_rounds(
    s: &mut Session,
    region: &Region,
    (populated, discarded): (&Bitmap, &Bitmap),
    stats: &mut DestStats,
    mode: &str,
) -> Result<(StopCopyFrame, Option<session::Realtime>), MemoryError> {
    let pages = region.pages();
    let mut rt = (mode == "post").then(|| session::Realtime::raise("switch"));
    let mut buf = Vec::new();
    let control_rx = s.control_rx.as_mut().ok_or_else(|| MemoryError::Config("no control connection".into()))?;
    loop {
        let h = protocol::read_header(control_rx).map_err(proto("memory rounds"))?;
        match h.kind {
            Kind::Pages | Kind::Zeros => {
                let (first, n) = run_extent(&h, pages, control_rx, &mut buf).map_err(proto("memory rounds"))?;
                discarded.clear_range(first, n);
                if h.kind == Kind::Pages {
                    region.write_pages(first, &buf);
                    populated.set_range(first, n);
                } else {
                    region.discard(first, n).map_err(sys("madvise"))?;
                    populated.clear_range(first, n);
                }
            }
            Kind::Discard => {
                let (first, n) = run_extent(&h, pages, control_rx, &mut buf).map_err(proto("memory rounds"))?;
                region.discard(first, n).map_err(sys("madvise"))?;
                populated.clear_range(first, n);
                discarded.set_range(first, n);
            }
            Kind::RoundEnd => {
                stats.rounds_received += 1;
                s.control.send(Kind::RoundEnd, 0, h.arg, &[]).map_err(proto("round end"))?;
                if mode == "hybrid" && rt.is_none() {
                    rt = Some(session::Realtime::raise("switch"));
                }
            }
            Kind::StopCopy => {
                let mut p = vec![0u8; h.len as usize];
                control_rx.read_exact(&mut p).map_err(|e| proto("stop-copy")(ProtocolError::Io(e)))?;
                return Ok(((h.arg, p), rt));
            }
            Kind::Abort => {
                let mut why = vec![0u8; h.len as usize];
                control_rx.read_exact(&mut why).map_err(|e| proto("memory rounds")(ProtocolError::Io(e)))?;
                return Err(MemoryError::Aborted(String::from_utf8_lossy(&why).into_owned()));
            }
            got => {
                return Err(proto("memory rounds")(ProtocolError::Unexpected {
                    got,
                    expected: "page data or StopCopy",
                }))
            }
        }
    }
}

/// Validates a `Pages`/`Zeros` header and reads its payload; returns `(first, count)`.
pub(crate) fn run_extent(
    h: &protocol::Header,
    pages: usize,
    rx: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<(usize, usize), ProtocolError> {
    let first = usize::try_from(h.arg).map_err(|_| ProtocolError::Malformed("page index"))?;
    let n = if h.kind == Kind::Pages {
        if !(h.len as usize).is_multiple_of(PAGE_SIZE) {
            return Err(ProtocolError::Malformed("page run"));
        }
        buf.resize(h.len as usize, 0);
        rx.read_exact(buf)?;
        h.len as usize / PAGE_SIZE
    } else {
        let mut c = [0u8; 8];
        if h.len != 8 {
            return Err(ProtocolError::Malformed("zero run"));
        }
        rx.read_exact(&mut c)?;
        buf.clear();
        usize::try_from(u64::from_le_bytes(c)).map_err(|_| ProtocolError::Malformed("zero run"))?
    };
    if n == 0 || first.checked_add(n).is_none_or(|e| e > pages) {
        return Err(ProtocolError::Malformed("page range"));
    }
    Ok((first, n))
}
