//! ARI outbound WebSocket ("Asterisk dials the application"): the upgrade handshake.
//!
//! With `ari.conf` `type=outbound_websocket` (Asterisk 20.15+, 21.10+, 22.5+, 23), Asterisk
//! opens a WebSocket **to** the application, as configured in `websocket_client.conf`, and
//! sends events and answers REST requests (`RESTRequest`/`RESTResponse`) over it. The
//! application is the WebSocket server. This module checks the upgrade request Asterisk
//! sends and builds the answer Asterisk accepts; the connection then belongs to a
//! [`Session::accepted`](crate::session::Session::accepted).
//!
//! Asterisk's request (recorded, the same for both connection types and on 20 and master):
//!
//! ```text
//! GET /ari-ob/persistent?token=abc123 HTTP/1.1
//! Sec-WebSocket-Version: 13
//! Upgrade: websocket
//! Connection: Upgrade
//! Host: 127.0.0.1:18731
//! Authorization: Basic b2J1c2VyOjxwYXNzd29yZD4=
//! Sec-WebSocket-Protocol: ari
//! Sec-WebSocket-Key: 8B3dGAAAAABi6TYFAAAAAA==
//! ```
//!
//! What Asterisk accepts as an answer (its client's checks, see [`check_response`]): a
//! status line `HTTP/1.1 101`, `Upgrade: websocket` and `Connection: Upgrade` as **whole
//! values** (`Connection: keep-alive, Upgrade` fails), the right `Sec-WebSocket-Accept`,
//! `Sec-WebSocket-Protocol` optional but if present a part of what it offered, and **no
//! `Sec-WebSocket-Extensions`** (no permessage-deflate). [`Accepted::response`] is exactly
//! that.
//!
//! ```
//! use ari_proto::outbound::{RefuseReason, UpgradeCheck};
//! use ari_proto::rest::Credentials;
//!
//! let check = UpgradeCheck::new()
//!     .path("/ari-ob/persistent")
//!     .credentials(Credentials::new("obuser", "obsecret")?);
//! let request = http::Request::get("/ari-ob/persistent?token=abc123")
//!     .header("Sec-WebSocket-Version", "13")
//!     .header("Upgrade", "websocket")
//!     .header("Connection", "Upgrade")
//!     .header("Host", "127.0.0.1:18731")
//!     .header("Authorization", "Basic b2J1c2VyOm9ic2VjcmV0") // obuser:obsecret
//!     .header("Sec-WebSocket-Protocol", "ari")
//!     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .body(())?;
//! let accepted = check.check(&request).expect("accepted");
//! assert_eq!(accepted.user(), Some("obuser"));
//! let response = accepted.response();
//! assert_eq!(response.status(), 101);
//! assert_eq!(response.headers()["connection"], "Upgrade");
//! assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//! assert_eq!(response.headers()["sec-websocket-protocol"], "ari");
//! assert!(response.headers().get("sec-websocket-extensions").is_none());
//!
//! // A wrong password is refused with 401; the reason never shows the password.
//! let wrong = http::Request::get("/ari-ob/persistent")
//!     .header("Sec-WebSocket-Version", "13")
//!     .header("Upgrade", "websocket")
//!     .header("Connection", "Upgrade")
//!     .header("Authorization", "Basic b2J1c2VyOmd1ZXNz") // obuser:guess
//!     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .body(())?;
//! let refused = check.check(&wrong).unwrap_err();
//! assert_eq!(refused.status(), 401);
//! assert!(refused.is_unauthorized());
//! assert!(matches!(refused.reason(), RefuseReason::WrongCredentials { user, .. } if user == "obuser"));
//! assert!(!refused.to_string().contains("guess"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, UPGRADE};
use http::{Method, StatusCode, Version};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::rest::Credentials;

/// The WebSocket subprotocol of ARI (`protocols = ari` in `websocket_client.conf`).
pub const SUBPROTOCOL: &str = "ari";

const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");

/// The GUID of RFC 6455 §1.3, appended to the key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest request head [`UpgradeCheck::check_head`] reads (Asterisk's is about 250 bytes).
pub const MAX_HEAD_BYTES: usize = 8192;

/// Most header lines [`UpgradeCheck::check_head`] reads (Asterisk sends 7).
const MAX_HEADERS: usize = 32;

