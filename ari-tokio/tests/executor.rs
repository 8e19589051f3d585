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

/// Made inside a runtime (as `Client::connect` makes its runtime), the executor keeps working
/// on threads outside it: a `MediaPacer`'s own thread runs sessions' socket drivers, which
/// may start timers and tasks there.
#[test]
fn made_inside_a_runtime_its_timers_and_tasks_work_from_other_threads() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let executor = runtime.block_on(async { TokioExecutor::new() });
    let outside = std::thread::spawn(move || {
        assert!(tokio::runtime::Handle::try_current().is_err());
        // A timer polled on this thread, as the pacer's thread does.
        let deadline = executor.now() + Duration::from_millis(20);
        block_on(executor.sleep_until(deadline));
        let woke_in_time = executor.now() >= deadline;
        let (tx, rx) = mpsc::channel();
        executor.spawn(async move {
            let _ = tx.send(());
        });
        (woke_in_time, rx.recv_timeout(LIVENESS))
    });
    let (woke_in_time, spawned) = outside.join().expect("no panic on the other thread");
    assert!(woke_in_time, "the timer never wakes before its deadline");
    assert_eq!(spawned, Ok(()), "the task ran on the runtime");
}

/// Runs `fut` on this thread, parked until woken.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
