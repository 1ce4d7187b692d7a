//! Wire protocol between the migration source and destination.
//!
//! Every connection starts with `Hello` (source → destination) naming the protocol version,
//! the migration id and the connection's role; the destination answers `HelloAck` or `Abort`.
//! After that, each connection carries frames: a 16-byte header (`kind: u16`, `flags: u16`,
//! `len: u32` payload bytes, `arg: u64`, little endian) and `len` payload bytes.
//!
//! Connections: **control** (rounds, stop-copy, completion), **demand** (page requests and
//! their replies only, so a fault never waits behind pushed data) and one or more **push**
//! streams (post-resume background copy).
//!
//! ```text
//!  source                                   destination
//!    |--- Hello{control} ------------------------>|  allocate region
//!    |<-- HelloAck -------------------------------|
//!    |--- Hello{demand}, Hello{push i} ---------->|  (each acked)
//!    |== round 0: Pages/Zeros (all memory) ======>|  pre- and hybrid-copy; written directly
//!    |--- Discard(runs) (hybrid, during round 0) ->|  re-dirtied pages dropped early
//!    |--- RoundEnd(0) --------------------------->|
//!    |<-- RoundEnd(0) (round drained) ------------|
//!    |== rounds 1..k: dirty pages (pre-copy) ====>|  each ends with RoundEnd / echo
//!    |  [guest paused]                             |
//!    |--- StopCopy{vCPU state, dirty bitmap} ---->|  discard dirty pages, register uffd
//!    |    (hybrid: arg 2 = only the pages dirtied since the last Discard; the rest are the
//!    |     pages already discarded — the bitmap stays a few bytes even for a 4 GiB guest)
//!    |<-- Resumed --------------------------------|  guest runs here from now on
//!    |<-- Demand(page) ---(demand)----------------|  userfaultfd MISSING fault
//!    |--- Pages{DEMAND|PREFETCH} ---(demand)----->|  UFFDIO_COPY + wake
//!    |== Pages{PUSH} ==(push streams)============>|  UFFDIO_COPY; EEXIST = discard
//!    |--- PushDone ------------------------------>|
//!    |<-- Complete{stats, verified} --------------|  every page present; guest verified
//!    |--- CompleteAck --------------------------->|  the source may now free its pages
//! ```
//!
//! **Recovery** (a lost connection kills the whole session: each side shuts every socket of
//! it, so a drop of one connection is a drop of all). Whoever holds the guest state decides:
//! until the source reads `Resumed` it may restart the guest itself, from then on never.
//!
//! ```text
//!  source                                   destination
//!    |  (link lost; backoff 50 ms .. 1 s, up to the recovery timeout)
//!    |--- Hello{control, resume} --------------->|
//!    |<-- Status(0: not resumed) ----------------|  it never got the stop-copy
//!    |--- Abort --------------------------------->|  guest restarts on the source; dest gives up
//!  or
//!    |<-- Status(1: guest runs here) ------------|  switch-over happened: never restart here
//!    |--- Hello{demand|push i, resume} --------->|  (each acked)
//!    |<-- Missing(bitmap of pages still lacking)-|  = acknowledgement of every other page
//!    |  needed := Missing; the destination re-sends its outstanding Demand requests
//!    |<-- Demand / Pages / Pages{PUSH} ... ======>|  as before; EEXIST for pages already in
//!    |<-- Complete ... CompleteAck --------------|
//! ```
//!
//! **Versioning.** `PROTOCOL_VERSION` changes whenever a frame's layout or meaning changes; a
//! destination refuses a `Hello` with any other version (there is no partial compatibility).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version carried in every `Hello`.
pub const PROTOCOL_VERSION: u16 = 2;
/// Header bytes before each payload.
pub const HEADER_LEN: usize = 16;
/// Largest payload a receiver accepts (a stop-copy bitmap of a 1 TiB guest fits).
pub const MAX_PAYLOAD: u32 = 64 << 20;

