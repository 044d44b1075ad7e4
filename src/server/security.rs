//! What every request and response passes through: state-changing requests
//! only from this site, redirects only within it, security headers on every
//! response (pages get a Content-Security-Policy with a fresh nonce for the
//! app's own inline scripts), and sign-in attempts limited per address.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{
    CONTENT_SECURITY_POLICY, COOKIE, HOST, LOCATION, ORIGIN, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::AppState;
use super::settings::ServerSettings;
use crate::auth::server::SESSION_COOKIE;
use crate::error::AppError;

/// The policy of everything that is not a page.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// The policy of a page: its own scripts (the inline ones carry `nonce`),
/// its Wasm, styles and images, connections to itself (the WebSocket
/// included), and never inside a frame.
pub fn page_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' 'nonce-{nonce}'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// A page's nonce, chosen before Leptos renders it.
#[derive(Clone)]
pub struct PageNonce(pub leptos::nonce::Nonce);

/// Gives each page a fresh nonce for its inline scripts (Leptos reads it
/// from the request, see `server::app`) and the policy that allows exactly
/// those. The header is set here, on the response, rather than by the page
/// while it renders: that way no rendering path can leave a page without it.
pub async fn page_nonce(mut request: Request<Body>, next: Next) -> Response {
    let nonce = leptos::nonce::Nonce::new();
    request.extensions_mut().insert(PageNonce(nonce.clone()));
    let mut response = next.run(request).await;
    let is_page = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_page && let Ok(policy) = HeaderValue::from_str(&page_policy(&nonce)) {
        response
            .headers_mut()
            .insert(CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// Refuses state-changing requests that do not come from this site's own
/// pages: a browser says where a request comes from (`Sec-Fetch-Site`,
/// `Origin`), and a request that says nothing may not carry the session
/// cookie (scripts and apps authenticate with a bearer token instead).
pub async fn same_site_only(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    match check_site(request.headers(), &state.settings.server) {
        Ok(()) => next.run(request).await,
        Err(reason) => AppError::forbidden(reason).into_response(),
    }
}

fn check_site(headers: &HeaderMap, settings: &ServerSettings) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(format!(
            "this request comes from another site ({}); it must come from this site's pages",
            site.to_str().unwrap_or("?")
        ));
    }
    match headers.get(ORIGIN).map(|o| o.to_str().unwrap_or("null")) {
        Some(origin) if is_this_site(origin, headers, settings) => Ok(()),
        Some(origin) => Err(format!(
            "requests from {origin} are refused; this site accepts changes only from its own pages"
        )),
        None if carries_session_cookie(headers) => Err(
            "a request signed in with the session cookie must say it comes from this site (Origin)"
                .into(),
        ),
        None => Ok(()),
    }
}

/// Whether `origin` (`scheme://host[:port]`) is this site.
pub fn is_this_site(origin: &str, headers: &HeaderMap, settings: &ServerSettings) -> bool {
    let origin = origin.trim_end_matches('/');
    if !settings.public_origin.is_empty() {
        return origin.eq_ignore_ascii_case(settings.public_origin.trim_end_matches('/'));
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let expected_scheme = if over_https(headers, settings) {
        "https"
    } else {
        "http"
    };
    !host.is_empty()
        && authority.eq_ignore_ascii_case(host)
        && scheme.eq_ignore_ascii_case(expected_scheme)
}

/// Whether the browser reached the site over HTTPS.
pub fn over_https(headers: &HeaderMap, settings: &ServerSettings) -> bool {
    settings.public_origin.starts_with("https://")
        || (settings.trust_proxy_headers
            && headers
                .get("x-forwarded-proto")
                .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https")))
}

fn carries_session_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|pair| {
            pair.trim()
                .split_once('=')
                .is_some_and(|(name, value)| name == SESSION_COOKIE && !value.is_empty())
        })
}

/// Security headers on every response, and redirects kept within the site
/// (a form posted without JavaScript is sent back to where it came from,
/// but never to another site).
pub async fn security_headers(request: Request<Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Some(location) = headers.get(LOCATION).and_then(|l| l.to_str().ok())
        && !is_local_path(location)
    {
        headers.insert(LOCATION, HeaderValue::from_static("/"));
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_POLICY),
        );
    }
    response
}

/// A path of this site (`/orders`), not a URL of another (`//evil`, `https://…`).
fn is_local_path(location: &str) -> bool {
    location.starts_with('/')
        && !location.starts_with("//")
        && !location.starts_with("/\\")
        && !location.contains(['\r', '\n'])
}

/// The client's address: the peer, or behind a trusted proxy the last
/// address it added to `X-Forwarded-For`.
pub fn client_address(request: &Request<Body>, settings: &ServerSettings) -> Option<IpAddr> {
    if settings.trust_proxy_headers
        && let Some(address) = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return Some(address);
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

pub type AddressLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// Sign-in attempts per client address and minute.
pub fn sign_in_limiter(per_minute: u32) -> Arc<AddressLimiter> {
    let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::keyed(Quota::per_minute(rate)))
}

/// Limits sign-ins (the login server function and the token API) per
/// client address, so guessing across many accounts is slow too.
pub async fn limit_sign_ins(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let is_sign_in = request.method() == Method::POST
        && (path == "/api/auth/token" || path.starts_with("/api/login"));
    if is_sign_in && let Some(address) = client_address(&request, &state.settings.server) {
        if state.sign_ins.check_key(&address).is_err() {
            return AppError::RateLimited(format!(
                "too many sign-in attempts from your address; at most {} a minute",
                state.settings.server.sign_ins_per_minute
            ))
            .into_response();
        }
        // forget idle addresses now and then, so random ones cannot fill memory
        if state.sign_ins.len() > 10_000 {
            state.sign_ins.retain_recent();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_the_sites_own_origin_may_change_things() {
        let settings = ServerSettings::default();
        let ok =
            |pairs: &[(&'static str, &'static str)]| check_site(&headers(pairs), &settings).is_ok();
        let host = ("host", "127.0.0.1:3000");
        let cookie = ("cookie", "threadline_session=abc");
        assert!(ok(&[host, ("origin", "http://127.0.0.1:3000"), cookie]));
        assert!(ok(&[
            host,
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:3000")
        ]));
        assert!(!ok(&[host, ("origin", "https://evil.example"), cookie]));
        assert!(!ok(&[host, ("origin", "null"), cookie]));
        assert!(
            !ok(&[host, ("origin", "http://127.0.0.1:3001"), cookie]),
            "another port"
        );
        assert!(!ok(&[host, ("sec-fetch-site", "cross-site"), cookie]));
        assert!(!ok(&[host, ("sec-fetch-site", "same-site"), cookie]));
        assert!(
            !ok(&[host, cookie]),
            "a cookie and no word of where it comes from"
        );
        assert!(ok(&[host]), "a script with a bearer token, or a sign-in");
    }

    #[test]
    fn redirects_stay_on_the_site() {
        assert!(is_local_path("/orders?status=pending"));
        for foreign in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/x\r\nSet-Cookie: a=b",
        ] {
            assert!(!is_local_path(foreign), "{foreign}");
        }
    }

    #[test]
    fn behind_a_proxy_the_public_origin_counts() {
        let settings = ServerSettings {
            public_origin: "https://portal.example.com".into(),
            ..ServerSettings::default()
        };
        let h = headers(&[("host", "10.0.0.5:3000")]);
        assert!(is_this_site("https://portal.example.com", &h, &settings));
        assert!(!is_this_site("http://portal.example.com", &h, &settings));
        assert!(over_https(&h, &settings));
    }
}
