//! Everyday call control as a telephony application writes it: a call queue (holding bridge
//! with music on hold, an agent originated with a client-side id, a mixing bridge, teardown),
//! a voicemail recording, a spy, dialplan hand-offs, playback control, handlers that call
//! REST, two applications on one connection. Each asserts that every wait ends and that no
//! subscription is left behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ari_client::events::{
    BridgeDestroyed, ChannelDestroyed, ChannelEnteredBridge, ChannelHangupRequest,
    ChannelLeftBridge, ChannelStateChange, PlaybackFinished, RecordingFinished, StasisEnd,
    StasisStart,
};
use ari_client::models::{PlaybackOperation, SnoopDirection};
use ari_client::{Error, Runtime};
use ari_testkit::PlaceCall;
use futures::StreamExt;

use crate::Harness;

/// Drains `events` until it ends, returning the type names seen.
async fn drain<R: Runtime>(
    h: &Harness<R>,
    what: &str,
    events: ari_client::EventStream,
) -> Vec<String> {
    h.live(
        what,
        events
            .map(|e| e.map(|e| e.type_name().to_string()).unwrap_or_default())
            .collect::<Vec<_>>(),
    )
    .await
}

/// A call queue: the caller waits in a holding bridge with music on hold; an agent is
/// originated with a client-side id, its listeners attached before the originate; both are
/// moved into a mixing bridge; the agent hangs up, the application hangs the caller up and
/// destroys both bridges. Every wait (streams, awaited events, listeners) ends, and the
/// client's live subscriptions come back to what they were before the call.
pub async fn call_queue_ends_every_wait_and_leaves_nothing<R: Runtime>(h: &Harness<R>) {
    let app = "conf-queue";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let mut incoming = c.incoming();

    // The caller.
    h.server()
        .place_call(PlaceCall::new("PJSIP/alice", app))
        .unwrap();
    let (_, caller, caller_events) = h.next_incoming("the caller", &mut incoming).await;
    h.live("answer the caller", caller.answer()).await.unwrap();
    let holding = c.new_bridge();
    let holding_destroyed = holding.once::<BridgeDestroyed>();
    h.live("holding bridge", holding.create().bridge_type("holding"))
        .await
        .unwrap();
    h.live("caller on hold", holding.add_channel([&caller]))
        .await
        .unwrap();
    h.live("music on hold", holding.start_moh()).await.unwrap();

    // The agent: a client-side id, listeners before the originate.
    let agent = c.new_channel();
    let agent_started = agent.once::<StasisStart>();
    let agent_hangup = agent.once::<ChannelHangupRequest>();
    let agent_end = agent.once::<StasisEnd>();
    let agent_destroyed = agent.once::<ChannelDestroyed>();
    let states = Arc::new(AtomicUsize::new(0));
    let state_listener = agent.on({
        let states = states.clone();
        move |_: ChannelStateChange, _| {
            let states = states.clone();
            async move {
                states.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(())
            }
        }
    });
    let agent_events = agent.events();
    h.live(
        "originate the agent",
        agent.originate("PJSIP/bob").app(app).app_args("agent"),
    )
    .await
    .unwrap();
    let started = h.live("agent StasisStart", agent_started).await.unwrap();
    assert_eq!(started.args, ["agent"]);
    // The agent's StasisStart also reaches `incoming` (node apps check the args).
    let (start, agent_in, _agent_in_events) = h.next_incoming("the agent", &mut incoming).await;
    assert_eq!(agent_in.id(), agent.id());
    assert_eq!(start.args, ["agent"]);
    drop(_agent_in_events);

    // Both into a mixing bridge.
    let mixing = c.new_bridge();
    let mixing_destroyed = mixing.once::<BridgeDestroyed>();
    let mut entered = mixing.stream::<ChannelEnteredBridge>();
    h.live("mixing bridge", mixing.create().bridge_type("mixing"))
        .await
        .unwrap();
    let left_hold = holding.once::<ChannelLeftBridge>();
    h.live("off hold", holding.remove_channel([&caller]))
        .await
        .unwrap();
    h.live("ChannelLeftBridge (holding)", left_hold)
        .await
        .unwrap();
    h.live("both in", mixing.add_channel([&caller, &agent]))
        .await
        .unwrap();
    for _ in 0..2 {
        h.live("ChannelEnteredBridge", entered.next())
            .await
            .unwrap()
            .unwrap();
    }
    h.live("destroy the holding bridge", holding.destroy())
        .await
        .unwrap();

    // The agent hangs up; the application hangs up the caller and tears down.
    h.server().hangup(agent.id()).unwrap();
    h.live("agent hangup request", agent_hangup).await.unwrap();
    h.live("agent StasisEnd", agent_end).await.unwrap();
    h.live("hang up the caller", caller.hangup()).await.unwrap();
    h.live("destroy the mixing bridge", mixing.destroy())
        .await
        .unwrap();

    // Every wait ends.
    h.live("agent ChannelDestroyed", agent_destroyed)
        .await
        .unwrap();
    let agent_types = drain(h, "the agent's stream ends", agent_events).await;
    assert!(
        agent_types.iter().any(|t| t == "StasisEnd"),
        "{agent_types:?}"
    );
    let caller_types = drain(h, "the caller's stream ends", caller_events).await;
    // An incoming call's application is unsubscribed from it with its `StasisEnd` (as
    // Asterisk does): its stream ends with the linger.
    assert_eq!(
        caller_types.last().map(String::as_str),
        Some("StasisEnd"),
        "{caller_types:?}"
    );
    for (what, wait) in [("holding", holding_destroyed), ("mixing", mixing_destroyed)] {
        match h.live(what, wait).await {
            Ok(_) | Err(Error::Ended { .. }) => {}
            Err(e) => panic!("{what} BridgeDestroyed: {e:?}"),
        }
    }
    assert!(
        h.live("ChannelEnteredBridge stream ends", entered.next())
            .await
            .is_none(),
        "the destroyed bridge's stream ended"
    );
    assert!(
        states.load(Ordering::SeqCst) >= 1,
        "the agent's answer was seen"
    );
    h.eventually("the agent's listener is released", || {
        !state_listener.is_active()
    })
    .await;
    drop(entered);
    drop(incoming);
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
    assert_eq!(c.stats().dropped_events, 0);
}

