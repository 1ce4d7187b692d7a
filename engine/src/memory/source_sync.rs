//! The source's connections: opening a session (first or resumed), the demand server and
//! the push streams that run after switch-over.

use std::io::BufReader;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::bitmap::Bitmap;
use super::link::Link;
use super::protocol::{self, flags, Hello, Kind, ProtocolError, Role, PROTOCOL_VERSION};
use super::session::{self, Backoff, Sockets};
use super::source::send_run;
use super::sys::mmap::Region;
use super::throttle::Throttle;
use super::{proto, sys, MemoryError, Mode, SourceConfig};

/// The connections of one session.
pub(crate) struct Conns {
    pub control: Link,
    pub control_rx: BufReader<TcpStream>,
    pub demand: Option<(Link, BufReader<TcpStream>)>,
    pub push: Vec<Link>,
    pub sockets: Arc<Sockets>,
}

/// What every connection needs to open.
pub(crate) struct Dialer<'a> {
    pub cfg: &'a SourceConfig,
    pub addr: &'a str,
    pub pages: usize,
    pub throttle: &'a Arc<Throttle>,
    pub bytes: &'a Arc<AtomicU64>,
}

impl Dialer<'_> {
    /// Opens one connection, sends its `Hello` and returns the destination's answer.
    fn open(
        &self,
        role: Role,
        resume: bool,
        sockets: &Sockets,
    ) -> Result<(Link, BufReader<TcpStream>, protocol::Header, Vec<u8>), MemoryError> {
        let s = if resume {
            // Bounded: a reconnection attempt must not outlive the recovery budget.
            let addr = self
                .addr
                .to_socket_addrs()
                .map_err(sys("cannot connect to the destination"))?
                .next()
                .ok_or_else(|| MemoryError::Config(format!("{} resolves to no address", self.addr)))?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        } else {
            TcpStream::connect(self.addr)
        };
        let s = s.map_err(sys("cannot connect to the destination"))?;
        session::tune(&s).map_err(sys("setsockopt"))?;
        sockets.add(&s).map_err(sys("dup socket"))?;
        let mut rx = BufReader::new(s.try_clone().map_err(sys("dup socket"))?);
        let mut link = Link::new(s, self.throttle.clone(), self.bytes.clone(), role == Role::Demand);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            migration_id: self.cfg.migration_id,
            role,
            mode: self.cfg.mode.name().into(),
            pages: self.pages as u64,
            push_streams: self.cfg.push_streams,
            resume,
        };
        link.send_json(Kind::Hello, &hello).map_err(proto("handshake"))?;
        if resume {
            let _ = rx.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
        }
        let (h, payload) = protocol::read_frame(&mut rx).map_err(proto("handshake"))?;
        let _ = rx.get_ref().set_read_timeout(None);
        if h.kind == Kind::Abort {
            return Err(MemoryError::Aborted(String::from_utf8_lossy(&payload).into_owned()));
        }
        Ok((link, rx, h, payload))
    }

    fn open_acked(
        &self,
        role: Role,
        resume: bool,
        sockets: &Sockets,
    ) -> Result<(Link, BufReader<TcpStream>), MemoryError> {
        let (link, rx, h, _) = self.open(role, resume, sockets)?;
        if h.kind != Kind::HelloAck {
            return Err(proto("handshake")(ProtocolError::Unexpected { got: h.kind, expected: "HelloAck" }));
        }
        Ok((link, rx))
    }

    /// Opens the first session.
    pub fn session(&self) -> Result<Conns, MemoryError> {
        let sockets = Arc::new(Sockets::default());
        let (control, control_rx) = self.open_acked(Role::Control, false, &sockets)?;
        let mut conns = Conns { control, control_rx, demand: None, push: Vec::new(), sockets };
        if self.cfg.mode != Mode::Pre {
            conns.demand = Some(self.open_acked(Role::Demand, false, &conns.sockets)?);
            for i in 0..self.cfg.push_streams.max(1) {
                conns.push.push(self.open_acked(Role::Push(i), false, &conns.sockets)?.0);
            }
        }
        Ok(conns)
    }

    /// One attempt to resume: the destination's verdict.
    fn resume_once(&self) -> Result<Verdict, MemoryError> {
        let sockets = Arc::new(Sockets::default());
        let (control, control_rx, h, _) = self.open(Role::Control, true, &sockets)?;
        if h.kind != Kind::Status {
            return Err(proto("resume")(ProtocolError::Unexpected { got: h.kind, expected: "Status" }));
        }
        if h.arg == 0 {
            return Ok(Verdict::NotResumed(Conns { control, control_rx, demand: None, push: Vec::new(), sockets }));
        }
        let mut conns = Conns { control, control_rx, demand: None, push: Vec::new(), sockets };
        if self.cfg.mode != Mode::Pre {
            conns.demand = Some(self.open_acked(Role::Demand, true, &conns.sockets)?);
            for i in 0..self.cfg.push_streams.max(1) {
                conns.push.push(self.open_acked(Role::Push(i), true, &conns.sockets)?.0);
            }
        }
        let rx = &mut conns.control_rx;
        let _ = rx.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
        let (h, payload) = protocol::read_frame(rx).map_err(proto("resume"))?;
        let _ = rx.get_ref().set_read_timeout(None);
        if h.kind != Kind::Missing {
            return Err(proto("resume")(ProtocolError::Unexpected { got: h.kind, expected: "Missing" }));
        }
        let missing = Bitmap::decode(&payload, self.pages)
            .filter(|b| b.len() == self.pages)
            .ok_or_else(|| proto("resume")(ProtocolError::Malformed("missing-page bitmap")))?;
        Ok(Verdict::Resumed(conns, missing))
    }

    /// Reconnects with backoff until the destination answers or the recovery timeout ends
    /// (`None`). A destination that refuses the resume ends it at once (an error).
    pub fn resume(&self, budget: Duration) -> Result<Option<Verdict>, MemoryError> {
        let mut backoff = Backoff::new(budget);
        loop {
            match self.resume_once() {
                Ok(v) => return Ok(Some(v)),
                Err(e @ MemoryError::Aborted(_)) => return Err(e),
                Err(e) => tracing::debug!("resume attempt failed: {e:#}"),
            }
            if !backoff.wait() {
                return Ok(None);
            }
        }
    }
}

