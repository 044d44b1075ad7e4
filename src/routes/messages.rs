use crate::components::optimistic::Optimistic;
use crate::realtime::Table;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::A;
use leptos_router::hooks::use_query_map;
use threadline_realtime::client::{
    ConnectionStatus, Listen, use_connection, use_realtime, use_room,
};
use uuid::Uuid;

use crate::api::messages::{
    SendMessage, conversation_messages, list_contacts, list_conversations, list_messages,
    mark_message_read, online_contacts, typing_to,
};
use crate::api::orders::list_orders;
use crate::app::use_user;
use crate::components::form_feedback::{FormError, action_error, reset_on_success};
use crate::components::paging::use_paged;
use crate::components::presence::{Typing, TypingNote, Typists};
use crate::model::{Conversation, Folder, Message, Page, format_timestamp};

/// The communication center: inbox, sent and compose.
#[component]
pub fn MessagesPage() -> impl IntoView {
    let query = use_query_map();
    let tab = move || query.read().get("tab").unwrap_or_else(|| "inbox".into());
    let send = ServerAction::<SendMessage>::new();
    // a message being marked read, shown read at once
    let reads: Optimistic<Uuid> = Optimistic::new();
    // every message to or from me (the server only sends those)
    let live = use_realtime(Listen::table(Table::Messages), move |event| {
        reads.confirm_from(event)
    });
    // who is writing to me: their compose tells my own room
    let me = use_user().id;
    let typists = Typists::new();
    use_room(format!("user:{me}"), move |event, payload| {
        typists.hear(event, payload)
    });
    let writing_to_me = Signal::derive(move || {
        typists
            .names(me)
            .into_iter()
            .map(|name| format!("{name} (to you)"))
            .collect::<Vec<_>>()
    });

    view! {
        <Title text="Messages · Threadline"/>
        <div class="page-head"><h1>"Messages"</h1></div>
        <nav class="tabs" aria-label="Folders">
            <TabLink name="conversations" label="Conversations" current=Signal::derive(tab)/>
            <TabLink name="inbox" label="Inbox" current=Signal::derive(tab)/>
            <TabLink name="sent" label="Sent" current=Signal::derive(tab)/>
            <TabLink name="compose" label="Compose" current=Signal::derive(tab)/>
        </nav>
        <TypingNote names=writing_to_me/>
        {move || match tab().as_str() {
            "sent" => view! { <FolderList folder=Folder::Sent send reads version=live.version/> }.into_any(),
            "compose" => view! { <Compose send/> }.into_any(),
            "conversations" => view! { <Conversations version=live.version/> }.into_any(),
            "conversation" => {
                let with = query.read().get("with").and_then(|w| w.parse::<Uuid>().ok());
                let order = query.read().get("order").map(|o| o.parse::<Uuid>());
                match (with, order) {
                    (Some(with), None) => view! { <ConversationView with order=None send reads version=live.version/> }.into_any(),
                    (Some(with), Some(Ok(order))) => view! { <ConversationView with order=Some(order) send reads version=live.version/> }.into_any(),
                    _ => view! { <p class="error" role="alert">"This conversation link is not valid: it must name a person (and may name an order) by id."</p> }.into_any(),
                }
            }
            _ => view! { <FolderList folder=Folder::Inbox send reads version=live.version/> }.into_any(),
        }}
    }
}

#[component]
fn TabLink(name: &'static str, label: &'static str, current: Signal<String>) -> impl IntoView {
    let selected = move || current.get() == name;
    view! {
        <A href=format!("/messages?tab={name}") attr:class=move || if selected() { "tab selected" } else { "tab" }
            attr:aria-current=move || selected().then_some("page")>{label}</A>
    }
}

#[component]
fn FolderList(
    folder: Folder,
    send: ServerAction<SendMessage>,
    reads: Optimistic<Uuid>,
    version: ReadSignal<u64>,
) -> impl IntoView {
    let list = use_paged(
        move || folder,
        move || (send.version().get() as u64).wrapping_add(version.get()),
        list_messages,
        |m: &Message| m.key().to_string(),
    );
    let messages = list.page;
    reads.settle_from(messages, |page| {
        page.items
            .iter()
            .filter(|m| m.read_at.is_some())
            .filter_map(|m| m.client_mutation_id)
            .collect()
    });
    let sent_ok = move || folder == Folder::Sent && matches!(send.value().get(), Some(Ok(_)));
    view! {
        <Show when=sent_ok><p class="success" role="status">"Message sent."</p></Show>
        <FormError message=Signal::derive(move || reads.error.get())/>
        <Transition fallback=|| view! { <p class="muted">"Loading messages…"</p> }>
            {move || messages.get().map(|result| match result {
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                Ok(page) if page.items.is_empty() => view! {
                    <p class="empty">{if folder == Folder::Inbox { "Your inbox is empty." } else { "You have not sent any messages." }}</p>
                }.into_any(),
                Ok(Page { items, more }) => {
                    let foot = list.foot(items.len(), more, "Load older messages");
                    view! {
                        <ul class="message-list" data-folder=folder.as_str()>
                            {items.into_iter().map(|m| view! { <MessageRow message=m folder reads refetch=move || messages.refetch()/> }).collect_view()}
                        </ul>
                        {foot}
                    }.into_any()
                }
            })}
        </Transition>
    }
}

