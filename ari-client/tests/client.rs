//! The typed client over a fake in-memory runtime: REST calls, timeouts, events and their
//! listeners, lifecycles, REST over WebSocket, reconnects. Time is virtual: nothing here
//! depends on how fast the machine is.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ari_client::events::{
    ChannelDestroyed, ChannelDtmfReceived, ChannelEnteredBridge, ChannelHangupRequest, StasisStart,
};
use ari_client::{
    Bridge, Call, Channel, Client, ConnectionEvent, Error, ErrorKind, Lagged, ReconnectPolicy,
    RestTransport, WsMessage,
};
use ari_proto::ops;
use futures_util::StreamExt;
use support::*;

#[test]
fn connect_verifies_and_keeps_credentials_out_of_debug() {
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    let reqs = rt.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0, http::Method::GET);
    assert_eq!(reqs[0].1, "http://pbx:8088/ari/asterisk/info");
    let dbg = format!("{client:?}");
    assert!(!dbg.contains("s3cret"), "{dbg}");
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s3cret", rt.clone());
    assert!(!format!("{b:?}").contains("s3cret"));
    assert_eq!(client.base_url(), "http://pbx:8088/ari");
}

#[test]
fn connect_with_bad_credentials_is_an_ari_error() {
    let rt = FakeRt::default();
    rt.respond(|_| Reply::Respond(401, r#"{"message":"Authentication required"}"#.into()));
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "wrong", rt.clone());
    let err = rt.block_on(b.connect()).unwrap().unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.ari_kind(), Some(ErrorKind::Unauthorized));
    assert!(!format!("{err:?} {err}").contains("wrong"));
    // What to check, not only Asterisk's words.
    let message = err.to_string();
    assert!(
        message.starts_with("Asterisk answered 401: Authentication required"),
        "{message}"
    );
    assert!(message.contains("http://pbx:8088/ari"), "{message}");
    assert!(message.contains("password"), "{message}");
    assert!(message.contains("ari.conf"), "{message}");
}

#[test]
fn connect_to_a_url_without_ari_says_what_to_check() {
    // Asterisk's HTTP server without ARI at that path (a wrong `prefix`, ARI disabled or
    // res_ari not loaded) answers its HTML 404 page.
    let rt = FakeRt::default();
    rt.respond(|_| {
        Reply::Respond(
            404,
            "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n\
             <title>404 Not Found</title>\n</head><body>\n<h1>Not Found</h1>\n\
             <p>The requested URL was not found on this server.</p>\n</body></html>"
                .into(),
        )
    });
    let b = Client::builder_with_runtime("http://pbx:8088/asterisk", "u", "p", rt.clone());
    let err = rt.block_on(b.connect()).unwrap().unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.ari_kind(), Some(ErrorKind::NotFound));
    let message = err.to_string();
    assert!(
        message.contains("no ARI at http://pbx:8088/asterisk/ari"),
        "{message}"
    );
    assert!(message.contains("prefix"), "{message}");
    assert!(message.contains("enabled = yes"), "{message}");
}

#[test]
fn invalid_url_is_a_build_error() {
    let rt = FakeRt::default();
    let b = Client::builder_with_runtime("ftp://pbx", "u", "p", rt.clone());
    assert!(matches!(
        rt.block_on(b.connect()).unwrap(),
        Err(Error::Build(_))
    ));
}

#[test]
fn unreachable_asterisk_fails_within_the_request_timeout() {
    let rt = FakeRt::default();
    rt.respond(|_| Reply::Hang);
    let b = Client::builder_with_runtime("http://10.255.255.1:8088", "u", "p", rt.clone())
        .request_timeout(Duration::from_secs(3));
    let pending = rt.start(b.connect());
    assert!(!pending.is_done(), "nothing answered yet");
    rt.advance(Duration::from_secs(2));
    assert!(!pending.is_done());
    rt.advance(Duration::from_secs(1));
    let err = pending.take().expect("done at the deadline").unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(matches!(
        err,
        Error::Timeout {
            operation: "asterisk.getInfo",
            ..
        }
    ));
}

#[test]
fn calls_decode_and_wrap_instances() {
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    rt.respond(|req| match (req.method().as_str(), req.uri().path()) {
        ("GET", "/ari/channels") => Reply::Respond(
            200,
            format!("[{},{}]", channel_json("c1"), channel_json("c2")),
        ),
        ("GET", "/ari/channels/nope") => {
            Reply::Respond(404, r#"{"message":"Channel not found"}"#.into())
        }
        ("POST", "/ari/channels/c1/answer") => Reply::Respond(204, String::new()),
        _ => Reply::Respond(500, "unexpected".into()),
    });
    let list = Call::new(client.clone(), ops::channels::List::new());
    let chans: Vec<Channel<FakeRt>> = rt.block_on(list.into_future_boxed()).unwrap().unwrap();
    assert_eq!(chans.len(), 2);
    assert_eq!(chans[0].id(), "c1");
    assert_eq!(chans[1].data().unwrap().name, "PJSIP/alice-1");
    assert_eq!(String::from(&chans[0]), "c1");

    let get = Call::new(client.clone(), ops::channels::Get::new("nope"));
    let err = rt.block_on(get.into_future_boxed()).unwrap().unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.ari().unwrap().message, "Channel not found");

    let answer = Call::new(client.clone(), ops::channels::Answer::new(&chans[0]));
    rt.block_on(answer.into_future_boxed()).unwrap().unwrap();
}

/// `IntoFuture` made explicit so the future can be handed to the fake executor.
trait Boxed {
    type Out;
    fn into_future_boxed(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Self::Out> + Send>>;
}

impl<T: std::future::IntoFuture> Boxed for T
where
    T::IntoFuture: Send + 'static,
{
    type Out = T::Output;
    fn into_future_boxed(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T::Output> + Send>> {
        Box::pin(self.into_future())
    }
}

#[test]
fn start_opens_one_websocket_for_several_apps() {
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    let c = client.clone();
    let start = rt.start(async move { c.start(&["app1", "app2"]).await });
    start.take().unwrap().unwrap();
    let ups = rt.upgrades();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].uri(), "ws://pbx:8088/ari/events?app=app1,app2");
    assert!(client.is_connected());
    // Same apps again: nothing new.
    let c = client.clone();
    rt.start(async move { c.start(&["app1", "app2"]).await })
        .take()
        .unwrap()
        .unwrap();
    assert_eq!(rt.upgrades().len(), 1);
}

