use leptos::prelude::*;

/// The connection status spot in the header. Live updates arrive with the
/// realtime client; until then the page is static and refetches after each
/// change it makes.
#[component]
pub fn ConnectionStatusIndicator() -> impl IntoView {
    view! {
        <span class="connection-status" data-state="static" role="status" aria-label="Connection status: updates on reload">
            <span class="dot" aria-hidden="true"></span>
            <span class="connection-label">"Updates on reload"</span>
        </span>
    }
}
