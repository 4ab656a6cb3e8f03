//! Rolling updates under load, in the simulator: the chart's defaults lose nothing; the
//! pattern most services ship with does, and so does a load balancer slower than the budget.

use std::{
    sync::{Mutex, OnceLock},
    time::Duration,
};

use k8s_openapi::api::apps::v1::Deployment;
use kube_service_template_tests::{
    Generated,
    chart::{Chart, Render},
    generate, shared_target_dir,
    sim::{self, Scenario, baseline, load::ClientKind, report::Report},
};

/// Scenarios run one at a time: each already keeps both cores busy.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn project() -> &'static Generated {
    static PROJECT: OnceLock<Generated> = OnceLock::new();
    PROJECT.get_or_init(|| {
        let project = generate("rollout-service", &[]).expect("defaults generate");
        project.cargo_ok(&["build"]);
        project
    })
}

fn deployment(render: Render) -> Deployment {
    Chart::at(&project().dir.join("helm"))
        .template(&render)
        .unwrap_or_else(|message| panic!("helm template failed:\n{message}"))
        .deployment()
        .clone()
}

fn run(deployment: &Deployment, scenario: Scenario) -> Report {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let binary = shared_target_dir().join("debug").join("rollout-service");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(sim::rolling_update(&binary, deployment, &scenario))
        .unwrap_or_else(|error| panic!("{}: {error}", scenario.name));
    runtime.shutdown_background();
    report.write(&scenario.out_dir).unwrap();
    println!("{}", report.summary());
    report
}

fn scenario(name: &str) -> Scenario {
    Scenario::new(name, &project().dir.join("simulations"))
}

fn failed(report: &Report) -> usize {
    report.failed(ClientKind::Standard) + report.failed(ClientKind::Strict)
}

#[test]
fn the_default_chart_rolls_three_replicas_without_losing_a_request() {
    let report = run(
        &deployment(Render::default().set("replicaCount=3")),
        scenario("default chart"),
    );
    assert!(report.outcomes.len() > 5_000, "{}", report.summary());
    assert_eq!(
        report.failed(ClientKind::Standard),
        0,
        "{}",
        report.summary()
    );
    assert_eq!(report.failed(ClientKind::Strict), 0, "{}", report.summary());
    assert_eq!(report.sigkills(), 0, "{}", report.summary());
    assert_eq!(report.pods.len(), 3);
    assert!(
        report.pods.iter().all(|pod| pod.exit_code == Some(0)),
        "{}",
        report.summary()
    );
    let (slow_across, slow_failed) = report.slow_across_deletions();
    assert!(
        slow_across > 0,
        "no slow request was in flight at a deletion"
    );
    assert_eq!(slow_failed, 0);
    assert_eq!(report.liveness_failures, 0);
}

#[test]
fn the_common_pattern_without_pre_stop_or_drain_loses_requests() {
    let mut deployment = deployment(Render::default().set("replicaCount=3"));
    baseline::strip_drain(&mut deployment);
    let report = run(&deployment, scenario("no preStop, no drain delay"));
    assert!(
        failed(&report) > 0,
        "the simulator missed the failures of the common pattern:\n{}",
        report.summary()
    );
}

#[test]
fn a_load_balancer_slower_than_pre_stop_and_drain_loses_requests() {
    // 2 s of preStop and 1 s of drain cannot cover 5 s of propagation.
    let deployment = deployment(
        Render::default()
            .set("replicaCount=2")
            .set("shutdown.preStopDelaySeconds=2")
            .set("shutdown.drainDelaySeconds=1"),
    );
    let mut slow_balancer = scenario("propagation lag beyond preStop and drain");
    slow_balancer.lag = Duration::from_secs(5);
    let report = run(&deployment, slow_balancer);
    assert!(failed(&report) > 0, "{}", report.summary());
}

#[test]
fn a_grace_period_too_short_for_a_slow_request_ends_in_sigkill() {
    // Someone edited the Deployment by hand: 8 s of grace, 5 of them preStop, while requests
    // take 15 s. The kubelet kills the pods; their metrics showed the requests in flight.
    let mut deployment = deployment(Render::default().set("replicaCount=2"));
    let pod = deployment
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap();
    pod.termination_grace_period_seconds = Some(8);
    // Let the slow requests run: only SIGKILL may end them.
    for container in baseline::containers(&mut deployment) {
        baseline::set_env(container, "REQUEST_TIMEOUT", "60s");
    }
    let mut short_grace = scenario("grace period too short");
    short_grace.load.slow = Duration::from_secs(15);
    short_grace.load.slow_every = 10;
    let report = run(&deployment, short_grace);

    assert_eq!(report.sigkills(), 2, "{}", report.summary());
    assert!(report.pods.iter().all(|pod| pod.exit_code == Some(137)));
    let (slow_across, slow_failed) = report.slow_across_deletions();
    assert!(
        slow_failed > 0 && slow_failed <= slow_across,
        "{}",
        report.summary()
    );
    for client in [ClientKind::Standard, ClientKind::Strict] {
        let causes = report.failures_by_cause(client);
        assert_eq!(
            causes.keys().collect::<Vec<_>>(),
            ["Closed"],
            "cut by SIGKILL only: {causes:?}"
        );
    }
    for pod in &report.pods {
        assert_eq!(
            pod.last_draining,
            Some(1.0),
            "{}: the last scrape saw it draining",
            pod.pod
        );
        assert!(
            pod.last_in_flight.is_some_and(|in_flight| in_flight >= 1.0),
            "{}: the last scrape before SIGKILL showed the requests about to be cut: {:?}",
            pod.pod,
            pod.last_in_flight
        );
    }
}
