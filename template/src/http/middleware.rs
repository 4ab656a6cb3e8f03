//! The layers every application request goes through, outermost first:
//! request id → tracing span → metrics → timeout (503) → panic catcher (500) → body limit
//! (413) → your handler.

use std::{
    any::Any,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tracing::Span;

use crate::{config::Config, metrics::Metrics};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps the application's routes in the request guards.
pub fn guard(router: Router, metrics: &Metrics, config: &Config) -> Router {
    // The panic itself is logged by the hook that `telemetry::init` installs.
    let on_panic = {
        let metrics = metrics.clone();
        move |_: Box<dyn Any + Send + 'static>| {
            metrics.http_panics.inc();
            (StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n").into_response()
        }
    };
    router.layer(DefaultBodyLimit::disable()).layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::new()))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(middleware::from_fn_with_state(
                metrics.clone(),
                record_metrics,
            ))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                config.request_timeout,
            ))
            .layer(CatchPanicLayer::custom(on_panic))
            .layer(RequestBodyLimitLayer::new(config.request_body_limit)),
    )
}

fn request_span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = request.uri().path(),
        request_id,
    );
    crate::telemetry::adopt_remote_parent(&span, request.headers());
    span
}

async fn record_metrics(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let _in_flight = InFlight::count(&metrics);
    let started = Instant::now();

    let response = next.run(request).await;

    let status = response.status();
    let labels = [method.as_str(), route.as_str(), status.as_str()];
    metrics.http_requests.with_label_values(&labels).inc();
    metrics
        .http_request_duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Request ids shaped like UUIDs: a random prefix drawn once per process, then a counter.
/// Unique without a system call per request (a random UUID per request costs one).
#[derive(Clone)]
struct RequestIds {
    prefix: u64,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        // The hasher's keys are random per process; hashing the time mixes in more.
        let prefix = RandomState::new().hash_one(std::time::SystemTime::now());
        Self {
            prefix,
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        let (high, low) = (self.prefix, count);
        let id = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            (low >> 48) & 0xffff,
            low & 0xffff_ffff_ffff
        );
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Keeps the in-flight gauge right even when a request is cut and its future dropped.
struct InFlight(Metrics);

impl InFlight {
    fn count(metrics: &Metrics) -> Self {
        metrics.http_requests_in_flight.inc();
        Self(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.http_requests_in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_shaped_like_uuids() {
        let (mut ids, request) = (RequestIds::new(), axum::http::Request::new(()));
        let first = ids.make_request_id(&request).unwrap();
        let second = ids.clone().make_request_id(&request).unwrap();
        let (first, second) = (first.header_value(), second.header_value());
        assert_ne!(first, second);
        let text = first.to_str().unwrap();
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{text}");
        assert!(
            RequestIds::new().prefix != ids.prefix,
            "each instance draws its own random prefix"
        );
    }
}
