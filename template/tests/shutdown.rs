//! The shutdown sequence, step by step, on the real binary with real signals.

mod support;

use std::time::{Duration, Instant};

use support::{Connection, Service, get, get_in_background};

const SIGTERM: i32 = libc::SIGTERM;
const SIGINT: i32 = libc::SIGINT;

/// Exit code documented for a shutdown cut short by a deadline.
const EXIT_DEADLINE_EXCEEDED: i32 = 3;

#[test]
fn readiness_fails_at_once_while_the_listener_keeps_serving() {
    let mut service =
        Service::start(&[("SHUTDOWN_DRAIN_DELAY", "3s"), ("SHUTDOWN_TIMEOUT", "10s")]);
    assert_eq!(get(service.admin, "/readyz").status, 200);
    let mut keep_alive = Connection::open(service.http).unwrap();
    assert!(!keep_alive.get("/").unwrap().asks_to_close());

    service.signal(SIGTERM);
    service.wait_for_log_where(|line| line["state"] == "draining");

    let readyz = get(service.admin, "/readyz");
    assert_eq!(readyz.status, 503);
    assert!(readyz.body.contains("draining"), "{}", readyz.body);
    assert_eq!(
        get(service.admin, "/livez").status,
        200,
        "liveness stays up"
    );
    assert_eq!(service.metric("lifecycle_draining"), 1.0);

    // Still serving, on new and existing connections, but asking every client to close.
    let fresh = get(service.http, "/");
    assert_eq!(fresh.status, 200);
    assert!(fresh.asks_to_close());
    let reused = keep_alive.get("/").unwrap();
    assert_eq!(reused.status, 200);
    assert!(reused.asks_to_close());
    assert!(keep_alive.is_closed_by_server());
    assert!(service.is_running(), "the drain delay has not passed yet");

    assert_eq!(service.wait_exit(), 0);
}

#[test]
fn a_request_in_flight_at_sigterm_completes() {
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "200ms")]);
    let slow = service.request_in_flight("/slow?ms=1500");

    service.signal(SIGTERM);

    let response = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "waited 1500ms\n");
    assert_eq!(service.wait_exit(), 0);
}

#[test]
fn idle_keep_alive_connections_do_not_delay_exit() {
    let timeout = Duration::from_secs(20);
    let mut service = Service::start(&[
        ("SHUTDOWN_DRAIN_DELAY", "300ms"),
        ("SHUTDOWN_TIMEOUT", "20s"),
    ]);
    let mut idle: Vec<Connection> = (0..50)
        .map(|_| {
            let mut connection = Connection::open(service.http).unwrap();
            assert_eq!(connection.get("/").unwrap().status, 200);
            connection
        })
        .collect();
    service.wait_until("all 50 connections are open", |service| {
        service.metric("http_connections_open") == 50.0
    });

    let signalled = Instant::now();
    service.signal(SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    let took = signalled.elapsed();

    assert!(
        took < timeout,
        "idle connections held the shutdown to its deadline ({took:?})"
    );
    for connection in &mut idle {
        assert!(connection.is_closed_by_server());
    }
    let report = service.wait_for_log("shutdown complete");
    assert_eq!(report["outcome"], "clean");
}

#[test]
fn new_connections_are_refused_after_the_drain_delay() {
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "300ms")]);
    let slow = service.request_in_flight("/slow?ms=3000");

    service.signal(SIGTERM);
    service.wait_for_log(
        "shutdown: listener closed, idle connections closing, waiting for in-flight requests",
    );
    let refused = Connection::open(service.http).err().map(|err| err.kind());
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(
        get(service.admin, "/livez").status,
        200,
        "the admin port still answers"
    );

    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    assert_eq!(service.wait_exit(), 0);
}

#[test]
fn the_hard_deadline_cuts_requests_and_sets_the_exit_code() {
    let mut service = Service::start(&[
        ("SHUTDOWN_DRAIN_DELAY", "100ms"),
        ("SHUTDOWN_TIMEOUT", "1s"),
    ]);
    let slow = service.request_in_flight("/slow?ms=60000");

    service.signal(SIGTERM);

    assert_eq!(service.wait_exit(), EXIT_DEADLINE_EXCEEDED);
    assert!(
        slow.join().unwrap().is_err(),
        "the cut request gets no answer"
    );
    let cut =
        service.wait_for_log("shutdown: SHUTDOWN_TIMEOUT reached, cut what was still running");
    assert_eq!(cut["requests_cut"], 1);
    assert_eq!(cut["connections_cut"], 1);
    let report = service.wait_for_log("shutdown complete");
    assert_eq!(report["outcome"], "deadline_exceeded");
    service.wait_for_log("slow request cancelled before it finished");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut service =
        Service::start(&[("SHUTDOWN_DRAIN_DELAY", "20s"), ("SHUTDOWN_TIMEOUT", "25s")]);
    service.signal(SIGTERM);
    service.wait_for_log_where(|line| line["state"] == "draining");
    let second = Instant::now();
    service.signal(SIGINT);

    assert_eq!(service.wait_exit(), 128 + SIGINT);
    assert!(
        second.elapsed() < Duration::from_secs(20),
        "exited only when the drain delay ran out"
    );
    service.wait_for_log("second signal: exiting at once");
}

