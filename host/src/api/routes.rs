//! Handlers, and the route table that both builds the router and documents it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use super::{one_line, ApiError, AppState, Who};
use crate::controller::store::{
    state, ActionRow, AuditRow, ExperimentRow, ModuleRow, NewAction, NewPlan, PlanRow, StrategyRow,
};
use crate::controller::world::{ClusterMetrics, HostView, Progress, SeriesData, SeriesQuery, VmView, WorldInfo};
use crate::controller::{self, ActiveStrategy, Automation, Command, CycleSummary, Guards, OfflineSpec};
use crate::scheduler::OperatorRules;

type ApiResult<T> = Result<T, ApiError>;

fn actor(who: &Option<Extension<Who>>) -> String {
    who.as_ref().map_or_else(|| "anonymous".to_string(), |w| w.0 .0.name.clone())
}

/// Serialized JSON bytes as a response.
fn json_bytes(b: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], b).into_response()
}

// ---- status ---------------------------------------------------------------------------------

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Status {
    pub version: String,
    pub world: WorldInfo,
    pub world_time: f64,
    pub uptime_s: f64,
    pub metrics: ClusterMetrics,
    pub strategy: Option<ActiveStrategy>,
    pub guards: Guards,
    pub maintenance: Vec<u32>,
    pub last_cycle: CycleSummary,
    pub migrations_in_flight: Vec<Progress>,
    /// Policy calls that failed in the last cycle (the strategy fell back for them).
    pub policy_failures: Vec<serde_json::Value>,
    pub event_id: u64,
}

async fn status(State(st): State<AppState>) -> Json<Status> {
    let v = st.shared.view();
    Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        world: st.shared.info.clone(),
        world_time: v.world_time,
        uptime_s: st.shared.started.elapsed().as_secs_f64(),
        metrics: v.metrics.clone(),
        strategy: v.strategy.clone(),
        guards: v.guards.clone(),
        maintenance: v.maintenance.clone(),
        last_cycle: v.last_cycle.clone(),
        migrations_in_flight: v.in_flight.clone(),
        policy_failures: v.policy_failures.clone(),
        event_id: st.shared.bus.last_id(),
    })
}

async fn healthz() -> &'static str {
    "ok\n"
}

// ---- hosts and VMs --------------------------------------------------------------------------

/// Filters of `GET /hosts`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFilter {
    /// `up`, `asleep`, `down`, `maintenance`.
    pub state: Option<String>,
    /// The token for clients that cannot send headers (EventSource); read by the auth layer.
    #[serde(default)]
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

async fn hosts(State(st): State<AppState>, Query(f): Query<HostFilter>) -> Response {
    let v = st.shared.view();
    match f.state {
        None => json_bytes(v.hosts_json.clone()),
        Some(s) => Json(v.hosts.iter().filter(|h| h.state == s).cloned().collect::<Vec<HostView>>()).into_response(),
    }
}

/// `GET /hosts/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HostDetail {
    pub host: HostView,
    pub vms: Vec<VmView>,
}

async fn host(State(st): State<AppState>, Path(id): Path<u32>) -> ApiResult<Json<HostDetail>> {
    let v = st.shared.view();
    let h = v.hosts.iter().find(|h| h.id == id).cloned().ok_or_else(|| ApiError::not_found(format!("host {id}")))?;
    let vms = h.vms.iter().filter_map(|&vm| v.vms.get(vm as usize).cloned()).collect();
    Ok(Json(HostDetail { host: h, vms }))
}

/// Body of `POST /hosts/{id}/maintenance`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceBody {
    /// Enter (`true`) or leave (`false`) maintenance: its VMs are live-migrated away, no VM is
    /// placed on it and it is never put to sleep.
    pub on: bool,
}

async fn maintenance(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Path(id): Path<u32>,
    Json(b): Json<MaintenanceBody>,
) -> ApiResult<Json<serde_json::Value>> {
    if id as usize >= st.shared.info.hosts {
        return Err(ApiError::not_found(format!("host {id}")));
    }
    st.shared.store.audit(&actor(&who), "host.maintenance", &format!("host {id}"), &b.on.to_string())?;
    st.shared.send(Command::Maintenance { host: id, on: b.on });
    Ok(Json(serde_json::json!({ "host": id, "maintenance": b.on })))
}

