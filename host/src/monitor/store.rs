//! The RRD store: file layout, schema, and the librrd calls (create, batched update, fetch, graph).
//!
//! Layout (Ganglia-compatible for hosts; VMs keyed by UUID so history survives migrations):
//!
//! ```text
//! DIR/rrds/<cluster>/<host>/<metric>.rrd
//! DIR/rrds/<cluster>/vms/<vm-uuid>/<metric>.rrd
//! ```
//!
//! Each file holds one data source named like the metric. Schema for the default 15 s step:
//! heartbeat 4 steps (60 s); `GAUGE` for levels, `DERIVE` with minimum 0 for counters; RRAs with
//! AVERAGE and MAX of 1 step × 1440 rows (6 h), 4 × 1440 (1 day at 1 min), 40 × 1008 (7 days at
//! 10 min), 240 × 744 (31 days at 1 h), 5760 × 366 (1 year at 1 day). A shorter `--step` (tests)
//! shrinks every coverage by the same factor.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use rrd::ops::{create, fetch, graph, update};
use rrd::ConsolidationFn;

use super::metric::{Kind, Metric, Scope};
use super::proto::{uuid_string, valid_name};

/// Host directory name reserved for VM series.
pub const VMS_DIR: &str = "vms";

/// RRA rows: (primary data points per row, rows). Coverage at a 15 s step in the comment.
pub const ARCHIVES: [(u32, u32); 5] = [
    (1, 1440),   // 6 h at 15 s
    (4, 1440),   // 1 day at 1 min
    (40, 1008),  // 7 days at 10 min
    (240, 744),  // 31 days at 1 h
    (5760, 366), // 1 year at 1 day
];

/// Errors of the RRD store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("librrd failed on {0}")]
    Rrd(PathBuf, #[source] rrd::error::RrdError),
    #[error("invalid series: {0}")]
    Series(String),
    #[error("no data in {0} for the requested window")]
    NoData(PathBuf),
}

/// Identifies one series (one RRD file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub cluster: String,
    pub owner: Owner,
    pub metric: Metric,
}

/// A host by name or a VM by UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Host(String),
    Vm([u8; 16]),
}

impl SeriesKey {
    /// Path of this series' file under `data`.
    pub fn path(&self, data: &Path) -> PathBuf {
        let mut p = data.join("rrds").join(&self.cluster);
        match &self.owner {
            Owner::Host(h) => p.push(h),
            Owner::Vm(u) => {
                p.push(VMS_DIR);
                p.push(uuid_string(u));
            }
        }
        p.push(format!("{}.rrd", self.metric.name()));
        p
    }

    /// Builds and validates a key from user input (names, metric, optional VM UUID).
    pub fn parse(cluster: &str, host: Option<&str>, vm: Option<&str>, metric: &str) -> Result<Self, StoreError> {
        if !valid_name(cluster) {
            return Err(StoreError::Series(format!("bad cluster name {cluster:?}")));
        }
        let metric =
            Metric::from_name(metric).ok_or_else(|| StoreError::Series(format!("unknown metric {metric:?}")))?;
        let owner = match (vm, host) {
            (Some(u), _) => {
                Owner::Vm(super::proto::parse_uuid(u).ok_or_else(|| StoreError::Series(format!("bad VM UUID {u:?}")))?)
            }
            (None, Some(h)) if valid_name(h) && h != VMS_DIR => Owner::Host(h.to_string()),
            (None, Some(h)) => return Err(StoreError::Series(format!("bad host name {h:?}"))),
            (None, None) => return Err(StoreError::Series("give a host or a VM".into())),
        };
        let want = if matches!(owner, Owner::Vm(_)) { Scope::Vm } else { Scope::Host };
        if metric.scope() != want {
            return Err(StoreError::Series(format!(
                "{} is not a {} metric",
                metric.name(),
                if want == Scope::Vm { "VM" } else { "host" }
            )));
        }
        Ok(Self { cluster: cluster.to_string(), owner, metric })
    }
}

