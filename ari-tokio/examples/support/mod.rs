//! What the examples share: where to connect, and the simulated Asterisk they start in-process
//! when `ARI_URL` is unset. Runtime-agnostic (std threads only), so the smol examples include
//! this same file.

use std::time::Duration;
use std::{env, process, thread};

use ari_testkit::{MockServer, PlaceCall, SimConfig};

/// An example in the embedded-sim mode that has not finished by then exits with status 1.
const DEADLINE: Duration = Duration::from_secs(15);

/// Where to connect.
pub(crate) struct Ari {
    pub(crate) url: String,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) app: String,
}

/// `ARI_URL`, `ARI_USER`, `ARI_PASSWORD`, `ARI_APP` (default `default_app`) from the
/// environment. Without `ARI_URL`: starts ari-testkit's simulated Asterisk in this process
/// (short sounds, so the demo takes a few seconds), prints one line saying so, and ends the
/// process with status 1 if the example has not finished within [`DEADLINE`]. With `dtmf`,
/// once the app is registered a caller (`PJSIP/alice`) calls it and, after the greeting,
/// presses those keys.
#[allow(dead_code)] // not every example uses it
pub(crate) fn ari(example: &str, runtime: &str, default_app: &str, dtmf: Option<&str>) -> Ari {
    let app = env::var("ARI_APP").unwrap_or_else(|_| default_app.to_string());
    if let Ok(url) = env::var("ARI_URL") {
        println!("{example} on {runtime} · {url} · app {app}");
        let var = |name, default: &str| env::var(name).unwrap_or_else(|_| default.to_string());
        return Ari {
            url,
            user: var("ARI_USER", "asterisk"),
            password: var("ARI_PASSWORD", "asterisk"),
            app,
        };
    }
    let mut sim = SimConfig {
        sip_answer_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    for (sound, ms) in [
        ("hello-world", 1000),
        ("tt-monkeys", 800),
        ("vm-goodbye", 500),
    ] {
        sim.media_durations
            .insert(sound.to_string(), Duration::from_millis(ms));
    }
    for digit in 0..=9 {
        sim.media_durations
            .insert(format!("digits/{digit}"), Duration::from_millis(250));
    }
    let server = MockServer::builder().sim_config(sim).start();
    let ari = Ari {
        url: server.base_url(),
        user: server.username().to_string(),
        password: server.password().to_string(),
        app: app.clone(),
    };
    let caller = dtmf.map(|keys| format!(" · PJSIP/alice will call and press {keys}"));
    println!(
        "{example} on {runtime} · simulated Asterisk at {} · app {app}{}",
        ari.url,
        caller.as_deref().unwrap_or("")
    );
    let dtmf = dtmf.map(str::to_string);
    let example = example.to_string();
    // The server lives in this thread until the process ends.
    thread::spawn(move || {
        if let Some(keys) = dtmf {
            // (Not `server.wait_for_app`: it can return before the simulator knows the app.)
            while server.with_sim(|sim, _| sim.app_is_connected(&app)) != Some(true) {
                thread::sleep(Duration::from_millis(10));
            }
            let call = PlaceCall {
                dtmf: keys,
                dtmf_delay: Duration::from_millis(1300), // after the 1 s greeting
                dtmf_interval: Duration::from_millis(600),
                ..PlaceCall::new("PJSIP/alice", &app)
            };
            if let Err(e) = server.place_call(call) {
                fail(&example, &format!("could not place the call: {e}"));
            }
        }
        thread::sleep(DEADLINE);
        fail(&example, &format!("did not finish within {DEADLINE:?}"));
    });
    ari
}

/// Like [`ari`], for the media examples: without `ARI_URL`, once the app is registered a
/// caller (`PJSIP/alice`) calls it and hangs up `hangup_after` after the answer.
#[allow(dead_code)] // not every example uses it
pub(crate) fn media_call(
    example: &str,
    runtime: &str,
    default_app: &str,
    hangup_after: Duration,
) -> Ari {
    let app = env::var("ARI_APP").unwrap_or_else(|_| default_app.to_string());
    if let Ok(url) = env::var("ARI_URL") {
        println!("{example} on {runtime} · {url} · app {app}");
        let var = |name, default: &str| env::var(name).unwrap_or_else(|_| default.to_string());
        return Ari {
            url,
            user: var("ARI_USER", "asterisk"),
            password: var("ARI_PASSWORD", "asterisk"),
            app,
        };
    }
    let server = MockServer::builder().start();
    let ari = Ari {
        url: server.base_url(),
        user: server.username().to_string(),
        password: server.password().to_string(),
        app: app.clone(),
    };
    println!(
        "{example} on {runtime} · simulated Asterisk at {} · app {app} · PJSIP/alice will call and hang up after {hangup_after:?}",
        ari.url
    );
    let example = example.to_string();
    thread::spawn(move || {
        while server.with_sim(|sim, _| sim.app_is_connected(&app)) != Some(true) {
            thread::sleep(Duration::from_millis(10));
        }
        let call = PlaceCall {
            hangup_after_answer: Some(hangup_after),
            ..PlaceCall::new("PJSIP/alice", &app)
        };
        if let Err(e) = server.place_call(call) {
            fail(&example, &format!("could not place the call: {e}"));
        }
        thread::sleep(DEADLINE);
        fail(&example, &format!("did not finish within {DEADLINE:?}"));
    });
    ari
}

/// `ARI_SEED`: a seed for the client-side ids, for reproducible runs (record and replay).
#[allow(dead_code)] // not every example uses it
pub(crate) fn seed() -> Option<u64> {
    let text = env::var("ARI_SEED").ok()?;
    match text.parse() {
        Ok(seed) => Some(seed),
        Err(e) => fail("ARI_SEED", &format!("{text:?} is not a number: {e}")),
    }
}

fn fail(example: &str, why: &str) -> ! {
    eprintln!("{example}: {why}");
    process::exit(1);
}

/// For the outbound examples: `ARI_USER`, `ARI_PASSWORD` (the credentials Asterisk must
/// present, default `asterisk`/`asterisk`) and `ARI_APP`. With `simulate` (no
/// `ARI_LISTEN`), starts ari-testkit's simulated Asterisk configured to dial `listen` per
/// call (`websocket_client.conf` `connection_type = per_call_config`, `uri
/// ws://<listen>/ari-ob`), then places one call from `PJSIP/alice` that presses `dtmf` after
/// the greeting; ends the process with status 1 if the example has not finished within
/// [`DEADLINE`].
#[allow(dead_code)] // not every example uses it
pub(crate) fn outbound_sim(
    example: &str,
    runtime: &str,
    listen: std::net::SocketAddr,
    dtmf: &str,
) -> Ari {
    let var = |name, default: &str| env::var(name).unwrap_or_else(|_| default.to_string());
    let ari = Ari {
        url: format!("ws://{listen}/ari-ob"),
        user: var("ARI_USER", "asterisk"),
        password: var("ARI_PASSWORD", "asterisk"),
        app: var("ARI_APP", "hello"),
    };
    let mut sim = SimConfig {
        sip_answer_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    for (sound, ms) in [
        ("hello-world", 1000),
        ("tt-monkeys", 800),
        ("vm-goodbye", 500),
    ] {
        sim.media_durations
            .insert(sound.to_string(), Duration::from_millis(ms));
    }
    for digit in 0..=9 {
        sim.media_durations
            .insert(format!("digits/{digit}"), Duration::from_millis(250));
    }
    let dial = ari_testkit::OutboundConfig::per_call(&ari.url, [ari.app.as_str()])
        .credentials(&ari.user, &ari.password)
        .stasis_start_delay(Duration::from_millis(100))
        .close_after_stasis_end(Duration::from_millis(200));
    let server = MockServer::builder().sim_config(sim).outbound(dial).start();
    println!(
        "{example} on {runtime} · listening on {listen} · simulated Asterisk dials {} per call · app {} · PJSIP/alice will call and press {dtmf}",
        ari.url, ari.app
    );
    let (app, dtmf, example) = (ari.app.clone(), dtmf.to_string(), example.to_string());
    thread::spawn(move || {
        let call = PlaceCall {
            dtmf,
            dtmf_delay: Duration::from_millis(1300), // after the 1 s greeting
            dtmf_interval: Duration::from_millis(600),
            ..PlaceCall::new("PJSIP/alice", &app)
        };
        if let Err(e) = server.place_call(call) {
            fail(&example, &format!("could not place the call: {e}"));
        }
        thread::sleep(DEADLINE);
        fail(&example, &format!("did not finish within {DEADLINE:?}"));
    });
    ari
}
