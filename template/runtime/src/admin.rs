//! The admin port: probes, metrics and the pre-stop hook. It is a separate listener, so
//! application traffic (and the application Service) can never reach it, and it keeps
//! answering until the process exits, draining included. Its connections are bounded in
//! time whatever the client does.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpStream, task::JoinHandle, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use crate::{
    lifecycle::{Lifecycle, State as LifecycleState},
    listeners::{AcceptFailures, Listener},
    metrics::Metrics,
    readiness::ReadinessChecks,
    scrapers::Scrapers,
};

/// The admin routes; tests and the Helm chart rely on these paths.
const LIVEZ: &str = "/livez";
const READYZ: &str = "/readyz";
const STARTUPZ: &str = "/startupz";
const METRICS: &str = "/metrics";
const PRESTOP: &str = "/prestop";

/// What the admin routes read.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: Metrics,
    pub(crate) checks: ReadinessChecks,
    pub(crate) scrapers: Scrapers,
    pub(crate) prestop_delay: Duration,
}

/// The kubelet and Prometheus send their requests at once: a client that takes longer than
/// this over a request's headers, or leaves its connection idle this long, is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an admin connection lives; then it closes after its current answer.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long that answer may still take before the connection is dropped (a client that does
/// not read); the pre-stop hook's own delay comes on top.
const LAST_ANSWER_PATIENCE: Duration = Duration::from_secs(10);

/// Serves the admin routes on `listener` until the returned server is stopped or dropped.
/// Every connection is bounded in time, so that no client can hold one open for good.
pub(crate) fn spawn(listener: Listener, admin: Admin) -> AdminServer {
    let last_answer_patience = LAST_ANSWER_PATIENCE + admin.prestop_delay;
    let router = router(admin);
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let accepting = {
        let (stop, connections) = (stop.clone(), connections.clone());
        async move {
            let mut failures = AcceptFailures::on("admin");
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.socket.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            failures.back_off(&error).await;
                            continue;
                        }
                    },
                    () = stop.cancelled() => return,
                };
                let bounds = (stop.clone(), last_answer_patience);
                connections.spawn(serve_connection(stream, peer, router.clone(), bounds));
            }
        }
    };
    AdminServer {
        accepting: tokio::spawn(accepting),
        connections,
        stop,
    }
}

/// One admin connection: HTTP/1, its headers read within [`HEADER_READ_TIMEOUT`], closed
/// gracefully at the end of its lifetime or when the server stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    (stop, last_answer_patience): (CancellationToken, Duration),
) {
    // The peer's address tells scrapers apart (see `scrapers.rs`).
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
        () = stop.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(last_answer_patience, connection).await;
}

/// The running admin server; dropped, it stops accepting at once.
pub(crate) struct AdminServer {
    accepting: JoinHandle<()>,
    connections: TaskTracker,
    stop: CancellationToken,
}

impl AdminServer {
    /// Stops accepting and lets the answers being written finish (the last scrape's
    /// above all), waiting at most `patience`.
    pub(crate) async fn stop(mut self, patience: Duration) {
        self.stop.cancel();
        self.connections.close();
        let finished = async {
            let _ = (&mut self.accepting).await;
            self.connections.wait().await;
        };
        let _ = tokio::time::timeout(patience, finished).await;
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.accepting.abort();
    }
}

fn router(admin: Admin) -> Router {
    Router::new()
        .route(LIVEZ, get(livez))
        .route(READYZ, get(readyz))
        .route(STARTUPZ, get(startupz))
        .route(METRICS, get(metrics))
        .route(PRESTOP, get(prestop))
        .with_state(admin)
}

/// The process is alive and its runtime answers; stays 200 while draining, so that a
/// draining pod is never restarted.
async fn livez() -> &'static str {
    "ok\n"
}

/// 200 only when started, not draining and every dependency check passes.
async fn readyz(State(admin): State<Admin>) -> (StatusCode, String) {
    match admin.lifecycle.state() {
        LifecycleState::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into()),
        LifecycleState::Ready => match admin.checks.first_failure() {
            None => (StatusCode::OK, "ready\n".into()),
            Some((check, reason)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("dependency {check} failing: {reason}\n"),
            ),
        },
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("draining: {}\n", admin.lifecycle.drain_reason()),
        ),
    }
}

/// 200 once startup work has finished; stays 200 afterwards.
async fn startupz(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    if admin.lifecycle.state() >= LifecycleState::Ready {
        (StatusCode::OK, "started\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> impl IntoResponse {
    admin.scrapers.record(peer.ip());
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        admin.metrics.render(admin.lifecycle.state()),
    )
}

/// How long after the pre-stop hook answered its signal may take to arrive. The kubelet
/// sends it at once; a call no signal follows (from anyone else) ends its drain then.
const SIGNAL_AFTER_PRESTOP: Duration = Duration::from_secs(10);

/// For a kubelet `httpGet` preStop hook: turns readiness off at once and answers after
/// `PRESTOP_DELAY`, the time endpoints and load balancers need to stop routing here.
/// The kubelet sends SIGTERM once this returns. Without that signal the service is ready
/// again [`SIGNAL_AFTER_PRESTOP`] later: no caller keeps it out of service for longer
/// than a real pre-stop would.
async fn prestop(State(admin): State<Admin>) -> String {
    let until = Instant::now() + admin.prestop_delay + SIGNAL_AFTER_PRESTOP;
    if admin.lifecycle.begin_prestop(until) {
        tracing::info!(
            delay_ms = admin.prestop_delay.as_millis() as u64,
            "pre-stop hook: readiness off, waiting before SIGTERM"
        );
    }
    // Spawned, so that a caller hanging up early cannot leave the drain on.
    tokio::spawn(end_unless_signalled(admin.clone(), until));
    tokio::time::sleep(admin.prestop_delay).await;
    format!(
        "pre-stop delay of {} elapsed\n",
        humantime::format_duration(admin.prestop_delay)
    )
}

async fn end_unless_signalled(admin: Admin, until: Instant) {
    tokio::time::sleep_until(until).await;
    if admin.lifecycle.end_unfollowed_prestop() {
        admin.metrics.prestop_unfollowed.inc();
        tracing::warn!(
            "pre-stop hook called, but no shutdown signal followed: ready again \
             (was it called by someone other than the kubelet?)"
        );
    }
}
