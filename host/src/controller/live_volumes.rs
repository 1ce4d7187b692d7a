//! Volumes in the live world (issue #11, paper 3.1): a guest with a disk-array volume moves
//! with its volume's mapping, and the scheduler knows about it.
//!
//! - Every cycle the attachments are read from the controller's database (`amvm volume
//!   attach` writes them), and every awake node is asked — by its agent, from the node's own
//!   network — whether it reaches the array's iSCSI portal ([`Op::Reach`]).
//! - [`LiveVolumes::rules`]: a VM with a volume **must** run on a node that reaches the array
//!   (host group `reaches-disk-array`), so an unreachable node is no destination; the removal
//!   shows in the decision trace as any operator rule's does.
//! - [`LiveVolumes::extra_migration_s`]: each attached volume adds `move_overhead_s` to the VM's
//!   migration time (map the destination, the destination's login when the incoming guest
//!   opens the disk, unmap the source), which VM selection and the predictive detectors count.
//! - A migration of such a VM runs as [`PreparedMove::begin`] (journal, check the array, map
//!   the destination) before the agent migrates it and [`PreparedMove::finish`] after its job
//!   ended (unmap the source and record; or, the guest still on the source, unmap the
//!   destination again). Moves left open (the controller killed in between, an unmap that kept
//!   failing) are resolved at the next cycle with no migration running, from where the agents
//!   report the guest.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use amvm_engine::volume::{Initiator, TgtArray};

use crate::controller::store::{Store, VolumeAttachment};
use crate::monitor::agent::control::{Client, DomainView, JobView, Op, Reach};
use crate::scheduler::rules::{HostGroup, HostRelation, Strength, VmHostRule};
use crate::scheduler::OperatorRules;
use crate::volume::{Faults, GuestHost, MoveError, NodeRef, PreparedMove};

/// Name of the host group of nodes that reach the disk array.
pub const REACHES_ARRAY: &str = "reaches-disk-array";
/// Default cost of one volume's remapping in a migration (s): `tgtadm` map and unmap on the
/// array and the destination QEMU's iSCSI login, with margin (docs/volumes.md).
pub const DEFAULT_MOVE_OVERHEAD_S: f64 = 1.0;

/// `[volumes]` of a live controller.
#[derive(Debug, Clone)]
pub struct LiveVolumesConfig {
    /// The controller's database (attachments, the volume-move journal).
    pub db: PathBuf,
    /// The disk-array driver's configuration (re-read at every call).
    pub array_config: PathBuf,
    /// Seconds one attached volume adds to its VM's migration time.
    pub move_overhead_s: f64,
    /// How often each node's reach of the array is checked again.
    pub recheck: Duration,
}

/// The live world's volume state.
pub struct LiveVolumes {
    cfg: LiveVolumesConfig,
    store: Store,
    array: TgtArray,
    /// Attachments by VM name, as of the last refresh.
    by_vm: HashMap<String, Vec<VolumeAttachment>>,
    /// Per host (index = host id): whether it reaches the array, and when that was checked.
    reach: Vec<Option<(bool, Instant)>>,
    /// VM ids (of the last snapshot) with at least one volume.
    vms_with_volumes: Vec<u32>,
}

impl std::fmt::Debug for LiveVolumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveVolumes").field("db", &self.cfg.db).field("array", &self.cfg.array_config).finish()
    }
}

/// A node as the volume workflow sees it: name, libvirt URI and initiator (its address: the
/// host part of `migrate_uri`, else of the libvirt URI).
pub fn node_ref(name: &str, libvirt: &str, migrate_uri: Option<&str>) -> Result<NodeRef, String> {
    let host_of = |uri: &str| -> Option<String> {
        let rest = uri.split_once("://")?.1;
        let host = rest.split(['/', ':', '?']).next()?;
        (!host.is_empty()).then(|| host.to_string())
    };
    let addr = migrate_uri
        .and_then(host_of)
        .or_else(|| host_of(libvirt))
        .ok_or_else(|| format!("node {name}: no address in {libvirt:?} to use as its iSCSI initiator"))?;
    let initiator = Initiator::parse(&addr).map_err(|e| format!("node {name}: initiator {addr:?}: {e}"))?;
    Ok(NodeRef { name: name.to_string(), uri: libvirt.to_string(), initiator })
}

