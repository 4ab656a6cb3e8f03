//! Resources that must be closed after the last request: a database pool, a producer that
//! must flush, a file that must be synced.
//!
//! They are registered by name as the service starts and closed in reverse order (what was
//! opened last may depend on what was opened first), each within what is left of the
//! cleanup budget. Every outcome is logged.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::time::Instant;

use crate::error::{Error, describe};

type CloseFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;
type CloseFn = Box<dyn FnOnce() -> CloseFuture + Send>;

/// What the service closes after its last request; cheap to clone, every clone registers
/// into the same list.
#[derive(Clone, Default)]
pub struct Resources {
    entries: Arc<Mutex<Vec<(String, CloseFn)>>>,
}

/// What happened to one resource at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    Ok,
    Failed(String),
    TimedOut,
}

impl Resources {
    /// Registers `close`, to run after the last request and after background tasks stopped;
    /// resources close in reverse order of registration.
    pub fn register<F, Fut, E>(&self, name: impl Into<String>, close: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Error>,
    {
        let close: CloseFn =
            Box::new(move || Box::pin(async move { close().await.map_err(Into::into) }));
        self.entries
            .lock()
            .expect("resources lock")
            .push((name.into(), close));
    }

    /// Closes every resource in reverse registration order. A resource still closing at
    /// `deadline` is abandoned; once the deadline has passed, each remaining resource is
    /// still polled once, so one that can close at once does.
    pub(crate) async fn close_all(&self, deadline: Instant) -> Vec<(String, Closed)> {
        let entries = std::mem::take(&mut *self.entries.lock().expect("resources lock"));
        let mut outcomes = Vec::with_capacity(entries.len());
        for (name, close) in entries.into_iter().rev() {
            let started = Instant::now();
            let outcome = match tokio::time::timeout_at(deadline, close()).await {
                Ok(Ok(())) => Closed::Ok,
                Ok(Err(error)) => Closed::Failed(describe(error.as_ref())),
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

    #[tokio::test(start_paused = true)]
    async fn closes_in_reverse_order_within_the_deadline() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let resources = Resources::default();
        resources.register("stuck", std::future::pending::<Result<(), Error>>);
        for name in ["pool", "producer"] {
            let order = order.clone();
            resources.register(name, move || async move {
                order.lock().unwrap().push(name);
                Ok::<_, Error>(())
            });
        }
        resources.register("broken", || async { Err("socket gone") });

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
