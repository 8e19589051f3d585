//! Media: `n` concurrent chan_websocket media sessions (`Channel::media`, `slin`, 8 kHz,
//! 20 ms frames) against the simulated Asterisk, audio both ways.
//!
//! Every session receives the simulator's test signal (one 320-byte frame every 20 ms) and
//! sends its own the way the README shows: the application attaches every session to one
//! [`MediaPacer`] (one timer, the sessions spread over its 20 phases of 1 ms; its ticks on a
//! thread of its own at real-time priority in the `-rt` rows, as the README advises for many
//! sessions, on the runtime's executor in the others) and hands each session's audio to its [`PacedSender`] as it produces it
//! (here: it tops the session's queue up to 200 ms whenever a frame comes in). The
//! pacer hands each session one frame per 20 ms at absolute times; each session's socket
//! task writes it. The simulator runs in another process: the CPU measured is the
//! application's and the client's alone. After all sessions are open and a second of
//! warm-up, the measurement window reports:
//!
//! - CPU per frame handled (the process's user + system time over frames in + frames out);
//! - CPU as a share of one core per 250 sessions, and peak RSS;
//! - send timing, measured by the executor's clock when each paced frame is written to its
//!   socket: the lateness of the write against the frame's schedule (its session's phase
//!   plus a whole number of 20 ms), and the jitter between consecutive frames of a session
//!   (|gap between their writes − 20 ms|); 50 µs buckets, percentiles are upper bounds;
//! - the receive gaps of the simulator's frames (|gap − 20 ms|);
//! - losses: frames the consumer lagged behind on, local-queue overflow (the session's and
//!   the pacer's), frames short of the real-time count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ari_client::media::{
    MediaItem, MediaOptions, MediaPacer, MediaSession, PacedSender, PacerConfig, PacerThread,
    PacingHistogram,
};
use ari_client::{Client, Runtime};
use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::events::timeout;
use crate::util::{control, cpu_now, peak_rss_kb, percentile, rss_kb, USER};

/// The calls' application.
const CALLS_APP: &str = "bench-media";
/// The media channels' application.
const MEDIA_APP: &str = "bench-media-em";
/// The media format: 8 kHz signed linear, 320 bytes per 20 ms.
const FORMAT: &str = "slin";
/// One frame's duration.
const PTIME: Duration = Duration::from_millis(20);
/// Sessions opened at once.
const OPENING: usize = 32;
/// Longest wait for one step of the setup.
const PATIENCE: Duration = Duration::from_secs(60);

/// What the sessions counted inside the window.
#[derive(Default)]
struct Counts {
    frames_in: u64,
    /// |gap − 20 ms| between consecutive frames received, in µs.
    recv_jitter_us: Vec<u32>,
}

/// Frames each session's pacing queue is topped up to when a frame comes in: the audio the
/// application has produced ahead of its playing time (200 ms, as a speech synthesizer
/// or a voice model hands it over; [`PacedSender::clear`] drops it on barge-in).
const AHEAD_FRAMES: usize = 10;

