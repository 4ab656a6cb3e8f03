//! What the simulator takes from the Deployment the chart rendered: everything a kubelet
//! and the Deployment controller would read from it, and nothing else.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Container, EnvVar, HTTPGetAction, Probe as KubeProbe},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

/// An HTTP probe, with the kubelet's defaults for what the spec leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub path: String,
    /// The container port it targets.
    pub port: u16,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PreStop {
    None,
    Sleep(Duration),
    HttpGet { path: String, port: u16 },
}

/// A native sidecar: an init container with `restartPolicy: Always`.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarSpec {
    pub name: String,
    pub image: String,
}

#[derive(Debug, Clone)]
pub struct PodTemplate {
    /// Started in this order before the service's container, stopped after it in reverse.
    pub sidecars: Vec<SidecarSpec>,
    pub env: Vec<EnvVar>,
    /// Container port by name.
    pub ports: BTreeMap<String, u16>,
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    pub pre_stop: PreStop,
    pub grace: Duration,
    pub replicas: u32,
    pub max_surge: u32,
    pub max_unavailable: u32,
    pub min_ready: Duration,
}

/// Who a simulated pod is, for the downward API.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub node: String,
}

impl PodTemplate {
    pub fn from_deployment(deployment: &Deployment) -> Result<PodTemplate, String> {
        let spec = deployment.spec.as_ref().ok_or("Deployment without spec")?;
        let pod = spec
            .template
            .spec
            .as_ref()
            .ok_or("Deployment without a pod spec")?;
        let [container] = pod.containers.as_slice() else {
            return Err("the simulator runs pods with exactly one container".into());
        };
        let ports: BTreeMap<String, u16> = container
            .ports
            .iter()
            .flatten()
            .filter_map(|port| Some((port.name.clone()?, port.container_port as u16)))
            .collect();
        let probe = |probe: &Option<KubeProbe>| -> Result<Option<Probe>, String> {
            probe
                .as_ref()
                .map(|probe| to_probe(probe, container))
                .transpose()
        };
        let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
        let rolling = spec
            .strategy
            .as_ref()
            .and_then(|strategy| strategy.rolling_update.as_ref());
        let surge = rolling.and_then(|rolling| rolling.max_surge.clone());
        let unavailable = rolling.and_then(|rolling| rolling.max_unavailable.clone());
        let max_surge = scaled(surge.as_ref(), replicas, true)
            .unwrap_or((replicas as f64 * 0.25).ceil() as u32);
        let max_unavailable = scaled(unavailable.as_ref(), replicas, false)
            .unwrap_or((replicas as f64 * 0.25).floor() as u32);
        if max_surge == 0 && max_unavailable == 0 {
            return Err("maxSurge and maxUnavailable cannot both be 0".into());
        }
        Ok(PodTemplate {
            sidecars: sidecars(pod.init_containers.as_deref().unwrap_or_default())?,
            env: container.env.clone().unwrap_or_default(),
            startup: probe(&container.startup_probe)?,
            liveness: probe(&container.liveness_probe)?,
            readiness: probe(&container.readiness_probe)?,
            pre_stop: pre_stop(container)?,
            ports,
            grace: Duration::from_secs(
                pod.termination_grace_period_seconds.unwrap_or(30).max(0) as u64
            ),
            replicas,
            max_surge,
            max_unavailable,
            min_ready: Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64),
        })
    }

    /// The environment of one pod: downward-API fields resolved to its identity, `$(VAR)`
    /// references expanded as the kubelet does, and listen addresses on a container port
    /// moved to the loopback port that stands for it (the pod's own network namespace).
    pub fn env_for(
        &self,
        pod: &PodIdentity,
        host_port: &BTreeMap<u16, u16>,
    ) -> Vec<(String, String)> {
        let mut resolved: Vec<(String, String)> = Vec::new();
        for var in &self.env {
            let value = if let Some(field) = var
                .value_from
                .as_ref()
                .and_then(|from| from.field_ref.as_ref())
            {
                match field.field_path.as_str() {
                    "metadata.name" => pod.name.clone(),
                    "metadata.namespace" => pod.namespace.clone(),
                    "spec.nodeName" => pod.node.clone(),
                    "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                    other => format!("unsupported-field-{other}"),
                }
            } else {
                expand(var.value.as_deref().unwrap_or_default(), &resolved)
            };
            let value = localize(&value, host_port);
            resolved.push((var.name.clone(), value));
        }
        resolved
    }
}

