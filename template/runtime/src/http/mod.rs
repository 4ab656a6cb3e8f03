//! The application listener: our own accept loop over hyper rather than `axum::serve`.
//!
//! `axum::serve(...).with_graceful_shutdown` stops accepting the moment its signal fires and
//! then waits, without limit, for the connections it has. A rolling update needs more:
//! - a drain phase: the listener stays open and every response asks the client to close
//!   (`Connection: close`, or a GOAWAY on HTTP/2) while load balancers move away;
//! - one hard deadline, after which what is still running is cut;
//! - the count of what was cut, for the exit code, the metrics and the Pod's events;
//! - header-read and idle timeouts kept apart (see `activity`).

mod activity;
mod connection;
mod middleware;
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
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub(crate) use middleware::guard;

use crate::{
    lifecycle::{Lifecycle, State},
    listeners::{AcceptFailures, Listener},
    metrics::Metrics,
    report::Cut,
    settings::Settings,
};

pub(crate) struct HttpServer {
    listener: Listener,
    shared: Arc<connection::Shared>,
    connections: TaskTracker,
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
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's header timeout would also close idle keep-alive connections; the
        // connection watchdog enforces HEADER_READ_TIMEOUT and IDLE_TIMEOUT instead.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
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
        };
        Self {
            listener,
            shared: Arc::new(shared),
            connections: TaskTracker::new(),
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
        loop {
            tokio::select! {
                accepted = self.listener.socket.accept() => match accepted {
                    Ok((stream, _peer)) => self.spawn_connection(stream),
                    Err(error) => {
                        self.shared.metrics.http_accept_failures.inc();
                        failures.back_off(&error).await;
                    }
                },
                () = &mut stopping => break,
            }
        }
        // Connections the kernel completed before the close: closing a socket of our own
        // would reset them, so they are served here (with `Connection: close`); a socket that
        // systemd keeps open holds them for the next process instead.
        if !self.listener.inherited {
            while let Ok(Ok((stream, _peer))) =
                tokio::time::timeout(Duration::ZERO, self.listener.socket.accept()).await
            {
                self.spawn_connection(stream);
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

    fn spawn_connection(&self, stream: tokio::net::TcpStream) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        self.connections
            .spawn(connection::serve(stream, self.shared.clone()));
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
