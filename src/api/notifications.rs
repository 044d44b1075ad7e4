use leptos::prelude::*;
use uuid::Uuid;

use crate::error::AppError;
use crate::model::NotificationSummary;

/// The unread count and the 15 newest notifications, read in one statement
/// (one snapshot, so the count and the list agree).
#[server(output = crate::api::TextJson)]
pub async fn notifications() -> Result<NotificationSummary, AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    #[derive(sqlx::FromRow)]
    struct Recent {
        unread: i64,
        #[sqlx(flatten)]
        notification: crate::model::Notification,
    }
    // with no notification at all there is no row, and nothing unread
    let rows: Vec<Recent> = sqlx::query_as(
        "select id, kind, text, link, read_at, created_at, \
           (select count(*) from notifications where user_id = $1 and read_at is null) as unread \
         from notifications where user_id = $1 order by created_at desc, id limit 15",
    )
    .bind(user.id)
    .fetch_all(&state.pool)
    .await?;
    Ok(NotificationSummary {
        unread: rows.first().map_or(0, |r| r.unread),
        recent: rows.into_iter().map(|r| r.notification).collect(),
    })
}

/// Marks one notification read, or all of them when `id` is absent.
#[server(output = crate::api::TextJson)]
pub async fn mark_notifications_read(id: Option<Uuid>) -> Result<(), AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    let changed = sqlx::query(
        "update notifications set read_at = now() \
         where user_id = $1 and read_at is null and ($2::uuid is null or id = $2)",
    )
    .bind(user.id)
    .bind(id)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if changed == 0
        && let Some(id) = id
    {
        let mine: bool = sqlx::query_scalar(
            "select exists (select 1 from notifications where id = $1 and user_id = $2)",
        )
        .bind(id)
        .bind(user.id)
        .fetch_one(&state.pool)
        .await?;
        if !mine {
            return Err(AppError::not_found("notification"));
        }
    }
    Ok(())
}