/// The pod's native sidecars; an init container that runs to completion is not simulated.
fn sidecars(init_containers: &[Container]) -> Result<Vec<SidecarSpec>, String> {
    init_containers
        .iter()
        .map(|container| match container.restart_policy.as_deref() {
            Some("Always") => Ok(SidecarSpec {
                name: container.name.clone(),
                image: container.image.clone().unwrap_or_default(),
            }),
            _ => Err(format!(
                "init container {}: the simulator runs native sidecars only",
                container.name
            )),
        })
        .collect()
}

fn to_probe(probe: &KubeProbe, container: &Container) -> Result<Probe, String> {
    let action = probe
        .http_get
        .as_ref()
        .ok_or("the simulator runs httpGet probes only")?;
    Ok(Probe {
        path: action.path.clone().unwrap_or_else(|| "/".into()),
        port: port_of(action, container)?,
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10),
        timeout: seconds(probe.timeout_seconds, 1),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

fn pre_stop(container: &Container) -> Result<PreStop, String> {
    let Some(hook) = container
        .lifecycle
        .as_ref()
        .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
    else {
        return Ok(PreStop::None);
    };
    if let Some(sleep) = &hook.sleep {
        return Ok(PreStop::Sleep(Duration::from_secs(
            sleep.seconds.max(0) as u64
        )));
    }
    if let Some(action) = &hook.http_get {
        return Ok(PreStop::HttpGet {
            path: action.path.clone().unwrap_or_else(|| "/".into()),
            port: port_of(action, container)?,
        });
    }
    Err("the simulator runs sleep and httpGet preStop hooks only".into())
}

fn port_of(action: &HTTPGetAction, container: &Container) -> Result<u16, String> {
    match &action.port {
        IntOrString::Int(port) => Ok(*port as u16),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some(name))
            .map(|port| port.container_port as u16)
            .ok_or_else(|| format!("no container port named {name}")),
    }
}

fn seconds(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(0) as u64)
}

/// maxSurge rounds percentages up, maxUnavailable down, as the Deployment controller does.
fn scaled(value: Option<&IntOrString>, replicas: u32, round_up: bool) -> Option<u32> {
    match value? {
        IntOrString::Int(count) => Some((*count).max(0) as u32),
        IntOrString::String(percent) => {
            let percent: f64 = percent.trim_end_matches('%').parse().ok()?;
            let exact = replicas as f64 * percent / 100.0;
            Some(if round_up {
                exact.ceil()
            } else {
                exact.floor()
            } as u32)
        }
    }
}

/// `$(NAME)` becomes the value of an earlier variable; `$$` escapes; unknown names stay.
fn expand(value: &str, earlier: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(escaped) = tail.strip_prefix("$$") {
            out.push('$');
            rest = escaped;
        } else if let Some(close) = tail.strip_prefix("$(").and_then(|inner| inner.find(')')) {
            let name = &tail[2..2 + close];
            match earlier.iter().rev().find(|(key, _)| key == name) {
                Some((_, found)) => out.push_str(found),
                None => out.push_str(&tail[..close + 3]),
            }
            rest = &tail[close + 3..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `0.0.0.0:8080` (or `[::]:8080`) with 8080 a container port becomes `127.0.0.1:<its host port>`.
fn localize(value: &str, host_port: &BTreeMap<u16, u16>) -> String {
    for wildcard in ["0.0.0.0:", "[::]:"] {
        if let Some(port) = value
            .strip_prefix(wildcard)
            .and_then(|port| port.parse::<u16>().ok())
            && let Some(mapped) = host_port.get(&port)
        {
            return format!("127.0.0.1:{mapped}");
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_expand_like_the_kubelet() {
        let earlier = vec![("POD_NAME".to_owned(), "web-1".to_owned())];
        assert_eq!(
            expand("k8s.pod.name=$(POD_NAME),x=$(MISSING)", &earlier),
            "k8s.pod.name=web-1,x=$(MISSING)"
        );
        assert_eq!(expand("cost $$5", &earlier), "cost $5");
    }

    #[test]
    fn percentages_round_as_the_deployment_controller_does() {
        let percent = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&percent), 3, true), Some(1));
        assert_eq!(scaled(Some(&percent), 3, false), Some(0));
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 3, true), Some(2));
    }

    #[test]
    fn listen_addresses_move_to_the_pods_loopback_ports() {
        let ports = BTreeMap::from([(8080, 41000)]);
        assert_eq!(localize("0.0.0.0:8080", &ports), "127.0.0.1:41000");
        assert_eq!(localize("0.0.0.0:9090", &ports), "0.0.0.0:9090");
        assert_eq!(
            localize("http://collector:4318", &ports),
            "http://collector:4318"
        );
    }
}
