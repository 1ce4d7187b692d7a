//! Operator rules: the constraints a production balancer must honour whatever its policies say
//! (vSphere DRS rules and maintenance mode, ProxLB / Proxmox affinity tags, oVirt affinity groups
//! and reserve hosts, Watcher's audit scope).
//!
//! They are host-side: before a placement policy sees its candidates, every **must** rule has
//! removed the hosts that would break it (each removal counted by reason in the decision trace),
//! and after it has weighed them, every broken **should** rule ranks a candidate after all
//! candidates that break fewer should rules (a lexicographic penalty: unit-free, so it means
//! the same with every placement policy). Policies need no change.
//!
//! What each rule guarantees:
//! - `pinned_vms`: never selected, never moved; a host holding one is never evacuated.
//! - VM-VM `affinity` (keep together), must: a member only moves to a host where a group mate
//!   is planned to be, or — when every mate is on its own host — as part of an evacuation of
//!   that host (so the whole group ends on one destination, or the evacuation is refused).
//!   A member is never selected alone off an overloaded host it shares with a mate.
//! - VM-VM `anti-affinity` (keep apart), must: never moved onto a host where a mate is planned.
//! - VM-host `run-on` / `not-run-on` a host group, must: only (never) moved to hosts of the group.
//! - `maintenance`: evacuated now (whatever its load; waking hosts if needed), accepts nothing,
//!   never put to sleep; with `windows`, only inside them (weekly, UTC).
//! - `never_sleep`: never evacuated for underload, never put to sleep.
//! - `reserve`: kept awake (woken if asleep) and empty: never a destination, its VMs evacuated.
//! - `headroom`: a destination keeps this fraction of its CPU and memory capacity free.
//! - `max_inflow_per_host`: at most this many migrations into one host per plan.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::snapshot::{HostId, Snapshot, VmId};

/// How binding a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strength {
    /// Never broken.
    #[default]
    Must,
    /// Broken only when no candidate keeps it: each broken should rule ranks a candidate after
    /// every candidate that breaks fewer.
    Should,
}

/// VM-VM relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VmRelation {
    /// Keep the VMs on one host.
    Affinity,
    /// Keep the VMs on different hosts.
    AntiAffinity,
}

/// VM-host relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostRelation {
    /// The VMs run on hosts of the group.
    RunOn,
    /// The VMs do not run on hosts of the group.
    NotRunOn,
}

/// A named set of hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostGroup {
    pub name: String,
    pub hosts: Vec<HostId>,
}

/// A VM-VM affinity or anti-affinity group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmGroup {
    pub name: String,
    pub vms: Vec<VmId>,
    pub relation: VmRelation,
    #[serde(default)]
    pub strength: Strength,
}

/// VMs that must / should (not) run on a host group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmHostRule {
    pub name: String,
    pub vms: Vec<VmId>,
    /// Name of a `host_groups` entry.
    pub host_group: String,
    pub relation: HostRelation,
    #[serde(default)]
    pub strength: Strength,
}

/// Hosts in maintenance, always or inside weekly windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    pub hosts: Vec<HostId>,
    /// Weekly windows in UTC, `"Sat 02:00-06:00"` (a window may wrap past midnight: `"Sun
    /// 23:00-01:00"`); empty = in maintenance now.
    #[serde(default)]
    pub windows: Vec<String>,
}

/// Capacity a destination keeps free.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Headroom {
    /// Hosts it applies to; empty = every host. A host listed in several entries keeps the
    /// largest reserve.
    #[serde(default)]
    pub hosts: Vec<HostId>,
    /// Fraction of CPU capacity kept free (0–0.9).
    #[serde(default)]
    pub cpu: f32,
    /// Fraction of memory capacity kept free (0–0.9).
    #[serde(default)]
    pub mem: f32,
}

/// Every operator rule of a strategy or scenario (`[operator_rules]` in TOML).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorRules {
    pub host_groups: Vec<HostGroup>,
    pub vm_groups: Vec<VmGroup>,
    pub vm_host: Vec<VmHostRule>,
    /// VMs that never migrate.
    pub pinned_vms: Vec<VmId>,
    pub maintenance: Vec<Maintenance>,
    /// Hosts never put to sleep (and never evacuated to be).
    pub never_sleep: Vec<HostId>,
    /// Hosts kept awake and empty.
    pub reserve: Vec<HostId>,
    pub headroom: Vec<Headroom>,
    /// Migrations into one host per plan (0 = unlimited).
    pub max_inflow_per_host: u32,
}

