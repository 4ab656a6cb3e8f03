//! Socket activation the way systemd does it: the listening socket belongs to someone else
//! (here, the test) and outlives each process of the service.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use support::{Connection, Service, get, loopback_listener};

#[test]
fn passed_sockets_serve_the_roles_their_names_give() {
    let (admin, http) = (loopback_listener(), loopback_listener());
    let service = Service::start_activated(&[], &[&admin, &http], "admin:http");
    assert_eq!(service.http, http.local_addr().unwrap());
    assert_eq!(service.admin, admin.local_addr().unwrap());
    assert_eq!(get(service.http, "/").status, 200);
    assert_eq!(get(service.admin, "/readyz").status, 200);
    let listening = service.wait_for_log("listening");
    assert_eq!(listening["http_from"], "systemd");
    assert_eq!(listening["admin_from"], "systemd");
}

#[test]
fn a_listener_not_passed_is_bound_from_its_address() {
    let http = loopback_listener();
    let service = Service::start_activated(&[], &[&http], "");
    assert_eq!(service.http, http.local_addr().unwrap());
    assert_eq!(get(service.admin, "/livez").status, 200);
    assert_eq!(service.wait_for_log("listening")["admin_from"], "bound");
}

#[test]
fn a_restart_refuses_no_connection() {
    let socket = loopback_listener();
    let addr = socket.local_addr().unwrap();
    let env = [("SHUTDOWN_DRAIN_DELAY", "300ms")];
    let load = Load::start(addr, 4);

    let mut first = Service::start_activated(&env, &[&socket], "http");
    load.wait_for_more(200);
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(), 0);
    // Until the next process accepts, new connections wait in the socket's queue.
    let restarted_at = load.served();
    // A slow restart: meanwhile no process accepts, and connections must wait, not fail.
    std::thread::sleep(Duration::from_millis(300));
    let second = Service::start_activated(&env, &[&socket], "http");
    load.wait_for_more(200);
    let tally = load.stop();

    assert_eq!(tally.failed, 0, "{tally:?}");
    eprintln!(
        "{} requests on fresh connections, {} of them after the first process exited, 0 failed",
        tally.served,
        tally.served - restarted_at
    );
    assert!(
        second.metric(r#"http_requests_total{method="GET",route="/",status="200"}"#) > 0.0,
        "the second process served requests"
    );
}

/// Clients sending `GET /` on a fresh connection each, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    clients: Vec<JoinHandle<Tally>>,
}

#[derive(Debug, Default)]
struct Tally {
    served: u64,
    /// Refused, reset, or answered with anything but 200.
    failed: u64,
    errors: Vec<String>,
}

impl Load {
    /// Bounded in count as well as by [`Load::stop`].
    const MAX_REQUESTS_PER_CLIENT: u64 = 50_000;

    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (stop, served) = (stop.clone(), served.clone());
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    for _ in 0..Self::MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match Connection::open(addr).and_then(|mut connection| connection.get("/"))
                        {
                            Ok(response) if response.status == 200 => {
                                tally.served += 1;
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(response) => {
                                tally.failed += 1;
                                tally.errors.push(format!("status {}", response.status));
                            }
                            Err(error) => {
                                tally.failed += 1;
                                tally.errors.push(error.to_string());
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        Load {
            stop,
            served,
            clients,
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Waits until `count` more requests have been served.
    fn wait_for_more(&self, count: u64) {
        let target = self.served() + count;
        let started = Instant::now();
        while self.served() < target {
            assert!(started.elapsed() < support::PATIENCE, "the load stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for client in self.clients {
            let tally = client.join().expect("a load client panicked");
            total.served += tally.served;
            total.failed += tally.failed;
            total.errors.extend(tally.errors);
        }
        total
    }
}
