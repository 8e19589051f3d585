//! The AudioSocket server as an application meets it, with a plain TCP socket playing
//! Asterisk: connections that fail before their UUID, the options, the items of a session,
//! the send queue's limits, the hangup, and a session dropped by the application.
//!
//! Every wait is wrapped in a generous `tokio::time::timeout` only so that a hang fails the
//! test instead of stalling it (never a timing assertion).

use std::time::Duration;

use ari_tokio::audiosocket::{
    AudioSocketItem, AudioSocketOptions, AudioSocketSendError, AudioSocketServer,
    AudioSocketSession,
};
use ari_tokio::{Error, TokioRuntime, TransportErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for liveness checks (never a timing assertion).
const LIVENESS: Duration = Duration::from_secs(30);

const UUID: [u8; 16] = [
    0xad, 0xd7, 0x95, 0x72, 0xdd, 0x67, 0x47, 0x67, 0xbc, 0x41, 0xaf, 0x8b, 0x24, 0x76, 0x85, 0xf9,
];

/// One AudioSocket message: kind, 16-bit big-endian length, payload.
fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
    m.extend_from_slice(payload);
    m
}

async fn live<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIVENESS, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {LIVENESS:?}"))
}

type Server = AudioSocketServer<ari_tokio::TokioExecutor, ari_tokio::TokioConnector>;

async fn server(options: AudioSocketOptions) -> Server {
    AudioSocketServer::bind_with(
        TokioRuntime::new(),
        "127.0.0.1:0".parse().expect("addr"),
        options,
    )
    .await
    .expect("bind")
}

fn protocol_message(err: &Error) -> String {
    match err {
        Error::Transport(t) => {
            assert_eq!(t.kind, TransportErrorKind::Protocol, "{err}");
            err.to_string()
        }
        other => panic!("a protocol error expected, got {other:?}"),
    }
}

/// Asterisk connects and sends the call's UUID; the application accepts the session.
async fn call(server: &Server) -> (TcpStream, AudioSocketSession) {
    let mut asterisk = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    asterisk
        .write_all(&message(0x01, &UUID))
        .await
        .expect("write");
    let session = live("accept", server.accept()).await.expect("session");
    (asterisk, session)
}

/// Reads what the application writes until it closes the connection.
async fn read_to_end(asterisk: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    live(
        "the application closes the connection",
        asterisk.read_to_end(&mut all),
    )
    .await
    .expect("read");
    all
}

#[tokio::test]
async fn connections_that_fail_before_their_uuid_are_errors_naming_the_peer() {
    let server = server(AudioSocketOptions::new()).await;
    let addr = server.local_addr();

    // Closed before sending anything.
    let closed = TcpStream::connect(addr).await.expect("connect");
    let peer = closed.local_addr().expect("peer");
    drop(closed);
    let err = live("accept", server.accept()).await.expect_err("no UUID");
    let text = protocol_message(&err);
    assert!(text.contains(&peer.to_string()), "{text}");
    assert!(text.contains("closed before its UUID"), "{text}");

    // Audio first instead of the UUID.
    let mut wrong = TcpStream::connect(addr).await.expect("connect");
    wrong
        .write_all(&message(0x10, &[0; 320]))
        .await
        .expect("write");
    let err = live("accept", server.accept())
        .await
        .expect_err("not a UUID");
    let text = protocol_message(&err);
    assert!(text.contains("kind 0x10, not the UUID"), "{text}");

    // A UUID message of the wrong length: the decoder's error, with the peer.
    let mut bad = TcpStream::connect(addr).await.expect("connect");
    bad.write_all(&message(0x01, &[1, 2, 3]))
        .await
        .expect("write");
    let err = live("accept", server.accept()).await.expect_err("bad UUID");
    let text = protocol_message(&err);
    assert!(
        text.starts_with("protocol error: AudioSocket from 127.0.0.1:"),
        "{text}"
    );
    // …which stays reachable as the source (`Error::Transport` is transparent), typed.
    let decoder = std::error::Error::source(&err).expect("the decoder's error is kept");
    assert!(
        decoder
            .downcast_ref::<ari_proto::media::audiosocket::AudioSocketError>()
            .is_some(),
        "{decoder:?}"
    );

    // The server goes on accepting after failures.
    let mut good = TcpStream::connect(addr).await.expect("connect");
    good.write_all(&message(0x01, &UUID)).await.expect("write");
    let session = live("accept", server.accept()).await.expect("a session");
    assert_eq!(session.uuid(), "add79572-dd67-4767-bc41-af8b247685f9");
    assert_eq!(session.uuid_bytes(), UUID);
    assert_eq!(session.peer_addr(), good.local_addr().expect("addr"));
    let dbg = format!("{session:?} {server:?}");
    assert!(
        dbg.contains("add79572-dd67-4767-bc41-af8b247685f9"),
        "{dbg}"
    );
    assert!(dbg.contains(&addr.to_string()), "{dbg}");
}

