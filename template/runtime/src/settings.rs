//! The runtime's settings: every one is a flag and an environment variable.
//!
//! The value names equal the environment variable names, so that an error message
//! about a bad value names the variable an operator has to fix.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};

/// Listen addresses when neither flag, variable nor [`crate::Ports`] says otherwise.
const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";
const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9090";
const DEFAULT_DRAIN_DELAY: &str = "5s";
const DEFAULT_TIMEOUT: &str = "20s";
const DEFAULT_CLEANUP_TIMEOUT: &str = "5s";
const DEFAULT_PRESTOP_DELAY: &str = "5s";
const DEFAULT_METRICS_LINGER: &str = "0s";
const DEFAULT_REQUEST_TIMEOUT: &str = "10s";
const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
const DEFAULT_IDLE_TIMEOUT: &str = "620s";
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The longest duration a setting accepts: far beyond any sane shutdown or request, and
/// short enough that no arithmetic on it can overflow a clock.
const LONGEST: Duration = Duration::from_secs(60 * 60);
/// The longest idle keep-alive: a day.
const LONGEST_IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// The runtime's settings: flatten them into the service's command line
/// (`#[command(flatten)]`); each is a flag and an environment variable.
#[derive(Debug, Clone, Args)]
// An id of its own: the app's settings are likely called `Settings` too.
#[group(id = "runtime-settings")]
pub struct Settings {
    /// Address of the application listener.
    #[arg(long, env = "HTTP_ADDR", value_name = "HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// Address of the admin listener (probes, metrics, pre-stop hook).
    #[arg(long, env = "ADMIN_ADDR", value_name = "ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,

    /// After the first signal, keep serving this long (readiness already failing) so that
    /// endpoints and load balancers stop routing here before the listener closes.
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", value_name = "SHUTDOWN_DRAIN_DELAY",
          default_value = DEFAULT_DRAIN_DELAY, value_parser = parse_duration)]
    pub shutdown_drain_delay: Duration,

    /// Hard deadline for serving, counted from the first signal: the drain delay plus the
    /// time in-flight requests get to finish. Requests still running then are cut.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_name = "SHUTDOWN_TIMEOUT",
          default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Budget for stopping background tasks, closing resources and flushing telemetry,
    /// after the last request.
    #[arg(long, env = "SHUTDOWN_CLEANUP_TIMEOUT", value_name = "SHUTDOWN_CLEANUP_TIMEOUT",
          default_value = DEFAULT_CLEANUP_TIMEOUT, value_parser = parse_duration)]
    pub shutdown_cleanup_timeout: Duration,

    /// After cleanup, keep the admin port answering for at most this long, until every
    /// client that scraped `/metrics` within it has read the final counters. Set it to the
    /// scrape interval plus a little (the Helm chart does); 0 exits at once.
    #[arg(long, env = "SHUTDOWN_METRICS_LINGER", value_name = "SHUTDOWN_METRICS_LINGER",
          default_value = DEFAULT_METRICS_LINGER, value_parser = parse_duration)]
    pub shutdown_metrics_linger: Duration,

    /// How long `GET /prestop` on the admin port waits before answering.
    #[arg(long, env = "PRESTOP_DELAY", value_name = "PRESTOP_DELAY",
          default_value = DEFAULT_PRESTOP_DELAY, value_parser = parse_duration)]
    pub prestop_delay: Duration,

    /// Longest time a request may take before it is answered with 503.
    #[arg(long, env = "REQUEST_TIMEOUT", value_name = "REQUEST_TIMEOUT",
          default_value = DEFAULT_REQUEST_TIMEOUT, value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Longest time a client may take to send the request headers (slowloris guard).
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_name = "HEADER_READ_TIMEOUT",
          default_value = DEFAULT_HEADER_READ_TIMEOUT, value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// A keep-alive connection with no request for this long is closed. Keep it longer than
    /// the idle timeouts of clients and load balancers in front (commonly 60-600 s), so
    /// that they close idle connections first and never send on one being closed.
    #[arg(long, env = "IDLE_TIMEOUT", value_name = "IDLE_TIMEOUT",
          default_value = DEFAULT_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "REQUEST_BODY_LIMIT", value_name = "REQUEST_BODY_LIMIT",
          default_value_t = DEFAULT_BODY_LIMIT)]
    pub request_body_limit: usize,

    /// Most application connections open at once. At the limit, idle keep-alive connections
    /// are closed to make room and new ones wait in the kernel's backlog. Default: half the
    /// container's memory limit at 80 KiB a connection, within the open-file limit.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most bytes the requests being answered may hold at once: their headers, and their
    /// bodies at the declared length (REQUEST_BODY_LIMIT when undeclared). A request beyond
    /// it is answered 503 at once. Default: a quarter of the container's memory limit.
    #[arg(long, env = "REQUEST_MEMORY", value_name = "REQUEST_MEMORY")]
    pub request_memory: Option<usize>,

    /// Log format: `json`, `pretty`, or `auto` (pretty on a terminal, JSON otherwise).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT",
        default_value = "auto"
    )]
    pub log_format: LogFormat,

    /// Read the service's own Pod and publish events about its shutdown through the
    /// Kubernetes API (with the `kube` feature, in a Pod whose identity is set).
    #[arg(
        long,
        env = "KUBE_INTEGRATION",
        value_name = "KUBE_INTEGRATION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub kube_integration: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// For people.
    Pretty,
}