async fn vms(State(st): State<AppState>) -> Response {
    json_bytes(st.shared.view().vms_json.clone())
}

/// `GET /vms/{id}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VmDetail {
    pub vm: VmView,
    /// Its migrations, newest first.
    pub migrations: Vec<ActionRow>,
}

async fn vm(State(st): State<AppState>, Path(id): Path<u32>) -> ApiResult<Json<VmDetail>> {
    let v = st.shared.view();
    let vm = v.vms.get(id as usize).cloned().ok_or_else(|| ApiError::not_found(format!("VM {id}")))?;
    let migrations = st.shared.store.migrations(Some(id.into()), None, 100)?;
    Ok(Json(VmDetail { vm, migrations }))
}

/// Query of `GET /series` (see [`SeriesQuery`]).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    pub target: String,
    pub id: Option<u32>,
    pub metric: String,
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub cf: Option<String>,
    pub points: Option<usize>,
    /// The token for clients that cannot send headers (EventSource); read by the auth layer.
    #[serde(default)]
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

async fn series(State(st): State<AppState>, Query(p): Query<SeriesParams>) -> ApiResult<Json<SeriesData>> {
    let q = SeriesQuery {
        target: p.target,
        id: p.id,
        metric: p.metric,
        from: p.from,
        to: p.to,
        cf: p.cf,
        points: p.points,
    };
    let world = st.shared.series.clone();
    let data = tokio::task::spawn_blocking(move || world.series(&q)).await.map_err(ApiError::internal)?;
    data.map(Json).map_err(ApiError::bad)
}

// ---- policies -------------------------------------------------------------------------------

/// A module the controller knows: built in or uploaded.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PolicyInfo {
    /// `builtin:NAME` or `sha256:HEX`: what a strategy names it by.
    pub reference: String,
    pub builtin: bool,
    pub name: String,
    pub kind: String,
    pub version: String,
    pub descriptor: serde_json::Value,
    pub uploaded: Option<ModuleRow>,
}

async fn policies(State(st): State<AppState>) -> ApiResult<Json<Vec<PolicyInfo>>> {
    let rt = st.shared.runtime.clone();
    let mut out: Vec<PolicyInfo> = tokio::task::spawn_blocking(move || rt.builtins())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .iter()
        .map(|m| PolicyInfo {
            reference: format!("builtin:{}", m.name()),
            builtin: true,
            name: m.name().to_string(),
            kind: m.kind().as_str().to_string(),
            version: m.descriptor.version.clone(),
            descriptor: crate::cli::policy::describe_json(m),
            uploaded: None,
        })
        .collect();
    for m in st.shared.store.modules()? {
        out.push(PolicyInfo {
            reference: format!("sha256:{}", m.sha256),
            builtin: false,
            name: m.name.clone(),
            kind: m.kind.clone(),
            version: m.version.clone(),
            descriptor: m.descriptor.clone(),
            uploaded: Some(m),
        });
    }
    Ok(Json(out))
}

/// Answer of a module upload.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UploadResult {
    pub module: ModuleRow,
    /// False when the same bytes were already stored.
    pub created: bool,
    /// The one-line check result, as `amvm policy check` prints it.
    pub check: String,
    /// Fuel and time per call, the cycle cost extrapolated to 10,000 hosts, and warnings.
    pub cost: serde_json::Value,
}

/// Extracts the module bytes from a raw body or the first part of a multipart form.
async fn upload_bytes(headers: &HeaderMap, body: Bytes) -> ApiResult<Bytes> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("multipart/form-data") {
        return Ok(body);
    }
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or_else(|| ApiError::bad("multipart upload without a boundary"))?;
    let stream = futures_once(body);
    let mut mp = multer::Multipart::new(stream, boundary);
    match mp.next_field().await {
        Ok(Some(field)) => field.bytes().await.map_err(|e| ApiError::bad(format!("multipart upload: {e}"))),
        Ok(None) => Err(ApiError::bad("multipart upload has no file part")),
        Err(e) => Err(ApiError::bad(format!("multipart upload: {e}"))),
    }
}

fn futures_once(b: Bytes) -> impl tokio_stream::Stream<Item = Result<Bytes, Infallible>> {
    tokio_stream::once(Ok(b))
}

