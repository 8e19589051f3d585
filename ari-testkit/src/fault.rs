//! Fault injection settings.

use std::time::Duration;

/// How [`MockServer::refuse_connections`](crate::MockServer::refuse_connections) refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Close each of the next N *TCP connections* right after accepting it, before reading
    /// anything (the client sees the connection closed or reset). A client reusing an already
    /// open keep-alive connection is not affected.
    Close,
    /// Answer each of the next N *requests* (HTTP requests and WebSocket upgrade requests
    /// alike, on any connection) with `503 {"message":"Service Unavailable"}` and
    /// `Connection: close`.
    ServiceUnavailable,
}

#[derive(Debug)]
pub(crate) struct Faults {
    pub(crate) refuse: Option<(Refusal, usize)>,
    pub(crate) delay: Option<Duration>,
    pub(crate) fail: Option<(u16, usize)>,
    pub(crate) write_timeout: Duration,
    /// `true` while REST answers are held ([`MockServer::hold_responses`](crate::MockServer::hold_responses)).
    pub(crate) held: tokio::sync::watch::Sender<bool>,
    /// `true` while REST answers are held after the request took effect
    /// ([`MockServer::hold_answers`](crate::MockServer::hold_answers)).
    pub(crate) answers_held: tokio::sync::watch::Sender<bool>,
}

impl Faults {
    pub(crate) fn new(write_timeout: Duration) -> Self {
        Faults {
            refuse: None,
            delay: None,
            fail: None,
            write_timeout,
            held: tokio::sync::watch::Sender::new(false),
            answers_held: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Consumes one refusal of the given kind, if any is pending.
    pub(crate) fn take_refusal(&mut self, kind: Refusal) -> bool {
        match &mut self.refuse {
            Some((k, n)) if *k == kind && *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    self.refuse = None;
                }
                true
            }
            _ => false,
        }
    }

    /// Consumes one injected failure, returning its status.
    pub(crate) fn take_failure(&mut self) -> Option<u16> {
        match &mut self.fail {
            Some((status, n)) if *n > 0 => {
                let s = *status;
                *n -= 1;
                if *n == 0 {
                    self.fail = None;
                }
                Some(s)
            }
            _ => None,
        }
    }
}