/// Why an operator-rule set is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("operator rules: {0}")]
pub struct RulesError(pub String);

impl OperatorRules {
    pub fn is_empty(&self) -> bool {
        *self == OperatorRules::default()
    }

    /// Checks names, references, ranges and windows; the error says what to fix.
    pub fn validate(&self) -> Result<(), RulesError> {
        let err = |m: String| Err(RulesError(m));
        let mut names = std::collections::HashSet::new();
        for g in &self.host_groups {
            if g.name.trim().is_empty() {
                return err("a host group has an empty name".into());
            }
            if !names.insert(g.name.as_str()) {
                return err(format!("host group {:?} is defined twice", g.name));
            }
        }
        for g in &self.vm_groups {
            if g.vms.len() < 2 {
                return err(format!("VM group {:?} needs at least two VMs", g.name));
            }
        }
        for r in &self.vm_host {
            if !names.contains(r.host_group.as_str()) {
                let known: Vec<&str> = self.host_groups.iter().map(|g| g.name.as_str()).collect();
                return err(format!(
                    "VM-host rule {:?} names host group {:?}, which is not defined (host groups: {})",
                    r.name,
                    r.host_group,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ));
            }
        }
        for m in &self.maintenance {
            for w in &m.windows {
                Window::parse(w).map_err(RulesError)?;
            }
        }
        for h in &self.headroom {
            for (what, v) in [("cpu", h.cpu), ("mem", h.mem)] {
                if !(0.0..=0.9).contains(&v) {
                    return err(format!("headroom {what} = {v} is outside 0–0.9"));
                }
            }
        }
        Ok(())
    }

    /// Adds `other`'s rules to these (a scenario's rules plus a strategy's).
    pub fn merge(&mut self, other: &OperatorRules) {
        self.host_groups.extend(other.host_groups.iter().cloned());
        self.vm_groups.extend(other.vm_groups.iter().cloned());
        self.vm_host.extend(other.vm_host.iter().cloned());
        self.pinned_vms.extend(&other.pinned_vms);
        self.maintenance.extend(other.maintenance.iter().cloned());
        self.never_sleep.extend(&other.never_sleep);
        self.reserve.extend(&other.reserve);
        self.headroom.extend(other.headroom.iter().cloned());
        if other.max_inflow_per_host > 0 {
            self.max_inflow_per_host = match self.max_inflow_per_host {
                0 => other.max_inflow_per_host,
                m => m.min(other.max_inflow_per_host),
            };
        }
    }
}

/// A weekly window: minutes since Monday 00:00 UTC, `[start, end)`, wrapping past the week's end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    start: u32,
    end: u32,
}

const WEEK_MIN: u32 = 7 * 24 * 60;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Parses `"Sat 02:00-06:00"` (day names in English, any case, three letters or more).
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = |why: &str| format!("maintenance window {text:?}: {why} (expected e.g. \"Sat 02:00-06:00\")");
        let (day, span) = text.trim().split_once(char::is_whitespace).ok_or_else(|| bad("no day"))?;
        let day = day.to_ascii_lowercase();
        let d =
            DAYS.iter().position(|d| day.len() >= 3 && d.starts_with(&day[..3])).ok_or_else(|| bad("unknown day"))?
                as u32;
        let (a, b) = span.trim().split_once('-').ok_or_else(|| bad("no '-' between start and end"))?;
        let hm = |s: &str| -> Result<u32, String> {
            let (h, m) = s.trim().split_once(':').ok_or_else(|| bad("time without ':'"))?;
            let (h, m): (u32, u32) =
                (h.parse().map_err(|_| bad("bad hour"))?, m.parse().map_err(|_| bad("bad minute"))?);
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(bad("time out of range"));
            }
            Ok(h * 60 + m)
        };
        let (a, b) = (hm(a)?, hm(b)?);
        if a == b {
            return Err(bad("empty window"));
        }
        let start = d * 24 * 60 + a;
        let len = if b > a { b - a } else { 24 * 60 - a + b };
        Ok(Window { start, end: (start + len) % WEEK_MIN })
    }

    /// Whether Unix time `t` (s) falls inside the window.
    pub fn contains(&self, t: f64) -> bool {
        // 1970-01-01 was a Thursday: Monday 00:00 is 3 days earlier.
        let min = ((t / 60.0).floor() as i64 + 3 * 24 * 60).rem_euclid(i64::from(WEEK_MIN)) as u32;
        if self.start < self.end {
            (self.start..self.end).contains(&min)
        } else {
            min >= self.start || min < self.end
        }
    }
}

