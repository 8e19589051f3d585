//! The client handle, its builder, and how one request is sent.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ari_proto::events::ResourceKind;
use ari_proto::rest::{self, BaseUrl, Credentials};
use ari_proto::version::AsteriskVersion;
use ari_proto::Operation;
use futures_util::future::{select, Either};
use tracing::Instrument;

use crate::deadlines::Deadlines;
use crate::error::Error;
use crate::runtime::{Runtime, TransportError, TransportErrorKind, TransportOptions};
use crate::shared::Shared;
use ari_proto::session::RequestError;

/// How REST requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RestTransport {
    /// HTTP/1.1 with keep-alive connections (the default).
    #[default]
    Http,
    /// As `RESTRequest` messages over the events WebSocket (Asterisk 20.14+, 22.4+ and 23): one
    /// connection for everything. Results and errors are identical to [`RestTransport::Http`].
    WebSocket,
}

/// The ARI client: cheap to clone (an `Arc` inside), `Send + Sync`, usable from any task.
///
/// Made with [`Client::connect`] or [`Client::builder`]. Resources are reached through the
/// generated accessors (`client.channels()`, `client.bridges()`, …), instance objects through
/// the factories below, events through [`Client::start`], [`Client::on`] and the streams.
///
/// # Instance factories
///
/// One naming scheme for every instance type:
///
/// - `client.<type>(id)` is the resource with this id: [`Client::channel`],
///   [`Client::bridge`], [`Client::playback`], [`Client::live_recording`] and
///   [`Client::stored_recording`] (a recording's id is its name), [`Client::device_state`],
///   [`Client::application`], and [`Client::endpoint`] (technology and resource). No request
///   is sent and nothing is checked: operations on it fail with a 404 if Asterisk does not
///   know it.
/// - `client.new_<type>()` makes a fresh client-side id (node-ari-client's `ari.Channel()`):
///   [`Client::new_channel`], [`Client::new_bridge`], [`Client::new_playback`] and
///   [`Client::new_live_recording`], the resources whose id the client may choose when
///   creating them. Nothing is created in Asterisk until the creating operation
///   (`originate`, `create`, `play_with_id`, `record`) is sent, so listeners can be attached
///   first and see every event of the resource.
pub struct Client<R: Runtime> {
    pub(crate) inner: Arc<Inner<R>>,
}

pub(crate) struct Inner<R: Runtime> {
    pub(crate) runtime: R,
    pub(crate) endpoint: BaseUrl,
    pub(crate) transport: TransportOptions,
    pub(crate) request_timeout: Duration,
    pub(crate) rest_transport: RestTransport,
    pub(crate) shared: Arc<Shared>,
    /// The connection was opened by Asterisk (outbound WebSocket): REST only over it.
    pub(crate) accepted: bool,
    /// The server's version, learnt at connect (`GET /asterisk/info`).
    pub(crate) server_version: std::sync::OnceLock<AsteriskVersion>,
    /// The server has no REST over WebSocket: requests go over HTTP (counted).
    pub(crate) rest_ws_unavailable: std::sync::atomic::AtomicBool,
    /// The request timeouts (one timer for all requests).
    pub(crate) deadlines: Deadlines,
    /// The media sessions opened with this client, torn down by [`Client::close`].
    pub(crate) media: crate::media::LiveSessions,
}

/// A [`Client`] handle that does not keep it alive ([`Client::downgrade`]).
pub struct WeakClient<R: Runtime> {
    inner: std::sync::Weak<Inner<R>>,
}

impl<R: Runtime> WeakClient<R> {
    /// The client, if it still lives.
    pub fn upgrade(&self) -> Option<Client<R>> {
        self.inner.upgrade().map(|inner| Client { inner })
    }
}

impl<R: Runtime> Clone for WeakClient<R> {
    fn clone(&self) -> Self {
        WeakClient {
            inner: self.inner.clone(),
        }
    }
}

impl<R: Runtime> fmt::Debug for WeakClient<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakClient")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

impl<R: Runtime> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
        }
    }
}

