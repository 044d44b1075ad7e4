//! A page whose code is not in the browser yet (the network dropped before
//! the prefetch had it) opens once the code arrives: the loader tries again
//! until it has it (`scripts/fingerprint.py`), and tells the page with the
//! window events `threadline:module-wait` and `threadline:module-ready`.
//! Meanwhile this says that the click was heard.

use leptos::prelude::*;

#[component]
pub fn WaitingForPageCode() -> impl IntoView {
    let waiting = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    {
        let _ = window_event_listener_untyped("threadline:module-wait", move |_| waiting.set(true));
        let _ =
            window_event_listener_untyped("threadline:module-ready", move |_| waiting.set(false));
    }
    view! {
        <Show when=move || waiting.get()>
            <p class="page-code-wait" role="status">"Waiting for the network to open this page…"</p>
        </Show>
    }
}
