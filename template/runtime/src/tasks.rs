//! Background tasks: started at startup, cancelled and awaited after the last request.

use std::future::Future;

use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The service's background tasks; cheap to clone, every clone spawns into the same set.
#[derive(Clone, Default)]
pub struct BackgroundTasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl BackgroundTasks {
    /// Spawns a task that must return soon after the token it is given is cancelled, which
    /// happens after the last request.
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

    /// Cancels every task and waits for them until `deadline`; returns how many were still
    /// running then.
    pub(crate) async fn stop_by(&self, deadline: Instant) -> usize {
        self.tracker.close();
        self.stop.cancel();
        match tokio::time::timeout_at(deadline, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stop_cancels_and_counts_stragglers() {
        let tasks = BackgroundTasks::default();
        tasks.spawn("polite", |stop| async move { stop.cancelled().await });
        tasks.spawn("stubborn", |_stop| std::future::pending());
        let deadline = Instant::now() + Duration::from_millis(100);
        assert_eq!(tasks.stop_by(deadline).await, 1);
    }
}
