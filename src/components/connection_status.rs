use leptos::prelude::*;

use threadline_realtime::client::{ConnectionStatus, use_connection};

/// Live / connecting / reconnecting (attempt, next retry) / polling /
/// offline, with "retry now" and the time since the last sign of life.
#[component]
pub fn ConnectionStatusIndicator() -> impl IntoView {
    let Some(client) = use_connection() else {
        return ().into_any();
    };
    // a clock for the countdown and "last update" texts, client side only
    let now = RwSignal::new(None::<f64>);
    #[cfg(feature = "hydrate")]
    {
        now.set(Some(js_sys::Date::now()));
        if let Ok(handle) = set_interval_with_handle(
            move || now.set(Some(js_sys::Date::now())),
            std::time::Duration::from_secs(1),
        ) {
            on_cleanup(move || handle.clear());
        }
    }
    let status = client.status;
    let label = move || match status.get() {
        ConnectionStatus::Connecting => "Connecting…".to_string(),
        ConnectionStatus::Live => "Live".to_string(),
        ConnectionStatus::Reconnecting { attempt, retry_at } => {
            // whole seconds: formatting a float would cost the bundle ~15 KB
            let seconds = now
                .get()
                .map_or(0, |now| ((retry_at - now).max(0.0) as u64).div_ceil(1000));
            format!("Reconnecting (attempt {attempt}, retry in {seconds}s)")
        }
        ConnectionStatus::Polling => "Polling (live link blocked)".to_string(),
        ConnectionStatus::Offline => "Offline".to_string(),
        ConnectionStatus::SignedOut => "Signed out".to_string(),
    };
    let since = move || {
        let (Some(now), Some(at)) = (now.get(), client.last_activity.get()) else {
            return String::new();
        };
        let seconds = ((now - at) / 1000.0).max(0.0) as u64;
        match seconds {
            0..=4 => "updated just now".into(),
            5..=59 => format!("updated {seconds}s ago"),
            _ => format!("updated {}m ago", seconds / 60),
        }
    };
    let can_retry = move || {
        matches!(
            status.get(),
            ConnectionStatus::Reconnecting { .. }
                | ConnectionStatus::Polling
                | ConnectionStatus::Offline
        )
    };
    view! {
        <span class="connection-status" data-state=move || status.get().key() role="status" aria-live="polite"
            aria-label=move || {
                let since = since();
                if since.is_empty() { format!("Connection: {}", label()) } else { format!("Connection: {}, {since}", label()) }
            }
            title=since
        >
            <span class="dot" aria-hidden="true"></span>
            <span class="connection-label">{label}</span>
            <Show when=can_retry>
                <button type="button" class="link-button retry" on:click=move |_| client.retry_now()>"Retry now"</button>
            </Show>
        </span>
    }
    .into_any()
}
