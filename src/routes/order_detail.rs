use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use uuid::Uuid;

use crate::api::messages::{list_contacts, order_messages, send_message};
use crate::api::orders::{
    AssignFactory, SetStageProgress, advance_stage, get_order, list_factories, list_order_updates,
    post_order_update, set_order_status,
};
use crate::app::use_user;
use crate::components::badges::{OrderStatusBadge, ProgressBar, StageStatusBadge};
use crate::components::form_feedback::{FormError, action_error};
use crate::components::optimistic::Optimistic;
use crate::model::{
    Contact, Order, OrderDetail, OrderStatus, ProductionStage, Role, Stage, StageStatus,
    format_date, format_timestamp,
};
use crate::realtime::client::{Listen, use_realtime};

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

/// The order's own optimistic mutations, shared by its parts, and the
/// resource they refetch once the server has accepted them.
#[derive(Clone, Copy)]
struct OrderMutations {
    status: Optimistic<OrderStatus>,
    /// A stage moving to a status.
    advance: Optimistic<(Uuid, StageStatus)>,
    detail: Resource<Result<OrderDetail, crate::error::AppError>>,
}

#[component]
fn OrderView(id: Uuid) -> impl IntoView {
    let status: Optimistic<OrderStatus> = Optimistic::new();
    let advance: Optimistic<(Uuid, StageStatus)> = Optimistic::new();
    let assign = ServerAction::<AssignFactory>::new();
    let progress = ServerAction::<SetStageProgress>::new();
    let order_live = use_realtime(
        Listen::table("orders").filter(format!("id=eq.{id}")),
        move |event| status.confirm_from(event),
    );
    let stages_live = use_realtime(
        Listen::table("production_stages").filter(format!("order_id=eq.{id}")),
        move |event| advance.confirm_from(event),
    );
    let detail = Resource::new(
        move || {
            (
                assign.version().get(),
                progress.version().get(),
                order_live.version.get(),
                stages_live.version.get(),
            )
        },
        move |_| get_order(id),
    );
    let mutations = OrderMutations {
        status,
        advance,
        detail,
    };
    // whatever the refetched data shows is confirmed
    Effect::new(move |_| {
        if let Some(Ok(detail)) = detail.get() {
            mutations.status.settle_confirmed(
                &detail
                    .order
                    .client_mutation_id
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
            let stage_ids: Vec<Uuid> = detail
                .stages
                .iter()
                .filter_map(|s| s.client_mutation_id)
                .collect();
            mutations.advance.settle_confirmed(&stage_ids);
        }
    });
    provide_context(mutations);

    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading order…"</p> }>
            <OrderBody id assign progress/>
        </Transition>
    }
}

/// The loaded order. A change refetches the order and redraws its header
/// and stage timeline in place; the updates feed and the message thread stay
/// (with their subscriptions, and whatever the user is typing).
#[component]
fn OrderBody(
    id: Uuid,
    assign: ServerAction<AssignFactory>,
    progress: ServerAction<SetStageProgress>,
) -> impl IntoView {
    let detail = expect_context::<OrderMutations>().detail;
    // only whether the order can be shown at all replaces the whole page
    let outcome = Memo::new(move |_| {
        detail
            .get()
            .map(|result| result.map(|_| ()).map_err(|e| e.to_string()))
    });
    let order = Memo::new(move |_| detail.get().and_then(Result::ok).map(|d| d.order));
    move || {
        outcome.get().map(|outcome| match outcome {
            Err(e) => view! {
                <section class="card narrow">
                    <h1>"Order unavailable"</h1>
                    <p class="error" role="alert">{e}</p>
                    <A href="/orders">"Back to orders"</A>
                </section>
            }
            .into_any(),
            Ok(()) => view! {
                {move || order.get().map(|order| view! { <OrderHeader order assign/> })}
                <div class="detail-grid">
                    {move || detail.get().and_then(Result::ok).map(|detail| view! { <StageTimeline detail progress/> })}
                    <UpdatesFeed order_id=id order/>
                </div>
                <OrderThread order_id=id order/>
            }
            .into_any(),
        })
    }
}

