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
    for port in ["0", "70000", "65536", "-1", "80a", "", "080", "+80"] {
        let message = refused("port-check", &[("http_port", port)]);
        assert!(
            message.contains(&format!(
                "http_port is \"{port}\", which is not a port: give a whole number from 1 to 65535"
            )),
            "port {port:?}: {message}"
        );
    }
    let message = refused("port-check", &[("admin_port", "99999")]);
    assert!(
        message.contains("admin_port is \"99999\", which is not a port"),
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
fn a_repository_must_be_an_https_url() {
    for repository in ["ftp://example.com/x", "github.com/acme/x", "https://x/a b"] {
        let message = refused("repo-check", &[("repository", repository)]);
        assert!(
            message.contains(&format!(
                "repository is \"{repository}\", which is not an https URL"
            )),
            "{repository}: {message}"
        );
    }
}

#[test]
fn switches_accept_only_true_or_false() {
    let message = refused("switch-check", &[("otel", "maybe")]);
    assert!(
        message.contains("otel is \"maybe\": give true or false"),
        "{message}"
    );
    let message = refused("switch-check", &[("kube", "yes")]);
    assert!(
        message.contains("kube is \"yes\": give true or false"),
        "{message}"
    );
}

/// cargo-generate turns a name that is not kebab-case into one; it must say so, and the
/// project, its crate and its chart all take the new name.
#[test]
fn a_renamed_project_says_so_and_is_named_alike_everywhere() {
    let project = generate("Orders_Service", &[]).expect("a name cargo-generate can convert");
    assert!(
        project
            .said
            .contains("Renaming project called `Orders_Service` to `orders-service`"),
        "{}",
        project.said
    );
    assert!(project.dir.ends_with("orders-service"));
    assert!(
        project
            .read("Cargo.toml")
            .contains("name = \"orders-service\"")
    );
    assert!(
        project
            .read("helm/Chart.yaml")
            .contains("name: orders-service")
    );
}
