//! Hosts and VMs: sortable, filterable, virtualized tables (only the visible rows are in the
//! DOM), keeping scroll position and selection across live updates. Sort, filter and selection
//! are in the URL; arrow keys move the selection, Enter opens it.

use std::collections::HashMap;
use std::sync::Arc;

use leptos::prelude::*;
use leptos_router::hooks::use_navigate;
use leptos_router::NavigateOptions;

use crate::api::{Host, Sparklines, Vm};
use crate::app::use_set_query;
use crate::fmt;
use crate::pages::{badge, query};
use crate::store::{use_store, Loader};

const ROW_H: f64 = 30.0;
const VIEW_H: f64 = 600.0;

/// A column: key, title, numeric.
type Col = (&'static str, &'static str, bool);

const HOST_COLS: [Col; 10] = [
    ("id", "Host", false),
    ("state", "State", false),
    ("cpu", "CPU", true),
    ("mem", "Memory", true),
    ("net", "Network", true),
    ("power", "Power", true),
    ("vms", "VMs", true),
    ("mig", "Migrating", true),
    ("cores", "Cores", true),
    (SPARK, "CPU, 2 h", false),
];

const VM_COLS: [Col; 8] = [
    ("id", "VM", false),
    ("name", "Name", false),
    ("host", "Host", true),
    ("cpu", "CPU", true),
    ("mips", "MIPS", true),
    ("ram", "RAM", true),
    ("mig", "Migration", false),
    (SPARK, "CPU, 2 h", false),
];

/// The sparkline column (drawn by the table frame for the visible rows only).
const SPARK: &str = "spark";
const SPARK_W: f64 = 96.0;
const SPARK_H: f64 = 20.0;

