//! The README's main command works: the demo generates a service, rolls it under load in the
//! simulator and reports zero failed requests.

use std::process::Command;

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
    let plot = stdout
        .lines()
        .find_map(|line| line.strip_prefix("plot:"))
        .expect("the demo names its plot");
    let svg = std::fs::read_to_string(plot.trim()).expect("the plot exists");
    assert!(svg.starts_with("<svg"), "expected an SVG at {plot}");
}
