//! The shell: login, navigation, theme, connection state, routes.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::{use_location, use_navigate};
use leptos_router::{path, NavigateOptions};
use wasm_bindgen::JsCast;

use crate::api::{self, Status};
use crate::pages;
use crate::store::{use_store, Conn, Store};

/// Sets (Some) or removes (None) query parameters of the current URL, replacing the history
/// entry, so every page's state can be bookmarked.
pub fn use_set_query() -> impl Fn(&[(&str, Option<&str>)]) + Clone + 'static {
    let navigate = use_navigate();
    move |pairs: &[(&str, Option<&str>)]| {
        let loc = web_sys::window().map(|w| w.location());
        let path = loc.as_ref().and_then(|l| l.pathname().ok()).unwrap_or_else(|| "/".into());
        let search = loc.as_ref().and_then(|l| l.search().ok()).unwrap_or_default();
        let Ok(params) = web_sys::UrlSearchParams::new_with_str(&search) else { return };
        for (k, v) in pairs {
            match v {
                Some(v) => params.set(k, v),
                None => params.delete(k),
            }
        }
        let q = String::from(params.to_string());
        let url = if q.is_empty() { path } else { format!("{path}?{q}") };
        navigate(&url, NavigateOptions { replace: true, scroll: false, ..Default::default() });
    }
}

fn set_theme(theme: &str) {
    if let Some(el) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let _ = el.set_attribute("data-theme", theme);
    }
}

fn initial_theme() -> String {
    api::local_get("amvm.theme").unwrap_or_else(|| {
        let dark = web_sys::window()
            .and_then(|w| w.match_media("(prefers-color-scheme: dark)").ok().flatten())
            .is_some_and(|m| m.matches());
        if dark { "dark" } else { "light" }.to_string()
    })
}

#[component]
pub fn App() -> impl IntoView {
    let store = Store::new();
    provide_context(store);
    let theme = RwSignal::new(initial_theme());
    Effect::new(move |_| set_theme(&theme.get()));
    Effect::new(move |_| {
        if store.authed.get() {
            store.connect();
        }
    });
    // One event stream per visible page: closed when the tab is hidden or the page is left
    // (a page kept in the back/forward cache would otherwise hold a connection, and HTTP/1.1
    // gives a site only six), reopened (with a snapshot reload) when it shows again.
    watch_visibility(store);
    view! {
        <Router>
            {move || {
                if store.authed.get() {
                    view! { <Shell theme/> }.into_any()
                } else {
                    view! { <Login/> }.into_any()
                }
            }}
        </Router>
    }
}

#[component]
fn Login() -> impl IntoView {
    let store = use_store();
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = token.get_untracked().trim().to_string();
        if t.is_empty() {
            error.set(Some("Enter the controller's API token (amvm demo prints one).".into()));
            return;
        }
        busy.set(true);
        api::set_token(Some(&t));
        spawn_local(async move {
            match api::get::<Status>("/status").await {
                Ok(_) => {
                    error.set(None);
                    store.authed.set(true);
                }
                Err(e) => {
                    api::set_token(None);
                    error.set(Some(if e.status == 401 {
                        "This token was refused: check it against the controller's tokens file or AMVM_ADMIN_TOKEN."
                            .into()
                    } else {
                        e.to_string()
                    }));
                }
            }
            busy.set(false);
        });
    };
    view! {
        <main class="login">
            <form class="card loginbox" on:submit=submit>
                <h1>
                    <span class="logo">"▣"</span>
                    " AMVM"
                </h1>
                <p class="muted">"Sign in to the consolidation controller with an API token."</p>
                <label for="token">"API token"</label>
                <input
                    id="token"
                    name="token"
                    type="password"
                    autocomplete="current-password"
                    placeholder="read or admin token"
                    autofocus
                    prop:value=move || token.get()
                    on:input=move |ev| token.set(event_target_value(&ev))
                />
                {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                <button class="btn primary" type="submit" disabled=move || busy.get()>
                    {move || if busy.get() { "Checking…" } else { "Sign in" }}
                </button>
                <p class="muted small">
                    "The token stays in this browser (localStorage). Read tokens can look; admin tokens can approve, upload and start experiments."
                </p>
            </form>
        </main>
    }
}

const NAV: [(&str, &str, &str); 7] = [
    ("/", "Overview", "1"),
    ("/hosts", "Hosts", "2"),
    ("/vms", "VMs", "3"),
    ("/migrations", "Migrations", "4"),
    ("/plans", "Plans", "5"),
    ("/policies", "Policies", "6"),
    ("/experiments", "Experiments", "7"),
];

