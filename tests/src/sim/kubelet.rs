//! One pod as the kubelet runs it: its native sidecars first, then the process with the
//! spec's environment, the probes on the spec's schedule, and on deletion the preStop hook,
//! SIGTERM, the sidecars' stop once the service has exited, and SIGKILL when the grace period
//! (counted from deletion, preStop included) runs out.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::http1::{self, Request};
use tokio::{process::Command, sync::watch, time::Instant};

use super::{
    network::Endpoints,
    pod_template::{PodIdentity, PodTemplate, PreStop, Probe},
    sidecar::{Sidecar, SidecarStop, Sidecars},
    timeline::{Happening, Timeline},
};

/// The kubelet's minimum time between SIGTERM and SIGKILL when preStop used up the grace period.
const MINIMUM_GRACE_AFTER_PRE_STOP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodStatus {
    pub started: bool,
    pub ready: bool,
    pub ready_since: Option<Instant>,
    pub deleted_at: Option<Instant>,
    pub exit: Option<Exit>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// The exit code, or 128 + the signal that ended the process.
    pub code: i32,
    pub sigkilled: bool,
    pub at: Instant,
}

/// What runs each container a pod spec names: the service's binary and the sidecars' images.
#[derive(Debug, Clone)]
pub struct Images {
    pub service: std::path::PathBuf,
    pub sidecars: Sidecars,
}

/// A pod's sidecars, in start order, and when they stop.
struct RunningSidecars {
    running: Vec<Sidecar>,
    stop: SidecarStop,
}

pub struct Pod {
    pub name: String,
    pub revision: u32,
    /// The loopback port standing for each container port.
    pub host_ports: BTreeMap<u16, u16>,
    template: Arc<PodTemplate>,
    status: watch::Sender<PodStatus>,
    pid: u32,
    sidecars: RunningSidecars,
    timeline: Arc<Timeline>,
    endpoints: Arc<Endpoints>,
    last_metrics: Mutex<Option<(Instant, String)>>,
    liveness_failures: Mutex<u32>,
    /// Set when the simulation ends and kills what still runs: not a Kubernetes event.
    torn_down: std::sync::atomic::AtomicBool,
}

impl Pod {
    /// Starts the sidecars, then the container and its probes; the pod joins the endpoints
    /// once ready.
    pub async fn start(
        images: &Images,
        template: Arc<PodTemplate>,
        identity: &PodIdentity,
        revision: u32,
        log_dir: &Path,
        timeline: Arc<Timeline>,
        endpoints: Arc<Endpoints>,
    ) -> Result<Arc<Pod>, String> {
        let mut sidecars = Vec::new();
        for spec in &template.sidecars {
            let dir = log_dir.join(format!("{}-{}", identity.name, spec.name));
            let sidecar = Sidecar::start(&spec.name, &spec.image, &images.sidecars, &dir).await?;
            let what = Happening::SidecarStarted {
                name: spec.name.clone(),
            };
            timeline.record(&identity.name, what);
            sidecars.push(sidecar);
        }
        let sidecars = RunningSidecars {
            running: sidecars,
            stop: images.sidecars.stop,
        };
        Self::start_container(
            &images.service,
            template,
            sidecars,
            identity,
            revision,
            log_dir,
            timeline,
            endpoints,
        )
        .map_err(|err| format!("{}: {err}", identity.name))
    }

