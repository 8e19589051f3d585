//! What users read and match on when something fails (every `Error` and transport error kind:
//! message, classification, source chain), where a transport connects (`Target`), and a
//! runtime of one's own (`CustomRuntime`) carrying a whole client.

mod support;

use std::error::Error as _;
use std::time::Duration;

use ari_client::runtime::Target;
use ari_client::{
    AriError, Client, CustomRuntime, Error, ErrorKind, Executor, Lagged, TransportError,
    TransportErrorKind,
};
use ari_proto::rest::{BuildError, ResponseError};
use support::*;

#[test]
fn every_error_says_what_happened_and_keeps_its_source() {
    let not_found = Error::from(AriError::from_body(
        404,
        br#"{"message":"Channel not found"}"#,
    ));
    assert!(
        not_found.to_string().contains("Channel not found"),
        "{not_found}"
    );
    assert!(not_found.is_not_found());
    assert_eq!(not_found.ari_kind(), Some(ErrorKind::NotFound));
    assert!(!not_found.is_timeout());
    // Transparent: the message is Asterisk's, so the source is not that error again.
    assert!(not_found.source().is_none(), "{:?}", not_found.source());
    assert!(matches!(&not_found, Error::Ari(e) if e.message == "Channel not found"));

    let timeout = Error::Timeout {
        operation: "channels.answer",
        after: Duration::from_secs(10),
    };
    assert_eq!(timeout.to_string(), "channels.answer: no answer within 10s");
    assert!(timeout.is_timeout() && timeout.source().is_none() && timeout.ari().is_none());

    // A transport error keeps its cause: Error::Transport is transparent, so its source is
    // the io::Error, and a chain shows each message once.
    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
    let transport = Error::from(
        TransportError::new(TransportErrorKind::Io, "reading the response").with_source(reset),
    );
    assert_eq!(
        transport.to_string(),
        "connection error: reading the response"
    );
    let cause = transport.source().expect("the io error is kept");
    assert_eq!(cause.to_string(), "reset by peer");
    assert!(cause.source().is_none());
    assert!(matches!(&transport, Error::Transport(t) if t.kind == TransportErrorKind::Io));
    assert!(!transport.is_timeout());
    assert!(Error::from(TransportError::new(TransportErrorKind::Timeout, "connect")).is_timeout());

    let build = Error::from(BuildError::EmptyPathParameter);
    assert!(
        build.source().is_none(),
        "transparent: the message is the BuildError's"
    );
    assert!(matches!(
        build,
        Error::Build(BuildError::EmptyPathParameter)
    ));
    assert_eq!(
        build.to_string(),
        BuildError::EmptyPathParameter.to_string()
    );

    let decode = Error::from(ResponseError::Decode {
        operation: "channels.get",
        status: 200,
        error: "missing field `id`".into(),
    });
    assert_eq!(
        decode,
        Error::Decode {
            operation: "channels.get",
            status: 200,
            message: "missing field `id`".into()
        }
    );
    assert_eq!(
        decode.to_string(),
        "channels.get: the 200 response body does not decode: missing field `id`"
    );
    assert_eq!(
        decode.status(),
        None,
        "a decode error carries a success status"
    );
    let ari = Error::from(ResponseError::Ari(AriError::from_body(409, b"{}")));
    assert_eq!(ari.status(), Some(409));

    assert_eq!(
        Error::Closed { reason: "stopped" }.to_string(),
        "closed: stopped"
    );
    assert_eq!(
        Error::Ended {
            resource: "channel:1700000000.1".into()
        }
        .to_string(),
        "channel:1700000000.1 ended before the awaited event"
    );
    assert_eq!(Error::from(Lagged(3)), Error::Lagged(3));
    assert_eq!(
        Error::Lagged(3).to_string(),
        "the event stream fell behind: 3 events were dropped for it"
    );
    assert_eq!(
        Lagged(3).to_string(),
        "3 events were dropped for this stream"
    );
}

