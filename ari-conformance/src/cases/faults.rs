//! Transports, errors and faults: REST over HTTP vs over the WebSocket, typed errors,
//! unreachable hosts, reconnects, outages, and secrets.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_client::events::{ChannelDtmfReceived, ChannelUserevent, RecordingStarted, StasisEnd};
use ari_client::models::IfExists;
use ari_client::{
    Client, ConnectionEvent, ConnectionState, ConnectionStream, Error, ErrorKind, RestTransport,
    Runtime, TransportErrorKind, WsAuth,
};
use ari_testkit::{MockServer, PlaceCall, Refusal, Transport};
use futures::StreamExt;
use serde_json::json;

use super::assert_ari;
use crate::{capture, fast_sim_config, Harness};

/// A server whose log lines matching `pattern` are counted.
fn counting_server(pattern: &'static str) -> (MockServer, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    let server = MockServer::builder()
        .sim_config(fast_sim_config())
        .on_log(move |line| {
            if line.contains(pattern) {
                n.fetch_add(1, Ordering::SeqCst);
            }
        })
        .start();
    (server, count)
}

/// The next connection event (skipping nothing), within the liveness bound.
async fn next_conn<R: Runtime>(h: &Harness<R>, conn: &mut ConnectionStream) -> ConnectionEvent {
    h.live("a connection event", conn.next())
        .await
        .expect("the connection stream lives")
        .expect("no lag")
}

/// Everything REST can return, through one client: typed values and typed errors.
#[derive(Debug, PartialEq)]
struct Snapshot {
    values: Vec<String>,
    errors: Vec<Error>,
    file: bytes::Bytes,
}

async fn rest_snapshot<R: Runtime>(
    h: &Harness<R>,
    c: &Client<R>,
    app: &str,
    bridge: &str,
    channel: &str,
    recording: &str,
) -> Snapshot {
    let mut values = Vec::new();
    let mut push = |what: &str, v: &dyn std::fmt::Debug| values.push(format!("{what}: {v:?}"));
    push(
        "info",
        &h.live("info", c.asterisk().get_info()).await.unwrap(),
    );
    push(
        "global",
        &h.live("global", c.asterisk().get_global_var("CONF_EQ"))
            .await
            .unwrap(),
    );
    let ch = h
        .live("get channel", c.channels().get(channel))
        .await
        .unwrap();
    push("channel", &ch.data());
    let list = h.live("list channels", c.channels().list()).await.unwrap();
    push(
        "channels",
        &list.iter().map(|c| c.data().cloned()).collect::<Vec<_>>(),
    );
    let var = h
        .live(
            "channel var",
            c.channels().get_channel_var(channel, "CONF_VAR"),
        )
        .await
        .unwrap();
    push("channel var", &var);
    let b = h.live("get bridge", c.bridges().get(bridge)).await.unwrap();
    push("bridge", &b.data());
    let eps = h.live("endpoints", c.endpoints().list()).await.unwrap();
    push(
        "endpoints",
        &eps.iter().map(|e| e.data().cloned()).collect::<Vec<_>>(),
    );
    push(
        "sounds",
        &h.live("sounds", c.sounds().list()).await.unwrap(),
    );
    let ds = h
        .live("device states", c.device_states().list())
        .await
        .unwrap();
    push(
        "device states",
        &ds.iter().map(|d| d.data().cloned()).collect::<Vec<_>>(),
    );
    let a = h.live("app", c.applications().get(app)).await.unwrap();
    push("app", &a.data());
    let st = h
        .live("stored", c.recordings().get_stored(recording))
        .await
        .unwrap();
    push("stored", &st.data());
    let file = h
        .live("file", c.recordings().get_stored_file(recording))
        .await
        .unwrap();

    let mut errors = Vec::new();
    errors.push(
        h.live("404", c.channels().get("no-such-channel"))
            .await
            .unwrap_err(),
    );
    errors.push(
        h.live("409", c.bridges().create_with_id(bridge))
            .await
            .unwrap_err(),
    );
    errors.push(
        h.live("422", c.applications().subscribe(app, ["bridge:nope"]))
            .await
            .unwrap_err(),
    );
    errors.push(
        h.live("var 404", c.channels().get_channel_var(channel, "UNSET"))
            .await
            .unwrap_err(),
    );
    errors.push(
        h.live("mailbox 404", c.mailboxes().get("no-such-mailbox"))
            .await
            .unwrap_err(),
    );
    errors.push(
        h.live("400", c.bridges().add_channel(bridge, ["no-such-channel"]))
            .await
            .unwrap_err(),
    );
    Snapshot {
        values,
        errors,
        file,
    }
}

