//! The generated chart, rendered by real Helm and read as typed Kubernetes objects: one
//! shutdown budget from values.yaml to the kubelet to the process.

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Container, HTTPGetAction},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube_service_template_tests::{
    Generated,
    chart::{Chart, Manifests, Render, tool},
    free_loopback_address, generate, http1,
    service::RunningService,
    shared_target_dir,
};

const PODMONITOR_API: &str = "monitoring.coreos.com/v1/PodMonitor";
const PROMETHEUSRULE_API: &str = "monitoring.coreos.com/v1/PrometheusRule";

/// One generated project for every test in this file.
fn project() -> &'static Generated {
    static PROJECT: OnceLock<Generated> = OnceLock::new();
    PROJECT.get_or_init(|| generate("chart-service", &[]).expect("defaults generate"))
}

fn chart() -> Chart {
    Chart::at(&project().dir.join("helm"))
}

fn render(render: Render) -> Manifests {
    chart().render(&render)
}

fn refusal(render: Render) -> String {
    chart().refusal(&render)
}

fn seconds(manifests: &Manifests, variable: &str) -> u64 {
    let value = manifests
        .env(variable)
        .unwrap_or_else(|| panic!("{variable} is not set"));
    value
        .strip_suffix('s')
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{variable}={value} is not whole seconds"))
}

fn grace_period(manifests: &Manifests) -> u64 {
    manifests
        .pod_spec()
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds is set") as u64
}

/// The container port a named (or numbered) probe port refers to.
fn container_port(container: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(number) => *number as u16,
        IntOrString::String(name) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|port| port.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port as u16
        }
    }
}

#[test]
fn helm_lint_strict_passes_with_defaults_and_with_everything_on() {
    chart().lint(&[]).expect("lint passes with defaults");
    chart()
        .lint(&[
            "autoscaling.enabled=true",
            "networkPolicy.enabled=true",
            "metrics.podMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.dashboard.enabled=true",
            "otel.endpoint=http://collector:4318",
        ])
        .expect("lint passes with every option on");
}