#[test]
fn background_work_and_resources_stop_after_the_last_request() {
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "100ms")]);
    let mut events = Connection::open(service.http).unwrap();
    for event in ["one", "two", "three"] {
        let accepted = events
            .send("POST", "/events", &[], event.as_bytes())
            .unwrap();
        assert_eq!(accepted.status, 202);
    }
    let slow = service.request_in_flight("/slow?ms=800");

    service.signal(SIGTERM);
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    assert_eq!(service.wait_exit(), 0);

    let last_request = service.log_position("shutdown: every request finished");
    let publisher_flushed = service.log_position("event publisher flushed");
    let complete = service.log_position("shutdown complete");
    assert!(last_request < publisher_flushed && publisher_flushed < complete);
    let closed = service.wait_for_log("resource closed");
    assert_eq!(closed["resource"], "event-publisher");
    let flushed = service.wait_for_log("event publisher flushed");
    assert_eq!(
        flushed["sent_total"], 3,
        "every accepted event was sent before exit"
    );
}

#[test]
fn prestop_turns_readiness_off_and_answers_after_the_delay() {
    let mut service = Service::start(&[
        ("PRESTOP_DELAY", "700ms"),
        ("SHUTDOWN_DRAIN_DELAY", "100ms"),
    ]);
    let called = Instant::now();
    let prestop = get_in_background(service.admin, "/prestop");

    service.wait_until("readiness fails", |service| {
        get(service.admin, "/readyz").status == 503
    });
    assert!(get(service.admin, "/readyz").body.contains("pre-stop"));
    assert!(get(service.http, "/").asks_to_close());

    let answer = prestop.join().unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert!(called.elapsed() >= Duration::from_millis(700));

    service.signal(SIGTERM);
    assert_eq!(service.wait_exit(), 0);
}

/// Every signal whose default action would end the process either drains it or is ignored:
/// nothing ends it by accident.
#[test]
fn sighup_and_sigquit_drain_like_sigterm() {
    for (signal, name) in [(libc::SIGHUP, "SIGHUP"), (libc::SIGQUIT, "SIGQUIT")] {
        let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "200ms")]);
        service.signal(signal);
        let received = service.wait_for_log("shutdown signal received");
        assert_eq!(received["signal"], name);
        assert_eq!(service.wait_exit(), 0, "{name} drains and exits cleanly");
        service.wait_for_log("shutdown complete");
    }
}

#[test]
fn sigusr1_and_sigusr2_are_ignored_with_a_warning() {
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "200ms")]);
    for (signal, name) in [(libc::SIGUSR1, "SIGUSR1"), (libc::SIGUSR2, "SIGUSR2")] {
        service.signal(signal);
        service.wait_for_log_where(|line| {
            line["level"] == "WARN"
                && line["message"] == "signal ignored: it means nothing to this service"
                && line["signal"] == name
        });
    }
    assert!(service.is_running());
    assert_eq!(get(service.admin, "/readyz").status, 200, "still ready");
    assert_eq!(get(service.http, "/").status, 200, "still serving");
    service.signal(SIGTERM);
    assert_eq!(service.wait_exit(), 0);
}

/// A client trickling its headers while the pod shuts down is held to HEADER_READ_TIMEOUT
/// like any other: it cannot hold the shutdown to its deadline and make it exit 3.
#[test]
fn a_slowloris_client_cannot_spoil_the_shutdown() {
    let mut service = Service::start(&[
        ("HEADER_READ_TIMEOUT", "1s"),
        ("SHUTDOWN_DRAIN_DELAY", "200ms"),
        ("SHUTDOWN_TIMEOUT", "8s"),
    ]);
    let mut slowloris = Connection::open(service.http).unwrap();
    slowloris
        .write_raw(b"GET / HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    let trickling = std::thread::spawn(move || {
        // A header byte every 100 ms for longer than the deadline, until the server hangs up.
        for _ in 0..150 {
            if slowloris.write_raw(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    service.signal(SIGTERM);
    assert_eq!(service.wait_exit(), 0, "nothing was cut");
    trickling.join().unwrap();
}
