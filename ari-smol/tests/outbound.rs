//! ARI outbound WebSocket on smol (the same cases as ari-tokio's `tests/outbound.rs`): the simulated Asterisk (ari-testkit) dials an
//! `OutboundServer`; per-call calls with REST over the connection, wrong credentials (401,
//! counted), a persistent Asterisk reconnecting into the same client, many concurrent calls,
//! and shutdown with calls live. Timeouts only bound liveness (never timing assertions).

use std::time::Duration;

use ari_smol::{ConnectionType, OutboundOptions, SmolConnector, SmolExecutor, SmolRuntime};
use ari_testkit::{MockServer, OutboundConfig, PlaceCall, Transport};

type OutboundServer = ari_smol::OutboundServer<SmolExecutor, SmolConnector>;

/// `fut`, or `Err` after `after` (liveness only).
async fn timeout<T>(after: Duration, fut: impl std::future::Future<Output = T>) -> Result<T, ()> {
    futures_lite::future::or(async { Ok(fut.await) }, async {
        smol::Timer::after(after).await;
        Err(())
    })
    .await
}

async fn sleep(d: Duration) {
    smol::Timer::after(d).await;
}
use futures_util::StreamExt;

const LIVENESS: Duration = Duration::from_secs(30);

async fn server(t: ConnectionType) -> OutboundServer {
    OutboundOptions::new(SmolRuntime::new())
        .credentials("obuser", "obsecret")
        .expect("credentials")
        .path("/ari-ob")
        .require_subprotocol(true)
        .connection_type(t)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind")
}

fn uri(s: &OutboundServer) -> String {
    format!("ws://{}/ari-ob", s.local_addr())
}

fn per_call(s: &OutboundServer) -> OutboundConfig {
    OutboundConfig::per_call(&uri(s), ["hello"])
        .credentials("obuser", "obsecret")
        .stasis_start_delay(Duration::from_millis(20))
        .close_after_stasis_end(Duration::from_millis(50))
}

#[test]
fn a_per_call_connection_is_a_call_with_rest_over_it() {
    smol::block_on(async {
        let ob = server(ConnectionType::PerCall).await;
        let mock = MockServer::builder().outbound(per_call(&ob)).start();
        let channel_id = mock
            .place_call(PlaceCall::new("PJSIP/alice", "hello"))
            .expect("call");
        let call = timeout(LIVENESS, ob.next_call())
            .await
            .expect("a call in time")
            .expect("a call");
        assert!(
            call.start.application.starts_with("hello:PJSIP/alice-"),
            "{}",
            call.start.application
        );
        assert_eq!(call.channel.id(), channel_id);
        call.channel
            .answer()
            .await
            .expect("answer over the outbound socket");
        let info = call
            .client
            .asterisk()
            .get_info()
            .await
            .expect("REST over the socket");
        assert!(info.system.is_some());
        call.channel.hangup().await.expect("hangup");
        let answers: Vec<_> = mock
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/answer"))
            .collect();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].transport, Transport::WebSocket);
        let stats = ob.stats();
        assert_eq!(
            (stats.accepted, stats.calls, stats.refused),
            (1, 1, 0),
            "{stats:?}"
        );
    })
}

