//! The production updates feed: live, with optimistic posts.

use leptos::prelude::*;
use threadline_realtime::client::{Listen, use_realtime};
use uuid::Uuid;

use super::form::{clear_text, field};
use crate::api::orders::{list_order_updates, post_order_update};
use crate::app::use_user;
use crate::components::form_feedback::FormError;
use crate::components::optimistic::Optimistic;
use crate::components::paging::use_paged;
use crate::model::{Order, OrderStatus, OrderUpdate, Page, Role, Stage, format_timestamp};
use crate::realtime::Table;

#[derive(Clone, Debug, PartialEq)]
struct DraftUpdate {
    text: String,
    stage: Option<Stage>,
}

#[component]
pub(super) fn UpdatesFeed(order_id: Uuid, order: Memo<Option<Order>>) -> impl IntoView {
    let user = use_user();
    let posts: Optimistic<DraftUpdate> = Optimistic::new();
    let live = use_realtime(
        Listen::table(Table::OrderUpdates)
            .event("INSERT")
            .filter(format!("order_id=eq.{order_id}")),
        move |event| posts.confirm_from(event),
    );
    let list = use_paged(
        || (),
        move || live.version.get(),
        move |(), through, more| list_order_updates(order_id, through, more),
        |u: &OrderUpdate| u.key().to_string(),
    );
    let updates = list.page;
    posts.settle_from(updates, |page| {
        page.items
            .iter()
            .filter_map(|u| u.client_mutation_id)
            .collect()
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
                        Ok(Page { items, more }) => {
                            let len = items.len();
                            let confirmed: Vec<Uuid> = items.iter().filter_map(|u| u.client_mutation_id).collect();
                            let drafts = posts.unconfirmed(&confirmed);
                            if items.is_empty() && drafts.is_empty() {
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
                                    {items.into_iter().map(|u| view! {
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
                                {list.foot(len, more, "Load older updates")}
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}
