//! Unit tests of the simulated Asterisk, in simulated time, checked against the traffic a
//! real Asterisk produced (`fixtures/asterisk-master`).

use std::time::Duration;

use serde_json::{json, Value};

use super::{Outgoing, PlaceCall, Refer, Sim, SimConfig, SimRequest, SimResponse};

const EVENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/asterisk-master/events.jsonl"
);
const REST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/asterisk-master/rest.jsonl"
);

/// The dialplan the fixture recording ran with (reconstructed from its ChannelDialplan events).
const FIXTURE_DIALPLAN: &str = "[dtmf]\nexten => 123,1,Answer()\n same => n,Wait(1)\n same => n,SendDTMF(123)\n same => n,Wait(60)\n\n[wait]\nexten => _XX,1,Answer()\n same => n,Wait(${EXTEN})\n";

/// Test harness: a Sim, a simulated clock and every event delivered so far.
pub(super) struct H {
    pub(super) sim: Sim,
    pub(super) now: Duration,
    pub(super) events: Vec<Outgoing>,
}

pub(super) fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl H {
    /// Configured like the recorded servers (no `res_ari_mailboxes`).
    fn like_recorded(dialplan: &str) -> H {
        let cfg = SimConfig {
            dialplan: dialplan.to_string(),
            mailboxes: false,
            ..SimConfig::default()
        };
        H {
            sim: Sim::new(cfg),
            now: Duration::ZERO,
            events: Vec::new(),
        }
    }

    pub(super) fn new(dialplan: &str) -> H {
        let cfg = SimConfig {
            dialplan: dialplan.to_string(),
            ..SimConfig::default()
        };
        H {
            sim: Sim::new(cfg),
            now: Duration::ZERO,
            events: Vec::new(),
        }
    }

    pub(super) fn connect(&mut self, app: &str, all: bool) {
        self.sim.app_connected(self.now, app, all);
        self.pump();
    }

    /// Sends a request; `path` is below `/ari/`, segments percent-decoded like the server does.
    pub(super) fn req(
        &mut self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> SimResponse {
        self.req_ro(method, path, query, body, false)
    }

    pub(super) fn req_ro(
        &mut self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
        read_only: bool,
    ) -> SimResponse {
        let segments: Vec<String> = path.split('/').map(pct_decode).collect();
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = self.sim.handle_request(
            self.now,
            &SimRequest {
                method,
                segments: &segments,
                query: &query,
                body: body.as_ref(),
                read_only,
            },
        );
        self.pump();
        r
    }

    /// Runs whatever is due now and collects events.
    pub(super) fn pump(&mut self) {
        self.events.extend(self.sim.drain_events());
        while let Some(t) = self.sim.poll_timeout() {
            if t > self.now {
                break;
            }
            self.sim.handle_timeout(self.now);
            self.events.extend(self.sim.drain_events());
        }
    }

    /// Moves simulated time forward, firing every timer on the way.
    pub(super) fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(t) = self.sim.poll_timeout() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.sim.handle_timeout(self.now);
            self.events.extend(self.sim.drain_events());
        }
        self.now = target;
        self.sim.handle_timeout(self.now);
        self.events.extend(self.sim.drain_events());
    }

    pub(super) fn ms(&mut self, ms: u64) {
        self.advance(Duration::from_millis(ms));
    }

    fn for_app(&self, app: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter(|o| o.app == app)
            .map(|o| o.event.clone())
            .collect()
    }
}

/// Ids of the resources an event names.
fn ids(f: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for k in [
        "channel",
        "peer",
        "bridge",
        "playback",
        "recording",
        "device_state",
    ] {
        if let Some(o) = f.get(k) {
            if let Some(id) = o
                .get("id")
                .or_else(|| o.get("name"))
                .and_then(|x| x.as_str())
            {
                v.push(id.to_string());
            }
        }
    }
    v
}

fn concerns(f: &Value, id: &str) -> bool {
    ids(f).iter().any(|x| x == id)
}

/// Events a connection received in a fixture run.
fn fixture(run: u64, conn: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(EVENTS).expect("fixtures/asterisk-master/events.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["run"] == json!(run) && d["conn"] == json!(conn))
        .filter_map(|d| serde_json::from_str::<Value>(d["frame"].as_str()?).ok())
        .collect()
}

/// A compact signature of an event: type plus the fields that define the step.
fn sig(f: &Value) -> String {
    let mut s = f["type"].as_str().unwrap_or("?").to_string();
    for k in [
        "variable",
        "digit",
        "dialstatus",
        "dialplan_app",
        "eventname",
    ] {
        if let Some(v) = f.get(k).and_then(|v| v.as_str()) {
            s.push_str(&format!(" {k}={v}"));
        }
    }
    if let Some(c) = f.get("cause") {
        s.push_str(&format!(" cause={c}"));
    }
    if let Some(a) = f.get("args") {
        s.push_str(&format!(" args={a}"));
    }
    for k in ["channel", "peer", "playback", "recording"] {
        if let Some(st) = f
            .get(k)
            .and_then(|o| o.get("state"))
            .and_then(|v| v.as_str())
        {
            s.push_str(&format!(" {k}.state={st}"));
        }
    }
    s
}

fn sigs(evs: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<String> {
    evs.iter().filter(|e| pred(e)).map(sig).collect()
}

/// Not modelled: announcer-channel and connected-line churn around bridges, and the
/// REST-over-WebSocket traffic the fixture script interleaved.
fn core(f: &Value) -> bool {
    let t = f["type"].as_str().unwrap_or("");
    let var = f.get("variable").and_then(|v| v.as_str()).unwrap_or("");
    !matches!(
        t,
        "ChannelEnteredBridge" | "ChannelLeftBridge" | "ChannelConnectedLine" | "ChannelUserevent"
    ) && var != "BRIDGEPEER"
        && var != "WSVAR"
}

/// Run 2 of the fixture script up to the originate into `test`.
fn originate_like_fixture(h: &mut H) -> SimResponse {
    h.connect("hello", false);
    h.connect("test", false);
    h.connect("watcher", true);
    h.req(
        "POST",
        "channels/cap-0a1d1423",
        &[
            ("endpoint", "Local/123@dtmf"),
            ("app", "test"),
            ("appArgs", "dialed,x"),
            ("callerId", "Alice <100>"),
        ],
        Some(json!({"variables": {"CALLERID(name)": "Alice", "MYVAR": "hello"}})),
    )
}

fn fixture_response(run: u64, method: &str, path: &str) -> Value {
    let text = std::fs::read_to_string(REST).expect("fixtures/asterisk-master/rest.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|d| {
            d["run"] == json!(run) && d["method"] == json!(method) && d["path"] == json!(path)
        })
        .and_then(|d| serde_json::from_str(d["response"].as_str()?).ok())
        .unwrap_or(Value::Null)
}

/// Drops timestamps and the per-process sequence number in channel names
/// (`Local/123@dtmf-00000006;1` → `Local/123@dtmf-N;1`).
fn strip_times(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("creationtime");
        m.remove("timestamp");
        if let Some(Value::String(n)) = m.get_mut("name") {
            if let Some(dash) = n.rfind('-') {
                let tail = &n[dash + 1..];
                let hex: String = tail.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
                if hex.len() == 8 {
                    *n = format!("{}-N{}", &n[..dash], &tail[8..]);
                }
            }
        }
        for (_, x) in m.iter_mut() {
            *x = strip_times(x.take());
        }
    }
    v
}