async fn upload(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<UploadResult>)> {
    let bytes = upload_bytes(&headers, body).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad("empty upload: send the .wasm file as the body"));
    }
    let rt = st.shared.runtime.clone();
    let data = bytes.clone();
    // Compiling and probing is CPU work under the sandbox's own limits; off the async threads.
    let checked = tokio::task::spawn_blocking(move || check_module(&rt, &data)).await.map_err(ApiError::internal)?;
    let report = checked.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("refused: {e}")))?;
    let (module, summary) = (report.module.clone(), report.summary.clone());
    let row = ModuleRow {
        sha256: module.sha256.clone(),
        name: module.name().to_string(),
        kind: module.kind().as_str().to_string(),
        version: module.descriptor.version.clone(),
        size: bytes.len() as i64,
        descriptor: crate::cli::policy::describe_json(&module),
        uploaded_at: crate::controller::store::unix_now(),
        uploaded_by: actor(&who),
    };
    let created = st.shared.store.insert_module(&row, &bytes)?;
    st.shared.store.audit(&row.uploaded_by, "policy.upload", &format!("sha256:{}", row.sha256), &row.name)?;
    st.shared.bus.publish(
        "policy",
        0.0,
        serde_json::json!({ "event": "uploaded", "sha256": row.sha256, "name": row.name }),
    );
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let cost = serde_json::to_value(&report).unwrap_or_default();
    Ok((status, Json(UploadResult { module: row, created, check: one_line(&summary), cost })))
}

/// The upload check: exactly `amvm policy check`'s path (`PolicyRuntime::check`: structural
/// limits, bounded compilation, world and descriptor validation, configuration, probe calls and
/// the cost at 10,000 hosts).
fn check_module(
    rt: &crate::policy::PolicyRuntime,
    bytes: &[u8],
) -> Result<crate::policy::CheckReport, crate::policy::PolicyError> {
    rt.check(bytes, "upload", &crate::policy::CheckOptions::default())
}

fn valid_sha(sha: &str) -> ApiResult<String> {
    let s = sha.strip_prefix("sha256:").unwrap_or(sha).to_ascii_lowercase();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(ApiError::bad("a module is named by its sha256 (64 hex digits)"))
    }
}

async fn policy(State(st): State<AppState>, Path(sha): Path<String>) -> ApiResult<Json<ModuleRow>> {
    let sha = valid_sha(&sha)?;
    st.shared.store.module(&sha)?.map(Json).ok_or_else(|| ApiError::not_found(format!("module sha256:{sha}")))
}

async fn delete_policy(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Path(sha): Path<String>,
) -> ApiResult<StatusCode> {
    let sha = valid_sha(&sha)?;
    let users = st.shared.store.module_in_use(&sha)?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!("module is used by strategy {}", users.join(", "))));
    }
    if !st.shared.store.delete_module(&sha)? {
        return Err(ApiError::not_found(format!("module sha256:{sha}")));
    }
    st.shared.store.audit(&actor(&who), "policy.delete", &format!("sha256:{sha}"), "")?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- strategies -----------------------------------------------------------------------------

/// Body of `POST /strategies` and `/strategies/validate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyBody {
    /// The strategy: TOML text (the format of `amvm sim --strategy FILE`), a built-in name, or
    /// the same fields as a JSON object (`{"name": …, "threshold": {"module": …, "params": …}, …}`).
    pub strategy: serde_json::Value,
    /// `automatic` (default) or `manual`.
    pub automation: Option<String>,
    /// Activate it right away.
    #[serde(default)]
    pub activate: bool,
}

/// Checks a strategy: parses it, resolves uploaded modules, loads and configures every module
/// with its parameters (validated against what the modules declare).
async fn check_strategy(st: &AppState, text: String) -> ApiResult<crate::scheduler::Strategy> {
    let shared = st.shared.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<crate::scheduler::Strategy> {
        let s = controller::parse_strategy(&text)?;
        let mut resolved = s.clone();
        shared.resolve_modules(&mut resolved)?;
        crate::scheduler::Scheduler::new(&shared.runtime, &resolved)?;
        Ok(s)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))
}

