//! Wire protocol between `amvm agent` and `amvm collector`: authenticated, versioned datagrams.
//!
//! One UDP datagram carries exactly one frame; a frame is self-contained, so losing, duplicating
//! or reordering one affects only that frame.
//!
//! ```text
//!  agent                                              collector
//!    │  REPORT(node, boot, seq=n, t, records…) + HMAC    │  verify tag → decode → dedupe (node, boot, seq)
//!    │ ─────────────────────────────────────────────────▶│  → queue samples for the RRD writer
//!    │                    ACK(node, boot, seq=n) + HMAC  │  (sent only for authentic frames)
//!    │ ◀─────────────────────────────────────────────────│
//!    │  no ACK within the retry timeout: resend the same │  a resent frame is acknowledged again
//!    │  bytes (same seq), at most `retries` times        │  but its samples are not stored twice
//! ```
//!
//! Frame layout (all integers big-endian):
//!
//! ```text
//!  0      4      5      6        8        10             10+N            10+N+32
//!  ├──────┼──────┼──────┼────────┼────────┼───────────────┼───────────────┤
//!  │"AMVM"│ ver  │flags │  kind  │ len N  │   body (N)    │ HMAC-SHA256   │
//!  │magic │ = 1  │ = 0  │  u16   │  u16   │               │ over 0..10+N  │
//!  └──────┴──────┴──────┴────────┴────────┴───────────────┴───────────────┘
//!
//!  REPORT body: cluster str8 │ host str8 │ node uuid [16] │ boot id [16] │ seq u64 │
//!               time_ms u64 │ interval_ms u32 │ os_name str8 │ records…
//!  ACK body:    node uuid [16] │ boot id [16] │ seq u64
//!  str8:        len u8 │ UTF-8 bytes
//!  record:      type u8 │ len u16 │ payload (len bytes)
//!    type 1 host metric: id u16 │ value f64
//!    type 2 VM block:    vm uuid [16] │ name str8 │ (id u16 │ value f64)*
//! ```
//!
//! **Versioning rule.** `ver` changes only when the header or the fixed body prefix changes; a
//! receiver rejects versions it does not know with [`ProtoError::Version`]. New record types and
//! new metric ids are added *without* a version bump: receivers skip unknown record types (their
//! length is known) and unknown metric ids, and count what they skipped.
//!
//! **Bounds.** Nothing is allocated from a peer-sent length: the frame length is checked against
//! the datagram before anything else, strings are at most 255 bytes, and the record loop is
//! bounded by the body length. Non-finite values decode as unknown (`None`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::metric::{Metric, Scope};

/// Magic bytes opening every frame.
pub const MAGIC: [u8; 4] = *b"AMVM";
/// Current protocol version.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 10;
/// Length of the integrity tag (HMAC-SHA256).
pub const TAG_LEN: usize = 32;
/// Largest body an encoder produces (keeps a frame inside one unfragmented-ish UDP datagram).
pub const MAX_BODY: usize = 8192;
/// Largest datagram a receiver needs to accept.
pub const MAX_FRAME: usize = HEADER_LEN + u16::MAX as usize + TAG_LEN;
/// Shortest cluster key accepted.
pub const MIN_KEY_LEN: usize = 16;

const REC_HOST: u8 = 1;
const REC_VM: u8 = 2;
const SAMPLE_LEN: usize = 10;

type HmacSha256 = Hmac<Sha256>;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum FrameKind {
    /// Agent → collector: one batch of samples.
    Report = 1,
    /// Collector → agent: the report with this sequence number was received.
    Ack = 2,
}

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame too short ({0} bytes)")]
    Short(usize),
    #[error("bad magic")]
    Magic,
    #[error("unsupported protocol version {0} (this build speaks {VERSION})")]
    Version(u8),
    #[error("frame length field says {declared} body bytes but the datagram holds {actual}")]
    Length { declared: usize, actual: usize },
    #[error("integrity check failed (wrong cluster key, forged or corrupted frame)")]
    Tag,
    #[error("unknown frame kind {0}")]
    Kind(u16),
    #[error("body truncated while reading {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("trailing bytes after the body")]
    Trailing,
    #[error("report too large to encode")]
    TooLarge,
}

/// The cluster-wide secret that authenticates frames.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl ClusterKey {
    /// Wraps raw key bytes; at least [`MIN_KEY_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ProtoError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_LEN {
            return Err(ProtoError::Invalid("cluster key (shorter than 16 bytes)"));
        }
        Ok(Self(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        }
    }
}

