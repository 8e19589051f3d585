//! The server's version: learnt at connect, and what the client does with it on an older
//! Asterisk (the simulator pretending to be one).

use ari_client::events::StasisStart;
use ari_client::proto::rest::BuildError;
use ari_client::proto::Since;
use ari_client::{Error, RestTransport, Runtime};
use ari_testkit::{MockServer, Transport};
use futures::StreamExt;

use crate::Harness;

fn asterisk(version: &str) -> MockServer {
    MockServer::builder()
        .sim_config(crate::fast_sim_config())
        .asterisk_version(version)
        .start()
}

/// On Asterisk 18.20.2: the client knows the version after `connect`; an operation the 18
/// branch lacks (`channels.progress`) and a parameter it lacks (`report_events` of
/// `channels.setChannelVar`) fail at once with [`BuildError::Unsupported`] naming them, the
/// first branch that has them and the server's version, and reach no server (which would
/// have answered 404, as a client that never learnt the version sees).
pub async fn operations_newer_than_the_server_fail_at_once_with_a_typed_error<R: Runtime>(
    h: &Harness<R>,
) {
    let server = asterisk("18.20.2");
    let app = "conf-v18";
    let c = h
        .live("connect", h.builder_for(&server).connect())
        .await
        .unwrap();
    let v = c.server_version().expect("learnt at connect");
    assert_eq!(v.as_str(), "18.20.2");
    assert_eq!(v.branch(), Since::Asterisk18);
    assert!(!v.has_rest_over_websocket());
    h.live("start", c.start(&[app])).await.unwrap();
    let mut starts = c.stream::<StasisStart>();
    server
        .place_call(ari_testkit::PlaceCall::new("PJSIP/alice", app))
        .expect("the simulator places the call");
    let (_, channel) = h
        .live("StasisStart", starts.next())
        .await
        .expect("the stream lives")
        .expect("no lag");

    server.clear_requests();
    let err = h.live("progress", channel.progress()).await.unwrap_err();
    match &err {
        Error::Build(BuildError::Unsupported {
            operation,
            parameter,
            since,
            server,
            ..
        }) => {
            assert_eq!(*operation, "channels.progress");
            assert_eq!(*parameter, None);
            assert_eq!(*since, Since::Asterisk20);
            assert_eq!(server, "18.20.2");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("channels.progress")
            && text.contains("Asterisk 20")
            && text.contains("18.20.2"),
        "{text}"
    );
    let err = h
        .live(
            "setChannelVar with report_events",
            channel
                .set_channel_var("X")
                .map(|o| o.value("1").report_events(true)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Build(BuildError::Unsupported {
                operation: "channels.setChannelVar",
                parameter: Some("report_events"),
                since: Since::Asterisk20,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    // Without the new parameter it is sent and answered.
    h.live(
        "setChannelVar",
        channel.set_channel_var("X").map(|o| o.value("1")),
    )
    .await
    .unwrap();

    // The oracle: a client that never asked the version gets Asterisk 18's 404.
    let blind = h
        .builder_for(&server)
        .verify_on_connect(false)
        .build()
        .unwrap();
    assert!(blind.server_version().is_none());
    let err = h
        .live(
            "progress unchecked",
            blind.send(&ari_client::proto::ops::channels::Progress::new(
                channel.id(),
            )),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
}

/// REST over WebSocket on servers without it: on Asterisk 18 (and 20.13) requests go over
/// HTTP (answered, never a timeout), each counted in `websocket_fallbacks`; with
/// `require_rest_transport(true)` `connect` fails with [`Error::Unsupported`] naming the
/// releases that have it. On 22.4 the requests travel over the WebSocket.
pub async fn rest_over_websocket_falls_back_on_a_server_without_it<R: Runtime>(h: &Harness<R>) {
    for version in ["18.20.2", "20.13.0"] {
        let server = asterisk(version);
        let app = "conf-ws-fallback";
        let c = h
            .live(
                "connect",
                h.builder_for(&server)
                    .rest_transport(RestTransport::WebSocket)
                    .connect(),
            )
            .await
            .unwrap();
        h.live("start", c.start(&[app])).await.unwrap();
        server.clear_requests();
        let before = c.stats().websocket_fallbacks;
        let info = h
            .live("asterisk.getInfo", c.asterisk().get_info())
            .await
            .expect("answered over HTTP, not timed out");
        assert_eq!(
            info.system.map(|s| s.version).as_deref(),
            Some(version),
            "{version}"
        );
        assert_eq!(c.stats().websocket_fallbacks, before + 1, "{version}");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(reqs[0].transport, Transport::Http, "{version}");

        let err = h
            .live(
                "connect, WebSocket required",
                h.builder_for(&server)
                    .rest_transport(RestTransport::WebSocket)
                    .require_rest_transport(true)
                    .connect(),
            )
            .await
            .unwrap_err();
        match &err {
            Error::Unsupported { needs, server, .. } => {
                assert!(
                    needs.contains("20.14") && needs.contains("22.4") && needs.contains("23"),
                    "{needs}"
                );
                assert_eq!(server, version);
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    let server = asterisk("22.4.0");
    let app = "conf-ws-224";
    let c = h
        .live(
            "connect",
            h.builder_for(&server)
                .rest_transport(RestTransport::WebSocket)
                .require_rest_transport(true)
                .connect(),
        )
        .await
        .unwrap();
    assert_eq!(
        c.server_version().map(|v| v.branch()),
        Some(Since::Asterisk22)
    );
    h.live("start", c.start(&[app])).await.unwrap();
    server.clear_requests();
    h.live("asterisk.getInfo", c.asterisk().get_info())
        .await
        .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].transport, Transport::WebSocket);
}