/// The destination's answer to a resume.
pub(crate) enum Verdict {
    /// It never resumed the guest: the source keeps it.
    NotResumed(Conns),
    /// The guest runs there; the bitmap holds the pages it still lacks.
    Resumed(Conns, Bitmap),
}

/// Post-resume machinery of one session: the demand server and the push streams.
pub(crate) struct SyncThreads {
    pub threads: Vec<JoinHandle<(u64, Option<Link>)>>,
    pub demand: Option<JoinHandle<()>>,
    /// Set before the source closes the demand connection on purpose (migration complete).
    pub done: Arc<AtomicBool>,
    /// Push starts once set: when the destination confirmed it resumed, so the push does not
    /// compete with the stop-copy for the link and the CPUs during the downtime.
    pub go: Arc<AtomicBool>,
}

pub(crate) fn start_sync(
    region: &Arc<Region>,
    needed: &Arc<Bitmap>,
    conns: &mut Conns,
    prefetch: usize,
    push_delay: Duration,
    go: bool,
) -> SyncThreads {
    let active = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(go));
    let demand = conns.demand.take().map(|(mut link, mut rx)| {
        let (region, needed, active, done) = (region.clone(), needed.clone(), active.clone(), done.clone());
        let sockets = conns.sockets.clone();
        std::thread::spawn(move || {
            let _rt = session::Realtime::raise("serve");
            let mut buf = Vec::new();
            loop {
                let h = match protocol::read_header(&mut rx) {
                    Ok(h) => h,
                    Err(_) => {
                        if !done.load(Ordering::Acquire) {
                            sockets.kill(); // the link is lost: the whole session goes
                        }
                        return;
                    }
                };
                if h.kind != Kind::Demand || h.len != 0 || h.arg >= region.pages() as u64 {
                    tracing::warn!(?h, "bad frame on the demand connection");
                    sockets.kill();
                    return;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let p = h.arg as usize;
                needed.clear(p);
                let mut ok = send_run(&mut link, &region, p, 1, flags::DEMAND, &mut buf).is_ok();
                // Neighbour prefetch: the following pages the destination still lacks.
                let end = (p + 1 + prefetch).min(region.pages());
                let mut q = p + 1;
                while ok && q < end {
                    let mut n = 0;
                    while q + n < end && needed.clear(q + n) {
                        n += 1;
                    }
                    if n > 0 {
                        ok = send_run(&mut link, &region, q, n, flags::PREFETCH, &mut buf).is_ok();
                    }
                    q += n + 1;
                }
                active.fetch_sub(1, Ordering::AcqRel);
                if !ok {
                    sockets.kill();
                    return;
                }
            }
        })
    });
    let n = conns.push.len().max(1);
    let threads = conns
        .push
        .drain(..)
        .enumerate()
        .map(|(i, mut link)| {
            let (region, needed, active, go) = (region.clone(), needed.clone(), active.clone(), go.clone());
            let sockets = conns.sockets.clone();
            std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) && !sockets.is_dead() {
                    std::thread::sleep(Duration::from_micros(100));
                }
                // Demand replies flow from the first moment; active push may wait (pure demand first).
                let start = std::time::Instant::now();
                while start.elapsed() < push_delay && !sockets.is_dead() {
                    std::thread::sleep(Duration::from_millis(5).min(push_delay));
                }
                let mut buf = Vec::new();
                let mut pushed = 0u64;
                let blocks = region.pages().div_ceil(64);
                for b in (i..blocks).step_by(n) {
                    let end = ((b + 1) * 64).min(region.pages());
                    let mut p = b * 64;
                    while p < end {
                        if !needed.get(p) {
                            p += 1;
                            continue;
                        }
                        // Yield at once to demand replies.
                        while active.load(Ordering::Acquire) > 0 {
                            std::thread::sleep(Duration::from_micros(20));
                        }
                        let mut k = 0;
                        while k < super::source::RUN && p + k < end && needed.clear(p + k) {
                            k += 1;
                        }
                        if k == 0 {
                            p += 1;
                            continue;
                        }
                        if sockets.is_dead() || send_run(&mut link, &region, p, k, flags::PUSH, &mut buf).is_err() {
                            sockets.kill();
                            return (pushed, None);
                        }
                        pushed += k as u64;
                        p += k;
                    }
                }
                // Keep the stream open until the migration completes: its end means a lost link.
                (pushed, Some(link))
            })
        })
        .collect();
    SyncThreads { threads, demand, done, go }
}
