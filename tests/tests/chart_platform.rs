//! What a platform team needs of the chart on day one, without forking it: traffic in
//! (Ingress, Gateway API), files and secrets, init containers and native sidecars, common
//! metadata, and monitoring it can tune. Rendered by real Helm and read as typed objects
//! (`tests/src/chart.rs` refuses any field a type does not know).

use std::{collections::BTreeMap, sync::OnceLock};

use k8s_openapi::api::core::v1::Container;
use kube_service_template_tests::{
    Generated,
    chart::{Chart, Manifests, Render},
    generate,
};

fn project() -> &'static Generated {
    static PROJECT: OnceLock<Generated> = OnceLock::new();
    PROJECT.get_or_init(|| generate("platform-chart", &[]).expect("defaults generate"))
}

fn chart() -> Chart {
    Chart::at(&project().dir.join("helm"))
}

fn render(render: Render) -> Manifests {
    chart().render(&render)
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn grace_period(manifests: &Manifests) -> i64 {
    manifests
        .pod_spec()
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds is set")
}

fn names(containers: &[Container]) -> Vec<&str> {
    containers.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn a_writable_tmp_is_mounted_by_default_and_can_be_replaced() {
    let manifests = render(Render::default());
    let volumes = manifests.pod_spec().volumes.as_ref().expect("volumes");
    let tmp = volumes
        .iter()
        .find(|v| v.name == "tmp")
        .expect("a tmp volume");
    let empty_dir = tmp.empty_dir.as_ref().expect("tmp is an emptyDir");
    assert_eq!(empty_dir.size_limit.as_ref().unwrap().0, "64Mi");
    assert_eq!(
        empty_dir.medium, None,
        "on disk: memory would count against the limit"
    );
    let mounts = manifests
        .container()
        .volume_mounts
        .as_ref()
        .expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "tmp" && m.mount_path == "/tmp"),
        "{mounts:?}"
    );
    let hardened = manifests.container().security_context.as_ref().unwrap();
    assert_eq!(hardened.read_only_root_filesystem, Some(true));

    let own = render(
        Render::default()
            .set("tmpDir.enabled=false")
            .set_json(r#"volumes=[{"name":"scratch","emptyDir":{"medium":"Memory"}}]"#)
            .set_json(r#"volumeMounts=[{"name":"scratch","mountPath":"/tmp"}]"#),
    );
    let volumes = own.pod_spec().volumes.as_ref().unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["scratch"]
    );
    let mounts = own.container().volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_path, "/tmp");

    let bigger = render(Render::default().set("tmpDir.sizeLimit=1Gi"));
    let tmp = &bigger.pod_spec().volumes.as_ref().unwrap()[0];
    assert_eq!(
        tmp.empty_dir
            .as_ref()
            .unwrap()
            .size_limit
            .as_ref()
            .unwrap()
            .0,
        "1Gi"
    );
}

#[test]
fn config_maps_and_secrets_reach_the_container_without_overriding_the_shutdown_values() {
    let manifests = render(
        Render::default()
            .set_json(
                r#"envFrom=[{"configMapRef":{"name":"settings"}},{"secretRef":{"name":"db"},"prefix":"DB_"}]"#,
            )
            .set_json(r#"volumes=[{"name":"certs","secret":{"secretName":"tls"}}]"#)
            .set_json(r#"volumeMounts=[{"name":"certs","mountPath":"/etc/certs","readOnly":true}]"#),
    );
    let container = manifests.container();
    let env_from = container.env_from.as_ref().expect("envFrom");
    assert_eq!(
        env_from[0].config_map_ref.as_ref().unwrap().name,
        "settings"
    );
    assert_eq!(env_from[1].secret_ref.as_ref().unwrap().name, "db");
    assert_eq!(env_from[1].prefix.as_deref(), Some("DB_"));
    // Kubernetes gives `env` precedence over `envFrom`: a ConfigMap with SHUTDOWN_TIMEOUT
    // cannot undo the budget, because the chart always sets it in `env`.
    for derived in ["SHUTDOWN_TIMEOUT", "PRESTOP_DELAY", "SHUTDOWN_DRAIN_DELAY"] {
        assert!(manifests.env(derived).is_some(), "{derived} is in env");
    }
    let volumes = manifests.pod_spec().volumes.as_ref().unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["tmp", "certs"]
    );
    let certs = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "certs")
        .expect("the certs mount");
    assert_eq!(
        (certs.mount_path.as_str(), certs.read_only),
        ("/etc/certs", Some(true))
    );
}

