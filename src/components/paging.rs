//! A newest-first list that pages by key and stays live (the server side
//! is `api::paging`). The page holds a window: the first page, or every row
//! through the last one loaded. A live change refetches the window, so a
//! changed row lands in place and a row that left goes, with nothing
//! loaded twice or lost; "load more" fetches the window and the page after
//! it in one request.

use std::future::Future;

use leptos::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::paging::MAX_WINDOW;
use crate::error::AppError;
use crate::model::Page;

#[derive(Clone, Debug, Default, PartialEq)]
struct Window<Q> {
    /// The query (filters) it was loaded under.
    query: Q,
    /// The key of its last row: `None` for the first page.
    through: Option<String>,
    /// Whether to fetch the page after `through` as well.
    more: bool,
}

/// A paged list: its window, and `load_more` for the page after it.
pub struct Paged<T: Send + Sync + 'static, Q: Send + Sync + 'static> {
    pub page: Resource<Result<Page<T>, AppError>>,
    window: RwSignal<Window<Option<Q>>>,
    query: Signal<Q>,
    key: fn(&T) -> String,
}

impl<T: Send + Sync + 'static, Q: Send + Sync + 'static> Clone for Paged<T, Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Send + Sync + 'static, Q: Send + Sync + 'static> Copy for Paged<T, Q> {}

impl<T, Q> Paged<T, Q>
where
    T: Clone + Send + Sync + 'static,
    Q: Clone + PartialEq + Send + Sync + 'static,
{
    /// The foot of the list for a window of `len` rows: a button named
    /// `label` for the next page when there is one, or, once the window is
    /// as large as a window may be, a note to narrow the list.
    pub fn foot(&self, len: usize, more: bool, label: &'static str) -> impl IntoView + use<T, Q> {
        let this = *self;
        let full = len >= MAX_WINDOW;
        view! {
            <div class="list-foot">
                {(more && !full).then(|| view! {
                    <button type="button" class="button" on:click=move |_| this.load_more()>{label}</button>
                })}
                {(more && full).then(|| view! {
                    <p class="muted">"Showing the newest 10,000: narrow the list to see older ones."</p>
                })}
            </div>
        }
    }

    /// Loads the page after the window (the window is refetched with it).
    pub fn load_more(&self) {
        let last = self
            .page
            .get_untracked()
            .and_then(Result::ok)
            .and_then(|page| page.items.last().map(self.key));
        self.window.set(Window {
            query: Some(self.query.get_untracked()),
            through: last,
            more: true,
        });
    }
}

/// A live, paged list. `query` names the filters (a change starts again at
/// the first page), `live` changes whenever something the list shows may
/// have changed (a sum of realtime versions), `fetch(query, through, more)`
/// is the list's server function and `key` a row's page cursor.
pub fn use_paged<T, Q, Fut>(
    query: impl Fn() -> Q + Copy + Send + Sync + 'static,
    live: impl Fn() -> u64 + Copy + Send + Sync + 'static,
    fetch: impl Fn(Q, Option<String>, bool) -> Fut + Copy + Send + Sync + 'static,
    key: fn(&T) -> String,
) -> Paged<T, Q>
where
    T: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static,
    Q: Clone + PartialEq + Send + Sync + 'static,
    Fut: Future<Output = Result<Page<T>, AppError>> + Send + 'static,
{
    let window = RwSignal::new(Window::<Option<Q>>::default());
    let page = Resource::new(
        move || {
            let query = query();
            let window = window.get();
            let (through, more) = if window.query.as_ref() == Some(&query) {
                (window.through, window.more)
            } else {
                (None, false)
            };
            (query, through, more, live())
        },
        move |(query, through, more, _)| fetch(query, through, more),
    );
    // once a page has arrived, the window ends at its last row
    Effect::new(move |_| {
        if let Some(Ok(page)) = page.get() {
            window.update_untracked(|w| {
                w.query = Some(untrack(query));
                w.through = page.items.last().map(key);
                w.more = false;
            });
        }
    });
    Paged {
        page,
        window,
        query: Signal::derive(query),
        key,
    }
}