#[test]
fn the_default_render_holds_what_a_platform_team_expects() {
    let manifests = render(Render::default());
    assert_eq!(
        manifests.kinds(),
        [
            "Deployment",
            "NetworkPolicy",
            "Pod",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let deployment = manifests.deployment();
    let spec = deployment.spec.as_ref().unwrap();
    let strategy = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    assert!(
        spec.min_ready_seconds.unwrap() > 0,
        "expected minReadySeconds above 0: {:?}",
        spec.min_ready_seconds
    );
    let pod = manifests.pod_spec();
    let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
    assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");

    let security = pod.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let container = manifests.container();
    let hardened = container.security_context.as_ref().unwrap();
    assert_eq!(hardened.read_only_root_filesystem, Some(true));
    assert_eq!(hardened.allow_privilege_escalation, Some(false));
    assert_eq!(
        hardened
            .capabilities
            .as_ref()
            .unwrap()
            .drop
            .as_ref()
            .unwrap(),
        &["ALL"]
    );
    let resources = container.resources.as_ref().unwrap();
    assert!(
        resources.requests.is_some() && resources.limits.is_some(),
        "expected requests and limits: {resources:?}"
    );

    let labels = deployment.metadata.labels.as_ref().unwrap();
    for label in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    ] {
        assert!(labels.contains_key(label), "{label}");
    }
    assert_eq!(deployment.metadata.namespace.as_deref(), Some("shop"));
}

#[test]
fn the_grace_period_is_the_budget_and_the_env_carries_the_same_values() {
    // The linger is the scrape interval + 2 s unless set.
    for (pre_stop, drain, timeout, cleanup, margin, linger) in [
        (5, 5, 20, 5, 2, "interval=15s"),
        (12, 3, 45, 8, 4, "interval=1m"),
        (1, 1, 2, 1, 1, "interval=1500ms"),
        (12, 3, 45, 8, 4, "linger=0"),
        (12, 3, 45, 8, 4, "linger=30"),
    ] {
        let (setting, linger_seconds) = match linger.split_once('=').unwrap() {
            ("interval", interval) => {
                let seconds = match interval {
                    "15s" => 15,
                    "1m" => 60,
                    "1500ms" => 2,
                    other => unreachable!("{other}"),
                };
                (
                    format!("metrics.podMonitor.interval={interval}"),
                    seconds + 2,
                )
            }
            (_, seconds) => (
                format!("shutdown.metricsLingerSeconds={seconds}"),
                seconds.parse().unwrap(),
            ),
        };
        let manifests = render(
            Render::default()
                .set(&format!("shutdown.preStopDelaySeconds={pre_stop}"))
                .set(&format!("shutdown.drainDelaySeconds={drain}"))
                .set(&format!("shutdown.timeoutSeconds={timeout}"))
                .set(&format!("shutdown.cleanupTimeoutSeconds={cleanup}"))
                .set(&format!("shutdown.marginSeconds={margin}"))
                .set(&setting),
        );
        let budget_seconds = pre_stop + timeout + cleanup + linger_seconds + margin;
        assert_eq!(grace_period(&manifests), budget_seconds, "{setting}");
        assert_eq!(seconds(&manifests, "PRESTOP_DELAY"), pre_stop);
        assert_eq!(seconds(&manifests, "SHUTDOWN_DRAIN_DELAY"), drain);
        assert_eq!(seconds(&manifests, "SHUTDOWN_TIMEOUT"), timeout);
        assert_eq!(seconds(&manifests, "SHUTDOWN_CLEANUP_TIMEOUT"), cleanup);
        assert_eq!(
            seconds(&manifests, "SHUTDOWN_METRICS_LINGER"),
            linger_seconds
        );
        let annotations = manifests.pod_metadata().annotations.as_ref().unwrap();
        let budget = &annotations["shutdown-budget"];
        assert!(
            budget.contains(&format!(
                "metricsLingerSeconds ({linger_seconds}) + marginSeconds ({margin}) = {budget_seconds} seconds"
            )),
            "{budget}"
        );
    }
}

#[test]
fn an_explicit_grace_period_is_kept_when_it_covers_the_budget() {
    let manifests = render(Render::default().set("shutdown.terminationGracePeriodSeconds=60"));
    assert_eq!(grace_period(&manifests), 60);
}

#[test]
fn an_explicit_grace_period_too_small_fails_with_the_arithmetic() {
    let message = refusal(Render::default().set("shutdown.terminationGracePeriodSeconds=20"));
    assert!(
        message.contains(
            "shutdown.terminationGracePeriodSeconds (20) is shorter than the shutdown budget"
        ),
        "{message}"
    );
    assert!(
        message.contains("preStopDelaySeconds (5) + timeoutSeconds (20) + cleanupTimeoutSeconds (5) + metricsLingerSeconds (17) + marginSeconds (2) = 49"),
        "{message}"
    );
    assert!(message.contains("at least 49"), "{message}");
}

#[test]
fn a_scrape_interval_too_long_for_the_linger_names_the_values_to_change() {
    let message = refusal(Render::default().set("metrics.podMonitor.interval=1h"));
    assert!(
        message.contains("metrics.podMonitor.interval (1h) would make the metrics linger 3602 s"),
        "{message}"
    );
    assert!(
        message.contains("shutdown.metricsLingerSeconds"),
        "{message}"
    );
    let explicit = render(
        Render::default()
            .set("metrics.podMonitor.interval=1h")
            .set("shutdown.metricsLingerSeconds=0"),
    );
    assert_eq!(seconds(&explicit, "SHUTDOWN_METRICS_LINGER"), 0);
}

#[test]
fn a_drain_delay_not_shorter_than_the_timeout_fails() {
    let message = refusal(Render::default().set("shutdown.drainDelaySeconds=20"));
    assert!(
        message.contains(
            "shutdown.drainDelaySeconds (20) must be shorter than shutdown.timeoutSeconds (20)"
        ),
        "{message}"
    );
}

fn pre_stop(manifests: &Manifests) -> (Option<i64>, Option<HTTPGetAction>) {
    let hook = manifests
        .container()
        .lifecycle
        .as_ref()
        .and_then(|lifecycle| lifecycle.pre_stop.clone())
        .expect("a preStop hook");
    (hook.sleep.map(|sleep| sleep.seconds), hook.http_get)
}

#[test]
fn the_pre_stop_hook_follows_the_kubernetes_version() {
    for (version, native_sleep) in [
        ("1.29.0", false),
        ("v1.29.8-gke.1000", false),
        ("1.30.0", true),
        ("v1.31.2-eks-abc", true),
    ] {
        let manifests = render(Render::default().kube(version));
        match pre_stop(&manifests) {
            (Some(sleep_seconds), None) => {
                assert!(
                    native_sleep,
                    "{version}: sleep action on a cluster without it"
                );
                assert_eq!(sleep_seconds as u64, seconds(&manifests, "PRESTOP_DELAY"));
            }
            (None, Some(http_get)) => {
                assert!(!native_sleep, "{version}: httpGet where sleep is available");
                assert_eq!(http_get.path.as_deref(), Some("/prestop"));
                assert_eq!(http_get.port, IntOrString::String("admin".into()));
            }
            other => panic!("{version}: unexpected preStop {other:?}"),
        }
    }
    let forced = render(
        Render::default()
            .kube("1.31.0")
            .set("shutdown.preStop.mode=httpGet"),
    );
    assert!(
        pre_stop(&forced).1.is_some(),
        "expected the forced httpGet preStop"
    );
    let forced = render(
        Render::default()
            .kube("1.29.0")
            .set("shutdown.preStop.mode=sleep"),
    );
    assert!(
        pre_stop(&forced).0.is_some(),
        "expected the forced sleep preStop"
    );
}

/// Each assignment with the words of Helm 4's refusal, then Helm 3's.
const SCHEMA_REFUSALS: [(&str, &str, &str); 10] = [
    (
        "shutdown.timeoutSeconds=-5",
        "at '/shutdown/timeoutSeconds': minimum: got -5, want 1",
        "shutdown.timeoutSeconds: Must be greater than or equal to 1",
    ),
    (
        "shutdown.drainDelaySeconds=0",
        "at '/shutdown/drainDelaySeconds': minimum: got 0, want 1",
        "shutdown.drainDelaySeconds: Must be greater than or equal to 1",
    ),
    (
        "shutdown.timeoutSeconds=soon",
        "at '/shutdown/timeoutSeconds': got string, want integer",
        "shutdown.timeoutSeconds: Invalid type. Expected: integer, given: string",
    ),
    // The service refuses durations over an hour: so does the chart.
    (
        "shutdown.timeoutSeconds=3601",
        "at '/shutdown/timeoutSeconds': maximum: got 3,601, want 3,600",
        "shutdown.timeoutSeconds: Must be less than or equal to 3600",
    ),
    (
        "shutdown.metricsLingerSeconds=7200",
        "at '/shutdown/metricsLingerSeconds': maximum: got 7,200, want 3,600",
        "shutdown.metricsLingerSeconds: Must be less than or equal to 3600",
    ),
    (
        "shutdown.grace=30",
        "at '/shutdown': additional properties 'grace' not allowed",
        "shutdown: Additional property grace is not allowed",
    ),
    (
        "shutdown.preStop.mode=exec",
        "at '/shutdown/preStop/mode'",
        "shutdown.preStop.mode: shutdown.preStop.mode must be one of",
    ),
    (
        "ports.http=70000",
        "at '/ports/http': maximum: got 70,000, want 65,535",
        "ports.http: Must be less than or equal to 65535",
    ),
    (
        "ports.admin=0",
        "at '/ports/admin': minimum: got 0, want 1",
        "ports.admin: Must be greater than or equal to 1",
    ),
    (
        "replicaCount=two",
        "at '/replicaCount': got string, want integer",
        "replicaCount: Invalid type. Expected: integer, given: string",
    ),
];

/// Helm 3 and Helm 4 word schema errors differently: each refusal is checked in the words
/// of the Helm that gave it, so the suite holds for both.
#[test]
fn the_values_schema_refuses_nonsense_in_either_helms_words() {
    for (chart, helm) in [(chart(), "Helm 4"), (chart().with_helm3(), "Helm 3")] {
        for (assignment, helm4_words, helm3_words) in SCHEMA_REFUSALS {
            let expected = if helm == "Helm 4" {
                helm4_words
            } else {
                helm3_words
            };
            let message = match chart.template_yaml(&Render::default().set(assignment)) {
                Ok(_) => panic!("{helm} accepted {assignment}"),
                Err(message) => message,
            };
            assert!(
                message.contains("values don't meet the specifications of the schema"),
                "{helm}, {assignment}: {message}"
            );
            assert!(
                message.contains(expected),
                "{helm}, {assignment}: {message}"
            );
        }
    }
}

/// What most clusters' pipelines run (Helm 3) renders byte for byte what Helm 4 renders,
/// lints as strictly, and refuses what Helm 4 refuses with the chart's own messages.
#[test]
fn helm_3_and_helm_4_render_the_same_manifests() {
    let renders = [
        Render::default(),
        Render::default().kube("1.29.0"),
        Render::default()
            .set("autoscaling.enabled=true")
            .set("metrics.podMonitor.enabled=true")
            .set("metrics.prometheusRule.enabled=true")
            .set("metrics.dashboard.enabled=true")
            .set("otel.endpoint=http://collector:4318")
            .set("image.tag=1.2.3@sha256:0123abcd"),
        Render::default().with_api("monitoring.coreos.com/v1"),
        platform_render(),
    ];
    for render in renders {
        let helm4 = chart().template_yaml(&render).expect("Helm 4 renders");
        let helm3 = chart()
            .with_helm3()
            .template_yaml(&render)
            .expect("Helm 3 renders");
        assert!(
            helm3 == helm4,
            "{:?}: Helm 3 and Helm 4 differ",
            render.sets
        );
    }
    chart()
        .with_helm3()
        .lint(&["autoscaling.enabled=true", "metrics.dashboard.enabled=true"])
        .expect("Helm 3 lints it strictly");
    let short_grace = Render::default().set("shutdown.terminationGracePeriodSeconds=10");
    let refusal = chart()
        .with_helm3()
        .template_yaml(&short_grace)
        .expect_err("Helm 3 refuses a grace period shorter than the budget");
    assert!(
        refusal.contains(
            "shutdown.terminationGracePeriodSeconds (10) is shorter than the shutdown budget"
        ),
        "{refusal}"
    );
}

#[test]
fn the_service_carries_application_traffic_only() {
    let manifests = render(Render::default());
    let service = manifests.service().unwrap();
    let ports = service.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("http".into()))
    );
    let container = manifests.container();
    let http = container_port(container, &IntOrString::String("http".into()));
    assert_eq!(manifests.env("HTTP_ADDR"), Some(format!("0.0.0.0:{http}")));
    let admin = container_port(container, &IntOrString::String("admin".into()));
    assert_eq!(
        manifests.env("ADMIN_ADDR"),
        Some(format!("0.0.0.0:{admin}"))
    );
}

