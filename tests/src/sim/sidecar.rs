//! Native sidecars (init containers with `restartPolicy: Always`, Kubernetes 1.29+) as the
//! kubelet runs them (KEP-753): started before the service's container, in the order of the
//! pod spec, each once the one before it listens; on deletion they keep running while the
//! service drains, and are stopped only after it has exited, last started first, within what
//! is left of the grace period. Each is a real process: the scenario says what runs an image.

use std::{net::SocketAddr, path::Path, process::Stdio, sync::Arc, time::Duration};

use tokio::{net::TcpStream, process::Command, sync::watch, time::Instant};

/// Builds the process that stands for an image, listening on the address given, with a
/// directory of its own.
pub type Launch = Arc<dyn Fn(SocketAddr, &Path) -> Command + Send + Sync>;

/// What runs an image the pod spec names.
#[derive(Clone)]
pub struct SidecarImage {
    pub image: String,
    pub launch: Launch,
}

impl std::fmt::Debug for SidecarImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarImage")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// When the kubelet stops the sidecars of a deleted pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SidecarStop {
    /// After the service's container has exited, in reverse order (Kubernetes 1.29+).
    #[default]
    AfterTheService,
    /// With the service's container, as ordinary containers are stopped: what a pod gets
    /// with its sidecars in `containers` (the negative control).
    WithTheService,
}

/// The sidecar images a scenario can run, and how the kubelet stops them.
#[derive(Debug, Clone, Default)]
pub struct Sidecars {
    pub images: Vec<SidecarImage>,
    pub stop: SidecarStop,
}

impl Sidecars {
    fn image(&self, image: &str) -> Result<&SidecarImage, String> {
        self.images
            .iter()
            .find(|known| known.image == image)
            .ok_or_else(|| format!("the scenario has no process for sidecar image {image}"))
    }
}

/// One running sidecar.
pub struct Sidecar {
    pub name: String,
    pub addr: SocketAddr,
    pid: u32,
    /// The exit code, and when the process ended.
    exit: watch::Receiver<Option<(i32, Instant)>>,
}

impl Sidecar {
    /// Starts `image` and returns once it accepts connections.
    pub async fn start(
        name: &str,
        image: &str,
        sidecars: &Sidecars,
        dir: &Path,
    ) -> Result<Sidecar, String> {
        let image = sidecars.image(image)?;
        std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
        let addr = crate::free_loopback_address().map_err(|err| err.to_string())?;
        let log = std::fs::File::create(dir.join("output.log")).map_err(|err| err.to_string())?;
        let mut child = (image.launch)(addr, dir)
            .stdout(Stdio::from(log.try_clone().map_err(|err| err.to_string())?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| format!("sidecar {name}: {err}"))?;
        let pid = child.id().expect("a running child has a pid");
        let (exited, exit) = watch::channel(None);
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let code = match child.wait().await {
                Ok(status) => status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                Err(_) => -1,
            };
            let _ = exited.send(Some((code, Instant::now())));
        });
        let sidecar = Sidecar {
            name: name.to_owned(),
            addr,
            pid,
            exit,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sidecar.answers().await {
            if sidecar.exited().is_some() || Instant::now() > deadline {
                return Err(format!(
                    "sidecar {name} did not listen on {addr}; see {}",
                    dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(sidecar)
    }

    /// Whether it accepts a connection now.
    pub async fn answers(&self) -> bool {
        let connect = TcpStream::connect(self.addr);
        matches!(
            tokio::time::timeout(Duration::from_millis(200), connect).await,
            Ok(Ok(_))
        )
    }

    pub fn exited(&self) -> Option<(i32, Instant)> {
        *self.exit.borrow()
    }

    /// Waits until the process has exited: its exit code and when (`None` if its watcher
    /// is gone).
    pub async fn exit(&self) -> Option<(i32, Instant)> {
        let mut exit = self.exit.clone();
        exit.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|code| *code)
    }

    /// [`Self::exit`], unless `deadline` passes first.
    pub async fn exit_by(&self, deadline: Instant) -> Option<(i32, Instant)> {
        tokio::time::timeout_at(deadline, self.exit())
            .await
            .ok()
            .flatten()
    }

    pub fn signal(&self, signal: i32) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe { libc::kill(self.pid as i32, signal) };
        }
    }
}

/// An nginx that answers every request with 200: a sidecar with a port and the way nginx
/// ends (SIGTERM is its fast shutdown: it stops listening at once).
pub fn nginx(image: &str) -> SidecarImage {
    let launch: Launch = Arc::new(|addr: SocketAddr, dir: &Path| {
        let conf = dir.join("nginx.conf");
        let path = dir.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {path}/nginx.pid;\n\
             error_log {path}/error.log warn;\nevents {{ worker_connections 64; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {path}/body;\n    \
             proxy_temp_path {path}/proxy;\n    server {{\n        listen {addr};\n        \
             location / {{ return 200 \"ok\\n\"; }}\n    }}\n}}\n"
        );
        std::fs::write(&conf, config).expect("the sidecar's directory is writable");
        let mut command = Command::new(crate::chart::tool("nginx"));
        command.arg("-p").arg(dir).arg("-c").arg(&conf);
        command
    });
    SidecarImage {
        image: image.to_owned(),
        launch,
    }
}
