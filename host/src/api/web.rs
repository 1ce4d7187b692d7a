//! The dashboard (`web/`, built and embedded by `build.rs`): `index.html` at `/` and at every
//! page path (so bookmarked URLs such as `/hosts?sort=cpu` load the app), its JS, `.wasm` and CSS
//! under `/assets/`, gzip-compressed when the client accepts it. Everything here is open: the
//! app asks for a token and sends it to `/api/v1`.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

macro_rules! asset {
    ($name:literal) => {
        (
            include_bytes!(concat!(env!("OUT_DIR"), "/web/", $name)).as_slice(),
            include_bytes!(concat!(env!("OUT_DIR"), "/web/", $name, ".gz")).as_slice(),
        )
    };
}

/// (file name, content type, bytes, gzip bytes (empty when not compressed)).
type Asset = (&'static str, &'static str, &'static [u8], &'static [u8]);

fn assets() -> [Asset; 4] {
    let (html, html_gz) = asset!("index.html");
    let (css, css_gz) = asset!("style.css");
    let (js, js_gz) = asset!("amvm-web.js");
    let (wasm, wasm_gz) = asset!("amvm-web_bg.wasm");
    [
        ("index.html", "text/html; charset=utf-8", html, html_gz),
        ("style.css", "text/css; charset=utf-8", css, css_gz),
        ("amvm-web.js", "text/javascript; charset=utf-8", js, js_gz),
        ("amvm-web_bg.wasm", "application/wasm", wasm, wasm_gz),
    ]
}

#[cfg(test)]
/// Sizes of the embedded bundle: (raw bytes, gzip bytes) of the JS, `.wasm`, HTML and CSS.
pub fn bundle_size() -> (usize, usize) {
    assets().iter().fold((0, 0), |(r, g), a| (r + a.2.len(), g + if a.3.is_empty() { a.2.len() } else { a.3.len() }))
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(&(_, ctype, raw, gz)) = assets().iter().find(|a| a.0 == name) else {
        return super::ApiError::not_found(format!("asset {name}")).into_response();
    };
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut resp = if gzip_ok && !gz.is_empty() {
        let mut r = gz.into_response();
        r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        raw.into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // File names are not content-hashed: revalidate every time (the bytes come from memory).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    *resp.status_mut() = StatusCode::OK;
    resp
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// The dashboard's pages (client-side routes of `web/src/app.rs`) and assets.
pub(super) fn router() -> Router<AppState> {
    let mut r = Router::new().route("/assets/{name}", get(asset));
    for page in [
        "/",
        "/index.html",
        "/hosts",
        "/hosts/{id}",
        "/vms",
        "/vms/{id}",
        "/migrations",
        "/plans",
        "/policies",
        "/experiments",
    ] {
        r = r.route(page, get(index));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded() {
        for (name, _, raw, _) in assets() {
            assert!(!raw.is_empty() || name != "index.html", "{name} is empty");
        }
        let (raw, gz) = bundle_size();
        assert!(gz <= raw);
    }
}