#[test]
fn sidecars_start_first_stop_last_and_join_the_shutdown_budget() {
    let plain = render(Render::default());
    let base = grace_period(&plain);
    assert!(plain.pod_spec().init_containers.is_none());

    let manifests = render(
        Render::default()
            .set_json(r#"sidecars=[{"name":"proxy","image":"envoyproxy/envoy:v1.33"}]"#)
            .set_json(r#"initContainers=[{"name":"migrate","image":"shop-migrations:1"}]"#),
    );
    let init = manifests.pod_spec().init_containers.as_ref().unwrap();
    assert_eq!(names(init), ["proxy", "migrate"]);
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    assert_eq!(init[1].restart_policy, None, "a plain init container");
    // The kubelet stops native sidecars only after the service has exited: their stop time
    // comes after the whole budget.
    assert_eq!(grace_period(&manifests), base + 5);
    let budget = &manifests.pod_metadata().annotations.as_ref().unwrap()["shutdown-budget"];
    assert!(budget.contains("+ sidecarStopSeconds (5) +"), "{budget}");

    let slow = render(
        Render::default()
            .set_json(r#"sidecars=[{"name":"proxy","image":"envoyproxy/envoy:v1.33"}]"#)
            .set("shutdown.sidecarStopSeconds=12"),
    );
    assert_eq!(grace_period(&slow), base + 12);

    // A sidecar written where it must stand among the init containers counts the same.
    let placed = render(Render::default().set_json(
        r#"initContainers=[{"name":"vault-init","image":"vault:1"},{"name":"vault-agent","image":"vault:1","restartPolicy":"Always"}]"#,
    ));
    assert_eq!(grace_period(&placed), base + 5);
    let init = placed.pod_spec().init_containers.as_ref().unwrap();
    assert_eq!(names(init), ["vault-init", "vault-agent"]);

    let init_only =
        render(Render::default().set_json(r#"initContainers=[{"name":"migrate","image":"m:1"}]"#));
    assert_eq!(
        grace_period(&init_only),
        base,
        "no sidecar, no sidecar time"
    );
}

/// A sidecar's own port is closed by the chart's NetworkPolicy until a rule opens it.
#[test]
fn the_network_policy_takes_a_rule_for_a_sidecars_port() {
    let manifests = render(Render::default().set_json(
        r#"networkPolicy.extraIngress=[{"ports":[{"port":15090,"protocol":"TCP"}],"from":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"istio-system"}}}]}]"#,
    ));
    let policy = manifests.network_policy().expect("a NetworkPolicy");
    let rules = policy.spec.as_ref().unwrap().ingress.as_ref().unwrap();
    assert_eq!(rules.len(), 3, "http, admin, then the extra rule");
    let extra = &rules[2];
    assert_eq!(
        extra.ports.as_ref().unwrap()[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15090))
    );
    assert!(extra.from.as_ref().unwrap()[0].namespace_selector.is_some());
}

#[test]
fn an_image_digest_pins_the_image_and_leaves_the_version_label_readable() {
    let manifests = render(
        Render::default()
            .set("image.repository=registry.example/shop")
            .set("image.tag=1.4.2")
            .set(&format!("image.digest={DIGEST}"))
            .set("priorityClassName=business-critical"),
    );
    assert_eq!(
        manifests.container().image.as_deref(),
        Some(format!("registry.example/shop@{DIGEST}").as_str())
    );
    let labels = manifests.pod_metadata().labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/version"], "1.4.2");
    assert_eq!(
        manifests.pod_spec().priority_class_name.as_deref(),
        Some("business-critical")
    );
    let test_pod = manifests.pod().expect("the helm test Pod");
    assert_eq!(
        test_pod.spec.as_ref().unwrap().containers[0].image,
        manifests.container().image,
        "helm test runs the pinned image too"
    );
}

/// Every optional object on, with common metadata.
fn everything_on() -> Render {
    Render::default()
        .with_api("monitoring.coreos.com/v1/PodMonitor")
        .with_api("monitoring.coreos.com/v1/PrometheusRule")
        .set("autoscaling.enabled=true")
        .set("metrics.dashboard.enabled=true")
        .set("ingress.enabled=true")
        .set("httpRoute.enabled=true")
        .set("commonLabels.team=payments")
        .set("commonAnnotations.owner=payments@example.com")
        .set("serviceAccount.annotations.owner=platform@example.com")
        .set("service.annotations.example\\.com/lb=internal")
}

#[test]
fn common_labels_and_annotations_reach_every_object_but_never_a_selector() {
    let manifests = render(everything_on());
    assert!(manifests.objects.len() >= 14, "{:?}", manifests.kinds());
    for object in &manifests.objects {
        let (labels, annotations) = object.labels_and_annotations();
        let kind = object.kind();
        assert_eq!(
            labels.get("team").map(String::as_str),
            Some("payments"),
            "{kind}"
        );
        let owner = annotations.get("owner").map(String::as_str);
        let expected = if kind == "ServiceAccount" {
            "platform@example.com"
        } else {
            "payments@example.com"
        };
        assert_eq!(owner, Some(expected), "{kind}: its own annotation wins");
    }
    let pod_labels = manifests.pod_metadata().labels.as_ref().unwrap();
    assert_eq!(pod_labels["team"], "payments");

    let selectors: Vec<BTreeMap<String, String>> = vec![
        manifests
            .deployment()
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .clone()
            .unwrap(),
        manifests
            .service()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .selector
            .clone()
            .unwrap(),
        manifests
            .network_policy()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .clone()
            .unwrap(),
    ];
    for selector in selectors {
        assert!(!selector.contains_key("team"), "{selector:?}");
        assert_eq!(selector.len(), 2, "{selector:?}");
    }
    let monitor = manifests.dynamic("PodMonitor").unwrap();
    assert!(
        monitor.data["spec"]["selector"]["matchLabels"]
            .get("team")
            .is_none()
    );

    let (_, service_annotations) = manifests
        .objects
        .iter()
        .find(|object| object.kind() == "Service")
        .unwrap()
        .labels_and_annotations();
    assert_eq!(service_annotations["example.com/lb"], "internal");
    let (_, hook) = manifests
        .objects
        .iter()
        .find(|object| object.kind() == "Pod")
        .unwrap()
        .labels_and_annotations();
    assert_eq!(
        hook["helm.sh/hook"], "test",
        "the hook survives commonAnnotations"
    );
}

#[test]
fn ingress_and_http_route_send_every_path_to_the_service() {
    let plain = render(Render::default());
    assert!(plain.ingress().is_none() && plain.http_route().is_none());

    let manifests = render(
        Render::default()
            .set("ingress.enabled=true")
            .set("ingress.className=nginx")
            .set_json(
                r#"ingress.hosts=[{"host":"shop.example","paths":[{"path":"/api","pathType":"Prefix"},{"path":"/health","pathType":"Exact"}]},{"paths":[{"path":"/"}]}]"#,
            )
            .set_json(r#"ingress.tls=[{"secretName":"shop-tls","hosts":["shop.example"]}]"#)
            .set("httpRoute.enabled=true")
            .set_json(r#"httpRoute.parentRefs=[{"name":"public","namespace":"gateways","sectionName":"https"}]"#)
            .set_json(
                r#"httpRoute.rules=[{"matches":[{"path":{"type":"PathPrefix","value":"/api"}}],"timeouts":{"request":"30s"}},{}]"#,
            ),
    );
    let service = manifests.service().unwrap();
    let service_name = service.metadata.name.clone().unwrap();
    let service_port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];

    let ingress = manifests.ingress().expect("an Ingress");
    let spec = ingress.spec.as_ref().unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(
        spec.tls.as_ref().unwrap()[0].secret_name.as_deref(),
        Some("shop-tls")
    );
    let rules = spec.rules.as_ref().unwrap();
    assert_eq!(rules[0].host.as_deref(), Some("shop.example"));
    assert_eq!(rules[1].host, None, "a rule for every host");
    let paths: Vec<_> = rules
        .iter()
        .flat_map(|rule| &rule.http.as_ref().unwrap().paths)
        .collect();
    assert_eq!(paths.len(), 3);
    assert_eq!(paths[1].path_type, "Exact");
    assert_eq!(paths[2].path_type, "Prefix", "the portable default");
    for path in paths {
        let backend = path.backend.service.as_ref().unwrap();
        assert_eq!(backend.name, service_name);
        let port = backend.port.as_ref().unwrap();
        assert_eq!(port.name.as_ref(), service_port.name.as_ref());
    }

    let route = manifests.http_route().expect("an HTTPRoute");
    let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
    assert_eq!(
        (parent.name.as_str(), parent.namespace.as_deref()),
        ("public", Some("gateways"))
    );
    let rules = route.spec.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 2);
    assert!(rules[0].timeouts.is_some() && rules[0].matches.is_some());
    for rule in rules {
        let backends = rule.backend_refs.as_ref().unwrap();
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].name, service_name);
        assert_eq!(backends[0].port, Some(service_port.port));
    }

    // With no rules, the route still sends everything to the Service.
    let bare = render(
        Render::default()
            .set("httpRoute.enabled=true")
            .set_json("httpRoute.rules=[]"),
    );
    let rules = bare.http_route().unwrap().spec.rules.clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].backend_refs.as_ref().unwrap()[0].name,
        service_name
    );
}