/// REST over HTTP and REST over the events WebSocket give equal typed results and equal
/// typed errors for the same operations (and the WebSocket ones really travel on the
/// WebSocket).
pub async fn rest_over_websocket_equals_http<R: Runtime>(h: &Harness<R>) {
    let app = "conf-rest";
    let http = h.started(&[app]).await;
    let ws = h
        .builder()
        .rest_transport(RestTransport::WebSocket)
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.rest_transport(), RestTransport::WebSocket);
    h.live("start", ws.start(&["conf-rest-ws"])).await.unwrap();

    // The scene: a call with a variable, a bridge, a stored recording, a global variable.
    let ch = h.answered_call(&http, app).await;
    h.live(
        "set var (ws)",
        ws.channels()
            .set_channel_var(ch.id(), "CONF_VAR")
            .value("x"),
    )
    .await
    .unwrap();
    h.live(
        "set global (ws)",
        ws.asterisk().set_global_var("CONF_EQ").value("y"),
    )
    .await
    .unwrap();
    let bridge = http.new_bridge();
    h.live("create bridge", bridge.create()).await.unwrap();
    let rec = http.new_live_recording();
    let rec_started = rec.once::<RecordingStarted>();
    h.live(
        "record",
        ch.record(&rec, "wav").if_exists(IfExists::Overwrite),
    )
    .await
    .unwrap();
    h.live("RecordingStarted", rec_started).await.unwrap();
    h.live("stop recording (ws)", ws.recordings().stop(rec.name()))
        .await
        .unwrap();
    h.live("recording finished", rec.finished()).await.unwrap();

    h.server().clear_requests();
    let over_http = rest_snapshot(h, &http, app, bridge.id(), ch.id(), rec.name()).await;
    let http_requests = h.server().requests();
    h.server().clear_requests();
    // (`connect` verified the server over HTTP, before the WebSocket was open.)
    let fallbacks = ws.stats().websocket_fallbacks;
    let over_ws = rest_snapshot(h, &ws, app, bridge.id(), ch.id(), rec.name()).await;
    let ws_requests = h.server().requests();

    assert_eq!(over_http.values, over_ws.values);
    assert_eq!(over_http.errors, over_ws.errors);
    assert!(over_http.file.starts_with(b"RIFF"));
    // Binary bodies (a WAV file) cannot travel losslessly in a RESTResponse's JSON string
    // `message_body`: the WebSocket transport sends such operations over HTTP, so the bytes
    // are identical.
    assert_eq!(over_ws.file, over_http.file);
    assert!(http_requests.iter().all(|r| r.transport == Transport::Http));
    assert_eq!(http_requests.len(), ws_requests.len());
    assert!(
        ws_requests
            .iter()
            .all(|r| (r.transport == Transport::WebSocket) != r.path.ends_with("/file")),
        "JSON results over the WebSocket, the binary file over HTTP: {ws_requests:?}"
    );
    assert_eq!(ws.stats().websocket_fallbacks, fallbacks);
    assert!(ws.stats().session.requests_sent >= ws_requests.len() as u64);

    h.live("hangup (ws)", ws.channels().hangup(ch.id()))
        .await
        .unwrap();

    // Without the WebSocket (stopped), the WebSocket transport falls back to HTTP with the
    // same results, and counts it.
    ws.stop().await;
    h.eventually("stopped", || !ws.is_connected()).await;
    let before = ws.stats().websocket_fallbacks;
    h.server().clear_requests();
    let info = h
        .live("info (fallback)", ws.asterisk().get_info())
        .await
        .unwrap();
    assert_eq!(format!("info: {info:?}"), over_http.values[0]);
    let err = h
        .live("404 (fallback)", ws.channels().get("no-such-channel"))
        .await
        .unwrap_err();
    assert_eq!(err, over_http.errors[0]);
    assert_eq!(ws.stats().websocket_fallbacks, before + 2);
    assert!(h
        .server()
        .requests()
        .iter()
        .all(|r| r.transport == Transport::Http));
}

/// Errors are typed: status, kind and Asterisk's message, for 404, 409, 412, 422 and 400,
/// with `Display` showing the message.
pub async fn errors_are_typed_404_409_422<R: Runtime>(h: &Harness<R>) {
    let app = "conf-errors";
    let c = h.started(&[app]).await;

    let err = h
        .live("404", c.channels().get("no-such-channel"))
        .await
        .unwrap_err();
    assert_ari(&err, 404, ErrorKind::NotFound, "Channel not found");
    assert!(err.is_not_found() && !err.is_timeout());
    assert!(err.to_string().contains("Channel not found"), "{err}");

    // A channel in the dialplan, not in Stasis: controlling it is a conflict (409), adding
    // it to a bridge is unprocessable (422).
    let outside = h
        .live(
            "originate to the dialplan",
            c.channels()
                .originate("Local/wait@conformance")
                .extension("wait")
                .context("conformance"),
        )
        .await
        .unwrap();
    let err = h
        .live("answer outside Stasis", outside.answer())
        .await
        .unwrap_err();
    assert_ari(
        &err,
        409,
        ErrorKind::Conflict,
        "Channel not in Stasis application",
    );
    let bridge = c.new_bridge();
    h.live("create bridge", bridge.create()).await.unwrap();
    let err = h
        .live("add outside channel", bridge.add_channel([&outside]))
        .await
        .unwrap_err();
    assert_ari(
        &err,
        422,
        ErrorKind::Unprocessable,
        "Channel not in Stasis application",
    );
    // As Asterisk: an unknown channel is a 400 for addChannel.
    let err = h
        .live(
            "add unknown channel",
            bridge.add_channel(["no-such-channel"]),
        )
        .await
        .unwrap_err();
    assert_ari(&err, 400, ErrorKind::BadRequest, "Channel not found");
    let err = h
        .live("duplicate bridge", c.bridges().create_with_id(bridge.id()))
        .await
        .unwrap_err();
    assert_ari(
        &err,
        409,
        ErrorKind::Conflict,
        "Bridge with id already exists",
    );
    // A created (not dialed) channel cannot be answered: 412.
    let created = c.new_channel();
    h.live("create", created.create("PJSIP/bob", app))
        .await
        .unwrap();
    let err = h
        .live("answer created", created.answer())
        .await
        .unwrap_err();
    assert_ari(
        &err,
        412,
        ErrorKind::PreconditionFailed,
        "Channel in invalid state",
    );
    for ch in [&outside, &created] {
        h.live("hangup", c.channels().hangup(ch.id()))
            .await
            .unwrap();
    }
}

