//! Real containers with podman, in the only configuration that works on these machines:
//! root, vfs storage, the runc runtime, host networking, explicit ulimits, and no registry
//! (images are built `FROM scratch` around a static binary).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::{Generated, scratch, shared_target_dir};

pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// `podman` with the global flags every call needs.
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args([
        "--storage-driver",
        "vfs",
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ]);
    command
}

fn run_ok(command: &mut Command) -> String {
    let output: Output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err} (see scripts/install.sh)"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Builds the project's binary as a static musl executable; returns its path.
pub fn static_binary(project: &Generated, name: &str) -> PathBuf {
    project.cargo_ok(&["build", "--release", "--target", MUSL_TARGET]);
    shared_target_dir()
        .join(MUSL_TARGET)
        .join("release")
        .join(name)
}

/// The instructions of a Dockerfile's last stage, continuation lines joined, comments
/// dropped and whitespace collapsed.
pub fn final_stage(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<String> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|line| line.starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    instructions[last_from..].to_vec()
}

/// The Dockerfile's final stage, made buildable without a registry: `FROM scratch`
/// instead of the distroless base, and the binary copied from the build context instead of
/// from the builder stage. Everything else (user, ports, stop signal, entrypoint, labels)
/// is kept as written.
pub fn scratch_containerfile(dockerfile: &str) -> String {
    let mut stage = vec!["FROM scratch".to_owned()];
    for line in &final_stage(dockerfile)[1..] {
        match line.strip_prefix("COPY --from=builder ") {
            Some(copy) => {
                let destination = copy
                    .split_whitespace()
                    .last()
                    .expect("COPY has a destination");
                stage.push(format!("COPY service {destination}"));
            }
            None => stage.push(line.clone()),
        }
    }
    stage.join("\n") + "\n"
}

pub struct Image {
    pub tag: String,
}

impl Image {
    /// Builds `containerfile` with `binary` as the only file of the build context.
    pub fn build(tag: &str, containerfile: &str, binary: &Path) -> Image {
        let context = scratch("image-contexts").join(format!("{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&context);
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy(binary, context.join("service")).unwrap();
        std::fs::write(context.join("Containerfile"), containerfile).unwrap();
        let tag = format!("localhost/{tag}:test");
        run_ok(
            podman()
                .args(["build", "--quiet", "--tag", &tag, "--file"])
                .arg(context.join("Containerfile"))
                .arg(&context),
        );
        let _ = std::fs::remove_dir_all(&context);
        Image { tag }
    }

    /// The image's size as podman reports it, in bytes.
    pub fn size(&self) -> u64 {
        run_ok(podman().args(["image", "inspect", "--format", "{{.Size}}", &self.tag]))
            .parse()
            .expect("a size in bytes")
    }

    /// Runs the image on the host's network with `env`; returns once podman started it.
    pub fn run(&self, env: &[(&str, &str)]) -> Container {
        let mut command = podman();
        command.args([
            "run",
            "--detach",
            "--network",
            "host",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ]);
        for (name, value) in env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        let id = run_ok(command.arg(&self.tag));
        Container { id }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "--force", &self.tag]).output();
    }
}

pub struct Container {
    pub id: String,
}

impl Container {
    /// `podman stop -t <grace>`: SIGTERM (the image's STOPSIGNAL), then SIGKILL once the
    /// grace period is over, as a kubelet does. Returns how long the stop took.
    pub fn stop(&self, grace: Duration) -> Duration {
        let started = Instant::now();
        run_ok(podman().args(["stop", "--time", &grace.as_secs().to_string(), &self.id]));
        started.elapsed()
    }

    pub fn exit_code(&self) -> i32 {
        run_ok(podman().args(["inspect", "--format", "{{.State.ExitCode}}", &self.id]))
            .parse()
            .expect("an exit code")
    }

    /// The user id the container's process runs as, seen from the host.
    pub fn user_id(&self) -> u32 {
        let pid = run_ok(podman().args(["inspect", "--format", "{{.State.Pid}}", &self.id]));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .expect("a Uid line")
    }

    pub fn logs(&self) -> String {
        let output = podman()
            .args(["logs", &self.id])
            .output()
            .expect("podman runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", &self.id]).output();
    }
}
