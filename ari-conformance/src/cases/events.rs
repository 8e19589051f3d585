//! Instance objects, listeners and their lifecycle, streams and the overflow policy, and the
//! node README's IVR.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ari_client::events::{
    ApplicationReplaced, BridgeDestroyed, ChannelDestroyed, ChannelDtmfReceived,
    ChannelEnteredBridge, ChannelHangupRequest, ChannelUserevent, PlaybackFinished, ResourceKind,
    StasisEnd, StasisStart,
};
use ari_client::{Error, ErrorKind, Event, RestTransport, Runtime};
use ari_testkit::{PlaceCall, Transport};
use futures::StreamExt;
use serde_json::json;

use super::assert_ari;
use crate::Harness;

/// Instance operations: `channel.answer()`, `bridge.add_channel([&channel])`,
/// `channel.play(..)` awaited to its end, `channel.hangup()` — no id passed again; the
/// requests Asterisk receives carry the instances' ids.
pub async fn instance_operations_never_repeat_ids<R: Runtime>(h: &Harness<R>) {
    let app = "conf-instances";
    let c = h.started(&[app]).await;
    let channel = h
        .incoming_call(&c, PlaceCall::new("PJSIP/alice", app))
        .await;
    h.server().clear_requests();
    h.live("answer", channel.answer()).await.unwrap();
    let bridge = c.new_bridge();
    h.live("create", bridge.create()).await.unwrap();
    h.live("add", bridge.add_channel([&channel])).await.unwrap();
    let playback = h
        .live("play", channel.play("sound:hello-world"))
        .await
        .unwrap();
    h.live("finished", playback.finished()).await.unwrap();
    // Awaiting the end again completes at once.
    h.live("finished again", playback.finished()).await.unwrap();
    let ended = channel.once::<StasisEnd>();
    h.live("hangup", channel.hangup()).await.unwrap();
    h.live("StasisEnd", ended).await.unwrap();
    h.live("destroy", bridge.destroy()).await.unwrap();

    // Over HTTP, or over the WebSocket Asterisk dialled (outbound).
    let transport = if h.is_outbound() {
        Transport::WebSocket
    } else {
        Transport::Http
    };
    let log: Vec<(String, String)> = h
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.transport == transport)
        .map(|r| (r.method, r.path))
        .collect();
    let (cid, bid, pid) = (channel.id(), bridge.id(), playback.id());
    for expected in [
        ("POST", format!("channels/{cid}/answer")),
        ("POST", format!("bridges/{bid}")),
        ("POST", format!("bridges/{bid}/addChannel")),
        ("POST", format!("channels/{cid}/play/{pid}")),
        ("DELETE", format!("channels/{cid}")),
        ("DELETE", format!("bridges/{bid}")),
    ] {
        assert!(
            log.iter().any(|(m, p)| m == expected.0 && *p == expected.1),
            "{expected:?} in {log:?}"
        );
    }
    let add = h
        .server()
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/addChannel"))
        .unwrap();
    assert_eq!(add.query_param("channel"), Some(cid));
}