/// Creates the RRD file for `metric` at `path` (parents too), starting just before `first_ts`.
pub fn create_file(path: &Path, metric: Metric, step: u32, first_ts: u64) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
    }
    let step = step.max(1);
    let ds_name = create::DataSourceName::new(metric.name()).map_err(|e| StoreError::Rrd(path.into(), e.into()))?;
    let heartbeat = step * 4;
    let ds = match metric.kind() {
        Kind::Gauge => create::DataSource::gauge(&ds_name, heartbeat, None, None),
        Kind::Counter => create::DataSource::derive(&ds_name, heartbeat, Some(0), None),
    };
    let mut rras = Vec::new();
    for cf in [ConsolidationFn::Avg, ConsolidationFn::Max] {
        for (pdp, rows) in ARCHIVES {
            rras.push(create::Archive::new(cf, 0.5, pdp, rows).map_err(|e| StoreError::Rrd(path.into(), e.into()))?);
        }
    }
    let start = UNIX_EPOCH + Duration::from_secs(first_ts.saturating_sub(1).max(1));
    create::create(path, start, Duration::from_secs(step.into()), true, None, &[], [&ds], rras.iter())
        .map_err(|e| StoreError::Rrd(path.into(), e))
}

/// Writes samples (seconds, value) to one file in a single librrd call. Samples must be sorted by
/// time with no duplicates; ones not newer than the file's last update are skipped by librrd.
pub fn update_file(path: &Path, samples: &[(u64, Option<f64>)]) -> Result<(), StoreError> {
    let batch: Vec<(update::BatchTime, [update::Datum; 1])> = samples
        .iter()
        .map(|(t, v)| {
            let d = match v {
                Some(v) => update::Datum::Float(*v),
                None => update::Datum::Unspecified,
            };
            (update::BatchTime::Timestamp(UNIX_EPOCH + Duration::from_secs(*t)), [d])
        })
        .collect();
    let opts = update::Options { skip_past_updates: true };
    update::update_all(path, opts, batch.iter()).map_err(|e| StoreError::Rrd(path.into(), e))
}

/// Fetched points: (unix seconds, value or unknown), at the archive's resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Points {
    pub step: u64,
    pub points: Vec<(u64, Option<f64>)>,
}

/// Reads `[start, end]` of one file with the given consolidation function.
pub fn fetch_file(
    path: &Path,
    cf: ConsolidationFn,
    start: u64,
    end: u64,
    resolution: u64,
) -> Result<Points, StoreError> {
    let data = fetch::fetch(
        path,
        cf,
        UNIX_EPOCH + Duration::from_secs(start),
        UNIX_EPOCH + Duration::from_secs(end),
        Duration::from_secs(resolution.max(1)),
    )
    .map_err(|e| StoreError::Rrd(path.into(), e))?;
    let step = data.step().as_secs();
    let mut points = Vec::with_capacity(data.row_count());
    for row in data.rows().iter() {
        let t = row.timestamp().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let v = row.as_slice().first().copied().filter(|v| v.is_finite());
        points.push((t, v));
    }
    Ok(Points { step, points })
}

/// librrd 1.7's graph code keeps global state: one graph at a time per process.
static GRAPH_LOCK: Mutex<()> = Mutex::new(());

/// Renders a PNG line graph of one series over `[start, end]`.
pub fn graph_png(path: &Path, metric: Metric, title: &str, start: u64, end: u64) -> Result<Vec<u8>, StoreError> {
    graph_file(
        path,
        &GraphSpec { ds: metric.name(), title, vertical_label: None, cf: ConsolidationFn::Avg },
        start,
        end,
    )
}

