use leptos::prelude::*;
use uuid::Uuid;

use crate::error::AppError;
use crate::model::{Contact, Conversation, Folder, Message, Page};

#[cfg(feature = "ssr")]
const MESSAGE_SELECT: &str = "select m.id, m.sender_id, s.name as sender_name, m.recipient_id, \
    r.name as recipient_name, m.order_id, o.number as order_number, m.body, m.read_at, m.client_mutation_id, m.created_at \
    from messages m join users s on s.id = m.sender_id join users r on r.id = m.recipient_id \
    left join orders o on o.id = m.order_id";

/// Each conversation of user `$1` (the other person and the order, or no
/// order) with its newest message, its size and what `$1` has not read.
#[cfg(feature = "ssr")]
const CONVERSATIONS: &str = "select c.* from ( \
    select distinct on (m.other_id, m.order_id) \
        m.other_id, u.name as other_name, m.order_id, o.number as order_number, \
        m.body as last_body, m.created_at as last_at, m.id as last_id, m.sender_id = $1 as last_from_me, \
        count(*) filter (where m.recipient_id = $1 and m.read_at is null) over w as unread, \
        count(*) over w as total \
    from (select m.*, case when m.sender_id = $1 then m.recipient_id else m.sender_id end as other_id \
          from messages m where m.sender_id = $1 or m.recipient_id = $1) m \
    join users u on u.id = m.other_id left join orders o on o.id = m.order_id \
    window w as (partition by m.other_id, m.order_id) \
    order by m.other_id, m.order_id, m.created_at desc, m.id desc) c";

/// Who a user may write to: admins anyone; buyers the admins and the staff
/// of factories making their orders; factory staff the admins and the buyers
/// of their factory's orders. `$1` is the user, `$2` the role, `$3` the factory.
#[cfg(feature = "ssr")]
const CONTACTS: &str = "select c.id, c.name, c.role, f.name as factory_name from users c \
    left join factories f on f.id = c.factory_id \
    where c.id <> $1 and ($2 = 'admin' or c.role = 'admin' \
       or ($2 = 'buyer' and c.factory_id in (select factory_id from orders where buyer_id = $1)) \
       or ($2 = 'factory' and c.id in (select buyer_id from orders where factory_id = $3)))";

/// The user's inbox or sent folder, newest first, paged by key (see
/// `api::paging`): the first page, the window `through` a key, and with
/// `more` the page after it.
#[server(endpoint = "list_messages", output = crate::api::TextJson)]
pub async fn list_messages(
    folder: Folder,
    #[server(default)] through: Option<String>,
    #[server(default)] more: bool,
) -> Result<Page<Message>, AppError> {
    use crate::api::paging::{self, List, Mine};
    let (state, user) = crate::auth::server::require_user().await?;
    let through = paging::parse_through::<Uuid>(through.as_deref())?;
    let list = List {
        select: MESSAGE_SELECT,
        clause: match folder {
            Folder::Inbox => "m.recipient_id = $1",
            Folder::Sent => "m.sender_id = $1",
        },
        params: 1,
        binds: &Mine(user.id),
        at: "m.created_at",
        tie: "m.id",
    };
    paging::window(&state.pool, &list, through, more).await
}

/// The user's conversations: messages grouped by the other person and the
/// order they are about, newest conversation first, with how many of them
/// the user has not read; paged by key like the folders.
#[server(endpoint = "list_conversations", output = crate::api::TextJson)]
pub async fn list_conversations(
    #[server(default)] through: Option<String>,
    #[server(default)] more: bool,
) -> Result<Page<Conversation>, AppError> {
    use crate::api::paging::{self, List, Mine};
    let (state, user) = crate::auth::server::require_user().await?;
    let through = paging::parse_through::<Uuid>(through.as_deref())?;
    let list = List {
        select: CONVERSATIONS,
        clause: "true",
        params: 1,
        binds: &Mine(user.id),
        at: "c.last_at",
        tie: "c.last_id",
    };
    paging::window(&state.pool, &list, through, more).await
}

/// One conversation's messages, newest first, paged by key: with `with`
/// (the other person) about `order_id` (or about no order).
#[server(endpoint = "conversation_messages", output = crate::api::TextJson)]
pub async fn conversation_messages(
    with: Uuid,
    order_id: Option<Uuid>,
    #[server(default)] through: Option<String>,
    #[server(default)] more: bool,
) -> Result<Page<Message>, AppError> {
    use crate::api::paging::{self, List};
    let (state, user) = crate::auth::server::require_user().await?;
    let through = paging::parse_through::<Uuid>(through.as_deref())?;
    let list = List {
        select: MESSAGE_SELECT,
        clause: "((m.sender_id = $1 and m.recipient_id = $2) or (m.sender_id = $2 and m.recipient_id = $1)) \
                 and m.order_id is not distinct from $3",
        params: 3,
        binds: &Between {
            me: user.id,
            other: with,
            order_id,
        },
        at: "m.created_at",
        tie: "m.id",
    };
    paging::window(&state.pool, &list, through, more).await
}

/// `$1` me, `$2` the other person, `$3` the order (or none).
#[cfg(feature = "ssr")]
struct Between {
    me: Uuid,
    other: Uuid,
    order_id: Option<Uuid>,
}

#[cfg(feature = "ssr")]
impl crate::api::paging::Binds for Between {
    fn bind<'q, O>(
        &self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        query.bind(self.me).bind(self.other).bind(self.order_id)
    }
}