/// A small SVG polyline of values in 0..1 (`None` breaks the line).
fn sparkline(v: &[Option<f64>]) -> String {
    let n = v.len().max(2) - 1;
    let mut d = String::new();
    let mut pen = false;
    for (i, x) in v.iter().enumerate() {
        match x {
            Some(x) if x.is_finite() => {
                let px = i as f64 / n as f64 * (SPARK_W - 2.0) + 1.0;
                let py = (1.0 - x.clamp(0.0, 1.0)) * (SPARK_H - 2.0) + 1.0;
                d += &format!("{}{px:.1},{py:.1}", if pen { "L" } else { "M" });
                pen = true;
            }
            _ => pen = false,
        }
    }
    let last = v.iter().rev().flatten().next().copied().unwrap_or(0.0);
    // The newest point as a dot, so a single sample still shows.
    let dot =
        v.iter().enumerate().rev().find_map(|(i, x)| x.filter(|x| x.is_finite()).map(|x| (i, x))).map(|(i, x)| {
            let px = i as f64 / n as f64 * (SPARK_W - 2.0) + 1.0;
            let py = (1.0 - x.clamp(0.0, 1.0)) * (SPARK_H - 2.0) + 1.0;
            format!(r#"<circle cx="{px:.1}" cy="{py:.1}" r="1.6"/>"#)
        });
    let color = if last > 0.9 {
        "#dc2626"
    } else if last > 0.7 {
        "#d97706"
    } else {
        "#3b82f6"
    };
    format!(
        r#"<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" width="{SPARK_W}" height="{SPARK_H}" role="img" aria-label="CPU over the last 2 hours"><path d="{d}" fill="none" stroke="{color}" stroke-width="1.4"/><g fill="{color}">{}</g></svg>"#,
        dot.unwrap_or_default()
    )
}

fn bar(x: f64) -> impl IntoView {
    let w = (x.clamp(0.0, 1.0) * 100.0).round();
    let cls = if x > 0.9 {
        "meter hot"
    } else if x > 0.7 {
        "meter warm"
    } else {
        "meter"
    };
    view! {
        <span class=cls>
            <i style=format!("width:{w}%")></i>
        </span>
        <span class="mv">{fmt::pct(x)}</span>
    }
}

/// The table frame shared by both pages.
#[component]
fn Virtual<R: Send + Sync + 'static>(
    cols: &'static [Col],
    rows: Memo<Arc<Vec<R>>>,
    render: fn(&R) -> AnyView,
    row_id: fn(&R) -> u32,
    base: &'static str,
    /// `host` or `vm`: whose CPU sparklines the last column shows.
    spark: &'static str,
) -> impl IntoView {
    let store = use_store();
    let sort = query("sort");
    let dir = query("dir");
    let sel = query("sel");
    let set_query = use_set_query();
    let top = RwSignal::new(0.0f64);
    let body = NodeRef::<leptos::html::Div>::new();
    let navigate = use_navigate();
    let sq = set_query.clone();
    let header = cols
        .iter()
        .map(|(k, title, num)| {
            let k = *k;
            if k == SPARK {
                return view! { <div class="th">{*title}</div> }.into_any();
            }
            let sq = sq.clone();
            let arrow = move || {
                if sort.get().as_deref().unwrap_or("id") == k {
                    if dir.get().as_deref() == Some("desc") {
                        " ▼"
                    } else {
                        " ▲"
                    }
                } else {
                    ""
                }
            };
            view! {
                <div class=if *num { "th num" } else { "th" }>
                    <button
                        class="sortbtn"
                        on:click=move |_| {
                            let same = sort.get_untracked().as_deref().unwrap_or("id") == k;
                            let desc = if same { dir.get_untracked().as_deref() != Some("desc") } else { k != "id" && k != "state" && k != "name" };
                            sq(&[("sort", Some(k)), ("dir", Some(if desc { "desc" } else { "asc" }))]);
                        }
                    >
                        {*title}
                        {arrow}
                    </button>
                </div>
            }
            .into_any()
        })
        .collect_view();
    // Sparklines of the visible rows: one batch request when they change and after each cycle
    // (never overlapping, the last ones stay on screen meanwhile).
    let visible = Memo::new(move |_| {
        let rs = rows.get();
        let first = (top.get() / ROW_H).floor() as usize;
        let last = (first + (VIEW_H / ROW_H) as usize + 4).min(rs.len());
        (first.min(last)..last).map(|i| row_id(&rs[i])).collect::<Vec<u32>>()
    });
    let sparks = Loader::<Sparklines>::new();
    Effect::new(move |_| {
        let _ = store.ticks.cycle.get();
        let ids = visible.get();
        if ids.is_empty() {
            return;
        }
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        sparks.load(format!("/sparklines?target={spark}&metric=cpu&points=24&span_s=7200&ids={}", ids.join(",")));
    });
    let spark_map = Memo::new(move |_| {
        sparks.data.with(|d| {
            d.as_ref()
                .map(|d| d.series.iter().map(|s| (s.id, sparkline(&s.v))).collect::<HashMap<u32, String>>())
                .unwrap_or_default()
        })
    });
    let sel_id = Memo::new(move |_| sel.get().and_then(|s| s.parse::<u32>().ok()));
    let sq2 = set_query.clone();
    let on_key = move |ev: web_sys::KeyboardEvent| {
        let key = ev.key();
        if key != "ArrowDown" && key != "ArrowUp" && key != "Enter" {
            return;
        }
        ev.prevent_default();
        let rs = rows.get_untracked();
        let cur = sel_id.get_untracked().and_then(|id| rs.iter().position(|r| row_id(r) == id));
        if key == "Enter" {
            if let Some(id) = sel_id.get_untracked() {
                navigate(&format!("/{base}/{id}"), NavigateOptions::default());
            }
            return;
        }
        let next = match (cur, key.as_str()) {
            (None, _) => 0,
            (Some(i), "ArrowDown") => (i + 1).min(rs.len().saturating_sub(1)),
            (Some(i), _) => i.saturating_sub(1),
        };
        if let Some(r) = rs.get(next) {
            sq2(&[("sel", Some(&row_id(r).to_string()))]);
            if let Some(el) = body.get_untracked() {
                let y = next as f64 * ROW_H;
                let st = el.scroll_top() as f64;
                if y < st {
                    el.set_scroll_top(y as i32);
                } else if y + ROW_H > st + VIEW_H {
                    el.set_scroll_top((y + ROW_H - VIEW_H) as i32);
                }
            }
        }
    };
    let sq3 = set_query.clone();
    let template = format!("grid-template-columns: repeat({}, minmax(70px, 1fr))", cols.len());
    let t2 = template.clone();
    view! {
        <div class="vtable" role="grid" aria-rowcount=move || rows.with(|r| r.len()) tabindex="0" on:keydown=on_key data-testid="vtable">
            <div class="vhead" style=template>{header}</div>
            <div
                class="vbody"
                node_ref=body
                style=format!("height:{VIEW_H}px")
                on:scroll=move |ev| {
                    let el: web_sys::Element = event_target(&ev);
                    top.set(el.scroll_top() as f64);
                }
            >
                <div class="vspace" style=move || format!("height:{}px", rows.with(|r| r.len()) as f64 * ROW_H)>
                    {move || {
                        let rs = rows.get();
                        let first = (top.get() / ROW_H).floor() as usize;
                        let last = (first + (VIEW_H / ROW_H) as usize + 4).min(rs.len());
                        let sel = sel_id.get();
                        let sq = sq3.clone();
                        (first.min(last)..last)
                            .map(|i| {
                                let r = &rs[i];
                                let id = row_id(r);
                                let sq = sq.clone();
                                view! {
                                    <div
                                        class="vrow"
                                        class:sel=sel == Some(id)
                                        role="row"
                                        style=format!("top:{}px;{}", i as f64 * ROW_H, t2)
                                        data-row=id
                                        on:click=move |_| sq(&[("sel", Some(&id.to_string()))])
                                    >
                                        {render(r)}
                                        <div
                                            class="td sparkcell"
                                            data-testid="spark"
                                            inner_html=move || spark_map.with(|m| m.get(&id).cloned().unwrap_or_default())
                                        ></div>
                                    </div>
                                }
                            })
                            .collect_view()
                    }}
                </div>
            </div>
        </div>
    }
}