#[test]
fn each_transport_error_kind_reads_differently() {
    let kinds = [
        (TransportErrorKind::Connect, "could not connect: x"),
        (TransportErrorKind::Tls, "TLS failed: x"),
        (TransportErrorKind::Io, "connection error: x"),
        (TransportErrorKind::Protocol, "protocol error: x"),
        (TransportErrorKind::TooLarge, "message too large: x"),
        (TransportErrorKind::Rejected, "WebSocket upgrade refused: x"),
        (TransportErrorKind::Closed, "connection closed: x"),
        (TransportErrorKind::Timeout, "timed out: x"),
        (
            TransportErrorKind::Unsupported,
            "not supported by this build: x",
        ),
    ];
    for (kind, text) in kinds {
        let e = TransportError::new(kind, "x");
        assert_eq!(e.to_string(), text);
        assert_eq!(e.status, None);
        assert!(e.source().is_none());
    }
    let refused = TransportError::rejected(401, "wrong credentials");
    assert_eq!(refused.kind, TransportErrorKind::Rejected);
    assert_eq!(Error::from(refused.clone()).status(), Some(401));
    // Equality compares kind, message and status, not the source.
    let with_source = refused.clone().with_source(std::fmt::Error);
    assert_eq!(with_source, refused);
    assert_ne!(TransportError::rejected(403, "wrong credentials"), refused);
}

#[test]
fn the_target_of_a_uri_is_host_port_and_tls() {
    let t = |uri: &str, ws: bool| Target::from_uri(&uri.parse().expect("uri"), ws);
    let plain = t("http://pbx:8088/ari/channels?api_key=u:p", false).expect("http");
    assert_eq!(
        (plain.host.as_str(), plain.port, plain.tls),
        ("pbx", 8088, false)
    );
    let tls = t("HTTPS://pbx.example/ari", false).expect("https, any case");
    assert_eq!((tls.port, tls.tls), (443, true));
    let v6 = t("ws://[::1]/ari/events", true).expect("ws");
    assert_eq!((v6.host.as_str(), v6.port, v6.tls), ("::1", 80, false));
    let wss = t("wss://pbx/ari/events", true).expect("wss");
    assert_eq!((wss.port, wss.tls), (443, true));

    let ws_for_http = t("ws://pbx/ari", false).expect_err("ws is for upgrades only");
    assert_eq!(ws_for_http.kind, TransportErrorKind::Protocol);
    assert!(ws_for_http.message.contains("http or https"));
    let ftp = t("ftp://pbx/x", true).expect_err("not a WebSocket scheme");
    assert!(ftp.message.contains("ws or wss"));
    let relative = t("/ari/channels", false).expect_err("no scheme");
    assert_eq!(relative.kind, TransportErrorKind::Protocol);
}

#[test]
fn a_custom_runtime_carries_a_whole_client() {
    let rt = FakeRt::default();
    rt.respond(|req| {
        if req.uri().path().ends_with("/asterisk/info") {
            Reply::Respond(200, INFO.into())
        } else {
            Reply::Respond(404, r#"{"message":"Channel not found"}"#.into())
        }
    });
    let custom = CustomRuntime::new(rt.clone(), rt.clone());
    assert_eq!(custom.executor().now(), rt.now());
    assert_eq!(custom.wall_clock(), rt.wall_clock());
    let _ = custom.transport();
    let builder = Client::builder_with_runtime("http://pbx:8088", "asterisk", "s3cret", custom)
        .keepalive(None);
    let client = rt
        .block_on(builder.connect())
        .expect("settles")
        .expect("connects through the custom runtime");
    let c = client.clone();
    let got = rt
        .block_on(async move { c.channels().get("nope").await })
        .expect("settles");
    let err = got.expect_err("404");
    assert!(err.is_not_found(), "{err}");
    let paths: Vec<String> = rt.requests().into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths[0].ends_with("/asterisk/info") && paths[1].ends_with("/channels/nope"));

    // A call is a value until awaited: its operation and client can be taken back.
    let call = client.channels().get("chan-1");
    assert!(format!("{call:?}").contains("chan-1"));
    assert!(format!("{:?}", call.op()).contains("chan-1"));
    let _ = call.client();
    let (_client, op) = call.into_parts();
    assert!(format!("{op:?}").contains("chan-1"));
    assert_eq!(rt.requests().len(), 2, "nothing sent by building a call");
}
