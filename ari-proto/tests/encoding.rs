//! Encoding safety: no id, variable name or parameter value can change the request path, add
//! a query parameter or inject a header, over HTTP (`build_request`), in the transport-neutral
//! form (`request_parts` → `path_and_query`) and over the events WebSocket (`RESTRequest`
//! frames). Values that cannot be sent safely are refused with a clear error. Secrets never
//! show in `Debug` or `Display`.

use std::collections::BTreeMap;
use std::time::Instant;

use ari_proto::catalog;
use ari_proto::events::ResourceKind;
use ari_proto::models::DeviceStateValue;
use ari_proto::ops::{bridges, channels, device_states, endpoints, events, recordings};
use ari_proto::rest::{
    build_request, build_request_from_parts, request_parts, BaseUrl, BuildError, Credentials,
    RequestParts,
};
use ari_proto::session::{Output, Session, SessionConfig, Transmit};
use ari_proto::Operation;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use serde_json::Value;

const USER: &str = "asterisk";
const PASSWORD: &str = "s3cr3t-p4ss";

fn endpoint() -> BaseUrl {
    BaseUrl::new(
        "http://pbx.example:8088",
        Credentials::new(USER, PASSWORD).expect("credentials"),
    )
    .expect("endpoint")
}

/// Characters that break naive URL building, plus any character at all.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec![
            '/', '?', '#', '%', '&', '=', '+', ';', ',', ' ', '.', '\r', '\n', '\0', '\t', ':',
            '@', '[', ']', '\\', '"', '\'', '<', '>', '{', '}', '|', '^', '`', '~', '*', '$',
            'é', 'ß', '€', '😀', '\u{2028}', '\u{feff}', '\u{7f}', '\u{85}', 'a', 'Z', '0', '-',
            '_',
        ]),
        1 => any::<char>(),
    ]
}

/// A value: any string, biased towards the characters above, and the dot segments.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(nasty_char(), 0..12).prop_map(String::from_iter),
        1 => prop::sample::select(vec!["..", ".", "...", "%2F", "%00", "a/../b", "?x=1", "#f"])
            .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// What a built request must look like.
struct Expect {
    /// Path segments below `/ari`, decoded.
    segments: Vec<String>,
    /// Query pairs, decoded, in order.
    query: Vec<(String, String)>,
    /// The JSON body, if any.
    body: Option<Value>,
}

/// The template with its `{parameters}` replaced by the values, in order.
fn segments(template: &str, values: &[&str]) -> Vec<String> {
    let mut values = values.iter();
    template
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with('{') {
                values.next().expect("a value per parameter").to_string()
            } else {
                s.to_string()
            }
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_decode_str(s)
        .decode_utf8()
        .unwrap_or_else(|e| panic!("{s:?} does not decode as UTF-8: {e}"))
        .into_owned()
}

