//! The decision trace: *why* a cycle planned what it planned.
//!
//! Collected only when asked for ([`Scheduler::set_tracing`](super::Scheduler::set_tracing)),
//! so offline simulations pay nothing. Ids are the snapshot's host and VM ids. Operators of
//! Watcher and DRS ask for exactly this: no action without its reason, no refusal without its
//! cause.

use serde::{Deserialize, Serialize};

use super::rules::Refusal;
use super::snapshot::{HostId, VmId};

/// Candidates kept per placement decision (best weights first).
pub const TOP_CANDIDATES: usize = 5;

/// Everything one cycle decided, with its reasons.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionTrace {
    /// Hosts the threshold policy called overloaded or underloaded, with what it saw.
    pub hosts: Vec<HostDecision>,
    /// One entry per planned migration, in plan order.
    pub migrations: Vec<MigrationDecision>,
    /// Underloaded hosts whose evacuation was tried, committed or not.
    pub evacuations: Vec<Evacuation>,
    /// VMs selected to leave an overloaded host that no host could take.
    pub unplaced: Vec<Unplaced>,
}

/// Host classes as the threshold policy returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostClass {
    Normal,
    Underload,
    Overload,
}

/// A host the threshold policy classified as over- or underloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostDecision {
    pub host: HostId,
    pub class: HostClass,
    /// The host's CPU utilization history the policy saw (oldest first; last = now).
    pub cpu_history: Vec<f32>,
    /// Cycles in a row in this class (acted on once it reaches `persistence`).
    pub streak: u32,
    pub persistence: u32,
    /// What the cycle did about it: "vms selected", "waiting for persistence", …
    pub outcome: String,
    /// For an overloaded host: the VMs the selection policy picked, in its order.
    pub selection_order: Vec<VmId>,
}

/// A weighed destination candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub host: HostId,
    pub weight: f32,
    /// The threshold policy said the host would be overloaded with the VM added.
    pub vetoed: bool,
}

/// Why one VM goes where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationDecision {
    pub vm: VmId,
    pub from: HostId,
    pub to: HostId,
    /// `overload` or `underload`.
    pub reason: String,
    /// Hosts offered to the placement policy (after the capacity filter).
    pub candidates: u32,
    /// Hosts removed before the policy saw them, by reason.
    pub filtered: Vec<(String, u32)>,
    /// The best-weighted candidates, lowest weight first, with the veto results.
    pub top: Vec<Candidate>,
}

/// An evacuation attempt of an underloaded host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evacuation {
    pub host: HostId,
    pub utilization: f32,
    /// True when every VM found a host: the host sleeps once they have left.
    pub committed: bool,
    /// VMs and their destinations (committed) or why it was rolled back.
    pub moves: Vec<(VmId, HostId)>,
    pub refused: Option<String>,
}

/// A VM that had to leave an overloaded host but found no destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unplaced {
    pub vm: VmId,
    pub from: HostId,
    pub reason: String,
}

/// Counts of hosts removed from a placement call, by reason.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FilterCounts {
    pub source: u32,
    pub down: u32,
    pub migration_slots: u32,
    pub cpu: u32,
    pub memory: u32,
    pub core: u32,
    /// Removed by operator must-rules, per [`Refusal`] (in its declaration order).
    pub rules: [u32; 7],
}

impl FilterCounts {
    pub(crate) fn count_rule(&mut self, r: Refusal) {
        self.rules[r as usize] += 1;
    }

    pub(crate) fn list(&self) -> Vec<(String, u32)> {
        let rules = Refusal::ALL.iter().map(|&r| (r.reason(), self.rules[r as usize]));
        [
            ("source host", self.source),
            ("down", self.down),
            ("no migration slot", self.migration_slots),
            ("not enough CPU", self.cpu),
            ("not enough memory", self.memory),
            ("cores slower than the VM", self.core),
        ]
        .into_iter()
        .chain(rules)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.to_string(), n))
        .collect()
    }
}
