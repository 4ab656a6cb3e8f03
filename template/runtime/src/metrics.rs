//! Prometheus metrics, served on the admin port at `/metrics`.
//!
//! Every metric lives in one registry owned by [`Metrics`]; `docs/metrics.md` lists them all.
//! The request path counts requests and connections; everything about the lifecycle and the
//! shutdown comes from [`observe`], which follows the lifecycle like any other observer.

use std::{
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::Instant,
};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use tokio::sync::watch;

use crate::{
    lifecycle::{Snapshot, State},
    report::Report,
    service::Service,
    settings::Settings,
};

/// Every metric, behind one `Arc`: cloned on every request, so a clone must be cheap.
#[derive(Clone)]
pub(crate) struct Metrics(Arc<Families>);

pub(crate) struct Families {
    registry: Registry,
    pub(crate) http_requests: IntCounterVec,
    http_responses: IntCounterVec,
    /// `http_responses` by class, resolved once: counted on every request.
    responses_by_class: [IntCounter; STATUS_CLASSES.len()],
    pub(crate) http_request_duration: HistogramVec,
    pub(crate) http_requests_in_flight: IntGauge,
    pub(crate) http_connections_open: IntGauge,
    pub(crate) http_connections_accepted: IntCounter,
    pub(crate) http_accept_failures: IntCounter,
    pub(crate) http_connections_limit: IntGauge,
    pub(crate) http_connections_limited: IntCounter,
    pub(crate) http_request_memory_limit: IntGauge,
    pub(crate) http_requests_shed: IntCounter,
    pub(crate) http_panics: IntCounter,
    pub(crate) lifecycle_state: IntGaugeVec,
    pub(crate) draining: IntGauge,
    pub(crate) shutdown_budget: prometheus::GaugeVec,
    pub(crate) shutdown_elapsed: Gauge,
    pub(crate) shutdown_duration: Gauge,
    pub(crate) shutdown_requests_cut: IntCounter,
    pub(crate) shutdown_connections_cut: IntCounter,
    pub(crate) shutdown_tasks_cut: IntCounter,
    pub(crate) shutdowns: IntCounterVec,
    pub(crate) shutdown_budget_mismatch: IntGauge,
    pub(crate) shutdown_budget_shrunk: IntCounter,
    pub(crate) readiness_check_up: IntGaugeVec,
    pub(crate) prestop_unfollowed: IntCounter,
    shutdown_started: OnceLock<Instant>,
}

/// The request series one route has counted in, each resolved once: finding a series by its
/// labels hashes them, which would cost every request.
#[derive(Default)]
pub(crate) struct RouteSeries(RwLock<Vec<Series>>);

impl RouteSeries {
    /// Series kept per route; a route answering with more method and status pairs than this
    /// looks the others up each time.
    const MOST: usize = 16;
}

struct Series {
    labels: [Box<str>; 3],
    requests: IntCounter,
    duration: Histogram,
}

impl Series {
    fn count(&self, seconds: f64) {
        self.requests.inc();
        self.duration.observe(seconds);
    }
}

/// The `class` label of `http_responses_total`: every series exists at 0 from the start, so
/// that the first 5xx is an increase like any other (route-labelled series are created by
/// their first request, and `rate()` cannot see that request).
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.0
    }
}

