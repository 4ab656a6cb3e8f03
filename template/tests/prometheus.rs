//! A real Prometheus scrapes the real binary: the end of each shutdown, clean or cut, must be
//! in Prometheus once the process has exited. Needs `prometheus` on the PATH (or its path in
//! `PROMETHEUS`); without it the test says so and passes, except under CI, where it fails
//! (Debian and Ubuntu: `apt-get install prometheus`).

mod support;

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use support::{PATIENCE, Service, TempDir, get, outside_tool};

/// The labels a PodMonitor gives every series: the release is `web` in namespace `shop`.
const NAMESPACE: &str = "shop";
const SERVICE: &str = "web";

/// Short, so that the test is quick; the linger follows the Helm chart's rule for it.
const SCRAPE_INTERVAL_SECONDS: u64 = 3;
const LINGER: &str = "5s"; // the interval + 2 s, as the chart derives it

#[test]
fn prometheus_holds_the_final_counters_of_a_clean_and_a_cut_shutdown() {
    let Some(binary) = outside_tool("prometheus", "PROMETHEUS") else {
        return;
    };
    let settings = [
        ("SHUTDOWN_DRAIN_DELAY", "1s"),
        ("SHUTDOWN_TIMEOUT", "2s"),
        ("SHUTDOWN_CLEANUP_TIMEOUT", "1s"),
        ("SHUTDOWN_METRICS_LINGER", LINGER),
    ];
    let mut clean = Service::start(&settings);
    let mut cut = Service::start(&settings);
    let prometheus = Prometheus::start(&binary, &[("clean", clean.admin), ("cut", cut.admin)]);
    prometheus.wait_until_scraped("clean");
    prometheus.wait_until_scraped("cut");
    for path in ["/", "/missing", "/slow?ms=50"] {
        get(clean.http, path);
    }
    // Rates need two samples of the requests' series.
    prometheus.wait_until(
        r#"count_over_time(http_requests_total{job="clean",route="/"}[1m])"#,
        2.0,
    );

    let slow = cut.request_in_flight("/slow?ms=20000");
    clean.signal(libc::SIGTERM);
    cut.signal(libc::SIGTERM);
    assert_eq!(clean.wait_exit(), 0);
    assert_eq!(cut.wait_exit(), 3, "the deadline cut the slow request");
    assert!(
        slow.join().unwrap().is_err(),
        "the cut request got no answer"
    );
    let exited_at = SystemTime::now();

    // Asked only after both processes are gone: what Prometheus holds is all there is.
    let held = |query: &str| prometheus.value(query);
    let over_the_test = |series: &str| ["max_over_time(", series, "[10m])"].concat();
    assert_eq!(
        held(&over_the_test(
            r#"shutdowns_total{job="clean",outcome="clean"}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        held(&over_the_test(
            r#"shutdowns_total{job="clean",outcome="deadline_exceeded"}"#
        )),
        Some(0.0)
    );
    assert_eq!(
        held(&over_the_test(
            r#"shutdowns_total{job="cut",outcome="deadline_exceeded"}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        held(&over_the_test(r#"shutdown_requests_cut_total{job="cut"}"#)),
        Some(1.0)
    );
    // What alerts use: an increase over the window sees the whole shutdown.
    assert_eq!(
        held(r#"increase(shutdown_requests_cut_total{job="cut"}[10m]) > 0"#).map(f64::round),
        Some(1.0)
    );
    assert_eq!(
        held(&over_the_test(
            r#"lifecycle_state{job="clean",state="stopped"}"#
        )),
        Some(1.0)
    );

    // Every query of the dashboard parses and has data, as the pods' last scrapes left it.
    for (panel, query) in dashboard_queries() {
        let samples = prometheus.samples_at(&query, exited_at);
        assert!(!samples.is_empty(), "panel {panel:?} has no data: {query}");
    }
}

/// Every query of the chart's Grafana dashboard, as Grafana sends it for this test's release.
fn dashboard_queries() -> Vec<(String, String)> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/dashboards/service.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let queries: Vec<(String, String)> = panels
        .iter()
        .flat_map(|panel| {
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |target| {
                let query = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$namespace", NAMESPACE)
                    .replace("$service", SERVICE)
                    .replace("$pod", ".*")
                    .replace("$__rate_interval", "1m");
                (panel["title"].as_str().unwrap().to_owned(), query)
            })
        })
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    queries
}

/// A Prometheus server on loopback with its own config and storage, stopped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    fn start(binary: &Path, targets: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let jobs: String = targets
            .iter()
            .map(|(job, addr)| {
                format!(
                    "  - job_name: {job}\n    static_configs:\n      - targets: [\"{addr}\"]\n        \
                     labels:\n          namespace: {NAMESPACE}\n          service: {SERVICE}\n          \
                     pod: {SERVICE}-{job}\n"
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s\n  scrape_timeout: 2s\nscrape_configs:\n{jobs}"
        );
        let config_file = dir.0.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = free_loopback_addr();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    fn wait_until_scraped(&self, job: &str) {
        self.wait_until(&["up{job=\"", job, "\"}"].concat(), 1.0);
    }

    /// Waits until `query` has one sample of at least `least`.
    fn wait_until(&self, query: &str, least: f64) {
        let started = Instant::now();
        while !self.try_value(query).is_some_and(|value| value >= least) {
            assert!(
                started.elapsed() < PATIENCE,
                "never true: {query} >= {least}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of an instant query that returns one sample, `None` when it returns none.
    fn value(&self, query: &str) -> Option<f64> {
        let answer = get(self.addr, &query_path(query));
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        let answer: Value = serde_json::from_str(&answer.body).unwrap();
        let samples = answer["data"]["result"].as_array().expect("a vector");
        assert!(samples.len() <= 1, "{query}: {samples:?}");
        let sample = samples.first()?;
        Some(sample["value"][1].as_str().unwrap().parse().unwrap())
    }

    /// The samples of an instant query evaluated at `time`.
    fn samples_at(&self, query: &str, time: SystemTime) -> Vec<Value> {
        let seconds = time.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let answer = get(
            self.addr,
            &format!("{}&time={seconds:.3}", query_path(query)),
        );
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        let answer: Value = serde_json::from_str(&answer.body).unwrap();
        answer["data"]["result"]
            .as_array()
            .expect("a vector")
            .clone()
    }

    /// [`Prometheus::value`], while Prometheus may not be listening yet.
    fn try_value(&self, query: &str) -> Option<f64> {
        let mut connection = support::Connection::open(self.addr).ok()?;
        let answer = connection.get(&query_path(query)).ok()?;
        let answer: Value = serde_json::from_str(&answer.body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query_path(query: &str) -> String {
    let encoded: String = query
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("/api/v1/query?query={encoded}")
}

fn free_loopback_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
}