#[test]
fn handlers_get_the_event_and_live_instances() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    client.on::<StasisStart>(move |event, channel| {
        let s = s.clone();
        async move {
            s.lock()
                .unwrap()
                .push((event.args.clone(), channel.id().to_string()));
        }
    });
    let bridged = Arc::new(Mutex::new(Vec::new()));
    let b = bridged.clone();
    client.on(
        move |_e: ChannelEnteredBridge,
              (bridge, channel): (Bridge<FakeRt>, Option<Channel<FakeRt>>)| {
            let b = b.clone();
            async move {
                b.lock()
                    .unwrap()
                    .push((bridge.id().to_string(), channel.map(|c| c.id().to_string())));
                Ok::<(), Error>(())
            }
        },
    );
    ws.send(stasis_start("c1"));
    ws.send(entered_bridge("b1", "c1"));
    rt.run();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(vec![ari_client::CompactString::from("a")], "c1".to_string())]
    );
    assert_eq!(
        *bridged.lock().unwrap(),
        vec![("b1".to_string(), Some("c1".to_string()))]
    );
    assert_eq!(client.stats().handler_calls, 2);
}

#[test]
fn listeners_attached_before_originate_receive_stasis_start_and_are_released() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let baseline = client.live_subscriptions();
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..1000 {
        let channel = client.new_channel();
        let c = count.clone();
        channel.on(move |_e: StasisStart, _ch: Channel<FakeRt>| {
            c.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let c = count.clone();
        channel.on(move |e: ChannelDtmfReceived, _ch: Channel<FakeRt>| {
            assert_eq!(e.digit, "5");
            c.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let hangup = channel.once::<ChannelHangupRequest>();
        let mut events = channel.events();
        // The "originate" happens here; Asterisk answers with events for the client's id.
        ws.send(stasis_start(channel.id()));
        ws.send(dtmf(channel.id(), "5"));
        ws.send(hangup_request(channel.id()));
        ws.send(destroyed(channel.id()));
        rt.run();
        let h = rt.block_on(hangup).unwrap().unwrap();
        assert_eq!(h.channel.id, channel.id());
        let got: Vec<String> = rt
            .block_on(async move {
                let mut v = Vec::new();
                while let Some(e) = events.next().await {
                    v.push(e.unwrap().type_name().to_string());
                }
                v
            })
            .unwrap();
        assert_eq!(
            got,
            [
                "StasisStart",
                "ChannelDtmfReceived",
                "ChannelHangupRequest",
                "ChannelDestroyed"
            ]
        );
    }
    assert_eq!(count.load(Ordering::SeqCst), 2000);
    assert_eq!(client.live_subscriptions(), baseline);
    assert_eq!(client.stats().dropped_events, 0);
}

#[test]
fn once_fails_with_ended_when_the_channel_goes_first() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let channel = client.channel("c9");
    let dtmf = channel.once::<ChannelDtmfReceived>();
    ws.send(destroyed("c9"));
    let err = rt.block_on(dtmf).unwrap().unwrap_err();
    assert_eq!(
        err,
        Error::Ended {
            resource: "channel:c9".into()
        }
    );
    assert_eq!(client.live_subscriptions(), 0);
}

#[test]
fn client_once_and_typed_streams_carry_instances() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let first = client.once::<StasisStart>();
    let mut starts = client.stream::<StasisStart>();
    ws.send(stasis_start("x1"));
    ws.send(stasis_start("x2"));
    let (ev, chan) = rt.block_on(first).unwrap().unwrap();
    assert_eq!(ev.channel.id, "x1");
    assert_eq!(chan.id(), "x1");
    let ids = rt
        .block_on(async move {
            let a = starts.next().await.unwrap().unwrap().1;
            let b = starts.next().await.unwrap().unwrap().1;
            (a.id().to_string(), b.id().to_string())
        })
        .unwrap();
    assert_eq!(ids, ("x1".to_string(), "x2".to_string()));
    assert_eq!(
        client.live_subscriptions(),
        0,
        "dropped stream unsubscribed"
    );
}

#[test]
fn a_slow_stream_loses_events_visibly_and_never_blocks_the_reader() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .event_queue_capacity(2);
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    let ws = rt.socket(0);
    let mut all = client.event_stream();
    let fast = Arc::new(AtomicUsize::new(0));
    let f = fast.clone();
    client.on_any(move |_e| {
        f.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    for i in 0..5 {
        ws.send(dtmf("c1", &i.to_string()));
    }
    rt.run();
    // The stream's queue is half full: the reader waits for its consumer, at most
    // `stream_wait` (50 ms) on the runtime's clock.
    assert!(fast.load(Ordering::SeqCst) < 5);
    rt.advance(Duration::from_millis(50));
    rt.run();
    // The consumer stalled past the wait: counted, and the reader kept going (the handler
    // saw all five).
    assert_eq!(client.stats().stream_stalls, 1);
    assert_eq!(fast.load(Ordering::SeqCst), 5);
    assert_eq!(all.queued(), 2);
    let items = rt
        .block_on(async move {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(all.next().await.unwrap().map(|e| match e {
                    ari_client::Event::ChannelDtmfReceived(d) => d.digit.into(),
                    other => other.type_name().to_string(),
                }));
            }
            v
        })
        .unwrap();
    assert_eq!(
        items,
        // The three oldest were dropped; the newest two kept.
        vec![Err(Lagged(3)), Ok("3".to_string()), Ok("4".to_string())]
    );
    assert_eq!(client.stats().dropped_events, 3);
    let err: Error = Lagged(3).into();
    assert_eq!(err, Error::Lagged(3));
}

#[test]
fn playback_finished_cannot_be_missed() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    // Client-side id, watched before `playWithId` is sent; the event arrives even before
    // the REST response.
    let playback = client.new_playback();
    let id = playback.id().to_string();
    assert_eq!(client.live_subscriptions(), 1);
    ws.send(playback_finished(&id, "c1"));
    rt.run();
    rt.block_on(playback.finished()).unwrap().unwrap();
    // The instance wrapped from the response shares the watch.
    let from_response: ari_client::Playback<FakeRt> = {
        let model: ari_proto::models::Playback =
            serde_json::from_str(&playback_json(&id, "c1", "playing")).unwrap();
        ari_client::Wrap::wrap(model, &client)
    };
    rt.block_on(from_response.finished()).unwrap().unwrap();
    drop(playback);
    drop(from_response);
    assert_eq!(client.live_subscriptions(), 0);
}

#[test]
fn playback_from_the_server_checks_whether_it_already_finished() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    rt.respond(|req| match req.uri().path() {
        "/ari/playbacks/gone" => Reply::Respond(404, r#"{"message":"Playback not found"}"#.into()),
        "/ari/playbacks/live" => Reply::Respond(200, playback_json("live", "c1", "playing")),
        _ => Reply::Respond(500, String::new()),
    });
    let gone: ari_client::Playback<FakeRt> = ari_client::Wrap::wrap(
        serde_json::from_str::<ari_proto::models::Playback>(&playback_json(
            "gone", "c1", "playing",
        ))
        .unwrap(),
        &client,
    );
    rt.block_on(gone.finished()).unwrap().unwrap();
    let live: ari_client::Playback<FakeRt> = ari_client::Wrap::wrap(
        serde_json::from_str::<ari_proto::models::Playback>(&playback_json(
            "live", "c1", "playing",
        ))
        .unwrap(),
        &client,
    );
    let fin = rt.start(live.finished());
    assert!(!fin.is_done());
    ws.send(playback_finished("live", "c1"));
    rt.run();
    fin.take().unwrap().unwrap();
    assert_eq!(client.live_subscriptions(), 0);
}

