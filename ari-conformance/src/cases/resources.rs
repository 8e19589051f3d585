//! Every resource family of ARI, exercised through the typed API (resource accessors and
//! instance objects) against the simulated Asterisk.

use std::time::Duration;

use ari_client::events::{
    BridgeDestroyed, ChannelDestroyed, ChannelDtmfReceived, ChannelEnteredBridge,
    ChannelLeftBridge, ChannelUserevent, PlaybackStarted, RecordingFailed, RecordingStarted,
    StasisEnd, StasisStart,
};
use ari_client::models::{
    ChannelState, DeviceStateValue, IfExists, MuteDirection, PlaybackOperation, PlaybackState,
    SnoopDirection,
};
use ari_client::{Channel, ClientStream, ErrorKind, Runtime};
use ari_testkit::PlaceCall;
use futures::StreamExt;

use super::assert_ari;
use crate::Harness;

/// Waits on a `StasisStart` stream for the channel `id`.
async fn stasis_start<R: Runtime>(
    h: &Harness<R>,
    starts: &mut ClientStream<R, StasisStart>,
    id: &str,
) -> (StasisStart, Channel<R>) {
    h.live(&format!("StasisStart of {id}"), async {
        loop {
            let (event, channel) = starts.next().await.expect("stream lives").expect("no lag");
            if event.channel.id == id {
                return (event, channel);
            }
        }
    })
    .await
}

/// `asterisk`: info (whole and filtered), ping, global variables.
pub async fn asterisk_info_ping_and_variables<R: Runtime>(h: &Harness<R>) {
    let c = h.client().await;
    let info = h.live("info", c.asterisk().get_info()).await.unwrap();
    let system = info.system.expect("system section");
    assert!(system.version.starts_with("GIT-master"), "{system:?}");
    assert!(info.build.is_some() && info.config.is_some() && info.status.is_some());

    let only = h
        .live(
            "info ?only=system",
            c.asterisk()
                .get_info()
                .only([ari_client::models::InfoSection::System]),
        )
        .await
        .unwrap();
    assert!(only.system.is_some());
    assert!(only.build.is_none() && only.status.is_none(), "{only:?}");

    let ping = h.live("ping", c.asterisk().ping()).await.unwrap();
    assert_eq!(ping.ping, "pong");
    assert_eq!(ping.asterisk_id, system.entity_id);

    h.live(
        "set global",
        c.asterisk().set_global_var("CONFORMANCE").value("42 & /?#"),
    )
    .await
    .unwrap();
    let v = h
        .live("get global", c.asterisk().get_global_var("CONFORMANCE"))
        .await
        .unwrap();
    assert_eq!(v.value, "42 & /?#");
}

/// `applications`: list, get, subscribe and unsubscribe (instance and accessor forms),
/// unknown application and unknown event source.
pub async fn applications_list_get_subscribe_unsubscribe<R: Runtime>(h: &Harness<R>) {
    let app = "conf-apps";
    let c = h.started(&[app, "conf-apps-2"]).await;
    let apps = h.live("list", c.applications().list()).await.unwrap();
    let names: Vec<&str> = apps.iter().map(|a| a.name()).collect();
    assert!(
        names.contains(&app) && names.contains(&"conf-apps-2"),
        "{names:?}"
    );

    let got = h.live("get", c.applications().get(app)).await.unwrap();
    assert_eq!(got.name(), app);
    assert_eq!(got.data().expect("snapshot").name, app);

    let bridge = c.new_bridge();
    h.live("create bridge", bridge.create()).await.unwrap();
    let source = format!("bridge:{}", bridge.id());
    let application = c.application(app);
    let subscribed = h
        .live("subscribe", application.subscribe([source.as_str()]))
        .await
        .unwrap();
    assert!(
        subscribed
            .data()
            .expect("snapshot")
            .bridge_ids
            .iter()
            .any(|b| b == bridge.id()),
        "{subscribed:?}"
    );
    // The subscription delivers the bridge's events to the app.
    let destroyed = bridge.once::<BridgeDestroyed>();

    let unsubscribed = h
        .live(
            "unsubscribe",
            c.applications().unsubscribe(app, [source.as_str()]),
        )
        .await
        .unwrap();
    assert!(!unsubscribed
        .data()
        .expect("snapshot")
        .bridge_ids
        .iter()
        .any(|b| b == bridge.id()));
    h.live("resubscribe", application.subscribe([source.as_str()]))
        .await
        .unwrap();
    h.live("destroy", bridge.destroy()).await.unwrap();
    let ev = h.live("BridgeDestroyed", destroyed).await.unwrap();
    assert_eq!(ev.bridge.id, bridge.id());

    let err = h
        .live("get unknown", c.applications().get("no-such-app"))
        .await
        .unwrap_err();
    assert_ari(&err, 404, ErrorKind::NotFound, "Application not found");
    let err = h
        .live(
            "subscribe unknown source",
            application.subscribe(["channel:no-such-channel"]),
        )
        .await
        .unwrap_err();
    assert_ari(
        &err,
        422,
        ErrorKind::Unprocessable,
        "Event source does not exist",
    );
}

