//! Bad configuration is refused at start, with a message naming what to fix.

mod support;

use std::{net::TcpListener, process::Command};

use support::binary;

/// Exit code documented for a refused configuration.
const EXIT_BAD_CONFIG: i32 = 2;
/// Exit code documented for a service that could not start.
const EXIT_STARTUP_FAILED: i32 = 1;

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(binary())
        .env_clear()
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code(), text)
}

#[test]
fn a_malformed_duration_names_its_variable() {
    let (code, message) = run_with(&[("SHUTDOWN_TIMEOUT", "soon")]);
    assert_eq!(code, Some(EXIT_BAD_CONFIG));
    assert!(message.contains("SHUTDOWN_TIMEOUT"), "{message}");
    assert!(message.contains("5s, 1500ms"), "{message}");
}

/// A typo of a few digits is refused at start, not met as a panic at the first request or at
/// SIGTERM.
#[test]
fn a_duration_beyond_its_bound_is_refused() {
    for variable in ["REQUEST_TIMEOUT", "SHUTDOWN_TIMEOUT"] {
        let (code, message) = run_with(&[(variable, "10000000000000000000s")]);
        assert_eq!(code, Some(EXIT_BAD_CONFIG), "{message}");
        assert!(message.contains(variable), "{message}");
        assert!(
            message.contains("the most this service accepts"),
            "{message}"
        );
    }
}

#[test]
fn a_drain_delay_longer_than_the_timeout_is_refused() {
    let (code, message) = run_with(&[("SHUTDOWN_DRAIN_DELAY", "30s"), ("SHUTDOWN_TIMEOUT", "10s")]);
    assert_eq!(code, Some(EXIT_BAD_CONFIG));
    assert!(message.contains("SHUTDOWN_DRAIN_DELAY (30s)"), "{message}");
    assert!(message.contains("SHUTDOWN_TIMEOUT (10s)"), "{message}");
}

#[test]
fn the_same_port_for_app_and_admin_is_refused() {
    let (code, message) = run_with(&[
        ("HTTP_ADDR", "127.0.0.1:18080"),
        ("ADMIN_ADDR", "127.0.0.1:18080"),
    ]);
    assert_eq!(code, Some(EXIT_BAD_CONFIG));
    assert!(message.contains("same port"), "{message}");
}

#[test]
fn an_unusable_address_is_a_startup_failure_naming_the_variable() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, message) = run_with(&[("HTTP_ADDR", &address)]);
    assert_eq!(code, Some(EXIT_STARTUP_FAILED));
    assert!(
        message.contains(&format!("binding HTTP_ADDR {address}")),
        "{message}"
    );
}
