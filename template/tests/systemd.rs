//! The systemd units in `systemd/` agree with the service: the settings they pass are
//! accepted, `TimeoutStopSec` covers the shutdown budget they set, and the sockets they
//! declare reach the service in the roles it expects.

mod support;

use std::time::Duration;

use kube_service_runtime::{parse_duration, try_parse_from};

use {{crate_name}}::{Cli, SERVICE};

use support::{Service, get, loopback_listener};

/// Added to the budget for process exit, as in the Helm chart.
const MARGIN: Duration = Duration::from_secs(2);

struct Unit {
    entries: Vec<(String, String)>,
}

impl Unit {
    fn read(suffix: &str) -> Unit {
        let path = format!(
            "{}/systemd/{}.{suffix}",
            env!("CARGO_MANIFEST_DIR"),
            env!("CARGO_PKG_NAME")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#') && !line.starts_with('['))
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        Unit { entries }
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn one(&self, key: &str) -> &str {
        match self.all(key)[..] {
            [value] => value,
            ref values => panic!("expected one {key}=, found {values:?}"),
        }
    }

    /// The `Environment=` assignments, as (variable, value).
    fn environment(&self) -> Vec<(&str, &str)> {
        self.all("Environment")
            .into_iter()
            .map(|assignment| assignment.split_once('=').expect("VARIABLE=value"))
            .collect()
    }

    fn variable(&self, name: &str) -> &str {
        self.environment()
            .into_iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("the unit sets {name} explicitly"))
    }
}

#[test]
fn the_service_unit_passes_settings_the_service_accepts() {
    let unit = Unit::read("service");
    // Each variable is also a flag of the same name: parse them exactly as the service does.
    let mut args = vec!["service".to_owned()];
    for (variable, value) in unit.environment() {
        args.push(format!(
            "--{}={value}",
            variable.to_lowercase().replace('_', "-")
        ));
    }
    let cli: Cli = try_parse_from(SERVICE, &args).unwrap_or_else(|err| panic!("{args:?}: {err}"));
    cli.runtime.validate().unwrap();
    assert!(
        unit.one("ExecStart")
            .ends_with(concat!("/", env!("CARGO_PKG_NAME"))),
        "ExecStart runs this crate's binary"
    );
}

#[test]
fn timeout_stop_sec_is_the_shutdown_budget() {
    let unit = Unit::read("service");
    let timeout = parse_duration(unit.variable("SHUTDOWN_TIMEOUT")).unwrap();
    let cleanup = parse_duration(unit.variable("SHUTDOWN_CLEANUP_TIMEOUT")).unwrap();
    let budget = timeout + cleanup + MARGIN;
    let budget = Duration::from_secs(budget.as_secs() + u64::from(budget.subsec_nanos() > 0));
    let stop = parse_duration(unit.one("TimeoutStopSec")).unwrap();
    assert_eq!(
        stop, budget,
        "TimeoutStopSec must be SHUTDOWN_TIMEOUT + SHUTDOWN_CLEANUP_TIMEOUT + 2s, in whole seconds"
    );
    assert_eq!(unit.one("KillSignal"), "SIGTERM");
}

#[test]
fn the_sockets_are_the_default_ports_in_the_order_the_service_takes_them() {
    let socket = Unit::read("socket");
    let defaults = try_parse_from::<Cli, _, _>(SERVICE, ["service"])
        .unwrap()
        .runtime;
    let ports: Vec<u16> = socket
        .all("ListenStream")
        .iter()
        .map(|listen| listen.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        ports,
        [defaults.http_addr.port(), defaults.admin_addr.port()],
        "first the application port, then the admin port"
    );
}

#[test]
fn started_as_systemd_would_the_service_serves_and_stops_within_the_timeout() {
    let unit = Unit::read("service");
    let (http, admin) = (loopback_listener(), loopback_listener());
    // systemd names the sockets of one socket unit after the unit.
    let name = concat!(env!("CARGO_PKG_NAME"), ".socket");
    let mut service = Service::start_activated(
        &unit.environment(),
        &[&http, &admin],
        &format!("{name}:{name}"),
    );
    assert_eq!(service.http, http.local_addr().unwrap());
    assert_eq!(service.admin, admin.local_addr().unwrap());
    assert_eq!(get(service.http, "/").status, 200);
    assert_eq!(get(service.admin, "/readyz").status, 200);

    let stop = parse_duration(unit.one("TimeoutStopSec")).unwrap();
    let signalled = std::time::Instant::now();
    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    assert!(signalled.elapsed() < stop);
}
