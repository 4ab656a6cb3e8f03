//! Logs and traces through `tracing`: JSON lines by default, pretty on a terminal, and,
//! with the `otel` feature, spans exported over OTLP when the standard `OTEL_*` variables
//! ask for it.

mod json_fields;
#[cfg(feature = "otel")]
mod otel;

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use axum::http::{HeaderMap, Method};
use tracing::Span;

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::LogFormat;

/// Holds what must be flushed before the process exits.
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    exporter: Option<otel::Exporter>,
}

/// Installs the global subscriber. Call before starting the Tokio runtime: the OTLP
/// exporter owns a blocking HTTP client that must not be created inside it.
pub(crate) fn init(service_name: &'static str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // kube's client logs each failed call at ERROR; the Pod integration is best effort and
    // logs its own warning instead. RUST_LOG naming kube_client brings them back.
    #[cfg(feature = "kube")]
    let filter = if std::env::var("RUST_LOG").is_ok_and(|value| value.contains("kube_client")) {
        filter
    } else {
        filter.add_directive("kube_client=off".parse()?)
    };
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
            .with(filter)
            .with(logs)
            .with(traces)
            .try_init()?;
        EXPORTING_TRACES.store(exporter.is_some(), Ordering::Relaxed);
        match &exporter {
            Some(exporter) => {
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
        Ok(Telemetry { exporter })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = service_name;
        tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .try_init()?;
        Ok(Telemetry {})
    }
}

impl Telemetry {
    /// Exports what is still buffered, giving up after `budget`; true if all went out.
    pub(crate) async fn flush(self, budget: Duration) -> bool {
        #[cfg(feature = "otel")]
        if let Some(exporter) = self.exporter {
            return exporter.shutdown(budget).await;
        }
        let _ = budget;
        true
    }
}

/// Set once at start: whether spans leave the process.
static EXPORTING_TRACES: AtomicBool = AtomicBool::new(false);

/// Names a request's span the way trace backends expect (`GET /route`, kind server) and
/// makes it a child of the trace the caller propagated (W3C `traceparent`), if any. Only
/// while traces are exported: for logs alone it would be work on every request for nothing.
pub(crate) fn describe_server_span(span: &Span, method: &Method, route: &str, headers: &HeaderMap) {
    if !EXPORTING_TRACES.load(Ordering::Relaxed) {
        return;
    }
    span.record("otel.name", format!("{method} {route}"));
    span.record("otel.kind", "server");
    #[cfg(feature = "otel")]
    otel::adopt_remote_parent(span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
}
