//! {{project-name}}: its command line and its app. `main.rs` hands both to the runtime
//! (`kube-service-runtime`, in `runtime/`), which serves, probes, measures and shuts down.

pub mod app;

use clap::Parser;
use kube_service_runtime::{Command, Ports, Service, Settings};

/// Names the service in metrics, traces and its Pod's events; its ports are the ones the
/// chart, the Dockerfile and the systemd units expect.
pub const SERVICE: Service = Service {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    ports: Ports {
        http: {{http_port}},
        admin: {{admin_port}},
    },
};

/// Every setting is a flag and an environment variable of the same name.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The runtime's settings: ports, shutdown budget, timeouts, logs.
    #[command(flatten)]
    pub runtime: Settings,

    /// The app's own settings.
    #[command(flatten)]
    pub app: app::Settings,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
