//! The candidate index of one cycle: destination hosts grouped by host type, sleep state and a
//! segment of CPU in use, so that a placement policy exporting `weigh-bound` (world
//! `indexed-placement`) is asked for one lower bound per group and weighs only the hosts of the
//! groups that can still win, instead of every fitting host (`cycle.rs`, `find_host_indexed`).
//!
//! **Invariant**: a host is in the group of its current key (type, asleep, segment of its
//! `cpu_used`) once the work's changed hosts are synced; the group's CPU range
//! ([`CandIndex::range`]) holds the `cpu_used` of each of its members.

/// Segments of CPU in use per host type (each `capacity / SEGMENTS` wide), plus one group for
/// hosts at or above capacity.
pub(crate) const SEGMENTS: usize = 64;
const PER_CLASS: usize = 2 * (SEGMENTS + 1);
const ABSENT: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
pub(crate) struct CandIndex {
    /// Members of each group (unordered).
    members: Vec<Vec<usize>>,
    /// Group of each host, or `ABSENT`.
    group: Vec<u32>,
    /// Position of each host in its group's members.
    pos: Vec<u32>,
    /// Changes of each group: bumped when a host joins or leaves it or a member is touched
    /// ([`CandIndex::update`]), so a summary of the members computed at one stamp holds while it
    /// lasts.
    stamp: Vec<u64>,
}

/// The segment of `cpu_used` on a host of capacity `cap`: `0..SEGMENTS`, `SEGMENTS` at or above
/// capacity (and for a host without capacity).
fn segment(cpu_used: f32, cap: f32) -> usize {
    if cap.is_nan() || cap <= 0.0 || cpu_used.is_nan() {
        return SEGMENTS;
    }
    let s = (f64::from(cpu_used) / f64::from(cap) * SEGMENTS as f64).floor();
    if s <= 0.0 {
        0
    } else if s >= SEGMENTS as f64 {
        SEGMENTS
    } else {
        s as usize
    }
}

impl CandIndex {
    pub(crate) fn new(hosts: usize, classes: usize) -> CandIndex {
        let groups = classes * PER_CLASS;
        CandIndex {
            members: vec![Vec::new(); groups],
            group: vec![ABSENT; hosts],
            pos: vec![0; hosts],
            stamp: vec![0; groups],
        }
    }

    /// The group a host of type `class` belongs in.
    pub(crate) fn key(class: usize, asleep: bool, cpu_used: f32, cap: f32) -> usize {
        class * PER_CLASS + usize::from(asleep) * (SEGMENTS + 1) + segment(cpu_used, cap)
    }

    /// `(class, asleep)` of a group.
    pub(crate) fn group_class(g: usize) -> (usize, bool) {
        (g / PER_CLASS, (g % PER_CLASS) / (SEGMENTS + 1) == 1)
    }

    /// The CPU in use (MIPS) every member of group `g` has, on hosts of capacity `cap`: the
    /// segment's bounds widened by a little, so rounding never puts a member outside.
    pub(crate) fn range(g: usize, cap: f32) -> (f32, f32) {
        let s = (g % PER_CLASS) % (SEGMENTS + 1);
        if s == SEGMENTS || cap.is_nan() || cap <= 0.0 {
            let lo = if cap > 0.0 { f64::from(cap) * (1.0 - 1e-6) } else { f64::from(f32::MIN) };
            return (lo as f32, f32::MAX);
        }
        let cap = f64::from(cap);
        let width = cap / SEGMENTS as f64;
        let lo = if s == 0 { f64::from(f32::MIN) } else { s as f64 * width - width * 1e-4 };
        let hi = (s + 1) as f64 * width + width * 1e-4;
        (lo as f32, hi as f32)
    }

    /// The group `h` is in (`None`: not indexed).
    pub(crate) fn group_of(&self, h: usize) -> Option<usize> {
        self.group.get(h).filter(|&&g| g != ABSENT).map(|&g| g as usize)
    }

    pub(crate) fn contains(&self, h: usize) -> bool {
        self.group.get(h).is_some_and(|&g| g != ABSENT)
    }

    /// Adds `h` to group `g` (moving it if it is in another one).
    pub(crate) fn insert(&mut self, h: usize, g: usize) {
        if self.group[h] == g as u32 {
            return;
        }
        self.remove(h);
        self.stamp[g] += 1;
        self.group[h] = g as u32;
        self.pos[h] = self.members[g].len() as u32;
        self.members[g].push(h);
    }

    pub(crate) fn remove(&mut self, h: usize) {
        let g = self.group[h];
        if g == ABSENT {
            return;
        }
        self.stamp[g as usize] += 1;
        let list = &mut self.members[g as usize];
        let at = self.pos[h] as usize;
        list.swap_remove(at);
        if let Some(&moved) = list.get(at) {
            self.pos[moved] = at as u32;
        }
        self.group[h] = ABSENT;
    }

    /// Moves `h`, if it is indexed, to group `g`; a host that changed stays or goes, but its
    /// group's stamp changes either way.
    pub(crate) fn update(&mut self, h: usize, g: usize) {
        if self.group[h] == g as u32 {
            self.stamp[g] += 1;
        } else if self.contains(h) {
            self.insert(h, g);
        }
    }

    /// The stamp of group `g` (see the field).
    pub(crate) fn stamp(&self, g: usize) -> u64 {
        self.stamp[g]
    }

    /// Groups, empty ones included (group numbers are below this).
    pub(crate) fn groups(&self) -> usize {
        self.members.len()
    }

    /// Groups with members.
    pub(crate) fn nonempty(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.iter().enumerate().filter(|(_, m)| !m.is_empty()).map(|(g, _)| g)
    }

    pub(crate) fn members(&self, g: usize) -> &[usize] {
        &self.members[g]
    }

    /// Every indexed host, ascending.
    pub(crate) fn hosts(&self) -> Vec<usize> {
        (0..self.group.len()).filter(|&h| self.group[h] != ABSENT).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_stay_in_their_range() {
        let cap = 12_500.0f32;
        let mut ix = CandIndex::new(4, 2);
        let loads = [0.0f32, 195.3125, 6_249.99, 12_500.0, 13_000.0, 12_499.99, -0.01];
        for (i, &u) in loads.iter().enumerate() {
            let h = i % 4;
            let g = CandIndex::key(1, i % 2 == 1, u, cap);
            ix.insert(h, g);
            assert_eq!(CandIndex::group_class(g), (1, i % 2 == 1));
            let (lo, hi) = CandIndex::range(g, cap);
            assert!(lo <= u && u <= hi, "{u} outside {lo}..={hi}");
            assert!(ix.members(g).contains(&h));
        }
        ix.remove(1);
        ix.remove(1);
        assert!(!ix.contains(1));
        let total: usize = ix.nonempty().map(|g| ix.members(g).len()).sum();
        assert_eq!(total, ix.hosts().len());
        assert_eq!(ix.hosts(), vec![0, 2, 3]);
    }
}
