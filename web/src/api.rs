//! The controller's API: the token, typed fetches, and the JSON shapes the pages read.
//!
//! Shapes mirror `host/src/api/routes.rs` and `host/src/controller/{world,store}.rs`; every field
//! has a default so an older or newer controller degrades to blanks instead of a broken page.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

const TOKEN_KEY: &str = "amvm.token";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The bearer token saved by the login form.
pub fn token() -> Option<String> {
    storage()?.get_item(TOKEN_KEY).ok()?.filter(|t| !t.is_empty())
}

pub fn set_token(t: Option<&str>) {
    if let Some(s) = storage() {
        let _ = match t {
            Some(t) => s.set_item(TOKEN_KEY, t),
            None => s.remove_item(TOKEN_KEY),
        };
    }
}

pub fn local_get(key: &str) -> Option<String> {
    storage()?.get_item(key).ok()?
}

pub fn local_set(key: &str, value: &str) {
    if let Some(s) = storage() {
        let _ = s.set_item(key, value);
    }
}

/// An API failure: the HTTP status (0 for a network error) and the server's one-line reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} (HTTP {})", self.message, self.status)
        }
    }
}

fn js_err(e: JsValue) -> ApiError {
    let message = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "network error".into());
    ApiError { status: 0, message: format!("cannot reach the controller: {message}") }
}

/// Body of a request.
pub enum Body<'a> {
    None,
    Json(String),
    Bytes(&'a [u8]),
}

/// One request to `/api/v1{path}`; the text of a 2xx answer, or the server's error.
pub async fn request(method: &str, path: &str, body: Body<'_>) -> Result<String, ApiError> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let headers = web_sys::Headers::new().map_err(js_err)?;
    if let Some(t) = token() {
        headers.set("Authorization", &format!("Bearer {t}")).map_err(js_err)?;
    }
    match body {
        Body::None => {}
        Body::Json(s) => {
            headers.set("Content-Type", "application/json").map_err(js_err)?;
            init.set_body(&JsValue::from_str(&s));
        }
        Body::Bytes(b) => {
            headers.set("Content-Type", "application/wasm").map_err(js_err)?;
            let arr = js_sys::Uint8Array::from(b);
            init.set_body(&arr);
        }
    }
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init(&format!("/api/v1{path}"), &init).map_err(js_err)?;
    let window = web_sys::window().ok_or_else(|| ApiError { status: 0, message: "no window".into() })?;
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_request(&req)).await.map_err(js_err)?.unchecked_into();
    let text = JsFuture::from(resp.text().map_err(js_err)?).await.map_err(js_err)?.as_string().unwrap_or_default();
    if resp.ok() {
        Ok(text)
    } else {
        #[derive(Deserialize)]
        struct E {
            error: String,
        }
        let message = serde_json::from_str::<E>(&text).map(|e| e.error).unwrap_or_else(|_| {
            if text.is_empty() {
                resp.status_text()
            } else {
                text.chars().take(300).collect()
            }
        });
        Err(ApiError { status: resp.status(), message })
    }
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError { status: 0, message: format!("unexpected answer: {e}") })
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    parse(&request("GET", path, Body::None).await?)
}

pub async fn post<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> Result<T, ApiError> {
    let s = serde_json::to_string(body).unwrap_or_default();
    parse(&request("POST", path, Body::Json(s)).await?)
}

pub async fn upload(bytes: &[u8]) -> Result<UploadResult, ApiError> {
    parse(&request("POST", "/policies", Body::Bytes(bytes)).await?)
}