/// Splits an encoded `path?query` (path below `/ari`, no leading slash) into decoded segments
/// and decoded pairs, checking that nothing unencoded could be read differently.
fn split(path_and_query: &str) -> (Vec<String>, Vec<(String, String)>) {
    assert!(
        !path_and_query.contains('#'),
        "unencoded '#' in {path_and_query:?}"
    );
    for c in path_and_query.chars() {
        assert!(
            c.is_ascii_graphic(),
            "unencoded {c:?} in {path_and_query:?}"
        );
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let segs = path.split('/').map(decode).collect();
    let pairs = query
        .map(|q| {
            q.split('&')
                .map(|pair| {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("pair without '=' in {q:?}"));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    (segs, pairs)
}

/// Builds `op` every way it can be sent and checks each against `expect`.
fn check<O: Operation>(op: &O, expect: &Expect) {
    // HTTP.
    let req = build_request(&endpoint(), op).expect("a safe request builds");
    assert_eq!(req.method(), O::METHOD);
    let uri = req.uri();
    assert_eq!(uri.scheme_str(), Some("http"));
    assert_eq!(
        uri.authority().map(|a| a.as_str()),
        Some("pbx.example:8088")
    );
    let target = uri.path_and_query().expect("path").as_str();
    let below = target
        .strip_prefix("/ari/")
        .unwrap_or_else(|| panic!("{target} is not below /ari/"));
    let (segs, pairs) = split(below);
    assert_eq!(segs, expect.segments, "path of {target}");
    assert_eq!(pairs, expect.query, "query of {target}");

    // Headers: exactly Host, Authorization (sensitive) and, with a body, Content-Type.
    let mut names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    let want: &[&str] = if expect.body.is_some() {
        &["authorization", "content-type", "host"]
    } else {
        &["authorization", "host"]
    };
    assert_eq!(names, want);
    assert_eq!(req.headers().len(), want.len(), "one value per header");
    assert_eq!(req.headers()["host"], "pbx.example:8088");
    let auth = &req.headers()["authorization"];
    assert!(auth.is_sensitive());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert_eq!(auth.to_str().expect("ascii"), format!("Basic {basic}"));
    if expect.body.is_some() {
        assert_eq!(req.headers()["content-type"], "application/json");
    }
    let body: Option<Value> = if req.body().is_empty() {
        None
    } else {
        Some(serde_json::from_slice(req.body()).expect("the body is JSON"))
    };
    assert_eq!(body, expect.body);
    // The password never shows in the request's Debug (the header is marked sensitive).
    let dbg = format!("{req:?}");
    assert!(!dbg.contains(PASSWORD) && !dbg.contains(&basic), "{dbg}");

    // The transport-neutral parts, and the request rebuilt from them.
    let parts = request_parts(op).expect("parts");
    let pq = parts.path_and_query();
    assert_eq!(pq, below, "path_and_query matches the HTTP request");
    let (segs, pairs) = split(&pq);
    assert_eq!(segs, expect.segments);
    assert_eq!(pairs, expect.query);
    assert_eq!(split(&parts.path).0, expect.segments);
    let query: Vec<(String, String)> = parts
        .query
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(query, expect.query, "unencoded query of the parts");
    let again = build_request_from_parts(&endpoint(), parts).expect("rebuilds");
    assert_eq!(again.uri(), req.uri());
    assert_eq!(again.body(), req.body());

    // REST over the events WebSocket: the RESTRequest frame carries the same request.
    let t0 = now();
    let mut session = Session::new(endpoint(), SessionConfig::new(["app"]).rng_seed(7));
    session.start(t0);
    assert!(matches!(
        session.poll_transmit(),
        Some(Transmit::Connect(_))
    ));
    session.handle_connected(t0);
    while let Some(o) = session.poll_output() {
        assert!(matches!(o, Output::Connection(_)));
    }
    session
        .send_request(t0, op)
        .expect("sent over the WebSocket");
    let Some(Transmit::Text(text)) = session.poll_transmit() else {
        panic!("expected a RESTRequest frame")
    };
    let frame: Value = serde_json::from_str(&text).expect("JSON frame");
    assert_eq!(frame["type"], "RESTRequest");
    assert_eq!(frame["method"], O::METHOD.as_str());
    let uri = frame["uri"].as_str().expect("uri");
    assert_eq!(split(uri).0, expect.segments, "uri of {text}");
    let sent: Vec<(String, String)> = frame["query_strings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["name"].as_str().expect("name").to_string(),
                        p["value"].as_str().expect("value").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(sent, expect.query, "query_strings of {text}");
    let body = frame
        .get("message_body")
        .map(|b| serde_json::from_str::<Value>(b.as_str().expect("a string")).expect("JSON"));
    assert_eq!(body, expect.body);
    assert!(!text.contains(PASSWORD));
}

#[allow(clippy::disallowed_methods)] // the test is the adapter: it owns the clock
fn now() -> Instant {
    Instant::now()
}

/// The wire name of the `index`-th path parameter of an operation, from the catalog.
fn path_param(resource: &str, nickname: &str, index: usize) -> &'static str {
    catalog::operation(resource, nickname)
        .expect("in the catalog")
        .params
        .iter()
        .filter(|p| p.location == "path")
        .nth(index)
        .expect("path parameter")
        .name
}

/// Checks the refusal of an unsafe value: the error names the parameter, for HTTP, the parts
/// and the WebSocket alike.
fn refused<O: Operation>(op: &O, name: &str) {
    let err = build_request(&endpoint(), op).expect_err("an unsafe value is refused");
    match &err {
        BuildError::InvalidParameter {
            name: n, reason, ..
        } => {
            assert_eq!(*n, name);
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidParameter for {name}, got {other:?}"),
    }
    assert!(err.to_string().contains(name), "{err}");
    assert_eq!(request_parts(op).expect_err("refused"), err);
}

fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

fn variables_body(vars: &BTreeMap<String, String>) -> Option<Value> {
    if vars.is_empty() {
        None
    } else {
        Some(serde_json::json!({ "variables": vars }))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn originate_values_stay_in_their_parameters(
        ep in value(), app in value(), args in value(), caller in value(), id in value(),
        vars in prop::collection::btree_map(value(), value(), 0..4),
        priority in any::<i64>(),
    ) {
        let mut op = channels::Originate::new(ep.clone())
            .app(app.clone())
            .app_args(args.clone())
            .caller_id(caller.clone())
            .priority(priority)
            .channel_id(id.clone());
        for (k, v) in &vars {
            op = op.variable(k.clone(), v.clone());
        }
        let named = [("endpoint", &ep), ("app", &app), ("appArgs", &args),
            ("callerId", &caller), ("channelId", &id)];
        if let Some((name, _)) = named.iter().find(|(_, v)| has_nul(v)) {
            refused(&op, name);
        } else {
            let query = vec![
                ("endpoint".to_string(), ep),
                ("priority".to_string(), priority.to_string()),
                ("app".to_string(), app),
                ("appArgs".to_string(), args),
                ("callerId".to_string(), caller),
                ("channelId".to_string(), id),
            ];
            check(&op, &Expect { segments: vec!["channels".into()], query, body: variables_body(&vars) });
        }
    }

    #[test]
    fn set_channel_var_keeps_id_name_and_value(id in value(), name in value(), val in value()) {
        let op = channels::SetChannelVar::new(id.clone(), name.clone()).value(val.clone());
        if id.is_empty() {
            prop_assert_eq!(build_request(&endpoint(), &op).unwrap_err(), BuildError::EmptyPathParameter);
        } else if has_nul(&id) {
            refused(&op, path_param("channels", "setChannelVar", 0));
        } else if has_nul(&name) {
            refused(&op, "variable");
        } else if has_nul(&val) {
            refused(&op, "value");
        } else {
            check(&op, &Expect {
                segments: segments(channels::SetChannelVar::PATH, &[&id]),
                query: vec![("variable".into(), name), ("value".into(), val)],
                body: None,
            });
        }
    }

    #[test]
    fn stored_recording_names_stay_one_segment(name in value()) {
        let op = recordings::GetStored::new(name.clone());
        if name.is_empty() {
            prop_assert_eq!(build_request(&endpoint(), &op).unwrap_err(), BuildError::EmptyPathParameter);
        } else if has_nul(&name) {
            refused(&op, "recordingName");
        } else {
            check(&op, &Expect {
                segments: segments(recordings::GetStored::PATH, &[&name]),
                query: vec![],
                body: None,
            });
        }
    }

    #[test]
    fn device_state_names_and_unknown_states_are_encoded(device in value(), state in value()) {
        let op = device_states::Update::new(device.clone(), DeviceStateValue::from_wire(&state));
        if device.is_empty() {
            prop_assert_eq!(build_request(&endpoint(), &op).unwrap_err(), BuildError::EmptyPathParameter);
        } else if has_nul(&device) {
            refused(&op, "deviceName");
        } else if has_nul(&state) {
            refused(&op, "deviceState");
        } else {
            check(&op, &Expect {
                segments: segments(device_states::Update::PATH, &[&device]),
                query: vec![("deviceState".into(), state)],
                body: None,
            });
        }
    }

    #[test]
    fn endpoint_messages_keep_tech_resource_and_text(
        tech in value(), resource in value(), from in value(), text in value(),
        vars in prop::collection::btree_map(value(), value(), 0..3),
    ) {
        let mut op = endpoints::SendMessageToEndpoint::new(tech.clone(), resource.clone(), from.clone())
            .body(text.clone());
        for (k, v) in &vars {
            op = op.variable(k.clone(), v.clone());
        }
        if tech.is_empty() || (resource.is_empty() && !has_nul(&tech)) {
            prop_assert_eq!(build_request(&endpoint(), &op).unwrap_err(), BuildError::EmptyPathParameter);
        } else if has_nul(&tech) {
            refused(&op, "tech");
        } else if has_nul(&resource) {
            refused(&op, "resource");
        } else if has_nul(&from) {
            refused(&op, "from");
        } else if has_nul(&text) {
            refused(&op, "body");
        } else {
            check(&op, &Expect {
                segments: segments(endpoints::SendMessageToEndpoint::PATH, &[&tech, &resource]),
                query: vec![("from".into(), from), ("body".into(), text)],
                body: variables_body(&vars),
            });
        }
    }

    #[test]
    fn bridge_channel_lists_cannot_gain_members(
        bridge in value(), chans in prop::collection::vec(value(), 1..4), role in value(),
    ) {
        let op = bridges::AddChannel::new(bridge.clone(), chans.clone()).role(role.clone()).mute(true);
        if bridge.is_empty() {
            prop_assert_eq!(build_request(&endpoint(), &op).unwrap_err(), BuildError::EmptyPathParameter);
        } else if has_nul(&bridge) {
            refused(&op, "bridgeId");
        } else if chans.iter().any(|c| c.contains(',') || has_nul(c)) {
            refused(&op, "channel");
        } else if has_nul(&role) {
            refused(&op, "role");
        } else {
            check(&op, &Expect {
                segments: segments(bridges::AddChannel::PATH, &[&bridge]),
                query: vec![
                    ("channel".into(), chans.join(",")),
                    ("role".into(), role),
                    ("mute".into(), "true".into()),
                ],
                body: None,
            });
        }
    }

    #[test]
    fn user_events_keep_name_application_sources_and_variables(
        name in value(), app in value(), sources in prop::collection::vec(value(), 0..3),
        vars in prop::collection::btree_map(value(), value(), 0..3),
    ) {
        let mut op = events::UserEvent::new(name.clone(), app.clone()).source(sources.clone());
        for (k, v) in &vars {
            op = op.variable(k.clone(), v.clone());
        }
        if name.is_empty() {
            prop_assert_eq!(build_request(&endpoint(), &op).unwrap_err(), BuildError::EmptyPathParameter);
        } else if has_nul(&name) {
            refused(&op, "eventName");
        } else if has_nul(&app) {
            refused(&op, "application");
        } else if sources.iter().any(|s| s.contains(',') || has_nul(s)) {
            refused(&op, "source");
        } else {
            check(&op, &Expect {
                segments: segments(events::UserEvent::PATH, &[&name]),
                query: vec![("application".into(), app), ("source".into(), sources.join(","))],
                body: variables_body(&vars),
            });
        }
    }

    #[test]
    fn credentials_with_control_characters_are_refused(user in value(), password in value()) {
        // A marker no Debug output contains by itself, so finding it means the password leaked.
        let password = format!("Zq9{password}");
        let result = Credentials::new(user.clone(), password.clone());
        let unsafe_user = user.contains(':') || user.chars().any(char::is_control);
        let unsafe_password = password.chars().any(char::is_control);
        match result {
            Ok(c) => {
                prop_assert!(!unsafe_user && !unsafe_password);
                let header = c.basic_header();
                prop_assert!(header.is_sensitive());
                // The header value is plain ASCII (base64): nothing can end the header early.
                prop_assert!(header.as_bytes().iter().all(|b| b.is_ascii_graphic() || *b == b' '));
                let dbg = format!("{c:?}");
                prop_assert!(user.contains("Zq9") || !dbg.contains("Zq9"), "{}", dbg);
            }
            Err(BuildError::InvalidCredentials(why)) => {
                prop_assert!(unsafe_user || unsafe_password);
                prop_assert!(!why.is_empty());
            }
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }
}

#[test]
fn credentials_with_cr_lf_or_nul_are_refused() {
    for bad in ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b", "a\u{7f}"] {
        assert!(matches!(
            Credentials::new(USER, bad),
            Err(BuildError::InvalidCredentials(_))
        ));
        assert!(matches!(
            Credentials::new(bad, "pw"),
            Err(BuildError::InvalidCredentials(_))
        ));
    }
    assert!(matches!(
        Credentials::new("user:name", "pw"),
        Err(BuildError::InvalidCredentials(_))
    ));
}

#[test]
fn a_comma_inside_one_list_value_is_refused_with_a_clear_error() {
    let op = bridges::AddChannel::new("b1", ["c1,c2"]);
    let err = build_request(&endpoint(), &op).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter \"channel\" cannot be sent: one value of this comma-joined list contains a \
         comma, which Asterisk would read as two values"
    );
    // Two values are fine, and travel comma-joined.
    let req = build_request(&endpoint(), &bridges::AddChannel::new("b1", ["c1", "c2"])).unwrap();
    assert_eq!(req.uri().query(), Some("channel=c1,c2"));
}

#[test]
fn a_nul_in_an_id_is_refused_naming_the_parameter() {
    let err = build_request(&endpoint(), &channels::Answer::new("victim\0../other")).unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::InvalidParameter {
                name: "channelId",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "parameter \"channelId\" cannot be sent: the value contains a NUL character, which \
         Asterisk cannot receive (it would cut the value there)"
    );
}

#[test]
fn dot_segments_and_slashes_stay_inside_their_segment() {
    let cases = [
        ("..", "/ari/channels/%2E%2E/answer"),
        (".", "/ari/channels/%2E/answer"),
        ("a/../b", "/ari/channels/a%2F..%2Fb/answer"),
        ("x?y#z", "/ari/channels/x%3Fy%23z/answer"),
        ("100%", "/ari/channels/100%25/answer"),
        ("a\r\nb", "/ari/channels/a%0D%0Ab/answer"),
    ];
    for (id, want) in cases {
        let req = build_request(&endpoint(), &channels::Answer::new(id)).unwrap();
        assert_eq!(req.uri().path(), want, "{id:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn passwords_never_show_in_debug_or_display() {
    let creds = Credentials::new(USER, PASSWORD).unwrap();
    let ep = endpoint();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let mut shown = vec![
        format!("{creds:?}"),
        format!("{ep:?}"),
        format!("{:?}", ep.credentials()),
    ];

    // Requests of every shape: Debug prints headers, the Authorization value is `Sensitive`.
    let req = build_request(
        &ep,
        &channels::Originate::new("PJSIP/alice").variable("A", "1"),
    )
    .unwrap();
    let dbg = format!("{req:?}");
    assert!(dbg.contains("Sensitive"), "{dbg}");
    shown.push(dbg);
    shown.push(format!("{:?}", req.headers()));
    shown.push(format!(
        "{:?}",
        request_parts(&channels::Answer::new("c1")).unwrap()
    ));

    // Build errors, including base URLs that carry credentials.
    for url in [
        "http://asterisk:s3cr3t-p4ss@pbx:8088",
        "ftp://asterisk:s3cr3t-p4ss@pbx:8088",
        "http://asterisk:s3cr3t-p4ss@pbx:8088/ari with space",
        "asterisk:s3cr3t-p4ss@pbx:8088",
        "//asterisk:s3cr3t-p4ss@pbx",
        "http://[asterisk:s3cr3t-p4ss@pbx",
    ] {
        let err = BaseUrl::new(url, creds.clone()).expect_err(url);
        shown.push(format!("{err:?}"));
        shown.push(err.to_string());
    }
    for bad in ["pw\r\n", "pw\0"] {
        let err = Credentials::new(USER, format!("{PASSWORD}{bad}")).unwrap_err();
        shown.push(format!("{err:?}"));
        shown.push(err.to_string());
    }
    let err = build_request(&ep, &channels::Answer::new("")).unwrap_err();
    shown.push(format!("{err:?}"));
    shown.push(err.to_string());

    // The session's WebSocket request with Basic auth, and the session itself.
    let t0 = now();
    let mut session = Session::new(ep.clone(), SessionConfig::new(["app"]));
    session.start(t0);
    let Some(t) = session.poll_transmit() else {
        panic!("connect")
    };
    shown.push(format!("{t:?}"));
    shown.push(format!("{session:?}"));

    for s in &shown {
        assert!(!s.contains(PASSWORD), "password in {s}");
        assert!(!s.contains(&basic), "encoded credentials in {s}");
    }
}

proptest! {
    /// Whatever its id, a `DELETE bridges/{id}` names the bridge it destroys, typed or raw
    /// (the session is told of it when it succeeds, `Session::bridge_destroyed`).
    #[test]
    fn destroying_a_bridge_names_it_whatever_its_id(id in value()) {
        prop_assume!(!id.is_empty() && !has_nul(&id));
        let parts = request_parts(&bridges::Destroy::new(id.clone())).expect("parts");
        prop_assert_eq!(parts.destroyed_bridge(), Some(id.clone()));
        let raw = RequestParts::raw(http::Method::DELETE, &format!("/{}?x=1", parts.path), None);
        prop_assert_eq!(raw.destroyed_bridge(), Some(id));
    }

    /// Whatever its id, a bridge created with an id the application chose names it, by path
    /// (`createWithId`) or by parameter (`create` with `bridgeId`), typed or raw (the session
    /// forgets that the id ended when it succeeds).
    #[test]
    fn creating_a_bridge_with_an_id_names_it_whatever_its_id(id in value()) {
        prop_assume!(!id.is_empty() && !has_nul(&id));
        let by_path = request_parts(&bridges::CreateWithId::new(id.clone())).expect("parts");
        prop_assert_eq!(by_path.created_bridge(), Some(id.clone()));
        let by_param = request_parts(&bridges::Create::new().bridge_id(id.clone())).expect("parts");
        prop_assert_eq!(by_param.created_bridge(), Some(id.clone()));
        for parts in [by_path, by_param] {
            let raw = RequestParts::raw(http::Method::POST, &format!("/{}", parts.path_and_query()), None);
            prop_assert_eq!(raw.created_bridge(), Some(id.clone()));
            prop_assert_eq!(parts.destroyed_bridge(), None);
        }
    }
}

/// Only a `POST` creating a bridge with a chosen id names one: not a bridge with an id
/// Asterisk makes up, not the bridge's other `POST`s, not another method or resource.
#[test]
fn other_requests_create_no_bridge_with_an_id() {
    let others = [
        request_parts(&bridges::Create::new()),
        request_parts(&bridges::Create::new().name("b1")),
        request_parts(&bridges::AddChannel::new("b1", ["c1"])),
        request_parts(&bridges::Destroy::new("b1")),
        request_parts(&channels::OriginateWithId::new("b1", "PJSIP/alice")),
    ];
    for parts in others {
        let parts = parts.expect("parts");
        assert_eq!(parts.created_bridge(), None, "{parts:?}");
    }
    for path in [
        "bridges",
        "bridges?bridgeId=",
        "bridges?name=b1",
        "bridges/b1/addChannel?channel=c1",
        "channels?channelId=b1",
        "bridges//b1",
    ] {
        let raw = RequestParts::raw(http::Method::POST, path, None);
        assert_eq!(raw.created_bridge(), None, "{path}");
    }
    let raw = RequestParts::raw(http::Method::DELETE, "bridges/b1", None);
    assert_eq!(raw.created_bridge(), None);
}

/// Only the bridge's own `DELETE` destroys it: not its other `DELETE`s (music on hold, video
/// source), not another method on its path, not another resource.
#[test]
fn other_requests_destroy_no_bridge() {
    let others = [
        request_parts(&bridges::StopMoh::new("b1")),
        request_parts(&bridges::ClearVideoSource::new("b1")),
        request_parts(&bridges::Get::new("b1")),
        request_parts(&bridges::CreateWithId::new("b1")),
        request_parts(&channels::Hangup::new("b1")),
    ];
    for parts in others {
        let parts = parts.expect("parts");
        assert_eq!(parts.destroyed_bridge(), None, "{parts:?}");
    }
    for path in [
        "bridges/",
        "bridges",
        "bridges/b1/moh",
        "channels/b1",
        "bridges//b1",
    ] {
        let raw = RequestParts::raw(http::Method::DELETE, path, None);
        assert_eq!(raw.destroyed_bridge(), None, "{path}");
    }
    let raw = RequestParts::raw(http::Method::POST, "bridges/b1", None);
    assert_eq!(raw.destroyed_bridge(), None);
}

/// The resource kind and the parameter naming the id of each operation that creates a
/// resource under an id the application chose (`RequestParts::created_resource`).
fn creates(resource: &str, nickname: &str) -> Option<(ResourceKind, &'static str)> {
    use ResourceKind::{Channel, Playback, Recording};
    Some(match (resource, nickname) {
        ("channels", "originate" | "create" | "originateWithId" | "externalMedia") => {
            (Channel, "channelId")
        }
        ("channels", "snoopChannel" | "snoopChannelWithId") => (Channel, "snoopId"),
        ("channels" | "bridges", "play" | "playWithId") => (Playback, "playbackId"),
        ("channels" | "bridges", "record") => (Recording, "name"),
        _ => return None,
    })
}

/// `value` percent-encoded as strictly as can be (every byte but ASCII letters and digits),
/// and in a query value a space as `+` when `plus`.
fn strict_encode(value: &str, plus: bool) -> String {
    let encoded = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    if plus {
        encoded.replace("%20", "+")
    } else {
        encoded
    }
}

/// A method, mostly `POST`, sometimes one no operation uses.
fn method() -> impl Strategy<Value = http::Method> {
    prop_oneof![
        4 => Just(http::Method::POST),
        1 => prop::sample::select(vec![
            http::Method::GET,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::PATCH,
            http::Method::OPTIONS,
            http::Method::from_bytes(b"post").expect("a method"),
        ]),
    ]
}

/// Text with percent signs followed by anything: valid, truncated, not hex, not UTF-8.
const PERCENTS: &str = "([a-zA-Z0-9/?#&=+.]|%[0-9a-fA-FgG]{0,2}|%C3|%E9|%FF){0,6}";

/// A path segment near the ones that create resources, or with bad percent-encodings.
fn raw_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "channels", "bridges", "create", "externalMedia", "snoop", "play", "record", "",
            "c1", "%", "%FF", "%e9", "%C3%A9", "%2F", "..", "answer", "recordings", "ari",
        ])
        .prop_map(str::to_string),
        2 => PERCENTS,
        2 => value(),
    ]
}

/// A raw path and query below `/ari`: any text, or segments and parameters near the ones
/// that create resources, with stray `/`, `?`, `#`, `%`, `+` and bad percent-encodings.
fn raw_uri() -> impl Strategy<Value = String> {
    let percents = PERCENTS;
    let segment = raw_segment();
    let first = prop_oneof![
        4 => prop::sample::select(vec!["channels", "bridges", "/channels", "//bridges"])
            .prop_map(str::to_string),
        1 => raw_segment(),
    ];
    let key = prop::sample::select(vec![
        "channelId",
        "snoopId",
        "playbackId",
        "name",
        "bridgeId",
        "endpoint",
        "",
        "channelid",
        "otherChannelId",
    ]);
    let pair_value = prop_oneof![
        2 => percents.prop_map(|v| (v, true)),
        1 => (value(), any::<bool>()),
    ];
    let pair = (key, pair_value).prop_map(|(k, (v, raw))| {
        if raw {
            format!("{k}={v}")
        } else {
            format!("{k}={}", strict_encode(&v, false))
        }
    });
    let built = (
        first,
        prop::collection::vec(segment, 0..5),
        prop::option::of(prop::collection::vec(pair, 0..4)),
        prop::option::of(value()),
    )
        .prop_map(|(first, segments, query, fragment)| {
            let mut s = first;
            for seg in segments {
                s.push('/');
                s.push_str(&seg);
            }
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q.join("&"));
            }
            if let Some(f) = fragment {
                s.push('#');
                s.push_str(&f);
            }
            s
        });
    prop_oneof![4 => built, 1 => any::<String>(), 1 => value()]
}

proptest! {
    /// Whatever the ids, each typed request that creates a channel, playback or live recording
    /// under an id the application chose names exactly that kind and id, and so does the same
    /// request forwarded raw (its encoded path and query). The other ids of the request (the
    /// channel snooped on or played to, the bridge, the endpoint, the media) never leak in.
    #[test]
    fn creating_a_resource_with_an_id_names_it_whatever_its_id(
        id in value(),
        other in value(),
        endpoint in value(),
    ) {
        prop_assume!(!id.is_empty() && !has_nul(&id));
        prop_assume!(!other.is_empty() && !has_nul(&other) && !has_nul(&endpoint));
        // `POST /channels/create` and `/channels/externalMedia` are other operations.
        let path_id = id != "create" && id != "externalMedia";
        let media = ["sound:beep"];
        use ResourceKind::{Channel, Playback, Recording};
        let mut cases = vec![
            (request_parts(&channels::Originate::new(endpoint.clone()).channel_id(id.clone())), Channel),
            (request_parts(&channels::Originate::new(endpoint.clone()).channel_id(id.clone()).other_channel_id(other.clone())), Channel),
            (request_parts(&channels::Create::new(endpoint.clone(), other.clone()).channel_id(id.clone())), Channel),
            (request_parts(&channels::ExternalMedia::new(other.clone(), "ulaw").channel_id(id.clone())), Channel),
            (request_parts(&channels::SnoopChannel::new(other.clone(), "app").snoop_id(id.clone())), Channel),
            (request_parts(&channels::SnoopChannelWithId::new(other.clone(), id.clone(), "app")), Channel),
            (request_parts(&channels::Play::new(other.clone(), media).playback_id(id.clone())), Playback),
            (request_parts(&channels::PlayWithId::new(other.clone(), id.clone(), media)), Playback),
            (request_parts(&bridges::Play::new(other.clone(), media).playback_id(id.clone())), Playback),
            (request_parts(&bridges::PlayWithId::new(other.clone(), id.clone(), media)), Playback),
            (request_parts(&channels::Record::new(other.clone(), id.clone(), "wav")), Recording),
            (request_parts(&bridges::Record::new(other.clone(), id.clone(), "wav")), Recording),
        ];
        if path_id {
            cases.push((request_parts(&channels::OriginateWithId::new(id.clone(), endpoint.clone())), Channel));
        }
        let expected = |kind| Some((kind, id.clone()));
        for (parts, kind) in cases {
            let parts = parts.expect("parts");
            prop_assert_eq!(parts.created_resource(), expected(kind), "{:?}", parts);
            let uri = format!("/{}", parts.path_and_query());
            let raw = RequestParts::raw(http::Method::POST, &uri, parts.body.clone());
            prop_assert_eq!(raw.created_resource(), expected(kind), "{}", uri);
            // The same request under another method creates nothing.
            let get = RequestParts::raw(http::Method::GET, &uri, None);
            prop_assert_eq!(get.created_resource(), None, "GET {}", uri);
            // Neither is it a bridge the application creates or destroys.
            prop_assert_eq!(parts.created_bridge(), None);
            prop_assert_eq!(parts.destroyed_bridge(), None);
        }
    }

    /// Every operation of the API, sent raw with any ids (encoded as strictly as can be, a
    /// space in a query value sometimes as `+`) and with or without its query parameters,
    /// names the resource it creates exactly when it is one of the operations that create a
    /// resource under an id the application chose and that id is given: its kind and the id,
    /// decoded. Every other operation (other methods, other paths, a bridge's, or a channel
    /// or playback whose id Asterisk makes up) names none.
    #[test]
    fn only_requests_creating_a_resource_with_an_id_name_one(
        ids in prop::collection::vec(value(), 8),
        with_query in any::<bool>(),
        plus in any::<bool>(),
    ) {
        prop_assume!(ids.iter().all(|v| v != "create" && v != "externalMedia"));
        let mut created = 0;
        for (n, op) in catalog::OPERATIONS.iter().enumerate() {
            let mut given = BTreeMap::new();
            let mut next = n;
            let mut value = |name: &'static str| {
                next += 1;
                let v = ids[next % ids.len()].clone();
                given.insert(name, v.clone());
                v
            };
            let path: Vec<String> = op.path.trim_start_matches('/').split('/').map(|s| {
                match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => {
                        let name = op.params.iter().find(|p| p.name == name).expect("a path parameter").name;
                        strict_encode(&value(name), false)
                    }
                    None => s.to_string(),
                }
            }).collect();
            let mut uri = path.join("/");
            if with_query {
                for (i, p) in op.params.iter().filter(|p| p.location == "query").enumerate() {
                    uri.push(if i == 0 { '?' } else { '&' });
                    uri.push_str(p.name);
                    uri.push('=');
                    uri.push_str(&strict_encode(&value(p.name), plus));
                }
            }
            let method = http::Method::from_bytes(op.method.as_bytes()).expect("a method");
            let raw = RequestParts::raw(method, &format!("/{uri}"), None);
            let expected = creates(op.resource, op.nickname)
                .and_then(|(kind, name)| given.get(name).map(|id| (kind, id.clone())))
                .filter(|(_, id)| !id.is_empty());
            created += usize::from(expected.is_some());
            prop_assert_eq!(raw.created_resource(), expected, "{} {}.{}: {}", op.method, op.resource, op.nickname, uri);
        }
        if with_query && ids.iter().all(|v| !v.is_empty()) {
            // Every one of them: originate, originateWithId, create, externalMedia, snoop (2),
            // play (4: channel or bridge, id in the path or not), record (2).
            prop_assert_eq!(created, 12);
        }
    }

    /// Any method, path and query (invalid percent-encodings, stray `?`, `#` and `/`, any
    /// text): `created_resource` never panics, and what it names is a channel, playback or
    /// recording with a non-empty id created by a `POST` below `channels/` or `bridges/`.
    #[test]
    fn created_resource_never_panics_on_any_uri(method in method(), uri in raw_uri()) {
        let raw = RequestParts::raw(method.clone(), &uri, None);
        if let Some((kind, id)) = raw.created_resource() {
            prop_assert_eq!(&method, &http::Method::POST);
            prop_assert!(!id.is_empty());
            prop_assert!(matches!(kind, ResourceKind::Channel | ResourceKind::Playback | ResourceKind::Recording));
            let path = uri.trim_start_matches('/');
            prop_assert!(path.starts_with("channels") || path.starts_with("bridges"), "{}", uri);
        }
        // The leading slash makes no difference.
        let slashed = RequestParts::raw(method, &format!("/{uri}"), None);
        prop_assert_eq!(slashed.created_resource(), raw.created_resource());
    }
}

