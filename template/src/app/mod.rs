//! Your service. Everything application-specific lives here: its settings, what it starts,
//! and its routes; the runtime around it (probes, metrics, the shutdown) needs no change.
//!
//! [`start`] runs once as startup work, before the service reports ready. It registers:
//! - resources to close after the last request, in reverse order (`startup.resources`);
//! - readiness checks for dependencies (`startup.checks`);
//! - background tasks, cancelled and awaited after the last request (`startup.tasks`);
//!
//! and returns the application routes.

mod publisher;
mod routes;

use std::{sync::Arc, time::Duration};

use axum::Router;
use kube_service_runtime::{Error, Startup};

pub use publisher::{EventPublisher, PublishError};

/// The app's own settings; add yours here (a `DATABASE_URL`, say).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Serve `GET /panic` on the application port, to see panic handling at work.
    #[arg(
        long,
        env = "DEBUG_ROUTES",
        value_name = "DEBUG_ROUTES",
        default_value_t = false
    )]
    pub debug_routes: bool,
}

/// The startup work: registers what the runtime must look after, returns the routes.
pub async fn start(settings: Settings, startup: Startup) -> Result<Router, Error> {
    // Bounded in bytes: whatever clients send, it holds at most 8 MiB.
    let publisher = Arc::new(EventPublisher::new(8 * 1024 * 1024));

    // Closed after the last request: whatever is still buffered gets sent.
    let closing = publisher.clone();
    startup
        .resources
        .register("event-publisher", move || async move {
            let flushed = closing.close().await;
            tracing::info!(
                flushed,
                sent_total = closing.sent(),
                "event publisher flushed"
            );
            Ok::<_, PublishError>(())
        });

    // Readiness follows the publisher: a full buffer means the broker is not keeping up.
    let checked = publisher.clone();
    startup.checks.register(
        "event-publisher",
        Duration::from_secs(5),
        Duration::from_secs(1),
        move || {
            let checked = checked.clone();
            async move { checked.check() }
        },
    );

    // A periodic task, stopped after the last request and before the publisher closes.
    let flushing = publisher.clone();
    startup
        .tasks
        .spawn("publisher-flush", move |stop| async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => { flushing.flush().await; }
                }
            }
        });

    Ok(routes::router(publisher, settings.debug_routes))
}
