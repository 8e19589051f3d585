//! Stream consumers under a flood: the reader waits (boundedly) for a consumer that keeps
//! up, and reads on past one that stalls, counting and signalling its overflow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ari_client::{Event, Runtime};
use ari_testkit::{FloodSpec, MockServer, FLOOD_DONE_EVENT};
use futures::StreamExt;

use crate::Harness;

/// Returns `Pending` once (waking itself): lets every other task of the thread run, on any
/// executor.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn is_done(e: &Event) -> bool {
    matches!(e, Event::ChannelUserevent(u) if u.eventname == FLOOD_DONE_EVENT)
}

/// A flood of 20,000 events over 200 channels read by one `event_stream()` with the default
/// queue (1,024) whose consumer yields to the executor after every event: it loses none
/// (no `Lagged`, nothing dropped, no stall), and Asterisk never drops the client. Without
/// the reader waiting for it, the reader fills the queue before such a consumer runs.
pub async fn stream_consumer_that_keeps_up_loses_no_event_of_a_flood<R: Runtime>(h: &Harness<R>) {
    const EVENTS: usize = 20_000;
    let app = "conf-flood-keeps-up";
    let server = Arc::new(
        MockServer::builder()
            .sim_config(crate::fast_sim_config())
            .write_timeout(Duration::from_secs(10))
            .start(),
    );
    // A generous wait: a consumer that keeps up must never be taken for a stalled one on a
    // loaded machine (the default is measured by ari-bench).
    let c = h
        .builder_for(&server)
        .stream_wait(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let mut stream = c.event_stream();
    h.live("start", c.start(&[app])).await.unwrap();
    let flood = {
        let server = server.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(server.flood(FloodSpec::new(app, EVENTS, 200)));
        });
        rx
    };
    // The consumer is a task of the client's runtime, as the reader is (on a one-thread
    // executor they share the thread: the reader must give the consumer its turn).
    let (tx, consumed) = futures::channel::oneshot::channel();
    h.runtime().spawn(async move {
        let (mut received, mut lagged) = (0usize, 0u64);
        while let Some(item) = stream.next().await {
            match item {
                Ok(e) if is_done(&e) => break,
                Ok(_) => received += 1,
                Err(l) => lagged += l.0,
            }
            YieldNow(false).await;
        }
        let _ = tx.send((received, lagged));
    });
    let (received, lagged) = h
        .live("the flood reaches the consumer", consumed)
        .await
        .expect("the consumer reports");
    let report = h
        .live("the flood is written", flood)
        .await
        .expect("the flood thread answers")
        .expect("the flood is written");
    assert_eq!(report.events, EVENTS as u64, "{report:?}");
    assert_eq!(lagged, 0, "no lag marker");
    assert_eq!(received, EVENTS, "every event reached the consumer");
    let stats = c.stats();
    assert_eq!(stats.dropped_events, 0, "{stats:?}");
    assert_eq!(stats.stream_stalls, 0, "{stats:?}");
    assert!(server.closed_connections().is_empty());
    assert!(c.is_connected());
}

/// A consumer that stalls past the reader's wait (a stream never polled during a flood of
/// 20,000 events): the reader reads on (a stream that keeps up beside it gets every event
/// while the other stalls, and the flood is written), the stall is counted
/// (`stream_stalls`), the overflow is counted (`dropped_events`) and signalled to the
/// stalled stream (`Lagged` with the number dropped, then the newest events it kept, the
/// flood's last one included).
pub async fn stream_consumer_that_stalls_lags_while_the_socket_is_read<R: Runtime>(h: &Harness<R>) {
    const EVENTS: usize = 20_000;
    const CAPACITY: usize = 1024;
    let app = "conf-flood-stalls";
    let server = Arc::new(
        MockServer::builder()
            .sim_config(crate::fast_sim_config())
            .send_buffer_size(4096)
            .start(),
    );
    let c = h
        .builder_for(&server)
        // Longer than the default so that the stream that keeps up is never taken for a
        // stalled one on a loaded machine.
        .stream_wait(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let mut stalled = c.event_stream();
    let mut keeps_up = c.event_stream();
    h.live("start", c.start(&[app])).await.unwrap();
    let flood = {
        let server = server.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(server.flood(FloodSpec::new(app, EVENTS, 100)));
        });
        rx
    };
    let (received, lagged) = h
        .live("the flood reaches the consumer that keeps up", async {
            let (mut received, mut lagged) = (0usize, 0u64);
            while let Some(item) = keeps_up.next().await {
                match item {
                    Ok(e) if is_done(&e) => break,
                    Ok(_) => received += 1,
                    Err(l) => lagged += l.0,
                }
            }
            (received, lagged)
        })
        .await;
    let report = h
        .live("the flood is written", flood)
        .await
        .expect("the flood thread answers")
        .expect("the flood is written: the socket kept being read");
    assert_eq!(report.events, EVENTS as u64, "{report:?}");
    assert!(
        server.closed_connections().is_empty(),
        "Asterisk never dropped the client: {:?}",
        server.closed_connections()
    );
    assert!(c.is_connected());
    assert_eq!((received, lagged), (EVENTS, 0), "the other stream kept up");

    // The flood's events and its `bench-done`: the stalled stream kept the newest CAPACITY.
    let total = EVENTS + 1;
    let dropped = (total - CAPACITY) as u64;
    let stats = c.stats();
    assert!(stats.stream_stalls >= 1, "the stall is counted: {stats:?}");
    assert_eq!(stats.dropped_events, dropped, "{stats:?}");
    match h.live("lag marker", stalled.next()).await {
        Some(Err(l)) => assert_eq!(l.0, dropped),
        other => panic!("expected Lagged({dropped}), got {other:?}"),
    }
    let mut kept = 0;
    let mut last = None;
    while kept < CAPACITY {
        match h.live("a kept event", stalled.next()).await {
            Some(Ok(e)) => {
                kept += 1;
                last = Some(e);
            }
            other => panic!("kept event {kept}: {other:?}"),
        }
    }
    assert!(
        last.as_ref().is_some_and(is_done),
        "the newest event is kept: {last:?}"
    );
    assert_eq!(stalled.queued(), 0);
}
