//! The service's own Pod, through the Kubernetes API (the `kube` feature):
//! - events that tell the shutdown's story in `kubectl describe pod`: `DrainStarted`,
//!   `DrainCompleted`, and a Warning `ShutdownDeadlineExceeded` when something was cut;
//! - at start, the Pod's grace period and preStop hook checked against the shutdown budget
//!   (a Warning `ShutdownBudgetMismatch` event and the `shutdown_budget_mismatch` metric);
//! - at SIGTERM, a budget shrunk to fit a deletion that allows less time than usual.
//!
//! All of it is best effort under short timeouts: an absent, slow or failing API server
//! changes nothing else. Outside a cluster, or built without the feature, it is inactive, and
//! one log line at start says why.

#[cfg(feature = "kube")]
mod budget;
#[cfg(feature = "kube")]
mod cluster;

use std::time::Duration;

use tokio::{sync::watch, time::Instant};

use crate::{budget::Budget, lifecycle::Snapshot, metrics::Metrics};
#[cfg(feature = "kube")]
use crate::{lifecycle::Drain, report::Report};

/// How long the shutdown waits at most for one call to the API server.
#[cfg(feature = "kube")]
pub(crate) const CALL_PATIENCE: Duration = Duration::from_secs(2);

/// A handle on the service's own Pod; does nothing when the integration is inactive.
#[derive(Clone, Default)]
pub(crate) struct OwnPod {
    #[cfg(feature = "kube")]
    cluster: Option<std::sync::Arc<cluster::Cluster>>,
}

impl OwnPod {
    #[cfg(not(feature = "kube"))]
    pub(crate) async fn connect(_enabled: bool, _reporter: &str) -> OwnPod {
        tracing::info!("Kubernetes integration inactive: built without the kube feature");
        OwnPod::default()
    }

