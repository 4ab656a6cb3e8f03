//! What the runtime needs to know about the service it runs.

/// The service's name, version and default ports; a `const` in the service crate:
///
/// ```
/// use kube_service_runtime::{Ports, Service};
///
/// const SERVICE: Service = Service {
///     name: env!("CARGO_PKG_NAME"),
///     version: env!("CARGO_PKG_VERSION"),
///     ports: Ports { http: 8080, admin: 9090 },
/// };
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// Names it in `build_info`, in its traces, and as the reporter of its Pod's events.
    pub name: &'static str,
    /// Its version, in `build_info`.
    pub version: &'static str,
    /// Where it listens unless told otherwise.
    pub ports: Ports,
}

/// The ports a service listens on unless `HTTP_ADDR` or `ADMIN_ADDR` say otherwise; they
/// become the defaults `--help` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The application's port.
    pub http: u16,
    /// The port of probes, metrics and the pre-stop hook.
    pub admin: u16,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A service for the runtime's own tests.
    pub(crate) const SERVICE: Service = Service {
        name: "tested",
        version: "1.2.3",
        ports: Ports {
            http: 8181,
            admin: 9191,
        },
    };
}
