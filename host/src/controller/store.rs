//! The controller's state: one SQLite file with versioned schema migrations.
//!
//! Modules (content-addressed by sha256), strategies (every edit a new version, one active),
//! plans and their actions (the execution **journal**), experiments, settings and an audit log.
//!
//! **Journal invariant**: an action reaches the world only after its `ONGOING` row (with the
//! world position `exec_epoch`/`exec_step` and a global `exec_seq`) is committed. The simulated
//! world is a deterministic function of its trace and of the actions executed at each step, so
//! after a crash it is rebuilt by replaying exactly those rows: nothing executed is lost and
//! nothing is executed twice. WAL mode: a committed transaction survives `kill -9`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE modules (
        sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, version TEXT NOT NULL,
        size INTEGER NOT NULL, descriptor TEXT NOT NULL, bytes BLOB NOT NULL,
        uploaded_at INTEGER NOT NULL, uploaded_by TEXT NOT NULL);
    CREATE TABLE strategies (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, toml TEXT NOT NULL,
        automation TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL,
        UNIQUE (name, version));
    CREATE TABLE plans (
        id INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, step INTEGER NOT NULL, cycle INTEGER NOT NULL,
        created_at INTEGER NOT NULL, strategy_id INTEGER, source TEXT NOT NULL, state TEXT NOT NULL,
        note TEXT, trace TEXT, expires_at INTEGER, decided_by TEXT, decided_at INTEGER,
        experiment_id INTEGER);
    CREATE INDEX plans_state ON plans (state);
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY, plan_id INTEGER NOT NULL REFERENCES plans (id), seq INTEGER NOT NULL,
        kind TEXT NOT NULL, vm INTEGER, from_host INTEGER, to_host INTEGER, reason TEXT,
        state TEXT NOT NULL, note TEXT, exec_epoch INTEGER, exec_step INTEGER, exec_seq INTEGER UNIQUE,
        started_at INTEGER, ended_at INTEGER, mode TEXT, total_s REAL, downtime_ms REAL,
        bytes REAL, page_faults INTEGER, updated_at INTEGER NOT NULL);
    CREATE INDEX actions_plan ON actions (plan_id);
    CREATE INDEX actions_state ON actions (state);
    CREATE INDEX actions_exec ON actions (exec_epoch, exec_step, exec_seq);
    CREATE TABLE action_log (
        id INTEGER PRIMARY KEY, action_id INTEGER NOT NULL, at INTEGER NOT NULL,
        from_state TEXT, to_state TEXT NOT NULL, note TEXT);
    CREATE TABLE experiments (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0, result TEXT, report_html TEXT, error TEXT,
        created_at INTEGER NOT NULL, created_by TEXT NOT NULL, ended_at INTEGER);
    CREATE TABLE experiment_cycles (
        experiment_id INTEGER NOT NULL, cycle INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (experiment_id, cycle));
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL, detail TEXT NOT NULL);
    "#,
    // 2: volumes (issue #11): each attached volume's connection, and the volume moves (the
    // intent journal of `migrate_volume` and the migration history).
    r#"
    CREATE TABLE volume_attachments (
        volume TEXT PRIMARY KEY, vm TEXT NOT NULL, node TEXT NOT NULL, initiator TEXT NOT NULL,
        portal TEXT NOT NULL, iqn TEXT NOT NULL, lun INTEGER NOT NULL, target_dev TEXT NOT NULL,
        updated_at INTEGER NOT NULL);
    CREATE TABLE volume_moves (
        id INTEGER PRIMARY KEY, volume TEXT NOT NULL, vm TEXT NOT NULL,
        from_node TEXT NOT NULL, from_initiator TEXT NOT NULL, to_node TEXT NOT NULL,
        to_initiator TEXT NOT NULL, mode TEXT, step TEXT NOT NULL, state TEXT NOT NULL, error TEXT,
        started_at INTEGER NOT NULL, ended_at INTEGER);
    CREATE INDEX volume_moves_state ON volume_moves (state);
    "#,
];

mod volumes;
pub use volumes::{VolumeAttachment, VolumeMove};

/// A database error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("state database: {what}: {source}")]
pub struct StoreError {
    pub what: String,
    #[source]
    pub source: rusqlite::Error,
}

pub type Result<T> = std::result::Result<T, StoreError>;

trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|source| StoreError { what: what.to_string(), source })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// States of a plan and of its actions (Watcher's vocabulary).
pub mod state {
    pub const RECOMMENDED: &str = "RECOMMENDED";
    pub const APPROVED: &str = "APPROVED";
    pub const ONGOING: &str = "ONGOING";
    pub const SUCCEEDED: &str = "SUCCEEDED";
    pub const FAILED: &str = "FAILED";
    pub const CANCELLED: &str = "CANCELLED";
    pub const SUPERSEDED: &str = "SUPERSEDED";
    pub const REJECTED: &str = "REJECTED";
    /// A plan whose actions have all ended.
    pub const DONE: &str = "DONE";
    /// A shadow experiment's plan: recorded, never executed.
    pub const SHADOW: &str = "SHADOW";

    /// Whether an action in this state will not change any more.
    pub fn is_terminal(s: &str) -> bool {
        matches!(s, SUCCEEDED | FAILED | CANCELLED | SUPERSEDED | REJECTED | SHADOW)
    }
}

/// A stored module (without its bytes).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModuleRow {
    pub sha256: String,
    pub name: String,
    pub kind: String,
    pub version: String,
    pub size: i64,
    /// What `amvm policy inspect` reports.
    pub descriptor: serde_json::Value,
    pub uploaded_at: i64,
    pub uploaded_by: String,
}

/// One version of a strategy.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StrategyRow {
    pub id: i64,
    pub name: String,
    pub version: i64,
    pub toml: String,
    /// `automatic` or `manual`.
    pub automation: String,
    pub created_at: i64,
    pub created_by: String,
    pub active: bool,
}

/// A plan without its actions.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanRow {
    pub id: i64,
    pub epoch: i64,
    pub step: i64,
    pub cycle: i64,
    pub created_at: i64,
    pub strategy_id: Option<i64>,
    /// `automatic`, `manual`, `hand` (an operator's migration) or `shadow`.
    pub source: String,
    pub state: String,
    pub note: Option<String>,
    pub expires_at: Option<i64>,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub experiment_id: Option<i64>,
    pub actions: i64,
}

/// One action of a plan: a migration, a host to sleep or to wake.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActionRow {
    pub id: i64,
    pub plan_id: i64,
    pub seq: i64,
    /// `migrate`, `sleep` or `wake`.
    pub kind: String,
    pub vm: Option<i64>,
    pub from_host: Option<i64>,
    pub to_host: Option<i64>,
    /// `overload`, `underload`, `evacuated`, `operator`, …
    pub reason: Option<String>,
    pub state: String,
    /// Why it failed, was cancelled or refused.
    pub note: Option<String>,
    pub exec_epoch: Option<i64>,
    pub exec_step: Option<i64>,
    pub exec_seq: Option<i64>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// Migration mode (`pre`, `post`, `hybrid`) the plan chose; none when the world's default ran.
    pub mode: Option<String>,
    /// The engine's metrics: total time, downtime, bytes, page faults (`null` = not measured by
    /// this world).
    pub total_s: Option<f64>,
    pub downtime_ms: Option<f64>,
    pub bytes: Option<f64>,
    pub page_faults: Option<i64>,
    pub updated_at: i64,
}

/// A plan, its decision trace and its actions.
pub type PlanWithActions = (PlanRow, Option<serde_json::Value>, Vec<ActionRow>);

/// One state transition of an action: time, from, to, note.
pub type Transition = (i64, Option<String>, String, Option<String>);

/// A new action for [`Store::insert_plan`].
#[derive(Debug, Clone)]
pub struct NewAction {
    pub kind: &'static str,
    pub vm: Option<i64>,
    pub from_host: Option<i64>,
    pub to_host: Option<i64>,
    pub reason: Option<String>,
    pub mode: Option<String>,
}

/// A new plan for [`Store::insert_plan`].
#[derive(Debug, Clone)]
pub struct NewPlan {
    pub epoch: i64,
    pub step: i64,
    pub cycle: i64,
    pub strategy_id: Option<i64>,
    pub source: String,
    pub state: &'static str,
    pub note: Option<String>,
    pub trace: Option<String>,
    pub expires_at: Option<i64>,
    pub experiment_id: Option<i64>,
    pub actions: Vec<NewAction>,
}

