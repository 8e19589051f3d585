//! Building REST requests and parsing their responses, without any I/O.
//!
//! ```
//! use ari_proto::ops::channels;
//! use ari_proto::rest::{build_request, parse_response, Credentials, BaseUrl};
//!
//! let ep = BaseUrl::new("http://pbx.example:8088", Credentials::new("asterisk", "secret")?)?;
//! let req = build_request(&ep, &channels::Answer::new("chan/1"))?;
//! assert_eq!(req.method(), http::Method::POST);
//! assert_eq!(req.uri(), "http://pbx.example:8088/ari/channels/chan%2F1/answer");
//!
//! // 204 No Content for a void operation.
//! let out: () = parse_response::<channels::Answer>(204, b"")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use base64::Engine as _;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;

/// Bytes that travel unencoded in a path segment: RFC 3986 unreserved.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Query values additionally keep `,` as is: `allowMultiple` parameters are comma-joined.
const ENCODE_QUERY: &AsciiSet = &ENCODE.remove(b',');

/// A typed ARI REST operation (one per operation of the API description, in [`crate::ops`]).
pub trait Operation {
    /// What a successful response decodes into (`()` for `void`, `bytes::Bytes` for `binary`).
    type Output;
    /// `resource.nickname`, as in node-ari-client: `channels.originateWithId`.
    const NAME: &'static str;
    /// HTTP method.
    const METHOD: http::Method;
    /// Path template below `/ari`: `/channels/{channelId}/play`.
    const PATH: &'static str;
    /// First Asterisk branch that has the operation.
    const SINCE: crate::Since;
    /// Whether the result is raw bytes (`binary`, e.g. a recording's file) rather than JSON.
    /// Such a result cannot travel in a `RESTResponse` frame (its body is a JSON string), so
    /// clients send these operations over HTTP.
    const BINARY_OUTPUT: bool = false;
    /// Writes the path segments below `/ari`.
    fn write_path(&self, path: &mut PathWriter);
    /// Writes the query parameters.
    fn write_query(&self, query: &mut QueryWriter);
    /// The JSON body (`variables`, `fields`, `filter`), if any parameter goes there.
    fn body(&self) -> Option<serde_json::Value>;
    /// Decodes a successful response body.
    fn parse_output(body: &[u8]) -> Result<Self::Output, serde_json::Error>;
}

/// Collects the path of a request, percent-encoding each parameter as exactly one segment.
#[derive(Debug, Default)]
pub struct PathWriter {
    path: String,
    error: Option<BuildError>,
    /// Parameters written so far, and the index of the first one refused.
    params: usize,
    failed_param: usize,
}

impl PathWriter {
    /// A literal segment of the template.
    pub fn literal(&mut self, seg: &str) {
        self.path.push('/');
        self.path.push_str(seg);
    }

    /// A parameter: encoded so that no value (`/`, `?`, `#`, `%`, `..`, spaces, any Unicode)
    /// can change the path. An empty value is an error, and so is a value with a NUL
    /// character, which Asterisk (written in C) would cut there, addressing another resource.
    pub fn param(&mut self, value: &str) {
        let index = self.params;
        self.params += 1;
        if self.error.is_some() {
            return;
        }
        if value.is_empty() {
            self.error = Some(BuildError::EmptyPathParameter);
            self.failed_param = index;
            return;
        }
        if value.contains('\0') {
            self.error = Some(BuildError::InvalidParameter {
                name: "",
                reason: NUL_REASON,
            });
            self.failed_param = index;
            return;
        }
        self.path.push('/');
        if value.bytes().all(|b| b == b'.') {
            // `.` and `..` would be collapsed by URL normalisation.
            for _ in 0..value.len() {
                self.path.push_str("%2E");
            }
        } else {
            self.path.extend(utf8_percent_encode(value, ENCODE));
        }
    }

    /// The encoded path (starting with `/`).
    pub fn as_str(&self) -> &str {
        &self.path
    }
}

/// A value that can be sent as a query parameter.
pub trait QueryValue {
    /// Appends the value, unencoded (the writer encodes).
    fn write_query_value(&self, out: &mut String);