impl LiveVolumes {
    pub fn open(cfg: LiveVolumesConfig, hosts: usize) -> Result<LiveVolumes, String> {
        if !(cfg.move_overhead_s.is_finite() && cfg.move_overhead_s >= 0.0) {
            return Err(format!("volumes.move_overhead_s = {} must be a non-negative number", cfg.move_overhead_s));
        }
        let store = Store::open(&cfg.db).map_err(|e| format!("volumes: database {}: {e}", cfg.db.display()))?;
        let array = TgtArray::new(&cfg.array_config);
        Ok(LiveVolumes {
            cfg,
            store,
            array,
            by_vm: HashMap::new(),
            reach: vec![None; hosts],
            vms_with_volumes: Vec::new(),
        })
    }

    /// Re-reads the attachments and checks, for every host in `awake` whose last check is older
    /// than `recheck`, whether it reaches the array. `vms` lists (VM id, name) of the snapshot.
    pub fn refresh(&mut self, clients: &[Client], names: &[String], awake: &[bool], vms: &[(u32, String)]) {
        match self.store.attachments(None) {
            Ok(list) => {
                self.by_vm.clear();
                for a in list {
                    self.by_vm.entry(a.vm.clone()).or_default().push(a);
                }
            }
            Err(e) => tracing::warn!("volumes: cannot read the attachments (keeping the last ones): {e}"),
        }
        self.vms_with_volumes = vms.iter().filter(|(_, n)| self.by_vm.contains_key(n)).map(|(id, _)| *id).collect();
        if self.by_vm.is_empty() {
            return;
        }
        let portal = match self.array.config().map(|c| c.portal) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("volumes: the array's configuration is unreadable, no node reaches it: {e}");
                self.reach.iter_mut().for_each(|r| *r = Some((false, Instant::now())));
                return;
            }
        };
        for (h, client) in clients.iter().enumerate() {
            if !awake.get(h).copied().unwrap_or(false) {
                continue;
            }
            if self.reach[h].is_some_and(|(_, t)| t.elapsed() < self.cfg.recheck) {
                continue;
            }
            let ok = match client.call_as::<Reach>(&Op::Reach { addr: portal.clone() }) {
                Ok(r) => {
                    if let Some(e) = r.error.as_deref() {
                        tracing::warn!(host = %names[h], portal, "node does not reach the disk array: {e}");
                    }
                    r.reachable
                }
                Err(e) => {
                    tracing::warn!(host = %names[h], "cannot ask the agent whether it reaches the disk array: {e}");
                    false
                }
            };
            if self.reach[h].map(|(r, _)| r) != Some(ok) {
                tracing::info!(host = %names[h], reachable = ok, portal, "disk array reach");
            }
            self.reach[h] = Some((ok, Instant::now()));
        }
    }

    /// The volumes attached to VM `name`.
    pub fn volumes_of(&self, name: &str) -> &[VolumeAttachment] {
        self.by_vm.get(name).map_or(&[], Vec::as_slice)
    }

    /// Seconds a move of VM `name` costs besides its RAM.
    pub fn extra_migration_s(&self, name: &str) -> f32 {
        (self.volumes_of(name).len() as f64 * self.cfg.move_overhead_s) as f32
    }

    /// Whether host `h` reaches the array (as last checked; unchecked counts as not).
    pub fn reaches(&self, h: usize) -> bool {
        self.reach.get(h).copied().flatten().is_some_and(|(r, _)| r)
    }

    /// The world's rule: VMs with volumes must run on nodes that reach the array.
    pub fn rules(&self) -> OperatorRules {
        if self.vms_with_volumes.is_empty() {
            return OperatorRules::default();
        }
        let hosts = (0..self.reach.len()).filter(|&h| self.reaches(h)).map(|h| h as u32).collect();
        OperatorRules {
            host_groups: vec![HostGroup { name: REACHES_ARRAY.into(), hosts }],
            vm_host: vec![VmHostRule {
                name: "volumes-need-the-disk-array".into(),
                vms: self.vms_with_volumes.clone(),
                host_group: REACHES_ARRAY.into(),
                relation: HostRelation::RunOn,
                strength: Strength::Must,
            }],
            ..OperatorRules::default()
        }
    }

    /// Before the agent migrates VM `name` from `src` to `dst`: prepares the move of each of
    /// its volumes (journaled, the destination mapped). On a failure the moves already
    /// prepared are rolled back and the migration must not start.
    pub fn begin(
        &self,
        name: &str,
        src: &NodeRef,
        dst: &NodeRef,
        mode: Option<amvm_engine::memory::Mode>,
    ) -> Result<Vec<PreparedMove>, String> {
        let mut done: Vec<PreparedMove> = Vec::new();
        for a in self.volumes_of(name).to_vec() {
            let volume = a.volume.clone();
            match PreparedMove::begin(
                &self.store,
                &self.array,
                a,
                src.clone(),
                dst.clone(),
                mode,
                &mut Faults::default(),
            ) {
                Ok(m) => done.push(m),
                Err(e) => {
                    let src = src.clone();
                    let back =
                        self.finish(done, Err(format!("volume {volume} could not be prepared")), &|| Ok(src.clone()));
                    let mut msg = format!("volume {volume}: {e}");
                    for b in back.into_iter().filter_map(Result::err) {
                        msg.push_str(&format!("; {b}"));
                    }
                    return Err(msg);
                }
            }
        }
        Ok(done)
    }

    /// After the migration ended (`migrated`): finishes each prepared move from where the
    /// guest runs now (`locate`). One result per move.
    pub fn finish(
        &self,
        moves: Vec<PreparedMove>,
        migrated: Result<(), String>,
        locate: &dyn Fn() -> anyhow::Result<NodeRef>,
    ) -> Vec<Result<String, String>> {
        moves
            .into_iter()
            .map(|m| {
                let r = migrated.clone().map_err(anyhow::Error::msg);
                let volume = m.attachment.volume.clone();
                match m.finish(&self.store, &self.array, r, locate, &mut Faults::default()) {
                    Ok(o) => {
                        let _ = self.store.audit(
                            "controller",
                            "volume.migrate",
                            &volume,
                            &format!("with {} to {}", o.attachment.vm, o.attachment.node),
                        );
                        Ok(format!("volume {volume} now mapped to {} (move {})", o.attachment.node, o.id))
                    }
                    Err(e @ MoveError::RolledBack { .. }) => Err(e.to_string()),
                    Err(e) => {
                        tracing::error!("{e}");
                        Err(e.to_string())
                    }
                }
            })
            .collect()
    }

    /// Whether any volume move is open (needs [`Self::resolve`]).
    pub fn has_open_moves(&self) -> bool {
        self.store.open_volume_moves().is_ok_and(|m| !m.is_empty())
    }

    /// Resolves open moves from where `host` finds the guests.
    pub fn resolve(&self, host: &dyn GuestHost) {
        match crate::volume::resolve_open_moves(&self.store, &self.array, host) {
            Ok(done) => {
                for r in done {
                    tracing::info!(move_id = r.id, volume = %r.volume, node = %r.node, "volume move resolved: {}", r.note);
                }
            }
            Err(e) => tracing::warn!("volumes: open moves not resolved yet: {e:#}"),
        }
    }
}

