//! The Helm chart's alerts under `promtool test rules`: the chart renders its PrometheusRule
//! for a release named `web` in namespace `shop`, and `tests/alerts/*.test.yaml` say, series by
//! series, which alerts fire with which labels. Needs `helm` and `promtool` (or their paths in
//! `HELM` and `PROMTOOL`); without them the test says so and passes, except under CI.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use support::{TempDir, outside_tool};

#[test]
fn the_charts_alerts_fire_as_their_tests_say() {
    let Some((dir, promtool)) = rendered_rules("alerts") else {
        return;
    };
    let checked = run(
        Command::new(&promtool).args(["check", "rules", "rules.yaml"]),
        &dir.0,
    );
    assert!(checked.status.success(), "{}", text(&checked));
    let tested = run(&mut promtool_test(&promtool, &dir.0, &test_files()), &dir.0);
    assert!(tested.status.success(), "{}", text(&tested));
}

/// The control: an expectation that does not hold must fail `promtool test rules`, or the
/// test above would prove nothing.
#[test]
fn a_wrong_expectation_fails() {
    let Some((dir, promtool)) = rendered_rules("alerts-control") else {
        return;
    };
    let wrong = dir.0.join("wrong.test.yaml");
    let tests = std::fs::read_to_string(&test_files()[0]).unwrap();
    assert!(
        tests.contains("service: web\n"),
        "the control edits a label"
    );
    std::fs::write(
        &wrong,
        tests.replace("service: web\n", "service: web-canary\n"),
    )
    .unwrap();
    let tested = run(&mut promtool_test(&promtool, &dir.0, &[wrong]), &dir.0);
    assert!(!tested.status.success(), "{}", text(&tested));
}

/// The chart's rule groups as `rules.yaml` in a new directory `name`, and promtool; `None`
/// when a tool is missing outside CI.
fn rendered_rules(name: &str) -> Option<(TempDir, PathBuf)> {
    let helm = outside_tool("helm", "HELM")?;
    let promtool = outside_tool("promtool", "PROMTOOL")?;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm");
    let rendered = run(
        Command::new(helm)
            .args(["template", "alerts"])
            .arg(chart)
            .args(["--namespace", "shop", "--set", "fullnameOverride=web"])
            .args(["--set", "metrics.prometheusRule.enabled=true"])
            .args(["--show-only", "templates/prometheusrule.yaml"]),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    let dir = TempDir::new(name);
    let rules = rule_file(&String::from_utf8(rendered.stdout).unwrap());
    std::fs::write(dir.0.join("rules.yaml"), rules).unwrap();
    Some((dir, promtool))
}

/// A PrometheusRule's `spec` is a Prometheus rule file as it is: everything under `spec:`,
/// one level of indentation less.
fn rule_file(prometheus_rule: &str) -> String {
    let (_, spec) = prometheus_rule
        .split_once("\nspec:\n")
        .expect("a PrometheusRule with a spec");
    spec.lines()
        .map(|line| {
            line.strip_prefix("  ")
                .or_else(|| line.trim().is_empty().then_some(""))
                .unwrap_or_else(|| panic!("not inside the spec: {line:?}"))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

fn test_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alerts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/alerts/*.test.yaml");
    files
}

/// `promtool test rules` on copies of `tests` placed beside `rules.yaml` in `dir`, which
/// they name as their rule file.
fn promtool_test(promtool: &Path, dir: &Path, tests: &[PathBuf]) -> Command {
    let mut command = Command::new(promtool);
    command.args(["test", "rules"]);
    for test in tests {
        let copy = dir.join(test.file_name().unwrap());
        if copy != *test {
            std::fs::copy(test, &copy).unwrap();
        }
        command.arg(copy);
    }
    command
}

fn run(command: &mut Command, dir: &Path) -> Output {
    command.current_dir(dir).output().expect("the tool runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
