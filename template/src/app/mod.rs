//! Your service. Everything application-specific is wired here; the lifecycle, the
//! server, probes and metrics around it need no change.
//!
//! [`start`] runs once as startup work, before the service reports ready. It registers:
//! - resources to close after the last request, in reverse order ([`Resources`]);
//! - readiness checks for dependencies ([`ReadinessChecks`]);
//! - background tasks, cancelled and awaited after the last request ([`BackgroundTasks`]);
//!
//! and returns the application routes.

mod publisher;
mod routes;

use std::{sync::Arc, time::Duration};

use axum::Router;

use crate::{
    config::Config, readiness::ReadinessChecks, resources::Resources, tasks::BackgroundTasks,
};
use publisher::EventPublisher;

/// What startup work can register things with.
pub struct Startup<'a> {
    pub config: &'a Config,
    pub resources: &'a mut Resources,
    pub checks: &'a ReadinessChecks,
    pub tasks: &'a BackgroundTasks,
}

pub async fn start(startup: Startup<'_>) -> anyhow::Result<Router> {
    let publisher = Arc::new(EventPublisher::new(10_000));

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
            Ok(())
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

    Ok(routes::router(publisher, startup.config.debug_routes))
}
