//! HAProxy as a team would run it in front of pods: a backend of server slots filled and
//! emptied through the runtime API as the endpoints change (no reload), `http-reuse safe`,
//! HTTP health checks on each pod's readiness probe, and `retries 3` with `option
//! redispatch`, which retries connection failures on another pod.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
    sync::watch,
};
use tokio_util::sync::CancellationToken;

use super::{Counters, ProxyTally, Started, spawn, wait_listening};
use crate::{chart::tool, sim::network::Routed};

/// More than the pods a rolling update of a few replicas ever has at once.
const SLOTS: usize = 16;

pub(super) async fn start(
    dir: &Path,
    mut routed: watch::Receiver<Vec<Routed>>,
    health_path: &str,
    stop: CancellationToken,
) -> Result<Started, String> {
    let listen = crate::free_loopback_address().map_err(|e| e.to_string())?;
    // On loopback TCP: a unix socket's path under the build directory can exceed the 97
    // bytes HAProxy accepts.
    let runtime_api_addr = crate::free_loopback_address().map_err(|e| e.to_string())?;
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, config(listen, runtime_api_addr, health_path))
        .map_err(|e| e.to_string())?;
    let mut command = Command::new(tool("haproxy"));
    command.arg("-db").arg("-f").arg(&conf);
    let mut process = spawn(command, dir, "haproxy")?;
    wait_listening(listen, &mut process, dir).await?;

    tokio::spawn(async move {
        let mut slots = Slots::default();
        loop {
            let commands = slots.follow(&routed.borrow_and_update());
            if let Err(err) = runtime_api(runtime_api_addr, &commands).await {
                eprintln!("haproxy runtime API: {err}");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = routed.changed() => if changed.is_err() { return },
            }
        }
    });
    Ok(Started {
        addr: listen,
        process,
        counters: Counters::HaproxyRuntimeApi(runtime_api_addr),
    })
}

fn config(listen: SocketAddr, runtime_api: SocketAddr, health_path: &str) -> String {
    format!(
        r#"global
    stats socket ipv4@{runtime_api} level admin
    maxconn 8192
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    retries 3
    option redispatch

frontend service
    bind {listen}
    default_backend pods

backend pods
    balance roundrobin
    http-reuse safe
    option httpchk GET {health_path}
    default-server check inter 1s fall 2 rise 1
    server-template pod 1-{SLOTS} 127.0.0.1:1 disabled
"#
    )
}

/// Which slot holds which pod; a pod keeps its slot while it lives.
#[derive(Default)]
struct Slots {
    by_pod: BTreeMap<String, usize>,
    routed: BTreeMap<String, bool>,
}

impl Slots {
    /// Runtime API commands that make the backend route to exactly `routed`.
    fn follow(&mut self, routed: &[Routed]) -> Vec<String> {
        let mut commands = Vec::new();
        for Routed { pod, addr, health } in routed {
            let slot = match self.by_pod.get(pod) {
                Some(&slot) => slot,
                None => {
                    let slot = self.by_pod.len() % SLOTS + 1;
                    self.by_pod.insert(pod.clone(), slot);
                    commands.extend(fill(slot, *addr, health.map(|health| health.port())));
                    slot
                }
            };
            if self.routed.insert(pod.clone(), true) != Some(true) {
                commands.push(format!("set server pods/pod{slot} state ready"));
            }
        }
        for (pod, &slot) in &self.by_pod {
            let still = routed.iter().any(|routed| routed.pod == *pod);
            if !still && self.routed.insert(pod.clone(), false) == Some(true) {
                // `maint`: no new requests; established connections finish what they carry.
                commands.push(format!("set server pods/pod{slot} state maint"));
            }
        }
        commands
    }
}

fn fill(slot: usize, addr: SocketAddr, check_port: Option<u16>) -> Vec<String> {
    let mut commands = vec![format!(
        "set server pods/pod{slot} addr {} port {}",
        addr.ip(),
        addr.port()
    )];
    if let Some(port) = check_port {
        commands.push(format!("set server pods/pod{slot} check-port {port}"));
    }
    commands.push(format!("enable health pods/pod{slot}"));
    commands
}

/// Sends commands that change servers; an answer other than an acknowledgement is an error.
async fn runtime_api(addr: SocketAddr, commands: &[String]) -> Result<(), String> {
    for command in commands {
        let answer = ask(addr, command).await?;
        let answer = answer.trim();
        let acknowledged = answer.is_empty()
            || answer.contains("changed from")
            || answer.starts_with("no need to change");
        if !acknowledged {
            return Err(format!("{command}: {answer}"));
        }
    }
    Ok(())
}

/// One runtime API command and its answer; HAProxy closes the connection after answering.
async fn ask(addr: SocketAddr, command: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("runtime API at {addr}: {e}"))?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// The backend's failed attempts from `show stat`: connection errors (`econ`) and
/// response errors (`eresp`) the client saw, and retries (`wretr`) and redispatches to
/// another pod (`wredis`) that hid one.
pub(super) async fn tally(runtime_api: SocketAddr) -> Result<ProxyTally, String> {
    let csv = ask(runtime_api, "show stat").await?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty show stat")?
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let backend: Vec<&str> = lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"pods") && fields.get(1) == Some(&"BACKEND"))
        .ok_or("no backend line in show stat")?;
    let field = |name: &str| -> u64 {
        header
            .iter()
            .position(|column| *column == name)
            .and_then(|at| backend.get(at))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    let (econ, eresp, wretr, wredis) = (
        field("econ"),
        field("eresp"),
        field("wretr"),
        field("wredis"),
    );
    // A retry or a redispatch follows a failed attempt that the client never saw.
    Ok(ProxyTally {
        upstream_errors: econ + eresp + wretr + wredis,
        retries: wretr + wredis,
        no_endpoint: 0,
        detail: format!("econ={econ} eresp={eresp} wretr={wretr} wredis={wredis}"),
    })
}