/// The strategy of a request body as the text `parse_strategy` reads (JSON objects become TOML).
fn strategy_text(v: serde_json::Value) -> ApiResult<String> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        obj @ serde_json::Value::Object(_) => {
            let s: crate::scheduler::Strategy = serde_json::from_value(obj)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("strategy JSON: {e}")))?;
            Ok(s.to_toml())
        }
        _ => Err(ApiError::bad("strategy: TOML text, a built-in name, or a JSON object")),
    }
}

async fn validate_strategy(
    State(st): State<AppState>,
    Json(b): Json<StrategyBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = check_strategy(&st, strategy_text(b.strategy)?).await?;
    Ok(Json(serde_json::json!({ "ok": true, "name": s.name, "toml": s.to_toml() })))
}

async fn create_strategy(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Json(b): Json<StrategyBody>,
) -> ApiResult<(StatusCode, Json<StrategyRow>)> {
    let automation = match b.automation.as_deref() {
        None => Automation::Automatic,
        Some(a) => {
            Automation::parse(a).ok_or_else(|| ApiError::bad(format!("automation {a:?}: manual or automatic")))?
        }
    };
    let s = check_strategy(&st, strategy_text(b.strategy)?).await?;
    let by = actor(&who);
    let (id, version) = st.shared.store.insert_strategy(&s.name, &s.to_toml(), automation.as_str(), &by)?;
    st.shared.store.audit(&by, "strategy.create", &format!("{} v{version}", s.name), automation.as_str())?;
    if b.activate {
        activate_id(&st, id, &by)?;
    }
    let row = st.shared.store.strategy(id)?.ok_or_else(|| ApiError::internal("strategy vanished"))?;
    Ok((StatusCode::CREATED, Json(row)))
}

fn activate_id(st: &AppState, id: i64, by: &str) -> ApiResult<()> {
    let row = st.shared.store.strategy(id)?.ok_or_else(|| ApiError::not_found(format!("strategy {id}")))?;
    st.shared.store.set_active_strategy(id)?;
    st.shared.store.audit(by, "strategy.activate", &format!("{} v{}", row.name, row.version), &row.automation)?;
    st.shared.send(Command::ReloadStrategy);
    Ok(())
}

async fn strategies(State(st): State<AppState>) -> ApiResult<Json<Vec<StrategyRow>>> {
    Ok(Json(st.shared.store.strategies()?))
}

async fn strategy(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<StrategyRow>> {
    st.shared.store.strategy(id)?.map(Json).ok_or_else(|| ApiError::not_found(format!("strategy {id}")))
}

async fn activate(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Path(id): Path<i64>,
) -> ApiResult<Json<StrategyRow>> {
    let row = st.shared.store.strategy(id)?.ok_or_else(|| ApiError::not_found(format!("strategy {id}")))?;
    check_strategy(&st, row.toml.clone()).await?;
    activate_id(&st, id, &actor(&who))?;
    Ok(Json(StrategyRow { active: true, ..row }))
}

// ---- plans and migrations -------------------------------------------------------------------

/// Query of list routes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    pub vm: Option<i64>,
    /// At most this many, newest first (default 100, at most 10,000).
    pub limit: Option<i64>,
    /// The token for clients that cannot send headers (EventSource); read by the auth layer.
    #[serde(default)]
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

impl ListQuery {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }
}

async fn plans(State(st): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<Vec<PlanRow>>> {
    Ok(Json(st.shared.store.plans(q.state.as_deref(), q.limit())?))
}

/// `GET /plans/{id}`: the plan, why (its decision trace), and its actions.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PlanDetail {
    pub plan: PlanRow,
    pub trace: Option<serde_json::Value>,
    pub actions: Vec<ActionRow>,
}

async fn plan(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<PlanDetail>> {
    let (plan, trace, actions) = st.shared.store.plan(id)?.ok_or_else(|| ApiError::not_found(format!("plan {id}")))?;
    Ok(Json(PlanDetail { plan, trace, actions }))
}

/// Body of `POST /plans/{id}/reject` (optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    pub reason: Option<String>,
}

async fn approve(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Path(id): Path<i64>,
) -> ApiResult<Json<PlanRow>> {
    let by = actor(&who);
    if !st.shared.store.transition_plan(id, &[state::RECOMMENDED], state::APPROVED, Some(&by), None, true)? {
        return Err(plan_conflict(&st, id, "approve")?);
    }
    st.shared.store.audit(&by, "plan.approve", &format!("plan {id}"), "")?;
    st.shared.bus.publish("plan", 0.0, serde_json::json!({ "id": id, "state": state::APPROVED, "by": by }));
    st.shared.send(Command::Wake);
    plan_row(&st, id)
}

