use crate::realtime::Table;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_query_map};
use threadline_realtime::client::{Listen, use_realtime};

use crate::api::orders::{CreateOrder, list_orders, order_counts};
use crate::app::use_user;
use crate::components::form_feedback::{FormError, action_error, reset_on_success};
use crate::components::paging::use_paged;
use crate::model::{Order, OrderPage, OrderStatus, Role, StatusCount, format_date};

#[component]
pub fn OrdersPage() -> impl IntoView {
    let user = use_user();
    let query = use_query_map();
    let status = move || query.read().get("status").filter(|s| !s.is_empty());
    let search = move || query.read().get("q").filter(|s| !s.is_empty());
    let create = ServerAction::<CreateOrder>::new();
    let orders_live = use_realtime(Listen::table(Table::Orders), |_| {});
    let stages_live = use_realtime(
        Listen::table(Table::ProductionStages).event("UPDATE"),
        |_| {},
    );
    // any order or stage change may move a row of this list
    let live = move || {
        (create.version().get() as u64)
            .wrapping_add(orders_live.version.get())
            .wrapping_add(stages_live.version.get())
    };
    let paged = use_paged(
        move || (status(), search()),
        live,
        |(status, search), through, more| list_orders(status, search, through, more),
        |o: &Order| o.key().to_string(),
    );
    let orders = paged.page;
    let counts = Resource::new(
        move || (search(), live()),
        |(search, _)| order_counts(search),
    );
    let is_buyer = user.role == Role::Buyer;
    let search_box = NodeRef::<leptos::html::Input>::new();
    let navigate = use_navigate();
    let on_search = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let q = search_box
            .get()
            .map(|input| input.value())
            .unwrap_or_default();
        navigate(
            &orders_href(status().as_deref(), Some(q.as_str())),
            Default::default(),
        );
    };
    let chips = move |counts: Option<Vec<StatusCount>>| {
        let count = move |value: Option<OrderStatus>| {
            counts.as_ref().map(|counts| {
                counts
                    .iter()
                    .filter(|c| value.is_none_or(|v| c.status == v))
                    .map(|c| c.count)
                    .sum::<i64>()
            })
        };
        view! {
            <nav class="filters" aria-label="Filter by status">
                <StatusFilter value=None current=Signal::derive(status) search=Signal::derive(search) count=count(None)/>
                {OrderStatus::ALL.iter().map(|s| view! {
                    <StatusFilter value=Some(*s) current=Signal::derive(status) search=Signal::derive(search) count=count(Some(*s))/>
                }).collect_view()}
            </nav>
        }
    };

    view! {
        <Title text="Orders · Threadline"/>
        <div class="page-head">
            <h1>"Orders"</h1>
            // a plain GET form (it works before the page is interactive);
            // once it is, a search moves within the app
            <form method="GET" action="/orders" class="search" on:submit=on_search>
                <input type="hidden" name="status" prop:value=move || status().unwrap_or_default()/>
                <input type="search" name="q" placeholder="Search product or PO number" node_ref=search_box
                    aria-label="Search orders" prop:value=move || search().unwrap_or_default()/>
            </form>
        </div>
        // one boundary for the counts of every chip
        <Transition fallback=move || chips(None)>
            {move || chips(counts.get().and_then(Result::ok))}
        </Transition>
        {is_buyer.then(|| view! { <NewOrderForm create/> })}
        <Transition fallback=|| view! { <p class="muted">"Loading orders…"</p> }>
            {move || orders.get().map(|result| match result {
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                Ok(page) if page.items.is_empty() => view! { <p class="empty">"No orders match."</p> }.into_any(),
                Ok(OrderPage { items: list, more }) => { let foot = paged.foot(list.len(), more, "Load more"); view! {
                    <table class="orders-table">
                        <thead>
                            <tr>
                                <th scope="col">"Order"</th>
                                <th scope="col">"Product"</th>
                                <th scope="col" class="num">"Qty"</th>
                                <th scope="col">"Buyer"</th>
                                <th scope="col">"Factory"</th>
                                <th scope="col">"Status"</th>
                                <th scope="col">"Production"</th>
                                <th scope="col">"Due"</th>
                            </tr>
                        </thead>
                        // the rows never change in place (a change renders the
                        // list again), so they need no hydration: markup
                        // written straight out, on the server and in the browser
                        <tbody inner_html=order_rows(&list)></tbody>
                    </table>
                    {foot}
                    {(!more).then(|| view! { <p class="muted">"That's every order."</p> })}
                }.into_any() }
            })}
        </Transition>
    }
}

