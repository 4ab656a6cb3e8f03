//! Figures, printed and never asserted, for a freshly generated service beside a bare axum
//! hello world built in the same run: throughput and p99 on `GET /` (wrk), idle RSS,
//! stripped binary size, time from exec to ready, CPU with 10,000 idle keep-alive
//! connections, time from SIGTERM to exit, and rollout failures in the simulator with the
//! chart's shutdown versus the common pattern.
//!
//! `scripts/bench.sh [--no-clean-build] [--no-rollout]`

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kube_service_template_tests::{
    Generated,
    chart::{Chart, Render},
    free_loopback_address, generate,
    http1::{self, Connection, Request},
    scratch,
    service::{RunningService, raise_open_files, rss_kib},
    shared_target_dir,
    sim::{self, Scenario, baseline, load::ClientKind},
};

const RUNS: usize = 5;
/// Rounds of wrk runs, each round running every server once, one after the other, so that
/// a noisy spell on this shared machine hits all of them alike.
const LOAD_ROUNDS: usize = 5;
const DRAIN_DELAY: Duration = Duration::from_secs(1);
const IDLE_CONNECTIONS: usize = 50;
/// A proxy's upstream pool: connections that sent one request and wait for the next.
const POOLED_CONNECTIONS: usize = 10_000;
/// How long their CPU is measured, once they are open.
const POOLED_WINDOW: Duration = Duration::from_secs(10);
const SLOW_REQUESTS: usize = 10;
const SLOW: Duration = Duration::from_secs(2);
const WRK_SECONDS: u32 = 10;

struct Row {
    label: &'static str,
    ours: String,
    bare: String,
}

