//! A Kubernetes service whose shutdown loses no request.
//!
//! - [`lifecycle`]: the state machine everything observes.
//! - [`shutdown`]: the sequence from the first signal to the exit code.
//! - [`listeners`]: the two ports, bound here or passed by systemd socket activation.
//! - [`http`]: the application listener, its connections and request guards.
//! - [`admin`]: probes, metrics and the pre-stop hook, on their own port.
//! - [`pod`]: the service's own Pod through the Kubernetes API (the `kube` feature).
//! - [`app`]: your routes, resources, readiness checks and background tasks.

pub mod admin;
pub mod app;
pub mod config;
pub mod healthcheck;
pub mod http;
pub mod lifecycle;
pub mod listeners;
pub mod metrics;
pub mod pod;
pub mod readiness;
pub mod resources;
pub mod shutdown;
pub mod signals;
pub mod tasks;
pub mod telemetry;

use anyhow::Context;
use tokio::time::Instant;

use crate::{
    admin::Admin,
    config::Config,
    http::HttpServer,
    lifecycle::{Lifecycle, State},
    metrics::Metrics,
    pod::OwnPod,
    readiness::ReadinessChecks,
    resources::Resources,
    shutdown::{Budget, Stoppable},
    signals::Signals,
    tasks::BackgroundTasks,
    telemetry::Telemetry,
};

/// Starts the service, serves until a signal, shuts down; returns the exit code.
pub async fn run(config: Config, telemetry: Telemetry) -> u8 {
    match serve(config, telemetry).await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "failed to start");
            shutdown::EXIT_STARTUP_FAILED
        }
    }
}

async fn serve(config: Config, telemetry: Telemetry) -> anyhow::Result<u8> {
    let mut signals = Signals::install().context("installing signal handlers")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let lifecycle = Lifecycle::new(metrics.clone());
    let budget = Budget {
        drain_delay: config.shutdown_drain_delay,
        timeout: config.shutdown_timeout,
        cleanup_timeout: config.shutdown_cleanup_timeout,
    };
    publish_budget(&metrics, &config);
    let pod = OwnPod::connect(config.kube_integration).await;

    let listeners = listeners::open(&config).await?;

    // Probes answer from the start; readiness stays 503 until startup work is done.
    let checks = ReadinessChecks::default();
    let admin = admin::router(Admin {
        lifecycle: lifecycle.clone(),
        metrics: metrics.clone(),
        checks: checks.clone(),
        prestop_delay: config.prestop_delay,
    });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listeners.admin.socket, admin).await {
            tracing::error!(%error, "admin server failed");
        }
    });

    let tasks = BackgroundTasks::default();
    let mut resources = Resources::default();
    let startup = async {
        let routes = app::start(app::Startup {
            config: &config,
            resources: &mut resources,
            checks: &checks,
            tasks: &tasks,
        })
        .await
        .context("startup work")?;
        checks.run_all_once(&metrics).await;
        anyhow::Ok(routes)
    };
    // A signal during startup work (a dependency that hangs, say) ends the process
    // without serving, after closing what startup had already opened.
    let routes = tokio::select! {
        routes = startup => routes?,
        signal = signals.next() => {
            tracing::warn!(signal = signal.name, "signal during startup: exiting without serving");
            tasks.stop(config.shutdown_cleanup_timeout).await;
            resources
                .close_all(Instant::now() + config.shutdown_cleanup_timeout)
                .await;
            return Ok(shutdown::EXIT_CLEAN);
        }
    };
    checks.spawn_all(&tasks, &metrics);

    let router = http::middleware::guard(routes, &metrics, &config);
    let server = HttpServer::new(
        listeners.http,
        router,
        lifecycle.clone(),
        metrics.clone(),
        &config,
    );
    let serving = tokio::spawn(server.serve());
    lifecycle.advance(State::Ready);
    pod.check_budget(budget, config.prestop_delay, &metrics);

    let signal = signals.next().await;
    let signalled_at = Instant::now();
    tracing::info!(signal = signal.name, "shutdown signal received");
    signals.exit_on_next();

    let stoppable = Stoppable {
        serving,
        tasks,
        resources,
        telemetry,
        pod,
    };
    let report = shutdown::run(signalled_at, budget, &lifecycle, &metrics, stoppable).await;
    Ok(report.exit_code())
}

fn publish_budget(metrics: &Metrics, config: &Config) {
    for (phase, duration) in [
        ("prestop_delay", config.prestop_delay),
        ("drain_delay", config.shutdown_drain_delay),
        ("timeout", config.shutdown_timeout),
        ("cleanup_timeout", config.shutdown_cleanup_timeout),
    ] {
        metrics
            .shutdown_budget
            .with_label_values(&[phase])
            .set(duration.as_secs_f64());
    }
}
