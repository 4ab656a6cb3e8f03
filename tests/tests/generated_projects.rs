//! A generated project passes fmt, clippy and its own tests right after generation (the
//! runtime crate included), for the default options, for every option switched on and for
//! every option off.

use kube_service_template_tests::{Generated, generate};

/// The runtime is linted with each variant's features; its own tests, which no feature
/// changes, run once in this repository's workspace (and in the all-options project, as the
/// generated README tells users to run them).
fn passes_its_own_checks(project: &Generated) {
    project.cargo_ok(&["fmt", "--check"]);
    project.cargo_ok(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    project.cargo_ok(&["test"]);
}

#[test]
fn the_default_project_passes_fmt_clippy_and_its_tests() {
    let project = generate("default-service", &[]).expect("defaults generate");
    passes_its_own_checks(&project);
}

#[test]
fn the_all_options_project_passes_fmt_clippy_and_its_tests() {
    let project = generate(
        "all-options-service",
        &[
            ("description", "Every option on"),
            ("http_port", "8000"),
            ("admin_port", "8001"),
            ("otel", "true"),
            ("kube", "true"),
        ],
    )
    .expect("all options generate");
    passes_its_own_checks(&project);
    project.cargo_ok(&["test", "--package", "kube-service-runtime"]);
    // The OpenTelemetry and Kubernetes tests only exist with their features: they ran.
    for (test, one_of_them) in [
        (
            "otel",
            "spans_follow_the_http_server_conventions_in_the_callers_trace",
        ),
        (
            "kube",
            "a_clean_shutdown_tells_its_story_in_the_pods_events",
        ),
    ] {
        let listed = project.cargo(&["test", "--test", test, "--", "--list"]);
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(listed.contains(one_of_them), "{listed}");
    }
}

#[test]
fn the_project_without_options_builds_no_kubernetes_client() {
    let project = generate("plain-service", &[("otel", "false"), ("kube", "false")])
        .expect("options off generate");
    passes_its_own_checks(&project);
    let tree = project.cargo(&["tree", "--edges", "normal", "--prefix", "none"]);
    let tree = String::from_utf8_lossy(&tree.stdout);
    for absent in ["kube ", "kube-client ", "k8s-openapi ", "opentelemetry "] {
        assert!(
            !tree.lines().any(|line| line.starts_with(absent)),
            "{absent}is in the build with the switches off"
        );
    }
    let values = project.read("helm/values.yaml");
    let kube = values.split("\nkube:\n").nth(1).expect("a kube section");
    let enabled = kube
        .lines()
        .find(|line| line.trim_start().starts_with("enabled:"));
    assert_eq!(
        enabled.map(str::trim),
        Some("enabled: false"),
        "the chart's kube.enabled"
    );
}

#[test]
fn a_long_name_and_five_digit_ports_still_format_cleanly() {
    let project = generate(
        "a-rather-long-service-name-that-a-large-organisation-might-choose",
        &[("http_port", "65000"), ("admin_port", "65001")],
    )
    .expect("a long valid name generates");
    project.cargo_ok(&["fmt", "--check"]);
}
