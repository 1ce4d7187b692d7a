//! The headroom of each candidate-index group's members, kept up to date as hosts change: per
//! group, the members a `bounded-threshold` module's bounds decide by `refuses` (sorted, highest
//! first) and the others. An indexed placement then looks only at the members whose `refuses`
//! is at or above the VM's lowest load, and at the others; every member below surely vetoes the
//! VM (`cycle.rs`, `indexed_search`).
//!
//! **Invariant**: once [`VetoGroups::settle`] ran after the last change, a built group holds
//! exactly the index's members of that group, each as [`VetoGroups`]'s `classify` said of it
//! then. A host whose headroom later turns current without changing stays among the others,
//! which are looked at one by one (so that is only slower, never wrong).

/// Where a host is in the summaries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Absent,
    /// In `ranked` of group `g`, with this `refuses`.
    Ranked {
        g: u32,
        refuses: f32,
    },
    /// In `others` of group `g`.
    Other {
        g: u32,
    },
}

#[derive(Debug, Clone, Default)]
struct Group {
    built: bool,
    /// Members with bounds, as `(refuses, migration_s, host)`, by decreasing `refuses` then
    /// increasing host.
    ranked: Vec<Ranked>,
    /// The shortest `migration_s` in `ranked` (`INFINITY` when empty).
    shortest: f32,
    /// Members without usable bounds (no CPU in use, stale or NaN headroom), unordered.
    others: Vec<usize>,
}

/// A bounded member: `(refuses, migration_s, host)`.
pub(crate) type Ranked = (f32, f32, usize);

/// What the bounds say of a host: `Some((refuses, migration_s))` when they decide a veto for it
/// by `refuses` (CPU in use, current headroom, no NaN).
pub(crate) type Bounded = Option<(f32, f32)>;

#[derive(Debug, Clone, Default)]
pub(crate) struct VetoGroups {
    groups: Vec<Group>,
    slot: Vec<Slot>,
    /// Hosts that changed since the last [`VetoGroups::settle`].
    pending: Vec<usize>,
}

fn order(a: &Ranked, b: &Ranked) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.2.cmp(&b.2))
}

impl VetoGroups {
    pub(crate) fn new(hosts: usize, groups: usize) -> VetoGroups {
        VetoGroups { groups: vec![Group::default(); groups], slot: vec![Slot::Absent; hosts], pending: Vec::new() }
    }

    /// `h` changed (its load, headroom or group): it is placed again at the next settle.
    pub(crate) fn touch(&mut self, h: usize) {
        if h < self.slot.len() {
            self.pending.push(h);
        }
    }

    pub(crate) fn touch_all(&mut self, hosts: &[usize]) {
        for &h in hosts {
            self.touch(h);
        }
    }

    fn take_out(&mut self, h: usize) {
        match std::mem::replace(&mut self.slot[h], Slot::Absent) {
            Slot::Absent => {}
            Slot::Other { g } => {
                let others = &mut self.groups[g as usize].others;
                if let Some(i) = others.iter().position(|&x| x == h) {
                    others.swap_remove(i);
                }
            }
            Slot::Ranked { g, refuses } => {
                let group = &mut self.groups[g as usize];
                let probe = (refuses, 0.0, h);
                if let Ok(i) = group.ranked.binary_search_by(|e| order(e, &probe)) {
                    let (_, migration_s, _) = group.ranked.remove(i);
                    if migration_s <= group.shortest {
                        group.shortest = group.ranked.iter().map(|e| e.1).fold(f32::INFINITY, f32::min);
                    }
                }
            }
        }
    }

    fn put(&mut self, h: usize, g: usize, bounded: Bounded) {
        let group = &mut self.groups[g];
        match bounded {
            Some((refuses, migration_s)) => {
                let e = (refuses, migration_s, h);
                let at = group.ranked.partition_point(|x| order(x, &e).is_lt());
                group.ranked.insert(at, e);
                group.shortest = group.shortest.min(migration_s);
                self.slot[h] = Slot::Ranked { g: g as u32, refuses };
            }
            None => {
                group.others.push(h);
                self.slot[h] = Slot::Other { g: g as u32 };
            }
        }
    }

