//! chan_websocket's client connection type: Asterisk dials the application's media server.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use ari_proto::media::websocket::{ControlFormat, MediaConfig, MediaSession as Core};
use ari_proto::outbound::check_basic;
use ari_proto::rest::Credentials;
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt;

use crate::error::Error;
use crate::instances::Channel;
use crate::media::{open, Dialled, MediaOptions, MediaSession};
use crate::runtime::{
    Connector, Executor, Listener, TransportError, TransportErrorKind, WsMessage,
};
use crate::stack::{accept_websocket, MaybeTlsStream, Stack, WebSocket};

/// The query parameter that carries a session's token in Asterisk's request URI (added with
/// the `v()` dial option).
pub const TOKEN_PARAM: &str = "ari_media";

type Socket<C> = WebSocket<MaybeTlsStream<<C as Connector>::Stream>>;
type Handover<C> = oneshot::Sender<Box<(Socket<C>, String)>>;

/// A session waiting for its socket: the media channel it created, and where the socket
/// goes.
struct Waiting<C: Connector> {
    media_id: String,
    handover: Handover<C>,
}

/// Tokens issued recently that a connection may still carry: Asterisk keeps the `v()`
/// parameters in the shared websocket_client object (bug B1), so a connection can carry the
/// token of another call, one that may have got its socket already.
const RECENT_TOKENS: usize = 256;

/// Counters of a [`MediaServer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaServerStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Sessions handed over.
    pub sessions: u64,
    /// Connections that belong to no waiting session: refused with 404 (no token, or one
    /// this server did not issue recently), or closed after `MEDIA_START` named a media
    /// channel no session waits for.
    pub unknown: u64,
    /// Upgrades refused with 401: credentials required
    /// ([`MediaServer::credentials`]) and missing or wrong.
    pub unauthorized: u64,
    /// Connections that failed: upgrade, no `MEDIA_START` in time, or the session had
    /// given up waiting.
    pub failed: u64,
}

struct Shared<E: Executor, C: Connector> {
    runtime: Stack<E, C>,
    /// By token.
    waiting: Mutex<HashMap<String, Waiting<C>>>,
    /// The last [`RECENT_TOKENS`] tokens issued, oldest first.
    recent: Mutex<std::collections::VecDeque<String>>,
    stopping: AtomicBool,
    stop_waker: Mutex<Option<Waker>>,
    handshake_timeout: Duration,
    /// The Basic credentials Asterisk must present, if any.
    credentials: Mutex<Option<Credentials>>,
    connections: AtomicU64,
    sessions: AtomicU64,
    unknown: AtomicU64,
    unauthorized: AtomicU64,
    failed: AtomicU64,
}

impl<E: Executor, C: Connector> Shared<E, C> {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Waiting<C>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recent(&self) -> MutexGuard<'_, std::collections::VecDeque<String>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a connection carrying `token` may be upgraded: a session waits for it, or
    /// this server issued it recently (B1: the connection may be another call's).
    fn known(&self, token: &str) -> bool {
        self.waiting().contains_key(token) || self.recent().iter().any(|t| t == token)
    }

    /// Takes the waiting session a connection belongs to: the one whose media channel
    /// `MEDIA_START` names, whatever the token; by the token only when `MEDIA_START` names
    /// no channel (before Asterisk 20.17).
    fn take_waiting(&self, token: &str, channel_id: Option<&str>) -> Option<Handover<C>> {
        let mut waiting = self.waiting();
        let key = match channel_id {
            Some(id) => waiting
                .iter()
                .find(|(_, w)| w.media_id == id)
                .map(|(k, _)| k.clone())?,
            None => token.to_owned(),
        };
        waiting.remove(&key).map(|w| w.handover)
    }
}

