//! What an application gets when its servers (outbound ARI, chan_websocket client mode,
//! AudioSocket) cannot listen: an error that names the address and keeps the operating
//! system's error as its source, so the application can tell "address in use" from
//! "permission denied".

use std::error::Error as _;
use std::net::SocketAddr;

use ari_tokio::audiosocket::AudioSocketServer;
use ari_tokio::media::MediaServer;
use ari_tokio::{Error, OutboundOptions, TokioRuntime};

/// The `io::Error` somewhere in `err`'s source chain.
fn io_cause(err: &Error) -> Option<&std::io::Error> {
    let mut next = err.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = e.source();
    }
    None
}

#[track_caller]
fn assert_in_use(what: &str, err: &Error, addr: SocketAddr) {
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()), "{what}: {text}");
    let io = io_cause(err).unwrap_or_else(|| panic!("{what}: the io error is lost: {err:?}"));
    assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse, "{what}: {io}");
}

#[tokio::test]
async fn binding_a_port_in_use_names_it_and_keeps_the_io_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address");

    let err = MediaServer::bind(TokioRuntime::new(), addr)
        .await
        .expect_err("the port is taken");
    assert_in_use("MediaServer", &err, addr);

    let err = AudioSocketServer::bind(TokioRuntime::new(), addr)
        .await
        .expect_err("the port is taken");
    assert_in_use("AudioSocketServer", &err, addr);

    let err = OutboundOptions::new(TokioRuntime::new())
        .bind(addr)
        .await
        .expect_err("the port is taken");
    assert_in_use("OutboundServer", &err, addr);

    // Once the port is free, each binds.
    drop(taken);
    let server = MediaServer::bind(TokioRuntime::new(), addr)
        .await
        .expect("the port is free");
    assert_eq!(server.local_addr(), addr);
}

/// Binds `addr` with std until it succeeds (the dropped server's task closes its listener
/// when it next runs), failing after a liveness bound.
async fn rebind(what: &str, addr: SocketAddr) -> std::net::TcpListener {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{what}: {e}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what}: the port stays taken after the server is dropped (liveness)"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_dropped_server_frees_its_port() {
    let media = MediaServer::bind(TokioRuntime::new(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let addr = media.local_addr();
    drop(media);
    drop(rebind("MediaServer", addr).await);

    let audiosocket = AudioSocketServer::bind(TokioRuntime::new(), addr)
        .await
        .expect("bind");
    drop(audiosocket);
    drop(rebind("AudioSocketServer", addr).await);

    let outbound = OutboundOptions::new(TokioRuntime::new())
        .bind(addr)
        .await
        .expect("bind");
    assert_eq!(outbound.local_addr(), addr);
    drop(outbound);
    drop(rebind("OutboundServer", addr).await);
}
