//! Every file of the template arrives, Helm templates and the runtime crate untouched, and
//! no Liquid is left.

use std::path::PathBuf;

use kube_service_template_tests::{chart::Chart, files_under, generate, repo_root, template_files};

#[test]
fn every_template_file_arrives_in_the_generated_project() {
    let project = generate("files-check", &[]).expect("defaults generate");
    // File names may carry the project's name (the systemd units); cargo-generate drops the
    // `.liquid` of files that are only valid once rendered (Cargo.toml).
    let mut expected: Vec<PathBuf> = template_files()
        .iter()
        .map(|file| {
            let name = file
                .to_string_lossy()
                .replace("{{project-name}}", "files-check");
            name.strip_suffix(".liquid").unwrap_or(&name).into()
        })
        .collect();
    expected.sort();
    assert_eq!(files_under(&project.dir), expected);
}

/// Folders whose files carry `{{ }}` of their own (Helm, Grafana, GitHub Actions), which
/// `cargo-generate.toml` excludes from Liquid, all but [`HELPERS`].
const OWN_TEMPLATING: [&str; 3] = ["helm/templates", "helm/dashboards", ".github/workflows"];

/// The chart's helpers: Liquid names them after the chart; Helm's own syntax passes through.
const HELPERS: &str = "helm/templates/_helpers.tpl";

#[test]
fn files_with_templating_of_their_own_are_copied_without_liquid_processing() {
    let project = generate("helm-check", &[]).expect("defaults generate");
    let mut compared = 0;
    for folder in OWN_TEMPLATING {
        let original = repo_root().join("template").join(folder);
        for file in files_under(&original) {
            let relative = format!("{folder}/{}", file.display());
            if relative == HELPERS {
                continue;
            }
            let text = std::fs::read_to_string(original.join(&file)).unwrap();
            assert!(
                text.contains("{{"),
                "{relative} has templating of its own to protect"
            );
            assert_eq!(project.read(&relative), text, "{relative}");
            compared += 1;
        }
    }
    assert!(compared >= 11, "only {compared} files compared");
}