/// Splits the application of a per-call connection (`connection_type = per_call_config`)
/// into the application the channel entered `Stasis()` for and the channel's name.
///
/// How Asterisk names it: `<app>:<channel name>` (`res/ari/ari_websockets.c` formats the
/// temporary application as `"%s:%s"` of the `Stasis()` application and the channel's
/// name; recorded: `obpc:Local/12#@dtmf-00000152;1` for `Stasis(obpc)`). `<app>` is an entry
/// of the section's `apps` in `ari.conf`, which Asterisk takes as it is (`tenant:ivr` is a
/// valid name). A channel name is `<technology>/<resource>`: the technology is a channel
/// driver's name (`PJSIP`, `SIP`, `IAX2`, `Local`, `WebSocket`, `AudioSocket`,
/// `UnicastRTP`, …: ASCII letters and digits; `_` and `-` are accepted too), the resource
/// any text, partly chosen by the network (the dialled extension of a `Local` channel, a
/// peer's `host:port`).
///
/// The rule: the split is at the **first** `:` followed by a technology and its `/`, with
/// a non-empty `<app>` before it. Nothing in the channel name, whatever the caller dialled,
/// can move that split: it is right for every channel whenever `<app>` itself holds no
/// `:<technology>/` (see [`call_application_is_unambiguous`]), which is a property of the
/// configuration alone. An application named like `tenant:sales/ivr` is ambiguous without
/// knowing the configured names: when they are known, use [`call_channel_name`], which
/// is exact. `None` when `name` is no such name (a persistent connection's application,
/// even one with a `:`). Never panics, whatever `name` holds.
///
/// ```
/// use ari_proto::outbound::split_call_application;
///
/// assert_eq!(
///     split_call_application("tenant:ivr:PJSIP/alice-00000001"),
///     Some(("tenant:ivr", "PJSIP/alice-00000001")),
/// );
/// // The resource may hold `:` and `/`, even `:<technology>/`: the first split stands.
/// assert_eq!(
///     split_call_application("ivr:Local/sip:bob/x@default-00000001;1"),
///     Some(("ivr", "Local/sip:bob/x@default-00000001;1")),
/// );
/// assert_eq!(split_call_application("tenant:ivr"), None);
/// ```
pub fn split_call_application(name: &str) -> Option<(&str, &str)> {
    name.match_indices(':').find_map(|(i, _)| {
        let (app, channel) = (&name[..i], &name[i + 1..]);
        (!app.is_empty() && is_channel_name(channel)).then_some((app, channel))
    })
}

/// The channel name of the per-call application `name` of the application `app`, exactly:
/// `Some(channel)` when `name` is `<app>:<channel name>` (see [`split_call_application`]
/// for how Asterisk forms it), whatever `app` holds, `:` and `/` included. What a program
/// that knows its configured applications should use: there is no ambiguity.
///
/// ```
/// use ari_proto::outbound::{call_channel_name, split_call_application};
///
/// let name = "tenant:sales/ivr:PJSIP/alice-00000001";
/// assert_eq!(call_channel_name(name, "tenant:sales/ivr"), Some("PJSIP/alice-00000001"));
/// assert_eq!(call_channel_name(name, "tenant"), Some("sales/ivr:PJSIP/alice-00000001"));
/// assert_eq!(call_channel_name(name, "sales"), None);
/// // Without the configured names, the first split is taken.
/// assert_eq!(split_call_application(name), Some(("tenant", "sales/ivr:PJSIP/alice-00000001")));
/// ```
pub fn call_channel_name<'a>(name: &'a str, app: &str) -> Option<&'a str> {
    let channel = name.strip_prefix(app)?.strip_prefix(':')?;
    (!app.is_empty() && is_channel_name(channel)).then_some(channel)
}

/// Whether [`split_call_application`] gives `app` back from every per-call application
/// `<app>:<channel name>` of it: `app` is not empty and holds no `:` followed by a
/// technology and `/` (`tenant:ivr`, `a:b/c d` are; `tenant:sales/ivr` is not). Check the
/// configured names with it, or use [`call_channel_name`].
///
/// ```
/// use ari_proto::outbound::call_application_is_unambiguous;
/// assert!(call_application_is_unambiguous("tenant:ivr"));
/// assert!(!call_application_is_unambiguous("tenant:sales/ivr"));
/// ```
pub fn call_application_is_unambiguous(app: &str) -> bool {
    !app.is_empty()
        && !app
            .match_indices(':')
            .any(|(i, _)| technology_then_slash(&app[i + 1..]))
}

/// Whether `s` is a channel name: `<technology>/<resource>`.
fn is_channel_name(s: &str) -> bool {
    technology_then_slash(s)
}