/// Messages grouped by the other person and the order, newest first.
#[component]
fn Conversations(version: ReadSignal<u64>) -> impl IntoView {
    let list = use_paged(
        || (),
        move || version.get(),
        |(), through, more| list_conversations(through, more),
        |c: &Conversation| c.key().to_string(),
    );
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading conversations…"</p> }>
            {move || list.page.get().map(|result| match result {
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                Ok(page) if page.items.is_empty() => view! { <p class="empty">"No conversations yet."</p> }.into_any(),
                Ok(Page { items, more }) => { let foot = list.foot(items.len(), more, "Load more conversations"); view! {
                    <ul class="conversation-list" aria-label="Conversations">
                        {items.into_iter().map(|c| {
                            let href = match c.order_id {
                                Some(order) => format!("/messages?tab=conversation&with={}&order={order}", c.other_id),
                                None => format!("/messages?tab=conversation&with={}", c.other_id),
                            };
                            let about = c.order_number.map(|n| format!("PO-{n}"));
                            let preview = if c.last_from_me { format!("You: {}", c.last_body) } else { c.last_body.clone() };
                            view! {
                                <li class="conversation" class:unread={c.unread > 0} data-other-id=c.other_id.to_string()>
                                    <A href=href attr:class="conversation-link">
                                        <strong>{c.other_name.clone()}</strong>
                                        {about.map(|a| view! { <span class="tag">{a}</span> })}
                                        <span class="muted small">{format_timestamp(c.last_at)}</span>
                                        {(c.unread > 0).then(|| view! {
                                            <span class="badge unread-count" aria-label=format!("{} unread", c.unread)>{c.unread}</span>
                                        })}
                                        <span class="preview">{preview}</span>
                                        <span class="muted small">{format!("{} messages", c.total)}</span>
                                    </A>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                    {foot}
                }.into_any() }
            })}
        </Transition>
    }
}

/// One conversation, oldest message at the top; older ones load on demand.
#[component]
fn ConversationView(
    with: Uuid,
    order: Option<Uuid>,
    send: ServerAction<SendMessage>,
    reads: Optimistic<Uuid>,
    version: ReadSignal<u64>,
) -> impl IntoView {
    let me = use_user().id;
    let list = use_paged(
        || (),
        move || (send.version().get() as u64).wrapping_add(version.get()),
        move |(), through, more| conversation_messages(with, order, through, more),
        |m: &Message| m.key().to_string(),
    );
    let messages = list.page;
    reads.settle_from(messages, |page| {
        page.items
            .iter()
            .filter(|m| m.read_at.is_some())
            .filter_map(|m| m.client_mutation_id)
            .collect()
    });
    let form = NodeRef::<leptos::html::Form>::new();
    reset_on_success(send, form);
    view! {
        <p><A href="/messages?tab=conversations">"← All conversations"</A></p>
        <FormError message=Signal::derive(move || reads.error.get())/>
        <Transition fallback=|| view! { <p class="muted">"Loading messages…"</p> }>
            {move || messages.get().map(|result| match result {
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                Ok(Page { items, more }) => view! {
                    {list.foot(items.len(), more, "Load older messages")}
                    <ul class="message-list" data-folder="conversation">
                        {items.into_iter().rev().map(|m| {
                            let folder = if m.recipient_id == me { Folder::Inbox } else { Folder::Sent };
                            view! { <MessageRow message=m folder reads refetch=move || messages.refetch()/> }
                        }).collect_view()}
                    </ul>
                }.into_any(),
            })}
        </Transition>
        <ActionForm action=send node_ref=form attr:class="stack reply">
            <input type="hidden" name="recipient_id" value=with.to_string()/>
            <input type="hidden" name="order_id" value=order.map(|o| o.to_string()).unwrap_or_default()/>
            <label>"Reply"<textarea name="body" rows="3" maxlength="5000" required></textarea></label>
            <button type="submit" class="button primary">"Send"</button>
        </ActionForm>
    }
}

#[component]
fn MessageRow(
    message: Message,
    folder: Folder,
    reads: Optimistic<Uuid>,
    refetch: impl Fn() + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let id = message.id;
    let inbox = folder == Folder::Inbox;
    let confirmed_read = message.read_at.is_some();
    let pending_read = move || reads.all().iter().any(|p| p.value == id);
    let unread = move || !confirmed_read && !pending_read();
    let who = if inbox {
        format!("From {}", message.sender_name)
    } else {
        format!("To {}", message.recipient_name)
    };
    let mark = move |_| {
        let refetch = refetch.clone();
        reads.run(
            id,
            move |mutation| mark_message_read(id, Some(mutation)),
            refetch,
        );
    };
    view! {
        <li class="message" class:unread=move || inbox && unread() data-message-id=id.to_string()>
            <div class="message-meta">
                <strong>{who}</strong>
                {message.order_id.zip(message.order_number).map(|(order_id, number)| view! {
                    <A href=format!("/orders/{order_id}") attr:class="tag">{format!("PO-{number}")}</A>
                })}
                <span class="muted small">{format_timestamp(message.created_at)}</span>
            </div>
            <p class="message-body">{message.body.clone()}</p>
            <div class="message-foot">
                {if inbox {
                    view! {
                        <Show when=unread fallback=move || pending_read().then(|| view! { <span class="pending-note">"marking read…"</span> })>
                            <button type="button" class="link-button" on:click=mark.clone()>"Mark read"</button>
                        </Show>
                    }.into_any()
                } else {
                    view! {
                        <span class="receipt small">{match message.read_at {
                            Some(at) => format!("Read {}", format_timestamp(at)),
                            None => "Sent · not read yet".to_string(),
                        }}</span>
                    }.into_any()
                }}
            </div>
        </li>
    }
}

/// Asks again who is online every so often, and whenever the page's
/// connection comes back.
fn online_now() -> Resource<Result<Vec<Uuid>, crate::error::AppError>> {
    let tick = RwSignal::new(0u32);
    #[cfg(feature = "hydrate")]
    {
        let handle = set_interval_with_handle(
            move || tick.update(|t| *t = t.wrapping_add(1)),
            std::time::Duration::from_secs(15),
        );
        on_cleanup(move || {
            if let Ok(handle) = handle {
                handle.clear();
            }
        });
    }
    let live = use_connection().map(|c| c.status);
    Resource::new(
        move || {
            let connected = live.map(|s| s.with(|s| *s == ConnectionStatus::Live));
            (tick.get(), connected)
        },
        |_| online_contacts(),
    )
}

#[component]
fn Compose(send: ServerAction<SendMessage>) -> impl IntoView {
    let contacts = Resource::new(|| (), |_| list_contacts());
    let online = online_now();
    let recipient = RwSignal::new(String::new());
    let typing = Typing::new();
    let tell = move |typing_now: bool| {
        if let Ok(to) = recipient.get_untracked().parse::<Uuid>() {
            leptos::task::spawn_local(async move {
                // a notice that does not get through is not worth an error
                let _ = typing_to(to, typing_now).await;
            });
        }
    };
    let on_input = move |ev: leptos::ev::Event| {
        if event_target_value(&ev).trim().is_empty() {
            typing.stopped();
            tell(false);
        } else if typing.keystroke() {
            tell(true);
        }
    };
    let orders = Resource::new(|| (), |_| list_orders(None, None, None, false));
    let error = action_error(send);
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if matches!(send.value().get(), Some(Ok(_))) {
            navigate("/messages?tab=sent", Default::default());
        }
    });
    view! {
        <section class="card compose">
            <ActionForm action=send attr:class="stack">
                <label for="compose-to">"To"</label>
                <select id="compose-to" name="recipient_id" required
                    prop:value=move || recipient.get()
                    on:change=move |ev| { typing.stopped(); recipient.set(event_target_value(&ev)) }>
                        <option value="">"Choose a person…"</option>
                        <Transition fallback=|| ()>
                            {move || contacts.get().and_then(Result::ok).map(|list| list.into_iter().map(|c| {
                                let label = match &c.factory_name {
                                    Some(f) => format!("{} ({})", c.name, f),
                                    None => format!("{} ({})", c.name, c.role.label()),
                                };
                                view! { <option value=c.id.to_string()>{label}</option> }
                            }).collect_view())}
                        </Transition>
                </select>
                <label for="compose-order">"About order (optional)"</label>
                <select id="compose-order" name="order_id">
                        <option value="">"No order"</option>
                        <Transition fallback=|| ()>
                            {move || orders.get().and_then(Result::ok).map(|page| page.items.into_iter().map(|o| view! {
                                <option value=o.id.to_string()>{format!("{} · {}", o.label(), o.product)}</option>
                            }).collect_view())}
                        </Transition>
                </select>
                <Transition fallback=|| ()>
                    {move || contacts.get().and_then(Result::ok).map(|list| {
                        let online_ids = online.get().and_then(Result::ok).unwrap_or_default();
                        view! {
                            <ul class="people" aria-label="People">
                                {list.into_iter().map(|c| {
                                    let is_online = online_ids.contains(&c.id);
                                    let id = c.id.to_string();
                                    let pick = id.clone();
                                    view! {
                                        <li data-contact-id=id.clone() data-online=is_online.to_string()>
                                            <span class=if is_online { "dot online" } else { "dot" }
                                                role="img" aria-label=if is_online { "online" } else { "offline" }></span>
                                            <button type="button" class="link-button"
                                                on:click=move |_| recipient.set(pick.clone())>{c.name.clone()}</button>
                                        </li>
                                    }
                                }).collect_view()}
                            </ul>
                        }
                    })}
                </Transition>
                <label>"Message"<textarea name="body" rows="5" maxlength="5000" on:input=on_input></textarea></label>
                <FormError message=error/>
                <button type="submit" class="button primary">"Send message"</button>
            </ActionForm>
        </section>
    }
}
