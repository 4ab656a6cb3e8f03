//! What the app's startup work is given: where to register what the runtime must look after.

use crate::{readiness::ReadinessChecks, resources::Resources, tasks::BackgroundTasks};

/// Handed to the app's startup work, which runs once before the service reports ready.
///
/// Every field is a cheap handle: clone it into whatever needs it later.
#[derive(Clone)]
pub struct Startup {
    /// Closed after the last request, in reverse order of registration.
    pub resources: Resources,
    /// Dependency checks that decide readiness (never liveness).
    pub checks: ReadinessChecks,
    /// Cancelled and awaited after the last request, before resources close.
    pub tasks: BackgroundTasks,
    /// The registry `/metrics` serves, for metrics of the app's own.
    pub registry: prometheus::Registry,
}
