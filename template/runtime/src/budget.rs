//! The shutdown's time budget, counted from the first signal.

use std::time::Duration;

/// The configured durations, as `shutdown` draws them: the drain delay and the deadline for
/// requests both count from the signal; cleanup gets its own budget after the last request,
/// and the metrics linger comes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Serving on, readiness off, while endpoints and load balancers move away.
    pub drain_delay: Duration,
    /// Hard deadline for requests, from the signal.
    pub timeout: Duration,
    /// For background tasks, resources and telemetry, after the last request.
    pub cleanup_timeout: Duration,
    /// At most this long after cleanup, for scrapers to read the final metrics.
    pub metrics_linger: Duration,
}