#[test]
fn monitoring_objects_follow_the_switches_and_the_cluster() {
    let kinds = |render_with: Render| render(render_with).kinds();
    let has = |kinds: &[String], kind: &str| kinds.iter().any(|k| k == kind);

    let plain = kinds(Render::default());
    assert!(!has(&plain, "PodMonitor") && !has(&plain, "PrometheusRule"));
    let detected = kinds(
        Render::default()
            .with_api(PODMONITOR_API)
            .with_api(PROMETHEUSRULE_API),
    );
    assert!(has(&detected, "PodMonitor") && has(&detected, "PrometheusRule"));
    let refused = kinds(
        Render::default()
            .with_api(PODMONITOR_API)
            .with_api(PROMETHEUSRULE_API)
            .set("metrics.podMonitor.enabled=false")
            .set("metrics.prometheusRule.enabled=false"),
    );
    assert!(!has(&refused, "PodMonitor") && !has(&refused, "PrometheusRule"));

    let asked = render(
        Render::default()
            .set("metrics.podMonitor.enabled=true")
            .set("metrics.prometheusRule.enabled=true")
            .set("metrics.dashboard.enabled=true"),
    );
    let monitor = asked
        .dynamic("PodMonitor")
        .expect("a PodMonitor when asked");
    let endpoint = &monitor.data["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["path"], "/metrics");
    let pod_labels = asked.pod_metadata().labels.clone().unwrap();
    let selector: BTreeMap<String, String> =
        serde_json::from_value(monitor.data["spec"]["selector"]["matchLabels"].clone()).unwrap();
    assert!(
        selector
            .iter()
            .all(|(key, value)| pod_labels.get(key) == Some(value))
    );

    let rule = asked
        .dynamic("PrometheusRule")
        .expect("a PrometheusRule when asked");
    let alerts: Vec<&str> = rule.data["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .map(|rule| rule["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        alerts,
        [
            "ShutdownCutRequests",
            "ShutdownBudgetMismatch",
            "ReadinessFlapping",
            "HighServerErrorRate"
        ]
    );
    // The alerts select and route on `service`, which the PodMonitor sets to the release.
    let service_label = &endpoint["relabelings"][0];
    assert_eq!(service_label["targetLabel"], "service");
    assert_eq!(
        service_label["replacement"],
        asked.deployment().metadata.name.clone().unwrap()
    );

    let dashboard = asked
        .config_map()
        .expect("a dashboard ConfigMap when asked");
    assert_eq!(
        dashboard.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
        "1"
    );
    let json = dashboard.data.as_ref().unwrap().values().next().unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("the dashboard is JSON");
    let queries = dashboard.to_string();
    for metric in [
        "http_responses_total",
        "http_request_duration_seconds_bucket",
        "http_requests_in_flight",
        "lifecycle_draining",
        // Every shutdown metric has a panel.
        "lifecycle_state",
        "shutdowns_total",
        "shutdown_duration_seconds",
        "shutdown_budget_seconds",
        "shutdown_budget_mismatch",
        "shutdown_budget_shrunk_total",
        "shutdown_requests_cut_total",
        "shutdown_connections_cut_total",
        "shutdown_tasks_cut_total",
        "readiness_check_up",
    ] {
        assert!(queries.contains(metric), "the dashboard shows {metric}");
    }
}

/// The dashboard of one release: its ConfigMap, and the dashboard it carries.
fn dashboard(render_with: Render) -> (ConfigMap, serde_json::Value) {
    let manifests = render(render_with.set("metrics.dashboard.enabled=true"));
    let config_map = manifests.config_map().expect("a dashboard ConfigMap");
    let json = config_map.data.as_ref().unwrap().values().next().unwrap();
    let dashboard = serde_json::from_str(json).expect("the dashboard is JSON");
    (config_map.clone(), dashboard)
}

#[test]
fn each_release_has_its_own_dashboard_filed_where_grafana_looks() {
    let (config_map, first) = dashboard(Render::default());
    let (_, again) = dashboard(Render::default());
    let (_, other) = dashboard(Render::default().set("fullnameOverride=other"));
    let uid = first["uid"].as_str().expect("a uid");
    assert!(uid.len() <= 40, "Grafana's limit: {uid}");
    assert_eq!(again["uid"], first["uid"], "stable across upgrades");
    assert_ne!(other["uid"], first["uid"], "different for another release");
    let fullname = config_map
        .metadata
        .name
        .as_ref()
        .unwrap()
        .trim_end_matches("-dashboard");
    let namespace = config_map.metadata.namespace.clone().unwrap();
    assert_eq!(
        first["title"],
        format!("{fullname} ({namespace}): traffic and shutdowns")
    );
    let opens_on = |name: &str| {
        first["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|variable| variable["name"] == name)
            .map(|variable| variable["current"]["value"].clone())
            .unwrap()
    };
    assert_eq!(opens_on("namespace"), namespace.as_str());
    assert_eq!(opens_on("service"), fullname);
    assert!(
        config_map.metadata.annotations.is_none(),
        "no folder unless asked"
    );

    let (filed, titled) = dashboard(
        Render::default()
            .set("metrics.dashboard.namespace=monitoring")
            .set("metrics.dashboard.folder=Team A")
            .set("metrics.dashboard.folderAnnotation=k8s-sidecar-target-directory")
            .set("metrics.dashboard.title=Orders"),
    );
    assert_eq!(filed.metadata.namespace.as_deref(), Some("monitoring"));
    assert_eq!(
        filed.metadata.annotations.unwrap()["k8s-sidecar-target-directory"],
        "Team A"
    );
    assert_eq!(titled["title"], "Orders");
}

#[test]
fn availability_objects_follow_replicas_and_switches() {
    let single = render(Render::default().set("replicaCount=1"));
    assert!(
        !single.kinds().contains(&"PodDisruptionBudget".to_owned()),
        "expected no PodDisruptionBudget for a single replica"
    );

    let everything = render(
        Render::default()
            .set("autoscaling.enabled=true")
            .set("networkPolicy.enabled=true"),
    );
    assert!(
        everything
            .deployment()
            .spec
            .as_ref()
            .unwrap()
            .replicas
            .is_none(),
        "the HPA owns replicas"
    );
    let hpa = everything.horizontal_pod_autoscaler().expect("an HPA");
    assert_eq!(
        hpa.spec.as_ref().unwrap().scale_target_ref.kind,
        "Deployment"
    );
    let policy = everything.network_policy().expect("a NetworkPolicy");
    let ingress = policy.spec.as_ref().unwrap().ingress.as_ref().unwrap();
    let admin_rule = ingress
        .iter()
        .find(|rule| {
            rule.ports.as_ref().unwrap()[0].port == Some(IntOrString::String("admin".into()))
        })
        .expect("a rule for the admin port");
    assert!(
        admin_rule
            .from
            .as_ref()
            .is_some_and(|peers| !peers.is_empty()),
        "the admin port is not open to all"
    );
}

#[test]
fn opentelemetry_is_wired_from_values_and_the_downward_api() {
    let manifests = render(
        Render::default()
            .set("otel.endpoint=http://collector.observability:4318")
            .set("otel.resourceAttributes.team=payments"),
    );
    assert_eq!(
        manifests.env("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://collector.observability:4318")
    );
    let attributes = manifests.env("OTEL_RESOURCE_ATTRIBUTES").unwrap();
    for expected in [
        "k8s.pod.name=$(POD_NAME)",
        "k8s.namespace.name=$(POD_NAMESPACE)",
        "k8s.node.name=$(NODE_NAME)",
        "team=payments",
    ] {
        assert!(attributes.contains(expected), "{attributes}");
    }
    let downward = downward_api(&manifests);
    assert_eq!(downward["POD_NAME"], "metadata.name");
    assert_eq!(downward["POD_NAMESPACE"], "metadata.namespace");
    assert_eq!(downward["NODE_NAME"], "spec.nodeName");
    assert!(
        render(Render::default())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT")
            .is_none()
    );
}

/// The downward-API fields of the container's environment, by variable.
fn downward_api(manifests: &Manifests) -> BTreeMap<String, String> {
    manifests
        .container()
        .env
        .iter()
        .flatten()
        .filter_map(|var| {
            let field = var.value_from.as_ref()?.field_ref.as_ref()?;
            Some((var.name.clone(), field.field_path.clone()))
        })
        .collect()
}

#[test]
fn the_kube_integration_gets_exactly_the_access_it_needs_and_no_more() {
    let manifests = render(Render::default());
    let role = manifests
        .role()
        .expect("a Role with kube.enabled (the default)");
    let rules: Vec<(Vec<String>, Vec<String>, Vec<String>)> = role
        .rules
        .iter()
        .flatten()
        .map(|rule| {
            (
                rule.api_groups.clone().unwrap_or_default(),
                rule.resources.clone().unwrap_or_default(),
                rule.verbs.clone(),
            )
        })
        .collect();
    let strings = |items: &[&str]| items.iter().map(|item| item.to_string()).collect();
    assert_eq!(
        rules,
        [
            (strings(&[""]), strings(&["pods"]), strings(&["get"])),
            (
                strings(&["events.k8s.io"]),
                strings(&["events"]),
                strings(&["create"])
            ),
        ]
    );
    let namespace = role.metadata.namespace.as_deref();
    assert_eq!(namespace, Some("shop"), "a Role in the release namespace");

    let binding = manifests.role_binding().expect("a RoleBinding");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_ref().unwrap();
    let account = manifests.service_account().expect("a ServiceAccount");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(
        manifests.pod_spec().service_account_name,
        account.metadata.name
    );

    assert_eq!(
        manifests.pod_spec().automount_service_account_token,
        Some(true)
    );
    assert_eq!(manifests.env("KUBE_INTEGRATION").as_deref(), Some("true"));
    let downward = downward_api(&manifests);
    for (variable, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_UID", "metadata.uid"),
    ] {
        assert_eq!(downward.get(variable).map(String::as_str), Some(field));
    }
    assert_eq!(
        manifests.env("CONTAINER_NAME"),
        Some(manifests.container().name.clone())
    );
}

#[test]
fn without_the_kube_integration_there_is_no_rbac_and_no_token() {
    let manifests = render(Render::default().set("kube.enabled=false"));
    assert!(
        manifests.role().is_none() && manifests.role_binding().is_none(),
        "expected no Role and no RoleBinding without kube.enabled"
    );
    assert_eq!(
        manifests.pod_spec().automount_service_account_token,
        Some(false)
    );
    assert_eq!(
        manifests
            .service_account()
            .unwrap()
            .automount_service_account_token,
        Some(false)
    );
    assert_eq!(manifests.env("KUBE_INTEGRATION").as_deref(), Some("false"));
    assert!(
        !downward_api(&manifests).contains_key("POD_UID"),
        "expected no POD_UID without kube.enabled"
    );
}

#[test]
fn the_helm_test_pod_uses_the_services_own_image_and_healthcheck() {
    let manifests = render(Render::default());
    let pod = manifests.pod().expect("a helm test Pod");
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()["helm.sh/hook"],
        "test"
    );
    let container = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image, manifests.container().image);
    assert_eq!(container.args.as_ref().unwrap()[0], "healthcheck");
}

