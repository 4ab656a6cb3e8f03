//! What every application request goes through, in one layer so that a request pays for one
//! future rather than a stack of them:
//! request id → `request` span → in-flight gauge and metrics → body limit (413) →
//! request memory (503) → panic catcher (500) → timeout (503) → your handler.

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
    body::{Body, HttpBody},
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{
        HeaderName, HeaderValue, Method, StatusCode,
        header::{Entry, RETRY_AFTER},
    },
    response::{IntoResponse, Response},
};
use http_body_util::Limited;
use pin_project_lite::pin_project;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tower::{Layer, Service, util::Either};
use tracing::{Span, field::Empty};

use crate::{
    metrics::{Metrics, RouteSeries},
    settings::Settings,
    telemetry::RequestFields,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The `status` label of a request that was never answered.
const CANCELLED: &str = "cancelled";

/// Wraps the application's routes in the request guards; the requests being answered hold
/// at most `request_memory` bytes.
pub(crate) fn guard(
    router: Router,
    metrics: &Metrics,
    settings: &Settings,
    request_memory: usize,
) -> Router {
    metrics
        .http_request_memory_limit
        .set(i64::try_from(request_memory).unwrap_or(i64::MAX));
    router.layer(GuardLayer(Arc::new(Guards {
        metrics: metrics.clone(),
        request_timeout: settings.request_timeout,
        body_limit: settings.request_body_limit,
        request_memory: RequestMemory::new(request_memory),
        request_ids: RequestIds::new(),
    })))
}

struct Guards {
    metrics: Metrics,
    request_timeout: Duration,
    body_limit: usize,
    request_memory: RequestMemory,
    request_ids: RequestIds,
}

#[derive(Clone)]
struct GuardLayer(Arc<Guards>);

/// The guards as one route holds them: the shared ones, and the metric series it counts in.
struct RouteGuards {
    shared: Arc<Guards>,
    series: RouteSeries,
}

/// axum's own limit for the bodies its extractors read.
const AXUM_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The route as the guards see it. Under a limit above axum's own, axum's is turned off, or
/// the extractors would refuse bodies the guards allow. Under a lower one (the default) it
/// stays: it can never bind, and turning it off would cost every request an extension.
type Route<S> = Either<S, <DefaultBodyLimit as Layer<S>>::Service>;

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<Route<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = if self.0.body_limit > AXUM_BODY_LIMIT {
            Either::Right(DefaultBodyLimit::disable().layer(inner))
        } else {
            Either::Left(inner)
        };
        Guarded {
            inner,
            guards: Arc::new(RouteGuards {
                shared: self.0.clone(),
                series: RouteSeries::default(),
            }),
        }
    }
}

#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    guards: Arc<RouteGuards>,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let guards = self.guards.clone();
        let shared = &*guards.shared;
        let request_id = shared.request_ids.adopt_or_assign(&mut request);
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        let span = request_span(&request, method, route.as_ref(), &request_id);
        let mut books = Books {
            in_flight: InFlight::count(&shared.metrics),
            method,
            route,
            request_id,
            started: Instant::now(),
            memory: None,
        };

        let Some(request) = limit_body(request, shared.body_limit) else {
            return answered(books.close(too_large(), &span, &guards));
        };
        books.memory = shared.request_memory.reserve(&request, shared.body_limit);
        if books.memory.is_none() {
            shared.metrics.http_requests_shed.inc();
            return answered(books.close(shed(), &span, &guards));
        }
        // Called in place: axum clones this service for every request, and its routes are
        // always ready.
        let inner = &mut self.inner;
        let handling = span.in_scope(|| catch_unwind(AssertUnwindSafe(|| inner.call(request))));
        let Ok(handling) = handling else {
            let response = panicked(&shared.metrics);
            return answered(books.close(response, &span, &guards));
        };
        Answer::Later {
            guarding: Guarding {
                handling,
                timer: None,
                span,
                books: Some(books),
                guards,
            },
        }
    }
}

