//! The main job: generate a service with `cargo generate`, build it, put it under keep-alive
//! load behind a model of a load balancer, send SIGTERM, and print the drain as it happens.
//!
//! The load balancer model polls `/readyz` like the kubelet and stops routing new requests
//! to the pod a propagation lag after readiness fails, like endpoints and kube-proxy do.
//! Every request's outcome is counted; the demo fails unless none failed.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use kube_service_template_tests::{
    generate, http1::Connection, service::RunningService, shared_target_dir,
};

const CLIENTS: usize = 8;
const REQUESTS_PER_SECOND_PER_CLIENT: u64 = 25;
const SLOW_REQUESTS: usize = 3;
const SLOW_MS: u64 = 4000;
const DRAIN_DELAY: &str = "3s";
const SHUTDOWN_TIMEOUT: &str = "10s";
const PROPAGATION_LAG: Duration = Duration::from_secs(1);
const SIGTERM_AT: Duration = Duration::from_secs(2);
/// Bounds on the load, whatever happens.
const LOAD_LIMIT: Duration = Duration::from_secs(30);
const REQUEST_LIMIT_PER_CLIENT: u64 = 2_000;

struct Clock(Instant);

impl Clock {
    fn say(&self, who: &str, what: impl std::fmt::Display) {
        println!("{:>8.3}s  {who:<13} {what}", self.0.elapsed().as_secs_f64());
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    slow_ok: AtomicU64,
    told_to_close: AtomicU64,
    first_close_seen: AtomicBool,
    failures: Mutex<Vec<String>>,
}

fn main() {
    println!("generating a service with cargo generate ...");
    let project = generate("demo-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));
    println!("building {} ...", project.dir.display());
    project.cargo_ok(&["build"]);
    let binary = shared_target_dir().join("debug").join("demo-service");

    let clock = Arc::new(Clock(Instant::now()));
    let narrator = clock.clone();
    let mut service = RunningService::start(
        &binary,
        &[
            ("SHUTDOWN_DRAIN_DELAY", DRAIN_DELAY),
            ("SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT),
        ],
        move |log| narrate(&narrator, log),
    );
    let (http, admin) = (service.http, service.admin);
    clock.say(
        "service",
        format!("ready: app on {http}, admin on {admin}; drain delay {DRAIN_DELAY}, timeout {SHUTDOWN_TIMEOUT}"),
    );

    let routed = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Tally::default());
    let load_started = Instant::now();
    clock.say(
        "load",
        format!(
            "{CLIENTS} keep-alive clients at {} req/s in all, and {SLOW_REQUESTS} requests of {SLOW_MS} ms",
            CLIENTS as u64 * REQUESTS_PER_SECOND_PER_CLIENT
        ),
    );
    let mut workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (routed, tally, clock) = (routed.clone(), tally.clone(), clock.clone());
            thread::spawn(move || client(http, &routed, &tally, &clock, load_started))
        })
        .collect();
    thread::sleep(SIGTERM_AT - Duration::from_millis(500));
    workers.extend((0..SLOW_REQUESTS).map(|_| {
        let (tally, clock) = (tally.clone(), clock.clone());
        thread::spawn(move || slow_client(http, &tally, &clock))
    }));
    let balancer = {
        let (routed, clock) = (routed.clone(), clock.clone());
        thread::spawn(move || load_balancer(admin, &routed, &clock))
    };

    thread::sleep(Duration::from_millis(500));
    clock.say("demo", "──► SIGTERM");
    service.signal(libc::SIGTERM);

