//! What every application request goes through, in one layer so that a request pays for one
//! future rather than a stack of them:
//! request id → `request` span → in-flight gauge and metrics → panic catcher (500) →
//! timeout (503) → body limit (413) → your handler.

use std::{
    convert::Infallible,
    future::Future,
    hash::{BuildHasher, RandomState},
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tower::{Layer, Service};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::{Span, field::Empty};

use crate::{config::Config, metrics::Metrics};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps the application's routes in the request guards.
pub fn guard(router: Router, metrics: &Metrics, config: &Config) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(config.request_body_limit))
        // The limit above covers every body, not only the ones axum's extractors read.
        .layer(DefaultBodyLimit::disable())
        .layer(GuardLayer(Arc::new(Guards {
            metrics: metrics.clone(),
            request_timeout: config.request_timeout,
            request_ids: RequestIds::new(),
        })))
}

struct Guards {
    metrics: Metrics,
    request_timeout: Duration,
    request_ids: RequestIds,
}

#[derive(Clone)]
struct GuardLayer(Arc<Guards>);

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guards: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    guards: Arc<Guards>,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let guards = self.guards.clone();
        let request_id = guards.request_ids.adopt_or_assign(&mut request);
        let route = request.extensions().get::<MatchedPath>().cloned();
        let span = request_span(&request, route_label(route.as_ref()), &request_id);
        let books = Books {
            in_flight: InFlight::count(&guards.metrics),
            method: request.method().clone(),
            route,
            request_id,
            started: Instant::now(),
        };

        // The service that was polled ready handles this request; its clone waits for the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let handling = span.in_scope(|| catch_unwind(AssertUnwindSafe(|| inner.call(request))));
        let Ok(handling) = handling else {
            let response = panicked(&guards.metrics);
            return Box::pin(std::future::ready(Ok(
                books.close(response, &guards.metrics)
            )));
        };
        Box::pin(Guarding {
            handling: tokio::time::timeout(guards.request_timeout, handling),
            span,
            books: Some(books),
            guards,
        })
    }
}

pin_project! {
    /// One request on its way through the guards. A hand-written future rather than an
    /// `async` block: it stays small enough for the allocator's fast path.
    struct Guarding<F> {
        #[pin]
        handling: Timeout<F>,
        span: Span,
        books: Option<Books>,
        guards: Arc<Guards>,
    }
}

impl<F> Future for Guarding<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let handling = this.handling;
        let response = match catch_unwind(AssertUnwindSafe(|| handling.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(Ok(response)))) => response,
            Ok(Poll::Ready(Err(_elapsed))) => timed_out(),
            Err(_panic) => panicked(&this.guards.metrics),
        };
        let books = this.books.take().expect("polled after completion");
        Poll::Ready(Ok(books.close(response, &this.guards.metrics)))
    }
}

/// What is noted about a request when it arrives, to account for it when it leaves.
struct Books {
    method: Method,
    route: Option<MatchedPath>,
    request_id: HeaderValue,
    started: Instant,
    in_flight: InFlight,
}

impl Books {
    /// Counts the response and tells the caller the request id.
    fn close(self, mut response: Response, metrics: &Metrics) -> Response {
        let status = response.status();
        let route = route_label(self.route.as_ref());
        let labels = [self.method.as_str(), route, status.as_str()];
        metrics.http_requests.with_label_values(&labels).inc();
        metrics
            .http_request_duration
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        drop(self.in_flight);
        response.headers_mut().insert(REQUEST_ID, self.request_id);
        response
    }
}

fn request_span(request: &Request, route: &str, request_id: &HeaderValue) -> Span {
    let span = tracing::info_span!(
        "request",
        http.request.method = request.method().as_str(),
        http.route = route,
        url.path = request.uri().path(),
        request_id = request_id.to_str().unwrap_or_default(),
        otel.name = Empty,
        otel.kind = Empty,
    );
    crate::telemetry::describe_server_span(&span, request.method(), route, request.headers());
    span
}

/// The panic itself is logged by the hook that `telemetry::init` installs.
fn panicked(metrics: &Metrics) -> Response {
    metrics.http_panics.inc();
    (StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n").into_response()
}

fn timed_out() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response()
}

/// The route pattern the request matched, as metrics and spans label it.
fn route_label(route: Option<&MatchedPath>) -> &str {
    route.map_or("unmatched", MatchedPath::as_str)
}

/// Request ids shaped like UUIDs: a random prefix drawn once per process, then a counter.
/// Unique without a system call per request (a random UUID per request costs one).
struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        // The hasher's keys are random per process; hashing the time mixes in more.
        let prefix = RandomState::new().hash_one(std::time::SystemTime::now());
        Self {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    /// The caller's `x-request-id` if it sent one, otherwise a new id, set on the request
    /// so that handlers see it too.
    fn adopt_or_assign(&self, request: &mut Request) -> HeaderValue {
        if let Some(id) = request.headers().get(REQUEST_ID) {
            return id.clone();
        }
        let id = self.next_id();
        request.headers_mut().insert(REQUEST_ID, id.clone());
        id
    }

    fn next_id(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        // 8-4-4 hex digits of the prefix, then 4-12 of the counter.
        let digits = (u128::from(self.prefix) << 64) | u128::from(count);
        let mut text = [0u8; 36];
        let mut shift = 128;
        for (at, byte) in text.iter_mut().enumerate() {
            *byte = if [8, 13, 18, 23].contains(&at) {
                b'-'
            } else {
                shift -= 4;
                HEX[(digits >> shift) as usize & 0xf]
            };
        }
        HeaderValue::from_bytes(&text).expect("hex digits and dashes make a valid header value")
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
        let ids = RequestIds::new();
        let (first, second) = (ids.next_id(), ids.next_id());
        assert_ne!(first, second);
        let text = first.to_str().unwrap();
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{text}");
        assert!(text.ends_with("-0000-000000000000"), "{text}");
        assert!(second.to_str().unwrap().ends_with("-000000000001"));
        assert!(
            RequestIds::new().prefix != ids.prefix,
            "each instance draws its own random prefix"
        );
    }

    #[test]
    fn a_callers_request_id_is_kept() {
        let ids = RequestIds::new();
        let mut request = Request::new(axum::body::Body::empty());
        request
            .headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("from-the-caller"));
        assert_eq!(ids.adopt_or_assign(&mut request), "from-the-caller");

        let mut request = Request::new(axum::body::Body::empty());
        let assigned = ids.adopt_or_assign(&mut request);
        assert_eq!(request.headers()[REQUEST_ID], assigned);
    }
}