    /// Connects when enabled (`KUBE_INTEGRATION`), in a Pod, with an API to talk to.
    #[cfg(feature = "kube")]
    pub(crate) async fn connect(enabled: bool, reporter: &str) -> OwnPod {
        if !enabled {
            tracing::info!("Kubernetes integration inactive: KUBE_INTEGRATION=false");
            return OwnPod::default();
        }
        let Some(identity) = cluster::Identity::from_env() else {
            tracing::info!(
                "Kubernetes integration inactive: POD_NAME and POD_NAMESPACE are not set"
            );
            return OwnPod::default();
        };
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if !in_cluster && std::env::var_os("KUBECONFIG").is_none() {
            tracing::info!(
                "Kubernetes integration inactive: no cluster (KUBERNETES_SERVICE_HOST and \
                 KUBECONFIG are not set)"
            );
            return OwnPod::default();
        }
        match cluster::Cluster::connect(identity, reporter).await {
            Ok(cluster) => {
                tracing::info!(pod = cluster.describe(), "Kubernetes integration active");
                OwnPod {
                    cluster: Some(std::sync::Arc::new(cluster)),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Kubernetes integration inactive");
                OwnPod::default()
            }
        }
    }

    /// Compares the Pod's spec with the budget, in the background; a contradiction is
    /// logged, counted in `shutdown_budget_mismatch` and published as a Warning event.
    pub(crate) fn check_budget(&self, budget: Budget, prestop_delay: Duration, metrics: &Metrics) {
        #[cfg(feature = "kube")]
        if let Some(cluster) = self.cluster.clone() {
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let Some(pod) = cluster.shutdown_spec().await else {
                    return;
                };
                match budget::mismatch(&pod, &budget, prestop_delay) {
                    None => metrics.shutdown_budget_mismatch.set(0),
                    Some(problem) => {
                        metrics.shutdown_budget_mismatch.set(1);
                        tracing::warn!(%problem, "the Pod's spec contradicts the shutdown budget");
                        cluster
                            .publish(true, "ShutdownBudgetMismatch", "CheckBudget", problem)
                            .await;
                    }
                }
            });
        }
        #[cfg(not(feature = "kube"))]
        let _ = (budget, prestop_delay, metrics);
    }

    /// A shorter budget than `budget` when the Pod's deletion leaves less time before
    /// SIGKILL; `None` when the budget fits or the Pod cannot be read.
    pub(crate) async fn fit(&self, budget: Budget, signalled_at: Instant) -> Option<Budget> {
        #[cfg(feature = "kube")]
        if let Some(cluster) = &self.cluster {
            let deadline = cluster.kill_deadline().await?;
            // The budget counts from the signal; the Pod was read a moment after it.
            let left = deadline
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                + signalled_at.elapsed();
            let fitted = budget::fit(budget, left)?;
            tracing::warn!(
                sigkill_after_ms = left.as_millis() as u64,
                drain_delay_ms = fitted.drain_delay.as_millis() as u64,
                timeout_ms = fitted.timeout.as_millis() as u64,
                cleanup_timeout_ms = fitted.cleanup_timeout.as_millis() as u64,
                metrics_linger_ms = fitted.metrics_linger.as_millis() as u64,
                "shutdown: the Pod's deletion allows less time than the budget; shrunk to fit"
            );
            return Some(fitted);
        }
        #[cfg(not(feature = "kube"))]
        let _ = (budget, signalled_at);
        None
    }

    /// Tells the shutdown's story in the Pod's events as the lifecycle moves: `DrainStarted`
    /// once the plan is known, then how it ended. Returns once the last event is out, or
    /// after [`CALL_PATIENCE`] past the end.
    pub(crate) async fn observe(self, mut snapshots: watch::Receiver<Snapshot>) {
        #[cfg(feature = "kube")]
        if let Some(cluster) = self.cluster {
            let mut started = None;
            while snapshots.changed().await.is_ok() {
                let snapshot = snapshots.borrow_and_update().clone();
                let drain = snapshot.drain;
                if let (Some(drain), None) = (drain, &started) {
                    let cluster = cluster.clone();
                    started = Some(tokio::spawn(async move {
                        drain_started(&cluster, &drain).await;
                    }));
                }
                if let (Some(report), Some(drain)) = (snapshot.report, drain) {
                    let finished = async {
                        if let Some(started) = started {
                            let _ = started.await;
                        }
                        drain_finished(&cluster, &drain, &report).await;
                    };
                    if tokio::time::timeout(CALL_PATIENCE, finished).await.is_err() {
                        tracing::warn!("shutdown: gave up on publishing the final event");
                    }
                    return;
                }
            }
        }
        #[cfg(not(feature = "kube"))]
        let _ = (self, &mut snapshots);
    }
}

#[cfg(feature = "kube")]
async fn drain_started(cluster: &cluster::Cluster, drain: &Drain) {
    let budget = drain.budget;
    let note = format!(
        "Shutdown signal received: draining for {}, requests may take until {} after the \
         signal, cleanup within {}.",
        humantime::format_duration(budget.drain_delay),
        humantime::format_duration(budget.timeout),
        humantime::format_duration(budget.cleanup_timeout),
    );
    cluster.publish(false, "DrainStarted", "Drain", note).await;
}

#[cfg(feature = "kube")]
async fn drain_finished(cluster: &cluster::Cluster, drain: &Drain, report: &Report) {
    let took = humantime::format_duration(Duration::from_millis(report.took.as_millis() as u64));
    if report.is_clean() {
        let note = format!(
            "Drained in {took}; {} requests were in flight at the signal, all finished.",
            drain.in_flight_at_signal
        );
        cluster
            .publish(false, "DrainCompleted", "Drain", note)
            .await;
    } else {
        let note = format!(
            "Shutdown deadline exceeded after {took}: cut {} requests, {} connections and {} \
             background tasks or resources.",
            report.cut.requests,
            report.cut.connections,
            report.tasks_cut + report.resources_not_closed
        );
        cluster
            .publish(true, "ShutdownDeadlineExceeded", "Drain", note)
            .await;
    }
}