    let status = service.wait();
    clock.say("service", format!("exited with {status}"));
    routed.store(false, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    balancer.join().unwrap();

    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    println!();
    println!(
        "{failed} failed of {} requests ({} slow requests completed, {} connections closed on request by the server)",
        ok + failed,
        tally.slow_ok.load(Ordering::Relaxed),
        tally.told_to_close.load(Ordering::Relaxed)
    );
    for failure in tally.failures.lock().unwrap().iter().take(10) {
        println!("  failure: {failure}");
    }
    if failed > 0 || !status.success() {
        std::process::exit(1);
    }
}

/// Prints the service's shutdown story from its JSON logs.
fn narrate(clock: &Clock, log: &serde_json::Value) {
    let message = log["message"].as_str().unwrap_or_default();
    let state = log["state"].as_str();
    if !(message.starts_with("shutdown") || message.starts_with("resource") || state.is_some()) {
        return;
    }
    if state == Some("ready") {
        return;
    }
    let details: Vec<String> = log
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            !["timestamp", "level", "message", "target", "state"].contains(&key.as_str())
        })
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let state = state.map(|state| format!("→ {state}")).unwrap_or_default();
    clock.say(
        "service",
        format!("{message} {state} {}", details.join(" ")).trim_end(),
    );
}

fn client(http: SocketAddr, routed: &AtomicBool, tally: &Tally, clock: &Clock, started: Instant) {
    let interval = Duration::from_millis(1000 / REQUESTS_PER_SECOND_PER_CLIENT);
    let mut connection: Option<Connection> = None;
    for _ in 0..REQUEST_LIMIT_PER_CLIENT {
        if !routed.load(Ordering::Relaxed) || started.elapsed() > LOAD_LIMIT {
            return;
        }
        let outcome = match connection.take() {
            Some(open) => Ok(open),
            None => Connection::open(http, Duration::from_secs(5)),
        }
        .and_then(|mut open| open.get("/").map(|response| (open, response)));
        match outcome {
            Ok((open, response)) if response.status == 200 => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if response.close {
                    tally.told_to_close.fetch_add(1, Ordering::Relaxed);
                    if !tally.first_close_seen.swap(true, Ordering::Relaxed) {
                        clock.say("clients", "first response with `Connection: close`: clients reconnect, through the load balancer");
                    }
                } else {
                    connection = Some(open);
                }
            }
            Ok((_, response)) => {
                record_failure(tally, clock, format!("status {}", response.status))
            }
            Err(error) => record_failure(tally, clock, error.to_string()),
        }
        thread::sleep(interval);
    }
}

fn slow_client(http: SocketAddr, tally: &Tally, clock: &Clock) {
    let path = format!("/slow?ms={SLOW_MS}");
    match Connection::open(http, Duration::from_secs(30)).and_then(|mut open| open.get(&path)) {
        Ok(response) if response.status == 200 => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            tally.slow_ok.fetch_add(1, Ordering::Relaxed);
            clock.say(
                "clients",
                format!("slow request started before SIGTERM answered 200 after {SLOW_MS} ms"),
            );
        }
        Ok(response) => record_failure(
            tally,
            clock,
            format!("slow request: status {}", response.status),
        ),
        Err(error) => record_failure(tally, clock, format!("slow request: {error}")),
    }
}

/// Polls readiness like the kubelet, and stops routing a propagation lag after it fails.
fn load_balancer(admin: SocketAddr, routed: &AtomicBool, clock: &Clock) {
    let started = Instant::now();
    while routed.load(Ordering::Relaxed) && started.elapsed() < LOAD_LIMIT {
        let status = Connection::open(admin, Duration::from_secs(2))
            .and_then(|mut open| open.get("/readyz"))
            .map(|response| {
                (
                    response.status,
                    String::from_utf8_lossy(&response.body).trim().to_owned(),
                )
            });
        if let Ok((503, reason)) = status {
            clock.say(
                "kubelet",
                format!("/readyz → 503 ({reason}): endpoint removed"),
            );
            thread::sleep(PROPAGATION_LAG);
            routed.store(false, Ordering::Relaxed);
            clock.say(
                "load balancer",
                format!(
                    "stops routing here ({} ms after readiness failed)",
                    PROPAGATION_LAG.as_millis()
                ),
            );
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn record_failure(tally: &Tally, clock: &Clock, what: String) {
    if tally.failed.fetch_add(1, Ordering::Relaxed) == 0 {
        clock.say("clients", format!("FAILED: {what}"));
    }
    tally.failures.lock().unwrap().push(what);
}