#[test]
fn rest_over_websocket_gives_the_same_result_as_http() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .rest_transport(RestTransport::WebSocket);
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    // Not started: HTTP carries it.
    assert_eq!(client.stats().websocket_fallbacks, 1);
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    let ws = rt.socket(0);
    let http_before = rt.requests().len();
    let call = Call::new(client.clone(), ops::channels::Get::new("c1"));
    let pending = rt.start(call.into_future_boxed());
    let sent = ws.sent();
    let Some(WsMessage::Text(req)) = sent.last() else {
        panic!("no RESTRequest sent: {sent:?}")
    };
    let req: serde_json::Value = serde_json::from_str(req).unwrap();
    assert_eq!(req["type"], "RESTRequest");
    assert_eq!(req["method"], "GET");
    assert_eq!(req["uri"], "channels/c1");
    let body = serde_json::to_string(&channel_json("c1")).unwrap();
    ws.send(format!(
        r#"{{"type":"RESTResponse","transaction_id":"t1","request_id":"{}","status_code":200,"reason_phrase":"OK","uri":"channels/c1","content_type":"application/json","message_body":{body},"application":"hello","timestamp":"{TS}"}}"#,
        req["request_id"].as_str().unwrap()
    ));
    rt.run();
    let chan = pending.take().unwrap().unwrap();
    assert_eq!(chan.id(), "c1");
    assert_eq!(chan.data().unwrap().name, "PJSIP/alice-1");
    assert_eq!(rt.requests().len(), http_before, "nothing went over HTTP");

    // An error status is the same Error::Ari as over HTTP.
    let call = Call::new(client.clone(), ops::channels::Get::new("nope"));
    let pending = rt.start(call.into_future_boxed());
    let Some(WsMessage::Text(req)) = ws.sent().last().cloned() else {
        panic!()
    };
    let req: serde_json::Value = serde_json::from_str(&req).unwrap();
    ws.send(format!(
        r#"{{"type":"RESTResponse","transaction_id":"t2","request_id":"{}","status_code":404,"reason_phrase":"Not Found","uri":"channels/nope","content_type":"application/json","message_body":"{{\"message\":\"Channel not found\"}}","application":"hello","timestamp":"{TS}"}}"#,
        req["request_id"].as_str().unwrap()
    ));
    rt.run();
    let err = pending.take().unwrap().unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.ari().unwrap().message, "Channel not found");

    // No response: the request timeout applies.
    let call = Call::new(client.clone(), ops::channels::Get::new("slow"));
    let pending = rt.start(call.into_future_boxed());
    rt.advance(Duration::from_secs(10));
    assert!(pending.take().unwrap().unwrap_err().is_timeout());
}

#[test]
fn reconnects_with_node_style_connection_events_and_keeps_listeners() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_secs(1))
                .jitter(0.0),
        );
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let mut conn = client.connection_events();
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    let channel = client.channel("c1");
    let digits = Arc::new(Mutex::new(String::new()));
    let d = digits.clone();
    channel.on(move |e: ChannelDtmfReceived, _c: Channel<FakeRt>| {
        d.lock().unwrap().push_str(&e.digit);
        async {}
    });
    rt.socket(0).send(dtmf("c1", "1"));
    rt.run();
    rt.socket(0).end();
    rt.run();
    assert!(!client.is_connected());
    rt.advance(Duration::from_secs(1));
    assert_eq!(rt.sockets(), 2, "reconnected after the delay");
    assert!(client.is_connected());
    rt.socket(1).send(dtmf("c1", "2"));
    rt.run();
    assert_eq!(*digits.lock().unwrap(), "12");
    let events = rt
        .block_on(async move {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(conn.next().await.unwrap().unwrap());
            }
            v
        })
        .unwrap();
    assert!(matches!(
        events[0],
        ConnectionEvent::Connected {
            reconnected: false,
            ..
        }
    ));
    assert!(matches!(
        events[1],
        ConnectionEvent::Reconnecting { attempt: 1, .. }
    ));
    assert!(matches!(
        events[2],
        ConnectionEvent::Connected {
            reconnected: true,
            ..
        }
    ));
}

#[test]
fn max_retries_fails_start_and_is_reported() {
    let rt = FakeRt::default();
    info_only(&rt);
    rt.refuse_websockets(true);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_millis(100))
                .jitter(0.0)
                .max_attempts(Some(2)),
        );
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    client.on_connection(move |e| {
        s.lock().unwrap().push(e);
        async {}
    });
    let c = client.clone();
    let start = rt.start(async move { c.start(&["hello"]).await });
    for _ in 0..5 {
        rt.advance(Duration::from_millis(400));
    }
    let err = start.take().expect("start gave up").unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let seen = seen.lock().unwrap();
    assert!(
        matches!(seen.last(), Some(ConnectionEvent::MaxRetries { .. })),
        "{seen:?}"
    );
}

#[test]
fn close_ends_streams_and_awaited_events() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let chan = client.channel("c1");
    let once = chan.once::<ChannelDestroyed>();
    let mut stream = client.event_stream();
    let c = client.clone();
    rt.block_on(async move { c.close().await }).unwrap();
    assert!(matches!(
        rt.block_on(once).unwrap(),
        Err(Error::Closed { .. })
    ));
    assert!(rt
        .block_on(async move { stream.next().await })
        .unwrap()
        .is_none());
    assert!(ws.is_dropped() || ws.sent().contains(&WsMessage::Close(None)));
    assert_eq!(client.live_subscriptions(), 0);
    let after = Call::new(client.clone(), ops::channels::List::new());
    assert!(matches!(
        rt.block_on(after.into_future_boxed()).unwrap(),
        Err(Error::Closed { .. })
    ));
    let c = client.clone();
    assert!(matches!(
        rt.block_on(async move { c.start(&["hello"]).await })
            .unwrap(),
        Err(Error::Closed { .. })
    ));
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Client<FakeRt>>();
    check::<Channel<FakeRt>>();
    check::<Bridge<FakeRt>>();
    check::<ari_client::Playback<FakeRt>>();
    check::<ari_client::LiveRecording<FakeRt>>();
    check::<ari_client::Endpoint<FakeRt>>();
    check::<ari_client::EventStream>();
    check::<ari_client::Listener>();
    check::<Error>();
    fn send<T: Send>(_: &T) {}
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    send(&Call::new(client.clone(), ops::channels::List::new()).into_future_boxed());
    send(&client.new_channel().once::<StasisStart>());
    send(&client.new_playback().finished());
    let ep = client.endpoint("PJSIP", "alice");
    assert_eq!(
        (ep.technology(), ep.resource(), ep.id()),
        ("PJSIP", "alice", "PJSIP/alice")
    );
}