/// A voicemail: the greeting, then a recording that stops by itself at its maximum duration
/// (or after the caller's silence), then the stored message is fetched, copied to the
/// mailbox's folder and deleted.
pub async fn voicemail_records_to_its_limit_then_files_the_message<R: Runtime>(h: &Harness<R>) {
    let app = "conf-voicemail";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    h.live("greeting", call.play("sound:vm-intro"))
        .await
        .unwrap()
        .finished()
        .await
        .unwrap();
    let rec = c.new_live_recording();
    let finished = rec.once::<RecordingFinished>();
    h.live(
        "record",
        call.record(&rec, "wav")
            .max_duration_seconds(1)
            .max_silence_seconds(5)
            .beep(true),
    )
    .await
    .unwrap();
    h.live("the recording stops at its maximum", rec.finished())
        .await
        .unwrap();
    let ev = h.live("RecordingFinished", finished).await.unwrap();
    assert_eq!(ev.recording.name, rec.name());
    assert_eq!(ev.recording.duration, Some(1), "{ev:?}");

    let stored = c.stored_recording(rec.name());
    h.live("get stored", stored.get_stored()).await.unwrap();
    let folder = format!("voicemail/1000/INBOX/{}", rec.name());
    let copy = h
        .live("copy to the mailbox", stored.copy_stored(folder.as_str()))
        .await
        .unwrap();
    assert_eq!(copy.name(), folder);
    h.live("delete the original", stored.delete_stored())
        .await
        .unwrap();
    h.live("delete the copy", copy.delete_stored())
        .await
        .unwrap();
    h.live("hangup", call.hangup()).await.unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A supervisor spies on a call: the snoop channel enters the application; when the caller
/// hangs up, the snoop channel ends too and every wait on it ends.
pub async fn a_spy_ends_with_the_call_it_spies_on<R: Runtime>(h: &Harness<R>) {
    let app = "conf-spy";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let spy = c.new_channel();
    let spy_started = spy.once::<StasisStart>();
    let spy_end = spy.once::<StasisEnd>();
    let spy_events = spy.events();
    h.live(
        "snoop",
        call.snoop_channel_with_id(spy.id(), app)
            .spy(SnoopDirection::Both)
            .app_args("spy"),
    )
    .await
    .unwrap();
    h.live("the spy's StasisStart", spy_started).await.unwrap();
    h.server().hangup(call.id()).unwrap();
    h.live("the spy's StasisEnd", spy_end).await.unwrap();
    drain(h, "the spy's stream ends", spy_events).await;
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// Channel variables, then the call leaves the application for the dialplan
/// (`continue`), and another one is redirected: the application's waits on them end with
/// their `StasisEnd`.
pub async fn dialplan_continue_ends_the_applications_waits<R: Runtime>(h: &Harness<R>) {
    let app = "conf-continue";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    h.live("set var", call.set_channel_var("QUEUE").value("sales"))
        .await
        .unwrap();
    let v = h
        .live("get var", call.get_channel_var("QUEUE"))
        .await
        .unwrap();
    assert_eq!(v.value, "sales");
    let end = call.once::<StasisEnd>();
    let dtmf = call.once::<ari_client::events::ChannelDtmfReceived>();
    let events = call.events();
    h.live(
        "continue",
        call.continue_in_dialplan()
            .context("conformance")
            .extension("wait")
            .priority(1),
    )
    .await
    .unwrap();
    h.live("StasisEnd", end).await.unwrap();
    let types = drain(h, "the stream ends with the StasisEnd", events).await;
    assert_eq!(types.last().map(String::as_str), Some("StasisEnd"));
    match h.live("a wait for a key", dtmf).await {
        Err(Error::Ended { .. }) => {}
        other => panic!("the key wait ends with the call's StasisEnd: {other:?}"),
    }
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
    let _ = c.channels().hangup(call.id()).await;
}

/// Playback control (pause, restart, stop), and a playback on a call whose caller hangs up
/// in the middle: `finished()` ends, as does every wait on the playback.
pub async fn a_playback_on_a_call_that_hangs_up_finishes<R: Runtime>(h: &Harness<R>) {
    let app = "conf-pb-hangup";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let pb = c.new_playback();
    let pb_finished = pb.once::<PlaybackFinished>();
    let pb_events = pb.events();
    h.live("play", call.play_with_id(&pb, ["sound:tt-monkeys"]))
        .await
        .unwrap();
    for op in [
        PlaybackOperation::Pause,
        PlaybackOperation::Unpause,
        PlaybackOperation::Restart,
    ] {
        h.live("control", pb.control(op)).await.unwrap();
    }
    h.server().hangup(call.id()).unwrap();
    h.live("finished() after the hangup", pb.finished())
        .await
        .unwrap();
    match h.live("PlaybackFinished", pb_finished).await {
        Ok(_) | Err(Error::Ended { .. }) => {}
        Err(e) => panic!("{e:?}"),
    }
    drain(h, "the playback's stream ends", pb_events).await;
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// Handlers that call REST inside (answer, play and wait, hang up), over HTTP and over the
/// events WebSocket: no deadlock, every call handled.
pub async fn handlers_that_call_rest_inside_finish<R: Runtime>(h: &Harness<R>) {
    for transport in [
        ari_client::RestTransport::Http,
        ari_client::RestTransport::WebSocket,
    ] {
        let app = "conf-handler-rest";
        let c = h
            .live("connect", h.builder().rest_transport(transport).connect())
            .await
            .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let _l = c.on({
            let done = done.clone();
            move |_: StasisStart, ch: ari_client::Channel<R>| {
                let done = done.clone();
                async move {
                    ch.answer().await?;
                    ch.set_channel_var("X").value("1").await?;
                    ch.play("sound:beep").await?.finished().await?;
                    ch.hangup().await?;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(())
                }
            }
        });
        h.live("start", c.start(app)).await.unwrap();
        for _ in 0..5 {
            h.server()
                .place_call(PlaceCall::new("PJSIP/alice", app))
                .unwrap();
        }
        h.eventually("every handler finished", || {
            done.load(Ordering::SeqCst) == 5
        })
        .await;
        assert_eq!(c.stats().handler_errors, 0, "{transport:?}");
        c.close().await;
    }
}

/// Handlers and waits registered on a call after it ended: the waits fail at once with
/// `Error::Ended`, and the handlers are released at once (nothing left behind).
pub async fn handlers_registered_after_the_end_are_released<R: Runtime>(h: &Harness<R>) {
    let app = "conf-late-handler";
    let c = h.started(&[app]).await;
    let call = h.answered_call(&c, app).await;
    let events = call.events();
    h.live("hangup", call.hangup()).await.unwrap();
    drain(h, "the call's stream ends with its linger", events).await;
    let baseline = c.live_subscriptions();
    let late = call.on(|_: ChannelHangupRequest, _| async { Ok::<_, Error>(()) });
    let late_spawned = call.on_spawned(|_: StasisEnd, _| async { Ok::<_, Error>(()) });
    match h.live("a late wait", call.once::<StasisEnd>()).await {
        Err(Error::Ended { .. }) => {}
        other => panic!("{other:?}"),
    }
    h.eventually("the late handlers are released", || {
        !late.is_active() && !late_spawned.is_active()
    })
    .await;
    assert_eq!(c.live_subscriptions(), baseline);
}

/// `client.incoming()` with two applications started on one connection: calls of both come
/// out, each with its application named.
pub async fn incoming_calls_of_two_applications<R: Runtime>(h: &Harness<R>) {
    let (a, b) = ("conf-two-a", "conf-two-b");
    let c = h.started(&[a, b]).await;
    let mut incoming = c.incoming();
    h.server()
        .place_call(PlaceCall::new("PJSIP/alice", a))
        .unwrap();
    h.server()
        .place_call(PlaceCall::new("PJSIP/bob", b))
        .unwrap();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let (start, ch, events) = h.next_incoming("a call", &mut incoming).await;
        apps.push(start.application.to_string());
        h.live("hangup", ch.hangup()).await.unwrap();
        let types = drain(h, "the call's stream ends", events).await;
        assert!(types.iter().any(|t| t == "StasisEnd"), "{types:?}");
    }
    apps.sort();
    assert_eq!(apps, [a, b]);
}

/// A prompt Asterisk cannot play (a sound file that does not exist: the playback ends with
/// state `failed`) fails `finished()` with `Error::PlaybackFailed`, naming the playback and
/// its media, on every kind of handle (client-side id, server-side id); a playback that
/// played is `Ok`, as is one stopped by the application.
pub async fn a_prompt_that_cannot_be_played_fails_finished<R: Runtime>(h: &Harness<R>) {
    let app = "conf-pb-failed";
    let c = h.started(&[app]).await;
    let call = h.answered_call(&c, app).await;
    let failed = |id: &str| {
        Err(Error::PlaybackFailed {
            id: id.to_string(),
            media_uri: "sound:no-such-prompt".to_string(),
        })
    };
    // A client-side id: watched from creation.
    let pb = c.new_playback();
    h.live("play", call.play_with_id(&pb, ["sound:no-such-prompt"]))
        .await
        .unwrap();
    assert_eq!(
        h.live("finished (client id)", pb.finished()).await,
        failed(pb.id())
    );
    // The handle `play` returns, and one made by id while it was live.
    let played = h
        .live("play", call.play("sound:no-such-prompt"))
        .await
        .unwrap();
    assert_eq!(
        h.live("finished (play)", played.finished()).await,
        failed(played.id())
    );
    // A server-side id (`channels().play`): subscribes, then asks Asterisk.
    let server_side = h
        .live(
            "play (server id)",
            c.channels().play(call.id(), ["sound:no-such-prompt"]),
        )
        .await
        .unwrap();
    let outcome = h.live("finished (server id)", server_side.finished()).await;
    // Asterisk may have ended it before `finished()` asked (its 404 says only "over").
    assert!(
        outcome == failed(server_side.id()) || outcome == Ok(()),
        "{outcome:?}"
    );
    // What played, and what the application stopped, are Ok.
    h.live("beep", call.play("sound:beep"))
        .await
        .unwrap()
        .finished()
        .await
        .unwrap();
    let long = h
        .live("monkeys", call.play("sound:tt-monkeys"))
        .await
        .unwrap();
    h.live("stop", long.stop()).await.unwrap();
    h.live("finished (stopped)", long.finished()).await.unwrap();
    let err = failed("pb-1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "playback pb-1 of sound:no-such-prompt failed: Asterisk could not play it (state \
         `failed`, e.g. a missing sound file)"
    );
    h.live("hangup", call.hangup()).await.unwrap();
}

/// Listeners attached to a client-side id before a request that would create the resource
/// (node's `ari.Channel()` then `channel.originate`; `client.new_playback()` then
/// `play_with_id`) end when Asterisk refuses the request: the resource will never exist, so
/// no event will ever end them. Awaited events fail with `Error::Ended`, listeners are
/// released, and the client's live subscriptions come back to their baseline. The same
/// handle can try again. A 409 (the id belongs to an existing resource) ends nothing.
pub async fn a_refused_originate_or_play_ends_the_waits_set_up_for_it<R: Runtime>(h: &Harness<R>) {
    let app = "conf-refused";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();

    // An agent whose endpoint is misconfigured: Asterisk answers 400.
    let agent = c.new_channel();
    let started = agent.once::<StasisStart>();
    let listener = agent.on(|_: ChannelStateChange, _| async { Ok::<_, Error>(()) });
    let err = h
        .live("originate", agent.originate("Bogus/agent").app(app))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    match h.live("the StasisStart wait", started).await {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("channel:{}", agent.id())),
        other => panic!("the wait ends: {other:?}"),
    }
    h.eventually("the listener is released", || !listener.is_active())
        .await;
    assert_eq!(c.live_subscriptions(), baseline);

    // The same handle tries again with a good endpoint.
    let started = agent.once::<StasisStart>();
    h.live("originate again", agent.originate("PJSIP/bob").app(app))
        .await
        .unwrap();
    h.live("StasisStart", started).await.unwrap();

    // A 409: the id is the live agent's; its waits go on.
    let hangup = agent.once::<ChannelHangupRequest>();
    let err = h
        .live(
            "originate with a taken id",
            agent.originate("PJSIP/alice").app(app),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");

    // A prompt on a call that has just gone: 404; its waits end.
    let call = h.answered_call(&c, app).await;
    let ended = call.once::<StasisEnd>();
    h.server().hangup(call.id()).unwrap();
    h.live("StasisEnd", ended).await.unwrap();
    let pb = c.new_playback();
    let pb_started = pb.once::<ari_client::events::PlaybackStarted>();
    let err = h
        .live(
            "play on the gone call",
            call.play_with_id(&pb, ["sound:beep"]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
    assert!(matches!(
        h.live("the PlaybackStarted wait", pb_started).await,
        Err(Error::Ended { .. })
    ));
    h.live("finished() of the refused playback", pb.finished())
        .await
        .unwrap_err();

    // A recording in a format Asterisk cannot write: 422; its waits end, and `finished()`
    // does not report a recording that never existed as finished.
    h.live("answer the agent", agent.answer()).await.unwrap();
    let rec = c.new_live_recording();
    let rec_started = rec.once::<ari_client::events::RecordingStarted>();
    let err = h
        .live("record as mp3", agent.record(&rec, "mp3"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422), "{err:?}");
    assert!(matches!(
        h.live("the RecordingStarted wait", rec_started).await,
        Err(Error::Ended { .. })
    ));
    match h
        .live("finished() of the refused recording", rec.finished())
        .await
    {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("recording:{}", rec.name())),
        other => panic!("{other:?}"),
    }

    h.live("hang up the agent", agent.hangup()).await.unwrap();
    h.live("the agent's hangup wait", hangup).await.unwrap();
}

/// Asterisk restarts in the middle of a bridged call with a prompt playing to the bridge and
/// the bridge being recorded: every wait on the previous run's bridge, playback and recording
/// ends (none hangs): the bridge's awaited events fail with `Error::Ended`, its stream ends,
/// the playback's `finished()` fails with `Error::Ended` (it was cut off, not played), the
/// recording's `finished()` says its outcome is unknown; the client's live subscriptions come
/// back to their baseline, and the restarted Asterisk's calls are handled as usual.
pub async fn asterisk_restart_mid_call_ends_bridge_playback_and_recording_waits<R: Runtime>(
    h: &Harness<R>,
) {
    let app = "conf-restart-bridge";
    let run = |base_ms: u64| {
        let mut cfg = crate::fast_sim_config();
        cfg.wall_clock_base_ms = base_ms;
        cfg
    };
    let first = ari_testkit::MockServer::builder()
        .sim_config(run(1_795_691_627_914))
        .start();
    let port = first.port();
    let c = h.builder_for(&first).connect().await.unwrap();
    h.live("start", c.start(app)).await.unwrap();
    let baseline = c.live_subscriptions();
    let call = h
        .incoming_call_on(&first, &c, PlaceCall::new("PJSIP/alice", app))
        .await;
    h.live("answer", call.answer()).await.unwrap();
    let bridge = c.new_bridge();
    h.live("bridge", bridge.create().bridge_type("mixing"))
        .await
        .unwrap();
    h.live("add", bridge.add_channel([&call])).await.unwrap();
    let left = bridge.once::<ChannelLeftBridge>();
    let bridge_events = bridge.events();
    let prompt = h
        .live("play to the bridge", bridge.play("sound:tt-monkeys"))
        .await
        .unwrap();
    let rec = c.new_live_recording();
    let rec_started = rec.once::<ari_client::events::RecordingStarted>();
    // (A bridged channel cannot be recorded: Asterisk fails it; the bridge is.)
    h.live("record the call", bridge.record(&rec, "wav"))
        .await
        .unwrap();
    h.live("RecordingStarted", rec_started).await.unwrap();

    drop(first);
    let second = ari_testkit::MockServer::builder()
        .sim_config(run(1_795_691_627_914 + 3_600_000))
        .port(port)
        .start();
    match h.live("the bridge's wait ends", left).await {
        Err(Error::Ended { .. }) => {}
        other => panic!("{other:?}"),
    }
    drain(h, "the bridge's stream ends", bridge_events).await;
    match h
        .live("the prompt's finished() ends", prompt.finished())
        .await
    {
        Err(Error::Ended { resource }) => {
            assert_eq!(resource, format!("playback:{}", prompt.id()))
        }
        other => panic!("cut off by the restart, not played: {other:?}"),
    }
    match h
        .live("the recording's finished() ends", rec.finished())
        .await
    {
        Err(Error::RecordingOutcomeUnknown { name }) => assert_eq!(name, rec.name()),
        other => panic!("{other:?}"),
    }
    drop((prompt, rec, call, bridge));
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;

    let new = h
        .incoming_call_on(&second, &c, PlaceCall::new("PJSIP/alice", app))
        .await;
    h.live("answer the new call", new.answer()).await.unwrap();
    h.live("play on the new call", new.play("sound:beep"))
        .await
        .unwrap()
        .finished()
        .await
        .unwrap();
    h.live("hang up the new call", new.hangup()).await.unwrap();
}

/// Waits set up on every id a refused request would have created end: both halves of a
/// Local channel (`channelId` and `otherChannelId`, or the `{channelId};2` Asterisk gives
/// the second half without one) and a bridge created with the application's id. A 409
/// because one half's id belongs to a live channel keeps that channel's waits and ends the
/// other half's (it was never created).
pub async fn a_refused_local_originate_or_bridge_ends_the_waits_of_every_id<R: Runtime>(
    h: &Harness<R>,
) {
    let app = "conf-refused-local";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let expect_ended = |what: &'static str, r: Result<_, Error>, id: &str| match r {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("channel:{id}"), "{what}"),
        other => panic!("{what}: the wait ends: {other:?}"),
    };

    // A Local channel with no extension: 400. Waits on both halves end.
    let first = c.new_channel();
    let second = c.new_channel();
    let first_started = first.once::<StasisStart>();
    let second_started = second.once::<StasisStart>();
    let listener = second.on(|_: ChannelStateChange, _| async { Ok::<_, Error>(()) });
    let err = h
        .live(
            "originate",
            first
                .originate("Local/@nowhere")
                .app(app)
                .other_channel_id(second.id()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    let r = h.live("the first half's wait", first_started).await;
    expect_ended("first half", r, first.id());
    let r = h.live("the second half's wait", second_started).await;
    expect_ended("second half", r, second.id());
    h.eventually("the second half's listener is released", || {
        !listener.is_active()
    })
    .await;
    assert_eq!(c.live_subscriptions(), baseline);

    // Without `otherChannelId`, the second half is `{channelId};2`.
    let implicit = c.channel(format!("{};2", first.id()));
    let implicit_started = implicit.once::<StasisStart>();
    let err = h
        .live(
            "originate without otherChannelId",
            c.channels()
                .originate("Local/@nowhere")
                .app(app)
                .channel_id(first.id()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    let r = h
        .live("the implicit second half's wait", implicit_started)
        .await;
    expect_ended("implicit second half", r, implicit.id());
    assert_eq!(c.live_subscriptions(), baseline);

    // A 409: the second half's id is a live call's. Its waits go on; the first half's end.
    let call = h.answered_call(&c, app).await;
    let call_end = call.once::<StasisEnd>();
    let fresh = c.new_channel();
    let fresh_started = fresh.once::<StasisStart>();
    let err = h
        .live(
            "originate with a taken second id",
            fresh
                .originate("Local/1@default")
                .app(app)
                .other_channel_id(call.id()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");
    let r = h.live("the fresh half's wait", fresh_started).await;
    expect_ended("fresh half", r, fresh.id());
    // (The call's StasisEnd wait is checked below: it receives the event.)

    // A bridge of a type Asterisk does not know: 400; its waits end.
    let bridge = c.new_bridge();
    let destroyed = bridge.once::<BridgeDestroyed>();
    let err = h
        .live("bridge create", bridge.create().bridge_type("bogus"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    match h.live("the bridge's wait", destroyed).await {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("bridge:{}", bridge.id())),
        other => panic!("the bridge's wait ends: {other:?}"),
    }

    h.live("hang up the call", call.hangup()).await.unwrap();
    h.live("the call's StasisEnd", call_end).await.unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A recording refused with 409: when a recording under that name is in progress, the
/// waits on it are its own and go on (it finishes as usual); when only the stored recording
/// exists and `ifExists` is `fail` (the default), nothing was created and its waits end, as
/// Asterisk answers both with the same message. `ifExists=overwrite` then records.
pub async fn a_recording_refused_with_409_ends_its_waits_unless_one_is_live<R: Runtime>(
    h: &Harness<R>,
) {
    use ari_client::events::{RecordingStarted, ResourceKind};
    use ari_client::models::IfExists;
    let app = "conf-rec-409";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;

    let rec = c.new_live_recording();
    let started = rec.once::<RecordingStarted>();
    h.live("record", call.record(&rec, "wav")).await.unwrap();
    h.live("RecordingStarted", started).await.unwrap();
    // In progress: a second record under the name is refused; the live one's waits stay.
    let finished = rec.once::<RecordingFinished>();
    let err = h
        .live(
            "record the same name again",
            call.record(&rec, "wav").if_exists(IfExists::Overwrite),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");
    h.live("stop", rec.stop()).await.unwrap();
    let ev = h
        .live("the live recording's RecordingFinished", finished)
        .await
        .unwrap();
    assert_eq!(ev.recording.name, rec.name());

    // Stored, and `ifExists=fail` (the default): nothing is created; the waits end. (The
    // name of a recording that finished is remembered as ended: forgotten to reuse it.)
    assert!(c.forget_ended(ResourceKind::Recording, rec.name()));
    let started = rec.once::<RecordingStarted>();
    let err = h
        .live("record over the stored one", call.record(&rec, "wav"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");
    match h.live("the RecordingStarted wait", started).await {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("recording:{}", rec.name())),
        other => panic!("the wait ends: {other:?}"),
    }

    // Overwrite: recorded again, and followed as usual.
    // (The refusal did not record the name as ended: this wait is live.)
    let started = rec.once::<RecordingStarted>();
    let finished = rec.once::<RecordingFinished>();
    h.live(
        "record with overwrite",
        call.record(&rec, "wav").if_exists(IfExists::Overwrite),
    )
    .await
    .unwrap();
    h.live("RecordingStarted again", started).await.unwrap();
    h.live("stop again", rec.stop()).await.unwrap();
    h.live("RecordingFinished", finished).await.unwrap();
    h.live(
        "delete the stored recording",
        c.stored_recording(rec.name()).delete_stored(),
    )
    .await
    .unwrap();
    h.live("hangup", call.hangup()).await.unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A live recording that ends between a `record` refused with 409 and the client's live
/// check keeps its waits: the check (`GET recordings/live/{name}`) answers 404, but the
/// waits saw the recording live (its `RecordingStarted`), and its `RecordingFinished`,
/// published before the 404 and read after it, is delivered: `finished()` is `Ok`, not a
/// "never created" end. Deterministic: the application's events are held while the
/// recording ends and the name is recorded again (the stored recording and `ifExists=fail`
/// answer 409, as a recording in progress would).
pub async fn a_live_recording_ending_during_the_409_check_keeps_its_final_event<R: Runtime>(
    h: &Harness<R>,
) {
    use ari_client::events::RecordingStarted;
    let app = "conf-rec-409-race";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;

    let rec = c.new_live_recording();
    let started = rec.once::<RecordingStarted>();
    let events = rec.events();
    h.live("record", call.record(&rec, "wav")).await.unwrap();
    h.live("RecordingStarted", started).await.unwrap();
    let finished = rec.finished();

    // It ends; its RecordingFinished is held on the way to the application.
    assert_eq!(h.server().pause_sends(app), 1);
    h.live("stop", rec.stop()).await.unwrap();
    let again = c.live_recording(rec.name());
    let err = h
        .live("record the name again", call.record(&again, "wav"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");
    assert_eq!(h.server().resume_sends(app), 1);

    assert_eq!(h.live("finished", finished).await, Ok(()));
    let seen = drain(h, "the recording's events", events).await;
    assert!(
        seen.iter().any(|t| t == "RecordingFinished"),
        "the final event is delivered: {seen:?}"
    );
    h.live(
        "delete the stored recording",
        c.stored_recording(rec.name()).delete_stored(),
    )
    .await
    .unwrap();
    h.live("hangup", call.hangup()).await.unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// Like the case above, for a wait made after the recording's last event (it saw none of
/// them): the handle that started the recording is dropped, and a new handle made from the
/// name waits for its end. A `record` under the name is refused (409) while the recording
/// ends and the live check answers 404; `finished()` still gets the recording's
/// `RecordingFinished`, which was on its way, rather than a "never created" end.
pub async fn a_wait_made_after_a_recordings_events_keeps_its_final_event_past_a_409<R: Runtime>(
    h: &Harness<R>,
) {
    use ari_client::events::RecordingStarted;
    let app = "conf-rec-409-late-wait";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let in_call = c.live_subscriptions();

    let name = format!("late-{}", call.id());
    let first = c.live_recording(name.as_str());
    let started = first.once::<RecordingStarted>();
    h.live("record", call.record(&first, "wav")).await.unwrap();
    h.live("RecordingStarted", started).await.unwrap();
    drop(first);
    h.eventually("the first handle's waits are gone", || {
        c.live_subscriptions() == in_call
    })
    .await;
    // Made now: it has seen no event of the recording.
    let rec = c.live_recording(name.as_str());
    let finished = rec.finished();

    // It ends; its RecordingFinished is held on the way to the application.
    assert_eq!(h.server().pause_sends(app), 1);
    h.live("stop", c.recordings().stop(name.as_str()))
        .await
        .unwrap();
    let err = h
        .live("record the name again", call.record(&rec, "wav"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");
    assert_eq!(h.server().resume_sends(app), 1);

    assert_eq!(h.live("finished", finished).await, Ok(()));
    h.live(
        "delete the stored recording",
        c.stored_recording(name.as_str()).delete_stored(),
    )
    .await
    .unwrap();
    drop(rec);
    h.live("hangup", call.hangup()).await.unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A stop (or cancel) sent before the recording starts still ends it. Asterisk answers 204
/// to a stop of a recording whose command has not run (here: queued behind the greeting, a
/// voicemail's prompt and recording sent back to back) and disregards it; the recording then
/// starts and would run to its `maxDurationSeconds`. The client sees that Asterisk
/// disregarded it and sends it again once the recording starts: the recording ends right
/// away (duration 0, stored) for a stop, and is discarded (nothing stored) for a cancel.
pub async fn a_stop_sent_before_the_recording_starts_still_stops_it<R: Runtime>(h: &Harness<R>) {
    use ari_client::events::{RecordingFinished, RecordingStarted};
    let app = "conf-rec-early-stop";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    for cancel in [false, true] {
        let greeting = c.new_playback();
        h.live(
            "greeting",
            call.play_with_id(&greeting, ["sound:silence/1"]),
        )
        .await
        .unwrap();
        let rec = c.new_live_recording();
        let started = rec.once::<RecordingStarted>();
        let finished = rec.once::<RecordingFinished>();
        h.live("record", call.record(&rec, "wav").max_duration_seconds(20))
            .await
            .unwrap();
        if cancel {
            h.live("cancel", rec.cancel()).await.unwrap();
        } else {
            h.live("stop", rec.stop()).await.unwrap();
        }
        h.live("the greeting", greeting.finished()).await.unwrap();
        h.live("RecordingStarted", started).await.unwrap();
        let ev = h.live("RecordingFinished", finished).await.unwrap();
        let stored = h
            .live("stored", c.stored_recording(rec.name()).get_stored())
            .await;
        if cancel {
            assert!(
                stored.as_ref().is_err_and(|e| e.is_not_found()),
                "canceled: nothing stored: {stored:?}"
            );
        } else {
            assert_eq!(
                ev.recording.duration,
                Some(0),
                "stopped at its start: {ev:?}"
            );
            assert!(stored.is_ok(), "{stored:?}");
            h.live(
                "delete the stored recording",
                c.stored_recording(rec.name()).delete_stored(),
            )
            .await
            .unwrap();
        }
        assert_eq!(rec.finished().await, Ok(()));
    }
    h.live("hangup", call.hangup()).await.unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A voicemail whose caller hangs up during the greeting: the recording, queued behind the
/// greeting, never starts, and Asterisk drops it without an event (the channel's queued
/// commands are flushed when it leaves Stasis). Its waits end with the call: `finished()`
/// fails with `Error::Ended` (it did not finish), a `RecordingStarted` wait likewise, and
/// nothing is left behind. (Before, they waited for ever.)
pub async fn a_recording_queued_behind_the_greeting_ends_its_waits_when_the_caller_hangs_up<
    R: Runtime,
>(
    h: &Harness<R>,
) {
    use ari_client::events::RecordingStarted;
    let app = "conf-vm-early-hangup";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let greeting = c.new_playback();
    h.live(
        "greeting",
        call.play_with_id(&greeting, ["sound:silence/5"]),
    )
    .await
    .unwrap();
    let rec = c.new_live_recording();
    let started = rec.once::<RecordingStarted>();
    h.live("record", call.record(&rec, "wav").max_duration_seconds(30))
        .await
        .unwrap();
    let finished = rec.finished();
    h.server().hangup(call.id()).unwrap();
    match h.live("finished", finished).await {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("recording:{}", rec.name())),
        other => panic!("the recording never started: {other:?}"),
    }
    match h.live("RecordingStarted", started).await {
        Err(Error::Ended { .. }) => {}
        other => panic!("the recording never started: {other:?}"),
    }
    h.live("the greeting's end", greeting.finished())
        .await
        .unwrap();
    drop(rec);
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A blind transfer (SIP `REFER`) handed to the application (`ChannelTransfer`, Asterisk 20+
/// with `TRANSFER_HANDLING(ari-only)`), followed as an application carries it out: the
/// caller talks to an agent in a mixing bridge; the agent's phone refers the call to `2000`.
/// `ChannelTransfer` reaches the agent's listeners (its channel is in `referred_by`) and the
/// caller's (`referred_by.connected_channel`); the application tells the phone it is under
/// way (`transfer_progress`), originates the target into the application, swaps it in for
/// the agent, reports `channel_answered` and hangs the agent up. The caller ends up bridged
/// with the target. Then an attended transfer: the caller's phone replaces its call with
/// another call of its (by Call-ID): both the referring and the replaced channels' listeners
/// get it. Every wait ends.
pub async fn a_blind_transfer_is_followed_and_carried_out_by_the_application<R: Runtime>(
    h: &Harness<R>,
) {
    use ari_client::events::ChannelTransfer;
    use ari_testkit::Refer;
    let app = "conf-transfer";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let caller = h.answered_call(&c, app).await;
    let agent = h
        .incoming_call(&c, PlaceCall::new("PJSIP/agent-7", app))
        .await;
    h.live("answer the agent", agent.answer()).await.unwrap();
    let bridge = c.new_bridge();
    h.live("bridge", bridge.create().bridge_type("mixing"))
        .await
        .unwrap();
    h.live("both in", bridge.add_channel([&caller, &agent]))
        .await
        .unwrap();

    let on_agent = agent.once::<ChannelTransfer>();
    let on_caller = caller.once::<ChannelTransfer>();
    let refer = Refer::Blind {
        destination: "2000".to_string(),
    };
    h.server()
        .refer(agent.id(), refer)
        .expect("the REFER is received");
    let ev = h.live("ChannelTransfer (agent)", on_agent).await.unwrap();
    assert_eq!(
        ev.refer_to.requested_destination.destination.as_deref(),
        Some("2000")
    );
    assert_eq!(ev.referred_by.source_channel.id, agent.id());
    assert_eq!(
        ev.referred_by
            .connected_channel
            .as_ref()
            .map(|c| c.id.as_str()),
        Some(caller.id())
    );
    assert_eq!(
        ev.referred_by.bridge.as_ref().map(|b| b.id.as_str()),
        Some(bridge.id())
    );
    let seen = h.live("ChannelTransfer (caller)", on_caller).await.unwrap();
    assert_eq!(seen, ev);

    // The application carries it out.
    h.live(
        "progress to the phone",
        agent.transfer_progress("channel_progress"),
    )
    .await
    .unwrap();
    let destination = ev
        .refer_to
        .requested_destination
        .destination
        .clone()
        .unwrap_or_default();
    let target = c.new_channel();
    let target_started = target.once::<StasisStart>();
    h.live(
        "originate the target",
        target.originate(format!("PJSIP/{destination}")).app(app),
    )
    .await
    .unwrap();
    h.live("the target's StasisStart", target_started)
        .await
        .unwrap();
    let agent_end = agent.once::<StasisEnd>();
    h.live("agent out", bridge.remove_channel([&agent]))
        .await
        .unwrap();
    h.live("target in", bridge.add_channel([&target]))
        .await
        .unwrap();
    h.live("answered", agent.transfer_progress("channel_answered"))
        .await
        .unwrap();
    h.live("hang the agent up", agent.hangup()).await.unwrap();
    h.live("the agent's StasisEnd", agent_end).await.unwrap();
    let now = h.live("the bridge", bridge.get()).await.unwrap();
    let data = now.data().expect("the bridge as Asterisk has it");
    let mut in_bridge: Vec<String> = data.channels.iter().map(|c| c.to_string()).collect();
    in_bridge.sort();
    let mut expected = vec![caller.id().to_string(), target.id().to_string()];
    expected.sort();
    assert_eq!(in_bridge, expected);

    // Attended: the caller's phone replaces this call with another call of its.
    let other = h
        .incoming_call(&c, PlaceCall::new("PJSIP/alice", app))
        .await;
    h.live("answer the other call", other.answer())
        .await
        .unwrap();
    let on_caller = caller.once::<ChannelTransfer>();
    let on_other = other.once::<ChannelTransfer>();
    let refer = Refer::Attended {
        replaces: other.id().to_string(),
    };
    h.server()
        .refer(caller.id(), refer)
        .expect("the REFER is received");
    let ev = h.live("ChannelTransfer (caller)", on_caller).await.unwrap();
    assert_eq!(
        h.live("ChannelTransfer (replaced)", on_other)
            .await
            .unwrap(),
        ev
    );
    let replaced = ev.refer_to.destination_channel.as_ref();
    assert_eq!(replaced.map(|c| c.id.as_str()), Some(other.id()));
    assert_eq!(
        ev.refer_to.requested_destination.protocol_id,
        replaced.map(|c| c.protocol_id.clone())
    );
    h.live("declined", caller.transfer_progress("channel_declined"))
        .await
        .unwrap();

    for ch in [&caller, &target, &other] {
        h.live("hangup", ch.hangup()).await.unwrap();
    }
    h.live("destroy the bridge", bridge.destroy())
        .await
        .unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A call moved between two applications of one client (`POST channels/{id}/move`, Asterisk
/// 20+): its `StasisEnd` names the first, its new `StasisStart` the second with the move's
/// arguments, and the waits set up before the move go on (the channel is still the
/// client's). A move to an application nobody registered is accepted, leaves the call where
/// it is, and reports `ApplicationMoveFailed` to it. Hanging up ends every wait.
pub async fn a_call_moved_to_another_application_keeps_its_waits<R: Runtime>(h: &Harness<R>) {
    use ari_client::events::ApplicationMoveFailed;
    let (first, second) = ("conf-move-a", "conf-move-b");
    let c = h.started(&[first, second]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, first).await;
    let events = call.events();

    let failed = call.once::<ApplicationMoveFailed>();
    h.live("move nowhere", call.r#move("conf-move-nobody"))
        .await
        .unwrap();
    let ev = h.live("ApplicationMoveFailed", failed).await.unwrap();
    assert_eq!(ev.destination, "conf-move-nobody");
    assert_eq!(ev.application, first);

    let left = call.once::<StasisEnd>();
    let arrived = call.once::<StasisStart>();
    h.live("move", call.r#move(second).app_args("transferred,7"))
        .await
        .unwrap();
    let ev = h.live("StasisEnd of the first", left).await.unwrap();
    assert_eq!(ev.application, first);
    let ev = h.live("StasisStart in the second", arrived).await.unwrap();
    assert_eq!(ev.application, second);
    assert_eq!(ev.args, ["transferred", "7"]);
    // Still the client's call: it answers requests and its waits go on.
    h.live("ring after the move", call.ring()).await.unwrap();
    let end = call.once::<StasisEnd>();
    h.live("hang up", call.hangup()).await.unwrap();
    let ev = h.live("StasisEnd of the second", end).await.unwrap();
    assert_eq!(ev.application, second);
    let types = drain(h, "the call's stream ends", events).await;
    assert_eq!(
        types.iter().filter(|t| *t == "StasisStart").count(),
        1,
        "{types:?}"
    );
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A call handed to the dialplan (`continue`) that plays a prompt and comes back to the
/// application (`Stasis(app,again)`): the waits set up before the hand-off receive its
/// `StasisEnd` and then its new `StasisStart` (with the dialplan's arguments), the
/// application's incoming calls offer it again, its stream goes on across the trip, and
/// hanging it up ends every wait.
pub async fn a_call_sent_to_the_dialplan_and_back_is_followed_again<R: Runtime>(h: &Harness<R>) {
    let app = "conf-back";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let mut incoming = c.incoming();
    let events = call.events();
    let left = call.once::<StasisEnd>();
    let back = call.once::<StasisStart>();
    h.live(
        "continue",
        call.continue_in_dialplan()
            .context("conformance")
            .extension("back")
            .priority(1),
    )
    .await
    .unwrap();
    h.live("StasisEnd", left).await.unwrap();
    let ev = h.live("StasisStart again", back).await.unwrap();
    assert_eq!(ev.args, ["again"]);
    let (start, again, again_events) = h.next_incoming("offered again", &mut incoming).await;
    assert_eq!(again.id(), call.id());
    assert_eq!(start.args, ["again"]);
    drop(again_events);
    drop(incoming);
    let end = call.once::<StasisEnd>();
    h.live("hang up", call.hangup()).await.unwrap();
    h.live("the last StasisEnd", end).await.unwrap();
    let types = drain(h, "the call's stream ends", events).await;
    let trips: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with("Stasis"))
        .collect();
    assert_eq!(
        trips,
        ["StasisEnd", "StasisStart", "StasisEnd"],
        "{types:?}"
    );
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// Early media before answering an incoming call, as an IVR that plays a prompt before
/// billing starts does: `ring` (the state goes to `Ringing`, reported by a
/// `ChannelStateChange`), `progress` (Asterisk 20+; no state change), then `answer` (`Up`);
/// a transfer's progress is told to the channel (`transfer_progress`). Every wait ends with
/// the hangup.
pub async fn early_media_ring_and_progress_before_answering<R: Runtime>(h: &Harness<R>) {
    use ari_client::models::ChannelState;
    let app = "conf-early-media";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h
        .incoming_call(&c, PlaceCall::new("PJSIP/alice", app))
        .await;
    let mut states = call.stream::<ChannelStateChange>();
    h.live("ring", call.ring()).await.unwrap();
    let ev = h
        .live("Ringing", states.next())
        .await
        .expect("the stream lives")
        .unwrap();
    assert_eq!(ev.channel.state, ChannelState::Ringing);
    h.live("progress", call.progress()).await.unwrap();
    h.live(
        "transfer progress",
        call.transfer_progress("channel_progress"),
    )
    .await
    .unwrap();
    let err = h
        .live(
            "transfer progress, bad state",
            call.transfer_progress("bogus"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    h.live("answer", call.answer()).await.unwrap();
    let ev = h
        .live("Up", states.next())
        .await
        .expect("the stream lives")
        .unwrap();
    assert_eq!(ev.channel.state, ChannelState::Up);
    let end = call.once::<StasisEnd>();
    h.live("hang up", call.hangup()).await.unwrap();
    h.live("StasisEnd", end).await.unwrap();
    drop(states);
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A key menu as an IVR writes it: the prompt, then a wait for a key bounded by
/// `client.timeout`; rounds without a key time out (`Error::Timeout`) and leave no
/// subscription behind; a key pressed is received with its digit; the caller hanging up
/// while the menu waits ends the wait (`Error::Ended`), and nothing is left behind.
pub async fn a_key_menu_with_timeouts_leaves_no_wait_behind<R: Runtime>(h: &Harness<R>) {
    use ari_client::events::ChannelDtmfReceived;
    use std::time::Duration;
    let app = "conf-menu";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let with_call = c.live_subscriptions();
    for round in 0..3 {
        h.live("the prompt", call.play("sound:vm-intro"))
            .await
            .unwrap()
            .finished()
            .await
            .unwrap();
        // Nobody presses a key: the wait times out (what is asserted is the outcome of a
        // wait no key can satisfy, not how long it took).
        let wait = c.timeout(
            Duration::from_millis(20),
            call.once::<ChannelDtmfReceived>(),
        );
        match h.live("the key wait", wait).await {
            Err(Error::Timeout { .. }) => {}
            other => panic!("round {round}: the wait times out: {other:?}"),
        }
        assert_eq!(c.live_subscriptions(), with_call, "round {round}");
    }
    let key = call.once::<ChannelDtmfReceived>();
    h.server().send_dtmf(call.id(), "5").unwrap();
    let ev = h.live("the key", key).await.unwrap();
    assert_eq!(ev.digit, "5");
    let key = c.timeout(Duration::from_secs(600), call.once::<ChannelDtmfReceived>());
    h.server().hangup(call.id()).unwrap();
    match h.live("the key wait of a call that hangs up", key).await {
        Ok(Err(Error::Ended { resource })) => {
            assert_eq!(resource, format!("channel:{}", call.id()))
        }
        other => panic!("the wait ends with the call: {other:?}"),
    }
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// An external media channel (RTP to a speech engine) bridged with a call, its waits set up
/// on a client-side id before it exists: a format Asterisk does not know is refused (400)
/// and those waits end; the same id then works, the channel enters the application and the
/// bridge, and hanging both up ends every wait.
pub async fn an_external_media_channel_is_followed_from_before_its_creation_to_its_end<
    R: Runtime,
>(
    h: &Harness<R>,
) {
    let app = "conf-extmedia";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let em = c.new_channel();
    let started = em.once::<StasisStart>();
    let err = h
        .live(
            "external media in mp3",
            em.external_media(app, "mp3")
                .external_host("127.0.0.1:40000"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    match h.live("the refused channel's wait", started).await {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("channel:{}", em.id())),
        other => panic!("the wait ends: {other:?}"),
    }

    let started = em.once::<StasisStart>();
    let destroyed = em.once::<ChannelDestroyed>();
    let events = em.events();
    let created = h
        .live(
            "external media",
            em.external_media(app, "ulaw")
                .external_host("127.0.0.1:40000"),
        )
        .await
        .unwrap();
    assert_eq!(created.id(), em.id());
    h.live("its StasisStart", started).await.unwrap();
    let bridge = c.new_bridge();
    let mut entered = bridge.stream::<ChannelEnteredBridge>();
    h.live("bridge", bridge.create().bridge_type("mixing"))
        .await
        .unwrap();
    h.live("both in", bridge.add_channel([&call, &em]))
        .await
        .unwrap();
    for _ in 0..2 {
        h.live("ChannelEnteredBridge", entered.next())
            .await
            .unwrap()
            .unwrap();
    }
    h.live("hang up the call", call.hangup()).await.unwrap();
    h.live("hang up the media", em.hangup()).await.unwrap();
    h.live("its ChannelDestroyed", destroyed).await.unwrap();
    let types = drain(h, "its stream ends", events).await;
    assert_eq!(types.last().map(String::as_str), Some("ChannelDestroyed"));
    h.live("destroy the bridge", bridge.destroy())
        .await
        .unwrap();
    drop(entered);
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// `call` in a new mixing bridge.
async fn in_a_bridge<R: Runtime>(
    h: &Harness<R>,
    c: &ari_client::Client<R>,
    call: &ari_client::Channel<R>,
) -> ari_client::Bridge<R> {
    let bridge = c.new_bridge();
    h.live("bridge", bridge.create().bridge_type("mixing"))
        .await
        .unwrap();
    h.live("into the bridge", bridge.add_channel([call]))
        .await
        .unwrap();
    bridge
}

/// A queued prompt's `finished()` that Asterisk dropped with its call: `Error::Ended`
/// naming the playback.
fn never_started(finished: Result<(), Error>, playback: &str) {
    match finished {
        Err(Error::Ended { resource }) => assert_eq!(resource, format!("playback:{playback}")),
        other => panic!("the menu never started: {other:?}"),
    }
}

/// A menu queued behind a greeting when the caller hangs up. What Asterisk sends for the
/// queued prompt depends on where the call is: out of a bridge its command still runs
/// against the hung-up channel (`PlaybackStarted`, `PlaybackFinished` at once, before
/// `StasisEnd`); in a bridge it is dropped without an event. `finished()` ends either way:
/// `Ok` in the first case, `Error::Ended` in the second; the greeting finishes, and nothing
/// is left behind.
pub async fn a_prompt_queued_when_the_caller_hangs_up_ends_its_wait_in_or_out_of_a_bridge<
    R: Runtime,
>(
    h: &Harness<R>,
) {
    let app = "conf-queued-prompt-hangup";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    for bridged in [false, true] {
        let call = h.answered_call(&c, app).await;
        let bridge = c.new_bridge();
        if bridged {
            h.live("bridge", bridge.create().bridge_type("mixing"))
                .await
                .unwrap();
            h.live("into the bridge", bridge.add_channel([&call]))
                .await
                .unwrap();
        }
        let greeting = c.new_playback();
        let menu = c.new_playback();
        h.live(
            "greeting",
            call.play_with_id(&greeting, ["sound:silence/5"]),
        )
        .await
        .unwrap();
        h.live("menu", call.play_with_id(&menu, ["sound:silence/3"]))
            .await
            .unwrap();
        let menu_finished = menu.finished();
        h.server().hangup(call.id()).unwrap();
        h.live("the greeting's end", greeting.finished())
            .await
            .unwrap();
        match (bridged, h.live("the menu's end", menu_finished).await) {
            (false, Ok(())) => {}
            (true, Err(Error::Ended { resource })) => {
                assert_eq!(resource, format!("playback:{}", menu.id()))
            }
            (bridged, other) => panic!("bridged {bridged}: {other:?}"),
        }
        if bridged {
            h.live("destroy the bridge", bridge.destroy())
                .await
                .unwrap();
        }
    }
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// The caller hangs up just as the application queues a menu behind the greeting on a
/// bridged call: Asterisk takes the `play` (201), then drops the queued command with the
/// call, and the application hears of the hangup (`StasisEnd` on the events socket) before
/// the 201 arrives. `finished()` ends with `Error::Ended` once the answer comes. (Before, it
/// waited for ever: the client tracked the menu as queued on a channel that had already
/// left.)
pub async fn a_prompt_answered_after_the_caller_left_ends_its_wait<R: Runtime>(h: &Harness<R>) {
    use std::future::IntoFuture;
    let app = "conf-prompt-after-hangup";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let bridge = in_a_bridge(h, &c, &call).await;
    let greeting = c.new_playback();
    h.live(
        "greeting",
        call.play_with_id(&greeting, ["sound:silence/5"]),
    )
    .await
    .unwrap();
    let left = call.once::<StasisEnd>();
    let menu = c.new_playback();
    let menu_finished = menu.finished();
    let exists = |id: &str| {
        let segments = ["playbacks".to_string(), id.to_string()];
        h.server().with_sim(|sim, now| {
            let req = ari_testkit::sim::SimRequest {
                method: "GET",
                segments: &segments,
                query: &[],
                body: None,
                read_only: false,
            };
            sim.handle_request(now, &req).status == 200
        }) == Some(true)
    };
    h.server().hold_answers(true);
    let play = call.play_with_id(&menu, ["sound:silence/3"]).into_future();
    let hang_up = async {
        h.eventually("the menu is queued", || exists(menu.id()))
            .await;
        h.server().hangup(call.id()).unwrap();
        let end = h.live("StasisEnd", left).await;
        h.server().hold_answers(false);
        end
    };
    let (played, end) = h
        .live("play and hang up", futures::future::join(play, hang_up))
        .await;
    h.server().hold_answers(false);
    played.unwrap();
    end.unwrap();
    never_started(h.live("the menu's end", menu_finished).await, menu.id());
    h.live("the greeting's end", greeting.finished())
        .await
        .unwrap();
    h.live("destroy the bridge", bridge.destroy())
        .await
        .unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}

/// A menu played with a server-side id (`channels/{id}/play`, no id chosen by the
/// application) queued behind the greeting on a bridged call, its `finished()` asked while
/// it waits; the caller hangs up and Asterisk drops the menu without an event. `finished()`
/// ends with `Error::Ended`. (Before, it asked Asterisk, heard the menu was queued, and
/// waited for a `PlaybackFinished` that never came.)
pub async fn a_server_id_prompt_dropped_at_the_hangup_ends_its_wait<R: Runtime>(h: &Harness<R>) {
    let app = "conf-server-id-prompt";
    let c = h.started(&[app]).await;
    let baseline = c.live_subscriptions();
    let call = h.answered_call(&c, app).await;
    let bridge = in_a_bridge(h, &c, &call).await;
    let greeting = h
        .live(
            "greeting",
            c.channels().play(call.id(), ["sound:silence/5"]),
        )
        .await
        .unwrap();
    let menu = h
        .live("menu", c.channels().play(call.id(), ["sound:silence/3"]))
        .await
        .unwrap();
    let mut menu_finished = Box::pin(menu.finished());
    let greeting_finished = greeting.finished();
    // `finished()` asks Asterisk (the menu is queued), then waits.
    let asked = h.sleep(std::time::Duration::from_millis(300));
    if let futures::future::Either::Left((r, _)) =
        futures::future::select(menu_finished.as_mut(), Box::pin(asked)).await
    {
        panic!("the menu is queued behind the greeting: {r:?}");
    }
    h.server().hangup(call.id()).unwrap();
    h.live("the greeting's end", greeting_finished)
        .await
        .unwrap();
    never_started(h.live("the menu's end", menu_finished).await, menu.id());
    h.live("destroy the bridge", bridge.destroy())
        .await
        .unwrap();
    h.eventually("nothing left behind", || c.live_subscriptions() == baseline)
        .await;
}