/// Requests that create no resource under an id the application chose: a channel, snoop or
/// playback whose id Asterisk makes up, an empty id, the bridges' own creations, the other
/// `POST`s of a channel or bridge, other methods, other resources, malformed paths.
#[test]
fn other_requests_create_no_resource_with_an_id() {
    let media = ["sound:beep"];
    let others = [
        request_parts(&channels::Originate::new("PJSIP/alice")),
        request_parts(&channels::Originate::new("PJSIP/alice").channel_id("")),
        request_parts(&channels::Create::new("PJSIP/alice", "app")),
        request_parts(&channels::ExternalMedia::new("app", "ulaw")),
        request_parts(&channels::SnoopChannel::new("c1", "app")),
        request_parts(&channels::SnoopChannel::new("c1", "app").snoop_id("")),
        request_parts(&channels::Play::new("c1", media)),
        request_parts(&bridges::Play::new("b1", media)),
        request_parts(&channels::Record::new("c1", "", "wav")),
        request_parts(&bridges::Create::new().bridge_id("c1")),
        request_parts(&bridges::CreateWithId::new("c1")),
        request_parts(&bridges::AddChannel::new("b1", ["c1"])),
        request_parts(&channels::Answer::new("c1")),
        request_parts(&channels::Get::new("c1")),
        request_parts(&channels::Hangup::new("c1")),
        request_parts(&channels::ContinueInDialplan::new("c1")),
        request_parts(&recordings::GetStored::new("c1")),
    ];
    for parts in others {
        let parts = parts.expect("parts");
        assert_eq!(parts.created_resource(), None, "{parts:?}");
    }
    // `POST /channels/create` is `create`, not an originate with the id `create`.
    let parts =
        request_parts(&channels::OriginateWithId::new("create", "PJSIP/alice")).expect("parts");
    assert_eq!(parts.created_resource(), None);
    for path in [
        "channels",
        "channels?channelId=",
        "channels?otherChannelId=c1",
        "channels?channelid=c1",
        "channels/",
        "channels//c1",
        "channels/c1/",
        "channels/%FF",
        "channels?channelId=%FF",
        "channels/c1/answer?channelId=c1",
        "channels/c1/play?channelId=c1",
        "channels/c1/play/",
        "channels/c1/snoop/",
        "channels/c1/record?name=",
        "channels/c1/record/r1",
        "channels/c1/variable?variable=X",
        "bridges?channelId=c1",
        "bridges/b1",
        "bridges/b1/record/r1",
        "bridges/b1/snoop/s1",
        "playbacks/p1/control?operation=pause",
        "recordings/live/r1/stop",
        "ari/channels/c1",
        "c1",
        "",
    ] {
        let raw = RequestParts::raw(http::Method::POST, path, None);
        assert_eq!(raw.created_resource(), None, "{path}");
    }
    for method in [http::Method::GET, http::Method::PUT, http::Method::DELETE] {
        for path in [
            "channels/c1",
            "channels?channelId=c1",
            "channels/c1/play/p1",
            "channels/c1/record?name=r1",
        ] {
            let raw = RequestParts::raw(method.clone(), path, None);
            assert_eq!(raw.created_resource(), None, "{method} {path}");
        }
    }
}

