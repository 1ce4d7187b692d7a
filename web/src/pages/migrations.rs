//! Migrations: live progress from `migration` events (phase stepper, bytes sent and remaining
//! that never run backwards), and the history with its four metrics.

use leptos::prelude::*;

use crate::api::{Action, Progress};
use crate::fmt;
use crate::pages::{badge, query, Empty};
use crate::store::{use_store, Loader, Store};

const PHASES: [(&str, &str); 4] =
    [("full-round", "Full round"), ("stop-copy", "Stop-copy"), ("demand-push", "Demand / push"), ("done", "Done")];

fn phase_index(p: &str) -> usize {
    match p {
        "full-round" | "pre-copy" | "iterative" => 0,
        "stop-copy" | "stop-and-copy" => 1,
        "demand-push" | "post-copy" | "demand" | "push" => 2,
        "done" => 3,
        _ => 0,
    }
}

#[component]
pub fn ProgressRow(p: Progress) -> impl IntoView {
    let k = phase_index(&p.phase);
    let frac = if p.bytes_total > 0.0 { p.bytes_sent / p.bytes_total } else { 0.0 };
    let rate = if p.elapsed_s > 0.0 { p.bytes_sent / p.elapsed_s } else { 0.0 };
    let dirty = p.dirty_rate_bps;
    let bw = p.bandwidth_bps;
    let over = dirty >= bw;
    let dirty_frac = if bw > 0.0 { (dirty / bw).min(1.5) / 1.5 } else { 0.0 };
    let link = if bw > 0.0 {
        view! {
            <div class="dirty" data-testid="dirty-rate">
                <span class="small">"Dirty rate vs bandwidth"</span>
                <span class="dmeter" title="The mark is the link's bandwidth: a dirty rate past it never converges with pre-copy">
                    <i class:over=over style=format!("width:{:.1}%", dirty_frac * 100.0)></i>
                    <b style="left:66.7%"></b>
                </span>
                <span class="small">{format!("{}/s of {}/s", fmt::bytes(dirty), fmt::bytes(bw))}</span>
            </div>
        }
        .into_any()
    } else {
        view! { <p class="small muted">"This world does not report dirty rate or bandwidth."</p> }.into_any()
    };
    let warn = p.precopy_nonconvergent.then(|| {
        view! {
            <p class="warn small" data-testid="nonconvergent" role="status">
                {if p.mode == "pre-copy" {
                    "⚠ Will not converge: the VM dirties memory at least as fast as the link sends it. Cancel, or move it with hybrid copy."
                } else {
                    "⚠ Pre-copy would never converge here (dirty rate ≥ bandwidth): hybrid copy switches to demand paging after the first round."
                }}
            </p>
        }
    });
    let downtime = if k >= 2 {
        format!("downtime {:.0} ms", p.downtime_s * 1000.0)
    } else {
        format!("downtime ≈ {:.0} ms expected", p.downtime_s * 1000.0)
    };
    view! {
        <div class="progress" data-phase=p.phase.clone() data-sent=format!("{:.0}", p.bytes_sent)>
            <ol class="stepper" aria-label="Phase">
                {PHASES
                    .iter()
                    .enumerate()
                    .map(|(i, (_, label))| {
                        let cls = if i < k {
                            "done"
                        } else if i == k {
                            "now"
                        } else {
                            ""
                        };
                        view! { <li class=cls>{*label}</li> }
                    })
                    .collect_view()}
            </ol>
            <div class="pbar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=format!("{:.0}", frac * 100.0)>
                <i style=format!("width:{:.1}%", frac * 100.0)></i>
            </div>
            <div class="small muted">
                <span data-testid="bytes-sent">{format!("sent {}", fmt::bytes(p.bytes_sent))}</span>
                {format!(
                    " · remaining {} of {} · {} / {} · {}/s · {} · {} page faults{}",
                    fmt::bytes(p.bytes_remaining),
                    fmt::bytes(p.bytes_total),
                    fmt::dur(p.elapsed_s),
                    fmt::dur(p.expected_s),
                    fmt::bytes(rate),
                    downtime,
                    p.page_faults,
                    if p.mode.is_empty() { String::new() } else { format!(" · {}", p.mode) },
                )}
            </div>
            {link}
            {warn}
        </div>
    }
}

/// Host names by id, from the store's latest host table (an id it does not hold shows as
/// `host N`: e.g. a host removed since the migration ran).
fn host_names(store: Store) -> std::collections::HashMap<u32, String> {
    store.hosts.with_untracked(|hs| hs.iter().map(|h| (h.id, h.name.clone())).collect())
}

fn host_link(
    names: &std::collections::HashMap<u32, String>,
    id: impl TryInto<u32> + Copy + std::fmt::Display,
) -> impl IntoView {
    let name = id.try_into().ok().and_then(|i| names.get(&i).cloned()).unwrap_or_else(|| format!("host {id}"));
    view! { <a class="host" href=format!("/hosts/{id}")>{name}</a> }
}

