//! Who a WebSocket speaks for, through the same lookups as every HTTP
//! request: the session cookie names a live session row, an access token
//! names a user row that must still exist. Claims baked into a token never
//! outrank the database.

use std::sync::Arc;

use axum::http::HeaderMap;
use sqlx::PgPool;
use threadline_realtime::ports::{AuthError, BoxFuture, Identity, Principal};

use super::rules::{session_key, viewer};
use crate::auth::server::{AuthKeys, TokenError, TokenLookupError, live_session, user_for_token};
use crate::error::AppError;
use crate::model::SessionUser;

pub struct AppIdentity {
    pub pool: PgPool,
    pub auth: Arc<AuthKeys>,
}

fn principal(user: &SessionUser, expires_at: Option<i64>) -> Principal {
    Principal {
        viewer: viewer(user),
        name: Some(user.name.clone()),
        session: None,
        expires_at,
    }
}

/// The first whole second at which the session has ended.
fn ceil_seconds(at: time::OffsetDateTime) -> i64 {
    at.unix_timestamp()
        .saturating_add(i64::from(at.nanosecond() > 0))
}

fn unavailable(error: AppError) -> AuthError {
    AuthError::Unavailable(error.to_string())
}

impl Identity for AppIdentity {
    fn session<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> BoxFuture<'a, Result<Option<Principal>, AuthError>> {
        Box::pin(async move {
            let session = live_session(&self.pool, headers)
                .await
                .map_err(unavailable)?;
            Ok(session.map(|session| Principal {
                session: Some(session_key(&session.token_hash)),
                ..principal(&session.user, Some(ceil_seconds(session.expires_at)))
            }))
        })
    }

    fn token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>> {
        Box::pin(async move {
            match user_for_token(&self.pool, &self.auth, token).await {
                Ok((user, claims)) => Ok(principal(&user, Some(claims.exp))),
                Err(TokenLookupError::Token(TokenError::Expired)) => {
                    Err(AuthError::Expired(TokenError::Expired.to_string()))
                }
                Err(TokenLookupError::Token(e)) => Err(AuthError::Refused(e.to_string())),
                Err(TokenLookupError::NoSuchUser) => Err(AuthError::Refused(
                    "the access token names a user who no longer exists".into(),
                )),
                Err(TokenLookupError::Database(e)) => Err(unavailable(e)),
            }
        })
    }
}
