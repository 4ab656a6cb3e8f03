//! Resources that must be closed after the last request: a database pool, a producer that
//! must flush, a file that must be synced.
//!
//! They are registered by name as the service starts and closed in reverse order (what was
//! opened last may depend on what was opened first), each within what is left of the
//! cleanup budget. Every outcome is logged.

use std::{future::Future, pin::Pin};

use tokio::time::Instant;

type CloseFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type CloseFn = Box<dyn FnOnce() -> CloseFuture + Send>;

#[derive(Default)]
pub struct Resources {
    entries: Vec<(String, CloseFn)>,
}

/// What happened to one resource at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    Ok,
    Failed(String),
    TimedOut,
}

impl Resources {
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, close: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.entries
            .push((name.into(), Box::new(move || Box::pin(close()))));
    }

    /// Closes every resource in reverse registration order. A resource still closing at
    /// `deadline` is abandoned; once the deadline has passed, each remaining resource is
    /// still polled once, so one that can close at once does.
    pub async fn close_all(self, deadline: Instant) -> Vec<(String, Closed)> {
        let mut outcomes = Vec::with_capacity(self.entries.len());
        for (name, close) in self.entries.into_iter().rev() {
            let started = Instant::now();
            let outcome = match tokio::time::timeout_at(deadline, close()).await {
                Ok(Ok(())) => Closed::Ok,
                Ok(Err(err)) => Closed::Failed(format!("{err:#}")),
                Err(_) => Closed::TimedOut,
            };
            let took_ms = started.elapsed().as_millis() as u64;
            match &outcome {
                Closed::Ok => tracing::info!(resource = %name, took_ms, "resource closed"),
                Closed::Failed(error) => {
                    tracing::error!(resource = %name, took_ms, %error, "resource failed to close")
                }
                Closed::TimedOut => {
                    tracing::error!(resource = %name, took_ms, "resource close cut by the cleanup timeout")
                }
            }
            outcomes.push((name, outcome));
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn closes_in_reverse_order_within_the_deadline() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut resources = Resources::default();
        resources.register("stuck", std::future::pending);
        for name in ["pool", "producer"] {
            let order = order.clone();
            resources.register(name, move || async move {
                order.lock().unwrap().push(name);
                Ok(())
            });
        }
        resources.register("broken", || async { anyhow::bail!("socket gone") });

        let deadline = Instant::now() + Duration::from_millis(100);
        let outcomes = resources.close_all(deadline).await;

        assert_eq!(*order.lock().unwrap(), ["producer", "pool"]);
        let outcomes: Vec<_> = outcomes
            .iter()
            .map(|(n, o)| (n.as_str(), o.clone()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("broken", Closed::Failed("socket gone".into())),
                ("producer", Closed::Ok),
                ("pool", Closed::Ok),
                ("stuck", Closed::TimedOut),
            ]
        );
    }
}
