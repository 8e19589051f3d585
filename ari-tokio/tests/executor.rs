//! `TokioExecutor`: tasks spawned from threads outside the runtime (with a handle), timers and
//! clocks that agree with each other.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use ari_tokio::{Executor, TokioExecutor};

/// Generous bound for liveness checks (never a timing assertion).
const LIVENESS: Duration = Duration::from_secs(30);

#[test]
fn with_a_handle_it_spawns_from_a_thread_outside_the_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let executor = TokioExecutor::with_handle(runtime.handle().clone());
    // This thread is not inside the runtime: `tokio::spawn` would panic here.
    assert!(tokio::runtime::Handle::try_current().is_err());
    let (tx, rx) = mpsc::channel();
    let deadline = executor.now() + Duration::from_millis(20);
    let timer = executor.clone();
    executor.spawn(async move {
        timer.sleep_until(deadline).await;
        // The timer and the clock agree: it never wakes before its deadline.
        let _ = tx.send(timer.now() >= deadline);
    });
    assert_eq!(
        rx.recv_timeout(LIVENESS),
        Ok(true),
        "the task ran on the runtime"
    );
}

#[test]
fn inside_a_runtime_new_spawns_on_it_and_a_past_deadline_completes_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = SystemTime::now();
    let (ran, wall) = runtime.block_on(async {
        let executor = TokioExecutor::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let timer = executor.clone();
        executor.spawn(async move {
            // A deadline already passed: no sleep at all.
            let now = timer.now();
            let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            timer.sleep_until(past).await;
            let _ = tx.send(());
        });
        let ran = tokio::time::timeout(LIVENESS, rx).await;
        (ran, executor.wall_clock())
    });
    assert!(matches!(ran, Ok(Ok(()))), "the spawned task completed");
    assert!(wall >= before, "wall_clock is the system clock");
}
