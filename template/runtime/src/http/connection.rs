//! One accepted connection, served by hyper and steered by the lifecycle.
//!
//! - While draining, HTTP/1 responses carry `Connection: close`, so a client closes each
//!   keep-alive connection right after its next response, at a moment of its own choosing
//!   rather than ours; HTTP/2 connections get a GOAWAY, after which the client opens new
//!   streams elsewhere.
//! - Once stopping, the connection shuts down gracefully: closed at once if idle, after
//!   the response if a request is in flight. A connection accepted so recently that its
//!   first request has not arrived yet is given [`FIRST_REQUEST_GRACE`] for it: closing it
//!   at once would reset a request the client is sending.
//! - At the hard deadline it is dropped, whatever it is doing.
//! - In between, a watchdog enforces the header read and idle timeouts (see `activity`), on
//!   HTTP/1 and HTTP/2 alike, and drops a closing connection whose client takes no part in
//!   the close (no byte either way for [`CLOSING_STALL`], no request in flight). Its one
//!   timer is armed for the next of those deadlines (see `watchdog`): an idle connection
//!   costs no wakeup before its idle timeout.

use std::{
    convert::Infallible,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body};
use hyper::{
    Request, Version,
    body::Incoming,
    header::{CONNECTION, HeaderValue},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    net::TcpStream,
    sync::{Notify, watch},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{
    RequestsInFlight,
    activity::{Activity, Observed, Protocol, Verdict},
    watchdog::Watchdog,
    when_woken::WhenWoken,
};
use crate::{
    lifecycle::{Lifecycle, State},
    metrics::Metrics,
};

/// What every connection needs; shared by all of them.
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: Metrics,
    pub(crate) builder: auto::Builder<TokioExecutor>,
    /// Cancelled at the hard deadline.
    pub(crate) abort: CancellationToken,
    pub(crate) in_flight: RequestsInFlight,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Sent when the server is at MAX_CONNECTIONS: idle connections close to make room.
    pub(crate) reclaim: watch::Sender<()>,
}

/// Per-connection flags that the request path sets and the connection task reads.
#[derive(Default)]
struct ProtocolSeen {
    http2: AtomicBool,
    wants_goaway: Notify,
}

pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _open = OpenConnection::count(&shared.metrics);
    let protocol = Arc::new(ProtocolSeen::default());
    let activity = Arc::new(Activity::new());

    let service = {
        let shared = shared.clone();
        let protocol = protocol.clone();
        let activity = activity.clone();
        service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let protocol = protocol.clone();
            // hyper calls the service as soon as the request headers are parsed.
            let busy = Busy::start(activity.clone(), shared.in_flight.clone());
            async move {
                let _busy = busy;
                let version = request.version();
                if version == Version::HTTP_2 {
                    protocol.http2.store(true, Ordering::Relaxed);
                }
                let response = shared.router.clone().oneshot(request.map(Body::new)).await;
                let Ok(mut response) = response;
                if shared.lifecycle.is_draining() {
                    if version == Version::HTTP_2 {
                        protocol.wants_goaway.notify_one();
                    } else {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                }
                Ok::<_, Infallible>(response)
            }
        })
    };

    let stream = TokioIo::new(Observed::new(stream, activity.clone()));
    let connection = shared.builder.serve_connection(stream, service);
    tokio::pin!(connection);
    // Both wait on state every connection shares; see `when_woken` for why they are wrapped.
    let mut told_to_close = pin!(WhenWoken::new(told_to_close(&shared.lifecycle, &protocol)));
    let mut aborted = pin!(WhenWoken::new(shared.abort.cancelled()));
    let mut reclaimed = pin!(WhenWoken::new(reclaim_asked(shared.reclaim.subscribe())));
    let mut closing = false;
    let mut watchdog = Watchdog::new(
        activity.clone(),
        shared.header_read_timeout,
        shared.idle_timeout,
    );
    let mut first_request_due = pin!(None::<tokio::time::Sleep>);

    loop {
        let stall = closing.then_some(CLOSING_STALL);
        tokio::select! {
            // The connection first: one accepted just before the service stopped must read
            // the request already waiting in it before being told to close, or it would be
            // dropped while still detecting its protocol.
            biased;
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = aborted.as_mut() => return,
            () = told_to_close.as_mut(), if !closing => {
                closing = true;
                if activity.is_fresh() {
                    let grace = FIRST_REQUEST_GRACE.min(shared.header_read_timeout);
                    first_request_due.set(Some(tokio::time::sleep(grace)));
                } else {
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = reclaimed.as_mut(), if !closing => {
                if activity.is_between_requests(protocol.speaks()) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    reclaimed.set(WhenWoken::new(reclaim_asked(shared.reclaim.subscribe())));
                }
            }
            // Its request arrived (and is answered with `Connection: close`), or never did.
            () = async { first_request_due.as_mut().as_pin_mut().expect("set").await },
                if first_request_due.is_some() => {
                first_request_due.set(None);
                connection.as_mut().graceful_shutdown();
            }
            // It keeps watching while closing: a client trickling its headers cannot hold
            // the shutdown.
            () = std::future::poll_fn(|cx| watchdog.poll_due(cx, protocol.speaks(), stall)) => {
                if closing && activity.stalled_for() >= CLOSING_STALL {
                    tracing::debug!("closing connection stalled: its client takes no part");
                    return;
                }
                let speaks = protocol.speaks();
                match activity.verdict(shared.header_read_timeout, shared.idle_timeout, speaks) {
                    Verdict::Fine => {}
                    Verdict::HeadersTooSlow => {
                        tracing::debug!("no complete request headers within HEADER_READ_TIMEOUT");
                        return;
                    }
                    Verdict::Idle if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    Verdict::Idle => {}
                }
            }
        }
    }
}

