//! Charts drawn as SVG by hand: one `<path>` per series over server-downsampled points, and
//! the one time control every chart of a page follows (presets, AVERAGE/MAX, drag to zoom, all
//! in the URL).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::api::{self, Series};
use crate::app::use_set_query;
use crate::fmt;
use crate::store::{use_store, Loader};

pub const PRESETS: [(&str, &str, f64); 6] = [
    ("1h", "Hour", 3600.0),
    ("6h", "6 hours", 6.0 * 3600.0),
    ("1d", "Day", 86_400.0),
    ("1w", "Week", 7.0 * 86_400.0),
    ("1m", "Month", 30.0 * 86_400.0),
    ("1y", "Year", 365.0 * 86_400.0),
];

pub const COLORS: [&str; 11] = [
    "#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16", "#f97316", "#6366f1",
    "#94a3b8",
];

/// The time range of a page's charts.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub from: f64,
    pub to: f64,
    pub cf: String,
    /// The preset, or `None` for an absolute (zoomed) range.
    pub preset: Option<String>,
}

/// The range from the URL (`range`, `from`, `to`, `cf`), else the last one chosen, ending at
/// the world's clock (so preset ranges follow the live world).
pub fn use_range() -> Memo<Range> {
    let q = use_query_map();
    let store = use_store();
    Memo::new(move |_| {
        let q = q.get();
        let now = store.status.with(|s| s.as_ref().map(|s| s.world_time).unwrap_or(0.0));
        let cf = q
            .get("cf")
            .or_else(|| api::local_get("amvm.cf"))
            .filter(|c| c == "MAX" || c == "AVERAGE")
            .unwrap_or_else(|| "AVERAGE".into());
        let from = q.get("from").and_then(|v| v.parse::<f64>().ok());
        let to = q.get("to").and_then(|v| v.parse::<f64>().ok());
        if let (Some(from), Some(to)) = (from, to) {
            if to > from {
                return Range { from, to, cf, preset: None };
            }
        }
        let preset = q
            .get("range")
            .or_else(|| api::local_get("amvm.range"))
            .filter(|p| PRESETS.iter().any(|(k, _, _)| k == p))
            .unwrap_or_else(|| "1d".into());
        let span = PRESETS.iter().find(|(k, _, _)| *k == preset).map(|p| p.2).unwrap_or(86_400.0);
        Range { from: now - span, to: now, cf, preset: Some(preset) }
    })
}

