//! A lock-free page bitmap (dirty / needed / present sets) and its compact wire encoding.

use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-size bitmap whose bits can be set and cleared concurrently.
#[derive(Debug)]
pub struct Bitmap {
    words: Vec<AtomicU64>,
    len: usize,
}

impl Bitmap {
    /// All bits clear.
    pub fn new(len: usize) -> Self {
        Self { words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(), len }
    }

    /// All bits set.
    pub fn full(len: usize) -> Self {
        let words = (0..len.div_ceil(64))
            .map(|w| {
                let bits = (len - w * 64).min(64);
                AtomicU64::new(if bits == 64 { !0 } else { (1u64 << bits) - 1 })
            })
            .collect();
        Self { words, len }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the bitmap has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bit `i` is set.
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns true if it was clear before.
    pub fn set(&self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let m = 1u64 << (i % 64);
        self.words[i / 64].fetch_or(m, Ordering::AcqRel) & m == 0
    }

    /// Clears bit `i`; returns true if it was set before.
    pub fn clear(&self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let m = 1u64 << (i % 64);
        self.words[i / 64].fetch_and(!m, Ordering::AcqRel) & m != 0
    }

    /// Sets bits `[first, first+count)` (clamped to the length), a word at a time.
    pub fn set_range(&self, first: usize, count: usize) {
        self.range_op(first, count, true);
    }

    fn range_op(&self, first: usize, count: usize, set: bool) {
        let end = first.saturating_add(count).min(self.len);
        let mut i = first;
        while i < end {
            let (w, b) = (i / 64, i % 64);
            let n = (64 - b).min(end - i);
            let m = if n == 64 { !0u64 } else { ((1u64 << n) - 1) << b };
            if set {
                self.words[w].fetch_or(m, Ordering::AcqRel);
            } else {
                self.words[w].fetch_and(!m, Ordering::AcqRel);
            }
            i += n;
        }
    }

    /// Index of the first clear bit at or after `from` (`len` if none).
    pub fn next_clear(&self, from: usize) -> usize {
        if from >= self.len {
            return self.len;
        }
        let mut wi = from / 64;
        let mut w = !self.words[wi].load(Ordering::Acquire) & (!0u64 << (from % 64));
        loop {
            if w != 0 {
                return (wi * 64 + w.trailing_zeros() as usize).min(self.len);
            }
            wi += 1;
            if wi >= self.words.len() {
                return self.len;
            }
            w = !self.words[wi].load(Ordering::Acquire);
        }
    }

    /// Number of maximal runs of set bits (word at a time: a run starts at every set bit whose
    /// predecessor is clear).
    pub fn run_count(&self) -> usize {
        let mut carry = 0u64; // the previous word's top bit
        let mut n = 0;
        for w in &self.words {
            let w = w.load(Ordering::Acquire);
            n += (w & !((w << 1) | carry)).count_ones() as usize;
            carry = w >> 63;
        }
        n
    }

    /// Maximal runs of set bits as `(first, count)`, ascending.
    pub fn runs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(a) = self.next_set(i) {
            let b = self.next_clear(a);
            out.push((a, b - a));
            i = b;
        }
        out
    }

    /// A new bitmap with every bit of `self` flipped (word at a time).
    pub fn complement(&self) -> Self {
        let b = Self::full(self.len);
        for (w, o) in b.words.iter().zip(&self.words) {
            w.fetch_and(!o.load(Ordering::Acquire), Ordering::AcqRel);
        }
        b
    }

    /// Sets every bit set in `other` (word at a time; the shorter length rules).
    pub fn union_with(&self, other: &Self) {
        for (w, o) in self.words.iter().zip(&other.words) {
            w.fetch_or(o.load(Ordering::Acquire), Ordering::AcqRel);
        }
    }

    /// A new bitmap of the bits set in both (word at a time; lengths must match).
    pub fn and(&self, other: &Self) -> Self {
        let b = Self::new(self.len.min(other.len));
        for ((w, x), y) in b.words.iter().zip(&self.words).zip(&other.words) {
            w.store(x.load(Ordering::Acquire) & y.load(Ordering::Acquire), Ordering::Release);
        }
        b
    }

    /// Clears bits `[first, first+count)` (clamped to the length), a word at a time.
    pub fn clear_range(&self, first: usize, count: usize) {
        self.range_op(first, count, false);
    }