#[test]
fn wrong_credentials_are_refused_with_401_and_counted() {
    smol::block_on(async {
        let ob = server(ConnectionType::Persistent).await;
        let mock = MockServer::builder()
            .outbound(
                OutboundConfig::persistent(&uri(&ob), ["hello"])
                    .credentials("obuser", "not-the-secret")
                    .reconnect(Duration::from_millis(20), 3),
            )
            .start();
        timeout(LIVENESS, async {
            while ob.stats().unauthorized < 2 {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("refusals counted");
        let stats = ob.stats();
        assert_eq!(stats.accepted, 0);
        assert!(stats.refused >= 2);
        // Asterisk saw a 401 answer: a failed attempt, and it keeps retrying.
        assert_eq!(mock.outbound_stats().last_refused_status, 401);
    })
}

#[test]
fn a_reconnecting_asterisk_goes_on_in_the_same_client() {
    smol::block_on(async {
        let ob = server(ConnectionType::Persistent).await;
        let mock = MockServer::builder()
            .outbound(
                OutboundConfig::persistent(&uri(&ob), ["hello"])
                    .credentials("obuser", "obsecret")
                    .reconnect(Duration::from_millis(20), 3),
            )
            .start();
        let conn = timeout(LIVENESS, ob.next())
            .await
            .expect("Asterisk connects")
            .expect("a connection");
        let client = conn.client;
        let mut incoming = client.incoming();
        mock.place_call(PlaceCall::new("PJSIP/alice", "hello"))
            .expect("call");
        let (first, _, _) = timeout(LIVENESS, incoming.next())
            .await
            .expect("first call")
            .expect("stream")
            .expect("not lagged");
        assert_eq!(first.application, "hello");
        // Asterisk drops the connection and reconnects; a call placed meanwhile reaches the
        // same client (queued by Asterisk and flushed on reconnect).
        assert_eq!(mock.drop_websocket("hello"), 1);
        let second = mock
            .place_call(PlaceCall::new("PJSIP/bob", "hello"))
            .expect("call");
        let (start, channel, _) = timeout(LIVENESS, incoming.next())
            .await
            .expect("second call")
            .expect("stream")
            .expect("not lagged");
        assert_eq!(start.channel.id, second);
        timeout(LIVENESS, async {
            while ob.stats().replaced < 1 {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the reconnect replaced the connection");
        channel.answer().await.expect("REST over the new socket");
        assert_eq!(ob.stats().accepted, 2);
    })
}

#[test]
fn a_hundred_concurrent_per_call_connections() {
    smol::block_on(async {
        let ob = server(ConnectionType::PerCall).await;
        let mock = MockServer::builder().outbound(per_call(&ob)).start();
        for i in 0..100 {
            mock.place_call(PlaceCall::new(&format!("PJSIP/c{i}"), "hello"))
                .expect("call");
        }
        let mut handled = Vec::new();
        for _ in 0..100 {
            let call = timeout(LIVENESS, ob.next_call())
                .await
                .expect("a call in time")
                .expect("a call");
            handled.push(smol::spawn(async move {
                call.channel.answer().await?;
                call.channel.hangup().await
            }));
        }
        for h in handled {
            h.await.expect("answer and hang up");
        }
        let stats = ob.stats();
        assert_eq!((stats.accepted, stats.calls), (100, 100), "{stats:?}");
        assert!(mock
            .with_sim(|sim, _| sim.channel_ids().is_empty())
            .unwrap());
    })
}

#[test]
fn shutdown_lets_ended_calls_go_and_closes_live_ones_at_the_deadline() {
    smol::block_on(async {
        let ob = server(ConnectionType::PerCall).await;
        let mock = MockServer::builder().outbound(per_call(&ob)).start();
        mock.place_call(PlaceCall::new("PJSIP/done", "hello"))
            .expect("call");
        mock.place_call(PlaceCall::new("PJSIP/live", "hello"))
            .expect("call");
        let mut calls = Vec::new();
        for _ in 0..2 {
            calls.push(
                timeout(LIVENESS, ob.next_call())
                    .await
                    .expect("a call in time")
                    .expect("a call"),
            );
        }
        let done = calls
            .iter()
            .find(|c| c.start.channel.name.starts_with("PJSIP/done"))
            .expect("the call that ends");
        done.channel.hangup().await.expect("hangup");
        // The ended call's connection closes (Asterisk, after StasisEnd); the live one is
        // closed by the shutdown at its deadline.
        let closed = timeout(LIVENESS, ob.shutdown(Duration::from_millis(500)))
            .await
            .expect("shutdown in time");
        assert_eq!(closed, 1);
        assert!(ob.next_call().await.is_none(), "no calls after shutdown");
    })
}
