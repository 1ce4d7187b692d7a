//! The controller's HTTP API (axum) under `/api/v1`, JSON in and out.
//!
//! Every GET needs a `read` (or `admin`) bearer token, every mutating route an `admin` one;
//! `/healthz` is open and `/metrics` is open unless configured otherwise. Errors are JSON
//! `{"error": "...", "status": N}` with one line that names the cause. Bodies are size-limited
//! (module uploads 16 MiB by default, everything else 1 MiB). The route table in
//! [`routes::ROUTES`] is also what `/api/v1/openapi.json` is generated from.

pub mod auth;
mod charts;
mod openapi;
mod prometheus;
mod routes;
mod web;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::controller::Shared;
pub use auth::{Role, Tokens};

/// Largest module upload by default (bytes).
pub const DEFAULT_UPLOAD_LIMIT: usize = 16 << 20;
/// Largest body of any other request (bytes).
pub const BODY_LIMIT: usize = 1 << 20;

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub tokens: Tokens,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    pub upload_limit: usize,
    /// PlanetLab day directories offline experiments may use.
    pub traces_root: PathBuf,
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub cfg: Arc<ApiConfig>,
}

/// A JSON error with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: one_line(&message.into()) }
    }
    pub fn bad(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(what: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, format!("{} not found", what.into()))
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "API request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}"))
    }
}

impl<E: Into<anyhow::Error>> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError::internal(format!("{:#}", e.into()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "status": self.status.as_u16() });
        (self.status, axum::Json(body)).into_response()
    }
}

/// One line, printable, at most 500 characters: what reaches a client or a log from text we
/// did not write (module descriptors, parse errors).
pub fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if out.chars().count() > 500 {
        out = out.chars().take(497).collect::<String>() + "...";
    }
    out
}

/// The caller of a request, set by the auth layer.
#[derive(Debug, Clone)]
pub struct Who(pub auth::Caller);

async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/healthz"
        || (path == "/metrics" && st.cfg.metrics_public)
        || !path.starts_with("/api/") && path != "/metrics";
    let needed =
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) { Role::Read } else { Role::Admin };
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        // EventSource cannot set headers: the dashboard passes the token in the query.
        .map(str::to_string)
        .or_else(|| {
            req.uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=").map(|t| t.to_string())))
        });
    let caller = token.as_deref().and_then(|t| st.cfg.tokens.check(t));
    if !open {
        match &caller {
            None => {
                let mut r = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    if token.is_some() {
                        "invalid token"
                    } else {
                        "a bearer token is required (Authorization: Bearer …)"
                    },
                )
                .into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            Some(c) if c.role < needed => {
                return ApiError::new(StatusCode::FORBIDDEN, "this needs an admin token").into_response();
            }
            _ => {}
        }
    }
    if let Some(c) = caller {
        req.extensions_mut().insert(Who(c));
    }
    next.run(req).await
}

/// Every error leaves as JSON with one line: also axum's own rejections (a path or query value
/// that does not parse, a body over its limit, a wrong content type), which answer plain text.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.into_owned()
    };
    let mut out = ApiError::new(status, message).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// The whole application: API, `/metrics`, `/healthz`.
pub fn app(state: AppState) -> Router {
    routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}
