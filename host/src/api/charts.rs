//! Chart helpers of the API: recent samples of many hosts or VMs in one request (the tables'
//! sparklines) and the stock RRD graph (PNG drawn by librrd) of one host or VM series.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::controller::world::SeriesQuery;
use crate::monitor::store::{graph_points_png, GraphSpec};

type ApiResult<T> = Result<T, ApiError>;

/// Most ids one sparkline request may name (a table shows a few dozen rows at a time).
pub const MAX_SPARK_IDS: usize = 500;

/// Query of `GET /sparklines`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SparkParams {
    /// `host` or `vm`.
    pub target: String,
    /// `cpu` (hosts and VMs), `mem`, `power` (hosts).
    pub metric: String,
    /// Comma-separated ids, at most 500.
    pub ids: String,
    /// Points per id (default 24, at most 200).
    pub points: Option<usize>,
    /// Seconds of world time back from now (default 7200, at most 7 days).
    pub span_s: Option<f64>,
    #[serde(default)]
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

/// One id's recent values.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Spark {
    pub id: u32,
    /// `null` = no data for that point.
    pub v: Vec<Option<f64>>,
}

/// `GET /sparklines`: the same window for every id.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Sparklines {
    pub target: String,
    pub metric: String,
    pub unit: String,
    pub from: f64,
    pub to: f64,
    pub step_s: f64,
    pub series: Vec<Spark>,
}

fn parse_ids(text: &str) -> ApiResult<Vec<u32>> {
    let ids: Vec<u32> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| ApiError::bad(format!("ids: {s:?} is not an id"))))
        .collect::<ApiResult<_>>()?;
    if ids.is_empty() || ids.len() > MAX_SPARK_IDS {
        return Err(ApiError::bad(format!("ids: give 1 to {MAX_SPARK_IDS} ids, comma-separated")));
    }
    Ok(ids)
}

