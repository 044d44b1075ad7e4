use leptos::prelude::*;

use crate::model::{OrderStatus, StageStatus};

#[component]
pub fn OrderStatusBadge(status: OrderStatus) -> impl IntoView {
    view! { <span class=format!("badge status-{}", status.as_str()) data-status=status.as_str()>{status.label()}</span> }
}

#[component]
pub fn StageStatusBadge(status: StageStatus) -> impl IntoView {
    view! { <span class=format!("badge stage-{}", status.as_str())>{status.label()}</span> }
}

#[component]
pub fn ProgressBar(percent: i32, #[prop(optional, into)] label: String) -> impl IntoView {
    let percent = percent.clamp(0, 100);
    view! {
        <div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"
            aria-valuenow=percent aria-label=label>
            <div class="progress-fill" style=format!("width: {percent}%")></div>
        </div>
    }
}

/// The error of the last failed submission of an action, if any.
pub fn action_error<S>(action: ServerAction<S>) -> Signal<Option<String>>
where
    S: leptos::server_fn::ServerFn<Error = crate::error::AppError> + Send + Sync + Clone + 'static,
    S::Output: Send + Sync + Clone + 'static,
{
    Signal::derive(move || match action.value().get() {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    })
}

#[component]
pub fn FormError(message: Signal<Option<String>>) -> impl IntoView {
    view! {
        <Show when=move || message.get().is_some()>
            <p class="error" role="alert">{move || message.get().unwrap_or_default()}</p>
        </Show>
    }
}
