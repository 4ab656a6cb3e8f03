//! What stands in front of the pods: the simulator's own kube-proxy, or a real proxy (nginx
//! configured as ingress-nginx configures it, HAProxy, Envoy) that follows the same lagging
//! endpoint view without a reload, as their Kubernetes controllers make them do.
//!
//! Real proxies retry what failed upstream, so a client may never see an error a pod
//! caused; each proxy's own counters say what went wrong upstream.

mod envoy;
mod haproxy;
mod nginx;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    net::TcpStream,
    process::{Child, Command},
};
use tokio_util::sync::CancellationToken;

use super::network::{Endpoints, Proxy};
use crate::http1::{self, Request};

/// Which proxy routes the clients' connections to the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Balancer {
    /// The simulator's stand-in for kube-proxy: picks a pod per new connection, no retries.
    KubeProxy,
    /// nginx with a Lua balancer, an upstream keep-alive pool and `proxy_next_upstream
    /// error timeout`, as ingress-nginx configures it.
    Nginx,
    /// HAProxy with servers set through its runtime API, `http-reuse safe`, health checks on
    /// the readiness probe and `retries 3` with `option redispatch`.
    Haproxy,
    /// Envoy with endpoints from EDS (a watched file), connection pools and retries on
    /// connect failures, as Envoy-based gateways configure it.
    Envoy,
}

impl Balancer {
    pub const REAL: [Balancer; 3] = [Balancer::Nginx, Balancer::Haproxy, Balancer::Envoy];

    pub fn name(self) -> &'static str {
        match self {
            Balancer::KubeProxy => "kube-proxy (simulated)",
            Balancer::Nginx => "nginx (as ingress-nginx)",
            Balancer::Haproxy => "HAProxy",
            Balancer::Envoy => "Envoy",
        }
    }
}

/// What a proxy saw go wrong upstream, by its own counters or logs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ProxyTally {
    /// Connections refused or reset, and responses cut, between the proxy and a pod.
    pub upstream_errors: u64,
    /// Requests the proxy sent again to another pod.
    pub retries: u64,
    /// New connections that found no ready pod.
    pub no_endpoint: u64,
    /// The counters the figures come from, as the proxy names them.
    pub detail: String,
}

/// The running proxy, and the address clients connect to.
pub struct Front {
    pub balancer: Balancer,
    pub addr: SocketAddr,
    running: Running,
}

enum Running {
    KubeProxy(Proxy),
    /// A real proxy process (killed when dropped) and where its counters are read.
    Real {
        _process: Child,
        counters: Counters,
    },
}

/// Where a real proxy keeps what went wrong upstream.
enum Counters {
    /// nginx's error and access logs.
    NginxLogs(PathBuf),
    /// HAProxy's runtime API (`show stat`).
    HaproxyRuntimeApi(SocketAddr),
    /// Envoy's admin port (`/stats`).
    EnvoyAdmin(SocketAddr),
}

impl Front {
    /// Starts `balancer` in `dir` (its configuration and logs) following `endpoints`;
    /// proxies that health-check pods themselves ask for `health_path` (the readiness probe).
    pub async fn start(
        balancer: Balancer,
        endpoints: Arc<Endpoints>,
        health_path: &str,
        dir: &Path,
        stop: CancellationToken,
    ) -> Result<Front, String> {
        let routed = endpoints.watch_routed();
        let started = match balancer {
            Balancer::KubeProxy => {
                let proxy = Proxy::start(endpoints, stop)
                    .await
                    .map_err(|err| err.to_string())?;
                return Ok(Front {
                    balancer,
                    addr: proxy.addr,
                    running: Running::KubeProxy(proxy),
                });
            }
            Balancer::Nginx => nginx::start(&own_dir(balancer, dir)?, routed, stop).await,
            Balancer::Haproxy => {
                haproxy::start(&own_dir(balancer, dir)?, routed, health_path, stop).await
            }
            Balancer::Envoy => envoy::start(&own_dir(balancer, dir)?, routed, stop).await,
        }
        .map_err(|err| format!("{}: {err}", balancer.name()))?;
        Ok(Front {
            balancer,
            addr: started.addr,
            running: Running::Real {
                _process: started.process,
                counters: started.counters,
            },
        })
    }

    /// What went wrong upstream so far.
    pub async fn tally(&self) -> Result<ProxyTally, String> {
        match &self.running {
            Running::KubeProxy(proxy) => {
                let counters = &proxy.counters;
                let refused = counters.backend_refused.load(Ordering::Relaxed);
                Ok(ProxyTally {
                    upstream_errors: refused,
                    retries: 0,
                    no_endpoint: counters.no_ready_endpoint.load(Ordering::Relaxed),
                    detail: format!("backend_refused={refused}"),
                })
            }
            Running::Real { counters, .. } => match counters {
                Counters::NginxLogs(dir) => nginx::tally(dir),
                Counters::HaproxyRuntimeApi(addr) => haproxy::tally(*addr).await,
                Counters::EnvoyAdmin(admin) => envoy::tally(*admin).await,
            },
        }
    }
}

/// A fresh directory under `dir` for one proxy's configuration and logs.
fn own_dir(balancer: Balancer, dir: &Path) -> Result<PathBuf, String> {
    let dir = dir.join(super::report::slug(balancer.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    Ok(dir)
}

/// A real proxy, started and listening.
struct Started {
    addr: SocketAddr,
    process: Child,
    counters: Counters,
}

/// Starts `command` with its output in `dir/<name>.log`; killed when dropped.
fn spawn(mut command: Command, dir: &Path, name: &str) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start {name} (see scripts/install.sh): {err}"))
}

/// Waits until something accepts connections on `addr`, or the process has died.
async fn wait_listening(addr: SocketAddr, process: &mut Child, dir: &Path) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = process.try_wait() {
            return Err(format!(
                "exited with {status}; its log is in {}",
                dir.display()
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not listening on {addr} after 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request to a proxy's own admin or configuration endpoint; its body, unless the proxy
/// answered other than 200.
async fn admin_call(addr: SocketAddr, request: Request<'_>) -> Result<String, String> {
    let (method, path) = (request.method, request.path);
    match http1::once(addr, request, Duration::from_secs(10)).await {
        Ok(response) if response.status == 200 => Ok(response.text()),
        Ok(response) => Err(format!(
            "{method} {path}: {} {}",
            response.status,
            response.text()
        )),
        Err(err) => Err(format!("{method} {path}: {err}")),
    }
}