/// Presets, AVERAGE/MAX, zoom out: written to the URL (and remembered for the next page).
#[component]
pub fn TimeControl() -> impl IntoView {
    let range = use_range();
    let set_query = use_set_query();
    let sq = set_query.clone();
    let presets = PRESETS
        .iter()
        .map(|(key, label, _)| {
            let sq = sq.clone();
            let key = *key;
            view! {
                <button
                    class="seg"
                    class:on=move || range.with(|r| r.preset.as_deref() == Some(key))
                    on:click=move |_| {
                        api::local_set("amvm.range", key);
                        sq(&[("range", Some(key)), ("from", None), ("to", None)]);
                    }
                >
                    {*label}
                </button>
            }
        })
        .collect_view();
    let sq2 = set_query.clone();
    let sq3 = set_query.clone();
    view! {
        <div class="timecontrol" role="group" aria-label="Time range of every chart on this page">
            <span class="label">"Range"</span>
            <div class="segs">{presets}</div>
            <div class="segs" role="group" aria-label="Consolidation function">
                {["AVERAGE", "MAX"]
                    .into_iter()
                    .map(|cf| {
                        let sq = sq2.clone();
                        view! {
                            <button
                                class="seg"
                                class:on=move || range.with(|r| r.cf == cf)
                                on:click=move |_| {
                                    api::local_set("amvm.cf", cf);
                                    sq(&[("cf", Some(cf))]);
                                }
                            >
                                {if cf == "MAX" { "Max" } else { "Average" }}
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
            <button
                class="btn small"
                title="Show twice the span"
                on:click=move |_| {
                    let r = range.get_untracked();
                    let span = r.to - r.from;
                    let f = format!("{:.0}", r.from - span / 2.0);
                    let t = format!("{:.0}", r.to + span / 2.0);
                    sq3(&[("from", Some(&f)), ("to", Some(&t))]);
                }
            >
                "Zoom out"
            </button>
            <span class="muted small">
                {move || {
                    let r = range.get();
                    if r.to <= 0.0 {
                        String::new()
                    } else {
                        format!("{} → {} UTC (world clock){}", fmt::time(r.from), fmt::time(r.to), if r.preset.is_none() { " · drag a chart to zoom" } else { "" })
                    }
                }}
            </span>
        </div>
    }
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub color: &'static str,
    pub t: Vec<f64>,
    pub v: Vec<Option<f64>>,
}

impl Line {
    pub fn from_series(label: impl Into<String>, color: &'static str, s: &Series) -> Line {
        Line { label: label.into(), color, t: s.t.clone(), v: s.v.clone() }
    }
}

pub fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "ratio" => fmt::pct(v),
        "W" | "w" | "watts" => fmt::watts(v),
        "kWh" if v >= 100.0 => format!("{v:.0} kWh"),
        "kWh" => format!("{v:.1} kWh"),
        "count" | "hosts" => format!("{v:.0}"),
        "" => fmt::num(v, 2),
        u => format!("{} {u}", fmt::num(v, 2)),
    }
}

const W: f64 = 640.0;
const H: f64 = 180.0;
const ML: f64 = 62.0;
const MR: f64 = 10.0;
const MT: f64 = 10.0;
const MB: f64 = 22.0;

fn nice_max(m: f64) -> f64 {
    if m <= 0.0 || !m.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(m.log10().floor());
    for k in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if k * p >= m {
            return k * p;
        }
    }
    10.0 * p
}

/// The tick step of a count axis: 1, 2 or 5 × 10^k, at least 1.
fn nice_step(m: f64) -> f64 {
    if !(m > 1.0 && m.is_finite()) {
        return 1.0;
    }
    let p = 10f64.powf(m.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|k| k * p).find(|&v| v >= m).unwrap_or(10.0 * p)
}

/// The chart as an SVG document; `stacked` adds the lines up (top-10 VMs).
pub fn svg(lines: &[Line], from: f64, to: f64, unit: &str, stacked: bool, time_labels: bool) -> String {
    let span = (to - from).max(1.0);
    let x = |t: f64| ML + (t - from) / span * (W - ML - MR);
    let mut stack: Vec<Vec<f64>> = Vec::new();
    let mut maxv: f64 = 0.0;
    for l in lines {
        let vals: Vec<f64> = l.v.iter().map(|v| v.unwrap_or(0.0)).collect();
        if stacked {
            let base = stack.last().cloned().unwrap_or_else(|| vec![0.0; vals.len()]);
            let sum: Vec<f64> = vals.iter().enumerate().map(|(i, v)| v + base.get(i).copied().unwrap_or(0.0)).collect();
            maxv = sum.iter().copied().fold(maxv, f64::max);
            stack.push(sum);
        } else {
            maxv = l.v.iter().flatten().copied().fold(maxv, f64::max);
        }
    }
    let ymax = if unit == "ratio" {
        nice_max(maxv.max(0.05)).min(if maxv <= 1.0 { 1.0 } else { f64::MAX })
    } else if matches!(unit, "count" | "hosts") {
        // Whole numbers on all five ticks (two active hosts drew "0 0 1 2 2").
        4.0 * nice_step(maxv / 4.0)
    } else {
        nice_max(maxv)
    };
    let y = |v: f64| MT + (1.0 - v / ymax) * (H - MT - MB);
    let mut s =
        format!(r#"<svg viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" class="chartsvg" role="img">"#);
    for i in 0..=4 {
        let v = ymax * i as f64 / 4.0;
        let yy = y(v);
        s += &format!(
            r#"<line x1="{ML}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            W - MR,
            ML - 6.0,
            yy + 4.0,
            fmt_value(v, unit)
        );
    }
    for i in 0..=4 {
        let t = from + span * i as f64 / 4.0;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let label = if time_labels {
            if span > 3.0 * 86_400.0 {
                fmt::time(t).get(5..10).unwrap_or("").to_string()
            } else {
                fmt::clock(t)
            }
        } else {
            fmt::dur(t - from)
        };
        s += &format!(r#"<text x="{:.1}" y="{}" class="tick" text-anchor="{anchor}">{label}</text>"#, x(t), H - 6.0);
    }
    for (li, l) in lines.iter().enumerate().rev() {
        let mut d = String::new();
        let mut pen = false;
        for (i, t) in l.t.iter().enumerate() {
            let v = if stacked {
                l.v.get(i).copied().flatten().map(|_| stack[li][i])
            } else {
                l.v.get(i).copied().flatten()
            };
            match v {
                // A live bucket may end a little past `to`: drawn at the edge.
                Some(v) if *t >= from - 1.0 && *t <= to + span * 0.02 + 1.0 => {
                    d += &format!("{}{:.1},{:.1}", if pen { "L" } else { "M" }, x(t.min(to)), y(v.min(ymax)));
                    pen = true;
                }
                _ => pen = false,
            }
        }
        if stacked && !d.is_empty() {
            // Area down to the previous layer.
            let prev: Vec<f64> = if li == 0 { vec![0.0; l.t.len()] } else { stack[li - 1].clone() };
            let mut area = String::new();
            for (i, t) in l.t.iter().enumerate() {
                area += &format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x(*t), y(stack[li][i].min(ymax)));
            }
            for (i, t) in l.t.iter().enumerate().rev() {
                area += &format!("L{:.1},{:.1}", x(*t), y(prev[i].min(ymax)));
            }
            s += &format!(r#"<path d="{area}Z" fill="{}" fill-opacity="0.35" stroke="none"/>"#, l.color);
        }
        s += &format!(r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.6"/>"#, l.color);
    }
    if lines.iter().all(|l| l.v.iter().all(|v| v.is_none())) {
        s += &format!(
            r#"<text x="{}" y="{}" class="empty" text-anchor="middle">no data in this range</text>"#,
            (ML + W - MR) / 2.0,
            H / 2.0
        );
    }
    s += "</svg>";
    s
}

/// A chart with a title, its legend, hover read-out and drag-to-zoom (which sets an absolute
/// range in the URL, so every chart of the page follows).
#[component]
pub fn ChartView(
    title: String,
    #[prop(into)] lines: Signal<Vec<Line>>,
    #[prop(into)] unit: Signal<String>,
    from: Signal<f64>,
    to: Signal<f64>,
    #[prop(optional)] stacked: bool,
    #[prop(optional)] relative: bool,
    #[prop(optional, into)] error: Signal<Option<String>>,
) -> impl IntoView {
    let set_query = use_set_query();
    let drag: RwSignal<Option<(f64, f64)>> = RwSignal::new(None);
    let hover: RwSignal<Option<f64>> = RwSignal::new(None);
    let frac = |ev: &web_sys::MouseEvent| -> f64 {
        let el: web_sys::Element = event_target(ev);
        let el = el.closest(".chartbox").ok().flatten().unwrap_or(el);
        let rect = el.get_bounding_client_rect();
        let px = (ev.client_x() as f64 - rect.left()) / rect.width().max(1.0) * W;
        ((px - ML) / (W - ML - MR)).clamp(0.0, 1.0)
    };
    let svg_text = move || {
        let ls = lines.get();
        svg(&ls, from.get(), to.get(), &unit.get(), stacked, !relative)
    };
    let readout = move || {
        let f = hover.get()?;
        let (a, b) = (from.get(), to.get());
        let t = a + f * (b - a);
        let ls = lines.get();
        let u = unit.get();
        let mut parts = Vec::new();
        for l in ls.iter() {
            let i = l.t.iter().enumerate().min_by(|x, y| (x.1 - t).abs().total_cmp(&(y.1 - t).abs())).map(|x| x.0)?;
            let v = l.v.get(i).copied().flatten().map(|v| fmt_value(v, &u)).unwrap_or_else(|| "–".into());
            parts.push(format!("{} {v}", l.label));
        }
        let when = if relative { fmt::dur(t - a) } else { fmt::time(t) };
        Some(format!("{when} · {}", parts.join(" · ")))
    };
    let title2 = title.clone();
    view! {
        <figure class="chart" aria-label=title2>
            <figcaption>
                <span class="ctitle">{title}</span>
                <span class="legend">
                    {move || {
                        let ls = lines.get();
                        if ls.len() < 2 {
                            return ().into_any();
                        }
                        ls.iter()
                            .map(|l| {
                                view! {
                                    <span class="key">
                                        <i style=format!("background:{}", l.color)></i>
                                        {l.label.clone()}
                                    </span>
                                }
                            })
                            .collect_view()
                            .into_any()
                    }}
                </span>
                <span class="readout">{move || readout().unwrap_or_default()}</span>
            </figcaption>
            {move || error.get().map(|e| view! { <p class="error small">{e}</p> })}
            <div
                class="chartbox"
                on:mousedown=move |ev| {
                    if !relative {
                        let f = frac(&ev);
                        drag.set(Some((f, f)));
                    }
                }
                on:mousemove=move |ev| {
                    let f = frac(&ev);
                    hover.set(Some(f));
                    if let Some((a, _)) = drag.get_untracked() {
                        drag.set(Some((a, f)));
                    }
                }
                on:mouseleave=move |_| {
                    hover.set(None);
                    drag.set(None);
                }
                on:mouseup=move |_| {
                    if let Some((a, b)) = drag.get_untracked() {
                        drag.set(None);
                        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                        if hi - lo > 0.01 {
                            let (f0, t0) = (from.get_untracked(), to.get_untracked());
                            let f = format!("{:.0}", f0 + lo * (t0 - f0));
                            let t = format!("{:.0}", f0 + hi * (t0 - f0));
                            set_query(&[("from", Some(&f)), ("to", Some(&t))]);
                        }
                    }
                }
            >
                <div inner_html=svg_text></div>
                {move || {
                    drag.get()
                        .map(|(a, b)| {
                            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                            let l = (ML + lo * (W - ML - MR)) / W * 100.0;
                            let w = (hi - lo) * (W - ML - MR) / W * 100.0;
                            view! { <div class="zoomsel" style=format!("left:{l:.2}%;width:{w:.2}%")></div> }
                        })
                }}
            </div>
        </figure>
    }
}

/// A downsampled window from the server that then grows by live values: a value newer than
/// the last point opens a new bucket (AVERAGE or MAX of what falls into it), points older than
/// the window slide out. The window is fetched again only when the range changes or after a
/// `reload` (see [`SeriesChart`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSeries {
    pub series: Series,
    /// The bucket opened by live values (index, values in it).
    open: Option<(usize, u32)>,
}

impl LiveSeries {
    pub fn new(series: Series) -> LiveSeries {
        LiveSeries { series, open: None }
    }

    /// Adds the value `v` at world time `t`; drops points before `keep_from`.
    pub fn push(&mut self, t: f64, v: Option<f64>, keep_from: f64) {
        let s = &mut self.series;
        let step = s.step_s.max(1.0);
        let max = s.cf == "MAX";
        let last = s.t.last().copied().unwrap_or(s.to);
        match self.open {
            Some((i, n)) if t <= last && i + 1 == s.t.len() => {
                if let Some(x) = v {
                    let old = s.v[i];
                    s.v[i] = Some(match old {
                        None => x,
                        Some(o) if max => o.max(x),
                        Some(o) => (o * f64::from(n) + x) / f64::from(n + 1),
                    });
                    self.open = Some((i, n + 1));
                }
            }
            // Already in the server's window.
            _ if t <= last => {}
            _ => {
                let k = ((t - last) / step).ceil().max(1.0) as usize;
                for j in 1..k.min(1000) {
                    s.t.push(last + j as f64 * step);
                    s.v.push(None);
                }
                s.t.push(last + k as f64 * step);
                s.v.push(v);
                self.open = Some((s.t.len() - 1, u32::from(v.is_some())));
                s.to = s.to.max(t);
            }
        }
        let drop = s.t.iter().take_while(|&&x| x < keep_from - step).count();
        if drop > 0 {
            s.t.drain(..drop);
            s.v.drain(..drop);
            self.open = self.open.and_then(|(i, n)| i.checked_sub(drop).map(|i| (i, n)));
        }
    }
}

/// The newest live value of a series from the store's snapshot: `(world time, value)`.
pub fn live_value(target: &str, id: Option<u32>, metric: &str) -> Option<(f64, Option<f64>)> {
    let store = use_store();
    match target {
        "cluster" => store.status.with(|s| {
            let s = s.as_ref()?;
            let m = &s.metrics;
            let v = match metric {
                "cpu" => m.cpu_util_mean,
                "mem" => m.mem_util_mean,
                "power" => m.power_w,
                "active_hosts" => (m.hosts_up + m.hosts_maintenance) as f64,
                "energy" => m.energy_kwh_today,
                _ => return None,
            };
            Some((s.world_time, Some(v)))
        }),
        "host" => {
            let t = store.tables_t.get();
            let id = id?;
            store.hosts.with(|hs| {
                let h = hs.iter().find(|h| h.id == id)?;
                let v = match metric {
                    "cpu" => Some(h.cpu_util),
                    "mem" => Some(h.mem_util),
                    "power" => Some(h.power_w),
                    "net" => h.net_util,
                    _ => return None,
                };
                Some((t, v))
            })
        }
        "vm" if metric == "cpu" => {
            let t = store.tables_t.get();
            let id = id?;
            store.vms.with(|vs| vs.iter().find(|v| v.id == id).map(|v| (t, Some(v.cpu_util))))
        }
        _ => None,
    }
}

/// What a chart's window is: a preset slides with the world clock (no refetch), an absolute
/// range is fixed; either changing, or a `reload`, refetches.
pub fn use_range_key() -> Memo<(Option<String>, i64, i64, String, bool)> {
    let range = use_range();
    Memo::new(move |_| {
        range.with(|r| {
            let (f, t) = if r.preset.is_none() { (r.from as i64, r.to as i64) } else { (0, 0) };
            (r.preset.clone(), f, t, r.cf.clone(), r.to > 0.0)
        })
    })
}

/// A chart of one server series (`/series`), following the page's range: fetched once per
/// range, then live values are appended.
#[component]
pub fn SeriesChart(
    title: String,
    target: &'static str,
    #[prop(optional)] id: Option<u32>,
    metric: &'static str,
) -> impl IntoView {
    let range = use_range();
    let key = use_range_key();
    let store = use_store();
    let loader = Loader::<Series>::new();
    let data: RwSignal<Option<LiveSeries>> = RwSignal::new(None);
    Effect::new(move |_| {
        let (_, _, _, _, ready) = key.get();
        let _ = store.ticks.reload.get();
        if !ready {
            return;
        }
        let r = range.get_untracked();
        let id = id.map(|i| format!("&id={i}")).unwrap_or_default();
        loader.load(format!(
            "/series?target={target}{id}&metric={metric}&from={:.0}&to={:.0}&cf={}&points=320",
            r.from, r.to, r.cf
        ));
    });
    let loads = RwSignal::new(0u32);
    Effect::new(move |_| {
        if let Some(s) = loader.data.get() {
            data.set(Some(LiveSeries::new(s)));
            loads.update(|n| *n += 1);
        }
    });
    Effect::new(move |_| {
        let Some((t, v)) = live_value(target, id, metric) else { return };
        let r = range.get_untracked();
        if r.preset.is_none() || t <= 0.0 {
            return;
        }
        data.update(|d| {
            if let Some(d) = d {
                d.push(t, v, r.from);
            }
        });
    });
    let lines = Signal::derive(move || {
        data.with(|d| d.as_ref().map(|s| vec![Line::from_series(metric, COLORS[0], &s.series)]).unwrap_or_default())
    });
    let unit = Signal::derive(move || loader.data.with(|d| d.as_ref().map(|s| s.unit.clone()).unwrap_or_default()));
    let from = Signal::derive(move || range.with(|r| r.from));
    let to = Signal::derive(move || range.with(|r| r.to));
    let error = Signal::derive(move || loader.error.get().map(|e| e.to_string()));
    // For tests and the curious: how many fetches, and how far live values took the window.
    let last_t = move || data.with(|d| d.as_ref().and_then(|s| s.series.t.last().copied()).unwrap_or(0.0));
    let fetched_to = move || loader.data.with(|d| d.as_ref().map_or(0.0, |s| s.to));
    view! {
        <div
            class="serieschart"
            data-metric=metric
            data-last-t=move || format!("{:.0}", last_t())
            data-fetched-to=move || format!("{:.0}", fetched_to())
            data-loads=move || loads.get()
        >
            <ChartView title lines unit from to error/>
        </div>
    }
}
