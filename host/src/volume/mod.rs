//! Volumes of running guests (issue #11, paper 3.1): attaching a disk-array volume to a guest
//! through QEMU's own iSCSI initiator, detaching it, and [`migrate_volume`], the live migration
//! of a guest together with its volume's mapping (paper Figure 3), with every step journaled in
//! the controller's database so that a failure — or a controller killed between two steps —
//! ends with the volume mapped to exactly the node the guest runs on ([`resolve_open_moves`]).
//!
//! Our order differs from the paper's (docs/volumes.md): the destination is mapped *before*
//! the migration and the source unmapped *after* it, so the volume is readable throughout and
//! the source's last writes are on the array before the destination resumes.

pub mod lab_host;

use std::time::Duration;

use amvm_engine::memory::Mode;
use amvm_engine::qemu::libvirt;
use amvm_engine::volume::{disk_xml, DiskArray, Initiator};
use anyhow::{anyhow, Context};

use crate::controller::store::{state, Store, VolumeAttachment, VolumeMove};

/// A node as the volume workflow sees it: its name, libvirt URI and iSCSI initiator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub name: String,
    pub uri: String,
    pub initiator: Initiator,
}

/// Where guests run and how they move (the lab's libvirt daemons in production and tests).
pub trait GuestHost {
    /// The node `vm` runs on now.
    fn locate(&self, vm: &str) -> anyhow::Result<NodeRef>;
    /// A node by name.
    fn node(&self, name: &str) -> anyhow::Result<NodeRef>;
    /// Live-migrates `vm` from `from` to `to`.
    fn migrate(&self, vm: &str, from: &NodeRef, to: &NodeRef, mode: Option<Mode>) -> anyhow::Result<()>;
    /// Whether a migration of `vm` is under way (a controller restarted during a move finds the
    /// agent's job still running): its move is resolved only once it has ended.
    fn migrating(&self, vm: &str) -> anyhow::Result<bool>;
}

/// The steps of a volume move, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CheckArray,
    MapDestination,
    Migrate,
    UnmapSource,
    Record,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::CheckArray => "check-array",
            Step::MapDestination => "map-destination",
            Step::Migrate => "migrate",
            Step::UnmapSource => "unmap-source",
            Step::Record => "record",
        }
    }
}

/// Fault injection (tests): fail a step, fail it only the first time, or stop right after a
/// step as a killed controller would (no rollback, no journal update).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub fail: Option<Step>,
    pub fail_once: Option<Step>,
    pub crash_after: Option<Step>,
}

