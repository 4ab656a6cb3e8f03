//! The Deployment controller: creates the replicas, and rolls them to a new revision
//! honouring maxSurge, maxUnavailable and minReadySeconds.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    kubelet::{Images, Pod},
    network::Endpoints,
    pod_template::{PodIdentity, PodTemplate},
    timeline::{Happening, Timeline},
};

/// Called on every pod created, e.g. to scrape its metrics.
type OnPod = Box<dyn Fn(&Arc<Pod>) + Send + Sync>;

/// How often the controller looks at its pods.
const RESYNC: Duration = Duration::from_millis(100);

pub struct Deployment {
    name: String,
    images: Images,
    template: Arc<PodTemplate>,
    log_dir: PathBuf,
    timeline: Arc<Timeline>,
    endpoints: Arc<Endpoints>,
    pods: Mutex<Vec<Arc<Pod>>>,
    created: Mutex<u32>,
    on_pod: OnPod,
}

impl Deployment {
    pub fn new(
        name: &str,
        images: Images,
        template: PodTemplate,
        log_dir: &Path,
        timeline: Arc<Timeline>,
        endpoints: Arc<Endpoints>,
        on_pod: impl Fn(&Arc<Pod>) + Send + Sync + 'static,
    ) -> Deployment {
        Deployment {
            name: name.to_owned(),
            images,
            template: Arc::new(template),
            log_dir: log_dir.to_path_buf(),
            timeline,
            endpoints,
            pods: Mutex::new(Vec::new()),
            created: Mutex::new(0),
            on_pod: Box::new(on_pod),
        }
    }

    pub fn template(&self) -> &PodTemplate {
        &self.template
    }

    /// Every pod ever created, in order.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.lock().unwrap().clone()
    }

    fn live(&self, revision: u32) -> Vec<Arc<Pod>> {
        self.pods()
            .into_iter()
            .filter(|pod| {
                pod.revision == revision && !pod.is_terminating() && pod.status().exit.is_none()
            })
            .collect()
    }

    async fn create(&self, revision: u32) -> Arc<Pod> {
        let index = {
            let mut created = self.created.lock().unwrap();
            *created += 1;
            *created
        };
        let identity = PodIdentity {
            name: format!("{}-r{revision}-{index}", self.name),
            namespace: "default".into(),
            node: format!("node-{}", index % 3),
        };
        let pod = Pod::start(
            &self.images,
            self.template.clone(),
            &identity,
            revision,
            &self.log_dir,
            self.timeline.clone(),
            self.endpoints.clone(),
        )
        .await
        .unwrap_or_else(|err| panic!("a pod starts: {err}"));
        (self.on_pod)(&pod);
        self.pods.lock().unwrap().push(pod.clone());
        pod
    }

    /// Creates the replicas of `revision` and waits until all are available.
    pub async fn scale_up(&self, revision: u32, limit: Duration) -> Result<(), String> {
        for _ in 0..self.template.replicas {
            self.create(revision).await;
        }
        let deadline = Instant::now() + limit;
        while self
            .live(revision)
            .iter()
            .filter(|pod| pod.is_available(Instant::now()))
            .count()
            < self.template.replicas as usize
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "revision {revision} not available within {limit:?}"
                ));
            }
            tokio::time::sleep(RESYNC).await;
        }
        let replicas = self.template.replicas;
        self.timeline
            .record("deployment", Happening::ReplicasAvailable { replicas });
        Ok(())
    }

    /// Rolls from revision `from` to `to`; returns once no pod of `from` is left running.
    pub async fn roll(&self, from: u32, to: u32, limit: Duration) -> Result<(), String> {
        let replicas = self.template.replicas as usize;
        let most = replicas + self.template.max_surge as usize;
        let fewest_available = replicas.saturating_sub(self.template.max_unavailable as usize);
        let update = Happening::RollingUpdate {
            from,
            to,
            max_surge: self.template.max_surge,
            max_unavailable: self.template.max_unavailable,
            min_ready_seconds: self.template.min_ready.as_secs(),
        };
        self.timeline.record("deployment", update);
        let deadline = Instant::now() + limit;
        loop {
            let now = Instant::now();
            let (old, new) = (self.live(from), self.live(to));
            if old.is_empty() && new.iter().filter(|pod| pod.is_available(now)).count() == replicas
            {
                break;
            }
            if now > deadline {
                return Err(format!("the rollout did not finish within {limit:?}"));
            }
            // Scale the new ReplicaSet up within the surge allowance.
            let mut total = old.len() + new.len();
            let mut new_count = new.len();
            while new_count < replicas && total < most {
                self.create(to).await;
                new_count += 1;
                total += 1;
            }
            // Scale the old one down as far as availability allows, unready pods first.
            let available = old
                .iter()
                .chain(&new)
                .filter(|pod| pod.is_available(now))
                .count();
            let mut removable = available.saturating_sub(fewest_available);
            let mut old = old;
            old.sort_by_key(|pod| pod.is_available(now));
            for pod in old {
                if !pod.is_available(now) || removable > 0 {
                    if pod.is_available(now) {
                        removable -= 1;
                    }
                    pod.delete();
                }
            }
            tokio::time::sleep(RESYNC).await;
        }
        self.timeline
            .record("deployment", Happening::RolloutComplete { to });
        Ok(())
    }

    /// Waits until every deleted pod's process has ended.
    pub async fn wait_terminated(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while self
            .pods()
            .iter()
            .any(|pod| pod.is_terminating() && pod.status().exit.is_none())
        {
            if Instant::now() > deadline {
                return Err(format!("terminating pods still running after {limit:?}"));
            }
            tokio::time::sleep(RESYNC).await;
        }
        Ok(())
    }

    /// Ends every process at once.
    pub fn tear_down(&self) {
        for pod in self.pods() {
            pod.kill();
        }
    }
}