/// Whether `s` starts with a channel technology (ASCII letters, digits, `_`, `-`) and `/`.
fn technology_then_slash(s: &str) -> bool {
    let tech = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        .count();
    tech > 0 && s.as_bytes().get(tech) == Some(&b'/')
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2): base64 of the SHA-1
/// of the key followed by the protocol's GUID.
///
/// ```
/// assert_eq!(
///     ari_proto::outbound::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
/// );
/// ```
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Which upgrade requests from Asterisk to accept.
///
/// The default accepts any path, needs no credentials and does not insist on the `ari`
/// subprotocol (Asterisk omits it when `protocols` is empty). Set
/// [`credentials`](UpgradeCheck::credentials) in production: otherwise anyone who reaches the
/// port can pose as Asterisk.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UpgradeCheck {
    path: Option<String>,
    credentials: Option<Credentials>,
    require_subprotocol: bool,
}

impl fmt::Debug for UpgradeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeCheck")
            .field("path", &self.path)
            .field("user", &self.credentials.as_ref().map(Credentials::user))
            .field("require_subprotocol", &self.require_subprotocol)
            .finish()
    }
}

impl UpgradeCheck {
    /// Any path, no credentials, subprotocol optional.
    pub fn new() -> Self {
        UpgradeCheck::default()
    }

    /// Accepts only this path (compared exactly, without the query string): the path of the
    /// `uri` in `websocket_client.conf` (`/` when it has none).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Requires `Authorization: Basic` with these credentials: the `username` and
    /// `password` of the `websocket_client.conf` section (not `local_ari_user`). They are
    /// compared in constant time.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Requires Asterisk to offer the `ari` subprotocol (`protocols = ari`).
    pub fn require_subprotocol(mut self, on: bool) -> Self {
        self.require_subprotocol = on;
        self
    }

    /// The user name required, if any.
    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(Credentials::user)
    }

    /// Checks an upgrade request (its head; the body is ignored). On success the answer to
    /// send is [`Accepted::response`]; on failure, [`Refused::response`].
    pub fn check<B>(&self, request: &http::Request<B>) -> Result<Accepted, Refused> {
        self.check_parts(
            request.method(),
            request.version(),
            request.uri(),
            request.headers(),
        )
    }

    /// Reads and checks a raw request head (`GET … HTTP/1.1\r\n…\r\n\r\n`), for an adapter
    /// that reads the bytes itself. `Ok(None)`: the head is not complete yet (read more);
    /// otherwise the outcome and, when accepted, the number of bytes the head took (what
    /// follows belongs to the WebSocket). A head longer than [`MAX_HEAD_BYTES`] or not HTTP
    /// is refused with 400 (431 when too large).
    pub fn check_head(&self, bytes: &[u8]) -> Result<Option<(Accepted, usize)>, Refused> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD_BYTES => {
                return Err(Refused::new(RefuseReason::HeadTooLarge {
                    max: MAX_HEAD_BYTES,
                }))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refused::new(RefuseReason::HeadTooLarge {
                    max: MAX_HEAD_BYTES,
                }))
            }
            Err(e) => {
                return Err(Refused::new(RefuseReason::Malformed {
                    error: e.to_string(),
                }))
            }
        };
        if len > MAX_HEAD_BYTES {
            return Err(Refused::new(RefuseReason::HeadTooLarge {
                max: MAX_HEAD_BYTES,
            }));
        }
        let malformed = |error: &str| {
            Refused::new(RefuseReason::Malformed {
                error: error.to_string(),
            })
        };
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| malformed("invalid method"))?;
        let version = match req.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let uri: http::Uri = req
            .path
            .unwrap_or_default()
            .parse()
            .map_err(|_| malformed("invalid request target"))?;
        let mut map = HeaderMap::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| malformed("invalid header name"))?;
            let value =
                HeaderValue::from_bytes(h.value).map_err(|_| malformed("invalid header value"))?;
            map.append(name, value);
        }
        let accepted = self.check_parts(&method, version, &uri, &map)?;
        Ok(Some((accepted, len)))
    }

    fn check_parts(
        &self,
        method: &Method,
        version: Version,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<Accepted, Refused> {
        let refuse = |r: RefuseReason| Err(Refused::new(r));
        if method != Method::GET {
            return refuse(RefuseReason::Method {
                method: method.to_string(),
            });
        }
        if version < Version::HTTP_11 {
            return refuse(RefuseReason::HttpVersion);
        }
        if !header_is(headers, &UPGRADE, "websocket") {
            return refuse(RefuseReason::NotWebSocket);
        }
        if !has_token(headers, &CONNECTION, "upgrade") {
            return refuse(RefuseReason::NotWebSocket);
        }
        if !header_is(headers, &SEC_WEBSOCKET_VERSION, "13") {
            return refuse(RefuseReason::WebSocketVersion {
                offered: single(headers, "sec-websocket-version").map(str::to_string),
            });
        }
        let key = match single(headers, "sec-websocket-key") {
            Some(k) if key_is_valid(k) => k.trim(),
            _ => return refuse(RefuseReason::InvalidKey),
        };
        let path = uri.path();
        if let Some(expected) = &self.path {
            if path != expected {
                return refuse(RefuseReason::WrongPath {
                    path: path.to_string(),
                });
            }
        }
        let offered: Vec<&str> = headers
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let subprotocol = if offered.is_empty() {
            if self.require_subprotocol {
                return refuse(RefuseReason::Subprotocol {
                    offered: Vec::new(),
                });
            }
            None
        } else if offered.iter().any(|p| p.eq_ignore_ascii_case(SUBPROTOCOL)) {
            Some(SUBPROTOCOL)
        } else {
            return refuse(RefuseReason::Subprotocol {
                offered: offered.iter().map(|p| p.to_string()).collect(),
            });
        };
        let user = match &self.credentials {
            None => basic_user(headers),
            Some(expected) => Some(check_credentials(headers, expected)?),
        };
        let accept = HeaderValue::from_str(&accept_key(key))
            .map_err(|_| Refused::new(RefuseReason::InvalidKey))?;
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(SEC_WEBSOCKET_ACCEPT, accept);
        if let Some(p) = subprotocol {
            h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
        }
        Ok(Accepted {
            response,
            user,
            subprotocol,
            path: path.to_string(),
            query: uri.query().map(str::to_string),
            host: single(headers, "host").map(str::to_string),
        })
    }
}

