//! Volumes in the controller's database (issue #11): the connection of each attached volume
//! (`volume_attachments`) and the volume moves (`volume_moves`), which are both the intent
//! journal of [`crate::volume::migrate_volume`] (a row is `ONGOING` from before its first step
//! until it ends, its `step` the last one begun) and the per-VM migration history.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{state, unix_now, Ctx, Result, Store};

/// A volume attached to a VM, with the connection its node uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VolumeAttachment {
    pub volume: String,
    pub vm: String,
    /// The node the volume is mapped to (where the VM runs).
    pub node: String,
    /// The node's initiator as the array's ACL has it (address or IQN).
    pub initiator: String,
    /// `HOST:PORT` of the array's portal.
    pub portal: String,
    pub iqn: String,
    pub lun: u32,
    /// The guest's disk (`vdb`).
    pub target_dev: String,
    pub updated_at: i64,
}

/// One move of a volume with its VM (and the intent record while it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VolumeMove {
    pub id: i64,
    pub volume: String,
    pub vm: String,
    pub from_node: String,
    pub from_initiator: String,
    pub to_node: String,
    pub to_initiator: String,
    pub mode: Option<String>,
    /// The last step begun (`intent`, `map-destination`, `migrate`, `unmap-source`, `record`,
    /// `done`, or a rollback step).
    pub step: String,
    /// `ONGOING`, `SUCCEEDED`, `FAILED` (rolled back) or `RESOLVED` (finished at a restart).
    pub state: String,
    pub error: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

