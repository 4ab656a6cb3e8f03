//! How late may a load balancer learn that a pod was deleted? Behind each real proxy the
//! simulator runs (nginx as ingress-nginx runs it, HAProxy, Envoy), rolls two replicas of the
//! default chart with the endpoints reaching the proxy `lag` late, and counts what failed at
//! the clients and what the proxy itself saw fail upstream. The service accepts new
//! connections for preStopDelaySeconds + drainDelaySeconds (5 s + 5 s) after its deletion:
//! the rows show how close to that a proxy may be and still lose nothing, which is the rule
//! the generated project's `docs/load-balancers.md` gives.
//!
//! `cargo run -p kube-service-template-tools --bin drain-margin` (about 15
//! minutes: one rollout at a time, each about a minute). Loopback only; every rollout is
//! bounded by the simulator's own limits.

use std::time::Duration;

use kube_service_template_tests::{
    chart::{Chart, Render},
    generate, scratch, shared_target_dir,
    sim::{self, Scenario, load::ClientKind, proxies::Balancer},
};

/// Propagation lags to try, in milliseconds: well inside, just inside, just outside and well
/// outside the 10 s the chart's defaults give.
const LAGS_MS: [u64; 4] = [2_000, 9_000, 9_700, 11_000];

#[tokio::main]
async fn main() {
    let project = generate("drain-margin-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));
    if let Err(error) = project.cargo_live(&["build"]) {
        eprintln!("{error}");
        std::process::exit(1);
    }
    let binary = shared_target_dir()
        .join("debug")
        .join("drain-margin-service");
    let manifests = Chart::at(&project.dir.join("helm"))
        .template(&Render::default().set("replicaCount=2"))
        .unwrap_or_else(|message| panic!("helm template failed:\n{message}"));
    let out_dir = scratch("drain-margin");

    println!(
        "| proxy | lag | requests | failed at the clients | failed upstream (the proxy's count) |"
    );
    println!("|---|---|---|---|---|");
    for balancer in Balancer::REAL {
        for lag in LAGS_MS {
            let name = format!("{} lag {lag} ms", balancer.name());
            let mut scenario = Scenario::new(&name, &out_dir);
            scenario.balancer = balancer;
            scenario.lag = Duration::from_millis(lag);
            let report = sim::rolling_update(&binary, manifests.deployment(), &scenario)
                .await
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            let fresh = report.failed(ClientKind::Fresh);
            println!(
                "| {} | {:.1} s | {} | {} (fresh-connection client: {fresh}) | {} |",
                balancer.name(),
                lag as f64 / 1000.0,
                report.outcomes.len(),
                report.failed_total(),
                report.proxy.upstream_errors,
            );
        }
    }
    println!(
        "\nThe service stops listening 10 s after its deletion (preStop 5 s + drain 5 s); \
         reports in {}",
        out_dir.display()
    );
}