/// An upgrade request that passed the check.
#[derive(Debug, Clone)]
pub struct Accepted {
    response: http::Response<()>,
    user: Option<String>,
    subprotocol: Option<&'static str>,
    path: String,
    query: Option<String>,
    host: Option<String>,
}

impl Accepted {
    /// The `101 Switching Protocols` answer, exactly: `Upgrade: websocket`,
    /// `Connection: Upgrade`, `Sec-WebSocket-Accept`, and `Sec-WebSocket-Protocol: ari` when
    /// Asterisk offered it. Nothing else (in particular no `Sec-WebSocket-Extensions`, which
    /// makes Asterisk fail the handshake). Send it as `HTTP/1.1`.
    pub fn response(&self) -> &http::Response<()> {
        &self.response
    }

    /// The answer as bytes, ready to write on the socket.
    pub fn response_bytes(&self) -> Vec<u8> {
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        for (name, value) in self.response.headers() {
            out.extend_from_slice(canonical_name(name.as_str()).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The `Sec-WebSocket-Accept` value.
    pub fn accept_key(&self) -> &str {
        self.response
            .headers()
            .get("sec-websocket-accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The user of the `Authorization: Basic` header, if Asterisk sent one (checked when the
    /// check has credentials).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The subprotocol answered (`Some("ari")` when Asterisk offered it).
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }

    /// The request path (from the `uri` of `websocket_client.conf`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request's query string, without `?` (from the `uri`; ARI adds nothing per call).
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The `Host` header (the `uri`'s host and port).
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
}

/// Why an upgrade request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefuseReason {
    /// Not a `GET` (405).
    #[non_exhaustive]
    Method {
        /// The method sent.
        method: String,
    },
    /// Not HTTP/1.1 or later (505).
    HttpVersion,
    /// `Upgrade: websocket` or `Connection: Upgrade` missing (426).
    NotWebSocket,
    /// `Sec-WebSocket-Version` missing or not 13 (426, with `Sec-WebSocket-Version: 13`).
    #[non_exhaustive]
    WebSocketVersion {
        /// The version offered, if any.
        offered: Option<String>,
    },
    /// `Sec-WebSocket-Key` missing, repeated, or not the base64 of 16 bytes (400).
    InvalidKey,
    /// The path is not the configured one (404).
    #[non_exhaustive]
    WrongPath {
        /// The path requested.
        path: String,
    },
    /// The `ari` subprotocol was required but not offered, or other subprotocols were
    /// offered without `ari` (400): check `protocols = ari` in `websocket_client.conf`.
    #[non_exhaustive]
    Subprotocol {
        /// The subprotocols offered.
        offered: Vec<String>,
    },
    /// No `Authorization: Basic` header (401): set both `username` and `password` in the
    /// `websocket_client.conf` section.
    MissingCredentials,
    /// The `Authorization` header is not valid `Basic` base64 of `user:password` (401).
    MalformedCredentials,
    /// User or password wrong (401). The password is never kept.
    #[non_exhaustive]
    WrongCredentials {
        /// The user name presented.
        user: String,
    },
    /// The request head is not valid HTTP (400).
    #[non_exhaustive]
    Malformed {
        /// What is wrong.
        error: String,
    },
    /// The request head is longer than [`MAX_HEAD_BYTES`] or has too many headers (431).
    #[non_exhaustive]
    HeadTooLarge {
        /// The limit.
        max: usize,
    },
}

impl RefuseReason {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            RefuseReason::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RefuseReason::HttpVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            RefuseReason::NotWebSocket | RefuseReason::WebSocketVersion { .. } => {
                StatusCode::UPGRADE_REQUIRED
            }
            RefuseReason::InvalidKey
            | RefuseReason::Subprotocol { .. }
            | RefuseReason::Malformed { .. } => StatusCode::BAD_REQUEST,
            RefuseReason::WrongPath { .. } => StatusCode::NOT_FOUND,
            RefuseReason::MissingCredentials
            | RefuseReason::MalformedCredentials
            | RefuseReason::WrongCredentials { .. } => StatusCode::UNAUTHORIZED,
            RefuseReason::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::Method { method } => {
                write!(f, "the upgrade request must be a GET, not {method:?}")
            }
            RefuseReason::HttpVersion => f.write_str("the upgrade request must be HTTP/1.1"),
            RefuseReason::NotWebSocket => f.write_str(
                "not a WebSocket upgrade (Upgrade: websocket and Connection: Upgrade expected)",
            ),
            RefuseReason::WebSocketVersion { offered } => write!(
                f,
                "WebSocket version {} offered; 13 is needed",
                offered.as_deref().unwrap_or("(none)")
            ),
            RefuseReason::InvalidKey => {
                f.write_str("Sec-WebSocket-Key missing or not the base64 of 16 bytes")
            }
            RefuseReason::WrongPath { path } => write!(
                f,
                "path {path:?} is not the configured one (check the uri in websocket_client.conf)"
            ),
            RefuseReason::Subprotocol { offered } if offered.is_empty() => f.write_str(
                "the ari subprotocol was not offered (set protocols = ari in websocket_client.conf)",
            ),
            RefuseReason::Subprotocol { offered } => write!(
                f,
                "subprotocols {offered:?} offered without ari (protocols = ari in websocket_client.conf)"
            ),
            RefuseReason::MissingCredentials => f.write_str(
                "no Basic credentials (set username and password in websocket_client.conf)",
            ),
            RefuseReason::MalformedCredentials => {
                f.write_str("the Authorization header is not valid Basic credentials")
            }
            RefuseReason::WrongCredentials { user } => {
                write!(f, "wrong credentials for user {user:?}")
            }
            RefuseReason::Malformed { error } => write!(f, "malformed upgrade request: {error}"),
            RefuseReason::HeadTooLarge { max } => {
                write!(f, "the upgrade request head exceeds {max} bytes or 32 headers")
            }
        }
    }
}

/// A refused upgrade request: why, and the answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    reason: RefuseReason,
}

impl Refused {
    fn new(reason: RefuseReason) -> Self {
        Refused { reason }
    }

