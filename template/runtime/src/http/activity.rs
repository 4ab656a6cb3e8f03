//! What one connection is doing, for the two timeouts hyper cannot tell apart.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits for its
//! next request, so it doubles as a short idle timeout: the server would close idle
//! connections while clients still hold them in their pools, and a client sending on one at
//! that instant loses its request. Here the two are separate:
//! - a client that has started sending a request must finish its headers within
//!   `HEADER_READ_TIMEOUT` (slowloris guard);
//! - a connection with nothing to do is closed after `IDLE_TIMEOUT`, which is longer than
//!   the idle timeouts of common clients and load balancers, so that they close first.
//!
//! A connection that has sent nothing at all since it was accepted counts as a slow client
//! too: a client connects to send a request. HTTP/2 sends frames between requests (pings,
//! window updates), so there only the idle timeout applies; its streams' headers arrive in
//! one piece or not at all, and a connection with no stream for `IDLE_TIMEOUT` is idle.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// Milliseconds since the connection opened, plus one; 0 means "not set".
type Stamp = AtomicU64;

pub(crate) struct Activity {
    opened: Instant,
    /// When bytes of a request arrived that have not yet formed complete headers.
    head_started: Stamp,
    /// When the connection last finished a request (or opened).
    last_active: Stamp,
    in_flight: AtomicU64,
    /// Whether any byte ever arrived: a connection without one was just opened.
    received_any: AtomicBool,
    /// When a byte last moved either way.
    last_io: Stamp,
}

/// The protocol a connection speaks, as far as the timeouts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fine,
    /// Request headers started arriving longer ago than the header read timeout, or the
    /// connection has sent nothing for that long since it was accepted.
    HeadersTooSlow,
    /// Nothing happened for longer than the idle timeout.
    Idle,
}

