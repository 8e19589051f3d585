//! REST: `channels.get` and `channels.answer` on channels placed in the simulator, 1 and 64
//! in flight, through the client or a bare hyper loop.
//!
//! Each row also says how many TCP connections the mock accepted during its warm-up and
//! during the measurement (`connections_accepted` of `/_bench/stats`, a difference, the
//! stats request's own connection not counted): a pool that keeps its connections opens
//! none while measuring.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use ari_client::runtime::Connector;
use ari_client::{Client, Runtime};
use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::util::{basic_auth, control, cpu_now, percentile, USER};

/// The client's cap on connections per host (ari-client's default), which the capped hyper
/// floor shares.
const CLIENT_CAP: usize = ari_client::stack::DEFAULT_MAX_CONNECTIONS_PER_HOST;

/// Connections the mock has accepted so far, this request's own included.
fn accepted(addr: SocketAddr) -> u64 {
    let (status, body) = control(addr, "GET", "/_bench/stats").expect("bench stats");
    assert_eq!(status, 200, "bench stats: {body}");
    let v: Value = serde_json::from_str(&body).expect("bench stats JSON");
    v["connections_accepted"]
        .as_u64()
        .expect("connections_accepted in /_bench/stats")
}

/// Connections accepted during a warm-up and a measurement: from three readings of
/// [`accepted`], each later reading counting its own request's connection.
#[derive(Debug, Clone, Copy)]
struct Conns {
    warm_up: u64,
    measured: u64,
}

impl Conns {
    fn of(before: u64, warmed: u64, after: u64) -> Conns {
        Conns {
            warm_up: warmed.saturating_sub(before + 1),
            measured: after.saturating_sub(warmed + 1),
        }
    }
}

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

/// Whether a row is measured: all of them, or those `ARI_BENCH_REST_ROWS` names (for counting
/// one row's instructions in a `--role client` child: `get@1`, `answer@64`, comma-separated).
fn wanted(op: Op, in_flight: usize) -> bool {
    let Ok(rows) = std::env::var("ARI_BENCH_REST_ROWS") else {
        return true;
    };
    let short = match op {
        Op::Get => "get",
        Op::Answer => "answer",
    };
    rows.split(',')
        .any(|r| r.trim() == format!("{short}@{in_flight}"))
}