/// Frame kinds.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON `Hello`.
    Hello = 1,
    /// JSON `HelloAck`.
    HelloAck = 2,
    /// `arg` = first page; payload = whole pages.
    Pages = 3,
    /// `arg` = first page; payload = u64 page count; pages are all-zero.
    Zeros = 4,
    /// End of round `arg` (source → destination); echoed back once the round is processed.
    RoundEnd = 5,
    /// Payload: u32 length of the JSON vCPU state, the state, then the encoded dirty bitmap.
    StopCopy = 6,
    /// The guest runs at the destination.
    Resumed = 7,
    /// Demand request for page `arg`.
    Demand = 8,
    /// All pushes sent; `arg` = pages pushed.
    PushDone = 9,
    /// JSON `DestStats`: migration complete at the destination.
    Complete = 10,
    /// JSON reason; the sender gives up.
    Abort = 11,
    /// `arg` = first page; payload = u64 count: pages already sent are dirty again; the
    /// destination drops its copies now (hybrid-copy), so the stop-copy has little to drop.
    Discard = 12,
    /// Answer to a resuming control `Hello`: `arg` 1 = the guest runs at the destination
    /// (switch-over happened), 0 = it never resumed there.
    Status = 13,
    /// Payload: encoded bitmap of the pages the destination still lacks (after a resume).
    Missing = 14,
    /// The source received `Complete`; the destination may end.
    CompleteAck = 15,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::HelloAck,
            3 => Self::Pages,
            4 => Self::Zeros,
            5 => Self::RoundEnd,
            6 => Self::StopCopy,
            7 => Self::Resumed,
            8 => Self::Demand,
            9 => Self::PushDone,
            10 => Self::Complete,
            11 => Self::Abort,
            12 => Self::Discard,
            13 => Self::Status,
            14 => Self::Missing,
            15 => Self::CompleteAck,
            _ => return None,
        })
    }
}

/// Page frame flags: why the page travels.
pub mod flags {
    /// Pre-resume copy round.
    pub const ROUND: u16 = 1;
    /// Background push after resume.
    pub const PUSH: u16 = 2;
    /// Reply to a demand request.
    pub const DEMAND: u16 = 4;
    /// Neighbour sent along with a demand reply.
    pub const PREFETCH: u16 = 8;
}

/// Role of a connection, declared in its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Rounds, stop-copy and completion.
    Control,
    /// Demand requests and replies.
    Demand,
    /// Background push stream number `n`.
    Push(u32),
}

/// First frame on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `PROTOCOL_VERSION` of the sender.
    pub version: u16,
    /// Migration id (all connections of one migration share it).
    pub migration_id: u64,
    /// What this connection carries.
    pub role: Role,
    /// Migration mode name (`pre`, `post`, `hybrid`).
    pub mode: String,
    /// Guest pages.
    pub pages: u64,
    /// Push streams that follow.
    pub push_streams: u32,
    /// A reconnection after a lost link (same migration id), not a new migration.
    #[serde(default)]
    pub resume: bool,
}

/// Frame-level errors.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u16),
    /// Payload larger than `MAX_PAYLOAD`.
    #[error("frame payload of {0} bytes exceeds the limit")]
    TooLarge(u32),
    /// A frame arrived where another was expected.
    #[error("unexpected {got:?} frame, expected {expected}")]
    Unexpected {
        /// What arrived.
        got: Kind,
        /// What the receiver's state allows.
        expected: &'static str,
    },
    /// A payload did not parse.
    #[error("malformed {0} payload")]
    Malformed(&'static str),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, this side {PROTOCOL_VERSION}")]
    Version(u16),
    /// Socket error.
    #[error("connection failed")]
    Io(#[from] io::Error),
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame kind.
    pub kind: Kind,
    /// Kind-specific flags.
    pub flags: u16,
    /// Payload length in bytes.
    pub len: u32,
    /// Kind-specific argument.
    pub arg: u64,
}

impl Header {
    /// Encodes to the 16 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&(self.kind as u16).to_le_bytes());
        b[2..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.arg.to_le_bytes());
        b
    }

    /// Decodes and validates 16 wire bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, ProtocolError> {
        let kind = u16::from_le_bytes([b[0], b[1]]);
        let kind = Kind::from_u16(kind).ok_or(ProtocolError::UnknownKind(kind))?;
        let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        let mut arg = [0u8; 8];
        arg.copy_from_slice(&b[8..16]);
        Ok(Self { kind, flags: u16::from_le_bytes([b[2], b[3]]), len, arg: u64::from_le_bytes(arg) })
    }
}

/// Reads one header.
pub fn read_header(r: &mut impl Read) -> Result<Header, ProtocolError> {
    let mut b = [0u8; HEADER_LEN];
    r.read_exact(&mut b)?;
    Header::decode(&b)
}

/// Reads one whole frame (header and payload).
pub fn read_frame(r: &mut impl Read) -> Result<(Header, Vec<u8>), ProtocolError> {
    let h = read_header(r)?;
    let mut payload = vec![0u8; h.len as usize];
    r.read_exact(&mut payload)?;
    Ok((h, payload))
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: Kind, flags: u16, arg: u64, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).ok().filter(|&l| l <= MAX_PAYLOAD);
    let len = len.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame payload too large"))?;
    w.write_all(&Header { kind, flags, len, arg }.encode())?;
    w.write_all(payload)
}