async fn reject(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Path(id): Path<i64>,
    body: Option<Json<RejectBody>>,
) -> ApiResult<Json<PlanRow>> {
    let by = actor(&who);
    let reason = body.and_then(|b| b.0.reason).map(|r| one_line(&r));
    let note = reason.clone().unwrap_or_else(|| format!("rejected by {by}"));
    if !st.shared.store.transition_plan(id, &[state::RECOMMENDED], state::REJECTED, Some(&by), Some(&note), true)? {
        return Err(plan_conflict(&st, id, "reject")?);
    }
    st.shared.store.audit(&by, "plan.reject", &format!("plan {id}"), &note)?;
    st.shared.bus.publish("plan", 0.0, serde_json::json!({ "id": id, "state": state::REJECTED, "by": by }));
    plan_row(&st, id)
}

fn plan_conflict(st: &AppState, id: i64, verb: &str) -> ApiResult<ApiError> {
    match st.shared.store.plan(id)? {
        None => Ok(ApiError::not_found(format!("plan {id}"))),
        Some((p, _, _)) => {
            Ok(ApiError::conflict(format!("cannot {verb} plan {id}: it is {}, not RECOMMENDED", p.state)))
        }
    }
}

fn plan_row(st: &AppState, id: i64) -> ApiResult<Json<PlanRow>> {
    st.shared.store.plan(id)?.map(|p| Json(p.0)).ok_or_else(|| ApiError::not_found(format!("plan {id}")))
}

async fn migrations(State(st): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<Vec<ActionRow>>> {
    Ok(Json(st.shared.store.migrations(q.vm, q.state.as_deref(), q.limit())?))
}

/// `GET /migrations/{id}`: the action, its transitions and, while it runs, its progress.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MigrationDetail {
    pub migration: ActionRow,
    /// (time, from state, to state, note)
    pub log: Vec<(i64, Option<String>, String, Option<String>)>,
    pub progress: Option<Progress>,
}

async fn migration(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<MigrationDetail>> {
    let m = st
        .shared
        .store
        .action(id)?
        .filter(|a| a.kind == "migrate")
        .ok_or_else(|| ApiError::not_found(format!("migration {id}")))?;
    let log = st.shared.store.action_log(id)?;
    let progress = st.shared.view().in_flight.iter().find(|p| p.action_id == id).cloned();
    Ok(Json(MigrationDetail { migration: m, log, progress }))
}

/// Body of `POST /migrations`: move one VM by hand.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandMigration {
    pub vm: u32,
    pub to: u32,
    /// `pre`, `post` or `hybrid`; absent: the world's default mode.
    #[serde(default)]
    pub mode: Option<String>,
}

async fn start_migration(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Json(b): Json<HandMigration>,
) -> ApiResult<(StatusCode, Json<PlanDetail>)> {
    let v = st.shared.view();
    let vm = v.vms.get(b.vm as usize).ok_or_else(|| ApiError::not_found(format!("VM {}", b.vm)))?;
    if b.to as usize >= v.hosts.len() {
        return Err(ApiError::not_found(format!("host {}", b.to)));
    }
    if vm.host == b.to {
        return Err(ApiError::bad(format!("VM {} is already on host {}", b.vm, b.to)));
    }
    if vm.migrating_to.is_some() {
        return Err(ApiError::conflict(format!("VM {} is migrating", b.vm)));
    }
    let mode = match b.mode.as_deref() {
        None => None,
        Some(m) => Some(m.parse::<crate::scheduler::Mode>().map_err(|e| ApiError::bad(e.to_string()))?.name()),
    };
    let by = actor(&who);
    let lc = &v.last_cycle;
    let (id, _) = st.shared.store.insert_plan(&NewPlan {
        epoch: lc.epoch,
        step: lc.step,
        cycle: lc.cycle as i64,
        strategy_id: None,
        source: "hand".into(),
        state: state::APPROVED,
        note: Some(format!("started by {by}")),
        trace: None,
        expires_at: None,
        experiment_id: None,
        actions: vec![NewAction {
            kind: "migrate",
            vm: Some(b.vm.into()),
            from_host: Some(vm.host.into()),
            to_host: Some(b.to.into()),
            reason: Some("operator".into()),
            mode: mode.map(String::from),
        }],
    })?;
    st.shared.store.audit(&by, "migration.start", &format!("VM {}", b.vm), &format!("{} -> {}", vm.host, b.to))?;
    st.shared.send(Command::Wake);
    let (plan, trace, actions) = st.shared.store.plan(id)?.ok_or_else(|| ApiError::internal("plan vanished"))?;
    Ok((StatusCode::ACCEPTED, Json(PlanDetail { plan, trace, actions })))
}

