//! The client's lifecycle: dropping the last handle and `close`/`stop` shut it down, end its
//! WebSocket and leave no task of it behind.

use std::time::Duration;

use ari_client::events::{ChannelDtmfReceived, ChannelUserevent, StasisStart};
use ari_client::{Error, Executor, Runtime};
use ari_testkit::{CloseReason as ServerCloseReason, ClosedConnection, MockServer};
use futures::StreamExt;

use crate::{CountedRuntime, Harness};

/// A harness whose client runtime counts the tasks spawned through it (its own mock server).
fn counted<R: Runtime>(h: &Harness<R>) -> Harness<CountedRuntime<R>> {
    Harness::new(CountedRuntime::new(h.runtime().clone()))
}

/// Whether the server saw `app`'s WebSocket closed by the client.
fn closed_by_client(server: &MockServer, app: &str) -> bool {
    server.connected_apps().is_empty()
        && server
            .closed_connections()
            .iter()
            .any(|c: &ClosedConnection| {
                c.apps.iter().any(|a| a == app) && c.reason == ServerCloseReason::ClientClosed
            })
}

/// Every user handle of a started client is dropped while handlers (on the client, on a
/// channel, on connection events), streams and awaited events are registered, and tasks
/// consume the streams: the server sees the WebSocket closed by the client, the streams end,
/// the awaited events fail with `Closed`, and no task spawned through the client's runtime is
/// left.
pub async fn dropping_the_last_handle_shuts_the_client_down<R: Runtime>(h: &Harness<R>) {
    let app = "conf-drop-last";
    let hc = counted(h);
    let rt = hc.runtime().clone();
    let c = hc.started(&[app]).await;
    let ch = hc.answered_call(&c, app).await;

    c.on::<StasisStart>(|_, channel| async move {
        let _ = channel.id();
    });
    c.on_any(|_| async {});
    ch.on::<ChannelDtmfReceived>(|_, _| async {});
    c.on_connection(|_| async {});

    let (tx, mut ended) = futures::channel::mpsc::unbounded::<&'static str>();
    let mut all = c.event_stream();
    let t = tx.clone();
    rt.spawn(async move {
        while all.next().await.is_some() {}
        let _ = t.unbounded_send("event stream ended");
    });
    let mut starts = c.stream::<StasisStart>();
    let t = tx.clone();
    rt.spawn(async move {
        while starts.next().await.is_some() {}
        let _ = t.unbounded_send("client stream ended");
    });
    let mut keys = ch.stream::<ChannelDtmfReceived>();
    let t = tx.clone();
    rt.spawn(async move {
        while keys.next().await.is_some() {}
        let _ = t.unbounded_send("channel stream ended");
    });
    let user = c.once::<ChannelUserevent>();
    let t = tx.clone();
    rt.spawn(async move {
        if let Err(Error::Closed { .. }) = user.await {
            let _ = t.unbounded_send("client awaited event closed");
        }
    });
    let dtmf = ch.once::<ChannelDtmfReceived>();
    let t = tx;
    rt.spawn(async move {
        if let Err(Error::Closed { .. }) = dtmf.await {
            let _ = t.unbounded_send("channel awaited event closed");
        }
    });
    assert!(c.live_subscriptions() >= 8, "{}", c.live_subscriptions());

    drop(ch);
    drop(c);

    let mut seen = Vec::new();
    while let Some(what) = h.live("the consumers finish", ended.next()).await {
        seen.push(what);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "channel awaited event closed",
            "channel stream ended",
            "client awaited event closed",
            "client stream ended",
            "event stream ended",
        ]
    );
    let server = hc.server();
    h.eventually("the server sees the WebSocket closed by the client", || {
        closed_by_client(server, app)
    })
    .await;
    h.eventually("no task of the client is left", || rt.alive() == 0)
        .await;
    // The driver and the five consumers at least ran through the counted runtime.
    assert!(rt.spawned() >= 6, "{}", rt.spawned());
}

