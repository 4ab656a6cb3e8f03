//! The application listener: our own accept loop over hyper rather than `axum::serve`.
//!
//! `axum::serve(...).with_graceful_shutdown` stops accepting the moment its signal fires and
//! then waits, without limit, for the connections it has. A rolling update needs more:
//! - a drain phase: the listener stays open and every response asks the client to close
//!   (`Connection: close`, or a GOAWAY on HTTP/2) while load balancers move away;
//! - one hard deadline, after which what is still running is cut;
//! - the count of what was cut, for the exit code, the metrics and the Pod's events;
//! - header-read and idle timeouts kept apart (see `activity`);
//! - at most MAX_CONNECTIONS open: at the limit the loop stops accepting and asks idle
//!   keep-alive connections to close, as nginx does when it runs out of connections.

mod activity;
mod connection;
mod middleware;
mod watchdog;
mod when_woken;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub(crate) use middleware::guard;

use crate::{
    capacity,
    lifecycle::{Lifecycle, State},
    listeners::{AcceptFailures, Listener, LogEvery},
    metrics::Metrics,
    report::Cut,
    settings::Settings,
};

pub(crate) struct HttpServer {
    listener: Listener,
    shared: Arc<connection::Shared>,
    connections: TaskTracker,
    /// One permit per connection that may be open.
    slots: Arc<Semaphore>,
}

/// The connections still open once the listener is closed.
pub(crate) struct OpenConnections {
    connections: TaskTracker,
    abort: CancellationToken,
    in_flight: RequestsInFlight,
}

/// How many requests the server is answering: counted by the server itself, whatever
/// middleware the router has.
#[derive(Clone, Default)]
pub(crate) struct RequestsInFlight(Arc<AtomicU64>);

impl RequestsInFlight {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn started(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    fn finished(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HttpServer {
    pub(crate) fn new(
        listener: Listener,
        router: Router,
        lifecycle: Lifecycle,
        metrics: Metrics,
        settings: &Settings,
        max_connections: usize,
    ) -> Self {
        metrics
            .http_connections_limit
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's header timeout would also close idle keep-alive connections; the
        // connection watchdog enforces HEADER_READ_TIMEOUT and IDLE_TIMEOUT instead.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(capacity::READ_BUFFER)
            // A client may shut down its sending side once its request is out and still
            // wait for the answer; without this, hyper would drop that request.
            .half_close(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)));
        let shared = connection::Shared {
            router,
            lifecycle,
            metrics,
            builder,
            abort: CancellationToken::new(),
            in_flight: RequestsInFlight::default(),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            reclaim: watch::Sender::new(()),
        };
        Self {
            listener,
            shared: Arc::new(shared),
            connections: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// The server's own count of requests in flight.
    pub(crate) fn requests_in_flight(&self) -> RequestsInFlight {
        self.shared.in_flight.clone()
    }

    /// Accepts connections until the lifecycle reaches `stopping`, then closes the listener:
    /// from then on new connections are refused by the kernel.
    pub(crate) async fn serve(self) -> OpenConnections {
        let stopping = self.shared.lifecycle.reached(State::Stopping);
        tokio::pin!(stopping);
        let mut failures = AcceptFailures::on("application");
        let mut at_limit = LogEvery::default();
        loop {
            let stream = tokio::select! {
                accepted = self.listener.socket.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        self.shared.metrics.http_accept_failures.inc();
                        failures.back_off(&error).await;
                        continue;
                    }
                },
                () = &mut stopping => break,
            };
            // Accepted first, so that idle connections are asked to close only when a
            // client is actually waiting; the rest wait in the kernel's backlog.
            let slot = tokio::select! {
                slot = self.free_slot(&mut at_limit) => slot,
                () = &mut stopping => {
                    self.spawn_connection(stream, None);
                    break;
                }
            };
            self.spawn_connection(stream, Some(slot));
        }
        // Connections the kernel completed before the close: closing a socket of our own
        // would reset them, so they are served here (with `Connection: close`); a socket that
        // systemd keeps open holds them for the next process instead.
        if !self.listener.inherited {
            while let Ok(Ok((stream, _peer))) =
                tokio::time::timeout(Duration::ZERO, self.listener.socket.accept()).await
            {
                self.spawn_connection(stream, None);
            }
        }
        drop(self.listener);
        self.connections.close();
        OpenConnections {
            connections: self.connections,
            abort: self.shared.abort.clone(),
            in_flight: self.shared.in_flight.clone(),
        }
    }

    /// A permit for one more connection; at the limit, asks idle connections to close and
    /// waits for one of them (or any other) to end.
    async fn free_slot(&self, at_limit: &mut LogEvery) -> OwnedSemaphorePermit {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return slot;
        }
        self.shared.metrics.http_connections_limited.inc();
        if at_limit.is_due() {
            tracing::warn!(
                "MAX_CONNECTIONS reached: not accepting until a connection closes; idle \
                 keep-alive connections asked to close (http_connections_limited_total counts this)"
            );
        }
        self.shared.reclaim.send_replace(());
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Serves `stream`, holding `slot` for as long as it is open (the connections already
    /// in the backlog when the listener closes are served without one).
    fn spawn_connection(&self, stream: tokio::net::TcpStream, slot: Option<OwnedSemaphorePermit>) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let shared = self.shared.clone();
        self.connections.spawn(async move {
            connection::serve(stream, shared).await;
            drop(slot);
        });
    }
}

impl OpenConnections {
    pub(crate) fn len(&self) -> usize {
        self.connections.len()
    }

    pub(crate) fn requests_in_flight(&self) -> u64 {
        self.in_flight.get()
    }

    /// Waits for every connection to finish; at `deadline`, cuts the ones left.
    pub(crate) async fn finish_by(self, deadline: Instant) -> Cut {
        if tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_ok()
        {
            return Cut::default();
        }
        let cut = Cut {
            requests: self.in_flight.get(),
            connections: self.connections.len() as u64,
        };
        self.abort.cancel();
        self.connections.wait().await;
        cut
    }
}