#[test]
fn keepalive_pings_and_a_missing_pong_reconnects() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(Some(ari_client::Keepalive::new(
            Duration::from_secs(20),
            Duration::from_secs(5),
        )))
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_secs(1))
                .jitter(0.0),
        );
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    rt.advance(Duration::from_secs(20));
    assert!(matches!(
        rt.socket(0).sent().last(),
        Some(WsMessage::Ping(_))
    ));
    rt.advance(Duration::from_secs(5));
    assert!(!client.is_connected(), "no pong: the connection is dead");
    rt.advance(Duration::from_secs(1));
    assert_eq!(rt.sockets(), 2);
    assert!(client.is_connected());
    assert_eq!(client.stats().session.keepalive_timeouts, 1);
}

#[test]
fn one_line_play_and_wait_even_when_the_event_beats_the_response() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let baseline = client.live_subscriptions();
    let w = ws.clone();
    rt.respond(move |req| {
        let path = req.uri().path().to_string();
        match path.strip_prefix("/ari/channels/c1/play/") {
            Some(pb) if req.method() == http::Method::POST => {
                assert!(req
                    .uri()
                    .query()
                    .unwrap()
                    .contains("media=sound%3Ahello-world"));
                // A very short sound: Asterisk reports its end before answering.
                w.send(playback_finished(pb, "c1"));
                Reply::Respond(201, playback_json(pb, "c1", "playing"))
            }
            _ => Reply::Respond(404, r#"{"message":"nope"}"#.into()),
        }
    });
    let channel = client.channel("c1");
    let c = channel.clone();
    let played = rt
        .block_on(async move {
            let playback = c.play("sound:hello-world").await?;
            playback.finished().await?;
            Ok::<_, Error>(playback.data().map(|d| d.media_uri.clone()))
        })
        .expect("finished")
        .unwrap();
    assert_eq!(played.as_deref(), Some("sound:hello-world"));
    assert_eq!(client.live_subscriptions(), baseline);
    // Several media, optional parameters.
    let play = channel.play(["sound:a", "sound:b"]).map(|op| op.lang("en"));
    assert_eq!(
        play.op().media,
        vec!["sound:a".to_string(), "sound:b".to_string()]
    );
    // Failure (no such channel) is an ordinary error and leaks nothing.
    let err = rt
        .block_on(client.channel("zz").play("sound:x").into_future_boxed())
        .unwrap()
        .unwrap_err();
    assert!(err.is_not_found());
    drop(play);
    assert_eq!(client.live_subscriptions(), baseline);
}

#[test]
fn ten_thousand_channels_each_get_only_their_own_events() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let wrong = Arc::new(AtomicUsize::new(0));
    let right = Arc::new(AtomicUsize::new(0));
    let channels: Vec<_> = (0..10_000)
        .map(|i| client.channel(format!("ch{i}")))
        .collect();
    for ch in &channels {
        let id = ch.id().to_string();
        let (w, r) = (wrong.clone(), right.clone());
        ch.on(move |e: ChannelDtmfReceived, c: Channel<FakeRt>| {
            if e.channel.id == id && c.id() == id {
                r.fetch_add(1, Ordering::Relaxed);
            } else {
                w.fetch_add(1, Ordering::Relaxed);
            }
            async {}
        });
    }
    assert_eq!(client.live_subscriptions(), 10_000);
    for ch in &channels {
        ws.send(dtmf(ch.id(), "1"));
    }
    rt.run();
    assert_eq!(right.load(Ordering::Relaxed), 10_000);
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert_eq!(client.stats().handler_calls, 10_000);
    for ch in &channels {
        ws.send(destroyed(ch.id()));
    }
    rt.run();
    assert_eq!(client.live_subscriptions(), 0);
}

#[test]
fn listeners_of_an_incoming_call_end_after_stasis_end_without_channel_destroyed() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    // An incoming call: Asterisk's last event for it is StasisEnd.
    let channel = client.channel("in1");
    channel.on(|_e: ChannelDtmfReceived, _c| async {});
    let never = channel.once::<ChannelDtmfReceived>();
    let mut events = channel.events();
    ws.send(stasis_start("in1"));
    ws.send(hangup_request("in1"));
    ws.send(stasis_end("in1"));
    rt.run();
    assert_eq!(client.live_subscriptions(), 3);
    rt.advance(Duration::from_millis(1500));
    assert_eq!(client.live_subscriptions(), 3, "still within the linger");
    rt.advance(Duration::from_millis(600));
    assert_eq!(client.live_subscriptions(), 0);
    assert!(matches!(
        rt.block_on(never).unwrap(),
        Err(Error::Ended { .. })
    ));
    let types = rt
        .block_on(async move {
            let mut v = Vec::new();
            while let Some(e) = events.next().await {
                v.push(e.unwrap().type_name().to_string());
            }
            v
        })
        .unwrap();
    assert_eq!(types, ["StasisStart", "ChannelHangupRequest", "StasisEnd"]);
}

#[test]
fn a_channel_still_followed_after_stasis_end_keeps_its_listeners_until_destroyed() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let channel = client.channel("out1");
    let gone = channel.once::<ChannelDestroyed>();
    ws.send(stasis_start("out1"));
    ws.send(stasis_end("out1"));
    rt.advance(Duration::from_millis(1500));
    ws.send(state_change("out1")); // still followed: the linger restarts
    rt.advance(Duration::from_millis(1500));
    assert_eq!(client.live_subscriptions(), 1);
    ws.send(destroyed("out1"));
    rt.run();
    assert_eq!(rt.block_on(gone).unwrap().unwrap().channel.id, "out1");
    assert_eq!(client.live_subscriptions(), 0);
}

#[test]
fn the_linger_can_be_turned_off() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .stasis_end_linger(None);
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    let channel = client.channel("in1");
    channel.on(|_e: ChannelDtmfReceived, _c| async {});
    rt.socket(0).send(stasis_end("in1"));
    rt.advance(Duration::from_secs(60));
    assert_eq!(client.live_subscriptions(), 1);
}

#[test]
fn a_password_in_the_url_is_refused_without_being_echoed() {
    let rt = FakeRt::default();
    for url in [
        "http://asterisk:hunter2@pbx:8088",
        "ftp://asterisk:hunter2@pbx",
    ] {
        let b = Client::builder_with_runtime(url, "u", "p", rt.clone());
        assert!(!format!("{b:?}").contains("hunter2"));
        let err = rt.block_on(b.connect()).unwrap().unwrap_err();
        assert!(matches!(err, Error::Build(_)));
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }
}

/// Collects every span field and event field as text.
struct Capture(Arc<Mutex<String>>);

struct Collect<'a>(&'a mut String);

