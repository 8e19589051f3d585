//! Paths an application takes that the main client tests leave aside: raw requests, custom
//! filters, handlers and connection handlers that fail, connection events nobody reads,
//! recordings followed after they started, instances from models, and what the handles
//! print. Over the fake runtime: time is virtual, nothing depends on the machine's speed.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ari_client::events::{ChannelDtmfReceived, ChannelVarset, Dial, StasisStart};
use ari_client::{Channel, ConnectionEvent, Error, Filter, Lagged, ReconnectPolicy};
use futures_util::StreamExt;
use support::*;

#[test]
fn raw_requests_reach_asterisk_as_written_and_fail_once_closed() {
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    rt.respond(|req| {
        if req.uri().path() == "/ari/channels/c1/variable" {
            assert_eq!(req.uri().query(), Some("variable=CALLERID%28num%29"));
            Reply::Respond(200, r#"{"value":"1000"}"#.into())
        } else {
            Reply::Respond(404, r#"{"message":"Channel not found"}"#.into())
        }
    });
    let c = client.clone();
    let (status, body) = rt
        .block_on(async move {
            c.send_raw(
                http::Method::GET,
                "/channels/c1/variable?variable=CALLERID%28num%29",
                None,
            )
            .await
        })
        .expect("settles")
        .expect("sent");
    assert_eq!((status, &body[..]), (200, &br#"{"value":"1000"}"#[..]));

    // Any status comes back as it is: a raw request is not an error because of its status.
    let c = client.clone();
    let (status, body) = rt
        .block_on(async move { c.send_raw(http::Method::GET, "channels/nope", None).await })
        .expect("settles")
        .expect("sent");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("Channel not found"));

    let c = client.clone();
    rt.block_on(async move { c.close().await }).expect("closes");
    let c = client.clone();
    let err = rt
        .block_on(async move { c.send_raw(http::Method::GET, "channels", None).await })
        .expect("settles")
        .expect_err("closed");
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(err.to_string().contains("closed"), "{err}");
}

#[test]
fn a_custom_filter_stream_gets_only_what_it_asked_for() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let mut c2_dtmf = client.subscribe(Filter::channel("c2").with_type("ChannelDtmfReceived"));
    ws.send(dtmf("c1", "1"));
    ws.send(state_change("c2"));
    ws.send(dtmf("c2", "7"));
    rt.run();
    let first = rt
        .block_on(async move {
            let ev = c2_dtmf.next().await;
            (ev, c2_dtmf)
        })
        .expect("settles");
    let (ev, c2_dtmf) = first;
    let ev = ev.expect("an event").expect("not lagged");
    assert_eq!(ev.type_name(), "ChannelDtmfReceived");
    assert_eq!(c2_dtmf.queued(), 0, "nothing else matched");
    assert!(format!("{c2_dtmf:?}").contains("EventStream"));
}

#[test]
fn a_spawned_handler_that_panics_is_counted_and_the_next_event_still_handled() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let listener = client.on_spawned(move |e: ChannelDtmfReceived, _c: Channel<FakeRt>| {
        n.fetch_add(1, Ordering::SeqCst);
        assert_ne!(e.digit, "9", "the application's own bug");
        async {}
    });
    assert!(format!("{listener:?}").contains("Listener"));
    ws.send(dtmf("c1", "9"));
    ws.send(dtmf("c1", "1"));
    rt.run();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the panic did not stop routing"
    );
    let stats = client.stats();
    assert_eq!(stats.handler_calls, 2);
    assert_eq!(stats.handler_errors, 1, "the panic is counted");
    assert!(client.is_connected());
}

#[test]
fn a_connection_handler_that_fails_is_counted() {
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    let listener = client.on_connection(|e: ConnectionEvent| async move {
        match e {
            ConnectionEvent::Connected { .. } => Err(Error::Ended {
                resource: "the application's log".to_owned(),
            }),
            _ => Ok(()),
        }
    });
    let c = client.clone();
    rt.start(async move { c.start("hello").await })
        .take()
        .expect("settles")
        .expect("started");
    rt.run();
    assert_eq!(client.stats().handler_errors, 1);
    assert!(
        client.is_connected(),
        "the failure is the handler's, not the connection's"
    );
    listener.remove();
}

