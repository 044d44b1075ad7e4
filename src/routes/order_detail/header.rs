//! The order's header: its facts, status moves and factory assignment.

use leptos::prelude::*;
use leptos_meta::Title;
use uuid::Uuid;

use super::OrderMutations;
use crate::api::orders::{AssignFactory, list_factories, set_order_status};
use crate::app::use_user;
use crate::components::badges::{OrderStatusBadge, ProgressBar};
use crate::components::form_feedback::{FormError, action_error};
use crate::model::{Order, OrderStatus, Role, format_date};

#[component]
pub(super) fn OrderHeader(order: Order, assign: ServerAction<AssignFactory>) -> impl IntoView {
    let user = use_user();
    let mutations = expect_context::<OrderMutations>();
    let assign_error = action_error(assign);
    let confirmed = order.status;
    let shown = move || mutations.status.all().last().map_or(confirmed, |p| p.value);
    let pending = move || !mutations.status.all().is_empty();
    let id = order.id;
    let role = user.role;
    let can_assign = role == Role::Admin
        && matches!(order.status, OrderStatus::Pending | OrderStatus::Confirmed);
    let change = move |to: OrderStatus| {
        mutations.status.run(
            to,
            move |mutation| set_order_status(id, to, Some(mutation)),
            move || mutations.detail.refetch(),
        );
    };
    view! {
        <Title text=format!("{} · Threadline", order.label())/>
        <section class="card order-head">
            <div class="order-title">
                <h1>{order.label()} " · " {order.product.clone()}</h1>
                {move || view! { <OrderStatusBadge status=shown()/> }}
                <Show when=pending><span class="pending-note">"saving…"</span></Show>
            </div>
            <dl class="facts">
                <div><dt>"Quantity"</dt><dd>{order.quantity}</dd></div>
                <div><dt>"Due"</dt><dd>{format_date(order.due_date)}</dd></div>
                <div><dt>"Buyer"</dt><dd>{order.buyer_name.clone()}</dd></div>
                <div><dt>"Factory"</dt><dd>{order.factory_name.clone().unwrap_or_else(|| "Not assigned".into())}</dd></div>
                <div><dt>"Production"</dt><dd><ProgressBar percent=order.progress label="Production progress"/>{format!(" {}%", order.progress)}</dd></div>
            </dl>
            {(!order.notes.is_empty()).then(|| view! { <p class="notes">{order.notes.clone()}</p> })}
            <div class="order-actions">
                {move || {
                    let from = shown();
                    from.next().iter().copied().filter(|to| OrderStatus::may_set(role, from, *to)).map(|to| {
                        let label = match to {
                            OrderStatus::Cancelled => "Cancel order".to_string(),
                            OrderStatus::Delivered => "Confirm delivery".to_string(),
                            other => format!("Mark {}", other.label().to_ascii_lowercase()),
                        };
                        view! {
                            <button type="button"
                                class=if to == OrderStatus::Cancelled { "button danger" } else { "button" }
                                disabled=pending
                                on:click=move |_| change(to)
                            >{label}</button>
                        }
                    }).collect_view()
                }}
                {can_assign.then(|| view! { <AssignFactoryForm order_id=id current=order.factory_id assign/> })}
            </div>
            <FormError message=Signal::derive(move || mutations.status.error.get())/>
            <FormError message=assign_error/>
        </section>
    }
}

#[component]
fn AssignFactoryForm(
    order_id: Uuid,
    current: Option<Uuid>,
    assign: ServerAction<AssignFactory>,
) -> impl IntoView {
    let factories = Resource::new(|| (), |_| list_factories());
    view! {
        <ActionForm action=assign attr:class="inline-form">
            <input type="hidden" name="id" value=order_id.to_string()/>
            <label class="inline" for="assign-factory">"Factory"</label>
            <select id="assign-factory" name="factory_id" required>
                <option value="">"Choose…"</option>
                <Transition fallback=|| ()>
                    {move || factories.get().and_then(Result::ok).map(|list| list.into_iter().map(|f| view! {
                        <option value=f.id.to_string() selected=current == Some(f.id)>{f.name}</option>
                    }).collect_view())}
                </Transition>
            </select>
            <button type="submit" class="button">"Assign"</button>
        </ActionForm>
    }
}