    /// The service's container, once its sidecars run: `start`'s arguments, passed through.
    #[allow(clippy::too_many_arguments)]
    fn start_container(
        binary: &Path,
        template: Arc<PodTemplate>,
        sidecars: RunningSidecars,
        identity: &PodIdentity,
        revision: u32,
        log_dir: &Path,
        timeline: Arc<Timeline>,
        endpoints: Arc<Endpoints>,
    ) -> std::io::Result<Arc<Pod>> {
        let host_ports: BTreeMap<u16, u16> = template
            .ports
            .values()
            .map(|&port| Ok((port, crate::free_loopback_address()?.port())))
            .collect::<std::io::Result<_>>()?;
        let env = template.env_for(identity, &host_ports);
        let log = std::fs::File::create(log_dir.join(format!("{}.log", identity.name)))?;
        let mut child = Command::new(binary)
            .env_clear()
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone()?))
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().expect("a running child has a pid");
        let stdout = child.stdout.take().expect("stdout is piped");
        let pod = Arc::new(Pod {
            name: identity.name.clone(),
            revision,
            host_ports,
            template,
            status: watch::Sender::new(PodStatus::default()),
            pid,
            sidecars,
            timeline,
            endpoints,
            last_metrics: Mutex::new(None),
            liveness_failures: Mutex::new(0),
            torn_down: Default::default(),
        });
        pod.timeline.record(&pod.name, Happening::ContainerStarted);
        tokio::spawn(follow_logs(stdout, log, pod.clone()));

        let waiting = pod.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .map(|status| {
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
                })
                .unwrap_or(-1);
            let at = Instant::now();
            // On the timeline before anyone waiting for the exit acts on it (the sidecars).
            let what = if waiting.torn_down.load(std::sync::atomic::Ordering::Relaxed) {
                Happening::StoppedAtTheEnd
            } else {
                Happening::Exited { code }
            };
            waiting
                .timeline
                .record_at(at.into_std(), &waiting.name, what);
            waiting.status.send_modify(|state| {
                let sigkilled = state.exit.as_ref().is_some_and(|exit| exit.sigkilled);
                state.exit = Some(Exit {
                    code,
                    sigkilled,
                    at,
                });
                state.ready = false;
            });
            waiting.publish();
        });
        for index in 0..pod.sidecars.running.len() {
            tokio::spawn(pod.clone().record_sidecar_exit(index));
        }
        tokio::spawn(pod.clone().probe());
        Ok(pod)
    }

    pub fn status(&self) -> PodStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<PodStatus> {
        self.status.subscribe()
    }

    pub fn is_terminating(&self) -> bool {
        self.status.borrow().deleted_at.is_some()
    }

    /// Ready continuously for at least minReadySeconds, and not terminating.
    pub fn is_available(&self, now: Instant) -> bool {
        let status = self.status.borrow();
        status.deleted_at.is_none()
            && status.exit.is_none()
            && status
                .ready_since
                .is_some_and(|since| now >= since + self.template.min_ready)
    }

    pub fn liveness_failures(&self) -> u32 {
        *self.liveness_failures.lock().unwrap()
    }

    /// The last `/metrics` text scraped from the port named `port_name`, and when.
    pub fn last_metrics(&self) -> Option<(Instant, String)> {
        self.last_metrics.lock().unwrap().clone()
    }

    fn host_addr(&self, container_port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.host_ports[&container_port]))
    }

    /// Tells the endpoints controller what this pod is now.
    fn publish(&self) {
        let status = self.status.borrow().clone();
        let ready = status.ready && status.deleted_at.is_none() && status.exit.is_none();
        let health = self
            .template
            .readiness
            .as_ref()
            .map(|probe| self.host_addr(probe.port));
        if let Some(&http) = self.template.ports.get("http") {
            self.endpoints
                .publish(&self.name, self.host_addr(http), health, ready);
        }
    }

    fn exited(&self) -> bool {
        self.status.borrow().exit.is_some()
    }

    /// Startup probe until it passes, then liveness and readiness for the pod's whole life.
    async fn probe(self: Arc<Self>) {
        if let Some(startup) = self.template.startup.clone() {
            tokio::time::sleep(startup.initial_delay).await;
            let mut failures = 0;
            loop {
                if self.exited() {
                    return;
                }
                if self.check(&startup).await {
                    break;
                }
                failures += 1;
                if failures >= startup.failure_threshold && !self.is_terminating() {
                    self.timeline
                        .record(&self.name, Happening::StartupProbeFailed);
                    failures = 0;
                }
                tokio::time::sleep(startup.period).await;
            }
        }
        self.status.send_modify(|status| status.started = true);
        self.timeline.record(&self.name, Happening::Started);
        if let Some(liveness) = self.template.liveness.clone() {
            tokio::spawn(self.clone().liveness(liveness));
        }
        match self.template.readiness.clone() {
            Some(readiness) => self.readiness(readiness).await,
            None => self.set_ready(true),
        }
    }

    async fn liveness(self: Arc<Self>, probe: Probe) {
        tokio::time::sleep(probe.initial_delay).await;
        let mut failures = 0;
        while !self.exited() {
            // Once the pod is terminating, the kubelet ignores liveness results.
            if !self.check(&probe).await && !self.is_terminating() {
                failures += 1;
                if failures >= probe.failure_threshold {
                    *self.liveness_failures.lock().unwrap() += 1;
                    self.timeline
                        .record(&self.name, Happening::LivenessProbeFailed);
                    failures = 0;
                }
            } else {
                failures = 0;
            }
            tokio::time::sleep(probe.period).await;
        }
    }

    /// Readiness is still probed while terminating, as the kubelet does.
    async fn readiness(self: Arc<Self>, probe: Probe) {
        tokio::time::sleep(probe.initial_delay).await;
        let (mut successes, mut failures) = (0, 0);
        while !self.exited() {
            if self.check(&probe).await {
                successes += 1;
                failures = 0;
                if successes >= probe.success_threshold {
                    self.set_ready(true);
                }
            } else {
                failures += 1;
                successes = 0;
                if failures >= probe.failure_threshold {
                    self.set_ready(false);
                }
            }
            tokio::time::sleep(probe.period).await;
        }
    }

    fn set_ready(&self, ready: bool) {
        let changed = self.status.send_if_modified(|status| {
            if status.ready == ready {
                return false;
            }
            status.ready = ready;
            status.ready_since = ready.then(Instant::now);
            true
        });
        if changed {
            let what = if ready {
                Happening::Ready
            } else {
                Happening::NotReady
            };
            self.timeline.record(&self.name, what);
            self.publish();
        }
    }

    async fn check(&self, probe: &Probe) -> bool {
        matches!(
            http_get(self.host_addr(probe.port), &probe.path, probe.timeout).await,
            Ok((200..=399, _))
        )
    }

    /// Scrapes `path` on the container port `port` every `period` until the process exits.
    pub fn scrape_metrics(self: &Arc<Self>, port: u16, path: &str, period: Duration) {
        let (pod, path) = (self.clone(), path.to_owned());
        tokio::spawn(async move {
            while !pod.exited() {
                if let Ok((200, body)) =
                    http_get(pod.host_addr(port), &path, Duration::from_secs(1)).await
                {
                    *pod.last_metrics.lock().unwrap() = Some((Instant::now(), body));
                }
                tokio::time::sleep(period).await;
            }
        });
    }

    /// Deletes the pod: endpoints first, then preStop, SIGTERM, and SIGKILL at the deadline.
    pub fn delete(self: &Arc<Self>) {
        let deleted_at = Instant::now();
        self.status
            .send_modify(|status| status.deleted_at = Some(deleted_at));
        self.timeline.record(&self.name, Happening::Deleted);
        self.publish();
        tokio::spawn(self.clone().terminate(deleted_at));
    }

    async fn terminate(self: Arc<Self>, deleted_at: Instant) {
        let grace_deadline = deleted_at + self.template.grace;
        tokio::spawn(self.clone().watch_sidecars());
        self.run_pre_stop(grace_deadline).await;
        if !self.exited() {
            if self.sidecars.stop == SidecarStop::WithTheService {
                for sidecar in &self.sidecars.running {
                    self.stop_sidecar(sidecar);
                }
            }
            self.stop_service(grace_deadline).await;
        }
        // Last started, first stopped, each in what is left of the grace period.
        for sidecar in self.sidecars.running.iter().rev() {
            if sidecar.exited().is_some() {
                continue;
            }
            self.stop_sidecar(sidecar);
            if sidecar.exit_by(grace_deadline).await.is_none() {
                sidecar.signal(libc::SIGKILL);
                let name = sidecar.name.clone();
                self.timeline
                    .record(&self.name, Happening::SidecarSigkill { name });
            }
        }
    }

    async fn run_pre_stop(&self, grace_deadline: Instant) {
        match self.template.pre_stop.clone() {
            PreStop::None => {}
            PreStop::Sleep(duration) => {
                let seconds = duration.as_secs();
                self.timeline
                    .record(&self.name, Happening::PreStopSleep { seconds });
                let _ = tokio::time::timeout_at(grace_deadline, tokio::time::sleep(duration)).await;
            }
            PreStop::HttpGet { path, port } => {
                let what = Happening::PreStopGet { path: path.clone() };
                self.timeline.record(&self.name, what);
                let hook = http_get(self.host_addr(port), &path, self.template.grace);
                let _ = tokio::time::timeout_at(grace_deadline, hook).await;
            }
        }
    }

    /// SIGTERM, then SIGKILL if the process outlives the grace period.
    async fn stop_service(&self, grace_deadline: Instant) {
        self.signal(libc::SIGTERM);
        self.timeline.record(&self.name, Happening::Sigterm);
        let left = grace_deadline.saturating_duration_since(Instant::now());
        let mut status = self.subscribe();
        let exited = tokio::time::timeout(
            left.max(MINIMUM_GRACE_AFTER_PRE_STOP),
            status.wait_for(|status| status.exit.is_some()),
        )
        .await;
        if exited.is_err() {
            self.status.send_modify(|status| {
                status.exit = Some(Exit {
                    code: 137,
                    sigkilled: true,
                    at: Instant::now(),
                });
            });
            self.signal(libc::SIGKILL);
            self.timeline.record(&self.name, Happening::Sigkill);
        }
    }

    async fn record_sidecar_exit(self: Arc<Self>, index: usize) {
        let sidecar = &self.sidecars.running[index];
        if let Some((code, at)) = sidecar.exit().await
            && !self.torn_down.load(std::sync::atomic::Ordering::Relaxed)
        {
            let name = sidecar.name.clone();
            let exited = Happening::SidecarExited { name, code };
            self.timeline.record_at(at.into_std(), &self.name, exited);
        }
    }

    fn stop_sidecar(&self, sidecar: &Sidecar) {
        sidecar.signal(libc::SIGTERM);
        let name = sidecar.name.clone();
        self.timeline
            .record(&self.name, Happening::SidecarSigterm { name });
    }

    /// While the service runs after the deletion, notes each sidecar that stops answering:
    /// what the service may need during its drain (a proxy, a collector) is gone.
    async fn watch_sidecars(self: Arc<Self>) {
        let mut down = vec![false; self.sidecars.running.len()];
        while !self.exited() {
            for (index, sidecar) in self.sidecars.running.iter().enumerate() {
                if !down[index] && !sidecar.answers().await && !self.exited() {
                    down[index] = true;
                    let name = sidecar.name.clone();
                    self.timeline
                        .record(&self.name, Happening::SidecarDownBeforeTheService { name });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.pid as i32, signal) };
    }

    /// Ends the processes at once; for tearing the simulation down.
    pub fn kill(&self) {
        self.torn_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if !self.exited() {
            self.signal(libc::SIGKILL);
        }
        for sidecar in &self.sidecars.running {
            sidecar.signal(libc::SIGKILL);
        }
    }
}