impl<R: Runtime> fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The endpoint's Debug redacts the password.
        f.debug_struct("Client")
            .field("base_url", &self.base_url())
            .field("user", &self.inner.endpoint.credentials().user())
            .field("rest_transport", &self.inner.rest_transport)
            .field("request_timeout", &self.inner.request_timeout)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + Default> Client<R> {
    /// Connects with default options: `url` is Asterisk's HTTP server
    /// (`http://localhost:8088`, with or without `/ari`), `user` and `password` an `ari.conf`
    /// user. Verifies the server and the credentials (`GET /ari/asterisk/info`) within the
    /// request timeout.
    pub async fn connect(url: &str, user: &str, password: &str) -> Result<Self, Error> {
        Client::builder(url, user, password).connect().await
    }

    /// A builder for the options, with the runtime's default instance.
    pub fn builder(url: &str, user: &str, password: &str) -> ClientBuilder<R> {
        ClientBuilder::new(url, user, password, R::default())
    }
}

impl<R: Runtime> Client<R> {
    /// A builder for a runtime that has no default instance.
    pub fn builder_with_runtime(
        url: &str,
        user: &str,
        password: &str,
        runtime: R,
    ) -> ClientBuilder<R> {
        ClientBuilder::new(url, user, password, runtime)
    }

    /// The runtime.
    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    /// The base URL (`http://host:port/ari`), without credentials.
    pub fn base_url(&self) -> String {
        let ep = &self.inner.endpoint;
        format!("{}://{}{}", ep.scheme(), ep.authority(), ep.prefix())
    }

    /// The REST transport in use.
    pub fn rest_transport(&self) -> RestTransport {
        self.inner.rest_transport
    }

