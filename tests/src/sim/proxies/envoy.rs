//! Envoy as Envoy-based gateways run it: a cluster whose endpoints come from EDS (here a
//! watched file, rewritten and moved into place on every change, as a control plane would
//! push them), round robin, connection pools, and Istio's default retry of connection
//! failures and refused streams (2 retries).

use std::{net::SocketAddr, path::Path};

use tokio::{process::Command, sync::watch};
use tokio_util::sync::CancellationToken;

use super::{Counters, ProxyTally, Started, admin_call, spawn, wait_listening};
use crate::{chart::tool, http1::Request, sim::network::Routed};

pub(super) async fn start(
    dir: &Path,
    mut routed: watch::Receiver<Vec<Routed>>,
    stop: CancellationToken,
) -> Result<Started, String> {
    let listen = crate::free_loopback_address().map_err(|e| e.to_string())?;
    let admin = crate::free_loopback_address().map_err(|e| e.to_string())?;
    let eds = dir.join("eds");
    std::fs::create_dir_all(&eds).map_err(|e| e.to_string())?;
    write_assignment(&eds, &routed.borrow_and_update())?;
    let conf = dir.join("envoy.yaml");
    std::fs::write(&conf, config(listen, admin, &eds)).map_err(|e| e.to_string())?;
    let mut command = Command::new(tool("envoy"));
    command.arg("--config-path").arg(&conf).args([
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ]);
    let mut process = spawn(command, dir, "envoy")?;
    wait_listening(admin, &mut process, dir).await?;

    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = routed.changed() => if changed.is_err() { return },
            }
            if let Err(err) = write_assignment(&eds, &routed.borrow_and_update()) {
                eprintln!("envoy EDS: {err}");
            }
        }
    });
    wait_listening(listen, &mut process, dir).await?;
    Ok(Started {
        addr: listen,
        process,
        counters: Counters::EnvoyAdmin(admin),
    })
}

fn config(listen: SocketAddr, admin: SocketAddr, eds: &Path) -> String {
    let eds = eds.display();
    format!(
        r#"node: {{ id: simulator, cluster: simulator }}
admin:
  address: {{ socket_address: {{ address: {admin_ip}, port_value: {admin_port} }} }}
static_resources:
  listeners:
  - name: service
    address: {{ socket_address: {{ address: {listen_ip}, port_value: {listen_port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: service
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: pods
                  timeout: 60s
                  retry_policy: {{ retry_on: "connect-failure,refused-stream", num_retries: 2 }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: pods
    type: EDS
    connect_timeout: 5s
    lb_policy: ROUND_ROBIN
    eds_cluster_config:
      eds_config:
        resource_api_version: V3
        path_config_source:
          path: {eds}/pods.yaml
          watched_directory: {{ path: {eds} }}
"#,
        admin_ip = admin.ip(),
        admin_port = admin.port(),
        listen_ip = listen.ip(),
        listen_port = listen.port(),
    )
}

/// Writes the cluster's endpoints beside the watched file, then moves it into place, so
/// Envoy never reads half a file.
fn write_assignment(eds: &Path, routed: &[Routed]) -> Result<(), String> {
    let endpoints: String = routed
        .iter()
        .map(|routed| {
            format!(
                "    - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                routed.addr.ip(),
                routed.addr.port()
            )
        })
        .collect();
    let lb_endpoints = if endpoints.is_empty() {
        "    []\n".to_owned()
    } else {
        endpoints
    };
    let assignment = format!(
        "version_info: \"{}\"\nresources:\n- \"@type\": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n  cluster_name: pods\n  endpoints:\n  - lb_endpoints:\n{lb_endpoints}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let staged = eds.join(".pods.yaml.new");
    std::fs::write(&staged, assignment).map_err(|e| e.to_string())?;
    std::fs::rename(&staged, eds.join("pods.yaml")).map_err(|e| e.to_string())
}

/// Upstream connection failures, resets and retries from the cluster's counters.
pub(super) async fn tally(admin: SocketAddr) -> Result<ProxyTally, String> {
    let stats = admin_call(admin, Request::get("/stats?filter=^cluster\\.pods\\.")).await?;
    let counter = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cluster.pods.{name}: ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    let names = [
        "upstream_cx_connect_fail",
        "upstream_cx_destroy_remote_with_active_rq",
        "upstream_rq_rx_reset",
        "upstream_rq_tx_reset",
    ];
    let errors: Vec<(&str, u64)> = names.iter().map(|&name| (name, counter(name))).collect();
    let retries = counter("upstream_rq_retry");
    let no_endpoint = counter("upstream_cx_none_healthy");
    let mut detail: Vec<String> = errors
        .iter()
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    detail.push(format!("upstream_rq_retry={retries}"));
    Ok(ProxyTally {
        upstream_errors: errors.iter().map(|(_, count)| count).sum(),
        retries,
        no_endpoint,
        detail: detail.join(" "),
    })
}
