//! The Kubernetes API calls: read the service's own Pod, publish events about it.
//!
//! Every call is bounded by `CALL_TIMEOUT` and its failure is logged, never returned: the
//! service serves and shuts down the same whether or not the API server answers.

use std::time::{Duration, SystemTime};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{GetParams, PostParams},
    core::Request,
};
use serde::Deserialize;

use super::budget::{PodShutdown, PreStop};

/// Longer than an answer from a healthy API server takes, short enough to never matter.
const CALL_TIMEOUT: Duration = super::CALL_PATIENCE;

/// Where the Pod is, from the downward API (the chart sets these).
pub struct Identity {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    /// The service's container among the Pod's; the first one when unset.
    pub container: Option<String>,
}

impl Identity {
    pub fn from_env() -> Option<Identity> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Some(Identity {
            name: var("POD_NAME")?,
            namespace: var("POD_NAMESPACE")?,
            uid: var("POD_UID"),
            container: var("CONTAINER_NAME"),
        })
    }
}

pub struct Cluster {
    client: Client,
    /// `/api/v1/namespaces/{namespace}/pods`
    pods: Request,
    events: Api<Event>,
    identity: Identity,
    /// The `reportingController` of every event.
    reporter: String,
    reference: ObjectReference,
}

impl Cluster {
    /// A client from the in-cluster service account, or from `KUBECONFIG` when set.
    pub async fn connect(identity: Identity, reporter: &str) -> Result<Cluster, String> {
        let mut config = tokio::time::timeout(CALL_TIMEOUT, kube::Config::infer())
            .await
            .map_err(|_| "reading the cluster configuration timed out".to_owned())?
            .map_err(|error| format!("no cluster configuration: {error}"))?;
        config.connect_timeout = Some(CALL_TIMEOUT);
        config.read_timeout = Some(CALL_TIMEOUT);
        config.write_timeout = Some(CALL_TIMEOUT);
        let client =
            Client::try_from(config).map_err(|error| format!("building the client: {error}"))?;
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(identity.name.clone()),
            namespace: Some(identity.namespace.clone()),
            uid: identity.uid.clone(),
            ..ObjectReference::default()
        };
        let pods = format!("/api/v1/namespaces/{}/pods", identity.namespace);
        Ok(Cluster {
            pods: Request::new(pods),
            events: Api::namespaced(client.clone(), &identity.namespace),
            client,
            identity,
            reporter: reporter.to_owned(),
            reference,
        })
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.identity.namespace, self.identity.name)
    }

    async fn own_pod(&self) -> Option<PodView> {
        let request = match self.pods.get(&self.identity.name, &GetParams::default()) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, pod = self.describe(), "not a Pod name");
                return None;
            }
        };
        let read = self.client.request::<PodView>(request);
        match tokio::time::timeout(CALL_TIMEOUT, read).await {
            Ok(Ok(pod)) => Some(pod),
            Ok(Err(error)) => {
                tracing::warn!(%error, pod = self.describe(), "could not read the Pod");
                None
            }
            Err(_) => {
                tracing::warn!(pod = self.describe(), "reading the Pod timed out");
                None
            }
        }
    }

    /// What the kubelet will allow the service's container at shutdown.
    pub async fn shutdown_spec(&self) -> Option<PodShutdown> {
        let spec = self.own_pod().await?.spec?;
        let container = match &self.identity.container {
            Some(name) => spec
                .containers
                .iter()
                .find(|container| &container.name == name),
            None => spec.containers.first(),
        };
        let Some(container) = container else {
            tracing::warn!(
                container = self.identity.container,
                "CONTAINER_NAME names no container of the Pod"
            );
            return None;
        };
        Some(PodShutdown {
            grace_period: Duration::from_secs(
                spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64,
            ),
            pre_stop: container.pre_stop(),
        })
    }

    /// When the kubelet will SIGKILL the service, if the Pod is being deleted:
    /// `deletionTimestamp` is the deletion plus its grace period, whichever set it
    /// (`kubectl delete --grace-period`, an eviction, a node shutdown).
    pub async fn kill_deadline(&self) -> Option<SystemTime> {
        let deletion = self.own_pod().await?.metadata.deletion_timestamp?;
        Some(SystemTime::from(deletion.0))
    }

    /// Creates an `events.k8s.io/v1` Event about the Pod. Each is created once and never
    /// patched into a series: a service has a handful in its whole life, so kube-runtime's
    /// `Recorder`, which caches events to count repeats, would only add to the binary.
    pub async fn publish(&self, warning: bool, reason: &str, action: &str, note: String) {
        let event = self.event(warning, reason, action, note);
        let params = PostParams::default();
        let created = self.events.create(&params, &event);
        match tokio::time::timeout(CALL_TIMEOUT, created).await {
            Ok(Ok(_)) => tracing::debug!(reason, "event published"),
            Ok(Err(error)) => tracing::warn!(%error, reason, "could not publish an event"),
            Err(_) => tracing::warn!(reason, "publishing an event timed out"),
        }
    }

    /// The Event as `kubectl events` shows it: named after the Pod and the instant, like
    /// the kubelet's own.
    fn event(&self, warning: bool, reason: &str, action: &str, note: String) -> Event {
        let now = Timestamp::now();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", self.identity.name, now.as_nanosecond())),
                namespace: Some(self.identity.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            reason: Some(reason.to_owned()),
            action: Some(action.to_owned()),
            note: Some(note),
            regarding: Some(self.reference.clone()),
            reporting_controller: Some(self.reporter.clone()),
            reporting_instance: Some(self.identity.name.clone()),
            ..Event::default()
        }
    }
}

/// The fields of the Pod the service reads. Not k8s-openapi's `Pod`: its deserializer, for
/// hundreds of fields never read here, would be the largest part of the `kube` feature's
/// binary (see docs/kubernetes.md).
#[derive(Deserialize)]
struct PodView {
    metadata: PodMetadata,
    spec: Option<PodSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMetadata {
    deletion_timestamp: Option<Time>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    termination_grace_period_seconds: Option<i64>,
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    name: String,
    lifecycle: Option<Lifecycle>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    pre_stop: Option<Handler>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handler {
    sleep: Option<SleepAction>,
    http_get: Option<HttpGetAction>,
}

#[derive(Deserialize)]
struct SleepAction {
    seconds: i64,
}

#[derive(Deserialize)]
struct HttpGetAction {
    path: Option<String>,
}

impl Container {
    fn pre_stop(&self) -> PreStop {
        let Some(handler) = self
            .lifecycle
            .as_ref()
            .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        else {
            return PreStop::None;
        };
        if let Some(sleep) = &handler.sleep {
            return PreStop::Sleep(Duration::from_secs(sleep.seconds.max(0) as u64));
        }
        match &handler.http_get {
            Some(get) if get.path.as_deref() == Some("/prestop") => PreStop::OwnEndpoint,
            _ => PreStop::Other,
        }
    }
}