pub fn enc(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

// ---- shapes ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct WorldInfo {
    pub kind: String,
    pub name: String,
    pub description: String,
    pub interval_s: f64,
    pub hosts: usize,
    pub vms: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub hosts: usize,
    pub hosts_up: usize,
    pub hosts_asleep: usize,
    pub hosts_down: usize,
    pub hosts_maintenance: usize,
    pub vms: usize,
    pub power_w: f64,
    pub energy_kwh_today: f64,
    pub slatah: f64,
    pub pdm: f64,
    pub migrations_in_flight: usize,
    pub migrations_today: u64,
    pub host_shutdowns_today: u64,
    pub cpu_util_mean: f64,
    pub load_stddev: f64,
    pub mem_util_mean: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ActiveStrategy {
    pub id: i64,
    pub name: String,
    pub version: i64,
    pub automation: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Guards {
    pub max_concurrent_per_host: u32,
    pub max_concurrent: u32,
    pub max_per_cycle: u32,
    pub vm_cooldown_cycles: u32,
    pub paused: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CycleSummary {
    pub cycle: u64,
    pub epoch: i64,
    pub step: i64,
    pub world_time: f64,
    pub plan_id: Option<i64>,
    pub migrations_planned: usize,
    pub hosts_to_sleep: usize,
    pub executed: usize,
    pub refused: usize,
    pub policy_failures: usize,
    pub decide_ms: f64,
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub action_id: i64,
    pub vm: u32,
    pub from: u32,
    pub to: u32,
    pub phase: String,
    pub bytes_total: f64,
    pub bytes_sent: f64,
    pub bytes_remaining: f64,
    pub elapsed_s: f64,
    pub expected_s: f64,
    pub mode: String,
    pub dirty_rate_bps: f64,
    pub bandwidth_bps: f64,
    pub precopy_nonconvergent: bool,
    pub downtime_s: f64,
    pub page_faults: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: String,
    pub world: WorldInfo,
    pub world_time: f64,
    pub uptime_s: f64,
    pub metrics: Metrics,
    pub strategy: Option<ActiveStrategy>,
    pub guards: Guards,
    pub maintenance: Vec<u32>,
    pub last_cycle: CycleSummary,
    pub migrations_in_flight: Vec<Progress>,
    pub event_id: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Host {
    pub id: u32,
    pub name: String,
    pub state: String,
    pub cores: u32,
    pub cpu_capacity_mips: f64,
    pub mem_capacity_mb: f64,
    pub cpu_util: f64,
    pub mem_util: f64,
    pub net_util: Option<f64>,
    pub power_w: f64,
    pub overloaded: bool,
    pub vms: Vec<u32>,
    pub migrations_in_flight: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Vm {
    pub id: u32,
    pub name: String,
    pub host: u32,
    pub mips: f64,
    pub ram_mb: f64,
    pub cpu_util: f64,
    /// `trace`, `agent` or `nova-diagnostics`; `None` while nothing was measured yet.
    pub cpu_source: Option<String>,
    pub migrating_to: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HostDetail {
    pub host: Host,
    pub vms: Vec<Vm>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VmDetail {
    pub vm: Vm,
    pub migrations: Vec<Action>,
}

/// `GET /volumes`: an attached volume (docs/volumes.md).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VolumeAttachment {
    pub volume: String,
    pub vm: String,
    pub node: String,
    pub initiator: String,
    pub portal: String,
    pub iqn: String,
    pub lun: u32,
    pub target_dev: String,
    pub updated_at: i64,
}

/// `GET /volumes/moves`: one move of a volume with its VM.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VolumeMove {
    pub id: i64,
    pub volume: String,
    pub vm: String,
    pub from_node: String,
    pub to_node: String,
    pub mode: Option<String>,
    pub step: String,
    pub state: String,
    pub error: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Series {
    pub metric: String,
    pub unit: String,
    pub cf: String,
    pub from: f64,
    pub to: f64,
    pub step_s: f64,
    pub t: Vec<f64>,
    pub v: Vec<Option<f64>>,
}

/// `GET /sparklines`: one window of recent values for many ids.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Sparklines {
    pub unit: String,
    pub from: f64,
    pub to: f64,
    pub series: Vec<Spark>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Spark {
    pub id: u32,
    pub v: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Plan {
    pub id: i64,
    pub cycle: i64,
    pub created_at: i64,
    pub strategy_id: Option<i64>,
    pub source: String,
    pub state: String,
    pub note: Option<String>,
    pub expires_at: Option<i64>,
    pub decided_by: Option<String>,
    pub experiment_id: Option<i64>,
    pub actions: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Action {
    pub id: i64,
    pub plan_id: i64,
    pub seq: i64,
    pub kind: String,
    pub vm: Option<i64>,
    pub from_host: Option<i64>,
    pub to_host: Option<i64>,
    pub reason: Option<String>,
    pub state: String,
    pub note: Option<String>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// `pre`, `post` or `hybrid`: the plan's choice (its migration-mode policy).
    pub mode: Option<String>,
    pub total_s: Option<f64>,
    pub downtime_ms: Option<f64>,
    pub bytes: Option<f64>,
    pub page_faults: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PlanDetail {
    pub plan: Plan,
    pub trace: Option<serde_json::Value>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub default: serde_json::Value,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub help: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Module {
    pub sha256: String,
    pub name: String,
    pub kind: String,
    pub version: String,
    pub size: i64,
    pub uploaded_at: i64,
    pub uploaded_by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub reference: String,
    pub builtin: bool,
    pub name: String,
    pub kind: String,
    pub version: String,
    pub descriptor: serde_json::Value,
    pub uploaded: Option<Module>,
}

impl Policy {
    pub fn params(&self) -> Vec<Param> {
        self.descriptor
            .get("params")
            .and_then(|p| serde_json::from_value::<Vec<Param>>(p.clone()).ok())
            .unwrap_or_default()
    }
    pub fn summary(&self) -> String {
        self.descriptor.get("summary").and_then(|s| s.as_str()).unwrap_or("").to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UploadResult {
    pub module: Module,
    pub created: bool,
    pub check: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Strategy {
    pub id: i64,
    pub name: String,
    pub version: i64,
    pub toml: String,
    pub automation: String,
    pub created_at: i64,
    pub created_by: String,
    pub active: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Experiment {
    pub id: i64,
    pub kind: String,
    pub spec: serde_json::Value,
    pub state: String,
    pub progress: f64,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub ended_at: Option<i64>,
    pub has_report: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Comparison {
    pub metric: String,
    pub n: u32,
    pub mean_a: f64,
    pub mean_b: f64,
    pub mean_diff: f64,
    pub ci95: Option<serde_json::Value>,
    /// Cohorts: the interval as two numbers.
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    pub relative_pct: Option<f64>,
    pub relative_ci95_pct: Option<serde_json::Value>,
    pub significant: bool,
    pub verdict: String,
}
