//! Where requests to shut down come from: SIGTERM, SIGINT, SIGHUP and SIGQUIT, or a trigger
//! held by a test or by code that embeds the service. The first request starts the shutdown
//! sequence; a second one ends it at once.
//!
//! Every signal whose default action would end the process either drains it or is ignored,
//! so that nothing ends it by accident: SIGHUP (a closed terminal, some supervisors) and
//! SIGQUIT (nginx's graceful quit, some images' `STOPSIGNAL`) drain like SIGTERM, since this
//! service has nothing to reload or dump; SIGUSR1 and SIGUSR2 mean nothing here and are
//! logged and ignored.

use tokio::{
    signal::unix::{Signal as UnixSignal, SignalKind, signal},
    sync::mpsc,
};

/// A request to shut down, named after the signal that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`.
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
    /// What a closed terminal sends; a shutdown here, as nothing is reloaded.
    pub const HUP: Signal = Signal {
        name: "SIGHUP",
        number: 1,
    };
    /// What `Ctrl-\` and some images' `STOPSIGNAL` send; a shutdown here, without a core dump.
    pub const QUIT: Signal = Signal {
        name: "SIGQUIT",
        number: 3,
    };

    /// The conventional exit code of a process ended by this signal.
    pub fn exit_code(self) -> u8 {
        (128 + self.number) as u8
    }
}

/// The stream of shutdown requests a service listens to.
pub struct Shutdown(Source);

enum Source {
    Os(OsSignals),
    Trigger(mpsc::UnboundedReceiver<Signal>),
}

/// The handlers installed; from then on none of these signals has its default action.
struct OsSignals {
    term: UnixSignal,
    int: UnixSignal,
    hup: UnixSignal,
    quit: UnixSignal,
    usr1: UnixSignal,
    usr2: UnixSignal,
}

/// Asks the service that holds the matching [`Shutdown`] to shut down.
#[derive(Clone)]
pub struct ShutdownTrigger(mpsc::UnboundedSender<Signal>);

impl Shutdown {
    /// SIGTERM, SIGINT, SIGHUP and SIGQUIT; SIGUSR1 and SIGUSR2 are ignored. Install this
    /// before the service reports ready, so that no signal can arrive while the default
    /// action (terminate at once) is still in place.
    pub fn from_signals() -> std::io::Result<Shutdown> {
        Ok(Shutdown(Source::Os(OsSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })))
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
            Source::Os(signals) => signals.next().await,
            Source::Trigger(requests) => match requests.recv().await {
                Some(signal) => signal,
                None => std::future::pending().await,
            },
        }
    }
}

impl OsSignals {
    async fn next(&mut self) -> Signal {
        loop {
            let ignored = tokio::select! {
                _ = self.term.recv() => return Signal::TERM,
                _ = self.int.recv() => return Signal::INT,
                _ = self.hup.recv() => return Signal::HUP,
                _ = self.quit.recv() => return Signal::QUIT,
                _ = self.usr1.recv() => "SIGUSR1",
                _ = self.usr2.recv() => "SIGUSR2",
            };
            tracing::warn!(
                signal = ignored,
                "signal ignored: it means nothing to this service"
            );
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