proptest! {
    /// Whatever the ids, `created_resources` names every id a request creates: both halves of
    /// a Local channel (`otherChannelId`, or `{channelId};2` for a `Local/` endpoint without
    /// it), the bridge of a bridge's creation, and otherwise exactly `created_resource`; typed
    /// or forwarded raw alike, and nothing for another method.
    #[test]
    fn created_resources_names_every_id_a_request_creates(
        id in value(),
        other in value(),
        endpoint in value(),
        local in any::<bool>(),
    ) {
        prop_assume!(!id.is_empty() && !has_nul(&id) && id != "create" && id != "externalMedia");
        prop_assume!(!other.is_empty() && !has_nul(&other) && !has_nul(&endpoint) && other != id);
        use ResourceKind::{Bridge, Channel};
        let endpoint = if local { format!("Local/{endpoint}") } else { format!("PJSIP/{endpoint}") };
        let both = vec![(Channel, id.clone()), (Channel, other.clone())];
        let implicit = if local {
            vec![(Channel, id.clone()), (Channel, format!("{id};2"))]
        } else {
            vec![(Channel, id.clone())]
        };
        let cases = vec![
            (request_parts(&channels::Originate::new(endpoint.clone()).channel_id(id.clone()).other_channel_id(other.clone())), both.clone()),
            (request_parts(&channels::OriginateWithId::new(id.clone(), endpoint.clone()).other_channel_id(other.clone())), both.clone()),
            (request_parts(&channels::Create::new(endpoint.clone(), "app").channel_id(id.clone()).other_channel_id(other.clone())), both.clone()),
            (request_parts(&channels::Originate::new(endpoint.clone()).channel_id(id.clone())), implicit.clone()),
            (request_parts(&channels::OriginateWithId::new(id.clone(), endpoint.clone())), implicit.clone()),
            (request_parts(&channels::Create::new(endpoint.clone(), "app").channel_id(id.clone())), implicit.clone()),
            // Only the second half named: Asterisk makes up the first's id.
            (request_parts(&channels::Originate::new(endpoint.clone()).other_channel_id(other.clone())), vec![(Channel, other.clone())]),
            // Not a Local channel pair.
            (request_parts(&channels::ExternalMedia::new("app", "ulaw").channel_id(id.clone())), vec![(Channel, id.clone())]),
            (request_parts(&channels::SnoopChannelWithId::new(other.clone(), id.clone(), "app")), vec![(Channel, id.clone())]),
            (request_parts(&bridges::Create::new().bridge_id(id.clone())), vec![(Bridge, id.clone())]),
            (request_parts(&bridges::CreateWithId::new(id.clone())), vec![(Bridge, id.clone())]),
            (request_parts(&channels::Answer::new(id.clone())), vec![]),
        ];
        for (parts, expected) in cases {
            let parts = parts.expect("parts");
            prop_assert_eq!(&parts.created_resources(), &expected, "{:?}", parts);
            if let Some(first) = parts.created_resource() {
                prop_assert_eq!(parts.created_resources().first().cloned(), Some(first));
            }
            let uri = format!("/{}", parts.path_and_query());
            let raw = RequestParts::raw(http::Method::POST, &uri, parts.body.clone());
            prop_assert_eq!(&raw.created_resources(), &expected, "{}", uri);
            let get = RequestParts::raw(http::Method::GET, &uri, None);
            prop_assert!(get.created_resources().is_empty(), "GET {}", uri);
        }
    }

    /// Any method, path and query: `created_resources` never panics, names no empty id and no
    /// id twice, starts with `created_resource` when there is one, and names nothing but a
    /// channel, bridge, playback or recording created by a `POST`.
    #[test]
    fn created_resources_never_panics_on_any_uri(method in method(), uri in raw_uri()) {
        let raw = RequestParts::raw(method.clone(), &uri, None);
        let all = raw.created_resources();
        if !all.is_empty() {
            prop_assert_eq!(&method, &http::Method::POST);
        }
        for (i, (kind, id)) in all.iter().enumerate() {
            prop_assert!(!id.is_empty());
            prop_assert!(kind != &ResourceKind::Endpoint && kind != &ResourceKind::DeviceState);
            prop_assert!(!all[..i].contains(&(*kind, id.clone())), "{:?} twice in {}", id, uri);
        }
        if let Some(first) = raw.created_resource() {
            prop_assert_eq!(all.first(), Some(&first));
        }
        let slashed = RequestParts::raw(method, &format!("/{uri}"), None);
        prop_assert_eq!(slashed.created_resources(), all);
    }
}
