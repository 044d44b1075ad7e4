use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::components::{A, Redirect, Route, Router, Routes};
use leptos_router::{Lazy, LazyRoute, SsrMode, lazy_route, path};

use crate::auth::api::{Login, Logout};
use crate::components::connection_status::ConnectionStatusIndicator;
use crate::components::notification_bell::NotificationBell;
use crate::components::page_code::WaitingForPageCode;
use crate::components::toasts::MessageToasts;
use crate::model::SessionUser;
use crate::realtime::poll::poll_changes;
use crate::routes::login::LoginPage;
use crate::routes::messages::MessagesPage;
use crate::routes::order_detail::OrderDetailPage;
use crate::routes::orders::OrdersPage;
use threadline_realtime::client::{ConnectionStatus, RealtimeClient, provide_realtime};
use threadline_realtime::cursor::ChangeCursor;

pub fn shell(options: LeptosOptions) -> impl IntoView {
    // the stylesheet's (hashed) name, and the other pages' code, which the
    // page fetches once it is interactive; only the server renders the shell
    #[cfg(feature = "ssr")]
    let (css, lazy) = use_context::<crate::server::AppState>().map_or_else(
        || ("/pkg/threadline.css".to_string(), String::new()),
        |s| (s.assets.css.clone(), s.assets.lazy.join(" ")),
    );
    #[cfg(not(feature = "ssr"))]
    let (css, lazy) = ("/pkg/threadline.css".to_string(), String::new());
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <link rel="stylesheet" href=css/>
                <meta name="threadline-lazy" content=lazy/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Who is signed in. The server resolves it from the session cookie for each
/// page request and hands it to the browser with the page, so it is known
/// synchronously on both sides; signing in or out updates it.
#[derive(Clone, Copy)]
pub struct Session {
    pub user: RwSignal<Option<SessionUser>>,
    pub login: ServerAction<Login>,
    pub logout: ServerAction<Logout>,
}

/// The newest change the server knew before this page's data was fetched
/// (the page's subscriptions resume from it, so nothing falls in between).
fn realtime_head_of_this_request() -> Option<ChangeCursor> {
    #[cfg(feature = "ssr")]
    {
        use_context::<crate::server::AppState>().map(|state| state.realtime.head())
    }
    #[cfg(not(feature = "ssr"))]
    {
        None
    }
}

fn user_of_this_request() -> Option<SessionUser> {
    #[cfg(feature = "ssr")]
    {
        use_context::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<SessionUser>().cloned())
    }
    #[cfg(not(feature = "ssr"))]
    {
        None
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let realtime = provide_realtime(
        SharedValue::new(realtime_head_of_this_request).into_inner(),
        |channels| async move { poll_changes(channels).await.map_err(|e| e.to_string()) },
    );
    let user = RwSignal::new(SharedValue::new(user_of_this_request).into_inner());
    let login = ServerAction::<Login>::new();
    let logout = ServerAction::<Logout>::new();
    provide_context(Session {
        user,
        login,
        logout,
    });

    view! {
        <Title text="Threadline"/>
        <Router>
            <SessionRedirects realtime/>
            <Header/>
            <Show when=move || user.get().is_some()>
                <MessageToasts/>
            </Show>
            <WaitingForPageCode/>
            <main class="page">
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("/") view=|| view! { <Redirect path="/orders"/> }/>
                    <Route path=path!("/login") view={Lazy::<LoginRoute>::new()}/>
                    // Pages with data are rendered whole (`SsrMode::Async`): it
                    // comes from our database in milliseconds, so streaming a
                    // shell first would only add fallbacks and the scripts that
                    // swap them in (bytes for a phone, work for the server).
                    <Route path=path!("/orders") view=|| view! { <SignedIn><OrdersPage/></SignedIn> } ssr=SsrMode::Async/>
                    <Route path=path!("/orders/:id") view={Lazy::<OrderDetailRoute>::new()} ssr=SsrMode::Async/>
                    <Route path=path!("/messages") view={Lazy::<MessagesRoute>::new()} ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}

// The pages other than the orders list are lazy routes: `build_site`
// (`scripts/lib.sh`) splits their code out of the main Wasm into chunks
// fetched when a page first needs them, so the list a phone opens first
// does not wait for the order page and the messages. (Each needs its own
// `#[lazy_route]` impl: the macro names the chunk after where it stands.)
struct LoginRoute;
#[lazy_route]
impl LazyRoute for LoginRoute {
    fn data() -> Self {
        LoginRoute
    }
    fn view(_this: Self) -> AnyView {
        view! { <LoginPage/> }.into_any()
    }
}

struct OrderDetailRoute;
#[lazy_route]
impl LazyRoute for OrderDetailRoute {
    fn data() -> Self {
        OrderDetailRoute
    }
    fn view(_this: Self) -> AnyView {
        view! { <SignedIn><OrderDetailPage/></SignedIn> }.into_any()
    }
}

struct MessagesRoute;
#[lazy_route]
impl LazyRoute for MessagesRoute {
    fn data() -> Self {
        MessagesRoute
    }
    fn view(_this: Self) -> AnyView {
        view! { <SignedIn><MessagesPage/></SignedIn> }.into_any()
    }
}

/// After signing in or out in the browser, update the session and move on.
#[component]
fn SessionRedirects(realtime: RealtimeClient) -> impl IntoView {
    let session = expect_context::<Session>();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(user)) = session.login.value().get() {
            session.user.set(Some(user));
            navigate("/orders", Default::default());
        }
    });
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(())) = session.logout.value().get() {
            realtime.disconnect();
            session.user.set(None);
            navigate("/login", Default::default());
        }
    });
    // signed out elsewhere (another tab, an expired session, an operator):
    // the server closed the live connection; this tab follows
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if realtime.status.get() == ConnectionStatus::SignedOut
            && session.user.get_untracked().is_some()
        {
            session.user.set(None);
            navigate("/login", Default::default());
        }
    });
}

