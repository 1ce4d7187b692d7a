//! Host and VM detail: charts sharing the page's one time control, the host's stacked top-10
//! VMs, the VM's migration history.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{HostDetail, Series, VmDetail};
use crate::chart::{use_range, ChartView, Line, SeriesChart, TimeControl, COLORS};
use crate::fmt;
use crate::pages::{badge, Empty};
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
            <div class="charts">
                <SeriesChart title="CPU".into() target="host" id=id metric="cpu"/>
                <SeriesChart title="Memory".into() target="host" id=id metric="mem"/>
                <SeriesChart title="Power".into() target="host" id=id metric="power"/>
                <SeriesChart title="Network".into() target="host" id=id metric="net"/>
                <TopVms detail/>
            </div>
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

/// The host's ten biggest VMs (by current MIPS used) stacked, plus the rest as "other".
#[component]
fn TopVms(detail: Loader<HostDetail>) -> impl IntoView {
    let range = use_range();
    let lines: RwSignal<Vec<Line>> = RwSignal::new(Vec::new());
    let busy = StoredValue::new(false);
    let top = Memo::new(move |_| {
        detail.data.with(|d| {
            let mut v: Vec<(u32, f64)> =
                d.as_ref().map(|d| d.vms.iter().map(|v| (v.id, v.mips * v.cpu_util)).collect()).unwrap_or_default();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v.into_iter().take(10).map(|x| x.0).collect::<Vec<u32>>()
        })
    });
    Effect::new(move |_| {
        let ids = top.get();
        let r = range.get();
        if r.to <= 0.0 || busy.get_value() {
            return;
        }
        busy.set_value(true);
        leptos::task::spawn_local(async move {
            let mut out = Vec::new();
            for (i, vm) in ids.iter().enumerate() {
                let path = format!(
                    "/series?target=vm&id={vm}&metric=cpu&from={:.0}&to={:.0}&cf={}&points=160",
                    r.from, r.to, r.cf
                );
                if let Ok(s) = crate::api::get::<Series>(&path).await {
                    out.push(Line::from_series(format!("VM {vm}"), COLORS[i % 10], &s));
                }
            }
            lines.try_set(out);
            busy.try_update_value(|b| *b = false);
        });
    });
    view! {
        <ChartView
            title="Top 10 VMs (CPU share of each VM, stacked)".into()
            lines=Signal::derive(move || lines.get())
            unit=Signal::stored("ratio".to_string())
            from=Signal::derive(move || range.with(|r| r.from))
            to=Signal::derive(move || range.with(|r| r.to))
            stacked=true
        />
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
                                    format!(
                                        "{} · on host {} · {:.0} MIPS · {:.0} MB · CPU {}",
                                        d.vm.name,
                                        d.vm.host,
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
            <div class="charts">
                <SeriesChart title="CPU".into() target="vm" id=id metric="cpu"/>
            </div>
        </section>
        <section class="card">
            <h2>"Migration history"</h2>
            {move || match detail.data.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(d) if d.migrations.is_empty() => view! { <Empty title="Never migrated" hint="This VM has stayed where it was first placed."/> }.into_any(),
                Some(d) => view! { <crate::pages::migrations::History rows=d.migrations/> }.into_any(),
            }}
        </section>
    }
}