    /// Why.
    pub fn reason(&self) -> &RefuseReason {
        &self.reason
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        self.reason.status()
    }

    /// Whether the credentials were missing or wrong (401): count these, they may be an
    /// attack or a misconfigured `websocket_client.conf`.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == StatusCode::UNAUTHORIZED
    }

    /// The answer: the status, `Connection: close`, `Content-Length: 0`, plus
    /// `WWW-Authenticate: Basic realm="ari"` for 401 and `Sec-WebSocket-Version: 13` for a
    /// version problem. The reason stays on the server side.
    pub fn response(&self) -> http::Response<()> {
        let mut response = http::Response::new(());
        *response.status_mut() = self.status();
        let h = response.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        if self.is_unauthorized() {
            h.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ari\""),
            );
        }
        if matches!(
            self.reason,
            RefuseReason::WebSocketVersion { .. } | RefuseReason::NotWebSocket
        ) {
            h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    }

    /// [`Refused::response`] as bytes, ready to write on the socket before closing it.
    pub fn response_bytes(&self) -> Vec<u8> {
        let status = self.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error")
        )
        .into_bytes();
        for (name, value) in self.response().headers() {
            out.extend_from_slice(canonical_name(name.as_str()).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.status())
    }
}

impl std::error::Error for Refused {}