    /// The server's version (`system.version` of `GET /asterisk/info`), learnt by
    /// [`ClientBuilder::connect`]; `None` if the client was built without contacting the
    /// server ([`ClientBuilder::build`], `verify_on_connect(false)`, an outbound
    /// connection) or the server did not say.
    ///
    /// Once known, every request is checked against it before it is sent: an operation or
    /// a parameter newer than the server fails at once with [`Error::Build`] and
    /// [`BuildError::Unsupported`](ari_proto::rest::BuildError::Unsupported) (the operation,
    /// the parameter, the first branch that has it, the server's version).
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>) {
    /// if let Some(v) = client.server_version() {
    ///     println!("{v} (checked as {:?}); REST over WebSocket: {}", v.branch(), v.has_rest_over_websocket());
    /// }
    /// # }
    /// ```
    pub fn server_version(&self) -> Option<&AsteriskVersion> {
        self.inner.server_version.get()
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// A fresh client-side resource id (a random UUID), for `originateWithId`,
    /// `createWithId`, `playWithId`, `recordWithId`, … so listeners can be attached before the
    /// resource exists.
    pub fn new_resource_id(&self) -> String {
        self.inner.shared.new_resource_id()
    }

    /// Resources gone without an event saying so: the application's waits, streams,
    /// listeners and handlers on each end now as after its final event (waits fail with
    /// [`Error::Ended`], streams end), and a later wait on one ends at once. For a transport
    /// that learns it out of band, such as a cluster node whose Asterisk restarted (its calls
    /// gone while the other nodes' go on); a single Asterisk's restart is handled by the
    /// client itself. Returns how many subscriptions ended (see
    /// [`Session::end_resources`](ari_proto::session::Session::end_resources)).
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>) {
    /// use ari_client::events::ResourceKind;
    /// let ended = client.resources_gone([(ResourceKind::Channel, "1712345678.42")]);
    /// println!("{ended} waits ended");
    /// # }
    /// ```
    pub fn resources_gone<I, S>(&self, resources: I) -> usize
    where
        I: IntoIterator<Item = (ari_proto::events::ResourceKind, S)>,
        S: AsRef<str>,
    {
        self.end_resources(resources, ari_proto::session::EndReason::ResourceEnded)
    }

    /// As [`resources_gone`](Self::resources_gone), with the reason the subscriptions end
    /// for (see [`Session::end_resources`](ari_proto::session::Session::end_resources)):
    /// [`EndReason::PeerGone`](ari_proto::session::EndReason::PeerGone) makes the waits fail
    /// with [`Error::AsteriskGone`] (the events will not come: a cluster node whose proxy
    /// stayed away), [`EndReason::NotCreated`](ari_proto::session::EndReason::NotCreated)
    /// does not record the resources as ended. Returns how many subscriptions ended.
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>) {
    /// use ari_client::events::ResourceKind;
    /// use ari_client::proto::session::EndReason;
    /// let gone = [(ResourceKind::Channel, "1712345678.42")];
    /// println!("{} waits ended", client.end_resources(gone, EndReason::PeerGone));
    /// # }
    /// ```
    pub fn end_resources<I, S>(&self, resources: I, reason: ari_proto::session::EndReason) -> usize
    where
        I: IntoIterator<Item = (ari_proto::events::ResourceKind, S)>,
        S: AsRef<str>,
    {
        self.inner
            .shared
            .command(|s| s.end_resources(resources, reason))
    }

    /// A handle that does not keep the client alive (for a transport or a registry that must
    /// reach the client without owning it); [`WeakClient::upgrade`] gives the client back
    /// while it lives.
    pub fn downgrade(&self) -> WeakClient<R> {
        WeakClient {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Sends one operation and decodes its result, without wrapping it into instance
    /// objects. `Call`'s `.await` is this plus [`crate::Wrap`].
    pub fn send<O: Operation>(
        &self,
        op: &O,
    ) -> impl std::future::Future<Output = Result<O::Output, Error>> + Send + 'static
    where
        O::Output: Send,
    {
        self.execute(op)
    }

    /// Splits the operation now (so the future does not borrow it) and sends it when polled.
    pub(crate) fn execute<O: Operation>(
        &self,
        op: &O,
    ) -> impl std::future::Future<Output = Result<O::Output, Error>> + Send + 'static
    where
        O::Output: Send,
    {
        self.execute_then(op, |out, _| out)
    }

    /// [`Client::execute`], then `then` applied to the output and the client (wrapping it
    /// into instance objects), in the same future: each layer of futures around a request
    /// costs a copy of the layers below it when it starts them.
    pub(crate) fn execute_then<O: Operation, T>(
        &self,
        op: &O,
        then: impl FnOnce(O::Output, &Client<R>) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send + 'static
    where
        O::Output: Send,
    {
        // Boxed: each layer of the request's future keeps the place of its argument.
        let parts = rest::request_parts(op).and_then(|parts| {
            if let Some(v) = self.inner.server_version.get() {
                ari_proto::version::check(&parts, v)?;
            }
            Ok(Box::new(parts))
        });
        let client = self.clone();
        // The whole request in this one future (no `async fn` called and awaited here). The
        // request's parts are moved into the transport's future in a block of their own, so
        // that this future keeps no copy of them.
        async move {
            let mut timed = None;
            let result = {
                let parts = parts?;
                client.ensure_open()?;
                let span = tracing::debug_span!(
                    "ari.request",
                    operation = O::NAME,
                    method = %O::METHOD,
                    path = %parts.path,
                    transport = ?client.inner.rest_transport,
                    status = tracing::field::Empty,
                    latency_ms = tracing::field::Empty,
                );
                // No subscriber wants it: no span to enter, no clock to read.
                let span = if span.is_disabled() {
                    tracing::Span::none()
                } else {
                    timed = Some((span.clone(), client.inner.runtime.now()));
                    span
                };
                client
                    .execute_parts(O::NAME, O::BINARY_OUTPUT, parts)
                    .instrument(span)
            }
            .await;
            let Some((span, started)) = timed else {
                let (status, body) = result?;
                return Ok(then(rest::parse_response::<O>(status, &body)?, &client));
            };
            let latency = client
                .inner
                .runtime
                .now()
                .saturating_duration_since(started);
            span.record("latency_ms", latency.as_secs_f64() * 1e3);
            let (status, body) = match result {
                Ok(r) => r,
                Err(e) => {
                    span.in_scope(|| tracing::debug!(error = %e, "request failed"));
                    return Err(e);
                }
            };
            span.record("status", status);
            span.in_scope(|| tracing::debug!(status, "response"));
            Ok(then(rest::parse_response::<O>(status, &body)?, &client))
        }
    }

    /// Sends a request given by its method, path below `/ari/` with its query string (both
    /// percent-encoded: `channels/ID/variable?variable=X`) and JSON body, through this
    /// client's REST transport (over the events WebSocket with [`RestTransport::WebSocket`]
    /// while it is connected, else HTTP), within the request timeout. Returns the status and
    /// body as Asterisk sent them, whatever the status. For proxies and gateways forwarding
    /// requests they have no type for (`ari-proxy`); typed code uses the operations. A body
    /// that is not text (a recording's file) needs HTTP: use [`RestTransport::Http`] for it.
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>) -> Result<(), ari_client::Error> {
    /// let (status, body) = client
    ///     .send_raw(http::Method::GET, "channels/1712345678.42/variable?variable=CALLERID%28num%29", None)
    ///     .await?;
    /// println!("{status}: {}", String::from_utf8_lossy(&body));
    /// # Ok(()) }
    /// ```
    pub async fn send_raw(
        &self,
        method: http::Method,
        path_and_query: &str,
        json_body: Option<String>,
    ) -> Result<(u16, bytes::Bytes), Error> {
        self.ensure_open()?;
        let parts = rest::RequestParts::raw(method, path_and_query, json_body);
        self.execute_parts("raw", false, Box::new(parts)).await
    }

    /// [`Error::Closed`] once the client was closed: no request is sent then.
    fn ensure_open(&self) -> Result<(), Error> {
        if self
            .inner
            .shared
            .shutdown
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Error::closed("the client was closed"));
        }
        Ok(())
    }

    /// Sends `parts` ([`Client::transmit`]) and tells the session what the answer means for
    /// the resources it names. (This and `transmit` return `async move` blocks: an `async fn`
    /// keeps a second copy of its arguments in its future, and every request holds both.)
    #[allow(clippy::manual_async_fn)] // an async fn would keep a second copy of its arguments
    fn execute_parts(
        &self,
        operation: &'static str,
        binary_output: bool,
        parts: Box<rest::RequestParts>,
    ) -> impl std::future::Future<Output = Result<(u16, bytes::Bytes), Error>> + Send + '_ {
        async move {
            // Asterisk tells only the bridge's subscribers that it is destroyed: the session
            // learns it from the response (see `Session::bridge_destroyed`).
            // And it tells only applications subscribed to every bridge that one was created: a
            // bridge id the session recorded as ended is forgotten when the application creates
            // a bridge with that id again.
            let destroyed_bridge = parts.destroyed_bridge();
            let created_bridge = parts.created_bridge();
            // The channels (both halves of a Local channel), bridge, playback or recording the
            // application named, refused by Asterisk: they will never exist, so the waits set up
            // for them beforehand end (`Session::not_created`).
            let created = parts.created_resources();
            // A stop or cancel of a recording not seen started: Asterisk may disregard it.
            let restop = self.watch_stop(&parts);
            // A playback or recording queued on a channel or bridge: dropped without an event
            // if the channel leaves first (`Session::queued_on`).
            let queued = parts.queued_on();
            let result = self.transmit(operation, binary_output, parts).await;
            if let (Some(restop), Ok((200..=299, _))) = (restop, &result) {
                // Boxed: rare, and it sends a request of its own.
                Box::pin(self.follow_stop(restop)).await;
            }
            if let (Some(((kind, id), (target_kind, target))), Ok((200..=299, _))) =
                (queued, &result)
            {
                self.inner
                    .shared
                    .command(|s| s.queued_on(kind, &id, target_kind, &target));
            }
            if let (Some(id), Ok((200..=299, _))) = (destroyed_bridge, &result) {
                self.inner
                    .shared
                    .bridge_destroyed(self.inner.runtime.now(), &id);
            }
            if let Ok((status @ 400.., _)) = &result {
                // Boxed: rare, and it may send a request of its own (a live check), whose future
                // would otherwise double the size of every request's future.
                Box::pin(self.not_created(*status, created)).await;
            }
            if let (Some(id), Ok((200..=299, _))) = (created_bridge, &result) {
                self.inner
                    .shared
                    .forget_ended(ari_proto::events::ResourceKind::Bridge, &id);
            }
            result
        }
    }

    /// Sends a request through the client's REST transport, within the request timeout.
    #[allow(clippy::manual_async_fn)] // an async fn would keep a second copy of its arguments
    pub(crate) fn transmit(
        &self,
        operation: &'static str,
        binary_output: bool,
        parts: Box<rest::RequestParts>,
    ) -> impl std::future::Future<Output = Result<(u16, bytes::Bytes), Error>> + Send + '_ {
        async move {
            let timeout = self.inner.request_timeout;
            let deadline = self.deadline(timeout);
            let over_http = |parts: Box<rest::RequestParts>| async move {
                let req = rest::build_request_from_parts(&self.inner.endpoint, *parts)?;
                // Boxed where it is made: the transport's future is large (kilobytes), and the
                // layers above (deadline, tracing, the call) would otherwise copy it at each move.
                let fut = Box::pin(self.inner.runtime.http(req, &self.inner.transport));
                let resp = self
                    .inner
                    .deadlines
                    .run(&self.inner.runtime, deadline, fut)
                    .await
                    .map_err(|stopped| stopped.into_error(operation, timeout))??;
                Ok::<_, Error>((resp.status().as_u16(), resp.into_body()))
            };
            let result =
                match self.inner.rest_transport {
                    // Raw bytes (a recording's file) cannot travel in a RESTResponse's JSON string.
                    RestTransport::Http => over_http(parts).await,
                    RestTransport::WebSocket if binary_output && self.inner.accepted => {
                        Err(Error::Transport(TransportError::new(
                            TransportErrorKind::Protocol,
                            format!(
                        "{operation} returns a file, which Asterisk only serves over HTTP; \
                         an outbound WebSocket client has no HTTP access"
                    ),
                        )))
                    }
                    RestTransport::WebSocket if binary_output => over_http(parts).await,
                    RestTransport::WebSocket
                        if self
                            .inner
                            .rest_ws_unavailable
                            .load(std::sync::atomic::Ordering::Relaxed) =>
                    {
                        // The server has no REST over WebSocket (warned at connect).
                        self.inner
                            .shared
                            .counters
                            .ws_fallbacks
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        over_http(parts).await
                    }
                    RestTransport::WebSocket => {
                        let now = self.inner.runtime.now();
                        match self.inner.shared.send_request(now, &parts)? {
                    Some(pending) => {
                        let res = self
                            .inner
                            .deadlines
                            .run(&self.inner.runtime, deadline, pending)
                            .await
                            .map_err(|stopped| stopped.into_error(operation, timeout))?;
                        match res {
                            Ok(raw) => Ok((raw.status, raw.body)),
                            Err(RequestError::Timeout) => Err(Error::Timeout {
                                operation,
                                after: timeout,
                            }),
                            Err(RequestError::Disconnected { reason }) => Err(Error::Transport(
                                TransportError::new(TransportErrorKind::Closed, reason),
                            )),
                            Err(_) => Err(Error::closed("the events connection was stopped")),
                        }
                    }
                    None if self.inner.accepted => Err(Error::Transport(TransportError::new(
                        TransportErrorKind::Closed,
                        "the outbound WebSocket from Asterisk is not connected (a persistent \
                         connection comes back by itself) or has too many requests pending",
                    ))),
                    None => {
                        // The WebSocket is not open (not started yet, or reconnecting) or
                        // saturated: HTTP gives the same result.
                        tracing::debug!("events WebSocket not available; sending over HTTP");
                        over_http(parts).await
                    }
                }
                    }
                };
            result
        }
    }

    /// Asterisk answered `status` (an error) to a request that would have created the
    /// resources `created` under the application's ids: each that does not exist ends the
    /// waits set up for it (`Session::not_created`). A 409 may say that an id belongs to a
    /// live resource (a channel or bridge id in use, a recording in progress under that
    /// name), whose waits are legitimate, or that nothing was created (the target is not in
    /// Stasis; the stored recording exists and `ifExists=fail`; one half of a Local channel's
    /// ids is taken): Asterisk words some of these alike, so when waits follow such an id,
    /// Asterisk is asked whether it is live (`GET channels/{id}`, `bridges/{id}`,
    /// `playbacks/{id}`, `recordings/live/{name}`), and they end only on a 404.
    /// Waits that have seen an event of the id (`Session::has_seen`) follow a resource that
    /// exists whatever the refusal says, or one that ended meanwhile (before the 404 of the
    /// check) and whose final event, published before, is on its way: they are left to it.
    /// Waits made after the resource's last event saw none, yet may follow such a resource:
    /// after a 409 and the check's 404 they end only if nothing of the id was routed within
    /// [`NOT_CREATED_GRACE`] (its final event ends them as usual), in the background (the
    /// request's answer is not held); waits made after the 409 are left alone.
    async fn not_created(&self, status: u16, created: Vec<(ResourceKind, String)>) {
        for (kind, id) in created {
            let followed = || self.inner.shared.lock().session.follows(kind, &id);
            let seen = || self.inner.shared.lock().session.has_seen(kind, &id);
            if seen() {
                continue;
            }
            if status == 409 && followed() {
                let mark = self.inner.shared.lock().session.next_subscription_id();
                if self.is_live(kind, &id).await {
                    continue;
                }
                let shared = self.inner.shared.clone();
                let rt = self.inner.runtime.clone();
                let deadline = self.deadline(NOT_CREATED_GRACE);
                self.inner.runtime.spawn(async move {
                    rt.sleep_until(deadline).await;
                    shared.command(|s| {
                        if !s.has_seen(kind, &id) {
                            s.not_created_before(kind, &id, mark);
                        }
                    });
                });
                continue;
            }
            // Checked again with the end, under one lock: an event routed while Asterisk was
            // asked is a live one's.
            self.inner.shared.command(|s| {
                if !s.has_seen(kind, &id) {
                    s.not_created(kind, &id);
                }
            });
        }
    }

    /// Whether Asterisk has a live channel, bridge, playback or recording `id`: anything but
    /// a 404 (an error, a timeout) counts as live.
    async fn is_live(&self, kind: ResourceKind, id: &str) -> bool {
        use ari_proto::ops::{bridges, channels, playbacks, recordings};
        let parts = match kind {
            ResourceKind::Channel => rest::request_parts(&channels::Get::new(id)),
            ResourceKind::Bridge => rest::request_parts(&bridges::Get::new(id)),
            ResourceKind::Playback => rest::request_parts(&playbacks::Get::new(id)),
            ResourceKind::Recording => rest::request_parts(&recordings::GetLive::new(id)),
            _ => return true,
        };
        let Ok(parts) = parts else {
            return true;
        };
        !matches!(
            self.transmit("live check", false, Box::new(parts)).await,
            Ok((404, _))
        )
    }

    /// Runs `fut` for at most `after` on the client's runtime: [`Error::Timeout`] past it.
    /// Handy for IVR steps such as waiting for a key:
    ///
    /// ```no_run
    /// # async fn demo<R: ari_client::Runtime>(client: ari_client::Client<R>, channel: ari_client::Channel<R>) -> Result<(), ari_client::Error> {
    /// use std::time::Duration;
    /// use ari_client::events::ChannelDtmfReceived;
    /// match client.timeout(Duration::from_secs(5), channel.once::<ChannelDtmfReceived>()).await {
    ///     Ok(dtmf) => println!("pressed {}", dtmf?.digit),
    ///     Err(_) => println!("no key within 5 s"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn timeout<F: std::future::Future>(
        &self,
        after: Duration,
        fut: F,
    ) -> Result<F::Output, Error> {
        let deadline = self.deadline(after);
        with_deadline(&self.inner.runtime, deadline, "timeout", after, fut).await
    }

    /// Completes after `d`, on the client's runtime.
    pub async fn sleep(&self, d: Duration) {
        let deadline = self.deadline(d);
        if self.inner.runtime.now() < deadline {
            self.inner.runtime.sleep_until(deadline).await;
        }
    }

    pub(crate) fn deadline(&self, timeout: Duration) -> Instant {
        let now = self.inner.runtime.now();
        now.checked_add(timeout)
            .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
            .unwrap_or(now)
    }
}

