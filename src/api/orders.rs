use leptos::prelude::*;
use uuid::Uuid;

#[cfg(feature = "ssr")]
use crate::api::paging;
use crate::error::AppError;
#[cfg(feature = "ssr")]
use crate::model::Order;
use crate::model::{Factory, OrderDetail, OrderPage, OrderStatus, OrderUpdate, Page, StatusCount};

#[cfg(feature = "ssr")]
mod queries {
    pub const ORDER_SELECT: &str = "select o.id, o.number, o.buyer_id, b.name as buyer_name, o.factory_id, \
        f.name as factory_name, o.product, o.quantity, o.status, o.due_date, o.notes, \
        (select coalesce(sum(case s.status when 'done' then 100 when 'in_progress' then s.progress else 0 end), 0) / 6 \
           from production_stages s where s.order_id = o.id)::int4 as progress, \
        o.client_mutation_id, o.created_at, o.updated_at \
        from orders o join users b on b.id = o.buyer_id left join factories f on f.id = o.factory_id";

    pub const STAGE_SELECT: &str = "select s.id, s.order_id, s.stage, s.position, s.status, s.progress, \
        s.started_at, s.completed_at, s.client_mutation_id \
        from production_stages s join orders o on o.id = s.order_id";

    pub const UPDATE_SELECT: &str = "select u.id, u.order_id, u.author_id, a.name as author_name, u.stage, \
        u.text, u.client_mutation_id, u.created_at from order_updates u join orders o on o.id = u.order_id \
        join users a on a.id = u.author_id";
}

#[cfg(feature = "ssr")]
async fn visible_order(
    pool: &sqlx::PgPool,
    user: &crate::model::SessionUser,
    id: Uuid,
) -> Result<Order, AppError> {
    use crate::api::scope::{ORDER_VISIBLE, scoped};
    scoped(
        &format!(
            "{} where o.id = $4 and {ORDER_VISIBLE}",
            queries::ORDER_SELECT
        ),
        user,
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| AppError::not_found("order"))
}

/// Orders the user may see, newest first (creation time, then number),
/// optionally of one status and matching a search, paged by key (see
/// `api::paging`): without `through`, the first page; with it, every row
/// from the newest through that key, and with `more` the page after it.
#[server(endpoint = "list_orders", output = crate::api::TextJson)]
pub async fn list_orders(
    status: Option<String>,
    search: Option<String>,
    #[server(default)] through: Option<String>,
    #[server(default)] more: bool,
) -> Result<OrderPage, AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    let filter = list::Filter::new(&user, status.as_deref(), search.as_deref())?;
    let through = paging::parse_through::<i64>(through.as_deref())?;
    paging::window(&state.pool, &filter.list(), through, more).await
}

/// How many orders of each status the user may see that match `search`
/// (the counts on the status chips).
#[server(output = crate::api::TextJson)]
pub async fn order_counts(search: Option<String>) -> Result<Vec<StatusCount>, AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    let filter = list::Filter::new(&user, None, search.as_deref())?;
    let sql = format!(
        "select o.status, count(*) as count from orders o where {} group by o.status",
        filter.clause
    );
    use paging::Binds;
    Ok(filter
        .bind(sqlx::query_as(&sql))
        .fetch_all(&state.pool)
        .await?)
}

#[cfg(feature = "ssr")]
mod list {
    //! The orders list's filter: one visibility predicate per role, so each
    //! uses its index (`migrations/*_paging.sql`), and search through a
    //! trigram index.
    use sqlx::postgres::{PgArguments, PgRow};
    use sqlx::query::QueryAs;
    use sqlx::{FromRow, Postgres};

    use super::queries;
    use crate::api::paging::{Binds, List};
    use crate::error::AppError;
    use crate::model::{OrderStatus, Role, SessionUser};

    pub struct Filter {
        user: SessionUser,
        status: Option<OrderStatus>,
        /// An `ilike` pattern: the search text, its wildcards escaped.
        pattern: Option<String>,
        /// `$1` user, `$2` factory, `$3` status, `$4` pattern.
        pub clause: String,
    }