fn host_cell(h: &Host) -> AnyView {
    view! {
        <div class="td">
            <a href=format!("/hosts/{}", h.id)>{h.name.clone()}</a>
            {h.overloaded.then(|| view! { <span class="badge red small">"overloaded"</span> })}
        </div>
        <div class="td">{badge(&h.state)}</div>
        <div class="td num">{bar(h.cpu_util)}</div>
        <div class="td num">{bar(h.mem_util)}</div>
        <div class="td num">{h.net_util.map(fmt::pct).unwrap_or_else(|| "n/a".into())}</div>
        <div class="td num">{fmt::watts(h.power_w)}</div>
        <div class="td num">{h.vms.len()}</div>
        <div class="td num">{h.migrations_in_flight}</div>
        <div class="td num">{h.cores}</div>
    }
    .into_any()
}

fn host_key(h: &Host, k: &str) -> f64 {
    match k {
        "cpu" => h.cpu_util,
        "mem" => h.mem_util,
        "net" => h.net_util.unwrap_or(-1.0),
        "power" => h.power_w,
        "vms" => h.vms.len() as f64,
        "mig" => h.migrations_in_flight as f64,
        "cores" => h.cores as f64,
        _ => h.id as f64,
    }
}

#[component]
pub fn Hosts() -> impl IntoView {
    let store = use_store();
    let sort = query("sort");
    let dir = query("dir");
    let filter = query("q");
    let state = query("state");
    let set_query = use_set_query();
    let rows = Memo::new(move |_| {
        let hs = store.hosts.get();
        let f = filter.get().unwrap_or_default().to_lowercase();
        let st = state.get().unwrap_or_default();
        let k = sort.get().unwrap_or_else(|| "id".into());
        let desc = dir.get().as_deref() == Some("desc");
        let mut v: Vec<Host> = hs
            .iter()
            .filter(|h| st.is_empty() || h.state == st)
            .filter(|h| f.is_empty() || h.name.to_lowercase().contains(&f) || h.id.to_string() == f)
            .cloned()
            .collect();
        if k == "state" {
            v.sort_by(|a, b| a.state.cmp(&b.state).then(a.id.cmp(&b.id)));
        } else {
            v.sort_by(|a, b| host_key(a, &k).total_cmp(&host_key(b, &k)).then(a.id.cmp(&b.id)));
        }
        if desc {
            v.reverse();
        }
        Arc::new(v)
    });
    let sq = set_query.clone();
    view! {
        <div class="pagehead">
            <h1>"Hosts"</h1>
            <span class="muted">{move || format!("{} of {} hosts", rows.with(|r| r.len()), store.hosts.with(|h| h.len()))}</span>
        </div>
        <section class="card">
            <div class="cardhead">
                <label for="h-filter">"Filter"</label>
                <input
                    id="h-filter"
                    type="search"
                    placeholder="name or id"
                    prop:value=move || filter.get().unwrap_or_default()
                    on:input={
                        let sq = sq.clone();
                        move |ev| {
                            let v = event_target_value(&ev);
                            sq(&[("q", if v.is_empty() { None } else { Some(&v) })]);
                        }
                    }
                />
                <label for="h-state">"State"</label>
                <select
                    id="h-state"
                    prop:value=move || state.get().unwrap_or_default()
                    on:change=move |ev| {
                        let v = event_target_value(&ev);
                        sq(&[("state", if v.is_empty() { None } else { Some(&v) })]);
                    }
                >
                    <option value="">"any"</option>
                    <option value="up">"up"</option>
                    <option value="asleep">"asleep"</option>
                    <option value="down">"down"</option>
                    <option value="maintenance">"maintenance"</option>
                </select>
                <span class="muted small">"↑ ↓ select · Enter opens · click a column to sort"</span>
            </div>
            {move || {
                (store.hosts.with(|h| h.is_empty()))
                    .then(|| view! { <p class="muted">"Loading hosts…"</p> })
            }}
            <Virtual cols=&HOST_COLS rows render=host_cell row_id=|h: &Host| h.id base="hosts" spark="host"/>
        </section>
    }
}

