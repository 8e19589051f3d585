//! The typed client on `SmolRuntime` against the mock ARI server (ari-testkit, which runs on
//! its own thread): connect, REST, events WebSocket, a simulated call.

use ari_smol::events::{StasisEnd, StasisStart};
use ari_smol::{ops, Client};
use ari_testkit::{MockServer, PlaceCall};
use std::future::Future;
use std::time::Duration;

/// Generous bound for liveness: a test that hangs fails instead.
const LIVENESS: Duration = Duration::from_secs(30);

fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(async {
        futures_lite::future::or(fut, async {
            async_io::Timer::after(LIVENESS).await;
            panic!("test did not finish within {LIVENESS:?}");
        })
        .await
    })
}

#[test]
fn client_on_smol_handles_a_call_from_the_simulator() {
    let server = MockServer::start();
    run(async {
        let client = Client::connect(&server.base_url(), server.username(), server.password())
            .await
            .unwrap();
        let info = client.send(&ops::asterisk::GetInfo::new()).await.unwrap();
        let _ = info;

        let started = client.once::<StasisStart>();
        client.start(&["hello"]).await.unwrap();
        let channel_id = server
            .place_call(PlaceCall::new("PJSIP/alice", "hello"))
            .unwrap();
        let (event, channel) = started.await.unwrap();
        assert_eq!(event.application, "hello");
        assert_eq!(channel.id(), channel_id);

        // (The simulator does not send ChannelDestroyed after StasisEnd yet; wait for StasisEnd.)
        let ended = channel.once::<StasisEnd>();
        client
            .send(&ops::channels::Answer::new(channel.id()))
            .await
            .unwrap();
        client
            .send(&ops::channels::Hangup::new(channel.id()))
            .await
            .unwrap();
        let end = ended.await.unwrap();
        assert_eq!(end.channel.id, channel_id);

        client.stop().await;
    });
}

#[test]
fn wrong_password_is_an_error_not_a_hang() {
    let server = MockServer::start();
    run(async {
        let err = Client::connect(&server.base_url(), server.username(), "wrong")
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("wrong"), "{text}");
    });
}
