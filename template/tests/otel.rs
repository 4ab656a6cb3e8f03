//! OTLP export, against collectors on loopback: one that answers (its requests decoded with
//! OpenTelemetry's protobuf types), one that never does.
#![cfg(feature = "otel")]

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    sync::mpsc,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use prost::Message;
use support::{Connection, Service, get};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Accepts OTLP/HTTP requests; with `answer` off it reads them and never replies.
fn collector(answer: bool) -> (SocketAddr, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        let line = line.trim_end().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(value) = line.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_owned();
                    let _ = sender.send((path, body));
                    if !answer {
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                    let _ = reader.get_mut().write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (address, received)
}

/// Every span in the export requests the collector received, decoded with OpenTelemetry's
/// protobuf types, with the resource's `service.name`.
fn decoded_spans(received: &mpsc::Receiver<(String, Vec<u8>)>) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    while let Ok((path, body)) = received.recv_timeout(Duration::from_secs(1)) {
        assert_eq!(path, "/v1/traces");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            let service = string_attribute(&resource.attributes, "service.name").unwrap();
            for scope_spans in resource_spans.scope_spans {
                spans.extend(
                    scope_spans
                        .spans
                        .into_iter()
                        .map(|span| (service.clone(), span)),
                );
            }
        }
    }
    spans
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    let found = attributes.iter().find(|attribute| attribute.key == key)?;
    found.value.as_ref()?.value.as_ref()
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(text) => Some(text.clone()),
        other => panic!("{key} is not a string: {other:?}"),
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(number) => Some(*number),
        other => panic!("{key} is not an integer: {other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// OpenTelemetry's HTTP server conventions, checked on decoded spans: names, kinds,
/// attributes and statuses for a 200 in the caller's trace, a 404, a 503 and an unknown
/// method.
#[test]
fn spans_follow_the_http_server_conventions_in_the_callers_trace() {
    let (collector, received) = collector(true);
    let endpoint = format!("http://{collector}");
    let mut service = Service::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("SHUTDOWN_DRAIN_DELAY", "100ms"),
        ("REQUEST_TIMEOUT", "200ms"),
    ]);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let mut connection = Connection::open(service.http).unwrap();
    let traced = [
        ("traceparent", traceparent.as_str()),
        ("baggage", "tenant=a"),
    ];
    assert_eq!(
        connection.send("GET", "/", &traced, b"").unwrap().status,
        200
    );
    assert_eq!(get(service.http, "/no/such/page").status, 404);
    assert_eq!(get(service.http, "/slow?ms=5000").status, 503);
    let mut connection = Connection::open(service.http).unwrap();
    assert_eq!(connection.send("BREW", "/", &[], b"").unwrap().status, 405);

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    let spans = decoded_spans(&received);
    let named = |name: &str| {
        let found = spans.iter().find(|(_, span)| span.name == name);
        &found
            .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
            .1
    };

    let ok = named("GET /");
    assert_eq!(hex(&ok.trace_id), TRACE_ID, "in the caller's trace");
    assert_eq!(hex(&ok.parent_span_id), PARENT_ID);
    assert_eq!(ok.kind, SpanKind::Server as i32);
    let attributes = &ok.attributes;
    assert_eq!(
        string_attribute(attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        string_attribute(attributes, "http.route").as_deref(),
        Some("/")
    );
    assert_eq!(
        string_attribute(attributes, "url.path").as_deref(),
        Some("/")
    );
    assert_eq!(
        string_attribute(attributes, "url.scheme").as_deref(),
        Some("http")
    );
    assert_eq!(
        string_attribute(attributes, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        int_attribute(attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        ok.status.clone().unwrap_or_default().code,
        StatusCode::Unset as i32
    );
    for (_, span) in &spans {
        for attribute in &span.attributes {
            let key = attribute.key.as_str();
            assert!(
                !(key.starts_with("code.") || key.starts_with("thread.") || key.ends_with("_ns")),
                "noise attribute {key} on {}",
                span.name
            );
        }
    }
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == env!("CARGO_PKG_NAME"))
    );

    // No route: named after the method alone, no http.route; a 4xx is not the server's error.
    let not_found = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| int_attribute(&span.attributes, "http.response.status_code") == Some(404))
        .expect("a span for the 404");
    assert_eq!(not_found.name, "GET");
    assert_eq!(attribute(&not_found.attributes, "http.route"), None);
    assert_eq!(
        not_found.status.clone().unwrap_or_default().code,
        StatusCode::Unset as i32
    );

    // The request timeout's 503 is the server's error.
    let timed_out = named("GET /slow");
    assert_eq!(
        int_attribute(&timed_out.attributes, "http.response.status_code"),
        Some(503)
    );
    assert_eq!(
        timed_out.status.clone().unwrap().code,
        StatusCode::Error as i32
    );
    assert_eq!(
        string_attribute(&timed_out.attributes, "error.type").as_deref(),
        Some("503")
    );

    // A method HTTP does not define is `_OTHER`, its span `HTTP`.
    let other = named("HTTP");
    assert_eq!(
        string_attribute(&other.attributes, "http.request.method").as_deref(),
        Some("_OTHER")
    );
    assert_eq!(
        string_attribute(&other.attributes, "http.request.method_original").as_deref(),
        Some("BREW")
    );
}

#[test]
fn a_collector_that_never_answers_cannot_hold_the_shutdown() {
    let (collector, received) = collector(false);
    let endpoint = format!("http://{collector}");
    let mut service = Service::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
        ("SHUTDOWN_DRAIN_DELAY", "100ms"),
        ("SHUTDOWN_CLEANUP_TIMEOUT", "1s"),
    ]);
    for _ in 0..20 {
        assert_eq!(get(service.http, "/").status, 200);
    }

    let signalled = Instant::now();
    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "the exit waited for the exporter's own timeout"
    );
    assert!(
        received.recv_timeout(support::PATIENCE).is_ok(),
        "an export was attempted"
    );
    service.wait_for_log_where(|line| {
        line["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("trace export did not flush"))
    });
}

/// A cluster-wide `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` (or a propagator this build lacks) must
/// not stop the pod: the service warns and exports over the protocol it has.
#[test]
fn an_unsupported_protocol_is_a_warning_not_a_crash() {
    let (collector, received) = collector(true);
    let endpoint = format!("http://{collector}");
    let mut service = Service::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_PROPAGATORS", "b3,tracecontext"),
        ("SHUTDOWN_DRAIN_DELAY", "100ms"),
    ]);
    service.wait_for_log_where(|line| {
        line["level"] == "WARN"
            && line["message"]
                .as_str()
                .is_some_and(|message| message.contains("OTEL_PROPAGATORS names b3"))
    });
    let warning = service.wait_for_log_where(|line| {
        line["level"] == "WARN"
            && line["message"]
                .as_str()
                .is_some_and(|message| message.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"))
    });
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("http/protobuf"),
        "{warning}"
    );
    assert_eq!(get(service.http, "/").status, 200);

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    let (path, _) = received
        .recv_timeout(support::PATIENCE)
        .expect("spans still reach the collector");
    assert_eq!(path, "/v1/traces");
}
