use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_location;

use crate::app::Session;
use crate::realtime::Table;
use threadline_realtime::client::{Listen, RealtimeEvent, use_realtime};

#[derive(Clone, Debug, PartialEq)]
struct Toast {
    id: u64,
    text: String,
    link: String,
}

/// A toast for each new message to me that is not already on screen.
#[component]
pub fn MessageToasts() -> impl IntoView {
    let session = expect_context::<Session>();
    let Some(me) = session.user.get_untracked() else {
        return ().into_any();
    };
    let toasts = RwSignal::new(Vec::<Toast>::new());
    let location = use_location();
    let next = StoredValue::new(1u64);
    use_realtime(
        Listen::table(Table::Messages)
            .event("INSERT")
            .filter(format!("recipient_id=eq.{}", me.id)),
        move |event| {
            let RealtimeEvent::Change(change) = event else {
                return;
            };
            let Some(record) = change.data.record.as_ref() else {
                return;
            };
            let order = record
                .get("order_id")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let link = order.map_or_else(|| "/messages".to_string(), |o| format!("/orders/{o}"));
            let path = location.pathname.get_untracked();
            if path == link || path == "/messages" {
                return;
            }
            let body = record
                .get("body")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let preview: String = body.chars().take(90).collect();
            let id = next.get_value();
            next.set_value(id + 1);
            toasts.update(|t| {
                t.push(Toast {
                    id,
                    text: preview,
                    link,
                })
            });
            #[cfg(feature = "hydrate")]
            set_timeout(
                move || toasts.update(|t| t.retain(|x| x.id != id)),
                std::time::Duration::from_secs(8),
            );
        },
    );
    view! {
        <div class="toasts" aria-live="polite">
            <For each=move || toasts.get() key=|t| t.id let:toast>
                <div class="toast" role="status">
                    <strong>"New message"</strong>
                    <span class="toast-text">{toast.text.clone()}</span>
                    <A href=toast.link.clone() on:click=move |_| toasts.update(|t| t.retain(|x| x.id != toast.id))>"Open"</A>
                    <button type="button" class="link-button" aria-label="Dismiss"
                        on:click=move |_| toasts.update(|t| t.retain(|x| x.id != toast.id))>"×"</button>
                </div>
            </For>
        </div>
    }
    .into_any()
}
