//! Media echo: answers a call into the `media` app, opens a media session (chan_websocket,
//! server connection type, `slin16`, or `ulaw` where slin16 is refused), sends back every
//! audio frame it receives, and when the caller hangs up prints
//! `media format=<fmt> frames_in=<n> frames_out=<m> xoff=<k>` and exits.
//!
//! ```text
//! cargo run -p ari-smol --example media_echo_smol      # simulated Asterisk, a 3 s call
//! ARI_URL=http://pbx:8088 ARI_USER=asterisk ARI_PASSWORD=secret cargo run -p ari-smol --example media_echo_smol
//! ```
//!
//! On a real Asterisk: chan_websocket loaded (20.16+, 22.6+, 23.0+), the HTTP server enabled
//! (`http.conf`: `enabled=yes`, `bindaddr`, `bindport`), and a dialplan sending calls to
//! `Stasis(media)`.

use std::time::Duration;

use ari_smol::media::{MediaItem, MediaOptions, MediaSession};
use ari_smol::{Channel, Client};
use futures_util::StreamExt;

#[path = "../../ari-tokio/examples/support/mod.rs"]
mod support;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let ari = support::media_call("media_echo", "smol", "media", Duration::from_secs(3));

    let client = Client::connect(&ari.url, &ari.user, &ari.password).await?;
    let mut incoming = client.incoming();
    client.start(&[&ari.app]).await?;
    let (_start, channel, _events) = incoming.next().await.ok_or("the client closed")??;
    println!("← StasisStart channel={channel}");
    println!("→ answer");
    channel.answer().await?;
    let mut media = open(&channel, &ari.app).await?;
    println!("→ media session format={}", media.format());

    // The echo: every frame straight back. The session ends when the caller hangs up.
    let tx = media.sender();
    while let Some(item) = media.next().await {
        match item {
            // (Frames still queued when the call ends find the session closed: no matter.)
            MediaItem::Audio(frame) => drop(tx.send_audio(frame)),
            MediaItem::Event(event) => println!("← {}", event.name()),
            MediaItem::Closed { .. } => break,
            _ => {}
        }
    }
    let stats = media.stats().protocol;
    println!(
        "media format={} frames_in={} frames_out={} xoff={}",
        media.format(),
        stats.frames_in,
        stats.frames_out,
        stats.xoff
    );
    media.shutdown().await; // the media channel and the bridge go
    Ok(())
}

/// slin16 where the server has it, else ulaw.
async fn open(channel: &Channel, app: &str) -> Result<MediaSession, ari_smol::Error> {
    match channel.media(MediaOptions::new(app, "slin16")).await {
        Err(e) if e.status() == Some(400) => channel.media(MediaOptions::new(app, "ulaw")).await,
        other => other,
    }
}
