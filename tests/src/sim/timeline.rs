//! What happened when, from the simulator's point of view, shared by every part of it.
//! Events are typed: the report, the plot and the tests match on what happened, never on
//! the words printed for people.

use std::{
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Something one part of the simulation did or saw.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Happening {
    // A pod, as its kubelet sees it.
    ContainerStarted,
    /// The startup probe passed (or there is none).
    Started,
    StartupProbeFailed,
    LivenessProbeFailed,
    Ready,
    NotReady,
    Deleted,
    PreStopSleep {
        seconds: u64,
    },
    PreStopGet {
        path: String,
    },
    Sigterm,
    /// The grace period ran out.
    Sigkill,
    Exited {
        code: i32,
    },
    /// Still running when the simulation ended, and stopped with it.
    StoppedAtTheEnd,
    SidecarStarted {
        name: String,
    },
    SidecarSigterm {
        name: String,
    },
    SidecarSigkill {
        name: String,
    },
    SidecarExited {
        name: String,
        code: i32,
    },
    /// A sidecar stopped answering while the service was still running after its deletion.
    SidecarDownBeforeTheService {
        name: String,
    },
    /// A line the service logged once its pod was deleted: its own shutdown story.
    ServiceLog {
        message: String,
        fields: String,
    },

    // The proxy, a propagation lag after the endpoints changed.
    Routed {
        pod: String,
    },
    Unrouted {
        pod: String,
    },

    // The Deployment controller.
    ReplicasAvailable {
        replicas: u32,
    },
    RollingUpdate {
        from: u32,
        to: u32,
        max_surge: u32,
        max_unavailable: u32,
        min_ready_seconds: u64,
    },
    RolloutComplete {
        to: u32,
    },

    // The clients.
    LoadStarted {
        rate: u32,
        slow_every: u32,
        slow_ms: u64,
    },
    LoadStopping,
}

impl fmt::Display for Happening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Happening::*;
        match self {
            ContainerStarted => write!(f, "container started"),
            Started => write!(f, "started"),
            StartupProbeFailed => {
                write!(
                    f,
                    "startup probe failed: the kubelet would restart the container"
                )
            }
            LivenessProbeFailed => {
                write!(
                    f,
                    "liveness probe failed: the kubelet would restart the container"
                )
            }
            Ready => write!(f, "ready"),
            NotReady => write!(f, "not ready"),
            Deleted => write!(f, "deleted"),
            PreStopSleep { seconds } => write!(f, "preStop: sleep {seconds}s"),
            PreStopGet { path } => write!(f, "preStop: GET {path}"),
            Sigterm => write!(f, "SIGTERM"),
            Sigkill => write!(f, "grace period over: SIGKILL"),
            Exited { code } => write!(f, "container exited with {code}"),
            StoppedAtTheEnd => write!(f, "stopped: the simulation is over"),
            SidecarStarted { name } => write!(f, "sidecar {name} started"),
            SidecarSigterm { name } => write!(f, "sidecar {name}: SIGTERM"),
            SidecarSigkill { name } => write!(f, "sidecar {name}: grace period over, SIGKILL"),
            SidecarExited { name, code } => write!(f, "sidecar {name} exited with {code}"),
            SidecarDownBeforeTheService { name } => {
                write!(f, "sidecar {name} down while the service still runs")
            }
            ServiceLog { message, fields } => write!(f, "  │ {message} {fields}"),
            Routed { pod } => write!(f, "routes new connections to {pod}"),
            Unrouted { pod } => write!(f, "stops routing to {pod}"),
            ReplicasAvailable { replicas } => write!(f, "{replicas} replicas available"),
            RollingUpdate {
                from,
                to,
                max_surge,
                max_unavailable,
                min_ready_seconds,
            } => write!(
                f,
                "rolling update r{from} → r{to}: maxSurge {max_surge}, maxUnavailable \
                 {max_unavailable}, minReadySeconds {min_ready_seconds}"
            ),
            RolloutComplete { to } => write!(f, "rollout to r{to} complete"),
            LoadStarted {
                rate,
                slow_every,
                slow_ms,
            } => write!(
                f,
                "{rate} requests/s, every {slow_every}th of each client slow ({slow_ms} ms)"
            ),
            LoadStopping => write!(f, "stopping; waiting for requests in flight"),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Seconds since the simulation started.
    pub at: f64,
    /// A pod's name, or `deployment`, `proxy`, `load`.
    pub source: String,
    pub what: Happening,
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

    pub fn record(&self, source: &str, what: Happening) {
        self.record_at(Instant::now(), source, what);
    }

    /// Records what happened at `instant`, which a watcher may report a moment later: the
    /// event takes its place in time among those recorded since.
    pub fn record_at(&self, instant: Instant, source: &str, what: Happening) {
        let event = Event {
            at: self.since_start(instant).as_secs_f64(),
            source: source.to_owned(),
            what,
        };
        if self.live {
            let text = event.what.to_string();
            println!(
                "{:>8.3}s  {:<18} {}",
                event.at,
                event.source,
                text.trim_end()
            );
        }
        let mut events = self.events.lock().unwrap();
        let place = events.partition_point(|earlier| earlier.at <= event.at);
        events.insert(place, event);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// When each event matching `what` happened, in seconds since the start.
    pub fn times(events: &[Event], what: &Happening) -> Vec<f64> {
        events
            .iter()
            .filter(|event| event.what == *what)
            .map(|event| event.at)
            .collect()
    }
}
