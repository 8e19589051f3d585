//! One timer for the request timeouts of a client, instead of one per request.
//!
//! Every request of a client has the same timeout, so their deadlines come in the order the
//! requests start: a queue. One task sleeps until the oldest deadline still pending and fails
//! the requests whose deadline has passed; a request that completes only leaves the queue
//! (nothing to arm or cancel in the runtime's timers, which on some runtimes costs a system
//! call per request). The task is started by the first request, ends when it wakes with no
//! request pending, and is ended by [`Deadlines::close`] or by dropping the [`Deadlines`]
//! (the client's last handle).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::runtime::Executor;

/// The request deadlines of one client (see the module docs). Dropping it ends its task.
pub(crate) struct Deadlines {
    state: Arc<State>,
}

struct State {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// A task is sleeping until `order`'s front (or is about to look at it).
    running: bool,
    closed: bool,
    /// Deadlines in the order requests started (keys of completed requests are left for the
    /// task, or the next request, to pop).
    order: VecDeque<(Instant, Key)>,
    /// Requests pending (a slab: no hashing per request).
    slots: Vec<Slot>,
    /// Free places in `slots`.
    free: Vec<u32>,
    /// Entries in `slots`.
    pending: usize,
    /// The timer task, to end it early.
    task: Option<Waker>,
}

/// A place in the slab and its generation (bumped when the place is freed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    index: u32,
    generation: u32,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// A pending request: whether its deadline passed, and its task.
#[derive(Default)]
struct Entry {
    expired: bool,
    waker: Option<Waker>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn insert(&mut self) -> Key {
        self.pending += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = Some(Entry::default());
            return Key {
                index,
                generation: slot.generation,
            };
        }
        let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            generation: 0,
            entry: Some(Entry::default()),
        });
        Key {
            index,
            generation: 0,
        }
    }

    fn get_mut(&mut self, key: Key) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.entry.as_mut()
    }

    fn contains(&self, key: Key) -> bool {
        self.slots
            .get(key.index as usize)
            .is_some_and(|s| s.generation == key.generation && s.entry.is_some())
    }

    fn remove(&mut self, key: Key) {
        let Some(slot) = self.slots.get_mut(key.index as usize) else {
            return;
        };
        if slot.generation == key.generation && slot.entry.take().is_some() {
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(key.index);
            self.pending -= 1;
        }
    }

    /// Pops the queue's front entries of requests no longer pending.
    fn prune(&mut self) {
        while let Some(&(_, key)) = self.order.front() {
            if self.contains(key) {
                break;
            }
            self.order.pop_front();
        }
        // A request pending for long at the front holds the completed ones behind it: keep
        // the queue within twice the pending requests.
        if self.order.len() > 64 && self.order.len() > 2 * self.pending {
            let order = std::mem::take(&mut self.order);
            self.order = order
                .into_iter()
                .filter(|&(_, k)| self.contains(k))
                .collect();
        }
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            state: Arc::new(State {
                inner: Mutex::new(Inner::default()),
            }),
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.close();
    }
}

/// Why [`Deadlines::run`] returned without the future's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The deadline passed.
    Expired,
    /// The deadlines were closed (the client was closed) before the future completed.
    Closed,
}

impl Stopped {
    /// The error of a request `operation` with this `timeout` that stopped so.
    pub(crate) fn into_error(self, operation: &'static str, timeout: Duration) -> Error {
        match self {
            Stopped::Expired => Error::Timeout {
                operation,
                after: timeout,
            },
            Stopped::Closed => Error::closed("the client was closed while the request was pending"),
        }
    }
}

impl Deadlines {
    /// Ends the timer task and the requests still pending: they return
    /// [`Stopped::Closed`] (the client is closed: a request left running would have no
    /// deadline any more, and new requests fail before they get here).
    pub(crate) fn close(&self) {
        let (task, pending) = {
            let mut inner = self.state.lock();
            inner.closed = true;
            let pending: Vec<Waker> = inner
                .slots
                .iter_mut()
                .filter_map(|s| s.entry.as_mut()?.waker.take())
                .collect();
            (inner.task.take(), pending)
        };
        if let Some(task) = task {
            task.wake();
        }
        pending.into_iter().for_each(Waker::wake);
    }