#[component]
fn Shell(theme: RwSignal<String>) -> impl IntoView {
    let store = use_store();
    let navigate = use_navigate();
    // Keyboard: 1–7 switch pages (outside form fields).
    let handle = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.ctrl_key() || ev.meta_key() || ev.alt_key() {
            return;
        }
        let in_field = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .is_some_and(|el| matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
        if in_field {
            return;
        }
        if let Some((path, _, _)) = NAV.iter().find(|(_, _, k)| *k == ev.key()) {
            navigate(path, NavigateOptions::default());
        }
    });
    on_cleanup(move || handle.remove());
    let location = use_location();
    let nav = NAV
        .iter()
        .map(|(path, label, key)| {
            let p = *path;
            let current = move || {
                let cur = location.pathname.get();
                if p == "/" {
                    cur == "/"
                } else {
                    cur == p || cur.starts_with(&format!("{p}/"))
                }
            };
            view! {
                <a
                    href=*path
                    class=move || if current() { "nav on" } else { "nav" }
                    aria-current=move || if current() { Some("page") } else { None }
                    title=format!("{label} (key {key})")
                >
                    {*label}
                </a>
            }
        })
        .collect_view();
    view! {
        <header class="top">
            <a class="brand" href="/">
                <span class="logo">"▣"</span>
                " AMVM"
            </a>
            <nav aria-label="Pages">{nav}</nav>
            <div class="spacer"></div>
            <span class="world muted small">
                {move || {
                    store
                        .status
                        .with(|s| {
                            s.as_ref()
                                .map(|s| {
                                    format!(
                                        "{} · cycle {} · {}",
                                        s.world.name,
                                        s.last_cycle.cycle,
                                        crate::fmt::time(s.world_time),
                                    )
                                })
                        })
                        .unwrap_or_default()
                }}
            </span>
            <span
                class=move || match store.conn.get() {
                    Conn::Live => "conn live",
                    Conn::Connecting => "conn wait",
                    Conn::Reconnecting => "conn down",
                }
                role="status"
                data-testid="conn"
            >
                {move || match store.conn.get() {
                    Conn::Live => "● live",
                    Conn::Connecting => "○ connecting",
                    Conn::Reconnecting => "○ reconnecting…",
                }}
            </span>
            <button
                class="btn small"
                title="Switch between light and dark"
                aria-label="Switch theme"
                on:click=move |_| {
                    let next = if theme.get_untracked() == "dark" { "light" } else { "dark" };
                    api::local_set("amvm.theme", next);
                    theme.set(next.into());
                }
            >
                {move || if theme.get() == "dark" { "☀ Light" } else { "☾ Dark" }}
            </button>
            <button class="btn small" on:click=move |_| store.logout()>
                "Sign out"
            </button>
        </header>
        {move || {
            store
                .error
                .get()
                .map(|e| {
                    view! {
                        <div class="banner error" role="alert">
                            {format!("The live view is stale: {e}. Retrying on the next event.")}
                        </div>
                    }
                })
        }}
        <main class="page">
            <Routes fallback=|| view! { <pages::NotFound/> }>
                <Route path=path!("/") view=pages::overview::Overview/>
                <Route path=path!("/index.html") view=pages::overview::Overview/>
                <Route path=path!("/hosts") view=pages::tables::Hosts/>
                <Route path=path!("/hosts/:id") view=pages::detail::HostPage/>
                <Route path=path!("/vms") view=pages::tables::Vms/>
                <Route path=path!("/vms/:id") view=pages::detail::VmPage/>
                <Route path=path!("/migrations") view=pages::migrations::Migrations/>
                <Route path=path!("/plans") view=pages::plans::Plans/>
                <Route path=path!("/policies") view=pages::policies::Policies/>
                <Route path=path!("/experiments") view=pages::experiments::Experiments/>
            </Routes>
        </main>
    }
}

fn watch_visibility(store: Store) {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    let Some(window) = web_sys::window() else { return };
    let Some(document) = window.document() else { return };
    let doc = document.clone();
    let on_visibility = Closure::<dyn FnMut()>::new(move || {
        if doc.hidden() {
            store.disconnect();
        } else if store.authed.get_untracked() && !store.connected() {
            store.connect();
        }
    });
    let _ = document.add_event_listener_with_callback("visibilitychange", on_visibility.as_ref().unchecked_ref());
    on_visibility.forget();
    let on_hide = Closure::<dyn FnMut()>::new(move || store.disconnect());
    let _ = window.add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
    on_hide.forget();
    let on_show = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        if store.authed.get_untracked() && !store.connected() {
            store.connect();
        }
    });
    let _ = window.add_event_listener_with_callback("pageshow", on_show.as_ref().unchecked_ref());
    on_show.forget();
}
