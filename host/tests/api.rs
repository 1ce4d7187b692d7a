//! The controller's API in-process (`app(state).oneshot`): auth on every route, uploads that
//! are refused with their reason, manual approval, strategy activation, shadow experiments,
//! the OpenAPI document and `/metrics`.

// Integration tests are their own crate: top-level #[test] functions are the convention here.
#![allow(clippy::tests_outside_test_module)]

use std::sync::Arc;
use std::time::Duration;

#[path = "../../policies/testing/components.rs"]
mod components;

use amvm_host::api::{self, ApiConfig, AppState, Role, Tokens};
use amvm_host::controller::sim_world::{SimWorld, SimWorldConfig};
use amvm_host::controller::{Automation, Controller, ControllerConfig, Shared};
use amvm_host::policy::{PolicyRuntime, RuntimeConfig};
use amvm_host::sim::trace::SyntheticSpec;
use amvm_host::sim::{Scenario, Trace};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const ADMIN: &str = "admin-token-for-tests-0001";
const READ: &str = "read-token-for-tests-00001";

struct Env {
    app: axum::Router,
    shared: Arc<Shared>,
    controller: Option<Controller>,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(c) = self.controller.take() {
            c.stop();
        }
    }
}

fn env(automation: Automation, step_ms: u64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = Scenario::default();
    scenario.hosts.count = 64;
    let trace = Arc::new(
        Trace::synthetic(&SyntheticSpec { vms: 90, mean: 25.0, seed: 3, ..SyntheticSpec::default() }).unwrap(),
    );
    let world = SimWorld::new(SimWorldConfig {
        base_unix: SimWorldConfig::base_for(&trace),
        scenario,
        trace,
        pace: Duration::from_millis(step_ms),
    })
    .unwrap();
    let mut cfg = ControllerConfig::new(dir.path().to_path_buf());
    cfg.default_automation = automation;
    cfg.default_strategy = "thr-mmt-0.8".into();
    cfg.review_s = 3600;
    // A generous per-call deadline: tests check behaviour, not timing on a loaded machine.
    let runtime = Arc::new(
        PolicyRuntime::new(RuntimeConfig { deadline: Duration::from_secs(1), ..RuntimeConfig::default() }).unwrap(),
    );
    let controller = Controller::start(cfg, Box::new(world), runtime).unwrap();
    let shared = controller.shared.clone();
    let mut tokens = Tokens::default();
    tokens.add("root", Role::Admin, ADMIN).unwrap();
    tokens.add("viewer", Role::Read, READ).unwrap();
    let state = AppState {
        shared: shared.clone(),
        cfg: Arc::new(ApiConfig {
            tokens,
            metrics_public: false,
            upload_limit: api::DEFAULT_UPLOAD_LIMIT,
            traces_root: dir.path().to_path_buf(),
        }),
    };
    Env { app: api::app(state), shared, controller: Some(controller), _dir: dir }
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some((ct, b)) => req.header("Content-Type", ct).body(Body::from(b)).unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    if path.starts_with("/api/v1/events") && status == StatusCode::OK {
        // An endless stream: its status and type are the answer.
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        return (status, Value::String(ct));
    }
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn json(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", v.to_string().into_bytes()))
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Fills `{id}`/`{sha}` with values that exist or are at least well-formed.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1").replace("{sha}", &"a".repeat(64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_role_and_a_refused_call_changes_nothing() {
    let e = env(Automation::Automatic, 50);
    wait_for("a first cycle", || e.shared.view().last_cycle.cycle > 0).await;
    let doc: Value = serde_json::from_str(&{
        let (s, v) = call(&e.app, "GET", "/api/v1/openapi.json", Some(READ), None).await;
        assert_eq!(s, StatusCode::OK);
        v.to_string()
    })
    .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{} paths documented", paths.len());
    let strategies_before = e.shared.store.strategies().unwrap().len();
    let guards_before = e.shared.view().guards.clone();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let m = method.to_ascii_uppercase();
            let p = concrete(path);
            let role = op["x-amvm-role"].as_str().unwrap();
            let (s, v) = call(&e.app, &m, &p, None, None).await;
            if role == "none" {
                assert_ne!(s, StatusCode::UNAUTHORIZED, "{m} {p}");
                continue;
            }
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {p} without a token: {v}");
            assert!(v["error"].as_str().is_some(), "{m} {p}: errors are JSON with a message");
            let (s, _) = call(&e.app, &m, &p, Some("not-a-valid-token-at-all"), None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {p} with a wrong token");
            let (s, _) = call(&e.app, &m, &p, Some(READ), json(serde_json::json!({}))).await;
            if role == "admin" {
                assert_eq!(s, StatusCode::FORBIDDEN, "{m} {p} with a read token");
            } else {
                assert!(s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN, "{m} {p} with a read token: {s}");
            }
        }
    }
    // Refused calls changed nothing.
    assert_eq!(e.shared.store.strategies().unwrap().len(), strategies_before);
    assert_eq!(e.shared.view().guards, guards_before);
    assert!(e.shared.store.modules().unwrap().is_empty());
    // The audit log has no entry from a refused call.
    assert!(e.shared.store.audit_log(100).unwrap().iter().all(|a| a.actor == "controller"));
    // /healthz is open; /metrics needs a token here (metrics_public = false).
    assert_eq!(call(&e.app, "GET", "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(call(&e.app, "GET", "/metrics", None, None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_their_reason_and_the_controller_keeps_serving() {
    let e = env(Automation::Automatic, 50);
    let core_module = wat::parse_str("(module (func (export \"f\")))").unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"definitely not wasm".to_vec(), "not a WebAssembly"),
        ("core module", core_module, "core"),
        ("truncated component", b"\0asm\x0d\x00\x01\x00\x01".to_vec(), ""),
    ];
    for (what, bytes, needle) in cases {
        let (s, v) = call(&e.app, "POST", "/api/v1/policies", Some(ADMIN), Some(("application/wasm", bytes))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(!msg.contains('\n'), "{what}: one line: {msg:?}");
        assert!(msg.to_lowercase().contains(&needle.to_lowercase()), "{what}: {msg}");
    }
    let (s, _) = call(&e.app, "POST", "/api/v1/policies", Some(ADMIN), Some(("application/wasm", Vec::new()))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e.shared.store.modules().unwrap().is_empty(), "nothing stored");
    // Over the upload limit: refused before any work.
    let big = vec![0u8; api::DEFAULT_UPLOAD_LIMIT + 1];
    let (s, _) = call(&e.app, "POST", "/api/v1/policies", Some(ADMIN), Some(("application/wasm", big))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, v) = call(&e.app, "GET", "/api/v1/status", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_module_uploads_and_a_strategy_naming_it_drives_the_next_plans() {
    let e = env(Automation::Automatic, 40);
    let wasm = amvm_host::policy::builtin::bytes("spread").unwrap().to_vec();
    let (s, v) = call(&e.app, "POST", "/api/v1/policies", Some(ADMIN), Some(("application/wasm", wasm.clone()))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sha = v["module"]["sha256"].as_str().unwrap().to_string();
    assert!(v["check"].as_str().unwrap().starts_with("OK"));
    // The same bytes again: stored once.
    let (s, v) = call(&e.app, "POST", "/api/v1/policies", Some(ADMIN), Some(("application/wasm", wasm))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["created"], false);
    // A parameter out of range is refused with the reason, nothing saved.
    let bad = "name = \"bad\"\n[threshold]\nmodule = \"thr\"\nparams = { upper = 7.0 }\n[selection]\nmodule = \"mmt\"\n[placement]\nmodule = \"pabfd\"\n";
    let (s, v) =
        call(&e.app, "POST", "/api/v1/strategies", Some(ADMIN), json(serde_json::json!({ "strategy": bad }))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("upper"), "{v}");
    let n = e.shared.store.strategies().unwrap().len();
    let toml = format!(
        "name = \"thr-mmt-spread\"\n[threshold]\nmodule = \"thr\"\nparams = {{ upper = 0.8 }}\n[selection]\nmodule = \"mmt\"\n[placement]\nmodule = \"sha256:{sha}\"\n"
    );
    let (s, v) = call(
        &e.app,
        "POST",
        "/api/v1/strategies",
        Some(ADMIN),
        json(serde_json::json!({ "strategy": toml, "activate": true })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(e.shared.store.strategies().unwrap().len(), n + 1);
    let id = v["id"].as_i64().unwrap();
    wait_for("the new strategy to be active", || e.shared.view().strategy.as_ref().is_some_and(|s| s.id == id)).await;
    wait_for("a plan from the new strategy", || {
        e.shared.store.plans(None, 50).unwrap().iter().any(|p| p.strategy_id == Some(id))
    })
    .await;
    // The same strategy as a JSON object is a new version.
    let obj = serde_json::json!({
        "name": "thr-mmt-spread",
        "threshold": { "module": "thr", "params": { "upper": 0.7 } },
        "selection": { "module": "mmt" },
        "placement": { "module": format!("sha256:{sha}") },
    });
    let (s, v) =
        call(&e.app, "POST", "/api/v1/strategies", Some(ADMIN), json(serde_json::json!({ "strategy": obj }))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 2, "{v}");
    assert!(v["toml"].as_str().unwrap().contains("0.7"), "{v}");
    // The module is in use: it cannot be deleted.
    let (s, _) = call(&e.app, "DELETE", &format!("/api/v1/policies/{sha}"), Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let audit = e.shared.store.audit_log(50).unwrap();
    assert!(audit.iter().any(|a| a.action == "policy.upload" && a.actor == "root"));
    assert!(audit.iter().any(|a| a.action == "strategy.activate" && a.actor == "root"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_plan_does_nothing_until_an_admin_approves_it() {
    let e = env(Automation::Manual, 40);
    wait_for("a recommended plan", || !e.shared.store.plans(Some("RECOMMENDED"), 5).unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.shared.view().metrics.migrations_today, 0, "nothing migrates before approval");
    assert!(e.shared.store.actions_in("ONGOING").unwrap().is_empty());
    let plan = e.shared.store.plans(Some("RECOMMENDED"), 1).unwrap().remove(0);
    // The decision trace explains it.
    let (s, v) = call(&e.app, "GET", &format!("/api/v1/plans/{}", plan.id), Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["trace"]["hosts"].as_array().is_some_and(|h| !h.is_empty()), "{}", v["trace"]);
    let (s, _) = call(&e.app, "POST", &format!("/api/v1/plans/{}/approve", plan.id), Some(READ), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(&e.app, "POST", &format!("/api/v1/plans/{}/approve", plan.id), Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Approving twice is a conflict with the reason.
    let (s, v) = call(&e.app, "POST", &format!("/api/v1/plans/{}/approve", plan.id), Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    wait_for("the approved actions to run", || {
        let (_, _, actions) = e.shared.store.plan(plan.id).unwrap().unwrap();
        actions.iter().all(|a| matches!(a.state.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED"))
            && actions.iter().any(|a| a.state == "SUCCEEDED")
    })
    .await;
    assert!(e.shared.view().metrics.migrations_today > 0 || e.shared.view().last_cycle.epoch > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_experiment_records_b_plans_and_executes_none() {
    let e = env(Automation::Automatic, 40);
    let (s, v) = call(
        &e.app,
        "POST",
        "/api/v1/experiments",
        Some(ADMIN),
        json(serde_json::json!({ "kind": "shadow", "b": "lr-mc-1.2" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    wait_for("shadow cycles", || e.shared.store.experiment_cycles(id, 10).unwrap().len() >= 5).await;
    let shadow_plans: Vec<_> = e.shared.store.plans(Some("SHADOW"), 100).unwrap();
    assert!(!shadow_plans.is_empty());
    assert!(shadow_plans.iter().all(|p| p.experiment_id == Some(id) && p.source == "shadow"));
    for p in &shadow_plans {
        let (_, _, actions) = e.shared.store.plan(p.id).unwrap().unwrap();
        assert!(actions.iter().all(|a| a.state == "SHADOW" && a.exec_seq.is_none()), "shadow actions never execute");
    }
    let (_, v) = call(&e.app, "GET", &format!("/api/v1/experiments/{id}"), Some(READ), None).await;
    assert_eq!(v["result"]["b_executed_actions"], 0);
    assert!(v["result"]["cycles"].as_u64().unwrap() >= 5);
    let (s, _) = call(&e.app, "POST", &format!("/api/v1/experiments/{id}/stop"), Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_series_downsample() {
    let e = env(Automation::Automatic, 30);
    wait_for("a few cycles", || e.shared.view().last_cycle.cycle > 5).await;
    let (s, v) = call(&e.app, "GET", "/metrics", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.split_whitespace();
            let kw = w.next().unwrap();
            assert!(kw == "HELP" || kw == "TYPE", "{line}");
            if kw == "TYPE" {
                let _name = w.next().unwrap();
                assert!(matches!(w.next(), Some("gauge" | "counter")), "{line}");
            }
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap_or_else(|_| panic!("value of {line:?}"));
        let name = name_labels.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        if let Some(labels) = name_labels.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        samples += 1;
    }
    assert!(samples > 15, "{samples} samples");
    let now = e.shared.view().world_time;
    let (s, v) = call(
        &e.app,
        "GET",
        &format!("/api/v1/series?target=cluster&metric=power&from={}&to={now}&points=3", now - 3000.0),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["t"].as_array().unwrap().len(), 3);
    let (s, v) = call(&e.app, "GET", "/api/v1/series?target=host&id=99999&metric=cpu", Some(READ), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = call(&e.app, "GET", "/api/v1/series?target=host&id=0&metric=cpu&points=0", Some(READ), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&e.app, "GET", "/api/v1/series?target=cluster&metric=power&bogus=1", Some(READ), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohorts_keep_each_group_under_its_strategy_and_compare_them() {
    let e = env(Automation::Automatic, 40);
    let (s, v) = call(
        &e.app,
        "POST",
        "/api/v1/experiments",
        Some(ADMIN),
        json(serde_json::json!({ "kind": "cohorts", "b": "lr-mmt-1.2" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().unwrap();
    wait_for("cohort cycles", || e.shared.store.experiment_cycles(id, 10).unwrap().len() >= 6).await;
    let plans = e.shared.store.plans(None, 200).unwrap();
    let cohort_plans: Vec<_> = plans.iter().filter(|p| p.source == "cohorts").collect();
    assert!(!cohort_plans.is_empty(), "plans made under cohorts");
    for p in cohort_plans {
        let (_, _, actions) = e.shared.store.plan(p.id).unwrap().unwrap();
        for a in actions.iter().filter(|a| a.kind == "migrate") {
            assert_eq!(a.from_host.unwrap() % 2, a.to_host.unwrap() % 2, "a VM never crosses groups: {a:?}");
        }
    }
    let (_, v) = call(&e.app, "GET", &format!("/api/v1/experiments/{id}"), Some(READ), None).await;
    let r = &v["result"];
    let metrics: Vec<&str> =
        r["comparisons"].as_array().unwrap().iter().map(|c| c["metric"].as_str().unwrap()).collect();
    assert_eq!(metrics, vec!["energy_kwh", "slatah", "pdm", "migrations"]);
    assert!(r["a_energy_kwh"].as_f64().unwrap() > 0.0 && r["b_energy_kwh"].as_f64().unwrap() > 0.0, "{r}");
    let (s, v) = call(&e.app, "POST", &format!("/api/v1/experiments/{id}/stop"), Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the experiment to end", || e.shared.store.experiment(id).unwrap().unwrap().state == "SUCCEEDED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_are_refused_through_the_policy_check_path() {
    let e = env(Automation::Automatic, 50);
    let dir = std::path::PathBuf::from(amvm_host::policy::builtin::WASM_DIR);
    let file = |name: &str| std::fs::read(dir.join(format!("amvm_test_hostile_{name}.wasm"))).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("kind contradicts world", file("kind"), "declares"),
        ("escape sequences in the descriptor", file("escape"), "non-printable"),
        ("infinite bounds", file("bounds"), "finite"),
        ("oversized descriptor", file("huge"), "longer than"),
        ("several worlds", wat::parse_str(components::several_worlds()).unwrap(), "world"),
        ("compile bomb", wat::parse_str(components::compile_bomb(27_000)).unwrap(), "compile"),
        ("memory sum", wat::parse_str(components::memory_sum(24, 40)).unwrap(), "memory"),
    ];
    for (what, bytes, needle) in cases {
        let started = std::time::Instant::now();
        let (s, v) = call(&e.app, "POST", "/api/v1/policies", Some(ADMIN), Some(("application/wasm", bytes))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(!msg.chars().any(char::is_control), "{what}: one clean line: {msg:?}");
        assert!(msg.to_lowercase().contains(needle), "{what}: {msg}");
        assert!(started.elapsed() < Duration::from_secs(30), "{what} took {:?}", started.elapsed());
    }
    assert!(e.shared.store.modules().unwrap().is_empty(), "nothing stored");
    let (s, _) = call(&e.app, "GET", "/api/v1/status", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "the controller keeps serving");
    let before = e.shared.view().last_cycle.cycle;
    wait_for("the loop to keep cycling", || e.shared.view().last_cycle.cycle > before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rules_are_validated_and_maintenance_evacuates_a_host() {
    let e = env(Automation::Automatic, 40);
    // A rule naming an undefined host group: refused with the reason, nothing stored.
    let bad =
        serde_json::json!({ "vm_host": [{ "name": "db", "vms": [1], "host_group": "rack-z", "relation": "run-on" }] });
    let (s, v) = call(&e.app, "PUT", "/api/v1/rules", Some(ADMIN), json(bad.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("rack-z"), "{v}");
    let (s, _) = call(&e.app, "PUT", "/api/v1/rules", Some(READ), json(bad)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(&e.app, "GET", "/api/v1/rules", Some(READ), None).await;
    assert_eq!((s, v["vm_host"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{v}");
    // Good rules are stored and shown.
    let good = serde_json::json!({ "never_sleep": [0], "max_inflow_per_host": 4 });
    let (s, v) = call(&e.app, "PUT", "/api/v1/rules", Some(ADMIN), json(good)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the rules to apply", || e.shared.view().operator_rules.max_inflow_per_host == 4).await;
    assert_eq!(e.shared.store.setting("operator_rules").unwrap().map(|t| t.contains("never_sleep")), Some(true));
    // Maintenance on the busiest host: its VMs leave and none arrive.
    let busiest = e.shared.view().hosts.iter().max_by_key(|h| h.vms.len()).map(|h| (h.id, h.vms.len())).unwrap();
    assert!(busiest.1 > 0);
    let (s, v) = call(
        &e.app,
        "POST",
        &format!("/api/v1/hosts/{}/maintenance", busiest.0),
        Some(ADMIN),
        json(serde_json::json!({ "on": true })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the host in maintenance to be emptied", || {
        e.shared.view().hosts.iter().any(|h| h.id == busiest.0 && h.vms.is_empty() && h.state == "maintenance")
    })
    .await;
    let actions = e.shared.store.actions_in("SUCCEEDED").unwrap();
    assert!(actions.iter().any(|a| a.from_host == Some(i64::from(busiest.0))), "evacuated by migrations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparklines_batch_recent_samples_and_rrd_graphs_are_pngs() {
    let e = env(Automation::Automatic, 30);
    wait_for("a few cycles", || e.shared.view().last_cycle.cycle > 6).await;
    let (s, v) =
        call(&e.app, "GET", "/api/v1/sparklines?target=host&metric=cpu&ids=0,1,63&points=12", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.iter().map(|s| s["id"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 63]);
    assert!(series.iter().all(|s| s["v"].as_array().unwrap().len() == 12), "{v}");
    // Recent samples are there: the last points of an active host have values.
    let known = series.iter().flat_map(|s| s["v"].as_array().unwrap().iter().filter(|x| x.is_number())).count();
    assert!(known > 0, "{v}");
    assert_eq!(v["unit"], "ratio");
    let (s, v) = call(&e.app, "GET", "/api/v1/sparklines?target=vm&metric=cpu&ids=0,5", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for bad in [
        "/api/v1/sparklines?target=host&metric=cpu&ids=",
        "/api/v1/sparklines?target=host&metric=cpu&ids=1,x",
        "/api/v1/sparklines?target=host&metric=cpu&ids=99999",
        "/api/v1/sparklines?target=host&metric=bogus&ids=1",
        "/api/v1/sparklines?target=cluster&metric=cpu&ids=1",
        "/api/v1/sparklines?target=host&metric=cpu&ids=1&points=0",
        "/api/v1/sparklines?target=host&metric=cpu&ids=1&span_s=-5",
    ] {
        let (s, v) = call(&e.app, "GET", bad, Some(READ), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].as_str().is_some(), "{bad}: a JSON error");
    }
    let many = (0..501).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let (s, _) =
        call(&e.app, "GET", &format!("/api/v1/sparklines?target=host&metric=cpu&ids={many}"), Some(READ), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The stock RRD graph: a PNG drawn by librrd, for hosts and VMs.
    for path in [
        "/api/v1/hosts/0/graph.png?metric=cpu&range=1d",
        "/api/v1/hosts/1/graph.png?metric=power&range=1h&cf=MAX",
        "/api/v1/vms/3/graph.png",
    ] {
        let req = Request::builder().uri(path).header("Authorization", format!("Bearer {READ}")).body(Body::empty());
        let resp = e.app.clone().oneshot(req.unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["content-type"], "image/png", "{path}");
        let png = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{path}");
        assert!(png.len() > 2000, "{path}: {} bytes", png.len());
    }
    let now = e.shared.view().world_time;
    for (bad, want) in [
        ("/api/v1/hosts/99999/graph.png".to_string(), StatusCode::NOT_FOUND),
        ("/api/v1/vms/99999/graph.png".to_string(), StatusCode::NOT_FOUND),
        ("/api/v1/hosts/0/graph.png?metric=bogus".to_string(), StatusCode::BAD_REQUEST),
        ("/api/v1/hosts/0/graph.png?range=2d".to_string(), StatusCode::BAD_REQUEST),
        ("/api/v1/hosts/0/graph.png?cf=MIN".to_string(), StatusCode::BAD_REQUEST),
        (format!("/api/v1/hosts/0/graph.png?from={now}&to={}", now - 10.0), StatusCode::BAD_REQUEST),
        ("/api/v1/hosts/0/graph.png?from=1e300&to=1e301".to_string(), StatusCode::BAD_REQUEST),
        ("/api/v1/vms/0/graph.png?metric=power".to_string(), StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = call(&e.app, "GET", &bad, Some(READ), None).await;
        assert_eq!(s, want, "{bad}: {v}");
        assert!(v["error"].as_str().is_some(), "{bad}: a JSON error, not {v}");
    }
    let (s, _) = call(&e.app, "GET", "/api/v1/hosts/0/graph.png", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_progress_reports_phases_dirty_rate_and_bandwidth() {
    // A slow pace: migrations take a visible part of the step.
    let e = env(Automation::Automatic, 4000);
    wait_for("a migration in flight", || !e.shared.view().in_flight.is_empty()).await;
    let (s, v) = call(&e.app, "GET", "/api/v1/status", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK);
    let m = &v["migrations_in_flight"][0];
    // The card shows the mode the plan chose for this move (the model's, by default), as the
    // journal does.
    let id = m["action_id"].as_i64().unwrap();
    let row = e.shared.store.action(id).unwrap().expect("the move is journaled");
    assert!(["pre", "post", "hybrid"].contains(&m["mode"].as_str().unwrap()), "{m}");
    assert_eq!(row.mode.as_deref(), m["mode"].as_str(), "{m}");
    assert!(m["bandwidth_bps"].as_f64().unwrap() > 1e6, "{m}");
    assert!(m["dirty_rate_bps"].as_f64().unwrap() >= 0.0, "{m}");
    assert!(m["bytes_total"].as_f64().unwrap() >= m["bytes_sent"].as_f64().unwrap(), "{m}");
    let phase = m["phase"].as_str().unwrap();
    assert!(["full-round", "stop-copy", "demand-push", "done"].contains(&phase), "{m}");
    assert!(m["precopy_nonconvergent"].is_boolean(), "{m}");
    // When it ends, the journal keeps its figures: total time, bytes, downtime, page faults.
    let ended = || e.shared.store.migrations(None, Some("SUCCEEDED"), 5).unwrap_or_default();
    wait_for("a migration to succeed", || !ended().is_empty()).await;
    let a = &ended()[0];
    assert!(a.total_s.is_some_and(|t| t > 0.0) && a.bytes.is_some_and(|b| b > 0.0), "{a:?}");
    assert!(a.downtime_ms.is_some_and(|d| d > 0.0 && d < 1000.0), "{a:?}");
    assert!(a.page_faults.is_some(), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_and_their_moves_are_listed_per_vm() {
    use amvm_host::controller::store::{VolumeAttachment, VolumeMove};
    let e = env(Automation::Manual, 1000);
    let store = &e.shared.store;
    let att = |vol: &str, vm: &str| VolumeAttachment {
        volume: vol.into(),
        vm: vm.into(),
        node: "node1".into(),
        initiator: "10.0.0.11".into(),
        portal: "10.0.0.1:3260".into(),
        iqn: format!("iqn.2026-12.org.amvm:{vol}"),
        lun: 1,
        target_dev: "vdb".into(),
        updated_at: 0,
    };
    store.put_attachment(&att("v1", "vm1")).unwrap();
    store.put_attachment(&att("v2", "vm2")).unwrap();
    let id = store
        .begin_volume_move(&VolumeMove {
            id: 0,
            volume: "v1".into(),
            vm: "vm1".into(),
            from_node: "node1".into(),
            from_initiator: "10.0.0.11".into(),
            to_node: "node2".into(),
            to_initiator: "10.0.0.12".into(),
            mode: Some("post".into()),
            step: String::new(),
            state: String::new(),
            error: None,
            started_at: 0,
            ended_at: None,
        })
        .unwrap();
    store.end_volume_move(id, "FAILED", Some("injected"), None).unwrap();

    let (s, v) = call(&e.app, "GET", "/api/v1/volumes", Some(READ), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (_, v) = call(&e.app, "GET", "/api/v1/volumes?vm=vm1", Some(READ), None).await;
    assert_eq!(v[0]["volume"], "v1");
    assert_eq!(v[0]["iqn"], "iqn.2026-12.org.amvm:v1");
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (_, v) = call(&e.app, "GET", "/api/v1/volumes/moves?vm=vm1&limit=5", Some(READ), None).await;
    assert_eq!((v[0]["state"].as_str(), v[0]["error"].as_str()), (Some("FAILED"), Some("injected")));
    let (_, v) = call(&e.app, "GET", "/api/v1/volumes/moves?vm=vm2", Some(READ), None).await;
    assert!(v.as_array().unwrap().is_empty());
    let (s, _) = call(&e.app, "GET", "/api/v1/volumes?bogus=1", Some(READ), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&e.app, "GET", "/api/v1/volumes", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
