//! The pages, one module per area.

pub mod detail;
pub mod experiments;
pub mod migrations;
pub mod overview;
pub mod plans;
pub mod policies;
pub mod tables;

use leptos::prelude::*;

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <section class="card empty">
            <h2>"No such page"</h2>
            <p>"This address is not a dashboard page. Use the navigation above, or go to the "<a href="/">"overview"</a>"."</p>
        </section>
    }
}

/// An empty state that says what to do.
#[component]
pub fn Empty(title: &'static str, #[prop(into)] hint: String) -> impl IntoView {
    view! {
        <div class="emptystate">
            <strong>{title}</strong>
            <p class="muted">{hint}</p>
        </div>
    }
}

/// A state badge (plan, action and experiment states).
pub fn badge(state: &str) -> impl IntoView {
    let class = match state {
        "RECOMMENDED" | "RUNNING" | "ONGOING" => "badge blue",
        "APPROVED" | "SUCCEEDED" | "DONE" | "up" => "badge green",
        "FAILED" | "REJECTED" | "down" => "badge red",
        "CANCELLED" | "SUPERSEDED" | "asleep" | "SHADOW" => "badge grey",
        "maintenance" => "badge amber",
        _ => "badge",
    };
    view! { <span class=class>{state.to_string()}</span> }
}

/// The value of query parameter `key`.
pub fn query(key: &'static str) -> Memo<Option<String>> {
    let q = leptos_router::hooks::use_query_map();
    Memo::new(move |_| q.with(|q| q.get(key)))
}
