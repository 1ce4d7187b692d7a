//! Host and VM detail: charts sharing the page's one time control, the host's stacked top-10
//! VMs, the VM's migration history, and the stock RRD graphs (PNG drawn by librrd on the
//! server) as an alternative view (`?view=rrd`).

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api;
use crate::api::{HostDetail, Series, VmDetail, VolumeAttachment, VolumeMove};
use crate::app::use_set_query;
use crate::chart::{use_range, use_range_key, ChartView, Line, LiveSeries, SeriesChart, TimeControl, COLORS};
use crate::fmt;
use crate::pages::{badge, query, Empty};
use crate::store::{use_store, Loader};

fn param_id() -> Memo<Option<u32>> {
    let p = use_params_map();
    Memo::new(move |_| p.with(|p| p.get("id")).and_then(|s| s.parse().ok()))
}

#[component]
pub fn HostPage() -> impl IntoView {
    let id = param_id();
    move || match id.get() {
        Some(id) => view! { <HostView id/> }.into_any(),
        None => view! { <Empty title="No such host" hint="Host ids are numbers; open one from the Hosts table."/> }
            .into_any(),
    }
}

#[component]
fn HostView(id: u32) -> impl IntoView {
    let store = use_store();
    let detail = Loader::<HostDetail>::new();
    let rrd_view = use_rrd_view();
    Effect::new(move |_| {
        let _ = store.ticks.cycle.get();
        detail.load(format!("/hosts/{id}"));
    });
    view! {
        <div class="pagehead">
            <h1>{move || detail.data.with(|d| d.as_ref().map(|d| d.host.name.clone())).unwrap_or_else(|| format!("Host {id}"))}</h1>
            {move || detail.data.with(|d| d.as_ref().map(|d| badge(&d.host.state)))}
            <span class="muted">
                {move || {
                    detail
                        .data
                        .with(|d| {
                            d.as_ref()
                                .map(|d| {
                                    let h = &d.host;
                                    format!(
                                        "{} cores · {:.0} MIPS · {:.0} MB · CPU {} · {} · {} VMs · {} migrating",
                                        h.cores,
                                        h.cpu_capacity_mips,
                                        h.mem_capacity_mb,
                                        fmt::pct(h.cpu_util),
                                        fmt::watts(h.power_w),
                                        h.vms.len(),
                                        h.migrations_in_flight
                                    )
                                })
                        })
                        .unwrap_or_default()
                }}
            </span>
        </div>
        {move || detail.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
        <section class="card">
            <div class="cardhead">
                <h2>"Graphs"</h2>
                <TimeControl/>
            </div>
            <ViewToggle/>
            {move || if rrd_view.get() {
                view! { <RrdGraphs kind="hosts" id metrics=&[("cpu", "CPU"), ("mem", "Memory"), ("power", "Power")]/> }.into_any()
            } else {
                view! {
                    <div class="charts">
                        <SeriesChart title="CPU".into() target="host" id=id metric="cpu"/>
                        <SeriesChart title="Memory".into() target="host" id=id metric="mem"/>
                        <SeriesChart title="Power".into() target="host" id=id metric="power"/>
                        <SeriesChart title="Network".into() target="host" id=id metric="net"/>
                        <TopVms detail/>
                    </div>
                }
                    .into_any()
            }}
        </section>
        <section class="card">
            <h2>"VMs on this host"</h2>
            {move || match detail.data.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(d) if d.vms.is_empty() => view! { <Empty title="No VMs" hint="This host is empty (asleep hosts hold no VMs)."/> }.into_any(),
                Some(d) => {
                    view! {
                        <table class="tbl">
                            <thead>
                                <tr>
                                    <th>"VM"</th>
                                    <th>"Name"</th>
                                    <th class="num">"CPU"</th>
                                    <th class="num">"MIPS"</th>
                                    <th class="num">"RAM"</th>
                                    <th>"Migrating"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {d
                                    .vms
                                    .iter()
                                    .map(|v| {
                                        view! {
                                            <tr>
                                                <td>
                                                    <a href=format!("/vms/{}", v.id)>{format!("VM {}", v.id)}</a>
                                                </td>
                                                <td class="small">{v.name.clone()}</td>
                                                <td class="num">{fmt::pct(v.cpu_util)}</td>
                                                <td class="num">{format!("{:.0}", v.mips)}</td>
                                                <td class="num">{format!("{:.0} MB", v.ram_mb)}</td>
                                                <td>{v.migrating_to.map(|t| format!("→ host {t}"))}</td>
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                    }
                        .into_any()
                }
            }}
        </section>
    }
}

/// The host's ten biggest VMs (by current MIPS used) stacked, plus the rest as "other":
/// fetched when the range or the ten change, then grown by live values.
#[component]
fn TopVms(detail: Loader<HostDetail>) -> impl IntoView {
    let range = use_range();
    let key = use_range_key();
    let store = use_store();
    let lines: RwSignal<Vec<(u32, LiveSeries)>> = RwSignal::new(Vec::new());
    let busy = StoredValue::new(false);
    let top = Memo::new(move |_| {
        detail.data.with(|d| {
            let mut v: Vec<(u32, f64)> =
                d.as_ref().map(|d| d.vms.iter().map(|v| (v.id, v.mips * v.cpu_util)).collect()).unwrap_or_default();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut ids: Vec<u32> = v.into_iter().take(10).map(|x| x.0).collect();
            ids.sort_unstable();
            ids
        })
    });
    Effect::new(move |_| {
        let ids = top.get();
        let (_, _, _, _, ready) = key.get();
        let _ = store.ticks.reload.get();
        let r = range.get_untracked();
        if !ready || busy.get_value() {
            return;
        }
        busy.set_value(true);
        leptos::task::spawn_local(async move {
            let mut out = Vec::new();
            for vm in ids.iter() {
                let path = format!(
                    "/series?target=vm&id={vm}&metric=cpu&from={:.0}&to={:.0}&cf={}&points=160",
                    r.from, r.to, r.cf
                );
                if let Ok(s) = crate::api::get::<Series>(&path).await {
                    out.push((*vm, LiveSeries::new(s)));
                }
            }
            lines.try_set(out);
            busy.try_update_value(|b| *b = false);
        });
    });
    Effect::new(move |_| {
        let t = store.tables_t.get();
        let r = range.get_untracked();
        if r.preset.is_none() || t <= 0.0 {
            return;
        }
        store.vms.with(|vs| {
            lines.update(|ls| {
                for (vm, s) in ls.iter_mut() {
                    if let Some(v) = vs.get(*vm as usize).filter(|v| v.id == *vm) {
                        s.push(t, Some(v.cpu_util), r.from);
                    }
                }
            })
        });
    });
    view! {
        <ChartView
            title="Top 10 VMs (CPU share of each VM, stacked)".into()
            lines=Signal::derive(move || {
                lines.with(|ls| {
                    ls.iter()
                        .enumerate()
                        .map(|(i, (vm, s))| Line::from_series(format!("VM {vm}"), COLORS[i % 10], &s.series))
                        .collect()
                })
            })
            unit=Signal::stored("ratio".to_string())
            from=Signal::derive(move || range.with(|r| r.from))
            to=Signal::derive(move || range.with(|r| r.to))
            stacked=true
        />
    }
}

/// `?view=rrd` shows the stock RRD graphs instead of the charts.
fn use_rrd_view() -> Memo<bool> {
    let q = query("view");
    Memo::new(move |_| q.get().as_deref() == Some("rrd"))
}

/// Charts or the stock RRD graphs.
#[component]
fn ViewToggle() -> impl IntoView {
    let set_query = use_set_query();
    let sq = set_query.clone();
    let rrd_view = use_rrd_view();
    view! {
        <div class="segs viewtoggle" role="group" aria-label="How to draw the graphs">
            <button class="seg" class:on=move || !rrd_view.get() on:click=move |_| sq(&[("view", None)])>
                "Charts"
            </button>
            <button class="seg" class:on=rrd_view data-testid="view-rrd" on:click=move |_| set_query(&[("view", Some("rrd"))])>
                "RRD graphs (PNG)"
            </button>
        </div>
    }
}

/// librrd's own PNGs (`GET /{kind}/{id}/graph.png`) for the page's range and AVERAGE/MAX.
#[component]
fn RrdGraphs(kind: &'static str, id: u32, metrics: &'static [(&'static str, &'static str)]) -> impl IntoView {
    let range = use_range();
    let key = use_range_key();
    let token = api::token().unwrap_or_default();
    let failed: RwSignal<Vec<&'static str>> = RwSignal::new(Vec::new());
    view! {
        <p class="muted small">
            "Drawn by librrd on the controller (rrd_graph) from a round-robin database of the same samples; they follow the time control, not live updates."
        </p>
        <div class="charts rrd">
            {metrics
                .iter()
                .map(|(metric, title)| {
                    let token = token.clone();
                    let src = move || {
                        let _ = key.get();
                        let r = range.get_untracked();
                        let when = match &r.preset {
                            Some(p) => format!("range={p}"),
                            None => format!("from={:.0}&to={:.0}", r.from, r.to),
                        };
                        format!("/api/v1/{kind}/{id}/graph.png?metric={metric}&{when}&cf={}&access_token={}", r.cf, api::enc(&token))
                    };
                    let metric = *metric;
                    view! {
                        <figure class="chart">
                            <figcaption><span class="ctitle">{*title}</span></figcaption>
                            <img
                                class="rrdimg"
                                data-testid="rrd-img"
                                data-metric=metric
                                alt=format!("RRD graph of {title}")
                                src=src
                                on:error=move |_| failed.update(|f| f.push(metric))
                            />
                            {move || failed.with(|f| f.contains(&metric)).then(|| view! {
                                <p class="error small">"The controller could not draw this graph; the charts view has the same data."</p>
                            })}
                        </figure>
                    }
                })
                .collect_view()}
        </div>
    }
}

#[component]
pub fn VmPage() -> impl IntoView {
    let id = param_id();
    move || match id.get() {
        Some(id) => view! { <VmView id/> }.into_any(),
        None => {
            view! { <Empty title="No such VM" hint="VM ids are numbers; open one from the VMs table."/> }.into_any()
        }
    }
}

#[component]
fn VmView(id: u32) -> impl IntoView {
    let store = use_store();
    let detail = Loader::<VmDetail>::new();
    let rrd_view = use_rrd_view();
    Effect::new(move |_| {
        let _ = store.ticks.migration_end.get();
        let _ = store.ticks.plan.get();
        detail.load(format!("/vms/{id}"));
    });
    let live = move || store.live.with(|m| m.values().find(|p| p.vm == id).cloned());
    view! {
        <div class="pagehead">
            <h1>{format!("VM {id}")}</h1>
            <span class="muted">
                {move || {
                    detail
                        .data
                        .with(|d| {
                            d.as_ref()
                                .map(|d| {
                                    let host = store
                                        .hosts
                                        .with(|hs| hs.iter().find(|h| h.id == d.vm.host).map(|h| h.name.clone()))
                                        .unwrap_or_else(|| format!("host {}", d.vm.host));
                                    // Where the CPU figure comes from, where it is not the trace.
                                    let source = match d.vm.cpu_source.as_deref() {
                                        Some("agent") => " (AMVM agent)",
                                        Some("nova-diagnostics") => " (Nova diagnostics)",
                                        Some(_) => "",
                                        None => " (not measured yet)",
                                    };
                                    format!(
                                        "{} · on {host} · {:.0} MIPS · {:.0} MB · CPU {}{source}",
                                        d.vm.name,
                                        d.vm.mips,
                                        d.vm.ram_mb,
                                        fmt::pct(d.vm.cpu_util)
                                    )
                                })
                        })
                        .unwrap_or_default()
                }}
            </span>
        </div>
        {move || detail.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
        {move || {
            live()
                .map(|p| {
                    view! {
                        <section class="card">
                            <h2>{format!("Migrating: host {} → host {}", p.from, p.to)}</h2>
                            <crate::pages::migrations::ProgressRow p/>
                        </section>
                    }
                })
        }}
        <section class="card">
            <div class="cardhead">
                <h2>"Graphs"</h2>
                <TimeControl/>
            </div>
            <ViewToggle/>
            {move || if rrd_view.get() {
                view! { <RrdGraphs kind="vms" id metrics=&[("cpu", "CPU")]/> }.into_any()
            } else {
                view! {
                    <div class="charts">
                        <SeriesChart title="CPU".into() target="vm" id=id metric="cpu"/>
                    </div>
                }
                    .into_any()
            }}
        </section>
        {move || detail.data.with(|d| d.as_ref().map(|d| d.vm.name.clone())).map(|name| view! { <Volumes name/> })}
        <section class="card">
            <h2>"Migration history"</h2>
            {move || match detail.data.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(d) if d.migrations.is_empty() => view! { <Empty title="Never migrated by the controller" hint="Moves made by hand (amvm lab migrate, amvm volume migrate) are not listed here."/> }.into_any(),
                Some(d) => view! { <crate::pages::migrations::History rows=d.migrations/> }.into_any(),
            }}
        </section>
    }
}

/// A VM's volumes (by its name): where each is mapped, and the volume moves.
#[component]
fn Volumes(name: String) -> impl IntoView {
    let store = use_store();
    let vols = Loader::<Vec<VolumeAttachment>>::new();
    let moves = Loader::<Vec<VolumeMove>>::new();
    let q = api::enc(&name);
    Effect::new(move |_| {
        let _ = store.ticks.migration_end.get();
        vols.load(format!("/volumes?vm={q}"));
        moves.load(format!("/volumes/moves?vm={q}&limit=20"));
    });
    view! {
        <section class="card">
            <h2>"Volumes"</h2>
            {move || vols.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
            {move || match vols.data.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(v) if v.is_empty() => {
                    // On a Nova cloud the volumes are Cinder's, not AMVM's disk array's.
                    let openstack = store.status.with(|s| s.as_ref().is_some_and(|s| s.world.kind == "openstack"));
                    let hint = if openstack {
                        "This is an OpenStack cloud: its volumes are Cinder's, which AMVM does not list yet."
                    } else {
                        "Attach one with `amvm volume attach NAME --vm VM`."
                    };
                    view! { <Empty title="No volumes" hint/> }.into_any()
                }
                Some(v) => view! {
                    <table class="tbl volumes">
                        <thead><tr><th>"Volume"</th><th>"Disk"</th><th>"Mapped to"</th><th>"Portal"</th><th>"Target"</th></tr></thead>
                        <tbody>
                            {v.into_iter().map(|a| view! {
                                <tr>
                                    <td>{a.volume}</td>
                                    <td>{format!("/dev/{}", a.target_dev)}</td>
                                    <td>{format!("{} ({})", a.node, a.initiator)}</td>
                                    <td>{a.portal}</td>
                                    <td class="mono">{format!("{} LUN {}", a.iqn, a.lun)}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            }}
            {move || moves.data.get().filter(|m| !m.is_empty()).map(|m| view! {
                <h3>"Volume moves"</h3>
                <table class="tbl volume-moves">
                    <thead><tr><th>"#"</th><th>"Started"</th><th>"Took"</th><th>"Volume"</th><th>"From → to"</th><th>"Mode"</th><th>"State"</th><th>"Last step"</th><th>"Note"</th></tr></thead>
                    <tbody>
                        {m.into_iter().map(|m| view! {
                            <tr>
                                <td>{m.id}</td>
                                <td title=fmt::time(m.started_at as f64)>{fmt::ago(m.started_at)}</td>
                                <td class="num">{m.ended_at.map_or("…".to_string(), |e| fmt::dur((e - m.started_at).max(0) as f64))}</td>
                                <td>{m.volume}</td>
                                <td>{format!("{} → {}", m.from_node, m.to_node)}</td>
                                <td>{m.mode.unwrap_or_default()}</td>
                                <td>{badge(&m.state)}</td>
                                <td>{m.step}</td>
                                <td class="small">{m.error.unwrap_or_default()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </section>
    }
}