    /// Places the changed hosts again: `group_of(h)` is the index group `h` is in now (`None`:
    /// not indexed), `classify(h)` what the bounds say of it now.
    pub(crate) fn settle(&mut self, group_of: impl Fn(usize) -> Option<usize>, classify: impl Fn(usize) -> Bounded) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable();
        pending.dedup();
        for &h in &pending {
            self.take_out(h);
            if let Some(g) = group_of(h) {
                if self.groups[g].built {
                    self.put(h, g, classify(h));
                }
            }
        }
        pending.clear();
        self.pending = pending;
    }

    /// Builds group `g`'s summary from its `members` if it is not built yet (call after
    /// [`Self::settle`]).
    pub(crate) fn build(&mut self, g: usize, members: &[usize], classify: impl Fn(usize) -> Bounded) {
        if self.groups[g].built {
            return;
        }
        let group = &mut self.groups[g];
        group.built = true;
        group.shortest = f32::INFINITY;
        group.ranked.clear();
        group.others.clear();
        for &h in members {
            match classify(h) {
                Some((refuses, migration_s)) => {
                    group.ranked.push((refuses, migration_s, h));
                    group.shortest = group.shortest.min(migration_s);
                    self.slot[h] = Slot::Ranked { g: g as u32, refuses };
                }
                None => {
                    group.others.push(h);
                    self.slot[h] = Slot::Other { g: g as u32 };
                }
            }
        }
        group.ranked.sort_unstable_by(order);
    }

    /// Of built group `g`, for a VM of lowest load `low` and migration time `migration_s`: the
    /// members without bounds and the bounded members with `refuses >= low`, in that order; the
    /// other bounded members surely veto the VM. `None` when the bounds do not decide by
    /// `refuses` alone (the VM's migration is longer than some member's `migration_s`, or
    /// `low` is NaN): every member must be looked at.
    pub(crate) fn candidates(&self, g: usize, low: f32, migration_s: f32) -> Option<(&[usize], &[Ranked])> {
        let group = &self.groups[g];
        if !group.built || low.is_nan() || migration_s.partial_cmp(&group.shortest).is_none_or(|o| o.is_gt()) {
            return None;
        }
        let k = group.ranked.partition_point(|&(r, _, _)| r >= low);
        Some((&group.others, &group.ranked[..k]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_each_host_in_one_place() {
        // Hosts 0..6 in groups 0 and 1; bounds by host.
        let bounds = |h: usize| -> Bounded { (h != 3).then_some((h as f32 * 10.0, 5.0 + h as f32)) };
        let mut v = VetoGroups::new(6, 2);
        v.build(0, &[0, 1, 2, 3], bounds);
        let (others, ranked) = v.candidates(0, 10.0, 5.0).unwrap();
        assert_eq!(others, &[3]);
        assert_eq!(ranked.iter().map(|e| e.2).collect::<Vec<_>>(), vec![2, 1]);
        // Host 1 leaves group 0 for group 1 (not built: it is no longer summarized); host 2's
        // bound changes; host 4 joins group 0 with a shorter migration time.
        let group_of = |h: usize| match h {
            0 | 2 | 3 | 4 => Some(0),
            _ => Some(1),
        };
        let moved = |h: usize| -> Bounded {
            match h {
                2 => Some((1.0, 7.0)),
                4 => Some((40.0, 2.0)),
                _ => bounds(h),
            }
        };
        v.touch_all(&[1, 2, 4, 2]);
        v.settle(group_of, moved);
        assert!(v.candidates(0, 0.0, 5.0).is_none(), "host 4 migrates faster than the VM");
        let (_, ranked) = v.candidates(0, 0.0, 2.0).unwrap();
        assert_eq!(ranked, &[(40.0, 2.0, 4), (1.0, 7.0, 2), (0.0, 5.0, 0)]);
        // Host 4 leaves: the shortest migration time is the others' again.
        v.touch(4);
        v.settle(|h| (h != 4).then(|| group_of(h)).flatten(), moved);
        let (_, ranked) = v.candidates(0, 1.0, 5.0).unwrap();
        assert_eq!(ranked, &[(1.0, 7.0, 2)]);
        assert!(v.candidates(1, 0.0, 0.0).is_none(), "group 1 was never built");
        v.build(1, &[1, 5], moved);
        let (others, ranked) = v.candidates(1, 0.0, 0.0).unwrap();
        assert!(others.is_empty());
        assert_eq!(ranked.iter().map(|e| e.2).collect::<Vec<_>>(), vec![5, 1]);
    }
}