    /// Why the value cannot be sent safely, if it cannot (checked before writing it).
    fn check_query_value(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

const NUL_REASON: &str =
    "the value contains a NUL character, which Asterisk cannot receive (it would cut the value there)";

const COMMA_REASON: &str = "one value of this comma-joined list contains a comma, \
     which Asterisk would read as two values";

impl QueryValue for String {
    fn write_query_value(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl QueryValue for str {
    fn write_query_value(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl QueryValue for i64 {
    fn write_query_value(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{self}");
    }
}

impl QueryValue for f64 {
    fn write_query_value(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{self}");
    }
}

impl QueryValue for bool {
    fn write_query_value(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

/// `allowMultiple` parameters: one parameter, values comma-joined. A value containing a
/// comma cannot be sent (it would become two values) and is refused.
impl<T: QueryValue> QueryValue for Vec<T> {
    fn write_query_value(&self, out: &mut String) {
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            v.write_query_value(out);
        }
    }

    fn check_query_value(&self) -> Result<(), &'static str> {
        let mut one = String::new();
        for v in self {
            v.check_query_value()?;
            one.clear();
            v.write_query_value(&mut one);
            if one.contains(',') {
                return Err(COMMA_REASON);
            }
        }
        Ok(())
    }
}

/// Collects the query parameters of a request.
#[derive(Debug, Default)]
pub struct QueryWriter {
    pairs: Vec<(&'static str, String)>,
    error: Option<BuildError>,
}

impl QueryWriter {
    /// Adds one parameter. A value that cannot be sent safely (a NUL character, a comma inside
    /// one value of a list) makes the request fail with [`BuildError::InvalidParameter`].
    pub fn push<V: QueryValue + ?Sized>(&mut self, name: &'static str, value: &V) {
        let mut s = String::new();
        value.write_query_value(&mut s);
        let problem = value.check_query_value().and_then(|()| {
            if s.contains('\0') {
                Err(NUL_REASON)
            } else {
                Ok(())
            }
        });
        if let Err(reason) = problem {
            self.error
                .get_or_insert(BuildError::InvalidParameter { name, reason });
        }
        self.pairs.push((name, s));
    }

    /// The parameters as (name, unencoded value) pairs, in order.
    pub fn pairs(&self) -> &[(&'static str, String)] {
        &self.pairs
    }
}

/// Credentials of an ARI user (`ari.conf`). The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
    /// `Authorization: Basic …`, encoded once (sent with every request); derived from the
    /// two fields above, so it changes nothing in comparisons.
    basic: HeaderValue,
}

impl Credentials {
    /// User and password. A user name containing `:` or a control character, or a password
    /// with a control character, cannot be sent safely and is rejected.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Result<Self, BuildError> {
        let user = user.into();
        let password = password.into();
        if user.contains(':') || user.chars().any(char::is_control) {
            return Err(BuildError::InvalidCredentials(
                "the user name must not contain ':' or control characters",
            ));
        }
        if password.chars().any(char::is_control) {
            return Err(BuildError::InvalidCredentials(
                "the password must not contain control characters",
            ));
        }
        let basic = encode_basic(&user, &password);
        Ok(Credentials {
            user,
            password,
            basic,
        })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password (handle with care).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The `Authorization: Basic …` header value, marked sensitive (encoded once, when the
    /// credentials were made; this is a cheap clone).
    pub fn basic_header(&self) -> HeaderValue {
        self.basic.clone()
    }

    /// `user:password` percent-encoded for an `api_key` query parameter.
    pub fn api_key_query_value(&self) -> String {
        utf8_percent_encode(&format!("{}:{}", self.user, self.password), ENCODE).to_string()
    }
}

fn encode_basic(user: &str, password: &str) -> HeaderValue {
    let raw = format!("{user}:{password}");
    let enc = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where Asterisk is and who we are: the base URL (`http://host:8088`, with or without a
/// trailing `/ari`) and the credentials.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Path prefix, always ending in `/ari`.
    prefix: String,
    credentials: Credentials,
    /// The `Host` header (the authority), checked once.
    host: HeaderValue,
}

impl BaseUrl {
    /// Parses the base URL. Only `http` and `https` are accepted.
    pub fn new(base_url: &str, credentials: Credentials) -> Result<Self, BuildError> {
        let uri: http::Uri = base_url
            .parse()
            .map_err(|_| BuildError::InvalidBaseUrl(truncate(base_url)))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| BuildError::InvalidBaseUrl(truncate(base_url)))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(BuildError::InvalidBaseUrl(truncate(base_url)));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| BuildError::InvalidBaseUrl(truncate(base_url)))?;
        if authority.as_str().contains('@') {
            return Err(BuildError::InvalidBaseUrl(
                "credentials in the URL are not accepted; pass them separately".into(),
            ));
        }
        let mut prefix = uri.path().trim_end_matches('/').to_string();
        if !prefix.ends_with("/ari") {
            prefix.push_str("/ari");
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| BuildError::InvalidBaseUrl(truncate(base_url)))?;
        Ok(BaseUrl {
            scheme,
            authority,
            prefix,
            credentials,
            host,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &http::uri::Scheme {
        &self.scheme
    }

    /// Host and port.
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Path prefix ending in `/ari`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Whether the scheme is `https`.
    pub fn is_tls(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }

    /// Host name without the port.
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// Port, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_tls() { 443 } else { 80 })
    }
}

/// The base URL for an error message: at most 80 characters, and any `user:password@` in it
/// replaced by `***@`, so that an error never shows a password.
fn truncate(s: &str) -> String {
    let start = s.find("://").map_or(0, |i| i + 3);
    let shown = match s.rfind('@') {
        Some(at) if at >= start => format!("{}***{}", &s[..start], &s[at..]),
        _ => s.to_string(),
    };
    shown.chars().take(80).collect()
}

/// An operation's request, transport-neutral: what HTTP and REST over WebSocket both need.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RequestParts {
    /// HTTP method.
    pub method: http::Method,
    /// Encoded path below `/ari`, without leading slash: `channels/a%2Fb/answer`.
    pub path: String,
    /// Query parameters (unencoded values).
    pub query: Vec<(&'static str, String)>,
    /// JSON body text.
    pub body: Option<String>,
    /// The operation's name (`channels.answer`).
    pub operation: &'static str,
}

/// `path` without a raw request's query string and fragment (cut at the first `?` or `#`).
fn without_query(path: &str) -> &str {
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        // ASCII: a character boundary.
        Some(i) => path.get(..i).unwrap_or_default(),
        None => path,
    }
}

/// The `/`-separated segments of a request's path (a raw request's query string and fragment
/// cut off), without an allocation: at most [`Segments::MAX`]; a longer path has none (no
/// request that creates a resource has more).
struct Segments<'a> {
    parts: [&'a str; Segments::MAX],
    len: usize,
}

impl<'a> Segments<'a> {
    const MAX: usize = 5;

    fn of(path: &'a str) -> Self {
        // Byte by byte: every request's path is classified a few times (see
        // `Client::execute_parts`), and `str::split` with a pattern costs more than the short
        // paths it cuts. `/` is ASCII, so every cut is on a character boundary.
        // One pass: cut at each `/`, stop at a `?` or `#` (all ASCII: every cut is on a
        // character boundary).
        let mut parts = [""; Self::MAX];
        let mut len = 0;
        let mut start = 0;
        let mut end = path.len();
        for (i, &b) in path.as_bytes().iter().enumerate() {
            match b {
                b'/' => {
                    // This segment and at least one more.
                    if len + 1 == Self::MAX {
                        return Segments { parts, len: 0 };
                    }
                    parts[len] = path.get(start..i).unwrap_or_default();
                    len += 1;
                    start = i + 1;
                }
                b'?' | b'#' => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        parts[len] = path.get(start..end).unwrap_or_default();
        Segments {
            parts,
            len: len + 1,
        }
    }

    fn get(&self) -> &[&'a str] {
        &self.parts[..self.len]
    }
}

impl RequestParts {
    /// A request known only by its method, its path below `/ari/` with its query string,
    /// both already percent-encoded (`channels/ID/variable?variable=X`), and its JSON body:
    /// for a proxy forwarding requests it has no type for. Its operation is `"raw"`.
    pub fn raw(method: http::Method, path_and_query: &str, body: Option<String>) -> RequestParts {
        RequestParts {
            method,
            path: path_and_query.trim_start_matches('/').to_string(),
            query: Vec::new(),
            body,
            operation: "raw",
        }
    }

    /// The bridge this request destroys if it succeeds: the id (decoded) of a
    /// `DELETE bridges/{bridgeId}`, typed ([`crate::ops::bridges::Destroy`]) or
    /// [raw](RequestParts::raw); `None` for any other request. An adapter tells the session
    /// of the success ([`Session::bridge_destroyed`](crate::session::Session::bridge_destroyed)).
    ///
    /// ```
    /// use ari_proto::ops::bridges;
    /// use ari_proto::rest::{request_parts, RequestParts};
    /// let parts = request_parts(&bridges::Destroy::new("conf/1"))?;
    /// assert_eq!(parts.destroyed_bridge().as_deref(), Some("conf/1"));
    /// let raw = RequestParts::raw(http::Method::DELETE, "/bridges/conf%2F1", None);
    /// assert_eq!(raw.destroyed_bridge().as_deref(), Some("conf/1"));
    /// let get = request_parts(&bridges::Get::new("conf/1"))?;
    /// assert_eq!(get.destroyed_bridge(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn destroyed_bridge(&self) -> Option<String> {
        if self.method != http::Method::DELETE {
            return None;
        }
        self.bridge_in_path()
    }

    /// The bridge id this request creates (or updates) if it succeeds, when the application
    /// chose it: the id (decoded) of a `POST bridges/{bridgeId}`
    /// ([`crate::ops::bridges::CreateWithId`]) or of a `POST bridges` with a `bridgeId`
    /// parameter ([`crate::ops::bridges::Create`]), typed or [raw](RequestParts::raw); `None`
    /// for any other request. A bridge the session recorded as ended (after
    /// [`Session::bridge_destroyed`](crate::session::Session::bridge_destroyed), say) exists
    /// again then: an adapter tells the session
    /// ([`Session::forget_ended`](crate::session::Session::forget_ended)), since Asterisk
    /// sends `BridgeCreated` only to applications subscribed to every bridge.
    ///
    /// ```
    /// use ari_proto::ops::bridges;
    /// use ari_proto::rest::{request_parts, RequestParts};
    /// let parts = request_parts(&bridges::CreateWithId::new("conf/1"))?;
    /// assert_eq!(parts.created_bridge().as_deref(), Some("conf/1"));
    /// let parts = request_parts(&bridges::Create::new().bridge_id("conf-2"))?;
    /// assert_eq!(parts.created_bridge().as_deref(), Some("conf-2"));
    /// let raw = RequestParts::raw(http::Method::POST, "/bridges?type=mixing&bridgeId=conf%2F3", None);
    /// assert_eq!(raw.created_bridge().as_deref(), Some("conf/3"));
    /// assert_eq!(request_parts(&bridges::Create::new())?.created_bridge(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn created_bridge(&self) -> Option<String> {
        if self.method != http::Method::POST {
            return None;
        }
        // Most requests are not about a bridge: no scan of their path.
        if !self.path.starts_with("bridges") {
            return None;
        }
        if let Some(id) = self.bridge_in_path() {
            return Some(id);
        }
        let (path, query) = self.path.split_once('?').unwrap_or((&self.path, ""));
        if path != "bridges" {
            return None;
        }
        let typed = self
            .query
            .iter()
            .find(|(k, _)| *k == "bridgeId")
            .map(|(_, v)| v.clone());
        // A raw request keeps its query string (encoded) in the path.
        let raw = || {
            let query = query.split('#').next().unwrap_or_default();
            query.split('&').find_map(|kv| {
                let v = kv.strip_prefix("bridgeId=")?;
                let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8()
                    .ok()?
                    .into_owned();
                Some(v)
            })
        };
        typed.or_else(raw).filter(|id| !id.is_empty())
    }

    /// The channel, playback or live recording this request creates under an id the
    /// application chose, if it succeeds: `POST channels/{channelId}` (originate with id),
    /// `POST channels`, `channels/create` or `channels/externalMedia` with a `channelId`
    /// parameter, a snoop with a `snoopId` (in the path or as a parameter), a play on a
    /// channel or bridge with a `playbackId` (in the path or as a parameter), and a record of
    /// a channel or bridge (its `name`); typed or
    /// [raw](RequestParts::raw). `None` for any other request. When Asterisk refuses it,
    /// the resource does not exist (except on some 409s, see
    /// [`created_resources`](Self::created_resources), which also names the other ids a
    /// request creates): an adapter tells the session
    /// ([`Session::not_created`](crate::session::Session::not_created)), which ends the
    /// subscriptions made for it beforehand.
    ///
    /// ```
    /// use ari_proto::events::ResourceKind;
    /// use ari_proto::ops::channels;
    /// use ari_proto::rest::{request_parts, RequestParts};
    /// let parts = request_parts(&channels::OriginateWithId::new("agent/7", "PJSIP/7"))?;
    /// assert_eq!(parts.created_resource(), Some((ResourceKind::Channel, "agent/7".to_string())));
    /// let parts = request_parts(&channels::PlayWithId::new("c1", "pb-1", ["sound:beep"]))?;
    /// assert_eq!(parts.created_resource(), Some((ResourceKind::Playback, "pb-1".to_string())));
    /// let parts = request_parts(&channels::Record::new("c1", "vm/1000/msg1", "wav"))?;
    /// assert_eq!(parts.created_resource(), Some((ResourceKind::Recording, "vm/1000/msg1".to_string())));
    /// let raw = RequestParts::raw(http::Method::POST, "/channels?endpoint=PJSIP%2F7&channelId=a%2F1", None);
    /// assert_eq!(raw.created_resource(), Some((ResourceKind::Channel, "a/1".to_string())));
    /// assert_eq!(request_parts(&channels::Answer::new("c1"))?.created_resource(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn created_resource(&self) -> Option<(crate::events::ResourceKind, String)> {
        if self.method != http::Method::POST {
            return None;
        }
        self.created_in(&Segments::of(&self.path))
    }

    /// [`created_resource`](Self::created_resource) of a POST whose path's `segments` are
    /// given (cut once by the callers that need them too).
    fn created_in(&self, segments: &Segments<'_>) -> Option<(crate::events::ResourceKind, String)> {
        use crate::events::ResourceKind::{Channel, Playback, Recording};
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        };
        let found = match segments.get() {
            ["channels"] | ["channels", "create"] | ["channels", "externalMedia"] => {
                self.param("channelId").map(|id| (Channel, id))
            }
            ["channels", id] => decode(id).map(|id| (Channel, id)),
            ["channels", _, "snoop"] => self.param("snoopId").map(|id| (Channel, id)),
            ["channels", _, "snoop", id] => decode(id).map(|id| (Channel, id)),
            ["channels" | "bridges", _, "play"] => {
                self.param("playbackId").map(|id| (Playback, id))
            }
            ["channels" | "bridges", _, "play", id] => decode(id).map(|id| (Playback, id)),
            ["channels" | "bridges", _, "record"] => self.param("name").map(|id| (Recording, id)),
            _ => None,
        };
        found.filter(|(_, id)| !id.is_empty())
    }

    /// Every resource this request creates under an id the application chose, if it
    /// succeeds: [`created_resource`](Self::created_resource) first, then the second half of
    /// a Local channel an originate or `channels/create` names (`otherChannelId`, when it
    /// differs from the first; without it, for a `Local/` endpoint, `{channelId};2`, the id
    /// Asterisk gives that half), then the bridge a `POST bridges` or `bridges/{bridgeId}`
    /// creates ([`created_bridge`](Self::created_bridge)). Empty for any other request (no
    /// allocation then). When Asterisk refuses the request, none of them exists: an adapter
    /// tells the session ([`Session::not_created`](crate::session::Session::not_created)) of
    /// each, so the waits set up for any of them end. What a refusal with 409 means depends
    /// on the kind: for a channel or bridge, the id belongs to a live one (keep its waits);
    /// for a playback or recording, usually that the target is not in Stasis, or that the
    /// stored recording exists and `ifExists=fail` (nothing was created), or that a live
    /// recording with that name is in progress (its waits are legitimate).
    ///
    /// ```
    /// use ari_proto::events::ResourceKind::{Bridge, Channel};
    /// use ari_proto::ops::{bridges, channels};
    /// use ari_proto::rest::{request_parts, RequestParts};
    /// let parts = request_parts(
    ///     &channels::Originate::new("Local/1@queue").channel_id("a;1").other_channel_id("a;2"),
    /// )?;
    /// assert_eq!(
    ///     parts.created_resources(),
    ///     [(Channel, "a;1".to_string()), (Channel, "a;2".to_string())]
    /// );
    /// let raw = RequestParts::raw(http::Method::POST, "channels/create?endpoint=Local%2F1&app=q&otherChannelId=b%2F2", None);
    /// assert_eq!(raw.created_resources(), [(Channel, "b/2".to_string())]);
    /// let parts = request_parts(&channels::OriginateWithId::new("q/1", "Local/1@queue"))?;
    /// assert_eq!(
    ///     parts.created_resources(),
    ///     [(Channel, "q/1".to_string()), (Channel, "q/1;2".to_string())]
    /// );
    /// let parts = request_parts(&bridges::CreateWithId::new("conf/1"))?;
    /// assert_eq!(parts.created_resources(), [(Bridge, "conf/1".to_string())]);
    /// assert!(request_parts(&channels::Answer::new("c1"))?.created_resources().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn created_resources(&self) -> Vec<(crate::events::ResourceKind, String)> {
        use crate::events::ResourceKind::{Bridge, Channel};
        if self.method != http::Method::POST {
            return Vec::new();
        }
        let segments = Segments::of(&self.path);
        let mut all: Vec<_> = self.created_in(&segments).into_iter().collect();
        let originates = match segments.get() {
            ["channels"] | ["channels", "create"] => true,
            ["channels", id] => !id.is_empty() && *id != "externalMedia",
            _ => false,
        };
        if originates {
            // Without `otherChannelId`, Asterisk names the second half of a Local channel
            // whose first half has an id after it: `{channelId};2`.
            let local = self.param("endpoint").is_some_and(|e| {
                e.get(..6)
                    .is_some_and(|tech| tech.eq_ignore_ascii_case("local/"))
            });
            let other = match self.param("otherChannelId").filter(|id| !id.is_empty()) {
                Some(other) => Some(other),
                None if local => all.first().map(|(_, id)| format!("{id};2")),
                None => None,
            };
            if let Some(other) = other {
                if !all.iter().any(|(_, id)| *id == other) {
                    all.push((Channel, other));
                }
            }
        }
        if let Some(bridge) = self.created_bridge() {
            all.push((Bridge, bridge));
        }
        all
    }

    /// The playback or live recording this request queues on a channel or bridge under an
    /// id the application chose, and that channel or bridge: a play with a `playbackId` (in
    /// the path or as a parameter) or a record (its `name`) of `channels/{id}` or
    /// `bridges/{id}`; `None` for any other request. When it succeeds, an adapter tells the
    /// session ([`Session::queued_on`](crate::session::Session::queued_on)): the resource
    /// will never start, and no event will come for it, if its channel leaves the application
    /// first.
    ///
    /// ```
    /// use ari_proto::events::ResourceKind::{Bridge, Channel, Playback, Recording};
    /// use ari_proto::ops::{bridges, channels};
    /// use ari_proto::rest::request_parts;
    /// let parts = request_parts(&channels::Record::new("c/1", "vm-1", "wav"))?;
    /// assert_eq!(
    ///     parts.queued_on(),
    ///     Some(((Recording, "vm-1".to_string()), (Channel, "c/1".to_string())))
    /// );
    /// let parts = request_parts(&bridges::PlayWithId::new("conf", "pb-1", ["sound:beep"]))?;
    /// assert_eq!(
    ///     parts.queued_on(),
    ///     Some(((Playback, "pb-1".to_string()), (Bridge, "conf".to_string())))
    /// );
    /// assert_eq!(request_parts(&channels::Play::new("c1", ["sound:beep"]))?.queued_on(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn queued_on(
        &self,
    ) -> Option<(
        (crate::events::ResourceKind, String),
        (crate::events::ResourceKind, String),
    )> {
        use crate::events::ResourceKind::{Bridge, Channel, Playback, Recording};
        if self.method != http::Method::POST {
            return None;
        }
        let segments = Segments::of(&self.path);
        let (target_kind, target, kind) = match segments.get() {
            ["channels", id, "play"] | ["channels", id, "play", _] => (Channel, *id, Playback),
            ["bridges", id, "play"] | ["bridges", id, "play", _] => (Bridge, *id, Playback),
            ["channels", id, "record"] => (Channel, *id, Recording),
            ["bridges", id, "record"] => (Bridge, *id, Recording),
            _ => return None,
        };
        let (created_kind, created) = self.created_in(&segments)?;
        if created_kind != kind {
            return None;
        }
        let target = percent_encoding::percent_decode_str(target)
            .decode_utf8()
            .ok()?
            .into_owned();
        (!target.is_empty()).then_some(((kind, created), (target_kind, target)))
    }

    /// The live recording this request stops (`POST recordings/live/{name}/stop`,
    /// [`crate::ops::recordings::Stop`]) or cancels (`DELETE recordings/live/{name}`,
    /// [`crate::ops::recordings::Cancel`]), typed or [raw](RequestParts::raw): its name
    /// (decoded); `None` for any other request. Asterisk answers 204 to a stop or cancel of a
    /// recording that has not started (queued behind the channel's playbacks, or during its
    /// first milliseconds) and disregards it: the recording then starts and runs to its own
    /// end. An adapter that wants the request to take effect sends it again once the
    /// recording has started.
    ///
    /// ```
    /// use ari_proto::ops::recordings;
    /// use ari_proto::rest::{request_parts, RequestParts};
    /// let stop = request_parts(&recordings::Stop::new("vm/1"))?;
    /// assert_eq!(stop.stopped_recording().as_deref(), Some("vm/1"));
    /// let cancel = request_parts(&recordings::Cancel::new("vm-2"))?;
    /// assert_eq!(cancel.stopped_recording().as_deref(), Some("vm-2"));
    /// let raw = RequestParts::raw(http::Method::POST, "/recordings/live/vm%2F3/stop", None);
    /// assert_eq!(raw.stopped_recording().as_deref(), Some("vm/3"));
    /// assert_eq!(request_parts(&recordings::Pause::new("vm-2"))?.stopped_recording(), None);
    /// assert_eq!(request_parts(&recordings::GetLive::new("vm-2"))?.stopped_recording(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stopped_recording(&self) -> Option<String> {
        // Most requests are not about a live recording: no scan of their path.
        let rest = self.path.strip_prefix("recordings/live/")?;
        let rest = without_query(rest);
        let name = match (&self.method, rest.split_once('/')) {
            (&http::Method::POST, Some((name, "stop"))) => name,
            (&http::Method::DELETE, None) => rest,
            _ => return None,
        };
        percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .ok()
            .map(|n| n.into_owned())
            .filter(|n| !n.is_empty())
    }

    /// The value of the query parameter `name`: typed, or from a raw request's encoded query
    /// string (kept in its path).
    fn param(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.query.iter().find(|(k, _)| *k == name) {
            return Some(v.clone());
        }
        let query = self.path.split_once('?')?.1.split('#').next()?;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            if k != name {
                return None;
            }
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|v| v.into_owned())
        })
    }