fn jitter_us(gap: Duration) -> u32 {
    let d = gap.abs_diff(PTIME);
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One session's side of the application for the whole run: counts the frames that come,
/// and for each tops its paced queue up to [`AHEAD_FRAMES`] (one timer for the whole run,
/// not one per frame; the pacer does the timing).
async fn receive<R: Runtime>(
    rt: R,
    mut media: MediaSession,
    paced: PacedSender,
    frame: Bytes,
    window: (Instant, Instant),
    total: Arc<Mutex<Counts>>,
) -> MediaSession {
    let (from, to) = window;
    let in_window = |t: Instant| t >= from && t < to;
    let mut c = Counts::default();
    let mut prev: Option<Instant> = None;
    let mut end = std::pin::pin!(rt.sleep_until(to));
    for _ in 0..AHEAD_FRAMES {
        let _ = paced.send(frame.clone());
    }
    loop {
        match select(media.next(), end.as_mut()).await {
            Either::Left((Some(MediaItem::Audio(_)), _)) => {
                let now = rt.now();
                if in_window(now) {
                    c.frames_in += 1;
                    if let Some(p) = prev.filter(|p| in_window(*p)) {
                        c.recv_jitter_us.push(jitter_us(now - p));
                    }
                }
                prev = Some(now);
                for _ in paced.queued_frames()..AHEAD_FRAMES {
                    let _ = paced.send(frame.clone());
                }
            }
            Either::Left((Some(MediaItem::Closed { .. }) | None, _)) => break,
            Either::Left((Some(_), _)) => {}
            Either::Right(_) => break,
        }
    }
    drop(paced);
    let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
    t.frames_in += c.frames_in;
    t.recv_jitter_us.extend(c.recv_jitter_us);
    drop(t);
    media
}

/// Percentiles of a pacer histogram (upper bounds: 50 µs buckets).
fn hist(h: &PacingHistogram) -> Value {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    json!({
        "samples": h.count(),
        "p50_us": us(h.percentile(50.0)),
        "p99_us": us(h.percentile(99.0)),
        "max_us": us(h.max),
    })
}

fn pct(v: &mut [u32]) -> Value {
    v.sort_unstable();
    let d: Vec<Duration> = v.iter().map(|&u| Duration::from_micros(u.into())).collect();
    let us = |p: f64| percentile(&d, p).as_secs_f64() * 1e6;
    json!({
        "samples": v.len(),
        "p50_us": us(50.0),
        "p99_us": us(99.0),
        "max_us": v.last().copied().unwrap_or(0),
    })
}

/// Executor threads of the smol run by default: one, as smol's global executor has unless
/// `SMOL_THREADS` says more (`ARI_BENCH_SMOL_THREADS` sets another count). Measured on an
/// idle 2-vCPU machine, two threads cost three times the CPU per frame at 100 sessions
/// (19 against 6 µs: the threads hand the sessions' tasks back and forth) and did not make
/// the 1,000-session pacing steadier.
const SMOL_THREADS: usize = 1;

/// [`client`] on smol: the client's tasks on an executor run by [`SMOL_THREADS`] threads
/// (or `ARI_BENCH_SMOL_THREADS`),
/// the measurement itself under `smol::block_on` on the calling thread.
pub(crate) fn smol_client(
    addr: SocketAddr,
    n: usize,
    seconds: f64,
    pacer: PacerThread,
    name: &str,
) -> Value {
    let executor = Arc::new(smol::Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let n_threads = std::env::var("ARI_BENCH_SMOL_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SMOL_THREADS);
    let threads: Vec<_> = (0..n_threads)
        .map(|i| {
            let executor = executor.clone();
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || smol::block_on(executor.run(stopped.recv())))
                .expect("an executor thread")
        })
        .collect();
    let runtime = ari_smol::SmolRuntime::builder_with(
        ari_smol::SmolExecutor::with_executor(executor),
        ari_smol::SmolConnector,
    )
    .build()
    .expect("smol runtime");
    let out = smol::block_on(client(name, runtime, addr, n, seconds, pacer));
    drop(stop);
    for t in threads {
        let _ = t.join();
    }
    out
}

/// Opens `n` sessions on `runtime`, runs them for `seconds` of measurement, and reports.
pub(crate) async fn client<R: Runtime>(
    name: &str,
    runtime: R,
    addr: SocketAddr,
    n: usize,
    seconds: f64,
    pacer: PacerThread,
) -> Value {
    let client = Client::<R>::builder_with_runtime(&format!("http://{addr}"), USER, USER, runtime)
        .connect()
        .await
        .expect("connect");
    let rt = client.runtime().clone();
    let mut incoming = client.incoming();
    client
        .start(&[CALLS_APP, MEDIA_APP])
        .await
        .expect("start the apps");
    // Calls placed from a thread (the control client blocks), taken as they arrive.
    let placer = std::thread::spawn(move || {
        for _ in 0..n {
            let (status, body) =
                control(addr, "POST", &format!("/_sim/call?app={CALLS_APP}")).expect("call");
            assert_eq!(status, 200, "place a call: {body}");
        }
    });
    let setup0 = Instant::now();
    let calls = futures_util::stream::poll_fn(|cx| incoming.poll_next_unpin(cx))
        .filter_map(|c| {
            let c = c.expect("no lagged calls");
            std::future::ready((c.0.application == CALLS_APP).then_some(c.1))
        })
        .take(n);
    let sessions: Vec<MediaSession> = calls
        .map(|channel| async move {
            channel.answer().await.expect("answer");
            let options = MediaOptions::new(MEDIA_APP, FORMAT);
            timeout(channel.client().runtime(), PATIENCE, channel.media(options))
                .await
                .expect("media session in time")
                .expect("media session")
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    placer.join().expect("calls placed");
    let setup_seconds = setup0.elapsed().as_secs_f64();
    assert_eq!(sessions.len(), n);
    let frame = Bytes::from(ari_testkit::test_frame(FORMAT));
    assert_eq!(
        frame.len(),
        sessions[0].media_start().optimal_frame_size as usize
    );

    let from = rt.now() + Duration::from_secs(1);
    let to = from + Duration::from_secs_f64(seconds);
    let total = Arc::new(Mutex::new(Counts::default()));
    let rss0 = rss_kb();
    let cpu_box = Arc::new(AtomicU64::new(0));
    // The CPU clock starts and stops with the window.
    let clock = {
        let rt = rt.clone();
        let cpu_box = cpu_box.clone();
        async move {
            rt.sleep_until(from).await;
            let c0 = cpu_now();
            rt.sleep_until(to).await;
            let c = cpu_now() - c0;
            cpu_box.store(u64::try_from(c.as_micros()).unwrap_or(0), Ordering::Relaxed);
        }
    };
    // One pacer for every session, as the README shows; each session's side of the
    // application on the runtime's executor (its worker threads).
    let pacer = MediaPacer::with_config(&rt, PacerConfig::new().thread(pacer));
    let paced: Vec<PacedSender> = sessions
        .iter()
        .map(|m| pacer.attach(m).expect("attach to the pacer"))
        .collect();
    // The pacer's counters at the start and the end of the window.
    let marks = {
        let rt = rt.clone();
        let pacer = pacer.clone();
        let (tx, rx) = futures_channel::oneshot::channel();
        rt.clone().spawn(async move {
            rt.sleep_until(from).await;
            let a = pacer.stats();
            rt.sleep_until(to).await;
            let _ = tx.send((a, pacer.stats()));
        });
        async move { rx.await.expect("the pacer's counters") }
    };
    let runs = futures_util::future::join_all(sessions.into_iter().zip(paced).map(|(m, p)| {
        let (tx, rx) = futures_channel::oneshot::channel();
        let run = receive(rt.clone(), m, p, frame.clone(), (from, to), total.clone());
        rt.spawn(async move {
            let _ = tx.send(run.await);
        });
        async move { rx.await.expect("the session's task ends") }
    }));
    let (sessions, (), (at_from, at_to)) = futures_util::future::join3(runs, clock, marks).await;
    pacer.close();
    let cpu = Duration::from_micros(cpu_box.load(Ordering::Relaxed));
    let (mut lagged, mut overflow, mut xoff) = (0, 0, 0);
    for m in &sessions {
        let st = m.stats();
        lagged += st.lagged_frames;
        overflow += st.protocol.overflow_frames;
        xoff += st.protocol.xoff;
    }
    let mut t = std::mem::take(&mut *total.lock().unwrap_or_else(|p| p.into_inner()));
    let expected = (seconds / PTIME.as_secs_f64()) * n as f64;
    let frames_out = at_to.frames_sent - at_from.frames_sent;
    let frames = t.frames_in + frames_out;
    let out = json!({
        "client": name,
        "sessions": n,
        "seconds": seconds,
        "setup_seconds": setup_seconds,
        "frames_in": t.frames_in,
        "frames_out": frames_out,
        "frames_timed": at_to.frames_timed - at_from.frames_timed,
        "frames_expected_each_way": expected,
        "cpu_seconds": cpu.as_secs_f64(),
        "cpu_us_per_frame": cpu.as_secs_f64() * 1e6 / frames.max(1) as f64,
        "core_share_per_250": cpu.as_secs_f64() / seconds * 250.0 / n as f64,
        "rss_kb_before_window": rss0,
        "peak_rss_kb": peak_rss_kb(),
        "send_lateness": hist(&at_to.send_lateness.since(&at_from.send_lateness)),
        "send_jitter": hist(&at_to.send_jitter.since(&at_from.send_jitter)),
        "recv_jitter": pct(&mut t.recv_jitter_us),
        "late_ticks": at_to.late_ticks - at_from.late_ticks,
        "underruns": at_to.underruns - at_from.underruns,
        "pacer_overflow_frames": at_to.overflow_frames - at_from.overflow_frames,
        "lagged_frames": lagged,
        "overflow_frames": overflow,
        "xoff": xoff,
        "pacer_thread": format!("{:?}", at_to.running_on),
    });
    // Hang the media channels up (outside the window); the process ends right after.
    futures_util::stream::iter(sessions)
        .for_each_concurrent(OPENING, |m| {
            let rt = rt.clone();
            async move {
                let _ = timeout(&rt, PATIENCE, m.shutdown()).await;
            }
        })
        .await;
    out
}

/// Runs the media scenarios (100 and 1,000 sessions; `--quick`: 20) on both runtimes.
pub(crate) fn run(args: &crate::Args, port: u16) -> Value {
    let sizes: Vec<usize> = match args.media_sessions.as_slice() {
        [] if args.quick => vec![20],
        [] => vec![100, 1_000],
        s => s.to_vec(),
    };
    let seconds = args
        .media_seconds
        .unwrap_or(if args.quick { 2.0 } else { 10.0 });
    let mut rows = Vec::new();
    for &n in &sizes {
        // The pacer at real-time priority on a thread of its own (the setting the README
        // gives for many sessions), and as a task on the executor.
        for scenario in [
            "media-tokio-rt",
            "media-smol-rt",
            "media-tokio",
            "media-smol",
        ] {
            eprintln!("ari-bench: {scenario} with {n} sessions ...");
            let extra = vec![
                "--media-sessions".to_owned(),
                n.to_string(),
                "--media-seconds".to_owned(),
                seconds.to_string(),
            ];
            rows.push(crate::measure(args, port, scenario, &extra));
        }
    }
    Value::Array(rows)
}

/// The media table.
pub(crate) fn table(rows: &[Value]) -> String {
    use std::fmt::Write as _;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nMEDIA: concurrent chan_websocket sessions ({FORMAT}, 20 ms frames both ways, the app's \
         audio paced by one MediaPacer; tokio: two workers, smol: an executor on one thread)\n  send late = time each frame is written to its socket - \
         its scheduled time; send jit = |gap between a session's consecutive writes - 20 ms| \
         (executor's clock, 50 us buckets, upper bounds); recv = |gap between frames received - 20 ms|"
    );
    let _ = writeln!(
        o,
        "{:<24} {:>6} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
        "client",
        "sess",
        "frames",
        "CPU us/fr",
        "core/250",
        "peak RSS",
        "late p50",
        "late p99",
        "late max",
        "jit p99",
        "recv p99",
        "lost"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:<24} {:>6} {:>10} {:>10.2} {:>8.1}% {:>6.1}MiB {:>8.0}us {:>8.0}us {:>8.0}us {:>8.0}us {:>7.0}us {:>7}",
            r["client"].as_str().unwrap_or_default(),
            r["sessions"],
            r["frames_in"].as_u64().unwrap_or(0) + r["frames_out"].as_u64().unwrap_or(0),
            f(r, "cpu_us_per_frame"),
            f(r, "core_share_per_250") * 100.0,
            f(r, "peak_rss_kb") / 1024.0,
            f(&r["send_lateness"], "p50_us"),
            f(&r["send_lateness"], "p99_us"),
            f(&r["send_lateness"], "max_us"),
            f(&r["send_jitter"], "p99_us"),
            f(&r["recv_jitter"], "p99_us"),
            lost(r),
        );
    }
    let _ = writeln!(o, "\nMEDIA TARGETS (issue 15)");
    for t in targets(rows) {
        let _ = writeln!(o, "  {t}");
    }
    o
}

/// Frames lost: the consumer lagged, or a local queue (the session's, the pacer's) overflowed.
fn lost(r: &Value) -> u64 {
    ["lagged_frames", "overflow_frames", "pacer_overflow_frames"]
        .iter()
        .map(|k| r[k].as_u64().unwrap_or(0))
        .sum()
}

/// Share of one core per 250 sessions the process may use.
const CORE_SHARE_PER_250: f64 = 0.25;
/// Where a media scenario's pacer runs, and the row's label: `media-<rt>` on the executor,
/// `media-<rt>-thread` on a thread of its own, `media-<rt>-rt` on one at real-time priority
/// (`SCHED_FIFO` 10; where that is refused, the row says `running_on`).
pub(crate) fn pacer_of(scenario: &str) -> (PacerThread, &'static str) {
    if scenario.ends_with("-rt") {
        (PacerThread::Realtime { priority: 10 }, "pacer RT thread")
    } else if scenario.ends_with("-thread") {
        (PacerThread::Dedicated, "pacer thread")
    } else {
        (PacerThread::Executor, "pacer on executor")
    }
}

/// p99 of the send-side pacing jitter.
const SEND_P99_US: f64 = 2_000.0;
/// Frames each way, as a share of the real-time count, for "keeps real time".
const REAL_TIME_SHARE: f64 = 0.99;

/// The targets, one line each, `ok` or `MISS` with the figure measured.
pub(crate) fn targets(rows: &[Value]) -> Vec<String> {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let mark = |ok: bool| if ok { "ok  " } else { "MISS" };
    let mut out = Vec::new();
    for r in rows {
        let who = format!(
            "{:<24} {:>5} sessions",
            r["client"].as_str().unwrap_or_default(),
            r["sessions"]
        );
        let share = f(r, "core_share_per_250");
        out.push(format!(
            "{} {who}  CPU per 250 sessions {:>6.1}% of a core (target < {:.0}%; {:.2} us per frame in + out)",
            mark(share < CORE_SHARE_PER_250),
            share * 100.0,
            CORE_SHARE_PER_250 * 100.0,
            f(r, "cpu_us_per_frame"),
        ));
        let expected = f(r, "frames_expected_each_way");
        let fin = r["frames_in"].as_f64().unwrap_or(0.0);
        let fout = r["frames_out"].as_f64().unwrap_or(0.0);
        let kept = fin.min(fout) / expected;
        out.push(format!(
            "{} {who}  real time: frames each way {:>6.1}% of the real-time count (target >= {:.0}%)",
            mark(kept >= REAL_TIME_SHARE),
            kept * 100.0,
            REAL_TIME_SHARE * 100.0,
        ));
        let late = f(&r["send_lateness"], "p99_us");
        let jit = f(&r["send_jitter"], "p99_us");
        out.push(format!(
            "{} {who}  send pacing p99: write time vs schedule {:>6.0} us, jitter between \
             consecutive writes {:>6.0} us (target < {:.0} us, both)",
            mark(late < SEND_P99_US && jit < SEND_P99_US),
            late,
            jit,
            SEND_P99_US,
        ));
        let ran = r["pacer_thread"].as_str().unwrap_or_default();
        if who.contains("RT thread") && !ran.starts_with("Realtime") {
            out.push(format!(
                "note {who}  real-time priority was refused (no CAP_SYS_NICE or rtprio limit): \
                 the pacer's thread ran at normal priority ({ran})"
            ));
        }
        let lost = lost(r);
        out.push(format!(
            "{} {who}  frames lost (lagged + overflow) {lost:>7} (target 0)",
            mark(lost == 0),
        ));
    }
    out
}
