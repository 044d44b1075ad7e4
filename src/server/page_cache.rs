//! Rendered pages, reused while the database is exactly as it was when they
//! were rendered.
//!
//! A page is a function of who asks (their row in `users`), its address,
//! the database, and a fresh nonce for its inline scripts. The session
//! lookup that starts every page request (`resolve_session`) also returns
//! the snapshot it ran in (`pg_current_snapshot()`), and the page's own
//! queries all run after it. Two equal snapshots see exactly the same
//! committed transactions, and what one snapshot sees every later one sees
//! too: so when a later request's lookup runs in the snapshot a stored page
//! was rendered after, no writer (the app, psql, a migration) has committed
//! anything since, in any table, and the page is served again with the new
//! request's nonce. The first commit anywhere makes the next request render
//! afresh; so does a change of the person's role, factory, name or email
//! (compared as looked up now), and so does age (`MAX_AGE`). A signed-out
//! or expired session never gets here: its lookup finds no one.
//!
//! A page that shows something from outside the database (who is online)
//! says so while it renders (`shows_live_state`) and is never stored.
//!
//! The page's resume cursor stays right: with nothing committed since, the
//! stream has nothing after it that the page has not seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::security::PageNonce;
use crate::model::SessionUser;

/// How long a stored page is reused at most, however quiet the database.
const MAX_AGE: Duration = Duration::from_secs(10);
/// What all stored pages may take together.
const BUDGET_BYTES: usize = 32 << 20;
/// How many pages are stored at most.
const MAX_PAGES: usize = 4096;
/// Larger pages are served but not stored.
const MAX_PAGE_BYTES: usize = 1 << 20;
/// Pages at longer addresses are served but not stored (an address is the
/// visitor's to choose: this bounds what the keys take).
const MAX_ADDRESS_BYTES: usize = 2048;

/// The snapshot a page request's session was looked up in.
#[derive(Clone, Debug)]
pub struct Snapshot(pub String);

/// Raised while a page renders if it shows something that is not in the
/// database (see `shows_live_state`).
#[derive(Clone, Default)]
pub struct LiveState(Arc<AtomicBool>);

/// For server code that runs while a page renders and reads state kept
/// outside the database (the realtime engine's memory): the page must not
/// be stored.
pub fn shows_live_state() {
    use leptos::prelude::use_context;
    if let Some(flag) = use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<LiveState>().cloned())
    {
        flag.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    user: Uuid,
    /// Path and query.
    address: String,
}

struct Page {
    user: SessionUser,
    snapshot: String,
    rendered: Instant,
    headers: HeaderMap,
    /// The HTML, cut where the render's nonce was.
    pieces: Vec<Bytes>,
    bytes: usize,
}

impl Page {
    fn response(&self, nonce: &str) -> Response {
        let gaps = self.pieces.len().saturating_sub(1);
        let mut html =
            Vec::with_capacity(self.bytes.saturating_add(gaps.saturating_mul(nonce.len())));
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                html.extend_from_slice(nonce.as_bytes());
            }
            html.extend_from_slice(piece);
        }
        let mut response = Response::new(Body::from(html));
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// A page request as the cache sees it.
struct Visit {
    key: Key,
    user: SessionUser,
    snapshot: String,
    nonce: String,
}

impl Visit {
    fn of(request: &Request) -> Option<Visit> {
        if request.method() != Method::GET || request.uri().path().starts_with("/api/") {
            return None;
        }
        let extensions = request.extensions();
        let user = extensions.get::<SessionUser>()?.clone();
        let Snapshot(snapshot) = extensions.get::<Snapshot>()?.clone();
        let PageNonce(nonce) = extensions.get::<PageNonce>()?;
        let address = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path().to_string(), |pq| pq.to_string());
        Some(Visit {
            key: Key {
                user: user.id,
                address,
            },
            user,
            snapshot,
            nonce: nonce.to_string(),
        })
    }
}

#[derive(Default)]
struct Pages {
    by_key: HashMap<Key, Arc<Page>>,
    /// What they take together.
    bytes: usize,
}

impl Pages {
    fn remove(&mut self, key: &Key) {
        if let Some(page) = self.by_key.remove(key) {
            self.bytes = self.bytes.saturating_sub(page.bytes);
        }
    }

    fn is_full_for(&self, bytes: usize) -> bool {
        self.by_key.len() >= MAX_PAGES || self.bytes.saturating_add(bytes) > BUDGET_BYTES
    }

    /// Drops what is too old to be served, then the oldest, until a page of
    /// `bytes` fits.
    fn make_room(&mut self, bytes: usize) {
        if !self.is_full_for(bytes) {
            return;
        }
        // one reading of the clock for all of them
        let now = Instant::now();
        self.by_key
            .retain(|_, page| now.saturating_duration_since(page.rendered) < MAX_AGE);
        self.bytes = self.by_key.values().map(|page| page.bytes).sum();
        while self.is_full_for(bytes) {
            let Some(oldest) = self
                .by_key
                .iter()
                .min_by_key(|(_, page)| page.rendered)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
    }
}

#[derive(Default)]
pub struct PageCache {
    pages: Mutex<Pages>,
    reused: AtomicU64,
    rendered: AtomicU64,
}

/// How often pages were served again and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub reused: u64,
    pub rendered: u64,
}