    /// The decoded `{id}` of a path `bridges/{id}` (nothing after it).
    fn bridge_in_path(&self) -> Option<String> {
        // Most requests are not about a bridge: no scan of their path.
        let rest = self.path.strip_prefix("bridges/")?;
        // A raw request keeps its query string in the path.
        let id = without_query(rest);
        if id.is_empty() || id.contains('/') {
            return None;
        }
        let id = percent_encoding::percent_decode_str(id)
            .decode_utf8()
            .ok()?;
        (!id.is_empty()).then(|| id.into_owned())
    }

    /// The path and encoded query string, without leading slash: `channels?endpoint=PJSIP%2F1`.
    pub fn path_and_query(&self) -> String {
        let mut s = self.path.clone();
        self.push_query(&mut s);
        s
    }

    /// The length of the encoded query string (see [`Self::push_query`]).
    fn query_len(&self) -> usize {
        let encoded = |s: &str| {
            utf8_percent_encode(s, ENCODE_QUERY)
                .map(str::len)
                .sum::<usize>()
        };
        self.query
            .iter()
            .map(|(k, v)| 2 + encoded(k) + encoded(v))
            .sum()
    }

    /// Appends the encoded query string (`?a=1&b=2`, nothing without parameters).
    fn push_query(&self, s: &mut String) {
        for (i, (k, v)) in self.query.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.extend(utf8_percent_encode(k, ENCODE_QUERY));
            s.push('=');
            s.extend(utf8_percent_encode(v, ENCODE_QUERY));
        }
    }
}

