//! The `ari-mock` binary: starts, announces its address, serves api-docs from a spec
//! directory, authenticates with the configured user, and places timed calls.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::{basic, next_json, request, ws_try};

struct Mock {
    child: Child,
    addr: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Mock {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ari-mock"))
        .args(["--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ari-mock");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut addr = None;
    while let Ok(line) = rx.recv_timeout(common::PATIENCE) {
        if let Some(rest) = line.strip_prefix("ari-mock listening on http://") {
            let a = rest.split('/').next().expect("address");
            addr = Some(a.parse().expect("socket address"));
            break;
        }
    }
    Mock {
        child,
        addr: addr.expect("ari-mock announced its address"),
        lines: rx,
    }
}

#[tokio::test]
async fn serves_the_spec_and_uses_the_configured_user() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/spec");
    let mock = spawn(&["--api-docs", spec, "--user", "u", "--password", "p"]);
    let auth = basic("u", "p");
    let r = request(
        mock.addr,
        "GET",
        "/ari/api-docs/resources.json",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["basePath"],
        format!("http://{}/ari", mock.addr).as_str()
    );
    let r = request(
        mock.addr,
        "GET",
        "/ari/api-docs/asterisk.json",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["resourcePath"], "/api-docs/asterisk.{format}");
    let r = request(
        mock.addr,
        "GET",
        "/ari/asterisk/ping",
        Some(&basic("asterisk", "asterisk")),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    // The request was logged as a readable line.
    let mut logged = false;
    while let Ok(l) = mock.lines.recv_timeout(common::PATIENCE) {
        if l.contains("GET asterisk/ping") && l.contains("401") {
            logged = true;
            break;
        }
    }
    assert!(logged, "no log line for the request");
}

#[tokio::test]
async fn places_calls_on_a_timer() {
    let mock = spawn(&[
        "--call-every",
        "0.2",
        "--call-app",
        "hello",
        "--call-args",
        "a,b",
    ]);
    let mut ws = ws_try(mock.addr, "app=hello", Some(&basic("asterisk", "asterisk")))
        .await
        .expect("handshake");
    loop {
        let v = next_json(&mut ws).await;
        if v["type"] == "StasisStart" {
            assert_eq!(v["args"], serde_json::json!(["a", "b"]));
            break;
        }
    }
}

#[test]
fn check_passes_the_fixtures_and_fails_a_broken_recording() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_ari-mock"))
        .args(["check", fixtures])
        .output()
        .expect("run ari-mock check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("asterisk-master/events.jsonl"), "{stdout}");
    assert!(stdout.contains("no problem"), "{stdout}");

    let dir = std::env::temp_dir().join(format!("ari-mock-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    // A recorded channel without its required `state`.
    let line = serde_json::json!({"kind": "rest", "method": "GET", "path": "channels/c1",
        "query": {}, "status": 200, "content_type": "application/json",
        "response": "{\"id\":\"c1\"}"});
    std::fs::write(dir.join("rest.jsonl"), format!("{line}\n")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ari-mock"))
        .args(["check".as_ref(), dir.as_os_str()])
        .output()
        .expect("run ari-mock check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("PROBLEM rest.jsonl:1: GET channels/c1"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let missing = Command::new(env!("CARGO_BIN_EXE_ari-mock"))
        .args(["check", "/nonexistent/recordings"])
        .output()
        .expect("run ari-mock check");
    assert_eq!(missing.status.code(), Some(2));
}
