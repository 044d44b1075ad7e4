use leptos::prelude::*;

use crate::error::AppError;
use crate::model::SessionUser;

#[server(output = crate::api::TextJson)]
pub async fn login(email: String, password: String) -> Result<SessionUser, AppError> {
    use super::server;
    let state = crate::server::AppState::current()?;
    let user = server::authenticate(&state, &email, &password).await?;
    let token =
        server::create_session(&state.pool, user.id, state.settings.server.session_days).await?;
    server::set_session_cookie(&token, &state.settings.server);
    Ok(user)
}

#[server(output = crate::api::TextJson)]
pub async fn logout() -> Result<(), AppError> {
    use super::server;
    let state = crate::server::AppState::current()?;
    server::end_session(&state.pool).await?;
    server::clear_session_cookie(&state.settings.server);
    Ok(())
}

/// The signed-in user, or `None` for a visitor.
#[server(output = crate::api::TextJson)]
pub async fn current_user() -> Result<Option<SessionUser>, AppError> {
    super::server::optional_user().await
}