#[tokio::test]
async fn a_silent_connection_times_out_at_the_uuid_timeout() {
    let server = server(AudioSocketOptions::new().uuid_timeout(Duration::from_millis(50))).await;
    let mut silent = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let err = live("accept", server.accept())
        .await
        .expect_err("timed out");
    match &err {
        Error::Timeout { operation, after } => {
            assert_eq!(*operation, "AudioSocket UUID");
            assert_eq!(*after, Duration::from_millis(50));
        }
        other => panic!("a timeout expected, got {other:?}"),
    }
    // The timed-out connection is closed.
    assert!(read_to_end(&mut silent).await.is_empty());
}

#[tokio::test]
async fn items_arrive_in_order_and_the_hangup_follows_the_queued_audio() {
    let server = server(AudioSocketOptions::new()).await;
    let mut asterisk = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut wire = message(0x01, &UUID);
    wire.extend(message(0x10, &[7; 320]));
    wire.extend(message(0x03, b"5"));
    wire.extend(message(0xff, &[0x03]));
    wire.extend(message(0x01, &UUID)); // a second UUID: not something Asterisk sends
    asterisk.write_all(&wire).await.expect("write");
    let mut session = live("accept", server.accept()).await.expect("session");

    match live("audio", session.next()).await {
        Some(AudioSocketItem::Audio { data, .. }) => assert_eq!(&data[..], &[7; 320][..]),
        other => panic!("audio expected, got {other:?}"),
    }
    assert_eq!(
        live("dtmf", session.next()).await,
        Some(AudioSocketItem::Dtmf('5'))
    );
    assert_eq!(
        live("error", session.next()).await,
        Some(AudioSocketItem::Error(Bytes::from_static(&[0x03])))
    );
    assert!(matches!(
        live("unexpected", session.next()).await,
        Some(AudioSocketItem::Unexpected(_))
    ));

    // 1.5 frames of audio: one whole 20 ms frame leaves, the half waits for the rest; the
    // hangup sends it as a short last frame.
    let tx = session.sender();
    tx.send_audio(Bytes::from(vec![1u8; 480])).expect("queued");
    session.hangup().expect("hangup");
    assert_eq!(session.hangup(), Err(AudioSocketSendError::Closed));
    assert_eq!(
        tx.send_audio(Bytes::from(vec![1u8; 320])),
        Err(AudioSocketSendError::Closed),
        "nothing is taken after the hangup"
    );
    let written = read_to_end(&mut asterisk).await;
    let mut expected = message(0x10, &[1; 320]);
    expected.extend(message(0x10, &[1; 160]));
    expected.extend(message(0x00, &[]));
    assert_eq!(
        written, expected,
        "one frame, the half frame (never dropped), then the hangup, then the close"
    );
    assert_eq!(tx.stats().frames_sent, 2);
    assert_eq!(tx.stats().unsent_bytes, 0);

    // Asterisk closes its side: the session ends with a clean Closed, then nothing.
    drop(asterisk);
    assert_eq!(
        live("closed", session.next()).await,
        Some(AudioSocketItem::Closed {
            error: None,
            truncated_bytes: 0
        })
    );
    assert_eq!(live("end", session.next()).await, None);
}

#[tokio::test]
async fn a_full_queue_refuses_frames_and_counts_them() {
    // A queue of one frame, nothing sent ahead of real time: the writer takes one frame at
    // once and sleeps 20 ms before the next, so the second chunk finds the queue full.
    let server = server(
        AudioSocketOptions::new()
            .queue_frames(0) // at least 1
            .send_ahead(Duration::ZERO),
    )
    .await;
    let (_asterisk, session) = call(&server).await;
    let err = session
        .send_audio(Bytes::from(vec![0u8; 320 * 5]))
        .expect_err("five frames do not fit a queue of one");
    let AudioSocketSendError::Full { dropped_frames } = err else {
        panic!("Full expected, got {err:?}");
    };
    assert_eq!(dropped_frames, 4);
    assert!(
        err.to_string().contains("AudioSocketOptions::queue_frames"),
        "the message says what to change: {err}"
    );
    assert_eq!(session.stats().overflow_frames, 4);
    assert!(session.sender().queued_frames() <= 1);
    assert!(format!("{:?}", session.sender()).contains("overflow_frames: 4"));
}

#[tokio::test]
async fn dropping_the_session_and_its_senders_closes_the_connection() {
    let server = server(AudioSocketOptions::new()).await;
    let (mut asterisk, session) = call(&server).await;
    let tx = session.sender();
    tx.send_audio(Bytes::from(vec![2u8; 320])).expect("queued");
    drop(session);
    drop(tx);
    // The queued frame still leaves, then the application closes its side: Asterisk sees
    // the end of the connection instead of an idle socket kept open forever.
    assert_eq!(read_to_end(&mut asterisk).await, message(0x10, &[2; 320]));
}
