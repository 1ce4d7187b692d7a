//! Overview: cluster summary, the host tile grid (one canvas, so 10,000 hosts draw in
//! milliseconds) coloured by a chosen metric, and the cluster graphs.

use leptos::prelude::*;
use leptos_router::hooks::use_navigate;
use leptos_router::NavigateOptions;
use wasm_bindgen::JsCast;

use crate::api::Host;
use crate::app::use_set_query;
use crate::chart::{SeriesChart, TimeControl};
use crate::fmt;
use crate::pages::query;
use crate::store::use_store;

pub const METRICS: [(&str, &str); 5] =
    [("cpu", "CPU"), ("mem", "Memory"), ("power", "Power"), ("vms", "VMs"), ("state", "State")];

/// The value (0..1 for the colour scale) and its label.
fn value(h: &Host, metric: &str, max_power: f64, max_vms: f64) -> (f64, String) {
    match metric {
        "mem" => (h.mem_util.clamp(0.0, 1.0), fmt::pct(h.mem_util)),
        "power" => (h.power_w / max_power.max(1.0), fmt::watts(h.power_w)),
        "vms" => (h.vms.len() as f64 / max_vms.max(1.0), format!("{} VMs", h.vms.len())),
        "state" => (0.0, h.state.clone()),
        _ => (h.cpu_util.clamp(0.0, 1.0), fmt::pct(h.cpu_util)),
    }
}

/// Green → amber → red.
fn heat(x: f64) -> String {
    let x = x.clamp(0.0, 1.0);
    let (r, g, b) = if x < 0.5 {
        let k = x / 0.5;
        (34.0 + k * (234.0 - 34.0), 160.0 + k * (179.0 - 160.0), 90.0 - k * 82.0)
    } else {
        let k = (x - 0.5) / 0.5;
        (234.0 + k * (220.0 - 234.0), 179.0 - k * (179.0 - 38.0), 8.0 + k * 30.0)
    };
    format!("rgb({r:.0},{g:.0},{b:.0})")
}

fn state_color(state: &str) -> &'static str {
    match state {
        "up" => "#22a05a",
        "asleep" => "#64748b",
        "down" => "#dc2626",
        "maintenance" => "#d97706",
        _ => "#a855f7",
    }
}

fn tile_size(n: usize) -> f64 {
    match n {
        0..=300 => 26.0,
        301..=1500 => 14.0,
        1501..=4000 => 10.0,
        _ => 7.0,
    }
}

