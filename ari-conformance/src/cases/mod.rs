//! The cases of the suite. Each is `pub async fn name<R: Runtime>(h: &Harness<R>)` (the
//! outbound cases, which need the stack's server side: `Harness<Stack<E, C>>`), uses only
//! the public API of `ari-client` against the harness's [`MockServer`](ari_testkit::MockServer)
//! (or one it starts), and panics on a failed assertion.

mod calls;
mod events;
mod faults;
mod lifecycle;
mod media;
mod media_edges;
mod media_flow;
mod outbound;
mod pool;
mod resources;
mod streams;
mod version;

pub use calls::*;
pub use events::*;
pub use faults::*;
pub use lifecycle::*;
pub use media::*;
pub use media_edges::*;
pub use media_flow::*;
pub use outbound::*;
pub use pool::*;
pub use resources::*;
pub use streams::*;
pub use version::*;

use ari_client::{Error, ErrorKind};

/// Asserts `err` is an Asterisk error with this status, kind and message.
#[track_caller]
fn assert_ari(err: &Error, status: u16, kind: ErrorKind, message: &str) {
    let ari = err
        .ari()
        .unwrap_or_else(|| panic!("expected an ARI {status} error, got {err:?}"));
    assert_eq!(ari.status, status, "{err:?}");
    assert_eq!(ari.kind, kind, "{err:?}");
    assert_eq!(ari.message, message, "{err:?}");
    assert_eq!(err.status(), Some(status));
}
