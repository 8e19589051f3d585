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

/// Starts `ari-mock` with exactly these arguments and waits for the line announcing
/// `http://ADDR` after `announce`.
fn spawn_announcing(args: &[&str], announce: &str) -> Mock {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ari-mock"))
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
        if let Some(rest) = line.strip_prefix(announce) {
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
async fn record_check_and_replay_subcommands() {
    let dir = std::env::temp_dir().join(format!("ari-mock-bin-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().expect("UTF-8 temp dir");
    let asterisk = spawn(&["--seed", "1767225600000", "--quiet"]);
    let upstream = format!("http://{}", asterisk.addr);

    // Record: no credentials (the recorder's --user/--password go upstream), an api_key.
    let recorder = spawn_announcing(
        &[
            "record",
            "--upstream",
            &upstream,
            "--port",
            "0",
            "--out",
            dir_arg,
            "--user",
            "asterisk",
            "--password",
            "asterisk",
            "--quiet",
        ],
        "ari-mock record listening on http://",
    );
    let info = request(recorder.addr, "GET", "/ari/asterisk/info", None, None).await;
    assert_eq!(info.status, 200);
    let key = "/ari/channels?api_key=asterisk:asterisk";
    let listed = request(recorder.addr, "GET", key, None, None).await;
    assert_eq!(listed.status, 200);
    let bad = "/ari/channels?api_key=asterisk:wrong";
    assert_eq!(
        request(recorder.addr, "GET", bad, None, None).await.status,
        401
    );
    drop(recorder);
    drop(asterisk);
    let report = ari_testkit::check::check_dir(&dir).expect("readable");
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        (report.checked(), report.problems.len()),
        (3, 0),
        "{report}"
    );
    let rest = std::fs::read_to_string(dir.join("rest.jsonl")).expect("rest.jsonl");
    assert_eq!(rest.lines().count(), 3);
    assert!(
        !rest.contains("api_key") && !rest.contains("wrong"),
        "{rest}"
    );

    // Replay: the same answers in the same order (api_key is not part of the match).
    let replay = spawn_announcing(
        &["replay", dir_arg, "--port", "0", "--speed", "2", "--quiet"],
        "ari-mock replay listening on http://",
    );
    let again = request(replay.addr, "GET", "/ari/asterisk/info", None, None).await;
    assert_eq!((again.status, again.json()), (200, info.json()));
    assert_eq!(
        request(replay.addr, "GET", "/ari/channels", None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        request(replay.addr, "GET", "/ari/channels", None, None)
            .await
            .status,
        401
    );
    let used_up = request(replay.addr, "GET", "/ari/channels", None, None).await;
    assert_eq!(used_up.status, 500);
    let message = used_up.json()["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("does not match the recording"),
        "{message}"
    );
    let stats = request(replay.addr, "GET", "/_replay/stats", None, None)
        .await
        .json();
    assert_eq!(stats["rest_matched"], 3);
    assert_eq!(stats["unmatched"], 1);
    assert_eq!(stats["rest_remaining"], 0);
    drop(replay);

    let refused = Command::new(env!("CARGO_BIN_EXE_ari-mock"))
        .args(["replay", dir_arg, "--port", "0", "--speed", "0"])
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("speed must be a positive number"));
    let _ = std::fs::remove_dir_all(&dir);
}