/// How long the waits for an id that a request was refused under (409) and that Asterisk
/// then reports gone (404) stay for the final event of a resource that used the id and
/// ended meanwhile (the event and the answers travel on different connections).
const NOT_CREATED_GRACE: Duration = Duration::from_secs(1);

/// Runs `fut` until `deadline`; `Error::Timeout` after it.
pub(crate) async fn with_deadline<R: Runtime, F: std::future::Future>(
    runtime: &R,
    deadline: Instant,
    operation: &'static str,
    after: Duration,
    fut: F,
) -> Result<F::Output, Error> {
    if runtime.now() >= deadline {
        return Err(Error::Timeout { operation, after });
    }
    let sleep = runtime.sleep_until(deadline);
    let fut = std::pin::pin!(fut);
    let sleep = std::pin::pin!(sleep);
    match select(fut, sleep).await {
        Either::Left((out, _)) => Ok(out),
        Either::Right(((), _)) => Err(Error::Timeout { operation, after }),
    }
}

/// Options of a [`Client`]; finish with [`ClientBuilder::connect`].
///
/// ```no_run
/// # async fn demo<R: ari_client::Runtime + Default>() -> Result<(), ari_client::Error> {
/// use std::time::Duration;
/// use ari_client::{Client, RestTransport};
/// let client = Client::<R>::builder("http://localhost:8088", "asterisk", "secret")
///     .request_timeout(Duration::from_secs(5))
///     .rest_transport(RestTransport::WebSocket)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ClientBuilder<R: Runtime> {
    url: String,
    user: String,
    password: String,
    runtime: R,
    request_timeout: Duration,
    transport: TransportOptions,
    rest_transport: RestTransport,
    require_rest_transport: bool,
    verify: bool,
    pub(crate) events: crate::shared::EventOptions,
}