impl Default for Settings {
    /// The defaults, as the command line has them without flags or variables.
    fn default() -> Settings {
        let duration = |text| parse_duration(text).expect("the defaults parse");
        Settings {
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("the default parses"),
            admin_addr: DEFAULT_ADMIN_ADDR.parse().expect("the default parses"),
            shutdown_drain_delay: duration(DEFAULT_DRAIN_DELAY),
            shutdown_timeout: duration(DEFAULT_TIMEOUT),
            shutdown_cleanup_timeout: duration(DEFAULT_CLEANUP_TIMEOUT),
            shutdown_metrics_linger: duration(DEFAULT_METRICS_LINGER),
            prestop_delay: duration(DEFAULT_PRESTOP_DELAY),
            request_timeout: duration(DEFAULT_REQUEST_TIMEOUT),
            header_read_timeout: duration(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: duration(DEFAULT_IDLE_TIMEOUT),
            request_body_limit: DEFAULT_BODY_LIMIT,
            max_connections: None,
            request_memory: None,
            log_format: LogFormat::Auto,
            kube_integration: true,
        }
    }
}

impl Settings {
    /// The shutdown durations, as the sequence counts them.
    pub(crate) fn budget(&self) -> crate::budget::Budget {
        crate::budget::Budget {
            drain_delay: self.shutdown_drain_delay,
            timeout: self.shutdown_timeout,
            cleanup_timeout: self.shutdown_cleanup_timeout,
            metrics_linger: self.shutdown_metrics_linger,
        }
    }

