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
        // A marker for end-to-end tests (and curious humans) that the page
        // is interactive.
        let _ = body.set_attribute("data-hydrated", "true");
    });
}
