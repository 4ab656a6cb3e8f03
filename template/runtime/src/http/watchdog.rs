//! One timer per connection, armed for the moment its next timeout falls due.
//!
//! A ticking interval woke every connection at least once a second to look at it: 10,000
//! idle keep-alive connections (a proxy's upstream pool) cost a few percent of a core doing
//! nothing. Here an idle connection's task sleeps until its idle timeout.
//!
//! The timer is re-armed on every poll. The connection's task is polled whenever its
//! connection moves a byte or a request ends, which is when a deadline can change, so no
//! change goes unseen; between those, nothing can fall due but the armed deadline.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

use super::activity::{Activity, Protocol};

/// Should the deadline that just fired be found again (the state it judged did not change),
/// it is looked at again this much later rather than at once, so that the task never spins.
const RECHECK: Duration = Duration::from_secs(1);

pub(crate) struct Watchdog {
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// Armed for the next deadline; left as it is while none applies.
    timer: Pin<Box<Sleep>>,
    /// The deadline that fired last, and whether the connection was closing then.
    fired: Option<(Instant, bool)>,
}

impl Watchdog {
    pub(crate) fn new(
        activity: Arc<Activity>,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            activity,
            header_read_timeout,
            idle_timeout,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            fired: None,
        }
    }

    /// Ready once a deadline that applies now has passed: the caller then judges the
    /// connection. `closing_stall` is the stall rule's length once the connection closes.
    pub(crate) fn poll_due(
        &mut self,
        cx: &mut Context<'_>,
        protocol: Protocol,
        closing_stall: Option<Duration>,
    ) -> Poll<()> {
        let next = self.activity.next_deadline(
            self.header_read_timeout,
            self.idle_timeout,
            protocol,
            closing_stall,
        );
        let Some(mut due) = next else {
            // A request is in flight: its end wakes the task, and this is polled again.
            return Poll::Pending;
        };
        let closing = closing_stall.is_some();
        if let Some((fired, was_closing)) = self.fired
            && due <= fired
            && was_closing == closing
        {
            due = fired + RECHECK;
        }
        if self.timer.deadline() != due {
            self.timer.as_mut().reset(due);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.fired = Some((due, closing));
        Poll::Ready(())
    }
}
