//! The events WebSocket: upgrade, app registration (with `ApplicationReplaced`), event
//! delivery with faults, and REST over WebSocket.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::http::response;
use crate::rest::{self, RestRequest};
use crate::script::Transport;
use crate::state::{event_type, lock, CloseReason, ConnCmd, ConnEntry, Frame, Shared, User};
use crate::util::{parse_query, reason_phrase, split_segments};

/// The byte stream under a WebSocket: an upgraded HTTP connection (inbound), or a TCP
/// connection the simulated Asterisk opened (outbound, see `crate::outbound`).
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// Whether the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    header_has_token(req.headers(), header::UPGRADE, "websocket")
}

fn header_has_token(headers: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Asterisk's `ast_true`.
pub(crate) fn ast_true(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "yes" | "true" | "y" | "t" | "1" | "on"
    )
}

/// Accepts an authenticated upgrade request for `/ari/events`: registers the connection and
/// its apps (before answering, so a client that saw the handshake complete is registered),
/// spawns the connection task and answers `101`.
pub(crate) fn upgrade(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    user: User,
    query: &[(String, String)],
) -> Response<Full<Bytes>> {
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return response(400, "text/plain", b"Missing Sec-WebSocket-Key".to_vec());
    };
    if !version_ok {
        let mut r = response(426, "text/plain", b"Unsupported WebSocket version".to_vec());
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let offers_ari = header_has_token(req.headers(), header::SEC_WEBSOCKET_PROTOCOL, "ari");

    let mut apps: Vec<String> = Vec::new();
    for (_, v) in query.iter().filter(|(k, _)| k == "app") {
        for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !apps.iter().any(|x| x == a) {
                apps.push(a.to_owned());
            }
        }
    }
    let subscribe_all = query
        .iter()
        .any(|(k, v)| k == "subscribeAll" && ast_true(v));

    let id = shared.next_conn_id();
    let (tx, rx) = mpsc::unbounded_channel();
    register(shared, id, &apps, tx.clone(), &user);
    shared.log(|| {
        format!(
            "ws#{id} connected: user {}, apps {}{}",
            user.name,
            if apps.is_empty() {
                "(none)".to_owned()
            } else {
                apps.join(",")
            },
            if subscribe_all { ", subscribeAll" } else { "" }
        )
    });

    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_shared = shared.clone();
    let first_app = apps.first().cloned();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io: Box<dyn Io> = Box::new(TokioIo::new(upgraded));
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                let (reason, _rx) = run(task_shared.clone(), id, ws, rx, tx, first_app, user).await;
                task_shared.connection_closed(id, reason);
            }
            Err(_) => task_shared.connection_closed(id, CloseReason::Error),
        }
    });
    for app in &apps {
        shared.with_sim(|sim, now| sim.app_connected(now, app, subscribe_all));
    }

    let mut r = response(101, "", Vec::new());
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if offers_ari {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("ari"),
        );
    }
    r
}

/// Adds the connection to the registry; apps held elsewhere move here, and their old holder
/// gets `ApplicationReplaced`.
pub(crate) fn register(
    shared: &Shared,
    id: u64,
    apps: &[String],
    tx: mpsc::UnboundedSender<ConnCmd>,
    user: &User,
) {
    let mut reg = lock(&shared.registry);
    for app in apps {
        if let Some(old) = reg.apps.insert(app.clone(), id) {
            if let Some(c) = reg.conns.get_mut(&old) {
                c.apps.retain(|a| a != app);
                let frame = format!(
                    "{{\"type\":\"ApplicationReplaced\",\"timestamp\":{},\"application\":{},\"asterisk_id\":{}}}",
                    Value::from(shared.timestamp()),
                    Value::from(app.as_str()),
                    Value::from(shared.asterisk_id.as_str()),
                );
                let _ = c.tx.send(ConnCmd::Send(Frame::Event(frame)));
                shared.log(|| {
                    format!("app {app} moved from ws#{old} to ws#{id} (ApplicationReplaced)")
                });
            }
        }
    }
    reg.conns.insert(
        id,
        ConnEntry {
            tx,
            apps: apps.to_vec(),
            requested: apps.to_vec(),
            user: user.name.clone(),
            read_only: user.read_only,
        },
    );
    shared.registry_changed.notify_all();
}

/// Outcome of writing one frame.
enum Sent {
    Ok,
    Stop(CloseReason),
}

struct Writer {
    sink: SplitSink<Ws, Message>,
    /// Close abruptly after this many more events.
    drop_after: Option<usize>,
}

