//! What takes a generated project to a registry or a host: its Dockerfile, its CI workflow
//! and its systemd units.

use std::{process::Command, sync::OnceLock};

use kube_service_template_tests::{Generated, chart::tool, generate, podman::final_stage, scratch};

fn project() -> &'static Generated {
    static PROJECT: OnceLock<Generated> = OnceLock::new();
    PROJECT.get_or_init(|| {
        generate(
            "shipped-service",
            &[("http_port", "8000"), ("admin_port", "8001")],
        )
        .expect("valid values generate")
    })
}

#[test]
fn the_dockerfile_lints_clean() {
    let output = Command::new(tool("hadolint"))
        .arg(project().dir.join("Dockerfile"))
        .output()
        .expect("hadolint runs (see scripts/install.sh)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && report.trim().is_empty(),
        "hadolint:\n{report}"
    );
}

#[test]
fn the_final_image_is_minimal_non_root_and_stops_with_sigterm() {
    let stage = final_stage(&project().read("Dockerfile"));
    let from = &stage[0];
    assert!(
        from.contains("distroless/static") || from == "FROM scratch",
        "the final image has no shell: {from}"
    );
    let instruction = |name: &str| {
        stage
            .iter()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("the final stage has no {name}: {stage:#?}"))
    };
    let user = instruction("USER");
    assert!(
        user.split(':')
            .all(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) && id != "0"),
        "USER must be a numeric non-root id: {user}"
    );
    assert_eq!(instruction("STOPSIGNAL"), "SIGTERM");
    let mut exposed: Vec<&str> = instruction("EXPOSE").split_whitespace().collect();
    exposed.sort();
    assert_eq!(exposed, ["8000", "8001"], "both the app and the admin port");
    let entrypoint = instruction("ENTRYPOINT");
    assert!(
        entrypoint.starts_with('[') && entrypoint.contains("\"/service\""),
        "exec form: {entrypoint}"
    );
    let label = instruction("LABEL");
    assert!(
        label.contains("org.opencontainers.image.title=\"shipped-service\""),
        "expected the image title label: {label}"
    );
    assert!(
        !stage
            .iter()
            .any(|line| line.starts_with("RUN ") || line.starts_with("SHELL ")),
        "nothing in the final stage needs a shell"
    );
    let dockerfile = project().read("Dockerfile");
    assert!(
        dockerfile.contains("cargo chef cook"),
        "dependencies are cached in their own layer"
    );
    assert!(
        dockerfile.contains("x86_64-unknown-linux-musl"),
        "the binary is static"
    );
}

#[test]
fn the_ci_workflow_is_valid_and_runs_every_check() {
    let workflow = project().dir.join(".github/workflows/ci.yml");
    let output = Command::new(tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(&workflow)
        .output()
        .expect("check-jsonschema runs (see scripts/install.sh)");
    assert!(
        output.status.success(),
        "the workflow does not match GitHub's schema:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&workflow).unwrap();
    for step in [
        "cargo fmt --check",
        "cargo clippy --workspace --all-targets -- -D warnings",
        "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        "cargo clippy --workspace --all-targets --no-default-features -- -D warnings",
        "cargo test --workspace",
        "cargo test --workspace --no-default-features",
        "helm lint --strict helm",
        "helm template",
        "kubernetes-validate --strict",
        "docker/build-push-action",
    ] {
        assert!(text.contains(step), "the workflow does not run {step:?}");
    }
}

/// `systemd-analyze verify` against a scratch root holding the system's own units, the
/// generated units and a stand-in executable: it warns (and still exits 0) on unknown keys
/// and unparsable values, so any line that names our units fails the test.
#[test]
fn the_systemd_units_verify_clean() {
    let root = scratch(&format!("systemd-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let units = root.join("etc/systemd/system");
    let binaries = root.join("usr/local/bin");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(&binaries).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    let copied = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(copied.success(), "copying the system's units");
    std::fs::copy("/bin/true", binaries.join("shipped-service")).unwrap();
    let mut names = Vec::new();
    for suffix in ["socket", "service"] {
        let name = format!("shipped-service.{suffix}");
        std::fs::copy(project().dir.join("systemd").join(&name), units.join(&name)).unwrap();
        names.push(name);
    }

    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .args(&names)
        .output()
        .expect("systemd-analyze runs (see scripts/install.sh)");
    let _ = std::fs::remove_dir_all(&root);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("shipped-service"))
        .collect();
    assert!(
        output.status.success() && about_ours.is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn the_systemd_units_carry_the_project_s_ports() {
    let socket = project().read("systemd/shipped-service.socket");
    let listens: Vec<&str> = socket
        .lines()
        .filter_map(|line| line.strip_prefix("ListenStream="))
        .collect();
    assert_eq!(listens, ["8000", "127.0.0.1:8001"]);
    let service = project().read("systemd/shipped-service.service");
    for line in [
        "ExecStart=/usr/local/bin/shipped-service\n",
        "Requires=shipped-service.socket\n",
    ] {
        assert!(
            service.contains(line),
            "expected {line:?} in the unit:\n{service}"
        );
    }
}

/// `major.minor.patch` as numbers, `1.89` read as `1.89.0`.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.trim().split('.').map(|part| part.parse().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

#[test]
fn the_declared_rust_version_builds_every_dependency_and_the_image() {
    let output = project().cargo(&["metadata", "--format-version", "1"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let ours = packages
        .iter()
        .find(|package| package["name"] == "shipped-service")
        .expect("the project's own package");
    let declared = ours["rust_version"].as_str().expect("a rust-version");
    // Every package the lockfile can pull in, optional features included.
    let (needed, by) = packages
        .iter()
        .filter_map(|package| Some((version(package["rust_version"].as_str()?), package)))
        .max_by_key(|(needed, _)| *needed)
        .unwrap();
    assert!(
        version(declared) >= needed,
        "rust-version {declared} is older than {} {} needs ({needed:?})",
        by["name"],
        by["version"]
    );
    let dockerfile = project().read("Dockerfile");
    let image_rust = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ARG RUST_VERSION="))
        .expect("the Dockerfile pins its Rust version");
    assert_eq!(
        version(image_rust),
        version(declared),
        "the image builds with rust-version"
    );
}
