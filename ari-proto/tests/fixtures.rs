//! Every frame and REST exchange recorded from a real Asterisk decodes into its typed form.

use ari_proto::events::{Event, ResourceKind};
use ari_proto::rest::{parse_response, ErrorKind, ResponseError};
use serde_json::Value;

fn lines(path: &str) -> Vec<Value> {
    let full = format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

/// Every field of `expected` is in `actual` with the same value (numbers compared as f64).
fn assert_subset(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} lost on re-encode"));
                assert_subset(v, av, &format!("{at}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{at}: array length");
            for (i, (x, y)) in e.iter().zip(a).enumerate() {
                assert_subset(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) => assert_eq!(x.as_f64(), y.as_f64(), "{at}"),
        (x, y) => assert_eq!(x, y, "{at}"),
    }
}

fn check_events(branch: &str) -> usize {
    let mut n = 0;
    for line in lines(&format!("{branch}/events.jsonl")) {
        let frame = line["frame"].as_str().expect("frame");
        let event =
            Event::decode(frame.as_bytes()).unwrap_or_else(|e| panic!("{branch}: {e}\n{frame}"));
        assert!(
            !matches!(event, Event::Unknown(_)),
            "{branch}: {} fell to Unknown",
            event.type_name()
        );
        let original: Value = serde_json::from_str(frame).expect("json");
        assert_eq!(event.type_name(), original["type"].as_str().expect("type"));
        assert_subset(&original, &event.to_json(), event.type_name());
        n += 1;
    }
    n
}

#[test]
fn every_recorded_master_frame_decodes_to_its_variant_and_reencodes() {
    assert!(check_events("asterisk-master") > 300);
}

#[test]
fn every_recorded_asterisk20_frame_decodes_to_its_variant_and_reencodes() {
    assert!(check_events("asterisk-20") > 200);
}

#[test]
fn resources_name_channels_bridges_and_playback_targets() {
    let mut seen_pairs = 0;
    for line in lines("asterisk-master/events.jsonl") {
        let frame = line["frame"].as_str().expect("frame");
        let event = Event::decode(frame.as_bytes()).expect("decodes");
        let res: Vec<_> = event.resources().iter().collect();
        match &event {
            Event::ChannelEnteredBridge(e) => {
                assert!(res
                    .iter()
                    .any(|r| r.kind == ResourceKind::Bridge && r.id == e.bridge.id));
                if let Some(c) = &e.channel {
                    assert!(res
                        .iter()
                        .any(|r| r.kind == ResourceKind::Channel && r.id == c.id));
                    seen_pairs += 1;
                }
            }
            Event::PlaybackStarted(e) => {
                assert!(res
                    .iter()
                    .any(|r| r.kind == ResourceKind::Playback && r.id == e.playback.id));
                let (kind, id) = e.playback.target_uri.split_once(':').expect("target_uri");
                let want = if kind == "bridge" {
                    ResourceKind::Bridge
                } else {
                    ResourceKind::Channel
                };
                assert!(res.iter().any(|r| r.kind == want && r.id == id), "{frame}");
            }
            Event::Dial(e) => {
                assert!(res
                    .iter()
                    .any(|r| r.kind == ResourceKind::Channel && r.id == e.peer.id));
                if let Some(c) = &e.caller {
                    assert!(res
                        .iter()
                        .any(|r| r.kind == ResourceKind::Channel && r.id == c.id));
                }
            }
            Event::ChannelDestroyed(e) => {
                let r = event.ended_resource().expect("final");
                assert_eq!(
                    (r.kind, r.id),
                    (ResourceKind::Channel, e.channel.id.as_str())
                );
            }
            _ => {}
        }
    }
    assert!(seen_pairs > 0);
}

#[test]
fn unknown_types_and_fields_from_the_future_are_kept() {
    let frame = br#"{"type":"ChannelTeleported","timestamp":"2030-01-01T00:00:00.000+0000",
        "application":"a","channel":{"id":"c9"},"planet":"Mars"}"#;
    let event = Event::decode(frame).expect("unknown type is a value");
    let Event::Unknown(u) = &event else {
        panic!("expected Unknown")
    };
    assert_eq!(u.type_name, "ChannelTeleported");
    assert_eq!(u.raw["planet"], "Mars");
    assert_eq!(event.application(), Some("a"));
    let r: Vec<_> = event.resources().iter().collect();
    assert_eq!(r[0].id, "c9");

    // A known type with a field nobody has heard of yet.
    let frame = br#"{"type":"ChannelUserevent","timestamp":"2030-01-01T00:00:00.000+0000",
        "application":"a","eventname":"x","userevent":{},"quantum_state":"superposed"}"#;
    let event = Event::decode(frame).expect("extra fields are ignored");
    assert_eq!(event.type_name(), "ChannelUserevent");
}

