//! What a shutdown cut short, as the sequence reports it and observers tell it.

use std::time::Duration;

use tokio::time::Instant;

/// Exit code when everything finished within its budget.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code when the service could not start (a port in use, startup work failed).
pub const EXIT_STARTUP_FAILED: u8 = 1;
/// Exit code for a refused configuration (the same as for a bad command line).
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code when a deadline cut requests, connections, tasks or resources short.
pub const EXIT_DEADLINE_EXCEEDED: u8 = 3;

/// What the hard deadline cut, if anything.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Requests still running at `SHUTDOWN_TIMEOUT`.
    pub requests: u64,
    /// Connections dropped at `SHUTDOWN_TIMEOUT` instead of closing gracefully.
    pub connections: u64,
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What `SHUTDOWN_TIMEOUT` cut.
    pub cut: Cut,
    /// Background tasks still running when `SHUTDOWN_CLEANUP_TIMEOUT` ran out.
    pub tasks_cut: usize,
    /// Resources that failed to close or were still closing at the cleanup deadline.
    pub resources_not_closed: usize,
    /// From the first signal to the end of cleanup.
    pub took: Duration,
    /// When the cleanup budget runs out: what still has to happen (flushing telemetry)
    /// must end by then.
    pub cleanup_deadline: Instant,
    /// How long the admin port may then wait for scrapers to read the final metrics:
    /// `SHUTDOWN_METRICS_LINGER`, or less when the budget was shrunk to fit the Pod's.
    pub metrics_linger: Duration,
}

impl Report {
    /// True when everything finished within its budget.
    pub fn is_clean(&self) -> bool {
        self.cut == Cut::default() && self.tasks_cut == 0 && self.resources_not_closed == 0
    }

    /// [`EXIT_CLEAN`], or [`EXIT_DEADLINE_EXCEEDED`] when something was cut.
    pub fn exit_code(&self) -> u8 {
        if self.is_clean() {
            EXIT_CLEAN
        } else {
            EXIT_DEADLINE_EXCEEDED
        }
    }

    /// The outcome as metrics label it: one of [`Report::OUTCOMES`].
    pub fn outcome(&self) -> &'static str {
        if self.is_clean() {
            Report::OUTCOMES[0]
        } else {
            Report::OUTCOMES[1]
        }
    }

    /// Every outcome a shutdown can have.
    pub const OUTCOMES: [&'static str; 2] = ["clean", "deadline_exceeded"];
}