/// Splits an operation into its transport-neutral parts.
pub fn request_parts<O: Operation>(op: &O) -> Result<RequestParts, BuildError> {
    // Room for the template's literal segments and a few ids: written without regrowing.
    let mut path = PathWriter {
        path: String::with_capacity(O::PATH.len() + 64),
        ..PathWriter::default()
    };
    op.write_path(&mut path);
    if let Some(e) = path.error {
        return Err(match e {
            BuildError::InvalidParameter { reason, .. } => BuildError::InvalidParameter {
                name: path_param_name(O::PATH, path.failed_param),
                reason,
            },
            e => e,
        });
    }
    let mut query = QueryWriter::default();
    op.write_query(&mut query);
    if let Some(e) = query.error {
        return Err(e);
    }
    let body = op.body().map(|b| b.to_string());
    // Without the leading slash, in place (no second allocation).
    let mut path = path.path;
    let slashes = path.len() - path.trim_start_matches('/').len();
    path.drain(..slashes);
    Ok(RequestParts {
        method: O::METHOD,
        path,
        query: query.pairs,
        body,
        operation: O::NAME,
    })
}

/// The name of the `index`-th `{parameter}` of a path template.
fn path_param_name(template: &'static str, index: usize) -> &'static str {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .nth(index)
        .unwrap_or("")
}

/// Builds the HTTP request of an operation: absolute URI, `Host`, Basic `Authorization`
/// (sensitive), and a JSON body with `Content-Type` when the operation has one.
///
/// The URI is in absolute form; a transport talking HTTP/1.1 directly to Asterisk sends its
/// path and query (see [`origin_form`]).
pub fn build_request<O: Operation>(
    ep: &BaseUrl,
    op: &O,
) -> Result<http::Request<Vec<u8>>, BuildError> {
    build_request_from_parts(ep, request_parts(op)?)
}

/// Builds the HTTP request from [`RequestParts`].
pub fn build_request_from_parts(
    ep: &BaseUrl,
    parts: RequestParts,
) -> Result<http::Request<Vec<u8>>, BuildError> {
    // The scheme, authority and `Host` value were parsed and checked once, with the base
    // URL; only the path and query are new (and checked by `PathAndQuery`), written into one
    // buffer that the URI then owns.
    // Of the exact length: a buffer with room to spare would cost `Bytes` an allocation of
    // its own (and a free) to take it over.
    let mut path =
        String::with_capacity(ep.prefix.len() + 1 + parts.path.len() + parts.query_len());
    path.push_str(&ep.prefix);
    path.push('/');
    path.push_str(&parts.path);
    parts.push_query(&mut path);
    debug_assert_eq!(
        path.len(),
        path.capacity(),
        "query_len counts what push_query writes"
    );
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(ep.scheme.clone());
    uri.authority = Some(ep.authority.clone());
    uri.path_and_query =
        Some(http::uri::PathAndQuery::try_from(path).map_err(|e| BuildError::Http(e.to_string()))?);
    let uri = http::Uri::from_parts(uri).map_err(|e| BuildError::Http(e.to_string()))?;
    let host = ep.host.clone();
    let (body, json) = match parts.body {
        Some(text) => (text.into_bytes(), true),
        None => (Vec::new(), false),
    };
    let mut req = http::Request::new(body);
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.reserve(3);
    headers.insert(HOST, host);
    headers.insert(AUTHORIZATION, ep.credentials.basic_header());
    if json {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(req)
}

/// The origin-form request target (`/ari/channels?…`) of a request URI.
pub fn origin_form(uri: &http::Uri) -> &str {
    uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
}

/// Why a request could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A path parameter (an id) was empty.
    EmptyPathParameter,
    /// The base URL is not an `http://` or `https://` URL with a host.
    InvalidBaseUrl(String),
    /// User name or password cannot be sent safely.
    InvalidCredentials(&'static str),
    /// A parameter value cannot be sent without changing its meaning: a NUL character
    /// (Asterisk would cut the value there), or a comma inside one value of a comma-joined
    /// list (`allowMultiple`: it would become two values).
    #[non_exhaustive]
    InvalidParameter {
        /// The parameter's wire name (`channelId`, `media`, …).
        name: &'static str,
        /// Why it cannot be sent.
        reason: &'static str,
    },
    /// The `http` crate refused the request.
    Http(String),
    /// The operation, or one of the parameters given, is newer than the server (see
    /// [`crate::version::check`]): sending it would get a 404 or be ignored.
    #[non_exhaustive]
    Unsupported {
        /// The operation (`channels.progress`).
        operation: &'static str,
        /// The parameter, when the operation exists but this parameter does not.
        parameter: Option<&'static str>,
        /// The first Asterisk branch that has it.
        since: crate::Since,
        /// The server's version, as it reported it (`18.20.2`).
        server: String,
    },
}

impl BuildError {
    /// An [`BuildError::InvalidParameter`]: `name` (the parameter's wire name) cannot be sent,
    /// for `reason`.
    pub fn invalid_parameter(name: &'static str, reason: &'static str) -> Self {
        BuildError::InvalidParameter { name, reason }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::EmptyPathParameter => {
                f.write_str("an id in the request path is empty; give the resource's id")
            }
            BuildError::InvalidBaseUrl(u) => write!(
                f,
                "invalid base URL {u:?}: expected http://host:port or https://host:port"
            ),
            BuildError::InvalidCredentials(why) => write!(f, "invalid credentials: {why}"),
            BuildError::InvalidParameter { name, reason } => {
                write!(f, "parameter {name:?} cannot be sent: {reason}")
            }
            BuildError::Http(e) => write!(f, "could not build the HTTP request: {e}"),
            BuildError::Unsupported {
                operation,
                parameter: None,
                since,
                server,
            } => write!(
                f,
                "{operation} needs {since} (ARI {}); the server runs Asterisk {server}",
                since.api_version()
            ),
            BuildError::Unsupported {
                operation,
                parameter: Some(p),
                since,
                server,
            } => write!(
                f,
                "parameter {p:?} of {operation} needs {since} (ARI {}); the server runs \
                 Asterisk {server} (leave it unset there)",
                since.api_version()
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// What kind of error status Asterisk answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400: a parameter is missing or invalid.
    BadRequest,
    /// 401: wrong or missing credentials.
    Unauthorized,
    /// 403: the user may not do this (e.g. a `read_only` user writing).
    Forbidden,
    /// 404: no such resource (or path).
    NotFound,
    /// 409: the resource is not in a state that allows it (e.g. channel not in Stasis).
    Conflict,
    /// 412: a precondition failed (e.g. channel not in a bridge).
    PreconditionFailed,
    /// 422: the request is well formed but refers to something that does not exist.
    Unprocessable,
    /// 5xx.
    ServerError,
    /// Any other status.
    Other,
}

impl ErrorKind {
    /// The kind for a status code.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            412 => ErrorKind::PreconditionFailed,
            422 => ErrorKind::Unprocessable,
            500..=599 => ErrorKind::ServerError,
            _ => ErrorKind::Other,
        }
    }
}

/// An error status from Asterisk with its message (from `{"message": …}`, or the plain-text
/// body Asterisk sends for unknown paths).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AriError {
    /// What kind of error.
    pub kind: ErrorKind,
    /// The HTTP status.
    pub status: u16,
    /// Asterisk's message.
    pub message: String,
}

impl AriError {
    /// Builds the error from an error status and its body.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Msg {
            message: String,
        }
        let message = match serde_json::from_slice::<Msg>(body) {
            Ok(m) => m.message,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let t = text.trim();
                t.chars().take(512).collect()
            }
        };
        AriError {
            kind: ErrorKind::from_status(status),
            status,
            message,
        }
    }
}

