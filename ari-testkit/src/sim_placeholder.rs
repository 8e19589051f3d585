//! TEMPORARY stand-in for the simulator (the real one lives in `src/sim/`), used only until
//! `src/sim/mod.rs` exists. Implements the agreed contract minimally.
#![allow(
    missing_docs,
    dead_code,
    unreachable_pub,
    missing_debug_implementations
)]

use std::time::Duration;

#[derive(Debug, Default)]
pub struct Sim {
    events: Vec<Outgoing>,
}
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub asterisk_id: String,
    pub wall_clock_base_ms: u64,
}
#[derive(Debug)]
pub struct SimRequest<'a> {
    pub method: &'a str,
    pub segments: &'a [String],
    pub query: &'a [(String, String)],
    pub body: Option<&'a serde_json::Value>,
    pub read_only: bool,
}
#[derive(Debug)]
pub struct SimResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}
#[derive(Debug)]
pub struct Outgoing {
    pub app: String,
    pub event: serde_json::Value,
}
#[derive(Debug, Clone)]
pub struct PlaceCall {
    pub endpoint: String,
    pub app: String,
    pub args: Vec<String>,
    pub channel_id: Option<String>,
    pub caller_name: String,
    pub caller_number: String,
    pub exten: String,
    pub context: String,
    pub dtmf: String,
    pub dtmf_delay: Duration,
    pub dtmf_interval: Duration,
    pub hangup_after_answer: Option<Duration>,
    pub abandon_after: Option<Duration>,
}
impl PlaceCall {
    pub fn new(endpoint: &str, app: &str) -> PlaceCall {
        PlaceCall {
            endpoint: endpoint.to_string(),
            app: app.to_string(),
            args: Vec::new(),
            channel_id: None,
            caller_name: String::new(),
            caller_number: String::new(),
            exten: "s".to_string(),
            context: "default".to_string(),
            dtmf: String::new(),
            dtmf_delay: Duration::from_millis(500),
            dtmf_interval: Duration::from_millis(300),
            hangup_after_answer: None,
            abandon_after: None,
        }
    }
}
impl Sim {
    pub fn new(_cfg: SimConfig) -> Sim {
        Sim::default()
    }
    pub fn handle_request(&mut self, _now: Duration, req: &SimRequest<'_>) -> SimResponse {
        let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let json = |status, v: serde_json::Value| SimResponse {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        };
        match (req.method, segs.as_slice()) {
            ("GET", ["asterisk", "ping"]) => json(
                200,
                serde_json::json!({"ping":"pong","timestamp":"2026-11-26T11:14:38.299+0000","asterisk_id":"02:fc:00:00:00:01"}),
            ),
            ("POST", ["asterisk", "variable"]) => SimResponse {
                status: 204,
                content_type: "",
                body: vec![],
            },
            ("GET", ["channels"]) => json(200, serde_json::json!([])),
            (_, ["channels", _, ..]) => {
                json(404, serde_json::json!({"message":"Channel not found"}))
            }
            ("POST", ["events", "user", name]) => {
                if let Some((_, app)) = req.query.iter().find(|(k, _)| k == "application") {
                    self.events.push(Outgoing { app: app.clone(), event: serde_json::json!({"type":"ChannelUserevent","eventname":name,"application":app}) });
                }
                SimResponse {
                    status: 204,
                    content_type: "",
                    body: vec![],
                }
            }
            _ => json(404, serde_json::json!({"message":"Resource not found"})),
        }
    }
    pub fn app_connected(&mut self, _now: Duration, _app: &str, _subscribe_all: bool) {}
    pub fn app_disconnected(&mut self, _now: Duration, _app: &str) {}
    pub fn poll_timeout(&self) -> Option<Duration> {
        None
    }
    pub fn handle_timeout(&mut self, _now: Duration) {}
    pub fn drain_events(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.events)
    }
    pub fn place_call(&mut self, _now: Duration, call: PlaceCall) -> String {
        self.events.push(Outgoing {
            app: call.app.clone(),
            event: serde_json::json!({"type":"StasisStart","args":call.args}),
        });
        "sim-1".into()
    }
    pub fn send_dtmf(&mut self, _now: Duration, _c: &str, _d: &str) -> Result<(), String> {
        Err("Channel not found".into())
    }
    pub fn hangup(&mut self, _now: Duration, _c: &str) -> Result<(), String> {
        Err("Channel not found".into())
    }
}
impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            asterisk_id: "02:fc:00:00:00:01".into(),
            wall_clock_base_ms: 0,
        }
    }
}
