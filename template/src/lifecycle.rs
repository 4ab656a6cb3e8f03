//! The one state machine that the probes, the HTTP server, the metrics and the shutdown
//! sequence all observe.
//!
//! States only move forward: `starting → ready → draining → stopping → stopped`.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU8, Ordering},
};

use tokio::sync::watch;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
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
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Ready,
        State::Draining,
        State::Stopping,
        State::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Draining => "draining",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

/// Shared handle to the lifecycle; cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    /// For waiting on a state.
    state: Arc<watch::Sender<State>>,
    /// The same state for reading: every response asks whether the service is draining,
    /// and a plain load does not take the watch's lock, which every connection shares.
    current: Arc<AtomicU8>,
    drain_reason: Arc<Mutex<&'static str>>,
    metrics: Metrics,
}

impl Lifecycle {
    pub fn new(metrics: Metrics) -> Self {
        let (state, _) = watch::channel(State::Starting);
        Self {
            state: Arc::new(state),
            current: Arc::new(AtomicU8::new(State::Starting as u8)),
            drain_reason: Arc::new(Mutex::new("")),
            metrics,
        }
    }

    pub fn state(&self) -> State {
        State::ALL[usize::from(self.current.load(Ordering::Acquire))]
    }

    /// Resolves once the lifecycle is at `state` or past it.
    pub async fn reached(&self, state: State) {
        let mut states = self.state.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = states.wait_for(|current| *current >= state).await;
    }

    /// True from the moment shutdown (or the pre-stop hook) began.
    pub fn is_draining(&self) -> bool {
        self.state() >= State::Draining
    }

    /// Why the service is draining, for the readiness probe's answer.
    pub fn drain_reason(&self) -> &'static str {
        *self.drain_reason.lock().expect("drain reason lock")
    }

    /// Starts draining unless already past it; returns true if this call started it.
    pub fn begin_draining(&self, reason: &'static str) -> bool {
        self.transition(State::Draining, || {
            *self.drain_reason.lock().expect("drain reason lock") = reason;
        })
    }

    /// Moves to `next` if it lies ahead of the current state; returns whether it moved.
    pub fn advance(&self, next: State) -> bool {
        self.transition(next, || {})
    }

    /// `before` runs while readers of the state still wait, so that whatever it sets is
    /// visible together with the new state, never after it.
    fn transition(&self, next: State, before: impl FnOnce()) -> bool {
        let moved = self.state.send_if_modified(|state| {
            if next <= *state {
                return false;
            }
            before();
            *state = next;
            self.current.store(next as u8, Ordering::Release);
            true
        });
        if moved {
            self.metrics.set_state(next);
            tracing::info!(state = next.as_str(), "lifecycle state changed");
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_move_forward() {
        let lifecycle = Lifecycle::new(Metrics::new().unwrap());
        assert!(lifecycle.advance(State::Ready));
        assert!(lifecycle.begin_draining("test"));
        assert!(!lifecycle.begin_draining("again"));
        assert!(!lifecycle.advance(State::Ready));
        assert_eq!(lifecycle.state(), State::Draining);
        assert_eq!(lifecycle.drain_reason(), "test");
    }

    #[test]
    fn metrics_follow_the_state() {
        let metrics = Metrics::new().unwrap();
        let lifecycle = Lifecycle::new(metrics.clone());
        lifecycle.advance(State::Ready);
        assert_eq!(metrics.draining.get(), 0);
        lifecycle.begin_draining("test");
        assert_eq!(metrics.draining.get(), 1);
        let draining = metrics
            .lifecycle_state
            .with_label_values(&["draining"])
            .get();
        let ready = metrics.lifecycle_state.with_label_values(&["ready"]).get();
        assert_eq!((draining, ready), (1, 0));
    }
}
