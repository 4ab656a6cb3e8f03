//! SIGTERM and SIGINT: the first starts the shutdown sequence, a second one ends the
//! process at once.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    term: Signal,
    int: Signal,
}

/// A received signal, by name and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub name: &'static str,
    pub number: i32,
}

impl Received {
    /// The conventional exit code of a process ended by this signal.
    pub fn exit_code(self) -> u8 {
        (128 + self.number) as u8
    }
}

impl Signals {
    /// Installs the handlers. Call this before the service reports ready, so that no
    /// signal can arrive while the default action (terminate at once) is still in place.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received { name: "SIGTERM", number: 15 },
            _ = self.int.recv() => Received { name: "SIGINT", number: 2 },
        }
    }

    /// After the first signal: exit at once on the next one, whatever is still running.
    pub fn exit_on_next(mut self) {
        tokio::spawn(async move {
            let second = self.next().await;
            tracing::warn!(
                signal = second.name,
                exit_code = second.exit_code(),
                "second signal: exiting at once"
            );
            std::process::exit(i32::from(second.exit_code()));
        });
    }
}
