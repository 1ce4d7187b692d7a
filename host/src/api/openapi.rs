//! `/api/v1/openapi.json`: an OpenAPI 3.1 document generated from the code — the request and
//! response types' JSON Schemas (schemars, JSON Schema 2020-12, which OpenAPI 3.1 uses) and the
//! route table below. A test checks that every route of the router is documented here.

use std::sync::OnceLock;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::charts::Sparklines;
use super::routes::*;
use crate::controller::store::{
    ActionRow, AuditRow, ExperimentRow, ModuleRow, PlanRow, StrategyRow, VolumeAttachment, VolumeMove,
};
use crate::controller::world::{HostView, SeriesData, VmView};
use crate::controller::Guards;
use crate::scheduler::OperatorRules;

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

fn text(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "string" })
}

/// A documented route.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// `read`, `admin` or `none`.
    pub auth: &'static str,
    pub query: &'static [(&'static str, &'static str, &'static str)],
    pub body: Option<SchemaFn>,
    /// Status and schema of the success response; `None` = no body.
    pub ok: (u16, Option<SchemaFn>),
    /// Content type of the success response.
    pub content: &'static str,
}

const J: &str = "application/json";
const GRAPH: &[(&str, &str, &str)] = &[
    ("metric", "string", "cpu (default), mem, power"),
    ("range", "string", "1h, 6h, 1d (default), 1w, 1m or 1y, ending now"),
    ("from", "number", "Unix seconds, world clock (with to, instead of range)"),
    ("to", "number", "Unix seconds, world clock"),
    ("cf", "string", "AVERAGE or MAX"),
];

fn png(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "string", "contentMediaType": "image/png" })
}
const VOLUME_VM: &[(&str, &str, &str)] = &[("vm", "string", "only this VM (by name)")];
const VOLUMES: &[(&str, &str, &str)] =
    &[("vm", "string", "only this VM (by name)"), ("limit", "integer", "at most this many")];

const LIST: &[(&str, &str, &str)] = &[
    ("state", "string", "only this state"),
    ("vm", "integer", "only this VM"),
    ("limit", "integer", "at most this many"),
];