impl<R: Runtime> fmt::Debug for ClientBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &redact_userinfo(&self.url))
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("runtime", &self.runtime)
            .field("request_timeout", &self.request_timeout)
            .field("transport", &self.transport)
            .field("rest_transport", &self.rest_transport)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> ClientBuilder<R> {
    fn new(url: &str, user: &str, password: &str, runtime: R) -> Self {
        ClientBuilder {
            url: url.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            runtime,
            request_timeout: crate::DEFAULT_REQUEST_TIMEOUT,
            transport: TransportOptions::default(),
            rest_transport: RestTransport::default(),
            require_rest_transport: false,
            verify: true,
            events: crate::shared::EventOptions::default(),
        }
    }

    /// Uses this runtime instance.
    pub fn runtime(mut self, runtime: R) -> Self {
        self.runtime = runtime;
        self
    }

    /// Deadline of every REST request, over either transport (default 10 s). A request to an
    /// unreachable Asterisk fails with [`Error::Timeout`] or [`Error::Transport`] within it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time allowed to open a connection: TCP, TLS and the WebSocket upgrade (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.transport.connect_timeout = timeout;
        self
    }

    /// How REST requests travel (default [`RestTransport::Http`]).
    pub fn rest_transport(mut self, transport: RestTransport) -> Self {
        self.rest_transport = transport;
        self
    }

    /// With [`RestTransport::WebSocket`]: fail [`ClientBuilder::connect`] with
    /// [`Error::Unsupported`] (naming the versions that have it: Asterisk 20.14+, 22.4+,
    /// 23+) when the server has no REST over WebSocket, instead of the default: sending
    /// every request over HTTP, with a `tracing` warning at connect and each request counted
    /// in [`Stats::websocket_fallbacks`](crate::Stats::websocket_fallbacks).
    pub fn require_rest_transport(mut self, required: bool) -> Self {
        self.require_rest_transport = required;
        self
    }

    /// Largest REST response body accepted (default 16 MiB).
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.transport.max_body_bytes = n;
        self
    }

    /// Whether [`ClientBuilder::connect`] checks the server and the credentials with
    /// `GET /ari/asterisk/info` (default `true`). That answer's `startup_time` is also what a
    /// reconnect compares to tell that Asterisk restarted meanwhile (its calls gone): without
    /// the check, waits on calls of a restarted Asterisk are not ended.
    pub fn verify_on_connect(mut self, on: bool) -> Self {
        self.verify = on;
        self
    }

    /// Builds the client without contacting the server.
    pub fn build(mut self) -> Result<Client<R>, Error> {
        if redact_userinfo(&self.url) != self.url {
            // Never echo a URL carrying a password into an error.
            return Err(Error::Build(rest::BuildError::InvalidBaseUrl(
                "credentials in the URL are not accepted; pass them separately".into(),
            )));
        }
        let credentials = Credentials::new(self.user, self.password)?;
        let endpoint = BaseUrl::new(&self.url, credentials)?;
        // The transport refuses (and drops the connection on) frames above twice the session's
        // limit; frames between the two are read, skipped and counted by the session.
        self.transport.max_frame_bytes = self.events.limits.max_frame_bytes.saturating_mul(2);
        let shared = Shared::new(endpoint.clone(), self.events, self.request_timeout);
        let inner = Inner {
            runtime: self.runtime,
            endpoint,
            transport: self.transport,
            request_timeout: self.request_timeout,
            rest_transport: self.rest_transport,
            shared,
            accepted: false,
            server_version: std::sync::OnceLock::new(),
            rest_ws_unavailable: std::sync::atomic::AtomicBool::new(false),
            deadlines: Deadlines::default(),
            media: crate::media::LiveSessions::default(),
        };
        let client = Client {
            inner: Arc::new(inner),
        };
        crate::driver::spawn(&client);
        Ok(client)
    }

    /// Builds a client for a connection Asterisk opened (outbound WebSocket) from `peer`:
    /// an accepted session (no dialing, no reconnect) and REST only over that connection.
    /// The URL and credentials of the builder are not used; the socket is handed over
    /// with `Shared::attach`.
    pub(crate) fn build_accepted(
        mut self,
        peer: std::net::SocketAddr,
        peer_timeout: Option<Duration>,
    ) -> Result<Client<R>, Error> {
        let endpoint = BaseUrl::new(&format!("http://{peer}"), Credentials::new("asterisk", "")?)?;
        self.transport.max_frame_bytes = self.events.limits.max_frame_bytes.saturating_mul(2);
        let shared = Shared::new_accepted(self.events, self.request_timeout, peer_timeout);
        let inner = Inner {
            runtime: self.runtime,
            endpoint,
            transport: self.transport,
            request_timeout: self.request_timeout,
            rest_transport: RestTransport::WebSocket,
            shared,
            accepted: true,
            server_version: std::sync::OnceLock::new(),
            rest_ws_unavailable: std::sync::atomic::AtomicBool::new(false),
            deadlines: Deadlines::default(),
            media: crate::media::LiveSessions::default(),
        };
        let client = Client {
            inner: Arc::new(inner),
        };
        crate::driver::spawn(&client);
        Ok(client)
    }

    /// Builds the client and verifies the server and the credentials
    /// (`GET /ari/asterisk/info`) within the request timeout, learning the server's
    /// version ([`Client::server_version`]).
    pub async fn connect(self) -> Result<Client<R>, Error> {
        let verify = self.verify;
        let required = self.require_rest_transport;
        let client = self.build()?;
        if verify {
            let op = ari_proto::ops::asterisk::GetInfo::new();
            let info = match client.execute(&op).await {
                Ok(info) => info,
                Err(e) => {
                    client.inner.shared.shutdown();
                    return Err(connect_hint(e, &client.base_url()));
                }
            };
            if let Err(e) = client.learn_version(info, required) {
                client.inner.shared.shutdown();
                return Err(e);
            }
        }
        Ok(client)
    }
}