#[test]
fn connection_events_nobody_reads_are_dropped_visibly() {
    let rt = FakeRt::default();
    info_only(&rt);
    rt.refuse_websockets(true);
    let b =
        ari_client::Client::builder_with_runtime("http://pbx:8088", "asterisk", "s", rt.clone())
            .keepalive(None)
            .reconnect(
                ReconnectPolicy::default()
                    .initial_delay(Duration::from_millis(10))
                    .max_delay(Duration::from_millis(10))
                    .jitter(0.0)
                    .max_attempts(None),
            );
    let client = rt
        .block_on(b.connect())
        .expect("settles")
        .expect("connects");
    let mut events = client.connection_events();
    assert!(format!("{events:?}").contains("ConnectionStream"));
    let c = client.clone();
    let _start = rt.start(async move { c.start("hello").await });
    // Far more `Reconnecting` events than the stream keeps (256).
    for _ in 0..400 {
        rt.advance(Duration::from_millis(10));
    }
    let first = rt
        .block_on(async move { events.next().await })
        .expect("settles")
        .expect("an item");
    let Err(Lagged(n)) = first else {
        panic!("the reader is told first that it lost events, got {first:?}");
    };
    assert!(n > 0);
}

#[test]
fn a_recording_followed_after_it_started_reports_its_end() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    rt.respond(|req| {
        let path = req.uri().path();
        if path == "/ari/recordings/live/gone" || path == "/ari/recordings/live/kept" {
            Reply::Respond(404, r#"{"message":"Recording not found"}"#.into())
        } else if path == "/ari/recordings/stored/kept" {
            Reply::Respond(200, r#"{"name":"kept","format":"wav"}"#.into())
        } else if path == "/ari/recordings/live/broken" {
            Reply::Respond(500, r#"{"message":"Internal Server Error"}"#.into())
        } else if let Some(name) = path.strip_prefix("/ari/recordings/live/") {
            Reply::Respond(200, recording_json(name, "recording"))
        } else {
            Reply::Respond(404, r#"{"message":"Not found"}"#.into())
        }
    });
    // Known from Asterisk's answers (started by the dialplan or another instance): its end
    // is followed from the model, and Asterisk is asked whether it has already ended.
    let live = |name: &str| {
        let model: ari_client::models::LiveRecording =
            serde_json::from_str(&recording_json(name, "recording")).expect("a recording");
        client.wrap(model)
    };
    let ok = rt.start(live("ok").finished());
    let failed = rt.start(live("failed").finished());
    ws.send(recording_event("RecordingFinished", "other", "done"));
    ws.send(recording_event("RecordingFinished", "ok", "done"));
    ws.send(recording_event("RecordingFailed", "failed", "failed"));
    rt.run();
    ok.take().expect("settled").expect("finished");
    let err = failed.take().expect("settled").expect_err("failed");
    assert!(
        matches!(&err, Error::RecordingFailed { name, cause }
            if name == "failed" && cause.as_deref() == Some("disk full")),
        "{err:?}"
    );
    // Already over when asked (Asterisk's 404), its end unseen by this client: a stored
    // recording of that name means it finished; without one the outcome is unknown.
    let kept = rt.start(live("kept").finished());
    kept.take().expect("settled").expect("finished: stored");
    let gone = rt.start(live("gone").finished());
    assert!(
        !gone.is_done(),
        "waits a second for an end still on its way"
    );
    rt.advance(Duration::from_secs(1));
    let err = gone.take().expect("settled").expect_err("unknown");
    assert_eq!(
        err,
        Error::RecordingOutcomeUnknown {
            name: "gone".to_string()
        }
    );
    // Over when asked, its failure seen by this client: the failure, not a success.
    let failed_again = rt.start(live("failed").finished());
    let err = failed_again.take().expect("settled").expect_err("failed");
    assert!(matches!(&err, Error::RecordingFailed { .. }), "{err:?}");
    // Asterisk failing the question is the caller's error, with its status.
    let broken = rt.start(live("broken").finished());
    let err = broken.take().expect("settled").expect_err("500");
    assert_eq!(err.status(), Some(500));
    // A recording still going when the client closes.
    let pending = rt.start(live("long").finished());
    let c = client.clone();
    rt.block_on(async move { c.close().await }).expect("closes");
    let err = pending.take().expect("settled").expect_err("closed");
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

#[test]
fn models_become_instances_and_instances_compare_by_id() {
    use std::hash::{BuildHasher, RandomState};
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    let model: ari_client::models::Channel =
        serde_json::from_str(&channel_json("c7")).expect("a channel");
    let channel = client.wrap(model);
    assert_eq!(channel.id(), "c7");
    assert_eq!(
        channel.data().map(|d| d.name.as_str()),
        Some("PJSIP/alice-1")
    );
    let by_id = client.channel("c7");
    assert_eq!(
        channel, by_id,
        "the same channel whether from a model or an id"
    );
    let hasher = RandomState::new();
    assert_eq!(
        hasher.hash_one(&channel),
        hasher.hash_one(&by_id),
        "hashed by id"
    );
    let as_ref: &str = channel.as_ref();
    assert_eq!(as_ref, "c7");
    assert_eq!(String::from(channel.clone()), "c7");
    let dbg = format!("{channel:?}");
    assert!(dbg.contains("c7") && dbg.contains("PJSIP/alice-1"), "{dbg}");
}

#[test]
fn events_naming_several_channels_hand_each_one_over() {
    let rt = FakeRt::default();
    let (client, ws) = started(&rt);
    let mut dials = client.stream::<Dial>();
    let mut varsets = client.stream::<ChannelVarset>();
    ws.send(event(
        "Dial",
        &format!(
            r#""dialstatus":"RINGING","caller":{},"peer":{}"#,
            channel_json("caller-1"),
            channel_json("peer-1")
        ),
    ));
    ws.send(event(
        "ChannelVarset",
        &format!(
            r#""variable":"X","value":"1","channel":{}"#,
            channel_json("c1")
        ),
    ));
    ws.send(event("ChannelVarset", r#""variable":"GLOBAL","value":"2""#));
    rt.run();
    let (dial, varsets) = rt
        .block_on(async move {
            let dial = dials.next().await;
            let mut v = Vec::new();
            for _ in 0..2 {
                v.push(varsets.next().await);
            }
            assert!(format!("{dials:?}").contains("ClientStream"));
            (dial, v)
        })
        .expect("settles");
    let (event, parties) = dial.expect("a dial").expect("not lagged");
    assert_eq!(event.dialstatus, "RINGING");
    assert_eq!(
        parties.caller.map(|c| c.id().to_owned()).as_deref(),
        Some("caller-1")
    );
    assert_eq!(parties.peer.id(), "peer-1");
    assert!(parties.forwarded.is_none());
    let mut varsets = varsets
        .into_iter()
        .map(|v| v.expect("one").expect("not lagged"));
    let (first, chan) = varsets.next().expect("first");
    assert_eq!(
        (first.variable.as_str(), chan.map(|c| c.id().to_owned())),
        ("X", Some("c1".to_owned()))
    );
    let (global, none) = varsets.next().expect("second");
    assert_eq!(global.variable, "GLOBAL");
    assert!(none.is_none(), "a global variable names no channel");
}

#[test]
fn handles_print_what_they_wait_for() {
    let rt = FakeRt::default();
    let (client, _ws) = started(&rt);
    let channel = client.channel("c1");
    let once = channel.once::<StasisStart>();
    let incoming = client.incoming();
    let typed = channel.stream::<ChannelDtmfReceived>();
    let client_once = client.once::<StasisStart>();
    for dbg in [
        format!("{once:?}"),
        format!("{incoming:?}"),
        format!("{typed:?}"),
        format!("{client_once:?}"),
    ] {
        assert!(dbg.contains("subscription"), "{dbg}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }
    assert!(
        format!("{once:?}").contains("c1"),
        "the resource it waits on"
    );
}

#[test]
fn a_request_in_flight_when_the_client_closes_does_not_outlive_it() {
    let rt = FakeRt::default();
    info_only(&rt);
    let client = connect(&rt);
    // Asterisk stops answering (an unreachable host that swallows packets).
    rt.respond(|_| Reply::Hang);
    let channel = client.channel("c1");
    let answer = rt.start(async move { channel.answer().await });
    assert!(!answer.is_done());
    let c = client.clone();
    rt.block_on(async move { c.close().await }).expect("closes");
    // Past the request timeout at the latest, the request has its answer: closed.
    rt.advance(client.request_timeout());
    let err = answer
        .take()
        .expect("the request ended with the client")
        .expect_err("no answer");
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}
