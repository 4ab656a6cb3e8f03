//! The service from bound listeners to its end: startup, serving, and the shutdown sequence
//! when the first shutdown request comes.

use std::future::Future;

use axum::Router;
use tokio::time::Instant;

use crate::{
    admin::{self, Admin},
    capacity::Capacity,
    error::{Error, describe},
    http::{self, HttpServer},
    lifecycle::{Lifecycle, State},
    listeners::{Listener, Listeners},
    metrics::Metrics,
    observe::Observers,
    pod::OwnPod,
    readiness::ReadinessChecks,
    report::{EXIT_CLEAN, EXIT_STARTUP_FAILED, Report},
    resources::Resources,
    scrapers::Scrapers,
    service::Service,
    settings::Settings,
    shutdown::{self, Stoppable},
    signals::{Shutdown, Signal},
    startup::Startup,
    tasks::BackgroundTasks,
    telemetry,
};

/// How the service ended.
#[derive(Debug)]
pub enum Exit {
    /// Shut down after a request to; the report says whether everything finished in time.
    Shutdown(Report),
    /// A request to shut down came during startup work: ended without serving.
    DuringStartup(Signal),
    /// A second request ended the shutdown at once.
    Forced(Signal),
    /// Startup work failed; the message says why.
    StartupFailed(String),
}

impl Exit {
    /// The process's exit code: [`EXIT_CLEAN`], [`EXIT_STARTUP_FAILED`],
    /// [`EXIT_DEADLINE_EXCEEDED`](crate::EXIT_DEADLINE_EXCEEDED), or 128 + the signal's
    /// number when forced.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Shutdown(report) => report.exit_code(),
            Exit::DuringStartup(_) => EXIT_CLEAN,
            Exit::Forced(signal) => signal.exit_code(),
            Exit::StartupFailed(_) => EXIT_STARTUP_FAILED,
        }
    }
}

/// Serves `service` on `listeners` until `shutdown` asks twice or the shutdown sequence ends.
///
/// `start` is the app's startup work: it registers what the runtime must look after in the
/// [`Startup`] it is given and returns the app's routes. Probes answer from the start;
/// readiness turns on once `start` returned and every readiness check passed once.
pub async fn serve<F, Fut, E>(
    service: Service,
    listeners: Listeners,
    mut shutdown: Shutdown,
    settings: Settings,
    start: F,
) -> Exit
where
    F: FnOnce(Startup) -> Fut,
    Fut: Future<Output = Result<Router, E>>,
    E: Into<Error>,
{
    let core = match Core::new(service, settings).await {
        Ok(core) => core,
        Err(error) => return Exit::StartupFailed(error),
    };
    let observers = Observers::start(&core.lifecycle, &core.metrics, &core.pod);
    // Probes answer from here on; readiness stays 503 until startup work is done.
    let admin = admin::spawn(listeners.admin, core.admin());

    let started = tokio::select! {
        started = start_app(start, core.startup.clone(), &core.metrics) => started,
        signal = shutdown.next() => Err(Abandoned::Signalled(signal)),
    };
    let routes = match started {
        Ok(routes) => routes,
        Err(abandoned) => return abandon_startup(abandoned, &core).await,
    };
    let stoppable = core.serve(listeners.http, routes);

    let signal = shutdown.next().await;
    let signalled_at = Instant::now();
    tracing::info!(signal = signal.name, "shutdown signal received");
    let budget = core.settings.budget();
    let sequence = shutdown::run(
        signalled_at,
        budget,
        core.pod.fit(budget, signalled_at),
        &core.lifecycle,
        stoppable,
    );
    let told = async {
        let report = sequence.await;
        observers.finish_by(report.cleanup_deadline).await;
        telemetry::flush_by(report.cleanup_deadline).await;
        report
    };
    let report = tokio::select! {
        report = told => report,
        second = shutdown.next() => {
            tracing::warn!(
                signal = second.name,
                exit_code = second.exit_code(),
                "second signal: exiting at once"
            );
            return Exit::Forced(second);
        }
    };
    tokio::select! {
        () = linger(&core.scrapers, report.metrics_linger) => {}
        second = shutdown.next() => {
            tracing::info!(signal = second.name, "second signal: not waiting for scrapers");
            return Exit::Shutdown(report);
        }
    }
    // The scrape that ended the linger is still being answered.
    admin.stop(ADMIN_STOP_PATIENCE).await;
    Exit::Shutdown(report)
}