async fn cancel_migration(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Path(id): Path<i64>,
) -> ApiResult<Json<ActionRow>> {
    let a = st
        .shared
        .store
        .action(id)?
        .filter(|a| a.kind == "migrate")
        .ok_or_else(|| ApiError::not_found(format!("migration {id}")))?;
    match a.state.as_str() {
        state::RECOMMENDED | state::APPROVED => {
            let by = actor(&who);
            let note = format!("cancelled by {by}");
            st.shared.store.finish_actions(&[crate::controller::store::ActionEnd::new(
                id,
                state::CANCELLED,
                Some(note),
            )])?;
            st.shared.store.audit(&by, "migration.cancel", &format!("migration {id}"), "")?;
            st.shared.bus.publish("action", 0.0, serde_json::json!({ "id": id, "state": state::CANCELLED }));
        }
        state::ONGOING => {
            return Err(ApiError::conflict(format!(
                "migration {id} is running and this world ({}) cannot abort a running migration",
                st.shared.info.kind
            )))
        }
        other => return Err(ApiError::conflict(format!("migration {id} has already ended ({other})"))),
    }
    st.shared.store.action(id)?.map(Json).ok_or_else(|| ApiError::internal("migration vanished"))
}

// ---- guards -------------------------------------------------------------------------------

async fn guards(State(st): State<AppState>) -> Json<Guards> {
    Json(st.shared.view().guards.clone())
}

async fn set_guards(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Json(g): Json<Guards>,
) -> ApiResult<Json<Guards>> {
    st.shared.store.audit(&actor(&who), "guards.set", "guards", &serde_json::to_string(&g)?)?;
    st.shared.send(Command::SetGuards(g.clone()));
    Ok(Json(g))
}

// ---- operator rules -----------------------------------------------------------------------

async fn rules(State(st): State<AppState>) -> Json<OperatorRules> {
    Json(st.shared.view().operator_rules.clone())
}

async fn set_rules(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Json(r): Json<OperatorRules>,
) -> ApiResult<Json<OperatorRules>> {
    r.validate().map_err(|e| ApiError::bad(e.to_string()))?;
    st.shared.store.audit(&actor(&who), "rules.set", "operator rules", &serde_json::to_string(&r)?)?;
    st.shared.send(Command::SetRules(Box::new(r.clone())));
    Ok(Json(r))
}

async fn pause(State(st): State<AppState>, who: Option<Extension<Who>>) -> ApiResult<Json<Guards>> {
    let g = Guards { paused: true, ..st.shared.view().guards.clone() };
    set_guards(State(st), who, Json(g)).await
}

async fn resume(State(st): State<AppState>, who: Option<Extension<Who>>) -> ApiResult<Json<Guards>> {
    let g = Guards { paused: false, ..st.shared.view().guards.clone() };
    set_guards(State(st), who, Json(g)).await
}

// ---- experiments --------------------------------------------------------------------------

/// Body of `POST /experiments`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentBody {
    /// `offline` (A/B over replayed traces), `shadow` (B decides live, never executes) or
    /// `cohorts` (odd hosts under B, even hosts under the active strategy, compared per cycle).
    pub kind: String,
    /// Strategy A (offline only; live experiments compare against the active strategy).
    pub a: Option<String>,
    /// Strategy B: a built-in name, strategy TOML, or `id:N` of a stored strategy.
    pub b: String,
    /// Offline: traces (`embedded`, `synthetic:…`, names from `GET /traces`).
    #[serde(default)]
    pub traces: Vec<String>,
}

