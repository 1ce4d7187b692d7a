//! Experiments: offline A/B over chosen traces (progress, paired differences with confidence
//! intervals, per-trace charts, the verdict in words), live shadow experiments and live cohorts
//! (hosts split into A and B groups, each run by its strategy, compared per cycle).

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;

use crate::api::{self, Comparison, Experiment, Strategy};
use crate::app::use_set_query;
use crate::chart::{ChartView, Line, COLORS};
use crate::fmt;
use crate::pages::{badge, query, Empty};
use crate::store::{use_store, Loader};

const BUILTIN: [&str; 8] = [
    "lr-mmt-1.2",
    "thr-mmt-0.8",
    "iqr-mmt-1.5",
    "mad-mmt-2.5",
    "lrr-mmt-1.2",
    "lr-mc-1.2",
    "thr-mmt-0.8-spread",
    "lrr-mc-1.2",
];

#[component]
pub fn Experiments() -> impl IntoView {
    let store = use_store();
    let list = Loader::<Vec<Experiment>>::new();
    let traces = Loader::<Vec<String>>::new();
    let strategies = Loader::<Vec<Strategy>>::new();
    let sel = query("exp");
    let set_query = use_set_query();
    Effect::new(move |_| {
        let _ = store.ticks.experiment.get();
        list.load("/experiments".into());
    });
    traces.load("/traces".into());
    strategies.load("/strategies".into());
    let sq = set_query.clone();
    view! {
        <div class="pagehead">
            <h1>"Experiments"</h1>
            <span class="muted">
                "Offline A/B replays traces with two strategies; shadow runs B beside the live strategy without executing it; cohorts split the hosts between A and B."
            </span>
        </div>
        <div class="split">
            <section class="card">
                <h2>"Start an experiment"</h2>
                <StartForm traces strategies list/>
            </section>
            <section class="card">
                <h2>"Experiments"</h2>
                {move || list.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
                {move || {
                    let sq = sq.clone();
                    match list.data.get() {
                        None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                        Some(v) if v.is_empty() => {
                            view! { <Empty title="No experiments yet" hint="Start an offline A/B on the left: pick traces and two strategies."/> }
                                .into_any()
                        }
                        Some(v) => {
                            view! {
                                <table class="tbl" data-testid="experiments">
                                    <thead>
                                        <tr>
                                            <th>"#"</th>
                                            <th>"Kind"</th>
                                            <th>"A vs B"</th>
                                            <th>"State"</th>
                                            <th>"Progress"</th>
                                        </tr>
                                    </thead>
                                    <tbody>
                                        {v
                                            .into_iter()
                                            .map(|e| {
                                                let id = e.id;
                                                let sq = sq.clone();
                                                let on = move || sel.get().and_then(|s| s.parse::<i64>().ok()) == Some(id);
                                                let a = e.spec.get("a").and_then(|v| v.as_str()).unwrap_or("live").to_string();
                                                let b = e
                                                    .spec
                                                    .get("name")
                                                    .or_else(|| e.spec.get("b"))
                                                    .and_then(|v| v.as_str())
                                                    .unwrap_or("")
                                                    .to_string();
                                                view! {
                                                    <tr class:sel=on tabindex="0" data-exp=id on:click=move |_| sq(&[("exp", Some(&id.to_string()))])>
                                                        <td>{id}</td>
                                                        <td>{e.kind.clone()}</td>
                                                        <td>{format!("{a} vs {}", b.chars().take(40).collect::<String>())}</td>
                                                        <td>{badge(&e.state)}</td>
                                                        <td>
                                                            <progress max="1" value=e.progress></progress>
                                                            {format!(" {:.0} %", e.progress * 100.0)}
                                                        </td>
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
        </div>
        {move || {
            sel.get()
                .and_then(|s| s.parse::<i64>().ok())
                .map(|id| {
                    let e = list.data.with(|l| l.as_ref().and_then(|l| l.iter().find(|e| e.id == id).cloned()));
                    match e {
                        Some(e) => view! { <ExperimentView e/> }.into_any(),
                        None => view! { <p class="muted">"Loading the experiment…"</p> }.into_any(),
                    }
                })
        }}
    }
}

#[component]
fn StartForm(
    traces: Loader<Vec<String>>,
    strategies: Loader<Vec<Strategy>>,
    list: Loader<Vec<Experiment>>,
) -> impl IntoView {
    let store = use_store();
    let set_query = use_set_query();
    let kind = RwSignal::new("offline".to_string());
    let a = RwSignal::new("lr-mmt-1.2".to_string());
    let b = RwSignal::new("thr-mmt-0.8".to_string());
    let picked: RwSignal<Vec<String>> = RwSignal::new(vec!["embedded".into()]);
    let msg: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let busy = RwSignal::new(false);
    let choices = move || {
        let mut v: Vec<(String, String)> = BUILTIN.iter().map(|s| (s.to_string(), format!("{s} (built in)"))).collect();
        if let Some(l) = strategies.data.get() {
            for s in l {
                v.push((format!("id:{}", s.id), format!("{} v{} (stored)", s.name, s.version)));
            }
        }
        v
    };
    let start = move |_| {
        let k = kind.get_untracked();
        let tr = picked.get_untracked();
        if k == "offline" && tr.is_empty() {
            msg.set(Some(Err("Pick at least one trace.".into())));
            return;
        }
        busy.set(true);
        let sq = set_query.clone();
        spawn_local(async move {
            let body = if k == "offline" {
                serde_json::json!({ "kind": "offline", "a": a.get_untracked(), "b": b.get_untracked(), "traces": tr })
            } else {
                serde_json::json!({ "kind": k, "b": b.get_untracked() })
            };
            match api::post::<Experiment>("/experiments", &body).await {
                Ok(e) => {
                    msg.set(Some(Ok(format!("Experiment #{} started.", e.id))));
                    list.load("/experiments".into());
                    sq(&[("exp", Some(&e.id.to_string()))]);
                }
                Err(e) => {
                    store.failed(&e);
                    msg.set(Some(Err(e.message)));
                }
            }
            busy.set(false);
        });
    };
    view! {
        <form class="form" on:submit=move |ev| ev.prevent_default() data-testid="ab-form">
            <div class="field">
                <label for="x-kind">"Kind"</label>
                <select id="x-kind" prop:value=move || kind.get() on:change=move |ev| kind.set(event_target_value(&ev))>
                    <option value="offline">"Offline A/B over traces"</option>
                    <option value="shadow">"Shadow: B decides beside the live strategy"</option>
                    <option value="cohorts">"Cohorts: odd hosts run B, even hosts the live strategy"</option>
                </select>
            </div>
            <div class="row">
                <div class="field" class:hidden=move || kind.get() != "offline">
                    <label for="x-a">"Strategy A"</label>
                    <select id="x-a" prop:value=move || a.get() on:change=move |ev| a.set(event_target_value(&ev))>
                        {move || choices().into_iter().map(|(v, l)| view! { <option value=v>{l}</option> }).collect_view()}
                    </select>
                </div>
                <div class="field">
                    <label for="x-b">"Strategy B"</label>
                    <select id="x-b" prop:value=move || b.get() on:change=move |ev| b.set(event_target_value(&ev))>
                        {move || choices().into_iter().map(|(v, l)| view! { <option value=v>{l}</option> }).collect_view()}
                    </select>
                </div>
            </div>
            <fieldset class:hidden=move || kind.get() != "offline">
                <legend>"Traces (one PlanetLab day each)"</legend>
                <div class="checks">
                    {move || match traces.data.get() {
                        None => view! { <span class="muted">"Loading traces…"</span> }.into_any(),
                        Some(ts) => {
                            ts.into_iter()
                                .map(|t| {
                                    let t2 = t.clone();
                                    let t3 = t.clone();
                                    view! {
                                        <label class="check">
                                            <input
                                                type="checkbox"
                                                data-trace=t.clone()
                                                prop:checked=move || picked.with(|p| p.contains(&t2))
                                                on:change=move |_| picked.update(|p| {
                                                    if let Some(i) = p.iter().position(|x| *x == t3) {
                                                        p.remove(i);
                                                    } else {
                                                        p.push(t3.clone());
                                                    }
                                                })
                                            />
                                            {t}
                                        </label>
                                    }
                                })
                                .collect_view()
                                .into_any()
                        }
                    }}
                </div>
            </fieldset>
            <button class="btn primary" type="button" data-testid="start-ab" disabled=move || busy.get() on:click=start>
                "Start"
            </button>
            {move || {
                msg.get()
                    .map(|r| match r {
                        Ok(m) => view! { <p class="ok" role="status">{m}</p> }.into_any(),
                        Err(m) => view! { <p class="error" role="alert">{m}</p> }.into_any(),
                    })
            }}
        </form>
    }
}

fn ci_text(c: &Comparison) -> String {
    // Cohorts report the interval as two fields (over cycles; `null` with a single cycle).
    if c.ci95.is_none() {
        return match (c.ci95_low, c.ci95_high) {
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => {
                format!("[{}, {}]", fmt::num(lo, 3), fmt::num(hi, 3))
            }
            (None, None) if c.n <= 1 => "– (one sample)".into(),
            _ => "– (one trace)".into(),
        };
    }
    match &c.ci95 {
        Some(Value::Array(a)) if a.len() == 2 => {
            format!(
                "[{}, {}]",
                fmt::num(a[0].as_f64().unwrap_or(f64::NAN), 3),
                fmt::num(a[1].as_f64().unwrap_or(f64::NAN), 3)
            )
        }
        Some(Value::Object(o)) => {
            let lo = o.get("lo").or_else(|| o.get("low")).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            let hi = o.get("hi").or_else(|| o.get("high")).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            format!("[{}, {}]", fmt::num(lo, 3), fmt::num(hi, 3))
        }
        _ => "– (one trace)".into(),
    }
}

#[component]
fn ExperimentView(e: Experiment) -> impl IntoView {
    let id = e.id;
    let token = api::token().unwrap_or_default();
    let report = format!("/api/v1/experiments/{id}/report?access_token={}", api::enc(&token));
    let comparisons: Vec<Comparison> = e
        .result
        .as_ref()
        .and_then(|r| r.get("comparisons"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let traces: Vec<Value> =
        e.result.as_ref().and_then(|r| r.get("traces")).and_then(|t| t.as_array()).cloned().unwrap_or_default();
    let (an, bn) = (
        e.result.as_ref().and_then(|r| r.get("a")).and_then(|v| v.as_str()).unwrap_or("A").to_string(),
        e.result.as_ref().and_then(|r| r.get("b")).and_then(|v| v.as_str()).unwrap_or("B").to_string(),
    );
    let running = e.state == "RUNNING";
    view! {
        <section class="card" data-testid="experiment">
            <div class="cardhead">
                <h2>{format!("Experiment #{id} · {}", e.kind)}</h2>
                {badge(&e.state)}
                {e.has_report.then(|| view! { <a class="btn small" href=report target="_blank" rel="noopener">"HTML report"</a> })}
            </div>
            {running
                .then(|| {
                    view! {
                        <p>
                            <progress max="1" value=e.progress></progress>
                            {format!(" {:.0} % — runs on the controller in the background; this page follows its progress.", e.progress * 100.0)}
                        </p>
                    }
                })}
            {e.error.clone().map(|x| view! { <p class="error" role="alert">{x}</p> })}
            {(!comparisons.is_empty())
                .then(|| {
                    view! {
                        <h3>"Verdict"</h3>
                        <ul class="verdicts" data-testid="verdicts">
                            {comparisons.iter().map(|c| view! { <li class:sig=c.significant>{c.verdict.clone()}</li> }).collect_view()}
                        </ul>
                        <h3>{format!("Paired differences (B − A), A = {an}, B = {bn}")}</h3>
                        <table class="tbl">
                            <thead>
                                <tr>
                                    <th>"Metric"</th>
                                    <th class="num">"n"</th>
                                    <th class="num">"Mean A"</th>
                                    <th class="num">"Mean B"</th>
                                    <th class="num">"B − A"</th>
                                    <th>"95 % CI"</th>
                                    <th class="num">"Relative"</th>
                                    <th>"Significant"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {comparisons
                                    .iter()
                                    .map(|c| {
                                        view! {
                                            <tr>
                                                <td class="mono">{c.metric.clone()}</td>
                                                <td class="num">{c.n}</td>
                                                <td class="num">{fmt::num(c.mean_a, 4)}</td>
                                                <td class="num">{fmt::num(c.mean_b, 4)}</td>
                                                <td class="num">{fmt::num(c.mean_diff, 4)}</td>
                                                <td>{ci_text(c)}</td>
                                                <td class="num">{c.relative_pct.map(|r| format!("{r:+.1} %")).unwrap_or_else(|| "–".into())}</td>
                                                <td>{if c.significant { "yes" } else { "no" }}</td>
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                    }
                })}
            {(!traces.is_empty())
                .then(|| {
                    view! {
                        <h3>"Per trace"</h3>
                        <div class="charts">
                            {traces
                                .iter()
                                .flat_map(|t| {
                                    let name = t.get("trace").and_then(|v| v.as_str()).unwrap_or("").to_string();
                                    ["active_hosts", "energy_kwh"]
                                        .into_iter()
                                        .map(|metric| {
                                            let line = |side: &str, color: &'static str, label: &str| -> Line {
                                                let s = t.get(side).and_then(|x| x.get("series"));
                                                let arr = |k: &str| -> Vec<f64> {
                                                    s.and_then(|s| s.get(k))
                                                        .and_then(|v| v.as_array())
                                                        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect())
                                                        .unwrap_or_default()
                                                };
                                                Line { label: label.to_string(), color, t: arr("time_s"), v: arr(metric).into_iter().map(Some).collect() }
                                            };
                                            let la = line("a", COLORS[0], &an);
                                            let lb = line("b", COLORS[1], &bn);
                                            let to = la.t.last().copied().unwrap_or(86_400.0).max(lb.t.last().copied().unwrap_or(0.0));
                                            let lines = vec![la, lb];
                                            let unit = if metric == "energy_kwh" { "kWh" } else { "count" };
                                            view! {
                                                <ChartView
                                                    title=format!("{name}: {}", metric.replace('_', " "))
                                                    lines=Signal::stored(lines)
                                                    unit=Signal::stored(unit.to_string())
                                                    from=Signal::stored(0.0)
                                                    to=Signal::stored(to)
                                                    relative=true
                                                />
                                            }
                                        })
                                        .collect::<Vec<_>>()
                                })
                                .collect_view()}
                        </div>
                    }
                })}
            {(e.kind == "shadow").then(|| view! { <ShadowView id running/> })}
            {(e.kind == "cohorts").then(|| {
                let split = e.result.as_ref().and_then(|r| r.get("split")).and_then(|v| v.as_str()).unwrap_or("even host ids: A (the active strategy); odd host ids: B").to_string();
                view! { <CohortsView id running split b=bn.clone()/> }
            })}
        </section>
    }
}

#[component]
fn ShadowView(id: i64, running: bool) -> impl IntoView {
    let store = use_store();
    let cycles = Loader::<Vec<Value>>::new();
    Effect::new(move |_| {
        let _ = store.ticks.cycle.get();
        cycles.load(format!("/experiments/{id}/cycles?limit=50"));
    });
    let stop = move |_| {
        spawn_local(async move {
            let _ = api::post::<Experiment>(&format!("/experiments/{id}/stop"), &serde_json::json!({})).await;
            store.ticks.experiment.update(|n| *n += 1);
        });
    };
    view! {
        <div class="cardhead">
            <h3>"Per cycle: A (live) and B (shadow)"</h3>
            {running.then(|| view! { <button class="btn small danger" on:click=stop>"Stop"</button> })}
        </div>
        {move || match cycles.data.get() {
            None => view! { <p class="muted">"Loading cycles…"</p> }.into_any(),
            Some(v) if v.is_empty() => view! { <p class="muted">"No cycles recorded yet; one is added per controller cycle."</p> }.into_any(),
            Some(v) => {
                let cols: Vec<String> = v
                    .first()
                    .and_then(|r| r.as_object())
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                view! {
                    <div class="scrollbox">
                        <table class="tbl">
                            <thead>
                                <tr>{cols.iter().map(|c| view! { <th>{c.clone()}</th> }).collect_view()}</tr>
                            </thead>
                            <tbody>
                                {v
                                    .iter()
                                    .map(|r| {
                                        view! {
                                            <tr>
                                                {cols
                                                    .iter()
                                                    .map(|c| {
                                                        let s = r.get(c).map(|x| match x {
                                                            Value::Number(n) => n.as_f64().map(|f| if f.fract() == 0.0 { format!("{f:.0}") } else { format!("{f:.3}") }).unwrap_or_default(),
                                                            Value::String(s) => s.clone(),
                                                            other => other.to_string().chars().take(80).collect(),
                                                        });
                                                        view! { <td class="small">{s.unwrap_or_default()}</td> }
                                                    })
                                                    .collect_view()}
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                    </div>
                }
                    .into_any()
            }
        }}
    }
}

/// A live cohort experiment: both groups per cycle (energy, migrations, SLATAH) as charts and
/// the running totals.
#[component]
fn CohortsView(id: i64, running: bool, split: String, b: String) -> impl IntoView {
    let store = use_store();
    let cycles = Loader::<Vec<Value>>::new();
    Effect::new(move |_| {
        let _ = store.ticks.cycle.get();
        cycles.load(format!("/experiments/{id}/cycles?limit=500"));
    });
    let stop = move |_| {
        spawn_local(async move {
            let _ = api::post::<Experiment>(&format!("/experiments/{id}/stop"), &serde_json::json!({})).await;
            store.ticks.experiment.update(|n| *n += 1);
        });
    };
    let rows = Memo::new(move |_| {
        cycles.data.with(|d| {
            let mut v: Vec<(f64, [f64; 4], [f64; 4])> = d
                .as_ref()
                .map(|d| {
                    d.iter()
                        .map(|r| {
                            let side = |k: &str| {
                                let g =
                                    |m: &str| r.get(k).and_then(|x| x.get(m)).and_then(Value::as_f64).unwrap_or(0.0);
                                [g("energy_kwh"), g("migrations"), g("slatah"), g("pdm")]
                            };
                            // Cycles as world time, so the axis reads in hours.
                            let interval =
                                store.status.with(|s| s.as_ref().map(|s| s.world.interval_s).unwrap_or(300.0));
                            (r.get("cycle").and_then(Value::as_f64).unwrap_or(0.0) * interval, side("a"), side("b"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            v.sort_by(|x, y| x.0.total_cmp(&y.0));
            v
        })
    });
    let chart = move |k: usize, title: &'static str, unit: &'static str, b: String| {
        let lines = Signal::derive(move || {
            rows.with(|r| {
                let t: Vec<f64> = r.iter().map(|x| x.0).collect();
                vec![
                    Line {
                        label: "A (active)".into(),
                        color: COLORS[0],
                        t: t.clone(),
                        v: r.iter().map(|x| Some(x.1[k])).collect(),
                    },
                    Line {
                        label: format!("B ({b})"),
                        color: COLORS[1],
                        t,
                        v: r.iter().map(|x| Some(x.2[k])).collect(),
                    },
                ]
            })
        });
        let from = Signal::derive(move || rows.with(|r| r.first().map(|x| x.0).unwrap_or(0.0)));
        let to = Signal::derive(move || rows.with(|r| r.last().map(|x| x.0).unwrap_or(1.0)).max(from.get() + 1.0));
        view! { <ChartView title=title.to_string() lines unit=Signal::stored(unit.to_string()) from to relative=true/> }
    };
    let totals = move || {
        rows.with(|r| {
            let sum = |side: usize, k: usize| r.iter().map(|x| if side == 0 { x.1[k] } else { x.2[k] }).sum::<f64>();
            let mean = |side: usize, k: usize| if r.is_empty() { 0.0 } else { sum(side, k) / r.len() as f64 };
            (r.len(), [sum(0, 0), sum(0, 1), mean(0, 2)], [sum(1, 0), sum(1, 1), mean(1, 2)])
        })
    };
    let b2 = b.clone();
    let b3 = b.clone();
    let b4 = b.clone();
    view! {
        <div data-testid="cohorts" class="cohorts">
            <div class="cardhead">
                <h3>"Cohorts: A (active strategy) and B per cycle"</h3>
                {running.then(|| view! { <button class="btn small danger" on:click=stop>"Stop"</button> })}
            </div>
            <p class="muted small">{format!("Split: {split}.")}</p>
            {move || cycles.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
            {move || {
                let (n, a, bb) = totals();
                if n == 0 {
                    return view! { <p class="muted">"No cycle recorded yet: the first record comes after the second controller cycle."</p> }.into_any();
                }
                view! {
                    <table class="tbl" data-testid="cohort-totals">
                        <thead>
                            <tr>
                                <th>"Group"</th>
                                <th class="num">"Cycles"</th>
                                <th class="num">"Energy"</th>
                                <th class="num">"Migrations"</th>
                                <th class="num">"SLATAH (mean per cycle)"</th>
                            </tr>
                        </thead>
                        <tbody>
                            <tr>
                                <td class="a">"A — active strategy (even hosts)"</td>
                                <td class="num">{n}</td>
                                <td class="num">{format!("{:.3} kWh", a[0])}</td>
                                <td class="num">{format!("{:.0}", a[1])}</td>
                                <td class="num">{fmt::pct(a[2])}</td>
                            </tr>
                            <tr>
                                <td class="b">{format!("B — {} (odd hosts)", b2)}</td>
                                <td class="num">{n}</td>
                                <td class="num">{format!("{:.3} kWh", bb[0])}</td>
                                <td class="num">{format!("{:.0}", bb[1])}</td>
                                <td class="num">{fmt::pct(bb[2])}</td>
                            </tr>
                        </tbody>
                    </table>
                }
                    .into_any()
            }}
            <div class="charts">
                {chart(0, "Energy per cycle", "kWh", b3)}
                {chart(1, "Migrations per cycle", "count", b4)}
                {chart(2, "SLATAH per cycle", "ratio", b)}
            </div>
        </div>
    }
}
