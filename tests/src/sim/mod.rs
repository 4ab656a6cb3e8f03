//! A faithful simulation of what Kubernetes does during a rolling update, driven by the
//! Deployment the chart really renders and the binary the template really builds.
//!
//! | Part | Stands for |
//! |---|---|
//! | [`pod_template`] | what a kubelet and the Deployment controller read from the spec |
//! | [`kubelet`] | a kubelet per pod: the process, probes, preStop, SIGTERM, SIGKILL |
//! | [`sidecar`] | native sidecars: started first, stopped after the service, in reverse |
//! | [`network`] | the endpoints controller and kube-proxy, with a propagation lag |
//! | [`proxies`] | what clients connect to: that kube-proxy, or real nginx, HAProxy or Envoy following the same endpoints |
//! | [`deployment`] | the Deployment controller's rolling update |
//! | [`load`] | clients under constant load: standard, strict and fresh-connection |
//! | [`timeline`] | typed events from every part, what the report and plot are built from |
//! | [`report`], [`plot`] | the tally, the timeline file and the picture |
//!
//! One deliberate difference: pods share the host's loopback instead of each having a
//! network namespace, so every container port is mapped to a loopback port of its own and
//! listen addresses in the environment follow that map.

pub mod baseline;
pub mod deployment;
pub mod kubelet;
pub mod load;
pub mod network;
pub mod plot;
pub mod pod_template;
pub mod proxies;
pub mod report;
pub mod sidecar;
pub mod timeline;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use self::{
    deployment::Deployment,
    load::LoadConfig,
    network::Endpoints,
    pod_template::PodTemplate,
    proxies::{Balancer, Front},
    report::{PodEnd, Report},
    timeline::{Happening, Timeline},
};

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// What routes the clients' connections to the pods.
    pub balancer: Balancer,
    /// How long endpoint changes take to reach the proxy.
    pub lag: Duration,
    pub load: LoadConfig,
    /// Load against the first replicas before the rollout starts.
    pub warm_up: Duration,
    /// Load after the last old pod is gone.
    pub cool_down: Duration,
    /// What runs the pod's sidecar images, and when the kubelet stops them.
    pub sidecars: sidecar::Sidecars,
    /// Print events as they happen.
    pub live: bool,
    /// Where pod logs, the timeline and the plot go.
    pub out_dir: PathBuf,
}

impl Scenario {
    pub fn new(name: &str, out_dir: &Path) -> Scenario {
        Scenario {
            name: name.to_owned(),
            balancer: Balancer::KubeProxy,
            lag: Duration::from_secs(2),
            load: LoadConfig::default(),
            warm_up: Duration::from_secs(3),
            cool_down: Duration::from_secs(2),
            sidecars: sidecar::Sidecars::default(),
            live: false,
            out_dir: out_dir.to_path_buf(),
        }
    }
}

/// Starts the Deployment's replicas, puts them under load, rolls them all to a new revision
/// and reports every request's outcome and every pod's end.
pub async fn rolling_update(
    binary: &Path,
    deployment: &k8s_openapi::api::apps::v1::Deployment,
    scenario: &Scenario,
) -> Result<Report, String> {
    let template = PodTemplate::from_deployment(deployment)?;
    let name = deployment
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "service".into());
    let log_dir = scenario
        .out_dir
        .join(format!("{}-pods", report::slug(&scenario.name)));
    std::fs::create_dir_all(&log_dir).map_err(|err| err.to_string())?;

    let timeline = Arc::new(Timeline::new(scenario.live));
    let network_stop = CancellationToken::new();
    let endpoints = Endpoints::new(scenario.lag, timeline.clone());
    let health_path = template
        .readiness
        .as_ref()
        .map_or("/", |probe| probe.path.as_str())
        .to_owned();
    let proxy = Front::start(
        scenario.balancer,
        endpoints.clone(),
        &health_path,
        &log_dir,
        network_stop.clone(),
    )
    .await?;
    let metrics_port = template.ports.get("admin").copied();
    let controller = Deployment::new(
        &name,
        kubelet::Images {
            service: binary.to_path_buf(),
            sidecars: scenario.sidecars.clone(),
        },
        template,
        &log_dir,
        timeline.clone(),
        endpoints,
        move |pod| {
            if let Some(port) = metrics_port {
                pod.scrape_metrics(port, "/metrics", Duration::from_millis(250));
            }
        },
    );

    let result = async {
        controller.scale_up(1, Duration::from_secs(60)).await?;
        tokio::time::sleep(scenario.lag + Duration::from_millis(200)).await;
        let load_stop = CancellationToken::new();
        timeline.record(
            "load",
            Happening::LoadStarted {
                rate: scenario.load.rate,
                slow_every: scenario.load.slow_every,
                slow_ms: scenario.load.slow.as_millis() as u64,
            },
        );
        let load = tokio::spawn(load::run(
            proxy.addr,
            scenario.load.clone(),
            timeline.started().into(),
            load_stop.clone(),
        ));
        tokio::time::sleep(scenario.warm_up).await;
        controller.roll(1, 2, Duration::from_secs(300)).await?;
        controller.wait_terminated(Duration::from_secs(300)).await?;
        tokio::time::sleep(scenario.cool_down).await;
        load_stop.cancel();
        timeline.record("load", Happening::LoadStopping);
        load.await.map_err(|err| err.to_string())
    }
    .await;
    controller.tear_down();
    let tally = proxy.tally().await;
    network_stop.cancel();
    let outcomes = result?;
    let tally = tally?;

    let events = timeline.events();
    let deleted = Timeline::times(&events, &Happening::Deleted);
    let pods: Vec<PodEnd> = controller
        .pods()
        .iter()
        .filter(|pod| pod.is_terminating())
        .map(|pod| {
            let status = pod.status();
            let metrics = pod.last_metrics().map(|(_, text)| text);
            let sample = |name: &str| metrics.as_deref().and_then(|text| sample(text, name));
            PodEnd {
                pod: pod.name.clone(),
                exit_code: status.exit.as_ref().map(|exit| exit.code),
                sigkilled: status.exit.as_ref().is_some_and(|exit| exit.sigkilled),
                last_in_flight: sample("http_requests_in_flight"),
                last_draining: sample("lifecycle_draining"),
            }
        })
        .collect();
    let last_exit = controller
        .pods()
        .iter()
        .filter(|pod| pod.is_terminating())
        .filter_map(|pod| {
            pod.status()
                .exit
                .map(|exit| timeline.since_start(exit.at.into_std()).as_secs_f64())
        })
        .fold(0.0, f64::max);
    Ok(Report {
        scenario: scenario.name.clone(),
        outcomes,
        events,
        rollout: (deleted.first().copied().unwrap_or(0.0), last_exit),
        liveness_failures: controller
            .pods()
            .iter()
            .map(|pod| pod.liveness_failures())
            .sum(),
        balancer: scenario.balancer,
        proxy: tally,
        pods,
    })
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (sample, value) = line.rsplit_once(' ')?;
        (sample == name).then(|| value.parse().ok()).flatten()
    })
}
