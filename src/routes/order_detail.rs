use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use uuid::Uuid;

use crate::api::messages::{SendMessage, list_contacts, order_messages};
use crate::api::orders::{
    AdvanceStage, AssignFactory, PostOrderUpdate, SetOrderStatus, SetStageProgress, get_order,
    list_factories, list_order_updates,
};
use crate::app::use_user;
use crate::components::badges::{OrderStatusBadge, ProgressBar, StageStatusBadge};
use crate::components::form_feedback::{FormError, action_error, reset_on_success};
use crate::error::AppError;
use crate::model::{
    Contact, Order, OrderDetail, OrderStatus, ProductionStage, Role, Stage, StageStatus,
    format_date, format_timestamp,
};

#[component]
pub fn OrderDetailPage() -> impl IntoView {
    let params = use_params_map();
    let order_id = move || {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<Uuid>().ok())
    };
    view! {
        {move || match order_id() {
            Some(id) => view! { <OrderView id/> }.into_any(),
            None => view! {
                <section class="card narrow">
                    <h1>"Order not found"</h1>
                    <p class="error" role="alert">"That is not a valid order address. " <A href="/orders">"Back to orders"</A></p>
                </section>
            }.into_any(),
        }}
    }
}

#[component]
fn OrderView(id: Uuid) -> impl IntoView {
    let set_status = ServerAction::<SetOrderStatus>::new();
    let assign = ServerAction::<AssignFactory>::new();
    let advance = ServerAction::<AdvanceStage>::new();
    let progress = ServerAction::<SetStageProgress>::new();
    let detail = Resource::new(
        move || {
            (
                set_status.version().get(),
                assign.version().get(),
                advance.version().get(),
                progress.version().get(),
            )
        },
        move |_| get_order(id),
    );

    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading order…"</p> }>
            {move || detail.get().map(|result| match result {
                Err(e) => view! {
                    <section class="card narrow">
                        <h1>"Order unavailable"</h1>
                        <p class="error" role="alert">{e.to_string()}</p>
                        <A href="/orders">"Back to orders"</A>
                    </section>
                }.into_any(),
                Ok(detail) => view! {
                    <OrderHeader order=detail.order.clone() set_status assign/>
                    <div class="detail-grid">
                        <StageTimeline detail=detail.clone() advance progress/>
                        <UpdatesFeed order=detail.order.clone() stage_versions=Signal::derive(move || advance.version().get())/>
                    </div>
                    <OrderThread order=detail.order.clone()/>
                }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn OrderHeader(
    order: Order,
    set_status: ServerAction<SetOrderStatus>,
    assign: ServerAction<AssignFactory>,
) -> impl IntoView {
    let user = use_user();
    let status_error = action_error(set_status);
    let assign_error = action_error(assign);
    let actions: Vec<OrderStatus> = order
        .status
        .next()
        .iter()
        .copied()
        .filter(|to| OrderStatus::may_set(user.role, order.status, *to))
        .collect();
    let id = order.id;
    let can_assign = user.role == Role::Admin
        && matches!(order.status, OrderStatus::Pending | OrderStatus::Confirmed);
    view! {
        <Title text=format!("{} · Threadline", order.label())/>
        <section class="card order-head">
            <div class="order-title">
                <h1>{order.label()} " · " {order.product.clone()}</h1>
                <OrderStatusBadge status=order.status/>
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
                {actions.into_iter().map(|to| {
                    let label = match to {
                        OrderStatus::Cancelled => "Cancel order".to_string(),
                        OrderStatus::Delivered => "Confirm delivery".to_string(),
                        other => format!("Mark {}", other.label().to_lowercase()),
                    };
                    view! {
                        <button type="button"
                            class=if to == OrderStatus::Cancelled { "button danger" } else { "button" }
                            on:click=move |_| { set_status.dispatch(SetOrderStatus { id, status: to.as_str().into(), client_mutation_id: None }); }
                        >{label}</button>
                    }
                }).collect_view()}
                {can_assign.then(|| view! { <AssignFactoryForm order_id=id current=order.factory_id assign/> })}
            </div>
            <FormError message=status_error/>
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

#[component]
fn StageTimeline(
    detail: OrderDetail,
    advance: ServerAction<AdvanceStage>,
    progress: ServerAction<SetStageProgress>,
) -> impl IntoView {
    let user = use_user();
    let works = user.role != Role::Buyer;
    let order = detail.order.clone();
    let in_work = matches!(
        order.status,
        OrderStatus::Confirmed | OrderStatus::InProduction
    );
    let current = detail
        .stages
        .iter()
        .find(|s| s.status != StageStatus::Done)
        .cloned();
    let advance_error = action_error(advance);
    let progress_error = action_error(progress);
    let order_id = order.id;
    view! {
        <section class="card timeline" aria-label="Production stages">
            <h2>"Production"</h2>
            <ol class="stages">
                {detail.stages.into_iter().map(|stage| view! { <StageRow stage/> }).collect_view()}
            </ol>
            {(works && in_work).then(|| current.map(|stage| {
                let label = match stage.status {
                    StageStatus::Pending => format!("Start {}", stage.stage.label().to_lowercase()),
                    _ => format!("Complete {}", stage.stage.label().to_lowercase()),
                };
                let stage_id = stage.id;
                view! {
                    <div class="stage-actions">
                        <button type="button" class="button primary" data-testid="advance-stage"
                            on:click=move |_| { advance.dispatch(AdvanceStage { order_id, client_mutation_id: None }); }
                        >{label}</button>
                        {(stage.status == StageStatus::InProgress).then(|| view! {
                            <ActionForm action=progress attr:class="inline-form">
                                <input type="hidden" name="stage_id" value=stage_id.to_string()/>
                                <label class="inline">"Progress "
                                    <input name="progress" type="number" step="1" class="short" value=stage.progress.to_string()/>"%"
                                </label>
                                <button type="submit" class="button">"Update"</button>
                            </ActionForm>
                        })}
                    </div>
                }
            }))}
            <FormError message=advance_error/>
            <FormError message=progress_error/>
        </section>
    }
}

#[component]
fn StageRow(stage: ProductionStage) -> impl IntoView {
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
        <li class=format!("stage stage-row-{}", stage.status.as_str()) data-stage=stage.stage.as_str()>
            <span class="stage-marker" aria-hidden="true"></span>
            <div class="stage-body">
                <div class="stage-line">
                    <strong>{stage.stage.label()}</strong>
                    <StageStatusBadge status=stage.status/>
                </div>
                {(stage.status == StageStatus::InProgress).then(|| view! {
                    <div class="stage-progress"><ProgressBar percent=i32::from(stage.progress) label=format!("{} progress", stage.stage.label())/>{format!(" {}%", stage.progress)}</div>
                })}
                {when.map(|w| view! { <span class="muted small">{w}</span> })}
            </div>
        </li>
    }
}

#[component]
fn UpdatesFeed(order: Order, stage_versions: Signal<usize>) -> impl IntoView {
    let user = use_user();
    let post = ServerAction::<PostOrderUpdate>::new();
    let order_id = order.id;
    let updates = Resource::new(
        move || (post.version().get(), stage_versions.get()),
        move |_| list_order_updates(order_id),
    );
    let error = action_error(post);
    let can_post = user.role != Role::Buyer && order.status != OrderStatus::Cancelled;
    let form = NodeRef::<leptos::html::Form>::new();
    reset_on_success(post, form);
    view! {
        <section class="card feed" aria-label="Production updates">
            <h2>"Updates"</h2>
            {can_post.then(|| view! {
                <ActionForm action=post node_ref=form attr:class="stack">
                    <input type="hidden" name="order_id" value=order_id.to_string()/>
                    <textarea name="text" rows="2" placeholder="Share a production update" aria-label="Production update"></textarea>
                    <div class="row">
                        <select name="stage" aria-label="Stage">
                            <option value="">"Any stage"</option>
                            {Stage::ALL.iter().map(|s| view! { <option value=s.as_str()>{s.label()}</option> }).collect_view()}
                        </select>
                        <button type="submit" class="button primary">"Post update"</button>
                    </div>
                    <FormError message=error/>
                </ActionForm>
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || updates.get().map(|result| match result {
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No updates yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <ul class="feed-list">
                            {list.into_iter().map(|u| view! {
                                <li class="feed-item">
                                    <div class="feed-meta">
                                        <strong>{u.author_name.clone()}</strong>
                                        {u.stage.as_deref().and_then(|s| s.parse::<Stage>().ok()).map(|s| view! { <span class="tag">{s.label()}</span> })}
                                        <span class="muted small">{format_timestamp(u.created_at)}</span>
                                    </div>
                                    <p>{u.text.clone()}</p>
                                </li>
                            }).collect_view()}
                        </ul>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
}

/// Picks who a message about this order goes to by default: the other side.
fn default_recipient(order: &Order, role: Role, contacts: &[Contact]) -> Option<Uuid> {
    let buyer = contacts.iter().find(|c| c.id == order.buyer_id);
    let factory = contacts.iter().find(|c| {
        c.role == Role::Factory && c.factory_name.is_some() && c.factory_name == order.factory_name
    });
    let admin = contacts.iter().find(|c| c.role == Role::Admin);
    match role {
        Role::Buyer => factory.or(admin),
        Role::Factory | Role::Admin => buyer.or(admin),
    }
    .map(|c| c.id)
}

#[component]
fn OrderThread(order: Order) -> impl IntoView {
    let user = use_user();
    let send = ServerAction::<SendMessage>::new();
    let order_id = order.id;
    let messages = Resource::new(
        move || send.version().get(),
        move |_| order_messages(order_id),
    );
    let contacts = Resource::new(|| (), |_| list_contacts());
    let error = action_error(send);
    let form = NodeRef::<leptos::html::Form>::new();
    reset_on_success(send, form);
    let me = user.id;
    let role = user.role;
    view! {
        <section class="card thread" aria-label="Messages about this order">
            <h2>"Messages"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || messages.get().map(|result| match result {
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No messages about this order yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <ul class="thread-list">
                            {list.into_iter().map(|m| {
                                let mine = m.sender_id == me;
                                view! {
                                    <li class=if mine { "bubble mine" } else { "bubble" }>
                                        <div class="bubble-meta">
                                            <strong>{m.sender_name.clone()}</strong>" → "{m.recipient_name.clone()}
                                            <span class="muted small">{format_timestamp(m.created_at)}</span>
                                        </div>
                                        <p>{m.body.clone()}</p>
                                        {mine.then(|| view! { <span class="receipt small">{if m.read_at.is_some() { "Read" } else { "Sent" }}</span> })}
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any(),
                })}
            </Transition>
            <ActionForm action=send node_ref=form attr:class="stack">
                <input type="hidden" name="order_id" value=order_id.to_string()/>
                <Transition fallback=|| ()>
                    {
                        let order = order.clone();
                        move || contacts.get().map(|result| -> Result<_, AppError> {
                            let list = result?;
                            let chosen = default_recipient(&order, role, &list);
                            Ok(view! {
                                <label class="inline" for="thread-to">"To"</label>
                                <select id="thread-to" name="recipient_id" required>
                                        {list.into_iter().map(|c| {
                                            let label = match &c.factory_name {
                                                Some(f) => format!("{} ({})", c.name, f),
                                                None => format!("{} ({})", c.name, c.role.label()),
                                            };
                                            view! { <option value=c.id.to_string() selected=Some(c.id) == chosen>{label}</option> }
                                        }).collect_view()}
                                </select>
                            })
                        })
                    }
                </Transition>
                <textarea name="body" rows="2" placeholder="Write a message about this order" aria-label="Message"></textarea>
                <FormError message=error/>
                <button type="submit" class="button primary">"Send"</button>
            </ActionForm>
        </section>
    }
}