#[test]
fn names_follow_the_overrides() {
    let named = render(Render::default().set("fullnameOverride=orders"));
    assert_eq!(named.deployment().metadata.name.as_deref(), Some("orders"));
    let renamed = render(Render::default().set("nameOverride=api"));
    assert_eq!(
        renamed.deployment().metadata.name.as_deref(),
        Some("release-api")
    );
}

/// Probes, the preStop hook and the env are checked against the binary itself: it is
/// started with the rendered environment, and every path the kubelet would call is asked.
#[test]
fn the_running_binary_serves_every_path_the_kubelet_calls() {
    let project = project();
    project.cargo_ok(&["build"]);
    let binary = shared_target_dir().join("debug").join("chart-service");

    let free_port = || free_loopback_address().unwrap().port();
    for kube_version in ["1.29.0", "1.30.0"] {
        let manifests = render(
            Render::default()
                .kube(kube_version)
                .set(&format!("ports.http={}", free_port()))
                .set(&format!("ports.admin={}", free_port()))
                .set("shutdown.preStopDelaySeconds=1"),
        );
        let container = manifests.container();
        // The rendered env as the kubelet would pass it, on loopback instead of all interfaces.
        let env: Vec<(String, String)> = container
            .env
            .iter()
            .flatten()
            .map(|var| {
                let value = var
                    .value
                    .clone()
                    .unwrap_or_else(|| format!("resolved-{}", var.name.to_lowercase()));
                (var.name.clone(), value.replace("0.0.0.0:", "127.0.0.1:"))
            })
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let service = RunningService::start(&binary, &env, |_| {});

        let mut calls: Vec<(&str, &HTTPGetAction)> = Vec::new();
        for (probe, name) in [
            (&container.startup_probe, "startup"),
            (&container.liveness_probe, "liveness"),
            (&container.readiness_probe, "readiness"),
        ] {
            let action = probe.as_ref().and_then(|probe| probe.http_get.as_ref());
            calls.push((
                name,
                action.unwrap_or_else(|| panic!("{name} probe uses httpGet")),
            ));
        }
        // Last: once the preStop hook has answered, readiness is off.
        let (_, pre_stop_get) = pre_stop(&manifests);
        if let Some(action) = pre_stop_get.as_ref() {
            calls.push(("preStop", action));
        }
        for (name, action) in calls {
            let port = container_port(container, &action.port);
            let address = format!("127.0.0.1:{port}").parse().unwrap();
            let path = action.path.as_deref().unwrap_or("/");
            let response = http1::blocking_get(address, path, Duration::from_secs(10))
                .unwrap_or_else(|err| {
                    panic!("{kube_version} {name}: GET {path} on port {port}: {err}")
                });
            assert_eq!(response.status, 200, "{kube_version} {name}: GET {path}");
        }
        assert_eq!(
            service.admin.port(),
            container_port(container, &IntOrString::String("admin".into()))
        );
        assert_eq!(
            service.http.port(),
            container_port(container, &IntOrString::String("http".into()))
        );
    }
}