/// How a move ended without success.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// Nothing was changed (bad request).
    #[error("{0}")]
    Refused(String),
    /// A step failed; the move was rolled back: the volume is mapped to `node` only, where the
    /// guest runs.
    #[error(
        "volume move {id} failed at {step}: {cause:#}; rolled back: {volume} is mapped to {node} only, where {vm} runs"
    )]
    RolledBack { id: i64, step: &'static str, volume: String, vm: String, node: String, cause: anyhow::Error },
    /// A step failed and neither rollback nor completion worked; the move stays open (its intent
    /// record) for [`resolve_open_moves`].
    #[error("volume move {id} failed at {step}: {cause:#}; left open: `amvm volume resolve` (or the controller at its next start) finishes it")]
    Unresolved { id: i64, step: &'static str, cause: anyhow::Error },
    /// Injected: the controller "died" after `step`.
    #[error("volume move {id}: stopped after {step} (injected crash)")]
    Crashed { id: i64, step: &'static str },
}

/// A finished move.
#[derive(Debug, Clone)]
pub struct MoveOutcome {
    pub id: i64,
    pub attachment: VolumeAttachment,
    /// Retries the source's unmapping needed.
    pub unmap_retries: u32,
}

fn injected(f: &mut Faults, step: Step) -> anyhow::Result<()> {
    if f.fail == Some(step) {
        return Err(anyhow!("injected fault at {}", step.name()));
    }
    if f.fail_once == Some(step) {
        f.fail_once = None;
        return Err(anyhow!("injected transient fault at {}", step.name()));
    }
    Ok(())
}

/// Retries `f` (3 tries, 200 ms apart); returns the retries it took.
fn retry(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<u32> {
    let mut last = None;
    for i in 0..3 {
        match f() {
            Ok(()) => return Ok(i),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last.unwrap_or_else(|| anyhow!("no attempt")))
}

/// Attaches volume `volume` to the running guest `vm` as disk `target_dev`: maps it to the
/// guest's node, hot-plugs the iSCSI disk, records the connection. Undone when a step fails.
pub fn attach_volume(
    store: &Store,
    array: &dyn DiskArray,
    host: &dyn GuestHost,
    volume: &str,
    vm: &str,
    target_dev: &str,
) -> anyhow::Result<VolumeAttachment> {
    amvm_engine::volume::check_target_dev(target_dev)?;
    if let Some(a) = store.attachment(volume)? {
        anyhow::bail!("volume {volume:?} is already attached to {} (on {}) as {}", a.vm, a.node, a.target_dev);
    }
    let node = host.locate(vm)?;
    if libvirt::disk_targets(&node.uri, vm).map_err(|e| anyhow!(e))?.iter().any(|d| d == target_dev) {
        anyhow::bail!("{vm} already has a disk {target_dev}");
    }
    let conn = array.map(volume, &node.initiator).with_context(|| format!("map {volume} to {}", node.name))?;
    if let Some(chap) = &conn.chap {
        if let Err(e) = libvirt::ensure_iscsi_secret(&node.uri, chap) {
            let _ = array.unmap(volume, &node.initiator);
            anyhow::bail!("{e} (the volume was unmapped again)");
        }
    }
    if let Err(e) = libvirt::attach_device(&node.uri, vm, &disk_xml(&conn, target_dev)) {
        let _ = array.unmap(volume, &node.initiator);
        anyhow::bail!("{e} (the volume was unmapped again)");
    }
    let a = VolumeAttachment {
        volume: volume.to_string(),
        vm: vm.to_string(),
        node: node.name.clone(),
        initiator: node.initiator.to_string(),
        portal: format!("{}:{}", conn.host, conn.port),
        iqn: conn.iqn,
        lun: conn.lun,
        target_dev: target_dev.to_string(),
        updated_at: 0,
    };
    store.put_attachment(&a)?;
    store.audit("amvm", "volume.attach", volume, &format!("{vm} on {} as {target_dev}", node.name))?;
    Ok(a)
}

/// Detaches a volume from its guest: unplugs the disk, unmaps the node, forgets the connection.
pub fn detach_volume(store: &Store, array: &dyn DiskArray, host: &dyn GuestHost, volume: &str) -> anyhow::Result<()> {
    let a = store.attachment(volume)?.ok_or_else(|| anyhow!("volume {volume:?} is not attached"))?;
    let node = host.locate(&a.vm)?;
    let conn = array.connection(volume)?;
    libvirt::detach_device(&node.uri, &a.vm, &disk_xml(&conn, &a.target_dev)).map_err(|e| anyhow!(e))?;
    array.unmap(volume, &node.initiator)?;
    if node.name != a.node {
        array.unmap(volume, &Initiator::parse(&a.initiator)?)?;
    }
    store.remove_attachment(volume)?;
    store.audit("amvm", "volume.detach", volume, &format!("from {} on {}", a.vm, node.name))?;
    Ok(())
}

/// Grows `volume` to `size_bytes` on the array and, when it is attached, tells its guest: QEMU
/// resizes the disk (libvirt `blockResize`) and the guest kernel sees the new capacity. Returns
/// the volume and the guest told (`vm on node`), if any.
pub fn extend_volume(
    store: &Store,
    array: &dyn DiskArray,
    host: &dyn GuestHost,
    volume: &str,
    size_bytes: u64,
) -> anyhow::Result<(amvm_engine::volume::Volume, Option<String>)> {
    let v = array.extend(volume, size_bytes)?;
    let Some(a) = store.attachment(volume)? else { return Ok((v, None)) };
    let node = host
        .locate(&a.vm)
        .with_context(|| format!("{volume} is {size_bytes} bytes on the array, but its guest {} was not told", a.vm))?;
    libvirt::block_resize(&node.uri, &a.vm, &a.target_dev, size_bytes)
        .map_err(|e| anyhow!("{volume} is {size_bytes} bytes on the array, but its guest was not told: {e}"))?;
    store.audit("amvm", "volume.extend", volume, &format!("{size_bytes} bytes; {} on {} told", a.vm, node.name))?;
    Ok((v, Some(format!("{} on {}", a.vm, node.name))))
}

/// Live-migrates the guest of `volume` to node `to`, moving the volume's mapping with it
/// (paper Figure 3, in our order): map to the destination, migrate, unmap from the source,
/// record the new connection. Each step is journaled before it acts.
pub fn migrate_volume(
    store: &Store,
    array: &dyn DiskArray,
    host: &dyn GuestHost,
    volume: &str,
    to: &str,
    mode: Option<Mode>,
    mut faults: Faults,
) -> Result<MoveOutcome, MoveError> {
    let refused = |e: anyhow::Error| MoveError::Refused(format!("{e:#}"));
    let a = store
        .attachment(volume)
        .map_err(|e| refused(e.into()))?
        .ok_or_else(|| MoveError::Refused(format!("volume {volume:?} is not attached to a guest")))?;
    let src = host.locate(&a.vm).map_err(refused)?;
    let dst = host.node(to).map_err(refused)?;
    let moving = PreparedMove::begin(store, array, a, src, dst, mode, &mut faults)?;
    let vm = moving.attachment.vm.clone();
    let r = injected(&mut faults, Step::Migrate).and_then(|()| host.migrate(&vm, &moving.src, &moving.dst, mode));
    moving.finish(store, array, r, &|| host.locate(&vm), &mut faults)
}

/// A volume move whose guest is about to migrate: journaled, the array checked, the volume
/// mapped to the destination as well ([`PreparedMove::begin`]). The caller migrates the guest
/// (itself, or through an agent as the controller's live world does) and then calls
/// [`PreparedMove::finish`] with how the migration ended.
#[derive(Debug)]
pub struct PreparedMove {
    pub id: i64,
    pub attachment: VolumeAttachment,
    pub src: NodeRef,
    pub dst: NodeRef,
    /// The destination's connection, once mapped.
    conn: Option<amvm_engine::volume::Connection>,
}

impl PreparedMove {
    /// Steps 1–2: journals the intent, checks that the array answers (its configuration read
    /// again) and maps the volume to the destination (its first connection to the array: QEMU's
    /// initiator logs in when the incoming guest opens the disk). On failure nothing stays
    /// changed and the move is `FAILED`.
    pub fn begin(
        store: &Store,
        array: &dyn DiskArray,
        a: VolumeAttachment,
        src: NodeRef,
        dst: NodeRef,
        mode: Option<Mode>,
        faults: &mut Faults,
    ) -> Result<PreparedMove, MoveError> {
        if src.name == dst.name {
            return Err(MoveError::Refused(format!("{} already runs on {}", a.vm, dst.name)));
        }
        let intent = VolumeMove {
            id: 0,
            volume: a.volume.clone(),
            vm: a.vm.clone(),
            from_node: src.name.clone(),
            from_initiator: src.initiator.to_string(),
            to_node: dst.name.clone(),
            to_initiator: dst.initiator.to_string(),
            mode: mode.map(|m| m.name().to_string()),
            step: String::new(),
            state: String::new(),
            error: None,
            started_at: 0,
            ended_at: None,
        };
        let id = store.begin_volume_move(&intent).map_err(|e| MoveError::Refused(format!("{e:#}")))?;
        let mut m = PreparedMove { id, attachment: a, src, dst, conn: None };

        // 1. The array answers.
        let r = m
            .journal(store, Step::CheckArray)
            .and_then(|()| injected(faults, Step::CheckArray))
            .and_then(|()| array.ping().map_err(anyhow::Error::from));
        if let Err(e) = r {
            return Err(m.rolled_back(store, Step::CheckArray, e));
        }
        m.crash(faults, Step::CheckArray)?;

        // 2. Map to the destination.
        let r = m
            .journal(store, Step::MapDestination)
            .and_then(|()| injected(faults, Step::MapDestination))
            .and_then(|()| array.map(&m.attachment.volume, &m.dst.initiator).map_err(anyhow::Error::from))
            .and_then(|c| {
                // CHAP: the destination's libvirt needs the secret the guest's disk names.
                if let Some(chap) = &c.chap {
                    libvirt::ensure_iscsi_secret(&m.dst.uri, chap).map_err(anyhow::Error::msg)?;
                }
                Ok(c)
            });
        match r {
            Ok(c) => m.conn = Some(c),
            Err(e) => {
                return match retry(|| array.unmap(&m.attachment.volume, &m.dst.initiator).map_err(Into::into)) {
                    Ok(_) => Err(m.rolled_back(store, Step::MapDestination, e)),
                    Err(u) => Err(MoveError::Unresolved {
                        id,
                        step: Step::MapDestination.name(),
                        cause: e.context(format!("and unmapping the destination again failed: {u:#}")),
                    }),
                };
            }
        }
        m.crash(faults, Step::MapDestination)?;
        m.journal(store, Step::Migrate).map_err(|e| MoveError::Unresolved {
            id,
            step: Step::Migrate.name(),
            cause: e,
        })?;
        Ok(m)
    }

    /// Steps 3–5 once the guest's migration has ended with `migrated`: where the guest runs
    /// (`locate`) decides. Still on the source (a failed pre-copy) → the destination is unmapped
    /// again and the move `FAILED`; on the destination (success, or a failure after the switch
    /// to post-copy) → the source is unmapped and the new connection recorded; anywhere else
    /// the move stays open for [`resolve_open_moves`].
    pub fn finish(
        self,
        store: &Store,
        array: &dyn DiskArray,
        migrated: anyhow::Result<()>,
        locate: &dyn Fn() -> anyhow::Result<NodeRef>,
        faults: &mut Faults,
    ) -> Result<MoveOutcome, MoveError> {
        let (id, volume, vm) = (self.id, self.attachment.volume.clone(), self.attachment.vm.clone());
        if let Err(e) = migrated {
            match locate() {
                Ok(n) if n.name == self.src.name => {
                    return match retry(|| array.unmap(&volume, &self.dst.initiator).map_err(Into::into)) {
                        Ok(_) => Err(self.rolled_back(store, Step::Migrate, e)),
                        Err(u) => Err(MoveError::Unresolved {
                            id,
                            step: Step::Migrate.name(),
                            cause: e.context(format!("and unmapping the destination failed: {u:#}")),
                        }),
                    };
                }
                Ok(n) if n.name == self.dst.name => {
                    tracing::warn!(error = %e, "migration reported a failure but the guest runs on the destination")
                }
                Ok(n) => {
                    return Err(MoveError::Unresolved {
                        id,
                        step: Step::Migrate.name(),
                        cause: e.context(format!("{vm} now runs on {}, neither source nor destination", n.name)),
                    })
                }
                Err(l) => {
                    return Err(MoveError::Unresolved {
                        id,
                        step: Step::Migrate.name(),
                        cause: e.context(format!("and the guest cannot be found: {l:#}")),
                    })
                }
            }
        }
        self.crash(faults, Step::Migrate)?;

        // 4. Unmap from the source (its QEMU is gone; its session closes with it).
        let r = self.journal(store, Step::UnmapSource).and_then(|()| {
            retry(|| {
                injected(faults, Step::UnmapSource)?;
                array.unmap(&volume, &self.src.initiator).map_err(Into::into)
            })
        });
        let unmap_retries = match r {
            Ok(n) => n,
            Err(e) => return Err(MoveError::Unresolved { id, step: Step::UnmapSource.name(), cause: e }),
        };
        self.crash(faults, Step::UnmapSource)?;

        // 5. Record the new connection (and end the move) in one transaction.
        let Some(conn) = self.conn.clone() else {
            let cause = anyhow!("no connection to the destination was recorded at map-destination");
            return Err(MoveError::Unresolved { id, step: Step::Record.name(), cause });
        };
        let att = VolumeAttachment {
            node: self.dst.name.clone(),
            initiator: self.dst.initiator.to_string(),
            portal: format!("{}:{}", conn.host, conn.port),
            iqn: conn.iqn,
            lun: conn.lun,
            ..self.attachment.clone()
        };
        let r = self
            .journal(store, Step::Record)
            .and_then(|()| injected(faults, Step::Record))
            .and_then(|()| store.end_volume_move(id, state::SUCCEEDED, None, Some(&att)).map_err(Into::into));
        if let Err(e) = r {
            return Err(MoveError::Unresolved { id, step: Step::Record.name(), cause: e });
        }
        Ok(MoveOutcome { id, attachment: att, unmap_retries })
    }

    fn journal(&self, store: &Store, step: Step) -> anyhow::Result<()> {
        store.volume_move_step(self.id, step.name()).map_err(anyhow::Error::from)
    }

    /// Injected: the controller "dies" right after `step`.
    fn crash(&self, f: &Faults, step: Step) -> Result<(), MoveError> {
        if f.crash_after == Some(step) {
            Err(MoveError::Crashed { id: self.id, step: step.name() })
        } else {
            Ok(())
        }
    }

    /// Ends the move as rolled back: the guest on the source, mapped there only.
    fn rolled_back(&self, store: &Store, step: Step, cause: anyhow::Error) -> MoveError {
        let msg = format!("{cause:#}");
        let node = &self.src;
        match store.end_volume_move(self.id, state::FAILED, Some(&msg), None) {
            Ok(()) => MoveError::RolledBack {
                id: self.id,
                step: step.name(),
                volume: self.attachment.volume.clone(),
                vm: self.attachment.vm.clone(),
                node: node.name.clone(),
                cause,
            },
            Err(e) => MoveError::Unresolved { id: self.id, step: step.name(), cause: cause.context(e.to_string()) },
        }
    }
}

/// What resolving an open move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub id: i64,
    pub volume: String,
    /// The node the guest runs on, now the only one mapped.
    pub node: String,
    pub note: String,
}

/// Finishes every move left open (a crash, or an unresolved failure): finds where each guest
/// runs now, maps its volume there and unmaps the other node of the move, records the
/// connection and closes the move as `RESOLVED`. A move whose guest is still migrating (the
/// controller was killed during the migration, which the source's agent carries on) is left
/// open until that migration has ended: resolving it then would cut the incoming guest's
/// disk. Run by the controller at start and, in a live world, at each cycle with open moves.
pub fn resolve_open_moves(store: &Store, array: &dyn DiskArray, host: &dyn GuestHost) -> anyhow::Result<Vec<Resolved>> {
    let mut out = Vec::new();
    for m in store.open_volume_moves()? {
        if host.migrating(&m.vm).with_context(|| format!("move {}: is {} migrating", m.id, m.vm))? {
            tracing::info!(move_id = m.id, vm = %m.vm, "volume move left open: its guest is still migrating");
            continue;
        }
        let here = host.locate(&m.vm).with_context(|| format!("move {}: where does {} run", m.id, m.vm))?;
        let (keep, drop_init) = if here.name == m.to_node {
            (Initiator::parse(&m.to_initiator)?, Initiator::parse(&m.from_initiator)?)
        } else if here.name == m.from_node {
            (Initiator::parse(&m.from_initiator)?, Initiator::parse(&m.to_initiator)?)
        } else {
            anyhow::bail!("move {}: {} runs on {}, neither {} nor {}", m.id, m.vm, here.name, m.from_node, m.to_node);
        };
        let conn = array.map(&m.volume, &keep).with_context(|| format!("move {}: map to {}", m.id, here.name))?;
        array.unmap(&m.volume, &drop_init).with_context(|| format!("move {}: unmap the other node", m.id))?;
        let a = store.attachment(&m.volume)?;
        let att = VolumeAttachment {
            volume: m.volume.clone(),
            vm: m.vm.clone(),
            node: here.name.clone(),
            initiator: keep.to_string(),
            portal: format!("{}:{}", conn.host, conn.port),
            iqn: conn.iqn,
            lun: conn.lun,
            target_dev: a.map_or_else(|| "vdb".to_string(), |a| a.target_dev),
            updated_at: 0,
        };
        let note = format!("resolved at step {}: {} runs on {}", m.step, m.vm, here.name);
        store.end_volume_move(m.id, "RESOLVED", Some(&note), Some(&att))?;
        out.push(Resolved { id: m.id, volume: m.volume, node: here.name, note });
    }
    Ok(out)
}

/// [`resolve_open_moves`] for a controller starting: its database at `db`, the driver's
/// configuration at `config`, the guests on the lab at `lab`. Nothing to do without open moves
/// (the lab is then not read).
pub fn resolve_at_start(
    db: &std::path::Path,
    config: &std::path::Path,
    lab: &std::path::Path,
) -> anyhow::Result<Vec<Resolved>> {
    let store = Store::open(db)?;
    if store.open_volume_moves()?.is_empty() {
        return Ok(Vec::new());
    }
    let array = amvm_engine::volume::TgtArray::new(config);
    let host = lab_host::LabHost {
        state: crate::lab::LabState::load(lab)?,
        opts: amvm_engine::qemu::MigrateOptions::new(Mode::Pre),
    };
    resolve_open_moves(&store, &array, &host)
}
