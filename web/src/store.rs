//! The live state every page reads: a snapshot (status, hosts, VMs) reloaded on every
//! (re)connect and after cycles, in-flight migrations merged from `migration` events so bytes
//! never run backwards, and per-kind event counters pages key their own reloads on.
//!
//! Refreshes never overlap: one runs at a time, and a request made while one runs is folded
//! into a single follow-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::de::DeserializeOwned;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;

use crate::api::{self, ApiError, Host, Progress, Status, Vm};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Live,
    Reconnecting,
}

/// Event counters (bumped by SSE events of that kind).
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    pub plan: RwSignal<u64>,
    pub experiment: RwSignal<u64>,
    pub policy: RwSignal<u64>,
    pub strategy: RwSignal<u64>,
    pub cycle: RwSignal<u64>,
    pub migration_end: RwSignal<u64>,
    /// A `reload` event or a reconnect: live appends may have missed points, charts refetch.
    pub reload: RwSignal<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Store {
    pub authed: RwSignal<bool>,
    pub status: RwSignal<Option<Status>>,
    pub hosts: RwSignal<Arc<Vec<Host>>>,
    pub vms: RwSignal<Arc<Vec<Vm>>>,
    /// World time of the `hosts` and `vms` snapshot (charts append its values at that time).
    pub tables_t: RwSignal<f64>,
    /// In-flight migrations by action id, bytes monotone.
    pub live: RwSignal<BTreeMap<i64, Progress>>,
    pub conn: RwSignal<Conn>,
    /// The last snapshot error (the previous snapshot stays on screen).
    pub error: RwSignal<Option<String>>,
    pub ticks: Ticks,
    busy: StoredValue<bool>,
    pending: StoredValue<bool>,
    tables_at: StoredValue<f64>,
    source: StoredValue<Option<web_sys::EventSource>, LocalStorage>,
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

impl Store {
    pub fn new() -> Store {
        Store {
            authed: RwSignal::new(api::token().is_some()),
            status: RwSignal::new(None),
            hosts: RwSignal::new(Arc::new(Vec::new())),
            vms: RwSignal::new(Arc::new(Vec::new())),
            tables_t: RwSignal::new(0.0),
            live: RwSignal::new(BTreeMap::new()),
            conn: RwSignal::new(Conn::Connecting),
            error: RwSignal::new(None),
            ticks: Ticks {
                plan: RwSignal::new(0),
                experiment: RwSignal::new(0),
                policy: RwSignal::new(0),
                strategy: RwSignal::new(0),
                cycle: RwSignal::new(0),
                migration_end: RwSignal::new(0),
                reload: RwSignal::new(0),
            },
            busy: StoredValue::new(false),
            pending: StoredValue::new(false),
            tables_at: StoredValue::new(0.0),
            source: StoredValue::new_local(None),
        }
    }

    /// A failed request: a 401 sends the user back to the login form.
    pub fn failed(&self, e: &ApiError) {
        if e.status == 401 {
            self.logout();
        }
    }

    pub fn logout(&self) {
        api::set_token(None);
        self.disconnect();
        self.authed.set(false);
        self.status.set(None);
    }

    /// Reloads the snapshot; never two at once.
    pub fn refresh(self) {
        if self.busy.get_value() {
            self.pending.set_value(true);
            return;
        }
        self.busy.set_value(true);
        spawn_local(async move {
            loop {
                self.pending.set_value(false);
                self.load().await;
                if !self.pending.get_value() {
                    break;
                }
            }
            self.busy.set_value(false);
        });
    }

    async fn load(self) {
        match api::get::<Status>("/status").await {
            Ok(s) => {
                self.merge_progress(&s.migrations_in_flight, true);
                self.status.set(Some(s));
                self.error.set(None);
            }
            Err(e) => {
                self.failed(&e);
                self.error.set(Some(e.to_string()));
                return;
            }
        }
        // The tables are the heavy part: at most every second (every 3 s past 2,000 hosts).
        let n = self.hosts.with_untracked(|h| h.len());
        let every = if n > 2000 { 3000.0 } else { 1000.0 };
        if now_ms() - self.tables_at.get_value() < every {
            let wait = every - (now_ms() - self.tables_at.get_value());
            set_timeout(move || self.refresh(), Duration::from_millis(wait.max(50.0) as u64));
            return;
        }
        self.tables_at.set_value(now_ms());
        let t = self.status.with_untracked(|s| s.as_ref().map(|s| s.world_time).unwrap_or(0.0));
        let (h, v) = futures_join(api::get::<Vec<Host>>("/hosts"), api::get::<Vec<Vm>>("/vms")).await;
        self.tables_t.set(t);
        match h {
            Ok(h) => self.hosts.set(Arc::new(h)),
            Err(e) => self.error.set(Some(e.to_string())),
        }
        match v {
            Ok(v) => self.vms.set(Arc::new(v)),
            Err(e) => self.error.set(Some(e.to_string())),
        }
    }

    /// Merges migration progress: bytes sent never decrease, remaining never increase. With
    /// `full`, migrations missing from `list` have ended.
    fn merge_progress(&self, list: &[Progress], full: bool) {
        self.live.update(|m| {
            let mut next = BTreeMap::new();
            for p in list {
                let mut p = p.clone();
                if let Some(old) = m.get(&p.action_id) {
                    p.bytes_sent = p.bytes_sent.max(old.bytes_sent);
                    p.bytes_remaining = p.bytes_remaining.min(old.bytes_remaining);
                    p.elapsed_s = p.elapsed_s.max(old.elapsed_s);
                }
                next.insert(p.action_id, p);
            }
            if !full {
                for (id, p) in m.iter() {
                    next.entry(*id).or_insert_with(|| p.clone());
                }
            }
            *m = next;
        });
    }

    fn on_event(self, kind: &str, data: Option<String>) {
        let bump = |s: RwSignal<u64>| s.update(|n| *n += 1);
        match kind {
            "cycle" => {
                bump(self.ticks.cycle);
                self.refresh();
            }
            "migration" => {
                #[derive(serde::Deserialize)]
                struct Ev {
                    data: MigData,
                }
                #[derive(serde::Deserialize)]
                struct MigData {
                    #[serde(default)]
                    migrations: Vec<Progress>,
                }
                if let Some(ev) = data.as_deref().and_then(|d| serde_json::from_str::<Ev>(d).ok()) {
                    let ended = ev.data.migrations.iter().any(|p| p.phase == "done");
                    self.merge_progress(&ev.data.migrations, true);
                    if ended {
                        bump(self.ticks.migration_end);
                    }
                }
            }
            "plan" | "action" => bump(self.ticks.plan),
            "experiment" => bump(self.ticks.experiment),
            "policy" => bump(self.ticks.policy),
            "controller" => {
                bump(self.ticks.strategy);
                self.refresh();
            }
            "host" => self.refresh(),
            "reload" => {
                bump(self.ticks.reload);
                bump(self.ticks.plan);
                bump(self.ticks.experiment);
                self.refresh();
            }
            _ => {}
        }
    }

    /// Whether an event stream is open (or opening).
    pub fn connected(&self) -> bool {
        self.source.with_value(|s| s.is_some())
    }

    pub fn disconnect(&self) {
        if let Some(es) = self.source.get_value() {
            es.close();
        }
        self.source.set_value(None);
    }

    /// Opens the event stream; the snapshot is reloaded on every (re)connect.
    pub fn connect(self) {
        self.disconnect();
        let Some(token) = api::token() else { return };
        let url = format!("/api/v1/events?access_token={}", api::enc(&token));
        let Ok(es) = web_sys::EventSource::new(&url) else {
            self.conn.set(Conn::Reconnecting);
            return;
        };
        for kind in ["cycle", "plan", "action", "migration", "host", "experiment", "policy", "controller", "reload"] {
            let cb = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                self.on_event(kind, e.data().as_string());
            });
            let _ = es.add_event_listener_with_callback(kind, cb.as_ref().unchecked_ref());
            cb.forget();
        }
        let open = Closure::<dyn FnMut()>::new(move || {
            if self.conn.get_untracked() == Conn::Reconnecting {
                self.ticks.reload.update(|n| *n += 1);
            }
            self.conn.set(Conn::Live);
            self.refresh();
        });
        es.set_onopen(Some(open.as_ref().unchecked_ref()));
        open.forget();
        let err = Closure::<dyn FnMut()>::new(move || {
            self.conn.set(Conn::Reconnecting);
            // CLOSED (2): the browser gave up (e.g. a 401); check the token, then retry.
            let closed = self.source.with_value(|s| s.as_ref().is_some_and(|s| s.ready_state() == 2));
            if closed {
                set_timeout(
                    move || {
                        spawn_local(async move {
                            match api::get::<Status>("/status").await {
                                Err(e) if e.status == 401 => self.logout(),
                                _ => {
                                    if self.authed.get_untracked() {
                                        self.connect()
                                    }
                                }
                            }
                        })
                    },
                    Duration::from_secs(3),
                );
            }
        });
        es.set_onerror(Some(err.as_ref().unchecked_ref()));
        err.forget();
        self.source.set_value(Some(es));
    }
}