impl Writer {
    async fn send(&mut self, shared: &Shared, id: u64, frame: Frame) -> Sent {
        let (msg, is_event) = match frame {
            Frame::Event(t) => {
                shared.log(|| {
                    let what = match serde_json::from_str::<Value>(&t) {
                        Ok(v) => match v.get("application").and_then(Value::as_str) {
                            Some(app) => format!("{} ({app})", event_type(&v)),
                            None => event_type(&v).to_owned(),
                        },
                        Err(_) => format!("non-JSON frame of {} bytes", t.len()),
                    };
                    format!("ws#{id} <- {what}")
                });
                (Message::text(t), true)
            }
            Frame::Response(t) => (Message::text(t), false),
            Frame::Binary(b) => (Message::binary(b), true),
        };
        let write_timeout = lock(&shared.faults).write_timeout;
        match tokio::time::timeout(write_timeout, self.sink.send(msg)).await {
            Err(_) => return Sent::Stop(CloseReason::WriteTimeout),
            Ok(Err(e)) => return Sent::Stop(close_reason(&e)),
            Ok(Ok(())) => {}
        }
        if is_event {
            if let Some(n) = &mut self.drop_after {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    return Sent::Stop(CloseReason::Dropped);
                }
            }
        }
        Sent::Ok
    }
}

/// How long the server waits for the client's answer to its close frame.
const CLOSE_REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn close_reason(e: &WsError) -> CloseReason {
    match e {
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_)
        | WsError::Protocol(_) => CloseReason::ClientClosed,
        _ => CloseReason::Error,
    }
}

/// The connection task: until the socket ends, sends what `rx` brings and answers
/// REST-over-WebSocket requests. Returns why it ended and `rx` (an outbound connection
/// keeps its queue across reconnects); the caller records the end.
pub(crate) async fn run(
    shared: Arc<Shared>,
    id: u64,
    ws: Ws,
    mut rx: mpsc::UnboundedReceiver<ConnCmd>,
    tx: mpsc::UnboundedSender<ConnCmd>,
    first_app: Option<String>,
    user: User,
) -> (CloseReason, mpsc::UnboundedReceiver<ConnCmd>) {
    let (sink, mut stream) = ws.split();
    let mut w = Writer {
        sink,
        drop_after: None,
    };
    let Some(app) = first_app else {
        let frame = r#"{"type":"MissingParams","params":["app"]}"#.to_owned();
        let _ = w.send(&shared, id, Frame::Response(frame)).await;
        let _ = w
            .sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        return (CloseReason::MissingParams, rx);
    };
    let mut paused = false;
    // Outbound PINGs sent since the last PONG.
    let mut unanswered: u32 = 0;
    let mut queue: VecDeque<Frame> = VecDeque::new();
    let reason = loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(_))) if shared.pretend.as_ref().is_some_and(|p| !p.rest_over_websocket()) => {
                    // Releases before REST over WebSocket read and ignore client frames.
                    shared.log(|| "a text frame from the client was ignored (no REST over WebSocket in this release)".to_owned());
                }
                Some(Ok(Message::Text(t))) => {
                    let (shared, tx, app, user) = (shared.clone(), tx.clone(), app.clone(), user.clone());
                    let text = t.as_str().to_owned();
                    tokio::spawn(async move {
                        rest_over_ws(&shared, &text, &app, user, &tx).await;
                    });
                }
                Some(Ok(Message::Pong(_))) => {
                    if unanswered > 0 {
                        shared.outbound.count(|s| s.pongs += 1);
                    }
                    unanswered = 0;
                }
                // Pings are answered by tungstenite on the next read; close frames are replied
                // to the same way, then the stream ends.
                Some(Ok(_)) => {}
                Some(Err(e)) => break close_reason(&e),
                None => break CloseReason::ClientClosed,
            },
            cmd = rx.recv() => match cmd {
                None => break CloseReason::Dropped,
                Some(ConnCmd::Send(f)) => {
                    if paused {
                        queue.push_back(f);
                    } else if let Sent::Stop(r) = w.send(&shared, id, f).await {
                        break r;
                    }
                }
                Some(ConnCmd::Flood(job)) => {
                    if !crate::bench::write(&mut w.sink, &job).await {
                        break CloseReason::Error;
                    }
                }
                Some(ConnCmd::Pause) => paused = true,
                Some(ConnCmd::Resume) => {
                    paused = false;
                    let mut stop = None;
                    while let Some(f) = queue.pop_front() {
                        if let Sent::Stop(r) = w.send(&shared, id, f).await {
                            stop = Some(r);
                            break;
                        }
                    }
                    if let Some(r) = stop {
                        break r;
                    }
                }
                Some(ConnCmd::Close { abrupt, code }) => {
                    if !abrupt {
                        let wt = lock(&shared.faults).write_timeout;
                        let close = Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "".into() }));
                        if let Ok(Ok(())) = tokio::time::timeout(wt, w.sink.send(close)).await {
                            // The client's answer, read within a second (then TCP is closed).
                            let answer = async {
                                while let Some(Ok(m)) = stream.next().await {
                                    if let Message::Close(_) = m {
                                        return true;
                                    }
                                }
                                false
                            };
                            if let Ok(true) = tokio::time::timeout(CLOSE_REPLY_WAIT, answer).await {
                                shared.close_replies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    break CloseReason::Dropped;
                }
                Some(ConnCmd::Ping { probes }) => {
                    if unanswered >= probes.max(1) {
                        // Asterisk's websocket client: PONGs missed, closed with 1001.
                        shared.outbound.count(|s| s.pong_timeouts += 1);
                        shared.log(|| format!("ws#{id}: {unanswered} PINGs unanswered; closing with 1001"));
                        let away = Message::Close(Some(CloseFrame { code: CloseCode::Away, reason: "".into() }));
                        let wt = lock(&shared.faults).write_timeout;
                        let _ = tokio::time::timeout(wt, w.sink.send(away)).await;
                        break CloseReason::Dropped;
                    }
                    unanswered += 1;
                    shared.outbound.count(|s| s.pings += 1);
                    if w.sink.send(Message::Ping("WS_CLIENT_PING".into())).await.is_err() {
                        break CloseReason::Error;
                    }
                }
                Some(ConnCmd::DropAfter(0)) => break CloseReason::Dropped,
                Some(ConnCmd::DropAfter(n)) => w.drop_after = Some(n),
            }
        }
    };
    // Dropping both halves closes the TCP connection (no close frame unless sent above).
    (reason, rx)
}

