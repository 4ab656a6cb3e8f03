//! Example handlers. Replace them with your own; keep the shape: handlers are plain async
//! functions, and anything slow is written so that dropping its future cancels it.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;

use super::publisher::{EventPublisher, PublishError};

/// The longest `/slow` will wait, whatever it is asked.
const SLOW_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
struct AppState {
    publisher: Arc<EventPublisher>,
}

pub fn router(publisher: Arc<EventPublisher>, debug_routes: bool) -> Router {
    let router = Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow))
        .route("/echo", post(echo))
        .route("/events", post(publish_event));
    let router = if debug_routes {
        router.route("/panic", get(panic))
    } else {
        router
    };
    router.with_state(AppState { publisher })
}

async fn hello() -> &'static str {
    "hello\n"
}

/// Queues the request body as an event for the publisher; 503 when it cannot keep up, so
/// that callers back off instead of the service buffering without bound.
async fn publish_event(
    State(state): State<AppState>,
    body: String,
) -> Result<StatusCode, (StatusCode, &'static str)> {
    match state.publisher.publish(body) {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(PublishError::Full { .. }) => {
            Err((StatusCode::SERVICE_UNAVAILABLE, "event buffer full\n"))
        }
        Err(PublishError::Closed) => Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")),
    }
}

#[derive(Deserialize)]
struct SlowParams {
    #[serde(default)]
    ms: u64,
}

/// Answers after `ms` milliseconds. If the client goes away or the shutdown deadline cuts
/// the request, the future is dropped and the wait ends there.
async fn slow(Query(params): Query<SlowParams>) -> String {
    let wait = Duration::from_millis(params.ms).min(SLOW_LIMIT);
    let unfinished = LogIfDropped(Some("slow request cancelled before it finished"));
    tokio::time::sleep(wait).await;
    unfinished.disarm();
    format!("waited {}ms\n", wait.as_millis())
}

/// Returns the request body; bodies over REQUEST_BODY_LIMIT are refused with 413.
async fn echo(body: Bytes) -> Bytes {
    body
}

async fn panic() -> &'static str {
    panic!("GET /panic was called (DEBUG_ROUTES is on)")
}

/// Logs its message when dropped, unless disarmed first.
struct LogIfDropped(Option<&'static str>);

impl LogIfDropped {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for LogIfDropped {
    fn drop(&mut self) {
        if let Some(message) = self.0 {
            tracing::info!("{message}");
        }
    }
}
