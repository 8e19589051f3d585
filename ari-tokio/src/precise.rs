//! The precise sleep behind [`TokioExecutor::sleep_until_precise`](crate::TokioExecutor):
//! a Linux `timerfd` on tokio's own reactor.
//!
//! tokio's timer wheel rounds a deadline up to its next whole-millisecond tick and parks in
//! `epoll_wait` with a whole-millisecond timeout, so `tokio::time::sleep_until` ends 0 to 2 ms
//! (about 1.2 ms on average) late: nothing for a request timeout, most of the budget of the
//! media pacer, whose ticks are 1 ms apart and must each send their frames within 2 ms.
//!
//! A `timerfd` armed with the nanoseconds left and registered with the runtime's reactor
//! becomes readable at the deadline (within the kernel's timer slack, 50 µs by default), which
//! ends the worker's `epoll_wait` at once; the reactor wakes the task like any socket's (no
//! thread of its own). The descriptor lives as long as the sleep.
//!
//! The timerfd counts the monotonic clock (`Instant::now()`), tokio's clock except under
//! tokio's paused test clock. So tokio's own `sleep_until` is armed beside it and the sleep
//! ends at the first of the two that reached the deadline by tokio's clock: tokio's under a
//! paused clock or when no descriptor can be had. On other systems the sleep is tokio's alone.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

/// Sleeps until `deadline` by tokio's clock (never less); at the deadline within the
/// kernel's timer slack where a timerfd can be used.
pub(crate) async fn sleep_until(deadline: Instant) {
    let deadline_tokio = tokio::time::Instant::from_std(deadline);
    if tokio::time::Instant::now() >= deadline_tokio {
        return;
    }
    let mut coarse = pin!(tokio::time::sleep_until(deadline_tokio));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut fine = pin!(timerfd::sleep_until(deadline));
        let mut fine_done = false;
        std::future::poll_fn(|cx| {
            if coarse.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if !fine_done {
                if let Poll::Ready(r) = fine.as_mut().poll(cx) {
                    fine_done = true;
                    if let Err(e) = r {
                        timerfd::unavailable(&e);
                    }
                    // By tokio's clock too (it is another only while paused in a test).
                    if tokio::time::Instant::now() >= deadline_tokio {
                        return Poll::Ready(());
                    }
                }
            }
            Poll::Pending
        })
        .await;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    coarse.await;
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod timerfd {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// Says once per process that the precise timer could not be used.
    pub(crate) fn unavailable(e: &io::Error) {
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "precise timer (timerfd) unavailable: the media pacer's ticks use tokio's 1 ms \
                 timer and may be up to 2 ms late (said once)"
            );
        }
    }

    /// A timerfd of the monotonic clock armed to fire once, `left` from now.
    pub(crate) fn armed(left: Duration) -> io::Result<OwnedFd> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // A zero value would disarm it: at least a nanosecond.
        let left = left.max(Duration::from_nanos(1));
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        timerfd_settime(
            &fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        Ok(fd)
    }

    /// Sleeps until `deadline` by the system's monotonic clock (never less), woken by the
    /// reactor of the tokio runtime it runs on.
    pub(crate) async fn sleep_until(deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        // Deprecated because a `T: AsRawFd` could hand out another descriptor than the one
        // registered (tokio#8587); an `OwnedFd` always hands out its own: this use is sound.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(armed(left)?, Interest::READABLE)?;
        loop {
            let mut ready = fd.readable().await?;
            if Instant::now() >= deadline {
                return Ok(());
            }
            // Not the expiry (the reactor may report readiness spuriously): wait again.
            ready.clear_ready();
        }
    }
}