/// The signed-in user, for components under [`SignedIn`].
pub fn use_user() -> SessionUser {
    expect_context::<SessionUser>()
}

/// Renders its children for a signed-in user (given to them as context) and
/// sends visitors to the sign-in page.
#[component]
fn SignedIn(children: ChildrenFn) -> impl IntoView {
    let session = expect_context::<Session>();
    move || match session.user.get() {
        Some(user) => {
            provide_context(user);
            children().into_any()
        }
        None => view! { <Redirect path="/login"/> }.into_any(),
    }
}

#[component]
fn Header() -> impl IntoView {
    let session = expect_context::<Session>();
    view! {
        <header class="topbar">
            <A href="/orders" attr:class="brand">
                <span class="brand-mark" aria-hidden="true">"◆"</span>
                "Threadline"
            </A>
            {move || session.user.get().map(|user| view! {
                <nav class="mainnav" aria-label="Main">
                    <A href="/orders">"Orders"</A>
                    <A href="/messages">"Messages"</A>
                </nav>
                <div class="topbar-right">
                    <ConnectionStatusIndicator/>
                    <NotificationBell/>
                    <span class="whoami" title=user.email.clone()>
                        <span class="whoami-name">{user.name.clone()}</span>
                        <span class="role-tag">{user.role.label()}</span>
                    </span>
                    // a plain form, like `NewOrderForm` in `routes/orders.rs` (see there)
                    <form method="post" action={<Logout as leptos::server_fn::ServerFn>::url()} class="inline-form"
                        on:submit=move |ev: leptos::ev::SubmitEvent| {
                            ev.prevent_default();
                            session.logout.dispatch(Logout {});
                        }>
                        <button type="submit" class="button ghost">"Sign out"</button>
                    </form>
                </div>
            })}
        </header>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(axum::http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <section class="card narrow">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <A href="/orders">"Go to your orders"</A></p>
        </section>
    }
}