impl ClusterKey {
    /// HMAC-SHA256 of `context` (a domain-separation label, so a tag made for one protocol is
    /// never valid in another) followed by `data`. Used by the agent's control endpoint.
    pub fn sign(&self, context: &[u8], data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(context);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Checks a tag made by [`ClusterKey::sign`] in constant time.
    pub fn verify(&self, context: &[u8], data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(context);
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

/// One sample: a metric and its value, `None` when unknown.
pub type Sample = (Metric, Option<f64>);

/// The samples of one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmReport {
    pub uuid: [u8; 16],
    pub name: String,
    pub samples: Vec<Sample>,
}

/// One agent report (the body of a `REPORT` frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub cluster: String,
    pub host: String,
    pub node: [u8; 16],
    pub boot: [u8; 16],
    pub seq: u64,
    pub time_ms: u64,
    pub interval_ms: u32,
    pub os_name: String,
    pub host_samples: Vec<Sample>,
    pub vms: Vec<VmReport>,
    /// Records or samples the decoder did not understand and skipped.
    pub skipped: u32,
}

/// The body of an `ACK` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub node: [u8; 16],
    pub boot: [u8; 16],
    pub seq: u64,
}

/// A decoded, authenticated frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Report(Report),
    Ack(Ack),
}