fn main() {
    let clean_build = !std::env::args().any(|arg| arg == "--no-clean-build");
    let rollout = !std::env::args().any(|arg| arg == "--no-rollout");
    let project = generate("bench-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));
    // Default features (the `kube` integration on), then without any optional feature.
    let builds = clean_build.then(|| {
        (
            time_clean_release_build(&project, &[]),
            time_clean_release_build(&project, &["--no-default-features"]),
        )
    });
    project.cargo_ok(&["build", "--release"]);
    let ours = shared_target_dir().join("release").join("bench-service");
    let bare = build_bare_axum();

    let mut rows = Vec::new();
    if let Some((with_kube, without)) = builds {
        rows.push(Row {
            label: "clean release build (deps downloaded)",
            ours: format!("{:.1} s", with_kube.as_secs_f64()),
            bare: "-".into(),
        });
        rows.push(Row {
            label: "  same without the kube feature",
            ours: format!("{:.1} s", without.as_secs_f64()),
            bare: "-".into(),
        });
    }
    rows.push(Row {
        label: "stripped release binary",
        ours: mebibytes(file_size(&ours)),
        bare: mebibytes(file_size(&bare)),
    });

    let (ours_ready, ours_rss) = ready_and_rss(|| start_ours(&ours, "1s"));
    let (bare_ready, bare_rss) = ready_and_rss(|| BareAxum::start(&bare));
    rows.push(Row {
        label: "exec to ready (median)",
        ours: millis(ours_ready),
        bare: millis(bare_ready),
    });
    rows.push(Row {
        label: "idle RSS (median)",
        ours: mebibytes(ours_rss * 1024),
        bare: mebibytes(bare_rss * 1024),
    });

    // Both processes hold one socket per connection: raise the open-file limit first.
    raise_open_files(2 * POOLED_CONNECTIONS as u64 + 1024);
    let ours_pooled = {
        let service = start_ours(&ours, "1s");
        pooled_cpu(service.http, service.pid())
    };
    let bare_pooled = {
        let service = BareAxum::start(&bare);
        pooled_cpu(service.addr, service.pid())
    };
    rows.push(Row {
        label: "CPU with 10,000 idle keep-alive connections",
        ours: format!("{ours_pooled:.2} % of a core"),
        bare: format!("{bare_pooled:.2} % of a core"),
    });

    let mut rounds = Vec::new();
    for _ in 0..LOAD_ROUNDS {
        let ours_load = {
            let service = start_ours(&ours, "1s");
            load(service.http, service.pid())
        };
        let bare_load = {
            let service = BareAxum::start(&bare);
            load(service.addr, service.pid())
        };
        // The per-request `request` span is the largest single cost; this shows its share.
        let spanless_load = {
            let service = start_ours_logging(&ours, "1s", LOGS_WITHOUT_SPANS);
            load(service.http, service.pid())
        };
        rounds.push([ours_load, bare_load, spanless_load]);
    }
    let middle = |value: &dyn Fn(&[Load; 3]) -> f64| {
        median(&mut rounds.iter().map(value).collect::<Vec<_>>())
    };
    rows.push(Row {
        label: "GET / requests per second (wrk, median)",
        ours: format!("{:.0}", middle(&|round| round[0].rate)),
        bare: format!("{:.0}", middle(&|round| round[1].rate)),
    });
    rows.push(Row {
        label: "GET / p99 latency (wrk, median)",
        ours: format!("{:.2} ms", middle(&|round| round[0].p99_ms)),
        bare: format!("{:.2} ms", middle(&|round| round[1].p99_ms)),
    });
    rows.push(Row {
        label: "  server CPU per request (user + system)",
        ours: format!("{:.2} µs", middle(&|round| round[0].cpu_us_per_request)),
        bare: format!("{:.2} µs", middle(&|round| round[1].cpu_us_per_request)),
    });
    let share = |variant: usize| middle(&|round| 100.0 * round[variant].rate / round[1].rate);
    rows.push(Row {
        label: "  throughput of ours vs bare axum",
        ours: format!("{:.0} %", share(0)),
        bare: String::new(),
    });
    rows.push(Row {
        label: "  same without request spans (RUST_LOG)",
        ours: format!("{:.0} %", share(2)),
        bare: String::new(),
    });
    let ours_counted = |rust_log| {
        let http = free_loopback_address().unwrap();
        let admin = free_loopback_address().unwrap();
        instructions_per_request(
            &ours,
            &[
                ("HTTP_ADDR", &http.to_string()),
                ("ADMIN_ADDR", &admin.to_string()),
                ("RUST_LOG", rust_log),
            ],
            http,
        )
    };
    let bare_address = free_loopback_address().unwrap();
    rows.push(Row {
        label: "user-space instructions per GET / (callgrind)",
        ours: ours_counted(LOGS),
        bare: instructions_per_request(&bare, &[("ADDR", &bare_address.to_string())], bare_address),
    });
    rows.push(Row {
        label: "  same without request spans (RUST_LOG)",
        ours: ours_counted(LOGS_WITHOUT_SPANS),
        bare: String::new(),
    });

    let idle = median(
        &mut (0..RUNS)
            .map(|_| sigterm_to_exit(&ours, 0, 0))
            .collect::<Vec<_>>(),
    );
    let connections = median(
        &mut (0..RUNS)
            .map(|_| sigterm_to_exit(&ours, IDLE_CONNECTIONS, 0))
            .collect::<Vec<_>>(),
    );
    let slow = median(
        &mut (0..RUNS)
            .map(|_| sigterm_to_exit(&ours, 0, SLOW_REQUESTS))
            .collect::<Vec<_>>(),
    );
    let pooled = median(
        &mut (0..RUNS)
            .map(|_| sigterm_to_exit(&ours, POOLED_CONNECTIONS, 0))
            .collect::<Vec<_>>(),
    );
    let exit_label = "- (SIGTERM kills it)".to_owned();
    rows.push(Row {
        label: "SIGTERM to exit, idle (drain delay 1 s)",
        ours: millis(idle),
        bare: exit_label.clone(),
    });
    rows.push(Row {
        label: "  with 50 idle keep-alive connections",
        ours: millis(connections),
        bare: exit_label.clone(),
    });
    rows.push(Row {
        label: "  with 10 requests of 2 s in flight",
        ours: millis(slow),
        bare: exit_label.clone(),
    });
    rows.push(Row {
        label: "  with 10,000 idle keep-alive connections",
        ours: millis(pooled),
        bare: exit_label,
    });

    if rollout {
        let (ours_failed, baseline_failed) = rollout_failures(&project, &ours);
        rows.push(Row {
            label: "rollout of 3 replicas at 500 req/s: failed",
            ours: ours_failed,
            bare: String::new(),
        });
        rows.push(Row {
            label: "  same, no preStop and no drain delay",
            ours: baseline_failed,
            bare: String::new(),
        });
    }

    println!();
    println!(
        "{:<46} {:>26} {:>22}",
        "", "generated service", "bare axum hello"
    );
    println!("{:-<96}", "");
    for row in rows {
        println!("{:<46} {:>26} {:>22}", row.label, row.ours, row.bare);
    }
    println!(
        "\n{RUNS} runs where repeated; {LOAD_ROUNDS} rounds of wrk -t2 -c64 -d{WRK_SECONDS}s on loopback \
         (shares are medians of each round's ratio), on this machine's {} cores.",
        cores()
    );
}

/// Lifecycle lines stay on in every run: they tell when the service is ready.
const LOGS: &str = "warn,bench_service=info,kube_service_runtime=info";
/// The same without the per-request `request` span.
const LOGS_WITHOUT_SPANS: &str =
    "warn,bench_service=info,kube_service_runtime=info,kube_service_runtime::http::middleware=warn";

fn start_ours(binary: &Path, drain: &str) -> RunningService {
    start_ours_logging(binary, drain, LOGS)
}

fn start_ours_logging(binary: &Path, drain: &str, rust_log: &str) -> RunningService {
    RunningService::start(
        binary,
        &[
            ("SHUTDOWN_DRAIN_DELAY", drain),
            ("SHUTDOWN_TIMEOUT", "20s"),
            ("RUST_LOG", rust_log),
        ],
        |_| {},
    )
}

trait Measured {
    fn pid(&self) -> u32;
}

impl Measured for RunningService {
    fn pid(&self) -> u32 {
        RunningService::pid(self)
    }
}

/// Median time to ready and RSS (KiB) right after, over [`RUNS`] starts.
fn ready_and_rss<S: Measured>(start: impl Fn() -> S) -> (Duration, u64) {
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let service = start();
        ready.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(200));
        rss.push(rss_kib(service.pid()));
    }
    (median(&mut ready), median(&mut rss))
}

