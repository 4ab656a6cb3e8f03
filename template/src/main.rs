use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};

use {{crate_name}}::{
    config::{Cli, Command},
    healthcheck, run, shutdown, telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { url, timeout }) = cli.command {
        return match healthcheck::check(&url, timeout) {
            Ok(status) => {
                println!("{status}");
                ExitCode::SUCCESS
            }
            Err(reason) => {
                eprintln!("unhealthy: {reason}");
                ExitCode::FAILURE
            }
        };
    }

    let config = cli.config;
    if let Err(message) = config.validate() {
        Cli::command()
            .error(ErrorKind::ValueValidation, message)
            .exit();
    }
    // Before the runtime: the OTLP exporter's blocking client must not live inside it.
    let telemetry = match telemetry::init(config.log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: telemetry setup failed: {error:#}");
            return ExitCode::from(shutdown::EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "could not start the Tokio runtime");
            return ExitCode::from(shutdown::EXIT_STARTUP_FAILED);
        }
    };
    let code = runtime.block_on(run(config, telemetry));
    // Whatever is still running (the admin server, cut tasks) ends with the process.
    runtime.shutdown_background();
    ExitCode::from(code)
}