/// `stop().await` returns after the close frame went out (the server sees the client close
/// the WebSocket) and the client can start again; `close().await` returns after the driver
/// exited: no task of the client is left and the server saw the close.
pub async fn stop_and_close_wait_for_the_close_frame<R: Runtime>(h: &Harness<R>) {
    let app = "conf-stop-close";
    let hc = counted(h);
    let rt = hc.runtime().clone();
    let c = hc.started(&[app]).await;
    let server = hc.server();
    let before = rt.alive();
    assert!(before >= 1, "the driver runs");
    h.live("stop", c.stop()).await;
    assert!(!c.is_connected());
    h.eventually("the server sees the client close the WebSocket", || {
        closed_by_client(server, app)
    })
    .await;
    // Stopped, not closed: the driver is still there and the client starts again.
    h.live("start again", c.start(&[app])).await.unwrap();
    assert!(server.wait_for_app(app, Duration::from_secs(5)));
    h.live("close", c.close()).await;
    h.eventually("the second WebSocket closed by the client", || {
        server.connected_apps().is_empty()
            && server
                .closed_connections()
                .iter()
                .filter(|c| c.reason == ServerCloseReason::ClientClosed)
                .count()
                == 2
    })
    .await;
    h.eventually("no task of the client is left", || rt.alive() == 0)
        .await;
    // Closing again, or stopping a closed client, returns at once.
    h.live("close again", c.close()).await;
    h.live("stop after close", c.stop()).await;
}

/// A channel as Asterisk sends it in events.
fn channel_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "name": format!("PJSIP/alice-{id}"), "state": "Up", "protocol_id": "",
        "caller": {"name": "Alice", "number": "100"}, "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {"context": "default", "exten": "s", "priority": 1, "app_name": "Stasis",
                     "app_data": ""},
        "creationtime": "2026-11-26T12:14:21.059+0000", "language": "en"
    })
}

/// `client.incoming()` against a server that writes each call's events back to back right
/// after its `StasisStart` (three calls, the last event of each a `StasisEnd`, nothing awaited
/// in between): each call's stream has every event after its `StasisStart`, in order, and
/// ends (the `StasisEnd` linger).
pub async fn incoming_calls_miss_no_event_after_stasis_start<R: Runtime>(h: &Harness<R>) {
    let app = "conf-incoming";
    // Only the frames the case pushes: no simulator (so no `GET /asterisk/info` either).
    let server = MockServer::builder().without_simulator().start();
    let c = h
        .live(
            "connect",
            h.builder_for(&server).verify_on_connect(false).connect(),
        )
        .await
        .unwrap();
    h.live("start", c.start(app)).await.unwrap();
    let mut incoming = c.incoming();
    let ids = ["in-1", "in-2", "in-3"];
    for id in ids {
        let ch = channel_json(id);
        server.push_event(
            app,
            serde_json::json!({"type": "StasisStart", "args": [], "channel": ch}),
        );
        for digit in ["1", "2", "3"] {
            server.push_event(
                app,
                serde_json::json!({"type": "ChannelDtmfReceived", "digit": digit,
                                   "duration_ms": 100, "channel": ch}),
            );
        }
        server.push_event(
            app,
            serde_json::json!({"type": "ChannelHangupRequest", "cause": 16, "channel": ch}),
        );
        server.push_event(app, serde_json::json!({"type": "StasisEnd", "channel": ch}));
    }
    for id in ids {
        let (start, channel, events) = h
            .live("an incoming call", incoming.next())
            .await
            .expect("the stream lives")
            .expect("no call dropped");
        assert_eq!(start.channel.id, id);
        assert_eq!(channel.id(), id);
        let types: Vec<String> = h
            .live(
                "the call's stream ends",
                events
                    .map(|e| e.expect("no lag").type_name().to_string())
                    .collect(),
            )
            .await;
        assert_eq!(
            types,
            [
                "ChannelDtmfReceived",
                "ChannelDtmfReceived",
                "ChannelDtmfReceived",
                "ChannelHangupRequest",
                "StasisEnd"
            ],
            "{id}"
        );
    }
    assert_eq!(c.stats().dropped_events, 0);
    drop(incoming);
    assert_eq!(c.live_subscriptions(), 0);
    c.close().await;
}
