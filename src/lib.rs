#![recursion_limit = "256"]

pub mod api;
pub mod app;
pub mod auth;
pub mod components;
pub mod error;
pub mod model;
pub mod realtime;
pub mod routes;
#[cfg(feature = "ssr")]
pub mod server;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    let Some(body) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.body())
    else {
        return;
    };
    // Hydration waits for the code of a lazy route (the order page,
    // messages, sign-in) when the page is one of those.
    wasm_bindgen_futures::spawn_local(async move {
        leptos::mount::hydrate_from_async(body.clone(), app::App)
            .await
            .forget();
        // subscriptions made from now on come with freshly fetched data
        threadline_realtime::client::page_hydrated();
        // A marker for end-to-end tests (and curious humans) that the page
        // is interactive, and the moment it became so on the page's own
        // timeline (what scripts/bench-web reports).
        let _ = body.set_attribute("data-hydrated", "true");
        if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
            let _ = performance.mark("threadline:hydrated");
        }
        // after the browser has shown the page and answered its first input
        leptos::prelude::request_idle_callback(prefetch_lazy_modules);
    });
}

/// Once the page is interactive and the browser idle, it fetches the other
/// pages' code (the lazy routes' modules the server lists in the head) into
/// its cache: opening an order later takes no download, and works when the
/// network has dropped by then. A prefetch that fails costs nothing: a page
/// that needs a module not fetched yet waits for it (the loader tries again
/// until it has it, see `scripts/fingerprint.py`).
#[cfg(feature = "hydrate")]
fn prefetch_lazy_modules() {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let (Ok(Some(meta)), Some(head)) = (
        document.query_selector("meta[name=threadline-lazy]"),
        document.head(),
    ) else {
        return;
    };
    let urls = meta.get_attribute("content").unwrap_or_default();
    for url in urls.split_whitespace() {
        if let Ok(link) = document.create_element("link") {
            let _ = link.set_attribute("rel", "prefetch");
            let _ = link.set_attribute("href", url);
            let _ = head.append_child(&link);
        }
    }
}