impl Metrics {
    pub(crate) fn new(service: Service) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let http_responses = IntCounterVec::new(
            Opts::new(
                "http_responses_total",
                "HTTP responses on the application port by status class (1xx-5xx, other); \
                 every class exists from the start.",
            ),
            &["class"],
        )?;
        let responses_by_class =
            STATUS_CLASSES.map(|class| http_responses.with_label_values(&[class]));
        let metrics = Families {
            http_responses,
            responses_by_class,
            http_requests: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests answered on the application port.",
                ),
                &["method", "route", "status"],
            )?,
            http_request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from receiving the request headers to producing the response headers.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["method", "route", "status"],
            )?,
            http_requests_in_flight: IntGauge::new(
                "http_requests_in_flight",
                "Requests being processed on the application port.",
            )?,
            http_connections_open: IntGauge::new(
                "http_connections_open",
                "Open connections on the application port.",
            )?,
            http_connections_accepted: IntCounter::new(
                "http_connections_accepted_total",
                "Connections accepted on the application port.",
            )?,
            http_accept_failures: IntCounter::new(
                "http_accept_failures_total",
                "Failed accepts on the application port, usually for want of file descriptors.",
            )?,
            http_connections_limit: IntGauge::new(
                "http_connections_limit",
                "Most application connections open at once (MAX_CONNECTIONS).",
            )?,
            http_connections_limited: IntCounter::new(
                "http_connections_limited_total",
                "Times the application port stopped accepting at MAX_CONNECTIONS and asked \
                 idle connections to close.",
            )?,
            http_request_memory_limit: IntGauge::new(
                "http_request_memory_limit_bytes",
                "Most bytes the requests being answered may hold at once (REQUEST_MEMORY).",
            )?,
            http_requests_shed: IntCounter::new(
                "http_requests_shed_total",
                "Requests answered 503 at once because those in flight held REQUEST_MEMORY.",
            )?,
            prestop_unfollowed: IntCounter::new(
                "prestop_hooks_unfollowed_total",
                "Pre-stop hook calls that no shutdown signal followed; each took readiness \
                 off for PRESTOP_DELAY plus 10 s, then the service was ready again.",
            )?,
            http_panics: IntCounter::new(
                "http_panics_total",
                "Request handlers that panicked; each was answered with 500.",
            )?,
            lifecycle_state: IntGaugeVec::new(
                Opts::new(
                    "lifecycle_state",
                    "1 for the state the service is in (starting, ready, draining, stopping, \
                     stopped), 0 for the others.",
                ),
                &["state"],
            )?,
            draining: IntGauge::new(
                "lifecycle_draining",
                "1 from the first shutdown signal (or pre-stop hook) on, 0 before.",
            )?,
            shutdown_budget: prometheus::GaugeVec::new(
                Opts::new(
                    "shutdown_budget_seconds",
                    "Configured shutdown durations in seconds, by phase.",
                ),
                &["phase"],
            )?,
            shutdown_elapsed: Gauge::new(
                "shutdown_elapsed_seconds",
                "Seconds since the first shutdown signal; 0 before it.",
            )?,
            shutdown_duration: Gauge::new(
                "shutdown_duration_seconds",
                "Seconds from the first signal to the end of cleanup; 0 until the shutdown \
                 is over.",
            )?,
            shutdown_requests_cut: IntCounter::new(
                "shutdown_requests_cut_total",
                "Requests still running when the shutdown deadline cut them.",
            )?,
            shutdown_connections_cut: IntCounter::new(
                "shutdown_connections_cut_total",
                "Connections closed by the shutdown deadline rather than gracefully.",
            )?,
            shutdown_tasks_cut: IntCounter::new(
                "shutdown_tasks_cut_total",
                "Background tasks and resources that did not finish within the cleanup timeout.",
            )?,
            shutdowns: IntCounterVec::new(
                Opts::new(
                    "shutdowns_total",
                    "Shutdowns by outcome: clean, deadline_exceeded.",
                ),
                &["outcome"],
            )?,
            shutdown_budget_mismatch: IntGauge::new(
                "shutdown_budget_mismatch",
                "1 when the Pod's terminationGracePeriodSeconds cannot cover the shutdown \
                 budget (kube feature), 0 otherwise.",
            )?,
            shutdown_budget_shrunk: IntCounter::new(
                "shutdown_budget_shrunk_total",
                "Shutdowns whose budget was shrunk to fit a shorter deletion grace period \
                 (kube feature).",
            )?,
            readiness_check_up: IntGaugeVec::new(
                Opts::new(
                    "readiness_check_up",
                    "1 when the named dependency check passed last time it ran, 0 otherwise.",
                ),
                &["check"],
            )?,
            registry,
            shutdown_started: OnceLock::new(),
        };
        metrics.register_all(service)?;
        // At 0 from the start, so that the first shutdown is an increase like any other.
        for outcome in Report::OUTCOMES {
            metrics.shutdowns.with_label_values(&[outcome]);
        }
        let metrics = Metrics(Arc::new(metrics));
        metrics.set_state(State::Starting);
        Ok(metrics)
    }
}

