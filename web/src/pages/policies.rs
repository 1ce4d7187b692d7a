//! Policies and strategies: drag-and-drop module upload (the server's refusal shown inline),
//! what each module declares, a strategy composer whose parameter forms are generated from the
//! declarations (type and range checked before anything is sent), strategy versions side by
//! side, activation.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::api::{self, Param, Policy, Strategy};
use crate::fmt;
use crate::pages::{query, Empty};
use crate::store::{use_store, Loader};

#[component]
pub fn Policies() -> impl IntoView {
    let store = use_store();
    let policies = Loader::<Vec<Policy>>::new();
    let strategies = Loader::<Vec<Strategy>>::new();
    Effect::new(move |_| {
        let _ = store.ticks.policy.get();
        policies.load("/policies".into());
    });
    Effect::new(move |_| {
        let _ = store.ticks.strategy.get();
        strategies.load("/strategies".into());
    });
    view! {
        <div class="pagehead">
            <h1>"Policies & strategies"</h1>
            <span class="muted">
                "Modules are sandboxed WebAssembly components; a strategy combines a threshold, a selection and a placement policy."
            </span>
        </div>
        <Upload policies/>
        <div class="split">
            <section class="card">
                <h2>"Modules"</h2>
                <Modules policies/>
            </section>
            <section class="card">
                <h2>"Compose a strategy"</h2>
                <Composer policies strategies/>
            </section>
        </div>
        <section class="card">
            <h2>"Strategies"</h2>
            <Strategies strategies/>
        </section>
    }
}

#[component]
fn Upload(policies: Loader<Vec<Policy>>) -> impl IntoView {
    let store = use_store();
    let over = RwSignal::new(false);
    let result: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let busy = RwSignal::new(false);
    let send = move |file: web_sys::File| {
        busy.set(true);
        result.set(None);
        let name = file.name();
        spawn_local(async move {
            let buf = match JsFuture::from(file.array_buffer()).await {
                Ok(b) => js_sys::Uint8Array::new(&b).to_vec(),
                Err(_) => {
                    result.set(Some(Err(format!("cannot read {name}"))));
                    busy.set(false);
                    return;
                }
            };
            match api::upload(&buf).await {
                Ok(r) => {
                    let what = if r.created { "stored" } else { "already stored" };
                    result.set(Some(Ok(format!(
                        "{name}: {} — {what} as sha256:{}…",
                        r.check,
                        &r.module.sha256[..12.min(r.module.sha256.len())]
                    ))));
                    policies.load("/policies".into());
                }
                Err(e) => {
                    store.failed(&e);
                    result.set(Some(Err(format!("{name} was not stored: {}", e.message))));
                }
            }
            busy.set(false);
        });
    };
    let input = NodeRef::<leptos::html::Input>::new();
    view! {
        <section
            class="card dropzone"
            class:over=move || over.get()
            data-testid="dropzone"
            on:dragover=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                over.set(true);
            }
            on:dragleave=move |_| over.set(false)
            on:drop=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                over.set(false);
                if let Some(f) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) {
                    send(f);
                }
            }
        >
            <div>
                <strong>"Upload a policy module"</strong>
                <p class="muted">
                    "Drop a .wasm component here, or choose a file. The controller loads, validates and configures it under the sandbox before storing it."
                </p>
            </div>
            <label class="btn" for="module-file">
                "Choose .wasm file…"
            </label>
            <input
                id="module-file"
                node_ref=input
                class="visually-hidden"
                type="file"
                accept=".wasm,application/wasm"
                on:change=move |_| {
                    if let Some(el) = input.get_untracked() {
                        if let Some(f) = el.files().and_then(|f| f.get(0)) {
                            send(f);
                        }
                        el.set_value("");
                    }
                }
            />
            {move || busy.get().then(|| view! { <span class="muted">"Checking the module…"</span> })}
            {move || {
                result
                    .get()
                    .map(|r| match r {
                        Ok(m) => view! { <p class="ok" role="status" data-testid="upload-ok">{m}</p> }.into_any(),
                        Err(m) => view! { <p class="error" role="alert" data-testid="upload-error">{m}</p> }.into_any(),
                    })
            }}
        </section>
    }
}