impl ProtocolSeen {
    fn speaks(&self) -> Protocol {
        match self.http2.load(Ordering::Relaxed) {
            true => Protocol::Http2,
            false => Protocol::Http1,
        }
    }
}

/// Resolves the next time the server asks idle connections to close.
async fn reclaim_asked(mut reclaim: watch::Receiver<()>) {
    // The sender lives in `Shared`, as long as every connection.
    let _ = reclaim.changed().await;
}

/// Longest a closing connection may move no byte with no request in flight before it is
/// dropped: a client that answers HTTP/2's GOAWAY ping, or reads its last response, does so
/// within a round trip.
const CLOSING_STALL: Duration = Duration::from_secs(2);

/// How long a connection accepted just before the close may take to send its first request.
/// Clients send it as soon as they are connected; this covers a busy machine's scheduling.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Resolves when the connection should close gracefully: once stopping, or while draining
/// as soon as it is known to be HTTP/2 (a GOAWAY moves its streams elsewhere).
async fn told_to_close(lifecycle: &Lifecycle, protocol: &ProtocolSeen) {
    let draining_http2 = async {
        lifecycle.reached(State::Draining).await;
        if !protocol.http2.load(Ordering::Relaxed) {
            // Notified by the first request that sees the drain on an HTTP/2 connection.
            protocol.wants_goaway.notified().await;
        }
    };
    tokio::select! {
        () = lifecycle.reached(State::Stopping) => {}
        () = draining_http2 => {}
    }
}

/// Marks a request in flight, on its connection and in the server's count, for as long as
/// it lives: a request cut at the deadline is counted until its future is dropped.
struct Busy {
    activity: Arc<Activity>,
    in_flight: RequestsInFlight,
}

impl Busy {
    fn start(activity: Arc<Activity>, in_flight: RequestsInFlight) -> Self {
        activity.request_started();
        in_flight.started();
        Self {
            activity,
            in_flight,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.request_finished();
        self.in_flight.finished();
    }
}

/// Keeps the open-connections gauge right however the connection ends.
struct OpenConnection(Metrics);

impl OpenConnection {
    fn count(metrics: &Metrics) -> Self {
        metrics.http_connections_accepted.inc();
        metrics.http_connections_open.inc();
        Self(metrics.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.http_connections_open.dec();
    }
}