/// The value of a header that must appear once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok().map(str::trim)
}

fn header_is(headers: &HeaderMap, name: &HeaderName, value: &str) -> bool {
    single(headers, name.as_str()).is_some_and(|v| v.eq_ignore_ascii_case(value))
}

/// Whether a comma-separated header (any of its lines) lists `token`.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn key_is_valid(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == 16)
}

/// `Basic <base64>` decoded to `user:password` bytes.
fn basic_raw(headers: &HeaderMap) -> Result<Option<Vec<u8>>, Refused> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || Refused::new(RefuseReason::MalformedCredentials);
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map(Some)
        .map_err(|_| malformed())
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    let raw = basic_raw(headers).ok()??;
    let colon = raw.iter().position(|&b| b == b':')?;
    String::from_utf8(raw[..colon].to_vec()).ok()
}

/// Checks the `Authorization: Basic …` header of a request against `expected`, the way
/// [`UpgradeCheck`] does (user and password compared in constant time for equal lengths), for
/// a server that checks an upgrade of another subprotocol (chan_websocket's `media`, whose
/// `websocket_client.conf` entry sends the same header). Returns the user; refuses with
/// [`RefuseReason::MissingCredentials`], [`RefuseReason::MalformedCredentials`] or
/// [`RefuseReason::WrongCredentials`] (all 401).
///
/// ```
/// use ari_proto::outbound::{check_basic, RefuseReason};
/// use ari_proto::rest::Credentials;
/// let expected = Credentials::new("media", "s3cret").unwrap();
/// let mut headers = http::HeaderMap::new();
/// assert!(matches!(check_basic(&headers, &expected).unwrap_err().reason(),
///                  RefuseReason::MissingCredentials));
/// headers.insert("authorization", "Basic bWVkaWE6czNjcmV0".parse().unwrap()); // media:s3cret
/// assert_eq!(check_basic(&headers, &expected).unwrap(), "media");
/// ```
pub fn check_basic(headers: &HeaderMap, expected: &Credentials) -> Result<String, Refused> {
    check_credentials(headers, expected)
}

/// Compares the presented `user:password` with the expected one in constant time (for
/// equal lengths; a length difference is not hidden).
fn check_credentials(headers: &HeaderMap, expected: &Credentials) -> Result<String, Refused> {
    let raw = basic_raw(headers)?.ok_or_else(|| Refused::new(RefuseReason::MissingCredentials))?;
    let colon = raw
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| Refused::new(RefuseReason::MalformedCredentials))?;
    let user = String::from_utf8_lossy(&raw[..colon]).into_owned();
    let user_ok = raw[..colon].ct_eq(expected.user().as_bytes());
    let password_ok = raw[colon + 1..].ct_eq(expected.password().as_bytes());
    if bool::from(user_ok & password_ok) {
        Ok(user)
    } else {
        Err(Refused::new(RefuseReason::WrongCredentials { user }))
    }
}

/// `sec-websocket-accept` → `Sec-WebSocket-Accept` (what Asterisk's recorded headers look
/// like; HTTP header names are case-insensitive anyway).
fn canonical_name(name: &str) -> String {
    match name {
        "sec-websocket-accept" => "Sec-WebSocket-Accept".to_string(),
        "sec-websocket-protocol" => "Sec-WebSocket-Protocol".to_string(),
        "sec-websocket-version" => "Sec-WebSocket-Version".to_string(),
        "www-authenticate" => "WWW-Authenticate".to_string(),
        other => other
            .split('-')
            .map(|part| {
                let mut c = part.chars();
                match c.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// Why Asterisk would fail the handshake on this answer (its WebSocket client's checks, as
/// in `res_http_websocket.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseProblem {
    /// The status line does not start with `HTTP/1.1 101`.
    #[non_exhaustive]
    Status {
        /// The status line received.
        status_line: String,
    },
    /// `Upgrade` is not the whole value `websocket`.
    Upgrade,
    /// `Connection` is not the whole value `Upgrade` (`keep-alive, Upgrade` fails).
    Connection,
    /// `Sec-WebSocket-Accept` missing or wrong.
    AcceptKey,
    /// `Sec-WebSocket-Protocol` answered something not within the configured `protocols`.
    #[non_exhaustive]
    Subprotocol {
        /// The answered value.
        answered: String,
    },
    /// `Sec-WebSocket-Extensions` present: Asterisk negotiates no extension.
    Extensions,
    /// The head is not valid HTTP.
    #[non_exhaustive]
    Malformed {
        /// What is wrong.
        error: String,
    },
}

impl fmt::Display for ResponseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseProblem::Status { status_line } => {
                write!(f, "status line {status_line:?} is not HTTP/1.1 101")
            }
            ResponseProblem::Upgrade => f.write_str("Upgrade is not exactly \"websocket\""),
            ResponseProblem::Connection => f.write_str("Connection is not exactly \"Upgrade\""),
            ResponseProblem::AcceptKey => f.write_str("Sec-WebSocket-Accept missing or wrong"),
            ResponseProblem::Subprotocol { answered } => {
                write!(f, "subprotocol {answered:?} was not offered")
            }
            ResponseProblem::Extensions => {
                f.write_str("Sec-WebSocket-Extensions present (Asterisk negotiates none)")
            }
            ResponseProblem::Malformed { error } => write!(f, "malformed answer: {error}"),
        }
    }
}