#[test]
fn originate_local_answer_dtmf_hangup_matches_fixture() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    let r = originate_like_fixture(&mut h);
    assert_eq!(r.status, 200);
    let want = fixture_response(2, "POST", "channels/cap-0a1d1423");
    assert_eq!(strip_times(r.body_json()), strip_times(want.clone()));
    assert!(r.body_json()["creationtime"]
        .as_str()
        .is_some_and(|t| t.ends_with("+0000")));
    h.ms(20);
    assert_eq!(
        h.req("POST", "channels/cap-0a1d1423/answer", &[], None)
            .status,
        204
    );
    let got = h.req("GET", "channels/cap-0a1d1423", &[], None).body_json();
    assert_eq!(got["state"], "Up");
    assert_eq!(got["dialplan"]["app_data"], "test,dialed,x");
    assert_eq!(
        h.req(
            "POST",
            "channels/cap-0a1d1423/variable",
            &[("variable", "FOO"), ("value", "bar")],
            None
        )
        .status,
        204
    );
    assert_eq!(
        h.req(
            "GET",
            "channels/cap-0a1d1423/variable",
            &[("variable", "FOO")],
            None
        )
        .body_json(),
        json!({"value": "bar"})
    );
    let nope = h.req(
        "GET",
        "channels/cap-0a1d1423/variable",
        &[("variable", "NOPE_NOT_SET")],
        None,
    );
    assert_eq!(
        (nope.status, nope.body_json()),
        (404, json!({"message": "Provided variable was not found"}))
    );
    h.ms(2500); // the ;2 half runs Wait(1), SendDTMF(123)
    let r = h.req(
        "POST",
        "channels/cap-0a1d1423/dtmf",
        &[("dtmf", "12"), ("between", "100")],
        None,
    );
    assert_eq!(r.status, 204);
    h.ms(1000);
    assert_eq!(
        h.req(
            "DELETE",
            "channels/cap-0a1d1423",
            &[("reason", "normal")],
            None
        )
        .status,
        204
    );
    h.ms(100);

    let fx = fixture(2, "test,hello");
    let mine = h.for_app("test");
    for id in ["cap-0a1d1423", "cap-0a1d1423;2"] {
        let want = sigs(&fx, |f| concerns(f, id) && core(f));
        let got = sigs(&mine, |f| concerns(f, id) && core(f));
        assert_eq!(got, want, "event sequence for {id}");
    }
    // key fields
    let ss = mine
        .iter()
        .find(|e| e["type"] == "StasisStart")
        .expect("StasisStart");
    assert_eq!(ss["args"], json!(["dialed", "x"]));
    assert_eq!(ss["asterisk_id"], "02:fc:00:00:00:01");
    assert_eq!(ss["application"], "test");
    assert_eq!(
        ss["channel"]["caller"],
        json!({"name": "Alice", "number": "100"})
    );
    let name = ss["channel"]["name"].as_str().unwrap_or("");
    assert!(
        name.starts_with("Local/123@dtmf-") && name.ends_with(";1"),
        "{name}"
    );
    let dtmf: Vec<&Value> = mine
        .iter()
        .filter(|e| e["type"] == "ChannelDtmfReceived")
        .collect();
    assert!(dtmf.iter().all(|e| e["duration_ms"] == 100));
    let destroyed = mine
        .iter()
        .rfind(|e| e["type"] == "ChannelDestroyed")
        .expect("ChannelDestroyed");
    assert_eq!(
        (destroyed["cause"].clone(), destroyed["cause_txt"].clone()),
        (json!(16), json!("Normal Clearing"))
    );
    // the same keys as a real event
    let real = fx
        .iter()
        .find(|e| e["type"] == "StasisStart")
        .expect("fixture StasisStart");
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut a = keys(real);
    let mut b = keys(ss);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(keys(&real["channel"]).len(), keys(&ss["channel"]).len());
    // the subscribeAll watcher sees the same per-channel sequences
    let fw = fixture(2, "watcher");
    let mine_w = h.for_app("watcher");
    for id in ["cap-0a1d1423", "cap-0a1d1423;2"] {
        let want = sigs(&fw, |f| concerns(f, id) && core(f));
        let got = sigs(&mine_w, |f| concerns(f, id) && core(f));
        assert_eq!(got, want, "watcher event sequence for {id}");
    }
    // device state of the Local device, as the subscribeAll watcher saw it
    let dev = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .filter(|e| e["device_state"]["name"] == "Local/123@dtmf")
            .map(|e| {
                e["device_state"]["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(dev(&h.for_app("watcher")), dev(&fixture(2, "watcher")));
    // subscribeAll sees the creation of both halves
    let w = h.for_app("watcher");
    assert_eq!(
        w.iter().filter(|e| e["type"] == "ChannelCreated").count(),
        2
    );
    assert!(h.req("GET", "channels", &[], None).body_json() == json!([]));
}

#[test]
fn channel_playback_with_pause_matches_fixture() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    originate_like_fixture(&mut h);
    h.ms(20);
    let r = h.req(
        "POST",
        "channels/cap-0a1d1423/play/pb-10e63ba0",
        &[
            ("media", "sound:hello-world,sound:digits/1"),
            ("lang", "en"),
        ],
        None,
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.body_json(),
        fixture_response(2, "POST", "channels/cap-0a1d1423/play/pb-10e63ba0")
    );
    assert_eq!(
        h.req("GET", "playbacks/pb-10e63ba0", &[], None).body_json(),
        fixture_response(2, "GET", "playbacks/pb-10e63ba0")
    );
    h.ms(5);
    assert_eq!(
        h.req(
            "POST",
            "playbacks/pb-10e63ba0/control",
            &[("operation", "pause")],
            None
        )
        .status,
        204
    );
    h.ms(10);
    assert_eq!(
        h.req(
            "POST",
            "playbacks/pb-10e63ba0/control",
            &[("operation", "unpause")],
            None
        )
        .status,
        204
    );
    h.ms(5000);
    let want = sigs(&fixture(2, "test,hello"), |f| concerns(f, "pb-10e63ba0"));
    let got = sigs(&h.for_app("test"), |f| concerns(f, "pb-10e63ba0"));
    assert_eq!(got, want);
    let evs = h.for_app("test");
    let cont = evs
        .iter()
        .find(|e| e["type"] == "PlaybackContinuing")
        .expect("continuing");
    assert_eq!(cont["playback"]["media_uri"], "sound:hello-world");
    assert_eq!(cont["playback"]["next_media_uri"], "sound:digits/1");
    let fin = evs
        .iter()
        .find(|e| e["type"] == "PlaybackFinished")
        .expect("finished");
    assert_eq!(fin["playback"]["media_uri"], "sound:digits/1");
    assert!(fin["playback"].get("next_media_uri").is_none());
    // hello-world (2 s) + digits/1 (0.6 s), paused 10 ms: finished 2.61 s after start
    let ts = |e: &Value| e["timestamp"].as_str().unwrap_or("").to_string();
    let started = evs
        .iter()
        .find(|e| e["type"] == "PlaybackStarted")
        .map(ts)
        .unwrap_or_default();
    assert!(started < ts(fin));
    assert_eq!(h.req("GET", "playbacks/pb-10e63ba0", &[], None).status, 404);
}

#[test]
fn playback_control_stop_restart_forward_reverse_and_unknown_media() {
    let mut h = H::new("");
    h.connect("app", false);
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    h.req(
        "POST",
        &format!("channels/{id}/play/p1"),
        &[("media", "sound:silence/10")],
        None,
    );
    // a second playback queues behind the first
    let q = h.req(
        "POST",
        &format!("channels/{id}/play/p2"),
        &[("media", "sound:beep")],
        None,
    );
    assert_eq!(q.body_json()["state"], "queued");
    h.ms(1000);
    h.req(
        "POST",
        "playbacks/p1/control",
        &[("operation", "forward")],
        None,
    );
    h.req(
        "POST",
        "playbacks/p1/control",
        &[("operation", "reverse")],
        None,
    );
    h.req(
        "POST",
        "playbacks/p1/control",
        &[("operation", "restart")],
        None,
    );
    h.ms(9000);
    assert!(
        !h.events
            .iter()
            .any(|o| o.event["type"] == "PlaybackFinished"),
        "restart rewound"
    );
    h.ms(1100);
    let fin: Vec<String> = h
        .events
        .iter()
        .filter(|o| o.event["type"] == "PlaybackFinished")
        .map(|o| o.event["playback"]["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(fin, vec!["p1"]);
    h.ms(500);
    let r = h.req(
        "POST",
        "playbacks/nope/control",
        &[("operation", "pause")],
        None,
    );
    assert_eq!(
        (r.status, r.body_json()),
        (404, json!({"message": "Playback not found"}))
    );
    // stop
    h.req(
        "POST",
        &format!("channels/{id}/play/p3"),
        &[("media", "sound:tt-monkeys")],
        None,
    );
    assert_eq!(h.req("DELETE", "playbacks/p3", &[], None).status, 204);
    // unknown sound: Started then Finished(failed)
    h.req(
        "POST",
        &format!("channels/{id}/play/p4"),
        &[("media", "sound:no-such-sound")],
        None,
    );
    let p4: Vec<String> = h
        .events
        .iter()
        .filter(|o| o.event["playback"]["id"] == "p4")
        .map(|o| {
            format!(
                "{} {}",
                o.event["type"].as_str().unwrap_or(""),
                o.event["playback"]["state"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        p4,
        vec!["PlaybackStarted playing", "PlaybackFinished failed"]
    );
    let types: Vec<&str> = h
        .events
        .iter()
        .filter(|o| o.event["playback"]["id"].is_string())
        .filter_map(|o| o.event["type"].as_str())
        .collect();
    assert_eq!(
        types,
        vec![
            "PlaybackStarted",
            "PlaybackFinished",
            "PlaybackStarted",
            "PlaybackFinished",
            "PlaybackStarted",
            "PlaybackFinished",
            "PlaybackStarted",
            "PlaybackFinished"
        ]
    );
}

#[test]
fn inbound_sip_call_play_scripted_dtmf_and_caller_hangup() {
    let mut h = H::new("");
    h.connect("ivr", false);
    let mut call = PlaceCall::new("PJSIP/alice", "ivr");
    call.args = vec!["inbound".to_string()];
    call.caller_name = "Alice".to_string();
    call.caller_number = "100".to_string();
    call.dtmf = "1#".to_string();
    call.dtmf_delay = Duration::from_millis(500);
    call.dtmf_interval = Duration::from_millis(300);
    call.hangup_after_answer = Some(Duration::from_secs(4));
    let id = h.sim.place_call(h.now, call);
    h.pump();
    let ss = h.events.last().map(|o| o.event.clone()).unwrap_or_default();
    assert_eq!(ss["type"], "StasisStart");
    assert_eq!(ss["args"], json!(["inbound"]));
    assert_eq!(ss["channel"]["state"], "Ring");
    assert!(ss["channel"]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("PJSIP/alice-")));
    assert!(ss["channel"]["protocol_id"]
        .as_str()
        .is_some_and(|p| !p.is_empty()));
    h.ms(100);
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    h.req(
        "POST",
        &format!("channels/{id}/play/hello"),
        &[("media", "sound:hello-world")],
        None,
    );
    h.ms(5000);
    let got: Vec<String> = h.for_app("ivr").iter().map(sig).collect();
    assert_eq!(
        got,
        vec![
            "StasisStart args=[\"inbound\"] channel.state=Ring",
            "ChannelStateChange channel.state=Up",
            "PlaybackStarted playback.state=playing",
            "ChannelDtmfReceived digit=1 channel.state=Up",
            "ChannelDtmfReceived digit=# channel.state=Up",
            "PlaybackFinished playback.state=done",
            "ChannelHangupRequest cause=16 channel.state=Up",
            "StasisEnd channel.state=Up",
        ]
    );
    assert!(h.sim.channel_ids().is_empty());
    // endpoints know alice
    let eps = h.req("GET", "endpoints", &[], None).body_json();
    assert_eq!(eps[0]["technology"], "PJSIP");
    assert_eq!(eps[0]["resource"], "alice");
    // injected DTMF and test-driven hangup
    let id = h.sim.place_call(h.now, PlaceCall::new("PJSIP/bob", "ivr"));
    h.pump();
    h.events.clear();
    assert!(h.sim.send_dtmf(h.now, &id, "42").is_ok());
    assert!(h.sim.send_dtmf(h.now, "nope", "1").is_err());
    h.ms(1000);
    assert!(h.sim.hangup(h.now, &id).is_ok());
    h.pump();
    let got: Vec<String> = h.for_app("ivr").iter().map(sig).collect();
    assert_eq!(
        got,
        vec![
            "ChannelDtmfReceived digit=4 channel.state=Ring",
            "ChannelDtmfReceived digit=2 channel.state=Ring",
            "ChannelHangupRequest cause=16 channel.state=Ring",
            "StasisEnd channel.state=Ring",
        ]
    );
    assert!(h.sim.hangup(h.now, &id).is_err());
}

#[test]
fn bridge_lifecycle_matches_fixture() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    originate_like_fixture(&mut h);
    h.ms(20);
    h.events.clear();
    let r = h.req(
        "POST",
        "bridges/br-04bc6c7e",
        &[("type", "mixing,dtmf_events"), ("name", "capbridge")],
        None,
    );
    assert_eq!(
        strip_times(r.body_json()),
        strip_times(fixture_response(2, "POST", "bridges/br-04bc6c7e"))
    );
    assert_eq!(
        h.req(
            "POST",
            "bridges/br-04bc6c7e/addChannel",
            &[("channel", "cap-0a1d1423"), ("role", "member")],
            None
        )
        .status,
        204
    );
    h.ms(5);
    let r = h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/40@wait"),
            ("app", "test"),
            ("channelId", "cap2-26cecea1"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    h.ms(20);
    assert_eq!(
        h.req(
            "POST",
            "bridges/br-04bc6c7e/addChannel",
            &[("channel", "cap2-26cecea1")],
            None
        )
        .status,
        204
    );
    let got = h.req("GET", "bridges/br-04bc6c7e", &[], None).body_json();
    assert_eq!(
        strip_times(got),
        strip_times(fixture_response(2, "GET", "bridges/br-04bc6c7e"))
    );
    let r = h.req(
        "POST",
        "bridges/br-04bc6c7e/play/pb2-1269c7f1",
        &[("media", "sound:beep")],
        None,
    );
    assert_eq!(
        r.body_json(),
        fixture_response(2, "POST", "bridges/br-04bc6c7e/play/pb2-1269c7f1")
    );
    h.ms(500);
    for (m, p) in [
        ("POST", "bridges/br-04bc6c7e/moh"),
        ("DELETE", "bridges/br-04bc6c7e/moh"),
        ("POST", "bridges/br-04bc6c7e/videoSource/cap-0a1d1423"),
        ("DELETE", "bridges/br-04bc6c7e/videoSource"),
    ] {
        assert_eq!(h.req(m, p, &[], None).status, 204, "{m} {p}");
        h.ms(5);
    }
    assert_eq!(
        h.req(
            "POST",
            "bridges/br-04bc6c7e/removeChannel",
            &[("channel", "cap2-26cecea1")],
            None
        )
        .status,
        204
    );
    assert_eq!(
        h.req("DELETE", "bridges/br-04bc6c7e", &[], None).status,
        204
    );
    h.ms(5);
    let fx = fixture(2, "test,hello");
    let fw = fixture(2, "watcher");
    let types = |evs: &[Value], id: &str| -> Vec<String> {
        evs.iter()
            .filter(|f| concerns(f, id))
            .filter_map(|f| f["type"].as_str().map(|s| s.to_string()))
            .collect()
    };
    assert_eq!(
        types(&h.for_app("test"), "br-04bc6c7e"),
        types(&fx, "br-04bc6c7e")
    );
    assert_eq!(
        types(&h.for_app("watcher"), "br-04bc6c7e"),
        types(&fw, "br-04bc6c7e")
    );
    assert_eq!(
        types(&h.for_app("test"), "pb2-1269c7f1"),
        types(&fx, "pb2-1269c7f1")
    );
    // the second channel: originate, Stasis, bridge, announcer and MOH peers, removal
    let want = sigs(&fx, |f| {
        concerns(f, "cap2-26cecea1") && f["type"] != "ChannelVarset"
    });
    let got = sigs(&h.for_app("test"), |f| {
        concerns(f, "cap2-26cecea1") && f["type"] != "ChannelVarset"
    });
    assert_eq!(got, want);
    let want = sigs(&fw, |f| {
        concerns(f, "cap2-26cecea1") && f["type"] != "ChannelVarset"
    });
    let got = sigs(&h.for_app("watcher"), |f| {
        concerns(f, "cap2-26cecea1") && f["type"] != "ChannelVarset"
    });
    assert_eq!(got, want, "watcher");
    let varsets = |evs: &[Value]| {
        evs.iter()
            .filter(|f| concerns(f, "cap2-26cecea1") && f["type"] == "ChannelVarset")
            .count()
    };
    assert_eq!(varsets(&h.for_app("test")), varsets(&fx));
    // errors
    let r = h.req("POST", "bridges/nope/addChannel", &[("channel", "x")], None);
    assert_eq!(
        (r.status, r.body_json()),
        (404, json!({"message": "Bridge not found"}))
    );
    h.req("POST", "bridges/b2", &[], None);
    let r = h.req(
        "POST",
        "bridges/b2/addChannel",
        &[("channel", "gone")],
        None,
    );
    assert_eq!(
        (r.status, r.body_json()),
        (400, json!({"message": "Channel not found"}))
    );
}

#[test]
fn recording_live_and_stored_lifecycle() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    originate_like_fixture(&mut h);
    h.ms(20);
    h.events.clear();
    let q = [
        ("name", "cap-rec1"),
        ("format", "wav"),
        ("maxDurationSeconds", "1"),
        ("ifExists", "overwrite"),
        ("beep", "true"),
    ];
    let r = h.req("POST", "channels/cap-0a1d1423/record", &q, None);
    assert_eq!(r.status, 201);
    assert_eq!(
        r.body_json(),
        fixture_response(2, "POST", "channels/cap-0a1d1423/record")
    );
    h.ms(600);
    assert_eq!(
        h.req("GET", "recordings/live/cap-rec1", &[], None)
            .body_json(),
        fixture_response(2, "GET", "recordings/live/cap-rec1")
    );
    h.ms(1000);
    assert_eq!(
        h.req("GET", "recordings/live/cap-rec1", &[], None).status,
        404
    );
    assert_eq!(
        h.req("GET", "recordings/stored/cap-rec1", &[], None)
            .body_json(),
        json!({"name": "cap-rec1", "format": "wav"})
    );
    let r = h.req(
        "POST",
        "recordings/stored/cap-rec1/copy",
        &[("destinationRecordingName", "cap-rec2")],
        None,
    );
    assert_eq!(r.body_json(), json!({"name": "cap-rec2", "format": "wav"}));
    let f = h.req("GET", "recordings/stored/cap-rec1/file", &[], None);
    assert_eq!((f.status, f.content_type), (200, "audio/wav"));
    assert_eq!(&f.body[..4], b"RIFF");
    assert_eq!(&f.body[8..16], b"WAVEfmt ");
    assert_eq!(
        h.req("DELETE", "recordings/stored/cap-rec2", &[], None)
            .status,
        204
    );
    assert_eq!(
        h.req("DELETE", "recordings/stored/cap-rec2", &[], None)
            .status,
        404
    );
    // a name with a slash, reachable only percent-encoded
    let r = h.req(
        "POST",
        "channels/cap-0a1d1423/record",
        &[("name", "sub/dir-rec"), ("format", "wav")],
        None,
    );
    assert_eq!(r.status, 201);
    h.ms(300);
    assert_eq!(
        h.req("POST", "recordings/live/sub%2Fdir-rec/pause", &[], None)
            .status,
        204
    );
    assert_eq!(
        h.req("GET", "recordings/live/sub%2Fdir-rec", &[], None)
            .body_json()["state"],
        "paused"
    );
    assert_eq!(
        h.req("DELETE", "recordings/live/sub%2Fdir-rec/pause", &[], None)
            .status,
        204
    );
    assert_eq!(
        h.req("POST", "recordings/live/sub%2Fdir-rec/mute", &[], None)
            .status,
        204
    );
    assert_eq!(
        h.req("POST", "recordings/live/sub%2Fdir-rec/stop", &[], None)
            .status,
        204
    );
    assert_eq!(
        h.req("GET", "recordings/stored/sub%2Fdir-rec", &[], None)
            .status,
        200
    );
    let r = h.req("GET", "recordings/stored/sub/dir-rec", &[], None);
    assert_eq!(
        (r.status, r.body_json()),
        (404, json!({"message": "Resource not found"}))
    );
    let r = h.req(
        "POST",
        "channels/cap-0a1d1423/record",
        &[
            ("name", "sub/dir-rec"),
            ("format", "wav"),
            ("maxDurationSeconds", "1"),
        ],
        None,
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.body_json(), fixture_response(2, "POST", "channels/cap-0a1d1423/record").get("x").cloned().unwrap_or(json!({"message": "Recording 'sub/dir-rec' already exists and can not be overwritten"})));
    let list = h.req("GET", "recordings/stored", &[], None).body_json();
    assert_eq!(list, fixture_response(2, "GET", "recordings/stored"));
    let evs = h.for_app("test");
    let recs: Vec<String> = evs
        .iter()
        .filter(|e| e["recording"]["name"] == "cap-rec1")
        .map(sig)
        .collect();
    let want: Vec<String> = fixture(2, "test,hello")
        .iter()
        .filter(|e| e["recording"]["name"] == "cap-rec1")
        .map(sig)
        .collect();
    assert_eq!(recs, want);
    let fin = evs
        .iter()
        .find(|e| e["type"] == "RecordingFinished")
        .expect("finished");
    assert_eq!(fin["recording"]["duration"], 1);
    assert_eq!(fin["recording"]["target_uri"], "channel:cap-0a1d1423");
}

#[test]
fn snoop_matches_fixture() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    originate_like_fixture(&mut h);
    h.ms(20);
    let r = h.req(
        "POST",
        "channels/cap-0a1d1423/snoop",
        &[("app", "test"), ("spy", "both"), ("snoopId", "snoop-1")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        strip_times(r.body_json()),
        strip_times(fixture_response(2, "POST", "channels/cap-0a1d1423/snoop"))
    );
    h.ms(20);
    assert_eq!(h.req("DELETE", "channels/snoop-1", &[], None).status, 204);
    let fx = fixture(2, "test,hello");
    assert_eq!(
        sigs(&h.for_app("test"), |f| concerns(f, "snoop-1")),
        sigs(&fx, |f| concerns(f, "snoop-1"))
    );
    let r = h.req(
        "POST",
        "channels/nope/snoop",
        &[("app", "test"), ("spy", "both")],
        None,
    );
    assert_eq!(
        (r.status, r.body_json()),
        (404, json!({"message": "Provided channel was not found"}))
    );
    // snoop with an id in the path; hanging up the spied channel takes the snoop along
    h.req(
        "POST",
        "channels/cap-0a1d1423/snoop/s2",
        &[("app", "test"), ("spy", "in")],
        None,
    );
    // the deleted snoop lingers (out of Stasis) until the spied channel goes
    assert_eq!(h.req("GET", "channels/snoop-1", &[], None).status, 200);
    h.req("DELETE", "channels/cap-0a1d1423", &[], None);
    h.ms(10);
    assert!(h.sim.channel_ids().is_empty());
    let fw = fixture(2, "watcher");
    let snoop = |f: &Value| concerns(f, "snoop-1");
    assert_eq!(sigs(&h.for_app("watcher"), snoop), sigs(&fw, snoop));
}

#[test]
fn user_event_device_state_and_subscriptions() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    originate_like_fixture(&mut h);
    h.ms(20);
    h.events.clear();
    let r = h.req(
        "POST",
        "events/user/capEvent",
        &[("application", "test"), ("source", "channel:cap-0a1d1423")],
        Some(json!({"variables": {"k1": "v1", "k2": "v2"}})),
    );
    assert_eq!(r.status, 204);
    let fx = fixture(2, "test,hello");
    let real = fx
        .iter()
        .find(|e| e["eventname"] == "capEvent")
        .expect("fixture user event");
    let mine = h
        .for_app("test")
        .into_iter()
        .find(|e| e["eventname"] == "capEvent")
        .expect("user event");
    assert_eq!(mine["userevent"], real["userevent"]);
    assert_eq!(mine["channel"]["id"], real["channel"]["id"]);
    assert_eq!(h.events.len(), 1, "only the named application gets it");
    let r = h.req(
        "POST",
        "events/user/x",
        &[("application", "test"), ("source", "channel:nope")],
        None,
    );
    assert_eq!(
        (r.status, r.body_json()),
        (422, json!({"message": "Event source was not found"}))
    );
    let r = h.req("POST", "events/user/x", &[], None);
    assert_eq!(r.status, 400);
    let r = h.req("POST", "events/user/x", &[("application", "bogus")], None);
    assert_eq!(r.status, 404);
    // body-only parameters, no source
    h.events.clear();
    h.req(
        "POST",
        "events/user/wsEvent",
        &[],
        Some(json!({"application": "test", "variables": {"a": "b"}})),
    );
    let ue = &h.events[0].event;
    let real = fx
        .iter()
        .find(|e| e["eventname"] == "wsEvent")
        .expect("fixture wsEvent");
    assert_eq!(ue["userevent"], real["userevent"]);
    assert!(ue.get("channel").is_none());

    // device states
    let r = h.req(
        "POST",
        "applications/test/subscription",
        &[("eventSource", "deviceState:Stasis:capdev")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_json()["device_names"], json!(["Stasis:capdev"]));
    assert_eq!(
        r.body_json()["channel_ids"],
        fixture_response(2, "POST", "applications/test/subscription")["channel_ids"]
            .clone()
            .as_array()
            .map(|a| json!(a[..2].to_vec()))
            .unwrap_or_default()
    );
    h.events.clear();
    assert_eq!(
        h.req(
            "PUT",
            "deviceStates/Stasis:capdev",
            &[("deviceState", "BUSY")],
            None
        )
        .status,
        204
    );
    assert_eq!(
        h.req("GET", "deviceStates/Stasis:capdev", &[], None)
            .body_json(),
        json!({"name": "Stasis:capdev", "state": "BUSY"})
    );
    let real = fx
        .iter()
        .find(|e| e["type"] == "DeviceStateChanged")
        .expect("fixture devstate");
    let mine: Vec<&Outgoing> = h
        .events
        .iter()
        .filter(|o| o.event["type"] == "DeviceStateChanged")
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "test (subscribed) and watcher (subscribeAll)"
    );
    assert_eq!(
        mine.iter()
            .find(|o| o.app == "test")
            .map(|o| o.event["device_state"].clone()),
        Some(real["device_state"].clone())
    );
    assert_eq!(
        h.req("DELETE", "deviceStates/Stasis:capdev", &[], None)
            .status,
        204
    );
    let r = h.req(
        "PUT",
        "deviceStates/Foo:bar",
        &[("deviceState", "BUSY")],
        None,
    );
    assert_eq!(r.status, 409);
    let r = h.req(
        "DELETE",
        "applications/test/subscription",
        &[("eventSource", "deviceState:Stasis:capdev")],
        None,
    );
    assert_eq!(r.body_json()["device_names"], json!([]));
    h.events.clear();
    h.req(
        "PUT",
        "deviceStates/Stasis:capdev",
        &[("deviceState", "INUSE")],
        None,
    );
    assert!(h.events.iter().all(|o| o.app == "watcher"));

    // event filter
    let r = h.req(
        "PUT",
        "applications/test/eventFilter",
        &[],
        Some(json!({"allowed": [{"type": "StasisStart"}, {"type": "ChannelDtmfReceived"}]})),
    );
    assert_eq!(
        r.body_json()["events_allowed"],
        json!([{"type": "StasisStart"}, {"type": "ChannelDtmfReceived"}])
    );
    // what the fixture script sent ({"filter": …}) is not a filter: Asterisk answered [].
    let r = h.req(
        "PUT",
        "applications/hello/eventFilter",
        &[],
        Some(json!({"filter": {"allowed": [{"type": "StasisStart"}]}})),
    );
    assert_eq!(
        r.body_json()["events_allowed"],
        fixture_response(2, "PUT", "applications/test/eventFilter")["events_allowed"]
    );
    h.events.clear();
    h.req(
        "POST",
        "channels/cap-0a1d1423/variable",
        &[("variable", "X"), ("value", "1")],
        None,
    );
    assert!(h.for_app("test").is_empty(), "ChannelVarset filtered out");
    h.req(
        "PUT",
        "applications/test/eventFilter",
        &[],
        Some(json!({"filter": {}})),
    );
    h.req(
        "POST",
        "channels/cap-0a1d1423/variable",
        &[("variable", "X"), ("value", "2")],
        None,
    );
    assert_eq!(h.for_app("test").len(), 1);

    // subscription errors
    for (q, st) in [
        (vec![], 400),
        (vec![("eventSource", "notascheme:foo")], 400),
        (vec![("eventSource", "channel:notachannel")], 422),
        (vec![("eventSource", "endpoint:PJSIP/alice")], 422),
    ] {
        assert_eq!(
            h.req("POST", "applications/test/subscription", &q, None)
                .status,
            st,
            "{q:?}"
        );
    }
    assert_eq!(h.req("GET", "applications/notanapp", &[], None).status, 404);
    // a bridge subscription of another app
    h.connect("other", false);
    h.req("POST", "bridges/bb", &[], None);
    h.req(
        "POST",
        "applications/other/subscription",
        &[("eventSource", "bridge:bb")],
        None,
    );
    h.events.clear();
    h.req(
        "POST",
        "bridges/bb/addChannel",
        &[("channel", "cap-0a1d1423")],
        None,
    );
    assert!(h
        .events
        .iter()
        .any(|o| o.app == "other" && o.event["type"] == "ChannelEnteredBridge"));
    let apps = h.req("GET", "applications", &[], None).body_json();
    let names: Vec<&str> = apps
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["hello", "other", "test", "watcher"]);
    assert_eq!(apps[3]["channel_ids"], json!(["__AST_CHANNEL_ALL_TOPIC"]));
    h.sim.app_disconnected(h.now, "other");
    assert_eq!(h.req("GET", "applications/other", &[], None).status, 404);
}

#[test]
fn external_media_matches_fixture() {
    let mut h = H::new("");
    h.connect("test", false);
    h.connect("watcher", true);
    let r = h.req(
        "POST",
        "channels/externalMedia",
        &[
            ("app", "test"),
            ("external_host", "127.0.0.1:40000"),
            ("format", "ulaw"),
            ("channelId", "em-1"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    h.ms(20);
    assert_eq!(h.req("DELETE", "channels/em-1", &[], None).status, 204);
    let fx = fixture(2, "test,hello");
    assert_eq!(
        sigs(&h.for_app("test"), |f| concerns(f, "em-1")),
        sigs(&fx, |f| concerns(f, "em-1"))
    );
    let fw = fixture(2, "watcher");
    let em = |f: &Value| concerns(f, "em-1");
    assert_eq!(sigs(&h.for_app("watcher"), em), sigs(&fw, em));
}

#[test]
fn errors_for_unknown_ids_match_fixture() {
    // Every error the recorded Asterisk answered for something that does not exist.
    let text = std::fs::read_to_string(REST).expect("rest.jsonl");
    let mut h = H::like_recorded("");
    h.connect("test", false);
    let mut checked = 0;
    for d in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let status = d["status"].as_u64().unwrap_or(0);
        let path = d["path"].as_str().unwrap_or("");
        let scenario = d["scenario"].as_str().unwrap_or("");
        if status < 400 || status == 401 || path.contains("cap") || scenario == "ivr" {
            continue;
        }
        if path.contains("/snoop") || path.starts_with("events/user") || path.contains("br-") {
            continue;
        }
        let method = d["method"].as_str().unwrap_or("GET");
        let q: Vec<(String, String)> = d["query"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(|s| s.to_string())
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let qr: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = if d["body"].is_null() {
            None
        } else {
            Some(d["body"].clone())
        };
        let r = h.req_ro(method, path, &qr, body, status == 403);
        let want: Value =
            serde_json::from_str(d["response"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        assert_eq!(
            (r.status as u64, r.body_json()),
            (status, want),
            "{method} {path}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "checked {checked}");
    // a few more Asterisk answers
    for (m, p, st, msg) in [
        ("POST", "channels/nope/play", 404, "Channel not found"),
        ("DELETE", "channels/nope", 404, "Channel not found"),
        ("GET", "bridges/nope", 404, "Bridge not found"),
        ("DELETE", "bridges/nope", 404, "Bridge not found"),
        ("GET", "recordings/stored/nope", 404, "Recording not found"),
        ("GET", "applications/nope", 404, "Application not found"),
        ("GET", "nothing/here", 404, "Resource not found"),
    ] {
        let r = h.req(m, p, &[], None);
        assert_eq!(
            (r.status, r.body_json()),
            (st, json!({ "message": msg })),
            "{m} {p}"
        );
    }
}

#[test]
fn asterisk_info_ping_variables_modules() {
    let mut h = H::new("");
    h.connect("watcher", true);
    let info = h.req("GET", "asterisk/info", &[], None).body_json();
    let real = fixture_response(2, "GET", "asterisk/info");
    let keys = |v: &Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(keys(&info), keys(&real));
    for k in ["build", "system", "config", "status"] {
        assert_eq!(keys(&info[k]), keys(&real[k]), "{k}");
    }
    let only = h
        .req("GET", "asterisk/info", &[("only", "build,system")], None)
        .body_json();
    assert_eq!(keys(&only), vec!["build", "system"]);
    let ping = h.req("GET", "asterisk/ping", &[], None).body_json();
    assert_eq!(
        keys(&ping),
        keys(&fixture_response(2, "GET", "asterisk/ping"))
    );
    assert_eq!(
        h.req(
            "POST",
            "asterisk/variable",
            &[("variable", "GLOBALX"), ("value", "v1")],
            None
        )
        .status,
        204
    );
    assert_eq!(
        h.req("GET", "asterisk/variable", &[("variable", "GLOBALX")], None)
            .body_json(),
        json!({"value": "v1"})
    );
    let ev = &h.events.last().expect("varset").event;
    let real = fixture(2, "watcher")
        .into_iter()
        .find(|e| e["variable"] == "GLOBALX")
        .expect("fixture");
    assert_eq!(keys(ev).len(), keys(&real).len());
    let m = h
        .req("GET", "asterisk/modules/res_ari.so", &[], None)
        .body_json();
    assert_eq!(
        keys(&m),
        keys(&fixture_response(2, "GET", "asterisk/modules/res_ari.so"))
    );
    assert_eq!(
        h.req("POST", "asterisk/modules/app_page.so", &[], None)
            .status,
        409
    );
    assert_eq!(
        h.req("DELETE", "asterisk/modules/app_page.so", &[], None)
            .status,
        204
    );
    assert_eq!(
        h.req("GET", "asterisk/modules/app_page.so", &[], None)
            .status,
        404
    );
    assert_eq!(
        h.req("POST", "asterisk/modules/app_page.so", &[], None)
            .status,
        204
    );
    let all = h.req("GET", "asterisk/modules", &[], None).body_json();
    assert_eq!(
        all.as_array().map(|a| a.len()),
        fixture_response(2, "GET", "asterisk/modules")
            .as_array()
            .map(|a| a.len())
    );
    let r = h.req_ro("POST", "bridges", &[], None, true);
    assert_eq!(
        (r.status, r.body_json()),
        (403, json!({"message": "Write access denied"}))
    );
    assert_eq!(
        h.req("GET", "sounds/hello-world", &[], None).body_json(),
        fixture_response(2, "GET", "sounds/hello-world")
    );
}

#[test]
fn create_then_dial_local_and_continue() {
    let mut h = H::new("[ctx]\nexten => s,1,NoOp()\n same => n,Answer()\n same => n,Playback(silence/3)\n same => n,Hangup()\n\n[back]\nexten => s,1,NoOp()\n same => n,Stasis(app,again)\n same => n,Hangup()\n");
    h.connect("app", false);
    let r = h.req(
        "POST",
        "channels/create",
        &[
            ("endpoint", "Local/s@ctx"),
            ("app", "app"),
            ("channelId", "channel1"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_json()["dialplan"]["app_name"], "");
    let r = h.req("POST", "channels/channel1/answer", &[], None);
    assert_eq!(r.status, 412, "not dialed yet");
    assert_eq!(
        h.req("POST", "channels/channel1/dial", &[], None).status,
        204
    );
    h.ms(10);
    h.ms(4000);
    let got: Vec<String> = h
        .for_app("app")
        .iter()
        .filter(|e| concerns(e, "channel1"))
        .map(sig)
        .collect();
    assert_eq!(
        got,
        vec![
            "ChannelDialplan dialplan_app=Stasis channel.state=Down",
            "ChannelVarset variable=STASISSTATUS channel.state=Down",
            "StasisStart args=[] channel.state=Down",
            "Dial dialstatus= peer.state=Down",
            "ChannelStateChange channel.state=Up",
            "Dial dialstatus=ANSWER peer.state=Up",
            "ChannelHangupRequest cause=16 channel.state=Up",
            "StasisEnd channel.state=Up",
            "ChannelVarset variable=STASISSTATUS channel.state=Up",
            "ChannelDestroyed cause=16 channel.state=Up",
        ]
    );
    // continue: the channel leaves Stasis and re-enters through the dialplan
    h.events.clear();
    h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/s@back"),
            ("context", "ctx"),
            ("extension", "s"),
        ],
        None,
    );
    h.ms(10);
    let ss = h
        .for_app("app")
        .into_iter()
        .find(|e| e["type"] == "StasisStart")
        .expect("StasisStart");
    let id = ss["channel"]["id"].as_str().unwrap_or("").to_string();
    assert_eq!(ss["args"], json!(["again"]));
    h.events.clear();
    assert_eq!(
        h.req(
            "POST",
            &format!("channels/{id}/continue"),
            &[("priority", "2")],
            None
        )
        .status,
        204
    );
    h.ms(10);
    let types: Vec<String> = h
        .for_app("app")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(types, vec!["StasisEnd", "StasisStart"]);
}

/// Random requests (valid, half-valid and garbage) never panic and always answer a status
/// with a well-formed body; time moves on between them so timers fire too.
#[test]
fn random_requests_never_panic() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    h.connect("test", false);
    h.connect("all", true);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words = [
        "channels",
        "bridges",
        "playbacks",
        "recordings",
        "live",
        "stored",
        "asterisk",
        "applications",
        "endpoints",
        "deviceStates",
        "events",
        "user",
        "sounds",
        "variable",
        "variables",
        "play",
        "record",
        "snoop",
        "dial",
        "answer",
        "ring",
        "hold",
        "mute",
        "moh",
        "silence",
        "dtmf",
        "continue",
        "move",
        "redirect",
        "addChannel",
        "removeChannel",
        "control",
        "stop",
        "pause",
        "copy",
        "file",
        "subscription",
        "eventFilter",
        "info",
        "ping",
        "modules",
        "logging",
        "create",
        "externalMedia",
        "c1",
        "c1;2",
        "b1",
        "p1",
        "r1",
        "Stasis:x",
        "PJSIP",
        "alice",
        "",
        "%",
        "\u{e9}\u{1f600}",
        "videoSource",
        "claim",
        "test",
        "rotate",
        "sendMessage",
        "mailboxes",
    ];
    let keys = [
        "endpoint",
        "app",
        "appArgs",
        "channelId",
        "otherChannelId",
        "channel",
        "media",
        "name",
        "format",
        "maxDurationSeconds",
        "operation",
        "dtmf",
        "between",
        "duration",
        "before",
        "variable",
        "value",
        "eventSource",
        "deviceState",
        "type",
        "bridgeId",
        "playbackId",
        "spy",
        "whisper",
        "snoopId",
        "context",
        "extension",
        "priority",
        "label",
        "reason",
        "reason_code",
        "skipms",
        "offsetms",
        "ifExists",
        "beep",
        "terminateOn",
        "application",
        "source",
        "destinationRecordingName",
        "timeout",
        "caller",
        "callerId",
        "only",
        "external_host",
        "encapsulation",
        "report_events",
        "variables",
    ];
    let values = [
        "Local/1@dtmf",
        "Local/123@dtmf",
        "Local/9@wait",
        "PJSIP/alice",
        "test",
        "all",
        "c1",
        "c1;2",
        "b1",
        "sound:hello-world",
        "sound:beep,sound:digits/1",
        "tone:ring",
        "sound:nope",
        "wav",
        "pause",
        "unpause",
        "restart",
        "reverse",
        "forward",
        "stop",
        "12#",
        "-5",
        "0",
        "99999999999999999999",
        "18446744073709551615",
        "9223372036854775807",
        "NaN",
        "true",
        "both",
        "none",
        "channel:c1",
        "bridge:b1",
        "deviceState:Stasis:x",
        "endpoint:PJSIP/alice",
        "BUSY",
        "mixing,dtmf_events",
        "holding",
        "normal",
        "busy",
        "",
        ",",
        "${X}",
        "$[1=1]",
        "SHELL(echo -n x)",
        "CALLERID(name)",
        "r1",
        "127.0.0.1:5000",
        "ulaw",
        "sub/dir",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    for i in 0..20_000u32 {
        if i % 40 == 0 {
            // keep known resources around so that most requests reach real handlers
            h.req(
                "POST",
                "channels/c1",
                &[("endpoint", "Local/1@wait"), ("app", "test")],
                None,
            );
            h.req("POST", "bridges/b1", &[], None);
            h.ms(600);
        }
        let n = (next() % 5) as usize;
        let segs: Vec<String> = (0..n)
            .map(|_| words[(next() % words.len() as u64) as usize].to_string())
            .collect();
        let q: Vec<(String, String)> = (0..(next() % 5))
            .map(|_| {
                (
                    keys[(next() % keys.len() as u64) as usize].to_string(),
                    values[(next() % values.len() as u64) as usize].to_string(),
                )
            })
            .collect();
        let body = match next() % 6 {
            0 => Some(json!({"variables": {"A": "1", "B": {"value": "2", "report_events": true}}})),
            1 => Some(json!({"allowed": [{"type": "StasisStart"}], "disallowed": "x"})),
            2 => Some(json!([1, 2, 3])),
            3 => Some(json!({"endpoint": "Local/1@wait", "app": "test", "variables": 5})),
            _ => None,
        };
        let method = methods[(next() % methods.len() as u64) as usize];
        let r = h.sim.handle_request(
            h.now,
            &SimRequest {
                method,
                segments: &segs,
                query: &q,
                body: body.as_ref(),
                read_only: i % 97 == 0,
            },
        );
        assert!(
            (200..600).contains(&r.status),
            "{method} {segs:?} {q:?} -> {}",
            r.status
        );
        if r.content_type == "application/json" {
            assert!(serde_json::from_slice::<Value>(&r.body).is_ok());
        }
        if r.status == 204 {
            assert!(r.body.is_empty());
        }
        if i % 7 == 0 {
            h.ms(next() % 3000);
        }
        if i % 501 == 0 {
            let _ = h.sim.send_dtmf(h.now, "c1", "1x");
            let id = h.sim.place_call(h.now, PlaceCall::new("PJSIP/bob", "test"));
            let _ = h.sim.hangup(h.now, &id);
        }
        h.events.clear();
    }
    // every event is an object with the common fields
    h.req(
        "POST",
        "channels",
        &[("endpoint", "Local/1@wait"), ("app", "test")],
        None,
    );
    h.ms(100);
    for o in &h.events {
        assert!(o.event["type"].is_string() && o.event["timestamp"].is_string());
        assert_eq!(o.event["application"], json!(o.app));
    }
}

/// Keys of an event and of its nested resources, as `path` strings (`channel.dialplan.exten`).
fn key_paths(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    if let Value::Object(m) = v {
        for (k, x) in m {
            // free-form maps: their keys are data, not shape
            if ["userevent", "channelvars", "bridgevars", "variables"].contains(&k.as_str()) {
                out.insert(format!("{prefix}{k}"));
                continue;
            }
            let p = format!("{prefix}{k}");
            out.insert(p.clone());
            key_paths(x, &format!("{p}."), out);
        }
    }
}

/// Every event type the simulation emits is shaped like the same type in the recorded
/// traffic: no key real Asterisk never sent, and every key real Asterisk always sent.
#[test]
fn event_payloads_are_shaped_like_the_fixtures() {
    use std::collections::{BTreeMap, BTreeSet};
    // what real Asterisk sent, per type: keys always present / keys ever present
    let mut always: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ever: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for run in [1, 2] {
        for conn in ["test,hello", "watcher"] {
            for f in fixture(run, conn) {
                let ty = f["type"].as_str().unwrap_or("").to_string();
                let mut keys = BTreeSet::new();
                key_paths(&f, "", &mut keys);
                ever.entry(ty.clone())
                    .or_default()
                    .extend(keys.iter().cloned());
                let a = always.entry(ty).or_insert_with(|| keys.clone());
                a.retain(|k| keys.contains(k));
            }
        }
    }
    // drive the simulation through most of what the fixture script did
    let mut h = H::new(FIXTURE_DIALPLAN);
    originate_like_fixture(&mut h);
    h.ms(20);
    for (m, p, q) in [
        (
            "POST",
            "channels/cap-0a1d1423/variable",
            vec![("variable", "FOO"), ("value", "bar")],
        ),
        (
            "POST",
            "channels/cap-0a1d1423/play/pb1",
            vec![("media", "sound:hello-world,sound:digits/1")],
        ),
        (
            "POST",
            "channels/cap-0a1d1423/record",
            vec![
                ("name", "r1"),
                ("format", "wav"),
                ("maxDurationSeconds", "1"),
            ],
        ),
        (
            "POST",
            "bridges/b1",
            vec![("type", "mixing,dtmf_events"), ("name", "capbridge")],
        ),
        (
            "POST",
            "bridges/b1/addChannel",
            vec![("channel", "cap-0a1d1423")],
        ),
        (
            "POST",
            "channels",
            vec![
                ("endpoint", "Local/40@wait"),
                ("app", "test"),
                ("channelId", "cap2"),
            ],
        ),
        ("POST", "bridges/b1/play/pb2", vec![("media", "sound:beep")]),
        ("POST", "bridges/b1/videoSource/cap-0a1d1423", vec![]),
        ("DELETE", "bridges/b1/videoSource", vec![]),
        (
            "POST",
            "channels/cap-0a1d1423/snoop",
            vec![("app", "test"), ("spy", "both"), ("snoopId", "snoop-1")],
        ),
        ("DELETE", "channels/snoop-1", vec![]),
        (
            "POST",
            "events/user/capEvent",
            vec![("application", "test"), ("source", "channel:cap-0a1d1423")],
        ),
        ("POST", "events/user/wsEvent", vec![("application", "test")]),
        (
            "POST",
            "applications/test/subscription",
            vec![("eventSource", "deviceState:Stasis:capdev")],
        ),
        (
            "PUT",
            "deviceStates/Stasis:capdev",
            vec![("deviceState", "BUSY")],
        ),
        (
            "POST",
            "channels/externalMedia",
            vec![
                ("app", "test"),
                ("external_host", "127.0.0.1:40000"),
                ("format", "ulaw"),
                ("channelId", "em-1"),
            ],
        ),
        ("DELETE", "channels/em-1", vec![]),
        (
            "POST",
            "asterisk/variable",
            vec![("variable", "GLOBALX"), ("value", "v1")],
        ),
        ("POST", "channels/cap-0a1d1423/dtmf", vec![("dtmf", "12")]),
        ("DELETE", "channels/cap-0a1d1423", vec![]),
        ("DELETE", "bridges/b1", vec![]),
    ] {
        let r = h.req(m, p, &q, None);
        assert!(r.status < 300, "{m} {p}: {}", r.status);
        h.ms(1500);
    }
    h.ms(60_000);
    let mut seen = BTreeSet::new();
    for o in &h.events {
        let ty = o.event["type"].as_str().unwrap_or("").to_string();
        let Some(ever) = ever.get(&ty) else { continue };
        seen.insert(ty.clone());
        let mut keys = BTreeSet::new();
        key_paths(&o.event, "", &mut keys);
        let extra: Vec<&String> = keys.difference(ever).collect();
        assert!(
            extra.is_empty(),
            "{ty}: keys Asterisk never sends: {extra:?}"
        );
        let missing: Vec<&String> = always[&ty].difference(&keys).collect();
        assert!(
            missing.is_empty(),
            "{ty}: keys Asterisk always sends are missing: {missing:?}"
        );
    }
    // the simulation produced (nearly) every event type of the recording
    let recorded: BTreeSet<&String> = ever
        .keys()
        .filter(|t| *t != "RESTResponse" && *t != "ApplicationReplaced")
        .collect();
    let missing: Vec<&&String> = recorded
        .iter()
        .filter(|t| !seen.contains(t.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "event types never produced: {missing:?}"
    );
}

/// The dialplan's Dial() bridges caller and callee in a basic bridge that dissolves when
/// one side hangs up; a subscribeAll application sees it all (like `events/subscribe-ws`).
#[test]
fn dialplan_dial_makes_a_basic_bridge() {
    let mut h = H::new(
        "[ctx]\nexten => echo,1,NoOp()\n same => n,Echo()\nexten => dial_alice,1,NoOp()\n same => n,Dial(Local/alice@ctx)\n same => n,Hangup()\nexten => alice,1,NoOp()\n same => n,Answer()\n same => n,Wait(1)\n same => n,Hangup()\n",
    );
    h.connect("all", true);
    let r = h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/dial_alice@ctx"),
            ("context", "ctx"),
            ("extension", "echo"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    h.ms(5000);
    let evs = h.for_app("all");
    let count = |ty: &str| evs.iter().filter(|e| e["type"] == ty).count();
    assert_eq!(count("ChannelCreated"), 4);
    assert_eq!(count("ChannelDestroyed"), 4);
    assert_eq!(count("ChannelEnteredBridge"), 2);
    assert_eq!(count("ChannelLeftBridge"), 2);
    assert_eq!(count("BridgeCreated"), 1);
    assert_eq!(count("BridgeDestroyed"), 1);
    assert_eq!(count("StasisStart"), 0, "never in Stasis");
    let bridge = evs
        .iter()
        .find(|e| e["type"] == "BridgeCreated")
        .expect("bridge");
    assert_eq!(bridge["bridge"]["bridge_class"], "basic");
    let dial: Vec<&str> = evs
        .iter()
        .filter(|e| e["type"] == "Dial")
        .filter_map(|e| e["dialstatus"].as_str())
        .collect();
    assert!(dial.contains(&"ANSWER"));
    assert!(evs
        .iter()
        .any(|e| e["type"] == "Dial" && e.get("caller").is_some()));
    let inuse = evs
        .iter()
        .filter(|e| {
            e["device_state"]["name"] == "Local/dial_alice@ctx"
                && e["device_state"]["state"] == "INUSE"
        })
        .count();
    assert_eq!(inuse, 2);
    assert!(h.sim.channel_ids().is_empty() && h.sim.bridge_ids().is_empty());
}

/// StasisBroadcast offers a call to the applications; the first claim wins.
#[test]
fn stasis_broadcast_and_claim() {
    let mut h = H::new("[ctx]\nexten => s,1,NoOp()\n same => n,StasisBroadcast(5000)\n same => n,Hangup()\n[echo]\nexten => s,1,Answer()\n same => n,Echo()\n");
    h.connect("one", false);
    h.connect("two", false);
    h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/s@ctx"),
            ("context", "echo"),
            ("extension", "s"),
        ],
        None,
    );
    h.ms(10);
    let offers: Vec<&Outgoing> = h
        .events
        .iter()
        .filter(|o| o.event["type"] == "CallBroadcast")
        .collect();
    assert_eq!(offers.len(), 2);
    let chan = offers[0].event["channel"]["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        h.req(
            "POST",
            "events/claim",
            &[("channelId", &chan), ("application", "one")],
            None
        )
        .status,
        204
    );
    assert_eq!(
        h.req(
            "POST",
            "events/claim",
            &[("channelId", &chan), ("application", "two")],
            None
        )
        .status,
        409
    );
    assert!(h
        .events
        .iter()
        .any(|o| o.app == "one" && o.event["type"] == "StasisStart"));
    assert!(!h
        .events
        .iter()
        .any(|o| o.app == "two" && o.event["type"] == "StasisStart"));
    // unclaimed: STASISSTATUS=TIMEOUT and the dialplan goes on
    h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/s@ctx"),
            ("context", "echo"),
            ("extension", "s"),
        ],
        None,
    );
    h.ms(6000);
    assert_eq!(
        h.sim.channel_ids().len(),
        2,
        "the claimed call and its other half remain"
    );
}

/// Ring on a channel that is not up indicates ringing (state Ringing).
#[test]
fn ring_changes_state_of_an_unanswered_channel() {
    let mut h = H::new("");
    h.connect("app", false);
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.events.clear();
    assert_eq!(
        h.req("POST", &format!("channels/{id}/ring"), &[], None)
            .status,
        204
    );
    assert_eq!(
        h.req("GET", &format!("channels/{id}"), &[], None)
            .body_json()["state"],
        "Ringing"
    );
    assert_eq!(
        sigs(&h.for_app("app"), |_| true),
        vec!["ChannelStateChange channel.state=Ringing"]
    );
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    assert_eq!(
        h.req("GET", &format!("channels/{id}"), &[], None)
            .body_json()["state"],
        "Up"
    );
}

/// Early media and transfer progress (Asterisk 20+): `progress` and `transfer_progress`
/// on a channel in Stasis answer 204 (no state change: the call is not answered), as
/// Asterisk's routes have them; `transfer_progress` needs `states`; a channel not in Stasis
/// answers 409, an unknown one 404.
#[test]
fn progress_and_transfer_progress_are_answered() {
    let mut h = H::new("[conformance]\nexten => wait,1,Answer()\n same => n,Wait(600)\n");
    h.connect("app", false);
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.events.clear();
    let progress = h.req("POST", &format!("channels/{id}/progress"), &[], None);
    assert_eq!(progress.status, 204, "{:?}", progress.body_json());
    assert_eq!(
        h.req("GET", &format!("channels/{id}"), &[], None)
            .body_json()["state"],
        "Ring"
    );
    assert!(h.for_app("app").is_empty(), "{:?}", h.events);
    let path = format!("channels/{id}/transfer_progress");
    assert_eq!(h.req("POST", &path, &[], None).status, 400);
    // The four states of Asterisk's transfer handling, each a NOTIFY to the phone.
    for state in [
        "channel_progress",
        "channel_answered",
        "channel_unavailable",
        "channel_declined",
    ] {
        let r = h.req("POST", &path, &[("states", state)], None);
        assert_eq!(r.status, 204, "{state}: {:?}", r.body_json());
    }
    let r = h.req("POST", &path, &[("states", "channel_ringing")], None);
    assert_eq!(r.status, 400);
    assert_eq!(
        h.req("POST", "channels/nope/progress", &[], None).status,
        404
    );
    assert_eq!(
        h.req(
            "POST",
            "channels/nope/transfer_progress",
            &[("states", "channel_answered")],
            None
        )
        .status,
        404
    );
    // Out of Stasis (in the dialplan): 409.
    h.req(
        "POST",
        &format!("channels/{id}/continue"),
        &[
            ("context", "conformance"),
            ("extension", "wait"),
            ("priority", "1"),
        ],
        None,
    );
    assert_eq!(
        h.req("POST", &format!("channels/{id}/progress"), &[], None)
            .status,
        409
    );
    assert_eq!(
        h.req("POST", &path, &[("states", "channel_answered")], None)
            .status,
        409
    );
}

/// Bridge recordings, cancelling a live recording, and a channel hanging up during the beep.
#[test]
fn bridge_recording_cancel_and_failed_recording() {
    let mut h = H::new("");
    h.connect("app", false);
    let a = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    let b = h.sim.place_call(h.now, PlaceCall::new("PJSIP/bob", "app"));
    h.pump();
    h.req("POST", "bridges/conf", &[("type", "mixing")], None);
    for c in [&a, &b] {
        h.req("POST", &format!("channels/{c}/answer"), &[], None);
        assert_eq!(
            h.req("POST", "bridges/conf/addChannel", &[("channel", c)], None)
                .status,
            204
        );
    }
    let r = h.req(
        "POST",
        "bridges/conf/record",
        &[("name", "conf-rec"), ("format", "wav")],
        None,
    );
    assert_eq!(r.body_json()["target_uri"], "bridge:conf");
    h.ms(3000);
    assert_eq!(
        h.req("POST", "recordings/live/conf-rec/stop", &[], None)
            .status,
        204
    );
    let fin = h
        .events
        .iter()
        .find(|o| o.event["type"] == "RecordingFinished")
        .expect("finished");
    assert_eq!(fin.event["recording"]["duration"], 2);
    assert_eq!(
        h.req("GET", "recordings/stored/conf-rec", &[], None).status,
        200
    );
    // cancel: no stored recording (a channel out of the bridge: a bridged one cannot be
    // recorded)
    h.req(
        "POST",
        "bridges/conf/removeChannel",
        &[("channel", &a)],
        None,
    );
    h.req(
        "POST",
        &format!("channels/{a}/record"),
        &[("name", "gone"), ("format", "wav")],
        None,
    );
    h.ms(500);
    assert_eq!(
        h.req("DELETE", "recordings/live/gone", &[], None).status,
        204
    );
    assert_eq!(
        h.req("GET", "recordings/stored/gone", &[], None).status,
        404
    );
    // errors
    let r = h.req(
        "POST",
        &format!("channels/{a}/record"),
        &[("name", "x"), ("format", "grue")],
        None,
    );
    assert_eq!(r.status, 422);
    let r = h.req(
        "POST",
        &format!("channels/{a}/record"),
        &[("format", "wav")],
        None,
    );
    assert_eq!(r.status, 400);
}

/// `POST playbacks/{id}/control` follows `res_stasis_playback`'s operations table: the
/// operations are the API description's five (`stop` is `DELETE playbacks/{id}`: 400); a
/// queued playback takes only `restart` (nothing to do), a paused one only `pause` (nothing
/// to do) and `unpause`; the others answer 409 "Can only OP while media is playing" and change
/// nothing. (A queued playback stopped: `a_stopped_queued_playback_finishes_at_its_turn`.)
#[test]
fn playback_control_follows_the_operations_table() {
    let mut h = H::new("");
    h.connect("app", false);
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    for (pb, media) in [("first", "sound:silence/10"), ("next", "sound:silence/10")] {
        let path = format!("channels/{id}/play/{pb}");
        assert_eq!(h.req("POST", &path, &[("media", media)], None).status, 201);
    }
    let control = |h: &mut H, pb: &str, op: &str| {
        let r = h.req(
            "POST",
            &format!("playbacks/{pb}/control"),
            &[("operation", op)],
            None,
        );
        (r.status, r.body_json()["message"].clone())
    };
    let refused = |op: &str| (409, json!(format!("Can only {op} while media is playing")));
    assert_eq!(control(&mut h, "first", "stop").0, 400);
    // Queued.
    assert_eq!(control(&mut h, "next", "restart").0, 204);
    for op in ["pause", "unpause", "forward", "reverse"] {
        assert_eq!(control(&mut h, "next", op), refused(op), "queued {op}");
    }
    // Paused.
    h.ms(2000);
    assert_eq!(control(&mut h, "first", "pause").0, 204);
    assert_eq!(control(&mut h, "first", "pause").0, 204);
    for op in ["restart", "forward", "reverse"] {
        assert_eq!(control(&mut h, "first", op), refused(op), "paused {op}");
    }
    let pos = |h: &mut H| h.req("GET", "playbacks/first", &[], None).body_json()["state"].clone();
    assert_eq!(pos(&mut h), "paused");
    assert_eq!(control(&mut h, "first", "unpause").0, 204);
    assert_eq!(pos(&mut h), "playing");
    // Playing: every operation.
    for op in ["unpause", "forward", "reverse", "restart"] {
        assert_eq!(control(&mut h, "first", op).0, 204, "playing {op}");
    }
}

/// A `stop` or `cancel` of a recording that has not started (queued behind the beep here)
/// is disregarded, as in Asterisk's `res_stasis_recording` (`recording_disregard`): 204, the
/// state turns `canceled`, no event; the recording then starts anyway and runs to its own
/// end (`maxDurationSeconds` here), stored as usual. A second `stop` while it is `canceled`
/// has no operation: 409, as pause and mute before it starts.
#[test]
fn stop_or_cancel_before_a_recording_starts_is_disregarded() {
    let mut h = H::new("");
    h.connect("app", false);
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    for op in ["stop", "cancel"] {
        h.events.clear();
        let name = format!("early-{op}");
        let q = [
            ("name", name.as_str()),
            ("format", "wav"),
            ("beep", "true"),
            ("maxDurationSeconds", "3"),
        ];
        let r = h.req("POST", &format!("channels/{id}/record"), &q, None);
        assert_eq!(r.status, 201);
        assert_eq!(r.body_json()["state"], "queued");
        let live = format!("recordings/live/{name}");
        let r = match op {
            "stop" => h.req("POST", &format!("{live}/stop"), &[], None),
            _ => h.req("DELETE", &live, &[], None),
        };
        assert_eq!(r.status, 204, "{op}");
        assert_eq!(
            h.req("GET", &live, &[], None).body_json()["state"],
            "canceled"
        );
        for again in [
            h.req("POST", &format!("{live}/stop"), &[], None),
            h.req("DELETE", &live, &[], None),
            h.req("POST", &format!("{live}/pause"), &[], None),
            h.req("POST", &format!("{live}/mute"), &[], None),
        ] {
            assert_eq!(again.status, 409, "{op}");
            assert_eq!(again.body_json()["message"], "Recording not in session");
        }
        let types = |h: &H| -> Vec<String> {
            h.events
                .iter()
                .filter_map(|o| o.event["type"].as_str())
                .filter(|t| t.starts_with("Recording"))
                .map(str::to_owned)
                .collect()
        };
        assert!(types(&h).is_empty(), "{op}: {:?}", types(&h));
        h.ms(1000);
        assert_eq!(types(&h), ["RecordingStarted"], "{op}");
        assert_eq!(
            h.req("GET", &live, &[], None).body_json()["state"],
            "recording"
        );
        h.ms(3000);
        assert_eq!(types(&h), ["RecordingStarted", "RecordingFinished"], "{op}");
        let fin = h
            .events
            .iter()
            .find(|o| o.event["type"] == "RecordingFinished")
            .map(|o| o.event["recording"].clone());
        assert_eq!(
            fin.as_ref().map(|r| r["state"].clone()),
            Some(json!("done"))
        );
        assert_eq!(fin.map(|r| r["duration"].clone()), Some(json!(3)));
        assert_eq!(h.req("GET", &live, &[], None).status, 404);
        let stored = format!("recordings/stored/{name}");
        assert_eq!(h.req("GET", &stored, &[], None).status, 200, "{op}");
    }
}

/// A channel runs its commands one after the other (`res_stasis`'s control queue): a
/// `record` issued while a prompt plays starts once the prompt is over (queued until then: a
/// `stop` meanwhile is disregarded), and a playback issued while the channel records waits
/// for the recording to end. (The greeting-then-record of a voicemail sent back to back.)
#[test]
fn a_channel_records_after_its_prompt_and_plays_after_its_recording() {
    let mut h = H::new("");
    h.connect("app", false);
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    h.events.clear();
    let play = |h: &mut H, pb: &str, media: &str| {
        let r = h.req(
            "POST",
            &format!("channels/{id}/play/{pb}"),
            &[("media", media)],
            None,
        );
        assert_eq!(r.status, 201);
    };
    play(&mut h, "greeting", "sound:silence/2");
    let q = [
        ("name", "msg"),
        ("format", "wav"),
        ("maxDurationSeconds", "3"),
    ];
    assert_eq!(
        h.req("POST", &format!("channels/{id}/record"), &q, None)
            .status,
        201
    );
    h.ms(1000);
    assert_eq!(
        h.req("GET", "recordings/live/msg", &[], None).body_json()["state"],
        "queued"
    );
    h.ms(1500);
    // The greeting is over; then the recording starts. A playback now waits for it.
    play(&mut h, "bye", "sound:beep");
    assert_eq!(
        h.req("GET", "playbacks/bye", &[], None).body_json()["state"],
        "queued"
    );
    h.ms(4000);
    let order: Vec<String> = h
        .events
        .iter()
        .filter_map(|o| {
            let t = o.event["type"].as_str()?;
            let what = o.event["playback"]["id"]
                .as_str()
                .or(o.event["recording"]["name"].as_str())?;
            (t.starts_with("Playback") || t.starts_with("Recording")).then(|| format!("{t} {what}"))
        })
        .collect();
    assert_eq!(
        order,
        [
            "PlaybackStarted greeting",
            "PlaybackFinished greeting",
            "RecordingStarted msg",
            "RecordingFinished msg",
            "PlaybackStarted bye",
            "PlaybackFinished bye",
        ]
    );
    let fin = h
        .events
        .iter()
        .find(|o| o.event["type"] == "RecordingFinished")
        .map(|o| o.event["recording"]["duration"].clone());
    assert_eq!(fin, Some(json!(3)));
}

/// Recording a channel that is in a bridge: Asterisk accepts the request (201) and fails the
/// recording when it would start (`RecordingFailed`, cause "Cannot record channel while in
/// bridge"; `record_file` in `res_stasis_recording`): a bridged call is recorded through its
/// bridge (or a snoop). Nothing is stored, and the channel can be recorded once out.
#[test]
fn recording_a_bridged_channel_fails_when_it_would_start() {
    let mut h = H::new("");
    h.connect("app", false);
    let a = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.req("POST", &format!("channels/{a}/answer"), &[], None);
    h.req("POST", "bridges/call", &[("type", "mixing")], None);
    h.req("POST", "bridges/call/addChannel", &[("channel", &a)], None);
    h.events.clear();
    let q = [("name", "in-bridge"), ("format", "wav")];
    let r = h.req("POST", &format!("channels/{a}/record"), &q, None);
    assert_eq!(r.status, 201);
    h.ms(500);
    let ev: Vec<Value> = h
        .events
        .iter()
        .filter(|o| {
            o.event["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("Recording"))
        })
        .map(|o| o.event.clone())
        .collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["type"], "RecordingFailed");
    assert_eq!(ev[0]["recording"]["state"], "failed");
    assert_eq!(
        ev[0]["recording"]["cause"],
        "Cannot record channel while in bridge"
    );
    assert_eq!(
        h.req("GET", "recordings/live/in-bridge", &[], None).status,
        404
    );
    assert_eq!(
        h.req("GET", "recordings/stored/in-bridge", &[], None)
            .status,
        404
    );
    // The bridge itself records.
    let q = [("name", "the-bridge"), ("format", "wav")];
    assert_eq!(h.req("POST", "bridges/call/record", &q, None).status, 201);
    h.ms(500);
    assert_eq!(
        h.req("GET", "recordings/live/the-bridge", &[], None)
            .body_json()["state"],
        "recording"
    );
    h.req("POST", "recordings/live/the-bridge/stop", &[], None);
    // Out of the bridge, the channel records.
    h.req(
        "POST",
        "bridges/call/removeChannel",
        &[("channel", &a)],
        None,
    );
    let q = [("name", "out"), ("format", "wav")];
    let r = h.req("POST", &format!("channels/{a}/record"), &q, None);
    assert_eq!(r.status, 201);
    h.ms(500);
    assert_eq!(
        h.req("GET", "recordings/live/out", &[], None).body_json()["state"],
        "recording"
    );
}

/// A SIP REFER handed to ARI (`Sim::refer`): `ChannelTransfer` to the application, shaped
/// as the API description's `ChannelTransfer`/`ReferTo`/`ReferredBy`: a blind transfer names
/// the requested destination and the referring channel with its bridge and peer; an
/// attended one names the replaced call by its Call-ID (`protocol_id`) and resolves its
/// channel, bridge and peer. Nothing else happens (the application carries it out). A
/// channel that is not SIP, or unknown, is refused.
#[test]
fn refer_emits_channel_transfer_shaped_like_asterisk() {
    let mut h = H::new("");
    h.connect("app", false);
    let alice = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    let bob = h.sim.place_call(h.now, PlaceCall::new("PJSIP/bob", "app"));
    let carol = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/carol", "app"));
    h.pump();
    h.req("POST", "bridges/b1", &[("type", "mixing")], None);
    h.req("POST", "bridges/b2", &[("type", "mixing")], None);
    for (b, c) in [("b1", &alice), ("b1", &bob), ("b2", &carol)] {
        h.req("POST", &format!("channels/{c}/answer"), &[], None);
        let r = h.req(
            "POST",
            &format!("bridges/{b}/addChannel"),
            &[("channel", c)],
            None,
        );
        assert_eq!(r.status, 204);
    }
    h.events.clear();
    let blind = Refer::Blind {
        destination: "2000".to_string(),
    };
    h.sim.refer(h.now, &bob, blind).unwrap();
    h.pump();
    let ev = h.for_app("app");
    assert_eq!(ev.len(), 1, "{ev:?}");
    let t = &ev[0];
    assert_eq!(t["type"], "ChannelTransfer");
    assert_eq!(
        t["refer_to"]["requested_destination"],
        json!({"destination": "2000"})
    );
    assert!(t["refer_to"].get("destination_channel").is_none(), "{t}");
    assert_eq!(t["referred_by"]["source_channel"]["id"], json!(bob));
    assert_eq!(t["referred_by"]["connected_channel"]["id"], json!(alice));
    assert_eq!(t["referred_by"]["bridge"]["id"], "b1");
    assert!(
        t["timestamp"].is_string() && t["asterisk_id"].is_string(),
        "{t}"
    );

    // Attended: carol's phone (bob's other call in this story) replaces bob's call.
    h.events.clear();
    let carol_call_id = h
        .req("GET", &format!("channels/{carol}"), &[], None)
        .body_json()["protocol_id"]
        .clone();
    let attended = Refer::Attended {
        replaces: carol.clone(),
    };
    h.sim.refer(h.now, &bob, attended).unwrap();
    h.pump();
    let ev = h.for_app("app");
    assert_eq!(ev.len(), 1, "{ev:?}");
    let t = &ev[0];
    assert_eq!(
        t["refer_to"]["requested_destination"]["protocol_id"],
        carol_call_id
    );
    assert_eq!(t["refer_to"]["destination_channel"]["id"], json!(carol));
    assert_eq!(t["refer_to"]["bridge"]["id"], "b2");
    assert!(
        t["refer_to"].get("connected_channel").is_none(),
        "alone in b2: {t}"
    );
    assert_eq!(t["referred_by"]["source_channel"]["id"], json!(bob));
    // Nothing moved.
    assert_eq!(
        h.req("GET", "bridges/b1", &[], None).body_json()["channels"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Refused: unknown channel, a channel that is not SIP.
    let again = Refer::Blind {
        destination: "2000".to_string(),
    };
    assert!(h.sim.refer(h.now, "nope", again.clone()).is_err());
    let snoop = h.req(
        "POST",
        &format!("channels/{alice}/snoop"),
        &[("app", "app"), ("spy", "in")],
        None,
    );
    let snoop = snoop.body_json()["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(h.sim.refer(h.now, &snoop, again).is_err());
}

/// Replays every REST request of the fixture script (run 2, in order, ids included)
/// against the simulation: same status for every request, and for JSON answers the same
/// keys (values differ: timestamps, sequence numbers).
#[test]
fn fixture_rest_script_replays_with_the_same_answers() {
    let text = std::fs::read_to_string(REST).expect("rest.jsonl");
    let mut h = H::like_recorded(FIXTURE_DIALPLAN);
    h.sim.cfg.unknown_extension_answers = false;
    for app in ["hello", "test"] {
        h.connect(app, false);
    }
    h.connect("watcher", true);
    // run 2 started with the recordings run 1 left behind
    let seed = h
        .sim
        .place_call(h.now, PlaceCall::new("Local/seed@wait", "test"));
    h.pump();
    h.req("POST", &format!("channels/{seed}/answer"), &[], None);
    for name in ["cap-rec1", "sub/dir-rec"] {
        h.req(
            "POST",
            &format!("channels/{seed}/record"),
            &[("name", name), ("format", "wav")],
            None,
        );
        h.ms(100);
        h.req(
            "POST",
            &format!("recordings/live/{}/stop", name.replace('/', "%2F")),
            &[],
            None,
        );
    }
    h.req("DELETE", &format!("channels/{seed}"), &[], None);
    h.ms(100);
    assert!(h.sim.channel_ids().is_empty());
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for d in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if d["run"] != json!(2) {
            continue;
        }
        let status = d["status"].as_u64().unwrap_or(0);
        if status == 401 {
            continue; // authentication is the server's
        }
        let method = d["method"].as_str().unwrap_or("GET");
        let path = d["path"].as_str().unwrap_or("");
        let q: Vec<(String, String)> = d["query"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(|s| s.to_string())
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let qr: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = if d["body"].is_null() {
            None
        } else {
            Some(d["body"].clone())
        };
        // the script waited for the IVR's playback to finish before recording (the channel
        // runs its commands in order: a record sent earlier would start after it)
        if method == "POST" && path.ends_with("/record") && d["scenario"] == "record" {
            h.ms(3000);
        }
        // the script waited for the recording to finish before looking at stored ones
        if path == "recordings/stored" && d["scenario"] == "record" {
            h.ms(2500);
        }
        let r = h.req_ro(method, path, &qr, body, status == 403);
        h.ms(20);
        checked += 1;
        let want: Value =
            serde_json::from_str(d["response"].as_str().unwrap_or("")).unwrap_or(Value::Null);
        let got = r.body_json();
        let keys = |v: &Value| -> Vec<String> {
            match v {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => a
                    .first()
                    .map(|x| {
                        x.as_object()
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default()
                    })
                    .unwrap_or_default(),
                _ => Vec::new(),
            }
        };
        let mut kw = keys(&want);
        let mut kg = keys(&got);
        kw.sort();
        kg.sort();
        let same_message = want.get("message").is_none() || want["message"] == got["message"];
        if r.status as u64 != status || kw != kg || !same_message {
            mismatches.push(format!(
                "{method} {path}: want {status} {want}, got {} {got}",
                r.status
            ));
        }
    }
    assert!(checked > 60, "{checked}");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// A Dial() whose callee never answers ends with DIALSTATUS and the caller's dialplan goes
/// on; a dialplan that dials itself forever runs out of channels instead of memory.
#[test]
fn dial_failures_and_runaway_dialplans() {
    let mut h = H::new(
        "[ctx]\nexten => caller,1,Dial(Local/busy@ctx)\n same => n,Set(GLOBAL(RESULT)=${DIALSTATUS})\n same => n,Hangup()\nexten => busy,1,Hangup(17)\nexten => loop,1,Dial(Local/loop@ctx)\n[echo]\nexten => s,1,Answer()\n same => n,Echo()\n",
    );
    h.sim.cfg.max_channels = 300;
    h.connect("app", true);
    h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/caller@ctx"),
            ("context", "echo"),
            ("extension", "s"),
        ],
        None,
    );
    h.ms(2000);
    let r = h.req("GET", "asterisk/variable", &[("variable", "RESULT")], None);
    assert_eq!(r.body_json(), json!({"value": "BUSY"}));
    assert!(h.sim.channel_ids().is_empty());
    h.events.clear();
    h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/loop@ctx"),
            ("context", "echo"),
            ("extension", "s"),
        ],
        None,
    );
    h.ms(10);
    let created = h
        .events
        .iter()
        .filter(|o| o.event["type"] == "ChannelCreated")
        .count();
    assert!((290..=302).contains(&created), "{created}");
    // at the cap the last Dial() fails and the whole chain unwinds
    h.ms(5000);
    assert!(h.sim.channel_ids().is_empty());
    h.sim.cfg.max_channels = 0;
    let r = h.req(
        "POST",
        "channels",
        &[("endpoint", "Local/x@echo"), ("app", "app")],
        None,
    );
    assert_eq!(
        (r.status, r.body_json()),
        (500, json!({"message": "Allocation failed"}))
    );
}

/// Local channels into an extension that does not exist, as the recording has them:
/// `channels/create` + `dial` (the created channel leaves Stasis, cause 16) and an
/// originate into `hello` (both halves destroyed with cause 0).
#[test]
fn failed_local_dials_match_fixture() {
    let mut h = H::new(FIXTURE_DIALPLAN);
    h.sim.cfg.unknown_extension_answers = false;
    for app in ["hello", "test"] {
        h.connect(app, false);
    }
    h.connect("watcher", true);
    let r = h.req(
        "POST",
        "channels/create",
        &[
            ("endpoint", "Local/2@wait"),
            ("app", "test"),
            ("channelId", "cap3-f19fcd6d"),
        ],
        None,
    );
    assert_eq!(
        strip_times(r.body_json()),
        strip_times(fixture_response(2, "POST", "channels/create"))
    );
    h.ms(5);
    assert_eq!(
        h.req(
            "POST",
            "channels/cap3-f19fcd6d/dial",
            &[("timeout", "5")],
            None
        )
        .status,
        204
    );
    h.ms(50);
    let r = h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/1@tostasis"),
            ("app", "hello"),
            ("channelId", "cap-hello"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    h.ms(50);
    assert_eq!(h.req("DELETE", "channels/cap-hello", &[], None).status, 404);
    let fx = fixture(2, "test,hello");
    let fw = fixture(2, "watcher");
    let mine = h
        .events
        .iter()
        .filter(|o| o.app != "watcher")
        .map(|o| o.event.clone())
        .collect::<Vec<_>>();
    for id in [
        "cap3-f19fcd6d",
        "cap3-f19fcd6d;2",
        "cap-hello",
        "cap-hello;2",
    ] {
        let f = |e: &Value| concerns(e, id);
        assert_eq!(sigs(&mine, f), sigs(&fx, f), "{id}");
        assert_eq!(sigs(&h.for_app("watcher"), f), sigs(&fw, f), "watcher {id}");
    }
    let dev = |evs: &[Value]| -> Vec<String> {
        evs.iter()
            .filter(|e| e["type"] == "DeviceStateChanged")
            .filter(|e| {
                ["Local/2@wait", "Local/1@tostasis"]
                    .contains(&e["device_state"]["name"].as_str().unwrap_or(""))
            })
            .map(|e| {
                format!(
                    "{} {}",
                    e["device_state"]["name"], e["device_state"]["state"]
                )
            })
            .collect()
    };
    assert_eq!(dev(&h.for_app("watcher")), dev(&fw));
}

/// Originating to a simulated SIP phone: it rings, answers after `sip_answer_delay`, and
/// the channel enters the application.
#[test]
fn originate_to_sip_phone_rings_then_answers() {
    let mut h = H::new("");
    h.connect("app", false);
    let r = h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "PJSIP/bob"),
            ("app", "app"),
            ("appArgs", "out"),
            ("channelId", "o1"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_json()["state"], "Down");
    h.ms(2000);
    assert_eq!(
        sigs(&h.for_app("app"), |_| true),
        vec![
            "Dial dialstatus= peer.state=Down",
            "ChannelStateChange channel.state=Ringing",
            "Dial dialstatus=RINGING peer.state=Ringing",
            "ChannelStateChange channel.state=Up",
            "Dial dialstatus=ANSWER peer.state=Up",
            "ChannelVarset variable=STASISSTATUS channel.state=Up",
            "StasisStart args=[\"out\"] channel.state=Up",
        ]
    );
    let ep = h.req("GET", "endpoints/PJSIP/bob", &[], None).body_json();
    assert_eq!(ep["channel_ids"], json!(["o1"]));
    // nobody answers within the timeout: NOANSWER, the channel goes away
    h.sim.cfg.sip_answer_delay = Duration::from_secs(60);
    h.events.clear();
    h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "PJSIP/carol"),
            ("app", "app"),
            ("timeout", "5"),
            ("channelId", "o2"),
        ],
        None,
    );
    h.ms(6000);
    let got = sigs(&h.for_app("app"), |_| true);
    assert!(
        got.contains(&"Dial dialstatus=NOANSWER peer.state=Ringing".to_string()),
        "{got:?}"
    );
    assert_eq!(h.req("GET", "channels/o2", &[], None).status, 404);
}

/// `move` hands a channel to another application; to an unknown one it stays and its
/// application gets ApplicationMoveFailed. A claimed broadcast tells the losers.
#[test]
fn move_between_apps_and_broadcast_claimed() {
    let mut h = H::new("[ctx]\nexten => s,1,NoOp()\n same => n,StasisBroadcast(5000)\n[echo]\nexten => s,1,Answer()\n same => n,Echo()\n");
    h.connect("a", false);
    h.connect("b", false);
    let id = h.sim.place_call(h.now, PlaceCall::new("PJSIP/alice", "a"));
    h.pump();
    h.events.clear();
    assert_eq!(
        h.req(
            "POST",
            &format!("channels/{id}/move"),
            &[("app", "nope"), ("appArgs", "x")],
            None
        )
        .status,
        204
    );
    let mf = &h.events[0];
    assert_eq!(
        (mf.app.as_str(), mf.event["type"].as_str()),
        ("a", Some("ApplicationMoveFailed"))
    );
    assert_eq!(
        (mf.event["destination"].clone(), mf.event["args"].clone()),
        (json!("nope"), json!(["x"]))
    );
    h.events.clear();
    assert_eq!(
        h.req(
            "POST",
            &format!("channels/{id}/move"),
            &[("app", "b"), ("appArgs", "1,2")],
            None
        )
        .status,
        204
    );
    let got: Vec<String> = h
        .events
        .iter()
        .map(|o| format!("{} {}", o.app, o.event["type"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(got, vec!["a StasisEnd", "b StasisStart"]);
    assert_eq!(h.events[1].event["args"], json!(["1", "2"]));
    // Moved inside the same Stasis(): the dialplan application still names the first app.
    let dialplan = &h.events[1].event["channel"]["dialplan"];
    assert_eq!(
        (dialplan["app_name"].clone(), dialplan["app_data"].clone()),
        (json!("Stasis"), json!("a"))
    );
    let ch = h
        .req("GET", &format!("channels/{id}"), &[], None)
        .body_json();
    assert_eq!(ch["dialplan"]["app_data"], json!("a"));
    // broadcast: the loser hears CallClaimed
    h.events.clear();
    h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "Local/s@ctx"),
            ("context", "echo"),
            ("extension", "s"),
        ],
        None,
    );
    h.ms(10);
    let offer = h
        .events
        .iter()
        .find(|o| o.event["type"] == "CallBroadcast")
        .map(|o| o.event.clone())
        .expect("offer");
    assert!(offer.get("caller").is_some() && offer["called"] == "s");
    let chan = offer["channel"]["id"].as_str().unwrap_or("").to_string();
    h.req(
        "POST",
        "events/claim",
        &[("channelId", &chan), ("application", "b")],
        None,
    );
    let claimed: Vec<&Outgoing> = h
        .events
        .iter()
        .filter(|o| o.event["type"] == "CallClaimed")
        .collect();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (
            claimed[0].app.as_str(),
            claimed[0].event["winner_app"].as_str()
        ),
        ("a", Some("b"))
    );
}

/// Deleting a bridge that still holds channels, as recorded from real Asterisk
/// (`ari-fixtures/asterisk-20` run 1 and `asterisk-master` run 2: `DELETE /bridges/{id}` with
/// a channel still in it): each channel leaves (`ChannelLeftBridge`, to the application of
/// the channels), then the bridge is destroyed, but `BridgeDestroyed` reaches only the
/// applications still subscribed to the bridge: one subscribed to it explicitly (as
/// Asterisk's own `bridges/delete` test does) and subscribeAll watchers. The application that
/// only followed the bridge through its channels is not: taking them out dropped that
/// subscription, so it gets no `BridgeDestroyed`.
#[test]
fn deleting_a_bridge_with_channels_in_it_destroys_it_for_its_subscribers_only() {
    let mut h = H::new("[ctx]\nexten => s,1,Answer()\n same => n,Echo()\n");
    h.connect("test", false);
    h.connect("sub", false);
    h.connect("watcher", true);
    for id in ["c1", "c2"] {
        let r = h.req(
            "POST",
            "channels",
            &[
                ("endpoint", "Local/s@ctx"),
                ("app", "test"),
                ("channelId", id),
            ],
            None,
        );
        assert_eq!(r.status, 200);
    }
    h.ms(100);
    assert_eq!(h.req("POST", "bridges/b1", &[], None).status, 200);
    for id in ["c1", "c2"] {
        let r = h.req("POST", "bridges/b1/addChannel", &[("channel", id)], None);
        assert_eq!(r.status, 204);
    }
    let r = h.req(
        "POST",
        "applications/sub/subscription",
        &[("eventSource", "bridge:b1")],
        None,
    );
    assert_eq!(r.status, 200);
    h.events.clear();
    assert_eq!(h.req("DELETE", "bridges/b1", &[], None).status, 204);
    h.ms(100);
    let ends = |app: &str| -> Vec<String> {
        h.for_app(app)
            .iter()
            .filter(|f| f["bridge"]["id"] == "b1")
            .filter_map(|f| match f["type"].as_str() {
                Some("ChannelLeftBridge") => Some(format!(
                    "left:{}",
                    f["channel"]["id"].as_str().unwrap_or("")
                )),
                Some("BridgeDestroyed") => Some("destroyed".to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(ends("test"), vec!["left:c1", "left:c2"]);
    assert_eq!(ends("sub"), vec!["left:c1", "left:c2", "destroyed"]);
    assert_eq!(ends("watcher"), vec!["left:c1", "left:c2", "destroyed"]);
    // The channels survive the bridge.
    for id in ["c1", "c2"] {
        assert_eq!(
            h.req("GET", &format!("channels/{id}"), &[], None).status,
            200
        );
    }
    assert_eq!(h.req("GET", "bridges/b1", &[], None).status, 404);
}

/// The events a test saw of recordings and playbacks, as `"Type name-or-id"`.
fn media_events(h: &H) -> Vec<String> {
    h.events
        .iter()
        .filter_map(|o| {
            let t = o.event["type"].as_str()?;
            let what = o.event["playback"]["id"]
                .as_str()
                .or(o.event["recording"]["name"].as_str())?;
            (t.starts_with("Playback") || t.starts_with("Recording")).then(|| format!("{t} {what}"))
        })
        .collect()
}

/// An answered call of the application `app` on PJSIP/alice, events cleared.
fn answered(h: &mut H) -> String {
    h.connect("app", false);
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    h.events.clear();
    id
}

/// `RecordingStarted` comes when the `record` command runs, before the beep: Asterisk's
/// `record_file` (`res_stasis_recording.c`) publishes the `recording` state and then calls
/// `ast_play_and_record_full`, which plays the beep. The recorded fixtures agree: with
/// `beep=true` their `RecordingStarted` → `RecordingFinished` lasts 4.445 s, 0.44 s (the
/// beep) more than the same recording without it (4.005 s). The beep is not recorded:
/// `maxDurationSeconds` counts from its end. A `terminateOn` key during the beep (played
/// with no escape digits) does not end it; one after it does.
#[test]
fn recording_started_comes_before_the_beep() {
    let mut h = H::new("");
    let id = answered(&mut h);
    let q = [
        ("name", "vm"),
        ("format", "wav"),
        ("beep", "true"),
        ("maxDurationSeconds", "1"),
    ];
    assert_eq!(
        h.req("POST", &format!("channels/{id}/record"), &q, None)
            .status,
        201
    );
    h.ms(100);
    assert_eq!(media_events(&h), ["RecordingStarted vm"]);
    assert_eq!(
        h.req("GET", "recordings/live/vm", &[], None).body_json()["state"],
        "recording"
    );
    // 20 ms to run the command, 450 ms of beep, then 1 s recorded.
    h.ms(1300);
    assert_eq!(media_events(&h), ["RecordingStarted vm"]);
    h.ms(100);
    assert_eq!(
        media_events(&h),
        ["RecordingStarted vm", "RecordingFinished vm"]
    );
    let fin = h
        .events
        .iter()
        .find(|o| o.event["type"] == "RecordingFinished")
        .map(|o| o.event["recording"]["duration"].clone());
    assert_eq!(fin, Some(json!(1)));

    // terminateOn: the key during the beep is not taken; the one after it is.
    h.events.clear();
    let q = [
        ("name", "vm2"),
        ("format", "wav"),
        ("beep", "true"),
        ("terminateOn", "#"),
    ];
    h.req("POST", &format!("channels/{id}/record"), &q, None);
    h.ms(50);
    h.sim.send_dtmf(h.now, &id, "#").expect("dtmf");
    h.ms(400);
    assert_eq!(media_events(&h), ["RecordingStarted vm2"]);
    h.sim.send_dtmf(h.now, &id, "#").expect("dtmf");
    h.ms(400);
    assert_eq!(
        media_events(&h),
        ["RecordingStarted vm2", "RecordingFinished vm2"]
    );
}

/// A channel that goes away before its recording's command has run (queued behind a
/// prompt, or not picked up yet) takes the recording with it and nothing is sent: Asterisk
/// flushes the channel's queued commands (`control_flush_queue` in `res_stasis`'s
/// `control.c`: they complete without running), and only `record_file`, the command,
/// publishes recording states. The live recording is gone (404) and nothing is stored. A
/// hangup once it has started (during the beep, here) finishes it as usual.
#[test]
fn a_recording_whose_channel_hangs_up_before_it_starts_sends_nothing() {
    let mut h = H::new("");
    h.connect("app", false);
    for (case, prompt) in [("behind a prompt", true), ("not picked up", false)] {
        let id = h
            .sim
            .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
        h.pump();
        h.req("POST", &format!("channels/{id}/answer"), &[], None);
        h.events.clear();
        if prompt {
            let path = format!("channels/{id}/play/greeting-{id}");
            h.req("POST", &path, &[("media", "sound:silence/2")], None);
        }
        let name = format!("msg-{id}");
        let q = [("name", name.as_str()), ("format", "wav")];
        let r = h.req("POST", &format!("channels/{id}/record"), &q, None);
        assert_eq!(r.status, 201, "{case}");
        if prompt {
            h.ms(1000);
        }
        h.sim.hangup(h.now, &id).expect("hangup");
        h.ms(3000);
        let recs: Vec<String> = media_events(&h)
            .into_iter()
            .filter(|e| e.starts_with("Recording"))
            .collect();
        assert!(recs.is_empty(), "{case}: {recs:?}");
        let live = format!("recordings/live/{name}");
        assert_eq!(h.req("GET", &live, &[], None).status, 404, "{case}");
        let stored = format!("recordings/stored/{name}");
        assert_eq!(h.req("GET", &stored, &[], None).status, 404, "{case}");
    }
    // Started: the hangup during the beep finishes it.
    let id = h
        .sim
        .place_call(h.now, PlaceCall::new("PJSIP/alice", "app"));
    h.pump();
    h.req("POST", &format!("channels/{id}/answer"), &[], None);
    h.events.clear();
    let q = [("name", "beeped"), ("format", "wav"), ("beep", "true")];
    h.req("POST", &format!("channels/{id}/record"), &q, None);
    h.ms(100);
    h.sim.hangup(h.now, &id).expect("hangup");
    h.ms(100);
    assert_eq!(
        media_events(&h),
        ["RecordingStarted beeped", "RecordingFinished beeped"]
    );
}

/// A queued playback stopped (`DELETE playbacks/{id}`) finishes at its turn in the
/// channel's queue, not at once: `res_stasis_playback`'s `playback_cancel` only marks it
/// canceled (204, nothing published); when its command runs, `playback_first_update` sees
/// the mark and publishes it `done` (`PlaybackFinished`, never `PlaybackStarted`), and the
/// next command runs. Meanwhile it reads `done`, a second stop is a no-op (204) and the
/// control operations answer 409.
#[test]
fn a_stopped_queued_playback_finishes_at_its_turn() {
    let mut h = H::new("");
    let id = answered(&mut h);
    for (pb, media) in [
        ("first", "sound:silence/2"),
        ("dropped", "sound:silence/5"),
        ("next", "sound:silence/1"),
    ] {
        let path = format!("channels/{id}/play/{pb}");
        assert_eq!(h.req("POST", &path, &[("media", media)], None).status, 201);
    }
    assert_eq!(h.req("DELETE", "playbacks/dropped", &[], None).status, 204);
    assert_eq!(media_events(&h), ["PlaybackStarted first"]);
    assert_eq!(
        h.req("GET", "playbacks/dropped", &[], None).body_json()["state"],
        "done"
    );
    assert_eq!(h.req("DELETE", "playbacks/dropped", &[], None).status, 204);
    let r = h.req(
        "POST",
        "playbacks/dropped/control",
        &[("operation", "restart")],
        None,
    );
    assert_eq!(r.status, 409);
    h.ms(1000);
    assert_eq!(media_events(&h), ["PlaybackStarted first"]);
    h.ms(2500);
    assert_eq!(
        media_events(&h),
        [
            "PlaybackStarted first",
            "PlaybackFinished first",
            "PlaybackFinished dropped",
            "PlaybackStarted next",
            "PlaybackFinished next",
        ]
    );
    let dropped = h
        .events
        .iter()
        .find(|o| o.event["type"] == "PlaybackFinished" && o.event["playback"]["id"] == "dropped")
        .map(|o| o.event["playback"]["state"].clone());
    assert_eq!(dropped, Some(json!("done")));
    assert_eq!(h.req("GET", "playbacks/dropped", &[], None).status, 404);
}

#[test]
fn originate_app_args_are_split_as_stasis_splits_its_application_data() {
    let mut h = H::new("");
    h.connect("app", false);
    let r = h.req(
        "POST",
        "channels",
        &[
            ("endpoint", "PJSIP/bob"),
            ("app", "app"),
            ("appArgs", r#"a\,b,"c,d",f(x,y),back\\slash,,"#),
            ("channelId", "esc1"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    h.ms(2000);
    let start = h
        .for_app("app")
        .into_iter()
        .find(|e| e["type"] == "StasisStart")
        .expect("StasisStart");
    assert_eq!(
        start["args"],
        json!(["a,b", "c,d", "f(x,y)", r"back\slash", "", ""])
    );
    // The channel's Stasis() data gives the same arguments again (escaped, as a dialplan
    // writes them).
    let ch = h.req("GET", "channels/esc1", &[], None).body_json();
    assert_eq!(
        ch["dialplan"]["app_data"],
        json!(r"app,a\,b,c\,d,f\(x\,y\),back\\slash,,")
    );
    assert_eq!(
        super::stasis_args(r"a\,b,c\,d,f\(x\,y\),back\\slash,,"),
        ["a,b", "c,d", "f(x,y)", r"back\slash", "", ""]
    );
}

/// Playbacks queued (not started) on a call that hangs up. Out of a bridge, Asterisk's
/// Stasis thread runs each queued `play_uri` against the hung-up channel before it leaves
/// (`control_dispatch_all` goes on through the queue): `PlaybackStarted` then
/// `PlaybackFinished` at once, all before `StasisEnd`. In a bridge, the playback is handed to
/// the bridge channel, which frees its queued actions unplayed when it leaves: the queued
/// ones go without any event (the playing one finishes, as in the test suite's
/// `channels/playback/to_channel_in_bridge_hangup`). An application's wait must end either
/// way (the client ends a queued playback's waits with its channel).
#[test]
fn playbacks_queued_at_a_hangup_run_out_of_a_bridge_and_vanish_in_one() {
    let queue = |h: &mut H, id: &str| {
        for (pb, media) in [("first", "sound:silence/5"), ("second", "sound:silence/1")] {
            let path = format!("channels/{id}/play/{pb}");
            assert_eq!(h.req("POST", &path, &[("media", media)], None).status, 201);
        }
    };
    let order = |h: &H| -> Vec<String> {
        h.events
            .iter()
            .filter_map(|o| {
                let t = o.event["type"].as_str()?;
                match o.event["playback"]["id"].as_str() {
                    Some(pb) => Some(format!("{t} {pb}")),
                    None => (t == "StasisEnd").then(|| t.to_string()),
                }
            })
            .collect()
    };

    let mut h = H::new("");
    let id = answered(&mut h);
    queue(&mut h, &id);
    h.ms(1000);
    h.sim.hangup(h.now, &id).unwrap();
    h.pump();
    assert_eq!(
        order(&h),
        [
            "PlaybackStarted first",
            "PlaybackFinished first",
            "PlaybackStarted second",
            "PlaybackFinished second",
            "StasisEnd",
        ]
    );

    let mut h = H::new("");
    let id = answered(&mut h);
    h.req("POST", "bridges/b1", &[("type", "mixing")], None);
    let r = h.req("POST", "bridges/b1/addChannel", &[("channel", &id)], None);
    assert_eq!(r.status, 204);
    h.events.clear();
    queue(&mut h, &id);
    h.ms(1000);
    h.sim.hangup(h.now, &id).unwrap();
    h.pump();
    assert_eq!(
        order(&h),
        [
            "PlaybackStarted first",
            "PlaybackFinished first",
            "StasisEnd"
        ]
    );
    assert_eq!(h.req("GET", "playbacks/second", &[], None).status, 404);
    h.ms(5000);
    assert_eq!(order(&h).len(), 3, "{:?}", order(&h));
}
