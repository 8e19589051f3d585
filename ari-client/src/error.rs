//! The one error type of the client.

use std::fmt;
use std::time::Duration;

use ari_proto::rest::{BuildError, ResponseError};
use ari_proto::{AriError, ErrorKind};

use crate::runtime::TransportError;

/// Everything that can go wrong with a request, an awaited event or the connection.
///
/// Never contains credentials: neither `Debug` nor `Display` shows a password or an
/// `Authorization` header.
///
/// ```
/// # fn demo(err: ari_client::Error) {
/// use ari_client::Error;
/// match &err {
///     Error::Ari(e) if e.status == 404 => println!("no such resource: {}", e.message),
///     Error::Timeout { .. } => println!("Asterisk did not answer in time"),
///     Error::Transport(e) => println!("network: {e}"),
///     other => println!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Asterisk answered with an error status (`status`, [`ErrorKind`], `message`).
    Ari(AriError),
    /// The transport failed: could not connect, TLS, connection lost, …
    Transport(TransportError),
    /// No answer within the request timeout.
    Timeout {
        /// The operation (`channels.answer`), or what was awaited.
        operation: &'static str,
        /// The timeout that passed.
        after: Duration,
    },
    /// The request could not be built (an empty id, an invalid base URL or credentials).
    Build(BuildError),
    /// A success response whose body does not decode as the operation's result.
    Decode {
        /// The operation.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// What the decoder said.
        message: String,
    },
    /// The client or the events connection is closed (stopped, dropped, or it gave up
    /// reconnecting), so the request or the awaited event cannot complete.
    Closed {
        /// Why.
        reason: &'static str,
    },
    /// The resource ended (its final event arrived, e.g. `ChannelDestroyed`; or it had
    /// already ended when the wait began; or Asterisk restarted) before the awaited event:
    /// that event will not come.
    Ended {
        /// The resource, as ARI names event sources: `channel:1700000000.1`.
        resource: String,
    },
    /// The outbound WebSocket Asterisk had opened to the application (an
    /// [`OutboundServer`](crate::OutboundServer)'s client) was lost and Asterisk did not open
    /// a new one within [`OutboundOptions::peer_timeout`](crate::OutboundOptions::peer_timeout),
    /// or, over a cluster (`ari-cluster`), the resource's node stayed down past its lost limit
    /// (the node's proxy did not come back): the resource's awaited event will not come.
    AsteriskGone {
        /// The resource, as ARI names event sources: `channel:1700000000.1`.
        resource: String,
    },
    /// Asterisk unregistered every application of the outbound WebSocket it had opened to
    /// the application (an [`OutboundServer`](crate::OutboundServer)'s client), then closed
    /// it with 1000: its `outbound_websocket` configuration was removed and reloaded, and it
    /// will not dial again. The resource's awaited event will not come
    /// ([`ConnectionEvent::ApplicationsUnregistered`](crate::ConnectionEvent::ApplicationsUnregistered)).
    ApplicationUnregistered {
        /// The resource, as ARI names event sources: `channel:1700000000.1`.
        resource: String,
    },
    /// A live recording failed (`RecordingFailed`, e.g. its channel was in a bridge when the
    /// recording would start: cause `Cannot record channel while in bridge`), as [`LiveRecording::finished`](crate::LiveRecording::finished)
    /// reports it.
    RecordingFailed {
        /// The recording's name.
        name: String,
        /// Why, as Asterisk said (the recording's `cause`), if it said.
        cause: Option<String>,
    },
    /// A playback failed: Asterisk ended it with state `failed` (it could not play the
    /// media, e.g. a sound file that does not exist or a bad media URI), as
    /// [`Playback::finished`](crate::Playback::finished) reports it.
    PlaybackFailed {
        /// The playback's id.
        id: String,
        /// The media it could not play (the playback's `media_uri` in its final event).
        media_uri: String,
    },
    /// Whether a live recording finished or failed cannot be known: it had already ended
    /// when [`LiveRecording::finished`](crate::LiveRecording::finished) asked (Asterisk
    /// answered 404), this client did not see its end (it came before the handle was made
    /// and is no longer remembered, or to another client), and no stored recording has its
    /// name (it failed, was cancelled, or was deleted since).
    RecordingOutcomeUnknown {
        /// The recording's name.
        name: String,
    },
    /// An event stream fell behind and this many events were dropped for it (see
    /// [`Lagged`]).
    Lagged(u64),
    /// The server lacks a feature the client was told to rely on (for example REST over the
    /// events WebSocket with [`crate::ClientBuilder::require_rest_transport`]). An operation
    /// or parameter newer than the server is an [`Error::Build`] with
    /// [`BuildError::Unsupported`] instead.
    Unsupported {
        /// The feature.
        feature: &'static str,
        /// The Asterisk versions that have it.
        needs: &'static str,
        /// The server's version, as it reported it.
        server: String,
    },
}

