//! Figures for the generated service, printed, never asserted: clean release build time,
//! stripped binary size, time from exec to ready, idle RSS, and the time from SIGTERM to exit
//! beyond the drain delay, idle and with 50 idle keep-alive connections.
//!
//! `scripts/bench.sh [--no-clean-build]`

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use kube_service_template_tests::{
    Generated, generate, http1::Connection, repo_root, service::RunningService, shared_target_dir,
};

const RUNS: usize = 5;
const DRAIN_DELAY: Duration = Duration::from_secs(1);
const IDLE_CONNECTIONS: usize = 50;

fn main() {
    let clean_build = !std::env::args().any(|arg| arg == "--no-clean-build");
    let project = generate("bench-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));

    let build = if clean_build {
        Some(time_clean_release_build(&project))
    } else {
        project.cargo_ok(&["build", "--release"]);
        None
    };
    let binary = shared_target_dir().join("release").join("bench-service");
    let size = std::fs::metadata(&binary)
        .expect("the release binary")
        .len();

    let (mut ready, mut rss_idle, mut rss_after_load) = (Vec::new(), Vec::new(), Vec::new());
    let (mut exit_idle, mut exit_with_connections) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let service = start(&binary);
        ready.push(started.elapsed());
        rss_idle.push(service.rss_kib());
        exit_idle.push(time_to_exit_beyond_drain_delay(service, Vec::new()));
    }
    for _ in 0..RUNS {
        let service = start(&binary);
        let connections = open_idle_connections(&service, IDLE_CONNECTIONS);
        rss_after_load.push(service.rss_kib());
        exit_with_connections.push(time_to_exit_beyond_drain_delay(service, connections));
    }

    println!();
    println!("generated service (default options), {RUNS} runs where repeated");
    println!("{:-<78}", "");
    if let Some(build) = build {
        row(
            "clean release build (deps downloaded)",
            format!("{:.1} s", build.as_secs_f64()),
        );
    }
    row(
        "stripped release binary",
        format!("{:.2} MiB", size as f64 / 1048576.0),
    );
    row("exec to ready (median)", millis(median(&mut ready)));
    row("idle RSS (median)", mebibytes(median_u64(&mut rss_idle)));
    row(
        "RSS with 50 idle keep-alive connections (median)",
        mebibytes(median_u64(&mut rss_after_load)),
    );
    println!(
        "SIGTERM to exit, beyond the drain delay of {} s:",
        DRAIN_DELAY.as_secs()
    );
    for (label, samples) in [
        ("  idle", &mut exit_idle),
        (
            "  with 50 idle keep-alive connections",
            &mut exit_with_connections,
        ),
    ] {
        samples.sort();
        row(
            &format!("{label} (median)"),
            format!(
                "{}   (min {}, max {})",
                millis(median(samples)),
                millis(samples[0]),
                millis(*samples.last().unwrap())
            ),
        );
    }
}

fn row(label: &str, value: String) {
    println!("{label:<52} {value}");
}

fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn start(binary: &std::path::Path) -> RunningService {
    RunningService::start(
        binary,
        &[
            ("SHUTDOWN_DRAIN_DELAY", "1s"),
            ("SHUTDOWN_TIMEOUT", "20s"),
            ("RUST_LOG", "warn,bench_service=info"),
        ],
        |_| {},
    )
}

/// Sends SIGTERM while `connections` stay open and idle; returns how long the exit took
/// beyond the drain delay.
fn time_to_exit_beyond_drain_delay(
    mut service: RunningService,
    connections: Vec<Connection>,
) -> Duration {
    let signalled = Instant::now();
    service.signal(libc::SIGTERM);
    assert!(service.wait().success(), "the service exits cleanly");
    let took = signalled.elapsed();
    drop(connections);
    took.saturating_sub(DRAIN_DELAY)
}

/// Opens `count` keep-alive connections, makes one request on each, and leaves them idle.
fn open_idle_connections(service: &RunningService, count: usize) -> Vec<Connection> {
    (0..count)
        .map(|_| {
            let mut connection = Connection::open(service.http, Duration::from_secs(5)).unwrap();
            assert_eq!(connection.get("/").unwrap().status, 200);
            connection
        })
        .collect()
}

fn time_clean_release_build(project: &Generated) -> Duration {
    let target: PathBuf = repo_root().join("target").join("bench-clean-build");
    let _ = std::fs::remove_dir_all(&target);
    project.cargo_ok(&["fetch"]);
    let started = Instant::now();
    let status = std::process::Command::new("cargo")
        .current_dir(&project.dir)
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the clean release build succeeds");
    let took = started.elapsed();
    // Later steps use the shared target directory; the clean one has served its purpose.
    project.cargo_ok(&["build", "--release"]);
    let _ = std::fs::remove_dir_all(&target);
    took
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn median_u64(samples: &mut [u64]) -> u64 {
    samples.sort();
    samples[samples.len() / 2]
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}