/// The messages about one order that the user sent or received (admins: all).
#[server(endpoint = "order_messages", output = crate::api::TextJson)]
pub async fn order_messages(
    order_id: Uuid,
    #[server(default)] through: Option<String>,
    #[server(default)] more: bool,
) -> Result<Page<Message>, AppError> {
    use crate::api::paging::{self, List};
    let (state, user) = crate::auth::server::require_user().await?;
    crate::api::scope::ensure_order_visible(&state.pool, &user, order_id).await?;
    let through = paging::parse_through::<Uuid>(through.as_deref())?;
    let list = List {
        select: MESSAGE_SELECT,
        clause: "m.order_id = $4 and ($2 = 'admin' or m.sender_id = $1 or m.recipient_id = $1)",
        params: 4,
        binds: &crate::api::scope::AboutOrder { user, order_id },
        at: "m.created_at",
        tie: "m.id",
    };
    paging::window(&state.pool, &list, through, more).await
}

#[server(output = crate::api::TextJson)]
pub async fn list_contacts() -> Result<Vec<Contact>, AppError> {
    use crate::api::scope::scoped;
    let (state, user) = crate::auth::server::require_user().await?;
    Ok(
        scoped(&format!("{CONTACTS} order by c.role, c.name"), &user)
            .fetch_all(&state.pool)
            .await?,
    )
}

/// Tells a contact that the signed-in person is writing them a message (or
/// stopped): a broadcast to the contact's `user:` room, which only they join.
#[server(output = crate::api::TextJson)]
pub async fn typing_to(recipient_id: Uuid, typing: bool) -> Result<(), AppError> {
    use crate::api::scope::scoped;
    let (state, user) = crate::auth::server::require_user().await?;
    let contact: Option<Contact> = scoped(&format!("{CONTACTS} and c.id = $4"), &user)
        .bind(recipient_id)
        .fetch_optional(&state.pool)
        .await?;
    if contact.is_none() {
        return Err(AppError::forbidden("you cannot message that person"));
    }
    let event = if typing { "typing" } else { "stopped" };
    let payload = serde_json::json!({"user_id": user.id, "name": user.name});
    state
        .realtime
        .broadcast(&format!("user:{recipient_id}"), event, &payload)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "a typing notice could not be sent");
            AppError::Internal
        })
}

/// Which of the signed-in person's contacts have Threadline open now (on
/// this server).
#[server(output = crate::api::TextJson)]
pub async fn online_contacts() -> Result<Vec<Uuid>, AppError> {
    use crate::api::scope::scoped;
    let (state, user) = crate::auth::server::require_user().await?;
    let contacts: Vec<Contact> = scoped(&format!("{CONTACTS} order by c.name"), &user)
        .fetch_all(&state.pool)
        .await?;
    let ids: Vec<Uuid> = contacts.iter().map(|c| c.id).collect();
    // not in the database: a page showing it is not reused
    crate::server::page_cache::shows_live_state();
    Ok(state.realtime.hub.online(&ids))
}

/// Sends a message to a contact, optionally about an order both may see.
#[server(output = crate::api::TextJson)]
pub async fn send_message(
    recipient_id: String,
    order_id: Option<String>,
    body: String,
    client_mutation_id: Option<Uuid>,
) -> Result<Uuid, AppError> {
    use crate::api::scope::scoped;
    let (state, user) = crate::auth::server::require_user().await?;
    let body = body.trim();
    if body.is_empty() {
        return Err(AppError::invalid("write a message before sending"));
    }
    if body.chars().count() > 5000 {
        return Err(AppError::invalid(
            "a message must be at most 5,000 characters",
        ));
    }
    let recipient_id = crate::api::parse_id(&recipient_id, "recipient")?;
    let order_id = crate::api::parse_optional_id(order_id.as_deref(), "order")?;
    let contact: Option<Contact> = scoped(&format!("{CONTACTS} and c.id = $4"), &user)
        .bind(recipient_id)
        .fetch_optional(&state.pool)
        .await?;
    if contact.is_none() {
        return Err(AppError::forbidden("you cannot message that person"));
    }
    if let Some(order_id) = order_id {
        crate::api::scope::ensure_order_visible(&state.pool, &user, order_id).await?;
    }
    let id = sqlx::query_scalar(
        "insert into messages (sender_id, recipient_id, order_id, body, client_mutation_id) \
         values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(user.id)
    .bind(recipient_id)
    .bind(order_id)
    .bind(body)
    .bind(client_mutation_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(id)
}

/// Marks a received message read (a read receipt for its sender).
#[server(output = crate::api::TextJson)]
pub async fn mark_message_read(id: Uuid, client_mutation_id: Option<Uuid>) -> Result<(), AppError> {
    let (state, user) = crate::auth::server::require_user().await?;
    let recipient: Option<Uuid> =
        sqlx::query_scalar("select recipient_id from messages where id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    match recipient {
        None => Err(AppError::not_found("message")),
        Some(recipient) if recipient != user.id => Err(AppError::forbidden(
            "only the recipient can mark a message read",
        )),
        Some(_) => {
            sqlx::query(
                "update messages set read_at = now(), client_mutation_id = $2 where id = $1 and read_at is null",
            )
            .bind(id)
            .bind(client_mutation_id)
                .execute(&state.pool)
                .await?;
            Ok(())
        }
    }
}
