//! A hand-driven [`Executor`] for the crate's unit tests: a clock moved by the test and tasks
//! polled only when the test says so, so that timer-driven code runs deterministically.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_util::task::noop_waker_ref;

use crate::runtime::Executor;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An executor driven by hand: a clock moved by the test, tasks polled by `run`.
#[derive(Clone)]
pub(crate) struct Manual {
    clock: Arc<Mutex<Instant>>,
    tasks: Arc<Mutex<Vec<Task>>>,
    /// Calls of `sleep_until` and of `sleep_until_precise`.
    plain: Arc<AtomicUsize>,
    precise: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Manual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Manual")
    }
}

impl Manual {
    #[allow(clippy::disallowed_methods)] // the hand-moved clock starts anywhere
    pub(crate) fn new() -> Self {
        Manual {
            clock: Arc::new(Mutex::new(Instant::now())),
            tasks: Arc::default(),
            plain: Arc::default(),
            precise: Arc::default(),
        }
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, d: Duration) {
        *self.clock.lock().unwrap() += d;
    }

    /// How many sleeps were asked of the timer: `(sleep_until, sleep_until_precise)`.
    pub(crate) fn sleeps(&self) -> (usize, usize) {
        (
            self.plain.load(Ordering::Relaxed),
            self.precise.load(Ordering::Relaxed),
        )
    }

    /// A sleep by the hand-moved clock.
    fn sleep(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        let clock = Arc::clone(&self.clock);
        std::future::poll_fn(move |_| {
            if *clock.lock().unwrap() >= deadline {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Polls every task once; returns how many are left.
    pub(crate) fn run(&self) -> usize {
        self.run_rounds(1)
    }

    /// Polls every task four rounds (what one task wakes, the next round runs: enough for a
    /// timer's task to reach the tasks it hands work to); returns how many are left.
    pub(crate) fn settle(&self) -> usize {
        self.run_rounds(4)
    }

    fn run_rounds(&self, rounds: usize) -> usize {
        for _ in 0..rounds {
            let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
            let mut cx = Context::from_waker(noop_waker_ref());
            tasks.retain_mut(|t| t.as_mut().poll(&mut cx).is_pending());
            self.tasks.lock().unwrap().extend(tasks);
        }
        self.tasks.lock().unwrap().len()
    }
}

impl Executor for Manual {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.lock().unwrap().push(Box::pin(fut));
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.plain.fetch_add(1, Ordering::Relaxed);
        self.sleep(deadline)
    }

    fn sleep_until_precise(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        self.precise.fetch_add(1, Ordering::Relaxed);
        self.sleep(deadline)
    }

    fn now(&self) -> Instant {
        *self.clock.lock().unwrap()
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
    }
}