/// Writes a frame whose payload is JSON.
pub fn write_json<T: Serialize>(w: &mut impl Write, kind: Kind, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_frame(w, kind, 0, 0, &body)
}

/// Parses a JSON payload.
pub fn parse_json<T: for<'de> Deserialize<'de>>(payload: &[u8], what: &'static str) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|_| ProtocolError::Malformed(what))
}

/// Builds a `StopCopy` payload.
pub fn stop_copy_payload(vcpu_json: &[u8], bitmap: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + vcpu_json.len() + bitmap.len());
    out.extend_from_slice(&(vcpu_json.len() as u32).to_le_bytes());
    out.extend_from_slice(vcpu_json);
    out.extend_from_slice(bitmap);
    out
}

/// Splits a `StopCopy` payload into vCPU state and encoded bitmap.
pub fn split_stop_copy(payload: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let n = payload.get(..4).ok_or(ProtocolError::Malformed("stop-copy"))?;
    let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
    let rest = &payload[4..];
    if n > rest.len() {
        return Err(ProtocolError::Malformed("stop-copy"));
    }
    Ok(rest.split_at(n))
}

/// Checks a `Hello` against this side's version.
pub fn check_hello(h: &Hello) -> Result<(), ProtocolError> {
    if h.version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(h.version));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [Kind; 15] = [
        Kind::Status,
        Kind::Missing,
        Kind::CompleteAck,
        Kind::Discard,
        Kind::Hello,
        Kind::HelloAck,
        Kind::Pages,
        Kind::Zeros,
        Kind::RoundEnd,
        Kind::StopCopy,
        Kind::Resumed,
        Kind::Demand,
        Kind::PushDone,
        Kind::Complete,
        Kind::Abort,
    ];

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec((0usize..15, any::<u16>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 1..20)) {
            let mut wire = Vec::new();
            for (k, f, a, p) in &frames {
                write_frame(&mut wire, KINDS[*k], *f, *a, p).expect("write");
            }
            let mut r = &wire[..];
            for (k, f, a, p) in &frames {
                let (h, payload) = read_frame(&mut r).expect("read");
                prop_assert_eq!(h.kind, KINDS[*k]);
                prop_assert_eq!(h.flags, *f);
                prop_assert_eq!(h.arg, *a);
                prop_assert_eq!(&payload, p);
            }
            prop_assert!(r.is_empty());
        }

        #[test]
        fn any_header_bytes_decode_or_error(b in proptest::array::uniform16(any::<u8>())) {
            match Header::decode(&b) {
                Ok(h) => { prop_assert!(h.len <= MAX_PAYLOAD); prop_assert_eq!(h.encode(), b); }
                Err(ProtocolError::UnknownKind(_) | ProtocolError::TooLarge(_)) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        #[test]
        fn truncated_stream_is_an_error(p in proptest::collection::vec(any::<u8>(), 1..100), cut in 0usize..116) {
            let mut wire = Vec::new();
            write_frame(&mut wire, Kind::Pages, 0, 7, &p).expect("write");
            let cut = cut.min(wire.len() - 1);
            prop_assert!(read_frame(&mut &wire[..cut]).is_err());
        }

        #[test]
        fn stop_copy_splits(v in proptest::collection::vec(any::<u8>(), 0..100), b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let p = stop_copy_payload(&v, &b);
            let (v2, b2) = split_stop_copy(&p).expect("split");
            prop_assert_eq!(v2, &v[..]);
            prop_assert_eq!(b2, &b[..]);
        }
    }

    #[test]
    fn hello_version_is_negotiated() {
        let mut h = Hello {
            version: PROTOCOL_VERSION,
            migration_id: 1,
            role: Role::Push(2),
            mode: "hybrid".into(),
            pages: 10,
            push_streams: 1,
            resume: true,
        };
        let mut wire = Vec::new();
        write_json(&mut wire, Kind::Hello, &h).expect("write");
        let (hdr, payload) = read_frame(&mut &wire[..]).expect("read");
        assert_eq!(hdr.kind, Kind::Hello);
        let back: Hello = parse_json(&payload, "hello").expect("parse");
        assert_eq!(back, h);
        assert!(check_hello(&back).is_ok());
        h.version = PROTOCOL_VERSION + 1;
        assert!(matches!(check_hello(&h), Err(ProtocolError::Version(v)) if v == PROTOCOL_VERSION + 1));
    }

    #[test]
    fn oversized_frame_is_refused() {
        let h = Header { kind: Kind::Pages, flags: 0, len: MAX_PAYLOAD + 1, arg: 0 };
        assert!(matches!(Header::decode(&h.encode()), Err(ProtocolError::TooLarge(_))));
    }
}