/// Guests located through the agents' domain lists (for resolving open moves; the live world
/// migrates through the agents, never through this).
pub struct AgentGuests<'a> {
    pub nodes: Vec<NodeRef>,
    pub clients: &'a [Client],
    pub awake: Vec<bool>,
}

impl GuestHost for AgentGuests<'_> {
    fn locate(&self, vm: &str) -> anyhow::Result<NodeRef> {
        for (h, c) in self.clients.iter().enumerate() {
            if !self.awake[h] {
                continue;
            }
            let domains: Vec<DomainView> =
                c.call_as(&Op::Domains).map_err(|e| anyhow::anyhow!("{}: {e}", self.nodes[h].name))?;
            if domains.iter().any(|d| d.active && (d.name == vm || d.uuid == vm)) {
                return Ok(self.nodes[h].clone());
            }
        }
        anyhow::bail!("{vm} runs on no awake node")
    }

    fn node(&self, name: &str) -> anyhow::Result<NodeRef> {
        self.nodes.iter().find(|n| n.name == name).cloned().ok_or_else(|| anyhow::anyhow!("no node {name}"))
    }

    fn migrate(&self, vm: &str, _: &NodeRef, _: &NodeRef, _: Option<amvm_engine::memory::Mode>) -> anyhow::Result<()> {
        anyhow::bail!("{vm}: the live world migrates through its agents")
    }

    /// A job of an agent still running for `vm` (one the controller started before it was
    /// restarted, say), or its domain active on two nodes.
    fn migrating(&self, vm: &str) -> anyhow::Result<bool> {
        let mut active = 0;
        for (h, c) in self.clients.iter().enumerate() {
            if !self.awake[h] {
                continue;
            }
            let name = &self.nodes[h].name;
            let domains: Vec<DomainView> = c.call_as(&Op::Domains).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let Some(d) = domains.iter().find(|d| d.active && (d.name == vm || d.uuid == vm)) else { continue };
            active += 1;
            let jobs: Vec<JobView> = c.call_as(&Op::Jobs).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            if jobs.iter().any(|j| j.state == "running" && (j.vm_uuid == d.uuid || j.vm == d.name)) {
                return Ok(true);
            }
        }
        Ok(active > 1)
    }
}