/// The application's media WebSocket server, for chan_websocket's **client** connection
/// type: Asterisk connects to it (`websocket_client.conf`: `uri =
/// ws://<this address>/<any path>`, `protocols = media`) for each media channel.
///
/// [`MediaServer::open`] is [`Channel::media`] in that mode: it makes the externalMedia
/// channel with `connection_type=client`, `external_host=<websocket_client id>` and the
/// dial option `v(ari_media=<token>)`, so Asterisk's request URI carries a token this
/// server recognises (the socket may arrive before the externalMedia answer; the server
/// listens first). Connections with no or an unknown token are refused with 404 and
/// counted. Asterisk keeps `v()` parameters in the shared websocket_client object (bug B1),
/// so concurrent calls' connections can carry each other's token: a socket goes to the
/// session whose media channel its `MEDIA_START` names (`channel_id`, Asterisk 20.17+),
/// whatever its token. The session is the same [`MediaSession`] as in server mode.
///
/// ```no_run
/// # async fn demo<E: ari_client::Executor, C: ari_client::Connector>(runtime: ari_client::Stack<E, C>, call: ari_client::Channel<ari_client::Stack<E, C>>) -> Result<(), ari_client::Error> {
/// use ari_client::media::{MediaOptions, MediaServer};
/// let server = MediaServer::bind(runtime, "0.0.0.0:8787".parse().unwrap()).await?;
/// // websocket_client.conf: [media_app] type=websocket_client uri=ws://app:8787/media protocols=media
/// let media = server
///     .open(&call, "media_app", MediaOptions::new("media", "slin16"))
///     .await?;
/// # let _ = media; Ok(()) }
/// ```
pub struct MediaServer<E: Executor, C: Connector> {
    shared: Arc<Shared<E, C>>,
    local_addr: SocketAddr,
}

impl<E: Executor, C: Connector> fmt::Debug for MediaServer<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaServer")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<E: Executor, C: Connector> Drop for MediaServer<E, C> {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        let waker = self
            .shared
            .stop_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::Transport(
        TransportError::new(TransportErrorKind::Io, format!("{what}: {e}")).with_source(e),
    )
}