    /// Checks that hold between settings; each message names the variables to change.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_bounds()?;
        if self.http_addr.port() != 0 && self.http_addr.port() == self.admin_addr.port() {
            return Err(format!(
                "HTTP_ADDR ({}) and ADMIN_ADDR ({}) use the same port; the admin port must be \
                 separate so that application traffic can never reach it",
                self.http_addr, self.admin_addr
            ));
        }
        if self.shutdown_timeout.is_zero() {
            return Err("SHUTDOWN_TIMEOUT must be longer than 0s".into());
        }
        if self.shutdown_cleanup_timeout.is_zero() {
            return Err("SHUTDOWN_CLEANUP_TIMEOUT must be longer than 0s".into());
        }
        for (name, duration) in [
            ("REQUEST_TIMEOUT", self.request_timeout),
            ("HEADER_READ_TIMEOUT", self.header_read_timeout),
            ("IDLE_TIMEOUT", self.idle_timeout),
        ] {
            if duration.is_zero() {
                return Err(format!("{name} must be longer than 0s"));
            }
        }
        if self.max_connections == Some(0) {
            return Err("MAX_CONNECTIONS must be at least 1".into());
        }
        if let Some(memory) = self.request_memory.filter(|m| *m < self.request_body_limit) {
            return Err(format!(
                "REQUEST_MEMORY ({memory}) is smaller than REQUEST_BODY_LIMIT ({}): a request \
                 with the largest body allowed could never be answered",
                self.request_body_limit
            ));
        }
        if self.shutdown_drain_delay >= self.shutdown_timeout {
            return Err(format!(
                "SHUTDOWN_DRAIN_DELAY ({}) must be shorter than SHUTDOWN_TIMEOUT ({}): the \
                 timeout counts from the signal and includes the drain delay, so in-flight \
                 requests would get no time to finish",
                humantime::format_duration(self.shutdown_drain_delay),
                humantime::format_duration(self.shutdown_timeout)
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// Every duration within its bound, so that a typo of a few digits is refused at start
    /// rather than overflowing a deadline at the first request or at SIGTERM.
    fn validate_bounds(&self) -> Result<(), String> {
        let durations = [
            ("SHUTDOWN_DRAIN_DELAY", self.shutdown_drain_delay, LONGEST),
            ("SHUTDOWN_TIMEOUT", self.shutdown_timeout, LONGEST),
            (
                "SHUTDOWN_CLEANUP_TIMEOUT",
                self.shutdown_cleanup_timeout,
                LONGEST,
            ),
            (
                "SHUTDOWN_METRICS_LINGER",
                self.shutdown_metrics_linger,
                LONGEST,
            ),
            ("PRESTOP_DELAY", self.prestop_delay, LONGEST),
            ("REQUEST_TIMEOUT", self.request_timeout, LONGEST),
            ("HEADER_READ_TIMEOUT", self.header_read_timeout, LONGEST),
            ("IDLE_TIMEOUT", self.idle_timeout, LONGEST_IDLE),
        ];
        for (name, duration, longest) in durations {
            if duration > longest {
                return Err(format!(
                    "{name} ({}) is longer than {}, the most this service accepts",
                    humantime::format_duration(duration),
                    humantime::format_duration(longest)
                ));
            }
        }
        Ok(())
    }
}

/// Parses `5s`, `1500ms`, `1m 30s` and the like.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|err| format!("{err}; expected a duration such as 5s, 1500ms or 1m30s"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn settings(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(std::iter::once("service").chain(args.iter().copied()))
            .map_err(|err| err.to_string())?;
        cli.settings.validate()?;
        Ok(cli.settings)
    }

    #[test]
    fn durations_accept_human_forms() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_defaults_are_the_command_lines_and_consistent() {
        let parsed = settings(&[]).expect("defaults must validate");
        let default = Settings::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        assert!(default.shutdown_drain_delay < default.shutdown_timeout);
        assert_ne!(default.http_addr.port(), default.admin_addr.port());
    }

    #[test]
    fn drain_delay_must_fit_in_the_timeout() {
        let err =
            settings(&["--shutdown-drain-delay", "30s", "--shutdown-timeout", "10s"]).unwrap_err();
        assert!(err.contains("SHUTDOWN_DRAIN_DELAY"), "{err}");
        assert!(err.contains("SHUTDOWN_TIMEOUT"), "{err}");
    }

    #[test]
    fn capacity_settings_are_checked_by_name() {
        let err = settings(&["--max-connections", "0"]).unwrap_err();
        assert!(err.contains("MAX_CONNECTIONS must be at least 1"), "{err}");
        let err =
            settings(&["--request-memory", "1000", "--request-body-limit", "2000"]).unwrap_err();
        assert!(err.contains("REQUEST_MEMORY (1000)"), "{err}");
        assert!(err.contains("REQUEST_BODY_LIMIT (2000)"), "{err}");
        let fits = settings(&["--max-connections", "10", "--request-memory", "2000000"]).unwrap();
        assert_eq!(
            (fits.max_connections, fits.request_memory),
            (Some(10), Some(2_000_000))
        );
        let err = settings(&["--max-connections", "lots"]).unwrap_err();
        assert!(err.contains("MAX_CONNECTIONS"), "{err}");
    }

    #[test]
    fn admin_and_http_ports_must_differ() {
        let err = settings(&[
            "--http-addr",
            "0.0.0.0:7000",
            "--admin-addr",
            "127.0.0.1:7000",
        ])
        .unwrap_err();
        assert!(err.contains("same port"), "{err}");
    }

    #[test]
    fn durations_beyond_their_bound_are_refused_naming_the_variable() {
        for variable in ["--request-timeout", "--shutdown-timeout", "--idle-timeout"] {
            let err = settings(&[variable, "10000000000000000000s"]).unwrap_err();
            let name = variable
                .trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase();
            assert!(err.contains(&name), "{err}");
            assert!(err.contains("the most this service accepts"), "{err}");
        }
        assert!(settings(&["--shutdown-timeout", "1h"]).is_ok());
        assert!(settings(&["--idle-timeout", "24h"]).is_ok());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = settings(&["--shutdown-timeout", "soon"]).unwrap_err();
        assert!(err.contains("SHUTDOWN_TIMEOUT"), "{err}");
    }
}
