//! Passwords (argon2), browser sessions (an HttpOnly cookie naming a row in
//! `sessions`), access tokens for other clients (HS256 JWTs signed with a key
//! kept in the database), and the failed-login limit.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::AppError;
use crate::model::SessionUser;
use crate::server::AppState;
use crate::server::settings::ServerSettings;

pub const SESSION_COOKIE: &str = "threadline_session";
const MAX_FAILURES: i64 = 5;
const FAILURE_WINDOW_MINUTES: i64 = 15;
const USER_COLUMNS: &str = "u.id, u.email, u.name, u.role, u.factory_id";

pub async fn hash_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Checks an email and password, counting failures per account: after
/// `MAX_FAILURES` in `FAILURE_WINDOW_MINUTES` the account refuses sign-ins
/// until the window passes, whatever the password. Each attempt is counted
/// before its password is checked (one at a time per account), so the
/// limit holds however many guesses arrive at once; and only so many
/// passwords are hashed at a time, so guesses cannot take all the CPU.
pub async fn authenticate(
    state: &AppState,
    email: &str,
    password: &str,
) -> Result<SessionUser, AppError> {
    let pool = &state.pool;
    let email = email.trim().to_lowercase();
    if email.is_empty() || password.is_empty() {
        return Err(AppError::invalid("enter your email and password"));
    }
    if email.chars().count() > 320 || password.len() > 1024 {
        return Err(AppError::Unauthorized("wrong email or password".into()));
    }
    let attempt = reserve_attempt(pool, &email).await?;
    let row: Option<(Uuid, String)> =
        sqlx::query_as("select id, password_hash from users where email = $1")
            .bind(&email)
            .fetch_optional(pool)
            .await?;
    // Unknown emails cost the same hash check, so timing does not reveal accounts.
    let (user_id, hash) = row.unwrap_or((Uuid::nil(), DUMMY_HASH.to_string()));
    let permit = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        state.hashing.clone().acquire_owned(),
    )
    .await
    .map_err(|_| AppError::RateLimited("the server is busy signing people in; try again".into()))?
    .map_err(|_| AppError::Internal)?;
    let verified = verify_password(password.to_string(), hash).await;
    drop(permit);
    if !verified || user_id.is_nil() {
        // the reserved attempt stays, as a failure
        sqlx::query("delete from login_failures where failed_at < now() - interval '1 day'")
            .execute(pool)
            .await?;
        return Err(AppError::Unauthorized("wrong email or password".into()));
    }
    sqlx::query("delete from login_failures where email = $1 or id = $2")
        .bind(&email)
        .bind(attempt)
        .execute(pool)
        .await?;
    user_by_id(pool, user_id)
        .await?
        .ok_or_else(|| AppError::Unauthorized("wrong email or password".into()))
}

/// Counts an attempt for `email` (as a failure until it succeeds), one
/// account at a time, or refuses it when the account has had too many.
async fn reserve_attempt(pool: &PgPool, email: &str) -> Result<i64, AppError> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('sign-in:' || $1, 0))")
        .bind(email)
        .execute(&mut *tx)
        .await?;
    let recent: i64 = sqlx::query_scalar(
        "select count(*) from login_failures \
         where email = $1 and failed_at > now() - make_interval(mins => $2)",
    )
    .bind(email)
    .bind(FAILURE_WINDOW_MINUTES as i32)
    .fetch_one(&mut *tx)
    .await?;
    if recent >= MAX_FAILURES {
        return Err(AppError::RateLimited(format!(
            "too many failed sign-ins for this account; try again in {FAILURE_WINDOW_MINUTES} minutes"
        )));
    }
    let id = sqlx::query_scalar("insert into login_failures (email) values ($1) returning id")
        .bind(email)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

/// An argon2 hash of a random string, checked against when the email is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2x8JnYwAUQ3+xq5uZL1Hm3r0m6V9x9sQeH3VwB5m3Jc";

pub async fn user_by_id(pool: &PgPool, id: Uuid) -> Result<Option<SessionUser>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {USER_COLUMNS} from users u where u.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a session and returns its secret token (only its hash is stored).
pub async fn create_session(pool: &PgPool, user_id: Uuid, days: i64) -> Result<String, AppError> {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    sqlx::query(
        "insert into sessions (token_hash, user_id, expires_at) \
         values ($1, $2, now() + make_interval(days => $3))",
    )
    .bind(token_hash(&token))
    .bind(user_id)
    .bind(days as i32)
    .execute(pool)
    .await?;
    Ok(token)
}

pub fn set_session_cookie(token: &str, settings: &ServerSettings) {
    let max_age = settings.session_days.saturating_mul(24 * 3600);
    set_cookie(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        secure_attribute(settings)
    ));
}