#[component]
pub fn Overview() -> impl IntoView {
    let store = use_store();
    let metric = query("metric");
    let sort = query("sort");
    let set_query = use_set_query();
    let s = move || store.status.get();
    let card = |label: &'static str,
                value: Box<dyn Fn() -> String + Send + Sync>,
                sub: Box<dyn Fn() -> String + Send + Sync>,
                id: &'static str| {
        view! {
            <div class="stat" data-testid=id>
                <div class="slabel">{label}</div>
                <div class="svalue">{move || value()}</div>
                <div class="ssub muted">{move || sub()}</div>
            </div>
        }
    };
    let m = move || s().map(|s| s.metrics).unwrap_or_default();
    let loaded = move || store.status.with(|s| s.is_some());
    let cards = view! {
        <section class="stats" aria-label="Cluster summary">
            {card(
                "Hosts up",
                Box::new(move || if loaded() { fmt::int(m().hosts_up as u64) } else { "…".into() }),
                Box::new(move || {
                    let m = m();
                    format!("of {} · {} asleep · {} down · {} maint.", m.hosts, m.hosts_asleep, m.hosts_down, m.hosts_maintenance)
                }),
                "stat-hosts",
            )}
            {card(
                "VMs",
                Box::new(move || if loaded() { fmt::int(m().vms as u64) } else { "…".into() }),
                Box::new(move || format!("mean host CPU {}", fmt::pct(m().cpu_util_mean))),
                "stat-vms",
            )}
            {card(
                "Power now",
                Box::new(move || if loaded() { fmt::watts(m().power_w) } else { "…".into() }),
                Box::new(move || format!("{:.1} kWh today", m().energy_kwh_today)),
                "stat-power",
            )}
            {card(
                "SLATAH",
                Box::new(move || if loaded() { fmt::pct(m().slatah) } else { "…".into() }),
                Box::new(move || format!("PDM {}", fmt::pct(m().pdm))),
                "stat-sla",
            )}
            {card(
                "Migrations in flight",
                Box::new(move || if loaded() { fmt::int(m().migrations_in_flight as u64) } else { "…".into() }),
                Box::new(move || format!("{} today · {} host shutdowns", fmt::int(m().migrations_today), fmt::int(m().host_shutdowns_today))),
                "stat-migrations",
            )}
            {card(
                "Load std. dev.",
                Box::new(move || if loaded() { fmt::pct(m().load_stddev) } else { "…".into() }),
                Box::new(move || "std. dev. of host CPU".into()),
                "stat-stddev",
            )}
            {card(
                "Strategy",
                Box::new(move || {
                    s().and_then(|s| s.strategy).map(|st| format!("{} v{}", st.name, st.version)).unwrap_or_else(|| "none".into())
                }),
                Box::new(move || {
                    s().map(|s| {
                            let a = s.strategy.map(|st| st.automation).unwrap_or_default();
                            let paused = if s.guards.paused { " · PAUSED" } else { "" };
                            format!("{a}{paused} · last cycle {} planned, {} refused", s.last_cycle.migrations_planned, s.last_cycle.refused)
                        })
                        .unwrap_or_default()
                }),
                "stat-strategy",
            )}
        </section>
    };
    let sq = set_query.clone();
    let sq2 = set_query.clone();
    view! {
        <div class="pagehead">
            <h1>"Overview"</h1>
            <span class="muted">{move || s().map(|s| s.world.description).unwrap_or_default()}</span>
        </div>
        {cards}
        <section class="card">
            <div class="cardhead">
                <h2>"Hosts"</h2>
                <label for="grid-metric">"Colour by"</label>
                <select
                    id="grid-metric"
                    on:change=move |ev| sq(&[("metric", Some(&event_target_value(&ev)))])
                    prop:value=move || metric.get().unwrap_or_else(|| "cpu".into())
                >
                    {METRICS.iter().map(|(k, l)| view! { <option value=*k>{*l}</option> }).collect_view()}
                </select>
                <label for="grid-sort">"Sort"</label>
                <select
                    id="grid-sort"
                    on:change=move |ev| sq2(&[("sort", Some(&event_target_value(&ev)))])
                    prop:value=move || sort.get().unwrap_or_else(|| "id".into())
                >
                    <option value="id">"Host id"</option>
                    <option value="value">"Value, highest first"</option>
                    <option value="state">"State"</option>
                </select>
                <Legend metric=Signal::derive(move || metric.get().unwrap_or_else(|| "cpu".into()))/>
            </div>
            <HostGrid
                metric=Signal::derive(move || metric.get().unwrap_or_else(|| "cpu".into()))
                sort=Signal::derive(move || sort.get().unwrap_or_else(|| "id".into()))
            />
        </section>
        <section class="card">
            <div class="cardhead">
                <h2>"Cluster"</h2>
                <TimeControl/>
            </div>
            <div class="charts">
                <SeriesChart title="CPU (mean utilization of active hosts)".into() target="cluster" metric="cpu"/>
                <SeriesChart title="Memory (mean utilization of active hosts)".into() target="cluster" metric="mem"/>
                <SeriesChart title="Power".into() target="cluster" metric="power"/>
                <SeriesChart title="Active hosts".into() target="cluster" metric="active_hosts"/>
                <SeriesChart title="Energy today".into() target="cluster" metric="energy"/>
            </div>
            <p class="muted small">
                "Network traffic is charted per host (a host's page), where the world measures it: the live world does, from the agents; the simulated world does not model it."
            </p>
        </section>
    }
}

