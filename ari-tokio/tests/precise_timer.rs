#![cfg(any(target_os = "linux", target_os = "android"))]
//! `TokioExecutor::sleep_until_precise`: never before its deadline, wakes in deadline order,
//! holds one timerfd per pending sleep (closed when it ends or is dropped), and keeps tokio's
//! time under a paused test clock (Linux: the timerfd is Linux's). No timing assertions: only order, counts and lower bounds.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ari_tokio::{Executor, TokioExecutor};

/// Generous bound for liveness checks (never a timing assertion).
const LIVENESS: Duration = Duration::from_secs(30);

/// The tests count the process's timerfds: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Open timerfds of this process.
fn timerfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("timerfd"))
        .count()
}

fn current_thread(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .expect("runtime")
}

/// Runs `f` on a thread and waits for its answer (a hang fails the test instead).
fn within_liveness<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIVENESS).expect("completed")
}

#[test]
fn sleeps_end_in_deadline_order_never_before_their_deadline() {
    let _serial = serial();
    let (order, early) = within_liveness(|| {
        current_thread(false).block_on(async {
            let executor = TokioExecutor::new();
            let base = executor.now() + Duration::from_millis(50);
            let done = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            // Registered latest first.
            for k in (0..5u32).rev() {
                let deadline = base + Duration::from_millis(10) * k;
                let (ex, done) = (executor.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    ex.sleep_until_precise(deadline).await;
                    let early = ex.now() < deadline || Instant::now() < deadline;
                    done.lock().unwrap().push(k);
                    early
                }));
            }
            let mut early = 0;
            for t in tasks {
                early += usize::from(t.await.expect("task"));
            }
            let order = done.lock().unwrap().clone();
            (order, early)
        })
    });
    assert_eq!(order, [0, 1, 2, 3, 4], "earliest deadline first");
    assert_eq!(early, 0, "none woke before its deadline, by either clock");
}

#[test]
fn a_pending_sleep_holds_one_timerfd_closed_when_it_ends_or_is_dropped() {
    let _serial = serial();
    let counts = within_liveness(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let executor = TokioExecutor::new();
            let before = timerfds();
            // Dropped while pending.
            let mut far =
                Box::pin(executor.sleep_until_precise(executor.now() + Duration::from_secs(3_600)));
            let pending = futures_util::poll!(far.as_mut()).is_pending();
            let while_pending = timerfds();
            drop(far);
            let after_drop = timerfds();
            // One that ends.
            executor
                .sleep_until_precise(executor.now() + Duration::from_millis(5))
                .await;
            let after_end = timerfds();
            // A deadline already passed needs none.
            let mut past = std::pin::pin!(executor.sleep_until_precise(executor.now()));
            let past_ready = futures_util::poll!(past.as_mut()).is_ready();
            (
                before,
                pending,
                while_pending,
                after_drop,
                after_end,
                past_ready,
            )
        })
    });
    let (before, pending, while_pending, after_drop, after_end, past_ready) = counts;
    assert!(pending, "an hour away");
    assert_eq!(while_pending, before + 1, "one timerfd while pending");
    assert_eq!(after_drop, before, "dropping it closes it");
    assert_eq!(after_end, before, "ending closes it");
    assert!(past_ready, "a passed deadline completes at once");
}

#[test]
fn under_a_paused_test_clock_it_keeps_tokios_time() {
    let _serial = serial();
    let (reached, before, after) = within_liveness(|| {
        current_thread(true).block_on(async {
            let executor = TokioExecutor::new();
            let before = timerfds();
            // An hour of tokio's time: the timerfd (the system's clock) would take an hour; the
            // paused clock advances to tokio's timers when the runtime is idle, and tokio's
            // sleep armed beside the timerfd ends the wait.
            let deadline = executor.now() + Duration::from_secs(3_600);
            executor.sleep_until_precise(deadline).await;
            (executor.now() >= deadline, before, timerfds())
        })
    });
    assert!(reached, "ended at the deadline of tokio's clock");
    assert_eq!(after, before, "the timerfd was closed");
}
