//! A generated project passes fmt, clippy and its own tests right after generation,
//! for the default options and for every option switched on.

use kube_service_template_tests::{Generated, generate};

fn passes_its_own_checks(project: &Generated) {
    project.cargo_ok(&["fmt", "--check"]);
    project.cargo_ok(&["clippy", "--all-targets", "--", "-D", "warnings"]);
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
    // The OpenTelemetry tests only exist with the feature: make sure they ran.
    let listed = project.cargo(&["test", "--test", "otel", "--", "--list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("spans_reach_the_collector_in_the_callers_trace"),
        "{listed}"
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