#[component]
fn Legend(metric: Signal<String>) -> impl IntoView {
    move || {
        if metric.get() == "state" {
            view! {
                <div class="legendbar" aria-label="Legend">
                    {["up", "asleep", "down", "maintenance"]
                        .into_iter()
                        .map(|s| {
                            view! {
                                <span class="key">
                                    <i style=format!("background:{}", state_color(s))></i>
                                    {s}
                                </span>
                            }
                        })
                        .collect_view()}
                </div>
            }
            .into_any()
        } else {
            let grad = (0..=10).map(|i| heat(i as f64 / 10.0)).collect::<Vec<_>>().join(",");
            let hi = match metric.get().as_str() {
                "power" => "max power",
                "vms" => "most VMs",
                _ => "100 %",
            };
            view! {
                <div class="legendbar" aria-label="Legend">
                    <span class="small">"0"</span>
                    <span class="gradient" style=format!("background:linear-gradient(90deg,{grad})")></span>
                    <span class="small">{hi}</span>
                    <span class="key">
                        <i style=format!("background:{}", state_color("asleep"))></i>
                        "asleep"
                    </span>
                    <span class="key">
                        <i style=format!("background:{}", state_color("down"))></i>
                        "down"
                    </span>
                </div>
            }
            .into_any()
        }
    }
}

