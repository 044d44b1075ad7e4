//! The order's message thread: live, with optimistic sends.

use leptos::prelude::*;
use threadline_realtime::client::{Listen, use_realtime};
use uuid::Uuid;

use super::OrderRoom;
use super::form::{clear_text, field};
use crate::api::messages::{list_contacts, order_messages, send_message};
use crate::app::use_user;
use crate::components::form_feedback::FormError;
use crate::components::optimistic::Optimistic;
use crate::components::paging::use_paged;
use crate::components::presence::{Typing, TypingNote};
use crate::model::{Contact, Message, Order, Page, Role, format_timestamp};
use crate::realtime::Table;

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
pub(super) fn OrderThread(order_id: Uuid, order: Memo<Option<Order>>) -> impl IntoView {
    let user = use_user();
    let sends: Optimistic<String> = Optimistic::new();
    // the default recipient changes only when the order's parties do
    let parties = Memo::new(move |_| {
        order.with(|o| o.as_ref().map(|o| (o.buyer_id, o.factory_name.clone())))
    });
    let live = use_realtime(
        Listen::table(Table::Messages).filter(format!("order_id=eq.{order_id}")),
        move |event| sends.confirm_from(event),
    );
    // newest first from the server; shown oldest first, older ones on demand
    let list = use_paged(
        || (),
        move || live.version.get(),
        move |(), through, more| order_messages(order_id, through, more),
        |m: &Message| m.key().to_string(),
    );
    let messages = list.page;
    sends.settle_from(messages, |page| {
        page.items
            .iter()
            .filter_map(|m| m.client_mutation_id)
            .collect()
    });
    let contacts = Resource::new(|| (), |_| list_contacts());
    let form = NodeRef::<leptos::html::Form>::new();
    let send_path = <crate::api::messages::SendMessage as leptos::server_fn::ServerFn>::PATH;
    let me = user.id;
    let my_name = user.name.clone();
    let role = user.role;
    let OrderRoom { room, typists } = expect_context::<OrderRoom>();
    let typing = Typing::new();
    let who = serde_json::json!({"user_id": me, "name": my_name.clone()});
    let told = who.clone();
    let on_input = move |ev: leptos::ev::Event| {
        if event_target_value(&ev).trim().is_empty() {
            typing.stopped();
            room.send("stopped", told.clone());
        } else if typing.keystroke() {
            room.send("typing", told.clone());
        }
    };
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
        typing.stopped();
        room.send("stopped", who.clone());
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
                        Ok(Page { items, more }) => {
                            let len = items.len();
                            let confirmed: Vec<Uuid> = items.iter().filter_map(|m| m.client_mutation_id).collect();
                            let drafts = sends.unconfirmed(&confirmed);
                            if items.is_empty() && drafts.is_empty() {
                                return view! { <p class="empty">"No messages about this order yet."</p> }.into_any();
                            }
                            view! {
                                {list.foot(len, more, "Load older messages")}
                                <ul class="thread-list">
                                    {items.into_iter().rev().map(|m| {
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
                <textarea name="body" rows="2" placeholder="Write a message about this order" aria-label="Message" on:input=on_input></textarea>
                <TypingNote names=Signal::derive(move || typists.names(me))/>
                <FormError message=Signal::derive(move || sends.error.get())/>
                <button type="submit" class="button primary">"Send"</button>
            </form>
        </section>
    }
}
