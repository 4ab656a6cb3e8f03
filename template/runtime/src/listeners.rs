//! Where the two listeners come from: sockets passed by systemd socket activation, or ports
//! bound here.
//!
//! Under socket activation the sockets belong to systemd and outlive the process: during a
//! restart, new connections wait in the kernel's queue for the next process instead of being
//! refused. Passed sockets named `http` or `admin` (`FileDescriptorName=`) serve that role;
//! unnamed ones fill the roles in order, the application listener first. A listener that was
//! not passed is bound from `HTTP_ADDR` or `ADMIN_ADDR`.

use std::{
    net::SocketAddr,
    os::fd::{FromRawFd, RawFd},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{net::TcpListener, time::Instant};

use crate::settings::Settings;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_PASSED_FD: RawFd = 3;

/// The service's two listeners.
pub struct Listeners {
    /// For the application's routes.
    pub http: Listener,
    /// For probes, metrics and the pre-stop hook.
    pub admin: Listener,
}

/// One listening socket.
pub struct Listener {
    pub(crate) socket: TcpListener,
    /// Passed by systemd: the socket outlives this process, and connections still waiting
    /// in its queue at exit are accepted by the next one.
    pub(crate) inherited: bool,
}

impl From<TcpListener> for Listener {
    /// A socket this process bound and closes when it stops accepting.
    fn from(socket: TcpListener) -> Listener {
        Listener {
            socket,
            inherited: false,
        }
    }
}

impl Listener {
    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Listeners {
    /// Takes the listeners systemd passed, binds the others, and logs where each came from.
    pub async fn open(settings: &Settings) -> anyhow::Result<Listeners> {
        open(settings).await
    }
}

async fn open(settings: &Settings) -> anyhow::Result<Listeners> {
    let passed = Passed::from_env(|name| std::env::var(name).ok(), std::process::id())?;
    let http = take_or_bind(passed.http, "http", "HTTP_ADDR", settings.http_addr).await?;
    let admin = take_or_bind(passed.admin, "admin", "ADMIN_ADDR", settings.admin_addr).await?;
    let origin = |listener: &Listener| {
        if listener.inherited {
            "systemd"
        } else {
            "bound"
        }
    };
    tracing::info!(
        http_addr = %http.socket.local_addr()?,
        admin_addr = %admin.socket.local_addr()?,
        http_from = origin(&http),
        admin_from = origin(&admin),
        "listening"
    );
    Ok(Listeners { http, admin })
}

async fn take_or_bind(
    passed: Option<RawFd>,
    role: &str,
    variable: &str,
    addr: SocketAddr,
) -> anyhow::Result<Listener> {
    let socket = match passed {
        Some(fd) => adopt(fd, role)?,
        None => TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {variable} {addr}"))?,
    };
    Ok(Listener {
        socket,
        inherited: passed.is_some(),
    })
}

/// The descriptors systemd passed to this process, by role.
#[derive(Debug, Default, PartialEq, Eq)]
struct Passed {
    http: Option<RawFd>,
    admin: Option<RawFd>,
}

impl Passed {
    /// Reads the `sd_listen_fds(3)` protocol: `LISTEN_PID` must name this process (the
    /// variables may have been inherited from a parent they were meant for), `LISTEN_FDS`
    /// counts the descriptors from fd 3 on, `LISTEN_FDNAMES` names them.
    fn from_env(var: impl Fn(&str) -> Option<String>, pid: u32) -> anyhow::Result<Self> {
        let mut passed = Passed::default();
        let Some(count) = var("LISTEN_FDS") else {
            return Ok(passed);
        };
        if var("LISTEN_PID").and_then(|value| value.parse::<u32>().ok()) != Some(pid) {
            return Ok(passed);
        }
        let count: RawFd = count
            .parse()
            .ok()
            .filter(|count| (0..=2).contains(count))
            .with_context(|| {
                format!("LISTEN_FDS={count}: expected at most two sockets (http, admin)")
            })?;
        let names = var("LISTEN_FDNAMES").unwrap_or_default();
        let mut names = names.split(':');
        let mut unnamed = Vec::new();
        for fd in FIRST_PASSED_FD..FIRST_PASSED_FD + count {
            let slot = match names.next().unwrap_or_default() {
                "http" => &mut passed.http,
                "admin" => &mut passed.admin,
                _ => {
                    unnamed.push(fd);
                    continue;
                }
            };
            if slot.replace(fd).is_some() {
                bail!("LISTEN_FDNAMES names two sockets alike; name one http and one admin");
            }
        }
        for fd in unnamed {
            let role = if passed.http.is_none() {
                &mut passed.http
            } else {
                &mut passed.admin
            };
            *role = Some(fd);
        }
        Ok(passed)
    }
}

/// Turns a passed descriptor into a listener, checking that it is one.
fn adopt(fd: RawFd, role: &str) -> anyhow::Result<TcpListener> {
    // SAFETY: LISTEN_PID names this process, so systemd passed this descriptor to it, and
    // nothing here opens or uses descriptors numbered from 3 before the listeners exist.
    let passed = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let context = || format!("the {role} socket passed as fd {fd} (LISTEN_FDS)");
    passed
        .local_addr()
        .with_context(|| format!("{} is not a TCP socket", context()))?;
    // A duplicate is opened close-on-exec (the passed descriptor is not), so no child process
    // inherits the listener; the original closes when `passed` drops.
    let listener = passed.try_clone().with_context(context)?;
    listener.set_nonblocking(true).with_context(context)?;
    TcpListener::from_std(listener).with_context(context)
}

/// Failed accepts on one port, usually for want of file descriptors: the accept loop backs
/// off instead of spinning, and they are logged once per [`AcceptFailures::EVERY`] with how
/// many there were, rather than 20 times a second.
pub(crate) struct AcceptFailures {
    port: &'static str,
    log: LogEvery,
    unlogged: u64,
}

impl AcceptFailures {
    const BACK_OFF: Duration = Duration::from_millis(50);

    /// For the accept loop of the `port` (`application`, `admin`) listener.
    pub(crate) fn on(port: &'static str) -> Self {
        Self {
            port,
            log: LogEvery::default(),
            unlogged: 0,
        }
    }

    /// Notes `error`, logs if it is time to, and waits before the next accept.
    pub(crate) async fn back_off(&mut self, error: &std::io::Error) {
        self.unlogged += 1;
        if self.log.is_due() {
            tracing::error!(
                %error,
                port = self.port,
                failures = self.unlogged,
                "accept failed (out of file descriptors?); retrying, next report in 10 s at most"
            );
            self.unlogged = 0;
        }
        tokio::time::sleep(Self::BACK_OFF).await;
    }
}

/// For what an accept loop meets again and again: a log line at most once per
/// [`LogEvery::EVERY`].
#[derive(Default)]
pub(crate) struct LogEvery {
    last_logged: Option<Instant>,
}

impl LogEvery {
    const EVERY: Duration = Duration::from_secs(10);

    /// True at most once per [`Self::EVERY`]; the caller logs then.
    pub(crate) fn is_due(&mut self) -> bool {
        if self
            .last_logged
            .is_some_and(|logged| logged.elapsed() < Self::EVERY)
        {
            return false;
        }
        self.last_logged = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(vars: &[(&str, &str)]) -> anyhow::Result<Passed> {
        let var = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        Passed::from_env(var, 42)
    }

    #[test]
    fn nothing_passed_means_binding_both() {
        assert_eq!(passed(&[]).unwrap(), Passed::default());
    }

    #[test]
    fn sockets_meant_for_another_process_are_left_alone() {
        let vars = [("LISTEN_FDS", "1"), ("LISTEN_PID", "41")];
        assert_eq!(passed(&vars).unwrap(), Passed::default());
    }

    #[test]
    fn unnamed_sockets_are_taken_in_order() {
        let one = passed(&[("LISTEN_FDS", "1"), ("LISTEN_PID", "42")]).unwrap();
        assert_eq!(
            one,
            Passed {
                http: Some(3),
                admin: None
            }
        );
        let two = [
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", "42"),
            ("LISTEN_FDNAMES", "x.socket:x.socket"),
        ];
        let two = passed(&two).unwrap();
        assert_eq!(
            two,
            Passed {
                http: Some(3),
                admin: Some(4)
            }
        );
    }

    #[test]
    fn named_sockets_go_where_their_names_say() {
        let vars = [
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", "42"),
            ("LISTEN_FDNAMES", "admin:http"),
        ];
        assert_eq!(
            passed(&vars).unwrap(),
            Passed {
                http: Some(4),
                admin: Some(3)
            }
        );
        let admin_only = [
            ("LISTEN_FDS", "1"),
            ("LISTEN_PID", "42"),
            ("LISTEN_FDNAMES", "admin"),
        ];
        assert_eq!(
            passed(&admin_only).unwrap(),
            Passed {
                http: None,
                admin: Some(3)
            }
        );
    }

    #[test]
    fn nonsense_is_refused_with_the_variable_named() {
        let three = [("LISTEN_FDS", "3"), ("LISTEN_PID", "42")];
        assert!(format!("{:#}", passed(&three).unwrap_err()).contains("LISTEN_FDS=3"));
        let twins = [
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", "42"),
            ("LISTEN_FDNAMES", "http:http"),
        ];
        assert!(format!("{:#}", passed(&twins).unwrap_err()).contains("LISTEN_FDNAMES"));
    }
}
