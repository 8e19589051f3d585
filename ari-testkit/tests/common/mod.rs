//! Plain hyper / tokio-tungstenite clients for the testkit's own tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single wait in these tests, so a broken server fails a test instead
/// of hanging it. Never used to assert speed.
pub const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A request builder over one fresh or reused HTTP/1.1 connection.
pub struct Http {
    sender: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Http {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http { sender, addr })
    }

    /// Sends one request; `auth` is a full `Authorization` header value.
    pub async fn send(
        &mut self,
        method: &str,
        path_and_query: &str,
        auth: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Resp, hyper::Error> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", self.addr.to_string());
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let body = match body {
            Some((ct, bytes)) => {
                b = b.header("content-type", ct);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let req = b.body(body).expect("valid request");
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

/// One request on a fresh connection, authenticated as `asterisk:asterisk`.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(
        addr,
        "GET",
        path,
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await
}

/// One request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Resp {
    let mut c = Http::connect(addr).await.expect("connect");
    c.send(method, path, auth, body).await.expect("response")
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to the events WebSocket with Basic auth `asterisk:asterisk`.
pub async fn ws_connect(addr: SocketAddr, query: &str) -> Ws {
    ws_try(addr, query, Some(&basic("asterisk", "asterisk")))
        .await
        .expect("websocket handshake")
}

pub async fn ws_try(
    addr: SocketAddr,
    query: &str,
    auth: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://{addr}/ari/events?{query}");
    let mut req = url.into_client_request()?;
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    let (ws, _resp) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// Next text frame (skipping pings/pongs), or `None` when the stream ends or errors.
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no frame within PATIENCE");
        match m {
            Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return None,
        }
    }
}

/// Next text frame as JSON.
pub async fn next_json(ws: &mut Ws) -> Value {
    let t = next_text(ws).await.expect("a text frame");
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("frame not JSON ({e}): {t}"))
}

/// Next message of any kind (`None` at end of stream); errors are returned.
pub async fn next_msg(
    ws: &mut Ws,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("no message within PATIENCE")
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.expect("send");
}

pub async fn send_binary(ws: &mut Ws, data: Vec<u8>) {
    ws.send(Message::Binary(data.into())).await.expect("send");
}
