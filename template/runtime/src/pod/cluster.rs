//! The Kubernetes API calls: read the service's own Pod, publish events about it.
//!
//! Every call is bounded by `CALL_TIMEOUT` and its failure is logged, never returned: the
//! service serves and shuts down the same whether or not the API server answers.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::{
    Api, Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

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
    pods: Api<Pod>,
    identity: Identity,
    recorder: Recorder,
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
        let reporter = Reporter {
            controller: reporter.to_owned(),
            instance: Some(identity.name.clone()),
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(identity.name.clone()),
            namespace: Some(identity.namespace.clone()),
            uid: identity.uid.clone(),
            ..ObjectReference::default()
        };
        Ok(Cluster {
            pods: Api::namespaced(client.clone(), &identity.namespace),
            recorder: Recorder::new(client, reporter),
            identity,
            reference,
        })
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.identity.namespace, self.identity.name)
    }

    async fn own_pod(&self) -> Option<Pod> {
        match tokio::time::timeout(CALL_TIMEOUT, self.pods.get(&self.identity.name)).await {
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
            pre_stop: pre_stop(container),
        })
    }

    /// When the kubelet will SIGKILL the service, if the Pod is being deleted:
    /// `deletionTimestamp` is the deletion plus its grace period, whichever set it
    /// (`kubectl delete --grace-period`, an eviction, a node shutdown).
    pub async fn kill_deadline(&self) -> Option<SystemTime> {
        let deletion = self.own_pod().await?.metadata.deletion_timestamp?;
        Some(SystemTime::from(deletion.0))
    }

    pub async fn publish(&self, warning: bool, reason: &str, action: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        let published = self.recorder.publish(&event, &self.reference);
        match tokio::time::timeout(CALL_TIMEOUT, published).await {
            Ok(Ok(())) => tracing::debug!(reason, "event published"),
            Ok(Err(error)) => tracing::warn!(%error, reason, "could not publish an event"),
            Err(_) => tracing::warn!(reason, "publishing an event timed out"),
        }
    }
}

fn pre_stop(container: &Container) -> PreStop {
    let Some(handler) = container
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
