//! The simulated chan_websocket (server mode): externalMedia over WebSocket, `/media/<id>`
//! (404, 409), MEDIA_START then StasisStart, paced frames of the test signal, the queue model
//! (XOFF at 900, XON below 800, drop at 1,000), marks, DTMF_END, HANGUP and CLOSE.

mod common;

use std::time::Duration;

use ari_testkit::{test_frame, MockServer, PlaceCall};
use common::{
    basic, next_json, next_msg, request, send_binary, send_text, ws_connect, Ws, PATIENCE,
};
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

async fn until(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

async fn external_media(server: &MockServer, query: &str) -> (u16, Value) {
    let r = request(
        server.addr(),
        "POST",
        &format!("/ari/channels/externalMedia?{query}"),
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    let status = r.status;
    (status, if status == 200 { r.json() } else { Value::Null })
}

async fn media_connect(
    server: &MockServer,
    id: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{}/media/{id}", server.addr()).into_client_request()?;
    req.headers_mut()
        .insert("sec-websocket-protocol", "media".parse().expect("header"));
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("media")
    );
    Ok(ws)
}

/// Reads the media socket, skipping audio and text, up to Asterisk's CLOSE (its frame, `None`
/// when the socket ended without one), and writes the answer tungstenite queued for it (as
/// Asterisk waits for it).
async fn until_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match next_msg(ws).await {
            Some(Ok(Message::Close(frame))) => {
                let _ = ws.flush().await;
                return frame;
            }
            None => return None,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("media socket failed before CLOSE: {e}"),
        }
    }
}

