//! The admin port: probes, metrics and the pre-stop hook. It is a separate listener, so
//! application traffic (and the application Service) can never reach it, and it keeps
//! answering until the process exits, draining included.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    lifecycle::{Lifecycle, State as LifecycleState},
    listeners::Listener,
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

/// Serves the admin routes on `listener` until the returned server is stopped or dropped.
pub(crate) fn spawn(listener: Listener, admin: Admin) -> AdminServer {
    // The peer's address tells scrapers apart (see `scrapers.rs`).
    let router = router(admin).into_make_service_with_connect_info::<SocketAddr>();
    let stop = CancellationToken::new();
    let stopped = stop.clone().cancelled_owned();
    AdminServer {
        serving: tokio::spawn(async move {
            let serving = axum::serve(listener.socket, router).with_graceful_shutdown(stopped);
            if let Err(error) = serving.await {
                tracing::error!(%error, "admin server failed");
            }
        }),
        stop,
    }
}

/// The running admin server; it stops at once when dropped.
pub(crate) struct AdminServer {
    serving: JoinHandle<()>,
    stop: CancellationToken,
}

impl AdminServer {
    /// Stops accepting and lets the answers being written finish (the last scrape's
    /// above all), waiting at most `patience`.
    pub(crate) async fn stop(mut self, patience: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(patience, &mut self.serving).await;
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.serving.abort();
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

/// For a kubelet `httpGet` preStop hook: turns readiness off at once and answers after
/// `PRESTOP_DELAY`, the time endpoints and load balancers need to stop routing here.
/// The kubelet sends SIGTERM once this returns.
async fn prestop(State(admin): State<Admin>) -> String {
    if admin.lifecycle.begin_draining("pre-stop hook called") {
        tracing::info!(
            delay_ms = admin.prestop_delay.as_millis() as u64,
            "pre-stop hook: readiness off, waiting before SIGTERM"
        );
    }
    tokio::time::sleep(admin.prestop_delay).await;
    format!(
        "pre-stop delay of {} elapsed\n",
        humantime::format_duration(admin.prestop_delay)
    )
}