impl tracing::field::Visit for Collect<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut s = self.0.lock().unwrap();
        s.push_str(span.metadata().name());
        s.push(' ');
        span.record(&mut Collect(&mut s));
        s.push('\n');
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Collect(&mut self.0.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut s = self.0.lock().unwrap();
        event.record(&mut Collect(&mut s));
        s.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn logs_show_requests_and_connection_changes_but_never_credentials() {
    let log = Arc::new(Mutex::new(String::new()));
    let subscriber = Capture(log.clone());
    tracing::subscriber::with_default(subscriber, || {
        // Another test's thread may have cached a callsite's interest while this subscriber
        // was being registered (tracing's global interest cache): ask again.
        tracing::callsite::rebuild_interest_cache();
        let rt = FakeRt::default();
        info_only(&rt);
        let b =
            Client::builder_with_runtime("http://pbx:8088", "asterisk", "s3cret-pw", rt.clone())
                .keepalive(None)
                .ws_auth(ari_client::WsAuth::ApiKey);
        let client = rt.block_on(b.connect()).unwrap().unwrap();
        let c = client.clone();
        rt.start(async move { c.start(&["hello"]).await })
            .take()
            .unwrap()
            .unwrap();
        let get = Call::new(client.clone(), ops::channels::Get::new("c1"));
        let _ = rt.block_on(get.into_future_boxed());
        rt.socket(0).end();
        rt.run();
    });
    let log = log.lock().unwrap();
    assert!(log.contains("operation=\"channels.get\""), "{log}");
    assert!(log.contains("status=404"), "{log}");
    assert!(log.contains("latency_ms="), "{log}");
    assert!(log.contains("events WebSocket connected"), "{log}");
    assert!(log.contains("reconnecting"), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");
    assert!(!log.contains("s3cret%2Dpw"), "{log}");
    assert!(!log.contains("api_key"), "{log}");
}

#[test]
fn stop_then_start_again_keeps_listeners() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    client.on::<StasisStart>(move |_e, _c| {
        s.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    let mut conn = client.connection_events();
    let c = client.clone();
    rt.block_on(async move { c.stop().await }).unwrap();
    assert!(!client.is_connected());
    assert!(ws.is_dropped() || ws.sent().contains(&WsMessage::Close(None)));
    let c = client.clone();
    rt.start(async move { c.start(&["hello", "other"]).await })
        .take()
        .unwrap()
        .unwrap();
    assert_eq!(rt.sockets(), 2);
    assert_eq!(
        rt.upgrades()[1].uri(),
        "ws://pbx:8088/ari/events?app=hello,other"
    );
    rt.socket(1).send(stasis_start("c1"));
    rt.run();
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let evs = rt
        .block_on(async move {
            vec![
                conn.next().await.unwrap().unwrap(),
                conn.next().await.unwrap().unwrap(),
            ]
        })
        .unwrap();
    assert_eq!(evs[0], ConnectionEvent::Closed);
    assert!(matches!(evs[1], ConnectionEvent::Connected { .. }));
}

#[test]
fn start_with_other_apps_reconnects_with_the_new_set() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let c = client.clone();
    rt.start(async move { c.start(&["hello", "queue"]).await })
        .take()
        .expect("completed")
        .expect("connected with the new apps");
    assert!(ws.is_dropped() || ws.sent().contains(&WsMessage::Close(None)));
    assert_eq!(rt.sockets(), 2);
    assert_eq!(
        rt.upgrades()[1].uri(),
        "ws://pbx:8088/ari/events?app=hello,queue"
    );
    assert!(client.is_connected());
}

#[test]
fn start_waits_through_failed_attempts_until_connected() {
    let rt = FakeRt::default();
    info_only(&rt);
    rt.refuse_websockets(true);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_secs(1))
                .jitter(0.0),
        );
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let c = client.clone();
    let start = rt.start(async move { c.start(&["hello"]).await });
    rt.advance(Duration::from_secs(1));
    rt.advance(Duration::from_secs(2));
    assert!(!start.is_done());
    assert_eq!(rt.upgrades().len(), 3, "first try and two retries");
    rt.refuse_websockets(false);
    rt.advance(Duration::from_secs(4));
    start.take().expect("connected").expect("no error");
    assert!(client.is_connected());
    assert_eq!(client.stats().session.reconnects, 3);
}

#[test]
fn a_stuck_handler_is_bounded_and_its_drops_are_counted() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .max_running_handlers(2);
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    let tx = Arc::new(Mutex::new(0));
    let t = tx.clone();
    client.on::<ChannelDtmfReceived>(move |_e, _c| {
        *t.lock().unwrap() += 1;
        std::future::pending::<()>()
    });
    for i in 0..5 {
        rt.socket(0).send(dtmf("c1", &i.to_string()));
    }
    rt.run();
    assert_eq!(*tx.lock().unwrap(), 2, "two calls running, never finishing");
    let stats = client.stats();
    assert_eq!(stats.handler_calls, 2);
    assert_eq!(stats.dropped_events, 3);
}

#[test]
fn recordings_report_finished_and_failed() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let ok = client.new_live_recording();
    let bad = client.new_live_recording();
    let ok_done = rt.start(ok.finished());
    let bad_done = rt.start(bad.finished());
    ws.send(recording_event("RecordingStarted", ok.name(), "recording"));
    ws.send(recording_event("RecordingFinished", ok.name(), "done"));
    ws.send(recording_event("RecordingFailed", bad.name(), "failed"));
    rt.run();
    ok_done.take().unwrap().unwrap();
    let err = bad_done.take().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::RecordingFailed { name, cause } if name == bad.name() && cause.as_deref().is_some_and(|c| c.contains("disk full"))),
        "{err:?}"
    );
    drop((ok, bad));
    assert_eq!(client.live_subscriptions(), 0);
}

/// `finished()` on a recording handle taken by name, when Asterisk already answers 404 and the
/// `RecordingFailed` is still on its way (the event and the answer travel on different
/// connections): the failure, not `RecordingOutcomeUnknown`; with no event at all, unknown
/// once the grace is over.
#[test]
fn a_recording_failure_still_in_flight_after_the_404_is_waited_for() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    rt.respond(|req| match req.uri().path() {
        "/ari/recordings/live/r1"
        | "/ari/recordings/stored/r1"
        | "/ari/recordings/live/r2"
        | "/ari/recordings/stored/r2" => {
            Reply::Respond(404, r#"{"message":"Recording not found"}"#.into())
        }
        _ => Reply::Respond(500, String::new()),
    });
    // Known from Asterisk's answers (no watch: `finished()` asks Asterisk).
    let live = |name: &str| {
        let model: ari_client::models::LiveRecording =
            serde_json::from_str(&recording_json(name, "recording")).expect("a recording");
        client.wrap(model)
    };
    let fin = rt.start(live("r1").finished());
    assert!(!fin.is_done(), "waits for an end that may be in flight");
    ws.send(recording_event("RecordingFailed", "r1", "failed"));
    rt.run();
    let err = fin.take().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::RecordingFailed { name, .. } if name == "r1"),
        "{err:?}"
    );
    let fin = rt.start(live("r2").finished());
    assert!(!fin.is_done());
    rt.advance(Duration::from_secs(1));
    let err = fin.take().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::RecordingOutcomeUnknown { name } if name == "r2"),
        "{err:?}"
    );
}