    /// Number of set bits.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.load(Ordering::Acquire).count_ones() as usize).sum()
    }

    /// Index of the first set bit at or after `from`.
    pub fn next_set(&self, from: usize) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        let mut wi = from / 64;
        let mut w = self.words[wi].load(Ordering::Acquire) & (!0u64 << (from % 64));
        loop {
            if w != 0 {
                let i = wi * 64 + w.trailing_zeros() as usize;
                return (i < self.len).then_some(i);
            }
            wi += 1;
            if wi >= self.words.len() {
                return None;
            }
            w = self.words[wi].load(Ordering::Acquire);
        }
    }

    /// Indices of all set bits in ascending order.
    pub fn ones(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(j) = self.next_set(i) {
            out.push(j);
            i = j + 1;
        }
        out
    }

    /// Compact encoding, the smallest of: the raw bitmap (tag 0), a varint list of gaps
    /// between set bits (tag 1, for scattered sparse sets) and a varint list of runs as
    /// `(gap, count)` pairs (tag 2, for contiguous sets such as a hot region). Built a word at a
    /// time: it is on the stop-copy path.
    pub fn encode(&self) -> Vec<u8> {
        let raw_len = self.len.div_ceil(8);
        let ones = self.count();
        // Each run costs at least two bytes and each gap one: skip lists that cannot win.
        // Without the runs neither list can be built (an empty run list would decode as "no
        // bit set": a silently lost bitmap).
        let have_runs = 2 * self.run_count() < raw_len || ones < raw_len;
        let runs = if have_runs { self.runs() } else { Vec::new() };
        let run_list = (have_runs && (2 * runs.len() < raw_len || ones == 0)).then(|| {
            let mut list = Vec::new();
            put_varint(&mut list, runs.len() as u64);
            let mut prev = 0usize;
            for &(a, n) in &runs {
                put_varint(&mut list, (a - prev) as u64);
                put_varint(&mut list, n as u64);
                prev = a + n;
            }
            list
        });
        let gap_list = (ones < raw_len).then(|| {
            let mut list = Vec::new();
            put_varint(&mut list, ones as u64);
            let mut prev = 0usize;
            for &(a, n) in &runs {
                for i in a..a + n {
                    put_varint(&mut list, (i - prev) as u64);
                    prev = i + 1;
                }
            }
            list
        });
        let mut best: (u8, Option<Vec<u8>>) = (0, None);
        for (tag, list) in [(1u8, gap_list), (2u8, run_list)] {
            if let Some(l) = list {
                if l.len() < best.1.as_ref().map_or(raw_len, Vec::len) {
                    best = (tag, Some(l));
                }
            }
        }
        let mut out = Vec::with_capacity(best.1.as_ref().map_or(raw_len, Vec::len) + 11);
        put_varint(&mut out, self.len as u64);
        out.push(best.0);
        match best.1 {
            Some(l) => out.extend_from_slice(&l),
            None => {
                for w in &self.words {
                    out.extend_from_slice(&w.load(Ordering::Acquire).to_le_bytes());
                }
                out.truncate(out.len() - (self.words.len() * 8 - raw_len));
            }
        }
        out
    }

    /// Decodes `encode`'s output; `None` if it is malformed or longer than `max_len` bits.
    pub fn decode(buf: &[u8], max_len: usize) -> Option<Self> {
        let mut pos = 0;
        let len = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
        if len > max_len {
            return None;
        }
        let b = Self::new(len);
        match *buf.get(pos)? {
            1 => {
                pos += 1;
                let n = get_varint(buf, &mut pos)?;
                let mut next = 0usize;
                for _ in 0..n {
                    let gap = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
                    let i = next.checked_add(gap)?;
                    if i >= len {
                        return None;
                    }
                    b.set(i);
                    next = i + 1;
                }
            }
            2 => {
                pos += 1;
                let n = get_varint(buf, &mut pos)?;
                let mut next = 0usize;
                for _ in 0..n {
                    let gap = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
                    let count = usize::try_from(get_varint(buf, &mut pos)?).ok()?;
                    let first = next.checked_add(gap)?;
                    let end = first.checked_add(count)?;
                    if count == 0 || end > len {
                        return None;
                    }
                    b.set_range(first, count);
                    next = end;
                }
            }
            0 => {
                pos += 1;
                let raw = buf.get(pos..pos + len.div_ceil(8))?;
                pos += raw.len();
                for (w, chunk) in b.words.iter().zip(raw.chunks(8)) {
                    let mut bytes = [0u8; 8];
                    bytes[..chunk.len()].copy_from_slice(chunk);
                    w.store(u64::from_le_bytes(bytes), Ordering::Release);
                }
                // No bit beyond the length may be set.
                if len % 64 != 0 {
                    if let Some(last) = b.words.last() {
                        if last.load(Ordering::Acquire) >> (len % 64) != 0 {
                            return None;
                        }
                    }
                }
            }
            _ => return None,
        }
        (pos == buf.len()).then_some(b)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dense_fragmented_sets_round_trip() {
        // Found by the round-trip property: 5 of 34 bits in 3 runs, where neither list is
        // built, once encoded as an empty run list (decoded: no bit set).
        let b = Bitmap::new(34);
        for i in [0, 1, 2, 4, 6] {
            b.set(i);
        }
        assert_eq!(Bitmap::decode(&b.encode(), 34).unwrap().ones(), vec![0, 1, 2, 4, 6]);
        for len in [34usize, 64, 65, 1000, 4096, 1 << 20] {
            for stride in [2usize, 3, 5] {
                let b = Bitmap::new(len);
                for i in (0..len).step_by(stride) {
                    b.set(i);
                }
                let d = Bitmap::decode(&b.encode(), len).expect("decodes");
                assert_eq!(d.ones(), b.ones(), "len {len} stride {stride}");
            }
        }
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(len in 0usize..5000, bits in proptest::collection::vec(0usize..5000, 0..600)) {
            let b = Bitmap::new(len);
            let mut expect: Vec<usize> = bits.into_iter().filter(|&i| i < len).collect();
            for &i in &expect { b.set(i); }
            expect.sort_unstable();
            expect.dedup();
            prop_assert_eq!(b.ones(), expect.clone());
            prop_assert_eq!(b.count(), expect.len());
            let d = Bitmap::decode(&b.encode(), len).expect("decodes");
            prop_assert_eq!(d.len(), len);
            prop_assert_eq!(d.ones(), expect);
        }

        #[test]
        fn dense_bitmaps_round_trip(bits in proptest::collection::vec(any::<bool>(), 0..3000)) {
            // Dense and fragmented sets (any density), where raw, gap and run encodings compete.
            let b = Bitmap::new(bits.len());
            let expect: Vec<usize> = bits.iter().enumerate().filter(|(_, &x)| x).map(|(i, _)| i).collect();
            for &i in &expect { b.set(i); }
            let d = Bitmap::decode(&b.encode(), bits.len()).expect("decodes");
            prop_assert_eq!(d.ones(), expect);
        }

        #[test]
        fn set_clear_match_a_model(len in 1usize..700, ops in proptest::collection::vec((any::<bool>(), 0usize..800), 0..300)) {
            let b = Bitmap::new(len);
            let mut model = vec![false; len];
            for (set, i) in ops {
                let was = i < len && model[i];
                if set {
                    prop_assert_eq!(b.set(i), i < len && !was);
                    if i < len { model[i] = true; }
                } else {
                    prop_assert_eq!(b.clear(i), was);
                    if i < len { model[i] = false; }
                }
            }
            for (i, &m) in model.iter().enumerate() { prop_assert_eq!(b.get(i), m); }
            prop_assert_eq!(b.next_set(0), model.iter().position(|&m| m));
        }

        #[test]
        fn ranges_round_trip_and_runs_are_maximal(len in 1usize..5000, ranges in proptest::collection::vec((0usize..5000, 0usize..300), 0..12), set in any::<bool>()) {
            let b = if set { Bitmap::new(len) } else { Bitmap::full(len) };
            let mut model = vec![!set; len];
            for &(a, n) in &ranges {
                if set { b.set_range(a, n) } else { b.clear_range(a, n) }
                for m in model.iter_mut().take((a + n).min(len)).skip(a) { *m = set; }
            }
            let expect: Vec<usize> = (0..len).filter(|&i| model[i]).collect();
            prop_assert_eq!(b.ones(), expect.clone());
            let runs = b.runs();
            prop_assert_eq!(runs.len(), b.run_count());
            prop_assert_eq!(runs.iter().map(|r| r.1).sum::<usize>(), expect.len());
            for w in runs.windows(2) { prop_assert!(w[0].0 + w[0].1 < w[1].0, "runs not maximal: {:?}", runs); }
            let enc = b.encode();
            prop_assert!(enc.len() <= len.div_ceil(8) + 12);
            let d = Bitmap::decode(&enc, len).expect("decodes");
            prop_assert_eq!(d.ones(), expect);
        }

        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Bitmap::decode(&buf, 10_000);
        }
    }

    #[test]
    fn complement_and_intersection_are_exact() {
        let a = Bitmap::new(130);
        let b = Bitmap::new(130);
        for i in [0, 5, 64, 129] {
            a.set(i);
        }
        for i in [5, 6, 129] {
            b.set(i);
        }
        assert_eq!(a.and(&b).ones(), vec![5, 129]);
        let u = Bitmap::new(130);
        u.union_with(&a);
        u.union_with(&b);
        assert_eq!(u.ones(), vec![0, 5, 6, 64, 129]);
        let c = a.complement();
        assert_eq!(c.count(), 126);
        assert!(!c.get(0) && c.get(1) && !c.get(129) && !c.get(130));
    }

    #[test]
    fn full_has_every_bit_and_no_more() {
        let b = Bitmap::full(130);
        assert_eq!(b.count(), 130);
        assert!(!b.get(130));
        assert_eq!(b.next_set(129), Some(129));
        assert_eq!(b.next_set(130), None);
    }

    #[test]
    fn a_hot_region_encodes_as_a_few_runs() {
        let b = Bitmap::new(1 << 20);
        b.set_range(100_000, 80_000);
        b.set(5);
        let enc = b.encode();
        assert!(enc.len() < 20, "{} bytes", enc.len());
        assert_eq!(Bitmap::decode(&enc, 1 << 20).expect("decodes").count(), 80_001);
        // A raw bitmap with bits past its length is refused.
        let mut raw = vec![70u8, 0];
        raw.extend_from_slice(&[0xff; 9]);
        assert!(Bitmap::decode(&raw, 70).is_none());
        raw[10] = 0x3f; // exactly 70 bits
        assert_eq!(Bitmap::decode(&raw, 70).expect("decodes").count(), 70);
    }
}