/// The next text message on the media socket, skipping audio; counts the audio frames.
async fn next_control(ws: &mut Ws, frames: &mut usize, frame: &[u8]) -> String {
    loop {
        match next_msg(ws).await {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Binary(b))) => {
                assert_eq!(&b[..], frame, "every frame is the test signal");
                *frames += 1;
            }
            Some(Ok(_)) => {}
            other => panic!("media socket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_mode_media_socket_follows_asterisk() {
    let server = MockServer::start();
    let mut events = ws_connect(server.addr(), "app=media").await;
    let (status, _) = external_media(
        &server,
        "app=media&transport=websocket&encapsulation=rtp&connection_type=server&format=ulaw",
    )
    .await;
    assert_eq!(status, 400, "websocket needs encapsulation=none");
    let (status, chan) = external_media(
        &server,
        "app=media&transport=websocket&encapsulation=none&connection_type=server&format=ulaw&channelId=em-1&data=emdata",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(chan["state"], "Down");
    assert!(chan["name"]
        .as_str()
        .unwrap()
        .starts_with("WebSocket/INCOMING/"));
    assert_eq!(
        chan["channelvars"]["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"],
        "160"
    );
    let id = chan["channelvars"]["MEDIA_WEBSOCKET_CONNECTION_ID"]
        .as_str()
        .expect("connection id")
        .to_owned();

    let err = media_connect(&server, "nonexistent-id").await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let mut media = media_connect(&server, &id).await.expect("connects");
    let err = media_connect(&server, &id).await.unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");

    let frame = test_frame("ulaw");
    assert_eq!(frame.len(), 160);
    let mut frames = 0usize;
    let start = next_control(&mut media, &mut frames, &frame).await;
    assert_eq!(
        start,
        format!("MEDIA_START connection_id:{id} channel:{} channel_id:em-1 format:ulaw optimal_frame_size:160 ptime:20", chan["name"].as_str().unwrap())
    );
    let ss = until(&mut events, "StasisStart").await;
    assert_eq!(ss["channel"]["id"], "em-1");
    assert_eq!(ss["args"][0], "emdata");
    assert_eq!(ss["channel"]["state"], "Up");

    // DTMF from a caller bridged with the media channel.
    let mut call = PlaceCall::new("PJSIP/alice", "media");
    call.channel_id = Some("caller".into());
    call.dtmf = "12#".into();
    call.dtmf_delay = Duration::from_millis(100);
    call.dtmf_interval = Duration::from_millis(50);
    server.place_call(call).expect("call");
    until(&mut events, "StasisStart").await;
    for path in [
        "/ari/bridges/br?type=mixing",
        "/ari/bridges/br/addChannel?channel=em-1,caller",
        "/ari/channels/caller/answer",
    ] {
        let r = request(
            server.addr(),
            "POST",
            path,
            Some(&basic("asterisk", "asterisk")),
            None,
        )
        .await;
        assert!(r.status < 300, "{path}: {}", r.status);
    }
    let mut digits = String::new();
    while digits.len() < 3 {
        let t = next_control(&mut media, &mut frames, &frame).await;
        let d = t
            .strip_prefix("DTMF_END digit:")
            .and_then(|r| r.strip_suffix(" channel_id:em-1"))
            .unwrap_or_else(|| panic!("{t}"));
        digits.push_str(d);
    }
    assert_eq!(digits, "12#");
    assert!(frames > 0, "frames arrive every 20 ms");

    // The queue: a burst past 1,000 frames.
    send_text(&mut media, "PAUSE_MEDIA").await;
    for _ in 0..1100 {
        media
            .feed(Message::Binary(frame.clone().into()))
            .await
            .expect("feed");
    }
    media.flush().await.expect("flush");
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "MEDIA_XOFF"
    );
    send_text(&mut media, "GET_STATUS").await;
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "STATUS channel_id:em-1 queue_length:1000 xon_level:800 xoff_level:900 queue_full:true bulk_media:false media_paused:true"
    );
    // Marks come when playout reaches them; FLUSH_MEDIA discards them.
    send_text(&mut media, "MARK_MEDIA lost").await;
    send_text(&mut media, "FLUSH_MEDIA").await;
    send_text(&mut media, "CONTINUE_MEDIA").await;
    send_binary(&mut media, frame.repeat(3)).await;
    send_binary(&mut media, vec![0; 100]).await;
    send_text(&mut media, "MARK_MEDIA m1").await;
    send_text(&mut media, "REPORT_QUEUE_DRAINED").await;
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "MEDIA_XON"
    );
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "MEDIA_MARK_PROCESSED m1"
    );
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "QUEUE_DRAINED"
    );
    // Over 128 bytes: ignored. Plain-text SET_MEDIA_DIRECTION: an ERROR.
    send_text(&mut media, &format!("MARK_MEDIA {}", "x".repeat(150))).await;
    send_text(&mut media, "SET_MEDIA_DIRECTION").await;
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "ERROR channel_id:em-1 error_text:SET_MEDIA_DIRECTION only supports JSON format.\n"
    );

    // HANGUP: the channel goes (tech_cause 1000), then CLOSE 1000.
    send_text(&mut media, "HANGUP").await;
    let hr = until(&mut events, "ChannelHangupRequest").await;
    assert_eq!(hr["channel"]["id"], "em-1");
    assert_eq!(hr["tech_cause"], 1000);
    let close = until_close(&mut media).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1000));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let reports = loop {
        let r = server.media_sessions();
        if !r.is_empty() || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!((r.channel_id.as_str(), r.format.as_str()), ("em-1", "ulaw"));
    assert_eq!(r.messages_dropped, 100, "1100 sent, 1000 queued");
    assert_eq!(r.xoff_sent, 1);
    assert_eq!(r.remainder_bytes_dropped, 100);
    assert_eq!(r.frames_played, 3);
    assert_eq!(r.frames_played_test_signal, 3);
    assert_eq!(r.ignored_commands, 1);
}