impl Families {
    fn register_all(&self, service: Service) -> prometheus::Result<()> {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.http_requests.clone()),
            Box::new(self.http_responses.clone()),
            Box::new(self.http_request_duration.clone()),
            Box::new(self.http_requests_in_flight.clone()),
            Box::new(self.http_connections_open.clone()),
            Box::new(self.http_connections_accepted.clone()),
            Box::new(self.http_accept_failures.clone()),
            Box::new(self.http_connections_limit.clone()),
            Box::new(self.http_connections_limited.clone()),
            Box::new(self.http_request_memory_limit.clone()),
            Box::new(self.http_requests_shed.clone()),
            Box::new(self.http_panics.clone()),
            Box::new(self.prestop_unfollowed.clone()),
            Box::new(self.lifecycle_state.clone()),
            Box::new(self.draining.clone()),
            Box::new(self.shutdown_budget.clone()),
            Box::new(self.shutdown_elapsed.clone()),
            Box::new(self.shutdown_duration.clone()),
            Box::new(self.shutdown_requests_cut.clone()),
            Box::new(self.shutdown_connections_cut.clone()),
            Box::new(self.shutdown_tasks_cut.clone()),
            Box::new(self.shutdowns.clone()),
            Box::new(self.shutdown_budget_mismatch.clone()),
            Box::new(self.shutdown_budget_shrunk.clone()),
            Box::new(self.readiness_check_up.clone()),
            Box::new(build_info(service)?),
        ];
        for collector in collectors {
            self.registry.register(collector)?;
        }
        #[cfg(target_os = "linux")]
        self.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(())
    }
}

impl Metrics {
    /// The registry, for application code that defines metrics of its own.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one response in `http_responses_total{class}`.
    pub(crate) fn count_response(&self, status: axum::http::StatusCode) {
        let class = match status.as_u16() / 100 {
            class @ 1..=5 => usize::from(class) - 1,
            _ => STATUS_CLASSES.len() - 1,
        };
        self.responses_by_class[class].inc();
    }

    /// Counts one request in `http_requests_total` and its duration, under `labels` (method,
    /// route, status), through the series `route` has resolved before.
    pub(crate) fn count_request(&self, route: &RouteSeries, labels: [&str; 3], seconds: f64) {
        let same = |series: &&Series| series.labels.iter().zip(labels).all(|(a, b)| **a == *b);
        let resolved = route.0.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = resolved.iter().find(same) {
            series.count(seconds);
            return;
        }
        drop(resolved);
        let series = Series {
            labels: labels.map(Box::from),
            requests: self.http_requests.with_label_values(&labels),
            duration: self.http_request_duration.with_label_values(&labels),
        };
        series.count(seconds);
        let mut resolved = route.0.write().unwrap_or_else(PoisonError::into_inner);
        if resolved.len() < RouteSeries::MOST && !resolved.iter().any(|known| same(&known)) {
            resolved.push(series);
        }
    }

    /// The configured durations, as `shutdown_budget_seconds{phase}`.
    pub(crate) fn publish_budget(&self, settings: &Settings) {
        for (phase, duration) in [
            ("prestop_delay", settings.prestop_delay),
            ("drain_delay", settings.shutdown_drain_delay),
            ("timeout", settings.shutdown_timeout),
            ("cleanup_timeout", settings.shutdown_cleanup_timeout),
            ("metrics_linger", settings.shutdown_metrics_linger),
        ] {
            self.shutdown_budget
                .with_label_values(&[phase])
                .set(duration.as_secs_f64());
        }
    }

