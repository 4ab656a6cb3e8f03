//! The one state machine, and the one channel from the shutdown sequence to everything else:
//! the probes, the connections, and the observers (metrics, logs, Pod events) read it; only
//! the sequence and the pre-stop hook move it.
//!
//! States move forward, `starting → ready → draining → stopping → stopped`, with one way
//! back: a pre-stop hook that no signal follows (a stray or hostile `GET /prestop`) ends its
//! drain, `draining → ready`, once the time a real pre-stop takes has passed.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use tokio::{sync::watch, time::Instant};

use crate::{budget::Budget, report::Report};

/// Where the service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum State {
    /// Listeners are bound; startup work is running. Not ready.
    Starting,
    /// Serving normally.
    Ready,
    /// Shutdown began: readiness fails, requests are still served, and every response
    /// asks the client to close its connection.
    Draining,
    /// The listener is closed; in-flight requests finish, then background work stops.
    Stopping,
    /// Everything is done; the process is about to exit.
    Stopped,
}

impl State {
    pub(crate) const ALL: [State; 5] = [
        State::Starting,
        State::Ready,
        State::Draining,
        State::Stopping,
        State::Stopped,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Draining => "draining",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

/// The shutdown as planned once the signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drain {
    pub(crate) signalled_at: Instant,
    pub(crate) budget: Budget,
    /// The budget was shrunk to fit a deletion that allows less time.
    pub(crate) shrunk: bool,
    pub(crate) in_flight_at_signal: u64,
}

/// Everything the lifecycle knows; each change is published whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) state: State,
    /// Why draining began (a signal, the pre-stop hook); empty before.
    pub(crate) drain_reason: &'static str,
    /// While only the pre-stop hook drains: when it ends unless a signal follows.
    pub(crate) prestop_until: Option<Instant>,
    /// Set once the signal arrived and the budget is known.
    pub(crate) drain: Option<Drain>,
    /// Set with [`State::Stopped`].
    pub(crate) report: Option<Report>,
}

/// Why a drain began when the pre-stop hook began it.
const PRESTOP_REASON: &str = "pre-stop hook called";