#[tokio::test]
async fn json_control_and_close_from_the_app() {
    let server = MockServer::start();
    let mut events = ws_connect(server.addr(), "app=media").await;
    let (status, chan) = external_media(
        &server,
        "app=media&transport=websocket&encapsulation=none&connection_type=server&format=slin16&transport_data=f(json)&channelId=em-2",
    )
    .await;
    assert_eq!(status, 200);
    let id = chan["channelvars"]["MEDIA_WEBSOCKET_CONNECTION_ID"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut media = media_connect(&server, &id).await.expect("connects");
    let frame = test_frame("slin16");
    assert_eq!(frame.len(), 640);
    let mut frames = 0;
    let start: Value =
        serde_json::from_str(&next_control(&mut media, &mut frames, &frame).await).expect("json");
    assert_eq!(start["event"], "MEDIA_START");
    assert_eq!(start["optimal_frame_size"], 640);
    assert_eq!(
        start["channel_variables"]["MEDIA_WEBSOCKET_CONNECTION_ID"],
        id.as_str()
    );
    send_text(
        &mut media,
        r#"{"command":"SET_MEDIA_DIRECTION","direction":"sideways"}"#,
    )
    .await;
    let err: Value =
        serde_json::from_str(&next_control(&mut media, &mut frames, &frame).await).expect("json");
    assert_eq!(
        err["error_text"],
        "'sideways' is not a valid direction for SET_MEDIA_DIRECTION.\n"
    );
    send_text(&mut media, "GET_STATUS").await;
    let err: Value =
        serde_json::from_str(&next_control(&mut media, &mut frames, &frame).await).expect("json");
    assert_eq!(err["error_text"], "Unable to parse JSON command");
    media.close(None).await.expect("close");
    let hr = until(&mut events, "ChannelHangupRequest").await;
    assert_eq!(hr["tech_cause"], 1001);
    until(&mut events, "ChannelDestroyed").await;
}

/// HANGUP, then the CLOSE Asterisk sends, then the simulator's report of that socket.
async fn hangup_and_report(
    server: &MockServer,
    media: &mut Ws,
    channel_id: &str,
) -> ari_testkit::MediaSessionReport {
    send_text(media, "HANGUP").await;
    until_close(media).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(r) = server
            .media_sessions()
            .into_iter()
            .find(|r| r.channel_id == channel_id)
        {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no report for {channel_id}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates a server-mode WebSocket channel with `extra` parameters and connects to it;
/// returns the socket and its MEDIA_START.
async fn open_media(server: &MockServer, extra: &str) -> (Ws, Value, String) {
    let (status, chan) = external_media(
        server,
        &format!("app=media&transport=websocket&encapsulation=none&connection_type=server&{extra}"),
    )
    .await;
    assert_eq!(status, 200, "{extra}");
    let id = chan["channelvars"]["MEDIA_WEBSOCKET_CONNECTION_ID"]
        .as_str()
        .expect("connection id")
        .to_owned();
    let mut media = media_connect(server, &id).await.expect("connects");
    let start = match next_msg(&mut media).await {
        Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
        other => panic!("MEDIA_START first, got {other:?}"),
    };
    (media, chan, start)
}

/// Sends `frames` test frames in one message, then `MARK_MEDIA <mark>`, and waits for the
/// mark: at least `frames` 20 ms ticks. Returns how many frames Asterisk sent meanwhile.
async fn frames_during_playout(media: &mut Ws, format: &str, frames: usize, mark: &str) -> usize {
    let frame = test_frame(format);
    send_binary(media, frame.repeat(frames)).await;
    send_text(media, &format!("MARK_MEDIA {mark}")).await;
    let mut received = 0;
    let text = next_control(media, &mut received, &frame).await;
    assert_eq!(text, format!("MEDIA_MARK_PROCESSED {mark}"));
    received
}

#[tokio::test]
async fn passthrough_queues_each_message_as_is_and_refuses_queue_commands() {
    let server = MockServer::start();
    let _events = ws_connect(server.addr(), "app=media").await;
    // The `p` option: MEDIA_START still shows the codec's frame size.
    let (mut media, chan, start) =
        open_media(&server, "format=ulaw&transport_data=p&channelId=em-p").await;
    assert!(start.ends_with("channel_id:em-p format:ulaw optimal_frame_size:160 ptime:20"));
    assert_eq!(
        chan["channelvars"]["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"],
        "160"
    );
    for len in [100, 250, 480] {
        send_binary(&mut media, vec![0x55; len]).await;
    }
    let frame = test_frame("ulaw");
    let mut frames = 0;
    for command in [
        "MARK_MEDIA m1",
        "FLUSH_MEDIA",
        "PAUSE_MEDIA",
        "START_MEDIA_BUFFERING",
    ] {
        send_text(&mut media, command).await;
        let name = command.split(' ').next().unwrap_or_default();
        assert_eq!(
            next_control(&mut media, &mut frames, &frame).await,
            format!("ERROR channel_id:em-p error_text:{name} not supported in passthrough mode")
        );
    }
    send_text(&mut media, "GET_STATUS").await;
    let status = next_control(&mut media, &mut frames, &frame).await;
    assert!(status.starts_with("STATUS channel_id:em-p "), "{status}");
    let r = hangup_and_report(&server, &mut media, "em-p").await;
    assert_eq!(r.messages_received, 3);
    assert_eq!(
        r.frames_queued, 3,
        "one frame per message, whatever its size"
    );
    assert_eq!(r.remainder_bytes_dropped, 0);

    // Forced for codecs with tiny frames: optimal_frame_size 0.
    let (mut media, chan, start) = open_media(&server, "format=opus&channelId=em-opus").await;
    assert!(
        start.ends_with("format:opus optimal_frame_size:0 ptime:20"),
        "{start}"
    );
    assert_eq!(
        chan["channelvars"]["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"],
        "0"
    );
    send_binary(&mut media, vec![0x11; 37]).await;
    send_text(&mut media, "REPORT_QUEUE_DRAINED").await;
    let frame = test_frame("opus");
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "ERROR channel_id:em-opus error_text:REPORT_QUEUE_DRAINED not supported in passthrough mode"
    );
    let r = hangup_and_report(&server, &mut media, "em-opus").await;
    assert_eq!((r.messages_received, r.frames_queued), (1, 1));
}

#[tokio::test]
async fn no_answer_option_holds_the_channel_and_its_media_until_answer() {
    let server = MockServer::start();
    let mut events = ws_connect(server.addr(), "app=media").await;
    let (mut media, _, start) =
        open_media(&server, "format=ulaw&transport_data=n&channelId=em-n").await;
    assert!(start.starts_with("MEDIA_START "), "{start}");
    // Ten ticks at least (the mark waits behind ten frames): no audio, still Down.
    assert_eq!(
        frames_during_playout(&mut media, "ulaw", 10, "held").await,
        0
    );
    let chan = request(
        server.addr(),
        "GET",
        "/ari/channels/em-n",
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    assert_eq!(chan.status, 200);
    assert_eq!(chan.json()["state"], "Down", "not answered before ANSWER");
    send_text(&mut media, "ANSWER").await;
    let ss = until(&mut events, "StasisStart").await;
    assert_eq!(ss["channel"]["id"], "em-n");
    assert_eq!(ss["channel"]["state"], "Up");
    assert!(
        frames_during_playout(&mut media, "ulaw", 10, "answered").await > 0,
        "audio flows once answered"
    );
    let r = hangup_and_report(&server, &mut media, "em-n").await;
    assert!(r.frames_sent > 0);
    assert_eq!(r.frames_played, 20, "the app's audio is played either way");
}

#[tokio::test]
async fn direction_option_sends_media_one_way_only() {
    let server = MockServer::start();
    let _events = ws_connect(server.addr(), "app=media").await;
    // Not a direction: 400, as Asterisk answers.
    let (status, _) = external_media(
        &server,
        "app=media&transport=websocket&encapsulation=none&connection_type=server&format=ulaw&direction=sideways",
    )
    .await;
    assert_eq!(status, 400);

    // `out` (the externalMedia parameter): the app only sends; Asterisk plays it and sends
    // nothing.
    let (mut media, _, _) = open_media(&server, "format=ulaw&direction=out&channelId=em-out").await;
    assert_eq!(frames_during_playout(&mut media, "ulaw", 10, "o").await, 0);
    let r = hangup_and_report(&server, &mut media, "em-out").await;
    assert_eq!(r.frames_sent, 0, "no audio toward the app");
    assert_eq!(r.frames_played, 10, "the app's audio is played");

    // `in` (the d() dial option): the app only receives; Asterisk drops its audio and
    // refuses buffering.
    let (mut media, _, _) =
        open_media(&server, "format=ulaw&transport_data=d(in)&channelId=em-in").await;
    let frame = test_frame("ulaw");
    send_binary(&mut media, frame.repeat(10)).await;
    let mut frames = 0;
    send_text(&mut media, "START_MEDIA_BUFFERING").await;
    assert_eq!(
        next_control(&mut media, &mut frames, &frame).await,
        "ERROR channel_id:em-in error_text:START_MEDIA_BUFFERING not supported while media direction is 'in'"
    );
    // Ten marks processed: ten ticks at least, with audio toward the app on each.
    for i in 0..10 {
        send_text(&mut media, &format!("MARK_MEDIA t{i}")).await;
        assert_eq!(
            next_control(&mut media, &mut frames, &frame).await,
            format!("MEDIA_MARK_PROCESSED t{i}")
        );
    }
    assert!(frames > 0, "audio toward the app");
    let r = hangup_and_report(&server, &mut media, "em-in").await;
    assert_eq!(r.messages_received, 1);
    assert_eq!(
        (r.frames_queued, r.frames_played),
        (0, 0),
        "the app's audio is dropped"
    );
    assert!(r.frames_sent >= 10, "{r:?}");
}

/// When the application sends `HANGUP`, Asterisk ends the channel's Stasis life
/// (`ChannelLeftBridge`, `StasisEnd`) before its hangup closes the media socket; the channel
/// is destroyed only after the close and its answer (fixtures `media/server-plain-20`,
/// `client-*`: `StasisEnd` precedes the CLOSE frame). So an application that waits for the
/// media channel's `StasisEnd` before it answers the close must not hang. (The simulator
/// sent `StasisEnd` only once the close was answered: such an application saw it only after
/// the simulator gave up waiting for the answer, 5 s later, and its answer was lost.)
#[tokio::test]
async fn stasis_end_of_the_media_channel_comes_before_its_socket_closes() {
    let server = MockServer::start();
    let mut events = ws_connect(server.addr(), "app=media").await;
    let (mut media, _, _) = open_media(&server, "format=ulaw&channelId=em-se").await;
    until(&mut events, "StasisStart").await;
    send_text(&mut media, "HANGUP").await;
    // Asterisk's CLOSE arrives: do not answer it yet.
    loop {
        match next_msg(&mut media).await {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("media socket ended without CLOSE: {other:?}"),
        }
    }
    let mut seen = Vec::new();
    loop {
        let ev = next_json(&mut events).await;
        if ev["channel"]["id"] == "em-se" {
            let ty = ev["type"].as_str().unwrap_or_default().to_owned();
            seen.push(ty.clone());
            if ty == "StasisEnd" {
                break;
            }
        }
    }
    assert!(
        !seen.iter().any(|t| t == "ChannelDestroyed"),
        "destroyed before StasisEnd: {seen:?}"
    );
    // Now answer the close: Asterisk, still waiting for it, takes it, then destroys the
    // channel.
    media.flush().await.expect("the close answer goes out");
    loop {
        let ev = next_json(&mut events).await;
        if ev["type"] == "ChannelDestroyed" && ev["channel"]["id"] == "em-se" {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let report = loop {
        if let Some(r) = server
            .media_sessions()
            .into_iter()
            .find(|r| r.channel_id == "em-se")
        {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no report");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(report.close_reply, Some(1000), "the answer was taken");
}

/// An ARI `DELETE` of a media channel with its socket open: Asterisk asks for the hangup
/// (`ChannelHangupRequest` cause 32, soft), the channel leaves the application
/// (`StasisEnd`), its hangup closes the socket (CLOSE 1000), and it is destroyed only once
/// the close is answered (fixtures `media/client-*`, call 2: `DELETE channels/mc-emc-2`,
/// then the CLOSE and its answer, then `ChannelDestroyed` cause 16). The simulator destroyed
/// it first (`ChannelDestroyed` before the close; a `GET` of the channel was a 404 while
/// Asterisk's CLOSE waited for its answer).
#[tokio::test]
async fn a_deleted_media_channel_closes_its_socket_before_it_is_destroyed() {
    let server = MockServer::start();
    let mut events = ws_connect(server.addr(), "app=media").await;
    let (mut media, _, _) = open_media(&server, "format=ulaw&channelId=em-del").await;
    until(&mut events, "StasisStart").await;
    let r = request(
        server.addr(),
        "DELETE",
        "/ari/channels/em-del",
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    // Asterisk's CLOSE arrives: do not answer it yet.
    loop {
        match next_msg(&mut media).await {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("media socket ended without CLOSE: {other:?}"),
        }
    }
    let r = request(
        server.addr(),
        "GET",
        "/ari/channels/em-del",
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "the channel waits for the close answer");
    let mut seen = Vec::new();
    loop {
        let ev = next_json(&mut events).await;
        if ev["channel"]["id"] == "em-del" {
            let ty = ev["type"].as_str().unwrap_or_default().to_owned();
            if ty == "ChannelHangupRequest" {
                assert_eq!(
                    (ev["cause"].as_i64(), ev["soft"].as_bool()),
                    (Some(32), Some(true))
                );
            }
            seen.push(ty.clone());
            if ty == "StasisEnd" {
                break;
            }
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("ChannelHangupRequest")
    );
    assert!(
        !seen.iter().any(|t| t == "ChannelDestroyed"),
        "destroyed before its socket closed: {seen:?}"
    );
    media.flush().await.expect("the close answer goes out");
    let destroyed = loop {
        let ev = next_json(&mut events).await;
        if ev["type"] == "ChannelDestroyed" && ev["channel"]["id"] == "em-del" {
            break ev;
        }
    };
    assert_eq!(destroyed["cause"], 16);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let report = loop {
        if let Some(r) = server
            .media_sessions()
            .into_iter()
            .find(|r| r.channel_id == "em-del")
        {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "no report");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(report.close_reply, Some(1000), "the answer was taken");
    let r = request(
        server.addr(),
        "GET",
        "/ari/channels/em-del",
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "destroyed once the close was answered");
}