/// `channels`: originate, originate with id, create + dial, get, list, answer, ring,
/// hold/unhold, mute/unmute, variables, DTMF both ways, music on hold, silence, snoop,
/// hangup.
pub async fn channels_every_operation<R: Runtime>(h: &Harness<R>) {
    let app = "conf-channels";
    let c = h.started(&[app]).await;
    let mut starts = c.stream::<StasisStart>();

    // originate (server-side id) and originateWithId.
    let a = h
        .live(
            "originate",
            c.channels()
                .originate("PJSIP/alice")
                .app(app)
                .app_args("x,y"),
        )
        .await
        .unwrap();
    let (ev, _) = stasis_start(h, &mut starts, a.id()).await;
    assert_eq!(ev.args, vec!["x".to_string(), "y".to_string()]);
    let b = h
        .live(
            "originate with id",
            c.channels()
                .originate_with_id("conf-owid", "PJSIP/bob")
                .app(app),
        )
        .await
        .unwrap();
    assert_eq!(b.id(), "conf-owid");
    stasis_start(h, &mut starts, "conf-owid").await;

    // create + dial.
    let d = c.new_channel();
    let created = h.live("create", d.create("PJSIP/bob", app)).await.unwrap();
    assert_eq!(created.id(), d.id());
    stasis_start(h, &mut starts, d.id()).await;
    assert_eq!(
        h.live("get", d.get()).await.unwrap().data().unwrap().state,
        ChannelState::Down
    );
    h.live("dial", d.dial().timeout(10)).await.unwrap();
    let mut up = false;
    for _ in 0..2000 {
        let now = h.live("get", d.get()).await.unwrap();
        if now.data().unwrap().state == ChannelState::Up {
            up = true;
            break;
        }
        h.sleep(Duration::from_millis(5)).await;
    }
    assert!(up, "the dialed channel was answered");

    // get and list.
    let got = h.live("get", c.channels().get(a.id())).await.unwrap();
    assert_eq!(got.id(), a.id());
    assert_eq!(got.data().unwrap().state, ChannelState::Up);
    let list = h.live("list", c.channels().list()).await.unwrap();
    for id in [a.id(), b.id(), d.id()] {
        assert!(list.iter().any(|ch| ch.id() == id), "{id} listed");
    }

    // An incoming call: answer, ring, hold, mute, variables, DTMF, MOH, silence.
    let inc = h
        .incoming_call(&c, ari_testkit::PlaceCall::new("PJSIP/alice", app))
        .await;
    assert_eq!(
        h.live("get", inc.get())
            .await
            .unwrap()
            .data()
            .unwrap()
            .state,
        ChannelState::Ring
    );
    h.live("ring", inc.ring()).await.unwrap();
    h.live("ring stop", inc.ring_stop()).await.unwrap();
    h.live("answer", inc.answer()).await.unwrap();
    assert_eq!(
        h.live("get", inc.get())
            .await
            .unwrap()
            .data()
            .unwrap()
            .state,
        ChannelState::Up
    );

    // (Asterisk reports ChannelHold/ChannelUnhold only with HOLD_INTERCEPT.)
    h.live("hold", inc.hold()).await.unwrap();
    h.live("unhold", c.channels().unhold(inc.id()))
        .await
        .unwrap();

    h.live("mute", inc.mute().direction(MuteDirection::In))
        .await
        .unwrap();
    h.live("unmute", inc.unmute().direction(MuteDirection::In))
        .await
        .unwrap();

    h.live("set var", inc.set_channel_var("CONF_VAR").value("v1"))
        .await
        .unwrap();
    let v = h
        .live("get var", inc.get_channel_var("CONF_VAR"))
        .await
        .unwrap();
    assert_eq!(v.value, "v1");
    let err = h
        .live("get unset var", inc.get_channel_var("CONF_UNSET"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");

    h.live("send dtmf", inc.send_dtmf().dtmf("12#").between(50))
        .await
        .unwrap();
    let mut keys = inc.stream::<ChannelDtmfReceived>();
    h.server().send_dtmf(inc.id(), "42").unwrap();
    let mut digits = String::new();
    while digits.len() < 2 {
        let k = h.live("DTMF", keys.next()).await.unwrap().unwrap();
        assert_eq!(k.channel.id, inc.id());
        digits.push_str(&k.digit);
    }
    assert_eq!(digits, "42");

    h.live("moh", inc.start_moh().moh_class("default"))
        .await
        .unwrap();
    h.live("stop moh", inc.stop_moh()).await.unwrap();
    h.live("silence", inc.start_silence()).await.unwrap();
    h.live("stop silence", inc.stop_silence()).await.unwrap();

    // Snoop, with a server-side and a client-side id.
    let snoop = h
        .live("snoop", inc.snoop_channel(app).spy(SnoopDirection::Both))
        .await
        .unwrap();
    stasis_start(h, &mut starts, snoop.id()).await;
    let snoop2 = h
        .live(
            "snoop with id",
            inc.snoop_channel_with_id("conf-snoop", app)
                .whisper(SnoopDirection::Out),
        )
        .await
        .unwrap();
    assert_eq!(snoop2.id(), "conf-snoop");
    stasis_start(h, &mut starts, "conf-snoop").await;
    h.live("hangup snoop", snoop.hangup()).await.unwrap();
    h.live("hangup snoop 2", snoop2.hangup()).await.unwrap();

    // Hang up: an incoming call ends with StasisEnd, an originated one with
    // ChannelDestroyed; both are gone afterwards.
    let end = inc.once::<StasisEnd>();
    h.live("hangup", inc.hangup()).await.unwrap();
    h.live("StasisEnd", end).await.unwrap();
    for ch in [&a, &b, &d] {
        let destroyed = ch.once::<ChannelDestroyed>();
        h.live("hangup", ch.hangup()).await.unwrap();
        let ev = h.live("ChannelDestroyed", destroyed).await.unwrap();
        assert_eq!(ev.channel.id, ch.id());
    }
    for ch in [&inc, &a, &b, &d] {
        let err = h.live("get gone", ch.get()).await.unwrap_err();
        assert_ari(&err, 404, ErrorKind::NotFound, "Channel not found");
    }
}

/// `bridges`: create (server id, instance id, explicit id), list, get, add/remove a
/// channel, play, record, music on hold, destroy.
pub async fn bridges_every_operation<R: Runtime>(h: &Harness<R>) {
    let app = "conf-bridges";
    let c = h.started(&[app]).await;
    let b1 = h
        .live(
            "create",
            c.bridges().create().bridge_type("mixing").name("conf-b1"),
        )
        .await
        .unwrap();
    assert_eq!(b1.data().unwrap().name, "conf-b1");
    let b2 = c.new_bridge();
    let created = h
        .live("create (instance)", b2.create().bridge_type("mixing"))
        .await
        .unwrap();
    assert_eq!(created.id(), b2.id());
    let b3 = h
        .live("create with id", c.bridges().create_with_id("conf-b3"))
        .await
        .unwrap();
    assert_eq!(b3.id(), "conf-b3");
    let list = h.live("list", c.bridges().list()).await.unwrap();
    for id in [b1.id(), b2.id(), "conf-b3"] {
        assert!(list.iter().any(|b| b.id() == id), "{id} listed");
    }

    let ch = h.answered_call(&c, app).await;
    let entered = b2.once::<ChannelEnteredBridge>();
    h.live("add channel", b2.add_channel([&ch])).await.unwrap();
    let ev = h.live("ChannelEnteredBridge", entered).await.unwrap();
    assert_eq!(ev.channel.as_ref().map(|c| c.id.as_str()), Some(ch.id()));
    assert_eq!(
        h.live("get", b2.get())
            .await
            .unwrap()
            .data()
            .unwrap()
            .channels,
        vec![ch.id().to_string()]
    );

    let pb = h.live("play", b2.play("sound:beep")).await.unwrap();
    assert_eq!(pb.data().unwrap().target_uri, format!("bridge:{}", b2.id()));
    h.live("playback finished", pb.finished()).await.unwrap();

    // Recording the bridge.
    let rec = c.new_live_recording();
    let rec_started = rec.once::<RecordingStarted>();
    let live = h
        .live(
            "record bridge",
            b2.record(&rec, "wav").if_exists(IfExists::Overwrite),
        )
        .await
        .unwrap();
    assert_eq!(
        live.data().unwrap().target_uri,
        format!("bridge:{}", b2.id())
    );
    h.live("RecordingStarted", rec_started).await.unwrap();
    h.live("stop recording", rec.stop()).await.unwrap();
    h.live("recording finished", rec.finished()).await.unwrap();
    h.live("delete stored", c.recordings().delete_stored(rec.name()))
        .await
        .unwrap();

    h.live("moh", b2.start_moh()).await.unwrap();
    h.live("stop moh", c.bridges().stop_moh(b2.id()))
        .await
        .unwrap();

    let left = b2.once::<ChannelLeftBridge>();
    h.live("remove channel", b2.remove_channel([&ch]))
        .await
        .unwrap();
    h.live("ChannelLeftBridge", left).await.unwrap();
    assert!(h
        .live("get", b2.get())
        .await
        .unwrap()
        .data()
        .unwrap()
        .channels
        .is_empty());
    // As Asterisk: stopping music on hold in an empty bridge is a conflict.
    let err = h
        .live("stop moh when empty", b2.stop_moh())
        .await
        .unwrap_err();
    assert_ari(
        &err,
        409,
        ErrorKind::Conflict,
        "Bridge isn't playing music on hold",
    );

    for b in [&b1, &b2, &b3] {
        h.live("destroy", b.destroy()).await.unwrap();
        let err = h.live("get destroyed", b.get()).await.unwrap_err();
        assert_ari(&err, 404, ErrorKind::NotFound, "Bridge not found");
    }
    h.live("hangup", ch.hangup()).await.unwrap();
}

/// `playbacks`: get, control (pause, unpause, forward, reverse, restart), stop.
pub async fn playbacks_get_control_stop<R: Runtime>(h: &Harness<R>) {
    let app = "conf-playbacks";
    let c = h.started(&[app]).await;
    let ch = h.answered_call(&c, app).await;
    let pb = c.new_playback();
    let started = pb.once::<PlaybackStarted>();
    let played = h
        .live("play with id", ch.play_with_id(&pb, ["sound:tt-monkeys"]))
        .await
        .unwrap();
    assert_eq!(played.id(), pb.id());
    h.live("PlaybackStarted", started).await.unwrap();
    let got = h.live("get", pb.get()).await.unwrap();
    let data = got.data().unwrap();
    assert_eq!(data.media_uri, "sound:tt-monkeys");
    assert_eq!(data.target_uri, format!("channel:{}", ch.id()));
    assert_eq!(data.state, PlaybackState::Playing);

    h.live("pause", pb.control(PlaybackOperation::Pause))
        .await
        .unwrap();
    h.live(
        "unpause",
        c.playbacks().control(pb.id(), PlaybackOperation::Unpause),
    )
    .await
    .unwrap();
    for op in [
        PlaybackOperation::Forward,
        PlaybackOperation::Reverse,
        PlaybackOperation::Restart,
    ] {
        h.live("control", pb.control(op)).await.unwrap();
    }
    h.live("stop", pb.stop()).await.unwrap();
    h.live("finished", pb.finished()).await.unwrap();
    let err = h.live("get stopped", pb.get()).await.unwrap_err();
    assert_ari(&err, 404, ErrorKind::NotFound, "Playback not found");
    let err = h
        .live("stop unknown", c.playbacks().stop("no-such-playback"))
        .await
        .unwrap_err();
    assert_ari(&err, 404, ErrorKind::NotFound, "Playback not found");
    // A playback with a server-side id (`play`, not `playWithId`): `finished` subscribes,
    // then asks Asterisk, so it completes whether the end came before or after.
    let server_side = h
        .live(
            "play (server id)",
            c.channels().play(ch.id(), ["sound:beep"]),
        )
        .await
        .unwrap();
    assert!(!server_side.id().is_empty());
    h.live("finished (server id)", server_side.finished())
        .await
        .unwrap();
    h.live("finished again (server id)", server_side.finished())
        .await
        .unwrap();
    h.live("hangup", ch.hangup()).await.unwrap();
}

/// `finished()` of a live recording tells a failure from a success, whenever the handle was
/// made: a recording that fails (its channel is in a bridge when it would start:
/// `RecordingFailed`) fails with `Error::RecordingFailed` and Asterisk's cause, on the handle
/// made before (watched from creation), on one made by name after the failure, and on one
/// that asks Asterisk (`recordings().get_live`, made while it was live, queued behind a
/// prompt to the bridged channel: Asterisk then answers 404); a recording that finished is `Ok` on each. A client
/// that did not see the end answers from the stored recordings: one of that name means it
/// finished; none means the outcome is unknown (`Error::RecordingOutcomeUnknown`), never a
/// silent `Ok`.
pub async fn live_recording_finished_reports_a_failure_whenever_the_handle_was_made<R: Runtime>(
    h: &Harness<R>,
) {
    let app = "conf-rec-failed";
    let mut cfg = crate::fast_sim_config();
    // A prompt long enough to ask Asterisk about the recording queued behind it.
    cfg.media_durations
        .insert("long-prompt".to_string(), Duration::from_secs(30));
    let server = ari_testkit::MockServer::builder().sim_config(cfg).start();
    let c = h.builder_for(&server).connect().await.unwrap();
    h.live("start", c.start(app)).await.unwrap();
    // Another application's client: it receives none of these recordings' events.
    let other = h.builder_for(&server).connect().await.unwrap();
    h.live("start", other.start("conf-rec-other"))
        .await
        .unwrap();
    let bridge = c.new_bridge();
    h.live("bridge", bridge.create().bridge_type("mixing"))
        .await
        .unwrap();

    // Watched from creation, and by name after the failure.
    let call = h
        .incoming_call_on(&server, &c, PlaceCall::new("PJSIP/alice", app))
        .await;
    h.live("answer", call.answer()).await.unwrap();
    h.live("into the bridge", bridge.add_channel([&call]))
        .await
        .unwrap();
    let failed = c.new_live_recording();
    h.live("record", call.record(&failed, "wav")).await.unwrap();
    let cause = Some("Cannot record channel while in bridge".to_string());
    let failure = |name: &str| {
        Err(ari_client::Error::RecordingFailed {
            name: name.to_string(),
            cause: cause.clone(),
        })
    };
    assert_eq!(
        h.live("finished (watched)", failed.finished()).await,
        failure(failed.name())
    );
    let late = c.live_recording(failed.name());
    assert_eq!(
        h.live("finished (by name, after)", late.finished()).await,
        failure(failed.name())
    );

    // Handles that ask Asterisk (no watch: the recording's handles are dropped first),
    // made while it was live; Asterisk answers 404 by the time `finished()` asks.
    let call = h
        .incoming_call_on(&server, &c, PlaceCall::new("PJSIP/bob", app))
        .await;
    h.live("answer", call.answer()).await.unwrap();
    h.live("into the bridge", bridge.add_channel([&call]))
        .await
        .unwrap();
    let prompt = c.new_playback();
    h.live("prompt", call.play_with_id(&prompt, ["sound:long-prompt"]))
        .await
        .unwrap();
    let rec = c.new_live_recording();
    h.live("record", call.record(&rec, "wav")).await.unwrap();
    let name = rec.name().to_string();
    drop(rec);
    let asked = h
        .live("get live", c.recordings().get_live(name.as_str()))
        .await
        .unwrap();
    let unseen = h
        .live("get live", other.recordings().get_live(name.as_str()))
        .await
        .unwrap();
    // The failure reaches this client on its events connection, the 404 below on an HTTP
    // one: wait until the client has seen it (what `finished()` then reports is the point).
    let seen = c.once::<RecordingFailed>();
    h.live("the prompt is cut short", prompt.stop())
        .await
        .unwrap();
    h.live("the client sees the failure", seen).await.unwrap();
    assert_eq!(
        h.live("finished (asks Asterisk)", asked.finished()).await,
        failure(&name)
    );
    assert_eq!(
        h.live(
            "finished (not seen: no stored recording)",
            unseen.finished()
        )
        .await,
        Err(ari_client::Error::RecordingOutcomeUnknown { name: name.clone() })
    );
    h.live("out of the bridge", bridge.destroy()).await.unwrap();

    // A recording that finished: Ok on each kind of handle.
    let call = h
        .incoming_call_on(&server, &c, PlaceCall::new("PJSIP/alice", app))
        .await;
    h.live("answer", call.answer()).await.unwrap();
    let done = c.new_live_recording();
    let started = done.once::<RecordingStarted>();
    h.live("record", call.record(&done, "wav")).await.unwrap();
    h.live("RecordingStarted", started).await.unwrap();
    let name = done.name().to_string();
    drop(done);
    let asked = h
        .live("get live", c.recordings().get_live(name.as_str()))
        .await
        .unwrap();
    let unseen = h
        .live("get live", other.recordings().get_live(name.as_str()))
        .await
        .unwrap();
    h.live("stop", asked.stop()).await.unwrap();
    h.live("finished (asks Asterisk)", asked.finished())
        .await
        .unwrap();
    h.live(
        "finished (by name, after)",
        c.live_recording(name.as_str()).finished(),
    )
    .await
    .unwrap();
    h.live("finished (not seen: a stored recording)", unseen.finished())
        .await
        .unwrap();
    h.live("hangup", call.hangup()).await.unwrap();
}

/// `recordings`: a live recording (record, get, stop, finished), then the stored one
/// (list, get, copy, file, delete).
pub async fn recordings_live_and_stored<R: Runtime>(h: &Harness<R>) {
    let app = "conf-recordings";
    let c = h.started(&[app]).await;
    let ch = h.answered_call(&c, app).await;
    let rec = c.new_live_recording();
    let started = rec.once::<RecordingStarted>();
    let live = h
        .live(
            "record",
            ch.record(&rec, "wav").if_exists(IfExists::Overwrite),
        )
        .await
        .unwrap();
    assert_eq!(live.name(), rec.name());
    assert_eq!(live.data().unwrap().format, "wav");
    h.live("RecordingStarted", started).await.unwrap();
    let got = h.live("get live", rec.get_live()).await.unwrap();
    assert_eq!(
        got.data().unwrap().target_uri,
        format!("channel:{}", ch.id())
    );
    h.sleep(Duration::from_millis(50)).await;
    h.live("stop", rec.stop()).await.unwrap();
    h.live("finished", rec.finished()).await.unwrap();

    let stored = h
        .live("list stored", c.recordings().list_stored())
        .await
        .unwrap();
    assert!(stored.iter().any(|s| s.name() == rec.name()));
    let s = c.stored_recording(rec.name());
    let got = h.live("get stored", s.get_stored()).await.unwrap();
    assert_eq!(got.data().unwrap().format, "wav");
    let copy_name = format!("{}-copy", rec.name());
    let copy = h
        .live("copy", s.copy_stored(copy_name.as_str()))
        .await
        .unwrap();
    assert_eq!(copy.name(), copy_name);
    if h.is_outbound() {
        // Asterisk serves files over HTTP only: over an outbound WebSocket the client says
        // so at once (it has no HTTP access to Asterisk).
        let err = h.live("file", s.get_stored_file()).await.unwrap_err();
        match &err {
            ari_client::Error::Transport(t) => {
                assert_eq!(t.kind, ari_client::TransportErrorKind::Protocol, "{err}");
                assert!(t.to_string().contains("only serves over HTTP"), "{err}");
            }
            other => panic!("expected a transport error, got {other:?}"),
        }
    } else {
        let file = h.live("file", s.get_stored_file()).await.unwrap();
        assert!(file.starts_with(b"RIFF"), "a WAV file");
        let file_copy = h
            .live(
                "file of copy",
                c.recordings().get_stored_file(copy_name.as_str()),
            )
            .await
            .unwrap();
        assert_eq!(file, file_copy);
    }
    h.live("delete", s.delete_stored()).await.unwrap();
    h.live("delete copy", copy.delete_stored()).await.unwrap();
    let err = h.live("get deleted", s.get_stored()).await.unwrap_err();
    assert_ari(&err, 404, ErrorKind::NotFound, "Recording not found");
    h.live("hangup", ch.hangup()).await.unwrap();
}

/// `endpoints`: list, list by technology, get (instance), unknown endpoint.
pub async fn endpoints_list_and_get<R: Runtime>(h: &Harness<R>) {
    let c = h.client().await;
    let list = h.live("list", c.endpoints().list()).await.unwrap();
    assert!(list.iter().any(|e| e.id() == "PJSIP/alice"), "{list:?}");
    let by_tech = h
        .live("list by tech", c.endpoints().list_by_tech("PJSIP"))
        .await
        .unwrap();
    assert!(by_tech.iter().all(|e| e.technology() == "PJSIP"));
    assert!(by_tech.iter().any(|e| e.resource() == "bob"));
    let alice = h
        .live("get", c.endpoint("PJSIP", "alice").get())
        .await
        .unwrap();
    assert_eq!(alice.id(), "PJSIP/alice");
    assert_eq!(alice.data().unwrap().resource, "alice");
    let err = h
        .live("get unknown", c.endpoints().get("PJSIP", "nobody"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
}

/// `deviceStates`: update (instance and accessor), get, list, delete; a non-Stasis device
/// cannot be changed.
pub async fn device_states_update_get_list_delete<R: Runtime>(h: &Harness<R>) {
    let c = h.client().await;
    let ds = c.device_state("Stasis:conf-lamp");
    h.live("update", ds.update(DeviceStateValue::Inuse))
        .await
        .unwrap();
    let got = h.live("get", ds.get()).await.unwrap();
    assert_eq!(got.data().unwrap().state, DeviceStateValue::Inuse);
    h.live(
        "update (accessor)",
        c.device_states()
            .update("Stasis:conf-lamp", DeviceStateValue::Busy),
    )
    .await
    .unwrap();
    let list = h.live("list", c.device_states().list()).await.unwrap();
    let lamp = list
        .iter()
        .find(|d| d.name() == "Stasis:conf-lamp")
        .expect("listed");
    assert_eq!(lamp.data().unwrap().state, DeviceStateValue::Busy);
    h.live("delete", ds.delete()).await.unwrap();
    let list = h.live("list", c.device_states().list()).await.unwrap();
    assert!(!list.iter().any(|d| d.name() == "Stasis:conf-lamp"));
    let err = h
        .live(
            "update non-Stasis",
            c.device_states()
                .update("PJSIP/alice", DeviceStateValue::Inuse),
        )
        .await
        .unwrap_err();
    assert_ari(
        &err,
        409,
        ErrorKind::Conflict,
        "Cannot modify device state of non-Stasis device",
    );
}

/// `sounds`: list (with a language filter) and get.
pub async fn sounds_list_and_get<R: Runtime>(h: &Harness<R>) {
    let c = h.client().await;
    let sounds = h.live("list", c.sounds().list().lang("en")).await.unwrap();
    assert!(sounds.iter().any(|s| s.id == "hello-world"), "{sounds:?}");
    let hello = h.live("get", c.sounds().get("hello-world")).await.unwrap();
    assert_eq!(hello.id, "hello-world");
    assert!(!hello.formats.is_empty());
}

/// `mailboxes` (`res_ari_mailboxes`): update creates, get and list read, delete removes; a
/// mailbox that is gone is a typed 404.
pub async fn mailboxes_update_get_list_delete<R: Runtime>(h: &Harness<R>) {
    let c = h.client().await;
    let name = "conf-1000@default";
    h.live("update", c.mailboxes().update(name, 1, 2))
        .await
        .unwrap();
    h.live("update again", c.mailboxes().update(name, 3, 4))
        .await
        .unwrap();
    let m = h.live("get", c.mailboxes().get(name)).await.unwrap();
    assert_eq!(
        (m.name.as_str(), m.old_messages, m.new_messages),
        (name, 3, 4)
    );
    let all = h.live("list", c.mailboxes().list()).await.unwrap();
    assert!(all.iter().any(|m| m.name == name), "{all:?}");
    h.live("delete", c.mailboxes().delete(name)).await.unwrap();
    let err = h
        .live("get gone", c.mailboxes().get(name))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
    assert_eq!(err.ari_kind(), Some(ErrorKind::NotFound));
    let err = h
        .live("delete gone", c.mailboxes().delete(name))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
}

/// `events`: a user event with variables reaches the application, with the channel it
/// names as its source; an unknown application is a 404.
pub async fn user_event_reaches_the_application<R: Runtime>(h: &Harness<R>) {
    let app = "conf-userevent";
    let c = h.started(&[app]).await;
    let first = c.once::<ChannelUserevent>();
    h.live(
        "user event",
        c.user_events()
            .user_event("conf-ping", app)
            .variable("k", "v")
            .variable("n", "1"),
    )
    .await
    .unwrap();
    let (ev, (channel, bridge, _)) = h.live("ChannelUserevent", first).await.unwrap();
    assert_eq!(ev.eventname, "conf-ping");
    assert_eq!(ev.application, app);
    assert_eq!(ev.userevent["k"], "v");
    assert_eq!(ev.userevent["n"], "1");
    assert!(channel.is_none() && bridge.is_none());

    let ch = h.answered_call(&c, app).await;
    let second = ch.once::<ChannelUserevent>();
    h.live(
        "user event with source",
        c.user_events()
            .user_event("conf-chan", app)
            .source([format!("channel:{}", ch.id())]),
    )
    .await
    .unwrap();
    let ev = h.live("ChannelUserevent", second).await.unwrap();
    assert_eq!(ev.eventname, "conf-chan");
    assert_eq!(ev.channel.as_ref().map(|c| c.id.as_str()), Some(ch.id()));

    let err = h
        .live(
            "unknown app",
            c.user_events().user_event("x", "no-such-app"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
    h.live("hangup", ch.hangup()).await.unwrap();
}
