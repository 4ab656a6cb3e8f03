//! The shutdown sequence, from the first signal to the report.
//!
//! ```text
//! signal ──► draining ─────────────► stopping ──────────────────► cleanup ───► stopped
//!            readiness 503            listener closed               tasks cancelled
//!            still serving            idle connections closed       resources closed
//!            Connection: close        in-flight requests finish
//!            ◄─ SHUTDOWN_DRAIN_DELAY ─►                             ◄─ SHUTDOWN_CLEANUP_TIMEOUT ─►
//!            ◄────────────── SHUTDOWN_TIMEOUT ──────────────►
//! ```
//!
//! After the report, `serve` flushes telemetry and keeps the admin port up for at most
//! `SHUTDOWN_METRICS_LINGER`, until scrapers have read the final counters (`scrapers.rs`).
//!
//! Each phase is a function below. The sequence tells the rest of the process what it does
//! only through the lifecycle; metrics, logs and Pod events follow from there.

use std::{future::Future, time::Duration};

use tokio::{task::JoinHandle, time::Instant};

use crate::{
    budget::Budget,
    http::{OpenConnections, RequestsInFlight},
    lifecycle::{Drain, Lifecycle, State},
    report::{Cut, Report},
    resources::{Closed, Resources},
    tasks::BackgroundTasks,
};

/// Longest wait for a shorter budget (the Pod's deletion, read from the API server).
const FIT_PATIENCE: Duration = Duration::from_secs(2);

/// Everything that must stop, in the order it stops.
pub(crate) struct Stoppable {
    /// The accept loop; it ends once the lifecycle reaches `stopping`.
    pub(crate) serving: JoinHandle<OpenConnections>,
    /// The application's requests being answered right now.
    pub(crate) in_flight: RequestsInFlight,
    pub(crate) tasks: BackgroundTasks,
    pub(crate) resources: Resources,
}

/// Runs the sequence; `signalled_at` is when the first signal arrived, and `fitted` may
/// yield a shorter budget than the configured one.
pub(crate) async fn run(
    signalled_at: Instant,
    budget: Budget,
    fitted: impl Future<Output = Option<Budget>>,
    lifecycle: &Lifecycle,
    stoppable: Stoppable,
) -> Report {
    let budget = drain(signalled_at, budget, fitted, lifecycle, &stoppable).await;
    let cut = stop_serving(signalled_at + budget.timeout, lifecycle, stoppable.serving).await;
    let cleanup_deadline = Instant::now() + budget.cleanup_timeout;
    let (tasks_cut, resources_not_closed) =
        clean_up(cleanup_deadline, stoppable.tasks, stoppable.resources).await;
    let report = Report {
        cut,
        tasks_cut,
        resources_not_closed,
        took: signalled_at.elapsed(),
        cleanup_deadline,
        metrics_linger: budget.metrics_linger,
    };
    lifecycle.finish(report.clone());
    report
}

/// Readiness off at once, serving on until the drain delay has passed. Returns the budget
/// the rest of the sequence keeps to.
async fn drain(
    signalled_at: Instant,
    configured: Budget,
    fitted: impl Future<Output = Option<Budget>>,
    lifecycle: &Lifecycle,
    stoppable: &Stoppable,
) -> Budget {
    lifecycle.begin_draining("shutdown signal received");
    let in_flight_at_signal = stoppable.in_flight.get();
    // Readiness is off already: a shorter budget is looked for while the drain delay runs.
    let patience = configured.drain_delay.min(FIT_PATIENCE);
    let fitted = tokio::time::timeout(patience, fitted).await.ok().flatten();
    let budget = fitted.unwrap_or(configured);
    lifecycle.plan(Drain {
        signalled_at,
        budget,
        shrunk: fitted.is_some(),
        in_flight_at_signal,
    });
    tokio::time::sleep_until(signalled_at + budget.drain_delay).await;
    budget
}

/// Closes the listener and lets in-flight requests finish; cuts what is left at `deadline`.
async fn stop_serving(
    deadline: Instant,
    lifecycle: &Lifecycle,
    serving: JoinHandle<OpenConnections>,
) -> Cut {
    lifecycle.advance(State::Stopping);
    let connections = serving.await.expect("the accept loop does not panic");
    tracing::info!(
        open_connections = connections.len(),
        in_flight = connections.requests_in_flight(),
        "shutdown: listener closed, idle connections closing, waiting for in-flight requests"
    );
    let cut = connections.finish_by(deadline).await;
    if cut == Cut::default() {
        tracing::info!("shutdown: every request finished");
    } else {
        tracing::error!(
            requests_cut = cut.requests,
            connections_cut = cut.connections,
            "shutdown: SHUTDOWN_TIMEOUT reached, cut what was still running"
        );
    }
    cut
}

/// Stops background tasks, then closes resources in reverse order, all by `deadline`.
/// Returns how many tasks and resources did not finish.
async fn clean_up(
    deadline: Instant,
    tasks: BackgroundTasks,
    resources: Resources,
) -> (usize, usize) {
    let tasks_cut = tasks.stop_by(deadline).await;
    if tasks_cut > 0 {
        tracing::error!(
            tasks_cut,
            "shutdown: background tasks still running after SHUTDOWN_CLEANUP_TIMEOUT"
        );
    }
    let resources_not_closed = resources
        .close_all(deadline)
        .await
        .iter()
        .filter(|(_, closed)| *closed != Closed::Ok)
        .count();
    (tasks_cut, resources_not_closed)
}