fn is_transport_failure(err: &Error) -> bool {
    err.is_timeout()
        || matches!(
            err,
            Error::Transport(t) if matches!(
                t.kind,
                TransportErrorKind::Connect
                    | TransportErrorKind::Io
                    | TransportErrorKind::Closed
                    | TransportErrorKind::Timeout
            )
        )
}

/// An unreachable Asterisk (a closed port; a black hole that accepts and never answers) fails within the
/// request timeout with a transport error or a timeout, never hangs: `connect`, a REST
/// call and `start`.
pub async fn unreachable_host_fails_within_the_request_timeout<R: Runtime>(h: &Harness<R>) {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // A black hole: connections are accepted by the kernel, requests never answered.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_port = hole.local_addr().expect("addr").port();
    let timeout = Duration::from_millis(500);
    for url in [
        format!("http://127.0.0.1:{closed_port}"),
        format!("http://127.0.0.1:{hole_port}"),
    ] {
        let b = h
            .builder_with(&url, "asterisk", "asterisk")
            .request_timeout(timeout)
            .connect_timeout(timeout)
            .reconnect(Harness::<R>::fast_reconnect(Some(1)));
        let err = h
            .within(
                "connect to an unreachable host",
                Duration::from_secs(10),
                b.connect(),
            )
            .await
            .unwrap_err();
        assert!(is_transport_failure(&err), "{url}: {err:?}");
        if let Error::Timeout { after, .. } = err {
            assert_eq!(after, timeout);
        }

        let c = h
            .builder_with(&url, "asterisk", "asterisk")
            .request_timeout(timeout)
            .connect_timeout(timeout)
            .reconnect(Harness::<R>::fast_reconnect(Some(1)))
            .verify_on_connect(false)
            .connect()
            .await
            .unwrap();
        let err = h
            .within(
                "ping an unreachable host",
                Duration::from_secs(10),
                c.asterisk().ping(),
            )
            .await
            .unwrap_err();
        assert!(is_transport_failure(&err), "{url}: {err:?}");
        let err = h
            .within(
                "start on an unreachable host",
                Duration::from_secs(10),
                c.start(&["x"]),
            )
            .await
            .unwrap_err();
        assert!(
            is_transport_failure(&err) || matches!(err, Error::Transport(_)),
            "{url}: {err:?}"
        );
        c.close().await;
    }
    drop(hole);
}