/// A VM's part in one VM-VM group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Membership {
    group: usize,
}

#[derive(Debug)]
struct CompiledVmGroup {
    relation: VmRelation,
    strength: Strength,
    /// Member VM indexes present in the snapshot.
    members: Vec<usize>,
}

#[derive(Debug)]
struct CompiledHostRule {
    relation: HostRelation,
    strength: Strength,
    /// Per host index: member of the rule's group.
    in_group: Vec<bool>,
}

/// Why a candidate was removed by a must rule (decision-trace wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Maintenance,
    Reserve,
    Headroom,
    Inflow,
    HostRule,
    Affinity,
    AntiAffinity,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 7] = [
        Refusal::Maintenance,
        Refusal::Reserve,
        Refusal::Headroom,
        Refusal::Inflow,
        Refusal::HostRule,
        Refusal::Affinity,
        Refusal::AntiAffinity,
    ];

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Maintenance => "host in maintenance",
            Refusal::Reserve => "host in reserve",
            Refusal::Headroom => "would use the host's headroom reserve",
            Refusal::Inflow => "host's inflow limit reached",
            Refusal::HostRule => "VM-host must rule",
            Refusal::Affinity => "keep-together must rule",
            Refusal::AntiAffinity => "keep-apart must rule",
        }
    }
}

/// The rules resolved against one snapshot (ids → indexes), built once per cycle.
#[derive(Debug, Default)]
pub(crate) struct RuleIndex {
    pub active: bool,
    pub pinned: Vec<bool>,
    pub maintenance: Vec<bool>,
    pub never_sleep: Vec<bool>,
    pub reserve: Vec<bool>,
    /// Effective CPU and memory capacity per host after the headroom reserve (empty = none).
    pub cpu_limit: Vec<f32>,
    pub mem_limit: Vec<f32>,
    pub max_inflow: u32,
    vm_groups: Vec<CompiledVmGroup>,
    host_rules: Vec<CompiledHostRule>,
    /// Per VM index: its VM-VM groups and VM-host rules (empty for most VMs).
    vm_memberships: HashMap<usize, (Vec<Membership>, Vec<usize>)>,
}