fn attachment(r: &rusqlite::Row<'_>) -> rusqlite::Result<VolumeAttachment> {
    Ok(VolumeAttachment {
        volume: r.get(0)?,
        vm: r.get(1)?,
        node: r.get(2)?,
        initiator: r.get(3)?,
        portal: r.get(4)?,
        iqn: r.get(5)?,
        lun: r.get(6)?,
        target_dev: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

fn volume_move(r: &rusqlite::Row<'_>) -> rusqlite::Result<VolumeMove> {
    Ok(VolumeMove {
        id: r.get(0)?,
        volume: r.get(1)?,
        vm: r.get(2)?,
        from_node: r.get(3)?,
        from_initiator: r.get(4)?,
        to_node: r.get(5)?,
        to_initiator: r.get(6)?,
        mode: r.get(7)?,
        step: r.get(8)?,
        state: r.get(9)?,
        error: r.get(10)?,
        started_at: r.get(11)?,
        ended_at: r.get(12)?,
    })
}

const ATT_COLS: &str = "volume, vm, node, initiator, portal, iqn, lun, target_dev, updated_at";
const MOVE_COLS: &str = "id, volume, vm, from_node, from_initiator, to_node, to_initiator, mode, step, state, error, \
                         started_at, ended_at";

impl Store {
    /// Records (or replaces) a volume's attachment.
    pub fn put_attachment(&self, a: &VolumeAttachment) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO volume_attachments (volume, vm, node, initiator, portal, iqn, lun, target_dev, \
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![a.volume, a.vm, a.node, a.initiator, a.portal, a.iqn, a.lun, a.target_dev, unix_now()],
            )
            .ctx("record volume attachment")?;
        Ok(())
    }

    pub fn remove_attachment(&self, volume: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM volume_attachments WHERE volume = ?1", [volume])
            .ctx("remove volume attachment")?;
        Ok(n > 0)
    }

    pub fn attachment(&self, volume: &str) -> Result<Option<VolumeAttachment>> {
        self.conn()
            .query_row(&format!("SELECT {ATT_COLS} FROM volume_attachments WHERE volume = ?1"), [volume], attachment)
            .optional()
            .ctx("read volume attachment")
    }

    /// Attachments, of one VM or all.
    pub fn attachments(&self, vm: Option<&str>) -> Result<Vec<VolumeAttachment>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {ATT_COLS} FROM volume_attachments WHERE ?1 IS NULL OR vm = ?1 ORDER BY vm, volume"
            ))
            .ctx("read volume attachments")?;
        let rows = st.query_map([vm], attachment).ctx("read volume attachments")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read volume attachments")
    }

    /// Opens a move (the intent record), `ONGOING` at step `intent`. Refused while the volume
    /// has another move open.
    pub fn begin_volume_move(&self, m: &VolumeMove) -> Result<i64> {
        let c = self.conn();
        let tx = c.unchecked_transaction().ctx("begin volume move")?;
        let open: Option<i64> = tx
            .query_row(
                "SELECT id FROM volume_moves WHERE volume = ?1 AND state = ?2",
                params![m.volume, state::ONGOING],
                |r| r.get(0),
            )
            .optional()
            .ctx("read open volume moves")?;
        if let Some(id) = open {
            return Err(super::StoreError {
                what: format!("volume {:?} has move {id} still open (resolve it first)", m.volume),
                source: rusqlite::Error::InvalidQuery,
            });
        }
        tx.execute(
            "INSERT INTO volume_moves (volume, vm, from_node, from_initiator, to_node, to_initiator, mode, step, state, \
             started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'intent', ?8, ?9)",
            params![
                m.volume,
                m.vm,
                m.from_node,
                m.from_initiator,
                m.to_node,
                m.to_initiator,
                m.mode,
                state::ONGOING,
                unix_now()
            ],
        )
        .ctx("record volume move")?;
        let id = tx.last_insert_rowid();
        tx.commit().ctx("commit volume move")?;
        Ok(id)
    }

    /// Records the step a move begins (committed before the step acts).
    pub fn volume_move_step(&self, id: i64, step: &str) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE volume_moves SET step = ?2 WHERE id = ?1 AND state = ?3",
                params![id, step, state::ONGOING],
            )
            .ctx("record volume move step")?;
        Ok(())
    }

    /// Ends a move; with `attachment`, its new connection is recorded in the same transaction.
    pub fn end_volume_move(
        &self,
        id: i64,
        end_state: &str,
        error: Option<&str>,
        attachment: Option<&VolumeAttachment>,
    ) -> Result<()> {
        let c = self.conn();
        let tx = c.unchecked_transaction().ctx("begin volume move end")?;
        if let Some(a) = attachment {
            tx.execute(
                "INSERT OR REPLACE INTO volume_attachments (volume, vm, node, initiator, portal, iqn, lun, target_dev, \
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![a.volume, a.vm, a.node, a.initiator, a.portal, a.iqn, a.lun, a.target_dev, unix_now()],
            )
            .ctx("record volume attachment")?;
        }
        tx.execute(
            "UPDATE volume_moves SET state = ?2, error = ?3, ended_at = ?4, step = CASE WHEN ?2 = 'SUCCEEDED' THEN \
             'done' ELSE step END WHERE id = ?1",
            params![id, end_state, error, unix_now()],
        )
        .ctx("end volume move")?;
        tx.commit().ctx("commit volume move end")?;
        Ok(())
    }

    /// Moves still `ONGOING` (after a crash: to be resolved).
    pub fn open_volume_moves(&self) -> Result<Vec<VolumeMove>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!("SELECT {MOVE_COLS} FROM volume_moves WHERE state = ?1 ORDER BY id"))
            .ctx("read open volume moves")?;
        let rows = st.query_map([state::ONGOING], volume_move).ctx("read open volume moves")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read open volume moves")
    }

    /// Move history, newest first: of one VM, or all.
    pub fn volume_moves(&self, vm: Option<&str>, limit: i64) -> Result<Vec<VolumeMove>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {MOVE_COLS} FROM volume_moves WHERE ?1 IS NULL OR vm = ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .ctx("read volume moves")?;
        let rows = st.query_map(params![vm, limit], volume_move).ctx("read volume moves")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read volume moves")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv() -> VolumeMove {
        VolumeMove {
            id: 0,
            volume: "v1".into(),
            vm: "vm1".into(),
            from_node: "node1".into(),
            from_initiator: "10.0.0.11".into(),
            to_node: "node2".into(),
            to_initiator: "10.0.0.12".into(),
            mode: Some("pre".into()),
            step: String::new(),
            state: String::new(),
            error: None,
            started_at: 0,
            ended_at: None,
        }
    }

    #[test]
    fn a_move_is_journaled_then_ends_with_its_connection() {
        let s = Store::in_memory().unwrap();
        let id = s.begin_volume_move(&mv()).unwrap();
        assert!(s.begin_volume_move(&mv()).unwrap_err().to_string().contains("still open"));
        s.volume_move_step(id, "migrate").unwrap();
        let open = s.open_volume_moves().unwrap();
        assert_eq!((open.len(), open[0].step.as_str()), (1, "migrate"));
        let a = VolumeAttachment {
            volume: "v1".into(),
            vm: "vm1".into(),
            node: "node2".into(),
            initiator: "10.0.0.12".into(),
            portal: "10.0.0.1:3260".into(),
            iqn: "iqn.x:v1".into(),
            lun: 1,
            target_dev: "vdb".into(),
            updated_at: 0,
        };
        s.end_volume_move(id, state::SUCCEEDED, None, Some(&a)).unwrap();
        assert!(s.open_volume_moves().unwrap().is_empty());
        assert_eq!(s.attachment("v1").unwrap().unwrap().node, "node2");
        let h = s.volume_moves(Some("vm1"), 10).unwrap();
        assert_eq!((h[0].state.as_str(), h[0].step.as_str()), ("SUCCEEDED", "done"));
        assert!(s.volume_moves(Some("vm9"), 10).unwrap().is_empty());
        assert_eq!(s.attachments(Some("vm1")).unwrap().len(), 1);
        assert!(s.remove_attachment("v1").unwrap());
        assert!(s.attachments(None).unwrap().is_empty());
    }
}