/// The rows of the orders table, as HTML: every text from the database
/// escaped. (The same markup `OrderStatusBadge` and `ProgressBar` make.)
fn order_rows(orders: &[Order]) -> String {
    use html_escape::{
        encode_double_quoted_attribute_to_string as attr, encode_text_to_string as text,
    };
    use std::fmt::Write;
    let mut html = String::with_capacity(orders.len().saturating_mul(640));
    for o in orders {
        let (id, label, status) = (o.id, o.label(), o.status.as_str());
        let percent = o.progress.clamp(0, 100);
        // writing to a String cannot fail
        let _ = write!(
            html,
            "<tr data-order-id=\"{id}\"><td><a href=\"/orders/{id}\">{label}</a></td><td class=\"product\">"
        );
        text(&o.product, &mut html);
        let _ = write!(html, "</td><td class=\"num\">{}</td><td>", o.quantity);
        text(&o.buyer_name, &mut html);
        html.push_str("</td><td>");
        text(o.factory_name.as_deref().unwrap_or("—"), &mut html);
        let _ = write!(
            html,
            "</td><td><span class=\"badge status-{status}\" data-status=\"{status}\">{}</span></td>\
             <td><div class=\"progress\" role=\"progressbar\" aria-valuemin=\"0\" aria-valuemax=\"100\" \
             aria-valuenow=\"{percent}\" aria-label=\"",
            o.status.label()
        );
        attr(&label, &mut html);
        let _ = write!(
            html,
            " production\"><div class=\"progress-fill\" style=\"width: {percent}%\"></div></div></td><td>{}</td></tr>",
            format_date(o.due_date)
        );
    }
    html
}

/// The orders list's address for a status filter and a search.
fn orders_href(status: Option<&str>, search: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some(status) = status.filter(|s| !s.is_empty()) {
        params.push(format!("status={}", encode_query(status)));
    }
    if let Some(q) = search.filter(|q| !q.is_empty()) {
        params.push(format!("q={}", encode_query(q)));
    }
    if params.is_empty() {
        "/orders".to_string()
    } else {
        format!("/orders?{}", params.join("&"))
    }
}

#[component]
fn StatusFilter(
    value: Option<OrderStatus>,
    current: Signal<Option<String>>,
    search: Signal<Option<String>>,
    /// How many orders it shows (once counted).
    count: Option<i64>,
) -> impl IntoView {
    // a chip keeps the search: the filters live in the URL
    let href = move || orders_href(value.map(OrderStatus::as_str), search.get().as_deref());
    let selected = move || current.get().as_deref() == value.map(OrderStatus::as_str);
    view! {
        <a href=href class=move || if selected() { "chip selected" } else { "chip" }
            aria-current=move || selected().then_some("page")>
            {value.map(OrderStatus::label).unwrap_or("All")}
            {count.map(|n| view! { " " <span class="count">{n}</span> })}
        </a>
    }
}