#[component]
fn Modules(policies: Loader<Vec<Policy>>) -> impl IntoView {
    let sel = RwSignal::new(None::<String>);
    view! {
        {move || policies.error.get().map(|e| view! { <p class="error">{e.to_string()}</p> })}
        {move || match policies.data.get() {
            None => view! { <p class="muted">"Loading modules…"</p> }.into_any(),
            Some(list) if list.is_empty() => {
                view! { <Empty title="No modules" hint="Upload a .wasm policy module above."/> }.into_any()
            }
            Some(list) => {
                view! {
                    <table class="tbl" data-testid="modules">
                        <thead>
                            <tr>
                                <th>"Module"</th>
                                <th>"Kind"</th>
                                <th>"Version"</th>
                                <th>"Parameters"</th>
                                <th>"Source"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {list
                                .into_iter()
                                .map(|p| {
                                    let r = p.reference.clone();
                                    let r2 = r.clone();
                                    let params = p.params();
                                    let open = move || sel.get().as_deref() == Some(r.as_str());
                                    let open2 = open.clone();
                                    view! {
                                        <tr
                                            class:sel=open
                                            tabindex="0"
                                            on:click=move |_| sel.set(Some(r2.clone()))
                                            data-module=p.name.clone()
                                        >
                                            <td>
                                                <strong>{p.name.clone()}</strong>
                                            </td>
                                            <td>{p.kind.clone()}</td>
                                            <td>{p.version.clone()}</td>
                                            <td>
                                                {params.iter().map(|x| x.name.clone()).collect::<Vec<_>>().join(", ")}
                                            </td>
                                            <td class="muted small">
                                                {if p.builtin {
                                                    "built in".to_string()
                                                } else {
                                                    p.uploaded
                                                        .as_ref()
                                                        .map(|u| format!("uploaded by {} {}", u.uploaded_by, fmt::ago(u.uploaded_at)))
                                                        .unwrap_or_default()
                                                }}
                                            </td>
                                        </tr>
                                        {move || {
                                            open2()
                                                .then(|| {
                                                    view! {
                                                        <tr class="expand">
                                                            <td colspan="5">
                                                                <p>{p.summary()}</p>
                                                                <p class="muted small mono">{p.reference.clone()}</p>
                                                                <ParamTable params=p.params()/>
                                                            </td>
                                                        </tr>
                                                    }
                                                })
                                        }}
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                }
                    .into_any()
            }
        }}
    }
}

#[component]
fn ParamTable(params: Vec<Param>) -> impl IntoView {
    if params.is_empty() {
        return view! { <p class="muted small">"No parameters."</p> }.into_any();
    }
    view! {
        <table class="tbl inner">
            <thead>
                <tr>
                    <th>"Parameter"</th>
                    <th>"Type"</th>
                    <th>"Default"</th>
                    <th>"Range"</th>
                    <th>"Meaning"</th>
                </tr>
            </thead>
            <tbody>
                {params
                    .into_iter()
                    .map(|p| {
                        view! {
                            <tr>
                                <td class="mono">{p.name.clone()}</td>
                                <td>{p.ty.clone()}</td>
                                <td>{p.default.to_string()}</td>
                                <td>{range_text(&p)}</td>
                                <td class="small">{p.help.clone()}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

fn range_text(p: &Param) -> String {
    match (p.min, p.max) {
        (Some(a), Some(b)) => format!("{a} … {b}"),
        (Some(a), None) => format!("≥ {a}"),
        (None, Some(b)) => format!("≤ {b}"),
        _ => "any".into(),
    }
}

/// Checks one parameter's text against its declaration: the TOML value, or why not.
pub fn check_param(p: &Param, text: &str) -> Result<String, String> {
    let t = text.trim();
    match p.ty.as_str() {
        "float" | "integer" | "int" => {
            let v: f64 = t.parse().map_err(|_| format!("{} must be a number", p.name))?;
            if (p.ty == "integer" || p.ty == "int") && v.fract() != 0.0 {
                return Err(format!("{} must be a whole number", p.name));
            }
            if let Some(min) = p.min {
                if v < min {
                    return Err(format!("{} must be at least {min}", p.name));
                }
            }
            if let Some(max) = p.max {
                if v > max {
                    return Err(format!("{} must be at most {max}", p.name));
                }
            }
            Ok(if p.ty == "float" {
                let s = format!("{v}");
                if s.contains('.') || s.contains('e') {
                    s
                } else {
                    format!("{s}.0")
                }
            } else {
                format!("{}", v as i64)
            })
        }
        "bool" | "boolean" => match t {
            "true" | "false" => Ok(t.to_string()),
            _ => Err(format!("{} must be true or false", p.name)),
        },
        _ => Ok(format!("{:?}", t)),
    }
}

fn default_text(p: &Param) -> String {
    match &p.default {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn module_ref(p: &Policy) -> String {
    if p.builtin {
        p.name.clone()
    } else {
        p.reference.clone()
    }
}

const ROLES: [(&str, &str); 3] = [("threshold", "Threshold"), ("selection", "Selection"), ("placement", "Placement")];

#[component]
fn Composer(policies: Loader<Vec<Policy>>, strategies: Loader<Vec<Strategy>>) -> impl IntoView {
    let store = use_store();
    let name = RwSignal::new("my-strategy".to_string());
    let automation = RwSignal::new("automatic".to_string());
    let chosen: RwSignal<BTreeMap<&'static str, String>> = RwSignal::new(BTreeMap::from([
        ("threshold", "lr".to_string()),
        ("selection", "mmt".to_string()),
        ("placement", "pabfd".to_string()),
    ]));
    let fallback = RwSignal::new("thr".to_string());
    let values: RwSignal<BTreeMap<String, String>> = RwSignal::new(BTreeMap::new());
    let rules: RwSignal<BTreeMap<&'static str, String>> = RwSignal::new(BTreeMap::from([
        ("persistence", "1".to_string()),
        ("max_migrations_per_host", "0".to_string()),
        ("vm_cooldown_cycles", "0".to_string()),
    ]));
    let result: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let find = move |role: &str| -> Option<Policy> {
        let r = chosen.with(|c| c.get(role).cloned())?;
        policies.data.with(|d| d.as_ref().and_then(|l| l.iter().find(|p| module_ref(p) == r).cloned()))
    };
    // Errors of the current form, per field key.
    let errors = Memo::new(move |_| {
        let mut errs: BTreeMap<String, String> = BTreeMap::new();
        for (role, _) in ROLES {
            if let Some(p) = find(role) {
                for prm in p.params() {
                    let key = format!("{role}.{}", prm.name);
                    if let Some(v) = values.with(|v| v.get(&key).cloned()) {
                        if let Err(e) = check_param(&prm, &v) {
                            errs.insert(key, e);
                        }
                    }
                }
            }
        }
        for (k, v) in rules.get() {
            if v.trim().parse::<u32>().is_err() {
                errs.insert(format!("rules.{k}"), format!("{k} must be a whole number ≥ 0"));
            }
        }
        let n = name.get();
        if n.trim().is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            errs.insert("name".into(), "a name of letters, digits, - _ .".into());
        }
        errs
    });
    let toml = Memo::new(move |_| {
        let mut s = format!("name = {:?}\n\n", name.get().trim());
        for (role, _) in ROLES {
            let Some(p) = find(role) else { continue };
            s += &format!("[{role}]\nmodule = {:?}\n\n[{role}.params]\n", module_ref(&p));
            for prm in p.params() {
                let key = format!("{role}.{}", prm.name);
                if let Some(v) = values.with(|v| v.get(&key).cloned()) {
                    if let Ok(t) = check_param(&prm, &v) {
                        s += &format!("{} = {t}\n", prm.name);
                    }
                }
            }
            s += "\n";
        }
        let fb = fallback.get();
        if !fb.is_empty() {
            // The fallback is a whole strategy: its threshold, with this strategy's selection
            // and placement.
            s += &format!("[fallback.threshold]\nmodule = {fb:?}\n\n");
            for role in ["selection", "placement"] {
                if let Some(p) = find(role) {
                    s += &format!("[fallback.{role}]\nmodule = {:?}\n\n", module_ref(&p));
                }
            }
        }
        s += "[rules]\n";
        for (k, v) in rules.get() {
            s += &format!("{k} = {}\n", v.trim());
        }
        s
    });
    let submit = move |activate: bool, validate_only: bool| {
        if !errors.get_untracked().is_empty() {
            result.set(Some(Err("Fix the fields marked in red first; nothing was sent.".into())));
            return;
        }
        let body = serde_json::json!({
            "strategy": toml.get_untracked(),
            "automation": automation.get_untracked(),
            "activate": activate,
        });
        spawn_local(async move {
            let r = if validate_only {
                api::post::<serde_json::Value>(
                    "/strategies/validate",
                    &serde_json::json!({ "strategy": toml.get_untracked() }),
                )
                .await
                .map(|_| "Valid: every module loads and accepts these parameters.".to_string())
            } else {
                api::post::<Strategy>("/strategies", &body).await.map(|s| {
                    format!(
                        "Stored {} v{}{}",
                        s.name,
                        s.version,
                        if activate { " and activated: the next cycle plans with it." } else { "." }
                    )
                })
            };
            match r {
                Ok(m) => {
                    result.set(Some(Ok(m)));
                    strategies.load("/strategies".into());
                    store.refresh();
                }
                Err(e) => {
                    store.failed(&e);
                    result.set(Some(Err(e.message)));
                }
            }
        });
    };
    let options = move |kind: &'static str| {
        policies.data.with(|d| {
            d.as_ref()
                .map(|l| {
                    l.iter()
                        .filter(|p| p.kind == kind)
                        .map(|p| {
                            (
                                module_ref(p),
                                if p.builtin {
                                    p.name.clone()
                                } else {
                                    format!("{} (uploaded {})", p.name, &p.reference[7..19.min(p.reference.len())])
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
    };
    view! {
        <form class="form" on:submit=move |ev| ev.prevent_default() data-testid="composer">
            <div class="row">
                <div class="field">
                    <label for="s-name">"Name"</label>
                    <input id="s-name" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/>
                    {move || errors.with(|e| e.get("name").cloned()).map(|e| view! { <span class="ferr">{e}</span> })}
                </div>
                <div class="field">
                    <label for="s-auto">"Automation"</label>
                    <select id="s-auto" prop:value=move || automation.get() on:change=move |ev| automation.set(event_target_value(&ev))>
                        <option value="automatic">"automatic: execute plans at once"</option>
                        <option value="manual">"manual: plans wait for approval"</option>
                    </select>
                </div>
            </div>
            {ROLES
                .into_iter()
                .map(|(role, label)| {
                    let id = format!("s-{role}");
                    view! {
                        <fieldset>
                            <legend>{label}</legend>
                            <div class="field">
                                <label for=id.clone()>{format!("{label} module")}</label>
                                <select
                                    id=id
                                    prop:value=move || chosen.with(|c| c.get(role).cloned().unwrap_or_default())
                                    on:change=move |ev| {
                                        let v = event_target_value(&ev);
                                        chosen.update(|c| {
                                            c.insert(role, v);
                                        });
                                        values.update(|vals| vals.retain(|k, _| !k.starts_with(&format!("{role}."))));
                                    }
                                >
                                    {move || {
                                        options(role)
                                            .into_iter()
                                            .map(|(v, l)| view! { <option value=v.clone() selected=chosen.with_untracked(|c| c.get(role) == Some(&v))>{l}</option> })
                                            .collect_view()
                                    }}
                                </select>
                            </div>
                            {move || {
                                find(role)
                                    .map(|p| {
                                        p.params()
                                            .into_iter()
                                            .map(|prm| {
                                                let key = format!("{role}.{}", prm.name);
                                                let fid = format!("p-{role}-{}", prm.name);
                                                let k1 = key.clone();
                                                let k2 = key.clone();
                                                let k3 = key.clone();
                                                let def = default_text(&prm);
                                                let numeric = prm.ty != "bool" && prm.ty != "boolean" && prm.ty != "string";
                                                view! {
                                                    <div class="field">
                                                        <label for=fid.clone()>
                                                            {prm.name.clone()}
                                                            <span class="muted small">{format!(" ({}, {})", prm.ty, range_text(&prm))}</span>
                                                        </label>
                                                        <input
                                                            id=fid
                                                            data-param=key.clone()
                                                            type=if numeric { "number" } else { "text" }
                                                            step=if prm.ty == "float" { "any" } else { "1" }
                                                            min=prm.min.map(|m| m.to_string())
                                                            max=prm.max.map(|m| m.to_string())
                                                            placeholder=def.clone()
                                                            prop:value=move || values.with(|v| v.get(&k1).cloned().unwrap_or_default())
                                                            on:input=move |ev| {
                                                                let t = event_target_value(&ev);
                                                                values.update(|v| {
                                                                    if t.is_empty() {
                                                                        v.remove(&k2);
                                                                    } else {
                                                                        v.insert(k2.clone(), t);
                                                                    }
                                                                });
                                                            }
                                                            aria-invalid=move || errors.with(|e| e.contains_key(&k3)).to_string()
                                                        />
                                                        <span class="muted small">{format!("default {def} · {}", prm.help)}</span>
                                                        {
                                                            let k = key.clone();
                                                            move || errors.with(|e| e.get(&k).cloned()).map(|e| view! { <span class="ferr" role="alert">{e}</span> })
                                                        }
                                                    </div>
                                                }
                                            })
                                            .collect_view()
                                    })
                            }}
                        </fieldset>
                    }
                })
                .collect_view()}
            <fieldset>
                <legend>"Fallbacks and host-side rules"</legend>
                <div class="row">
                    <div class="field">
                        <label for="s-fallback">"Fallback threshold (used with the same selection and placement when a module fails)"</label>
                        <select id="s-fallback" prop:value=move || fallback.get() on:change=move |ev| fallback.set(event_target_value(&ev))>
                            <option value="">"none"</option>
                            {move || options("threshold").into_iter().map(|(v, l)| view! { <option value=v>{l}</option> }).collect_view()}
                        </select>
                    </div>
                    {["persistence", "max_migrations_per_host", "vm_cooldown_cycles"]
                        .into_iter()
                        .map(|k| {
                            let fid = format!("r-{k}");
                            view! {
                                <div class="field">
                                    <label for=fid.clone()>{k.replace('_', " ")}</label>
                                    <input
                                        id=fid
                                        type="number"
                                        min="0"
                                        step="1"
                                        prop:value=move || rules.with(|r| r.get(k).cloned().unwrap_or_default())
                                        on:input=move |ev| rules.update(|r| {
                                            r.insert(k, event_target_value(&ev));
                                        })
                                    />
                                    {move || errors.with(|e| e.get(&format!("rules.{k}")).cloned()).map(|e| view! { <span class="ferr">{e}</span> })}
                                </div>
                            }
                        })
                        .collect_view()}
                </div>
            </fieldset>
            <details>
                <summary>"Strategy TOML"</summary>
                <pre class="mono small">{move || toml.get()}</pre>
            </details>
            <div class="row">
                <button class="btn" type="button" on:click=move |_| submit(false, true)>"Validate"</button>
                <button class="btn" type="button" data-testid="create-strategy" on:click=move |_| submit(false, false) disabled=move || !errors.with(|e| e.is_empty())>
                    "Create version"
                </button>
                <button class="btn primary" type="button" data-testid="create-activate" on:click=move |_| submit(true, false) disabled=move || !errors.with(|e| e.is_empty())>
                    "Create and activate"
                </button>
            </div>
            {move || {
                result
                    .get()
                    .map(|r| match r {
                        Ok(m) => view! { <p class="ok" role="status" data-testid="strategy-ok">{m}</p> }.into_any(),
                        Err(m) => view! { <p class="error" role="alert" data-testid="strategy-error">{m}</p> }.into_any(),
                    })
            }}
        </form>
    }
}

#[component]
fn Strategies(strategies: Loader<Vec<Strategy>>) -> impl IntoView {
    let store = use_store();
    let cmp = query("compare");
    let set_query = crate::app::use_set_query();
    let msg: RwSignal<Option<Result<String, String>>> = RwSignal::new(None);
    let activate = move |id: i64| {
        spawn_local(async move {
            match api::post::<Strategy>(&format!("/strategies/{id}/activate"), &serde_json::json!({})).await {
                Ok(s) => msg.set(Some(Ok(format!("{} v{} is active.", s.name, s.version)))),
                Err(e) => {
                    store.failed(&e);
                    msg.set(Some(Err(e.message)))
                }
            }
            strategies.load("/strategies".into());
            store.refresh();
        });
    };
    view! {
        {move || {
            msg.get()
                .map(|r| match r {
                    Ok(m) => view! { <p class="ok" role="status">{m}</p> }.into_any(),
                    Err(m) => view! { <p class="error" role="alert">{m}</p> }.into_any(),
                })
        }}
        {move || match strategies.data.get() {
            None => view! { <p class="muted">"Loading strategies…"</p> }.into_any(),
            Some(list) => {
                let picked: Vec<i64> = cmp.get().map(|c| c.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
                let sq = set_query.clone();
                let rows = list
                    .iter()
                    .map(|s| {
                        let id = s.id;
                        let on = picked.contains(&id);
                        let picked2 = picked.clone();
                        let sq = sq.clone();
                        view! {
                            <tr class:sel=on>
                                <td>
                                    <input
                                        type="checkbox"
                                        aria-label=format!("Compare {} v{}", s.name, s.version)
                                        prop:checked=on
                                        on:change=move |_| {
                                            let mut p = picked2.clone();
                                            if let Some(i) = p.iter().position(|x| *x == id) {
                                                p.remove(i);
                                            } else {
                                                p.push(id);
                                                if p.len() > 2 {
                                                    p.remove(0);
                                                }
                                            }
                                            let v = p.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
                                            sq(&[("compare", if v.is_empty() { None } else { Some(&v) })]);
                                        }
                                    />
                                </td>
                                <td>
                                    <strong>{s.name.clone()}</strong>
                                </td>
                                <td>{format!("v{}", s.version)}</td>
                                <td>{s.automation.clone()}</td>
                                <td class="muted small">{format!("{} · {}", s.created_by, fmt::ago(s.created_at))}</td>
                                <td>
                                    {if s.active {
                                        view! { <span class="badge green">"active"</span> }.into_any()
                                    } else {
                                        view! {
                                            <button class="btn small" data-strategy=s.name.clone() on:click=move |_| activate(id)>
                                                "Activate"
                                            </button>
                                        }
                                            .into_any()
                                    }}
                                </td>
                            </tr>
                        }
                    })
                    .collect_view();
                let shown: Vec<Strategy> = picked.iter().filter_map(|id| list.iter().find(|s| s.id == *id).cloned()).collect();
                view! {
                    <table class="tbl" data-testid="strategies">
                        <thead>
                            <tr>
                                <th>"Compare"</th>
                                <th>"Strategy"</th>
                                <th>"Version"</th>
                                <th>"Automation"</th>
                                <th>"Created"</th>
                                <th></th>
                            </tr>
                        </thead>
                        <tbody>{rows}</tbody>
                    </table>
                    {if shown.is_empty() {
                        view! { <p class="muted small">"Tick up to two versions to see them side by side."</p> }.into_any()
                    } else {
                        view! {
                            <div class="sidebyside">
                                {shown
                                    .into_iter()
                                    .map(|s| {
                                        view! {
                                            <div>
                                                <h3>{format!("{} v{}", s.name, s.version)}</h3>
                                                <pre class="mono small">{s.toml}</pre>
                                            </div>
                                        }
                                    })
                                    .collect_view()}
                            </div>
                        }
                            .into_any()
                    }}
                }
                    .into_any()
            }
        }}
    }
}

#[allow(dead_code)]
fn _file(e: &web_sys::Event) -> Option<web_sys::File> {
    e.target()?.dyn_into::<web_sys::HtmlInputElement>().ok()?.files()?.get(0)
}
