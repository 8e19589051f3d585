//! The hello-world IVR of node-ari-client's README: answer a call into the `hello` app and
//! play `sound:hello-world`; each key plays `sound:digits/<key>`, `*` plays
//! `sound:tt-monkeys`, `#` plays `sound:vm-goodbye`, hangs up and exits.
//!
//! ```text
//! cargo run -p ari-tokio --example hello      # simulated Asterisk and caller, in-process
//! ARI_URL=http://pbx:8088 ARI_USER=asterisk ARI_PASSWORD=secret cargo run -p ari-tokio --example hello
//! ```
//!
//! `ARI_SEED=N` seeds the client-side ids (playback ids), so two runs ask the same requests:
//! what `ari-mock record` / `ari-mock replay` need to replay a recorded run offline.

use ari_tokio::{Channel, Client, Event};
use futures_util::StreamExt;

mod support;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ari = support::ari("hello", "tokio", "hello", Some("1*#"));

    let mut builder = Client::builder(&ari.url, &ari.user, &ari.password);
    if let Some(seed) = support::seed() {
        builder = builder.rng_seed(seed); // the same client-side ids on every run
    }
    let client = builder.connect().await?;
    let mut incoming = client.incoming(); // each call with its events, none missed
    client.start(&[&ari.app]).await?;
    let (start, channel, mut events) = incoming.next().await.ok_or("the client closed")??;
    println!("← StasisStart channel={channel} args={:?}", start.args);
    println!("→ answer");
    channel.answer().await?;
    play(&channel, "sound:hello-world").await?;
    while let Some(event) = events.next().await {
        let event = event?;
        println!("← {}", show(&event));
        match event {
            Event::ChannelDtmfReceived(e) => match e.digit.as_str() {
                "#" => play(&channel, "sound:vm-goodbye").await?,
                "*" => play(&channel, "sound:tt-monkeys").await?,
                digit => play(&channel, &format!("sound:digits/{digit}")).await?,
            },
            Event::PlaybackFinished(e) if e.playback.media_uri == "sound:vm-goodbye" => {
                println!("→ hangup");
                channel.hangup().await?;
            }
            Event::StasisEnd(_) => return Ok(()),
            _ => {}
        }
    }
    Err("the events connection closed".into())
}

// ---- printing ----------------------------------------------------------------------------

/// `channel.play(media)`, printed. (The playback runs on; its events arrive on `events`.)
async fn play(channel: &Channel, media: &str) -> Result<(), ari_tokio::Error> {
    println!("→ play {media}");
    channel.play(media).await.map(drop)
}

/// An event on one line: its type and what matters in it.
fn show(event: &Event) -> String {
    match event {
        Event::ChannelDtmfReceived(e) => format!("ChannelDtmfReceived digit={}", e.digit),
        Event::ChannelStateChange(e) => format!("ChannelStateChange state={}", e.channel.state),
        Event::PlaybackStarted(e) => format!("PlaybackStarted {}", e.playback.media_uri),
        Event::PlaybackFinished(e) => format!("PlaybackFinished {}", e.playback.media_uri),
        other => other.type_name().to_string(),
    }
}
