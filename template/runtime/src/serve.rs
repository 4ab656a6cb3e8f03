//! The service from bound listeners to its end: startup, serving, and the shutdown sequence
//! when the first shutdown request comes.

use std::future::Future;

use axum::Router;
use tokio::time::Instant;

use crate::{
    admin::{self, Admin},
    error::{Error, describe},
    http::{self, HttpServer},
    lifecycle::{Lifecycle, State},
    listeners::Listeners,
    metrics::Metrics,
    observe::Observers,
    pod::OwnPod,
    readiness::ReadinessChecks,
    report::Report,
    resources::Resources,
    service::Service,
    settings::Settings,
    shutdown::{self, Stoppable},
    signals::{Shutdown, Signal},
    startup::Startup,
    tasks::BackgroundTasks,
};

/// Exit code when everything finished within its budget.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code when the service could not start (a port in use, startup work failed).
pub const EXIT_STARTUP_FAILED: u8 = 1;
/// Exit code for a refused configuration (the same as for a bad command line).
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code when a deadline cut requests, connections, tasks or resources short.
pub const EXIT_DEADLINE_EXCEEDED: u8 = 3;

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
    /// [`EXIT_DEADLINE_EXCEEDED`], or 128 + the signal's number when forced.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Shutdown(report) if report.is_clean() => EXIT_CLEAN,
            Exit::Shutdown(_) => EXIT_DEADLINE_EXCEEDED,
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
    let metrics = match Metrics::new(service) {
        Ok(metrics) => metrics,
        Err(error) => return Exit::StartupFailed(format!("registering metrics: {error}")),
    };
    metrics.publish_budget(&settings);
    let lifecycle = Lifecycle::new();
    let pod = OwnPod::connect(settings.kube_integration, service.name).await;
    let observers = Observers::start(&lifecycle, &metrics, &pod);

    let startup = Startup {
        resources: Resources::default(),
        checks: ReadinessChecks::default(),
        tasks: BackgroundTasks::default(),
        registry: metrics.registry().clone(),
    };
    let _admin = admin::spawn(
        listeners.admin,
        Admin {
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
            checks: startup.checks.clone(),
            prestop_delay: settings.prestop_delay,
        },
    );

    let started = tokio::select! {
        started = start_app(start, startup.clone(), &metrics) => started,
        signal = shutdown.next() => Err(Abandoned::Signalled(signal)),
    };
    let routes = match started {
        Ok(routes) => routes,
        Err(abandoned) => return abandon_startup(abandoned, startup, &settings).await,
    };
    startup.checks.spawn_all(&startup.tasks, &metrics);

    let router = http::guard(routes, &metrics, &settings);
    let server = HttpServer::new(
        listeners.http,
        router,
        lifecycle.clone(),
        metrics.clone(),
        &settings,
    );
    let in_flight = server.requests_in_flight();
    let serving = tokio::spawn(server.serve());
    lifecycle.advance(State::Ready);
    let budget = settings.budget();
    pod.check_budget(budget, settings.prestop_delay, &metrics);

    let signal = shutdown.next().await;
    let signalled_at = Instant::now();
    tracing::info!(signal = signal.name, "shutdown signal received");
    let stoppable = Stoppable {
        serving,
        in_flight,
        tasks: startup.tasks,
        resources: startup.resources,
    };
    let sequence = shutdown::run(
        signalled_at,
        budget,
        pod.fit(budget, signalled_at),
        &lifecycle,
        stoppable,
    );
    tokio::select! {
        report = sequence => {
            observers.finish_by(report.cleanup_deadline).await;
            Exit::Shutdown(report)
        }
        second = shutdown.next() => {
            tracing::warn!(
                signal = second.name,
                exit_code = second.exit_code(),
                "second signal: exiting at once"
            );
            Exit::Forced(second)
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
async fn abandon_startup(abandoned: Abandoned, startup: Startup, settings: &Settings) -> Exit {
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
    let deadline = Instant::now() + settings.shutdown_cleanup_timeout;
    startup.tasks.stop_by(deadline).await;
    startup.resources.close_all(deadline).await;
    exit
}