impl PageCache {
    pub fn counts(&self) -> Counts {
        Counts {
            reused: self.reused.load(Ordering::Relaxed),
            rendered: self.rendered.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pages> {
        // the map holds no invariant a panic elsewhere could break
        self.pages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The stored page this visit may be served, if any.
    fn reusable(&self, visit: &Visit) -> Option<Arc<Page>> {
        let page = self.lock().by_key.get(&visit.key).cloned()?;
        (page.snapshot == visit.snapshot
            && page.user == visit.user
            && page.rendered.elapsed() < MAX_AGE)
            .then_some(page)
    }

    fn store(&self, visit: Visit, rendered: Instant, headers: HeaderMap, html: &Bytes) {
        let Ok(text) = std::str::from_utf8(html) else {
            return;
        };
        if visit.nonce.is_empty()
            || html.len() > MAX_PAGE_BYTES
            || visit.key.address.len() > MAX_ADDRESS_BYTES
        {
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        for (at, _) in text.match_indices(visit.nonce.as_str()) {
            pieces.push(html.slice(start..at));
            start = at.saturating_add(visit.nonce.len());
        }
        pieces.push(html.slice(start..));
        let page = Arc::new(Page {
            user: visit.user,
            snapshot: visit.snapshot,
            rendered,
            headers,
            pieces,
            bytes: html.len(),
        });
        let mut pages = self.lock();
        pages.remove(&visit.key);
        pages.make_room(page.bytes);
        pages.bytes = pages.bytes.saturating_add(page.bytes);
        pages.by_key.insert(visit.key, page);
    }
}

/// Serves a stored page when nothing it shows can have changed; otherwise
/// renders it and keeps it for the next visit.
pub async fn reuse_pages(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(visit) = Visit::of(&request) else {
        return next.run(request).await;
    };
    let pages = &state.pages;
    if let Some(page) = pages.reusable(&visit) {
        pages.reused.fetch_add(1, Ordering::Relaxed);
        return page.response(&visit.nonce);
    }
    pages.rendered.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let live = LiveState::default();
    request.extensions_mut().insert(live.clone());
    let response = next.run(request).await;
    let is_html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if response.status() != StatusCode::OK
        || !is_html
        || response.headers().contains_key(SET_COOKIE)
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // the page's data loads while its body streams: whether it showed live
    // state is known once the body is complete
    let html = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "a page failed while it rendered");
            return crate::error::AppError::Internal.into_response();
        }
    };
    if !live.0.load(Ordering::Relaxed) {
        pages.store(visit, started, parts.headers.clone(), &html);
    }
    Response::from_parts(parts, Body::from(html))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn visit(address: &str, snapshot: &str, nonce: &str) -> Visit {
        let user = SessionUser {
            id: Uuid::nil(),
            email: "b@x.test".into(),
            name: "B".into(),
            role: Role::Buyer,
            factory_id: None,
        };
        Visit {
            key: Key {
                user: user.id,
                address: address.into(),
            },
            user,
            snapshot: snapshot.into(),
            nonce: nonce.into(),
        }
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_stored_page_carries_each_visits_own_nonce() {
        let cache = PageCache::default();
        let html = Bytes::from_static(
            b"<script nonce=\"N1\">a</script><p>x</p><script nonce=\"N1\">b</script>",
        );
        cache.store(
            visit("/orders", "5:5:", "N1"),
            Instant::now(),
            HeaderMap::new(),
            &html,
        );
        let page = cache
            .reusable(&visit("/orders", "5:5:", "N2"))
            .expect("same snapshot, same person");
        assert_eq!(
            body(page.response("N2")).await,
            "<script nonce=\"N2\">a</script><p>x</p><script nonce=\"N2\">b</script>"
        );
    }

    #[test]
    fn another_snapshot_person_or_address_renders_afresh() {
        let cache = PageCache::default();
        let html = Bytes::from_static(b"<p>x</p>");
        cache.store(
            visit("/orders", "5:5:", "N1"),
            Instant::now(),
            HeaderMap::new(),
            &html,
        );
        assert!(cache.reusable(&visit("/orders", "5:6:", "N2")).is_none());
        assert!(
            cache
                .reusable(&visit("/orders?q=x", "5:5:", "N2"))
                .is_none()
        );
        let long = format!("/orders?q={}", "x".repeat(MAX_ADDRESS_BYTES));
        cache.store(
            visit(&long, "5:5:", "N1"),
            Instant::now(),
            HeaderMap::new(),
            &html,
        );
        assert!(
            cache.reusable(&visit(&long, "5:5:", "N2")).is_none(),
            "not stored"
        );
        let mut promoted = visit("/orders", "5:5:", "N2");
        promoted.user.role = Role::Admin;
        assert!(
            cache.reusable(&promoted).is_none(),
            "rights as looked up now"
        );
        let old = Instant::now().checked_sub(MAX_AGE).expect("clock");
        cache.store(
            visit("/messages", "5:5:", "N1"),
            old,
            HeaderMap::new(),
            &html,
        );
        assert!(
            cache.reusable(&visit("/messages", "5:5:", "N2")).is_none(),
            "too old"
        );
    }

    #[test]
    fn the_oldest_pages_make_room() {
        let cache = PageCache::default();
        let big = Bytes::from(vec![b'x'; MAX_PAGE_BYTES]);
        let start = Instant::now();
        let count = BUDGET_BYTES / MAX_PAGE_BYTES + 3;
        for i in 0..count {
            let at = start + Duration::from_millis(u64::try_from(i).expect("small"));
            cache.store(
                visit(&format!("/p{i}"), "1:1:", "N"),
                at,
                HeaderMap::new(),
                &big,
            );
        }
        let pages = cache.lock();
        let used: usize = pages.by_key.values().map(|p| p.bytes).sum();
        assert_eq!(used, pages.bytes);
        assert!(used <= BUDGET_BYTES);
        drop(pages);
        assert!(
            cache.reusable(&visit("/p0", "1:1:", "N")).is_none(),
            "oldest evicted"
        );
        assert!(
            cache
                .reusable(&visit(&format!("/p{}", count - 1), "1:1:", "N"))
                .is_some()
        );
    }
}