    /// Runs `fut` until `deadline` (which must not come before the deadline of any request
    /// started earlier, give or take the clock's reading: every request has the same timeout).
    pub(crate) async fn run<E: Executor, F: Future>(
        &self,
        executor: &E,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Stopped> {
        let key = {
            let mut inner = self.state.lock();
            inner.prune();
            let key = inner.insert();
            inner.order.push_back((deadline, key));
            if !inner.running && !inner.closed {
                inner.running = true;
                executor.spawn(timer_task(executor.clone(), Arc::downgrade(&self.state)));
            }
            key
        };
        let guard = Registered {
            state: &self.state,
            key,
        };
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            let mut inner = guard.state.lock();
            if inner.closed {
                return Poll::Ready(Err(Stopped::Closed));
            }
            let Some(entry) = inner.get_mut(guard.key) else {
                return Poll::Pending; // not reached: removed only by the guard
            };
            if entry.expired {
                return Poll::Ready(Err(Stopped::Expired));
            }
            match &entry.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => entry.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

/// A request's entry, removed when the request ends (completed, expired or dropped).
struct Registered<'a> {
    state: &'a Arc<State>,
    key: Key,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.state.lock().remove(self.key);
    }
}

/// Sleeps until the oldest pending deadline, fails the requests past their deadline, again;
/// ends when none is pending, or the deadlines are closed or dropped.
async fn timer_task<E: Executor>(executor: E, state: Weak<State>) {
    loop {
        let next = {
            let Some(state) = state.upgrade() else {
                return;
            };
            let now = executor.now();
            let mut expired = Vec::new();
            let mut inner = state.lock();
            inner.prune();
            let next = loop {
                let Some(&(deadline, key)) = inner.order.front() else {
                    break None;
                };
                if deadline > now {
                    break Some(deadline);
                }
                inner.order.pop_front();
                if let Some(entry) = inner.get_mut(key) {
                    entry.expired = true;
                    expired.extend(entry.waker.take());
                }
            };
            if inner.closed || next.is_none() {
                inner.running = false;
                inner.task = None;
            }
            let next = if inner.closed { None } else { next };
            drop(inner);
            expired.into_iter().for_each(Waker::wake);
            next
        };
        let Some(next) = next else {
            return;
        };
        let mut sleep = std::pin::pin!(executor.sleep_until(next));
        std::future::poll_fn(|cx| {
            let Some(state) = state.upgrade() else {
                return Poll::Ready(());
            };
            {
                let mut inner = state.lock();
                if inner.closed {
                    inner.running = false;
                    return Poll::Ready(());
                }
                match &inner.task {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => inner.task = Some(cx.waker().clone()),
                }
            }
            sleep.as_mut().poll(cx)
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready, Future};
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use futures_util::task::noop_waker_ref;

    use super::{Deadlines, Stopped};
    use crate::runtime::Executor;

    use crate::manual_executor::Manual;

    fn poll<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn one_task_fails_the_requests_past_their_deadline_then_ends() {
        let ex = Manual::new();
        let d = Deadlines::default();
        let timeout = Duration::from_secs(10);
        let mut slow = pin!(d.run(&ex, ex.now() + timeout, pending::<()>()));
        assert!(poll(slow.as_mut()).is_pending());
        // Requests that complete leave no timer behind, and start no other task.
        for i in 0..100 {
            let quick = pin!(d.run(&ex, ex.now() + timeout, ready(i)));
            assert!(matches!(poll(quick), Poll::Ready(Ok(n)) if n == i));
        }
        assert_eq!(ex.run(), 1, "one timer task");
        ex.advance(Duration::from_secs(5));
        let mut later = pin!(d.run(&ex, ex.now() + timeout, pending::<()>()));
        assert!(poll(later.as_mut()).is_pending());
        assert_eq!(ex.run(), 1);
        assert!(poll(slow.as_mut()).is_pending(), "not before its deadline");

        ex.advance(Duration::from_secs(5));
        assert_eq!(ex.run(), 1, "the later request is still pending");
        assert!(matches!(
            poll(slow.as_mut()),
            Poll::Ready(Err(Stopped::Expired))
        ));
        assert!(poll(later.as_mut()).is_pending());

        ex.advance(Duration::from_secs(5));
        assert_eq!(ex.run(), 0, "nothing pending: the task ended");
        assert!(matches!(
            poll(later.as_mut()),
            Poll::Ready(Err(Stopped::Expired))
        ));
        assert_eq!(d.state.lock().pending, 0);
        assert!(d.state.lock().order.is_empty());
    }

    #[test]
    fn close_and_drop_end_the_task() {
        let ex = Manual::new();
        let d = Deadlines::default();
        let deadline = ex.now() + Duration::from_secs(10);
        let mut waiting = pin!(d.run(&ex, deadline, pending::<()>()));
        assert!(poll(waiting.as_mut()).is_pending());
        assert_eq!(ex.run(), 1);
        d.close();
        assert_eq!(ex.run(), 0, "closed: the task ended");
        assert!(
            matches!(poll(waiting.as_mut()), Poll::Ready(Err(Stopped::Closed))),
            "the pending request ends with the deadlines, instead of running without one"
        );

        let ex = Manual::new();
        let d = Deadlines::default();
        {
            let waiting = pin!(d.run(&ex, ex.now() + Duration::from_secs(10), pending::<()>()));
            assert!(poll(waiting).is_pending());
            assert_eq!(ex.run(), 1);
        }
        // The request is gone; the task sleeps until its deadline, or until the drop.
        assert_eq!(ex.run(), 1);
        drop(d);
        assert_eq!(ex.run(), 0, "dropped: the task ended");
    }
}