/// Time from SIGTERM to exit with `idle` idle keep-alive connections and `slow` slow
/// requests in flight.
fn sigterm_to_exit(binary: &Path, idle: usize, slow: usize) -> Duration {
    let mut service = start_ours(binary, &format!("{}ms", DRAIN_DELAY.as_millis()));
    let clients = client_runtime();
    let http = service.http;
    let connections = idle_connections(http, idle);
    let path = format!("/slow?ms={}", SLOW.as_millis());
    let requests: Vec<_> = (0..slow)
        .map(|_| {
            let path = path.clone();
            clients.spawn(async move {
                http1::once(http, Request::get(&path), Duration::from_secs(30))
                    .await
                    .map(|response| response.status)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    service.signal(libc::SIGTERM);
    assert!(service.wait().success(), "the service exits cleanly");
    let took = signalled.elapsed();
    for request in requests {
        let status = clients.block_on(request).unwrap().unwrap();
        assert_eq!(status, 200, "slow requests finish");
    }
    drop(connections);
    took
}

/// The server's CPU, in percent of one core, while [`POOLED_CONNECTIONS`] keep-alive
/// connections that each sent one request sit idle.
fn pooled_cpu(http: SocketAddr, pid: u32) -> f64 {
    let connections = idle_connections(http, POOLED_CONNECTIONS);
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_time(pid);
    std::thread::sleep(POOLED_WINDOW);
    let used = cpu_time(pid) - before;
    drop(connections);
    100.0 * used.as_secs_f64() / POOLED_WINDOW.as_secs_f64()
}

/// `count` keep-alive connections that each sent one `GET /`, now waiting for the next.
fn idle_connections(http: SocketAddr, count: usize) -> Vec<Connection> {
    client_runtime().block_on(async {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            let mut connection = Connection::open(http).await.unwrap();
            let answer = connection.send(&Request::get("/"), false).await.unwrap();
            assert_eq!(answer.status, 200);
            connections.push(connection);
        }
        connections
    })
}

/// The clients' own runtime: two threads, beside the server under test.
fn client_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a Tokio runtime for the clients")
    })
}

/// Failed requests (standard + strict clients) in a simulated rollout, ours then the baseline.
fn rollout_failures(project: &Generated, binary: &Path) -> (String, String) {
    let deployment = Chart::at(&project.dir.join("helm"))
        .template(&Render::default().set("replicaCount=3"))
        .expect("the chart renders")
        .deployment()
        .clone();
    let mut stripped = deployment.clone();
    baseline::strip_drain(&mut stripped);
    let out = scratch("bench-rollouts");
    let tally = |deployment, name| {
        let report = client_runtime()
            .block_on(sim::rolling_update(
                binary,
                deployment,
                &Scenario::new(name, &out),
            ))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let [standard, strict, fresh] = ClientKind::ALL.map(|client| report.failed(client));
        format!(
            "{} of {} ({standard} standard + {strict} strict + {fresh} fresh)",
            report.failed_total(),
            report.outcomes.len()
        )
    };
    (
        tally(&deployment, "bench chart"),
        tally(&stripped, "bench baseline"),
    )
}

/// Requests counted under callgrind, over a few keep-alive connections.
const COUNTED_CONNECTIONS: usize = 4;
const COUNTED_REQUESTS_EACH: usize = 2_500;

