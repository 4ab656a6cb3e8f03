//! Bad input to `cargo generate` is refused with a clear message and a non-zero exit.

use kube_service_template_tests::generate;

fn refused(name: &str, defines: &[(&str, &str)]) -> String {
    match generate(name, defines) {
        Ok(project) => panic!("{name} {defines:?} generated {}", project.dir.display()),
        Err(refusal) => {
            assert_ne!(refusal.code, Some(0));
            refusal.output
        }
    }
}

#[test]
fn ports_out_of_range_are_refused() {
    for port in ["0", "70000", "65536", "-1", "80a", ""] {
        let message = refused("port-check", &[("http_port", port)]);
        assert!(
            message.contains(&format!("\"{port}\" is not a valid value for http_port")),
            "port {port:?}: {message}"
        );
    }
    let message = refused("port-check", &[("admin_port", "99999")]);
    assert!(
        message.contains("is not a valid value for admin_port"),
        "{message}"
    );
}

#[test]
fn the_edges_of_the_port_range_are_accepted() {
    generate("port-edges", &[("http_port", "1"), ("admin_port", "65535")])
        .expect("1 and 65535 are valid ports");
}

#[test]
fn the_same_port_for_app_and_admin_is_refused() {
    let message = refused(
        "same-ports",
        &[("http_port", "9000"), ("admin_port", "9000")],
    );
    assert!(
        message.contains("http_port and admin_port are both 9000"),
        "{message}"
    );
}

#[test]
fn names_that_are_not_crate_names_are_refused() {
    for (name, reason) in [
        ("1service", "must start with a lowercase letter"),
        ("self", "reserved"),
        ("test", "reserved"),
    ] {
        let message = refused(name, &[]);
        assert!(message.contains(reason), "{name}: {message}");
        assert!(message.contains("remove the empty"), "{name}: {message}");
    }
}

#[test]
fn a_name_kept_verbatim_with_force_must_still_be_a_crate_name() {
    let refusal = kube_service_template_tests::generate_with("Bad.Name", &[], &["--force"])
        .err()
        .expect("refused");
    assert!(
        refusal.output.contains("not a valid crate name"),
        "{}",
        refusal.output
    );
}

#[test]
fn switches_accept_only_true_or_false() {
    let message = refused("switch-check", &[("otel", "maybe")]);
    assert!(message.contains("not `true` or `false`"), "{message}");
    let message = refused("switch-check", &[("kube", "yes")]);
    assert!(message.contains("not `true` or `false`"), "{message}");
}