#[component]
fn NewOrderForm(create: ServerAction<CreateOrder>) -> impl IntoView {
    let error = action_error(create);
    let created = move || matches!(create.value().get(), Some(Ok(_)));
    let form = NodeRef::<leptos::html::Form>::new();
    reset_on_success(create, form);
    let (product, quantity, due_date) = (NodeRef::new(), NodeRef::new(), NodeRef::new());
    let notes = NodeRef::<leptos::html::Textarea>::new();
    // What `ActionForm` does, without the form-data decoder it would bring
    // into the main Wasm: the form posts to the server function by itself
    // before the page is interactive; once it is, the action sends it.
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = |input: NodeRef<leptos::html::Input>| {
            input.get().map(|i| i.value()).unwrap_or_default()
        };
        create.dispatch(CreateOrder {
            product: value(product),
            quantity: value(quantity),
            due_date: value(due_date),
            notes: notes.get().map(|n| n.value()),
        });
    };
    view! {
        <details class="card new-order">
            <summary>"New order"</summary>
            <form method="post" action={<CreateOrder as leptos::server_fn::ServerFn>::url()} class="grid-form"
                node_ref=form on:submit=on_submit>
                <label>"Product"<input name="product" required maxlength="200" placeholder="e.g. Organic cotton tee" node_ref=product/></label>
                <label>"Quantity"<input name="quantity" type="number" step="1" required node_ref=quantity/></label>
                <label>"Due date"<input name="due_date" type="date" required node_ref=due_date/></label>
                <label class="wide">"Notes"<textarea name="notes" rows="2" maxlength="2000" node_ref=notes></textarea></label>
                <div class="wide form-actions">
                    <FormError message=error/>
                    <Show when=created><p class="success" role="status">"Order placed."</p></Show>
                    <button type="submit" class="button primary">"Place order"</button>
                </div>
            </form>
        </details>
    }
}

/// Percent-encodes a query parameter's value (everything but RFC 3986's
/// unreserved characters).
fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            super::encode_query("Crew neck & 100%"),
            "Crew%20neck%20%26%20100%25"
        );
        assert_eq!(super::encode_query("PO-12"), "PO-12");
        assert_eq!(super::encode_query("é"), "%C3%A9");
    }

    #[test]
    fn the_list_address_keeps_only_what_is_set() {
        assert_eq!(super::orders_href(None, None), "/orders");
        assert_eq!(super::orders_href(Some(""), Some("")), "/orders");
        assert_eq!(
            super::orders_href(Some("in_production"), Some("tee & co")),
            "/orders?status=in_production&q=tee%20%26%20co"
        );
        assert_eq!(super::orders_href(None, Some("PO-7")), "/orders?q=PO-7");
    }

    #[test]
    fn order_rows_escape_what_people_typed() {
        use crate::model::{Order, OrderStatus};
        use time::macros::{date, datetime};
        let order = Order {
            id: uuid::Uuid::nil(),
            number: 1042,
            buyer_id: uuid::Uuid::nil(),
            buyer_name: "Ann \"<b>\" & Co".into(),
            factory_id: None,
            factory_name: None,
            product: "<img src=x onerror=alert(1)>".into(),
            quantity: 120,
            status: OrderStatus::InProduction,
            due_date: date!(2026 - 12 - 01),
            notes: String::new(),
            progress: 150,
            client_mutation_id: None,
            created_at: datetime!(2026-11-01 0:00 UTC),
            updated_at: datetime!(2026-11-01 0:00 UTC),
        };
        let html = super::order_rows(&[order]);
        assert!(!html.contains("<img") && !html.contains("<b>"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(html.contains("Ann \"&lt;b&gt;\" &amp; Co"), "{html}");
        assert!(html.contains("<td>—</td>"), "no factory: {html}");
        assert!(html.contains(r#"aria-valuenow="100""#), "clamped: {html}");
        assert!(
            html.contains(r#"<a href="/orders/00000000-0000-0000-0000-000000000000">PO-1042</a>"#)
        );
        assert!(html.contains("1 Dec 2026"), "{html}");
        assert_eq!(html.matches("<tr").count(), 1);
        assert_eq!(html.matches("</tr>").count(), 1);
    }
}