/// User-space instructions the server executes per `GET /`, counted by callgrind: a figure
/// that stays put where wrk's rates move with whatever else the machine runs. Startup is not
/// counted: the counters are zeroed once the server answers.
fn instructions_per_request(binary: &Path, env: &[(&str, &str)], addr: SocketAddr) -> String {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return "- (valgrind missing)".into();
    }
    let dir = scratch("bench-callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("callgrind.out");
    let mut server = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(binary)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("valgrind runs");
    let started = Instant::now();
    while http1::blocking_get(addr, "/", Duration::from_secs(5)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} never answered under callgrind",
            binary.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let control = |option: &str| {
        let status = Command::new("callgrind_control")
            .args([option, &server.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control runs");
        assert!(status.success(), "callgrind_control {option}");
    };
    control("--zero");
    // One OS thread per connection, each sending its requests one after another: the
    // arrival pattern the counts have always been taken with.
    let clients: Vec<_> = (0..COUNTED_CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let client = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a Tokio runtime for one client");
                // The bare request a load generator sends: the counts measure the server.
                let request = Request {
                    user_agent: "",
                    ..Request::get("/")
                };
                client.block_on(async {
                    let mut connection = Connection::open(addr).await.unwrap();
                    for _ in 0..COUNTED_REQUESTS_EACH {
                        let answer = connection.send(&request, false).await.unwrap();
                        assert_eq!(answer.status, 200);
                    }
                });
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a counting client failed");
    }
    control("--dump");
    let _ = server.kill();
    let _ = server.wait();
    // The dump taken above, not the one valgrind writes as the process dies.
    let dump = std::fs::read_to_string(format!("{}.1", out.display())).expect("a callgrind dump");
    let total: f64 = dump
        .lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("a totals line in the callgrind dump");
    let requests = (COUNTED_CONNECTIONS * COUNTED_REQUESTS_EACH) as f64;
    format!("{:.0}", total / requests)
}

/// What one wrk run on `GET /` measured.
struct Load {
    rate: f64,
    p99_ms: f64,
    /// CPU time the server process spent, in user and kernel mode, per request answered.
    cpu_us_per_request: f64,
}

fn load(addr: SocketAddr, pid: u32) -> Load {
    let cpu_before = cpu_time(pid);
    let (rate, p99_ms) = wrk(addr);
    let cpu = cpu_time(pid) - cpu_before;
    Load {
        rate,
        p99_ms,
        cpu_us_per_request: cpu.as_secs_f64() * 1e6 / (rate * f64::from(WRK_SECONDS)),
    }
}

/// User plus system time of a process so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// `wrk` on `GET /`: requests per second and p99 in milliseconds.
fn wrk(addr: SocketAddr) -> (f64, f64) {
    let output = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{WRK_SECONDS}s"),
            "--latency",
            &format!("http://{addr}/"),
        ])
        .output()
        .expect("wrk runs (scripts/install.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    // A rate of error responses is not a rate worth reporting.
    assert!(
        !text.contains("Non-2xx"),
        "GET / answered errors under load:\n{text}"
    );
    let rate = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .map(|value| parse_wrk_duration(value.trim()))
        .unwrap_or_else(|| panic!("no p99 in wrk's output:\n{text}"));
    (rate, p99)
}

fn parse_wrk_duration(value: &str) -> f64 {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => f64::NAN,
    }
}

/// A bare axum hello world, built in this run with the same release profile.
fn build_bare_axum() -> PathBuf {
    let dir = scratch("bench-bare-axum");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"bare-axum\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\naxum = \"0.8\"\ntokio = { version = \"1\", features = [\"full\"] }\n\n\
         [profile.release]\nstrip = true\nlto = \"thin\"\ncodegen-units = 4\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        "#[tokio::main]\nasync fn main() {\n    \
         let listener = tokio::net::TcpListener::bind(std::env::var(\"ADDR\").unwrap()).await.unwrap();\n    \
         println!(\"ready\");\n    \
         let app = axum::Router::new().route(\"/\", axum::routing::get(|| async { \"hello\\n\" }));\n    \
         axum::serve(listener, app).await.unwrap();\n}\n",
    )
    .unwrap();
    let status = Command::new("cargo")
        .current_dir(&dir)
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the bare axum hello world builds");
    shared_target_dir().join("release").join("bare-axum")
}

struct BareAxum {
    child: Child,
    addr: SocketAddr,
}

impl BareAxum {
    fn start(binary: &Path) -> BareAxum {
        let addr = free_loopback_address().unwrap();
        let mut child = Command::new(binary)
            .env("ADDR", addr.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the bare axum binary starts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        BareAxum { child, addr }
    }
}

impl Measured for BareAxum {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BareAxum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn time_clean_release_build(project: &Generated, flags: &[&str]) -> Duration {
    let target = scratch("bench-clean-build");
    let _ = std::fs::remove_dir_all(&target);
    project.cargo_ok(&["fetch"]);
    let started = Instant::now();
    let status = Command::new("cargo")
        .current_dir(&project.dir)
        .args(["build", "--release", "--quiet"])
        .args(flags)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the clean release build succeeds");
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&target);
    took
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn median<T: Copy + PartialOrd>(samples: &mut [T]) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("samples are comparable (no NaN)"));
    samples[samples.len() / 2]
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / 1048576.0)
}
