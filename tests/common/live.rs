//! A Threadline server with its realtime engine on a real socket, over the
//! test's own database, and a minimal Phoenix client to talk to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use threadline::server::settings::RealtimeSettings;
use threadline_realtime::cursor::ChangeCursor;
use threadline_realtime::engine::Realtime;
use threadline_realtime::protocol::{ChangeEvent, Frame, Vsn};

use super::TestApp;

/// How long any single expected event may take to arrive.
pub const WAIT: Duration = Duration::from_secs(10);

/// The URL of the test's own database (sqlx::test makes one per test).
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(pool.connect_options().get_database().unwrap_or("postgres"));
    url.to_string()
}

pub struct LiveServer {
    pub app: TestApp,
    pub addr: SocketAddr,
    pub realtime: Arc<Realtime>,
    serving: tokio::task::JoinHandle<()>,
}

impl LiveServer {
    pub async fn start(pool: PgPool) -> LiveServer {
        Self::start_with(pool, RealtimeSettings::default(), true).await
    }

    /// `seed`: load the demo data first (only on a fresh database).
    pub async fn start_with(pool: PgPool, settings: RealtimeSettings, seed: bool) -> LiveServer {
        let url = database_url(&pool);
        Self::start_on(pool, &url, settings, seed).await
    }

    pub async fn start_on(
        pool: PgPool,
        url: &str,
        settings: RealtimeSettings,
        seed: bool,
    ) -> LiveServer {
        let mut app = if seed {
            TestApp::new(pool.clone()).await
        } else {
            TestApp::without_seed(pool.clone()).await
        };
        let realtime = Realtime::start(
            pool.clone(),
            url,
            settings,
            super::ports(&pool, &app.state.auth),
        )
        .await
        .expect("realtime starts");
        app.state.realtime = realtime.clone();
        app.router = threadline::server::app(app.state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let router = app.router.clone();
        let serving = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, service).await;
        });
        LiveServer {
            app,
            addr,
            realtime,
            serving,
        }
    }

    /// Stops serving and capturing; the slot stays (as after a crash or restart).
    pub async fn stop(self) -> PgPool {
        self.serving.abort();
        self.realtime.shutdown().await;
        self.app.pool.clone()
    }

    /// Stops and drops the replication slot, so the test database can go.
    pub async fn finish(self) {
        self.serving.abort();
        self.realtime
            .shutdown_and_drop_slot()
            .await
            .expect("slot dropped");
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr, Vsn::V2).await
    }

    /// A connection signed in as `email` by a browser session cookie, and
    /// the session's token.
    pub async fn connect_signed_in(&self, email: &str) -> (Client, String) {
        let user = self.app.user(email).await;
        let token = threadline::auth::server::create_session(&self.app.pool, user.id, 1)
            .await
            .expect("session");
        let cookie = format!("threadline_session={token}");
        (Client::connect_with_cookie(self.addr, &cookie).await, token)
    }

    pub async fn token(&self, email: &str) -> String {
        self.app.token(email).await
    }
}

pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    vsn: Vsn,
    next_ref: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr, vsn: Vsn) -> Client {
        let version = if vsn == Vsn::V2 { "2.0.0" } else { "1.0.0" };
        let url = format!("ws://{addr}/realtime/v1/websocket?vsn={version}");
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Client {
            socket,
            vsn,
            next_ref: 1,
        }
    }

    /// A connection that sends a `Cookie` header, as a page of the site does.
    pub async fn connect_with_cookie(addr: SocketAddr, cookie: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{addr}/realtime/v1/websocket?vsn=2.0.0");
        let mut request = url.into_client_request().expect("request");
        request
            .headers_mut()
            .insert("cookie", cookie.parse().expect("cookie header"));
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        Client {
            socket,
            vsn: Vsn::V2,
            next_ref: 1,
        }
    }

    /// Reads until the server closes the connection: the `threadline`
    /// notices it sent on the way (in order) and the close code.
    pub async fn until_closed(&mut self) -> (Vec<String>, Vec<ChangeEvent>, Option<u16>) {
        let mut notices = Vec::new();
        let mut changes = Vec::new();
        loop {
            match self.next(WAIT).await {
                Some(Incoming::Frame(frame)) if frame.event == "postgres_changes" => changes
                    .push(serde_json::from_value(frame.payload).expect("change payload parses")),
                Some(Incoming::Frame(frame)) => {
                    if let Some(notice) = frame.payload["threadline"]["notice"].as_str() {
                        notices.push(notice.to_string());
                    }
                }
                Some(Incoming::Closed(code)) => return (notices, changes, code),
                None => panic!("the server did not close the connection"),
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_frame(&mut self, topic: &str, event: &str, payload: Value) -> String {
        let msg_ref = self.next_ref.to_string();
        self.next_ref += 1;
        let frame = Frame {
            join_ref: Some(msg_ref.clone()),
            msg_ref: Some(msg_ref.clone()),
            topic: topic.into(),
            event: event.into(),
            payload,
        };
        self.send_text(&frame.encode(self.vsn)).await;
        msg_ref
    }

    /// Joins `topic` with these bindings; returns the reply frame.
    pub async fn join(
        &mut self,
        topic: &str,
        token: Option<&str>,
        bindings: Value,
        cursor: Option<ChangeCursor>,
    ) -> Frame {
        let mut payload = json!({ "config": { "postgres_changes": bindings } });
        if let Some(token) = token {
            payload["access_token"] = json!(token);
        }
        if let Some(cursor) = cursor {
            payload["cursor"] = json!(cursor.to_string());
        }
        let msg_ref = self.send_frame(topic, "phx_join", payload).await;
        self.reply_to(&msg_ref).await
    }

    /// Joins with the connection's session cookie and insists on success.
    pub async fn subscribe_signed_in(&mut self, topic: &str, bindings: Value) -> Frame {
        let reply = self.join(topic, None, bindings, None).await;
        assert_eq!(
            reply.payload["status"], "ok",
            "join refused: {}",
            reply.payload
        );
        reply
    }

    /// Joins and insists on success.
    pub async fn subscribe(
        &mut self,
        topic: &str,
        token: &str,
        bindings: Value,
        cursor: Option<ChangeCursor>,
    ) -> Frame {
        let reply = self.join(topic, Some(token), bindings, cursor).await;
        assert_eq!(
            reply.payload["status"], "ok",
            "join refused: {}",
            reply.payload
        );
        reply
    }

    /// The next message (or the close), or None if nothing comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
            {
                Ok(message) => message,
                // the server closed the connection without a close frame we could read
                Err(_) => return Some(Incoming::Closed(None)),
            };
            match message {
                Message::Text(text) => {
                    let frame =
                        Frame::decode(text.as_str(), self.vsn).expect("server sends valid frames");
                    return Some(Incoming::Frame(frame));
                }
                Message::Close(frame) => {
                    return Some(Incoming::Closed(frame.map(|f| u16::from(f.code))));
                }
                _ => continue,
            }
        }
    }

    pub async fn next_frame(&mut self) -> Frame {
        match self.next(WAIT).await {
            Some(Incoming::Frame(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The reply to the message with `msg_ref`, skipping anything before it.
    pub async fn reply_to(&mut self, msg_ref: &str) -> Frame {
        loop {
            let frame = self.next_frame().await;
            if frame.event == "phx_reply" && frame.msg_ref.as_deref() == Some(msg_ref) {
                return frame;
            }
        }
    }

    /// The next `postgres_changes` event, skipping system messages.
    pub async fn next_change(&mut self) -> (String, ChangeEvent) {
        loop {
            let frame = self.next_frame().await;
            if frame.event == "postgres_changes" {
                let event: ChangeEvent =
                    serde_json::from_value(frame.payload).expect("change payload parses");
                return (frame.topic, event);
            }
        }
    }

    /// Changes until nothing more arrives within `quiet`, for asserting
    /// that nothing else was sent after a barrier.
    pub async fn drain_changes(&mut self, quiet: Duration) -> Vec<ChangeEvent> {
        let mut out = Vec::new();
        while let Some(Incoming::Frame(frame)) = self.next(quiet).await {
            if frame.event == "postgres_changes" {
                out.push(serde_json::from_value(frame.payload).expect("change payload parses"));
            }
        }
        out
    }

    pub async fn heartbeat_ok(&mut self) -> bool {
        let msg_ref = self.send_frame("phoenix", "heartbeat", json!({})).await;
        self.reply_to(&msg_ref).await.payload["status"] == "ok"
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

#[derive(Debug)]
pub enum Incoming {
    Frame(Frame),
    Closed(Option<u16>),
}

/// A demo order's id by its product.
pub async fn order_id(pool: &PgPool, product: &str) -> uuid::Uuid {
    sqlx::query_scalar("select id from orders where product = $1")
        .bind(product)
        .fetch_one(pool)
        .await
        .expect("demo order")
}

pub async fn set_notes(pool: &PgPool, order: uuid::Uuid, notes: &str) {
    sqlx::query("update orders set notes = $2 where id = $1")
        .bind(order)
        .bind(notes)
        .execute(pool)
        .await
        .expect("update");
}

/// A column of a change's new row as text ("" when absent or not text).
pub fn record_text<'e>(event: &'e ChangeEvent, column: &str) -> &'e str {
    event
        .data
        .record
        .as_ref()
        .and_then(|r| r.get(column))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn orders(filter: Option<&str>) -> Value {
    binding("*", "orders", filter)
}

pub fn binding(event: &str, table: &str, filter: Option<&str>) -> Value {
    let mut value = json!({ "event": event, "schema": "public", "table": table });
    if let Some(filter) = filter {
        value["filter"] = json!(filter);
    }
    json!([value])
}