#[component]
pub fn History(rows: Vec<Action>) -> impl IntoView {
    let names = host_names(use_store());
    view! {
        <div class="scrollbox">
            <table class="tbl" data-testid="migration-history">
                <thead>
                    <tr>
                        <th>"#"</th>
                        <th>"VM"</th>
                        <th>"From → to"</th>
                        <th>"Reason"</th>
                        <th>"Mode"</th>
                        <th>"State"</th>
                        <th class="num">"Total time"</th>
                        <th class="num">"Downtime"</th>
                        <th class="num">"Bytes"</th>
                        <th class="num">"Page faults"</th>
                        <th>"Note"</th>
                    </tr>
                </thead>
                <tbody>
                    {rows
                        .into_iter()
                        .map(|a| {
                            view! {
                                <tr>
                                    <td>{a.id}</td>
                                    <td>{a.vm.map(|v| view! { <a href=format!("/vms/{v}")>{format!("VM {v}")}</a> })}</td>
                                    <td>
                                        {a.from_host.map(|h| host_link(&names, h))}
                                        " → "
                                        {a.to_host.map(|h| host_link(&names, h))}
                                    </td>
                                    <td>{a.reason.clone().unwrap_or_default()}</td>
                                    <td>{a.mode.clone().unwrap_or_else(|| "–".into())}</td>
                                    <td>{badge(&a.state)}</td>
                                    <td class="num">{a.total_s.map(fmt::dur).unwrap_or_else(|| "–".into())}</td>
                                    <td class="num">{a.downtime_ms.map(|d| format!("{d:.0} ms")).unwrap_or_else(|| "n/a".into())}</td>
                                    <td class="num">{a.bytes.map(fmt::bytes).unwrap_or_else(|| "–".into())}</td>
                                    <td class="num">{a.page_faults.map(|p| format!("{p:.0}")).unwrap_or_else(|| "n/a".into())}</td>
                                    <td class="small muted">{a.note.clone().unwrap_or_default()}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        </div>
    }
}

#[component]
pub fn Migrations() -> impl IntoView {
    let store = use_store();
    let state = query("state");
    let history = Loader::<Vec<Action>>::new();
    let set_query = crate::app::use_set_query();
    Effect::new(move |_| {
        let _ = store.ticks.migration_end.get();
        let _ = store.ticks.plan.get();
        let st = state.get().unwrap_or_else(|| "SUCCEEDED".into());
        let f = if st == "all" { String::new() } else { format!("&state={st}") };
        history.load(format!("/migrations?limit=200{f}"));
    });
    // Finished ones stay (stepper on "Done") until the world's step ends: they are listed apart,
    // under "Just finished", so "in flight" counts and shows the same migrations.
    let split = move || store.live.with(|m| m.values().cloned().partition::<Vec<_>, _>(|p| p.phase != "done"));
    let have_hosts = Memo::new(move |_| store.hosts.with(|h| !h.is_empty()));
    let counts = move || {
        store.live.with(|m| {
            let running = m.values().filter(|p| p.phase != "done").count();
            (running, m.len() - running)
        })
    };
    view! {
        <div class="pagehead">
            <h1>"Migrations"</h1>
            <span class="muted" data-testid="in-flight-count">
                {move || match counts() {
                    (r, 0) => format!("{r} in flight"),
                    (r, d) => format!("{r} in flight · {d} just finished"),
                }}
            </span>
        </div>
        <section class="card" data-testid="live-migrations">
            <h2>"In flight"</h2>
            {move || {
                let (running, done) = split();
                let names = host_names(store);
                let cards = move |l: Vec<Progress>, names: &std::collections::HashMap<u32, String>| {
                    let n = l.len();
                    let shown = l
                        .into_iter()
                        .take(60)
                        .map(|p| {
                            let aid = p.action_id;
                            view! {
                                <div class="mig" data-action=aid>
                                    <div>
                                        <a href=format!("/vms/{}", p.vm)>{format!("VM {}", p.vm)}</a>
                                        " "
                                        {host_link(names, p.from)}
                                        " → "
                                        {host_link(names, p.to)}
                                    </div>
                                    <ProgressRow p/>
                                </div>
                            }
                        })
                        .collect_view();
                    view! {
                        <div class="migs">{shown}</div>
                        {(n > 60).then(|| view! { <p class="muted small">{format!("Showing 60 of {n}.")}</p> })}
                    }
                };
                let now = if running.is_empty() {
                    view! {
                        <Empty title="No migration is running" hint="Migrations appear here as soon as a plan's actions start; approve a plan on the Plans page in manual mode."/>
                    }
                        .into_any()
                } else {
                    cards(running, &names).into_any()
                };
                let finished = (!done.is_empty()).then(|| {
                    view! {
                        <h3 class="small muted" data-testid="just-finished">"Just finished"</h3>
                        {cards(done, &names)}
                    }
                });
                view! { {now} {finished} }.into_any()
            }}
        </section>
        <section class="card">
            <div class="cardhead">
                <h2>"History"</h2>
                <label for="m-state">"State"</label>
                <select
                    id="m-state"
                    prop:value=move || state.get().unwrap_or_else(|| "SUCCEEDED".into())
                    on:change=move |ev| set_query(&[("state", Some(&event_target_value(&ev)))])
                >
                    {["SUCCEEDED", "ONGOING", "FAILED", "CANCELLED", "all"].iter().map(|s| view! { <option value=*s>{*s}</option> }).collect_view()}
                </select>
            </div>
            {move || history.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
            {move || {
                // Re-rendered once the host table first arrives, for the host names.
                let _ = have_hosts.get();
                match history.data.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(v) if v.is_empty() => view! { <Empty title="No migrations in this state" hint="Pick another state."/> }.into_any(),
                Some(v) => view! { <History rows=v/> }.into_any(),
                }
            }}
        </section>
    }
}