#[test]
fn the_chart_helpers_are_named_after_the_chart_and_keep_helms_syntax() {
    let project = generate("orders", &[]).expect("defaults generate");
    let helpers = project.read(HELPERS);
    assert!(!helpers.contains("{%"), "no Liquid left:\n{helpers}");
    let defined: Vec<&str> = helpers
        .lines()
        .filter_map(|line| line.strip_prefix(r#"{{- define ""#))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(defined.len() >= 10, "{defined:?}");
    for name in &defined {
        assert!(
            name.starts_with("orders."),
            "{name} is not named after the chart"
        );
    }
    let templates = repo_root().join("template/helm/templates");
    for file in files_under(&templates) {
        let text = std::fs::read_to_string(templates.join(&file)).unwrap();
        assert!(
            !text.contains(r#"include "service."#),
            "{} calls a helper by a fixed name",
            file.display()
        );
    }
}

#[test]
fn no_liquid_is_left_anywhere_else() {
    let project = generate("liquid-check", &[("otel", "true"), ("kube", "true")])
        .expect("all options generate");
    for file in files_under(&project.dir) {
        let text = std::fs::read_to_string(project.dir.join(&file)).unwrap();
        assert!(
            !text.contains("{%"),
            "{} keeps a Liquid tag",
            file.display()
        );
        if !OWN_TEMPLATING.iter().any(|folder| file.starts_with(folder)) {
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                file.display()
            );
        }
    }
}

#[test]
fn placeholders_reach_code_chart_and_docs() {
    let project = generate(
        "placed-values",
        &[
            ("description", "Serves the tests"),
            ("http_port", "8181"),
            ("admin_port", "9191"),
        ],
    )
    .expect("valid values generate");
    let cargo = project.read("Cargo.toml");
    for line in [
        r#"name = "placed-values""#,
        r#"description = "Serves the tests""#,
    ] {
        assert!(
            cargo.contains(line),
            "expected {line:?} in Cargo.toml:\n{cargo}"
        );
    }
    let service = project.read("src/lib.rs");
    for port in ["http: 8181,", "admin: 9191,"] {
        assert!(service.contains(port), "expected {port} in src/lib.rs");
    }
    let values = project.read("helm/values.yaml");
    assert!(
        values.contains("http: 8181") && values.contains("admin: 9191"),
        "expected both ports in values.yaml:\n{values}"
    );
    assert!(
        project
            .read("helm/Chart.yaml")
            .contains("name: placed-values")
    );
    assert!(
        project.read("README.md").contains("placed-values"),
        "expected the project name in its README"
    );
}

/// The chart's `home`, `sources` and `icon` and the crate's `repository` come from the
/// `repository` placeholder; without one, none is invented.
#[test]
fn a_repository_gives_the_crate_and_the_chart_their_home_and_icon() {
    let project = generate(
        "homed",
        &[("repository", "https://github.com/acme/homed.git/")],
    )
    .expect("a repository URL generates");
    let chart = project.read("helm/Chart.yaml");
    for line in [
        "home: https://github.com/acme/homed\n",
        "sources:\n  - https://github.com/acme/homed\n",
        "icon: https://raw.githubusercontent.com/acme/homed/HEAD/helm/icon.svg\n",
        "kubeVersion: \">=1.29.0-0\"\n",
    ] {
        assert!(
            chart.contains(line),
            "expected {line:?} in Chart.yaml:\n{chart}"
        );
    }
    assert!(
        project.dir.join("helm/icon.svg").exists(),
        "the icon it points to ships"
    );
    assert!(
        project
            .read("Cargo.toml")
            .contains("repository = \"https://github.com/acme/homed\"\n")
    );
    let lint = Chart::at(&project.dir.join("helm"))
        .lint(&[])
        .expect("lints");
    assert!(!lint.contains("icon is recommended"), "{lint}");

    let bare = generate("homeless", &[]).expect("defaults generate");
    let chart = bare.read("helm/Chart.yaml");
    assert!(
        !chart.contains("home:") && !chart.contains("icon:") && !chart.contains("sources:"),
        "{chart}"
    );
    assert!(!bare.read("Cargo.toml").contains("repository"));
}

#[test]
fn the_switches_set_the_default_cargo_features() {
    for (otel, kube, expected) in [
        ("true", "true", r#"default = ["otel", "kube"]"#),
        ("true", "false", r#"default = ["otel"]"#),
        ("false", "true", r#"default = ["kube"]"#),
        ("false", "false", "default = []"),
    ] {
        let name = format!("switches-{otel}-{kube}");
        let project = generate(&name, &[("otel", otel), ("kube", kube)]).unwrap();
        let manifest = project.read("Cargo.toml");
        assert!(
            manifest.contains(expected),
            "otel={otel} kube={kube}:\n{manifest}"
        );
    }
}

/// The runtime is the same crate in every project, so that upgrading it is replacing a folder.
#[test]
fn the_runtime_crate_is_identical_whatever_the_name_and_options() {
    let original = repo_root().join("template/runtime");
    let files = files_under(&original);
    assert!(files.len() >= 20, "only {} runtime files", files.len());
    for (name, options) in [
        (
            "runtime-every-option",
            &[("otel", "true"), ("kube", "true"), ("http_port", "8181")][..],
        ),
        (
            "runtime-no-option",
            &[("otel", "false"), ("kube", "false")][..],
        ),
    ] {
        let project = generate(name, options).expect("valid options generate");
        assert_eq!(files_under(&project.dir.join("runtime")), files, "{name}");
        for file in &files {
            let generated = std::fs::read(project.dir.join("runtime").join(file)).unwrap();
            let template = std::fs::read(original.join(file)).unwrap();
            assert!(
                generated == template,
                "{name}: runtime/{} differs",
                file.display()
            );
        }
    }
}
