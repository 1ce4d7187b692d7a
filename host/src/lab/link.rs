//! Cutting the link between two lab nodes on purpose, to exercise post-copy recovery.
//!
//! A cut is packet-filter rules (`iptables`, nf_tables backend) in one node's network namespace
//! that refuse every packet to and from the other node's address, in both directions. TCP segments
//! are refused with a reset (`REJECT --reject-with tcp-reset`), other packets are dropped. The
//! management connections (libvirt's from the host, the agents' reports) go through the bridge's
//! own address and are not touched: only the node-to-node path, which carries the migration
//! stream, is cut.
//!
//! Why resets and not plain loss: a few seconds of loss (`ip link set … down`, `tc netem loss
//! 100%`, `-j DROP`) do not break a TCP connection — it retransmits for about 15 minutes
//! (`tcp_retries2`) and QEMU's migration stream has no timeout of its own — so the migration only
//! stalls and then carries on as if nothing happened (measured: docs/lab.md). What post-copy
//! recovery is for is a stream that *ended*: a peer or a middlebox that lost the connection's
//! state answers its next segment with a reset, and a long outage ends it by timeout. The reset
//! gives that failure at once, and the cut lasting its full length keeps every reconnection
//! attempt failing until it is lifted.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{node, NodeRecord};

/// The rules of a cut between the node and `peer_ip` (arguments after `iptables -A|-D`), in
/// order. The reset that `REJECT` makes for an outgoing segment reaches the local socket through
/// INPUT with the peer's address as its source, so INPUT lets resets pass before it refuses the
/// rest.
fn rules(peer_ip: &str) -> Vec<Vec<String>> {
    let rule = |words: &[&str]| words.iter().map(|w| w.replace("PEER", peer_ip)).collect::<Vec<String>>();
    vec![
        rule(&["OUTPUT", "-d", "PEER", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]),
        rule(&["OUTPUT", "-d", "PEER", "-j", "DROP"]),
        rule(&["INPUT", "-s", "PEER", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "ACCEPT"]),
        rule(&["INPUT", "-s", "PEER", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]),
        rule(&["INPUT", "-s", "PEER", "-j", "DROP"]),
    ]
}

fn iptables(holder: u32, op: &str, rule: &[String]) -> Result<()> {
    let mut c = Command::new("nsenter");
    c.arg("-t").arg(holder.to_string()).arg("-n").args(["iptables", "-w", op]).args(rule);
    node::run(&mut c).map(drop).context("iptables (Debian package iptables) in the node's network namespace")
}

/// A cut in force; lifted by [`LinkCut::restore`] or when dropped.
#[derive(Debug)]
pub struct LinkCut {
    holder: u32,
    peer_ip: String,
    pub node: String,
    pub peer: String,
    pub since: Instant,
    lifted: bool,
}

impl LinkCut {
    /// Cuts the link between `node` and `peer`.
    pub fn cut(node: &NodeRecord, peer: &NodeRecord) -> Result<LinkCut> {
        let mut cut = LinkCut {
            holder: node.holder_pid,
            peer_ip: peer.ip.clone(),
            node: node.name.clone(),
            peer: peer.name.clone(),
            since: Instant::now(),
            lifted: true,
        };
        for rule in rules(&peer.ip) {
            iptables(cut.holder, "-A", &rule)
                .with_context(|| format!("cannot cut the link between {} and {}", node.name, peer.name))?;
            cut.lifted = false;
        }
        cut.since = Instant::now();
        Ok(cut)
    }

    /// Lifts the cut; returns how long it lasted.
    pub fn restore(mut self) -> Result<Duration> {
        self.lift()?;
        Ok(self.since.elapsed())
    }

    fn lift(&mut self) -> Result<()> {
        if self.lifted {
            return Ok(());
        }
        let mut first_err = None;
        for rule in rules(&self.peer_ip) {
            if let Err(e) = iptables(self.holder, "-D", &rule) {
                first_err.get_or_insert(e);
            }
        }
        self.lifted = true;
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        if let Err(e) = self.lift() {
            tracing::warn!(error = %format!("{e:#}"), node = %self.node, "cannot lift the link cut");
        }
    }
}