/// Shared handle to the lifecycle; cheap to clone.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    snapshot: Arc<watch::Sender<Snapshot>>,
    /// The state alone, for reading: every response asks whether the service is draining,
    /// and a plain load does not take the watch's lock, which every connection shares.
    current: Arc<AtomicU8>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        let (snapshot, _) = watch::channel(Snapshot {
            state: State::Starting,
            drain_reason: "",
            prestop_until: None,
            drain: None,
            report: None,
        });
        Self {
            snapshot: Arc::new(snapshot),
            current: Arc::new(AtomicU8::new(State::Starting as u8)),
        }
    }

    pub(crate) fn state(&self) -> State {
        State::ALL[usize::from(self.current.load(Ordering::Acquire))]
    }

    /// Every change from now on; the current snapshot counts as unseen.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Snapshot> {
        let mut receiver = self.snapshot.subscribe();
        receiver.mark_changed();
        receiver
    }

    /// Resolves once the lifecycle is at `state` or past it.
    pub(crate) async fn reached(&self, state: State) {
        let mut snapshots = self.snapshot.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = snapshots.wait_for(|current| current.state >= state).await;
    }

    /// True from the moment shutdown (or the pre-stop hook) began.
    pub(crate) fn is_draining(&self) -> bool {
        self.state() >= State::Draining
    }

    /// Why the service is draining, for the readiness probe's answer.
    pub(crate) fn drain_reason(&self) -> &'static str {
        self.snapshot.borrow().drain_reason
    }

    /// Starts draining for good unless already past it; a drain the pre-stop hook began
    /// becomes final. Returns whether anything changed.
    pub(crate) fn begin_draining(&self, reason: &'static str) -> bool {
        self.change(|snapshot| {
            let pending_prestop = snapshot.prestop_until.take().is_some();
            if snapshot.state >= State::Draining {
                return pending_prestop;
            }
            snapshot.state = State::Draining;
            snapshot.drain_reason = reason;
            true
        })
    }

    /// Drains for the pre-stop hook until `until`, when [`Self::end_unfollowed_prestop`]
    /// takes it back unless a signal came first. Only a ready service starts such a drain
    /// (one still starting is not ready anyway). Returns true if this call started it.
    pub(crate) fn begin_prestop(&self, until: Instant) -> bool {
        self.change(|snapshot| match snapshot.prestop_until {
            Some(pending) => {
                snapshot.prestop_until = Some(pending.max(until));
                false
            }
            None if snapshot.state == State::Ready => {
                snapshot.state = State::Draining;
                snapshot.drain_reason = PRESTOP_REASON;
                snapshot.prestop_until = Some(until);
                true
            }
            None => false,
        })
    }

    /// Back to ready if the pre-stop hook's drain is over and no signal followed it;
    /// returns whether it went back.
    pub(crate) fn end_unfollowed_prestop(&self) -> bool {
        self.change(|snapshot| match snapshot.prestop_until {
            Some(until) if Instant::now() >= until => {
                snapshot.prestop_until = None;
                snapshot.state = State::Ready;
                snapshot.drain_reason = "";
                true
            }
            _ => false,
        })
    }

    /// Moves to `next` if it lies ahead of the current state; returns whether it moved.
    pub(crate) fn advance(&self, next: State) -> bool {
        self.change(|snapshot| {
            if next <= snapshot.state {
                return false;
            }
            snapshot.state = next;
            true
        })
    }

    /// Publishes the plan the shutdown follows.
    pub(crate) fn plan(&self, drain: Drain) {
        self.change(|snapshot| {
            snapshot.drain = Some(drain);
            true
        });
    }

    /// Publishes how the shutdown went, and that everything is done.
    pub(crate) fn finish(&self, report: Report) {
        self.change(|snapshot| {
            snapshot.state = State::Stopped;
            snapshot.report = Some(report);
            true
        });
    }

    /// Applies `change` and publishes the result if it changed anything. The plain state is
    /// stored while readers of the watch still wait, so that both agree.
    fn change(&self, change: impl FnOnce(&mut Snapshot) -> bool) -> bool {
        self.snapshot.send_if_modified(|snapshot| {
            let changed = change(snapshot);
            self.current.store(snapshot.state as u8, Ordering::Release);
            changed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        let lifecycle = Lifecycle::new();
        assert!(lifecycle.advance(State::Ready));
        assert!(lifecycle.begin_draining("test"));
        assert!(!lifecycle.begin_draining("again"));
        assert!(!lifecycle.advance(State::Ready));
        assert_eq!(lifecycle.state(), State::Draining);
        assert_eq!(lifecycle.drain_reason(), "test");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pre_stop_drain_ends_unless_a_signal_follows() {
        let lifecycle = Lifecycle::new();
        lifecycle.advance(State::Ready);
        let until = Instant::now() + std::time::Duration::from_secs(15);
        assert!(lifecycle.begin_prestop(until));
        assert!(
            !lifecycle.begin_prestop(until),
            "a second call extends, at most"
        );
        assert!(!lifecycle.end_unfollowed_prestop(), "not before its time");
        tokio::time::advance(std::time::Duration::from_secs(15)).await;
        assert!(lifecycle.end_unfollowed_prestop());
        assert_eq!(lifecycle.state(), State::Ready);

        assert!(lifecycle.begin_prestop(Instant::now()));
        assert!(
            lifecycle.begin_draining("signal"),
            "the signal makes it final"
        );
        assert!(!lifecycle.end_unfollowed_prestop());
        assert_eq!(lifecycle.state(), State::Draining);
        assert_eq!(lifecycle.drain_reason(), PRESTOP_REASON);
    }

    #[tokio::test]
    async fn subscribers_see_the_latest_snapshot() {
        let lifecycle = Lifecycle::new();
        let mut snapshots = lifecycle.subscribe();
        assert_eq!(snapshots.borrow_and_update().state, State::Starting);
        lifecycle.advance(State::Ready);
        lifecycle.begin_draining("test");
        snapshots.changed().await.unwrap();
        let seen = snapshots.borrow_and_update().clone();
        assert_eq!((seen.state, seen.drain_reason), (State::Draining, "test"));
    }
}