/// Checks a cluster or host name: 1..=64 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
/// These names become directory names, so nothing else may pass.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Formats a 16-byte UUID in the canonical 8-4-4-4-12 hex form.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Parses a UUID in 8-4-4-4-12 form or as 32 hex digits.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let compact: String = s.trim().chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    hex::decode_to_slice(compact, &mut out).ok()?;
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_str8(out: &mut Vec<u8>, s: &str) -> Result<(), ProtoError> {
    let len = u8::try_from(s.len()).map_err(|_| ProtoError::Invalid("string longer than 255 bytes"))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_sample(out: &mut Vec<u8>, (m, v): &Sample) {
    out.extend_from_slice(&(*m as u16).to_be_bytes());
    out.extend_from_slice(&v.unwrap_or(f64::NAN).to_be_bytes());
}

/// Wraps `body` in a header of `kind` and appends the tag. Public so tests and the fuzz target
/// can build authentic frames around arbitrary bodies.
pub fn seal_raw(kind: u16, body: &[u8], key: &ClusterKey) -> Result<Vec<u8>, ProtoError> {
    let len = u16::try_from(body.len()).map_err(|_| ProtoError::TooLarge)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

fn seal(kind: FrameKind, body: &[u8], key: &ClusterKey) -> Result<Vec<u8>, ProtoError> {
    seal_raw(kind as u16, body, key)
}

fn report_prefix(r: &Report, seq: u64) -> Result<Vec<u8>, ProtoError> {
    if !valid_name(&r.cluster) {
        return Err(ProtoError::Invalid("cluster name"));
    }
    if !valid_name(&r.host) {
        return Err(ProtoError::Invalid("host name"));
    }
    let mut b = Vec::with_capacity(MAX_BODY);
    put_str8(&mut b, &r.cluster)?;
    put_str8(&mut b, &r.host)?;
    b.extend_from_slice(&r.node);
    b.extend_from_slice(&r.boot);
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&r.time_ms.to_be_bytes());
    b.extend_from_slice(&r.interval_ms.to_be_bytes());
    put_str8(&mut b, &r.os_name)?;
    Ok(b)
}

impl Report {
    /// Encodes this report into one or more sealed frames of at most [`MAX_BODY`] body bytes,
    /// numbered `self.seq, self.seq + 1, …`. Host samples go in the first frame; VM blocks are
    /// split across frames (a VM with more samples than fit one frame is split too).
    pub fn encode(&self, key: &ClusterKey) -> Result<Vec<Vec<u8>>, ProtoError> {
        let mut frames = Vec::new();
        let mut seq = self.seq;
        let mut body = report_prefix(self, seq)?;
        let prefix_len = body.len();
        let mut host_rec = Vec::new();
        for s in &self.host_samples {
            host_rec.clear();
            put_sample(&mut host_rec, s);
            push_record(&mut body, REC_HOST, &host_rec);
        }
        for vm in &self.vms {
            let mut head = Vec::with_capacity(17 + vm.name.len());
            head.extend_from_slice(&vm.uuid);
            put_str8(&mut head, &vm.name)?;
            let fixed = 3 + head.len();
            let fresh_room = MAX_BODY.saturating_sub(prefix_len + fixed) / SAMPLE_LEN;
            let mut samples = vm.samples.as_slice();
            loop {
                let room = MAX_BODY.saturating_sub(body.len() + fixed) / SAMPLE_LEN;
                let fresh = body.len() == prefix_len;
                // Start a new frame when this VM does not fit here but would fit a fresh one.
                if !fresh && (room == 0 || (room < samples.len() && samples.len() <= fresh_room)) {
                    frames.push(seal(FrameKind::Report, &body, key)?);
                    seq = seq.wrapping_add(1);
                    body = report_prefix(self, seq)?;
                    continue;
                }
                if room == 0 {
                    return Err(ProtoError::TooLarge);
                }
                let take = room.min(samples.len());
                let mut rec = head.clone();
                for s in &samples[..take] {
                    put_sample(&mut rec, s);
                }
                push_record(&mut body, REC_VM, &rec);
                samples = &samples[take..];
                if samples.is_empty() {
                    break;
                }
            }
        }
        frames.push(seal(FrameKind::Report, &body, key)?);
        Ok(frames)
    }
}

fn push_record(body: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    body.push(kind);
    // Callers keep payloads under MAX_BODY, far below u16::MAX.
    body.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    body.extend_from_slice(payload);
}

impl Ack {
    /// Encodes a sealed `ACK` frame.
    pub fn encode(&self, key: &ClusterKey) -> Vec<u8> {
        let mut b = Vec::with_capacity(40);
        b.extend_from_slice(&self.node);
        b.extend_from_slice(&self.boot);
        b.extend_from_slice(&self.seq.to_be_bytes());
        match seal(FrameKind::Ack, &b, key) {
            Ok(f) => f,
            Err(_) => unreachable!("a 40-byte body always fits"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn str8(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let len = self.u8(what)? as usize;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| ProtoError::Invalid(what))
    }
}

/// Reads one sample; `Ok(None)` for a metric id this build does not know.
fn read_sample(r: &mut Reader<'_>, scope: Scope) -> Result<Option<Sample>, ProtoError> {
    let id = r.u16("sample id")?;
    let v = f64::from_be_bytes(r.array("sample value")?);
    let v = v.is_finite().then_some(v);
    Ok(Metric::from_id(id).filter(|m| m.scope() == scope).map(|m| (m, v)))
}

/// Verifies and decodes one datagram.
///
/// Checks run cheapest-first and authentication precedes any parsing of the body: length and
/// magic, version, then the HMAC tag (constant-time), then the body.
pub fn decode(datagram: &[u8], key: &ClusterKey) -> Result<Frame, ProtoError> {
    if datagram.len() < HEADER_LEN + TAG_LEN {
        return Err(ProtoError::Short(datagram.len()));
    }
    if datagram[0..4] != MAGIC {
        return Err(ProtoError::Magic);
    }
    if datagram[4] != VERSION {
        return Err(ProtoError::Version(datagram[4]));
    }
    let kind = u16::from_be_bytes([datagram[6], datagram[7]]);
    let declared = u16::from_be_bytes([datagram[8], datagram[9]]) as usize;
    let actual = datagram.len() - HEADER_LEN - TAG_LEN;
    if declared != actual {
        return Err(ProtoError::Length { declared, actual });
    }
    let (signed, tag) = datagram.split_at(HEADER_LEN + declared);
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| ProtoError::Tag)?;
    let body = &signed[HEADER_LEN..];
    match kind {
        k if k == FrameKind::Report as u16 => decode_report(body).map(Frame::Report),
        k if k == FrameKind::Ack as u16 => decode_ack(body).map(Frame::Ack),
        other => Err(ProtoError::Kind(other)),
    }
}

fn decode_ack(body: &[u8]) -> Result<Ack, ProtoError> {
    let mut r = Reader { buf: body };
    let ack = Ack { node: r.array("node uuid")?, boot: r.array("boot id")?, seq: r.u64("seq")? };
    if !r.buf.is_empty() {
        return Err(ProtoError::Trailing);
    }
    Ok(ack)
}

fn decode_report(body: &[u8]) -> Result<Report, ProtoError> {
    let mut r = Reader { buf: body };
    let cluster = r.str8("cluster name")?;
    if !valid_name(&cluster) {
        return Err(ProtoError::Invalid("cluster name"));
    }
    let host = r.str8("host name")?;
    if !valid_name(&host) {
        return Err(ProtoError::Invalid("host name"));
    }
    let mut report = Report {
        cluster,
        host,
        node: r.array("node uuid")?,
        boot: r.array("boot id")?,
        seq: r.u64("seq")?,
        time_ms: r.u64("time")?,
        interval_ms: r.u32("interval")?,
        os_name: r.str8("os name")?,
        host_samples: Vec::new(),
        vms: Vec::new(),
        skipped: 0,
    };
    while !r.buf.is_empty() {
        let kind = r.u8("record type")?;
        let len = r.u16("record length")? as usize;
        let mut rec = Reader { buf: r.take(len, "record payload")? };
        match kind {
            REC_HOST => match read_sample(&mut rec, Scope::Host)? {
                Some(s) => report.host_samples.push(s),
                None => report.skipped += 1,
            },
            REC_VM => {
                let uuid = rec.array("vm uuid")?;
                let name = rec.str8("vm name")?;
                let mut vm = VmReport { uuid, name, samples: Vec::new() };
                if !rec.buf.len().is_multiple_of(SAMPLE_LEN) {
                    return Err(ProtoError::Invalid("vm record length"));
                }
                while !rec.buf.is_empty() {
                    match read_sample(&mut rec, Scope::Vm)? {
                        Some(s) => vm.samples.push(s),
                        None => report.skipped += 1,
                    }
                }
                report.vms.push(vm);
                continue;
            }
            _ => {
                report.skipped += 1;
                continue;
            }
        }
        if !rec.buf.is_empty() {
            return Err(ProtoError::Invalid("host record length"));
        }
    }
    Ok(report)
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