#[test]
fn helm_install_tells_the_budget_and_refuses_a_short_grace_period() {
    let output = chart()
        .install_dry_run(&["shutdown.timeoutSeconds=30"])
        .expect("a dry-run install succeeds");
    let notes = &output[output.find("NOTES:").expect("helm prints the notes")..];
    assert!(
        notes.contains("preStopDelaySeconds (5) + timeoutSeconds (30) + cleanupTimeoutSeconds (5) + metricsLingerSeconds (17) + marginSeconds (2) = 59 seconds"),
        "{notes}"
    );
    assert!(
        notes.contains("terminationGracePeriodSeconds: 59"),
        "{notes}"
    );

    let refused = chart()
        .install_dry_run(&["shutdown.terminationGracePeriodSeconds=10"])
        .expect_err("helm install refuses a grace period shorter than the budget");
    assert!(refused.contains("at least 49"), "{refused}");
}

/// What a platform team adds on day one: traffic in, files and secrets, an init container and
/// a native sidecar, common metadata, a pinned image.
fn platform_render() -> Render {
    Render::default()
        .kube("1.30.0")
        .set("ingress.enabled=true")
        .set("ingress.className=nginx")
        .set_json(r#"ingress.tls=[{"secretName":"shop-tls","hosts":["chart-example.local"]}]"#)
        .set("httpRoute.enabled=true")
        .set("commonLabels.team=payments")
        .set("commonAnnotations.owner=payments")
        .set("service.annotations.example\\.com/lb=internal")
        .set("priorityClassName=business-critical")
        .set("image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        .set_json(r#"envFrom=[{"configMapRef":{"name":"settings"}}]"#)
        .set_json(r#"volumes=[{"name":"certs","secret":{"secretName":"tls"}}]"#)
        .set_json(r#"volumeMounts=[{"name":"certs","mountPath":"/etc/certs","readOnly":true}]"#)
        .set_json(
            r#"initContainers=[{"name":"migrate","image":"shop-migrations:1","resources":{"limits":{"cpu":"500m","memory":"64Mi"},"requests":{"cpu":"50m","memory":"32Mi"}},"securityContext":{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}}]"#,
        )
        .set_json(
            r#"sidecars=[{"name":"proxy","image":"envoyproxy/envoy@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","resources":{"limits":{"cpu":"500m","memory":"64Mi"},"requests":{"cpu":"50m","memory":"32Mi"}},"securityContext":{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]}}}]"#,
        )
}

/// Renders worth scanning: the defaults on the two sides of the preStop switch, every
/// optional object on, and what a platform team adds.
fn scanned_renders() -> Vec<(&'static str, Render)> {
    vec![
        ("defaults-1.29", Render::default().kube("1.29.0")),
        ("defaults-1.30", Render::default().kube("1.30.0")),
        (
            "everything-on",
            Render::default()
                .kube("1.30.0")
                .with_api(PODMONITOR_API)
                .with_api(PROMETHEUSRULE_API)
                .set("autoscaling.enabled=true")
                .set("networkPolicy.enabled=true")
                .set("metrics.dashboard.enabled=true")
                .set("otel.endpoint=http://collector:4318"),
        ),
        ("platform", platform_render()),
    ]
}

fn write_render(name: &str, render: &Render) -> std::path::PathBuf {
    let yaml = chart().template_yaml(render).expect("renders");
    let path = project().dir.join(format!("rendered-{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn rendered_manifests_pass_kubernetes_validate_strict() {
    for (name, render) in scanned_renders() {
        let path = write_render(name, &render);
        let output = std::process::Command::new(tool("kubernetes-validate"))
            .args([
                "--strict",
                "--quiet",
                "-k",
                render.kube_version.trim_start_matches('v'),
            ])
            .arg(&path)
            .output()
            .expect("kubernetes-validate runs (see scripts/install.sh)");
        assert!(
            output.status.success(),
            "{name}: kubernetes-validate --strict failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The checks `.checkov.yaml` skips, each with its reason.
fn checkov_skips() -> Vec<(String, String)> {
    project()
        .read("helm/.checkov.yaml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- CKV"))
        .map(|rest| {
            let (id, reason) = rest.split_once('#').unwrap_or((rest, ""));
            (format!("CKV{}", id.trim()), reason.trim().to_owned())
        })
        .collect()
}

#[test]
fn rendered_manifests_pass_checkov_except_the_listed_checks() {
    let skips = checkov_skips();
    assert!(!skips.is_empty(), "expected checkov skips in .checkov.yaml");
    for (id, reason) in &skips {
        assert!(reason.len() > 20, "{id} is skipped without a reason");
    }
    for (name, render) in scanned_renders() {
        let path = write_render(name, &render);
        let output = std::process::Command::new(tool("checkov"))
            .arg("--config-file")
            .arg(project().dir.join("helm/.checkov.yaml"))
            .arg("-f")
            .arg(&path)
            .args(["--skip-download", "--quiet", "--output", "json"])
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .expect("checkov runs (see scripts/install.sh)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("{name}: checkov printed no JSON ({err}):\n{stdout}"));
        let failed: Vec<String> = report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|check| {
                format!(
                    "{} {} on {}",
                    check["check_id"], check["check_name"], check["resource"]
                )
            })
            .collect();
        assert!(
            failed.is_empty(),
            "{name}: checkov failed checks:\n{}",
            failed.join("\n")
        );
        let passed = report["summary"]["passed"].as_u64().unwrap_or(0);
        assert!(passed > 100, "{name}: checkov ran only {passed} checks");
        println!(
            "checkov {name}: {passed} passed, 0 failed, skipped {}",
            skips.len()
        );
    }
}

/// Table rows without the padding, which depends on the width of the longest value.
fn tables_without_padding(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .map(|line| {
            if !line.starts_with('|') {
                return line.trim_end().to_owned();
            }
            line.split('|')
                .map(|cell| {
                    let cell = cell.trim();
                    if !cell.is_empty() && cell.chars().all(|c| c == '-') {
                        "-"
                    } else {
                        cell
                    }
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[test]
fn the_values_reference_in_the_chart_readme_is_in_sync_with_values_yaml() {
    let readme = project().read("helm/README.md");
    let regenerated = project().dir.join("helm-readme-regenerated.md");
    std::fs::write(&regenerated, &readme).unwrap();
    let output = std::process::Command::new(tool("readme-generator"))
        .arg("--values")
        .arg(project().dir.join("helm/values.yaml"))
        .arg("--readme")
        .arg(&regenerated)
        .output()
        .expect("readme-generator runs (see scripts/install.sh)");
    assert!(
        output.status.success(),
        "readme-generator refused values.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let regenerated = std::fs::read_to_string(&regenerated).unwrap();
    assert_eq!(
        tables_without_padding(&readme),
        tables_without_padding(&regenerated),
        "helm/README.md is out of date: run the command in its \"Updating this file\" section"
    );
}

/// The helpers are named after the chart, as `helm create` names them: two charts generated
/// from this template live side by side in one umbrella chart, even when one of them has
/// changed a helper (an edit of its own, or a newer template). With shared helper names, the
/// last chart Helm loads would name the other's objects too.
#[test]
fn two_generated_charts_live_in_one_umbrella_chart() {
    let canary = generate("chart-service-canary", &[]).expect("a second chart generates");
    let umbrella =
        kube_service_template_tests::scratch("umbrella-chart").join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&umbrella);
    std::fs::create_dir_all(umbrella.join("charts")).unwrap();
    std::fs::write(
        umbrella.join("Chart.yaml"),
        "apiVersion: v2\nname: shop\nversion: 0.1.0\n",
    )
    .unwrap();
    for (name, dir) in [
        ("chart-service", &project().dir),
        ("chart-service-canary", &canary.dir),
    ] {
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(dir.join("helm"))
            .arg(umbrella.join("charts").join(name))
            .status()
            .unwrap();
        assert!(status.success(), "copying {name}'s chart");
    }
    let helpers = umbrella.join("charts/chart-service-canary/templates/_helpers.tpl");
    let text = std::fs::read_to_string(&helpers).unwrap();
    assert!(
        text.contains(r#"{{- define "chart-service-canary.fullname" -}}"#),
        "helpers named after the chart:\n{text}"
    );
    let edited = text.replace(
        r#"{{- printf "%s-%s" .Release.Name $name"#,
        r#"{{- printf "%s-%s-edited" .Release.Name $name"#,
    );
    assert_ne!(edited, text, "the canary's fullname helper was edited");
    std::fs::write(&helpers, edited).unwrap();

    let yaml = Chart::at(&umbrella)
        .template_yaml(&Render::default())
        .unwrap_or_else(|message| panic!("the umbrella chart renders:\n{message}"));
    let mut deployments: Vec<(String, String)> = kube_service_template_tests::chart::parse(&yaml)
        .into_iter()
        .filter_map(|object| match object {
            kube_service_template_tests::chart::Object::Deployment(deployment) => Some((
                deployment.metadata.name.clone().unwrap_or_default(),
                deployment.metadata.labels.as_ref().unwrap()["app.kubernetes.io/name"].clone(),
            )),
            _ => None,
        })
        .collect();
    deployments.sort();
    assert_eq!(
        deployments,
        [
            ("release-chart-service".into(), "chart-service".into()),
            (
                "release-chart-service-canary-edited".into(),
                "chart-service-canary".into()
            ),
        ],
        "each chart names its own objects with its own helpers"
    );
}

/// Values a careless or hostile user may give, each refused with a message that names the
/// value to change, or neutralised: every label stays valid, nothing is inserted unquoted,
/// and the shutdown settings the chart derives cannot be overridden through `extraEnv`.
#[test]
fn hostile_values_are_refused_by_name_or_neutralised() {
    let refusals = [
        (
            Render::default()
                .set("ports.admin=8080")
                .set("ports.http=8080"),
            "ports.admin (8080) equals ports.http",
        ),
        (
            Render::default().set_json(r#"extraEnv=[{"name":"SHUTDOWN_TIMEOUT","value":"600s"}]"#),
            "extraEnv[0] sets SHUTDOWN_TIMEOUT, which the chart derives",
        ),
        (
            Render::default().set_json(
                r#"extraEnv=[{"name":"A","value":"1"},{"name":"PRESTOP_DELAY","value":"1s"}]"#,
            ),
            "set shutdown.preStopDelaySeconds instead",
        ),
        (
            Render::default().set_json(r#"podLabels={"app.kubernetes.io/instance":"other"}"#),
            "podLabels sets app.kubernetes.io/instance, a label the chart sets itself",
        ),
        (
            Render::default()
                .set("autoscaling.enabled=true")
                .set("autoscaling.minReplicas=5")
                .set("autoscaling.maxReplicas=2"),
            "autoscaling.minReplicas (5) is above autoscaling.maxReplicas (2)",
        ),
        (
            Render::default().set("probes.liveness.successThreshold=2"),
            "/probes/liveness/successThreshold",
        ),
        (
            Render::default().set("probes.startup.successThreshold=3"),
            "/probes/startup/successThreshold",
        ),
        (
            Render::default()
                .set_json(r#"topologySpread={"enabled":true,"topologyKey":"zone\n  evil: key"}"#),
            "/topologySpread/topologyKey",
        ),
        (
            Render::default().set_json(r#"image={"repository":null}"#),
            "'repository'",
        ),
        (
            Render::default().set_json(r#"extraEnv=[{"value":"no name"}]"#),
            "/extraEnv/0",
        ),
        (
            Render::default().set_json(r#"podLabels={"team":"a\nb"}"#),
            "/podLabels/team",
        ),
    ];
    for (render, expected) in refusals {
        let what = format!("{:?} {:?}", render.sets, render.json_sets);
        let message = refusal(render);
        assert!(message.contains(expected), "{what}: {message}");
    }

    // A digest or build metadata in the tag reaches the image, never a label.
    for (tag, label) in [
        ("1.2.3@sha256:0123abcd", "1.2.3"),
        ("1.0.0+build.7", "1.0.0_build.7"),
        ("-weird+tag-", "weird_tag"),
    ] {
        let manifests = render(Render::default().set(&format!("image.tag={tag}")));
        assert!(
            manifests
                .container()
                .image
                .as_deref()
                .unwrap()
                .ends_with(tag)
        );
        for labels in [
            manifests.deployment().metadata.labels.as_ref(),
            manifests.pod_metadata().labels.as_ref(),
        ] {
            let labels = labels.unwrap();
            assert_eq!(labels["app.kubernetes.io/version"], label, "{tag}");
            assert!(
                labels.values().all(|value| is_label_value(value)),
                "{labels:?}"
            );
        }
    }

    // What the chart does not derive, extraEnv and podLabels may still set.
    let manifests = render(
        Render::default()
            .set_json(r#"extraEnv=[{"name":"MAX_CONNECTIONS","value":"100"}]"#)
            .set_json(r#"podLabels={"team":"payments"}"#),
    );
    assert_eq!(manifests.env("MAX_CONNECTIONS").as_deref(), Some("100"));
    assert_eq!(
        manifests.pod_metadata().labels.as_ref().unwrap()["team"],
        "payments"
    );
}

/// A valid Kubernetes label value: at most 63 characters, alphanumerics with `-`, `_`, `.`
/// inside.
fn is_label_value(value: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    value.len() <= 63
        && value.chars().all(inner)
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}
