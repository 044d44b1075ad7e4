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