#[test]
fn monitoring_takes_a_teams_scrape_settings_and_rules() {
    let manifests = render(
        Render::default()
            .with_api("monitoring.coreos.com/v1/PodMonitor")
            .with_api("monitoring.coreos.com/v1/PrometheusRule")
            .set("metrics.podMonitor.scrapeTimeout=10s")
            .set("metrics.podMonitor.labels.release=kube-prometheus-stack")
            .set_json(
                r#"metrics.podMonitor.relabelings=[{"sourceLabels":["__meta_kubernetes_pod_node_name"],"targetLabel":"node"}]"#,
            )
            .set_json(
                r#"metrics.podMonitor.metricRelabelings=[{"sourceLabels":["__name__"],"regex":"process_.*","action":"drop"}]"#,
            )
            .set_json(
                r#"metrics.prometheusRule.extraGroups=[{"name":"shop.business","rules":[{"alert":"NoOrders","expr":"sum(rate(http_requests_total{route=\"/orders\"}[10m])) == 0","for":"30m"}]}]"#,
            ),
    );
    let monitor = manifests.dynamic("PodMonitor").unwrap();
    assert_eq!(
        monitor.metadata.labels.as_ref().unwrap()["release"],
        "kube-prometheus-stack"
    );
    let endpoint = &monitor.data["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["scrapeTimeout"], "10s");
    let relabelings = endpoint["relabelings"].as_array().unwrap();
    assert_eq!(relabelings.len(), 2);
    assert_eq!(
        relabelings[0]["targetLabel"], "service",
        "the chart's first"
    );
    assert_eq!(relabelings[1]["targetLabel"], "node");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");

    let rule = manifests.dynamic("PrometheusRule").unwrap();
    let groups = rule.data["spec"]["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names.last(), Some(&"shop.business"), "{names:?}");
    assert!(names.len() >= 3, "the chart's groups stay: {names:?}");

    let defaults = render(Render::default().with_api("monitoring.coreos.com/v1/PodMonitor"));
    let endpoint = &defaults.dynamic("PodMonitor").unwrap().data["spec"]["podMetricsEndpoints"][0];
    assert!(endpoint.get("scrapeTimeout").is_none() && endpoint.get("metricRelabelings").is_none());
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["port"], "admin");
}

#[test]
fn platform_values_that_cannot_work_are_refused_by_name() {
    let refusals = [
        (
            Render::default().set("commonLabels.app\\.kubernetes\\.io/name=other"),
            "commonLabels sets app.kubernetes.io/name, a label the chart sets itself",
        ),
        (
            Render::default()
                .set("commonLabels.team=a")
                .set("podLabels.team=b"),
            "podLabels and commonLabels both set team",
        ),
        (
            Render::default().set_json(r#"sidecars=[{"name":"platform-chart","image":"x:1"}]"#),
            "sidecars[0] is named platform-chart, the name of the service's own container",
        ),
        (
            Render::default()
                .set_json(r#"initContainers=[{"name":"platform-chart","image":"x:1"}]"#),
            "initContainers[0] is named platform-chart",
        ),
        (
            Render::default().set_json(r#"volumes=[{"name":"tmp","emptyDir":{}}]"#),
            "volumes[0] is named tmp, the volume the chart mounts at /tmp",
        ),
        (
            Render::default().set_json(r#"volumeMounts=[{"name":"x","mountPath":"/tmp/"}]"#),
            "volumeMounts[0] mounts at /tmp",
        ),
        (
            Render::default().set("metrics.podMonitor.scrapeTimeout=20s"),
            "metrics.podMonitor.scrapeTimeout (20s) is longer than metrics.podMonitor.interval (15s)",
        ),
        (
            Render::default()
                .set_json(r#"sidecars=[{"name":"proxy","image":"x:1","restartPolicy":"Never"}]"#),
            "/sidecars/0/restartPolicy",
        ),
        (
            Render::default().set("image.digest=sha256:abc"),
            "/image/digest",
        ),
        (
            Render::default().set_json(r#"envFrom=[{"prefix":"X_"}]"#),
            "/envFrom/0",
        ),
        (
            Render::default()
                .set_json(r#"httpRoute.rules=[{"backendRefs":[{"name":"elsewhere","port":80}]}]"#),
            "/httpRoute/rules/0",
        ),
        (
            Render::default().set_json(r#"ingress.hosts=[{"paths":[{"path":"api"}]}]"#),
            "/ingress/hosts/0/paths/0/path",
        ),
        (
            Render::default().kube("1.28.0"),
            "incompatible with Kubernetes v1.28.0",
        ),
    ];
    for (render, expected) in refusals {
        let what = format!("{:?} {:?}", render.sets, render.json_sets);
        let message = chart().refusal(&render);
        assert!(message.contains(expected), "{what}: {message}");
    }
}

/// The reading above is strict: a field no Kubernetes type has (here a misspelt
/// `imagePullPolicy` in a sidecar, which the values schema leaves to Kubernetes) fails the
/// test instead of vanishing in deserialization.
#[test]
#[should_panic(expected = "has fields its type does not know")]
fn a_misspelt_field_in_a_rendered_object_fails_the_reading() {
    render(
        Render::default()
            .set_json(r#"sidecars=[{"name":"proxy","image":"x:1","imagePulPolicy":"Always"}]"#),
    );
}

/// With traffic coming in through an Ingress, the notes of `helm install` say how long a
/// deleted pod keeps accepting connections, and warn when the ingress class is known to
/// need longer.
#[test]
fn the_install_notes_tell_the_drain_the_load_balancer_needs() {
    let notes = chart()
        .install_dry_run(&["ingress.enabled=true", "ingress.className=nginx"])
        .expect("installs");
    assert!(
        notes.contains("A deleted pod accepts new connections for")
            && notes.contains("= 10s; whatever routes to it must have stopped by then"),
        "{notes}"
    );
    assert!(!notes.contains("WARNING"), "{notes}");

    let notes = chart()
        .install_dry_run(&["ingress.enabled=true", "ingress.className=alb"])
        .expect("installs");
    assert!(
        notes.contains("WARNING: ingress class alb needs about 30s")
            && notes.contains("Raise shutdown.preStopDelaySeconds to at least 25."),
        "{notes}"
    );
    let notes = chart()
        .install_dry_run(&[
            "ingress.enabled=true",
            "ingress.className=alb",
            "shutdown.preStopDelaySeconds=25",
        ])
        .expect("installs");
    assert!(!notes.contains("WARNING"), "{notes}");

    let notes = chart().install_dry_run(&[]).expect("installs");
    assert!(
        !notes.contains("Traffic in:"),
        "nothing to say without one: {notes}"
    );
}
