//! Logs and traces through `tracing`: JSON lines by default, pretty on a terminal, and,
//! with the `otel` feature, spans exported over OTLP when the standard `OTEL_*` variables
//! ask for it.

mod json_fields;
#[cfg(feature = "otel")]
mod otel;
mod request_fields;

pub(crate) use request_fields::{RequestFields, deferring as defers_request_fields};

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
};

use axum::{
    extract::Request,
    http::{StatusCode, Version},
};
use tokio::time::Instant;
use tracing::Span;

use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::settings::LogFormat;

/// The span exporter, until [`flush_by`] takes it: global like the subscriber it feeds, so
/// that the shutdown flushes it before the metrics linger, whoever installed it.
#[cfg(feature = "otel")]
static EXPORTER: std::sync::Mutex<Option<otel::Exporter>> = std::sync::Mutex::new(None);

/// Installs the global subscriber. Call before starting the Tokio runtime: the OTLP
/// exporter owns a blocking HTTP client that must not be created inside it.
pub(crate) fn init(service_name: &'static str, format: LogFormat) -> anyhow::Result<()> {
    let (targets, env_filter) = log_filter(log_directives());
    let pretty = match format {
        LogFormat::Pretty => true,
        LogFormat::Json => false,
        LogFormat::Auto => std::io::stdout().is_terminal(),
    };
    let logs = if pretty {
        tracing_subscriber::fmt::layer().boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(json_fields::JsonSpanFields)
            .boxed()
    };

    // Panics become one log line, inside the span of the request that panicked.
    std::panic::set_hook(Box::new(|panic| {
        let location = panic
            .location()
            .map(ToString::to_string)
            .unwrap_or_default();
        let message = panic
            .payload()
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| panic.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        tracing::error!(panic = %message, %location, "panicked");
    }));

    #[cfg(feature = "otel")]
    {
        let exporter = otel::Exporter::from_env(service_name)?;
        let traces = exporter.as_ref().map(otel::Exporter::layer);
        tracing_subscriber::registry()
            .with(targets)
            .with(env_filter)
            .with(request_fields::WriteDeferred)
            .with(logs)
            .with(traces)
            .try_init()?;
        EXPORTING_TRACES.store(exporter.is_some(), Ordering::Relaxed);
        // Exported spans carry the request's fields from the start, as attributes.
        if !pretty && exporter.is_none() {
            request_fields::defer_from_now_on();
        }
        match &exporter {
            Some(exporter) => {
                if !exporter.unsupported_propagators.is_empty() {
                    tracing::warn!(
                        "OTEL_PROPAGATORS names {} that this build does not support: reading \
                         only tracecontext and baggage from what it names",
                        exporter.unsupported_propagators.join(", ")
                    );
                }
                if let Some((variable, protocol)) = &exporter.unsupported {
                    tracing::warn!(
                        "{variable}={protocol} is not supported by this build: exporting over \
                         http/protobuf instead (the collector's OTLP/HTTP port, usually 4318)"
                    );
                }
                tracing::info!(endpoint = %exporter.endpoint, "exporting traces over OTLP")
            }
            None => {
                tracing::info!("trace export off: set OTEL_EXPORTER_OTLP_ENDPOINT to turn it on")
            }
        }
        *EXPORTER.lock().expect("never poisoned") = exporter;
        Ok(())
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = service_name;
        tracing_subscriber::registry()
            .with(targets)
            .with(env_filter)
            .with(request_fields::WriteDeferred)
            .with(logs)
            .try_init()?;
        if !pretty {
            request_fields::defer_from_now_on();
        }
        Ok(())
    }
}

/// The filter `RUST_LOG` asks for. Plain `target=level` directives become a `Targets`
/// filter, which has nothing to do when a span is entered or left; `EnvFilter`, which looks
/// every span up under a lock each time, is kept for span and field directives
/// (`[request]=debug`), the only ones that need it.
fn log_filter(directives: String) -> (Option<Targets>, Option<EnvFilter>) {
    if !directives.contains(['[', '{'])
        && let Ok(targets) = directives.parse::<Targets>()
    {
        return (Some(targets), None);
    }
    (None, Some(EnvFilter::new(directives)))
}

/// `RUST_LOG`, or `info` when it is unset or unreadable.
fn log_directives() -> String {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| EnvFilter::try_new(directives).is_ok())
        .unwrap_or_else(|| "info".to_owned());
    // kube's client logs each failed call at ERROR; the Pod integration is best effort and
    // logs its own warning instead. RUST_LOG naming kube_client brings them back.
    #[cfg(feature = "kube")]
    if !directives.contains("kube_client") {
        return directives + ",kube_client=off";
    }
    directives
}

/// Exports the spans still buffered, giving up at `deadline`, and stops exporting; true if
/// all went out. Only the first call has anything to do.
pub(crate) async fn flush_by(deadline: Instant) -> bool {
    #[cfg(feature = "otel")]
    let exporter = EXPORTER.lock().expect("never poisoned").take();
    #[cfg(feature = "otel")]
    if let Some(exporter) = exporter {
        let budget = deadline.saturating_duration_since(Instant::now());
        return exporter.shutdown(budget).await;
    }
    let _ = deadline;
    true
}

/// Set once at start: whether spans leave the process.
static EXPORTING_TRACES: AtomicBool = AtomicBool::new(false);

/// Describes a request's span as OpenTelemetry's HTTP server conventions say: named
/// `{method} {route}` (`{method}` without a route, `HTTP` for an unknown method), kind
/// server, the scheme and protocol version, and a child of the trace the caller propagated
/// (`OTEL_PROPAGATORS`), if any. Only while traces are exported: for logs alone it would be
/// work on every request for nothing.
pub(crate) fn describe_server_span(
    span: &Span,
    request: &Request,
    method: &'static str,
    route: Option<&str>,
) {
    if !EXPORTING_TRACES.load(Ordering::Relaxed) {
        return;
    }
    let name = match (method, route) {
        ("_OTHER", _) => "HTTP".to_owned(),
        (method, Some(route)) => format!("{method} {route}"),
        (method, None) => method.to_owned(),
    };
    span.record("otel.name", name);
    span.record("otel.kind", "server");
    span.record("url.scheme", "http");
    span.record(
        "network.protocol.version",
        protocol_version(request.version()),
    );
    if method == "_OTHER" {
        span.record("http.request.method_original", request.method().as_str());
    }
    #[cfg(feature = "otel")]
    otel::adopt_remote_parent(span, request.headers());
}

/// Notes the response in the request's span: its status code, and for a 5xx the error
/// status (a 4xx is the client's error, not the server's).
pub(crate) fn describe_response(span: &Span, status: StatusCode) {
    if !EXPORTING_TRACES.load(Ordering::Relaxed) {
        return;
    }
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_directives_need_no_span_bookkeeping() {
        let (targets, env_filter) = log_filter("warn,shop=info,kube_client=off".into());
        assert!(targets.is_some() && env_filter.is_none());
        let (targets, env_filter) = log_filter("info".into());
        assert!(targets.is_some() && env_filter.is_none());
    }

    #[test]
    fn span_and_field_directives_keep_env_filter() {
        for directives in ["info,[request]=debug", "warn,[{http.route=/}]=trace"] {
            let (targets, env_filter) = log_filter(directives.into());
            assert!(targets.is_none() && env_filter.is_some(), "{directives}");
        }
    }
}