impl std::error::Error for ResponseProblem {}

/// Checks an upgrade answer as Asterisk's WebSocket client does: `head` is the raw answer
/// up to and including the empty line, `key` the `Sec-WebSocket-Key` sent, `protocols` the
/// configured `protocols` (empty: none offered). Simulators and tests use it to make sure a
/// server's answer would satisfy a real Asterisk.
///
/// ```
/// use ari_proto::outbound::{check_response, ResponseProblem};
/// let key = "dGhlIHNhbXBsZSBub25jZQ==";
/// let good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: ari\r\n\r\n";
/// assert_eq!(check_response(good, key, "ari"), Ok(()));
/// let bad = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
///     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
/// assert_eq!(check_response(bad, key, "ari"), Err(ResponseProblem::Connection));
/// ```
pub fn check_response(head: &[u8], key: &str, protocols: &str) -> Result<(), ResponseProblem> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(ResponseProblem::Malformed {
                error: "incomplete head".into(),
            })
        }
        Err(e) => {
            return Err(ResponseProblem::Malformed {
                error: e.to_string(),
            })
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(ResponseProblem::Status {
            status_line: String::from_utf8_lossy(line).into_owned(),
        });
    }
    let get = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if !get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(ResponseProblem::Upgrade);
    }
    if !get("connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")) {
        return Err(ResponseProblem::Connection);
    }
    if get("sec-websocket-accept").as_deref() != Some(accept_key(key).as_str()) {
        return Err(ResponseProblem::AcceptKey);
    }
    if let Some(p) = get("sec-websocket-protocol") {
        if !protocols.contains(p.as_str()) {
            return Err(ResponseProblem::Subprotocol { answered: p });
        }
    }
    if get("sec-websocket-extensions").is_some() {
        return Err(ResponseProblem::Extensions);
    }
    Ok(())
}

#[cfg(test)]
mod call_application_tests {
    use super::split_call_application;

    #[test]
    fn splits_at_the_colon_before_the_channel_name() {
        let cases = [
            // Recorded (per-call-*.jsonl): `Stasis(obpc)` on Local channels.
            (
                "obpc:Local/12#@dtmf-00000152;1",
                Some(("obpc", "Local/12#@dtmf-00000152;1")),
            ),
            (
                "hello:PJSIP/alice-00000001",
                Some(("hello", "PJSIP/alice-00000001")),
            ),
            // An application with `:` in its name keeps it.
            (
                "tenant:ivr:PJSIP/alice-00000001",
                Some(("tenant:ivr", "PJSIP/alice-00000001")),
            ),
            ("a:b:c:SIP/x-1", Some(("a:b:c", "SIP/x-1"))),
            // `:` and `/` in the channel's resource stay in the channel name.
            (
                "tenant:ivr:WebSocket/c:1/0x7f",
                Some(("tenant:ivr", "WebSocket/c:1/0x7f")),
            ),
            (
                "app:SIP/10.0.0.1:5060-00000001",
                Some(("app", "SIP/10.0.0.1:5060-00000001")),
            ),
            // Not a per-call application.
            ("tenant:ivr", None),
            ("hello", None),
            ("", None),
            (":PJSIP/alice", None),
            ("hello:/alice", None),
            ("hello:", None),
            // The technology is a channel driver's name: letters and digits. An application
            // holding `:` and `/` around other text keeps them.
            (
                "sales:eu west/1:PJSIP/alice-00000001",
                Some(("sales:eu west/1", "PJSIP/alice-00000001")),
            ),
            ("a:b.c/d:IAX2/peer-1", Some(("a:b.c/d", "IAX2/peer-1"))),
            ("a::PJSIP/x", Some(("a:", "PJSIP/x"))),
            ("a:PJSIP:PJSIP/x", Some(("a:PJSIP", "PJSIP/x"))),
            // `:<technology>/` in the resource (network-chosen text) never moves the split.
            (
                "ivr:Local/x:PJSIP/evil@ctx-1;1",
                Some(("ivr", "Local/x:PJSIP/evil@ctx-1;1")),
            ),
            // Ambiguous: the first split is taken (call_channel_name is exact).
            (
                "tenant:sales/ivr:PJSIP/alice",
                Some(("tenant", "sales/ivr:PJSIP/alice")),
            ),
            // Not ASCII, no panic.
            ("é:ü/ö:PJSIP/ä", Some(("é:ü/ö", "PJSIP/ä"))),
            ("ivr:Ünicode/x", None),
            (":", None),
            ("::/", None),
        ];
        for (name, expected) in cases {
            assert_eq!(split_call_application(name), expected, "{name}");
        }
    }

