//! One TCP connection of a migration: framed sends through the shared throttle, byte counting.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::protocol::{Header, Kind, HEADER_LEN};
use super::throttle::Throttle;

/// Sending half of a connection.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    throttle: Arc<Throttle>,
    bytes: Arc<AtomicU64>,
    priority: bool,
}

impl Link {
    /// Wraps `stream`; `priority` links (demand) never wait on the throttle.
    pub fn new(stream: TcpStream, throttle: Arc<Throttle>, bytes: Arc<AtomicU64>, priority: bool) -> Self {
        Self { stream, throttle, bytes, priority }
    }

    fn account(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if self.priority {
            self.throttle.acquire_priority(n);
        } else {
            self.throttle.acquire(n);
        }
    }

    /// Sends one frame.
    pub fn send(&mut self, kind: Kind, flags: u16, arg: u64, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame too large"))?;
        self.account(HEADER_LEN + payload.len());
        self.stream.write_all(&Header { kind, flags, len, arg }.encode())?;
        self.stream.write_all(payload)
    }

    /// Sends a frame whose header is already reserved in the first `HEADER_LEN` bytes of `buf`
    /// (one write for header and pages).
    pub fn send_prefixed(&mut self, kind: Kind, flags: u16, arg: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = u32::try_from(buf.len() - HEADER_LEN).map_err(|_| io::Error::other("frame too large"))?;
        buf[..HEADER_LEN].copy_from_slice(&Header { kind, flags, len, arg }.encode());
        self.account(buf.len());
        self.stream.write_all(buf)
    }

    /// Sends a JSON frame.
    pub fn send_json<T: serde::Serialize>(&mut self, kind: Kind, value: &T) -> io::Result<()> {
        let body = serde_json::to_vec(value).map_err(io::Error::other)?;
        self.send(kind, 0, 0, &body)
    }
}
