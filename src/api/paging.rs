//! Newest-first lists paged by key, never by offset (see `model::Key`):
//! the first page; every row from the newest through a key (the window a
//! page has loaded, refetched when something changes, so changed rows land
//! in place and rows that left go); and that window with the page after it
//! ("load more").

use crate::error::AppError;
use crate::model::Key;

/// Rows in one page of a list.
pub const PAGE_SIZE: usize = 50;
/// Most rows one window holds (a refetch sends them all).
pub const MAX_WINDOW: usize = 10_000;

/// Reads a page cursor sent by a client: absent or empty is the first page.
pub fn parse_through<T: std::str::FromStr>(
    through: Option<&str>,
) -> Result<Option<Key<T>>, AppError> {
    through
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<Key<T>>().map_err(AppError::invalid))
        .transpose()
}

#[cfg(feature = "ssr")]
pub use server::{Binds, List, Mine, window};

#[cfg(feature = "ssr")]
mod server {
    use sqlx::postgres::{PgArguments, PgRow};
    use sqlx::query::QueryAs;
    use sqlx::{Encode, FromRow, PgPool, Postgres, Type};
    use time::OffsetDateTime;

    use super::{MAX_WINDOW, PAGE_SIZE};
    use crate::error::AppError;
    use crate::model::{Key, Page};

    type Query<'q, O> = QueryAs<'q, Postgres, O, PgArguments>;

    /// Binds a list's own parameters (`$1`…) to a query.
    pub trait Binds {
        fn bind<'q, O>(&self, query: Query<'q, O>) -> Query<'q, O>
        where
            O: for<'r> FromRow<'r, PgRow>;
    }

    /// A list of the user's own rows: `$1` is the user.
    pub struct Mine(pub uuid::Uuid);

    impl Binds for Mine {
        fn bind<'q, O>(&self, query: Query<'q, O>) -> Query<'q, O>
        where
            O: for<'r> FromRow<'r, PgRow>,
        {
            query.bind(self.0)
        }
    }

    /// One list's query: `select` (its columns and joins), `clause` (its
    /// `where`, with parameters `$1`…`$params` bound by `binds`), and the
    /// columns of its key (`created_at`, tie) in the list's order.
    pub struct List<'a, B> {
        pub select: &'a str,
        pub clause: &'a str,
        pub params: usize,
        pub binds: &'a B,
        pub at: &'a str,
        pub tie: &'a str,
    }

    fn at(micros: i64) -> Result<OffsetDateTime, AppError> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .ok()
            .filter(|at| (1..=9999).contains(&at.year()))
            .ok_or_else(|| AppError::invalid("the list position is out of range"))
    }

    /// The first page (`through` absent), the window through `through`, or
    /// with `more` that window and the page after it.
    pub async fn window<O, T, B>(
        pool: &PgPool,
        list: &List<'_, B>,
        through: Option<Key<T>>,
        more: bool,
    ) -> Result<Page<O>, AppError>
    where
        O: for<'r> FromRow<'r, PgRow> + Send + Unpin,
        T: for<'q> Encode<'q, Postgres> + Type<Postgres> + Clone + Send + 'static,
        B: Binds,
    {
        let (n, order) = (
            list.params,
            format!("order by {} desc, {} desc", list.at, list.tie),
        );
        let sql = |cmp: &str| {
            format!(
                "{} where {} and ({}, {}) {cmp} (${}, ${}) {order} limit ${}",
                list.select,
                list.clause,
                list.at,
                list.tie,
                n + 1,
                n + 2,
                n + 3
            )
        };
        let Some(key) = through else {
            let first = format!(
                "{} where {} {order} limit ${}",
                list.select,
                list.clause,
                n + 1
            );
            let mut items: Vec<O> = list
                .binds
                .bind(sqlx::query_as(&first))
                .bind(PAGE_SIZE as i64 + 1)
                .fetch_all(pool)
                .await?;
            let more = items.len() > PAGE_SIZE;
            items.truncate(PAGE_SIZE);
            return Ok(Page { items, more });
        };
        let when = at(key.micros)?;
        let loaded = sql(">=");
        let mut items: Vec<O> = list
            .binds
            .bind(sqlx::query_as(&loaded))
            .bind(when)
            .bind(key.tie.clone())
            .bind(MAX_WINDOW as i64)
            .fetch_all(pool)
            .await?;
        let wanted = if more { PAGE_SIZE + 1 } else { 1 };
        let older = sql("<");
        let after: Vec<O> = list
            .binds
            .bind(sqlx::query_as(&older))
            .bind(when)
            .bind(key.tie)
            .bind(wanted as i64)
            .fetch_all(pool)
            .await?;
        let beyond = after.len() == wanted;
        if more {
            let room = MAX_WINDOW.saturating_sub(items.len());
            items.extend(after.into_iter().take(PAGE_SIZE.min(room)));
        }
        let more = beyond || items.len() >= MAX_WINDOW;
        Ok(Page { items, more })
    }
}