async fn experiments(State(st): State<AppState>) -> ApiResult<Json<Vec<ExperimentRow>>> {
    Ok(Json(st.shared.store.experiments()?))
}

async fn start_experiment(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Json(b): Json<ExperimentBody>,
) -> ApiResult<(StatusCode, Json<ExperimentRow>)> {
    let by = actor(&who);
    let id = match b.kind.as_str() {
        "offline" => {
            let spec = OfflineSpec {
                a: b.a.ok_or_else(|| ApiError::bad("an offline experiment needs strategy a"))?,
                b: b.b,
                traces: b.traces,
            };
            let (shared, root) = (st.shared.clone(), st.cfg.traces_root.clone());
            tokio::task::spawn_blocking(move || controller::experiment::start_offline(&shared, spec, &root, &by))
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?
        }
        kind @ ("shadow" | "cohorts") => {
            let s = if let Some(id) = b.b.strip_prefix("id:") {
                let id: i64 = id.parse().map_err(|_| ApiError::bad("b: id:N expected"))?;
                let row = st.shared.store.strategy(id)?.ok_or_else(|| ApiError::not_found(format!("strategy {id}")))?;
                check_strategy(&st, row.toml).await?
            } else {
                check_strategy(&st, b.b.clone()).await?
            };
            let name = s.name.clone();
            let id = st.shared.store.insert_experiment(kind, &serde_json::json!({ "b": b.b, "name": name }), &by)?;
            st.shared.store.audit(&by, "experiment.start", &format!("experiment {id}"), &format!("{kind} {name}"))?;
            let strategy = Box::new(s);
            st.shared.send(if kind == "shadow" {
                Command::StartShadow { experiment: id, strategy, name }
            } else {
                Command::StartCohorts { experiment: id, strategy, name }
            });
            id
        }
        other => return Err(ApiError::bad(format!("kind {other:?}: offline, shadow or cohorts"))),
    };
    let row = st.shared.store.experiment(id)?.ok_or_else(|| ApiError::internal("experiment vanished"))?;
    Ok((StatusCode::CREATED, Json(row)))
}

async fn experiment(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<ExperimentRow>> {
    st.shared.store.experiment(id)?.map(Json).ok_or_else(|| ApiError::not_found(format!("experiment {id}")))
}

async fn experiment_cycles(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    st.shared.store.experiment(id)?.ok_or_else(|| ApiError::not_found(format!("experiment {id}")))?;
    Ok(Json(st.shared.store.experiment_cycles(id, q.limit())?))
}

async fn experiment_report(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Html<String>> {
    st.shared
        .store
        .experiment_report(id)?
        .map(Html)
        .ok_or_else(|| ApiError::not_found(format!("report of experiment {id}")))
}

async fn stop_experiment(
    State(st): State<AppState>,
    who: Option<Extension<Who>>,
    Path(id): Path<i64>,
) -> ApiResult<Json<ExperimentRow>> {
    let e = st.shared.store.experiment(id)?.ok_or_else(|| ApiError::not_found(format!("experiment {id}")))?;
    if e.kind == "offline" || e.state != "RUNNING" {
        return Err(ApiError::conflict(format!("experiment {id} is a {} experiment in state {}", e.kind, e.state)));
    }
    st.shared.store.audit(&actor(&who), "experiment.stop", &format!("experiment {id}"), "")?;
    st.shared.send(Command::StopExperiment { experiment: id });
    Ok(Json(e))
}

async fn traces(State(st): State<AppState>) -> Json<Vec<String>> {
    let mut t = vec!["embedded".to_string()];
    t.extend(controller::experiment::list_traces(&st.cfg.traces_root));
    Json(t)
}

/// Query of `GET /volumes` and `GET /volumes/moves`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeQuery {
    /// Only this VM (by name).
    pub vm: Option<String>,
    /// At most this many moves, newest first (default 100, at most 10,000).
    pub limit: Option<i64>,
    /// The token for clients that cannot send headers (EventSource); read by the auth layer.
    #[serde(default)]
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

/// `GET /volumes`: attached volumes with the connection their node uses (docs/volumes.md).
async fn volumes(
    State(st): State<AppState>,
    Query(q): Query<VolumeQuery>,
) -> ApiResult<Json<Vec<crate::controller::store::VolumeAttachment>>> {
    Ok(Json(st.shared.store.attachments(q.vm.as_deref())?))
}

/// `GET /volumes/moves`: volume moves with their VM (the migration history), newest first.
async fn volume_moves(
    State(st): State<AppState>,
    Query(q): Query<VolumeQuery>,
) -> ApiResult<Json<Vec<crate::controller::store::VolumeMove>>> {
    Ok(Json(st.shared.store.volume_moves(q.vm.as_deref(), q.limit.unwrap_or(100).clamp(1, 10_000))?))
}

async fn audit(State(st): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<Vec<AuditRow>>> {
    Ok(Json(st.shared.store.audit_log(q.limit())?))
}

// ---- events -------------------------------------------------------------------------------

/// Query of `GET /events`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id (also the `Last-Event-ID` header).
    pub last_event_id: Option<u64>,
    /// The token for clients that cannot send headers (EventSource); read by the auth layer.
    #[serde(default)]
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.last_event_id);
    let sub = st.shared.bus.subscribe(after);
    let to_sse = |e: &controller::events::Event| {
        SseEvent::default().id(e.id.to_string()).event(e.kind).data(serde_json::to_string(e).unwrap_or_default())
    };
    let mut first = Vec::new();
    if sub.gap {
        first.push(Ok(SseEvent::default()
            .event("reload")
            .data("{\"reason\":\"events were missed; reload the snapshot\"}")));
    }
    first.extend(sub.backlog.iter().map(|e| Ok(to_sse(e))));
    let live = tokio_stream::wrappers::BroadcastStream::new(sub.rx).map(move |r| match r {
        Ok(e) => Ok(to_sse(&e)),
        Err(_) => Ok(SseEvent::default()
            .event("reload")
            .data("{\"reason\":\"this client fell behind; reload the snapshot\"}")),
    });
    Sse::new(tokio_stream::iter(first).chain(live)).keep_alive(KeepAlive::default())
}

async fn openapi(State(_): State<AppState>) -> Response {
    let doc = super::openapi::document();
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], super::prometheus::render(&st.shared))
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see /api/v1/openapi.json")
}

