//! The `request` span's own fields, written into the span only when a line is logged in it.
//!
//! Most requests log nothing, yet writing a span's fields as JSON when it is created cost
//! a twentieth of a request's instructions. So when logs are JSON and spans are not
//! exported, the span is created with its fields empty and keeps the request's values as
//! they already are (the route's `Arc`, the request id's bytes); [`WriteDeferred`] writes
//! them into the span the first time an event inside it is logged, just before the log
//! layer reads the span.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::{extract::MatchedPath, http::HeaderValue, http::Uri};
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::{
    Layer, Registry,
    fmt::FormattedFields,
    layer::Context,
    registry::{LookupSpan, SpanRef},
};

use super::json_fields::{self, JsonSpanFields};

/// Set once at start: whether request spans defer their fields.
static DEFERRING: AtomicBool = AtomicBool::new(false);

pub(super) fn defer_from_now_on() {
    DEFERRING.store(true, Ordering::Relaxed);
}

/// Whether request spans are created with their fields empty, to be filled in by
/// [`RequestFields::defer`].
pub(crate) fn deferring() -> bool {
    DEFERRING.load(Ordering::Relaxed)
}

/// What the `request` span says about its request.
pub(crate) struct RequestFields {
    pub(crate) method: &'static str,
    pub(crate) route: Option<MatchedPath>,
    pub(crate) uri: Uri,
    pub(crate) request_id: HeaderValue,
}

impl RequestFields {
    /// Keeps the fields with `span` until a line is logged in it. Under a subscriber other
    /// than the runtime's, they are recorded at once.
    pub(crate) fn defer(self, span: &Span) {
        let mut fields = Some(self);
        span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>();
            if let Some(span) = registry.and_then(|registry| registry.span(id)) {
                let fields = fields.take().expect("taken once");
                span.extensions_mut().insert(Deferred(fields));
            }
        });
        if let Some(fields) = fields {
            for (name, value) in fields.members() {
                span.record(name, value);
            }
        }
    }

    fn members(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            Some(("http.request.method", self.method)),
            self.route
                .as_ref()
                .map(|route| ("http.route", route.as_str())),
            Some(("url.path", self.uri.path())),
            Some(("request_id", self.request_id.to_str().unwrap_or_default())),
        ]
        .into_iter()
        .flatten()
    }
}

struct Deferred(RequestFields);

/// Writes a span's deferred fields into its JSON fields before the log layer, which comes
/// after this layer, formats an event inside it.
pub(super) struct WriteDeferred;

impl<S> Layer<S> for WriteDeferred
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The span the log layer shows: the event's explicit parent, or the current one.
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            write_deferred(&span);
        }
    }
}

fn write_deferred<'a, R: LookupSpan<'a>>(span: &SpanRef<'a, R>) {
    if span.extensions().get::<Deferred>().is_none() {
        return;
    }
    let mut extensions = span.extensions_mut();
    let Some(Deferred(fields)) = extensions.remove::<Deferred>() else {
        return;
    };
    if let Some(formatted) = extensions.get_mut::<FormattedFields<JsonSpanFields>>() {
        json_fields::append_strings(&mut formatted.fields, fields.members());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tracing::field::Empty;

    use super::*;
    use crate::telemetry::json_fields::tests::logged_lines;

    fn deferred_request_span() -> Span {
        let span = tracing::info_span!(
            "request",
            http.request.method = Empty,
            http.route = Empty,
            url.path = Empty,
            request_id = Empty,
            user = Empty,
        );
        RequestFields {
            method: "GET",
            route: None,
            uri: "/orders/7?page=2".parse().unwrap(),
            request_id: HeaderValue::from_static("id \"1\""),
        }
        .defer(&span);
        span
    }

    #[test]
    fn every_line_in_the_span_has_the_fields_once() {
        let lines = logged_lines(|| {
            let span = deferred_request_span();
            span.record("user", "ann");
            span.in_scope(|| {
                tracing::info!("first");
                tracing::warn!("second");
            });
        });
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_eq!(
                line["span"],
                json!({
                    "name": "request",
                    "http.request.method": "GET",
                    "url.path": "/orders/7",
                    "request_id": "id \"1\"",
                    "user": "ann",
                }),
                "{line}"
            );
        }
    }

    #[test]
    fn a_line_with_the_span_as_explicit_parent_has_them_too() {
        let lines = logged_lines(|| {
            let span = deferred_request_span();
            tracing::info!(parent: &span, "from outside");
        });
        assert_eq!(lines[0]["span"]["url.path"], "/orders/7");
    }

    #[test]
    fn a_span_nothing_is_logged_in_keeps_them_unwritten() {
        let lines = logged_lines(|| {
            let span = deferred_request_span();
            let written = span.with_subscriber(|(id, dispatch)| {
                let registry = dispatch.downcast_ref::<Registry>().unwrap();
                let span = registry.span(id).unwrap();
                let extensions = span.extensions();
                let fields = extensions.get::<FormattedFields<JsonSpanFields>>().unwrap();
                (
                    fields.fields.clone(),
                    extensions.get::<Deferred>().is_some(),
                )
            });
            assert_eq!(written, Some(("{}".to_owned(), true)));
        });
        assert!(lines.is_empty());
    }
}