    impl Filter {
        pub fn new(
            user: &SessionUser,
            status: Option<&str>,
            search: Option<&str>,
        ) -> Result<Filter, AppError> {
            let status = match status.map(str::trim) {
                None | Some("") | Some("all") => None,
                Some(text) => Some(text.parse::<OrderStatus>().map_err(AppError::invalid)?),
            };
            let search = search.map(str::trim).filter(|s| !s.is_empty());
            if search.is_some_and(|s| s.chars().count() > 200) {
                return Err(AppError::invalid("a search is at most 200 characters"));
            }
            let visible = match user.role {
                Role::Admin => "true",
                Role::Buyer => "o.buyer_id = $1",
                Role::Factory => "o.factory_id = $2",
            };
            Ok(Filter {
                user: user.clone(),
                status,
                pattern: search.map(|s| format!("%{}%", escape_like(s))),
                // only the conditions in use, so that the plan fits them
                clause: format!(
                    "{visible}{}{}",
                    if status.is_some() {
                        " and o.status = $3"
                    } else {
                        ""
                    },
                    if search.is_some() {
                        " and (o.product || ' PO-' || o.number::text) ilike $4"
                    } else {
                        ""
                    }
                ),
            })
        }

        pub fn list(&self) -> List<'_, Filter> {
            List {
                select: queries::ORDER_SELECT,
                clause: &self.clause,
                params: 4,
                binds: self,
                at: "o.created_at",
                tie: "o.number",
            }
        }
    }

    impl Binds for Filter {
        fn bind<'q, O>(
            &self,
            query: QueryAs<'q, Postgres, O, PgArguments>,
        ) -> QueryAs<'q, Postgres, O, PgArguments>
        where
            O: for<'r> FromRow<'r, PgRow>,
        {
            query
                .bind(self.user.id)
                .bind(self.user.factory_id)
                .bind(self.status.map(OrderStatus::as_str))
                .bind(self.pattern.clone())
        }
    }

    /// `%`, `_` and `\` typed into a search mean themselves.
    fn escape_like(text: &str) -> String {
        let mut escaped = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, '%' | '_' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped
    }

    #[cfg(test)]
    mod tests {
        use super::escape_like;

        #[test]
        fn wildcards_typed_into_a_search_mean_themselves() {
            assert_eq!(escape_like("50% off_"), "50\\% off\\_");
            assert_eq!(escape_like("a\\b"), "a\\\\b");
            assert_eq!(escape_like("Crew neck"), "Crew neck");
        }
    }
}

