//! A generated project's Helm chart, rendered by real Helm and read back as typed
//! Kubernetes objects: `k8s-openapi` types for built-in kinds, `gateway-api`'s for the
//! HTTPRoute, `kube`'s `DynamicObject` for the rest (PodMonitor, PrometheusRule). A document
//! with a field its type does not know fails the test: each is written back from its type
//! and must come out unchanged.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use gateway_api::apis::standard::httproutes::HttpRoute;

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Container, Pod, PodSpec, Service, ServiceAccount},
    networking::v1::{Ingress, NetworkPolicy},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{Role, RoleBinding},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicObject;

use crate::cache_dir;

/// A tool installed by `scripts/install.sh` under the cache's `tools/bin`, or else found on
/// PATH.
pub fn tool(name: &str) -> PathBuf {
    let installed = cache_dir().join("tools").join("bin").join(name);
    if installed.exists() {
        installed
    } else {
        PathBuf::from(name)
    }
}

/// How to render: Kubernetes version, namespace, `--set` values and extra API versions.
#[derive(Clone, Debug)]
pub struct Render {
    pub kube_version: String,
    pub namespace: String,
    pub sets: Vec<String>,
    /// `--set-json key=json`, for values `--set` cannot spell (lists of objects, newlines).
    pub json_sets: Vec<String>,
    pub api_versions: Vec<String>,
}

impl Default for Render {
    fn default() -> Self {
        Render {
            kube_version: "1.30.0".into(),
            namespace: "shop".into(),
            sets: Vec::new(),
            json_sets: Vec::new(),
            api_versions: Vec::new(),
        }
    }
}

impl Render {
    pub fn kube(mut self, version: &str) -> Self {
        self.kube_version = version.into();
        self
    }

    /// `--set-json key=json`.
    pub fn set_json(mut self, assignment: &str) -> Self {
        self.json_sets.push(assignment.into());
        self
    }

    /// `--set key=value`.
    pub fn set(mut self, assignment: &str) -> Self {
        self.sets.push(assignment.into());
        self
    }

    /// As if the cluster served this API (`--api-versions`).
    pub fn with_api(mut self, api: &str) -> Self {
        self.api_versions.push(api.into());
        self
    }
}

