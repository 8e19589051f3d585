//! The simulated Asterisk's HTTP session limit (`sessionlimit` in `http.conf`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ari_testkit::MockServer;

fn get_info(stream: &mut TcpStream) -> String {
    stream
        .write_all(
            b"GET /ari/asterisk/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YXN0ZXJpc2s6YXN0ZXJpc2s=\r\n\r\n",
        )
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn connections_beyond_the_session_limit_are_closed_and_counted() {
    let server = MockServer::builder().session_limit(2).start();
    let addr = server.addr();
    let mut a = TcpStream::connect(addr).expect("a");
    let mut b = TcpStream::connect(addr).expect("b");
    assert!(get_info(&mut a).starts_with("HTTP/1.1 200"));
    assert!(get_info(&mut b).starts_with("HTTP/1.1 200"));
    // A third session while two are open: closed without an answer, as Asterisk does.
    let mut c = TcpStream::connect(addr).expect("c");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = c.write_all(b"GET /ari/asterisk/ping HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "answered: {:?}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(server.sessions_refused(), 1);
    assert_eq!(server.sessions_peak(), 2);
    assert_eq!(server.connections_accepted(), 3);
    // Once one closes, a new session is accepted again.
    drop(a);
    let mut d = None;
    for _ in 0..1000 {
        let mut s = TcpStream::connect(addr).expect("d");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let _ = s.write_all(b"GET /ari/asterisk/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YXN0ZXJpc2s6YXN0ZXJpc2s=\r\n\r\n");
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            if n > 0 {
                d = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
        // The server has not yet seen `a` close: try again.
        std::thread::yield_now();
    }
    assert!(d
        .expect("a session after one closed")
        .starts_with("HTTP/1.1 200"));
    assert!(get_info(&mut b).starts_with("HTTP/1.1 200"));
    assert_eq!(server.sessions_peak(), 2);
}
