//! Plans: the controller's recommendations (Watcher's lifecycle), each action with its reason
//! from the decision trace, approve / reject, and the automation level.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;

use crate::api::{self, Plan, PlanDetail};
use crate::app::use_set_query;
use crate::fmt;
use crate::pages::{badge, query, Empty};
use crate::store::{use_store, Loader};

const STATES: [&str; 9] =
    ["RECOMMENDED", "APPROVED", "ONGOING", "DONE", "REJECTED", "SUPERSEDED", "CANCELLED", "SHADOW", "all"];

#[component]
pub fn Plans() -> impl IntoView {
    let store = use_store();
    let state = query("state");
    let sel = query("plan");
    let set_query = use_set_query();
    let list = Loader::<Vec<Plan>>::new();
    Effect::new(move |_| {
        let _ = store.ticks.plan.get();
        let st = state.get().unwrap_or_else(|| "all".into());
        let f = if st == "all" { String::new() } else { format!("&state={st}") };
        list.load(format!("/plans?limit=200{f}"));
    });
    let automation = move || {
        store.status.with(|s| {
            s.as_ref()
                .and_then(|s| s.strategy.as_ref())
                .map(|st| (st.automation.clone(), format!("{} v{}", st.name, st.version)))
        })
    };
    let sq = set_query.clone();
    let sq2 = set_query.clone();
    view! {
        <div class="pagehead">
            <h1>"Plans"</h1>
            <span class="automation" data-testid="automation">
                {move || match automation() {
                    Some((a, name)) => {
                        view! {
                            <span>
                                "Automation: "
                                <strong class=if a == "manual" { "badge amber" } else { "badge green" }>{a.clone()}</strong>
                                " · strategy "
                                {name}
                                {if a == "manual" {
                                    " · plans wait for your approval"
                                } else {
                                    " · plans are approved and executed at once"
                                }}
                            </span>
                        }
                            .into_any()
                    }
                    None => view! { <span class="muted">"No active strategy"</span> }.into_any(),
                }}
            </span>
        </div>
        <div class="split">
            <section class="card list">
                <div class="cardhead">
                    <label for="plan-state">"State"</label>
                    <select
                        id="plan-state"
                        prop:value=move || state.get().unwrap_or_else(|| "all".into())
                        on:change=move |ev| sq(&[("state", Some(&event_target_value(&ev)))])
                    >
                        {STATES.iter().map(|s| view! { <option value=*s>{*s}</option> }).collect_view()}
                    </select>
                    {move || list.loading.get().then(|| view! { <span class="muted small">"updating…"</span> })}
                </div>
                {move || list.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
                {move || {
                    let sq = sq2.clone();
                    match list.data.get() {
                        None => view! { <p class="muted">"Loading plans…"</p> }.into_any(),
                        Some(v) if v.is_empty() => {
                            view! {
                                <Empty
                                    title="No plans in this state"
                                    hint="The controller stores a plan when a cycle decides to move VMs or sleep hosts. Pick another state, or wait for the next cycle."
                                />
                            }
                                .into_any()
                        }
                        Some(v) => {
                            view! {
                                <table class="tbl" data-testid="plans">
                                    <thead>
                                        <tr>
                                            <th>"Plan"</th>
                                            <th>"Cycle"</th>
                                            <th>"Source"</th>
                                            <th>"State"</th>
                                            <th class="num">"Actions"</th>
                                            <th>"Created"</th>
                                        </tr>
                                    </thead>
                                    <tbody>
                                        {v
                                            .into_iter()
                                            .map(|p| {
                                                let id = p.id;
                                                let sq = sq.clone();
                                                let selected = move || sel.get().and_then(|s| s.parse::<i64>().ok()) == Some(id);
                                                view! {
                                                    <tr
                                                        class:sel=selected
                                                        tabindex="0"
                                                        data-plan=id
                                                        on:click={
                                                            let sq = sq.clone();
                                                            move |_| sq(&[("plan", Some(&id.to_string()))])
                                                        }
                                                        on:keydown=move |ev| {
                                                            if ev.key() == "Enter" {
                                                                sq(&[("plan", Some(&id.to_string()))])
                                                            }
                                                        }
                                                    >
                                                        <td>{format!("#{id}")}</td>
                                                        <td>{p.cycle}</td>
                                                        <td>{p.source.clone()}</td>
                                                        <td>{badge(&p.state)}</td>
                                                        <td class="num">{p.actions}</td>
                                                        <td class="muted">{fmt::ago(p.created_at)}</td>
                                                    </tr>
                                                }
                                            })
                                            .collect_view()}
                                    </tbody>
                                </table>
                            }
                                .into_any()
                        }
                    }
                }}
            </section>
            <section class="card detail">
                {move || match sel.get().and_then(|s| s.parse::<i64>().ok()) {
                    Some(id) => view! { <PlanView id/> }.into_any(),
                    None => {
                        view! {
                            <Empty
                                title="Select a plan"
                                hint="Pick a plan on the left to see its actions, the reasons from the decision trace, and to approve or reject it."
                            />
                        }
                            .into_any()
                    }
                }}
            </section>
        </div>
    }
}

/// Why, from the decision trace: one line per overloaded/underloaded host and evacuation.
fn reasons(trace: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let arr = |k: &str| trace.get(k).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let hosts = arr("hosts");
    let over = hosts.iter().filter(|h| h.get("class").and_then(|c| c.as_str()) == Some("overload")).count();
    let under = hosts.len() - over;
    out.push(format!("The threshold policy called {over} host(s) overloaded and {under} underloaded."));
    for h in hosts.iter().filter(|h| h.get("class").and_then(|c| c.as_str()) == Some("overload")).take(8) {
        let last = h
            .get("cpu_history")
            .and_then(|c| c.as_array())
            .and_then(|a| a.iter().rev().find_map(|v| v.as_f64()))
            .map(fmt::pct)
            .unwrap_or_else(|| "–".into());
        out.push(format!(
            "Host {} overloaded (CPU {last}, streak {} of persistence {}): {}.",
            h.get("host").and_then(|v| v.as_i64()).unwrap_or(-1),
            h.get("streak").and_then(|v| v.as_i64()).unwrap_or(0),
            h.get("persistence").and_then(|v| v.as_i64()).unwrap_or(0),
            h.get("outcome").and_then(|v| v.as_str()).unwrap_or("")
        ));
    }
    let ev = arr("evacuations");
    let committed = ev.iter().filter(|e| e.get("committed").and_then(|c| c.as_bool()) == Some(true)).count();
    out.push(format!("{committed} of {} underloaded host(s) tried were evacuated (then put to sleep).", ev.len()));
    for e in ev.iter().filter(|e| e.get("committed").and_then(|c| c.as_bool()) != Some(true)).take(5) {
        out.push(format!(
            "Host {} kept running: {}.",
            e.get("host").and_then(|v| v.as_i64()).unwrap_or(-1),
            e.get("refused")
                .map(|r| r.as_str().map(str::to_string).unwrap_or_else(|| r.to_string()))
                .unwrap_or_default()
        ));
    }
    let un = arr("unplaced");
    if !un.is_empty() {
        out.push(format!("{} VM(s) selected on overloaded hosts found no destination.", un.len()));
    }
    out
}

/// Per-move detail from the trace: candidates, filtered hosts, best weight.
fn move_reason(trace: Option<&Value>, vm: Option<i64>) -> String {
    let Some(m) = trace
        .and_then(|t| t.get("migrations"))
        .and_then(|m| m.as_array())
        .and_then(|a| a.iter().find(|m| m.get("vm").and_then(|v| v.as_i64()) == vm))
    else {
        return String::new();
    };
    let cands = m.get("candidates").and_then(|v| v.as_i64()).unwrap_or(0);
    let best = m
        .get("top")
        .and_then(|t| t.as_array())
        .and_then(|t| t.first())
        .and_then(|t| t.get("weight"))
        .and_then(|w| w.as_f64())
        .map(|w| format!(", best weight {w:.3}"))
        .unwrap_or_default();
    let filtered = m.get("filtered").and_then(|f| f.as_array()).map(|f| f.len()).unwrap_or(0);
    format!("{cands} candidate hosts{best}; {filtered} filter reason(s)")
}

#[component]
fn PlanView(id: i64) -> impl IntoView {
    let store = use_store();
    let detail = Loader::<PlanDetail>::new();
    Effect::new(move |_| {
        let _ = store.ticks.plan.get();
        detail.load(format!("/plans/{id}"));
    });
    let msg: RwSignal<Option<(bool, String)>> = RwSignal::new(None);
    let busy = RwSignal::new(false);
    let act = move |verb: &'static str| {
        busy.set(true);
        spawn_local(async move {
            let r = if verb == "approve" {
                api::post::<Plan>(&format!("/plans/{id}/approve"), &serde_json::json!({})).await
            } else {
                api::post::<Plan>(
                    &format!("/plans/{id}/reject"),
                    &serde_json::json!({ "reason": "rejected in the dashboard" }),
                )
                .await
            };
            match r {
                Ok(p) => msg.set(Some((true, format!("Plan #{id} is now {}.", p.state)))),
                Err(e) => {
                    store.failed(&e);
                    msg.set(Some((false, e.to_string())))
                }
            }
            busy.set(false);
            detail.load(format!("/plans/{id}"));
            store.ticks.plan.update(|n| *n += 1);
        });
    };
    view! {
        {move || detail.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
        {move || {
            let Some(d) = detail.data.get() else {
                return view! { <p class="muted">"Loading plan…"</p> }.into_any();
            };
            let p = d.plan.clone();
            let trace = d.trace.clone();
            let recommended = p.state == "RECOMMENDED";
            view! {
                <div class="cardhead">
                    <h2>{format!("Plan #{} ", p.id)}</h2>
                    {badge(&p.state)}
                    <span class="muted">{format!("cycle {} · {} · {} actions", p.cycle, p.source, p.actions)}</span>
                    <div class="spacer"></div>
                    <button
                        class="btn primary"
                        data-testid="approve"
                        disabled=move || !recommended || busy.get()
                        on:click=move |_| act("approve")
                        title="Approve: its actions run in the next cycle, through the guards"
                    >
                        "Approve"
                    </button>
                    <button
                        class="btn danger"
                        data-testid="reject"
                        disabled=move || !recommended || busy.get()
                        on:click=move |_| act("reject")
                    >
                        "Reject"
                    </button>
                </div>
                {move || {
                    msg.get()
                        .map(|(ok, m)| {
                            view! {
                                <p class=if ok { "ok" } else { "error" } role="status" data-testid="plan-msg">
                                    {m}
                                </p>
                            }
                        })
                }}
                {p.note.clone().map(|n| view! { <p class="muted">{n}</p> })}
                {p
                    .expires_at
                    .filter(|_| recommended)
                    .map(|e| {
                        view! {
                            <p class="muted small">
                                {format!("Expires {} unless approved.", fmt::time(e as f64))}
                            </p>
                        }
                    })}
                <h3>"Why"</h3>
                {match &trace {
                    Some(t) => {
                        view! {
                            <ul class="reasons">
                                {reasons(t).into_iter().map(|r| view! { <li>{r}</li> }).collect_view()}
                            </ul>
                        }
                            .into_any()
                    }
                    None => view! { <p class="muted">"This plan has no decision trace (a hand migration)."</p> }.into_any(),
                }}
                <h3>"Actions"</h3>
                <div class="scrollbox">
                    <table class="tbl">
                        <thead>
                            <tr>
                                <th>"#"</th>
                                <th>"Kind"</th>
                                <th>"VM"</th>
                                <th>"From → to"</th>
                                <th>"Reason"</th>
                                <th>"State"</th>
                                <th>"Detail"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {d
                                .actions
                                .iter()
                                .take(500)
                                .map(|a| {
                                    let why = move_reason(trace.as_ref(), a.vm);
                                    let note = a.note.clone().unwrap_or_default();
                                    view! {
                                        <tr>
                                            <td>{a.seq}</td>
                                            <td>{a.kind.clone()}</td>
                                            <td>
                                                {a.vm.map(|v| view! { <a href=format!("/vms/{v}")>{format!("VM {v}")}</a> })}
                                            </td>
                                            <td>
                                                {format!(
                                                    "{} → {}",
                                                    a.from_host.map(|h| h.to_string()).unwrap_or_else(|| "–".into()),
                                                    a.to_host.map(|h| h.to_string()).unwrap_or_else(|| "–".into()),
                                                )}
                                            </td>
                                            <td>{a.reason.clone().unwrap_or_default()}</td>
                                            <td>{badge(&a.state)}</td>
                                            <td class="muted small">
                                                {if note.is_empty() { why } else { note }}
                                            </td>
                                        </tr>
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                    {(d.actions.len() > 500).then(|| view! { <p class="muted small">{format!("Showing 500 of {} actions.", d.actions.len())}</p> })}
                </div>
            }
                .into_any()
        }}
    }
}
