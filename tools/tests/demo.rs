//! The README's main command works: the demo generates a service, rolls three replicas of
//! the default chart under load in the simulator, and loses nothing. This is also the suite's
//! proof that the chart's defaults lose no request behind kube-proxy: the report the demo
//! writes is held to every expectation of a clean rollout.

use std::{path::Path, process::Command};

use kube_service_template_tests::sim::report::Report;

#[test]
fn the_demo_rolls_a_generated_service_under_load_without_a_failed_request() {
    let output = Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tally = stdout
        .lines()
        .find(|line| line.contains(" failed of "))
        .expect("the demo prints its tally");
    assert!(tally.starts_with("0 failed of "), "{tally}");
    for step in [
        "deleted",
        "preStop: sleep 5s",
        "stops routing to",
        "SIGTERM",
        "│ shutdown: draining",
        "│ shutdown: listener closed",
        "│ shutdown complete",
        "container exited with 0",
        "rollout to r2 complete",
    ] {
        assert!(
            stdout.contains(step),
            "the demo did not show {step:?}:\n{stdout}"
        );
    }
    let named = |label: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(label))
            .unwrap_or_else(|| panic!("the demo names its {label}"))
            .trim()
            .to_owned()
    };
    let plot = named("plot:");
    let svg = std::fs::read_to_string(&plot).expect("the plot exists");
    assert!(svg.starts_with("<svg"), "expected an SVG at {plot}");

    let report = Report::read(Path::new(&named("report:"))).expect("the demo's report reads back");
    report.assert_clean_rollout(3);
}