impl fmt::Display for AriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "Asterisk answered {}", self.status)
        } else {
            write!(f, "Asterisk answered {}: {}", self.status, self.message)
        }
    }
}

impl std::error::Error for AriError {}

/// Why a response did not give the operation's result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// Asterisk answered an error status.
    Ari(AriError),
    /// A success status whose body does not decode as the operation's result type.
    Decode {
        /// The operation.
        operation: &'static str,
        /// The status.
        status: u16,
        /// What went wrong.
        error: String,
    },
}

impl ResponseError {
    /// The Asterisk error, if this is one.
    pub fn as_ari(&self) -> Option<&AriError> {
        match self {
            ResponseError::Ari(e) => Some(e),
            ResponseError::Decode { .. } => None,
        }
    }
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Ari(e) => e.fmt(f),
            ResponseError::Decode {
                operation,
                status,
                error,
            } => write!(
                f,
                "{operation}: the {status} response body does not decode: {error}"
            ),
        }
    }
}

impl std::error::Error for ResponseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResponseError::Ari(e) => Some(e),
            ResponseError::Decode { .. } => None,
        }
    }
}

impl From<AriError> for ResponseError {
    fn from(e: AriError) -> Self {
        ResponseError::Ari(e)
    }
}

/// Parses a response (status and body) into the operation's result, or the typed error.
pub fn parse_response<O: Operation>(status: u16, body: &[u8]) -> Result<O::Output, ResponseError> {
    if !(200..300).contains(&status) {
        return Err(ResponseError::Ari(AriError::from_body(status, body)));
    }
    O::parse_output(body).map_err(|e| ResponseError::Decode {
        operation: O::NAME,
        status,
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::{without_query, Segments};
    use proptest::prelude::*;

    proptest! {
        /// The byte-wise cut and split give what `str::split` gives, for any text (multi-byte
        /// characters included), and at most `Segments::MAX` segments.
        #[test]
        fn segments_are_those_of_str_split(path in "[a-z/?#é%2F]{0,24}") {
            let cut = path.split(['?', '#']).next().unwrap_or_default();
            prop_assert_eq!(without_query(&path), cut);
            let expected: Vec<&str> = cut.split('/').collect();
            let segments = Segments::of(&path);
            if expected.len() <= Segments::MAX {
                prop_assert_eq!(segments.get(), &expected[..]);
            } else {
                prop_assert!(segments.get().is_empty());
            }
        }
    }
}
