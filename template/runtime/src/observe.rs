//! The observers of the lifecycle: each follows it on its own task until the service stops,
//! and the shutdown waits for them (within its cleanup budget) before the process exits.

use tokio::{sync::watch, time::Instant};
use tokio_util::task::TaskTracker;

use crate::{
    lifecycle::{Lifecycle, Snapshot, State},
    metrics::{self, Metrics},
    pod::OwnPod,
};

/// The running observers.
pub(crate) struct Observers(TaskTracker);

impl Observers {
    /// Starts the log, metrics and Pod observers.
    pub(crate) fn start(lifecycle: &Lifecycle, metrics: &Metrics, pod: &OwnPod) -> Observers {
        let tracker = TaskTracker::new();
        tracker.spawn(log(lifecycle.subscribe()));
        tracker.spawn(metrics::observe(metrics.clone(), lifecycle.subscribe()));
        tracker.spawn(pod.clone().observe(lifecycle.subscribe()));
        tracker.close();
        Observers(tracker)
    }

    /// Waits until every observer has told the end of the shutdown, or until `deadline`.
    pub(crate) async fn finish_by(self, deadline: Instant) {
        if tokio::time::timeout_at(deadline, self.0.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                observers_left = self.0.len(),
                "shutdown: observers still busy at the cleanup deadline"
            );
        }
    }
}

/// One log line per state, with the shutdown's plan and its outcome.
async fn log(mut snapshots: watch::Receiver<Snapshot>) {
    let (mut state_logged, mut plan_logged) = (None, false);
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        if state_logged != Some(snapshot.state) {
            state_logged = Some(snapshot.state);
            tracing::info!(
                state = snapshot.state.as_str(),
                reason = (snapshot.state == State::Draining).then_some(snapshot.drain_reason),
                "lifecycle state changed"
            );
        }
        if let (Some(drain), false) = (snapshot.drain, plan_logged) {
            plan_logged = true;
            tracing::info!(
                drain_delay_ms = millis(drain.budget.drain_delay),
                timeout_ms = millis(drain.budget.timeout),
                cleanup_timeout_ms = millis(drain.budget.cleanup_timeout),
                metrics_linger_ms = millis(drain.budget.metrics_linger),
                in_flight = drain.in_flight_at_signal,
                "shutdown: draining; readiness off, still serving while load balancers move away"
            );
        }
        if let Some(report) = snapshot.report {
            tracing::info!(
                outcome = report.outcome(),
                took_ms = millis(report.took),
                requests_cut = report.cut.requests,
                connections_cut = report.cut.connections,
                tasks_cut = report.tasks_cut,
                resources_not_closed = report.resources_not_closed,
                exit_code = report.exit_code(),
                "shutdown complete"
            );
            return;
        }
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}
