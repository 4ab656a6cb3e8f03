//! Clients that are hostile or broken, on the real binary: none of them can take the service
//! out of the Service for long, make its memory grow with their numbers, or starve the
//! probes. Each limit shows in a metric; `docs/hostile-clients.md` lists them.

mod support;

use std::{
    io::Write,
    net::TcpStream,
    time::{Duration, Instant},
};

use support::{Connection, Service, get};

/// One `GET /prestop` from anyone but the kubelet: readiness is off for the pre-stop delay
/// and the 10 s a signal may take to follow, then back on, and the call is counted.
#[test]
fn a_stray_pre_stop_call_takes_the_pod_out_only_as_long_as_a_real_one() {
    let service = Service::start(&[("PRESTOP_DELAY", "200ms")]);
    let called = Instant::now();
    let answer = get(service.admin, "/prestop");
    assert_eq!(answer.status, 200);
    assert_eq!(get(service.admin, "/readyz").status, 503);
    service.wait_until("ready again", |service| {
        get(service.admin, "/readyz").status == 200
    });
    assert!(
        called.elapsed() >= Duration::from_millis(10_200),
        "out for the delay and the 10 s a signal may take, no less"
    );
    assert_eq!(service.metric("prestop_hooks_unfollowed_total"), 1.0);
    service.wait_for_log("pre-stop hook called, but no shutdown signal followed: ready again (was it called by someone other than the kubelet?)");
}

/// Methods are label values: whatever clients send, the series are HTTP's own methods and
/// `_OTHER`, so a scrape stays the same size.
#[test]
fn invented_methods_do_not_mint_series() {
    let service = Service::start(&[]);
    let mut connection = Connection::open(service.http).unwrap();
    for n in 0..300 {
        let method = format!("M{n:X}ETHOD");
        assert_eq!(connection.send(&method, "/", &[], b"").unwrap().status, 405);
    }
    let metrics = get(service.admin, "/metrics").body;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .collect();
    assert_eq!(series.len(), 1, "{series:#?}");
    assert!(series[0].contains(r#"method="_OTHER""#), "{series:#?}");
    assert!(series[0].ends_with(" 300"), "{series:#?}");
}

/// Uploads that stall hold their declared bodies: beyond REQUEST_MEMORY, the next request
/// is answered 503 at once with `Retry-After`, and memory is free again when they end.
#[test]
fn bodies_held_at_once_are_bounded_by_request_memory() {
    let body_limit = 1024 * 1024;
    let service = Service::start(&[("REQUEST_MEMORY", &(body_limit * 5 / 2).to_string())]);
    assert_eq!(
        service.metric("http_request_memory_limit_bytes"),
        (body_limit * 5 / 2) as f64
    );
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut upload = TcpStream::connect(service.http).unwrap();
            let head = format!(
                "POST /events HTTP/1.1\r\nHost: test\r\nContent-Length: {body_limit}\r\n\r\n"
            );
            upload.write_all(head.as_bytes()).unwrap();
            upload.write_all(&[b'x'; 1024]).unwrap();
            upload
        })
        .collect();
    service.wait_until("both uploads are in flight", |service| {
        service.metric("http_requests_in_flight") == 2.0
    });

    // Shed on its declared length, before its body is read: the server answers and closes
    // at once, so the client sends only the head and the body's first bytes (writing the
    // whole megabyte would race that close and meet a reset).
    let mut shed = Connection::open(service.http).unwrap();
    let head =
        format!("POST /events HTTP/1.1\r\nHost: test\r\nContent-Length: {body_limit}\r\n\r\n");
    shed.write_raw(head.as_bytes()).unwrap();
    shed.write_raw(&[b'y'; 1024]).unwrap();
    let refused = shed.read_response().unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(service.metric("http_requests_shed_total"), 1.0);
    assert_eq!(
        get(service.http, "/").status,
        200,
        "small requests still fit"
    );

    drop(stalled);
    service.wait_until("the stalled uploads are gone", |service| {
        service.metric("http_requests_in_flight") == 0.0
    });
    let accepted = Connection::open(service.http)
        .unwrap()
        .send("POST", "/events", &[], &[b'y'; 1024 * 1024])
        .unwrap();
    assert_eq!(accepted.status, 202);
}

/// A connection that never sends a byte is closed after HEADER_READ_TIMEOUT, like one that
/// trickles its headers; not kept for IDLE_TIMEOUT.
#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_header_read_timeout() {
    let service = Service::start(&[("HEADER_READ_TIMEOUT", "300ms")]);
    let mut silent = Connection::open(service.http).unwrap();
    assert!(silent.is_closed_by_server());
    service.wait_until("the connection is gone", |service| {
        service.metric("http_connections_open") == 0.0
    });
}

/// At MAX_CONNECTIONS the service stops accepting and closes idle keep-alive connections to
/// make room, so the next client is served; a connection with a request in flight is kept.
#[test]
fn at_the_connection_limit_idle_connections_make_room() {
    let service = Service::start(&[("MAX_CONNECTIONS", "3")]);
    assert_eq!(service.metric("http_connections_limit"), 3.0);
    let busy = service.request_in_flight("/slow?ms=1500");
    let mut idle: Vec<Connection> = (0..2)
        .map(|_| {
            let mut connection = Connection::open(service.http).unwrap();
            assert_eq!(connection.get("/").unwrap().status, 200);
            connection
        })
        .collect();

    assert_eq!(
        get(service.http, "/").status,
        200,
        "the fourth client is served"
    );
    assert!(service.metric("http_connections_limited_total") >= 1.0);
    assert!(
        idle.iter_mut()
            .any(|connection| connection.is_closed_by_server()),
        "an idle connection made room"
    );
    let busy = busy.join().unwrap().unwrap();
    assert_eq!(busy.status, 200, "the busy connection was kept");
}

/// A flood of connections up to the open-file limit: the application port stops accepting
/// short of it, so the admin port keeps answering probes and the pod is neither restarted
/// nor taken out of the Service.
#[test]
fn a_connection_flood_leaves_file_descriptors_for_the_probes() {
    let limit = 256;
    let service = Service::start_with_open_file_limits(&[], limit, Some(limit));
    let flood: Vec<TcpStream> = (0..limit + 64)
        .map_while(|_| TcpStream::connect(service.http).ok())
        .collect();
    service.wait_until("the limit is reached", |service| {
        service.metric("http_connections_limited_total") >= 1.0
    });
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(get(service.admin, path).status, 200, "{path}");
    }
    assert!(service.metric("http_connections_open") <= (limit - 128) as f64);
    drop(flood);
    assert_eq!(get(service.http, "/").status, 200);
}

/// Headers are read into a buffer of 64 KiB at most: larger ones are refused with 431
/// instead of growing the buffer to hyper's own 400 KiB per connection.
#[test]
fn headers_beyond_64_kib_are_refused() {
    let service = Service::start(&[]);
    let huge = "x".repeat(70 * 1024);
    let refused = Connection::open(service.http)
        .unwrap()
        .send("GET", "/", &[("X-Huge", &huge)], b"")
        .unwrap();
    assert_eq!(refused.status, 431);
    let fits = "x".repeat(30 * 1024);
    let served = Connection::open(service.http)
        .unwrap()
        .send("GET", "/", &[("X-Large", &fits)], b"")
        .unwrap();
    assert_eq!(served.status, 200);
}