pin_project! {
    /// The guards' answer: at once, or once the handler has answered. Not boxed: axum boxes
    /// each route's future already.
    #[project = AnswerProjection]
    enum Answer<F> {
        Now { response: Option<Response> },
        Later { #[pin] guarding: Guarding<F> },
    }
}

fn answered<F>(response: Response) -> Answer<F> {
    Answer::Now {
        response: Some(response),
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Now { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            AnswerProjection::Later { guarding } => guarding.poll(cx),
        }
    }
}

pin_project! {
    /// One request on its way through the guards. A hand-written future rather than an
    /// `async` block: it stays small enough for the allocator's fast path.
    struct Guarding<F> {
        #[pin]
        handling: F,
        // Set only once the handler has had to wait: most requests never need a timer.
        #[pin]
        timer: Option<Sleep>,
        span: Span,
        books: Option<Books>,
        guards: Arc<RouteGuards>,
    }

    // Dropped before answering: the client went away, or the shutdown deadline cut it.
    impl<F> PinnedDrop for Guarding<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(books) = this.books.take() {
                books.abandon(this.guards);
            }
        }
    }
}

impl<F> Future for Guarding<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let handling = this.handling;
        let response = match catch_unwind(AssertUnwindSafe(|| handling.poll(cx))) {
            Ok(Poll::Ready(Ok(response))) => response,
            Ok(Poll::Pending) => {
                if this.timer.is_none() {
                    let books = this.books.as_ref().expect("polled after completion");
                    let deadline = books.started + this.guards.shared.request_timeout;
                    this.timer
                        .set(Some(tokio::time::sleep_until(deadline.into())));
                }
                let timer = this.timer.as_pin_mut().expect("set above");
                if timer.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                timed_out()
            }
            Err(_panic) => panicked(&this.guards.shared.metrics),
        };
        let books = this.books.take().expect("polled after completion");
        Poll::Ready(Ok(books.close(response, this.span, this.guards)))
    }
}

/// What is noted about a request when it arrives, to account for it when it leaves.
struct Books {
    method: &'static str,
    route: Option<MatchedPath>,
    request_id: HeaderValue,
    started: Instant,
    in_flight: InFlight,
    /// The request's share of REQUEST_MEMORY, given back with the books.
    memory: Option<OwnedSemaphorePermit>,
}

impl Books {
    /// Counts the request in `http_requests_total` and its duration, with `status`.
    fn count(&self, status: &str, guards: &RouteGuards) {
        let labels = [self.method, route_label(self.route.as_ref()), status];
        let seconds = self.started.elapsed().as_secs_f64();
        guards
            .shared
            .metrics
            .count_request(&guards.series, labels, seconds);
    }

    /// Counts a request that was never answered, under `status="cancelled"`.
    fn abandon(self, guards: &RouteGuards) {
        self.count(CANCELLED, guards);
    }

    /// Counts the response, notes it in the request's span and tells the caller the
    /// request id.
    fn close(self, mut response: Response, span: &Span, guards: &RouteGuards) -> Response {
        let status = response.status();
        crate::telemetry::describe_response(span, status);
        self.count(status.as_str(), guards);
        guards.shared.metrics.count_response(status);
        drop(self.in_flight);
        response.headers_mut().insert(REQUEST_ID, self.request_id);
        response
    }
}

/// The request's span, with OpenTelemetry's HTTP server attributes: `http.route` only when
/// a route matched; the rest is filled in by `telemetry` when spans are exported. For JSON
/// logs alone, the request's own fields are written only if a line is logged in the span.
fn request_span(
    request: &Request,
    method: &'static str,
    route: Option<&MatchedPath>,
    request_id: &HeaderValue,
) -> Span {
    if crate::telemetry::defers_request_fields() {
        let span = tracing::info_span!(
            "request",
            http.request.method = Empty,
            http.route = Empty,
            url.path = Empty,
            request_id = Empty,
        );
        // A span that RUST_LOG turns off keeps nothing.
        if !span.is_disabled() {
            let fields = RequestFields {
                method,
                route: route.cloned(),
                uri: request.uri().clone(),
                request_id: request_id.clone(),
            };
            fields.defer(&span);
        }
        return span;
    }
    let span = tracing::info_span!(
        "request",
        http.request.method = method,
        http.route = route.map(MatchedPath::as_str),
        url.path = request.uri().path(),
        request_id = request_id.to_str().unwrap_or_default(),
        http.request.method_original = Empty,
        http.response.status_code = Empty,
        url.scheme = Empty,
        network.protocol.version = Empty,
        error.type = Empty,
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
    );
    crate::telemetry::describe_server_span(&span, request, method, route.map(MatchedPath::as_str));
    span
}

