//! A client-side channel (`client.new_channel()`, node's `ari.Channel()`): listeners attached
//! before it exists, then `originate` with its id, so even its `StasisStart` reaches them.
//! The StasisStart listener answers, plays `sound:hello-world` and hangs up; the listeners are
//! released by themselves when the channel is destroyed (`live_subscriptions` back to 0).
//!
//! ```text
//! cargo run -p ari-tokio --example originate  # simulated Asterisk, in-process
//! ARI_URL=http://pbx:8088 ARI_USER=asterisk ARI_PASSWORD=secret ARI_ENDPOINT=PJSIP/1000 \
//!     cargo run -p ari-tokio --example originate
//! ```

use ari_tokio::events::{ChannelDestroyed, ChannelStateChange, StasisStart};
use ari_tokio::Client;

mod support;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ari = support::ari("originate", "tokio", "originate", None);
    let endpoint = std::env::var("ARI_ENDPOINT").unwrap_or_else(|_| "PJSIP/alice".into());

    let client = Client::connect(&ari.url, &ari.user, &ari.password).await?;
    client.start(&[&ari.app]).await?;
    println!("live subscriptions before: {}", client.live_subscriptions());

    let channel = client.new_channel();
    channel.on(|_: StasisStart, channel| async move {
        println!("← StasisStart channel={channel}");
        let call = async {
            println!("→ answer");
            channel.answer().await?;
            println!("→ play sound:hello-world");
            channel.play("sound:hello-world").await?.finished().await?;
            println!("← PlaybackFinished sound:hello-world");
            println!("→ hangup");
            channel.hangup().await
        };
        if let Err(e) = call.await {
            eprintln!("originate: {e}"); // (a handler's Err is only logged with `tracing`)
            std::process::exit(1);
        }
    });
    channel.on(|e: ChannelStateChange, _| async move {
        println!("← ChannelStateChange state={}", e.channel.state);
    });
    let destroyed = channel.once::<ChannelDestroyed>(); // node's channel.once(…)
    println!(
        "live subscriptions with listeners: {}",
        client.live_subscriptions()
    );

    println!("→ originate {endpoint} as channel {channel}");
    channel.originate(&endpoint).app(&ari.app).await?;
    let end = destroyed.await?;
    println!("← ChannelDestroyed cause={}", end.cause_txt);

    println!("live subscriptions after: {}", client.live_subscriptions());
    client.close().await;
    Ok(())
}
