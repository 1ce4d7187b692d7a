//! The volume writer and its verifier (issue #11).
//!
//! The writer writes 4 KiB blocks in sequence to a block device (or file), block `seq % blocks`
//! for `seq = 1, 2, …`, each write followed by `fdatasync`, so a sequence number is
//! *acknowledged* only once the device has it. Each block carries a magic, its sequence number,
//! its index, the writer's run id, a payload derived from those and an FNV-1a checksum of it all.
//!
//! The verifier, given the last acknowledged sequence number `acked`, checks that every block
//! holds exactly what the writer last put there: for `seq` in `(acked - blocks, acked]` block
//! `seq % blocks` has that `seq` (a newer one, `acked + 1`, is allowed where the writer was
//! stopped mid-write), and a block never written is all zeros. A lost or torn write, a stale
//! block (a write that went to a copy the volume no longer has), or garbage all fail it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const BLOCK: usize = 4096;
const MAGIC: &[u8; 8] = b"AMVMBLK1";

/// FNV-1a, 64 bits.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The block the writer writes for `seq` in run `run` at index `index`.
pub fn block(run: u64, seq: u64, index: u64) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&index.to_le_bytes());
    b[24..32].copy_from_slice(&run.to_le_bytes());
    let mut x = seq ^ run.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in b[32..BLOCK - 8].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let sum = fnv(&b[..BLOCK - 8]);
    b[BLOCK - 8..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// What a block holds: nothing yet, a valid block (run, seq, index), or damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Zero,
    Valid { run: u64, seq: u64, index: u64 },
    Bad(String),
}

pub fn decode(b: &[u8]) -> Content {
    if b.len() != BLOCK {
        return Content::Bad(format!("{} bytes", b.len()));
    }
    if b.iter().all(|&x| x == 0) {
        return Content::Zero;
    }
    if &b[..8] != MAGIC {
        return Content::Bad("no magic".into());
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let (seq, index, run) = (word(8), word(16), word(24));
    if word(BLOCK - 8) != fnv(&b[..BLOCK - 8]) || block(run, seq, index)[..] != b[..] {
        return Content::Bad(format!("checksum (seq {seq})"));
    }
    Content::Valid { run, seq, index }
}

/// The verifier's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub blocks: u64,
    /// Blocks holding an acknowledged write.
    pub written: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.errors == 0
    }

    pub fn line(&self, acked: u64) -> String {
        format!(
            "amvm-verify ok={} acked={acked} blocks={} written={} errors={} first_error={}",
            self.ok(),
            self.blocks,
            self.written,
            self.errors,
            self.first_error.as_deref().unwrap_or("none").replace(' ', "_")
        )
    }
}

/// Checks `blocks` blocks of `dev` against run `run` acknowledged up to `acked`.
pub fn verify(dev: &Path, run: u64, blocks: u64, acked: u64) -> std::io::Result<Verdict> {
    let mut f = std::fs::File::open(dev)?;
    let mut v = Verdict { blocks, written: 0, errors: 0, first_error: None };
    let mut buf = vec![0u8; BLOCK];
    for i in 0..blocks {
        f.seek(SeekFrom::Start(i * BLOCK as u64))?;
        f.read_exact(&mut buf)?;
        // The newest acknowledged seq that maps to block i (the first is i, or `blocks` for 0).
        let first = if i == 0 { blocks } else { i };
        let expect = (acked >= first).then(|| first + (acked - first) / blocks * blocks);
        let err = match (decode(&buf), expect) {
            (Content::Zero, None) => None,
            (Content::Zero, Some(s)) => Some(format!("block {i}: zero, expected seq {s}")),
            (Content::Valid { run: r, seq, index }, e) => {
                let newer_ok = seq == acked + 1 && (acked + 1) % blocks == i;
                if r != run {
                    Some(format!("block {i}: run {r:#x}, expected {run:#x}"))
                } else if index != i {
                    Some(format!("block {i}: holds index {index}"))
                } else if Some(seq) == e || newer_ok {
                    v.written += u64::from(Some(seq) == e);
                    None
                } else {
                    Some(format!("block {i}: seq {seq}, expected {e:?}"))
                }
            }
            (Content::Bad(why), _) => Some(format!("block {i}: {why}")),
        };
        if let Some(e) = err {
            v.errors += 1;
            v.first_error.get_or_insert(e);
        }
    }
    Ok(v)
}

/// The writer: opens `dev` for writing; `step` writes the next block and syncs it.
pub struct Writer {
    f: std::fs::File,
    pub run: u64,
    pub blocks: u64,
    /// The last acknowledged sequence number.
    pub acked: u64,
}

impl Writer {
    /// Uses the first `max_blocks` blocks of `dev` (fewer if it is smaller).
    pub fn open(dev: &Path, run: u64, max_blocks: u64) -> std::io::Result<Writer> {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(dev)?;
        let size = f.seek(SeekFrom::End(0))?;
        let blocks = (size / BLOCK as u64).min(max_blocks);
        if blocks == 0 {
            return Err(std::io::Error::other(format!("{} is smaller than one block", dev.display())));
        }
        Ok(Writer { f, run, blocks, acked: 0 })
    }

    pub fn step(&mut self) -> std::io::Result<()> {
        let seq = self.acked + 1;
        let i = seq % self.blocks;
        self.f.seek(SeekFrom::Start(i * BLOCK as u64))?;
        self.f.write_all(&block(self.run, seq, i))?;
        self.f.sync_data()?;
        self.acked = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_damage_is_seen() {
        let b = block(7, 42, 3);
        assert_eq!(decode(&b), Content::Valid { run: 7, seq: 42, index: 3 });
        let mut t = b;
        t[100] ^= 1;
        assert!(matches!(decode(&t), Content::Bad(_)));
        assert_eq!(decode(&[0u8; BLOCK]), Content::Zero);
    }

    #[test]
    fn verifier_accepts_what_the_writer_wrote_and_catches_losses() {
        let dir = std::env::temp_dir().join(format!("amvm-vol-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        std::fs::write(&dir, vec![0u8; 16 * BLOCK]).unwrap();
        let mut w = Writer::open(&dir, 9, 8).unwrap();
        assert_eq!(w.blocks, 8);
        for _ in 0..5 {
            w.step().unwrap();
        }
        let v = verify(&dir, 9, 8, 5).unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.written, 5);
        for _ in 0..14 {
            w.step().unwrap(); // wraps around
        }
        let v = verify(&dir, 9, 8, 19).unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.written, 8);
        // Claiming more was acknowledged than the device has: lost writes.
        let v = verify(&dir, 9, 8, 22).unwrap();
        assert!(!v.ok());
        assert!(v.first_error.unwrap().contains("expected"));
        // A stale block (an older write where a newer one was acknowledged).
        let mut f = std::fs::OpenOptions::new().write(true).open(&dir).unwrap();
        f.seek(SeekFrom::Start(3 * BLOCK as u64)).unwrap();
        f.write_all(&block(9, 11, 3)).unwrap();
        let v = verify(&dir, 9, 8, 19).unwrap();
        assert_eq!(v.errors, 1, "{v:?}");
        let _ = std::fs::remove_file(&dir);
    }
}
