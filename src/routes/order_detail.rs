//! `/orders/:id`: the order's header and stage timeline, its production
//! updates feed and its message thread, each live.

mod feed;
mod form;
mod header;
mod thread;
mod timeline;

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use threadline_realtime::client::{Listen, RoomHandle, use_realtime, use_room};
use uuid::Uuid;

use crate::api::orders::{AssignFactory, SetStageProgress, get_order};
use crate::app::use_user;
use crate::components::optimistic::Optimistic;
use crate::components::presence::{Typists, Viewers};
use crate::model::{OrderDetail, OrderStatus, StageStatus};
use crate::realtime::Table;
use feed::UpdatesFeed;
use header::OrderHeader;
use thread::OrderThread;
use timeline::StageTimeline;

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
    /// The order left this person's view while the page was open (it moved
    /// to another buyer or factory, or was deleted).
    gone: RwSignal<bool>,
}

/// The order's room: who else has it open, and who is typing about it.
#[derive(Clone, Copy)]
struct OrderRoom {
    room: RoomHandle,
    typists: Typists,
}

#[component]
fn OrderView(id: Uuid) -> impl IntoView {
    let status: Optimistic<OrderStatus> = Optimistic::new();
    let advance: Optimistic<(Uuid, StageStatus)> = Optimistic::new();
    let assign = ServerAction::<AssignFactory>::new();
    let progress = ServerAction::<SetStageProgress>::new();
    let gone = RwSignal::new(false);
    let typists = Typists::new();
    let room = use_room(format!("order:{id}"), move |event, payload| {
        typists.hear(event, payload)
    });
    // in the browser: this page shows itself in the order's room
    Effect::new(move |_| room.track(serde_json::json!({"viewing": true})));
    provide_context(OrderRoom { room, typists });
    let order_live = use_realtime(
        Listen::table(Table::Orders).filter(format!("id=eq.{id}")),
        move |event| {
            status.confirm_from(event);
            if event.is_delete() {
                gone.set(true);
            }
        },
    );
    let stages_live = use_realtime(
        Listen::table(Table::ProductionStages).filter(format!("order_id=eq.{id}")),
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
        gone,
    };
    // whatever the refetched data shows is confirmed
    status.settle_from(detail, |detail| {
        detail.order.client_mutation_id.into_iter().collect()
    });
    advance.settle_from(detail, |detail| {
        detail
            .stages
            .iter()
            .filter_map(|s| s.client_mutation_id)
            .collect()
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
    let OrderMutations { detail, gone, .. } = expect_context::<OrderMutations>();
    let OrderRoom { room, .. } = expect_context::<OrderRoom>();
    let me = use_user().id;
    // only whether the order can be shown at all replaces the whole page
    let outcome = Memo::new(move |_| {
        detail
            .get()
            .map(|result| result.map(|_| ()).map_err(|e| e.to_string()))
    });
    let order = Memo::new(move |_| detail.get().and_then(Result::ok).map(|d| d.order));
    move || {
        outcome.get().map(|outcome| match outcome {
            Err(_) if gone.get_untracked() => view! {
                <section class="card narrow" data-testid="order-gone">
                    <h1>"Order no longer visible"</h1>
                    <p class="notice" role="alert">
                        "This order was moved to another buyer or factory, or removed: it is no longer visible to you."
                    </p>
                    <A href="/orders">"Back to orders"</A>
                </section>
            }
            .into_any(),
            Err(e) => view! {
                <section class="card narrow">
                    <h1>"Order unavailable"</h1>
                    <p class="error" role="alert">{e}</p>
                    <A href="/orders">"Back to orders"</A>
                </section>
            }
            .into_any(),
            Ok(()) => view! {
                <Viewers present=room.present me/>
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
