//! Readiness checks for dependencies.
//!
//! Each check runs in the background on its own interval, bounded by a timeout, and only
//! its last result is read by `/readyz`: a slow dependency can never make the probe itself
//! slow. Checks affect readiness only, never liveness: restarting a healthy process because
//! a database is down would not bring the database back.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::{
    error::{Error, describe},
    metrics::Metrics,
    tasks::BackgroundTasks,
};

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

#[derive(Clone)]
struct Check {
    name: &'static str,
    interval: Duration,
    timeout: Duration,
    run: CheckFn,
}

/// The service's readiness checks and the last result of each; cheap to clone, every clone
/// registers into the same set.
#[derive(Clone, Default)]
pub struct ReadinessChecks {
    checks: Arc<RwLock<Vec<Check>>>,
    results: Arc<RwLock<BTreeMap<&'static str, Result<(), String>>>>,
}

impl ReadinessChecks {
    /// Registers a check that runs every `interval` and fails when it takes longer than
    /// `timeout`. Until its first run the check counts as failing.
    pub fn register<F, Fut, E>(
        &self,
        name: &'static str,
        interval: Duration,
        timeout: Duration,
        check: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Error>,
    {
        let run: CheckFn = Arc::new(move || {
            let checking = check();
            Box::pin(async move {
                checking
                    .await
                    .map_err(|error| describe(error.into().as_ref()))
            })
        });
        self.results
            .write()
            .expect("readiness results lock")
            .insert(name, Err("not checked yet".into()));
        self.checks
            .write()
            .expect("readiness checks lock")
            .push(Check {
                name,
                interval,
                timeout,
                run,
            });
    }

    /// Runs every check once, so that the service is ready as soon as startup ends.
    pub(crate) async fn run_all_once(&self, metrics: &Metrics) {
        for check in self.snapshot() {
            let result = run_with_timeout(&check.run, check.timeout).await;
            self.record(metrics, check.name, result);
        }
    }

    /// Keeps every check running on its interval until background work is stopped.
    pub(crate) fn spawn_all(&self, tasks: &BackgroundTasks, metrics: &Metrics) {
        for check in self.snapshot() {
            let checks = self.clone();
            let metrics = metrics.clone();
            tasks.spawn("readiness-check", move |stop| async move {
                let mut ticker = tokio::time::interval(check.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticker.tick() => {
                            let result = run_with_timeout(&check.run, check.timeout).await;
                            checks.record(&metrics, check.name, result);
                        }
                    }
                }
            });
        }
    }

    /// The first failing check and its reason, if any.
    pub(crate) fn first_failure(&self) -> Option<(&'static str, String)> {
        self.results
            .read()
            .expect("readiness results lock")
            .iter()
            .find_map(|(name, result)| result.as_ref().err().map(|reason| (*name, reason.clone())))
    }

    /// The registered checks, copied out so that no lock is held while they run.
    fn snapshot(&self) -> Vec<Check> {
        self.checks.read().expect("readiness checks lock").clone()
    }

    fn record(&self, metrics: &Metrics, name: &'static str, result: Result<(), String>) {
        metrics
            .readiness_check_up
            .with_label_values(&[name])
            .set(i64::from(result.is_ok()));
        let mut results = self.results.write().expect("readiness results lock");
        let previous = results.insert(name, result.clone());
        if previous.as_ref().map(Result::is_ok) != Some(result.is_ok()) {
            match &result {
                Ok(()) => tracing::info!(check = name, "readiness check passing"),
                Err(reason) => tracing::warn!(check = name, %reason, "readiness check failing"),
            }
        }
    }
}

async fn run_with_timeout(run: &CheckFn, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run()).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_fails_by_timeout() {
        let checks = ReadinessChecks::default();
        let metrics = Metrics::new(crate::service::tests::SERVICE).unwrap();
        checks.register(
            "ok",
            Duration::from_secs(1),
            Duration::from_millis(50),
            || async { Ok::<_, Error>(()) },
        );
        checks.register(
            "hangs",
            Duration::from_secs(1),
            Duration::from_millis(50),
            std::future::pending::<Result<(), Error>>,
        );
        assert!(
            checks.first_failure().is_some(),
            "unchecked counts as failing"
        );
        checks.run_all_once(&metrics).await;
        let (name, reason) = checks.first_failure().expect("the hanging check fails");
        assert_eq!(name, "hangs");
        assert!(reason.contains("no answer within"), "{reason}");
        assert_eq!(
            metrics.readiness_check_up.with_label_values(&["ok"]).get(),
            1
        );
        assert_eq!(
            metrics
                .readiness_check_up
                .with_label_values(&["hangs"])
                .get(),
            0
        );
    }
}
