//! OTLP trace export, configured only by the standard `OTEL_*` environment variables.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Spans go through a
//! batch processor on its own thread: a slow or absent collector costs dropped spans, never
//! a blocked request. The protocol is `http/protobuf` (port 4318). `OTEL_PROPAGATORS` picks
//! how a caller's trace is read: `tracecontext` and `baggage` (the default), or `none`.
//! Settings this build cannot honour are warned about and never stop the service.

use std::time::Duration;

use opentelemetry::{
    global,
    propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::SdkTracerProvider,
};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

pub(super) struct Exporter {
    provider: SdkTracerProvider,
    pub(super) endpoint: String,
    /// A protocol asked for that this build cannot speak, to warn about once logs are up.
    pub(super) unsupported: Option<(&'static str, String)>,
    /// Propagators `OTEL_PROPAGATORS` named that this build does not have, likewise.
    pub(super) unsupported_propagators: Vec<String>,
}

/// The propagators `OTEL_PROPAGATORS` names (W3C `tracecontext` and `baggage` when unset, as
/// the specification says; `none` for none), and the names this build does not know.
fn propagators(setting: Option<&str>) -> (TextMapCompositePropagator, Vec<String>) {
    let mut chosen: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    let mut unsupported = Vec::new();
    for name in setting
        .unwrap_or("tracecontext,baggage")
        .split(',')
        .map(str::trim)
    {
        match name {
            "tracecontext" => chosen.push(Box::new(TraceContextPropagator::new())),
            "baggage" => chosen.push(Box::new(BaggagePropagator::new())),
            "none" | "" => {}
            other => unsupported.push(other.to_owned()),
        }
    }
    if setting.is_some_and(|names| names.split(',').any(|name| name.trim() == "none")) {
        chosen.clear();
    }
    (TextMapCompositePropagator::new(chosen), unsupported)
}

impl Exporter {
    pub(super) fn from_env(service_name: &'static str) -> anyhow::Result<Option<Self>> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|value| value == "none")
        {
            return Ok(None);
        }
        let Some(endpoint) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        // OpenTelemetry's rule for settings an SDK cannot honour: say so and carry on. A
        // cluster-wide `grpc` must not stop every pod from starting.
        let unsupported = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| var(name).map(|value| (name, value)))
        .filter(|(_, protocol)| protocol != "http/protobuf");
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?;
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service_name);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let (propagator, unsupported_propagators) = propagators(var("OTEL_PROPAGATORS").as_deref());
        global::set_text_map_propagator(propagator);
        Ok(Some(Self {
            provider,
            endpoint,
            unsupported,
            unsupported_propagators,
        }))
    }

    pub(super) fn layer<S>(&self) -> OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        // The instrumentation scope: the library that makes the spans.
        let tracer = self.provider.tracer(env!("CARGO_PKG_NAME"));
        // Only the request's own attributes: source locations, threads and busy/idle times
        // are about this process's code, not about the request.
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
    }

    /// Flushes buffered spans on a blocking thread; gives up (and lets the thread go)
    /// after `budget`, so that a dead collector cannot hold the process.
    pub(super) async fn shutdown(self, budget: Duration) -> bool {
        let provider = self.provider;
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(budget));
        match tokio::time::timeout(budget, flush).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "trace export did not flush");
                false
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("trace export did not flush within the cleanup budget");
                false
            }
        }
    }
}

pub(super) fn adopt_remote_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let parent =
        global::get_text_map_propagator(|propagator| propagator.extract(&Headers(headers)));
    // Fails only when the span is disabled by the filter; nothing to adopt then.
    let _ = span.set_parent(parent);
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_headers(setting: Option<&str>) -> (Vec<String>, Vec<String>) {
        let (propagator, unsupported) = propagators(setting);
        let fields = propagator.fields().map(str::to_owned).collect();
        (fields, unsupported)
    }

    #[test]
    fn otel_propagators_picks_what_is_read_from_a_caller() {
        let (fields, unsupported) = read_headers(None);
        assert!(fields.contains(&"traceparent".to_owned()), "{fields:?}");
        assert!(fields.contains(&"baggage".to_owned()), "{fields:?}");
        assert!(unsupported.is_empty());

        let (fields, _) = read_headers(Some("tracecontext"));
        assert!(!fields.contains(&"baggage".to_owned()), "{fields:?}");

        let (fields, _) = read_headers(Some("none"));
        assert!(fields.is_empty(), "{fields:?}");
    }

    #[test]
    fn unknown_propagators_are_named_and_the_known_ones_kept() {
        let (fields, unsupported) = read_headers(Some("b3, tracecontext,xray"));
        assert_eq!(unsupported, ["b3", "xray"]);
        assert!(fields.contains(&"traceparent".to_owned()), "{fields:?}");
    }
}
