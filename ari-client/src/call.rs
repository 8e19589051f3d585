//! One REST operation as an awaitable value, and how its result becomes instance objects.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use ari_proto::Operation;

use crate::{Client, Error, Runtime};

/// One REST operation, ready to send: `.await` it.
///
/// Built by the generated methods (`client.channels().get(id)`, `channel.answer()`, …); the
/// optional parameters of the operation are set with [`Call::map`] or the generated setters.
/// Awaiting it sends the request over the configured transport (HTTP or REST over the events
/// WebSocket, with identical results), applies the request timeout, decodes the response and
/// turns resource models into instance objects ([`Wrap`]).
///
/// Nothing is sent until the call is awaited.
#[must_use = "a Call does nothing until it is awaited"]
pub struct Call<R: Runtime, O> {
    client: Client<R>,
    op: O,
}

impl<R: Runtime, O> Call<R, O> {
    /// A call of `op` on `client`.
    pub fn new(client: Client<R>, op: O) -> Self {
        Call { client, op }
    }

    /// Changes the operation (sets optional parameters):
    /// `client.channels().list().map(|op| op)`.
    pub fn map(self, f: impl FnOnce(O) -> O) -> Self {
        Call {
            client: self.client,
            op: f(self.op),
        }
    }

    /// The operation that will be sent.
    pub fn op(&self) -> &O {
        &self.op
    }

    /// The client it is sent with.
    pub fn client(&self) -> &Client<R> {
        &self.client
    }

    /// The client and the operation.
    pub fn into_parts(self) -> (Client<R>, O) {
        (self.client, self.op)
    }
}

impl<R: Runtime, O: fmt::Debug> fmt::Debug for Call<R, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("op", &self.op).finish()
    }
}

impl<R, O> IntoFuture for Call<R, O>
where
    R: Runtime,
    O: Operation + Send + 'static,
    O::Output: Wrap<R> + Send,
    <O::Output as Wrap<R>>::Out: Send,
{
    type Output = Result<<O::Output as Wrap<R>>::Out, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'static>>;

    fn into_future(self) -> Self::IntoFuture {
        let Call { client, op } = self;
        // The request's future itself is boxed, wrapping included: no layer around it (a
        // layer copies the future below it when it starts it).
        Box::pin(client.execute_then(&op, |out, client| out.wrap(client)))
    }
}

/// Turns what an operation returns into what the caller gets: a resource model into its
/// instance object (`models::Channel` → [`crate::Channel`]), lists element-wise, everything
/// else unchanged. An `Arc<models::Channel>` (an event's snapshot) is wrapped without a copy:
/// the instance shares it.
pub trait Wrap<R: Runtime> {
    /// What the caller gets.
    type Out;
    /// Wraps `self`, binding instance objects to `client`.
    fn wrap(self, client: &Client<R>) -> Self::Out;
}

impl<R: Runtime> Wrap<R> for () {
    type Out = ();
    fn wrap(self, _client: &Client<R>) {}
}

impl<R: Runtime> Wrap<R> for bytes::Bytes {
    type Out = bytes::Bytes;
    fn wrap(self, _client: &Client<R>) -> Self::Out {
        self
    }
}

impl<R: Runtime> Wrap<R> for serde_json::Value {
    type Out = serde_json::Value;
    fn wrap(self, _client: &Client<R>) -> Self::Out {
        self
    }
}

impl<R: Runtime, T: Wrap<R>> Wrap<R> for Vec<T> {
    type Out = Vec<T::Out>;
    fn wrap(self, client: &Client<R>) -> Self::Out {
        self.into_iter().map(|t| t.wrap(client)).collect()
    }
}

/// Implements [`Wrap`] with `Out = Self` for each listed type (models that are not
/// resources with an instance object).
///
/// ```
/// struct Plain;
/// ari_client::identity_wrap!(Plain);
/// ```
#[macro_export]
macro_rules! identity_wrap {
    ($($t:ty),* $(,)?) => {
        $(
            impl<R: $crate::Runtime> $crate::Wrap<R> for $t {
                type Out = $t;
                fn wrap(self, _client: &$crate::Client<R>) -> $t {
                    self
                }
            }
        )*
    };
}
