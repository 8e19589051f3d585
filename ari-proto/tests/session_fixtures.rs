//! The session driven with frames recorded from a real Asterisk: what is delivered to whom,
//! instance subscriptions ending by themselves, REST over WebSocket correlation.

#[path = "session_util/mod.rs"]
mod util;

use std::collections::BTreeSet;

use ari_proto::events::{Event, ResourceKind};
use ari_proto::ops;
use ari_proto::session::{EndReason, Filter, Output, SessionConfig, SubscriptionId, Transmit};
use ari_proto::ErrorKind;
use util::*;

/// Every frame of every recorded connection, with subscriptions on every resource the
/// frames mention plus global ones: each delivery goes exactly to the live subscriptions
/// whose filter matches (checked with `Filter::matches`, a plain scan), in subscription
/// order; one-shot and ended-resource subscriptions end exactly when the model says; at the
/// end the live count is what the model says, and zero for every resource that ended.
#[test]
fn recorded_traffic_is_routed_like_the_reference_model() {
    for (run, conn) in [
        (1, "test,hello"),
        (2, "test,hello"),
        (1, "watcher"),
        (2, "watcher"),
    ] {
        let frames = frames_of(run, conn);
        assert!(!frames.is_empty(), "{run} {conn}");
        let t0 = epoch();
        let mut s = connected(SessionConfig::new(["test", "hello"]).rng_seed(1), t0);

        // Every resource named by the traffic.
        let mut resources = BTreeSet::new();
        for f in &frames {
            let ev = decode(f);
            for r in ev.resources().iter() {
                let id = if r.kind == ResourceKind::Endpoint {
                    format!("{}/{}", r.technology, r.id)
                } else {
                    r.id.to_string()
                };
                resources.insert((r.kind, id));
            }
        }
        let mut model: Vec<(SubscriptionId, Filter)> = Vec::new();
        let mut add = |s: &mut ari_proto::Session, f: Filter| {
            let id = s.subscribe(f.clone());
            model.push((id, f));
        };
        add(&mut s, Filter::all());
        add(&mut s, Filter::event_type("StasisStart"));
        add(&mut s, Filter::event_type("ChannelDestroyed").once());
        add(&mut s, Filter::event_type("NoSuchEvent"));
        for (kind, id) in &resources {
            add(&mut s, Filter::resource(*kind, id.clone()));
            add(&mut s, Filter::resource(*kind, id.clone()).once());
            add(
                &mut s,
                Filter::resource(*kind, id.clone()).with_type("ChannelDtmfReceived"),
            );
        }
        // A second subscription on the same resource, and one on a resource that never shows up.
        if let Some((kind, id)) = resources.iter().next() {
            add(&mut s, Filter::resource(*kind, id.clone()));
        }
        add(&mut s, Filter::channel("never-seen"));
        assert_eq!(s.live_subscriptions(), model.len());

        let mut delivered = 0;
        for f in &frames {
            s.handle_frame(t0, f.as_bytes());
            let ev = decode(f);
            let expected: Vec<SubscriptionId> = model
                .iter()
                .filter(|(_, filt)| filt.matches(&ev))
                .map(|(id, _)| *id)
                .collect();
            // The model ends one-shot subscriptions that matched, then every subscription
            // following the resource the event ends.
            let mut expected_end: Vec<(SubscriptionId, EndReason)> = model
                .iter()
                .filter(|(id, filt)| filt.is_once() && expected.contains(id))
                .map(|(id, _)| (*id, EndReason::Once))
                .collect();
            model.retain(|(id, filt)| !(filt.is_once() && expected.contains(id)));
            if let Some(r) = ev.ended_resource() {
                let key = r.id.to_string();
                model.retain(|(id, filt)| {
                    let ends = filt.resource_ref() == Some((r.kind, key.as_str()));
                    if ends {
                        expected_end.push((*id, EndReason::ResourceEnded));
                    }
                    !ends
                });
            }
            let outs = drain(&mut s);
            let mut got_end = Vec::new();
            let mut saw_event = false;
            for o in outs {
                match o {
                    Output::Event(d) => {
                        assert!(!saw_event, "one delivery per frame");
                        saw_event = true;
                        delivered += 1;
                        assert_eq!(d.event.type_name(), ev.type_name());
                        assert_eq!(d.subscribers.to_vec(), expected, "{run} {conn} {f}");
                    }
                    Output::SubscriptionEnded { id, reason, .. } => got_end.push((id, reason)),
                    other => panic!("unexpected output {other:?}"),
                }
            }
            assert!(saw_event, "every frame is delivered: {f}");
            assert_eq!(got_end, expected_end, "{f}");
            assert_eq!(s.live_subscriptions(), model.len());
        }
        assert_eq!(delivered, frames.len());
        assert_eq!(s.stats().events, frames.len() as u64);
        // No RESTRequest was sent on this session, so every RESTResponse is unmatched.
        let responses = frames
            .iter()
            .filter(|f| f.contains("\"RESTResponse\""))
            .count();
        assert_eq!(s.stats().unmatched_responses, responses as u64);
        // Every subscription of a resource whose final event arrived is gone.
        for f in &frames {
            if let Some(r) = decode(f).ended_resource() {
                assert!(
                    !model
                        .iter()
                        .any(|(_, filt)| filt.resource_ref() == Some((r.kind, r.id))),
                    "{r} still followed"
                );
            }
        }
    }
}