/// An experiment.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExperimentRow {
    pub id: i64,
    /// `offline`, `shadow` or `cohorts`.
    pub kind: String,
    pub spec: serde_json::Value,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED`.
    pub state: String,
    pub progress: f64,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub ended_at: Option<i64>,
    pub has_report: bool,
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// The database. Cheap to share (`Arc<Store>`); calls serialize on one connection.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

const ACTION_COLS: &str =
    "id, plan_id, seq, kind, vm, from_host, to_host, reason, state, note, exec_epoch, exec_step, \
     exec_seq, started_at, ended_at, mode, total_s, downtime_ms, bytes, page_faults, updated_at";

fn action_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRow> {
    Ok(ActionRow {
        id: r.get(0)?,
        plan_id: r.get(1)?,
        seq: r.get(2)?,
        kind: r.get(3)?,
        vm: r.get(4)?,
        from_host: r.get(5)?,
        to_host: r.get(6)?,
        reason: r.get(7)?,
        state: r.get(8)?,
        note: r.get(9)?,
        exec_epoch: r.get(10)?,
        exec_step: r.get(11)?,
        exec_seq: r.get(12)?,
        started_at: r.get(13)?,
        ended_at: r.get(14)?,
        mode: r.get(15)?,
        total_s: r.get(16)?,
        downtime_ms: r.get(17)?,
        bytes: r.get(18)?,
        page_faults: r.get(19)?,
        updated_at: r.get(20)?,
    })
}

const PLAN_COLS: &str = "p.id, p.epoch, p.step, p.cycle, p.created_at, p.strategy_id, p.source, p.state, p.note, \
     p.expires_at, p.decided_by, p.decided_at, p.experiment_id, \
     (SELECT COUNT(*) FROM actions a WHERE a.plan_id = p.id)";

fn plan_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PlanRow> {
    Ok(PlanRow {
        id: r.get(0)?,
        epoch: r.get(1)?,
        step: r.get(2)?,
        cycle: r.get(3)?,
        created_at: r.get(4)?,
        strategy_id: r.get(5)?,
        source: r.get(6)?,
        state: r.get(7)?,
        note: r.get(8)?,
        expires_at: r.get(9)?,
        decided_by: r.get(10)?,
        decided_at: r.get(11)?,
        experiment_id: r.get(12)?,
        actions: r.get(13)?,
    })
}

fn json_col(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).ctx(&format!("open {}", path.display()))?;
        Self::init(conn)
    }

    /// A private in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory().ctx("open in-memory database")?)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5)).ctx("busy timeout")?;
        // WAL: readers never block the writer; a committed transaction survives a killed process.
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).ctx("journal mode")?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").ctx("pragmas")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).ctx("schema version")?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError {
                what: format!(
                    "schema version {version} is newer than this amvm knows ({}); upgrade amvm",
                    MIGRATIONS.len()
                ),
                source: rusqlite::Error::InvalidQuery,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction().ctx("begin migration")?;
            tx.execute_batch(sql).ctx(&format!("schema migration {}", i + 1))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)).ctx("set schema version")?;
            tx.commit().ctx("commit migration")?;
        }
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        self.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).ctx("schema version")
    }

    // ---- settings -------------------------------------------------------------------------

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .ctx("read setting")
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                [key, value],
            )
            .ctx("write setting")?;
        Ok(())
    }

    // ---- audit ----------------------------------------------------------------------------

    pub fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![unix_now(), actor, action, target, detail],
            )
            .ctx("write audit log")?;
        Ok(())
    }

    pub fn audit_log(&self, limit: i64) -> Result<Vec<AuditRow>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1")
            .ctx("read audit log")?;
        let rows = st
            .query_map([limit], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            })
            .ctx("read audit log")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read audit log")
    }

    // ---- modules --------------------------------------------------------------------------

    /// Stores a module; `false` when the same bytes were already stored.
    pub fn insert_module(&self, row: &ModuleRow, bytes: &[u8]) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO modules (sha256, name, kind, version, size, descriptor, bytes, uploaded_at, \
                 uploaded_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    row.sha256,
                    row.name,
                    row.kind,
                    row.version,
                    row.size,
                    row.descriptor.to_string(),
                    bytes,
                    row.uploaded_at,
                    row.uploaded_by
                ],
            )
            .ctx("store module")?;
        Ok(n == 1)
    }

    pub fn modules(&self) -> Result<Vec<ModuleRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT sha256, name, kind, version, size, descriptor, uploaded_at, uploaded_by FROM modules \
                 ORDER BY uploaded_at, sha256",
            )
            .ctx("list modules")?;
        let rows = st
            .query_map([], |r| {
                Ok(ModuleRow {
                    sha256: r.get(0)?,
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    version: r.get(3)?,
                    size: r.get(4)?,
                    descriptor: json_col(r.get(5)?).unwrap_or(serde_json::Value::Null),
                    uploaded_at: r.get(6)?,
                    uploaded_by: r.get(7)?,
                })
            })
            .ctx("list modules")?;
        rows.collect::<rusqlite::Result<_>>().ctx("list modules")
    }

    pub fn module(&self, sha: &str) -> Result<Option<ModuleRow>> {
        Ok(self.modules()?.into_iter().find(|m| m.sha256 == sha))
    }

    pub fn module_bytes(&self, sha: &str) -> Result<Option<Vec<u8>>> {
        self.conn()
            .query_row("SELECT bytes FROM modules WHERE sha256 = ?1", [sha], |r| r.get(0))
            .optional()
            .ctx("read module")
    }

    pub fn delete_module(&self, sha: &str) -> Result<bool> {
        Ok(self.conn().execute("DELETE FROM modules WHERE sha256 = ?1", [sha]).ctx("delete module")? == 1)
    }

    // ---- strategies -----------------------------------------------------------------------

    /// Adds a new version of strategy `name` (1 for a new name); returns its id and version.
    pub fn insert_strategy(&self, name: &str, toml: &str, automation: &str, by: &str) -> Result<(i64, i64)> {
        let c = self.conn();
        let tx = c.unchecked_transaction().ctx("begin")?;
        let version: i64 = tx
            .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM strategies WHERE name = ?1", [name], |r| r.get(0))
            .ctx("next strategy version")?;
        tx.execute(
            "INSERT INTO strategies (name, version, toml, automation, created_at, created_by) VALUES (?1, ?2, ?3, ?4, \
             ?5, ?6)",
            params![name, version, toml, automation, unix_now(), by],
        )
        .ctx("store strategy")?;
        let id = tx.last_insert_rowid();
        tx.commit().ctx("commit strategy")?;
        Ok((id, version))
    }

    pub fn strategies(&self) -> Result<Vec<StrategyRow>> {
        let active = self.active_strategy_id()?;
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT id, name, version, toml, automation, created_at, created_by FROM strategies ORDER BY name, \
                 version",
            )
            .ctx("list strategies")?;
        let rows = st
            .query_map([], |r| {
                let id: i64 = r.get(0)?;
                Ok(StrategyRow {
                    id,
                    name: r.get(1)?,
                    version: r.get(2)?,
                    toml: r.get(3)?,
                    automation: r.get(4)?,
                    created_at: r.get(5)?,
                    created_by: r.get(6)?,
                    active: Some(id) == active,
                })
            })
            .ctx("list strategies")?;
        rows.collect::<rusqlite::Result<_>>().ctx("list strategies")
    }

    pub fn strategy(&self, id: i64) -> Result<Option<StrategyRow>> {
        Ok(self.strategies()?.into_iter().find(|s| s.id == id))
    }

    pub fn active_strategy_id(&self) -> Result<Option<i64>> {
        Ok(self.setting("active_strategy")?.and_then(|s| s.parse().ok()))
    }

    pub fn set_active_strategy(&self, id: i64) -> Result<()> {
        self.set_setting("active_strategy", &id.to_string())
    }

    /// Whether any strategy version names this module (by `sha256:` reference).
    pub fn module_in_use(&self, sha: &str) -> Result<Vec<String>> {
        Ok(self
            .strategies()?
            .into_iter()
            .filter(|s| s.toml.contains(&format!("sha256:{sha}")))
            .map(|s| format!("{} v{}", s.name, s.version))
            .collect())
    }

    // ---- plans and the journal ------------------------------------------------------------

    /// Inserts a plan and its actions in one transaction; returns the plan id and action ids.
    pub fn insert_plan(&self, plan: &NewPlan) -> Result<(i64, Vec<i64>)> {
        let c = self.conn();
        let tx = c.unchecked_transaction().ctx("begin")?;
        let now = unix_now();
        tx.execute(
            "INSERT INTO plans (epoch, step, cycle, created_at, strategy_id, source, state, note, trace, expires_at, \
             experiment_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                plan.epoch,
                plan.step,
                plan.cycle,
                now,
                plan.strategy_id,
                plan.source,
                plan.state,
                plan.note,
                plan.trace,
                plan.expires_at,
                plan.experiment_id
            ],
        )
        .ctx("store plan")?;
        let plan_id = tx.last_insert_rowid();
        let mut ids = Vec::with_capacity(plan.actions.len());
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO actions (plan_id, seq, kind, vm, from_host, to_host, reason, state, mode, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .ctx("store actions")?;
            for (i, a) in plan.actions.iter().enumerate() {
                st.execute(params![
                    plan_id,
                    i as i64,
                    a.kind,
                    a.vm,
                    a.from_host,
                    a.to_host,
                    a.reason,
                    plan.state,
                    a.mode,
                    now
                ])
                .ctx("store action")?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit().ctx("commit plan")?;
        Ok((plan_id, ids))
    }

    pub fn plans(&self, state: Option<&str>, limit: i64) -> Result<Vec<PlanRow>> {
        let c = self.conn();
        let sql =
            format!("SELECT {PLAN_COLS} FROM plans p WHERE (?1 IS NULL OR p.state = ?1) ORDER BY p.id DESC LIMIT ?2");
        let mut st = c.prepare(&sql).ctx("list plans")?;
        let rows = st.query_map(params![state, limit], plan_row).ctx("list plans")?;
        rows.collect::<rusqlite::Result<_>>().ctx("list plans")
    }

    pub fn plan(&self, id: i64) -> Result<Option<PlanWithActions>> {
        let c = self.conn();
        let sql = format!("SELECT {PLAN_COLS}, p.trace FROM plans p WHERE p.id = ?1");
        let found = c
            .query_row(&sql, [id], |r| Ok((plan_row(r)?, r.get::<_, Option<String>>(14)?)))
            .optional()
            .ctx("read plan")?;
        let Some((plan, trace)) = found else { return Ok(None) };
        let mut st = c
            .prepare(&format!("SELECT {ACTION_COLS} FROM actions WHERE plan_id = ?1 ORDER BY seq"))
            .ctx("read actions")?;
        let actions =
            st.query_map([id], action_row).ctx("read actions")?.collect::<rusqlite::Result<_>>().ctx("read actions")?;
        Ok(Some((plan, json_col(trace), actions)))
    }

    /// Moves a plan from one of `from` to `to`, with every action still RECOMMENDED or APPROVED
    /// when `actions`; `false` (and nothing changed) when the plan is not in one of `from`.
    pub fn transition_plan(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        by: Option<&str>,
        note: Option<&str>,
        actions: bool,
    ) -> Result<bool> {
        let c = self.conn();
        let tx = c.unchecked_transaction().ctx("begin")?;
        let now = unix_now();
        let current: Option<String> =
            tx.query_row("SELECT state FROM plans WHERE id = ?1", [id], |r| r.get(0)).optional().ctx("read plan")?;
        if !current.is_some_and(|c| from.contains(&c.as_str())) {
            return Ok(false);
        }
        tx.execute(
            "UPDATE plans SET state = ?2, decided_by = COALESCE(?3, decided_by), decided_at = CASE WHEN ?3 IS NULL \
             THEN decided_at ELSE ?4 END, note = COALESCE(?5, note) WHERE id = ?1",
            params![id, to, by, now, note],
        )
        .ctx("update plan")?;
        if actions {
            let ids: Vec<(i64, String)> = {
                let mut st = tx
                    .prepare(
                        "SELECT id, state FROM actions WHERE plan_id = ?1 AND state IN ('RECOMMENDED', 'APPROVED')",
                    )
                    .ctx("read actions")?;
                let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).ctx("read actions")?;
                rows.collect::<rusqlite::Result<_>>().ctx("read actions")?
            };
            for (aid, prev) in ids {
                tx.execute(
                    "UPDATE actions SET state = ?2, note = COALESCE(?3, note), updated_at = ?4 WHERE id = ?1",
                    params![aid, to, note, now],
                )
                .ctx("update action")?;
                tx.execute(
                    "INSERT INTO action_log (action_id, at, from_state, to_state, note) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![aid, now, prev, to, note],
                )
                .ctx("log action")?;
            }
        }
        tx.commit().ctx("commit plan state")?;
        Ok(true)
    }

    /// Plans in `state` created before `before` (Unix seconds), for TTL expiry.
    pub fn plans_expiring(&self, state: &str, now: i64) -> Result<Vec<i64>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT id FROM plans WHERE state = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2")
            .ctx("read plans")?;
        let rows = st.query_map(params![state, now], |r| r.get(0)).ctx("read plans")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read plans")
    }

    /// Actions in a state, oldest first.
    pub fn actions_in(&self, state: &str) -> Result<Vec<ActionRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!("SELECT {ACTION_COLS} FROM actions WHERE state = ?1 ORDER BY plan_id, seq"))
            .ctx("read actions")?;
        let rows = st.query_map([state], action_row).ctx("read actions")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read actions")
    }

    pub fn action(&self, id: i64) -> Result<Option<ActionRow>> {
        let c = self.conn();
        c.query_row(&format!("SELECT {ACTION_COLS} FROM actions WHERE id = ?1"), [id], action_row)
            .optional()
            .ctx("read action")
    }

    /// Migrations (actions of kind `migrate`), newest first, optionally of one VM or state.
    pub fn migrations(&self, vm: Option<i64>, state: Option<&str>, limit: i64) -> Result<Vec<ActionRow>> {
        let c = self.conn();
        let sql = format!(
            "SELECT {ACTION_COLS} FROM actions WHERE kind = 'migrate' AND (?1 IS NULL OR vm = ?1) AND (?2 IS NULL OR \
             state = ?2) AND state NOT IN ('SHADOW') ORDER BY id DESC LIMIT ?3"
        );
        let mut st = c.prepare(&sql).ctx("list migrations")?;
        let rows = st.query_map(params![vm, state, limit], action_row).ctx("list migrations")?;
        rows.collect::<rusqlite::Result<_>>().ctx("list migrations")
    }

    /// Actions that reached the world in world epoch `epoch`, in execution order (the replay
    /// log of the simulated world).
    pub fn executed_in_epoch(&self, epoch: i64) -> Result<Vec<ActionRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {ACTION_COLS} FROM actions WHERE exec_epoch = ?1 AND exec_seq IS NOT NULL ORDER BY exec_seq"
            ))
            .ctx("read journal")?;
        let rows = st.query_map([epoch], action_row).ctx("read journal")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read journal")
    }

    /// Journals actions as ONGOING at world position (`epoch`, `step`), in the given order, in
    /// one transaction. Only then may they reach the world.
    pub fn mark_ongoing(&self, ids: &[i64], epoch: i64, step: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let c = self.conn();
        let tx = c.unchecked_transaction().ctx("begin")?;
        let mut seq: i64 =
            tx.query_row("SELECT COALESCE(MAX(exec_seq), 0) FROM actions", [], |r| r.get(0)).ctx("seq")?;
        let now = unix_now();
        for &id in ids {
            seq += 1;
            let n = tx
                .execute(
                    "UPDATE actions SET state = 'ONGOING', exec_epoch = ?2, exec_step = ?3, exec_seq = ?4, started_at \
                     = ?5, updated_at = ?5 WHERE id = ?1 AND state = 'APPROVED'",
                    params![id, epoch, step, seq, now],
                )
                .ctx("journal action")?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO action_log (action_id, at, from_state, to_state) VALUES (?1, ?2, 'APPROVED', \
                     'ONGOING')",
                    params![id, now],
                )
                .ctx("log action")?;
                tx.execute(
                    "UPDATE plans SET state = 'ONGOING' WHERE state = 'APPROVED' AND id = (SELECT plan_id FROM \
                     actions WHERE id = ?1)",
                    [id],
                )
                .ctx("plan ongoing")?;
            }
        }
        tx.commit().ctx("commit journal")
    }

    /// Ends actions (SUCCEEDED / FAILED / CANCELLED) with optional notes and metrics, in one
    /// transaction, and closes plans whose actions have all ended.
    pub fn finish_actions(&self, done: &[ActionEnd]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let c = self.conn();
        let tx = c.unchecked_transaction().ctx("begin")?;
        let now = unix_now();
        let mut plans = Vec::new();
        for d in done {
            let prev: Option<(String, i64)> = tx
                .query_row("SELECT state, plan_id FROM actions WHERE id = ?1", [d.id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .ctx("read action")?;
            let Some((prev, plan)) = prev else { continue };
            if state::is_terminal(&prev) {
                continue;
            }
            tx.execute(
                "UPDATE actions SET state = ?2, note = COALESCE(?3, note), ended_at = ?4, updated_at = ?4, total_s = \
                 COALESCE(?5, total_s), bytes = COALESCE(?6, bytes), downtime_ms = COALESCE(?7, downtime_ms), \
                 page_faults = COALESCE(?8, page_faults) WHERE id = ?1",
                params![d.id, d.state, d.note, now, d.total_s, d.bytes, d.downtime_ms, d.page_faults],
            )
            .ctx("end action")?;
            tx.execute(
                "INSERT INTO action_log (action_id, at, from_state, to_state, note) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d.id, now, prev, d.state, d.note],
            )
            .ctx("log action")?;
            plans.push(plan);
        }
        plans.sort_unstable();
        plans.dedup();
        for p in plans {
            tx.execute(
                "UPDATE plans SET state = 'DONE' WHERE id = ?1 AND state IN ('APPROVED', 'ONGOING') AND NOT EXISTS \
                 (SELECT 1 FROM actions WHERE plan_id = ?1 AND state IN ('RECOMMENDED', 'APPROVED', 'ONGOING'))",
                [p],
            )
            .ctx("close plan")?;
        }
        tx.commit().ctx("commit action ends")
    }

    /// Counts of actions per state (for `/metrics` and the journal check).
    pub fn action_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT kind, state, COUNT(*) FROM actions GROUP BY kind, state ORDER BY kind, state")
            .ctx("count")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).ctx("count")?;
        rows.collect::<rusqlite::Result<_>>().ctx("count")
    }

    /// The transition log of one action.
    pub fn action_log(&self, id: i64) -> Result<Vec<Transition>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT at, from_state, to_state, note FROM action_log WHERE action_id = ?1 ORDER BY id")
            .ctx("read action log")?;
        let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).ctx("read action log")?;
        rows.collect::<rusqlite::Result<_>>().ctx("read action log")
    }

    // ---- experiments ----------------------------------------------------------------------

    pub fn insert_experiment(&self, kind: &str, spec: &serde_json::Value, by: &str) -> Result<i64> {
        let c = self.conn();
        c.execute(
            "INSERT INTO experiments (kind, spec, state, created_at, created_by) VALUES (?1, ?2, 'RUNNING', ?3, ?4)",
            params![kind, spec.to_string(), unix_now(), by],
        )
        .ctx("store experiment")?;
        Ok(c.last_insert_rowid())
    }

    pub fn experiment_progress(&self, id: i64, progress: f64) -> Result<()> {
        self.conn()
            .execute("UPDATE experiments SET progress = ?2 WHERE id = ?1", params![id, progress])
            .ctx("experiment progress")?;
        Ok(())
    }

    pub fn finish_experiment(
        &self,
        id: i64,
        state: &str,
        result: Option<&serde_json::Value>,
        html: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE experiments SET state = ?2, result = COALESCE(?3, result), report_html = COALESCE(?4, \
                 report_html), error = ?5, ended_at = ?6, progress = CASE WHEN ?2 = 'SUCCEEDED' THEN 1 ELSE progress \
                 END WHERE id = ?1",
                params![id, state, result.map(|r| r.to_string()), html, error, unix_now()],
            )
            .ctx("finish experiment")?;
        Ok(())
    }

    /// Replaces a running experiment's result (live experiments update it every cycle).
    pub fn set_experiment_result(&self, id: i64, result: &serde_json::Value) -> Result<()> {
        self.conn()
            .execute("UPDATE experiments SET result = ?2 WHERE id = ?1", params![id, result.to_string()])
            .ctx("experiment result")?;
        Ok(())
    }

    pub fn experiments(&self) -> Result<Vec<ExperimentRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT id, kind, spec, state, progress, result, error, created_at, created_by, ended_at, report_html \
                 IS NOT NULL FROM experiments ORDER BY id DESC",
            )
            .ctx("list experiments")?;
        let rows = st
            .query_map([], |r| {
                Ok(ExperimentRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    spec: json_col(r.get(2)?).unwrap_or(serde_json::Value::Null),
                    state: r.get(3)?,
                    progress: r.get(4)?,
                    result: json_col(r.get(5)?),
                    error: r.get(6)?,
                    created_at: r.get(7)?,
                    created_by: r.get(8)?,
                    ended_at: r.get(9)?,
                    has_report: r.get(10)?,
                })
            })
            .ctx("list experiments")?;
        rows.collect::<rusqlite::Result<_>>().ctx("list experiments")
    }

    pub fn experiment(&self, id: i64) -> Result<Option<ExperimentRow>> {
        Ok(self.experiments()?.into_iter().find(|e| e.id == id))
    }

    pub fn experiment_report(&self, id: i64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT report_html FROM experiments WHERE id = ?1", [id], |r| r.get::<_, Option<String>>(0))
            .optional()
            .ctx("read report")?
            .flatten())
    }

    pub fn insert_experiment_cycle(&self, id: i64, cycle: i64, data: &serde_json::Value) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO experiment_cycles (experiment_id, cycle, data) VALUES (?1, ?2, ?3)",
                params![id, cycle, data.to_string()],
            )
            .ctx("store experiment cycle")?;
        Ok(())
    }

    pub fn experiment_cycles(&self, id: i64, limit: i64) -> Result<Vec<serde_json::Value>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT data FROM experiment_cycles WHERE experiment_id = ?1 ORDER BY cycle DESC LIMIT ?2")
            .ctx("read experiment cycles")?;
        let rows = st.query_map(params![id, limit], |r| r.get::<_, String>(0)).ctx("read experiment cycles")?;
        let texts: Vec<String> = rows.collect::<rusqlite::Result<_>>().ctx("read experiment cycles")?;
        Ok(texts.into_iter().filter_map(|t| serde_json::from_str(&t).ok()).collect())
    }

    /// Marks experiments left RUNNING by a previous process as FAILED (they cannot resume).
    pub fn fail_orphaned_experiments(&self, kinds: &[&str]) -> Result<usize> {
        let c = self.conn();
        let mut n = 0;
        for k in kinds {
            n += c
                .execute(
                    "UPDATE experiments SET state = 'FAILED', error = 'the controller restarted while it ran', \
                     ended_at = ?2 WHERE state = 'RUNNING' AND kind = ?1",
                    params![k, unix_now()],
                )
                .ctx("fail orphaned experiments")?;
        }
        Ok(n)
    }
}

/// How an action ended, for [`Store::finish_actions`].
#[derive(Debug, Clone)]
pub struct ActionEnd {
    pub id: i64,
    pub state: &'static str,
    pub note: Option<String>,
    pub total_s: Option<f64>,
    pub bytes: Option<f64>,
    pub downtime_ms: Option<f64>,
    pub page_faults: Option<i64>,
}

impl ActionEnd {
    pub fn new(id: i64, state: &'static str, note: Option<String>) -> ActionEnd {
        ActionEnd { id, state, note, total_s: None, bytes: None, downtime_ms: None, page_faults: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            s.insert_strategy("lr-mmt-1.2", "name = 'x'", "automatic", "test").unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(s.strategies().unwrap().len(), 1);
        let (_, v) = s.insert_strategy("lr-mmt-1.2", "name = 'y'", "manual", "test").unwrap();
        assert_eq!(v, 2, "every edit is a new version");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Store::open(&path).unwrap();
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 999").unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn journal_orders_execution_and_closes_plans() {
        let s = Store::in_memory().unwrap();
        let act = |vm| NewAction {
            kind: "migrate",
            vm: Some(vm),
            from_host: Some(0),
            to_host: Some(1),
            reason: None,
            mode: None,
        };
        let plan = NewPlan {
            epoch: 0,
            step: 3,
            cycle: 3,
            strategy_id: None,
            source: "automatic".into(),
            state: state::APPROVED,
            note: None,
            trace: None,
            expires_at: None,
            experiment_id: None,
            actions: vec![act(5), act(6)],
        };
        let (pid, ids) = s.insert_plan(&plan).unwrap();
        s.mark_ongoing(&[ids[1], ids[0]], 0, 3).unwrap();
        // Marking again changes nothing: an action is journaled once.
        s.mark_ongoing(&[ids[1]], 0, 4).unwrap();
        let log = s.executed_in_epoch(0).unwrap();
        assert_eq!(log.iter().map(|a| a.id).collect::<Vec<_>>(), vec![ids[1], ids[0]]);
        assert!(log.iter().all(|a| a.exec_step == Some(3)));
        s.finish_actions(&[ActionEnd::new(ids[0], state::SUCCEEDED, None)]).unwrap();
        assert_eq!(s.plan(pid).unwrap().unwrap().0.state, state::ONGOING);
        s.finish_actions(&[ActionEnd::new(ids[1], state::FAILED, Some("refused".into()))]).unwrap();
        assert_eq!(s.plan(pid).unwrap().unwrap().0.state, state::DONE);
        // A terminal action never changes again.
        s.finish_actions(&[ActionEnd::new(ids[1], state::SUCCEEDED, None)]).unwrap();
        assert_eq!(s.action(ids[1]).unwrap().unwrap().state, state::FAILED);
        assert_eq!(s.action_log(ids[1]).unwrap().len(), 2);
    }
}
