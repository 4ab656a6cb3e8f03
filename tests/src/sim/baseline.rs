//! Edits a rendered Deployment into the pattern most services ship with, for comparison.

use k8s_openapi::api::apps::v1::Deployment;

/// The common pattern: no preStop hook, and the process stops accepting at SIGTERM
/// (`SHUTDOWN_DRAIN_DELAY=0s`), then finishes what is in flight.
pub fn strip_drain(deployment: &mut Deployment) {
    for container in containers(deployment) {
        if let Some(lifecycle) = container.lifecycle.as_mut() {
            lifecycle.pre_stop = None;
        }
        set_env(container, "SHUTDOWN_DRAIN_DELAY", "0s");
    }
}

/// Sets one environment variable of every container, as `kubectl set env` would.
pub fn set_env(container: &mut k8s_openapi::api::core::v1::Container, name: &str, value: &str) {
    let env = container.env.get_or_insert_with(Vec::new);
    match env.iter_mut().find(|var| var.name == name) {
        Some(var) => {
            var.value = Some(value.to_owned());
            var.value_from = None;
        }
        None => env.push(k8s_openapi::api::core::v1::EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }),
    }
}

/// The containers of the Deployment's pod template.
pub fn containers(
    deployment: &mut Deployment,
) -> impl Iterator<Item = &mut k8s_openapi::api::core::v1::Container> {
    deployment
        .spec
        .iter_mut()
        .flat_map(|spec| spec.template.spec.iter_mut())
        .flat_map(|pod| pod.containers.iter_mut())
}
