//! REST: `channels.get` and `channels.answer` on channels placed in the simulator, 1 and 64
//! in flight, through the client or a bare hyper loop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ari_client::{Client, Runtime};
use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::util::{basic_auth, cpu_now, percentile, USER};

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Answer,
}

impl Op {
    pub(crate) const ALL: [Op; 2] = [Op::Get, Op::Answer];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "channels.get",
            Op::Answer => "channels.answer",
        }
    }
}

/// In-flight levels measured.
pub(crate) const IN_FLIGHT: [usize; 2] = [1, 64];

fn summarize(
    client: &str,
    op: Op,
    in_flight: usize,
    mut lat: Vec<Duration>,
    wall: Duration,
    cpu: Duration,
) -> Value {
    lat.sort_unstable();
    let n = lat.len();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    json!({
        "client": client,
        "op": op.name(),
        "in_flight": in_flight,
        "ops": n,
        "seconds": wall.as_secs_f64(),
        "ops_per_sec": n as f64 / wall.as_secs_f64().max(1e-9),
        "p50_us": us(percentile(&lat, 50.0)),
        "p99_us": us(percentile(&lat, 99.0)),
        "max_us": us(lat.last().copied().unwrap_or_default()),
        "cpu_seconds": cpu.as_secs_f64(),
        "cpu_us_per_op": cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
    })
}

async fn client_op<R: Runtime>(client: &Client<R>, op: Op, id: &str) {
    let r = match op {
        Op::Get => client.channels().get(id).await.map(drop),
        Op::Answer => client.channels().answer(id).await.map(drop),
    };
    if let Err(e) = r {
        panic!("{} {id}: {e}", op.name());
    }
}

/// Every (op, in-flight) configuration through the client.
pub(crate) async fn client<R: Runtime + Default>(
    name: &str,
    addr: SocketAddr,
    ids: &[String],
    ops: usize,
) -> Vec<Value> {
    let client = Client::<R>::builder(&format!("http://{addr}"), USER, USER)
        .connect()
        .await
        .expect("connect");
    let mut out = Vec::new();
    for op in Op::ALL {
        for in_flight in IN_FLIGHT {
            let per = (ops / in_flight).max(1);
            // Warm-up: opens the pooled connections.
            for round in 0..4 {
                join_all(
                    (0..in_flight).map(|w| client_op(&client, op, &ids[(w + round) % ids.len()])),
                )
                .await;
            }
            let cpu0 = cpu_now();
            let t0 = Instant::now();
            let lats = join_all((0..in_flight).map(|w| {
                let client = &client;
                async move {
                    let mut lat = Vec::with_capacity(per);
                    for i in 0..per {
                        let id = &ids[(w + i * in_flight) % ids.len()];
                        let s = Instant::now();
                        client_op(client, op, id).await;
                        lat.push(s.elapsed());
                    }
                    lat
                }
            }))
            .await;
            let (wall, cpu) = (t0.elapsed(), cpu_now() - cpu0);
            out.push(summarize(name, op, in_flight, lats.concat(), wall, cpu));
        }
    }
    out
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn hyper_conn(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn hyper_op(sender: &mut Sender, addr: SocketAddr, auth: &str, op: Op, id: &str) {
    let (method, path) = match op {
        Op::Get => ("GET", format!("/ari/channels/{id}")),
        Op::Answer => ("POST", format!("/ari/channels/{id}/answer")),
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, auth)
        .body(Empty::new())
        .expect("request");
    sender.ready().await.expect("ready");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(status.is_success(), "{method} {id}: {status}");
    if !body.is_empty() {
        let _: Value = serde_json::from_slice(&body).expect("JSON body");
    }
}

/// The baseline: one hyper HTTP/1.1 keep-alive connection per in-flight slot, the same
/// requests, the body collected and parsed into `serde_json::Value`.
pub(crate) fn hyper_baseline(addr: SocketAddr, ids: &[String], ops: usize) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let auth = basic_auth();
    rt.block_on(async {
        let mut out = Vec::new();
        for op in Op::ALL {
            for in_flight in IN_FLIGHT {
                let per = (ops / in_flight).max(1);
                let mut senders = Vec::new();
                for _ in 0..in_flight {
                    senders.push(hyper_conn(addr).await);
                }
                for round in 0..4 {
                    for (w, s) in senders.iter_mut().enumerate() {
                        hyper_op(s, addr, &auth, op, &ids[(w + round) % ids.len()]).await;
                    }
                }
                let cpu0 = cpu_now();
                let t0 = Instant::now();
                let lats = join_all(senders.iter_mut().enumerate().map(|(w, s)| {
                    let auth = &auth;
                    async move {
                        let mut lat = Vec::with_capacity(per);
                        for i in 0..per {
                            let id = &ids[(w + i * in_flight) % ids.len()];
                            let t = Instant::now();
                            hyper_op(s, addr, auth, op, id).await;
                            lat.push(t.elapsed());
                        }
                        lat
                    }
                }))
                .await;
                let (wall, cpu) = (t0.elapsed(), cpu_now() - cpu0);
                out.push(summarize(
                    "baseline: bare hyper",
                    op,
                    in_flight,
                    lats.concat(),
                    wall,
                    cpu,
                ));
            }
        }
        out
    })
}
