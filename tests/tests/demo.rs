//! The README's main command works: the demo generates a service, drains it under load and
//! reports zero failed requests.

use std::process::Command;

#[test]
fn the_demo_drains_a_generated_service_under_load_without_a_failed_request() {
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
        "SIGTERM",
        "/readyz → 503",
        "Connection: close",
        "listener closed",
        "exited with exit status: 0",
    ] {
        assert!(
            stdout.contains(step),
            "the demo did not show {step:?}:\n{stdout}"
        );
    }
}