/// The method as metrics and spans label it: one of HTTP's own methods, or `_OTHER` (as
/// OpenTelemetry's conventions say), so that clients cannot mint label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// Holds the body to `limit`: `None` when its declared length is already over it; otherwise
/// a body without a declared length fails when read past the limit (axum's body extractors
/// then answer 413). A declared length is enforced by hyper itself.
fn limit_body(request: Request, limit: usize) -> Option<Request> {
    let size = request.body().size_hint();
    if size.lower() > limit as u64 {
        return None;
    }
    if size.upper().is_some() {
        return Some(request);
    }
    Some(request.map(|body| Body::new(Limited::new(body, limit))))
}

/// The bytes of REQUEST_MEMORY, counted in KiB (a semaphore's permits are counted in `u32`).
struct RequestMemory {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl RequestMemory {
    fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        let kib = Semaphore::new((total_kib as usize).min(Semaphore::MAX_PERMITS));
        Self {
            kib: Arc::new(kib),
            total_kib,
        }
    }

    /// Reserves what `request` may hold: its headers, counted as HTTP/2 counts a header
    /// list, and its body at the declared length, or at `body_limit` when undeclared.
    /// `None` when the requests in flight hold too much already: no waiting, since a
    /// request that waits holds its memory too.
    fn reserve(&self, request: &Request, body_limit: usize) -> Option<OwnedSemaphorePermit> {
        let head: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum::<usize>()
            + request.uri().path().len();
        let body = request
            .body()
            .size_hint()
            .upper()
            .map_or(body_limit, |declared| declared as usize);
        let kib = u32::try_from((head + body).div_ceil(1024)).unwrap_or(u32::MAX);
        self.kib
            .clone()
            .try_acquire_many_owned(kib.min(self.total_kib))
            .ok()
    }
}

fn shed() -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, "server busy, retry\n").into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn too_large() -> Response {
    (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response()
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
    /// `xxxxxxxx-xxxx-xxxx-`, the hex digits of the random prefix.
    prefix: [u8; 19],
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        // The hasher's keys are random per process; hashing the time mixes in more.
        let random = RandomState::new().hash_one(std::time::SystemTime::now());
        let mut prefix = *b"00000000-0000-0000-";
        write_hex(random, &mut prefix);
        Self {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    /// The caller's `x-request-id` if it sent one, otherwise a new id, set on the request
    /// so that handlers see it too.
    fn adopt_or_assign(&self, request: &mut Request) -> HeaderValue {
        // One lookup for both cases: hashing the header name is most of a lookup's cost.
        match request.headers_mut().entry(REQUEST_ID) {
            Entry::Occupied(caller) => caller.get().clone(),
            Entry::Vacant(slot) => slot.insert(self.next_id()).clone(),
        }
    }

    fn next_id(&self) -> HeaderValue {
        let count = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = *b"00000000-0000-0000-0000-000000000000";
        text[..19].copy_from_slice(&self.prefix);
        write_hex(count, &mut text[19..]);
        HeaderValue::from_bytes(&text).expect("hex digits and dashes make a valid header value")
    }
}

/// Puts the 16 hex digits of `value`, most significant first, where `text` is not a dash.
fn write_hex(value: u64, text: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut shift = 64;
    for digit in text.iter_mut().filter(|byte| **byte != b'-') {
        shift -= 4;
        *digit = HEX[(value >> shift) as usize & 0xf];
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
        let mut ids = RequestIds::new();
        ids.next = AtomicU64::new(0x0123_4567_89ab_cdef);
        assert!(
            ids.next_id()
                .to_str()
                .unwrap()
                .ends_with("-0123-456789abcdef")
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