/// Keeps the container's log and, once the pod is deleted, puts every line the service
/// logs on the timeline as it is: its own story of the shutdown, whatever its wording.
async fn follow_logs(stdout: tokio::process::ChildStdout, log: std::fs::File, pod: Arc<Pod>) {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let mut log = std::io::BufWriter::new(log);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = writeln!(log, "{line}");
        if !pod.is_terminating() {
            continue;
        }
        if let Some(what) = service_log(&line) {
            pod.timeline.record(&pod.name, what);
        }
    }
    let _ = log.flush();
}

/// A JSON log line as a timeline event: its message, then its own fields.
fn service_log(line: &str) -> Option<Happening> {
    let serde_json::Value::Object(mut entry) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let message = entry.remove("message")?.as_str()?.to_owned();
    for bookkeeping in ["timestamp", "level", "target", "span", "spans"] {
        entry.remove(bookkeeping);
    }
    let fields: Vec<String> = entry
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    Some(Happening::ServiceLog {
        message,
        fields: fields.join(" "),
    })
}

/// One HTTP/1.1 GET on a fresh connection, as the kubelet's probes and hooks do.
async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let probe = Request {
        user_agent: "kube-probe/sim",
        ..Request::get(path)
    };
    let response = http1::once(addr, probe, timeout).await?;
    Ok((response.status, response.text()))
}
