//! State shared between the server thread and the [`MockServer`](crate::MockServer) handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::fault::Faults;
use crate::script::{Expectation, RecordedRequest};
use crate::sim::{Outgoing, Sim};
use crate::util::{asterisk_timestamp, wall_time};

/// Locks a mutex, recovering the data if a previous holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A function receiving the server's human-readable log lines.
pub(crate) type Logger = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// A configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) read_only: bool,
}

/// Where "now" comes from.
#[derive(Debug)]
pub(crate) enum Clock {
    Real(Instant),
    Simulated(Mutex<Duration>),
}

impl Clock {
    pub(crate) fn now(&self) -> Duration {
        match self {
            Clock::Real(start) => start.elapsed(),
            Clock::Simulated(now) => *lock(now),
        }
    }
}

/// A frame queued for one WebSocket connection.
#[derive(Debug)]
pub(crate) enum Frame {
    /// An event (or pushed frame): counts for "drop after N events".
    Event(String),
    /// A `RESTResponse`: does not count.
    Response(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// A command for one WebSocket connection task.
#[derive(Debug)]
pub(crate) enum ConnCmd {
    Send(Frame),
    /// Close now: abruptly (TCP close, no close frame) or with a close frame.
    Close {
        abrupt: bool,
        code: u16,
    },
    /// Close abruptly after this many more events.
    DropAfter(usize),
    /// Write a flood (see `bench.rs`).
    Flood(std::sync::Arc<crate::bench::FloodJob>),
    Pause,
    Resume,
    /// Outbound `enable_pingpongs`: a PING, or a close with 1001 when `probes` PINGs in a
    /// row went unanswered.
    Ping {
        probes: u32,
    },
}

/// Why a WebSocket connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed it (close frame or TCP close).
    ClientClosed,
    /// A fault injected by the test closed it ([`MockServer::drop_websocket`](crate::MockServer::drop_websocket) and friends).
    Dropped,
    /// The client did not read fast enough: a write did not complete within the write timeout,
    /// so the server dropped it, as Asterisk does.
    WriteTimeout,
    /// The connection had no `app` parameter: `MissingParams` was sent and it was closed.
    MissingParams,
    /// A read or write error.
    Error,
}

/// A WebSocket connection that has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedConnection {
    /// Connection number (1 for the first one).
    pub id: u64,
    /// The apps it asked for when it connected.
    pub apps: Vec<String>,
    /// Why it ended.
    pub reason: CloseReason,
}

#[derive(Debug)]
pub(crate) struct ConnEntry {
    pub(crate) tx: mpsc::UnboundedSender<ConnCmd>,
    /// Apps it currently holds.
    pub(crate) apps: Vec<String>,
    /// Apps it asked for.
    pub(crate) requested: Vec<String>,
    pub(crate) user: String,
    pub(crate) read_only: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) apps: HashMap<String, u64>,
    pub(crate) conns: HashMap<u64, ConnEntry>,
    pub(crate) closed: Vec<ClosedConnection>,
}

