//! Server functions behind the pages, one module per area. Every query is
//! scoped to what the signed-in user may see (see `scope`).

pub mod messages;
pub mod notifications;
pub mod orders;
pub mod paging;

pub use codec::{TextJson, TextJsonEncoding};

/// The replies of server functions, as JSON read from text.
///
/// Leptos reads the data a page hydrates from with `serde_json::from_str`,
/// and its stock JSON codec reads server-function replies with
/// `from_slice`. serde_json's deserializers are generic over the reader, so
/// every reply type was compiled into the Wasm twice; reading replies from
/// text too keeps one copy.
mod codec {
    use leptos::server_fn::codec::Post;
    use leptos::server_fn::{ContentType, Decodes, Encodes, Format, FormatType};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub struct TextJsonEncoding;

    /// Server-function replies in JSON, read as text (see the module).
    pub type TextJson = Post<TextJsonEncoding>;

    impl ContentType for TextJsonEncoding {
        const CONTENT_TYPE: &'static str = "application/json";
    }

    impl FormatType for TextJsonEncoding {
        const FORMAT_TYPE: Format = Format::Text;
    }

    impl<T: Serialize> Encodes<T> for TextJsonEncoding {
        type Error = serde_json::Error;

        fn encode(output: &T) -> Result<leptos::server_fn::Bytes, Self::Error> {
            serde_json::to_vec(output).map(Into::into)
        }
    }

    impl<T: DeserializeOwned> Decodes<T> for TextJsonEncoding {
        type Error = serde_json::Error;

        fn decode(bytes: leptos::server_fn::Bytes) -> Result<T, Self::Error> {
            // (not `from_slice` on invalid UTF-8: that would bring the
            // second copy back)
            let text = std::str::from_utf8(&bytes).map_err(serde::de::Error::custom)?;
            serde_json::from_str(text)
        }
    }
}

#[cfg(feature = "ssr")]
pub(crate) mod scope {
    use sqlx::postgres::{PgArguments, PgRow};
    use sqlx::query::QueryAs;
    use sqlx::{FromRow, Postgres};

    use crate::model::SessionUser;

    /// True when order `o` is visible to the user bound as `$1` (id), `$2`
    /// (role) and `$3` (factory): admins see all, buyers their own, factory
    /// staff their factory's.
    pub const ORDER_VISIBLE: &str = "($2 = 'admin' or o.buyer_id = $1 or o.factory_id = $3)";

    /// Not found, unless the user may see the order (its existence stays
    /// hidden from everyone else).
    pub async fn ensure_order_visible(
        pool: &sqlx::PgPool,
        user: &SessionUser,
        order_id: uuid::Uuid,
    ) -> Result<(), crate::error::AppError> {
        let visible: Option<(uuid::Uuid,)> = scoped(
            &format!("select o.id from orders o where o.id = $4 and {ORDER_VISIBLE}"),
            user,
        )
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
        visible
            .map(|_| ())
            .ok_or_else(|| crate::error::AppError::not_found("order"))
    }

    /// A query whose first three parameters are the user, for `ORDER_VISIBLE`.
    /// Rows about one order, scoped to the user: `$1`…`$3` as `scoped`
    /// binds them, `$4` the order.
    pub struct AboutOrder {
        pub user: SessionUser,
        pub order_id: uuid::Uuid,
    }

    impl crate::api::paging::Binds for AboutOrder {
        fn bind<'q, O>(
            &self,
            query: QueryAs<'q, Postgres, O, PgArguments>,
        ) -> QueryAs<'q, Postgres, O, PgArguments>
        where
            O: for<'r> FromRow<'r, PgRow>,
        {
            query
                .bind(self.user.id)
                .bind(self.user.role.as_str())
                .bind(self.user.factory_id)
                .bind(self.order_id)
        }
    }

    pub fn scoped<'q, O>(sql: &'q str, user: &SessionUser) -> QueryAs<'q, Postgres, O, PgArguments>
    where
        O: for<'r> FromRow<'r, PgRow>,
    {
        sqlx::query_as(sql)
            .bind(user.id)
            .bind(user.role.as_str())
            .bind(user.factory_id)
    }
}

/// Parses an id typed into a form or URL, with a clear error.
pub fn parse_id(text: &str, what: &str) -> Result<uuid::Uuid, crate::error::AppError> {
    text.trim()
        .parse()
        .map_err(|_| crate::error::AppError::invalid(format!("{what} is not a valid id")))
}

/// An optional id from a form: empty means none.
pub fn parse_optional_id(
    text: Option<&str>,
    what: &str,
) -> Result<Option<uuid::Uuid>, crate::error::AppError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => parse_id(text, what).map(Some),
    }
}
