//! A runtime of one's own needs only an executor and a connector: the conformance suite on a
//! single-threaded `futures` thread pool with async-io timers, and `SmolConnector`'s async-io
//! sockets (no smol executor involved).

use std::future::Future;
use std::time::{Instant, SystemTime};

use ari_smol::{Executor, SmolConnector, Stack};
use futures::executor::ThreadPool;

/// Tasks on a one-thread `futures` pool; timers from async-io.
#[derive(Debug, Clone)]
struct PoolExecutor(ThreadPool);

impl Default for PoolExecutor {
    fn default() -> Self {
        PoolExecutor(
            ThreadPool::builder()
                .pool_size(1)
                .create()
                .expect("a thread pool"),
        )
    }
}

impl Executor for PoolExecutor {
    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn_ok(fut);
    }

    #[allow(clippy::manual_async_fn)] // `'static`, not borrowing `self`
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        async move {
            async_io::Timer::at(deadline).await;
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }
}

type PoolRuntime = Stack<PoolExecutor, SmolConnector>;

ari_conformance::conformance_suite! {
    runtime: PoolRuntime::new,
    block_on: futures::executor::block_on,
}