impl Activity {
    pub(crate) fn new() -> Self {
        let activity = Self {
            opened: Instant::now(),
            head_started: Stamp::new(0),
            last_active: Stamp::new(0),
            in_flight: AtomicU64::new(0),
            received_any: AtomicBool::new(false),
            last_io: Stamp::new(0),
        };
        activity
            .last_active
            .store(activity.now(), Ordering::Relaxed);
        activity.last_io.store(activity.now(), Ordering::Relaxed);
        activity
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    /// True until the first byte arrives: the client has connected and its first request
    /// is on its way.
    pub(crate) fn is_fresh(&self) -> bool {
        !self.received_any.load(Ordering::Acquire)
    }

    /// Bytes arrived; with no request in flight they begin the next request's headers.
    fn bytes_received(&self) {
        self.received_any.store(true, Ordering::Release);
        self.bytes_sent();
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_started.compare_exchange(
                0,
                self.now(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Bytes moved: any progress counts against [`Self::stalled_for`].
    fn bytes_sent(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// How long no byte has moved while no request is in flight; zero while one is. A
    /// closing connection stalled like this has a client that takes no part in the close
    /// (it ignores HTTP/2's GOAWAY and its ping, or reads no more of a response).
    pub(crate) fn stalled_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(
            self.now()
                .saturating_sub(self.last_io.load(Ordering::Relaxed)),
        )
    }

    /// hyper parsed a request's headers and called the service.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
    }

    pub(crate) fn request_finished(&self) {
        self.last_active.store(self.now(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Between two requests: no request in flight, none begun (pings aside on HTTP/2), and
    /// the first one done; closing it now loses nothing.
    pub(crate) fn is_between_requests(&self, protocol: Protocol) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && !self.is_fresh()
            && (protocol == Protocol::Http2 || self.head_started.load(Ordering::Acquire) == 0)
    }

    pub(crate) fn verdict(
        &self,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        protocol: Protocol,
    ) -> Verdict {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::Fine;
        }
        let now = self.now();
        let since = |stamp: u64| Duration::from_millis(now.saturating_sub(stamp));
        let idle = since(self.last_active.load(Ordering::Relaxed));
        if self.is_fresh() && idle >= header_read_timeout {
            return Verdict::HeadersTooSlow;
        }
        match (protocol, self.head_started.load(Ordering::Acquire)) {
            (Protocol::Http1, 0) | (Protocol::Http2, _) if idle >= idle_timeout => Verdict::Idle,
            (Protocol::Http1, started) if started != 0 && since(started) >= header_read_timeout => {
                Verdict::HeadersTooSlow
            }
            _ => Verdict::Fine,
        }
    }

    /// The earliest moment [`Self::verdict`], or with `closing_stall` the stall rule
    /// ([`Self::stalled_for`] reaching it), can next find something to act on; `None` while
    /// a request is in flight, when neither can. A closing connection has no idle timeout:
    /// it is closing already.
    pub(crate) fn next_deadline(
        &self,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        protocol: Protocol,
        closing_stall: Option<Duration>,
    ) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        // The moment `since(stamp) >= after` starts to hold.
        let at = |stamp: u64, after: Duration| {
            self.opened + Duration::from_millis(stamp.saturating_sub(1)) + after
        };
        let last_active = self.last_active.load(Ordering::Relaxed);
        let head_started = self.head_started.load(Ordering::Acquire);
        let awaits_headers = protocol == Protocol::Http1 && head_started != 0;
        [
            self.is_fresh()
                .then(|| at(last_active, header_read_timeout)),
            awaits_headers.then(|| at(head_started, header_read_timeout)),
            (closing_stall.is_none() && !awaits_headers).then(|| at(last_active, idle_timeout)),
            closing_stall.map(|stall| at(self.last_io.load(Ordering::Relaxed), stall)),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A stream that reports every read to its connection's [`Activity`].
pub(crate) struct Observed<S> {
    inner: S,
    activity: std::sync::Arc<Activity>,
}

impl<S> Observed<S> {
    pub(crate) fn new(inner: S, activity: std::sync::Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Observed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_received();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Observed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.bytes_sent();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.bytes_sent();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: Duration = Duration::from_millis(50);
    const IDLE: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_not_a_slow_client() {
        let activity = Activity::new();
        activity.bytes_received();
        activity.request_started();
        activity.request_finished();
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            activity.verdict(HEADERS, IDLE, Protocol::Http1),
            Verdict::Fine
        );
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(
            activity.verdict(HEADERS, IDLE, Protocol::Http1),
            Verdict::Idle
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_has_the_header_read_timeout() {
        for protocol in [Protocol::Http1, Protocol::Http2] {
            let activity = Activity::new();
            tokio::time::advance(Duration::from_millis(40)).await;
            assert_eq!(activity.verdict(HEADERS, IDLE, protocol), Verdict::Fine);
            tokio::time::advance(Duration::from_millis(10)).await;
            assert_eq!(
                activity.verdict(HEADERS, IDLE, protocol),
                Verdict::HeadersTooSlow
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_idle_however_many_pings_it_gets() {
        let activity = Activity::new();
        activity.bytes_received();
        activity.request_started();
        activity.request_finished();
        for _ in 0..4 {
            tokio::time::advance(Duration::from_millis(60)).await;
            activity.bytes_received(); // a ping, not a request
            assert_ne!(
                activity.verdict(HEADERS, IDLE, Protocol::Http2),
                Verdict::HeadersTooSlow
            );
        }
        assert_eq!(
            activity.verdict(HEADERS, IDLE, Protocol::Http2),
            Verdict::Idle
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_stalls_only_without_a_request_and_without_bytes() {
        let activity = Activity::new();
        activity.request_started();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            activity.stalled_for(),
            Duration::ZERO,
            "a request is in flight"
        );
        activity.request_finished();
        activity.bytes_sent(); // its response
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(activity.stalled_for(), Duration::from_millis(300));
        activity.bytes_received();
        assert_eq!(activity.stalled_for(), Duration::ZERO);
    }

    #[test]
    fn a_connection_is_fresh_until_its_first_byte() {
        let activity = Activity::new();
        assert!(activity.is_fresh());
        activity.bytes_received();
        assert!(!activity.is_fresh());
    }

    #[tokio::test(start_paused = true)]
    async fn headers_must_complete_in_time() {
        let activity = Activity::new();
        activity.bytes_received();
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(
            activity.verdict(HEADERS, IDLE, Protocol::Http1),
            Verdict::HeadersTooSlow
        );
    }

    /// At each deadline the verdict (or the stall rule) changes, and a millisecond before
    /// it has not: the timer armed for it wakes the connection exactly when there is
    /// something to do.
    #[tokio::test(start_paused = true)]
    async fn the_next_deadline_is_when_the_verdict_changes() {
        // Fresh: the header read timeout from the accept.
        let fresh = Activity::new();
        let due = fresh
            .next_deadline(HEADERS, IDLE, Protocol::Http1, None)
            .unwrap();
        assert_eq!(due - Instant::now(), HEADERS);
        tokio::time::advance(HEADERS - Duration::from_millis(1)).await;
        assert_eq!(fresh.verdict(HEADERS, IDLE, Protocol::Http1), Verdict::Fine);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            fresh.verdict(HEADERS, IDLE, Protocol::Http1),
            Verdict::HeadersTooSlow
        );

        // Between requests: the idle timeout from the last one; once headers start, theirs.
        let idle = Activity::new();
        idle.bytes_received();
        idle.request_started();
        assert_eq!(
            idle.next_deadline(HEADERS, IDLE, Protocol::Http1, None),
            None
        );
        idle.request_finished();
        let due = idle
            .next_deadline(HEADERS, IDLE, Protocol::Http1, None)
            .unwrap();
        assert_eq!(due - Instant::now(), IDLE);
        tokio::time::advance(Duration::from_millis(20)).await;
        idle.bytes_received();
        let due = idle
            .next_deadline(HEADERS, IDLE, Protocol::Http1, None)
            .unwrap();
        assert_eq!(
            due - Instant::now(),
            HEADERS,
            "the headers' deadline, far sooner"
        );
        tokio::time::advance(HEADERS).await;
        assert_eq!(
            idle.verdict(HEADERS, IDLE, Protocol::Http1),
            Verdict::HeadersTooSlow
        );

        // Closing: no idle timeout, the stall rule instead.
        let closing = Activity::new();
        closing.bytes_received();
        closing.request_started();
        closing.request_finished();
        let stall = Duration::from_millis(30);
        let due = closing
            .next_deadline(HEADERS, IDLE, Protocol::Http2, Some(stall))
            .unwrap();
        assert_eq!(due - Instant::now(), stall);
        tokio::time::advance(stall).await;
        assert_eq!(closing.stalled_for(), stall);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_timed_out_here() {
        let activity = Activity::new();
        activity.bytes_received();
        activity.request_started();
        activity.bytes_received(); // the body
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            activity.verdict(HEADERS, IDLE, Protocol::Http1),
            Verdict::Fine
        );
        activity.request_finished();
        assert_eq!(
            activity.verdict(HEADERS, IDLE, Protocol::Http1),
            Verdict::Fine
        );
    }
}
