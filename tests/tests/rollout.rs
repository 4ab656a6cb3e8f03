//! Rolling updates under load, in the simulator: the pattern most services ship with loses
//! requests, and so does a load balancer slower than the budget; the chart's defaults lose
//! nothing behind real nginx, HAProxy and Envoy, counting what each proxy saw upstream.
//!
//! The chart's defaults behind kube-proxy are the demo's scenario: `tools/tests/demo.rs` runs
//! the README's command and holds its report to `Report::clean_rollout_problems`, so that
//! rollout runs once, not twice.

use std::{
    sync::{Mutex, OnceLock},
    time::Duration,
};

use k8s_openapi::api::apps::v1::Deployment;
use kube_service_template_tests::{
    Generated,
    chart::{Chart, Render},
    generate, scratch, shared_target_dir,
    sim::{
        self, Scenario, baseline,
        load::{ClientKind, Failure},
        proxies::Balancer,
        report::Report,
        sidecar::{self, SidecarStop, Sidecars},
        timeline::{Event, Happening},
    },
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

/// Each scenario's summary, timeline, plot and pod logs go to `<target>/rollouts/`, kept
/// after the run (generated projects are swept by the next test process).
fn scenario(name: &str) -> Scenario {
    Scenario::new(name, &scratch("rollouts"))
}

/// The negative controls' assertion. A pod that stopped listening while the proxy still
/// routes to it refuses every new connection the proxy sends it; the fresh-connection
/// client opens about 170 of them a second, round-robin over at most four pods, so a window
/// of `window` seconds holds dozens of refusals unless the whole load stalls for that long.
fn assert_lost_by_construction(report: &Report, window: &str) {
    assert!(
        report.failed(ClientKind::Fresh) > 0 && report.proxy.upstream_errors > 0,
        "expected failed requests: the proxy routes to a pod for {window} after it stopped \
         listening, so fresh connections must be refused; the simulator saw none, so it is \
         not faithful:\n{}",
        report.summary()
    );
}

#[test]
fn the_common_pattern_without_pre_stop_or_drain_loses_requests() {
    let mut deployment = deployment(Render::default().set("replicaCount=3"));
    baseline::strip_drain(&mut deployment);
    // The listener closes at SIGTERM, which comes with the deletion; the proxy learns of the
    // deletion 2 s (the lag) later.
    let report = run(&deployment, scenario("no preStop, no drain delay"));
    assert_lost_by_construction(&report, "the 2 s lag");
}

#[test]
fn a_load_balancer_slower_than_pre_stop_and_drain_loses_requests() {
    // 2 s of preStop and 1 s of drain cannot cover 7 s of propagation: the listener closes
    // 3 s after the deletion, the proxy stops routing 7 s after it.
    let deployment = deployment(
        Render::default()
            .set("replicaCount=2")
            .set("shutdown.preStopDelaySeconds=2")
            .set("shutdown.drainDelaySeconds=1"),
    );
    let mut slow_balancer = scenario("propagation lag beyond preStop and drain");
    slow_balancer.lag = Duration::from_secs(7);
    let report = run(&deployment, slow_balancer);
    assert_lost_by_construction(&report, "4 s");
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

    let summary = report.summary();
    assert_eq!(
        report.sigkills(),
        2,
        "expected both old pods SIGKILLed:\n{summary}"
    );
    assert!(
        report.pods.iter().all(|pod| pod.exit_code == Some(137)),
        "expected both old pods to end with 137:\n{summary}"
    );
    let (slow_across, slow_failed) = report.slow_across_deletions();
    assert!(
        slow_failed > 0 && slow_failed <= slow_across,
        "expected slow requests in flight at a deletion to be cut:\n{summary}"
    );
    for client in ClientKind::ALL {
        let causes = report.failures_by_cause(client);
        assert_eq!(
            causes.keys().copied().collect::<Vec<_>>(),
            [&Failure::Closed],
            "expected the {client:?} client's requests cut by SIGKILL only:\n{summary}"
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

/// The default chart behind a real proxy: nothing fails at the client, and nothing fails
/// between the proxy and the pods either (retries would hide it from the client).
fn real_proxy_loses_nothing(balancer: Balancer) {
    let mut behind = scenario(&format!("default chart behind {}", balancer.name()));
    behind.balancer = balancer;
    let report = run(&deployment(Render::default().set("replicaCount=2")), behind);
    report.assert_clean_rollout(2);
}

/// The common pattern behind a real proxy: the pod stops listening at SIGTERM while the
/// proxy still sends it requests for the 2 s lag, so the proxy meets refused connections
/// (which it may retry elsewhere, hiding them from the clients).
fn real_proxy_sees_the_common_pattern_fail(balancer: Balancer) {
    let mut deployment = deployment(Render::default().set("replicaCount=2"));
    baseline::strip_drain(&mut deployment);
    let mut behind = scenario(&format!(
        "no preStop, no drain delay, behind {}",
        balancer.name()
    ));
    behind.balancer = balancer;
    let report = run(&deployment, behind);
    assert!(
        report.proxy.upstream_errors > 0,
        "expected upstream errors at the proxy: it routes to each pod for the 2 s lag after \
         the pod stopped listening; it saw none:\n{}",
        report.summary()
    );
}

#[test]
fn behind_nginx_the_default_chart_loses_nothing() {
    real_proxy_loses_nothing(Balancer::Nginx);
}

#[test]
fn behind_nginx_the_common_pattern_fails_upstream() {
    real_proxy_sees_the_common_pattern_fail(Balancer::Nginx);
}

#[test]
fn behind_haproxy_the_default_chart_loses_nothing() {
    real_proxy_loses_nothing(Balancer::Haproxy);
}

#[test]
fn behind_haproxy_the_common_pattern_fails_upstream() {
    real_proxy_sees_the_common_pattern_fail(Balancer::Haproxy);
}

#[test]
fn behind_envoy_the_default_chart_loses_nothing() {
    real_proxy_loses_nothing(Balancer::Envoy);
}

#[test]
fn behind_envoy_the_common_pattern_fails_upstream() {
    real_proxy_sees_the_common_pattern_fail(Balancer::Envoy);
}

/// Two native sidecars from the chart's `sidecars` value, each a real nginx.
fn with_sidecars(stop: SidecarStop) -> (Deployment, Sidecars) {
    let deployment = deployment(Render::default().set("replicaCount=2").set_json(
        r#"sidecars=[{"name":"agent","image":"agent:1"},{"name":"proxy","image":"proxy:1"}]"#,
    ));
    let sidecars = Sidecars {
        images: vec![sidecar::nginx("agent:1"), sidecar::nginx("proxy:1")],
        stop,
    };
    (deployment, sidecars)
}

/// When `what` happened to `pod`, the first time.
fn when(events: &[Event], pod: &str, what: &Happening) -> Option<f64> {
    events
        .iter()
        .find(|event| event.source == pod && &event.what == what)
        .map(|event| event.at)
}

/// Native sidecars (Kubernetes 1.29+): the kubelet stops them only once the service has
/// exited, last started first, within the grace period the chart stretched by
/// `shutdown.sidecarStopSeconds`. Whatever the service needs while it drains stays up.
#[test]
fn native_sidecars_outlive_the_drain_and_stop_after_the_service_in_reverse_order() {
    let (deployment, sidecars) = with_sidecars(SidecarStop::AfterTheService);
    let mut native = scenario("native sidecars");
    native.sidecars = sidecars;
    let report = run(&deployment, native);
    report.assert_clean_rollout(2);
    let summary = report.summary();
    for pod in &report.pods {
        let at = |what: Happening| {
            when(&report.events, &pod.pod, &what)
                .unwrap_or_else(|| panic!("{}: no {what}:\n{summary}", pod.pod))
        };
        let sidecar = |name: &str| name.to_owned();
        let service_exit = at(Happening::Exited { code: 0 });
        let proxy_term = at(Happening::SidecarSigterm {
            name: sidecar("proxy"),
        });
        let proxy_exit = at(Happening::SidecarExited {
            name: sidecar("proxy"),
            code: 0,
        });
        let agent_term = at(Happening::SidecarSigterm {
            name: sidecar("agent"),
        });
        at(Happening::SidecarExited {
            name: sidecar("agent"),
            code: 0,
        });
        assert!(
            service_exit <= proxy_term && proxy_exit <= agent_term,
            "{}: expected the service to exit ({service_exit:.2} s), then proxy ({proxy_term:.2} s), \
             then agent ({agent_term:.2} s):\n{summary}",
            pod.pod
        );
    }
    let gone_early = report.events.iter().filter(|event| {
        matches!(
            event.what,
            Happening::SidecarDownBeforeTheService { .. } | Happening::SidecarSigkill { .. }
        )
    });
    assert_eq!(gone_early.count(), 0, "{summary}");
}

/// The negative control: sidecars stopped with the service, as ordinary containers are
/// (sidecars in `containers`, or a kubelet before 1.29), are gone while it still drains. By
/// construction: they get SIGTERM the instant the service does, nginx stops listening at
/// once, the service serves on for its 5 s drain delay, and the kubelet looks at each
/// sidecar every 100 ms.
#[test]
fn sidecars_stopped_with_the_service_are_gone_while_it_drains() {
    let (deployment, sidecars) = with_sidecars(SidecarStop::WithTheService);
    let mut with_the_service = scenario("sidecars stopped with the service");
    with_the_service.sidecars = sidecars;
    let report = run(&deployment, with_the_service);
    let summary = report.summary();
    for pod in &report.pods {
        for name in ["agent", "proxy"] {
            let down = Happening::SidecarDownBeforeTheService { name: name.into() };
            assert!(
                when(&report.events, &pod.pod, &down).is_some(),
                "{}: expected sidecar {name} down during the drain:\n{summary}",
                pod.pod
            );
        }
    }
}