impl<E: Executor, C: Connector> MediaServer<E, C> {
    /// Binds `addr` and starts accepting.
    pub async fn bind(runtime: Stack<E, C>, addr: SocketAddr) -> Result<Self, Error> {
        let listener = runtime
            .connector()
            .bind(addr)
            .await
            .map_err(|e| io_error(format!("bind {addr}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| io_error(format!("local address of {addr}"), e))?;
        let shared = Arc::new(Shared {
            runtime: runtime.clone(),
            waiting: Mutex::new(HashMap::new()),
            recent: Mutex::new(std::collections::VecDeque::new()),
            stopping: AtomicBool::new(false),
            stop_waker: Mutex::new(None),
            handshake_timeout: Duration::from_secs(10),
            credentials: Mutex::new(None),
            connections: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        runtime.spawn(accept_loop(Arc::downgrade(&shared), listener));
        Ok(MediaServer { shared, local_addr })
    }

    /// Requires Basic credentials on every upgrade: the `username` and `password` of the
    /// `websocket_client.conf` entry Asterisk dials with (it sends `Authorization: Basic …`
    /// when both are set). A connection with missing or wrong credentials is refused with
    /// 401 before its token is looked at, and counted
    /// ([`MediaServerStats::unauthorized`]); the password never appears in logs or errors.
    /// Without this call any connection with a known token is accepted.
    ///
    /// ```no_run
    /// # async fn demo<E: ari_client::Executor, C: ari_client::Connector>(runtime: ari_client::Stack<E, C>) -> Result<(), ari_client::Error> {
    /// use ari_client::media::MediaServer;
    /// // websocket_client.conf: [media_app] … username = media  password = s3cret
    /// let server = MediaServer::bind(runtime, "0.0.0.0:8787".parse().unwrap())
    ///     .await?
    ///     .credentials("media", "s3cret")?;
    /// # let _ = server; Ok(()) }
    /// ```
    pub fn credentials(self, user: &str, password: &str) -> Result<Self, Error> {
        let credentials = Credentials::new(user, password).map_err(Error::Build)?;
        *self
            .shared
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(credentials);
        Ok(self)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> MediaServerStats {
        let s = &self.shared;
        MediaServerStats {
            connections: s.connections.load(Ordering::Relaxed),
            sessions: s.sessions.load(Ordering::Relaxed),
            unknown: s.unknown.load(Ordering::Relaxed),
            unauthorized: s.unauthorized.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// Opens a media session on `call` with Asterisk connecting to this server through the
    /// websocket_client `websocket_client` (see the type's docs). Waits up to
    /// [`MediaOptions::start_timeout`] for the connection and its `MEDIA_START`, and fails
    /// at once, naming the entry, if Asterisk hangs the media channel up before connecting
    /// (it could not reach this server: a wrong `uri`, a firewall).
    pub async fn open(
        &self,
        call: &Channel<Stack<E, C>>,
        websocket_client: &str,
        options: MediaOptions,
    ) -> Result<MediaSession, Error> {
        let client = call.client().clone();
        let token = client.new_resource_id();
        let media_id = client.new_resource_id();
        let (tx, rx) = oneshot::channel();
        self.shared.waiting().insert(
            token.clone(),
            Waiting {
                media_id: media_id.clone(),
                handover: tx,
            },
        );
        {
            let mut recent = self.shared.recent();
            if recent.len() == RECENT_TOKENS {
                recent.pop_front();
            }
            recent.push_back(token.clone());
        }
        // Gone from the map however `open` ends.
        let _guard = Unregister {
            shared: &self.shared,
            token: &token,
        };
        let format = if options.json {
            ControlFormat::Json
        } else {
            ControlFormat::PlainText
        };
        let config = options
            .config
            .clone()
            .control_format(format)
            .passthrough(options.passthrough || options.config.passthrough)
            .direction(options.direction.unwrap_or(options.config.direction))
            .mark_media(crate::media::mark_media(&client, &options));
        let socket = Box::pin(async move {
            let handed = rx.await.map_err(|_| {
                Error::Transport(TransportError::new(
                    TransportErrorKind::Closed,
                    "the media server stopped",
                ))
            })?;
            let (ws, first) = *handed;
            let mut core = Core::new(config);
            core.handle_text(&first);
            Ok((ws, core))
        });
        let dialled = Dialled {
            media_id,
            websocket_client: websocket_client.to_owned(),
            transport_data: format!("v({TOKEN_PARAM}={token})"),
            socket,
        };
        open(client, call.clone(), options, Some(dialled)).await
    }
}

struct Unregister<'a, E: Executor, C: Connector> {
    shared: &'a Shared<E, C>,
    token: &'a str,
}

impl<E: Executor, C: Connector> Drop for Unregister<'_, E, C> {
    fn drop(&mut self) {
        self.shared.waiting().remove(self.token);
    }
}

fn stopped<E: Executor, C: Connector>(
    s: &Shared<E, C>,
) -> impl std::future::Future<Output = ()> + '_ {
    futures_util::future::poll_fn(move |cx| {
        if s.stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *s.stop_waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        if s.stopping.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    })
}

async fn accept_loop<E: Executor, C: Connector>(shared: Weak<Shared<E, C>>, listener: C::Listener) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            let stop = std::pin::pin!(stopped(&s));
            match select(accept, stop).await {
                Either::Left((res, _)) => res,
                Either::Right(_) => return,
            }
        };
        match accepted {
            Ok((conn, _peer)) => {
                s.connections.fetch_add(1, Ordering::Relaxed);
                let runtime = s.runtime.clone();
                runtime.spawn(handshake(s.clone(), conn));
            }
            Err(e) => {
                tracing::warn!(target: "ari_client", error = %e, "media server: accept failed");
                let at = s.runtime.now() + Duration::from_millis(10);
                s.runtime.sleep_until(at).await;
            }
        }
    }
}

/// Why a connection did not become a session.
#[derive(Clone, Copy)]
enum Refusal {
    /// 404: no token, or one nobody waits for.
    Unknown,
    /// 401: missing or wrong credentials.
    Unauthorized,
    /// The upgrade, `MEDIA_START` or the deadline failed.
    Failed,
}

/// The token in a request URI's query, if any.
fn token_of(uri: &http::Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == TOKEN_PARAM && !v.is_empty()).then(|| v.to_owned())
    })
}

