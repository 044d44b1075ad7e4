use crate::realtime::Table;
use leptos::prelude::*;
use leptos_router::components::A;
use threadline_realtime::client::{Listen, use_realtime};

use crate::api::notifications::{MarkNotificationsRead, notifications};
use crate::model::{NotificationSummary, format_timestamp};

/// The bell in the header: unread count, and the recent notifications on click.
#[component]
pub fn NotificationBell() -> impl IntoView {
    let mark_read = ServerAction::<MarkNotificationsRead>::new();
    let me = expect_context::<crate::app::Session>()
        .user
        .get_untracked()
        .map(|u| u.id)
        .unwrap_or_default();
    let live = use_realtime(
        Listen::table(Table::Notifications).filter(format!("user_id=eq.{me}")),
        |_| {},
    );
    let summary = Resource::new(
        move || (mark_read.version().get(), live.version.get()),
        |_| notifications(),
    );
    let open = RwSignal::new(false);

    view! {
        <div class="bell">
            <Transition fallback=move || view! { <BellButton unread=0 open/> }>
                {move || Suspend::new(async move {
                    let summary = summary.await;
                    let unread = summary.as_ref().map(|s| s.unread).unwrap_or(0);
                    view! {
                        <BellButton unread open/>
                        <Show when=move || open.get()>
                            <BellPanel summary=summary.clone() open mark_read/>
                        </Show>
                    }
                })}
            </Transition>
        </div>
    }
}

#[component]
fn BellButton(unread: i64, open: RwSignal<bool>) -> impl IntoView {
    view! {
        <button
            type="button"
            class="button ghost bell-button"
            aria-haspopup="true"
            aria-expanded=move || open.get().to_string()
            aria-label=format!("Notifications, {unread} unread")
            on:click=move |_| open.update(|o| *o = !*o)
        >
            <svg class="bell-icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                <path fill="currentColor" d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1Z"/>
            </svg>
            {(unread > 0).then(|| view! { <span class="bell-count" data-testid="unread-count">{unread}</span> })}
        </button>
    }
}

#[component]
fn BellPanel(
    summary: Result<NotificationSummary, crate::error::AppError>,
    open: RwSignal<bool>,
    mark_read: ServerAction<MarkNotificationsRead>,
) -> impl IntoView {
    let list = match summary {
        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
        Ok(s) if s.recent.is_empty() => view! { <p class="muted">"Nothing yet."</p> }.into_any(),
        Ok(s) => view! {
            <ul class="bell-list">
                {s.recent.into_iter().map(|n| {
                    let id = n.id;
                    let unread = n.read_at.is_none();
                    view! {
                        <li class:unread=unread>
                            <A href=n.link.clone() on:click=move |_| {
                                open.set(false);
                                if unread { mark_read.dispatch(MarkNotificationsRead { id: Some(id) }); }
                            }>
                                <span class="bell-text">{n.text.clone()}</span>
                                <span class="bell-time">{format_timestamp(n.created_at)}</span>
                            </A>
                        </li>
                    }
                }).collect_view()}
            </ul>
        }.into_any(),
    };
    view! {
        <div class="bell-panel" role="dialog" aria-label="Notifications">
            <div class="bell-panel-head">
                <strong>"Notifications"</strong>
                <button type="button" class="link-button"
                    on:click=move |_| { mark_read.dispatch(MarkNotificationsRead { id: None }); }
                >"Mark all read"</button>
            </div>
            {list}
        </div>
    }
}
