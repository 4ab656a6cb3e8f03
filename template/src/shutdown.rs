//! The shutdown sequence, from the first signal to the exit code.
//!
//! ```text
//! signal ──► draining ─────────────► stopping ──────────────────► cleanup ───► stopped
//!            readiness 503            listener closed               tasks cancelled
//!            still serving            idle connections closed       resources closed
//!            Connection: close        in-flight requests finish     telemetry flushed
//!            ◄─ SHUTDOWN_DRAIN_DELAY ─►                             ◄─ SHUTDOWN_CLEANUP_TIMEOUT ─►
//!            ◄────────────── SHUTDOWN_TIMEOUT ──────────────►
//! ```

use std::time::Duration;

use tokio::{task::JoinHandle, time::Instant};

use crate::{
    http::{Cut, OpenConnections},
    lifecycle::{Lifecycle, State},
    metrics::Metrics,
    pod::{self, OwnPod},
    resources::{Closed, Resources},
    tasks::BackgroundTasks,
    telemetry::Telemetry,
};

/// Exit code when everything finished within its budget.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code when the service could not start (a port in use, startup work failed).
pub const EXIT_STARTUP_FAILED: u8 = 1;
/// Exit code for a refused configuration (the same as for a bad command line).
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code when a deadline cut requests, connections, tasks or resources short.
pub const EXIT_DEADLINE_EXCEEDED: u8 = 3;

/// The configured durations, all counted as described in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub drain_delay: Duration,
    pub timeout: Duration,
    pub cleanup_timeout: Duration,
}

/// Everything that must stop, in the order it stops.
pub struct Stoppable {
    pub serving: JoinHandle<OpenConnections>,
    pub tasks: BackgroundTasks,
    pub resources: Resources,
    pub telemetry: Telemetry,
    /// Told how the shutdown goes, for the Pod's events.
    pub pod: OwnPod,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub cut: Cut,
    pub tasks_cut: usize,
    pub resources_not_closed: usize,
    pub telemetry_flushed: bool,
    pub took: Duration,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.cut == Cut::default() && self.tasks_cut == 0 && self.resources_not_closed == 0
    }

    pub fn exit_code(&self) -> u8 {
        if self.is_clean() {
            EXIT_CLEAN
        } else {
            EXIT_DEADLINE_EXCEEDED
        }
    }
}

/// Runs the sequence; `signalled_at` is when the first signal arrived.
pub async fn run(
    signalled_at: Instant,
    budget: Budget,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
    stoppable: Stoppable,
) -> Report {
    metrics.mark_shutdown_started();
    lifecycle.begin_draining("shutdown signal received");
    let in_flight_at_signal = metrics.http_requests_in_flight.get();
    // Readiness is off already: the Pod is read while the drain delay runs.
    let patience = budget.drain_delay.min(pod::CALL_PATIENCE);
    let budget = stoppable
        .pod
        .fit(budget, signalled_at, patience, metrics)
        .await;
    let drain_started = stoppable.pod.drain_started(&budget);
    tracing::info!(
        drain_delay_ms = millis(budget.drain_delay),
        timeout_ms = millis(budget.timeout),
        cleanup_timeout_ms = millis(budget.cleanup_timeout),
        "shutdown: draining; readiness off, still serving while load balancers move away"
    );

    tokio::time::sleep_until(signalled_at + budget.drain_delay).await;
    lifecycle.advance(State::Stopping);
    let connections = stoppable
        .serving
        .await
        .expect("the accept loop does not panic");
    tracing::info!(
        open_connections = connections.len(),
        in_flight = metrics.http_requests_in_flight.get(),
        "shutdown: listener closed, idle connections closing, waiting for in-flight requests"
    );

    let cut = connections.finish_by(signalled_at + budget.timeout).await;
    if cut == Cut::default() {
        tracing::info!(
            elapsed_ms = millis(signalled_at.elapsed()),
            "shutdown: every request finished"
        );
    } else {
        tracing::error!(
            requests_cut = cut.requests,
            connections_cut = cut.connections,
            "shutdown: SHUTDOWN_TIMEOUT reached, cut what was still running"
        );
    }

    let cleanup_deadline = Instant::now() + budget.cleanup_timeout;
    let tasks_cut = stoppable.tasks.stop(budget.cleanup_timeout).await;
    if tasks_cut > 0 {
        tracing::error!(
            tasks_cut,
            "shutdown: background tasks still running after SHUTDOWN_CLEANUP_TIMEOUT"
        );
    }
    let resources_not_closed = stoppable
        .resources
        .close_all(cleanup_deadline)
        .await
        .iter()
        .filter(|(_, closed)| *closed != Closed::Ok)
        .count();
    metrics
        .shutdown_tasks_cut
        .inc_by((tasks_cut + resources_not_closed) as u64);

    let report = Report {
        cut,
        tasks_cut,
        resources_not_closed,
        telemetry_flushed: false,
        took: signalled_at.elapsed(),
    };
    let outcome = if report.is_clean() {
        "clean"
    } else {
        "deadline_exceeded"
    };
    metrics.shutdowns.with_label_values(&[outcome]).inc();
    tracing::info!(
        outcome,
        took_ms = millis(report.took),
        exit_code = report.exit_code(),
        "shutdown complete"
    );

    let patience = cleanup_deadline
        .saturating_duration_since(Instant::now())
        .min(pod::CALL_PATIENCE);
    stoppable
        .pod
        .shutdown_finished(drain_started, &report, in_flight_at_signal, patience)
        .await;

    let telemetry_flushed = stoppable
        .telemetry
        .flush(cleanup_deadline.saturating_duration_since(Instant::now()))
        .await;
    lifecycle.advance(State::Stopped);
    Report {
        telemetry_flushed,
        ..report
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}