/// One row. `cap`: the connections the client may open (at most `in_flight` are used).
#[allow(clippy::too_many_arguments)] // one row's fields
fn summarize(
    client: &str,
    op: Op,
    in_flight: usize,
    cap: usize,
    conns: Conns,
    mut lat: Vec<Duration>,
    wall: Duration,
    cpu: Duration,
) -> Value {
    lat.sort_unstable();
    let n = lat.len();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    json!({
        "client": client,
        "op": op.name(),
        "in_flight": in_flight,
        "connection_cap": cap,
        "connections_warm_up": conns.warm_up,
        "connections_measured": conns.measured,
        "p99_over_p50": p99.as_secs_f64() / p50.as_secs_f64().max(1e-9),
        "ops": n,
        "seconds": wall.as_secs_f64(),
        "ops_per_sec": n as f64 / wall.as_secs_f64().max(1e-9),
        "p50_us": us(p50),
        "p99_us": us(p99),
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
            if !wanted(op, in_flight) {
                continue;
            }
            let per = (ops / in_flight).max(1);
            let before = accepted(addr);
            // Warm-up: opens the pooled connections.
            for round in 0..4 {
                join_all(
                    (0..in_flight).map(|w| client_op(&client, op, &ids[(w + round) % ids.len()])),
                )
                .await;
            }
            let warmed = accepted(addr);
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
            let conns = Conns::of(before, warmed, accepted(addr));
            out.push(summarize(
                name,
                op,
                in_flight,
                CLIENT_CAP,
                conns,
                lats.concat(),
                wall,
                cpu,
            ));
        }
    }
    out
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Opens one bare hyper connection, its connection future run as a task of its own.
type Connect<'a> = &'a dyn Fn(SocketAddr) -> Pin<Box<dyn Future<Output = Sender> + 'a>>;

/// On tokio: a tokio TCP stream, the connection task on the current-thread runtime.
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

/// On smol: the smol adapter's stream (async-io, `TCP_NODELAY`), through a futures-io shim
/// like ari-client's (a read buffer of its own, 8 KiB), the connection task on `ex`.
async fn hyper_conn_smol(ex: &smol::LocalExecutor<'_>, addr: SocketAddr) -> Sender {
    let stream = ari_smol::SmolConnector
        .connect(&addr.ip().to_string(), addr.port())
        .await
        .expect("connect");
    let io = SmolIo {
        io: stream,
        buf: vec![0; 8 * 1024].into_boxed_slice(),
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    ex.spawn(async move {
        let _ = conn.await;
    })
    .detach();
    sender
}

/// A futures-io stream as hyper's `rt::Read` + `rt::Write` (read through a buffer: hyper's
/// cursor is uninitialised memory).
struct SmolIo<S> {
    io: S,
    buf: Box<[u8]>,
}

impl<S: smol::io::AsyncRead + Unpin> hyper::rt::Read for SmolIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let want = cursor.remaining().min(this.buf.len());
        let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.buf[..want]))?;
        cursor.put_slice(&this.buf[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<S: smol::io::AsyncWrite + Unpin> hyper::rt::Write for SmolIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
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

/// The baselines: bare hyper with one HTTP/1.1 keep-alive connection per in-flight slot, and
/// at 64 in flight also with the client's cap of connections (32), shared first come, first
/// served (what queueing behind the cap costs, without the client); the same requests, the
/// body collected and parsed into `serde_json::Value`.
pub(crate) fn hyper_baseline(addr: SocketAddr, ids: &[String], ops: usize) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let auth = basic_auth();
    let connect: Connect<'_> = &|addr| Box::pin(hyper_conn(addr));
    rt.block_on(hyper_rows(addr, &auth, ids, ops, connect, ""))
}

/// The same bare hyper rows on smol (`floor: smol, …`): hyper over the smol adapter's
/// async-io streams, its connection tasks on a smol executor in the measuring thread (as the
/// tokio baseline's are on a current-thread runtime): what the runtime costs by itself,
/// beside the client on smol.
pub(crate) fn hyper_smol_floor(addr: SocketAddr, ids: &[String], ops: usize) -> Vec<Value> {
    let ex = smol::LocalExecutor::new();
    let auth = basic_auth();
    let connect: Connect<'_> = &|addr| Box::pin(hyper_conn_smol(&ex, addr));
    smol::block_on(ex.run(hyper_rows(addr, &auth, ids, ops, connect, "smol, ")))
}

/// Every bare hyper row, connections opened by `connect`; `runtime` goes into the floor
/// rows' names.
async fn hyper_rows(
    addr: SocketAddr,
    auth: &str,
    ids: &[String],
    ops: usize,
    connect: Connect<'_>,
    runtime: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    for op in Op::ALL {
        for in_flight in IN_FLIGHT {
            if !wanted(op, in_flight) {
                continue;
            }
            let mut caps = vec![in_flight];
            if in_flight > CLIENT_CAP {
                caps.push(CLIENT_CAP);
            }
            for cap in caps {
                let row = HyperRow { op, in_flight, cap };
                out.push(hyper_row(addr, auth, ids, ops, row, connect, runtime).await);
            }
        }
    }
    out
}

/// What one bare hyper row measures.
#[derive(Debug, Clone, Copy)]
struct HyperRow {
    op: Op,
    in_flight: usize,
    cap: usize,
}

/// One bare hyper row: `in_flight` workers sharing `cap` connections (FIFO).
async fn hyper_row(
    addr: SocketAddr,
    auth: &str,
    ids: &[String],
    ops: usize,
    row: HyperRow,
    connect: Connect<'_>,
    runtime: &str,
) -> Value {
    let HyperRow { op, in_flight, cap } = row;
    let per = (ops / in_flight).max(1);
    let before = accepted(addr);
    let mut senders = Vec::new();
    for w in 0..cap {
        let mut s = connect(addr).await;
        for round in 0..4 {
            hyper_op(&mut s, addr, auth, op, &ids[(w + round) % ids.len()]).await;
        }
        senders.push(s);
    }
    let warmed = accepted(addr);
    let cpu0 = cpu_now();
    let t0 = Instant::now();
    let lats = if cap == in_flight {
        // One connection per worker.
        join_all(senders.iter_mut().enumerate().map(|(w, s)| async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let id = &ids[(w + i * in_flight) % ids.len()];
                let t = Instant::now();
                hyper_op(s, addr, auth, op, id).await;
                lat.push(t.elapsed());
            }
            lat
        }))
        .await
    } else {
        // Workers share the connections: a queue of idle ones behind a fair (FIFO) lock,
        // so waiting workers take them in arrival order.
        let (tx, rx) = tokio::sync::mpsc::channel(cap);
        for s in senders {
            tx.send(s).await.expect("pool");
        }
        let rx = tokio::sync::Mutex::new(rx);
        join_all((0..in_flight).map(|w| {
            let (tx, rx) = (&tx, &rx);
            async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let id = &ids[(w + i * in_flight) % ids.len()];
                    let t = Instant::now();
                    let mut s = rx.lock().await.recv().await.expect("pooled connection");
                    hyper_op(&mut s, addr, auth, op, id).await;
                    tx.send(s).await.expect("pool");
                    lat.push(t.elapsed());
                }
                lat
            }
        }))
        .await
    };
    let (wall, cpu) = (t0.elapsed(), cpu_now() - cpu0);
    let conns = Conns::of(before, warmed, accepted(addr));
    let name = match (runtime, cap == in_flight) {
        ("", true) => "baseline: bare hyper".to_owned(),
        (_, true) => format!("floor: {runtime}bare hyper"),
        (_, false) => format!("floor: {runtime}hyper, {cap} conns"),
    };
    summarize(&name, op, in_flight, cap, conns, lats.concat(), wall, cpu)
}