#[test]
fn a_channel_moved_to_another_app_keeps_its_listeners() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let channel = client.channel("mv1");
    channel.on::<ChannelDtmfReceived>(|_e, _c| async {});
    ws.send(stasis_start("mv1"));
    ws.send(stasis_end("mv1"));
    ws.send(stasis_start("mv1")); // channel.move(..) to another app on this connection
    rt.advance(Duration::from_secs(30));
    assert_eq!(client.live_subscriptions(), 1);
    ws.send(destroyed("mv1"));
    rt.run();
    assert_eq!(client.live_subscriptions(), 0);
}

#[test]
fn a_websocket_connect_that_never_completes_is_cut_at_the_connect_timeout() {
    let rt = FakeRt::default();
    info_only(&rt);
    rt.hang_websockets(true);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .connect_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::never());
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let c = client.clone();
    let start = rt.start(async move { c.start(&["hello"]).await });
    rt.advance(Duration::from_secs(1));
    assert!(!start.is_done());
    rt.advance(Duration::from_secs(1));
    let err = start.take().expect("gave up").unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(
        client.connection_state(),
        ari_client::ConnectionState::GaveUp
    );
}

#[test]
fn waiting_for_a_key_with_a_timeout() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let channel = client.channel("c1");
    let c = client.clone();
    let ch = channel.clone();
    let waiting = rt.start(async move {
        c.timeout(Duration::from_secs(5), ch.once::<ChannelDtmfReceived>())
            .await
    });
    rt.advance(Duration::from_secs(5));
    assert!(waiting.take().unwrap().unwrap_err().is_timeout());
    assert_eq!(
        client.live_subscriptions(),
        0,
        "the abandoned wait unsubscribed"
    );
    let c = client.clone();
    let waiting = rt.start(async move {
        c.timeout(
            Duration::from_secs(5),
            channel.once::<ChannelDtmfReceived>(),
        )
        .await
    });
    ws.send(dtmf("c1", "7"));
    rt.run();
    assert_eq!(waiting.take().unwrap().unwrap().unwrap().digit, "7");
    let c = client.clone();
    let slept = rt.start(async move { c.sleep(Duration::from_secs(1)).await });
    assert!(!slept.is_done());
    rt.advance(Duration::from_secs(1));
    assert!(slept.is_done());
}

fn decoded<T: ari_proto::events::EventType>(frame: &str) -> T {
    T::from_event(ari_client::Event::decode(frame.as_bytes()).expect("decodes")).expect("type")
}

#[test]
fn instances_share_the_event_snapshots() {
    use ari_client::events::{EndpointStateChange, RecordingStarted};
    use ari_client::ClientEvent;
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);

    let start: StasisStart = decoded(&stasis_start("c1"));
    let channel = start.instances(&client);
    let data = channel.data_arc().expect("a snapshot");
    assert!(Arc::ptr_eq(&start.channel, &data));
    assert_eq!(channel.id(), start.channel.id);
    assert_eq!(channel.id(), "c1");
    assert_eq!(channel.to_string(), "c1");
    assert_eq!(String::from(&channel), "c1");
    assert_eq!(channel, client.channel("c1"));
    // Clones of the instance share it too.
    assert!(Arc::ptr_eq(
        &channel.clone().data_arc().unwrap(),
        &start.channel
    ));

    let entered: ChannelEnteredBridge = decoded(&entered_bridge("b1", "c2"));
    let (bridge, channel) = entered.instances(&client);
    let channel = channel.expect("a channel");
    assert!(Arc::ptr_eq(&entered.bridge, &bridge.data_arc().unwrap()));
    assert!(Arc::ptr_eq(
        entered.channel.as_ref().unwrap(),
        &channel.data_arc().unwrap()
    ));
    assert_eq!((bridge.id(), channel.id()), ("b1", "c2"));

    let rec: RecordingStarted = decoded(&recording_event("RecordingStarted", "r1", "recording"));
    let recording = rec.instances(&client);
    assert!(Arc::ptr_eq(&rec.recording, &recording.data_arc().unwrap()));
    assert_eq!(recording.id(), rec.recording.name);
    assert_eq!(recording.name(), "r1");

    // An endpoint's id is computed (`technology/resource`); the snapshot is shared all the same.
    let ep: EndpointStateChange = decoded(&event(
        "EndpointStateChange",
        r#""endpoint":{"technology":"PJSIP","resource":"alice","state":"online","channel_ids":[]}"#,
    ));
    let endpoint = ep.instances(&client);
    assert!(Arc::ptr_eq(&ep.endpoint, &endpoint.data_arc().unwrap()));
    assert_eq!(endpoint.id(), "PJSIP/alice");
    assert_eq!(
        (endpoint.technology(), endpoint.resource()),
        ("PJSIP", "alice")
    );
}

#[test]
fn handlers_get_instances_sharing_the_event_snapshot() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    client.on::<StasisStart>(move |event, channel| {
        let s = s.clone();
        async move {
            let shared = Arc::ptr_eq(&event.channel, &channel.data_arc().unwrap());
            s.lock()
                .unwrap()
                .push((shared, channel.id() == event.channel.id));
        }
    });
    ws.send(stasis_start("c1"));
    rt.run();
    assert_eq!(*seen.lock().unwrap(), vec![(true, true)]);
}

/// A handler's first poll runs before the next frame is routed: an awaited event it
/// subscribes to before its first `.await` receives an event that arrived right behind the
/// one that started it (in the same read of the socket), as in node where listeners added in a
/// callback see the next event.
#[test]
fn a_handler_subscribing_before_its_first_await_sees_the_very_next_event() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let digits = Arc::new(Mutex::new(Vec::new()));
    let d = digits.clone();
    client.on::<StasisStart>(move |_event, channel| {
        let d = d.clone();
        async move {
            let first = channel.once::<ChannelDtmfReceived>();
            let dtmf = first.await?;
            d.lock().unwrap().push(dtmf.digit);
            Ok::<(), Error>(())
        }
    });
    ws.send(stasis_start("c1"));
    ws.send(dtmf("c1", "7"));
    rt.run();
    assert_eq!(*digits.lock().unwrap(), vec!["7".to_string()]);
    let stats = client.stats();
    assert_eq!((stats.handler_calls, stats.handler_errors), (1, 0));
}

