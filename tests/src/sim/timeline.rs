//! What happened when, from the simulator's point of view, shared by every part of it.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Seconds since the simulation started.
    pub at: f64,
    /// A pod's name, or `deployment`, `endpoints`, `proxy`, `load`.
    pub source: String,
    pub what: String,
}

pub struct Timeline {
    started: Instant,
    events: Mutex<Vec<Event>>,
    live: bool,
}

impl Timeline {
    /// With `live`, every event is also printed as it happens.
    pub fn new(live: bool) -> Timeline {
        Timeline {
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
            live,
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn since_start(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.started)
    }

    pub fn record(&self, source: &str, what: impl Into<String>) {
        let event = Event {
            at: self.started.elapsed().as_secs_f64(),
            source: source.to_owned(),
            what: what.into(),
        };
        if self.live {
            println!("{:>8.3}s  {:<18} {}", event.at, event.source, event.what);
        }
        self.events.lock().unwrap().push(event);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}