/// Everything the server thread and the handle share.
pub(crate) struct Shared {
    pub(crate) addr: SocketAddr,
    pub(crate) users: Vec<User>,
    /// `allowed_origins` for CORS (`*` allows any).
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) asterisk_id: String,
    pub(crate) api_docs: HashMap<String, Vec<u8>>,
    /// The older Asterisk the server pretends to be, if any.
    pub(crate) pretend: Option<crate::version::Pretend>,
    pub(crate) clock: Clock,
    pub(crate) start_wall: SystemTime,
    pub(crate) sim: Option<Mutex<Sim>>,
    pub(crate) sim_notify: Notify,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) registry_changed: Condvar,
    pub(crate) script: Mutex<Vec<Expectation>>,
    pub(crate) log: Mutex<Vec<RecordedRequest>>,
    pub(crate) log_changed: Condvar,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) logger: Option<Logger>,
    pub(crate) next_conn: AtomicU64,
    /// TCP connections accepted (refused ones included).
    pub(crate) connections_accepted: AtomicU64,
    /// HTTP sessions (connections, WebSockets included) open at once at most, like Asterisk's
    /// `sessionlimit` (`http.conf`, 100 by default): one more is closed at once.
    pub(crate) session_limit: usize,
    /// HTTP sessions open now, and the most ever open at once.
    pub(crate) sessions: crate::server::Sessions,
    /// REST requests answered, over HTTP and over WebSocket.
    pub(crate) rest_requests: AtomicU64,
    /// Close frames of the server's answered by the client (RFC 6455 §5.5.1).
    pub(crate) close_replies: AtomicU64,
    pub(crate) bench: Mutex<crate::bench::BenchState>,
    /// Open media sockets (`/media/<id>`) by connection id.
    pub(crate) media_conns:
        Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<crate::sim::MediaSignal>>>,
    /// Reports of closed media sockets.
    pub(crate) media_done: Mutex<Vec<crate::media_ws::MediaSessionReport>>,
    /// Where AudioSocket connections to make are sent (the dialer task).
    pub(crate) audiosocket_tx:
        Mutex<Option<tokio::sync::mpsc::UnboundedSender<crate::sim::MediaSignal>>>,
    /// While `true`, chan_websocket client connections wait before dialing
    /// ([`crate::MockServer::hold_media_connections`]).
    pub(crate) media_hold: tokio::sync::watch::Sender<bool>,
    /// Client connections waiting on [`Shared::media_hold`].
    pub(crate) media_held: std::sync::atomic::AtomicUsize,
    /// The outbound WebSocket side (the simulated Asterisk dialing the application).
    pub(crate) outbound: crate::outbound::Outbound,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("addr", &self.addr)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Emits one readable log line, if a logger is set.
    pub(crate) fn log(&self, line: impl FnOnce() -> String) {
        if let Some(l) = &self.logger {
            l(&line());
        }
    }

    /// Asterisk-style timestamp for "now".
    pub(crate) fn timestamp(&self) -> String {
        asterisk_timestamp(wall_time(self.start_wall, self.clock.now()))
    }

    pub(crate) fn find_user(&self, name: &str, password: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.name == name && u.password == password)
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Runs `f` on the simulator (if enabled) with the current time, then delivers the events
    /// it produced and wakes the timer task. A panic inside the simulator is caught and
    /// reported as `Err`.
    pub(crate) fn with_sim<R>(
        &self,
        f: impl FnOnce(&mut Sim, Duration) -> R,
    ) -> Option<Result<R, String>> {
        let sim = self.sim.as_ref()?;
        let mut guard = lock(sim);
        let now = self.clock.now();
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut guard, now))).map_err(panic_message);
        let events = catch_unwind(AssertUnwindSafe(|| guard.drain_events())).unwrap_or_default();
        self.dispatch(events);
        let mut signals =
            catch_unwind(AssertUnwindSafe(|| guard.drain_media_signals())).unwrap_or_default();
        while !signals.is_empty() {
            let mut unclosed = Vec::new();
            for signal in signals {
                if let crate::sim::MediaSignal::AudioSocketConnect { .. }
                | crate::sim::MediaSignal::WebSocketConnect { .. } = &signal
                {
                    crate::media_ws::audiosocket_connect(self, signal);
                    continue;
                }
                let id = signal.connection_id().to_owned();
                let is_close = matches!(signal, crate::sim::MediaSignal::Close { .. });
                let delivered = lock(&self.media_conns)
                    .get(&id)
                    .is_some_and(|tx| tx.send(signal).is_ok());
                if is_close && !delivered {
                    unclosed.push(id);
                }
            }
            // No socket task to close (it ended meanwhile): a channel waiting for its close
            // is destroyed now (nothing when it is gone already).
            signals = Vec::new();
            for id in unclosed {
                let _ = catch_unwind(AssertUnwindSafe(|| guard.media_hangup_done(now, &id)));
                let events =
                    catch_unwind(AssertUnwindSafe(|| guard.drain_events())).unwrap_or_default();
                self.dispatch(events);
                signals.extend(
                    catch_unwind(AssertUnwindSafe(|| guard.drain_media_signals()))
                        .unwrap_or_default(),
                );
            }
        }
        drop(guard);
        self.sim_notify.notify_one();
        Some(result)
    }

    /// Delivers simulator output to the connections holding each app.
    pub(crate) fn dispatch(&self, events: Vec<Outgoing>) {
        if events.is_empty() {
            return;
        }
        let mut reg = lock(&self.registry);
        for o in events {
            let text = o.event.to_string();
            let ty = event_type(&o.event);
            let tx = reg
                .apps
                .get(&o.app)
                .and_then(|id| reg.conns.get(id))
                .map(|c| c.tx.clone());
            match tx {
                Some(tx) => {
                    let _ = tx.send(ConnCmd::Send(Frame::Event(text)));
                    if ty == "StasisEnd" {
                        crate::outbound::stasis_end(self, &o.app);
                    }
                }
                None if crate::outbound::unrouted(self, &mut reg, &o.app, ty, text) => {}
                None => self.log(|| {
                    format!(
                        "event {} for app {} dropped: no connection holds it",
                        event_type(&o.event),
                        o.app
                    )
                }),
            }
        }
    }

    /// Sends a command to every connection holding `app` (or to all when `app` is `None`).
    /// Returns how many connections got it.
    pub(crate) fn command(&self, app: Option<&str>, mut make: impl FnMut() -> ConnCmd) -> usize {
        let reg = lock(&self.registry);
        match app {
            Some(app) => match reg.apps.get(app).and_then(|id| reg.conns.get(id)) {
                Some(c) => usize::from(c.tx.send(make()).is_ok()),
                None => 0,
            },
            None => reg
                .conns
                .values()
                .filter(|c| c.tx.send(make()).is_ok())
                .count(),
        }
    }

    /// Removes a connection, tells the simulator its apps are gone, then records why it
    /// closed (so a test that saw it in [`Registry::closed`] also sees the simulator updated).
    pub(crate) fn connection_closed(&self, id: u64, reason: CloseReason) {
        let (held, requested) = {
            let mut reg = lock(&self.registry);
            let Some(entry) = reg.conns.remove(&id) else {
                return;
            };
            for app in &entry.apps {
                if reg.apps.get(app) == Some(&id) {
                    reg.apps.remove(app);
                }
            }
            (entry.apps, entry.requested)
        };
        self.log(|| format!("ws#{id} closed ({reason:?}), apps {}", held.join(",")));
        for app in &held {
            // Under the simulator lock, so a connection registering the same app meanwhile
            // (registry first, then simulator) is never undone by this.
            self.with_sim(|sim, now| {
                if !lock(&self.registry).apps.contains_key(app) {
                    sim.app_disconnected(now, app);
                }
            });
        }
        let mut reg = lock(&self.registry);
        reg.closed.push(ClosedConnection {
            id,
            apps: requested,
            reason,
        });
        self.registry_changed.notify_all();
    }
}

/// The `type` of an event, for log lines.
pub(crate) fn event_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("?")
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "simulator panicked".to_owned()
    }
}
