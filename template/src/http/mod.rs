//! The application listener: our own accept loop over hyper, so that the shutdown sequence
//! decides when to stop accepting, when idle connections close and when busy ones are cut.
//! (`axum::serve(...).with_graceful_shutdown` waits for idle keep-alive connections
//! forever, so it is not used here.)

mod activity;
mod connection;
pub mod middleware;
mod when_woken;

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    lifecycle::{Lifecycle, State},
    listeners::Listener,
    metrics::Metrics,
};

pub struct HttpServer {
    listener: Listener,
    shared: Arc<connection::Shared>,
    connections: TaskTracker,
}

/// The connections still open once the listener is closed.
pub struct OpenConnections {
    connections: TaskTracker,
    abort: CancellationToken,
    metrics: Metrics,
}

/// What the hard deadline cut, if anything.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub requests: u64,
    pub connections: u64,
}

impl HttpServer {
    pub fn new(
        listener: Listener,
        router: Router,
        lifecycle: Lifecycle,
        metrics: Metrics,
        config: &Config,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's header timeout would also close idle keep-alive connections; the
        // connection watchdog enforces HEADER_READ_TIMEOUT and IDLE_TIMEOUT instead.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
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
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        };
        Self {
            listener,
            shared: Arc::new(shared),
            connections: TaskTracker::new(),
        }
    }

    /// Accepts connections until the lifecycle reaches `stopping`, then closes the listener:
    /// from then on new connections are refused by the kernel.
    pub async fn serve(self) -> OpenConnections {
        let stopping = self.shared.lifecycle.reached(State::Stopping);
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                accepted = self.listener.socket.accept() => match accepted {
                    Ok((stream, _peer)) => self.spawn_connection(stream),
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::error!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
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
            metrics: self.shared.metrics.clone(),
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
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Waits for every connection to finish; at `deadline`, cuts the ones left.
    pub async fn finish_by(self, deadline: Instant) -> Cut {
        if tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_ok()
        {
            return Cut::default();
        }
        let cut = Cut {
            requests: self.metrics.http_requests_in_flight.get().max(0) as u64,
            connections: self.connections.len() as u64,
        };
        self.metrics.shutdown_requests_cut.inc_by(cut.requests);
        self.abort.cancel();
        self.connections.wait().await;
        cut
    }
}