async fn futures_join<A, B>(
    a: impl std::future::Future<Output = A>,
    b: impl std::future::Future<Output = B>,
) -> (A, B) {
    // Both requests are in flight once created (fetch starts eagerly), so awaiting in turn is
    // enough here; kept as one helper in case that changes.
    let a = a.await;
    let b = b.await;
    (a, b)
}

pub fn use_store() -> Store {
    expect_context::<Store>()
}

/// A page's list or record: kept on screen while it reloads (no flashing), reloads never
/// overlap, the error of the last attempt beside the last good data.
#[derive(Debug)]
pub struct Loader<T: Send + Sync + 'static> {
    pub data: RwSignal<Option<T>>,
    pub error: RwSignal<Option<ApiError>>,
    pub loading: RwSignal<bool>,
    path: StoredValue<String>,
    pending: StoredValue<bool>,
    store: Store,
}

impl<T: Send + Sync + 'static> Clone for Loader<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Send + Sync + 'static> Copy for Loader<T> {}

impl<T: DeserializeOwned + Send + Sync + 'static> Loader<T> {
    pub fn new() -> Loader<T> {
        Loader {
            data: RwSignal::new(None),
            error: RwSignal::new(None),
            loading: RwSignal::new(false),
            path: StoredValue::new(String::new()),
            pending: StoredValue::new(false),
            store: use_store(),
        }
    }

    /// Loads `path` (a new path drops what an older one showed).
    pub fn load(self, path: String) {
        let changed = self.path.try_with_value(|p| *p != path).unwrap_or(false);
        if changed {
            self.path.set_value(path);
        }
        if self.loading.get_untracked() {
            self.pending.set_value(true);
            return;
        }
        self.loading.set(true);
        let store = self.store;
        spawn_local(async move {
            loop {
                self.pending.set_value(false);
                let Some(p) = self.path.try_get_value() else { return };
                let r = api::get::<T>(&p).await;
                match r {
                    Ok(v) => {
                        self.data.try_set(Some(v));
                        self.error.try_set(None);
                    }
                    Err(e) => {
                        store.failed(&e);
                        self.error.try_set(Some(e));
                    }
                }
                if !self.pending.try_get_value().unwrap_or(false) {
                    break;
                }
            }
            self.loading.try_set(false);
        });
    }
}