#[server(output = crate::api::TextJson)]
pub async fn get_order(id: Uuid) -> Result<OrderDetail, AppError> {
    use crate::api::scope::{ORDER_VISIBLE, scoped};
    let (state, user) = crate::auth::server::require_user().await?;
    let order = visible_order(&state.pool, &user, id).await?;
    let stages = scoped(
        &format!(
            "{} where s.order_id = $4 and {ORDER_VISIBLE} order by s.position",
            queries::STAGE_SELECT
        ),
        &user,
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(OrderDetail { order, stages })
}

/// Buyers place orders; they start pending, without a factory.
#[server(output = crate::api::TextJson)]
pub async fn create_order(
    product: String,
    quantity: String,
    due_date: String,
    notes: Option<String>,
) -> Result<Uuid, AppError> {
    use crate::model::Role;
    let (state, user) = crate::auth::server::require_user().await?;
    if user.role != Role::Buyer {
        return Err(AppError::forbidden("only buyers place orders"));
    }
    let product = product.trim();
    if product.is_empty() || product.chars().count() > 200 {
        return Err(AppError::invalid("product must be 1 to 200 characters"));
    }
    let quantity: i32 = quantity
        .trim()
        .parse()
        .ok()
        .filter(|q| (1..=1_000_000).contains(q))
        .ok_or_else(|| AppError::invalid("quantity must be a whole number from 1 to 1,000,000"))?;
    let due_date = time::Date::parse(
        due_date.trim(),
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| AppError::invalid("due date must be a date like 2026-12-31"))?;
    if due_date < time::OffsetDateTime::now_utc().date() {
        return Err(AppError::invalid("due date cannot be in the past"));
    }
    let notes = notes.unwrap_or_default();
    if notes.chars().count() > 2000 {
        return Err(AppError::invalid("notes must be at most 2,000 characters"));
    }
    let id = sqlx::query_scalar(
        "insert into orders (buyer_id, product, quantity, due_date, notes) values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(user.id)
    .bind(product)
    .bind(quantity)
    .bind(due_date)
    .bind(notes.trim())
    .fetch_one(&state.pool)
    .await?;
    Ok(id)
}

/// Moves an order along the state machine, as far as the user's role allows.
#[server(output = crate::api::TextJson)]
pub async fn set_order_status(
    id: Uuid,
    to: OrderStatus,
    client_mutation_id: Option<Uuid>,
) -> Result<(), AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    let order = visible_order(&state.pool, &user, id).await?;
    if !order.status.can_become(to) {
        return Err(AppError::invalid(format!(
            "an order that is {} cannot become {}",
            order.status.label().to_lowercase(),
            to.label().to_lowercase()
        )));
    }
    if !OrderStatus::may_set(user.role, order.status, to) {
        return Err(AppError::forbidden(format!(
            "a {} cannot mark an order {}",
            user.role.label().to_lowercase(),
            to.label().to_lowercase()
        )));
    }
    let changed = sqlx::query(
        "update orders set status = $2, client_mutation_id = $4 where id = $1 and status = $3",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(order.status.as_str())
    .bind(client_mutation_id)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(AppError::Conflict(
            "the order changed meanwhile; reload and try again".into(),
        ));
    }
    Ok(())
}

/// Admins assign a factory; a pending order becomes confirmed.
#[server(output = crate::api::TextJson)]
pub async fn assign_factory(id: Uuid, factory_id: String) -> Result<(), AppError> {
    use crate::model::Role;
    let (state, user) = crate::auth::server::require_user().await?;
    if user.role != Role::Admin {
        return Err(AppError::forbidden(
            "only admins assign orders to factories",
        ));
    }
    let factory_id = crate::api::parse_id(&factory_id, "factory")?;
    visible_order(&state.pool, &user, id).await?;
    let known: bool = sqlx::query_scalar("select exists (select 1 from factories where id = $1)")
        .bind(factory_id)
        .fetch_one(&state.pool)
        .await?;
    if !known {
        return Err(AppError::not_found("factory"));
    }
    sqlx::query(
        "update orders set factory_id = $2, \
         status = case when status = 'pending' then 'confirmed' else status end where id = $1",
    )
    .bind(id)
    .bind(factory_id)
    .execute(&state.pool)
    .await?;
    Ok(())
}

#[server(output = crate::api::TextJson)]
pub async fn list_factories() -> Result<Vec<Factory>, AppError> {
    let (state, _user) = crate::auth::server::require_user().await?;
    Ok(
        sqlx::query_as("select id, name from factories order by name")
            .fetch_all(&state.pool)
            .await?,
    )
}

/// Factory staff (or admins) move production on: the stage in progress is
/// completed, or else the next stage starts. `stage_id` and `to` say which
/// move the person saw (the button they clicked): when production has moved
/// on meanwhile (another person, another tab), nothing changes and the reply
/// is a conflict, rather than a different move than the one they chose.
#[server(output = crate::api::TextJson)]
pub async fn advance_stage(
    order_id: Uuid,
    client_mutation_id: Option<Uuid>,
    stage_id: Option<Uuid>,
    to: Option<crate::model::StageStatus>,
) -> Result<(), AppError> {
    use crate::model::{Role, StageStatus};
    let (state, user) = crate::auth::server::require_user().await?;
    if user.role == Role::Buyer {
        return Err(AppError::forbidden(
            "only factory staff move production stages",
        ));
    }
    visible_order(&state.pool, &user, order_id).await?;
    let current: Option<(Uuid, String, String)> = sqlx::query_as(
        "select id, stage, status from production_stages where order_id = $1 and status <> 'done' \
         order by position limit 1",
    )
    .bind(order_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((current_id, _stage, status)) = current else {
        return Err(AppError::invalid("every production stage is already done"));
    };
    let next = if status == StageStatus::Pending.as_str() {
        StageStatus::InProgress
    } else {
        StageStatus::Done
    };
    let moved_on = || {
        AppError::Conflict(
            "production has moved on since this page showed it; look again and try again".into(),
        )
    };
    if stage_id.is_some_and(|id| id != current_id) || to.is_some_and(|to| to != next) {
        return Err(moved_on());
    }
    // changed by someone else between the read above and here: nothing moves
    let changed = sqlx::query(
        "update production_stages set status = $2, client_mutation_id = $4 where id = $1 and status = $3",
    )
    .bind(current_id)
    .bind(next.as_str())
    .bind(&status)
    .bind(client_mutation_id)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(moved_on());
    }
    Ok(())
}

/// Progress of the stage in progress, in percent.
#[server(output = crate::api::TextJson)]
pub async fn set_stage_progress(
    stage_id: Uuid,
    progress: String,
    client_mutation_id: Option<Uuid>,
) -> Result<(), AppError> {
    use crate::api::scope::{ORDER_VISIBLE, scoped};
    use crate::model::Role;
    let (state, user) = crate::auth::server::require_user().await?;
    if user.role == Role::Buyer {
        return Err(AppError::forbidden(
            "only factory staff report production progress",
        ));
    }
    let progress: i16 = progress
        .trim()
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|p| (0..=100).contains(p))
        .ok_or_else(|| AppError::invalid("progress must be a whole number from 0 to 100"))?;
    let visible: Option<(Uuid,)> = scoped(
        &format!("select s.id from production_stages s join orders o on o.id = s.order_id where s.id = $4 and {ORDER_VISIBLE}"),
        &user,
    )
    .bind(stage_id)
    .fetch_optional(&state.pool)
    .await?;
    if visible.is_none() {
        return Err(AppError::not_found("production stage"));
    }
    sqlx::query(
        "update production_stages set progress = $2, client_mutation_id = $3 where id = $1",
    )
    .bind(stage_id)
    .bind(progress)
    .bind(client_mutation_id)
    .execute(&state.pool)
    .await?;
    Ok(())
}

