//! The set of connections of one migration session, torn down together, and the socket
//! settings that make a silent link loss visible (keep-alive, user timeout).
//!
//! A session is one control connection plus, for post- and hybrid-copy, a demand connection
//! and the push streams. When any of them fails, both sides shut every socket of the session
//! down (`Sockets::kill`), so the peer sees the loss on whatever connection it is using and
//! recovery always starts from a clean slate: a new session with `Hello{resume}`.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sockets of one session.
#[derive(Debug, Default)]
pub struct Sockets {
    socks: Mutex<Vec<TcpStream>>,
    dead: AtomicBool,
}

impl Sockets {
    /// Registers a socket (a clone of it) so `kill` can shut it down.
    pub fn add(&self, s: &TcpStream) -> io::Result<()> {
        let c = s.try_clone()?;
        if self.dead.load(Ordering::Acquire) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.socks.lock().unwrap_or_else(|e| e.into_inner()).push(c);
        Ok(())
    }

    /// Shuts every socket down (both directions): blocked reads and writes on any of them fail.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        for s in self.socks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Whether `kill` was called.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

fn setopt(s: &TcpStream, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt on a valid socket fd with a pointer to an i32 and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// TCP_NODELAY, keep-alive probes after 1 s of silence (3 probes 1 s apart) and a 10 s user
/// timeout for unacknowledged data: a peer that vanishes without a reset (cable pulled, host
/// gone) is noticed within seconds instead of blocking a read forever.
pub fn tune(s: &TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    setopt(s, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    setopt(s, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1)?;
    setopt(s, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1)?;
    setopt(s, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
    setopt(s, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 10_000)
}

/// Real-time priority for the calling thread while the guard lives (SCHED_FIFO, priority 1;
/// back to SCHED_OTHER on drop). For the latency-critical paths only — the demand-fault
/// service and the switch-over — which block on I/O between short bursts; on a loaded host a
/// woken ordinary thread can wait a whole scheduler slice (milliseconds) for a CPU. Without
/// the privilege it does nothing.
#[derive(Debug)]
pub struct Realtime {
    on: bool,
}

impl Realtime {
    /// Raises the calling thread, which plays `role` (`switch`, `fault`, `serve`, `install`).
    /// `AMVM_MIGRATION_RT` in the environment chooses the roles: unset or `1` = all, `0` = none,
    /// else a comma-separated list.
    pub fn raise(role: &str) -> Self {
        let on = match std::env::var("AMVM_MIGRATION_RT") {
            Err(_) => true,
            Ok(v) => v == "1" || v.split(',').any(|r| r.trim() == role),
        };
        if !on {
            return Self::off();
        }
        let p = libc::sched_param { sched_priority: 1 };
        // SAFETY: sched_setscheduler(0 = calling thread) with a valid sched_param. Threads it
        // spawns start with the ordinary policy (RESET_ON_FORK).
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &p) };
        if rc != 0 {
            tracing::debug!("no real-time priority: {}", io::Error::last_os_error());
        }
        Self { on: rc == 0 }
    }

    /// A guard that changes nothing.
    pub fn off() -> Self {
        Self { on: false }
    }

    /// Whether the thread runs at real-time priority.
    pub fn is_on(&self) -> bool {
        self.on
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        if self.on {
            let p = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in `raise`, back to the ordinary policy.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &p) };
        }
    }
}

/// Exponential backoff between reconnection attempts, bounded by a deadline.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    /// Starts at 50 ms, doubles to at most 1 s, gives up after `budget`.
    pub fn new(budget: Duration) -> Self {
        Self { next: Duration::from_millis(50), deadline: Instant::now() + budget }
    }

    /// Time left before the deadline.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps before the next attempt; `false` once the deadline has passed.
    pub fn wait(&mut self) -> bool {
        let left = self.left();
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(self.next.min(left));
        self.next = (self.next * 2).min(Duration::from_secs(1));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn kill_unblocks_a_reader_and_later_sockets_are_born_dead() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (_b, _) = l.accept().expect("accept");
        tune(&a).expect("tune");
        let set = std::sync::Arc::new(Sockets::default());
        set.add(&a).expect("add");
        let reader = std::thread::spawn(move || {
            let mut a = a;
            let mut buf = [0u8; 8];
            a.read(&mut buf)
        });
        std::thread::sleep(Duration::from_millis(20));
        set.kill();
        assert!(matches!(reader.join().expect("join"), Ok(0) | Err(_)));
        assert!(set.is_dead());
        let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        set.add(&c).expect("add");
        assert!(matches!((&c).read(&mut [0u8; 1]), Ok(0) | Err(_)));
    }

    #[test]
    fn realtime_priority_is_raised_and_restored() {
        let rt = Realtime::raise("test");
        // SAFETY: querying the calling thread's policy.
        let during = unsafe { libc::sched_getscheduler(0) };
        // SAFETY: as above, from a thread spawned meanwhile.
        let child = std::thread::spawn(|| unsafe { libc::sched_getscheduler(0) }).join().expect("join");
        let on = rt.is_on();
        drop(rt);
        // SAFETY: as above.
        let after = unsafe { libc::sched_getscheduler(0) };
        if on {
            assert_eq!(during & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
            assert_eq!(child, libc::SCHED_OTHER, "spawned threads must not inherit real-time priority");
        } else {
            eprintln!("skipped: no privilege for SCHED_FIFO here");
        }
        assert_eq!(after, libc::SCHED_OTHER);
    }

    #[test]
    fn backoff_ends_at_its_deadline() {
        let mut b = Backoff::new(Duration::from_millis(120));
        let t = Instant::now();
        let mut n = 0;
        while b.wait() {
            n += 1;
        }
        assert!(n >= 2 && t.elapsed() >= Duration::from_millis(120), "{n} {:?}", t.elapsed());
        assert!(b.left().is_zero());
    }
}
