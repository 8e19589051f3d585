//! AudioSocket echo: answers a call into the `media` app, has Asterisk connect an AudioSocket
//! channel to this process (`POST channels/externalMedia`, `encapsulation=audiosocket`,
//! `transport=tcp`), bridges it with the call, sends back every 8 kHz frame it receives, and
//! when the caller hangs up sends the AudioSocket hangup and prints
//! `audiosocket uuid=<uuid> frames_in=<n> frames_out=<m>`.
//!
//! ```text
//! cargo run -p ari-tokio --example audiosocket_echo      # simulated Asterisk, a 2 s call
//! ARI_URL=http://pbx:8088 AUDIOSOCKET_BIND=0.0.0.0:9092 AUDIOSOCKET_HOST=app-host:9092 \
//!     cargo run -p ari-tokio --example audiosocket_echo
//! ```
//!
//! On a real Asterisk: chan_audiosocket loaded, and `AUDIOSOCKET_HOST` an address of this
//! process that Asterisk can reach.

use std::time::{Duration, SystemTime};

use ari_tokio::audiosocket::{AudioSocketItem, AudioSocketServer};
use ari_tokio::events::StasisEnd;
use ari_tokio::models::{ExternalMediaEncapsulation, ExternalMediaTransport};
use ari_tokio::{Client, TokioRuntime};
use futures_util::StreamExt;

mod support;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ari = support::media_call("audiosocket_echo", "tokio", "media", Duration::from_secs(2));
    let bind = std::env::var("AUDIOSOCKET_BIND").unwrap_or_else(|_| "127.0.0.1:0".into());
    let server = AudioSocketServer::bind(TokioRuntime::new(), bind.parse()?).await?;
    let host =
        std::env::var("AUDIOSOCKET_HOST").unwrap_or_else(|_| server.local_addr().to_string());

    let client = Client::connect(&ari.url, &ari.user, &ari.password).await?;
    let mut incoming = client.incoming();
    client.start(&[&ari.app]).await?;
    let (_start, caller, _events) = incoming.next().await.ok_or("the client closed")??;
    drop(incoming);
    println!("← StasisStart channel={caller}");
    let hung_up = caller.once::<StasisEnd>();
    println!("→ answer");
    caller.answer().await?;

    // Asterisk dials us; the UUID (externalMedia `data`) says which call it is.
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_nanos();
    let uuid = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        nanos >> 48 & 0xffff_ffff,
        nanos & 0xffff_ffff_ffff
    );
    let audiosocket = client
        .channels()
        .external_media(&ari.app, "slin")
        .map(|op| {
            op.encapsulation(ExternalMediaEncapsulation::Audiosocket)
                .transport(ExternalMediaTransport::Tcp)
                .external_host(host.clone())
                .data(uuid.clone())
        })
        .await?;
    // A connection that fails before its UUID (a port scan, a health check, a peer that
    // hangs up at once) or another call's is no reason to stop: log it and wait on.
    let mut call = loop {
        match server.accept().await {
            Ok(call) if call.uuid() == uuid => break call,
            Ok(other) => eprintln!(
                "· AudioSocket connection for another call: {}",
                other.uuid()
            ),
            Err(e) => eprintln!("· AudioSocket connection failed: {e}"),
        }
    };
    println!("← AudioSocket connection uuid={}", call.uuid());
    let bridge = client.new_bridge();
    bridge.create().await?;
    bridge.add_channel([caller.id(), audiosocket.id()]).await?;

    // The echo, until the caller hangs up.
    let tx = call.sender();
    let mut frames_in = 0u64;
    let mut hung_up = std::pin::pin!(hung_up);
    loop {
        tokio::select! {
            item = call.next() => match item {
                Some(AudioSocketItem::Audio { data, .. }) => {
                    frames_in += 1;
                    drop(tx.send_audio(data));
                }
                Some(AudioSocketItem::Dtmf(d)) => println!("← DTMF {d}"),
                Some(AudioSocketItem::Closed { .. }) | None => break,
                Some(_) => {}
            },
            _ = &mut hung_up => {
                println!("← StasisEnd (the caller hung up)");
                println!("→ AudioSocket hangup");
                drop(tx.hangup());
                // Asterisk hangs the AudioSocket channel up and closes the connection.
                while let Some(item) = call.next().await {
                    if let AudioSocketItem::Audio { .. } = item {
                        frames_in += 1;
                    }
                }
                break;
            }
        }
    }
    bridge.destroy().await?;
    println!(
        "audiosocket uuid={} frames_in={frames_in} frames_out={}",
        call.uuid(),
        call.stats().frames_sent
    );
    Ok(())
}