impl Error {
    /// The HTTP error status Asterisk answered with: that of an [`Error::Ari`] (a REST
    /// error, e.g. 404), or of an [`Error::Transport`] for a refused WebSocket upgrade (e.g.
    /// 401 for wrong credentials). `None` for every other error, including
    /// [`Error::Decode`], whose status is a success status (it is in the variant).
    ///
    /// ```
    /// use ari_client::{AriError, Error};
    /// let err = Error::from(AriError::from_body(404, br#"{"message":"Channel not found"}"#));
    /// assert_eq!(err.status(), Some(404));
    /// assert_eq!(Error::Lagged(3).status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Ari(e) => Some(e.status),
            Error::Transport(t) => t.status,
            _ => None,
        }
    }

    /// The Asterisk error, if this is one.
    pub fn ari(&self) -> Option<&AriError> {
        match self {
            Error::Ari(e) => Some(e),
            _ => None,
        }
    }

    /// The kind of the Asterisk error, if this is one.
    pub fn ari_kind(&self) -> Option<ErrorKind> {
        self.ari().map(|e| e.kind)
    }

    /// Whether Asterisk answered 404 (no such resource).
    pub fn is_not_found(&self) -> bool {
        self.ari_kind() == Some(ErrorKind::NotFound)
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
            || matches!(self, Error::Transport(t) if t.kind == crate::TransportErrorKind::Timeout)
    }

    pub(crate) fn closed(reason: &'static str) -> Self {
        Error::Closed { reason }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Ari(e) => e.fmt(f),
            Error::Transport(e) => e.fmt(f),
            Error::Timeout { operation, after } => {
                write!(f, "{operation}: no answer within {after:?}")
            }
            Error::Build(e) => e.fmt(f),
            Error::Decode {
                operation,
                status,
                message,
            } => write!(
                f,
                "{operation}: the {status} response body does not decode: {message}"
            ),
            Error::Closed { reason } => write!(f, "closed: {reason}"),
            Error::Ended { resource } => {
                write!(f, "{resource} ended before the awaited event")
            }
            Error::AsteriskGone { resource } => write!(
                f,
                "{resource}: Asterisk stayed unreachable past the peer timeout (its outbound \
                 connection, or its cluster node's proxy, did not come back); the awaited event \
                 will not come"
            ),
            Error::ApplicationUnregistered { resource } => write!(
                f,
                "{resource}: Asterisk unregistered the application (its outbound_websocket \
                 configuration was removed) and closed the connection; the awaited event will \
                 not come"
            ),
            Error::RecordingFailed { name, cause } => match cause {
                Some(cause) => write!(f, "recording {name} failed: {cause}"),
                None => write!(f, "recording {name} failed"),
            },
            Error::PlaybackFailed { id, media_uri } => write!(
                f,
                "playback {id} of {media_uri} failed: Asterisk could not play it (state \
                 `failed`, e.g. a missing sound file)"
            ),
            Error::RecordingOutcomeUnknown { name } => write!(
                f,
                "recording {name} had already ended and whether it finished or failed is \
                 unknown: this client did not see its end and no stored recording has its name"
            ),
            Error::Lagged(n) => write!(
                f,
                "the event stream fell behind: {n} events were dropped for it"
            ),
            Error::Unsupported {
                feature,
                needs,
                server,
            } => write!(
                f,
                "{feature} needs {needs}; the server runs Asterisk {server}"
            ),
        }
    }
}

/// `Ari`, `Transport` and `Build` are transparent: their message is the inner error's, so
/// their source is the inner error's source (a chain printer such as anyhow's `{:#}` shows
/// each message once: `connection error: reading the response: reset by peer`). The inner
/// error itself is the variant's field.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Ari(e) => e.source(),
            Error::Transport(e) => e.source(),
            Error::Build(e) => e.source(),
            _ => None,
        }
    }
}

impl From<AriError> for Error {
    fn from(e: AriError) -> Self {
        Error::Ari(e)
    }
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Error::Transport(e)
    }
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Self {
        Error::Build(e)
    }
}

impl From<ResponseError> for Error {
    fn from(e: ResponseError) -> Self {
        match e {
            ResponseError::Ari(e) => Error::Ari(e),
            ResponseError::Decode {
                operation,
                status,
                error,
            } => Error::Decode {
                operation,
                status,
                message: error,
            },
            #[allow(unreachable_patterns)]
            other => Error::Decode {
                operation: "",
                status: 0,
                message: other.to_string(),
            },
        }
    }
}

impl From<Lagged> for Error {
    fn from(l: Lagged) -> Self {
        Error::Lagged(l.0)
    }
}

/// An event stream item telling that the stream fell behind and this many events were dropped
/// for it.
///
/// Every subscription has a bounded queue (see [`crate::ClientBuilder::event_queue_capacity`]).
/// The connection is never slowed down for a slow consumer (Asterisk drops a WebSocket whose
/// reader stalls): when a queue is full and another event arrives, its *oldest* event is
/// dropped and counted in [`crate::Stats::dropped_events`]; the stream then yields
/// `Err(Lagged(n))` (`n` events dropped since it last read) before continuing with the oldest
/// event kept, as tokio's broadcast channel does. The newest events, including a resource's
/// final one, are always kept. `?` turns it into [`Error::Lagged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

impl fmt::Display for Lagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} events were dropped for this stream", self.0)
    }
}

impl std::error::Error for Lagged {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransportErrorKind;

    #[test]
    fn status_is_the_error_status_asterisk_answered_with() {
        let ari = Error::from(AriError::from_body(
            409,
            br#"{"message":"Channel not in Stasis"}"#,
        ));
        assert_eq!(ari.status(), Some(409));
        let refused = Error::from(TransportError::rejected(401, "upgrade refused"));
        assert_eq!(refused.status(), Some(401));
        let lost = Error::from(TransportError::new(TransportErrorKind::Closed, "reset"));
        assert_eq!(lost.status(), None);
        let decode = Error::Decode {
            operation: "channels.get",
            status: 200,
            message: "expected a JSON object".into(),
        };
        assert_eq!(
            decode.status(),
            None,
            "a success status is not an error status"
        );
        let timeout = Error::Timeout {
            operation: "channels.answer",
            after: Duration::from_secs(10),
        };
        assert_eq!(timeout.status(), None);
        assert_eq!(Error::closed("stopped").status(), None);
    }
}
