use leptos::prelude::*;
use uuid::Uuid;

use crate::error::AppError;
use crate::model::NotificationSummary;

#[server(output = crate::api::TextJson)]
pub async fn notifications() -> Result<NotificationSummary, AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    let unread = sqlx::query_scalar(
        "select count(*) from notifications where user_id = $1 and read_at is null",
    )
    .bind(user.id)
    .fetch_one(&state.pool)
    .await?;
    let recent = sqlx::query_as(
        "select id, kind, text, link, read_at, created_at from notifications where user_id = $1 \
         order by created_at desc, id limit 15",
    )
    .bind(user.id)
    .fetch_all(&state.pool)
    .await?;
    Ok(NotificationSummary { unread, recent })
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