/// Answers one text frame received on the events WebSocket with a `RESTResponse` frame,
/// queued on `tx` before the events the request caused.
pub(crate) async fn rest_over_ws(
    shared: &Arc<Shared>,
    text: &str,
    app: &str,
    user: User,
    tx: &mpsc::UnboundedSender<ConnCmd>,
) {
    let send = |frame: String| {
        let _ = tx.send(ConnCmd::Send(Frame::Response(frame)));
    };
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        });
    let field = |m: &Option<serde_json::Map<String, Value>>, k: &str| -> String {
        m.as_ref()
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let request_id = field(&parsed, "request_id");
    let transaction_id = field(&parsed, "transaction_id");
    let reply = |status: u16, reason: &str, uri: &str, ct: &str, body: &[u8]| {
        response_frame(
            shared,
            ResponseFrame {
                transaction_id: &transaction_id,
                request_id: &request_id,
                status,
                reason,
                uri,
                content_type: ct,
                body,
                app,
            },
        )
    };
    let Some(m) = parsed
        .as_ref()
        .filter(|m| m.get("type").and_then(Value::as_str) == Some("RESTRequest"))
    else {
        shared.log(|| "ws-rest: bad frame (unknown request type) -> 400".to_owned());
        return send(reply(
            400,
            "Bad request",
            "",
            "application/json",
            br#"{"message":"Unknown request type."}"#,
        ));
    };
    let full_uri = m.get("uri").and_then(Value::as_str).unwrap_or_default();
    let (path, uri_query) = full_uri.split_once('?').unwrap_or((full_uri, ""));
    let path = path.trim_start_matches('/');
    let method = m.get("method").and_then(Value::as_str).unwrap_or_default();
    if !matches!(
        method,
        "GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS"
    ) {
        shared.log(|| format!("ws-rest: unknown method {method:?} -> 400"));
        return send(reply(
            400,
            "Bad request",
            path,
            "application/json",
            br#"{"message":"Unknown or missing 'method' property."}"#,
        ));
    }
    let mut query = parse_query(uri_query);
    if let Some(Value::Array(qs)) = m.get("query_strings") {
        for q in qs {
            let name = q.get("name").and_then(Value::as_str);
            let value = match q.get("value") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            };
            if let (Some(n), Some(v)) = (name, value) {
                query.push((n.to_owned(), v));
            }
        }
    }
    let raw_body = m
        .get("message_body")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let content_type = m
        .get("content_type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    rest::handle(
        shared,
        RestRequest {
            transport: Transport::WebSocket,
            method: method.to_owned(),
            path: path.to_owned(),
            segments: split_segments(path),
            query,
            content_type,
            raw_body,
            user,
        },
        Box::new(|answer| {
            send(reply(
                answer.status,
                reason_phrase(answer.status),
                path,
                &answer.content_type,
                &answer.body,
            ))
        }),
    )
    .await;
}

struct ResponseFrame<'a> {
    transaction_id: &'a str,
    request_id: &'a str,
    status: u16,
    reason: &'a str,
    uri: &'a str,
    content_type: &'a str,
    body: &'a [u8],
    app: &'a str,
}

/// Builds a `RESTResponse` frame with Asterisk's field order; `content_type` and
/// `message_body` are left out when there is no body, as Asterisk does for 204.
fn response_frame(shared: &Shared, f: ResponseFrame<'_>) -> String {
    let s = |v: &str| Value::from(v).to_string();
    let mut out = format!(
        "{{\"type\":\"RESTResponse\",\"transaction_id\":{},\"request_id\":{},\"status_code\":{},\"reason_phrase\":{},\"uri\":{}",
        s(f.transaction_id),
        s(f.request_id),
        f.status,
        s(f.reason),
        s(f.uri),
    );
    if !f.body.is_empty() {
        out.push_str(&format!(
            ",\"content_type\":{},\"message_body\":{}",
            s(f.content_type),
            s(&String::from_utf8_lossy(f.body)),
        ));
    }
    out.push_str(&format!(
        ",\"application\":{},\"timestamp\":{},\"asterisk_id\":{}}}",
        s(f.app),
        s(&shared.timestamp()),
        s(&shared.asterisk_id),
    ));
    out
}