#[server(endpoint = "list_order_updates", output = crate::api::TextJson)]
pub async fn list_order_updates(
    order_id: Uuid,
    #[server(default)] through: Option<String>,
    #[server(default)] more: bool,
) -> Result<Page<OrderUpdate>, AppError> {
    use crate::api::paging::List;
    let (state, user) = crate::auth::server::require_user().await?;
    visible_order(&state.pool, &user, order_id).await?;
    let through = paging::parse_through::<Uuid>(through.as_deref())?;
    let clause = format!("u.order_id = $4 and {}", crate::api::scope::ORDER_VISIBLE);
    let list = List {
        select: queries::UPDATE_SELECT,
        clause: &clause,
        params: 4,
        binds: &crate::api::scope::AboutOrder { user, order_id },
        at: "u.created_at",
        tie: "u.id",
    };
    paging::window(&state.pool, &list, through, more).await
}

/// Factory staff and admins post to an order's production feed.
#[server(output = crate::api::TextJson)]
pub async fn post_order_update(
    order_id: Uuid,
    text: String,
    stage: Option<String>,
    client_mutation_id: Option<Uuid>,
) -> Result<Uuid, AppError> {
    use crate::model::{Role, Stage};
    let (state, user) = crate::auth::server::require_user().await?;
    if user.role == Role::Buyer {
        return Err(AppError::forbidden(
            "only factory staff post production updates; send the factory a message instead",
        ));
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(AppError::invalid("write something to post"));
    }
    if text.chars().count() > 5000 {
        return Err(AppError::invalid(
            "an update must be at most 5,000 characters",
        ));
    }
    let stage = match stage.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<Stage>().map_err(AppError::invalid)?),
    };
    let order = visible_order(&state.pool, &user, order_id).await?;
    if matches!(order.status, OrderStatus::Cancelled) {
        return Err(AppError::invalid("this order was cancelled"));
    }
    let id = sqlx::query_scalar(
        "insert into order_updates (order_id, author_id, stage, text, client_mutation_id) \
         values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(order_id)
    .bind(user.id)
    .bind(stage.map(Stage::as_str))
    .bind(text)
    .bind(client_mutation_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(id)
}
