//! Response body type: either a complete buffer or a queue of events that
//! are written as separate body frames (SSE), optionally with a delay
//! between frames (`drip`) and an abort after some frames (`cut`).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// The mock's response body.
pub enum Body {
    Full(Option<Bytes>),
    Events(EventStream),
}

/// A sequence of pre-rendered frames.
pub struct EventStream {
    pub events: VecDeque<Bytes>,
    /// Delay before every frame after the first.
    pub drip: Option<Duration>,
    /// After this many frames, fail the body so the server aborts the
    /// connection (no terminating chunk, no further events).
    pub abort_after: Option<usize>,
    sent: usize,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The abort is due once the pending sleep (a grace period that lets
    /// the server flush what was already sent) ends.
    aborting: bool,
}

/// How long a cut waits so the frames before it reach the peer.
const ABORT_GRACE: Duration = Duration::from_millis(25);

impl EventStream {
    pub fn new(events: VecDeque<Bytes>) -> Self {
        EventStream {
            events,
            drip: None,
            abort_after: None,
            sent: 0,
            sleep: None,
            aborting: false,
        }
    }
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        if b.is_empty() {
            Body::Full(None)
        } else {
            Body::Full(Some(b))
        }
    }

    pub fn events(events: VecDeque<Bytes>) -> Self {
        Body::Events(EventStream::new(events))
    }

    /// The complete body, when it is a buffer.
    pub fn as_full(&self) -> Option<&[u8]> {
        match self {
            Body::Full(Some(b)) => Some(b),
            Body::Full(None) => Some(&[]),
            Body::Events(_) => None,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Events(s) => loop {
                if let Some(sleep) = s.sleep.as_mut() {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    s.sleep = None;
                }
                if s.aborting {
                    s.events.clear();
                    s.abort_after = None;
                    s.aborting = false;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "llm-mock: connection cut on purpose",
                    ))));
                }
                if let Some(limit) = s.abort_after {
                    if s.sent >= limit || s.events.is_empty() {
                        // Return Pending first so the server flushes the
                        // headers and frames already produced.
                        s.aborting = true;
                        s.sleep = Some(Box::pin(tokio::time::sleep(ABORT_GRACE)));
                        continue;
                    }
                }
                match s.events.pop_front() {
                    None => return Poll::Ready(None),
                    Some(ev) => {
                        s.sent += 1;
                        if let Some(d) = s.drip {
                            let more = !s.events.is_empty() || s.abort_after.is_some();
                            if more && !d.is_zero() {
                                s.sleep = Some(Box::pin(tokio::time::sleep(d)));
                            }
                        }
                        return Poll::Ready(Some(Ok(Frame::data(ev))));
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Events(s) => s.events.is_empty() && s.abort_after.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Events(_) => SizeHint::default(),
        }
    }
}