/// The server drops the events WebSocket in the middle of a call: `Reconnecting` then
/// `Connected { reconnected: true }`, both applications registered again, and the call
/// goes on (its listeners get its events, REST works, it ends normally).
pub async fn reconnect_in_the_middle_of_a_call<R: Runtime>(h: &Harness<R>) {
    let (app, app2) = ("conf-reconnect", "conf-reconnect-2");
    let c = h.started(&[app, app2]).await;
    let mut conn = c.connection_events();
    let ch = h.answered_call(&c, app).await;
    let mut keys = ch.stream::<ChannelDtmfReceived>();
    let ended = ch.once::<StasisEnd>();
    assert_eq!(h.server().drop_websocket(app), 1);

    match next_conn(h, &mut conn).await {
        ConnectionEvent::Reconnecting { attempt, .. } => assert_eq!(attempt, 1),
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    match next_conn(h, &mut conn).await {
        ConnectionEvent::Connected { reconnected, .. } => assert!(reconnected),
        other => panic!("expected Connected, got {other:?}"),
    }
    assert!(c.is_connected());
    assert_eq!(c.connection_state(), ConnectionState::Connected);
    let server = h.server();
    h.eventually("both apps registered again", || {
        server.connected_apps() == vec![app.to_string(), app2.to_string()]
    })
    .await;

    // The call continues.
    server.send_dtmf(ch.id(), "5").unwrap();
    let k = h
        .live("DTMF after reconnect", keys.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k.digit, "5");
    let now = h.live("get after reconnect", ch.get()).await.unwrap();
    assert_eq!(now.id(), ch.id());
    let pb = h.live("play", ch.play("sound:beep")).await.unwrap();
    h.live("played", pb.finished()).await.unwrap();
    h.live("hangup", ch.hangup()).await.unwrap();
    h.live("StasisEnd", ended).await.unwrap();
    assert_eq!(c.stats().session.connects, 2);
}

/// Asterisk closes the events WebSocket with a close frame (1001, as when it shuts down):
/// the client answers it, as RFC 6455 requires, before dropping the socket (it used to drop
/// it with the answer still queued), and reconnects.
pub async fn a_close_from_asterisk_is_answered_then_the_client_reconnects<R: Runtime>(
    h: &Harness<R>,
) {
    let app = "conf-close-answered";
    let c = h.started(&[app]).await;
    let mut conn = c.connection_events();
    let server = h.server();
    let before = server.close_replies();
    assert_eq!(server.close_websocket(app, 1001), 1);
    match next_conn(h, &mut conn).await {
        ConnectionEvent::Reconnecting {
            attempt, reason, ..
        } => {
            assert_eq!(attempt, 1);
            assert!(reason.contains("1001"), "{reason}");
        }
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    h.eventually("Asterisk's close answered", || {
        server.close_replies() == before + 1
    })
    .await;
    match next_conn(h, &mut conn).await {
        ConnectionEvent::Connected { reconnected, .. } => assert!(reconnected),
        other => panic!("expected Connected, got {other:?}"),
    }
    h.eventually("the app registered again", || {
        server.connected_apps() == vec![app.to_string()]
    })
    .await;
}

/// The server refuses reconnections beyond the reconnect budget: `Reconnecting` for each
/// attempt, then `MaxRetries` once; `start` again works when the server is back; `stop`
/// reports `Closed`.
pub async fn max_retries_when_reconnection_is_refused<R: Runtime>(h: &Harness<R>) {
    let app = "conf-maxretries";
    let c = h
        .builder()
        .reconnect(Harness::<R>::fast_reconnect(Some(3)))
        .connect()
        .await
        .unwrap();
    h.live("start", c.start(&[app])).await.unwrap();
    let mut conn = c.connection_events();
    let server = h.server();
    server.refuse_connections(1000, Refusal::ServiceUnavailable);
    assert_eq!(server.drop_websocket(app), 1);
    let mut attempts = Vec::new();
    loop {
        match next_conn(h, &mut conn).await {
            ConnectionEvent::Reconnecting { attempt, .. } => attempts.push(attempt),
            ConnectionEvent::MaxRetries { attempts: n, .. } => {
                assert_eq!(n, 3);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(attempts, vec![1, 2, 3]);
    assert_eq!(c.connection_state(), ConnectionState::GaveUp);
    assert!(!c.is_connected());

    server.refuse_connections(0, Refusal::ServiceUnavailable);
    h.live("start again", c.start(&[app])).await.unwrap();
    match next_conn(h, &mut conn).await {
        ConnectionEvent::Connected { .. } => {}
        other => panic!("expected Connected, got {other:?}"),
    }
    assert!(server.wait_for_app(app, Duration::from_secs(5)));
    let ch = h.answered_call(&c, app).await;
    h.live("hangup", ch.hangup()).await.unwrap();

    // `stop` closes the connection for good: `Closed`, the app unregistered, no reconnect.
    c.stop().await;
    match next_conn(h, &mut conn).await {
        ConnectionEvent::Closed => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    h.eventually("the app is unregistered", || {
        server.connected_apps().is_empty()
    })
    .await;
    assert_eq!(c.connection_state(), ConnectionState::Stopped);
}

/// `close` ends everything: streams end, awaited events and `start` fail with `Closed`,
/// requests fail with `Closed`, and the server sees the WebSocket go.
pub async fn close_ends_streams_listeners_and_requests<R: Runtime>(h: &Harness<R>) {
    let app = "conf-close";
    let c = h.started(&[app]).await;
    let ch = h.answered_call(&c, app).await;
    let mut all = c.event_stream();
    let mut chan_events = ch.events();
    let awaited = ch.once::<ChannelDtmfReceived>();
    let client_awaited = c.once::<ChannelUserevent>();
    let mut conn = c.connection_events();
    c.close().await;
    // Streams hand out what they had queued, then end.
    h.live("client stream ends", async {
        while let Some(item) = all.next().await {
            item.expect("queued events, no lag");
        }
    })
    .await;
    h.live("channel stream ends", async {
        while let Some(item) = chan_events.next().await {
            item.expect("queued events, no lag");
        }
    })
    .await;
    let err = h.live("awaited event", awaited).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    let err = h
        .live("client awaited event", client_awaited)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    // The connection stream reports the end, then ends.
    loop {
        match h.live("connection stream", conn.next()).await {
            None => break,
            Some(Ok(ConnectionEvent::Closed)) => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    let err = h.live("request after close", ch.get()).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    let err = h
        .live("start after close", c.start(&[app]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    let server = h.server();
    h.eventually("the server sees the WebSocket closed", || {
        server.connected_apps().is_empty()
    })
    .await;
    assert_eq!(c.live_subscriptions(), 0);
}

/// Over 10,000 events the WebSocket is dropped every few hundred events while calls are
/// live: the client reconnects each time, connection events come in order, every
/// application and listener is restored, and no event is delivered twice.
pub async fn websocket_dropped_every_few_hundred_of_10000_events<R: Runtime>(h: &Harness<R>) {
    const TOTAL: usize = 10_000;
    let app = "conf-drops";
    let c = h
        .builder()
        .event_queue_capacity(TOTAL * 2)
        .reconnect(Harness::<R>::fast_reconnect(None).stable_after(Duration::from_millis(1)))
        .connect()
        .await
        .unwrap();
    h.live("start", c.start(&[app])).await.unwrap();
    let mut conn = c.connection_events();

    // Live calls, each with a DTMF stream.
    let mut calls = Vec::new();
    for _ in 0..3 {
        let ch = h.answered_call(&c, app).await;
        let keys = ch.stream::<ChannelDtmfReceived>();
        calls.push((ch, keys));
    }

    // A consumer of every user event, in order.
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut stream = c.stream::<ChannelUserevent>();
    let sink = seen.clone();
    c.runtime().spawn(async move {
        while let Some(item) = stream.next().await {
            let (ev, _) = item.expect("no lag with a large queue");
            if let Some(seq) = ev.userevent.get("seq").and_then(|v| v.as_u64()) {
                sink.lock().unwrap().push(seq);
            }
        }
    });

    let server = h.server();
    let mut seq = 0u64;
    let mut rounds = 0u64;
    let mut written_before_drop = 0usize;
    while (seq as usize) < TOTAL {
        let n = 250 + (rounds as usize * 37) % 100;
        server.drop_websocket_after(app, n);
        for _ in 0..n + 10 {
            server.push_event(
                app,
                json!({"type": "ChannelUserevent", "eventname": "seq", "userevent": {"seq": seq}}),
            );
            seq += 1;
        }
        written_before_drop += n;
        rounds += 1;
        // Reconnecting (one or more), then Connected.
        match next_conn(h, &mut conn).await {
            ConnectionEvent::Reconnecting { .. } => {}
            other => panic!("round {rounds}: expected Reconnecting, got {other:?}"),
        }
        loop {
            match next_conn(h, &mut conn).await {
                ConnectionEvent::Reconnecting { .. } => {}
                ConnectionEvent::Connected { reconnected, .. } => {
                    assert!(reconnected);
                    break;
                }
                other => panic!("round {rounds}: unexpected {other:?}"),
            }
        }
        h.eventually("the app is registered again", || {
            server.connected_apps() == vec![app.to_string()]
        })
        .await;
    }
    // A last event on the final connection.
    server.push_event(
        app,
        json!({"type": "ChannelUserevent", "eventname": "seq", "userevent": {"seq": seq}}),
    );
    h.eventually("the last event arrives", || {
        seen.lock().unwrap().last() == Some(&seq)
    })
    .await;

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "every event at most once, in order"
    );
    assert!(
        seen.len() >= written_before_drop,
        "{} events delivered, {written_before_drop} written before the drops",
        seen.len()
    );
    assert!(rounds >= 25, "{rounds} drops");
    assert_eq!(c.stats().session.connects, rounds + 1);

    // Every live call's listener still works, and so does REST.
    for (ch, keys) in &mut calls {
        server.send_dtmf(ch.id(), "7").unwrap();
        let k = h
            .live("DTMF after the drops", keys.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(k.digit, "7");
        h.live("hangup", ch.hangup()).await.unwrap();
    }
}

/// Asterisk stays down longer than the retry budget: `MaxRetries` exactly once, the number
/// of connection attempts the server saw is bounded by the policy, and nothing more happens
/// afterwards (no busy loop).
pub async fn asterisk_down_longer_than_the_retry_budget<R: Runtime>(h: &Harness<R>) {
    const MAX: u32 = 4;
    let app = "conf-down";
    let (server, refused) = counting_server("refused GET /ari/events");
    let c = h
        .builder_for(&server)
        .reconnect(Harness::<R>::fast_reconnect(Some(MAX)))
        .connect()
        .await
        .unwrap();
    h.live("start", c.start(&[app])).await.unwrap();
    let events = Arc::new(Mutex::new(Vec::<ConnectionEvent>::new()));
    let log = events.clone();
    c.on_connection(move |ev| {
        let log = log.clone();
        async move { log.lock().unwrap().push(ev) }
    });
    server.refuse_connections(10_000, Refusal::ServiceUnavailable);
    server.drop_websocket(app);
    h.eventually("MaxRetries", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ConnectionEvent::MaxRetries { .. }))
    })
    .await;
    let attempts_at_give_up = refused.load(Ordering::SeqCst);
    assert_eq!(attempts_at_give_up, MAX as usize, "one upgrade per attempt");
    // Well past the longest delay of the policy: nothing more is tried or reported.
    h.sleep(Duration::from_millis(600)).await;
    assert_eq!(refused.load(Ordering::SeqCst), attempts_at_give_up);
    let events = events.lock().unwrap().clone();
    let max_retries: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, ConnectionEvent::MaxRetries { .. }))
        .collect();
    assert_eq!(max_retries.len(), 1, "{events:?}");
    assert!(matches!(
        max_retries[0],
        ConnectionEvent::MaxRetries { attempts, .. } if *attempts == MAX
    ));
    let reconnecting = events
        .iter()
        .filter(|e| matches!(e, ConnectionEvent::Reconnecting { .. }))
        .count();
    assert_eq!(reconnecting, MAX as usize, "{events:?}");
    assert_eq!(c.connection_state(), ConnectionState::GaveUp);
    assert_eq!(c.stats().session.connects, 1);
}

/// REST calls during an outage fail within the request timeout: Asterisk not answering
/// (over HTTP and over the WebSocket) gives `Error::Timeout`, Asterisk gone gives a
/// transport error or a timeout; nothing hangs.
pub async fn rest_calls_during_an_outage_fail_within_their_timeout<R: Runtime>(h: &Harness<R>) {
    let timeout = Duration::from_millis(300);
    let app = "conf-outage";
    let http = h
        .builder()
        .request_timeout(timeout)
        .connect()
        .await
        .unwrap();
    let ws = h
        .builder()
        .request_timeout(timeout)
        .rest_transport(RestTransport::WebSocket)
        .connect()
        .await
        .unwrap();
    h.live("start", ws.start(&[app])).await.unwrap();
    h.server().set_response_delay(Some(Duration::from_secs(5)));
    for c in [&http, &ws] {
        let err = h
            .within(
                "ping while Asterisk hangs",
                Duration::from_secs(4),
                c.asterisk().ping(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { after, .. } if after == timeout),
            "{:?}: {err:?}",
            c.rest_transport()
        );
        assert!(err.is_timeout());
    }
    h.server().set_response_delay(None);
    let pong = h.live("ping after", http.asterisk().ping()).await.unwrap();
    assert_eq!(pong.ping, "pong");

    // A REST-over-WebSocket request pending when the WebSocket drops fails with a
    // transport error at once (not at its timeout), and the client reconnects.
    let slow = h
        .builder()
        .request_timeout(Duration::from_secs(20))
        .rest_transport(RestTransport::WebSocket)
        .connect()
        .await
        .unwrap();
    h.live("start", slow.start(&["conf-outage-2"]))
        .await
        .unwrap();
    h.server().set_response_delay(Some(Duration::from_secs(3)));
    let sent_before = slow.stats().session.requests_sent;
    let pending = slow.asterisk().ping().into_future();
    let server = h.server();
    let dropper = async {
        h.eventually("the request is sent on the WebSocket", || {
            slow.stats().session.requests_sent > sent_before
        })
        .await;
        server.drop_websocket("conf-outage-2");
    };
    let (result, ()) = h
        .within(
            "a pending request when the WebSocket drops",
            Duration::from_secs(10),
            futures::future::join(pending, dropper),
        )
        .await;
    h.server().set_response_delay(None);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, Error::Transport(t) if t.kind == TransportErrorKind::Closed),
        "{err:?}"
    );
    h.eventually("the client reconnects", || slow.is_connected())
        .await;
    let pong = h
        .live("ping over the new WebSocket", slow.asterisk().ping())
        .await
        .unwrap();
    assert_eq!(pong.ping, "pong");

    // Asterisk gone altogether.
    let gone = MockServer::builder().sim_config(fast_sim_config()).start();
    let c = h
        .builder_for(&gone)
        .request_timeout(timeout)
        .connect_timeout(timeout)
        .reconnect(Harness::<R>::fast_reconnect(Some(2)))
        .connect()
        .await
        .unwrap();
    h.live("start", c.start(&[app])).await.unwrap();
    drop(gone);
    for _ in 0..3 {
        let err = h
            .within(
                "ping while Asterisk is gone",
                Duration::from_secs(4),
                c.asterisk().ping(),
            )
            .await
            .unwrap_err();
        assert!(is_transport_failure(&err), "{err:?}");
    }
}

/// Standard base64 (for the `Authorization: Basic` value to look for).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Secrets: over a whole session (connect, start, a call with media, REST over both
/// transports, `api_key` WebSocket auth, a reconnect, a wrong password, errors, close),
/// the captured `tracing` output never contains the password or the `Basic` credentials,
/// and neither do `Debug`/`Display` of the client, the builder and the errors.
pub async fn secrets_never_appear_in_tracing_debug_or_errors<R: Runtime>(h: &Harness<R>) {
    assert!(capture::install(), "the capturing subscriber is installed");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    let user = "conf-user";
    let password = format!("pW{nanos}x-Secret");
    let wrong = format!("Wr{nanos}ong-Secret");
    let basic = base64(format!("{user}:{password}").as_bytes());
    let wrong_basic = base64(format!("{user}:{wrong}").as_bytes());
    capture::watch(&[&password, &wrong, &basic, &wrong_basic]);
    let before = capture::total_lines();

    let app = "conf-secrets";
    let server = MockServer::builder()
        .user(user, &password)
        .sim_config(fast_sim_config())
        .start();
    let url = server.base_url();
    let builder = h.builder_with(&url, user, &password);
    let builder_debug = format!("{builder:?}");
    let c = h.live("connect", builder.connect()).await.unwrap();
    let ws = h
        .builder_with(&url, user, &password)
        .rest_transport(RestTransport::WebSocket)
        .ws_auth(WsAuth::ApiKey)
        .connect()
        .await
        .unwrap();
    h.live("start", c.start(&[app])).await.unwrap();
    h.live("start ws", ws.start(&["conf-secrets-ws"]))
        .await
        .unwrap();
    let mut errors = Vec::new();
    {
        let mut starts = c.once::<ari_client::events::StasisStart>();
        let id = server
            .place_call(PlaceCall::new("PJSIP/alice", app))
            .unwrap();
        let (_, ch) = h.live("StasisStart", &mut starts).await.unwrap();
        assert_eq!(ch.id(), id);
        h.live("answer (ws)", ws.channels().answer(ch.id()))
            .await
            .unwrap();
        let pb = h.live("play", ch.play("sound:beep")).await.unwrap();
        h.live("played", pb.finished()).await.unwrap();
        errors.push(
            h.live("404", ch.get_channel_var("UNSET"))
                .await
                .unwrap_err(),
        );
        errors.push(
            h.live("404 (ws)", ws.channels().get("nope"))
                .await
                .unwrap_err(),
        );
        let mut conn = c.connection_events();
        server.drop_websocket(app);
        loop {
            if let ConnectionEvent::Connected { .. } = next_conn(h, &mut conn).await {
                break;
            }
        }
        h.live("hangup", ch.hangup()).await.unwrap();
    }
    let bad = h
        .builder_with(&url, user, &wrong)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(401));
    errors.push(bad);
    let bad_ws = h
        .builder_with(&url, user, &wrong)
        .verify_on_connect(false)
        .ws_auth(WsAuth::ApiKey)
        .reconnect(Harness::<R>::fast_reconnect(Some(1)))
        .connect()
        .await
        .unwrap();
    errors.push(
        h.live("start with a wrong password", bad_ws.start(&["x"]))
            .await
            .unwrap_err(),
    );
    // A password in the URL is refused without being echoed.
    errors.push(
        h.builder_with(
            &format!("http://{user}:{password}@127.0.0.1:{}", server.port()),
            user,
            &password,
        )
        .connect()
        .await
        .unwrap_err(),
    );

    let mut texts = vec![builder_debug, format!("{c:?}"), format!("{ws:?}")];
    for e in &errors {
        texts.push(format!("{e:?}"));
        texts.push(e.to_string());
    }
    for text in &texts {
        for secret in [&password, &wrong, &basic, &wrong_basic] {
            assert!(!text.contains(secret.as_str()), "secret in {text}");
        }
    }
    c.close().await;
    ws.close().await;
    bad_ws.close().await;
    drop(server);

    assert!(
        capture::total_lines() > before,
        "the session produced tracing output"
    );
    assert!(capture::any_line(|l| l.contains("ari.request")));
    let leaks = capture::leaks();
    assert!(leaks.is_empty(), "secrets in tracing output: {leaks:#?}");
}

/// Bad input on the events WebSocket never crashes the client: a malformed frame, a
/// binary frame and an unknown event type are counted and skipped, and the next event is
/// delivered on the same connection; a frame over the size limit is refused (counted, or
/// the connection is reopened) and events flow again afterwards.
pub async fn bad_frames_are_counted_and_skipped<R: Runtime>(h: &Harness<R>) {
    let app = "conf-badframes";
    let limit = 64 * 1024;
    let c = h
        .builder()
        .limits(ari_client::Limits::default().max_frame_bytes(limit))
        .connect()
        .await
        .unwrap();
    h.live("start", c.start(&[app])).await.unwrap();
    let mut events = c.event_stream();
    let server = h.server();
    let marker =
        |name: &str| json!({"type": "ChannelUserevent", "eventname": name, "userevent": {}});
    async fn next_marker(
        h: &Harness<impl Runtime>,
        events: &mut ari_client::EventStream,
    ) -> String {
        h.live("next event", async {
            loop {
                match events.next().await.expect("stream lives").expect("no lag") {
                    ari_client::Event::ChannelUserevent(e) => return e.eventname.into(),
                    _ => continue,
                }
            }
        })
        .await
    }

    server.push_malformed_frame(app);
    server.push_binary_frame(app, b"\x00\x01binary");
    server.push_event(app, json!({"type": "SomethingNew", "detail": 1}));
    server.push_event(app, marker("after-bad"));
    assert_eq!(next_marker(h, &mut events).await, "after-bad");
    let stats = c.stats().session;
    assert_eq!(stats.decode_errors, 1, "{stats:?}");
    assert_eq!(stats.unknown_events, 1, "{stats:?}");
    assert_eq!(stats.connects, 1, "the same connection");

    server.push_oversized_frame(app, limit * 2);
    // Either the frame is dropped and counted, or the transport refuses it and the client
    // reconnects.
    h.eventually("the oversized frame is refused", || {
        let st = c.stats().session;
        st.oversized_frames == 1 || st.connects == 2
    })
    .await;
    h.eventually("connected", || {
        c.is_connected() && server.connected_apps() == vec![app.to_string()]
    })
    .await;
    server.push_event(app, marker("later"));
    let mut got = Vec::new();
    while !got.iter().any(|n: &String| n == "later") {
        got.push(next_marker(h, &mut events).await);
    }
    let stats = c.stats().session;
    assert!(
        stats.oversized_frames == 1 || stats.connects == 2,
        "the oversized frame was refused: {stats:?}"
    );
}

/// `start` again with another set of applications reconnects with the new set (the same
/// set is a no-op); keepalive pings are sent and answered without dropping the connection.
pub async fn restart_with_other_apps_and_keepalive<R: Runtime>(h: &Harness<R>) {
    let c = h
        .builder()
        .keepalive(Some(ari_client::Keepalive::new(
            Duration::from_millis(20),
            Duration::from_secs(1),
        )))
        .connect()
        .await
        .unwrap();
    h.live("start a", c.start(&["conf-a"])).await.unwrap();
    let server = h.server();
    assert_eq!(server.connected_apps(), vec!["conf-a".to_string()]);
    h.live("start a again", c.start(&["conf-a"])).await.unwrap();
    assert_eq!(c.stats().session.connects, 1, "the same set is a no-op");

    h.live("start a, b", c.start(&["conf-a", "conf-b"]))
        .await
        .unwrap();
    h.eventually("both apps registered", || {
        server.connected_apps() == vec!["conf-a".to_string(), "conf-b".to_string()]
    })
    .await;
    let ch = h.answered_call(&c, "conf-b").await;
    h.live("hangup", ch.hangup()).await.unwrap();

    // Many pong timeouts' worth of pings: each was answered in time.
    h.eventually("keepalive pings", || c.stats().session.pings >= 75)
        .await;
    let st = c.stats().session;
    assert_eq!(st.keepalive_timeouts, 0, "{st:?}");
    assert!(c.is_connected());
    assert_eq!(
        server.connections().len(),
        1,
        "one connection: {:?}",
        server.connections()
    );
}

/// Asterisk restarts under a connected application: its calls are gone and no event will
/// ever say so. After the reconnect the client sees Asterisk's new startup time (`GET
/// /asterisk/info`), so a wait on the old call ends with [`Error::Ended`] instead of hanging
/// (an IVR task per call would leak), its event stream ends, its subscriptions are released,
/// and a call on the restarted Asterisk is followed as usual.
pub async fn asterisk_restart_ends_the_previous_runs_calls<R: Runtime>(h: &Harness<R>) {
    let run = |base_ms: u64| {
        let mut cfg = fast_sim_config();
        cfg.wall_clock_base_ms = base_ms;
        cfg
    };
    let first = MockServer::builder()
        .sim_config(run(1_795_691_627_914))
        .start();
    let port = first.port();
    let c = h.builder_for(&first).connect().await.unwrap();
    h.live("start", c.start(&["restarts"])).await.unwrap();
    let old = h
        .incoming_call_on(&first, &c, PlaceCall::new("PJSIP/alice", "restarts"))
        .await;
    let hangup = old.once::<ari_client::events::ChannelHangupRequest>();
    let mut old_events = old.events();
    let live_before = c.live_subscriptions();

    // Asterisk restarts on the same address: a new startup time, none of the old calls.
    drop(first);
    let second = MockServer::builder()
        .sim_config(run(1_795_691_627_914 + 3_600_000))
        .port(port)
        .start();
    let err = h
        .live("the old call's wait ends", hangup.into_future())
        .await
        .expect_err("the old call cannot hang up any more");
    assert!(matches!(err, Error::Ended { .. }), "{err}");
    let end = h
        .live("the old call's stream ends", old_events.next())
        .await;
    assert!(end.is_none(), "the stream ended: {end:?}");
    assert!(
        c.live_subscriptions() < live_before,
        "the old call's subscriptions were released: {live_before} -> {}",
        c.live_subscriptions()
    );
    assert_eq!(c.stats().session.connects, 2, "one reconnect");

    // The restarted Asterisk's calls are followed as usual.
    let new = h
        .incoming_call_on(&second, &c, PlaceCall::new("PJSIP/alice", "restarts"))
        .await;
    let mut new_events = new.events();
    h.live("answer the new call", new.answer()).await.unwrap();
    let ev = h
        .live("the new call's events keep coming", new_events.next())
        .await;
    assert!(
        matches!(ev, Some(Ok(_))),
        "an event of the new call: {ev:?}"
    );
    h.live("hang the new call up", new.hangup()).await.unwrap();
}