/// Every route of [`super::routes::router`].
pub fn routes() -> Vec<RouteDoc> {
    let r = |method, path, summary, auth, ok: (u16, Option<SchemaFn>)| RouteDoc {
        method,
        path,
        summary,
        auth,
        query: &[],
        body: None,
        ok,
        content: J,
    };
    vec![
        r("get", "/api/v1/status", "Controller, world and cluster summary", "read", (200, Some(s::<Status>))),
        RouteDoc {
            query: &[("state", "string", "up, asleep, down or maintenance")],
            ..r(
                "get",
                "/api/v1/hosts",
                "Hosts with utilization, power and VMs",
                "read",
                (200, Some(s::<Vec<HostView>>)),
            )
        },
        r("get", "/api/v1/hosts/{id}", "One host and its VMs", "read", (200, Some(s::<HostDetail>))),
        RouteDoc {
            body: Some(s::<MaintenanceBody>),
            ..r(
                "post",
                "/api/v1/hosts/{id}/maintenance",
                "Enter or leave maintenance mode (entering evacuates the host)",
                "admin",
                (200, Some(s::<Value>)),
            )
        },
        r("get", "/api/v1/vms", "VMs with their host and CPU", "read", (200, Some(s::<Vec<VmView>>))),
        r("get", "/api/v1/vms/{id}", "One VM and its migration history", "read", (200, Some(s::<VmDetail>))),
        RouteDoc {
            query: &[
                ("target", "string", "host, vm or cluster (required)"),
                ("id", "integer", "host or VM id"),
                ("metric", "string", "cpu, mem, power, net, active_hosts, energy (required)"),
                ("from", "number", "Unix seconds, world clock"),
                ("to", "number", "Unix seconds, world clock"),
                ("cf", "string", "AVERAGE or MAX"),
                ("points", "integer", "points wanted, 1..5000"),
            ],
            ..r(
                "get",
                "/api/v1/series",
                "A metric series, downsampled by the server",
                "read",
                (200, Some(s::<SeriesData>)),
            )
        },
        RouteDoc {
            query: &[
                ("target", "string", "host or vm (required)"),
                ("metric", "string", "cpu, mem or power (required)"),
                ("ids", "string", "comma-separated ids, at most 500 (required)"),
                ("points", "integer", "points per id, 1..200 (default 24)"),
                ("span_s", "number", "seconds back from now (default 7200, at most 604800)"),
            ],
            ..r(
                "get",
                "/api/v1/sparklines",
                "Recent samples of many hosts or VMs at once (the tables' sparklines)",
                "read",
                (200, Some(s::<Sparklines>)),
            )
        },
        RouteDoc {
            query: GRAPH,
            content: "image/png",
            ..r(
                "get",
                "/api/v1/hosts/{id}/graph.png",
                "The stock RRD graph (librrd PNG) of a host series",
                "read",
                (200, Some(png)),
            )
        },
        RouteDoc {
            query: GRAPH,
            content: "image/png",
            ..r(
                "get",
                "/api/v1/vms/{id}/graph.png",
                "The stock RRD graph (librrd PNG) of a VM series",
                "read",
                (200, Some(png)),
            )
        },
        r("get", "/api/v1/policies", "Built-in and uploaded policy modules", "read", (200, Some(s::<Vec<PolicyInfo>>))),
        RouteDoc {
            body: Some(text),
            ..r(
                "post",
                "/api/v1/policies",
                "Upload a .wasm (raw body or multipart): checked as `amvm policy check`",
                "admin",
                (201, Some(s::<UploadResult>)),
            )
        },
        r("get", "/api/v1/policies/{sha}", "One uploaded module", "read", (200, Some(s::<ModuleRow>))),
        r("delete", "/api/v1/policies/{sha}", "Delete an uploaded module no strategy uses", "admin", (204, None)),
        r("get", "/api/v1/strategies", "Every version of every strategy", "read", (200, Some(s::<Vec<StrategyRow>>))),
        RouteDoc {
            body: Some(s::<StrategyBody>),
            ..r(
                "post",
                "/api/v1/strategies",
                "Create a strategy version (TOML or a built-in name)",
                "admin",
                (201, Some(s::<StrategyRow>)),
            )
        },
        RouteDoc {
            body: Some(s::<StrategyBody>),
            ..r(
                "post",
                "/api/v1/strategies/validate",
                "Check a strategy against what its modules declare",
                "admin",
                (200, Some(s::<Value>)),
            )
        },
        r("get", "/api/v1/strategies/{id}", "One strategy version", "read", (200, Some(s::<StrategyRow>))),
        r(
            "post",
            "/api/v1/strategies/{id}/activate",
            "Activate a strategy version",
            "admin",
            (200, Some(s::<StrategyRow>)),
        ),
        RouteDoc {
            query: LIST,
            ..r("get", "/api/v1/plans", "Plans, newest first", "read", (200, Some(s::<Vec<PlanRow>>)))
        },
        r(
            "get",
            "/api/v1/plans/{id}",
            "A plan with its decision trace and actions",
            "read",
            (200, Some(s::<PlanDetail>)),
        ),
        r("post", "/api/v1/plans/{id}/approve", "Approve a RECOMMENDED plan", "admin", (200, Some(s::<PlanRow>))),
        RouteDoc {
            body: Some(s::<RejectBody>),
            ..r("post", "/api/v1/plans/{id}/reject", "Reject a RECOMMENDED plan", "admin", (200, Some(s::<PlanRow>)))
        },
        RouteDoc {
            query: LIST,
            ..r("get", "/api/v1/migrations", "Migrations, newest first", "read", (200, Some(s::<Vec<ActionRow>>)))
        },
        RouteDoc {
            body: Some(s::<HandMigration>),
            ..r("post", "/api/v1/migrations", "Migrate one VM by hand", "admin", (202, Some(s::<PlanDetail>)))
        },
        r(
            "get",
            "/api/v1/migrations/{id}",
            "A migration, its transitions and progress",
            "read",
            (200, Some(s::<MigrationDetail>)),
        ),
        r(
            "post",
            "/api/v1/migrations/{id}/cancel",
            "Cancel a migration that has not started",
            "admin",
            (200, Some(s::<ActionRow>)),
        ),
        r("get", "/api/v1/guards", "Guards every strategy gets", "read", (200, Some(s::<Guards>))),
        RouteDoc {
            body: Some(s::<Guards>),
            ..r("put", "/api/v1/guards", "Set the guards", "admin", (200, Some(s::<Guards>)))
        },
        r(
            "get",
            "/api/v1/rules",
            "Cluster-wide operator rules (affinity groups, VM-host rules, pinned VMs, maintenance windows, reserve, headroom, inflow)",
            "read",
            (200, Some(s::<OperatorRules>)),
        ),
        RouteDoc {
            body: Some(s::<OperatorRules>),
            ..r(
                "put",
                "/api/v1/rules",
                "Replace the cluster-wide operator rules (validated; applied from the next cycle)",
                "admin",
                (200, Some(s::<OperatorRules>)),
            )
        },
        r("post", "/api/v1/pause", "Pause: no plans, nothing executed", "admin", (200, Some(s::<Guards>))),
        r("post", "/api/v1/resume", "Resume after a pause", "admin", (200, Some(s::<Guards>))),
        r("get", "/api/v1/experiments", "Experiments, newest first", "read", (200, Some(s::<Vec<ExperimentRow>>))),
        RouteDoc {
            body: Some(s::<ExperimentBody>),
            ..r(
                "post",
                "/api/v1/experiments",
                "Start an offline A/B, a live shadow or a live cohort experiment",
                "admin",
                (201, Some(s::<ExperimentRow>)),
            )
        },
        r(
            "get",
            "/api/v1/experiments/{id}",
            "One experiment: progress and result",
            "read",
            (200, Some(s::<ExperimentRow>)),
        ),
        RouteDoc {
            query: &[("limit", "integer", "at most this many")],
            ..r(
                "get",
                "/api/v1/experiments/{id}/cycles",
                "A live experiment's per-cycle records",
                "read",
                (200, Some(s::<Vec<Value>>)),
            )
        },
        RouteDoc {
            content: "text/html",
            ..r(
                "get",
                "/api/v1/experiments/{id}/report",
                "An offline experiment's HTML report",
                "read",
                (200, Some(text)),
            )
        },
        r("post", "/api/v1/experiments/{id}/stop", "Stop a live experiment", "admin", (200, Some(s::<ExperimentRow>))),
        r("get", "/api/v1/traces", "Traces offline experiments can use", "read", (200, Some(s::<Vec<String>>))),
        RouteDoc {
            query: VOLUME_VM,
            ..r(
                "get",
                "/api/v1/volumes",
                "Attached volumes and the connection each node uses",
                "read",
                (200, Some(s::<Vec<VolumeAttachment>>)),
            )
        },
        RouteDoc {
            query: VOLUMES,
            ..r(
                "get",
                "/api/v1/volumes/moves",
                "Volume moves with their VM (intent journal and history), newest first",
                "read",
                (200, Some(s::<Vec<VolumeMove>>)),
            )
        },
        RouteDoc {
            query: &[("limit", "integer", "at most this many")],
            ..r("get", "/api/v1/audit", "Who changed what", "read", (200, Some(s::<Vec<AuditRow>>)))
        },
        RouteDoc {
            query: &[("last_event_id", "integer", "resume after this id (or the Last-Event-ID header)")],
            content: "text/event-stream",
            ..r(
                "get",
                "/api/v1/events",
                "Server-sent events: cycle, plan, action, migration, host, experiment, policy",
                "read",
                (200, Some(text)),
            )
        },
        r("get", "/api/v1/openapi.json", "This document", "read", (200, Some(s::<Value>))),
        RouteDoc { content: "text/plain", ..r("get", "/metrics", "Prometheus metrics", "read", (200, Some(text))) },
        RouteDoc { content: "text/plain", ..r("get", "/healthz", "Liveness", "none", (200, Some(text))) },
    ]
}