/// What to draw from one single-source RRD file.
#[derive(Debug, Clone, Copy)]
pub struct GraphSpec<'a> {
    /// Data source name, also the legend.
    pub ds: &'a str,
    pub title: &'a str,
    pub vertical_label: Option<&'a str>,
    pub cf: ConsolidationFn,
}

/// Renders a PNG line graph of the data source `spec.ds` of `path` over `[start, end]`.
pub fn graph_file(path: &Path, spec: &GraphSpec<'_>, start: u64, end: u64) -> Result<Vec<u8>, StoreError> {
    use graph::elements::{ColorWithLegend, Def, Legend, Line, VarName};
    let err = |e: rrd::error::RrdError| StoreError::Rrd(path.into(), e);
    let var = VarName::new("v").map_err(|e| err(e.into()))?;
    let props = graph::props::GraphProps {
        time_range: graph::props::TimeRange {
            start: Some(UNIX_EPOCH + Duration::from_secs(start)),
            end: Some(UNIX_EPOCH + Duration::from_secs(end)),
            step_seconds: None,
        },
        labels: graph::props::Labels {
            title: Some(spec.title.to_string()),
            vertical_label: spec.vertical_label.map(str::to_string),
        },
        ..Default::default()
    };
    let elements = [
        Def {
            var_name: var.clone(),
            rrd: path.to_path_buf(),
            ds_name: spec.ds.to_string(),
            consolidation_fn: spec.cf,
            step: None,
            start: None,
            end: None,
            reduce: None,
        }
        .into(),
        Line {
            width: 2.0,
            value: var,
            color: Some(ColorWithLegend {
                color: graph::Color { red: 0x1f, green: 0x77, blue: 0xb4, alpha: None },
                legend: Some(Legend::new(spec.ds)),
            }),
            stack: false,
            skip_scale: false,
            dashes: None,
        }
        .into(),
    ];
    let _guard = GRAPH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (png, _meta) = graph::graph(graph::props::ImageFormat::Png, &props, &elements).map_err(err)?;
    Ok(png)
}