/// `connect()`'s check of the server failed: what to look at for the usual causes (wrong
/// credentials; no ARI at that URL). The status and kind stay Asterisk's.
fn connect_hint(e: Error, base_url: &str) -> Error {
    match e {
        Error::Ari(mut ari) if ari.status == 401 => {
            ari.message = format!(
                "{} (connecting to {base_url}: check the ARI user and its password, an ari.conf \
                 section with `type = user`)",
                ari.message
            );
            Error::Ari(ari)
        }
        Error::Ari(mut ari) if ari.status == 404 => {
            // Asterisk's HTML page when nothing serves the path: not worth repeating.
            let said = if ari.message.starts_with('<') || ari.message.is_empty() {
                "Not Found".to_owned()
            } else {
                ari.message.clone()
            };
            ari.message = format!(
                "{said}: no ARI at {base_url} (GET asterisk/info): check the URL's path, which \
                 is http.conf's `prefix` (none by default), and that ARI is enabled (ari.conf \
                 `enabled = yes`, res_ari loaded)"
            );
            Error::Ari(ari)
        }
        e => e,
    }
}

impl<R: Runtime> Client<R> {
    /// Keeps the server's version and decides how REST requests travel on it.
    fn learn_version(
        &self,
        info: ari_proto::models::AsteriskInfo,
        required: bool,
    ) -> Result<(), Error> {
        if let Some(status) = &info.status {
            *self
                .inner
                .shared
                .startup_time
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(status.startup_time);
        }
        let Some(version) = info
            .system
            .map(|s| s.version)
            .filter(|v| !v.trim().is_empty())
        else {
            tracing::debug!(target: "ari_client", "the server did not report its version");
            return Ok(());
        };
        let version = AsteriskVersion::parse(&version);
        tracing::debug!(target: "ari_client", version = %version.as_str(), branch = ?version.branch(), "server version");
        if self.inner.rest_transport == RestTransport::WebSocket
            && !self.inner.accepted
            && !version.has_rest_over_websocket()
        {
            if required {
                return Err(Error::Unsupported {
                    feature: "REST over the events WebSocket",
                    needs: ari_proto::version::REST_OVER_WEBSOCKET_VERSIONS,
                    server: version.as_str().to_owned(),
                });
            }
            tracing::warn!(
                target: "ari_client",
                "Asterisk {} has no REST over WebSocket (it needs {}): REST requests go over \
                 HTTP (counted in Stats::websocket_fallbacks)",
                version.as_str(),
                ari_proto::version::REST_OVER_WEBSOCKET_VERSIONS
            );
            self.inner
                .rest_ws_unavailable
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = self.inner.server_version.set(version);
        Ok(())
    }
}

impl<R: Runtime> Drop for Inner<R> {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// `scheme://user:password@host/…` → `scheme://<redacted>@host/…`; other strings unchanged.
fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_userinfo;

    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(
            redact_userinfo("http://u:secret@pbx:8088/ari"),
            "http://<redacted>@pbx:8088/ari"
        );
        assert_eq!(redact_userinfo("ftp://a:b@c"), "ftp://<redacted>@c");
        assert_eq!(
            redact_userinfo("http://pbx:8088/a@b"),
            "http://pbx:8088/a@b"
        );
        assert_eq!(redact_userinfo("pbx"), "pbx");
    }
}
