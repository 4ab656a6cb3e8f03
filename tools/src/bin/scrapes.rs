//! How many shutdown outcomes a real Prometheus holds, without and with the metrics linger:
//! `N` services (the generated default project) are scraped every `INTERVAL` (the chart's
//! default, 15 s), then terminated at moments spread over one interval; once every process
//! has exited, Prometheus is asked which final counters it holds.
//!
//! `cargo run -p kube-service-template-tools --bin scrapes [N] [INTERVAL_SECONDS]`

use std::{
    path::Path,
    time::{Duration, Instant},
};

use kube_service_template_tests::{
    generate,
    prometheus::{Prometheus, Target},
    scratch,
    service::RunningService,
    shared_target_dir,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(12, |n| n.parse().expect("N: a number"));
    let interval = Duration::from_secs(args.next().map_or(15, |seconds| {
        seconds.parse().expect("INTERVAL_SECONDS: a number")
    }));
    let project = generate("scrapes-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));
    project.cargo_ok(&["build"]);
    let binary = shared_target_dir().join("debug/scrapes-service");

    println!(
        "{count} terminations, scraped every {} s by Prometheus (the chart's interval)\n",
        interval.as_secs()
    );
    println!("| SHUTDOWN_METRICS_LINGER | outcomes held | draining seen | signal to exit, mean |");
    println!("|---|---|---|---|");
    // The chart's rule: one interval + 2 s.
    for linger in [Duration::ZERO, interval + Duration::from_secs(2)] {
        let round = terminate_all(&binary, count, interval, linger);
        println!(
            "| {} s | {} of {count} | {} of {count} | {:.1} s |",
            linger.as_secs(),
            round.outcomes_held,
            round.draining_seen,
            round.mean_exit.as_secs_f64()
        );
    }
}

struct Round {
    outcomes_held: usize,
    draining_seen: usize,
    mean_exit: Duration,
}

fn terminate_all(binary: &Path, count: usize, interval: Duration, linger: Duration) -> Round {
    let linger_env = format!("{}s", linger.as_secs());
    let env = [
        ("SHUTDOWN_DRAIN_DELAY", "1s"),
        ("SHUTDOWN_TIMEOUT", "5s"),
        ("SHUTDOWN_CLEANUP_TIMEOUT", "1s"),
        ("SHUTDOWN_METRICS_LINGER", linger_env.as_str()),
        ("KUBE_INTEGRATION", "false"),
    ];
    let mut services: Vec<RunningService> = (0..count)
        .map(|_| RunningService::start(binary, &env, |_| {}))
        .collect();
    let targets: Vec<Target> = services
        .iter()
        .enumerate()
        .map(|(index, service)| Target {
            job: format!("pod{index}"),
            addr: service.admin,
        })
        .collect();
    let prometheus = Prometheus::start(scratch("scrapes-prometheus"), interval, &targets)
        .expect("prometheus starts (scripts/install.sh test installs it)");
    prometheus
        .wait_for("up == 1", count, interval * 3)
        .expect("every service scraped");

    // Spread over one interval, so that the signals fall at every phase of the scrapes.
    let spacing = interval / count as u32;
    let took: Duration = std::thread::scope(|scope| {
        let exits: Vec<_> = services
            .iter_mut()
            .enumerate()
            .map(|(index, service)| {
                scope.spawn(move || {
                    std::thread::sleep(spacing * index as u32);
                    service.signal(libc::SIGTERM);
                    let signalled = Instant::now();
                    service.wait();
                    signalled.elapsed()
                })
            })
            .collect();
        exits.into_iter().map(|exit| exit.join().unwrap()).sum()
    });
    let mean_exit = took / count as u32;
    let held = |query: &str| prometheus.values(query).expect("Prometheus answers").len();
    Round {
        outcomes_held: held("max_over_time(shutdowns_total{outcome=\"clean\"}[1h]) == 1"),
        draining_seen: held("max_over_time(lifecycle_draining[1h]) == 1"),
        mean_exit,
    }
}