pub(super) fn router(state: AppState) -> Router<AppState> {
    let upload_limit = state.cfg.upload_limit;
    let api = Router::new()
        .route("/status", get(status))
        .route("/hosts", get(hosts))
        .route("/hosts/{id}", get(host))
        .route("/hosts/{id}/maintenance", post(maintenance))
        .route("/hosts/{id}/graph.png", get(super::charts::host_graph))
        .route("/vms", get(vms))
        .route("/vms/{id}", get(vm))
        .route("/vms/{id}/graph.png", get(super::charts::vm_graph))
        .route("/series", get(series))
        .route("/sparklines", get(super::charts::sparklines))
        .route("/policies", get(policies).post(upload).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/policies/{sha}", get(policy).delete(delete_policy))
        .route("/strategies", get(strategies).post(create_strategy))
        .route("/strategies/validate", post(validate_strategy))
        .route("/strategies/{id}", get(strategy))
        .route("/strategies/{id}/activate", post(activate))
        .route("/plans", get(plans))
        .route("/plans/{id}", get(plan))
        .route("/plans/{id}/approve", post(approve))
        .route("/plans/{id}/reject", post(reject))
        .route("/migrations", get(migrations).post(start_migration))
        .route("/migrations/{id}", get(migration))
        .route("/migrations/{id}/cancel", post(cancel_migration))
        .route("/guards", get(guards).put(set_guards))
        .route("/rules", get(rules).put(set_rules))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/experiments", get(experiments).post(start_experiment))
        .route("/experiments/{id}", get(experiment))
        .route("/experiments/{id}/cycles", get(experiment_cycles))
        .route("/experiments/{id}/report", get(experiment_report))
        .route("/experiments/{id}/stop", post(stop_experiment))
        .route("/traces", get(traces))
        .route("/volumes", get(volumes))
        .route("/volumes/moves", get(volume_moves))
        .route("/audit", get(audit))
        .route("/events", get(events))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(super::BODY_LIMIT));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(super::web::router())
        .fallback(not_found)
}

/// Keeps `Arc` in scope for handlers that clone shared state.
#[allow(dead_code)]
fn _arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
