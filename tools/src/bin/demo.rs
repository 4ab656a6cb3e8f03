//! The main job: generate a service with `cargo generate`, build it, render its Helm chart,
//! and roll three replicas of it under load in the Kubernetes simulator, printing the drain
//! as it happens: the kubelet's view (deletion, preStop, SIGTERM, exit), the endpoints and
//! proxy's view (a propagation lag later), and the service's own log lines (`│`).
//!
//! Ends with the tally and the picture; fails unless the rollout lost nothing
//! ([`Report::clean_rollout_problems`]).

use std::path::PathBuf;

use kube_service_template_tests::{
    chart::{Chart, Render},
    generate, scratch, shared_target_dir,
    sim::{self, Scenario, report::Report},
};

#[tokio::main]
async fn main() {
    println!("generating a service with cargo generate ...");
    let project = generate("demo-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));
    println!(
        "building {} (about 2.5 minutes the first time on 2 cores, seconds after) ...",
        project.dir.display()
    );
    if let Err(error) = project.cargo_live(&["build"]) {
        eprintln!("{error}");
        std::process::exit(1);
    }
    let binary = shared_target_dir().join("debug").join("demo-service");

    println!("rendering its chart with helm (3 replicas, Kubernetes 1.30) ...");
    let manifests = Chart::at(&project.dir.join("helm"))
        .template(&Render::default().set("replicaCount=3"))
        .unwrap_or_else(|message| panic!("helm template failed:\n{message}"));

    let out_dir: PathBuf = scratch("demo");
    let mut scenario = Scenario::new("rolling update of the default chart", &out_dir);
    scenario.live = true;
    println!(
        "rolling update under load: {} requests/s, endpoints reach the proxy {} s late\n",
        scenario.load.rate,
        scenario.lag.as_secs()
    );
    let report = sim::rolling_update(&binary, manifests.deployment(), &scenario)
        .await
        .unwrap_or_else(|error| panic!("the simulation failed: {error}"));

    let (timeline, plot) = report.write(&out_dir).expect("writing the report");
    println!();
    print!("{}", report.summary());
    println!("timeline: {}", timeline.display());
    println!("plot:     {}", plot.display());
    println!(
        "report:   {}",
        Report::path(&out_dir, &scenario.name).display()
    );
    let problems = report.clean_rollout_problems(3);
    if !problems.is_empty() {
        println!("\nexpected, and did not see: {}", problems.join("; "));
        std::process::exit(1);
    }
}
