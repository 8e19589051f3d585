//! Two calls in a bridge: originate two client-side channels into the app, wait for both
//! to enter it, create a bridge, add both, play `sound:hello-world` to the bridge and wait for
//! it to finish, then hang up both and destroy the bridge.
//!
//! ```text
//! cargo run -p ari-tokio --example bridge     # simulated Asterisk, in-process
//! ARI_URL=http://pbx:8088 ARI_USER=asterisk ARI_PASSWORD=secret \
//!     ARI_ENDPOINT=PJSIP/1000 ARI_ENDPOINT2=PJSIP/1001 cargo run -p ari-tokio --example bridge
//! ```

use ari_tokio::events::{BridgeDestroyed, ChannelDestroyed, ChannelEnteredBridge, StasisStart};
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

    // Two client-side channels, listened to before they exist.
    let calls = [client.new_channel(), client.new_channel()];
    let started = calls.each_ref().map(|call| call.once::<StasisStart>());
    for (call, endpoint) in calls.iter().zip(&endpoints) {
        println!("→ originate {endpoint}");
        call.originate(endpoint).app(&ari.app).await?;
    }
    let mut names = Vec::new();
    for start in started {
        let name = start.await?.channel.name.clone();
        println!("← StasisStart {name}");
        names.push(name);
    }

    let bridge = client.new_bridge();
    println!("→ create bridge");
    bridge.create().await?;
    let mut entered = bridge.stream::<ChannelEnteredBridge>();
    println!("→ add both channels to the bridge");
    bridge.add_channel(&calls).await?;
    for _ in &calls {
        let event = entered.next().await.ok_or("the bridge is gone")??;
        let name = event.channel.map(|c| c.name.clone()).unwrap_or_default();
        println!("← ChannelEnteredBridge {name}");
    }

    println!("→ play sound:hello-world to the bridge");
    bridge.play("sound:hello-world").await?.finished().await?;
    println!("← PlaybackFinished sound:hello-world");

    let destroyed = calls.each_ref().map(|call| call.once::<ChannelDestroyed>());
    for (call, name) in calls.iter().zip(&names) {
        println!("→ hangup {name}");
        call.hangup().await?;
    }
    for end in destroyed {
        let end = end.await?;
        println!(
            "← ChannelDestroyed {} cause={}",
            end.channel.name, end.cause_txt
        );
    }
    let gone = bridge.once::<BridgeDestroyed>();
    println!("→ destroy bridge");
    bridge.destroy().await?;
    gone.await?;
    println!("← BridgeDestroyed");
    client.close().await;
    Ok(())
}