#[test]
fn incoming_hands_out_each_call_with_every_event_after_its_stasis_start() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let mut incoming = client.incoming();
    // Each call's events come back to back right after its StasisStart, and the client reads
    // them all in one batch before the consumer runs: the channel streams must be subscribed
    // while each StasisStart is routed.
    for id in ["in1", "in2", "in3"] {
        ws.send(stasis_start(id));
        ws.send(dtmf(id, "1"));
        ws.send(state_change(id));
        ws.send(hangup_request(id));
        ws.send(stasis_end(id));
    }
    rt.run();
    assert_eq!(incoming.queued(), 3);
    let (calls, incoming) = rt
        .block_on(async move {
            let mut calls = Vec::new();
            for _ in 0..2 {
                let (start, channel, events) = incoming.next().await.unwrap().unwrap();
                assert_eq!(start.channel.id, channel.id());
                assert_eq!(start.args, ["a"]);
                calls.push((channel.id().to_string(), events));
            }
            (calls, incoming)
        })
        .unwrap();
    assert_eq!(
        calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["in1", "in2"]
    );
    // The streams end after the StasisEnd linger (no ChannelDestroyed for an incoming call).
    rt.advance(Duration::from_millis(2100));
    for (id, mut events) in calls {
        let types = rt
            .block_on(async move {
                let mut v = Vec::new();
                while let Some(e) = events.next().await {
                    v.push(e.unwrap().type_name().to_string());
                }
                v
            })
            .unwrap();
        assert_eq!(
            types,
            [
                "ChannelDtmfReceived",
                "ChannelStateChange",
                "ChannelHangupRequest",
                "StasisEnd"
            ],
            "{id}"
        );
    }
    // The incoming subscription; the third call's stream, not taken, ended with its channel.
    assert_eq!(client.live_subscriptions(), 1);
    assert_eq!(incoming.queued(), 1);
    drop(incoming);
    assert_eq!(client.live_subscriptions(), 0);
    assert_eq!(client.stats().dropped_events, 0);
}

#[test]
fn incoming_ends_when_the_client_is_closed_and_counts_calls_it_had_to_drop() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s3cret", rt.clone())
        .keepalive(None)
        .event_queue_capacity(2);
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let c = client.clone();
    rt.start(async move { c.start("hello").await })
        .take()
        .unwrap()
        .unwrap();
    let ws = rt.socket(rt.sockets() - 1);
    let mut incoming = client.incoming();
    for id in ["a1", "a2", "a3"] {
        ws.send(stasis_start(id));
    }
    rt.run();
    assert_eq!(client.stats().dropped_events, 1);
    let c = client.clone();
    let ids = rt
        .block_on(async move {
            assert_eq!(incoming.next().await.unwrap().unwrap_err(), Lagged(1));
            let mut ids = Vec::new();
            for _ in 0..2 {
                let (_, ch, _) = incoming.next().await.unwrap().unwrap();
                ids.push(ch.id().to_string());
            }
            c.close().await;
            assert!(incoming.next().await.is_none());
            ids
        })
        .unwrap();
    assert_eq!(ids, ["a2", "a3"]);
}

#[test]
fn slow_first_polls_are_counted_and_on_spawned_keeps_handlers_off_the_reader() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    // Synchronous work before the first `.await`: 5 ms of (virtual) time on the reader.
    let r = rt.clone();
    client.on(move |_e: StasisStart, _c: Channel<FakeRt>| {
        let r = r.clone();
        async move { r.spend(Duration::from_millis(5)) }
    });
    // The same work in a handler registered with `on_spawned`: its own task from the start.
    let r = rt.clone();
    let spawned = Arc::new(AtomicUsize::new(0));
    let n = spawned.clone();
    client.on_spawned(move |_e: StasisStart, _c: Channel<FakeRt>| {
        let r = r.clone();
        let n = n.clone();
        async move {
            r.spend(Duration::from_millis(5));
            n.fetch_add(1, Ordering::SeqCst);
        }
    });
    // A quick handler is not counted.
    client.on(|_e: StasisStart, _c: Channel<FakeRt>| async {});
    ws.send(stasis_start("c1"));
    ws.send(stasis_start("c2"));
    rt.run();
    assert_eq!(spawned.load(Ordering::SeqCst), 2);
    let stats = client.stats();
    assert_eq!(stats.handler_calls, 6);
    assert_eq!(stats.slow_first_polls, 2);
    assert_eq!(stats.handler_errors, 0);
}

/// Events naming two resources hand both to the handler as live instances, in the order the
/// event names them (the bridge kept and the one merged into it, both legs of a transfer…).
#[test]
fn two_resource_events_hand_both_instances_to_handlers() {
    use ari_client::events::{
        BridgeAttendedTransfer, BridgeBlindTransfer, BridgeMerged, ChannelLeftBridge,
    };
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    client.on(
        move |_e: BridgeMerged, (into, from): (Bridge<FakeRt>, Bridge<FakeRt>)| {
            s.lock()
                .unwrap()
                .push(format!("merged {} <- {}", into.id(), from.id()));
            async {}
        },
    );
    let s = seen.clone();
    client.on(
        move |_e: ChannelLeftBridge, (bridge, channel): (Bridge<FakeRt>, Channel<FakeRt>)| {
            s.lock()
                .unwrap()
                .push(format!("left {} {}", bridge.id(), channel.id()));
            async {}
        },
    );
    let s = seen.clone();
    client.on(
        move |e: BridgeBlindTransfer,
              (channel, bridge): (Channel<FakeRt>, Option<Bridge<FakeRt>>)| {
            s.lock().unwrap().push(format!(
                "blind {} to {} via {:?}",
                channel.id(),
                e.exten,
                bridge.map(|b| b.id().to_string())
            ));
            async {}
        },
    );
    let s = seen.clone();
    client.on(
        move |_e: BridgeAttendedTransfer, (first, second): (Channel<FakeRt>, Channel<FakeRt>)| {
            s.lock()
                .unwrap()
                .push(format!("attended {} + {}", first.id(), second.id()));
            async {}
        },
    );
    let (b1, b2, c1, c2) = (
        bridge_json("b1"),
        bridge_json("b2"),
        channel_json("c1"),
        channel_json("c2"),
    );
    ws.send(event(
        "BridgeMerged",
        &format!(r#""bridge":{b1},"bridge_from":{b2}"#),
    ));
    ws.send(event(
        "ChannelLeftBridge",
        &format!(r#""bridge":{b1},"channel":{c1}"#),
    ));
    ws.send(event(
        "BridgeBlindTransfer",
        &format!(
            r#""channel":{c1},"bridge":{b1},"exten":"200","context":"default","result":"Success","is_external":false"#
        ),
    ));
    ws.send(event(
        "BridgeBlindTransfer",
        &format!(
            r#""channel":{c2},"exten":"300","context":"default","result":"Success","is_external":true"#
        ),
    ));
    ws.send(event(
        "BridgeAttendedTransfer",
        &format!(
            r#""transferer_first_leg":{c1},"transferer_second_leg":{c2},"result":"Success","is_external":false,"destination_type":"bridge""#
        ),
    ));
    rt.run();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "merged b1 <- b2",
            "left b1 c1",
            "blind c1 to 200 via Some(\"b1\")",
            "blind c2 to 300 via None",
            "attended c1 + c2",
        ]
    );
    assert_eq!(client.stats().handler_calls, 5);
    assert_eq!(client.stats().session.decode_errors, 0);
}