impl RuleIndex {
    /// Resolves `rules` against `snap`; ids the snapshot does not know are ignored (a VM that
    /// left the cluster, a host not yet added).
    pub fn new(rules: &OperatorRules, snap: &Snapshot) -> RuleIndex {
        if rules.is_empty() {
            return RuleIndex::default();
        }
        let (nh, nv) = (snap.hosts.len(), snap.vms.len());
        let host_idx: HashMap<HostId, usize> = snap.hosts.id.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let vm_idx: HashMap<VmId, usize> = snap.vms.id.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let host_mask = |ids: &[HostId]| {
            let mut m = vec![false; nh];
            for id in ids {
                if let Some(&h) = host_idx.get(id) {
                    m[h] = true;
                }
            }
            m
        };
        let mut pinned = vec![false; nv];
        for id in &rules.pinned_vms {
            if let Some(&v) = vm_idx.get(id) {
                pinned[v] = true;
            }
        }
        // Without a wall clock (the simulator), time 0 is a Monday 00:00 UTC (1970-01-05).
        let now = snap.unix_time_s.unwrap_or(snap.time_s + 4.0 * 86_400.0);
        let mut maintenance = vec![false; nh];
        for m in &rules.maintenance {
            let on =
                m.windows.is_empty() || m.windows.iter().filter_map(|w| Window::parse(w).ok()).any(|w| w.contains(now));
            if on {
                for (flag, inside) in maintenance.iter_mut().zip(host_mask(&m.hosts)) {
                    *flag |= inside;
                }
            }
        }
        let (mut cpu_limit, mut mem_limit) = (Vec::new(), Vec::new());
        if !rules.headroom.is_empty() {
            let (mut cpu_frac, mut mem_frac) = (vec![0.0f32; nh], vec![0.0f32; nh]);
            for r in &rules.headroom {
                let mask = if r.hosts.is_empty() { vec![true; nh] } else { host_mask(&r.hosts) };
                for h in (0..nh).filter(|&h| mask[h]) {
                    cpu_frac[h] = cpu_frac[h].max(r.cpu);
                    mem_frac[h] = mem_frac[h].max(r.mem);
                }
            }
            cpu_limit = (0..nh).map(|h| snap.hosts.cpu_capacity[h] * (1.0 - cpu_frac[h])).collect();
            mem_limit = (0..nh).map(|h| snap.hosts.mem_capacity[h] * (1.0 - mem_frac[h])).collect();
        }
        let mut vm_memberships: HashMap<usize, (Vec<Membership>, Vec<usize>)> = HashMap::new();
        let mut vm_groups = Vec::new();
        for g in &rules.vm_groups {
            let members: Vec<usize> = g.vms.iter().filter_map(|id| vm_idx.get(id).copied()).collect();
            if members.len() < 2 {
                continue;
            }
            let group = vm_groups.len();
            for &v in &members {
                vm_memberships.entry(v).or_default().0.push(Membership { group });
            }
            vm_groups.push(CompiledVmGroup { relation: g.relation, strength: g.strength, members });
        }
        let mut host_rules = Vec::new();
        for r in &rules.vm_host {
            let Some(group) = rules.host_groups.iter().find(|g| g.name == r.host_group) else { continue };
            let rule = host_rules.len();
            for id in &r.vms {
                if let Some(&v) = vm_idx.get(id) {
                    vm_memberships.entry(v).or_default().1.push(rule);
                }
            }
            host_rules.push(CompiledHostRule {
                relation: r.relation,
                strength: r.strength,
                in_group: host_mask(&group.hosts),
            });
        }
        RuleIndex {
            active: true,
            pinned,
            maintenance,
            never_sleep: host_mask(&rules.never_sleep),
            reserve: host_mask(&rules.reserve),
            cpu_limit,
            mem_limit,
            max_inflow: rules.max_inflow_per_host,
            vm_groups,
            host_rules,
            vm_memberships,
        }
    }

    fn flag(v: &[bool], i: usize) -> bool {
        v.get(i).copied().unwrap_or(false)
    }

    pub fn is_pinned(&self, vm: usize) -> bool {
        Self::flag(&self.pinned, vm)
    }

    pub fn in_maintenance(&self, h: usize) -> bool {
        Self::flag(&self.maintenance, h)
    }

    pub fn in_reserve(&self, h: usize) -> bool {
        Self::flag(&self.reserve, h)
    }

    /// Hosts that are never put to sleep: never-sleep, reserve and maintenance hosts.
    pub fn keeps_awake(&self, h: usize) -> bool {
        Self::flag(&self.never_sleep, h) || self.in_reserve(h) || self.in_maintenance(h)
    }

    /// Hosts whose VMs all leave now, whatever their load.
    pub fn must_empty(&self, h: usize) -> bool {
        self.in_maintenance(h) || self.in_reserve(h)
    }

    /// Whether `vm` may leave `from` on its own (not with an evacuation of the whole host):
    /// never when pinned or when a keep-together (must) mate shares the host.
    pub fn movable_alone(&self, vm: usize, vm_host: &[usize]) -> bool {
        if self.is_pinned(vm) {
            return false;
        }
        let Some((groups, _)) = self.vm_memberships.get(&vm) else { return true };
        let from = vm_host[vm];
        !groups.iter().any(|m| {
            let g = &self.vm_groups[m.group];
            g.relation == VmRelation::Affinity
                && g.strength == Strength::Must
                && g.members.iter().any(|&o| o != vm && vm_host.get(o) == Some(&from))
        })
    }

    /// Host-level must rules for a destination (maintenance, reserve, headroom, inflow).
    pub fn host_refusal(&self, h: usize, cpu_after: f32, mem_after: f32, inflow: u32) -> Option<Refusal> {
        if self.in_maintenance(h) {
            return Some(Refusal::Maintenance);
        }
        if self.in_reserve(h) {
            return Some(Refusal::Reserve);
        }
        if !self.cpu_limit.is_empty() && (cpu_after > self.cpu_limit[h] || mem_after > self.mem_limit[h]) {
            return Some(Refusal::Headroom);
        }
        if self.max_inflow > 0 && inflow >= self.max_inflow {
            return Some(Refusal::Inflow);
        }
        None
    }

