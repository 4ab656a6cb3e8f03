//! Helpers for the generator's test suite: run the real `cargo generate` on this
//! repository, then run tools inside what it produced.

pub mod cgroup;
pub mod chart;
pub mod http1;
pub mod podman;
pub mod prometheus;
pub mod service;
pub mod sim;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

/// A loopback address whose port was free a moment ago, for a process that binds it itself.
pub fn free_loopback_address() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The repository root (the template's parent).
///
/// Read at run time: cargo sets the variable for the tests it runs, while the compiled-in
/// value may name another clone that built into the same shared target directory.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Where the scripts keep tools and build output: outside the clone (see `scripts/env.sh`),
/// so that `cargo generate --path <clone>` copies sources only.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KST_CACHE") {
        return PathBuf::from(dir);
    }
    let cache_home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache_home.join("kube-service-template")
}

/// Build output and scratch files: the target directory cargo was told to use, or
/// `target/` in the clone when run without the scripts.
pub fn build_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::absolute(PathBuf::from(dir)).expect("a usable target dir"),
        None => repo_root().join("target"),
    }
}

/// A scratch directory under [`build_root`] for one purpose.
pub fn scratch(name: &str) -> PathBuf {
    build_root().join(name)
}

/// Where generated projects go.
fn scratch_root() -> PathBuf {
    scratch("generated-projects")
}

/// One target directory shared by every generated project, so that dependencies are
/// compiled once for all variants.
pub fn shared_target_dir() -> PathBuf {
    scratch("generated")
}

/// What cargo-generate reads from this repository, copied once per test process.
///
/// `cargo generate --path` copies the whole directory it is given, build output included
/// (gigabytes under `target/`), before it looks at the template; generating from a copy of
/// just these files gives cargo-generate exactly the same input in milliseconds.
pub fn template_source() -> &'static Path {
    static SNAPSHOT: OnceLock<PathBuf> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let root = repo_root();
        let snapshots = scratch("template-snapshots");
        sweep_finished_runs(&snapshots);
        let snapshot = snapshots.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&snapshot);
        for item in ["cargo-generate.toml", "hooks", "template"] {
            copy_tree(&root.join(item), &snapshot.join(item));
        }
        snapshot
    })
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_file() {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
        return;
    }
    for relative in files_under(from) {
        copy_tree(&from.join(&relative), &to.join(&relative));
    }
}

/// Files of the template, relative to `template/`, sorted.
pub fn template_files() -> Vec<PathBuf> {
    files_under(&repo_root().join("template"))
}

/// Files under `root`, relative to it, sorted; `target/` and `Cargo.lock` are build output.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|entry| entry.file_name() != "target")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file() && entry.file_name() != "Cargo.lock")
        .map(|entry| entry.path().strip_prefix(root).unwrap().to_path_buf())
        .collect();
    files.sort();
    files
}

/// `text`, each line behind `│ `.
fn quoted(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .lines()
        .map(|line| format!("  │ {line}\n"))
        .collect()
}

/// A project produced by `cargo generate`.
pub struct Generated {
    pub dir: PathBuf,
    /// What `cargo generate` printed.
    pub said: String,
}

/// What `cargo generate` said when it refused.
#[derive(Debug)]
pub struct Refused {
    pub code: Option<i32>,
    pub output: String,
}

/// Runs `cargo generate --path <repo> template --name <name> --silent --vcs none` (on
/// [`template_source`]) with
/// `--define key=value` for each pair, in a fresh scratch directory.
pub fn generate(name: &str, defines: &[(&str, &str)]) -> Result<Generated, Refused> {
    generate_with(name, defines, &[])
}

pub fn generate_with(
    name: &str,
    defines: &[(&str, &str)],
    extra_args: &[&str],
) -> Result<Generated, Refused> {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| sweep_finished_runs(&scratch_root()));
    let parent = scratch_root().join(format!(
        "{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();

    let mut command = Command::new("cargo");
    command
        .current_dir(&parent)
        .args(["generate", "--path"])
        .arg(template_source())
        .args(["template", "--name", name, "--silent", "--vcs", "none"])
        .args(extra_args)
        .env("RUST_BACKTRACE", "0");
    for (key, value) in defines {
        command.arg("--define").arg(format!("{key}={value}"));
    }
    let output = command
        .output()
        .expect("cargo-generate runs (see scripts/install.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(Refused {
            code: output.status.code(),
            output: text,
        });
    }
    let dir = std::fs::read_dir(&parent)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.is_dir())
        .unwrap_or_else(|| panic!("cargo generate succeeded but wrote no project:\n{text}"));
    Ok(Generated { dir, said: text })
}

/// Removes what test processes that have since exited left under `root` (entries are
/// named after the process id).
fn sweep_finished_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Generated {
    /// `cargo <args>` in the project with the shared target directory.
    fn cargo_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("cargo");
        command
            .current_dir(&self.dir)
            .args(args)
            .env("CARGO_TARGET_DIR", shared_target_dir())
            // As in the project's own CI: its tests that need an outside tool (a real
            // Prometheus, promtool, helm) fail instead of skipping when it is missing.
            .env("CI", "true")
            .env_remove("RUSTFLAGS");
        command
    }

    /// Runs `cargo <args>` in the project, its output captured.
    pub fn cargo(&self, args: &[&str]) -> Output {
        self.cargo_command(args).output().expect("cargo runs")
    }

    /// Runs `cargo <args>` with its progress on this terminal; an error unless it succeeds.
    pub fn cargo_live(&self, args: &[&str]) -> Result<(), String> {
        let status = self
            .cargo_command(args)
            .status()
            .map_err(|err| format!("cargo: {err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo {} failed: {status}", args.join(" ")))
        }
    }

    /// Runs `cargo <args>` and fails the test with its output unless it succeeds. The
    /// output is quoted behind `│ `, so that the project's own `cargo test` lines cannot be
    /// mistaken for the suite's (`scripts/test-summary.awk` reads those).
    pub fn cargo_ok(&self, args: &[&str]) {
        let output = self.cargo(args);
        assert!(
            output.status.success(),
            "cargo {} failed in {}:\n{}{}",
            args.join(" "),
            self.dir.display(),
            quoted(&output.stdout),
            quoted(&output.stderr)
        );
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.dir.join(relative))
            .unwrap_or_else(|err| panic!("reading {relative}: {err}"))
    }
}