/// Renders points `(unix seconds, value)` (sorted, one per `step`) the stock way: a temporary
/// RRD file with AVERAGE and MAX archives of one point per step, `rrd_update` of the points,
/// then `rrd_graph` to PNG. For series that live in memory (the simulated world's history).
pub fn graph_points_png(
    points: &[(u64, Option<f64>)],
    step: u32,
    spec: &GraphSpec<'_>,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, StoreError> {
    let dir = tempfile::Builder::new()
        .prefix("amvm-graph-")
        .tempdir()
        .map_err(|e| StoreError::Dir(std::env::temp_dir(), e))?;
    let path = dir.path().join("series.rrd");
    let step = step.max(1);
    let ds_name = create::DataSourceName::new(spec.ds).map_err(|e| StoreError::Rrd(path.clone(), e.into()))?;
    let ds = create::DataSource::gauge(&ds_name, step * 2, None, None);
    let rows = u32::try_from(points.len() + 2).unwrap_or(u32::MAX).clamp(2, 200_000);
    let mut rras = Vec::new();
    for cf in [ConsolidationFn::Avg, ConsolidationFn::Max] {
        rras.push(create::Archive::new(cf, 0.5, 1, rows).map_err(|e| StoreError::Rrd(path.clone(), e.into()))?);
    }
    let first = points.first().map_or(start, |p| p.0).min(start).saturating_sub(u64::from(step)).max(1);
    create::create(
        &path,
        UNIX_EPOCH + Duration::from_secs(first),
        Duration::from_secs(step.into()),
        false,
        None,
        &[],
        [&ds],
        rras.iter(),
    )
    .map_err(|e| StoreError::Rrd(path.clone(), e))?;
    let mut clean: Vec<(u64, Option<f64>)> = Vec::with_capacity(points.len());
    for &(t, v) in points {
        if t > first && clean.last().is_none_or(|l| t > l.0) {
            clean.push((t, v.filter(|v| v.is_finite())));
        }
    }
    if !clean.is_empty() {
        update_file(&path, &clean)?;
    }
    graph_file(&path, spec, start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_update_fetch_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = SeriesKey { cluster: "c".into(), owner: Owner::Host("h".into()), metric: Metric::CpuIdle };
        let path = key.path(dir.path());
        assert!(path.ends_with("rrds/c/h/cpu_idle.rrd"));
        let t0 = 1_700_000_000 / 15 * 15;
        create_file(&path, Metric::CpuIdle, 15, t0).unwrap();
        let samples: Vec<_> = (0..20).map(|i| (t0 + 15 * i, Some(50.0))).collect();
        update_file(&path, &samples).unwrap();
        // Re-sending old samples is skipped, not an error.
        update_file(&path, &samples[..3]).unwrap();
        let got = fetch_file(&path, ConsolidationFn::Avg, t0 + 30, t0 + 15 * 18, 15).unwrap();
        assert_eq!(got.step, 15);
        let known: Vec<f64> = got.points.iter().filter_map(|p| p.1).collect();
        assert!(known.len() >= 10, "{got:?}");
        assert!(known.iter().all(|v| (*v - 50.0).abs() < 1e-9));

        let counter = SeriesKey { cluster: "c".into(), owner: Owner::Vm([7; 16]), metric: Metric::VbytesIn };
        let cpath = counter.path(dir.path());
        assert!(cpath.to_string_lossy().contains("rrds/c/vms/07070707-0707-"));
        create_file(&cpath, Metric::VbytesIn, 15, t0).unwrap();
        let samples: Vec<_> = (0..20).map(|i| (t0 + 15 * i, Some(1500.0 * i as f64))).collect();
        update_file(&cpath, &samples).unwrap();
        let got = fetch_file(&cpath, ConsolidationFn::Avg, t0 + 30, t0 + 15 * 18, 15).unwrap();
        let rates: Vec<f64> = got.points.iter().filter_map(|p| p.1).collect();
        assert!(rates.iter().all(|v| (*v - 100.0).abs() < 1e-6), "{rates:?}");

        let png = graph_png(&path, Metric::CpuIdle, "cpu_idle", t0, t0 + 300).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn points_in_memory_graph_through_a_temporary_rrd() {
        let t0 = 1_700_000_100 / 300 * 300;
        let points: Vec<_> = (1..=48).map(|i| (t0 + 300 * i, (i % 5 != 0).then_some(f64::from(i as u32)))).collect();
        let spec = GraphSpec { ds: "cpu", title: "cpu", vertical_label: Some("%"), cf: ConsolidationFn::Max };
        let png = graph_points_png(&points, 300, &spec, t0, t0 + 300 * 48).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 1000, "{} bytes", png.len());
        // No points at all still draws (an empty graph), bad names are refused.
        assert_eq!(&graph_points_png(&[], 300, &spec, t0, t0 + 600).unwrap()[1..4], b"PNG");
        let bad = GraphSpec { ds: "no spaces allowed", ..spec };
        assert!(graph_points_png(&points, 300, &bad, t0, t0 + 600).is_err());
    }

    #[test]
    fn series_keys_validate_input() {
        assert!(SeriesKey::parse("c", Some("h"), None, "cpu_idle").is_ok());
        assert!(SeriesKey::parse("c", Some("../etc"), None, "cpu_idle").is_err());
        assert!(SeriesKey::parse("c", Some("vms"), None, "cpu_idle").is_err());
        assert!(SeriesKey::parse("c", Some("h"), None, "vcpu_util").is_err());
        assert!(SeriesKey::parse("c", None, Some("not-a-uuid"), "vcpu_util").is_err());
        assert!(SeriesKey::parse("c", None, Some("6695eb01-f6a4-8304-79aa-97f2502e193f"), "vcpu_util").is_ok());
        assert!(SeriesKey::parse("c", Some("h"), None, "bogus").is_err());
    }
}