/// Longest wait for the admin port's last answers once the linger is over; the chart's
/// margin covers it.
const ADMIN_STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the admin port up until the scrapers seen recently have read the final metrics.
async fn linger(scrapers: &Scrapers, most: std::time::Duration) {
    if most.is_zero() {
        return;
    }
    let lingered = scrapers.linger(most).await;
    if lingered.waited_for > 0 {
        tracing::info!(
            scrapers = lingered.waited_for,
            read_final_metrics = lingered.read_final,
            "shutdown: final metrics scraped"
        );
    }
}

/// What every phase of a service's life shares.
struct Core {
    settings: Settings,
    metrics: Metrics,
    lifecycle: Lifecycle,
    pod: OwnPod,
    /// Who reads `/metrics`, to wait for after the shutdown.
    scrapers: Scrapers,
    /// What the app's startup work registers with.
    startup: Startup,
}

impl Core {
    async fn new(service: Service, settings: Settings) -> Result<Core, String> {
        let metrics =
            Metrics::new(service).map_err(|error| format!("registering metrics: {error}"))?;
        metrics.publish_budget(&settings);
        let startup = Startup {
            resources: Resources::default(),
            checks: ReadinessChecks::default(),
            tasks: BackgroundTasks::default(),
            registry: metrics.registry().clone(),
        };
        Ok(Core {
            pod: OwnPod::connect(settings.kube_integration, service.name).await,
            lifecycle: Lifecycle::new(),
            scrapers: Scrapers::default(),
            settings,
            metrics,
            startup,
        })
    }

    fn admin(&self) -> Admin {
        Admin {
            lifecycle: self.lifecycle.clone(),
            metrics: self.metrics.clone(),
            checks: self.startup.checks.clone(),
            scrapers: self.scrapers.clone(),
            prestop_delay: self.settings.prestop_delay,
        }
    }

    /// Serves `routes` behind the request guards and reports ready; returns what the
    /// shutdown sequence will stop.
    fn serve(&self, listener: Listener, routes: Router) -> Stoppable {
        let (settings, metrics) = (&self.settings, &self.metrics);
        self.startup.checks.spawn_all(&self.startup.tasks, metrics);
        let capacity = Capacity::of(settings);
        tracing::info!(
            max_connections = capacity.connections,
            request_memory = capacity.request_memory,
            "capacity: connections and request memory held at once"
        );
        let router = http::guard(routes, metrics, settings, capacity.request_memory);
        let server = HttpServer::new(
            listener,
            router,
            self.lifecycle.clone(),
            metrics.clone(),
            settings,
            capacity.connections,
        );
        let in_flight = server.requests_in_flight();
        let serving = tokio::spawn(server.serve());
        self.lifecycle.advance(State::Ready);
        self.pod
            .check_budget(settings.budget(), settings.prestop_delay, metrics);
        Stoppable {
            serving,
            in_flight,
            tasks: self.startup.tasks.clone(),
            resources: self.startup.resources.clone(),
        }
    }
}

/// Why startup work did not end in serving.
enum Abandoned {
    Failed(String),
    Signalled(Signal),
}

/// Runs the app's startup work, then every readiness check once, so that the service is
/// ready as soon as startup ends.
async fn start_app<F, Fut, E>(
    start: F,
    startup: Startup,
    metrics: &Metrics,
) -> Result<Router, Abandoned>
where
    F: FnOnce(Startup) -> Fut,
    Fut: Future<Output = Result<Router, E>>,
    E: Into<Error>,
{
    let checks = startup.checks.clone();
    let routes = start(startup)
        .await
        .map_err(|error| Abandoned::Failed(describe(error.into().as_ref())))?;
    checks.run_all_once(metrics).await;
    Ok(routes)
}

/// Stops and closes what startup work had already started and opened.
async fn abandon_startup(abandoned: Abandoned, core: &Core) -> Exit {
    let exit = match abandoned {
        Abandoned::Failed(error) => {
            tracing::error!(%error, "startup work failed");
            Exit::StartupFailed(error)
        }
        Abandoned::Signalled(signal) => {
            tracing::warn!(
                signal = signal.name,
                "signal during startup: exiting without serving"
            );
            Exit::DuringStartup(signal)
        }
    };
    let deadline = Instant::now() + core.settings.shutdown_cleanup_timeout;
    core.startup.tasks.stop_by(deadline).await;
    core.startup.resources.close_all(deadline).await;
    exit
}
