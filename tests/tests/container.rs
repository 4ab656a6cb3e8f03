//! The generated service in a real container: an image built `FROM scratch` around its
//! static binary with the Dockerfile's own final stage, run by podman, and stopped the way
//! a kubelet stops a pod (SIGTERM, then SIGKILL when the grace period is over).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use kube_service_template_tests::{
    free_loopback_address, generate, http1,
    podman::{Container, Image, scratch_containerfile, static_binary},
};

const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn the_container_runs_unprivileged_answers_probes_and_stops_cleanly_mid_request() {
    let project = generate("contained-service", &[]).expect("defaults generate");
    let binary = static_binary(&project, "contained-service");
    let containerfile = scratch_containerfile(&project.read("Dockerfile"));
    let image = Image::build("contained-service", &containerfile, &binary);

    let (http, admin) = (
        free_loopback_address().unwrap(),
        free_loopback_address().unwrap(),
    );
    let container = image.run(&[
        ("HTTP_ADDR", &http.to_string()),
        ("ADMIN_ADDR", &admin.to_string()),
        ("SHUTDOWN_DRAIN_DELAY", "1s"),
    ]);
    wait_for(admin, "/startupz", &container);
    for probe in ["/livez", "/readyz"] {
        assert_eq!(get(admin, probe).status, 200, "{probe}");
    }
    assert_eq!(get(http, "/").status, 200);
    assert_eq!(container.user_id(), 65532, "the Dockerfile's USER");

    let slow = std::thread::spawn(move || http1::blocking_get(http, "/slow?ms=3000", PATIENCE));
    while !metrics(admin).contains("http_requests_in_flight 1") {
        std::thread::sleep(Duration::from_millis(20));
    }
    let grace = Duration::from_secs(15);
    let took = container.stop(grace);

    let slow = slow
        .join()
        .unwrap()
        .expect("the request in flight got its response");
    assert_eq!(slow.status, 200);
    assert_eq!(container.exit_code(), 0, "logs:\n{}", container.logs());
    assert!(
        took < grace,
        "podman stop took {took:?}: SIGKILL came before the service exited"
    );
    eprintln!(
        "image {:.2} MiB; podman stop -t {} with a 3 s request in flight (drain 1 s): {} ms",
        image.size() as f64 / (1024.0 * 1024.0),
        grace.as_secs(),
        took.as_millis()
    );
}

fn get(addr: SocketAddr, path: &str) -> http1::Response {
    http1::blocking_get(addr, path, PATIENCE)
        .unwrap_or_else(|err| panic!("GET {path} on {addr}: {err}"))
}

fn metrics(admin: SocketAddr) -> String {
    String::from_utf8(get(admin, "/metrics").body).unwrap()
}

/// Waits until `path` answers 200; the container may still be starting.
fn wait_for(addr: SocketAddr, path: &str, container: &Container) {
    let started = Instant::now();
    loop {
        let answer = http1::blocking_get(addr, path, PATIENCE);
        if answer.is_ok_and(|response| response.status == 200) {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{path} never answered 200; logs:\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
