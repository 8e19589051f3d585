//! ARI outbound WebSocket, against traffic recorded from a real Asterisk (master and 20,
//! `fixtures/outbound/`): every frame decodes, every upgrade request passes the check and our
//! answer satisfies Asterisk's client, and every connection replays through an accepted
//! session (routing, REST correlation with events before their response, queued events
//! flushed before `ApplicationRegistered`, per-call application names).

use std::time::{Duration, Instant};

use ari_proto::events::Event;
use ari_proto::outbound::{
    accept_key, check_response, RefuseReason, ResponseProblem, UpgradeCheck, MAX_HEAD_BYTES,
};
use ari_proto::rest::Credentials;
use ari_proto::session::{
    ConnectionEvent, ConnectionState, Filter, Keepalive, Output, RequestError, Session,
    SessionConfig, Transmit,
};
use serde_json::Value;

const FILES: [&str; 6] = [
    "persistent-master",
    "persistent-20",
    "per-call-master",
    "per-call-20",
    "per-call-drop-master",
    "per-call-drop-20",
];

fn lines(name: &str) -> Vec<Value> {
    let full = format!(
        "{}/../fixtures/outbound/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn is_text(l: &Value, dir: &str) -> bool {
    l["type"] == "ws" && l["opcode"] == "text" && l["dir"] == dir
}

/// The credentials of the recordings' websocket_client sections (password redacted as the
/// literal `<password>`, also inside the base64 of the Authorization header).
fn recorded_credentials() -> Credentials {
    Credentials::new("obuser", "<password>").expect("credentials")
}

/// The recorded upgrade request as an `http::Request`, headers in wire order.
fn upgrade_request(l: &Value) -> http::Request<()> {
    let line = l["request_line"].as_str().expect("request_line");
    let mut parts = line.split(' ');
    let method = parts.next().expect("method");
    let target = parts.next().expect("target");
    let mut b = http::Request::builder().method(method).uri(target);
    for h in l["headers"].as_array().expect("headers") {
        b = b.header(h[0].as_str().expect("name"), h[1].as_str().expect("value"));
    }
    b.body(()).expect("request")
}

/// The recorded upgrade request as raw bytes.
fn upgrade_head(l: &Value) -> Vec<u8> {
    let mut out = format!("{}\r\n", l["request_line"].as_str().expect("line"));
    for h in l["headers"].as_array().expect("headers") {
        out.push_str(&format!(
            "{}: {}\r\n",
            h[0].as_str().unwrap(),
            h[1].as_str().unwrap()
        ));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[test]
fn every_recorded_frame_from_asterisk_decodes_to_its_variant() {
    let mut total = 0;
    for file in FILES {
        for l in lines(file).iter().filter(|l| is_text(l, "in")) {
            let text = l["text"].as_str().expect("text");
            let event =
                Event::decode(text.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}\n{text}"));
            assert!(
                !matches!(event, Event::Unknown(_)),
                "{file}: {} fell to Unknown",
                event.type_name()
            );
            let original: Value = serde_json::from_str(text).expect("json");
            assert_eq!(event.type_name(), original["type"].as_str().expect("type"));
            assert!(
                event.application().is_some_and(|a| !a.is_empty()),
                "{file}: every outbound frame names its application: {text}"
            );
            if file.starts_with("per-call") {
                let app = event.application().unwrap_or_default();
                assert!(
                    app.starts_with("obpc:Local/"),
                    "{file}: per-call application is <app>:<channel name>, got {app}"
                );
            }
            total += 1;
        }
    }
    assert!(total > 150, "only {total} frames");
}

#[test]
fn every_recorded_upgrade_request_passes_the_check_and_our_answer_satisfies_asterisk() {
    let mut n = 0;
    for file in FILES {
        let path = if file.starts_with("persistent") {
            "/ari-ob/persistent"
        } else {
            "/ari-ob/percall"
        };
        let check = UpgradeCheck::new()
            .path(path)
            .credentials(recorded_credentials())
            .require_subprotocol(true);
        let all = lines(file);
        for (i, l) in all
            .iter()
            .enumerate()
            .filter(|(_, l)| l["type"] == "http-request")
        {
            let request = upgrade_request(l);
            let key = request.headers()["sec-websocket-key"]
                .to_str()
                .expect("key")
                .to_string();
            let accepted = check
                .check(&request)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(accepted.user(), Some("obuser"));
            assert_eq!(accepted.subprotocol(), Some("ari"));
            assert_eq!(accepted.path(), path);
            let host = if file.starts_with("persistent") {
                "127.0.0.1:18731"
            } else {
                "127.0.0.1:18732"
            };
            assert_eq!(accepted.host(), Some(host));
            if file.starts_with("persistent") {
                assert_eq!(accepted.query(), Some("token=abc123"));
            }
            // Our answer is one Asterisk's client accepts, and it is exactly four headers.
            let response = accepted.response();
            assert_eq!(response.status(), 101);
            assert_eq!(response.headers().len(), 4);
            assert_eq!(response.headers()["connection"], "Upgrade");
            assert_eq!(response.headers()["upgrade"], "websocket");
            assert_eq!(accepted.accept_key(), accept_key(&key));
            assert_eq!(
                check_response(&accepted.response_bytes(), &key, "ari"),
                Ok(())
            );
            // The raw head gives the same outcome and its length.
            let head = upgrade_head(l);
            let (raw, len) = check
                .check_head(&head)
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .expect("complete head");
            assert_eq!(len, head.len());
            assert_eq!(raw.accept_key(), accepted.accept_key());
            assert_eq!(
                check
                    .check_head(&head[..head.len() - 2])
                    .map(|o| o.is_none()),
                Ok(true)
            );
            // The recording server's own 101 answer passes the same client check.
            let answer = &all[i + 1];
            assert_eq!(answer["type"], "http-response");
            let mut recorded = format!("{}\r\n", answer["status_line"].as_str().expect("status"));
            for h in answer["headers"].as_array().into_iter().flatten() {
                recorded.push_str(&format!(
                    "{}: {}\r\n",
                    h[0].as_str().unwrap(),
                    h[1].as_str().unwrap()
                ));
            }
            recorded.push_str("\r\n");
            let verdict = check_response(recorded.as_bytes(), &key, "ari");
            if answer["status_line"]
                .as_str()
                .unwrap_or_default()
                .contains(" 101 ")
            {
                assert_eq!(verdict, Ok(()), "{file}: {recorded}");
            } else {
                assert!(
                    matches!(verdict, Err(ResponseProblem::Status { .. })),
                    "{file}"
                );
            }
            n += 1;
        }
    }
    assert!(n >= 14, "only {n} upgrade requests");
}

fn base_request() -> http::request::Builder {
    http::Request::get("/ari-ob/persistent?token=abc123")
        .header("Sec-WebSocket-Version", "13")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Host", "127.0.0.1:18731")
        .header("Sec-WebSocket-Key", "8B3dGAAAAABi6TYFAAAAAA==")
}

fn basic(user_pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

#[test]
fn refusals_name_the_reason_and_the_status_and_never_the_password() {
    let check = UpgradeCheck::new()
        .path("/ari-ob/persistent")
        .credentials(Credentials::new("obuser", "s3cret-pw").unwrap());
    let cases: Vec<(http::Request<()>, u16)> = vec![
        (
            base_request()
                .header("Authorization", basic("obuser:wrong-pw"))
                .body(())
                .unwrap(),
            401,
        ),
        (
            base_request()
                .header("Authorization", basic("intruder:s3cret-pw"))
                .body(())
                .unwrap(),
            401,
        ),
        (base_request().body(()).unwrap(), 401),
        (
            base_request()
                .header("Authorization", "Basic !!notbase64")
                .body(())
                .unwrap(),
            401,
        ),
        (
            base_request()
                .header("Authorization", "Bearer abc")
                .body(())
                .unwrap(),
            401,
        ),
        (
            http::Request::get("/elsewhere")
                .header("Sec-WebSocket-Version", "13")
                .header("Upgrade", "websocket")
                .header("Connection", "Upgrade")
                .header("Sec-WebSocket-Key", "8B3dGAAAAABi6TYFAAAAAA==")
                .body(())
                .unwrap(),
            404,
        ),
        (
            http::Request::post("/ari-ob/persistent").body(()).unwrap(),
            405,
        ),
        (
            http::Request::get("/ari-ob/persistent")
                .header("Upgrade", "websocket")
                .header("Connection", "Upgrade")
                .header("Sec-WebSocket-Version", "8")
                .header("Sec-WebSocket-Key", "8B3dGAAAAABi6TYFAAAAAA==")
                .body(())
                .unwrap(),
            426,
        ),
        (
            http::Request::get("/ari-ob/persistent")
                .header("Upgrade", "websocket")
                .header("Connection", "Upgrade")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Key", "c2hvcnQ=")
                .body(())
                .unwrap(),
            400,
        ),
        (
            base_request()
                .header("Sec-WebSocket-Protocol", "media")
                .header("Authorization", basic("obuser:s3cret-pw"))
                .body(())
                .unwrap(),
            400,
        ),
    ];
    for (request, status) in cases {
        let refused = check.check(&request).expect_err("refused");
        assert_eq!(refused.status(), status, "{refused}");
        assert_eq!(refused.is_unauthorized(), status == 401);
        let shown = format!("{refused} {refused:?} {check:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        let response = refused.response();
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["connection"], "close");
        assert_eq!(
            response.headers().contains_key("www-authenticate"),
            status == 401
        );
        let bytes = String::from_utf8(refused.response_bytes()).unwrap();
        assert!(bytes.starts_with(&format!("HTTP/1.1 {status} ")), "{bytes}");
        assert!(bytes.ends_with("\r\n\r\n"));
    }
    // The wrong-password refusal names the user, not the password.
    let wrong = base_request()
        .header("Authorization", basic("obuser:wrong-pw"))
        .body(())
        .unwrap();
    let refused = check.check(&wrong).unwrap_err();
    assert!(matches!(
        refused.reason(),
        RefuseReason::WrongCredentials { user, .. } if user == "obuser"
    ));
    assert!(!refused.to_string().contains("wrong-pw"));
    // The right ones pass; the subprotocol is answered only when offered.
    let ok = base_request()
        .header("Authorization", basic("obuser:s3cret-pw"))
        .body(())
        .unwrap();
    let accepted = check.check(&ok).expect("accepted");
    assert_eq!(accepted.subprotocol(), None);
    assert!(!accepted
        .response()
        .headers()
        .contains_key("sec-websocket-protocol"));
    assert_eq!(
        check_response(&accepted.response_bytes(), "8B3dGAAAAABi6TYFAAAAAA==", ""),
        Ok(())
    );
    // Without the subprotocol but required: refused, with advice.
    let strict = check.clone().require_subprotocol(true);
    let refused = strict.check(&ok).unwrap_err();
    assert!(refused.to_string().contains("protocols = ari"), "{refused}");
}

#[test]
fn raw_heads_that_are_not_http_or_too_large_are_refused() {
    let check = UpgradeCheck::new();
    let refused = check
        .check_head(b"\x16\x03\x01\x02\x00\r\n\r\n")
        .unwrap_err();
    assert_eq!(refused.status(), 400);
    let huge = vec![b'a'; MAX_HEAD_BYTES + 1];
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.extend_from_slice(&huge);
    assert_eq!(check.check_head(&head).unwrap_err().status(), 431);
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(check.check_head(&many).unwrap_err().status(), 431);
}

#[test]
fn the_client_check_refuses_what_asterisk_refuses() {
    let key = "8B3dGAAAAABi6TYFAAAAAA==";
    let accept = accept_key(key);
    let head = |extra: &str, connection: &str| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: {connection}\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    };
    assert_eq!(
        check_response(head("", "Upgrade").as_bytes(), key, "ari"),
        Ok(())
    );
    assert_eq!(
        check_response(head("", "keep-alive, Upgrade").as_bytes(), key, "ari"),
        Err(ResponseProblem::Connection)
    );
    assert_eq!(
        check_response(
            head(
                "Sec-WebSocket-Extensions: permessage-deflate\r\n",
                "Upgrade"
            )
            .as_bytes(),
            key,
            "ari"
        ),
        Err(ResponseProblem::Extensions)
    );
    assert!(matches!(
        check_response(
            head("Sec-WebSocket-Protocol: media\r\n", "Upgrade").as_bytes(),
            key,
            "ari"
        ),
        Err(ResponseProblem::Subprotocol { .. })
    ));
    assert_eq!(
        check_response(
            head("", "Upgrade").as_bytes(),
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "ari"
        ),
        Err(ResponseProblem::AcceptKey)
    );
    assert!(matches!(
        check_response(b"HTTP/1.0 101 OK\r\n\r\n", key, "ari"),
        Err(ResponseProblem::Status { .. })
    ));
}

/// What replaying one recording through accepted sessions gave.
#[derive(Debug, Default)]
struct Replay {
    connected: Vec<bool>,
    disconnected: usize,
    events: Vec<String>,
    responses: Vec<(u64, u16)>,
    applications: Vec<Vec<String>>,
    asterisk_ids: Vec<Option<String>>,
    unmatched: u64,
    /// The `type` of every frame Asterisk sent, in order.
    arrived: Vec<String>,
    /// `ApplicationsUnregistered` reports: the applications of each.
    unregistered: Vec<Vec<String>>,
}

/// Replays a recording: persistent files through one session for all connections (a
/// reconnecting Asterisk), per-call files through one session per channel (connections of
/// the same channel, after a drop, share it). Every recorded `RESTRequest` is sent through
/// the session (a `GET asterisk/ping` stands in for it: correlation is by `request_id`,
/// which lines up because the recording numbered them `r1`, `r2`, … per session as the
/// session does), and each `RESTResponse` must come back as its `Output::Response`.
fn replay(file: &str) -> Replay {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let config = SessionConfig::default().keepalive(None);
    let persistent = file.starts_with("persistent");
    let mut session = Session::accepted(config.clone());
    let mut out = Replay::default();
    let mut sent_ids: Vec<u64> = Vec::new();
    let mut open_conn: Option<String> = None;
    for l in lines(file) {
        now += Duration::from_millis(1);
        let conn = l["conn"].as_str().unwrap_or_default().to_string();
        match l["type"].as_str().unwrap_or_default() {
            "tcp-accept" if l["listener_mode"] == "ws" => {
                // A per-call connection for a new channel gets a new session (the drop
                // files reconnect the same channel: same session).
                let new_channel = !persistent && !file.contains("drop") && open_conn.is_none();
                if new_channel && session.stats().connects > 0 {
                    out.applications.push(session.applications().to_vec());
                    out.asterisk_ids
                        .push(session.asterisk_id().map(str::to_string));
                    out.unmatched += session.stats().unmatched_responses;
                    session = Session::accepted(config.clone());
                    sent_ids.clear();
                }
                session.handle_accepted(now);
                open_conn = Some(conn);
            }
            "ws" if l["opcode"] == "text" && l["dir"] == "in" => {
                let v: Value = serde_json::from_str(l["text"].as_str().unwrap()).unwrap();
                out.arrived.push(v["type"].as_str().unwrap().to_string());
                session.handle_frame(now, l["text"].as_str().expect("text").as_bytes());
            }
            "ws" if l["opcode"] == "text" && l["dir"] == "out" => {
                let text = l["text"].as_str().expect("text");
                let is_request =
                    serde_json::from_str::<Value>(text).is_ok_and(|v| v["type"] == "RESTRequest");
                // A persistent session's ids go on across connections (the recording's
                // restart at r1 on each): requests are replayed on its first one only.
                if is_request && !(persistent && session.stats().connects > 1) {
                    let id = session
                        .send_request(now, &ari_proto::ops::asterisk::Ping::new())
                        .expect("connected");
                    sent_ids.push(id.as_u64());
                    let recorded: Value = serde_json::from_str(text).unwrap();
                    assert_eq!(
                        recorded["request_id"],
                        id.to_string(),
                        "{file}: ids line up"
                    );
                    assert!(matches!(session.poll_transmit(), Some(Transmit::Text(_))));
                }
            }
            "ws" if l["opcode"] == "close" && open_conn.as_deref() == Some(conn.as_str()) => {
                let code = l["code"].as_u64().and_then(|c| u16::try_from(c).ok());
                session.handle_closed(now, code, "closed");
                open_conn = None;
            }
            "tcp-eof" if open_conn.as_deref() == Some(conn.as_str()) => {
                session.handle_disconnected(now, "eof");
                open_conn = None;
            }
            _ => {}
        }
        assert!(
            session.poll_transmit().is_none(),
            "{file}: accepted sessions never dial"
        );
        while let Some(o) = session.poll_output() {
            match o {
                Output::Connection(ConnectionEvent::Connected { reconnected, .. }) => {
                    out.connected.push(reconnected)
                }
                Output::Connection(ConnectionEvent::Disconnected { .. }) => out.disconnected += 1,
                Output::Connection(ConnectionEvent::ApplicationsUnregistered {
                    applications,
                    ended,
                    ..
                }) => {
                    assert_eq!(ended, 0, "{file}: no call subscribed");
                    out.unregistered.push(applications);
                }
                Output::Event(d) => out.events.push(d.event.type_name().to_string()),
                Output::Response { id, result, .. } => {
                    let r = result.unwrap_or_else(|e| panic!("{file}: {e}"));
                    out.responses.push((id.as_u64(), r.status));
                    out.events.push(format!("response:{id}"));
                }
                other => panic!("{file}: unexpected {other:?}"),
            }
        }
        // (A channel that left Stasis lingers until it counts as ended: that timer only.)
        if session.pending_requests() == 0 && session.lingering_channels() == 0 {
            assert_eq!(
                session.poll_timeout(),
                None,
                "{file}: no reconnect timer, no keepalive"
            );
        }
    }
    out.applications.push(session.applications().to_vec());
    out.asterisk_ids
        .push(session.asterisk_id().map(str::to_string));
    out.unmatched += session.stats().unmatched_responses;
    assert_eq!(session.state(), ConnectionState::AwaitingPeer);
    // Events and responses reach the application in arrival order: nothing held back
    // (not the queued events before ApplicationRegistered, not events before a response).
    let delivered: Vec<&str> = out
        .events
        .iter()
        .map(|e| {
            if e.starts_with("response:") {
                "RESTResponse"
            } else {
                e.as_str()
            }
        })
        .collect();
    assert_eq!(delivered, out.arrived, "{file}");
    out
}

#[test]
fn persistent_recordings_replay_through_one_accepted_session() {
    for file in ["persistent-master", "persistent-20"] {
        let r = replay(file);
        // Four accepted connections (three 503 attempts are not connections).
        assert_eq!(r.connected, [false, true, true, true], "{file}");
        assert_eq!(r.disconnected, 4, "{file}");
        assert_eq!(
            r.applications,
            [Vec::<String>::new()],
            "{file}: ApplicationUnregistered at the end"
        );
        // The configuration removed: the app unregistered, then CLOSE 1000 (the app's own
        // CLOSE 1000 earlier, which Asterisk answers by redialling, is not that).
        assert_eq!(r.unregistered, [vec!["obapp".to_string()]], "{file}");
        assert!(
            r.asterisk_ids[0]
                .as_deref()
                .is_some_and(|id| id.contains(':')),
            "{file}"
        );
        // Eleven requests on the first connection, each answered (404 and 400 included).
        assert_eq!(r.responses.len(), 11, "{file}");
        assert_eq!(
            r.responses.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<_>>()
        );
        assert!(r.responses.iter().any(|&(_, s)| s == 404));
        assert!(r.responses.iter().any(|&(_, s)| s == 400));
        // The response to the non-JSON frame (request_id "") and the r1 of the last
        // connection (the session's ids went on to r12) match nothing: delivered as events.
        assert_eq!(r.unmatched, 2, "{file}");
        // Events caused by a variable POST (r6 JSON body, r8 form body) come before its
        // response, in arrival order.
        let before = |id: &str| {
            let at = r.events.iter().position(|e| e == id).unwrap();
            r.events[at - 1].clone()
        };
        assert!(
            before("response:r6") == "ChannelVarset"
                || before("response:r8") == "ChannelVarset"
                || before("response:r4") == "ChannelStateChange",
            "{file}: {:?}",
            r.events
        );
        // After the outage, the queued events (with StasisStart) come before
        // ApplicationRegistered, and are delivered as they come.
        let last_start = r.events.iter().rposition(|e| e == "StasisStart").unwrap();
        let last_registered = r
            .events
            .iter()
            .rposition(|e| e == "ApplicationRegistered")
            .unwrap();
        assert!(last_start < last_registered, "{file}");
    }
}

#[test]
fn per_call_recordings_replay_one_session_per_channel() {
    for file in ["per-call-master", "per-call-20"] {
        let r = replay(file);
        assert_eq!(
            r.connected,
            [false, false],
            "{file}: two calls, one connection each"
        );
        assert_eq!(r.applications.len(), 2);
        for apps in &r.applications {
            assert_eq!(apps.len(), 1, "{file}");
            assert!(apps[0].starts_with("obpc:Local/"), "{file}: {apps:?}");
        }
        assert_ne!(r.applications[0], r.applications[1]);
        assert_eq!(r.responses.len(), 5, "{file}");
        assert_eq!(r.unmatched, 0, "{file}");
        assert!(
            r.unregistered.is_empty(),
            "{file}: the CLOSE 1000 after StasisEnd"
        );
    }
    for file in ["per-call-drop-master", "per-call-drop-20"] {
        let r = replay(file);
        // The app closed mid-call; Asterisk reconnected the same channel at once.
        assert_eq!(r.connected, [false, true], "{file}");
        assert_eq!(r.disconnected, 2);
        assert_eq!(
            r.events
                .iter()
                .filter(|e| *e == "ApplicationRegistered")
                .count(),
            2
        );
        assert_eq!(r.responses, [(1, 200)], "{file}");
    }
}

#[test]
fn queued_events_after_a_reconnect_reach_instance_subscriptions() {
    // The channel mc-ob-2 entered Stasis while the app was unreachable: its events arrive
    // on connection ob#7 before ApplicationRegistered, and a subscription made before it
    // gets them.
    let file = "persistent-master";
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut session = Session::accepted(SessionConfig::default().keepalive(None));
    let sub = session.subscribe(Filter::channel("mc-ob-2"));
    let mut conn = None;
    let mut got = Vec::new();
    for l in lines(file) {
        match l["type"].as_str().unwrap_or_default() {
            "tcp-accept" if l["listener_mode"] == "ws" => {
                session.handle_accepted(now);
                conn = l["conn"].as_str().map(str::to_string);
            }
            "ws" if is_text(&l, "in") => {
                session.handle_frame(now, l["text"].as_str().unwrap().as_bytes())
            }
            "tcp-eof" | "ws" if l["opcode"] != "text" && l["conn"].as_str() == conn.as_deref() => {
                session.handle_disconnected(now, "gone");
                conn = None;
            }
            _ => {}
        }
        while let Some(o) = session.poll_output() {
            if let Output::Event(d) = o {
                if d.subscribers.contains(&sub) {
                    got.push(d.event.type_name().to_string());
                }
            }
        }
    }
    assert_eq!(got.first().map(String::as_str), Some("Dial"));
    assert!(got.iter().any(|e| e == "StasisStart"));
    assert_eq!(got.last().map(String::as_str), Some("ChannelDestroyed"));
    assert!(!session.is_subscribed(sub), "ended by ChannelDestroyed");
}

#[test]
fn a_new_connection_replaces_an_open_one_and_fails_its_pending_requests() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut s = Session::accepted(SessionConfig::default());
    assert!(s.is_accepted());
    assert!(s.base_url().is_none());
    s.handle_connected(now);
    assert_eq!(
        s.stats().stale_inputs,
        1,
        "handle_connected is for dialing sessions"
    );
    assert!(matches!(
        s.send_request(now, &ari_proto::ops::asterisk::Ping::new()),
        Err(ari_proto::session::SendError::NotConnected)
    ));
    s.handle_accepted(now);
    let id = s
        .send_request(now, &ari_proto::ops::asterisk::Ping::new())
        .unwrap();
    while s.poll_transmit().is_some() {}
    while s.poll_output().is_some() {}
    s.handle_accepted(now);
    let outs: Vec<_> = std::iter::from_fn(|| s.poll_output()).collect();
    assert!(matches!(
        &outs[0],
        Output::Response { id: got, result: Err(RequestError::Disconnected { .. }), .. } if *got == id
    ));
    assert!(matches!(
        outs[1],
        Output::Connection(ConnectionEvent::Connected {
            reconnected: true,
            ..
        })
    ));
    assert_eq!(s.stats().replaced_connections, 1);
    assert_eq!(s.stats().reconnects, 0);
    // Stopped: closes, and no later connection is taken.
    s.stop();
    assert!(matches!(s.poll_transmit(), Some(Transmit::Close)));
    s.handle_accepted(now);
    assert_eq!(s.state(), ConnectionState::Stopped);
}

#[test]
fn keepalive_runs_on_an_accepted_connection_and_a_dead_one_is_not_redialed() {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let keepalive = Keepalive::new(Duration::from_secs(20), Duration::from_secs(10));
    let mut s = Session::accepted(SessionConfig::default().keepalive(Some(keepalive)));
    s.handle_accepted(start);
    while s.poll_output().is_some() {}
    let ping_at = s.poll_timeout().expect("ping scheduled");
    assert_eq!(ping_at, start + Duration::from_secs(20));
    s.handle_timeout(ping_at);
    assert!(matches!(s.poll_transmit(), Some(Transmit::Ping(_))));
    let dead_at = s.poll_timeout().expect("pong deadline");
    s.handle_timeout(dead_at);
    assert!(matches!(s.poll_transmit(), Some(Transmit::Close)));
    assert!(
        s.poll_transmit().is_none(),
        "no Connect: Asterisk reconnects"
    );
    assert!(matches!(
        s.poll_output(),
        Some(Output::Connection(ConnectionEvent::Disconnected { .. }))
    ));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.stats().keepalive_timeouts, 1);
    assert_eq!(s.state(), ConnectionState::AwaitingPeer);
}
