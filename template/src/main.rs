use std::process::ExitCode;

use {{crate_name}}::{Cli, SERVICE, app};

fn main() -> ExitCode {
    let cli: Cli = kube_service_runtime::parse(SERVICE);
    if let Some(command) = cli.command {
        return command.run();
    }
    let settings = cli.app;
    kube_service_runtime::main(SERVICE, cli.runtime, move |startup| {
        app::start(settings, startup)
    })
}
