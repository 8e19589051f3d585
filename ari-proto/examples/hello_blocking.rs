//! The hello IVR of the other examples on the sans-IO core alone: no async runtime and no
//! `ari-client`, one thread. A blocking WebSocket ([tungstenite]) carries the events, blocking
//! HTTP ([ureq]) the REST requests; the program reads the clock and hands it to the
//! [`Session`], which decides when to connect, reconnect and ping, decodes every frame and
//! says what to do next. This is the shape of any custom transport (a proxy, a browser's
//! `WebSocket` and `fetch` in WebAssembly, an embedded event loop): perform what
//! [`Session::poll_transmit`] asks, hand back what happened with `handle_*`, act on
//! [`Session::poll_output`], sleep until [`Session::poll_timeout`].
//!
//! ```text
//! cargo run -p ari-proto --example hello_blocking     # simulated Asterisk and caller, in-process
//! ARI_URL=http://pbx:8088 ARI_USER=asterisk ARI_PASSWORD=secret cargo run -p ari-proto --example hello_blocking
//! ```

// This program is the adapter: owning the sockets and reading the clock (both forbidden inside
// ari-proto) is its job.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::error::Error;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ari_proto::ops::channels;
use ari_proto::rest::{build_request, parse_response, BaseUrl, Credentials};
use ari_proto::session::{ConnectionEvent, Output, Transmit};
use ari_proto::{Event, Operation, Session, SessionConfig};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

#[path = "../../ari-tokio/examples/support/mod.rs"]
mod support;

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

fn main() -> Result<(), Box<dyn Error>> {
    let ari = support::ari("hello_blocking", "std (sans-IO core)", "hello", Some("1*#"));
    let base = BaseUrl::new(&ari.url, Credentials::new(&ari.user, &ari.password)?)?;
    let rest = Rest {
        base: base.clone(),
        // Asterisk's errors are answers too: their status and JSON body go to `parse_response`.
        http: ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        ),
    };
    let mut session = Session::new(base, SessionConfig::new([ari.app.as_str()]));
    let mut socket: Option<Socket> = None;
    session.start(Instant::now());
    loop {
        // What the session wants sent, in order.
        while let Some(transmit) = session.poll_transmit() {
            match transmit {
                Transmit::Connect(request) => match tungstenite::connect(request) {
                    Ok((ws, _response)) => {
                        socket = Some(ws);
                        session.handle_connected(Instant::now());
                    }
                    Err(e) => session.handle_connect_failed(Instant::now(), &e.to_string()),
                },
                Transmit::Text(text) => send(&mut session, &mut socket, Message::text(text)),
                Transmit::Ping(payload) => {
                    send(&mut session, &mut socket, Message::Ping(payload.into()))
                }
                Transmit::Close => {
                    if let Some(mut ws) = socket.take() {
                        let _ = ws.close(None);
                    }
                }
                other => println!("· not handled here: {other:?}"),
            }
        }
        // What happened, for the application.
        while let Some(output) = session.poll_output() {
            match output {
                Output::Event(delivery) => match on_event(&rest, &delivery.event)? {
                    Flow::Done => return Ok(()),
                    Flow::Continue => {}
                },
                Output::Connection(ConnectionEvent::Connected { .. }) => {
                    println!("· events WebSocket connected")
                }
                Output::Connection(other) => println!("· {other:?}"),
                _ => {}
            }
        }
        // Wait for the next frame, or until the session's next deadline (ping, reconnect).
        let deadline = session.poll_timeout();
        let wait = deadline.map_or(Duration::from_secs(1), |at| {
            at.saturating_duration_since(Instant::now())
        });
        if socket.is_some() {
            read(&mut session, wait, &mut socket)?;
        } else {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        if deadline.is_some_and(|at| at <= now) {
            session.handle_timeout(now);
        }
    }
}

/// Reads one message (or times out after `wait`) and hands it to the session.
fn read(
    session: &mut Session,
    wait: Duration,
    socket: &mut Option<Socket>,
) -> Result<(), Box<dyn Error>> {
    let Some(ws) = socket.as_mut() else {
        return Ok(());
    };
    if let MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        // A zero timeout means "none" to the socket: wait at least a millisecond.
        tcp.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
    }
    match ws.read() {
        Ok(Message::Text(text)) => session.handle_text_frame(Instant::now(), text.as_str()),
        Ok(Message::Pong(_)) => session.handle_pong(),
        Ok(Message::Close(frame)) => {
            *socket = None;
            session.handle_disconnected(Instant::now(), &format!("closed by Asterisk: {frame:?}"));
        }
        Ok(_) => {} // pings are answered by tungstenite; Asterisk sends no binary frames
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => {
            *socket = None;
            session.handle_disconnected(Instant::now(), &e.to_string());
        }
    }
    Ok(())
}

/// Sends a message the session asked for; a failure is a lost connection.
fn send(session: &mut Session, socket: &mut Option<Socket>, message: Message) {
    let Some(ws) = socket.as_mut() else {
        return;
    };
    if let Err(e) = ws.send(message) {
        *socket = None;
        session.handle_disconnected(Instant::now(), &e.to_string());
    }
}

/// REST: `ari-proto` builds the `http::Request` and parses the response; ureq moves the bytes.
struct Rest {
    base: BaseUrl,
    http: ureq::Agent,
}

impl Rest {
    fn call<O: Operation>(&self, op: &O) -> Result<O::Output, Box<dyn Error>> {
        let request = build_request(&self.base, op)?;
        let mut response = self.http.run(request)?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_vec()?;
        Ok(parse_response::<O>(status, &body)?)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Done,
}

/// The IVR: greet the caller, play each key pressed, say goodbye on `#`, end with the call.
fn on_event(rest: &Rest, event: &Event) -> Result<Flow, Box<dyn Error>> {
    match event {
        Event::StasisStart(e) => {
            println!("← StasisStart channel={} args={:?}", e.channel.id, e.args);
            println!("→ answer");
            rest.call(&channels::Answer::new(e.channel.id.as_str()))?;
            play(rest, &e.channel.id, "sound:hello-world")?;
        }
        Event::ChannelDtmfReceived(e) => {
            println!("← ChannelDtmfReceived digit={}", e.digit);
            let media = match e.digit.as_str() {
                "#" => "sound:vm-goodbye".to_string(),
                "*" => "sound:tt-monkeys".to_string(),
                digit => format!("sound:digits/{digit}"),
            };
            play(rest, &e.channel.id, &media)?;
        }
        Event::PlaybackFinished(e) => {
            println!("← PlaybackFinished {}", e.playback.media_uri);
            if e.playback.media_uri == "sound:vm-goodbye" {
                if let Some(channel) = e.playback.target_uri.strip_prefix("channel:") {
                    println!("→ hangup");
                    rest.call(&channels::Hangup::new(channel))?;
                }
            }
        }
        Event::StasisEnd(_) => {
            println!("← StasisEnd");
            return Ok(Flow::Done);
        }
        _ => {}
    }
    Ok(Flow::Continue)
}

fn play(rest: &Rest, channel: &str, media: &str) -> Result<(), Box<dyn Error>> {
    println!("→ play {media}");
    rest.call(&channels::Play::new(channel, [media]))?;
    Ok(())
}