pub fn clear_session_cookie(settings: &ServerSettings) {
    set_cookie(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        secure_attribute(settings)
    ));
}

/// Cookies are `Secure` whenever the site is served over HTTPS.
fn secure_attribute(settings: &ServerSettings) -> &'static str {
    let https = request_headers()
        .is_some_and(|headers| crate::server::security::over_https(&headers, settings));
    if settings.secure_cookies || https {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(value: &str) {
    if let (Some(response), Ok(value)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        HeaderValue::from_str(value),
    ) {
        response.append_header(SET_COOKIE, value);
    }
}

pub async fn end_session(pool: &PgPool) -> Result<(), AppError> {
    if let Some(token) = request_headers().as_ref().and_then(session_token) {
        sqlx::query("delete from sessions where token_hash = $1")
            .bind(token_hash(&token))
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn request_headers() -> Option<HeaderMap> {
    use_context::<axum::http::request::Parts>().map(|parts| parts.headers)
}

pub fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The user of the session cookie, if it names a live session.
pub async fn session_user(
    pool: &PgPool,
    headers: &HeaderMap,
) -> Result<Option<SessionUser>, AppError> {
    Ok(live_session(pool, headers).await?.map(|s| s.user))
}

/// A live browser session: its user, the hash it is stored under, and when it ends.
pub struct LiveSession {
    pub user: SessionUser,
    pub token_hash: Vec<u8>,
    pub expires_at: time::OffsetDateTime,
    /// The database snapshot (`pg_current_snapshot()`) it was looked up in:
    /// what a page rendered after the lookup sees at least
    /// (`server::page_cache`).
    pub snapshot: String,
}

/// The session the request's cookie names, if it is live.
pub async fn live_session(
    pool: &PgPool,
    headers: &HeaderMap,
) -> Result<Option<LiveSession>, AppError> {
    let Some(token) = session_token(headers) else {
        return Ok(None);
    };
    let hash = token_hash(&token);
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: SessionUser,
        expires_at: time::OffsetDateTime,
        snapshot: String,
    }
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {USER_COLUMNS}, s.expires_at, pg_current_snapshot()::text as snapshot \
             from sessions s join users u on u.id = s.user_id \
             where s.token_hash = $1 and s.expires_at > now()"
    ))
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| LiveSession {
        user: row.user,
        token_hash: hash,
        expires_at: row.expires_at,
        snapshot: row.snapshot,
    }))
}

/// Why an access token names nobody.
#[derive(Debug)]
pub enum TokenLookupError {
    Token(TokenError),
    /// Its user was removed.
    NoSuchUser,
    Database(AppError),
}

/// The user an access token names, as the database has them now (its
/// claims say only who and until when): the one lookup HTTP requests and
/// WebSockets share.
pub async fn user_for_token(
    pool: &PgPool,
    keys: &AuthKeys,
    token: &str,
) -> Result<(SessionUser, TokenClaims), TokenLookupError> {
    let claims = keys.verify(token.trim()).map_err(TokenLookupError::Token)?;
    match user_by_id(pool, claims.sub).await {
        Ok(Some(user)) => Ok((user, claims)),
        Ok(None) => Err(TokenLookupError::NoSuchUser),
        Err(e) => Err(TokenLookupError::Database(e.into())),
    }
}

/// The user a request speaks for: the session cookie, else a bearer token.
pub async fn user_from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<SessionUser>, AppError> {
    if let Some(user) = session_user(&state.pool, headers).await? {
        return Ok(Some(user));
    }
    bearer_user(state, headers).await
}

/// The user a request's bearer token names, if it carries one.
pub async fn bearer_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<SessionUser>, AppError> {
    let Some(token) = bearer_token(headers) else {
        return Ok(None);
    };
    match user_for_token(&state.pool, &state.auth, token).await {
        Ok((user, _)) => Ok(Some(user)),
        Err(TokenLookupError::Token(e)) => Err(AppError::Unauthorized(e.to_string())),
        Err(TokenLookupError::NoSuchUser) => Ok(None),
        Err(TokenLookupError::Database(e)) => Err(e),
    }
}

/// The user a page request was resolved to by `resolve_session` when it
/// arrived: the server functions that run while that page renders use it
/// rather than each asking the database again (server functions called over
/// HTTP are resolved on their own).
fn resolved_user() -> Option<SessionUser> {
    use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<SessionUser>().cloned())
}

pub async fn optional_user() -> Result<Option<SessionUser>, AppError> {
    if let Some(user) = resolved_user() {
        return Ok(Some(user));
    }
    let state = AppState::current()?;
    match request_headers() {
        Some(headers) => user_from_headers(&state, &headers).await,
        None => Ok(None),
    }
}