#[test]
fn malformed_frames_are_typed_errors() {
    for bad in [
        &b""[..],
        b"{",
        b"[]",
        b"{\"type\":5}",
        b"null",
        b"{\"no\":\"type\"}",
        b"\xff\xfe",
    ] {
        assert!(
            Event::decode(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // Known type, required field missing: a schema error that keeps the JSON.
    let err = Event::decode(br#"{"type":"StasisStart","application":"a"}"#).unwrap_err();
    let unknown = err
        .clone()
        .into_unknown()
        .expect("schema errors keep the message");
    assert_eq!(unknown.type_name, "StasisStart");
    assert!(err.to_string().contains("StasisStart"));
}

#[test]
fn missing_params_decodes() {
    let e = Event::decode(br#"{"type":"MissingParams","params":["app"]}"#).expect("decodes");
    let Event::MissingParams(m) = e else { panic!() };
    assert_eq!(m.params, vec!["app".to_string()]);
}

/// Finds the recorded exchange's operation in the catalog (method + path template).
fn find_op(method: &str, path: &str) -> Option<&'static ari_proto::catalog::OperationInfo> {
    let segs: Vec<&str> = path.split('/').collect();
    let matches = |o: &&ari_proto::catalog::OperationInfo| {
        let t: Vec<&str> = o.path.trim_start_matches('/').split('/').collect();
        o.method == method
            && t.len() == segs.len()
            && t.iter()
                .zip(&segs)
                .all(|(t, s)| t.starts_with('{') || t == s)
    };
    // Prefer the template with the most literal segments (`channels/create` over `{channelId}`).
    ari_proto::catalog::OPERATIONS
        .iter()
        .filter(matches)
        .max_by_key(|o| o.path.split('/').filter(|t| !t.starts_with('{')).count())
}

/// Parses the body with the operation's declared response class.
fn parse_rest(
    method: &str,
    path: &str,
    status: u16,
    body: &[u8],
) -> Option<Result<(), ResponseError>> {
    use ari_proto::models::*;
    use ari_proto::ops;
    let op = find_op(method, path)?;
    macro_rules! as_type {
        ($t:ty) => {
            Some(parse_response::<Typed<$t>>(status, body).map(|_| ()))
        };
    }
    // The output type of a real operation of this response class, so the generated parser runs.
    match op.response {
        "void" => Some(parse_response::<ops::channels::Answer>(status, body)),
        "binary" => {
            Some(parse_response::<ops::recordings::GetStoredFile>(status, body).map(|_| ()))
        }
        "Channel" => as_type!(Channel),
        "List[Channel]" => as_type!(Vec<Channel>),
        "Bridge" => as_type!(Bridge),
        "List[Bridge]" => as_type!(Vec<Bridge>),
        "Playback" => as_type!(Playback),
        "LiveRecording" => as_type!(LiveRecording),
        "StoredRecording" => as_type!(StoredRecording),
        "List[StoredRecording]" => as_type!(Vec<StoredRecording>),
        "Application" => as_type!(Application),
        "List[Application]" => as_type!(Vec<Application>),
        "AsteriskInfo" => as_type!(AsteriskInfo),
        "AsteriskPing" => as_type!(AsteriskPing),
        "Module" => as_type!(Module),
        "List[Module]" => as_type!(Vec<Module>),
        "List[LogChannel]" => as_type!(Vec<LogChannel>),
        "Variable" => as_type!(Variable),
        "Variables" => as_type!(Variables),
        "List[ConfigTuple]" => as_type!(Vec<ConfigTuple>),
        "Endpoint" => as_type!(Endpoint),
        "List[Endpoint]" => as_type!(Vec<Endpoint>),
        "DeviceState" => as_type!(DeviceState),
        "List[DeviceState]" => as_type!(Vec<DeviceState>),
        "Sound" => as_type!(Sound),
        "List[Sound]" => as_type!(Vec<Sound>),
        "Mailbox" => as_type!(Mailbox),
        "List[Mailbox]" => as_type!(Vec<Mailbox>),
        "RTPstat" => as_type!(RTPstat),
        other => panic!("response class {other} not covered by the test"),
    }
}

/// An operation whose output is `T`, to run `parse_response` with any response type.
struct Typed<T>(std::marker::PhantomData<T>);

impl<T: serde::de::DeserializeOwned> ari_proto::Operation for Typed<T> {
    type Output = T;
    const NAME: &'static str = "test.typed";
    const METHOD: http::Method = http::Method::GET;
    const PATH: &'static str = "/";
    const SINCE: ari_proto::Since = ari_proto::Since::Asterisk18;
    fn write_path(&self, _: &mut ari_proto::rest::PathWriter) {}
    fn write_query(&self, _: &mut ari_proto::rest::QueryWriter) {}
    fn body(&self) -> Option<Value> {
        None
    }
    fn parse_output(body: &[u8]) -> Result<T, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

fn check_rest(branch: &str) -> (usize, usize) {
    let (mut ok, mut errors) = (0, 0);
    for line in lines(&format!("{branch}/rest.jsonl")) {
        let method = line["method"].as_str().expect("method");
        let path = line["path"].as_str().expect("path");
        let status = line["status"].as_u64().expect("status") as u16;
        let json = line["content_type"].as_str().unwrap_or("").contains("json");
        let body: Vec<u8> = if json || line["response"].is_null() {
            line["response"].as_str().unwrap_or("").as_bytes().to_vec()
        } else {
            // Non-JSON bodies are recorded as base64 of their first 64 bytes.
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(line["response"].as_str().unwrap_or(""))
                .unwrap_or_default()
        };
        let result = match parse_rest(method, path, status, &body) {
            Some(r) => r,
            None => {
                // No operation has this path (e.g. an unencoded `/` in an id): Asterisk's
                // plain-text 404, which must still become a typed error.
                assert!(status >= 400, "{branch}: no operation for {method} {path}");
                Err(ResponseError::Ari(ari_proto::AriError::from_body(
                    status, &body,
                )))
            }
        };
        if (200..300).contains(&status) {
            result.unwrap_or_else(|e| panic!("{branch}: {method} {path}: {e}"));
            ok += 1;
        } else {
            let err = result.expect_err("error status must be an error");
            let ResponseError::Ari(e) = err else {
                panic!("{method} {path}: {err}")
            };
            assert_eq!(e.status, status);
            assert_eq!(e.kind, ErrorKind::from_status(status));
            assert!(!e.message.is_empty(), "{method} {path}: empty message");
            if json {
                let v: Value = serde_json::from_slice(&body).expect("json error body");
                assert_eq!(Some(e.message.as_str()), v["message"].as_str());
            }
            errors += 1;
        }
    }
    (ok, errors)
}

#[test]
fn every_recorded_master_rest_body_parses_into_its_type_or_error() {
    let (ok, errors) = check_rest("asterisk-master");
    assert!(ok > 100 && errors > 10, "ok {ok}, errors {errors}");
}

#[test]
fn every_recorded_asterisk20_rest_body_parses_into_its_type_or_error() {
    let (ok, errors) = check_rest("asterisk-20");
    assert!(ok > 40 && errors > 5, "ok {ok}, errors {errors}");
}

#[test]
fn deeply_nested_frames_are_refused_before_parsing() {
    let deep = format!(
        "{{\"type\":\"X\",\"a\":{}{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let err = Event::decode_with_max_depth(deep.as_bytes(), 32).unwrap_err();
    assert!(matches!(
        err,
        ari_proto::events::DecodeError::TooDeep { max: 32 }
    ));
    // Brackets inside strings do not count; real events pass.
    let ok = br#"{"type":"ChannelUserevent","timestamp":"2030-01-01T00:00:00.000+0000","application":"a","eventname":"[[[[[[[[[[\"{{{{{{{{","userevent":{}}"#;
    assert!(Event::decode_with_max_depth(ok, 4).is_ok());
    for line in lines("asterisk-master/events.jsonl") {
        let frame = line["frame"].as_str().expect("frame");
        assert!(
            !ari_proto::events::json_depth_exceeds(frame.as_bytes(), 6),
            "{frame}"
        );
    }
}

/// `ChannelTransfer` (a SIP REFER on a channel in Stasis, Asterisk 20+) names its channels
/// and bridges inside `refer_to` and `referred_by`: they are the resources it concerns, so
/// the subscriptions of the channel that received the REFER (`referred_by.source_channel`)
/// and of the transfer's destination receive it. It concerned none before: a listener on the
/// channel never heard of the transfer.
#[test]
fn a_channel_transfer_concerns_the_channels_and_bridges_it_names() {
    use ari_proto::rest::{BaseUrl, Credentials};
    use ari_proto::session::{Filter, Output, Session, SessionConfig};
    let channel = |id: &str| {
        format!(
            r#"{{"id":"{id}","name":"PJSIP/alice-00000001","state":"Up","protocol_id":"",
            "caller":{{"name":"Alice","number":"100"}},"connected":{{"name":"","number":""}},
            "accountcode":"","dialplan":{{"context":"default","exten":"s","priority":1,
            "app_name":"Stasis","app_data":"app"}},"creationtime":"2026-11-26T11:13:59.584+0000",
            "language":"en"}}"#
        )
    };
    let bridge = r#"{"id":"br-1","technology":"simple_bridge","bridge_type":"mixing",
        "bridge_class":"stasis","creator":"Stasis","name":"","channels":["alice"],
        "creationtime":"2026-11-26T11:14:11.053+0000","video_mode":"talker"}"#;
    let frame = format!(
        r#"{{"type":"ChannelTransfer","timestamp":"2026-11-26T11:15:00.000+0000",
        "application":"app","state":"channel_progress",
        "refer_to":{{"requested_destination":{{"destination":"sip:carol@example.com"}},
          "destination_channel":{},"bridge":{bridge}}},
        "referred_by":{{"source_channel":{},"connected_channel":{}}}}}"#,
        channel("carol"),
        channel("alice"),
        channel("bob"),
    );
    let event = Event::decode(frame.as_bytes()).expect("a ChannelTransfer");
    let res: Vec<_> = event
        .resources()
        .iter()
        .map(|r| (r.kind, r.id.to_string()))
        .collect();
    assert_eq!(
        res,
        [
            (ResourceKind::Channel, "carol".to_string()),
            (ResourceKind::Bridge, "br-1".to_string()),
            (ResourceKind::Channel, "alice".to_string()),
            (ResourceKind::Channel, "bob".to_string()),
        ]
    );
    // A subscription on the channel that received the REFER gets it.
    let base_url =
        BaseUrl::new("http://127.0.0.1:8088", Credentials::new("u", "p").unwrap()).unwrap();
    let mut s: Session = Session::new(base_url, SessionConfig::new(["app"]));
    let sub = s.subscribe(Filter::channel("alice").with_type("ChannelTransfer"));
    #[allow(clippy::disallowed_methods)] // the test is the adapter: it owns the clock
    let now = std::time::Instant::now();
    s.start(now);
    while s.poll_transmit().is_some() {}
    s.handle_connected(now);
    s.handle_frame(now, frame.as_bytes());
    let mut delivered = false;
    while let Some(out) = s.poll_output() {
        if let Output::Event(d) = out {
            delivered |= d.subscribers[..].contains(&sub);
        }
    }
    assert!(
        delivered,
        "the channel's subscription receives its ChannelTransfer"
    );
}
