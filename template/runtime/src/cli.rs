//! The process around the service: the command line, telemetry, the Tokio runtime, signals
//! and listeners, and the exit code.

use std::{future::Future, process::ExitCode, time::Duration};

use axum::Router;
use clap::{Parser, Subcommand, error::ErrorKind};
use tokio::time::Instant;

use crate::{
    error::Error,
    healthcheck, limits,
    listeners::Listeners,
    report::{EXIT_BAD_CONFIG, EXIT_STARTUP_FAILED},
    serve::{Exit, serve},
    service::{Ports, Service},
    settings::{Settings, parse_duration},
    signals::Shutdown,
    startup::Startup,
    telemetry,
};

/// Subcommands every service has.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running instance whether it is ready; exit 0 if so, 1 otherwise.
    ///
    /// Meant for container health checks and `helm test`, in images that have no curl.
    Healthcheck {
        /// Readiness URL of the instance to ask (plain HTTP).
        #[arg(long, default_value = "http://127.0.0.1:9090/readyz")]
        url: String,

        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

impl Command {
    /// Runs the subcommand; returns the process's exit code.
    pub fn run(self) -> ExitCode {
        match self {
            Command::Healthcheck { url, timeout } => match healthcheck::check(&url, timeout) {
                Ok(status) => {
                    println!("{status}");
                    ExitCode::SUCCESS
                }
                Err(reason) => {
                    eprintln!("unhealthy: {reason}");
                    ExitCode::FAILURE
                }
            },
        }
    }
}

/// Parses the command line and the environment into the service's `Cli`, with the
/// service's ports as the default listen addresses; prints help or the error and exits
/// when asked or refused.
pub fn parse<Cli: Parser>(service: Service) -> Cli {
    try_parse_from(service, std::env::args_os()).unwrap_or_else(|error| error.exit())
}

/// [`parse`] for the given arguments (the first names the program), returning the error.
pub fn try_parse_from<Cli, I, T>(service: Service, args: I) -> Result<Cli, clap::Error>
where
    Cli: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut matches = with_ports(Cli::command(), service.ports).try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

/// The command with `ports` as the defaults of the arguments that take an address.
fn with_ports(mut command: clap::Command, ports: Ports) -> clap::Command {
    let defines =
        |command: &clap::Command, id: &str| command.get_arguments().any(|arg| arg.get_id() == id);
    if defines(&command, "http_addr") {
        command = command.mut_arg("http_addr", |arg| {
            arg.default_value(format!("0.0.0.0:{}", ports.http))
        });
    }
    if defines(&command, "admin_addr") {
        command = command.mut_arg("admin_addr", |arg| {
            arg.default_value(format!("0.0.0.0:{}", ports.admin))
        });
    }
    if command.find_subcommand("healthcheck").is_some() {
        command = command.mut_subcommand("healthcheck", |healthcheck| {
            healthcheck.mut_arg("url", |arg| {
                arg.default_value(format!("http://127.0.0.1:{}/readyz", ports.admin))
            })
        });
    }
    command
}

/// Runs the service as a process: checks `settings`, sets up logs and traces, starts the
/// Tokio runtime, installs the signal handlers, opens the listeners, [`serve`]s with `start`
/// as the app's startup work, and returns the exit code.
pub fn main<F, Fut, E>(service: Service, settings: Settings, start: F) -> ExitCode
where
    F: FnOnce(Startup) -> Fut,
    Fut: Future<Output = Result<Router, E>>,
    E: Into<Error>,
{
    if let Err(message) = settings.validate() {
        clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n")).exit();
    }
    // Before the runtime: the OTLP exporter's blocking client must not live inside it.
    if let Err(error) = telemetry::init(service.name, settings.log_format) {
        eprintln!("error: telemetry setup failed: {error:#}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    match limits::raise_open_files() {
        Ok(limits::Raised::To { from, to }) => {
            tracing::info!(from, to, "open file limit raised to the hard limit")
        }
        Ok(limits::Raised::AlreadyHighest(_)) => {}
        Err(error) => tracing::warn!(%error, "could not raise the open file limit"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "could not start the Tokio runtime");
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let code = runtime.block_on(run(service, settings, start));
    // Whatever is still running (cut tasks, a forced exit's sequence) ends with the process.
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn run<F, Fut, E>(service: Service, settings: Settings, start: F) -> u8
where
    F: FnOnce(Startup) -> Fut,
    Fut: Future<Output = Result<Router, E>>,
    E: Into<Error>,
{
    let opened = async {
        let shutdown = Shutdown::from_signals()
            .map_err(|error| format!("installing signal handlers: {error}"))?;
        let listeners = Listeners::open(&settings)
            .await
            .map_err(|error| format!("{error:#}"))?;
        Ok::<_, String>((shutdown, listeners))
    };
    let (shutdown, listeners) = match opened.await {
        Ok(opened) => opened,
        Err(error) => {
            tracing::error!(%error, "failed to start");
            return EXIT_STARTUP_FAILED;
        }
    };
    let cleanup_timeout = settings.shutdown_cleanup_timeout;
    let exit = serve(service, listeners, shutdown, settings, start).await;
    // After a shutdown `serve` has flushed within its cleanup budget; after a failed or
    // abandoned start, spans still go out. Forced: nothing more is waited for.
    if !matches!(exit, Exit::Forced(_)) {
        telemetry::flush_by(Instant::now() + cleanup_timeout).await;
    }
    exit.code()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::service::tests::SERVICE;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Option<Command>,
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        app: app::Settings,
    }

    mod app {
        /// An app's settings, named as the generated app names its own.
        #[derive(Debug, clap::Args)]
        pub(super) struct Settings {
            #[arg(long, env = "DEBUG_ROUTES", default_value_t = false)]
            pub(super) debug_routes: bool,
        }
    }

    #[test]
    fn a_service_command_line_is_well_formed() {
        with_ports(Cli::command(), SERVICE.ports).debug_assert();
    }

    #[test]
    fn the_ports_become_the_defaults() {
        let cli: Cli = try_parse_from(SERVICE, ["service"]).unwrap();
        assert_eq!(cli.settings.http_addr.to_string(), "0.0.0.0:8181");
        assert_eq!(cli.settings.admin_addr.to_string(), "0.0.0.0:9191");
        let cli: Cli = try_parse_from(SERVICE, ["service", "healthcheck"]).unwrap();
        let Some(Command::Healthcheck { url, .. }) = cli.command else {
            panic!("the healthcheck subcommand");
        };
        assert_eq!(url, "http://127.0.0.1:9191/readyz");
    }

    #[test]
    fn flags_still_override_the_ports() {
        let args = ["service", "--http-addr", "127.0.0.1:7000"];
        let cli: Cli = try_parse_from(SERVICE, args).unwrap();
        assert_eq!(cli.settings.http_addr.to_string(), "127.0.0.1:7000");
        assert!(!cli.app.debug_routes);
    }
}
