//! Background tasks: started at startup, cancelled and awaited after the last request.

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Clone, Default)]
pub struct BackgroundTasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl BackgroundTasks {
    /// Spawns a task that must return soon after `stop` is cancelled.
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let future = task(self.stop.clone());
        self.tracker.spawn(async move {
            future.await;
            tracing::debug!(task = name, "background task finished");
        });
    }

    /// Cancels every task and waits up to `budget` for them; returns how many were still
    /// running when the budget ran out.
    pub async fn stop(&self, budget: Duration) -> usize {
        self.tracker.close();
        self.stop.cancel();
        match tokio::time::timeout(budget, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_cancels_and_counts_stragglers() {
        let tasks = BackgroundTasks::default();
        tasks.spawn("polite", |stop| async move { stop.cancelled().await });
        tasks.spawn("stubborn", |_stop| std::future::pending());
        assert_eq!(tasks.stop(Duration::from_millis(100)).await, 1);
    }
}
