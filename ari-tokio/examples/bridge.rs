//! Two calls in a bridge: originate two channels into the app, wait for both to enter it,
//! create a bridge, add both, play `sound:hello-world` to the bridge, then hang up both and
//! destroy the bridge.
//!
//! ```text
//! cargo run -p ari-tokio --example bridge     # simulated Asterisk, in-process
//! ARI_URL=http://pbx:8088 ARI_USER=asterisk ARI_PASSWORD=secret \
//!     ARI_ENDPOINT=PJSIP/1000 ARI_ENDPOINT2=PJSIP/1001 cargo run -p ari-tokio --example bridge
//! ```

use ari_tokio::events::{ChannelEnteredBridge, StasisStart};
use ari_tokio::Client;
use futures_util::StreamExt;

mod support;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ari = support::ari("bridge", "tokio", "bridge", None);
    let var = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let endpoints = [
        var("ARI_ENDPOINT", "PJSIP/alice"),
        var("ARI_ENDPOINT2", "PJSIP/bob"),
    ];

    let client = Client::connect(&ari.url, &ari.user, &ari.password).await?;
    client.start(&[&ari.app]).await?;

    let (alice, bob) = (client.channel(), client.channel());
    let started = (alice.once::<StasisStart>(), bob.once::<StasisStart>());
    for (channel, endpoint) in [&alice, &bob].into_iter().zip(&endpoints) {
        println!("→ originate {endpoint}");
        channel.originate(endpoint).app(&ari.app).await?;
    }
    started.0.await?;
    println!("← StasisStart {}", endpoints[0]);
    started.1.await?;
    println!("← StasisStart {}", endpoints[1]);

    let bridge = client.bridge();
    println!("→ create bridge");
    bridge.create().await?;
    let mut entered = bridge.stream::<ChannelEnteredBridge>();
    println!("→ add both channels to the bridge");
    bridge.add_channel([&alice, &bob]).await?;
    for _ in 0..2 {
        if let Some(e) = entered.next().await.transpose()? {
            let name = e.channel.map(|c| c.name).unwrap_or_default();
            println!("← ChannelEnteredBridge {name}");
        }
    }

    println!("→ play sound:hello-world to the bridge");
    bridge.play("sound:hello-world").await?.finished().await?;
    println!("← PlaybackFinished sound:hello-world");

    for channel in [&alice, &bob] {
        println!("→ hangup {}", channel.id());
        channel.hangup().await?;
    }
    println!("→ destroy bridge");
    bridge.destroy().await?;
    println!("done");
    client.close().await;
    Ok(())
}