    #[test]
    fn the_channel_name_of_a_known_application_is_exact() {
        use super::{call_application_is_unambiguous, call_channel_name};
        let name = "tenant:sales/ivr:PJSIP/alice";
        assert_eq!(
            call_channel_name(name, "tenant:sales/ivr"),
            Some("PJSIP/alice")
        );
        assert_eq!(call_channel_name(name, "tenant:sales"), None);
        assert_eq!(call_channel_name(name, ""), None);
        assert_eq!(call_channel_name("ivr:PJSIP", "ivr"), None);
        assert_eq!(call_channel_name("ivr", "ivr"), None);
        assert!(!call_application_is_unambiguous("tenant:sales/ivr"));
        assert!(call_application_is_unambiguous("sales:eu west/1"));
        assert!(call_application_is_unambiguous("a:"));
        assert!(!call_application_is_unambiguous(""));
    }
}

#[cfg(test)]
mod call_application_properties {
    use super::{call_application_is_unambiguous, call_channel_name, split_call_application};
    use proptest::prelude::*;

    /// Text rich in what makes names ambiguous: `:`, `/`, technologies, and other bytes.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(":".to_string()),
                Just("/".to_string()),
                Just("PJSIP".to_string()),
                Just("Local".to_string()),
                Just("@".to_string()),
                Just(";".to_string()),
                Just(" ".to_string()),
                Just("é".to_string()),
                "[a-z0-9_.#-]{1,3}",
            ],
            0..10,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A channel name: a technology, `/`, any resource.
    fn channel() -> impl Strategy<Value = String> {
        (
            prop_oneof![
                Just("PJSIP".to_string()),
                Just("Local".to_string()),
                Just("IAX2".to_string()),
                "[A-Za-z0-9_-]{1,8}",
            ],
            text(),
        )
            .prop_map(|(tech, resource)| format!("{tech}/{resource}"))
    }

    proptest! {
        /// Asterisk's `<app>:<channel name>` splits back into both parts for every
        /// application the rule calls unambiguous, whatever the channel's resource holds.
        #[test]
        fn unambiguous_applications_split_back(app in text(), channel in channel()) {
            prop_assume!(call_application_is_unambiguous(&app));
            let name = format!("{app}:{channel}");
            prop_assert_eq!(split_call_application(&name), Some((app.as_str(), channel.as_str())));
        }

        /// With the application known, the channel name comes back for any application.
        #[test]
        fn a_known_application_gives_its_channel_back(app in text(), channel in channel()) {
            prop_assume!(!app.is_empty());
            let name = format!("{app}:{channel}");
            prop_assert_eq!(call_channel_name(&name, &app), Some(channel.as_str()));
        }

        /// Any text: no panic, and a split is of the text itself, around a `:`, into a
        /// non-empty application and a channel name.
        #[test]
        fn any_text_splits_consistently(name in prop_oneof![text(), any::<String>()]) {
            if let Some((app, channel)) = split_call_application(&name) {
                prop_assert_eq!(format!("{app}:{channel}"), name.clone());
                prop_assert!(!app.is_empty());
                prop_assert_eq!(call_channel_name(&name, app), Some(channel));
            }
            let _ = call_application_is_unambiguous(&name);
        }
    }
}