/// Host tiles on one canvas; hover for the value, click for the host's page.
#[component]
fn HostGrid(metric: Signal<String>, sort: Signal<String>) -> impl IntoView {
    let store = use_store();
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let order: StoredValue<Vec<usize>> = StoredValue::new(Vec::new());
    let geom: StoredValue<(f64, usize)> = StoredValue::new((10.0, 1));
    let tip: RwSignal<Option<(f64, f64, String)>> = RwSignal::new(None);
    let width = RwSignal::new(0.0f64);
    let handle = window_event_listener(leptos::ev::resize, move |_| {
        if let Some(c) = canvas.get_untracked() {
            if let Some(p) = c.parent_element() {
                width.set(p.client_width() as f64);
            }
        }
    });
    on_cleanup(move || handle.remove());
    Effect::new(move |_| {
        let hosts = store.hosts.get();
        let metric = metric.get();
        let sort = sort.get();
        let _ = width.get();
        let Some(c) = canvas.get() else { return };
        let t0 = js_sys::Date::now();
        let w = c.parent_element().map(|p| p.client_width() as f64).unwrap_or(800.0).max(200.0);
        let n = hosts.len();
        let tile = tile_size(n);
        let gap = if tile > 10.0 { 2.0 } else { 1.0 };
        let cols = ((w / tile).floor() as usize).max(1);
        let rows = n.div_ceil(cols).max(1);
        let dpr = web_sys::window().map(|w| w.device_pixel_ratio()).unwrap_or(1.0).max(1.0);
        let hpx = rows as f64 * tile;
        c.set_width((w * dpr) as u32);
        c.set_height((hpx * dpr) as u32);
        let _ = c.set_attribute("style", &format!("width:{w}px;height:{hpx}px"));
        let Some(ctx) =
            c.get_context("2d").ok().flatten().and_then(|o| o.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
        else {
            return;
        };
        let _ = ctx.set_transform(dpr, 0.0, 0.0, dpr, 0.0, 0.0);
        ctx.clear_rect(0.0, 0.0, w, hpx);
        let max_power = hosts.iter().map(|h| h.power_w).fold(1.0, f64::max);
        let max_vms = hosts.iter().map(|h| h.vms.len() as f64).fold(1.0, f64::max);
        let mut idx: Vec<usize> = (0..n).collect();
        match sort.as_str() {
            "value" => idx.sort_by(|&a, &b| {
                value(&hosts[b], &metric, max_power, max_vms)
                    .0
                    .total_cmp(&value(&hosts[a], &metric, max_power, max_vms).0)
            }),
            "state" => idx.sort_by(|&a, &b| hosts[a].state.cmp(&hosts[b].state).then(a.cmp(&b))),
            _ => {}
        }
        // Batch by colour: fewer fillStyle changes (10,000 tiles stay in a few milliseconds).
        let mut last = String::new();
        for (pos, &i) in idx.iter().enumerate() {
            let h = &hosts[i];
            let color = if metric == "state" || h.state != "up" {
                state_color(&h.state).to_string()
            } else {
                heat(value(h, &metric, max_power, max_vms).0)
            };
            if color != last {
                ctx.set_fill_style_str(&color);
                last = color;
            }
            let x = (pos % cols) as f64 * tile;
            let y = (pos / cols) as f64 * tile;
            ctx.fill_rect(x, y, tile - gap, tile - gap);
            if h.overloaded {
                ctx.set_stroke_style_str("#111");
                ctx.stroke_rect(x + 0.5, y + 0.5, tile - gap - 1.0, tile - gap - 1.0);
            }
        }
        order.set_value(idx);
        geom.set_value((tile, cols));
        let _ = c.set_attribute("data-drawn", &n.to_string());
        let _ = c.set_attribute("data-ms", &format!("{:.1}", js_sys::Date::now() - t0));
        if n > 0 && !c.has_attribute("data-first-ms") {
            // Time from navigation to the first drawn grid (the benchmark reads it).
            let now = web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0);
            let _ = c.set_attribute("data-first-ms", &format!("{now:.0}"));
        }
    });
    let at = move |ev: &web_sys::MouseEvent| -> Option<usize> {
        let (tile, cols) = geom.get_value();
        let col = (ev.offset_x() as f64 / tile).floor() as usize;
        let row = (ev.offset_y() as f64 / tile).floor() as usize;
        if col >= cols {
            return None;
        }
        order.with_value(|o| o.get(row * cols + col).copied())
    };
    let navigate = use_navigate();
    view! {
        <div class="gridwrap">
            {move || {
                let n = store.hosts.with(|h| h.len());
                (n == 0)
                    .then(|| {
                        view! {
                            <p class="muted">
                                {if store.status.with(|s| s.is_some()) {
                                    "This world has no hosts."
                                } else {
                                    "Loading the hosts…"
                                }}
                            </p>
                        }
                    })
            }}
            <canvas
                node_ref=canvas
                data-testid="host-grid"
                role="img"
                aria-label="Host tiles coloured by the chosen metric; click a tile to open the host"
                on:mousemove=move |ev| {
                    let m = metric.get_untracked();
                    let t = at(&ev).and_then(|i| {
                        store
                            .hosts
                            .with_untracked(|hs| {
                                let max_power = hs.iter().map(|h| h.power_w).fold(1.0, f64::max);
                                let max_vms = hs.iter().map(|h| h.vms.len() as f64).fold(1.0, f64::max);
                                hs.get(i).map(|h| {
                                    let (_, label) = value(h, &m, max_power, max_vms);
                                    format!("{} · {} · {} · {} VMs", h.name, h.state, label, h.vms.len())
                                })
                            })
                    });
                    tip.set(t.map(|t| (ev.offset_x() as f64, ev.offset_y() as f64, t)));
                }
                on:mouseleave=move |_| tip.set(None)
                on:click=move |ev| {
                    if let Some(i) = at(&ev) {
                        if let Some(id) = store.hosts.with_untracked(|hs| hs.get(i).map(|h| h.id)) {
                            navigate(&format!("/hosts/{id}"), NavigateOptions::default());
                        }
                    }
                }
            ></canvas>
            {move || {
                tip.get()
                    .map(|(x, y, t)| {
                        view! { <div class="tip" style=format!("left:{}px;top:{}px", x + 12.0, y + 12.0)>{t}</div> }
                    })
            }}
        </div>
    }
}
