//! Where requests to shut down come from: SIGTERM and SIGINT, or a trigger held by a test
//! or by code that embeds the service. The first request starts the shutdown sequence; a
//! second one ends it at once.

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

/// A request to shut down, named after the signal that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// `SIGTERM`, `SIGINT`.
    pub name: &'static str,
    /// The signal's number.
    pub number: i32,
}

impl Signal {
    /// What the kubelet, `docker stop` and systemd send.
    pub const TERM: Signal = Signal {
        name: "SIGTERM",
        number: 15,
    };
    /// What Ctrl-C sends.
    pub const INT: Signal = Signal {
        name: "SIGINT",
        number: 2,
    };

    /// The conventional exit code of a process ended by this signal.
    pub fn exit_code(self) -> u8 {
        (128 + self.number) as u8
    }
}

/// The stream of shutdown requests a service listens to.
pub struct Shutdown(Source);

enum Source {
    Os {
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
    },
    Trigger(mpsc::UnboundedReceiver<Signal>),
}

/// Asks the service that holds the matching [`Shutdown`] to shut down.
#[derive(Clone)]
pub struct ShutdownTrigger(mpsc::UnboundedSender<Signal>);

impl Shutdown {
    /// SIGTERM and SIGINT. Install this before the service reports ready, so that no signal
    /// can arrive while the default action (terminate at once) is still in place.
    pub fn from_signals() -> std::io::Result<Shutdown> {
        Ok(Shutdown(Source::Os {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        }))
    }

    /// Requests sent through the returned trigger, for tests and embedding. Once every
    /// trigger is dropped, no further request comes.
    pub fn trigger() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (ShutdownTrigger(sender), Shutdown(Source::Trigger(receiver)))
    }

    /// The next request.
    pub(crate) async fn next(&mut self) -> Signal {
        match &mut self.0 {
            Source::Os { term, int } => tokio::select! {
                _ = term.recv() => Signal::TERM,
                _ = int.recv() => Signal::INT,
            },
            Source::Trigger(requests) => match requests.recv().await {
                Some(signal) => signal,
                None => std::future::pending().await,
            },
        }
    }
}

impl ShutdownTrigger {
    /// Sends `signal` as if the process had received it.
    pub fn send(&self, signal: Signal) {
        // The service may have stopped listening already; then there is nothing to ask.
        let _ = self.0.send(signal);
    }
}