    fn set_state(&self, current: State) {
        for state in State::ALL {
            self.lifecycle_state
                .with_label_values(&[state.as_str()])
                .set(i64::from(state == current));
        }
        self.draining.set(i64::from(current >= State::Draining));
    }

    /// The registry in the Prometheus text exposition format, with the lifecycle gauges
    /// set to `state` (read by the caller at the scrape), so that a scrape always agrees
    /// with the probes.
    pub(crate) fn render(&self, state: State) -> String {
        self.set_state(state);
        if let Some(started) = self.shutdown_started.get() {
            self.shutdown_elapsed.set(started.elapsed().as_secs_f64());
        }
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

fn build_info(service: Service) -> prometheus::Result<IntGaugeVec> {
    let info = IntGaugeVec::new(
        Opts::new(
            "build_info",
            "Always 1; the labels describe the running build.",
        ),
        &["name", "version"],
    )?;
    info.with_label_values(&[service.name, service.version])
        .set(1);
    Ok(info)
}

/// Follows the lifecycle until it stops: the shutdown clock, the budget if it shrank, and
/// the shutdown's outcome once it is known. (The state gauges are read at each scrape.)
pub(crate) async fn observe(metrics: Metrics, mut snapshots: watch::Receiver<Snapshot>) {
    let mut drain_seen = false;
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(drain) = snapshot.drain.filter(|_| !drain_seen) {
            drain_seen = true;
            let _ = metrics.shutdown_started.set(drain.signalled_at.into_std());
            if drain.shrunk {
                metrics.shutdown_budget_shrunk.inc();
            }
        }
        if let Some(report) = snapshot.report {
            metrics.shutdown_duration.set(report.took.as_secs_f64());
            metrics.shutdown_requests_cut.inc_by(report.cut.requests);
            metrics
                .shutdown_connections_cut
                .inc_by(report.cut.connections);
            metrics
                .shutdown_tasks_cut
                .inc_by((report.tasks_cut + report.resources_not_closed) as u64);
            metrics
                .shutdowns
                .with_label_values(&[report.outcome()])
                .inc();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_series_is_resolved_once_and_counts_its_own_requests() {
        let metrics = Metrics::new(crate::service::tests::SERVICE).unwrap();
        let route = RouteSeries::default();
        for _ in 0..3 {
            metrics.count_request(&route, ["GET", "/orders", "200"], 0.001);
        }
        metrics.count_request(&route, ["GET", "/orders", "404"], 0.001);
        metrics.count_request(&route, ["POST", "/orders", "200"], 0.001);
        let count = |labels: [&str; 3]| metrics.http_requests.with_label_values(&labels).get();
        assert_eq!(count(["GET", "/orders", "200"]), 3);
        assert_eq!(count(["GET", "/orders", "404"]), 1);
        assert_eq!(count(["POST", "/orders", "200"]), 1);
        let observed = metrics
            .http_request_duration
            .with_label_values(&["GET", "/orders", "200"])
            .get_sample_count();
        assert_eq!(observed, 3);
        assert_eq!(route.0.read().unwrap().len(), 3);
    }

    #[test]
    fn a_route_with_many_series_still_counts_those_it_does_not_keep() {
        let metrics = Metrics::new(crate::service::tests::SERVICE).unwrap();
        let route = RouteSeries::default();
        let statuses: Vec<String> = (0..RouteSeries::MOST + 4)
            .map(|n| (200 + n).to_string())
            .collect();
        for status in statuses.iter().chain(&statuses) {
            metrics.count_request(&route, ["GET", "/", status], 0.001);
        }
        assert_eq!(route.0.read().unwrap().len(), RouteSeries::MOST);
        for status in &statuses {
            let counted = metrics
                .http_requests
                .with_label_values(&["GET", "/", status])
                .get();
            assert_eq!(counted, 2, "status {status}");
        }
    }
}