async fn handshake<E: Executor, C: Connector>(s: Arc<Shared<E, C>>, conn: C::Stream) {
    let deadline = s.runtime.now() + s.handshake_timeout;
    let credentials = s
        .credentials
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let work = async {
        let mut token = None;
        let mut refused = Refusal::Failed;
        let known = |t: &Option<String>| t.as_ref().is_some_and(|t| s.known(t));
        let answered = accept_websocket(
            MaybeTlsStream::Plain(conn),
            &crate::media::media_transport_options(),
            |request| {
                if let Some(expected) = &credentials {
                    if let Err(e) = check_basic(request.headers(), expected) {
                        tracing::debug!(target: "ari_client", reason = %e.reason(), "media server: upgrade refused");
                        refused = Refusal::Unauthorized;
                        return Err(http::StatusCode::UNAUTHORIZED);
                    }
                }
                token = token_of(request.uri());
                if !known(&token) {
                    refused = Refusal::Unknown;
                    return Err(http::StatusCode::NOT_FOUND);
                }
                let mut headers = http::HeaderMap::new();
                let offers_media = request
                    .headers()
                    .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.split(',').any(|p| p.trim() == "media"));
                if offers_media {
                    headers.insert(
                        http::header::SEC_WEBSOCKET_PROTOCOL,
                        http::HeaderValue::from_static("media"),
                    );
                }
                Ok(headers)
            },
        )
        .await;
        let Ok((mut ws, _)) = answered else {
            return Err(refused);
        };
        let Some(token) = token else {
            return Err(Refusal::Unknown);
        };
        // MEDIA_START is the first message; it tells the control format too.
        let first = ws.next().await;
        let Some(Ok(WsMessage::Text(text))) = first else {
            return Err(Refusal::Failed);
        };
        let mut probe = Core::new(MediaConfig::new().control_format(ControlFormat::detect(&text)));
        probe.handle_text(&text);
        let Some(start) = probe.media_start() else {
            return Err(Refusal::Failed);
        };
        let channel_id = start.channel_id.clone().filter(|c| !c.is_empty());
        Ok((token, channel_id, ws, text.to_string()))
    };
    let timeout = s.runtime.sleep_until(deadline);
    let result = match select(std::pin::pin!(work), std::pin::pin!(timeout)).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(Refusal::Failed),
    };
    match result {
        Ok((token, channel_id, ws, first)) => {
            match s.take_waiting(&token, channel_id.as_deref()) {
                Some(tx) => match tx.send(Box::new((ws, first))) {
                    Ok(()) => {
                        s.sessions.fetch_add(1, Ordering::Relaxed);
                    }
                    // The session gave up meanwhile: the socket closes (Asterisk hangs up).
                    Err(_) => {
                        s.failed.fetch_add(1, Ordering::Relaxed);
                    }
                },
                // A recent token, but no session waits for this media channel (a channel
                // nobody asked this server for, or one whose session gave up): the socket
                // closes and Asterisk hangs the channel up.
                None => {
                    tracing::debug!(target: "ari_client", channel_id = ?channel_id, "media server: no session waits for this media channel");
                    s.unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(Refusal::Unknown) => {
            s.unknown.fetch_add(1, Ordering::Relaxed);
        }
        Err(Refusal::Unauthorized) => {
            s.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
        Err(Refusal::Failed) => {
            s.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