/// For server functions: the app state and the signed-in user, or 401.
pub async fn require_user() -> Result<(AppState, SessionUser), AppError> {
    let state = AppState::current()?;
    if let Some(user) = resolved_user() {
        return Ok((state, user));
    }
    let headers = request_headers().unwrap_or_default();
    let user = user_from_headers(&state, &headers)
        .await?
        .ok_or_else(AppError::sign_in)?;
    Ok((state, user))
}

/// Claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: Uuid,
    pub email: String,
    pub role: String,
    #[serde(default)]
    pub factory_id: Option<Uuid>,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token's signature is not valid")]
    BadSignature,
    #[error("the access token has expired")]
    Expired,
}

/// The key that signs access tokens: made once per database and shared by
/// every app server on it, so a token from one server works on all.
pub struct AuthKeys {
    signing_key: Vec<u8>,
}

impl AuthKeys {
    pub async fn load(pool: &PgPool) -> Result<AuthKeys, sqlx::Error> {
        let mut candidate = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut candidate);
        sqlx::query("insert into app_secrets (name, value) values ('token_signing_key', $1) on conflict do nothing")
            .bind(candidate.as_slice())
            .execute(pool)
            .await?;
        let signing_key =
            sqlx::query_scalar("select value from app_secrets where name = 'token_signing_key'")
                .fetch_one(pool)
                .await?;
        Ok(AuthKeys { signing_key })
    }

    pub fn from_key(signing_key: Vec<u8>) -> AuthKeys {
        AuthKeys { signing_key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length
        Hmac::<Sha256>::new_from_slice(&self.signing_key).unwrap_or_else(|_| unreachable!())
    }

    /// A token for `user` valid for `lifetime` (whole seconds); returns it
    /// with its lifetime in seconds.
    pub fn issue(&self, user: &SessionUser, lifetime: std::time::Duration) -> (String, i64) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expires_in = lifetime.as_secs() as i64;
        let claims = TokenClaims {
            sub: user.id,
            email: user.email.clone(),
            role: user.role.as_str().to_string(),
            factory_id: user.factory_id,
            iat: now,
            exp: now + expires_in,
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        (format!("{signing_input}.{signature}"), expires_in)
    }

    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        let header: serde_json::Value = decode_json(header)?;
        if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256") {
            return Err(TokenError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: TokenClaims = decode_json(payload)?;
        if claims.exp <= time::OffsetDateTime::now_utc().unix_timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[derive(Deserialize)]
pub struct TokenRequest {
    email: String,
    password: String,
}

#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
}

/// `POST /api/auth/token` with `{"email", "password"}`: an access token for
/// clients without a browser session (realtime-js, scripts).
pub async fn issue_token(
    State(state): State<AppState>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Json<TokenResponse>, AppError> {
    let Json(request) = body.map_err(|rejection| {
        AppError::invalid(format!(
            "send JSON like {{\"email\": \"…\", \"password\": \"…\"}} ({})",
            rejection.body_text()
        ))
    })?;
    let user = authenticate(&state, &request.email, &request.password).await?;
    let (access_token, expires_in) = state.auth.issue(
        &user,
        std::time::Duration::from_secs(state.settings.server.token_minutes.max(1) as u64 * 60),
    );
    Ok(Json(TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    fn user() -> SessionUser {
        SessionUser {
            id: Uuid::from_u128(7),
            email: "buyer@sleek.test".into(),
            name: "Ava".into(),
            role: Role::Buyer,
            factory_id: None,
        }
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_user() {
        let keys = AuthKeys::from_key(b"k".repeat(32));
        let (token, expires_in) = keys.issue(&user(), std::time::Duration::from_secs(300));
        assert_eq!(expires_in, 300);
        assert_eq!(keys.verify(&token).map(|c| c.sub), Ok(Uuid::from_u128(7)));
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let (token, _) =
            AuthKeys::from_key(b"a".repeat(32)).issue(&user(), std::time::Duration::from_secs(300));
        let other = AuthKeys::from_key(b"b".repeat(32));
        assert_eq!(other.verify(&token).err(), Some(TokenError::BadSignature));
    }

    #[test]
    fn an_expired_token_says_so() {
        let keys = AuthKeys::from_key(b"k".repeat(32));
        let (token, _) = keys.issue(&user(), std::time::Duration::ZERO);
        assert_eq!(keys.verify(&token).err(), Some(TokenError::Expired));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let keys = AuthKeys::from_key(b"k".repeat(32));
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "...",
            "x.y.z",
            "eyJhbGciOiJub25lIn0.e30.",
        ] {
            assert!(keys.verify(token).is_err(), "{token}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; threadline_session=abc; b=2"),
        );
        assert_eq!(session_token(&headers).as_deref(), Some("abc"));
    }
}