fn build() -> String {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    });
    let mut g = SchemaGenerator::new(settings);
    let error = json!({
        "description": "An error: one line that names the cause",
        "content": { J: { "schema": {
            "type": "object", "required": ["error", "status"],
            "properties": { "error": { "type": "string" }, "status": { "type": "integer" } }
        } } }
    });
    let mut paths: Map<String, Value> = Map::new();
    for r in routes() {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_"))),
        );
        let mut params: Vec<Value> = Vec::new();
        for seg in r.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                let ty = if name == "sha" {
                    json!({ "type": "string", "pattern": "^(sha256:)?[0-9a-fA-F]{64}$" })
                } else {
                    json!({ "type": "integer", "minimum": 0 })
                };
                params.push(json!({ "name": name, "in": "path", "required": true, "schema": ty }));
            }
        }
        for (name, ty, desc) in r.query {
            let required = desc.contains("(required)");
            let mut schema = json!({ "type": ty });
            if *ty == "integer" {
                schema["minimum"] = json!(0);
            }
            params.push(
                json!({ "name": name, "in": "query", "required": required, "description": desc, "schema": schema }),
            );
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = r.body {
            let ct = if r.path == "/api/v1/policies" { "application/wasm" } else { J };
            op.insert("requestBody".into(), json!({ "required": true, "content": { ct: { "schema": body(&mut g) } } }));
        }
        let mut responses = Map::new();
        let ok = match r.ok.1 {
            Some(f) => json!({ "description": "OK", "content": { r.content: { "schema": f(&mut g) } } }),
            None => json!({ "description": "Done, no content" }),
        };
        responses.insert(r.ok.0.to_string(), ok);
        if r.auth != "none" {
            responses.insert("401".into(), error.clone());
            responses.insert("403".into(), error.clone());
            op.insert("security".into(), json!([{ "bearer": [] }]));
        }
        for code in ["400", "404", "409", "422"] {
            if r.method != "get" || code == "400" || code == "404" {
                responses.insert(code.into(), error.clone());
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-amvm-role".into(), json!(r.auth));
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = Value::Object(op);
    }
    let schemas = g.take_definitions(true);
    let doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AMVM controller API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Autonomous VM consolidation: world state, plans with their decision traces, policies, strategies, migrations, experiments. Every GET needs a read token, every other method an admin token (Authorization: Bearer …)."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}

/// The document (generated once per process).
pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(build).clone()
}