/// Listeners attached to `client.new_channel()` before `originate` receive its `StasisStart`
/// (handler and awaited event), then every later event, then end with it.
pub async fn listeners_attached_before_creation_receive_stasis_start<R: Runtime>(h: &Harness<R>) {
    let app = "conf-early";
    let c = h.started(&[app]).await;
    let ch = c.new_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let listener = ch.on(move |ev: StasisStart, channel| {
        let seen = seen.clone();
        async move {
            assert_eq!(ev.channel.id, channel.id());
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let started = ch.once::<StasisStart>();
    let hangup_requested = ch.once::<ChannelHangupRequest>();
    let destroyed = ch.once::<ChannelDestroyed>();
    let originated = h
        .live("originate", ch.originate("PJSIP/alice").app(app))
        .await
        .unwrap();
    assert_eq!(originated.id(), ch.id());
    let ev = h.live("StasisStart", started).await.unwrap();
    assert_eq!(ev.channel.id, ch.id());
    assert_eq!(ev.application, app);
    h.eventually("the handler ran once", || calls.load(Ordering::SeqCst) == 1)
        .await;
    assert!(listener.is_active());

    h.live("hangup", ch.hangup()).await.unwrap();
    h.live("ChannelHangupRequest", hangup_requested)
        .await
        .unwrap();
    h.live("ChannelDestroyed", destroyed).await.unwrap();
    h.eventually("the listener ends with the channel", || {
        !listener.is_active()
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// 1,000 calls, each with a handler, an awaited event and a stream on its channel — half
/// originated by the client (they end with `ChannelDestroyed`), half incoming calls handled
/// by a client-wide `StasisStart` handler (they end with `StasisEnd` only): after they hang
/// up, the live subscription count is back to its baseline.
pub async fn listeners_released_after_1000_calls<R: Runtime>(h: &Harness<R>) {
    const CALLS: usize = 1000;
    const BATCH: usize = 50;
    let app = "conf-release";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();

    // Incoming calls: the handler listens on the channel, answers and hangs up.
    let incoming_done = Arc::new(AtomicUsize::new(0));
    let done = incoming_done.clone();
    let handler = c.on(move |event: StasisStart, channel| {
        let done = done.clone();
        async move {
            if event.args != ["incoming"] {
                return Ok(()); // an originated call: handled by its own task
            }
            channel.on(|_: ChannelDtmfReceived, _| async {});
            let _events = channel.events();
            let ended = channel.once::<StasisEnd>();
            channel.answer().await?;
            channel.hangup().await?;
            ended.await?;
            done.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>(())
        }
    });

    let dtmf_calls = Arc::new(AtomicUsize::new(0));
    for batch in 0..CALLS / BATCH {
        if batch % 2 == 1 {
            for _ in 0..BATCH {
                let mut call = PlaceCall::new("PJSIP/alice", app);
                call.args = vec!["incoming".to_string()];
                h.server().place_call(call).unwrap();
            }
            let want = (batch / 2 + 1) * BATCH;
            h.eventually("a batch of incoming calls", || {
                incoming_done.load(Ordering::SeqCst) == want
            })
            .await;
            continue;
        }
        let calls = (0..BATCH).map(|i| {
            let c = c.clone();
            let dtmf_calls = dtmf_calls.clone();
            async move {
                let ch = c.new_channel();
                let n = dtmf_calls.clone();
                ch.on(move |_: ChannelDtmfReceived, _| {
                    let n = n.clone();
                    async move {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let _events = ch.events();
                let started = ch.once::<StasisStart>();
                let destroyed = ch.once::<ChannelDestroyed>();
                let endpoint = if i % 2 == 0 {
                    "PJSIP/alice"
                } else {
                    "PJSIP/bob"
                };
                ch.originate(endpoint).app(app).await?;
                started.await?;
                // This call's handler, stream and awaited event are live.
                assert!(c.live_subscriptions() >= baseline + 3);
                ch.hangup().await?;
                destroyed.await?;
                Ok::<_, Error>(())
            }
        });
        let results = h
            .live("a batch of calls", futures::future::join_all(calls))
            .await;
        for r in results {
            r.unwrap();
        }
    }
    assert_eq!(incoming_done.load(Ordering::SeqCst), CALLS / 2);
    assert_eq!(c.stats().handler_errors, 0);
    handler.remove();
    h.eventually("subscriptions back to the baseline", || {
        c.live_subscriptions() == baseline
    })
    .await;
    assert_eq!(c.stats().live_subscriptions, baseline);
    assert!(h
        .live("channels", c.channels().list())
        .await
        .unwrap()
        .is_empty());
}

/// The node README's IVR with a scripted caller: `StasisStart` → answer → play
/// `hello-world` → for each DTMF digit play `digits/N` → `#` plays `vm-goodbye` and hangs
/// up.
pub async fn hello_ivr_end_to_end<R: Runtime>(h: &Harness<R>) {
    let app = "hello";
    let c = h.started(&[app]).await;
    let transcript = Arc::new(Mutex::new(Vec::<String>::new()));
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<Result<(), Error>>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let log = transcript.clone();
    c.on(move |event: StasisStart, channel| {
        let log = log.clone();
        let done_tx = done_tx.clone();
        async move {
            let say = |s: String| log.lock().unwrap().push(s);
            say(format!("StasisStart {}", event.application));
            let result = async {
                let mut keys = channel.stream::<ChannelDtmfReceived>();
                channel.answer().await?;
                say("answer".into());
                channel.play("sound:hello-world").await?.finished().await?;
                say("played hello-world".into());
                while let Some(dtmf) = keys.next().await {
                    let dtmf = dtmf?;
                    say(format!("dtmf {}", dtmf.digit));
                    if dtmf.digit == "#" {
                        channel.play("sound:vm-goodbye").await?.finished().await?;
                        say("played vm-goodbye".into());
                        channel.hangup().await?;
                        say("hangup".into());
                        break;
                    }
                    let media = if dtmf.digit == "*" {
                        "sound:tt-monkeys".to_string()
                    } else {
                        format!("sound:digits/{}", dtmf.digit)
                    };
                    channel.play(media.as_str()).await?.finished().await?;
                    say(format!("played {}", &media["sound:".len()..]));
                }
                Ok(())
            }
            .await;
            if let Some(tx) = done_tx.lock().unwrap().take() {
                let _ = tx.send(result);
            }
        }
    });
    let mut call = PlaceCall::new("PJSIP/alice", app);
    call.caller_name = "Alice".into();
    call.caller_number = "100".into();
    call.dtmf = "12#".into();
    // The caller presses keys after the greeting; each key after the previous prompt.
    call.dtmf_delay = Duration::from_millis(300);
    call.dtmf_interval = Duration::from_millis(200);
    let id = h.server().place_call(call).unwrap();
    h.live("the IVR finishes", done_rx)
        .await
        .expect("the handler reports")
        .expect("the IVR ran without error");
    assert_eq!(
        *transcript.lock().unwrap(),
        vec![
            "StasisStart hello",
            "answer",
            "played hello-world",
            "dtmf 1",
            "played digits/1",
            "dtmf 2",
            "played digits/2",
            "dtmf #",
            "played vm-goodbye",
            "hangup",
        ]
    );
    // What Asterisk was asked to do, in order.
    let media: Vec<String> = h
        .server()
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&format!("channels/{id}/play/")))
        .filter_map(|r| r.query_param("media").map(str::to_string))
        .collect();
    assert_eq!(
        media,
        vec![
            "sound:hello-world",
            "sound:digits/1",
            "sound:digits/2",
            "sound:vm-goodbye"
        ]
    );
    let err = h
        .live("the call is gone", c.channels().get(id.as_str()))
        .await
        .unwrap_err();
    assert!(err.is_not_found());
}

/// The overflow policy: a stream nobody polls while the server pushes many events keeps
/// the newest `capacity` events, drops the older ones (counted in `Stats::dropped_events`)
/// and yields `Err(Lagged(n))` before the events it kept; meanwhile the socket keeps being read (another
/// listener gets every event, the server never drops the connection for a write timeout).
pub async fn slow_consumer_lags_while_the_socket_is_read<R: Runtime>(h: &Harness<R>) {
    const CAPACITY: usize = 16;
    const EVENTS: usize = 3000;
    let app = "conf-slow";
    let server = ari_testkit::MockServer::builder()
        .sim_config(crate::fast_sim_config())
        // Asterisk drops a reader stalled this long (100 ms by default; more here so a
        // loaded CI machine does not trip it, while a reader blocked by the unpolled stream
        // still would).
        .write_timeout(Duration::from_secs(1))
        .send_buffer_size(4096)
        .start();
    let c = h
        .builder_for(&server)
        .event_queue_capacity(CAPACITY)
        .connect()
        .await
        .unwrap();
    h.live("start", c.start(&[app])).await.unwrap();
    let mut slow = c.event_stream();
    let received = Arc::new(AtomicUsize::new(0));
    let n = received.clone();
    c.on(move |_: ChannelUserevent, _| {
        let n = n.clone();
        async move {
            n.fetch_add(1, Ordering::Relaxed);
        }
    });
    for i in 0..EVENTS {
        server.push_event(
            app,
            json!({"type": "ChannelUserevent", "eventname": format!("flood-{i}"), "userevent": {"seq": i}}),
        );
    }
    h.eventually("every event was read from the socket", || {
        received.load(Ordering::Relaxed) == EVENTS
    })
    .await;
    assert!(
        server.closed_connections().is_empty(),
        "the server never dropped the client: {:?}",
        server.closed_connections()
    );
    assert!(c.is_connected());
    let dropped = (EVENTS - CAPACITY) as u64;
    assert!(c.stats().dropped_events >= dropped, "{:?}", c.stats());

    // The slow stream: the lag marker first, then the `CAPACITY` events it kept (the newest:
    // the oldest were dropped, as tokio's broadcast channel does), then live again.
    match h.live("lag marker", slow.next()).await {
        Some(Err(lagged)) => assert_eq!(lagged.0, dropped),
        other => panic!("expected Lagged, got {other:?}"),
    }
    for i in 0..CAPACITY {
        match h.live("queued event", slow.next()).await {
            Some(Ok(Event::ChannelUserevent(e))) => {
                assert_eq!(e.eventname, format!("flood-{}", EVENTS - CAPACITY + i))
            }
            other => panic!("queued event {i}: {other:?}"),
        }
    }
    server.push_event(
        app,
        json!({"type": "ChannelUserevent", "eventname": "after", "userevent": {}}),
    );
    match h.live("event after the lag", slow.next()).await {
        Some(Ok(Event::ChannelUserevent(e))) => assert_eq!(e.eventname, "after"),
        other => panic!("expected the next event, got {other:?}"),
    }
    // `?` turns the marker into `Error::Lagged`.
    let as_error: Error = ari_client::Lagged(3).into();
    assert_eq!(as_error, Error::Lagged(3));
}

/// A second client registering the same application takes it over, as in Asterisk: the
/// first gets `ApplicationReplaced` and does not fight back (no reconnect), the calls go to
/// the second.
pub async fn application_replaced_moves_the_app_to_the_new_client<R: Runtime>(h: &Harness<R>) {
    let app = "conf-replaced";
    let first = h.started(&[app]).await;
    let replaced = first.once::<ApplicationReplaced>();
    let second = h.started(&[app]).await;
    let (ev, ()) = h.live("ApplicationReplaced", replaced).await.unwrap();
    assert_eq!(ev.application, app);
    let mut first_starts = first.stream::<StasisStart>();
    let ch = h
        .incoming_call(&second, PlaceCall::new("PJSIP/alice", app))
        .await;
    h.live("answer", ch.answer()).await.unwrap();
    h.live("hangup", ch.hangup()).await.unwrap();
    let server = h.server();
    let holders: Vec<_> = server
        .connections()
        .into_iter()
        .filter(|c| c.apps.iter().any(|a| a == app))
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(
        first.stats().session.connects,
        1,
        "the first client did not reconnect"
    );
    assert_eq!(second.stats().session.connects, 1);
    assert!(
        futures::FutureExt::now_or_never(first_starts.next()).is_none(),
        "the first client got no call"
    );
}

/// `subscribe_all(true)`: the client receives the events of channels in other
/// applications (not their `StasisStart`, which goes to their own application only).
pub async fn subscribe_all_receives_other_applications_events<R: Runtime>(h: &Harness<R>) {
    let watcher = h.builder().subscribe_all(true).connect().await.unwrap();
    h.live("start watcher", watcher.start(&["conf-watcher"]))
        .await
        .unwrap();
    let other = h.started(&["conf-other"]).await;
    let mut seen = watcher.event_stream();
    let ch = h.answered_call(&other, "conf-other").await;
    h.live("hangup", ch.hangup()).await.unwrap();
    let mut types = Vec::new();
    h.live("the watcher sees the call end", async {
        while let Some(item) = seen.next().await {
            let ev = item.expect("no lag");
            if ev.resources().iter().any(|r| r.id == ch.id()) {
                types.push(ev.type_name().to_string());
                assert_eq!(ev.application(), Some("conf-watcher"));
                if ev.type_name() == "ChannelDestroyed" {
                    break;
                }
            }
        }
    })
    .await;
    assert!(types.iter().any(|t| t == "ChannelStateChange"), "{types:?}");
    assert!(!types.iter().any(|t| t == "StasisStart"), "{types:?}");
}

/// Handlers that panic (building their future, in its first poll, or after it waited) are
/// counted as handler errors; the socket keeps being read and every other handler still
/// receives every event. Handlers that complete at once and handlers that wait both run.
pub async fn handler_panics_are_counted_and_events_keep_flowing<R: Runtime>(h: &Harness<R>) {
    let app = "conf-panics";
    let c = h.started(&[app]).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let waited = Arc::new(AtomicUsize::new(0));
    let n = seen.clone();
    let counting = c.on(move |_: ChannelUserevent, _| {
        n.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    let panics_building = c.on(|e: ChannelUserevent, _| {
        assert_ne!(
            e.eventname, "panic-now",
            "deliberate panic building the future"
        );
        async {}
    });
    let panics_polling = c.on(|e: ChannelUserevent, _| async move {
        assert_ne!(
            e.eventname, "panic-now",
            "deliberate panic in the first poll"
        );
    });
    let rt = c.runtime().clone();
    let w = waited.clone();
    let panics_later = c.on(move |e: ChannelUserevent, _| {
        let (rt, w) = (rt.clone(), w.clone());
        async move {
            rt.sleep_until(Instant::now() + Duration::from_millis(5))
                .await;
            assert_ne!(e.eventname, "panic-later", "deliberate panic after waiting");
            w.fetch_add(1, Ordering::SeqCst);
        }
    });
    for name in ["panic-now", "panic-later", "fine", "fine"] {
        h.live("user event", c.user_events().user_event(name, app))
            .await
            .unwrap();
    }
    h.eventually("every event seen and every waiting call done", || {
        seen.load(Ordering::SeqCst) == 4
            && waited.load(Ordering::SeqCst) == 3
            && c.stats().handler_errors == 3
    })
    .await;
    let stats = c.stats();
    // Four events, four handlers each.
    assert_eq!(stats.handler_calls, 16);
    assert_eq!(stats.handler_errors, 3);
    assert_eq!(stats.dropped_events, 0);
    // The client is still whole: REST works and events still arrive.
    let next = c.once::<ChannelUserevent>();
    h.live(
        "user event after the panics",
        c.user_events().user_event("after", app),
    )
    .await
    .unwrap();
    let (ev, _) = h.live("the next event", next).await.unwrap();
    assert_eq!(ev.eventname, "after");
    for l in [counting, panics_building, panics_polling, panics_later] {
        assert!(l.is_active());
        l.remove();
    }
}

/// Waits on a resource that has already ended (its final event routed before the wait, or
/// the handle obtained after the hangup) fail at once with `Error::Ended`, and its streams
/// end at once, for channels, bridges and playbacks: they never wait for events that will
/// not come. A client-side id reused after `forget_ended` waits for the new resource again.
pub async fn waits_on_a_resource_that_already_ended_fail_at_once<R: Runtime>(h: &Harness<R>) {
    let app = "conf-ended";
    let c = h.started(&[app]).await;
    let ch = c.new_channel();
    let started = ch.once::<StasisStart>();
    let destroyed = ch.once::<ChannelDestroyed>();
    h.live("originate", ch.originate("PJSIP/alice").app(app))
        .await
        .unwrap();
    h.live("StasisStart", started).await.unwrap();
    let bridge = c.new_bridge();
    h.live("create", bridge.create()).await.unwrap();
    h.live("add", bridge.add_channel([&ch])).await.unwrap();
    let playback = h
        .live("play", bridge.play("sound:hello-world"))
        .await
        .unwrap();
    h.live("finished", playback.finished()).await.unwrap();
    h.live("hangup", ch.hangup()).await.unwrap();
    h.live("ChannelDestroyed", destroyed).await.unwrap();
    // (Destroyed with the channel still in it, the bridge's end would not reach the
    // application: taking the channel out drops the application's bridge subscription.)
    let bridge_destroyed = bridge.once::<BridgeDestroyed>();
    h.live("destroy", bridge.destroy()).await.unwrap();
    h.live("BridgeDestroyed", bridge_destroyed).await.unwrap();

    // The same handles, and handles obtained after the end.
    let late = c.channel(ch.id());
    let (bid, pid) = (bridge.id(), playback.id());
    let late_bridge = c.bridge(bid);
    let late_playback = c.playback(pid);
    assert_ended(
        h,
        "once on the ended channel",
        ch.id(),
        ch.once::<ChannelHangupRequest>(),
    )
    .await;
    assert_ended(
        h,
        "once on a later handle",
        ch.id(),
        late.once::<ChannelHangupRequest>(),
    )
    .await;
    assert_ended(
        h,
        "once on the bridge",
        bid,
        late_bridge.once::<BridgeDestroyed>(),
    )
    .await;
    assert_ended(
        h,
        "once on the playback",
        pid,
        late_playback.once::<PlaybackFinished>(),
    )
    .await;
    assert!(h
        .live("channel events", late.events().next())
        .await
        .is_none());
    assert!(h
        .live("typed stream", late.stream::<StasisEnd>().next())
        .await
        .is_none());
    assert!(h
        .live("bridge events", late_bridge.events().next())
        .await
        .is_none());
    h.live("finished of a late handle", late_playback.finished())
        .await
        .unwrap();
    h.eventually("nothing stays subscribed", || c.live_subscriptions() == 0)
        .await;

    // The application reuses the channel's id for a new call.
    assert!(c.forget_ended(ResourceKind::Channel, ch.id()));
    assert!(!c.forget_ended(ResourceKind::Channel, ch.id()));
    let again = c.channel(ch.id());
    let started = again.once::<StasisStart>();
    let destroyed = again.once::<ChannelDestroyed>();
    h.live(
        "originate with the reused id",
        again.originate("PJSIP/bob").app(app),
    )
    .await
    .unwrap();
    let ev = h
        .live("StasisStart of the new call", started)
        .await
        .unwrap();
    assert_eq!(ev.channel.id, ch.id());
    h.live("hangup", again.hangup()).await.unwrap();
    h.live("ChannelDestroyed of the new call", destroyed)
        .await
        .unwrap();
}

/// An incoming call that hangs up while nobody follows its channel: Asterisk sends it no
/// `ChannelDestroyed` (the application's subscription ended with `StasisEnd`). A handle taken
/// in a `StasisEnd` handler waits, and its wait fails with [`Error::Ended`] when the channel's
/// linger is over; a handle taken after that fails at once and its streams end at once.
pub async fn waits_on_a_channel_taken_after_its_stasis_end_end_with_its_linger<R: Runtime>(
    h: &Harness<R>,
) {
    let app = "conf-late-handle";
    let c = h.started(&[app]).await;
    let (tx, mut in_handler) = futures::channel::mpsc::unbounded();
    let on_end = c.on(move |_: StasisEnd, channel| {
        let wait = channel.once::<ChannelHangupRequest>();
        let tx = tx.clone();
        async move {
            let _ = tx.unbounded_send((channel.id().to_string(), wait.await.map(|_| ())));
        }
    });
    let started = c.once::<StasisStart>();
    let id = h
        .server()
        .place_call(PlaceCall::new("PJSIP/alice", app))
        .expect("the simulator places the call");
    let (ev, _) = h.live("StasisStart", started).await.unwrap();
    assert_eq!(ev.channel.id, id);
    h.server().hangup(&id).expect("the caller hangs up");
    let (seen, result) = h
        .live(
            "the wait taken in the StasisEnd handler ends",
            in_handler.next(),
        )
        .await
        .expect("the handler ran");
    assert_eq!(seen, id);
    match result {
        Err(Error::Ended { resource }) => assert!(resource.contains(&id), "{resource}"),
        other => panic!("the handler's wait: {other:?}"),
    }
    on_end.remove();
    let late = c.channel(&id);
    assert_ended(
        h,
        "once on a handle taken after the linger",
        &id,
        late.once::<ChannelHangupRequest>(),
    )
    .await;
    assert!(h
        .live("channel events", late.events().next())
        .await
        .is_none());
    h.eventually("nothing stays subscribed", || c.live_subscriptions() == 0)
        .await;
}

/// What a user does: create a bridge, put a call in it, wait for the bridge's end through
/// the bridge instance (`once::<BridgeDestroyed>()`, its event stream, a listener), destroy
/// it. Asterisk sends `BridgeDestroyed` only to applications subscribed to the bridge; this
/// one only followed it through its channel, so it gets the channel's `ChannelLeftBridge`
/// and no `BridgeDestroyed` (recorded traffic, and the simulator, behave so). The waits end
/// with the bridge's linger instead of hanging: the awaited event fails with
/// [`Error::Ended`], the stream ends after the `ChannelLeftBridge`, the listener is removed
/// — over HTTP and over REST on the events WebSocket. A handle taken later fails at once;
/// the call survives its bridge.
pub async fn destroying_a_bridge_ends_its_waits_within_the_linger<R: Runtime>(h: &Harness<R>) {
    let (app, ws_app) = ("conf-bridge-end", "conf-bridge-end-ws");
    let http = h.started(&[app]).await;
    let ws = h
        .builder()
        .rest_transport(RestTransport::WebSocket)
        .connect()
        .await
        .unwrap();
    h.live("start", ws.start(&[ws_app])).await.unwrap();
    for (c, app) in [(&http, app), (&ws, ws_app)] {
        let channel = h.incoming_call(c, PlaceCall::new("PJSIP/alice", app)).await;
        let bridge = c.new_bridge();
        h.live("create", bridge.create()).await.unwrap();
        let entered = bridge.once::<ChannelEnteredBridge>();
        h.live("add", bridge.add_channel([&channel])).await.unwrap();
        h.live("ChannelEnteredBridge", entered).await.unwrap();
        let destroyed = bridge.once::<BridgeDestroyed>();
        let mut events = bridge.events();
        let listener = bridge.on(|_: BridgeDestroyed, _| async {});
        h.live("destroy", bridge.destroy()).await.unwrap();
        // Well within the liveness bound, however loaded the machine: the linger is 500 ms.
        let ended = h
            .within(
                "the wait on BridgeDestroyed ends with the linger",
                Duration::from_secs(10),
                destroyed,
            )
            .await;
        match ended {
            Err(Error::Ended { resource }) => assert!(resource.contains(bridge.id()), "{resource}"),
            other => panic!("the wait on BridgeDestroyed: {other:?}"),
        }
        let seen: Vec<String> = h
            .within(
                "the bridge's stream ends with the linger",
                Duration::from_secs(10),
                events
                    .by_ref()
                    .map(|e| e.expect("no lag").type_name().to_string())
                    .collect(),
            )
            .await;
        assert!(
            seen.iter().any(|t| t == "ChannelLeftBridge"),
            "the channel left the bridge: {seen:?}"
        );
        assert!(
            !seen.iter().any(|t| t == "BridgeDestroyed"),
            "no BridgeDestroyed is made up: {seen:?}"
        );
        h.eventually("the listener is removed", || !listener.is_active())
            .await;
        assert_ended(
            h,
            "once on a handle taken after the linger",
            bridge.id(),
            c.bridge(bridge.id()).once::<BridgeDestroyed>(),
        )
        .await;
        // The application creates a bridge with the same id again: it exists again (Asterisk
        // tells only applications subscribed to every bridge of its BridgeCreated), and
        // waits on it work as on any new bridge.
        let again = c.bridge(bridge.id());
        h.live("create again", again.create()).await.unwrap();
        let entered = again.once::<ChannelEnteredBridge>();
        h.live("add again", again.add_channel([&channel]))
            .await
            .unwrap();
        h.live("ChannelEnteredBridge on the bridge created again", entered)
            .await
            .unwrap();
        h.live("destroy again", again.destroy()).await.unwrap();
        // The call survives its bridge.
        h.live("the channel is still there", channel.get())
            .await
            .unwrap();
        let gone = channel.once::<StasisEnd>();
        h.live("hangup", channel.hangup()).await.unwrap();
        h.live("StasisEnd", gone).await.unwrap();
        h.eventually("nothing stays subscribed", || c.live_subscriptions() == 0)
            .await;
    }
    // A DELETE that fails changes nothing: the waits on a bridge that does not exist
    // (Asterisk's 404) stay, past the linger.
    let mut ghosts = Vec::new();
    for c in [&http, &ws] {
        let ghost = c.bridge("conf-no-such-bridge");
        let events = ghost.events();
        let err = h
            .live("destroy a bridge that does not exist", ghost.destroy())
            .await
            .unwrap_err();
        assert_ari(&err, 404, ErrorKind::NotFound, "Bridge not found");
        ghosts.push(events);
    }
    h.sleep(Duration::from_secs(1)).await;
    for c in [&http, &ws] {
        assert_eq!(c.live_subscriptions(), 1, "the failed DELETE ended nothing");
    }
    drop(ghosts);
}

/// The same, with the application subscribed to the bridge (as Asterisk's own
/// `bridges/delete` test does): Asterisk sends it `BridgeDestroyed`, which reaches the
/// bridge's waits as the real event (not the linger's end): the awaited event is it, the
/// stream's last item is it, and the bridge counts as ended.
pub async fn destroying_a_bridge_the_application_subscribed_to_delivers_its_bridge_destroyed<
    R: Runtime,
>(
    h: &Harness<R>,
) {
    let app = "conf-bridge-sub";
    let c = h.started(&[app]).await;
    let channel = h
        .incoming_call(&c, PlaceCall::new("PJSIP/alice", app))
        .await;
    let bridge = c.new_bridge();
    h.live("create", bridge.create()).await.unwrap();
    h.live("add", bridge.add_channel([&channel])).await.unwrap();
    h.live(
        "subscribe to the bridge",
        c.applications()
            .subscribe(app, [format!("bridge:{}", bridge.id())]),
    )
    .await
    .unwrap();
    let destroyed = bridge.once::<BridgeDestroyed>();
    let mut events = bridge.events();
    h.live("destroy", bridge.destroy()).await.unwrap();
    let ev = h
        .live("BridgeDestroyed", destroyed)
        .await
        .expect("the real event, not the linger's end");
    assert_eq!(ev.bridge.id, bridge.id());
    let seen: Vec<String> = h
        .live(
            "the bridge's stream ends with BridgeDestroyed",
            events
                .by_ref()
                .map(|e| e.expect("no lag").type_name().to_string())
                .collect(),
        )
        .await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("BridgeDestroyed"),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|t| *t == "BridgeDestroyed").count(), 1);
    assert_ended(
        h,
        "once on a later handle",
        bridge.id(),
        c.bridge(bridge.id()).once::<BridgeDestroyed>(),
    )
    .await;
    let gone = channel.once::<StasisEnd>();
    h.live("hangup", channel.hangup()).await.unwrap();
    h.live("StasisEnd", gone).await.unwrap();
    h.eventually("nothing stays subscribed", || c.live_subscriptions() == 0)
        .await;
}

/// `wait` fails at once with [`Error::Ended`] naming resource `id`.
async fn assert_ended<R: Runtime, T: std::fmt::Debug>(
    h: &Harness<R>,
    what: &str,
    id: &str,
    wait: impl IntoFuture<Output = Result<T, Error>>,
) {
    match h.live(what, wait).await {
        Err(Error::Ended { resource }) => assert!(resource.contains(id), "{what}: {resource}"),
        other => panic!("{what}: {other:?}"),
    }
}