#[component]
fn OrderHeader(order: Order, assign: ServerAction<AssignFactory>) -> impl IntoView {
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
            move |mutation| set_order_status(id, to.as_str().into(), Some(mutation)),
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
                            other => format!("Mark {}", other.label().to_lowercase()),
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

/// The stage a click on "advance" moves, and to what.
fn next_move(stages: &[ProductionStage]) -> Option<(Uuid, StageStatus, String)> {
    let stage = stages.iter().find(|s| s.status != StageStatus::Done)?;
    Some(match stage.status {
        StageStatus::Pending => (
            stage.id,
            StageStatus::InProgress,
            format!("Start {}", stage.stage.label().to_lowercase()),
        ),
        _ => (
            stage.id,
            StageStatus::Done,
            format!("Complete {}", stage.stage.label().to_lowercase()),
        ),
    })
}

#[component]
fn StageTimeline(detail: OrderDetail, progress: ServerAction<SetStageProgress>) -> impl IntoView {
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
                                    move |mutation| advance_stage(order_id, Some(mutation)),
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

/// Reads a form field by name.
fn field(form: &NodeRef<leptos::html::Form>, name: &str) -> String {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        form.get_untracked()
            .and_then(|form| form.elements().named_item(name))
            .and_then(|element| {
                element
                    .dyn_ref::<web_sys::HtmlTextAreaElement>()
                    .map(|t| t.value())
                    .or_else(|| {
                        element
                            .dyn_ref::<web_sys::HtmlSelectElement>()
                            .map(|s| s.value())
                    })
                    .or_else(|| {
                        element
                            .dyn_ref::<web_sys::HtmlInputElement>()
                            .map(|i| i.value())
                    })
            })
            .unwrap_or_default()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (form, name);
        String::new()
    }
}

fn clear_text(form: &NodeRef<leptos::html::Form>) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        if let Some(text) = form
            .get_untracked()
            .and_then(|form| {
                form.elements()
                    .named_item("text")
                    .or_else(|| form.elements().named_item("body"))
            })
            .and_then(|element| element.dyn_into::<web_sys::HtmlTextAreaElement>().ok())
        {
            text.set_value("");
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = form;
}

#[derive(Clone, Debug, PartialEq)]
struct DraftUpdate {
    text: String,
    stage: Option<Stage>,
}

#[component]
fn UpdatesFeed(order_id: Uuid, order: Memo<Option<Order>>) -> impl IntoView {
    let user = use_user();
    let posts: Optimistic<DraftUpdate> = Optimistic::new();
    let live = use_realtime(
        Listen::table("order_updates")
            .event("INSERT")
            .filter(format!("order_id=eq.{order_id}")),
        move |event| posts.confirm_from(event),
    );
    let updates = Resource::new(
        move || live.version.get(),
        move |_| list_order_updates(order_id),
    );
    Effect::new(move |_| {
        if let Some(Ok(list)) = updates.get() {
            posts.settle_confirmed(
                &list
                    .iter()
                    .filter_map(|u| u.client_mutation_id)
                    .collect::<Vec<_>>(),
            );
        }
    });
    let role = user.role;
    let can_post = Memo::new(move |_| {
        role != Role::Buyer
            && order.with(|o| {
                o.as_ref()
                    .is_some_and(|o| o.status != OrderStatus::Cancelled)
            })
    });
    // without JavaScript the form posts to the server function itself
    let post_path = <crate::api::orders::PostOrderUpdate as leptos::server_fn::ServerFn>::PATH;
    let form = NodeRef::<leptos::html::Form>::new();
    let author = user.name.clone();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = field(&form, "text");
        let stage = field(&form, "stage").parse::<Stage>().ok();
        clear_text(&form);
        let draft = DraftUpdate {
            text: text.clone(),
            stage,
        };
        posts.run(
            draft,
            move |mutation| async move {
                post_order_update(
                    order_id,
                    text,
                    stage.map(|s| s.as_str().to_string()),
                    Some(mutation),
                )
                .await
                .map(|_| ())
            },
            move || updates.refetch(),
        );
    };
    view! {
        <section class="card feed" aria-label="Production updates">
            <h2>"Updates"</h2>
            <Show when=move || can_post.get()>
                <form node_ref=form class="stack" method="post" action=post_path on:submit=submit>
                    <input type="hidden" name="order_id" value=order_id.to_string()/>
                    <textarea name="text" rows="2" placeholder="Share a production update" aria-label="Production update"></textarea>
                    <div class="row">
                        <select name="stage" aria-label="Stage">
                            <option value="">"Any stage"</option>
                            {Stage::ALL.iter().map(|s| view! { <option value=s.as_str()>{s.label()}</option> }).collect_view()}
                        </select>
                        <button type="submit" class="button primary">"Post update"</button>
                    </div>
                    <FormError message=Signal::derive(move || posts.error.get())/>
                </form>
            </Show>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || updates.get().map(|result| {
                    let author = author.clone();
                    match result {
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                        Ok(list) => {
                            let confirmed: Vec<Uuid> = list.iter().filter_map(|u| u.client_mutation_id).collect();
                            let drafts = posts.unconfirmed(&confirmed);
                            if list.is_empty() && drafts.is_empty() {
                                return view! { <p class="empty">"No updates yet."</p> }.into_any();
                            }
                            view! {
                                <ul class="feed-list">
                                    {drafts.into_iter().rev().map(|p| view! {
                                        <li class="feed-item pending" data-pending="true">
                                            <div class="feed-meta">
                                                <strong>{author.clone()}</strong>
                                                {p.value.stage.map(|s| view! { <span class="tag">{s.label()}</span> })}
                                                <span class="pending-note">"posting…"</span>
                                            </div>
                                            <p>{p.value.text.clone()}</p>
                                        </li>
                                    }).collect_view()}
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
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

/// The two sides of an order: its buyer and the name of its factory.
type Parties = (Uuid, Option<String>);

/// Who a message about this order goes to by default: the other side.
fn default_recipient(parties: &Parties, role: Role, contacts: &[Contact]) -> Option<Uuid> {
    let (buyer_id, factory_name) = parties;
    let buyer = contacts.iter().find(|c| c.id == *buyer_id);
    let factory = contacts.iter().find(|c| {
        c.role == Role::Factory && c.factory_name.is_some() && c.factory_name == *factory_name
    });
    let admin = contacts.iter().find(|c| c.role == Role::Admin);
    match role {
        Role::Buyer => factory.or(admin),
        Role::Factory | Role::Admin => buyer.or(admin),
    }
    .map(|c| c.id)
}

#[component]
fn OrderThread(order_id: Uuid, order: Memo<Option<Order>>) -> impl IntoView {
    let user = use_user();
    let sends: Optimistic<String> = Optimistic::new();
    // the default recipient changes only when the order's parties do
    let parties = Memo::new(move |_| {
        order.with(|o| o.as_ref().map(|o| (o.buyer_id, o.factory_name.clone())))
    });
    let live = use_realtime(
        Listen::table("messages").filter(format!("order_id=eq.{order_id}")),
        move |event| sends.confirm_from(event),
    );
    let messages = Resource::new(
        move || live.version.get(),
        move |_| order_messages(order_id),
    );
    Effect::new(move |_| {
        if let Some(Ok(list)) = messages.get() {
            sends.settle_confirmed(
                &list
                    .iter()
                    .filter_map(|m| m.client_mutation_id)
                    .collect::<Vec<_>>(),
            );
        }
    });
    let contacts = Resource::new(|| (), |_| list_contacts());
    let form = NodeRef::<leptos::html::Form>::new();
    let send_path = <crate::api::messages::SendMessage as leptos::server_fn::ServerFn>::PATH;
    let me = user.id;
    let my_name = user.name.clone();
    let role = user.role;
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = field(&form, "body");
        let recipient = field(&form, "recipient_id");
        if recipient.is_empty() {
            sends
                .error
                .set(Some("choose who to send the message to".into()));
            return;
        }
        clear_text(&form);
        sends.run(
            body.clone(),
            move |mutation| async move {
                send_message(recipient, Some(order_id.to_string()), body, Some(mutation))
                    .await
                    .map(|_| ())
            },
            move || messages.refetch(),
        );
    };
    view! {
        <section class="card thread" aria-label="Messages about this order">
            <h2>"Messages"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || messages.get().map(|result| {
                    let my_name = my_name.clone();
                    match result {
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                        Ok(list) => {
                            let confirmed: Vec<Uuid> = list.iter().filter_map(|m| m.client_mutation_id).collect();
                            let drafts = sends.unconfirmed(&confirmed);
                            if list.is_empty() && drafts.is_empty() {
                                return view! { <p class="empty">"No messages about this order yet."</p> }.into_any();
                            }
                            view! {
                                <ul class="thread-list">
                                    {list.into_iter().map(|m| {
                                        let mine = m.sender_id == me;
                                        view! {
                                            <li class=if mine { "bubble mine" } else { "bubble" } data-message-id=m.id.to_string()>
                                                <div class="bubble-meta">
                                                    <strong>{m.sender_name.clone()}</strong>" → "{m.recipient_name.clone()}
                                                    <span class="muted small">{format_timestamp(m.created_at)}</span>
                                                </div>
                                                <p>{m.body.clone()}</p>
                                                {mine.then(|| view! { <span class="receipt small">{if m.read_at.is_some() { "Read" } else { "Sent" }}</span> })}
                                            </li>
                                        }
                                    }).collect_view()}
                                    {drafts.into_iter().map(|p| view! {
                                        <li class="bubble mine pending" data-pending="true">
                                            <div class="bubble-meta"><strong>{my_name.clone()}</strong></div>
                                            <p>{p.value.clone()}</p>
                                            <span class="receipt small pending-note">"Sending…"</span>
                                        </li>
                                    }).collect_view()}
                                </ul>
                            }.into_any()
                        }
                    }
                })}
            </Transition>
            <form node_ref=form class="stack" method="post" action=send_path on:submit=submit>
                <input type="hidden" name="order_id" value=order_id.to_string()/>
                <Transition fallback=|| ()>
                    {
                        move || contacts.get().and_then(Result::ok).map(|list| {
                            let chosen = parties.with(|p| p.as_ref().and_then(|p| default_recipient(p, role, &list)));
                            view! {
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
                            }
                        })
                    }
                </Transition>
                <textarea name="body" rows="2" placeholder="Write a message about this order" aria-label="Message"></textarea>
                <FormError message=Signal::derive(move || sends.error.get())/>
                <button type="submit" class="button primary">"Send"</button>
            </form>
        </section>
    }
}