/// One rendered object.
#[derive(Debug)]
pub enum Object {
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    ServiceAccount(Box<ServiceAccount>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    NetworkPolicy(Box<NetworkPolicy>),
    Ingress(Box<Ingress>),
    HttpRoute(Box<HttpRoute>),
    ConfigMap(Box<ConfigMap>),
    Pod(Box<Pod>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    /// A kind `k8s-openapi` does not know, such as a Prometheus Operator resource.
    Dynamic(Box<DynamicObject>),
}

/// Everything one `helm template` produced.
#[derive(Debug)]
pub struct Manifests {
    pub yaml: String,
    pub objects: Vec<Object>,
}

pub struct Chart {
    pub dir: PathBuf,
    /// The `helm` binary's name under the tools directory: `helm` (Helm 4) or `helm3`.
    helm: &'static str,
}

impl Chart {
    pub fn at(dir: &Path) -> Chart {
        Chart {
            dir: dir.to_path_buf(),
            helm: "helm",
        }
    }

    /// The same chart, rendered by Helm 3 (`helm3`, installed by `scripts/install.sh test`):
    /// most clusters' pipelines still run it.
    pub fn with_helm3(mut self) -> Chart {
        self.helm = "helm3";
        self
    }

    fn helm(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(tool(self.helm))
            .args(args)
            .output()
            .expect("helm runs (see scripts/install.sh)");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            Ok(stdout + &stderr)
        } else {
            Err(stderr + &stdout)
        }
    }

    /// `helm lint --strict`.
    pub fn lint(&self, sets: &[&str]) -> Result<String, String> {
        let mut args = vec!["lint", "--strict", self.dir.to_str().unwrap()];
        for set in sets {
            args.extend(["--set", set]);
        }
        self.helm(&args)
    }

    /// `helm install --dry-run=client`: what `helm install` prints, notes included, without
    /// a cluster.
    pub fn install_dry_run(&self, sets: &[&str]) -> Result<String, String> {
        let mut args = vec![
            "install",
            "release",
            self.dir.to_str().unwrap(),
            "--dry-run=client",
            "--namespace",
            "shop",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        self.helm(&args)
    }

    /// `helm template`, as YAML; `Err` carries Helm's message.
    pub fn template_yaml(&self, render: &Render) -> Result<String, String> {
        let mut args = vec![
            "template".to_owned(),
            "release".to_owned(),
            self.dir.to_str().unwrap().to_owned(),
            "--namespace".to_owned(),
            render.namespace.clone(),
            "--kube-version".to_owned(),
            render.kube_version.clone(),
        ];
        for set in &render.sets {
            args.extend(["--set".to_owned(), set.clone()]);
        }
        for set in &render.json_sets {
            args.extend(["--set-json".to_owned(), set.clone()]);
        }
        for api in &render.api_versions {
            args.extend(["--api-versions".to_owned(), api.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.helm(&args)
    }

    /// `helm template`, every document read into its type.
    pub fn template(&self, render: &Render) -> Result<Manifests, String> {
        let yaml = self.template_yaml(render)?;
        let objects = parse(&yaml);
        Ok(Manifests { yaml, objects })
    }

    /// `helm template`, which must succeed.
    pub fn render(&self, render: &Render) -> Manifests {
        self.template(render)
            .unwrap_or_else(|message| panic!("helm template failed:\n{message}"))
    }

    /// Helm's message for a render that must be refused.
    pub fn refusal(&self, render: &Render) -> String {
        match self.template_yaml(render) {
            Ok(_) => panic!(
                "helm template accepted {:?} {:?}",
                render.sets, render.json_sets
            ),
            Err(message) => message,
        }
    }
}

/// Reads every document of a multi-document YAML stream into its type.
pub fn parse(yaml: &str) -> Vec<Object> {
    // serde-saphyr skips the empty documents Helm leaves where a template renders nothing.
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).expect("helm renders valid YAML");
    let mut objects = Vec::new();
    for json in documents {
        let object = match json["kind"].as_str().unwrap_or_default() {
            "Deployment" => Object::Deployment(typed(&json)),
            "Service" => Object::Service(typed(&json)),
            "ServiceAccount" => Object::ServiceAccount(typed(&json)),
            "PodDisruptionBudget" => Object::PodDisruptionBudget(typed(&json)),
            "HorizontalPodAutoscaler" => Object::HorizontalPodAutoscaler(typed(&json)),
            "NetworkPolicy" => Object::NetworkPolicy(typed(&json)),
            "Ingress" => Object::Ingress(typed(&json)),
            "HTTPRoute" => Object::HttpRoute(typed(&json)),
            "ConfigMap" => Object::ConfigMap(typed(&json)),
            "Pod" => Object::Pod(typed(&json)),
            "Role" => Object::Role(typed(&json)),
            "RoleBinding" => Object::RoleBinding(typed(&json)),
            _ => Object::Dynamic(typed(&json)),
        };
        objects.push(object);
    }
    objects
}

/// One document as the type its kind names. A document that does not fit fails the test,
/// and so does one the type reads only in part: written back, it must be what Helm rendered
/// (serde skips a misspelt or misplaced field without a word).
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(json: &serde_json::Value) -> Box<T> {
    let kind = &json["kind"];
    let typed: T = serde_json::from_value(json.clone())
        .unwrap_or_else(|error| panic!("{kind} does not fit its type: {error}\n{json:#}"));
    let written_back = serde_json::to_value(&typed).expect("a typed object serializes");
    if written_back != *json {
        panic!(
            "{kind} has fields its type does not know, or values it reads otherwise:\n\
             rendered:     {json}\nas its type: {written_back}"
        );
    }
    Box::new(typed)
}

impl Object {
    pub fn kind(&self) -> String {
        match self {
            Object::Deployment(_) => "Deployment".into(),
            Object::Service(_) => "Service".into(),
            Object::ServiceAccount(_) => "ServiceAccount".into(),
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget".into(),
            Object::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler".into(),
            Object::NetworkPolicy(_) => "NetworkPolicy".into(),
            Object::Ingress(_) => "Ingress".into(),
            Object::HttpRoute(_) => "HTTPRoute".into(),
            Object::ConfigMap(_) => "ConfigMap".into(),
            Object::Pod(_) => "Pod".into(),
            Object::Role(_) => "Role".into(),
            Object::RoleBinding(_) => "RoleBinding".into(),
            Object::Dynamic(object) => object
                .types
                .as_ref()
                .map(|types| types.kind.clone())
                .unwrap_or_default(),
        }
    }
}

impl Object {
    /// The object's own labels and annotations (not its pod template's).
    pub fn labels_and_annotations(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let (labels, annotations) = match self {
            Object::Deployment(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::Service(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::ServiceAccount(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::PodDisruptionBudget(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::HorizontalPodAutoscaler(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::NetworkPolicy(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::Ingress(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::HttpRoute(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::ConfigMap(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::Pod(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::Role(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::RoleBinding(o) => (&o.metadata.labels, &o.metadata.annotations),
            Object::Dynamic(o) => (&o.metadata.labels, &o.metadata.annotations),
        };
        (
            labels.clone().unwrap_or_default(),
            annotations.clone().unwrap_or_default(),
        )
    }
}

impl Manifests {
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.objects.iter().map(Object::kind).collect();
        kinds.sort();
        kinds
    }

    pub fn deployment(&self) -> &Deployment {
        let mut found = self.objects.iter().filter_map(|object| match object {
            Object::Deployment(deployment) => Some(deployment.as_ref()),
            _ => None,
        });
        let deployment = found.next().expect("the chart renders a Deployment");
        assert!(found.next().is_none(), "exactly one Deployment");
        deployment
    }

    /// The spec of the Deployment's pods.
    pub fn pod_spec(&self) -> &PodSpec {
        let spec = self.deployment().spec.as_ref().expect("a Deployment spec");
        spec.template.spec.as_ref().expect("a pod spec")
    }

    /// The metadata of the Deployment's pods: their labels and annotations.
    pub fn pod_metadata(&self) -> &ObjectMeta {
        let spec = self.deployment().spec.as_ref().expect("a Deployment spec");
        spec.template.metadata.as_ref().expect("pod metadata")
    }

    /// The Deployment's one container.
    pub fn container(&self) -> &Container {
        let containers = &self.pod_spec().containers;
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    /// The literal value of an environment variable of the container.
    pub fn env(&self, name: &str) -> Option<String> {
        self.container()
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .and_then(|var| var.value.clone())
    }

    pub fn http_route(&self) -> Option<&HttpRoute> {
        self.objects.iter().find_map(|object| match object {
            Object::HttpRoute(route) => Some(route.as_ref()),
            _ => None,
        })
    }

    pub fn dynamic(&self, kind: &str) -> Option<&DynamicObject> {
        self.objects.iter().find_map(|object| match object {
            Object::Dynamic(dynamic) if object.kind() == kind => Some(dynamic.as_ref()),
            _ => None,
        })
    }
}

/// `manifests.service()` and the like: the first object of that kind, typed.
macro_rules! first_of_kind {
    ($($method:ident: $variant:ident),* $(,)?) => {
        impl Manifests {
            $(
                pub fn $method(&self) -> Option<&$variant> {
                    self.objects.iter().find_map(|object| match object {
                        Object::$variant(found) => Some(found.as_ref()),
                        _ => None,
                    })
                }
            )*
        }
    };
}

first_of_kind!(
    service: Service,
    ingress: Ingress,
    config_map: ConfigMap,
    horizontal_pod_autoscaler: HorizontalPodAutoscaler,
    network_policy: NetworkPolicy,
    pod: Pod,
    role: Role,
    role_binding: RoleBinding,
    service_account: ServiceAccount,
);
