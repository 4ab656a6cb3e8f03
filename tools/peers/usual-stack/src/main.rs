//! The usual hand-written axum service on `ADDR`: a request id set and propagated, a
//! request span, a timeout, a panic catcher, a body limit, per-route metrics on
//! `/metrics`, JSON logs at INFO, and `with_graceful_shutdown` on SIGTERM. Prints `ready`
//! once listening.

use std::time::Duration;

use axum::{Router, http::StatusCode, routing::get};
use axum_prometheus::PrometheusMetricLayer;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(true)
        .init();

    let (metrics, handle) = PrometheusMetricLayer::pair();
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/metrics", get(move || async move { handle.render() }))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(
                    |request: &axum::http::Request<_>| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|id| id.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            uri = %request.uri(),
                            request_id = id,
                        )
                    },
                ))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(metrics)
                .layer(CatchPanicLayer::new())
                .layer(RequestBodyLimitLayer::new(1 << 20))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_secs(30),
                )),
        );

    let address = std::env::var("ADDR").expect("ADDR names the address to listen on");
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    println!("ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(sigterm())
        .await
        .unwrap();
}

async fn sigterm() {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler")
        .recv()
        .await;
}