    /// Whether `vm` has VM-level rules (VM groups, VM-host rules).
    pub fn has_vm_rules(&self, vm: usize) -> bool {
        self.vm_memberships.contains_key(&vm)
    }

    /// Member VM indexes of each must keep-together group.
    pub fn must_affinity_groups(&self) -> impl Iterator<Item = &[usize]> {
        self.vm_groups
            .iter()
            .filter(|g| g.relation == VmRelation::Affinity && g.strength == Strength::Must)
            .map(|g| g.members.as_slice())
    }

    /// VM-level rules for putting `vm` (detached from `from`) on `h`, given where every VM is
    /// planned (`vm_host`, `usize::MAX` = in transit): a must-rule refusal, or the number of
    /// should rules broken. `evacuating`: `from` is being emptied entirely.
    pub fn vm_verdict(
        &self,
        vm: usize,
        from: usize,
        h: usize,
        vm_host: &[usize],
        evacuating: bool,
    ) -> Result<u32, Refusal> {
        let Some((groups, rules)) = self.vm_memberships.get(&vm) else { return Ok(0) };
        let mut broken = 0;
        for &r in rules {
            let rule = &self.host_rules[r];
            let inside = Self::flag(&rule.in_group, h);
            let ok = match rule.relation {
                HostRelation::RunOn => inside,
                HostRelation::NotRunOn => !inside,
            };
            if !ok {
                match rule.strength {
                    Strength::Must => return Err(Refusal::HostRule),
                    Strength::Should => broken += 1,
                }
            }
        }
        for m in groups {
            let g = &self.vm_groups[m.group];
            let mates = g.members.iter().copied().filter(|&o| o != vm).map(|o| vm_host.get(o).copied());
            let ok = match g.relation {
                VmRelation::AntiAffinity => !mates.clone().any(|o| o == Some(h)),
                VmRelation::Affinity => {
                    // Where the mates are planned to be, not counting those on the host being
                    // evacuated (they follow) and those in transit.
                    let mut placed = mates.flatten().filter(|&o| o != usize::MAX && !(evacuating && o == from));
                    let mut placed2 = placed.clone();
                    placed.next().is_none() || placed2.any(|o| o == h)
                }
            };
            if !ok {
                match g.strength {
                    Strength::Must => {
                        return Err(if g.relation == VmRelation::Affinity {
                            Refusal::Affinity
                        } else {
                            Refusal::AntiAffinity
                        })
                    }
                    Strength::Should => broken += 1,
                }
            }
        }
        Ok(broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_contain() {
        let w = Window::parse("Sat 02:00-06:00").unwrap();
        // Monday 1970-01-05 00:00 UTC = 4 days after the epoch.
        let monday = 4.0 * 86_400.0;
        let saturday = monday + 5.0 * 86_400.0;
        assert!(w.contains(saturday + 3.0 * 3600.0));
        assert!(!w.contains(saturday + 1.0 * 3600.0));
        assert!(!w.contains(saturday + 6.0 * 3600.0));
        assert!(w.contains(saturday + 7.0 * 86_400.0 + 2.0 * 3600.0), "weekly");
        let wrap = Window::parse("sunday 23:00-01:00").unwrap();
        assert!(wrap.contains(monday + 0.5 * 3600.0), "wraps past the week's end");
        assert!(wrap.contains(monday - 0.5 * 3600.0));
        assert!(!wrap.contains(monday + 2.0 * 3600.0));
        for bad in ["Sat", "Foo 01:00-02:00", "Sat 01:00", "Sat 25:00-26:00", "Sat 01:00-01:00", "Sat 1-2"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut r = OperatorRules::default();
        r.vm_host.push(VmHostRule {
            name: "db".into(),
            vms: vec![1],
            host_group: "rack-a".into(),
            relation: HostRelation::RunOn,
            strength: Strength::Must,
        });
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("rack-a") && e.contains("not defined"), "{e}");
        r.host_groups.push(HostGroup { name: "rack-a".into(), hosts: vec![0] });
        r.validate().unwrap();
        r.headroom.push(Headroom { hosts: vec![], cpu: 1.5, mem: 0.0 });
        assert!(r.validate().unwrap_err().to_string().contains("headroom cpu"));
    }
}