/// `start` takes the application names in every form a caller has them; each form registers
/// exactly those applications, and a different set reconnects with it.
#[test]
fn start_takes_the_app_names_in_every_usual_form() {
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    let names = vec!["ivr".to_string(), "queue".to_string()];
    let one = String::from("solo");
    let start = |apps: Vec<String>, f: &dyn Fn(C) -> Pending<Result<(), Error>>| {
        f(client.clone())
            .take()
            .expect("start completed")
            .expect("started");
        let uri = rt.upgrades().last().expect("an upgrade").uri().to_string();
        assert!(
            uri.ends_with(&format!("app={}", apps.join(","))),
            "{uri} registers {apps:?}"
        );
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    start(s(&["solo"]), &|c| {
        let one = one.clone();
        rt.start(async move { c.start(one).await })
    });
    start(s(&["hello"]), &|c| {
        let one = String::from("hello");
        rt.start(async move { c.start(&one).await })
    });
    start(s(&["ivr", "queue"]), &|c| {
        let names = names.clone();
        rt.start(async move { c.start(names).await })
    });
    start(s(&["queue", "ivr"]), &|c| {
        let names = vec!["queue".to_string(), "ivr".to_string()];
        rt.start(async move { c.start(&names).await })
    });
    start(s(&["a", "b"]), &|c| {
        rt.start(async move { c.start(["a", "b"]).await })
    });
    start(s(&["b"]), &|c| {
        let v = ["b"];
        rt.start(async move { c.start(&v[..]).await })
    });
    assert_eq!(rt.upgrades().len(), 6, "each new set reconnected once");
    // The same set again keeps the open connection.
    let c = client.clone();
    rt.start(async move { c.start(vec!["b"]).await })
        .take()
        .expect("start completed")
        .expect("started");
    assert_eq!(rt.upgrades().len(), 6);
}

/// A removed connection handler hears nothing more; subscriptions report whether they live.
#[test]
fn a_removed_connection_handler_is_not_called_again() {
    let rt = FakeRt::default();
    info_only(&rt);
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_secs(1))
                .jitter(0.0),
        );
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let listener = client.on_connection(move |_e| {
        n.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    assert!(format!("{listener:?}").starts_with("ConnectionListener"));
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    rt.run();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "Connected");
    listener.remove();
    rt.socket(0).end();
    rt.run();
    rt.advance(Duration::from_secs(1));
    assert!(client.is_connected(), "reconnected");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing after remove()");

    let listener = client
        .channel("c9")
        .on(|_e: ChannelDtmfReceived, _c: Channel<FakeRt>| async {});
    let id = listener.id();
    assert!(client.is_subscribed(id) && listener.is_active());
    listener.remove();
    assert!(!client.is_subscribed(id));
}

/// A REST-over-WebSocket request whose socket drops before the answer fails at once with a
/// `Closed` transport error (never waits for the timeout); a file (binary result) always goes
/// over HTTP; the builder's timeout is the client's.
#[test]
fn rest_over_websocket_fails_at_once_when_the_socket_drops() {
    let rt = FakeRt::default();
    rt.respond(|req| {
        let path = req.uri().path();
        if path.ends_with("/asterisk/info") {
            Reply::Respond(200, INFO.into())
        } else if path.ends_with("/recordings/stored/r1/file") {
            Reply::Respond(200, "RIFF....WAVE".into())
        } else {
            Reply::Respond(404, r#"{"message":"Not found"}"#.into())
        }
    });
    let b = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
        .keepalive(None)
        .request_timeout(Duration::from_secs(3))
        .rest_transport(RestTransport::WebSocket)
        .reconnect(ReconnectPolicy::default().initial_delay(Duration::from_secs(60)));
    let client = rt.block_on(b.connect()).unwrap().unwrap();
    assert_eq!(client.request_timeout(), Duration::from_secs(3));
    assert_eq!(client.rest_transport(), RestTransport::WebSocket);
    let c = client.clone();
    rt.start(async move { c.start(&["hello"]).await })
        .take()
        .unwrap()
        .unwrap();
    let ws = rt.socket(0);

    let http_before = rt.requests().len();
    let call = Call::new(client.clone(), ops::recordings::GetStoredFile::new("r1"));
    let file = rt
        .start(call.into_future_boxed())
        .take()
        .expect("answered over HTTP")
        .expect("the file");
    assert_eq!(&file[..], b"RIFF....WAVE");
    assert_eq!(
        rt.requests().len(),
        http_before + 1,
        "the file came over HTTP"
    );

    let call = Call::new(client.clone(), ops::channels::Get::new("c1"));
    let pending = rt.start(call.into_future_boxed());
    assert!(
        matches!(ws.sent().last(), Some(WsMessage::Text(_))),
        "sent on the socket"
    );
    assert!(!pending.is_done());
    ws.end();
    rt.run();
    let err = pending
        .take()
        .expect("failed without waiting for the timeout")
        .expect_err("no answer");
    assert!(!err.is_timeout(), "{err}");
    match &err {
        Error::Transport(t) => assert_eq!(t.kind, ari_client::TransportErrorKind::Closed),
        other => panic!("expected a Closed transport error, got {other:?}"),
    }
}

/// `play` takes its media in every form a caller has them, in order, and the playback id is
/// client-side (known before the request); factories name existing resources by their id.
#[test]
fn play_takes_media_in_every_usual_form_and_factories_keep_ids() {
    let rt = FakeRt::default();
    let (client, _ws) = started(&rt);
    let channel = client.channel("c1");
    let media = |p: &dyn std::fmt::Debug| format!("{p:?}");
    let one = String::from("sound:one");
    let forms = [
        media(channel.play("sound:one").op()),
        media(channel.play(one.clone()).op()),
        media(channel.play(&one).op()),
    ];
    for f in &forms {
        assert!(f.contains("\"sound:one\""), "{f}");
    }
    let list = [String::from("sound:a"), String::from("digits:42")];
    for f in [
        media(channel.play(vec!["sound:a", "digits:42"]).op()),
        media(channel.play(["sound:a", "digits:42"]).op()),
        media(channel.play(&list[..]).op()),
    ] {
        assert!(f.contains(r#"["sound:a", "digits:42"]"#), "{f}");
    }
    let play = channel
        .play("sound:tt-monkeys")
        .map(|op| op.lang("en").skipms(3000));
    let op = format!("{:?}", play.op());
    assert!(op.contains("\"en\"") && op.contains("3000"), "{op}");
    let id = play.playback().id().to_string();
    assert_eq!(id.len(), 36, "a client-side UUID: {id}");
    assert!(format!("{play:?}").contains(&id));
    assert_eq!(
        rt.requests().len(),
        1,
        "nothing sent before awaiting (only connect's)"
    );

    assert_eq!(client.playback("p1").id(), "p1");
    assert_eq!(client.live_recording("rec").id(), "rec");
    assert_eq!(client.new_live_recording().id().len(), 36);
    assert_eq!(client.stored_recording("old").id(), "old");
    assert_eq!(client.endpoint("PJSIP", "alice").id(), "PJSIP/alice");
    assert_eq!(client.device_state("Stasis:lamp").id(), "Stasis:lamp");
    assert_eq!(client.application("hello").id(), "hello");
}