pub async fn sparklines(State(st): State<AppState>, Query(p): Query<SparkParams>) -> ApiResult<Json<Sparklines>> {
    if p.target != "host" && p.target != "vm" {
        return Err(ApiError::bad(format!("target {:?}: host or vm", p.target)));
    }
    let ids = parse_ids(&p.ids)?;
    let points = p.points.unwrap_or(24);
    if points == 0 || points > 200 {
        return Err(ApiError::bad(format!("points must be 1..=200, not {points}")));
    }
    let span = p.span_s.unwrap_or(7200.0);
    if !span.is_finite() || span <= 0.0 || span > 7.0 * 86_400.0 {
        return Err(ApiError::bad("span_s must be in (0, 604800]"));
    }
    let to = st.shared.view().world_time;
    let source = st.shared.series.clone();
    let (target, metric) = (p.target, p.metric);
    let out = tokio::task::spawn_blocking(move || -> Result<Sparklines, String> {
        let mut out = Sparklines {
            target: target.clone(),
            metric: metric.clone(),
            unit: String::new(),
            from: to - span,
            to,
            step_s: span / points as f64,
            series: Vec::with_capacity(ids.len()),
        };
        for id in ids {
            let q = SeriesQuery {
                target: target.clone(),
                id: Some(id),
                metric: metric.clone(),
                from: Some(to - span),
                to: Some(to),
                cf: Some("AVERAGE".into()),
                points: Some(points),
            };
            let d = source.series(&q)?;
            (out.unit, out.step_s) = (d.unit, d.step_s);
            out.series.push(Spark { id, v: d.v });
        }
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?;
    out.map(Json).map_err(ApiError::bad)
}

/// Query of `GET /hosts/{id}/graph.png` and `GET /vms/{id}/graph.png`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphParams {
    /// `cpu` (default), `mem`, `power` (hosts).
    pub metric: Option<String>,
    /// `1h`, `6h`, `1d` (default), `1w`, `1m`, `1y`, ending now; or `from` and `to`.
    pub range: Option<String>,
    /// Unix seconds (world clock).
    pub from: Option<f64>,
    pub to: Option<f64>,
    /// `AVERAGE` (default) or `MAX`.
    pub cf: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

fn range_s(key: &str) -> Option<f64> {
    Some(match key {
        "1h" => 3600.0,
        "6h" => 6.0 * 3600.0,
        "1d" => 86_400.0,
        "1w" => 7.0 * 86_400.0,
        "1m" => 30.0 * 86_400.0,
        "1y" => 365.0 * 86_400.0,
        _ => return None,
    })
}

pub async fn host_graph(st: State<AppState>, Path(id): Path<u32>, q: Query<GraphParams>) -> ApiResult<Response> {
    graph(st, "host", id, q).await
}

pub async fn vm_graph(st: State<AppState>, Path(id): Path<u32>, q: Query<GraphParams>) -> ApiResult<Response> {
    graph(st, "vm", id, q).await
}

async fn graph(
    State(st): State<AppState>,
    target: &'static str,
    id: u32,
    Query(p): Query<GraphParams>,
) -> ApiResult<Response> {
    let count = if target == "host" { st.shared.info.hosts } else { st.shared.info.vms };
    if id as usize >= count {
        return Err(ApiError::not_found(format!("{} {id}", if target == "host" { "host" } else { "VM" })));
    }
    let metric = p.metric.unwrap_or_else(|| "cpu".into());
    let cf = p.cf.unwrap_or_else(|| "AVERAGE".into()).to_ascii_uppercase();
    let rrd_cf = match cf.as_str() {
        "AVERAGE" => rrd::ConsolidationFn::Avg,
        "MAX" => rrd::ConsolidationFn::Max,
        other => return Err(ApiError::bad(format!("cf must be AVERAGE or MAX, not {other:?}"))),
    };
    let now = st.shared.view().world_time;
    let (from, to) = match (p.from, p.to, p.range.as_deref()) {
        (Some(f), Some(t), None) if f > 0.0 && t <= 4e9 && t - f >= 60.0 => (f, t),
        (None, None, r) => {
            let key = r.unwrap_or("1d");
            let span = range_s(key).ok_or_else(|| ApiError::bad(format!("range {key:?}: 1h, 6h, 1d, 1w, 1m or 1y")))?;
            (now - span, now)
        }
        _ => {
            return Err(ApiError::bad(
                "give range, or from and to (Unix seconds, at least 60 s apart, before 2096), not both",
            ))
        }
    };
    let interval = st.shared.info.interval_s.max(1.0);
    let points = ((to - from) / interval).ceil().clamp(1.0, 5000.0) as usize;
    let q = SeriesQuery {
        target: target.into(),
        id: Some(id),
        metric: metric.clone(),
        from: Some(from),
        to: Some(to),
        cf: Some(cf.clone()),
        points: Some(points),
    };
    let source = st.shared.series.clone();
    let title = format!("{} {id} {metric} ({cf})", if target == "host" { "host" } else { "VM" });
    let png = tokio::task::spawn_blocking(move || -> Result<Result<Vec<u8>, String>, ApiError> {
        let data = match source.series(&q) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let percent = data.unit == "ratio";
        let pts: Vec<(u64, Option<f64>)> = data
            .t
            .iter()
            .zip(&data.v)
            .filter(|(t, _)| **t > 0.0)
            .map(|(t, v)| (t.round() as u64, v.map(|v| if percent { v * 100.0 } else { v })))
            .collect();
        let label = if percent { "%".to_string() } else { data.unit.clone() };
        let spec = GraphSpec { ds: &metric, title: &title, vertical_label: Some(&label), cf: rrd_cf };
        let step = data.step_s.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        graph_points_png(&pts, step, &spec, from.max(1.0) as u64, to.max(2.0) as u64).map(Ok).map_err(|e| {
            ApiError::internal(format!(
                "{e}: {}",
                std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
            ))
        })
    })
    .await
    .map_err(ApiError::internal)??
    .map_err(ApiError::bad)?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-store")], png).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbers_and_bounded() {
        assert_eq!(parse_ids("1, 2,3").unwrap(), vec![1, 2, 3]);
        assert!(parse_ids("").is_err());
        assert!(parse_ids("1,x").is_err());
        let many = (0..=MAX_SPARK_IDS).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(parse_ids(&many).is_err());
        assert_eq!(range_s("1w"), Some(604_800.0));
        assert_eq!(range_s("2d"), None);
    }
}