/// Events that concern several resources reach each of their subscriptions exactly once;
/// playbacks and recordings also reach the channel or bridge they play on; every instance
/// subscription ends right after its final event and the count returns to the baseline.
#[test]
fn multi_resource_events_and_instance_lifecycles() {
    let t0 = epoch();
    let mut s = connected(SessionConfig::new(["test", "hello"]), t0);
    let chan = s.subscribe(Filter::channel("cap-ef51ef69"));
    let bridge = s.subscribe(Filter::bridge("br-d88aba8a"));
    let pb = s.subscribe(Filter::playback("pb-e0971ba4"));
    let pb2 = s.subscribe(Filter::playback("pb2-1f343479"));
    let rec = s.subscribe(Filter::recording("sub/dir-rec"));
    let dtmf = s.subscribe(Filter::channel("cap-ef51ef69").with_type("ChannelDtmfReceived"));
    let first_dtmf = s.subscribe(
        Filter::channel("cap-ef51ef69")
            .with_type("ChannelDtmfReceived")
            .once(),
    );
    let dev = s.subscribe(Filter::resource(ResourceKind::DeviceState, "Stasis:capdev"));
    assert_eq!(s.live_subscriptions(), 8);
    assert_eq!(s.live_subscriptions_for(ResourceKind::Channel), 3);
    assert_eq!(s.live_subscriptions_for(ResourceKind::Playback), 2);

    let mut got: Vec<(String, Vec<SubscriptionId>)> = Vec::new();
    let mut ended: Vec<(String, SubscriptionId, EndReason)> = Vec::new();
    for f in frames_of(1, "test,hello") {
        s.handle_frame(t0, f.as_bytes());
        let mut last = String::new();
        for o in drain(&mut s) {
            match o {
                Output::Event(d) => {
                    last = d.event.type_name().to_string();
                    got.push((last.clone(), d.subscribers.to_vec()));
                }
                Output::SubscriptionEnded { id, reason, .. } => {
                    ended.push((last.clone(), id, reason))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let to = |ty: &str| -> Vec<Vec<SubscriptionId>> {
        got.iter()
            .filter(|(t, _)| t == ty)
            .map(|(_, v)| v.clone())
            .collect()
    };
    // Both resources of ChannelEnteredBridge / ChannelLeftBridge, once each.
    assert_eq!(to("ChannelEnteredBridge"), vec![vec![chan, bridge]]);
    assert_eq!(to("ChannelLeftBridge"), vec![vec![chan, bridge]]);
    // Dial names the channel as `peer`.
    assert_eq!(to("Dial")[0..2], [vec![chan], vec![chan]]);
    // Playback on the channel, then a playback on the bridge (target_uri).
    assert_eq!(
        to("PlaybackStarted"),
        vec![
            vec![chan, pb],
            vec![chan, pb],
            vec![chan, pb],
            vec![bridge, pb2]
        ]
    );
    assert_eq!(
        to("PlaybackFinished"),
        vec![vec![chan, pb], vec![bridge, pb2]]
    );
    // Recordings reach the channel they record; only `sub/dir-rec` has a subscription.
    assert_eq!(to("RecordingFinished"), vec![vec![chan], vec![chan, rec]]);
    // Typed instance subscriptions: four DTMF digits on this channel, the first one also to
    // the one-shot subscription.
    let dtmfs = to("ChannelDtmfReceived");
    assert_eq!(dtmfs[0], vec![chan, dtmf, first_dtmf]);
    assert_eq!(dtmfs[1], vec![chan, dtmf]);
    assert_eq!(dtmfs.iter().filter(|v| v.contains(&dtmf)).count(), 4);
    assert_eq!(to("DeviceStateChanged"), vec![vec![dev]]);
    // Ended subscriptions: right after their final event, in order.
    assert_eq!(
        ended,
        vec![
            ("ChannelDtmfReceived".into(), first_dtmf, EndReason::Once),
            ("PlaybackFinished".into(), pb, EndReason::ResourceEnded),
            ("RecordingFinished".into(), rec, EndReason::ResourceEnded),
            ("PlaybackFinished".into(), pb2, EndReason::ResourceEnded),
            ("ChannelDestroyed".into(), chan, EndReason::ResourceEnded),
            ("ChannelDestroyed".into(), dtmf, EndReason::ResourceEnded),
            ("BridgeDestroyed".into(), bridge, EndReason::ResourceEnded),
        ]
    );
    // Device states have no final event: only that subscription remains.
    assert_eq!(s.live_subscriptions(), 1);
    assert!(s.unsubscribe(dev));
    assert!(!s.unsubscribe(dev));
    assert_eq!(s.live_subscriptions(), 0);
    assert_eq!(s.stats().subscriptions_ended, 7);
    // Events for the channel after it ended no longer reach anyone.
    assert!(!s.is_subscribed(chan));
}

fn normalize_request(frame: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(frame).expect("json");
    let o = v.as_object_mut().expect("object");
    o.remove("transaction_id");
    // `uri?a=b` and `query_strings` are the same request.
    let mut qs: Vec<(String, String)> = o
        .remove("query_strings")
        .and_then(|q| q.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let uri = o["uri"].as_str().unwrap_or_default().to_string();
    if let Some((path, query)) = uri.split_once('?') {
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            qs.push((k.to_string(), v.to_string()));
        }
        o.insert("uri".into(), path.into());
    }
    qs.sort();
    o.insert("query".into(), serde_json::to_value(qs).expect("json"));
    if let Some(body) = o.remove("message_body") {
        let parsed: serde_json::Value =
            serde_json::from_str(body.as_str().unwrap_or("null")).expect("body JSON");
        o.insert("message_body".into(), parsed);
    }
    v
}

/// Typed operations sent over the WebSocket produce the frames the recording script sent
/// (same method, uri, parameters, body) with ids `r1…`; the recorded `RESTResponse` frames
/// are routed to those requests (not delivered as events) and parse with the HTTP parser;
/// responses nobody waits for (`r6`, `r7`: requests a typed API cannot produce) are
/// delivered as events and counted.
#[test]
fn rest_over_websocket_correlates_recorded_responses() {
    for run in [1u64, 2] {
        let t0 = epoch();
        let mut s = connected(SessionConfig::new(["test", "hello"]), t0);
        let sent: Vec<String> = recorded_sent()
            .into_iter()
            .filter(|r| r.run == run)
            .map(|r| r.frame)
            .collect();
        let chan_id = serde_json::from_str::<serde_json::Value>(&sent[1]).expect("json")["uri"]
            .as_str()
            .expect("uri")
            .trim_start_matches("channels/")
            .to_string();
        let r1 = s.send_request(t0, &ops::asterisk::Ping::new()).expect("r1");
        let r2 = s
            .send_request(t0, &ops::channels::Get::new(chan_id.as_str()))
            .expect("r2");
        let r3 = s
            .send_request(
                t0,
                &ops::channels::SetChannelVar::new(chan_id.as_str(), "WSVAR").value("1"),
            )
            .expect("r3");
        let r4 = s
            .send_request(t0, &ops::channels::Get::new("nope"))
            .expect("r4");
        let r5 = s
            .send_request(
                t0,
                &ops::events::UserEvent::new("wsEvent", "test").variable("a", "b"),
            )
            .expect("r5");
        assert_eq!(
            [r1, r2, r3, r4, r5].map(|r| r.to_string()),
            ["r1", "r2", "r3", "r4", "r5"]
        );
        assert_eq!(s.pending_requests(), 5);
        let texts: Vec<String> = drain_transmits(&mut s)
            .into_iter()
            .map(|t| match t {
                Transmit::Text(t) => t,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(texts.len(), 5);
        for (mine, recorded) in texts.iter().zip(&sent) {
            assert_eq!(
                normalize_request(mine),
                normalize_request(recorded),
                "{mine}"
            );
        }

        let mut responses = Vec::new();
        let mut rest_events = 0;
        for f in frames_of(run, "test,hello") {
            s.handle_frame(t0, f.as_bytes());
            for o in drain(&mut s) {
                match o {
                    Output::Response { id, result, .. } => {
                        responses.push((id, result.expect("answered")))
                    }
                    Output::Event(d) => {
                        if let Event::RESTResponse(r) = &*d.event {
                            assert!(["r6", "r7"].contains(&r.request_id.as_str()));
                            rest_events += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(rest_events, 2);
        assert_eq!(s.stats().unmatched_responses, 2);
        assert_eq!(s.stats().responses, 5);
        assert_eq!(s.pending_requests(), 0);
        assert_eq!(
            responses.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [r1, r2, r3, r4, r5]
        );
        let ping = responses[0].1.parse::<ops::asterisk::Ping>().expect("pong");
        assert_eq!(ping.ping, "pong");
        // r2/r3 found the channel in run 2 only; r4 never does.
        for (_, r) in &responses[1..4] {
            match r.status {
                200 => {
                    let chan = r.parse::<ops::channels::Get>().expect("channel");
                    assert_eq!(chan.id, chan_id);
                }
                204 => r.parse::<ops::channels::SetChannelVar>().expect("()"),
                404 => {
                    let err = r.parse::<ops::channels::Get>().expect_err("404");
                    let ari = err.as_ari().expect("ARI error");
                    assert_eq!(ari.kind, ErrorKind::NotFound);
                    assert_eq!(ari.message, "Channel not found");
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(responses[3].1.status, 404);
        assert_eq!(responses[4].1.status, 204);
        responses[4]
            .1
            .parse::<ops::events::UserEvent>()
            .expect("204 is ()");
        // No deadline left once everything is answered, except the keepalive ping.
        let ping_at = s.poll_timeout().expect("keepalive");
        assert!(ping_at > t0);
    }
}

/// Recorded `asterisk-master` run 2: the application deleted bridge `br-04bc6c7e` with two
/// channels in it (`DELETE /bridges/br-04bc6c7e` answered 204). The application's connection
/// (`test,hello`) got each channel's `ChannelLeftBridge` and no `BridgeDestroyed`: the
/// bridge's subscriptions outlive the traffic, and end with the linger once the session is
/// told of the 204. The `subscribeAll` watcher got `BridgeDestroyed`, which ended them as the
/// traffic went; the 204 changes nothing there.
#[test]
fn recorded_bridge_deleted_with_channels_in_it_ends_with_the_linger() {
    const BRIDGE: &str = "br-04bc6c7e";
    let linger = secs(2);
    for (conn, destroyed_seen) in [("test,hello", false), ("watcher", true)] {
        let t0 = epoch();
        let mut s = connected(
            SessionConfig::new(["test", "hello"])
                .keepalive(None)
                .stasis_end_linger(Some(linger)),
            t0,
        );
        let wait = s.subscribe(Filter::bridge(BRIDGE).with_type("BridgeDestroyed").once());
        let stream = s.subscribe(Filter::bridge(BRIDGE));
        let mut destroyed = 0;
        for f in frames_of(2, conn) {
            s.handle_frame(t0, f.as_bytes());
            for o in drain(&mut s) {
                if let Output::Event(d) = o {
                    if d.event.type_name() == "BridgeDestroyed" {
                        assert_eq!(d.subscribers.as_slice(), &[wait, stream], "{conn}");
                        destroyed += 1;
                    }
                }
            }
        }
        assert_eq!(destroyed, usize::from(destroyed_seen), "{conn}");
        assert_eq!(
            s.is_subscribed(stream),
            !destroyed_seen,
            "{conn}: only BridgeDestroyed ended them so far"
        );
        let before = s.poll_timeout();
        s.bridge_destroyed(t0, BRIDGE);
        if destroyed_seen {
            assert_eq!(s.poll_timeout(), before, "{conn}: nothing to linger");
            continue;
        }
        assert_eq!(s.poll_timeout(), Some(t0 + linger), "{conn}");
        s.handle_timeout(t0 + linger);
        let ended: Vec<SubscriptionId> = drain(&mut s)
            .into_iter()
            .filter_map(|o| match o {
                Output::SubscriptionEnded {
                    id,
                    reason: EndReason::ResourceEnded,
                    ..
                } => Some(id),
                _ => None,
            })
            .filter(|id| [wait, stream].contains(id))
            .collect();
        assert_eq!(ended, vec![wait, stream], "{conn}");
        assert!(s.has_ended(ResourceKind::Bridge, BRIDGE), "{conn}");
    }
}
