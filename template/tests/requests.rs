//! Request guards, probes and metrics, on the real binary.

mod support;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    time::Duration,
};

use support::{Connection, PATIENCE, Service, binary, get};

#[test]
fn probes_answer_on_the_admin_port_only() {
    let service = Service::start(&[]);
    for path in ["/livez", "/readyz", "/startupz", "/metrics"] {
        assert_eq!(get(service.admin, path).status, 200, "{path}");
        assert_eq!(
            get(service.http, path).status,
            404,
            "{path} on the app port"
        );
    }
}

/// What alerts and dashboards count exists at 0 from the start, so that Prometheus's
/// `increase()` sees the first shutdown and the first 5xx like any other.
#[test]
fn what_alerts_count_is_counted_from_zero() {
    let service = Service::start(&[]);
    for outcome in ["clean", "deadline_exceeded"] {
        let sample = [r#"shutdowns_total{outcome=""#, outcome, r#""}"#].concat();
        assert_eq!(service.metric(&sample), 0.0, "{sample}");
    }
    for class in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"] {
        let sample = [r#"http_responses_total{class=""#, class, r#""}"#].concat();
        assert_eq!(service.metric(&sample), 0.0, "{sample}");
    }
    assert_eq!(get(service.http, "/no/such/page").status, 404);
    assert_eq!(service.metric(r#"http_responses_total{class="4xx"}"#), 1.0);
}

#[test]
fn a_panic_becomes_a_500_and_the_process_lives_on() {
    let mut service = Service::start(&[("DEBUG_ROUTES", "true")]);
    let response = get(service.http, "/panic");
    assert_eq!(response.status, 500);
    assert_eq!(get(service.http, "/").status, 200);
    assert!(service.is_running());
    assert_eq!(service.metric("http_panics_total"), 1.0);
    let logged = service.wait_for_log("panicked");
    assert!(logged["panic"].as_str().unwrap().contains("GET /panic"));
    // Logged inside the request's span, which names the route and the request id.
    let span = &logged["span"];
    assert_eq!(span["http.route"], "/panic", "{logged}");
    assert_eq!(span["http.request.method"], "GET", "{logged}");
    assert_eq!(span["url.path"], "/panic", "{logged}");
    assert_eq!(
        span["request_id"].as_str(),
        response.header("x-request-id"),
        "{logged}"
    );
}

#[test]
fn the_panic_route_is_off_by_default() {
    let service = Service::start(&[]);
    assert_eq!(get(service.http, "/panic").status, 404);
}

#[test]
fn oversized_bodies_get_413() {
    let service = Service::start(&[("REQUEST_BODY_LIMIT", "1024")]);
    let mut connection = Connection::open(service.http).unwrap();
    let fits = connection
        .send("POST", "/echo", &[], &[b'x'; 1024])
        .unwrap();
    assert_eq!((fits.status, fits.body.len()), (200, 1024));
    let too_big = connection
        .send("POST", "/echo", &[], &[b'x'; 1025])
        .unwrap();
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.body, "request body too large\n");
}

#[test]
fn bodies_of_undeclared_length_are_held_to_the_limit_too() {
    let service = Service::start(&[("REQUEST_BODY_LIMIT", "1024")]);
    let half = [b'x'; 512];
    let fits = Connection::open(service.http)
        .unwrap()
        .send_chunked("POST", "/echo", &[&half, &half])
        .unwrap();
    assert_eq!((fits.status, fits.body.len()), (200, 1024));
    let too_big = Connection::open(service.http)
        .unwrap()
        .send_chunked("POST", "/echo", &[&half, &half, b"x"])
        .unwrap();
    assert_eq!(too_big.status, 413);
}

#[test]
fn the_limit_replaces_axums_default_for_extractors() {
    // axum's extractors stop at 2 MiB unless told otherwise; the configured limit rules.
    let service = Service::start(&[("REQUEST_BODY_LIMIT", "3145728")]);
    let body = vec![b'x'; 5 << 19];
    let echoed = Connection::open(service.http)
        .unwrap()
        .send("POST", "/echo", &[], &body)
        .unwrap();
    assert_eq!((echoed.status, echoed.body.len()), (200, body.len()));
}

#[test]
fn slow_handlers_get_503_at_the_request_timeout() {
    let service = Service::start(&[("REQUEST_TIMEOUT", "200ms")]);
    let response = get(service.http, "/slow?ms=5000");
    assert_eq!(response.status, 503);
    service.wait_for_log("slow request cancelled before it finished");
}

#[test]
fn clients_that_never_finish_their_headers_are_disconnected() {
    let service = Service::start(&[("HEADER_READ_TIMEOUT", "300ms")]);
    let mut slowloris = Connection::open(service.http).unwrap();
    slowloris
        .write_raw(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    slowloris.write_raw(b"still").unwrap();
    assert!(slowloris.is_closed_by_server());
    assert_eq!(get(service.http, "/").status, 200);
}

#[test]
fn an_idle_keep_alive_connection_outlives_the_header_read_timeout() {
    let service = Service::start(&[("HEADER_READ_TIMEOUT", "200ms")]);
    let mut connection = Connection::open(service.http).unwrap();
    assert_eq!(connection.get("/").unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(800));
    let reused = connection
        .get("/")
        .expect("the idle connection is still open");
    assert_eq!(reused.status, 200);
}

#[test]
fn connections_idle_past_the_idle_timeout_are_closed() {
    let service = Service::start(&[("IDLE_TIMEOUT", "300ms")]);
    let mut connection = Connection::open(service.http).unwrap();
    assert_eq!(connection.get("/").unwrap().status, 200);
    assert!(connection.is_closed_by_server());
    service.wait_until("the connection is gone", |service| {
        service.metric("http_connections_open") == 0.0
    });
}

#[test]
fn metrics_label_requests_by_route_not_by_raw_path() {
    let service = Service::start(&[]);
    assert_eq!(get(service.http, "/slow?ms=1").status, 200);
    assert_eq!(get(service.http, "/no/such/page").status, 404);
    let count = |labels: &str| service.metric(&["http_requests_total{", labels, "}"].concat());
    assert_eq!(count(r#"method="GET",route="/slow",status="200""#), 1.0);
    assert_eq!(count(r#"method="GET",route="unmatched",status="404""#), 1.0);
    let text = get(service.admin, "/metrics").body;
    for family in [
        "http_request_duration_seconds_bucket",
        "lifecycle_state{state=\"ready\"} 1",
        "shutdown_budget_seconds{phase=\"timeout\"}",
        "build_info{",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
}

#[test]
fn the_healthcheck_subcommand_follows_readiness() {
    let service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "5s")]);
    let healthcheck = || {
        Command::new(binary())
            .args([
                "healthcheck",
                "--url",
                &format!("http://{}/readyz", service.admin),
            ])
            .output()
            .unwrap()
    };
    assert!(healthcheck().status.success());
    service.signal(libc::SIGTERM);
    service.wait_for_log_where(|line| line["state"] == "draining");
    let draining = healthcheck();
    assert_eq!(draining.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&draining.stderr).contains("503"));
}

/// A client may shut down its sending side once its request is out and still wait for the
/// answer.
#[test]
fn a_client_that_half_closes_still_gets_its_answer() {
    let service = Service::start(&[]);
    let mut stream = TcpStream::connect(service.http).unwrap();
    stream
        .write_all(b"GET /slow?ms=100 HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("waited 100ms\n"), "{answer}");
}

/// A request whose client went away is still counted: over HTTP/1 its handler runs to the
/// end (a half-closed client cannot be told from a gone one), and its outcome is counted
/// then. (One cut by the shutdown deadline is counted as `cancelled`.)
#[test]
fn a_request_the_client_abandoned_is_still_counted() {
    let service = Service::start(&[]);
    let mut stream = TcpStream::connect(service.http).unwrap();
    stream
        .write_all(b"GET /slow?ms=300 HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    service.wait_until("the request is in flight", |service| {
        service.metric("http_requests_in_flight") == 1.0
    });
    reset(stream);
    let counted = r#"http_requests_total{method="GET",route="/slow",status="200"} 1"#;
    service.wait_until("the abandoned request is counted", |service| {
        get(service.admin, "/metrics").body.contains(counted)
    });
    assert_eq!(service.metric("http_requests_in_flight"), 0.0);
}

/// Closes `stream` with a reset, as a client that gives up does.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a socket this function owns, with a pointer to a live value
    // of the size given.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "SO_LINGER");
    drop(stream);
}

/// Each connection is a file descriptor: the soft limit (often 1024) is raised to the hard
/// one at start, so that a burst of clients does not meet it first.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_one() {
    let service = Service::start_with_open_files(&[], 256);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", service.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    let (soft, hard) = (open_files[3], open_files[4]);
    assert_eq!(soft, hard, "{limits}");
    let raised = service.wait_for_log("open file limit raised to the hard limit");
    assert_eq!(raised["from"], 256);
}

/// No client can hold an admin connection open: one that sends nothing, or trickles its
/// headers, is disconnected (after 5 s) rather than kept for good.
#[test]
fn the_admin_port_disconnects_clients_that_send_nothing_or_too_slowly() {
    let service = Service::start(&[]);
    let silent = TcpStream::connect(service.admin).unwrap();
    let mut trickling = TcpStream::connect(service.admin).unwrap();
    trickling.write_all(b"GET /livez HTTP/1.1\r\n").unwrap();
    for mut client in [silent, trickling] {
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = Vec::new();
        match client.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(error) => assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset,
                "still open after {PATIENCE:?}"
            ),
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(!answer.contains(" 200 "), "{answer}");
    }
    assert_eq!(
        get(service.admin, "/livez").status,
        200,
        "the port still answers"
    );
}