fn vm_key(v: &Vm, k: &str) -> f64 {
    match k {
        "host" => v.host as f64,
        "cpu" => v.cpu_util,
        "mips" => v.mips,
        "ram" => v.ram_mb,
        "mig" => v.migrating_to.map(|h| h as f64).unwrap_or(-1.0),
        _ => v.id as f64,
    }
}

fn vm_cell(v: &Vm) -> AnyView {
    view! {
        <div class="td">
            <a href=format!("/vms/{}", v.id)>{format!("VM {}", v.id)}</a>
        </div>
        <div class="td small ellipsis" title=v.name.clone()>{v.name.clone()}</div>
        <div class="td num">
            <a href=format!("/hosts/{}", v.host)>{v.host}</a>
        </div>
        <div class="td num">{bar(v.cpu_util)}</div>
        <div class="td num">{format!("{:.0}", v.mips)}</div>
        <div class="td num">{format!("{:.0} MB", v.ram_mb)}</div>
        <div class="td">
            {v.migrating_to.map(|to| {
                let id = v.id;
                let live = use_store().live.with(|m| {
                    m.values().find(|p| p.vm == id).map(|p| (p.phase.clone(), p.bytes_sent / p.bytes_total.max(1.0)))
                });
                let short = |phase: &str| match phase {
                    "full-round" => "round",
                    "stop-copy" => "stop",
                    "demand-push" => "push",
                    "done" => "done",
                    _ => "…",
                };
                view! {
                    <span class="badge blue" title=format!("migrating to host {to}")>{format!("→ {to}")}</span>
                    {live.map(|(phase, f)| view! {
                        <span class="mv small" data-testid="row-progress" title=format!("{phase}: {:.0} % of the bytes sent", f * 100.0)>
                            {format!(" {} {:.0} %", short(&phase), f * 100.0)}
                        </span>
                    })}
                }
            })}
        </div>
    }
    .into_any()
}

#[component]
pub fn Vms() -> impl IntoView {
    let store = use_store();
    let sort = query("sort");
    let dir = query("dir");
    let filter = query("q");
    let set_query = use_set_query();
    let rows = Memo::new(move |_| {
        let vs = store.vms.get();
        let f = filter.get().unwrap_or_default().to_lowercase();
        let k = sort.get().unwrap_or_else(|| "id".into());
        let desc = dir.get().as_deref() == Some("desc");
        let mut v: Vec<Vm> = vs
            .iter()
            .filter(|v| {
                f.is_empty()
                    || v.name.to_lowercase().contains(&f)
                    || v.id.to_string() == f
                    || (f == "migrating" && v.migrating_to.is_some())
            })
            .cloned()
            .collect();
        if k == "name" {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        } else {
            v.sort_by(|a, b| vm_key(a, &k).total_cmp(&vm_key(b, &k)).then(a.id.cmp(&b.id)));
        }
        if desc {
            v.reverse();
        }
        Arc::new(v)
    });
    view! {
        <div class="pagehead">
            <h1>"VMs"</h1>
            <span class="muted">{move || format!("{} of {} VMs", rows.with(|r| r.len()), store.vms.with(|h| h.len()))}</span>
        </div>
        <section class="card">
            <div class="cardhead">
                <label for="v-filter">"Filter"</label>
                <input
                    id="v-filter"
                    type="search"
                    placeholder="name, id, or “migrating”"
                    prop:value=move || filter.get().unwrap_or_default()
                    on:input=move |ev| {
                        let v = event_target_value(&ev);
                        set_query(&[("q", if v.is_empty() { None } else { Some(&v) })]);
                    }
                />
                <span class="muted small">"↑ ↓ select · Enter opens · click a column to sort"</span>
            </div>
            <Virtual cols=&VM_COLS rows render=vm_cell row_id=|v: &Vm| v.id base="vms" spark="vm"/>
        </section>
    }
}
