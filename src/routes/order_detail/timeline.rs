//! The production stages, with the factory's "advance" and progress controls.

use leptos::prelude::*;
use uuid::Uuid;

use super::OrderMutations;
use crate::api::orders::{SetStageProgress, advance_stage};
use crate::app::use_user;
use crate::components::badges::{ProgressBar, StageStatusBadge};
use crate::components::form_feedback::{FormError, action_error};
use crate::model::{
    OrderDetail, OrderStatus, ProductionStage, Role, StageStatus, format_timestamp,
};

/// The stage a click on "advance" moves, and to what.
fn next_move(stages: &[ProductionStage]) -> Option<(Uuid, StageStatus, String)> {
    let stage = stages.iter().find(|s| s.status != StageStatus::Done)?;
    Some(match stage.status {
        StageStatus::Pending => (
            stage.id,
            StageStatus::InProgress,
            format!("Start {}", stage.stage.label().to_ascii_lowercase()),
        ),
        _ => (
            stage.id,
            StageStatus::Done,
            format!("Complete {}", stage.stage.label().to_ascii_lowercase()),
        ),
    })
}

#[component]
pub(super) fn StageTimeline(
    detail: OrderDetail,
    progress: ServerAction<SetStageProgress>,
) -> impl IntoView {
    let user = use_user();
    let mutations = expect_context::<OrderMutations>();
    let works = user.role != Role::Buyer;
    let order_id = detail.order.id;
    let in_work = matches!(
        detail.order.status,
        OrderStatus::Confirmed | OrderStatus::InProduction
    );
    let confirmed_stages = detail.stages.clone();
    // the stages as shown: confirmed data with pending moves applied
    let stages = Signal::derive(move || {
        let mut stages = confirmed_stages.clone();
        for pending in mutations.advance.all() {
            let (stage_id, status) = pending.value;
            if let Some(stage) = stages.iter_mut().find(|s| s.id == stage_id) {
                stage.status = status;
                if status == StageStatus::Done {
                    stage.progress = 100;
                }
            }
        }
        stages
    });
    let pending = move || !mutations.advance.all().is_empty();
    let progress_error = action_error(progress);
    view! {
        <section class="card timeline" aria-label="Production stages">
            <h2>"Production"</h2>
            <ol class="stages">
                {move || {
                    let pending_ids: Vec<Uuid> = mutations.advance.all().iter().map(|p| p.value.0).collect();
                    stages.get().into_iter().map(|stage| {
                        let is_pending = pending_ids.contains(&stage.id);
                        view! { <StageRow stage pending=is_pending/> }
                    }).collect_view()
                }}
            </ol>
            {(works && in_work).then(|| view! {
                <div class="stage-actions">
                    {move || next_move(&stages.get()).map(|(stage_id, status, label)| view! {
                        <button type="button" class="button primary" data-testid="advance-stage" disabled=pending
                            on:click=move |_| {
                                mutations.advance.run(
                                    (stage_id, status),
                                    move |mutation| advance_stage(order_id, Some(mutation), Some(stage_id), Some(status)),
                                    move || mutations.detail.refetch(),
                                );
                            }
                        >{label}</button>
                    })}
                    {move || stages.get().into_iter().find(|s| s.status == StageStatus::InProgress && !pending()).map(|stage| view! {
                        <ActionForm action=progress attr:class="inline-form">
                            <input type="hidden" name="stage_id" value=stage.id.to_string()/>
                            <label class="inline">"Progress "
                                <input name="progress" type="number" step="1" class="short" value=stage.progress.to_string()/>"%"
                            </label>
                            <button type="submit" class="button">"Update"</button>
                        </ActionForm>
                    })}
                </div>
            })}
            <FormError message=Signal::derive(move || mutations.advance.error.get())/>
            <FormError message=progress_error/>
        </section>
    }
}

#[component]
fn StageRow(stage: ProductionStage, pending: bool) -> impl IntoView {
    let when = match stage.status {
        StageStatus::Done => stage
            .completed_at
            .map(|t| format!("Completed {}", format_timestamp(t))),
        StageStatus::InProgress => stage
            .started_at
            .map(|t| format!("Started {}", format_timestamp(t))),
        StageStatus::Pending => None,
    };
    view! {
        <li class=format!("stage stage-row-{}", stage.status.as_str()) class:pending=pending data-stage=stage.stage.as_str()>
            <span class="stage-marker" aria-hidden="true"></span>
            <div class="stage-body">
                <div class="stage-line">
                    <strong>{stage.stage.label()}</strong>
                    <StageStatusBadge status=stage.status/>
                    {pending.then(|| view! { <span class="pending-note">"saving…"</span> })}
                </div>
                {(stage.status == StageStatus::InProgress).then(|| view! {
                    <div class="stage-progress"><ProgressBar percent=i32::from(stage.progress) label=format!("{} progress", stage.stage.label())/>{format!(" {}%", stage.progress)}</div>
                })}
                {when.map(|w| view! { <span class="muted small">{w}</span> })}
            </div>
        </li>
    }
}
