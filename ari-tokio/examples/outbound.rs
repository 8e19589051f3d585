//! The hello IVR of `hello.rs`, served over an ARI outbound WebSocket: Asterisk dials the
//! application, and every REST call travels over that connection (the application needs no
//! route to Asterisk's HTTP port). Answers one call, plays `sound:hello-world`, reads back
//! each key, `#` says goodbye, hangs up and exits.
//!
//! ```text
//! cargo run -p ari-tokio --example outbound     # simulated Asterisk dials it, one call
//! ARI_LISTEN=0.0.0.0:8765 ARI_USER=obuser ARI_PASSWORD=obsecret cargo run -p ari-tokio --example outbound
//! ```
//!
//! With `ARI_LISTEN` it waits for a real Asterisk (see the README, "Against a real
//! Asterisk", for `websocket_client.conf` and `ari.conf`): `ARI_USER`/`ARI_PASSWORD` are the
//! credentials Asterisk must present (the websocket_client's `username`/`password`, default
//! asterisk/asterisk), `ARI_APP` the application (default `hello`), and
//! `ARI_CONNECTION=persistent` serves a `persistent` connection instead of
//! `per_call_config`.

use std::net::SocketAddr;

use ari_tokio::{
    Channel, ConnectionType, Event, OutboundOptions, TokioConnector, TokioExecutor, TokioRuntime,
};
use futures_util::StreamExt;

mod support;

type OutboundServer = ari_tokio::OutboundServer<TokioExecutor, TokioConnector>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("ARI_LISTEN").ok();
    let addr: SocketAddr = listen.as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let persistent = std::env::var("ARI_CONNECTION").is_ok_and(|c| c == "persistent");
    let var = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let (user, password) = (var("ARI_USER", "asterisk"), var("ARI_PASSWORD", "asterisk"));
    let server: OutboundServer = OutboundOptions::new(TokioRuntime::new())
        .credentials(&user, &password)?
        .connection_type(if persistent {
            ConnectionType::Persistent
        } else {
            ConnectionType::PerCall
        })
        .bind(addr)
        .await?;
    if listen.is_some() {
        println!(
            "outbound on tokio · waiting for Asterisk on {} · app {}",
            server.local_addr(),
            var("ARI_APP", "hello")
        );
    } else {
        support::outbound_sim("outbound", "tokio", server.local_addr(), "1*#");
    }

    let (channel, mut events) = if persistent {
        let conn = server.next().await.ok_or("the server stopped")?;
        println!("← connection from {}", conn.peer);
        // `conn.incoming`, subscribed before Asterisk's first frame: a call that waited while
        // the application was away comes first thing, before `next()` returns.
        let mut incoming = conn.incoming;
        let (start, channel, events) = incoming.next().await.ok_or("the connection closed")??;
        println!(
            "← StasisStart application={} args={:?}",
            start.application, start.args
        );
        (channel, events)
    } else {
        let call = server.next_call().await.ok_or("the server stopped")?;
        let app = call.start.application.split(':').next().unwrap_or_default();
        println!(
            "← StasisStart application={app}:<channel name> args={:?}",
            call.start.args
        );
        (call.channel, call.events)
    };
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
            Event::StasisEnd(_) => {
                let stats = server.stats();
                println!(
                    "· {} connection(s) accepted, {} refused, REST over the outbound WebSocket",
                    stats.accepted, stats.refused
                );
                return Ok(());
            }
            _ => {}
        }
    }
    Err("the events connection closed".into())
}

/// `channel.play(media)`, printed.
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
