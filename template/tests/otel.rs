//! OTLP export, against collectors on loopback: one that answers, one that never does.
#![cfg(feature = "otel")]

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    sync::mpsc,
    time::{Duration, Instant},
};

use support::{Connection, Service, get};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

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

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

#[test]
fn spans_reach_the_collector_in_the_callers_trace() {
    let (collector, received) = collector(true);
    let endpoint = format!("http://{collector}");
    let mut service = Service::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("SHUTDOWN_DRAIN_DELAY", "100ms"),
    ]);
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let mut connection = Connection::open(service.http).unwrap();
    let response = connection
        .send("GET", "/", &[("traceparent", &traceparent)], b"")
        .unwrap();
    assert_eq!(response.status, 200);

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);

    let (path, body) = received
        .recv_timeout(support::PATIENCE)
        .expect("the collector received spans");
    assert_eq!(path, "/v1/traces");
    let trace_id = hex(TRACE_ID);
    assert!(
        body.windows(trace_id.len())
            .any(|window| window == trace_id),
        "the exported span does not carry the caller's trace id"
    );
    let span_name = b"GET /";
    assert!(
        body.windows(span_name.len())
            .any(|window| window == span_name),
        "the exported span is not named after the route"
    );
    let service_name = env!("CARGO_PKG_NAME").as_bytes();
    assert!(
        body.windows(service_name.len())
            .any(|window| window == service_name)
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

/// A cluster-wide `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` must not stop the pod: the service warns
/// and exports over the protocol it has.
#[test]
fn an_unsupported_protocol_is_a_warning_not_a_crash() {
    let (collector, received) = collector(true);
    let endpoint = format!("http://{collector}");
    let mut service = Service::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("SHUTDOWN_DRAIN_DELAY", "100ms"),
    ]);
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
