//! Figures, printed and never asserted, for a freshly generated service beside two peers
//! built in the same run with the same release profile (`tools/peers/`): a bare axum hello
//! world, and "the usual stack", axum with the layers a team would add by hand. Each is
//! built twice, for glibc and as the static musl binary an image ships. Instructions per
//! `GET /` under callgrind are the stable figure; wrk rates and CPU per request, with the
//! machine's load printed each round, sit beside them. Then idle connections, the time
//! from SIGTERM to exit, and rollout failures in the simulator with the chart's shutdown
//! versus the common pattern.
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
const MUSL: &str = "x86_64-unknown-linux-musl";

/// One line of the table: bare axum, the usual stack, the generated service.
struct Row {
    label: &'static str,
    figures: [String; 3],
}

impl Row {
    fn new(
        label: &'static str,
        bare: impl Into<String>,
        usual: impl Into<String>,
        ours: impl Into<String>,
    ) -> Row {
        Row {
            label,
            figures: [bare.into(), usual.into(), ours.into()],
        }
    }

    /// A figure of the generated service alone.
    fn ours(label: &'static str, ours: impl Into<String>) -> Row {
        Row::new(label, "", "", ours)
    }
}

/// A binary built for glibc and as a static musl binary.
struct Builds {
    glibc: PathBuf,
    musl: PathBuf,
}

fn main() {
    let clean_build = !std::env::args().any(|arg| arg == "--no-clean-build");
    let rollout = !std::env::args().any(|arg| arg == "--no-rollout");
    let project = generate("bench-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));
    // Default features (the `kube` integration on), then without any optional feature.
    let builds = clean_build.then(|| {
        (
            clean_release_build(&project, &[]),
            clean_release_build(&project, &["--no-default-features"]),
        )
    });
    let ours = build_ours(&project);
    let bare = build_peer("bare-axum");
    let usual = build_peer("usual-stack");

    let mut rows = Vec::new();
    if let Some(((with_kube, _), (without, without_size))) = builds {
        rows.push(Row::ours(
            "clean release build (deps downloaded)",
            format!("{:.1} s", with_kube.as_secs_f64()),
        ));
        rows.push(Row::ours(
            "  same without the kube feature",
            format!("{:.1} s", without.as_secs_f64()),
        ));
        rows.push(Row::ours(
            "stripped binary without the kube feature, glibc",
            mebibytes(without_size),
        ));
    }
    let size = |path: &Path| mebibytes(file_size(path));
    rows.push(Row::new(
        "stripped binary, glibc",
        size(&bare.glibc),
        size(&usual.glibc),
        size(&ours.glibc),
    ));
    rows.push(Row::new(
        "  static musl (what the image ships)",
        size(&bare.musl),
        size(&usual.musl),
        size(&ours.musl),
    ));

    let (bare_ready, bare_rss) = ready_and_rss(|| Peer::start(&bare.glibc));
    let (usual_ready, usual_rss) = ready_and_rss(|| Peer::start(&usual.glibc));
    let (ours_ready, ours_rss) = ready_and_rss(|| start_ours(&ours.glibc, "1s"));
    rows.push(Row::new(
        "exec to ready (median)",
        millis(bare_ready),
        millis(usual_ready),
        millis(ours_ready),
    ));
    rows.push(Row::new(
        "idle RSS (median)",
        mebibytes(bare_rss * 1024),
        mebibytes(usual_rss * 1024),
        mebibytes(ours_rss * 1024),
    ));

    let counted = |binary: &Path, kind: Kind| instructions_per_request(binary, kind);
    rows.push(Row::new(
        "instructions per GET /, glibc (callgrind)",
        counted(&bare.glibc, Kind::Peer),
        counted(&usual.glibc, Kind::Peer),
        counted(&ours.glibc, Kind::Ours(LOGS)),
    ));
    rows.push(Row::new(
        "  static musl (what the image ships)",
        counted(&bare.musl, Kind::Peer),
        counted(&usual.musl, Kind::Peer),
        counted(&ours.musl, Kind::Ours(LOGS)),
    ));
    rows.push(Row::ours(
        "  glibc, without request spans (RUST_LOG)",
        counted(&ours.glibc, Kind::Ours(LOGS_WITHOUT_SPANS)),
    ));

    let mut rounds = Vec::new();
    for round in 1..=LOAD_ROUNDS {
        eprintln!(
            "wrk round {round} of {LOAD_ROUNDS}: load average {}",
            load_average()
        );
        let bare_load = serving(Peer::start(&bare.glibc), load);
        let usual_load = serving(Peer::start(&usual.glibc), load);
        let ours_load = serving(start_ours(&ours.glibc, "1s"), load);
        // The per-request `request` span's share of the cost.
        let spanless_load = serving(
            start_ours_logging(&ours.glibc, "1s", LOGS_WITHOUT_SPANS),
            load,
        );
        rounds.push([bare_load, usual_load, ours_load, spanless_load]);
    }
    let middle = |value: &dyn Fn(&[Load; 4]) -> f64| {
        median(&mut rounds.iter().map(value).collect::<Vec<_>>())
    };
    // A row of the three servers' medians of `value`.
    let row = |label, format: &dyn Fn(f64) -> String, value: &dyn Fn(&Load) -> f64| Row {
        label,
        figures: [0, 1, 2].map(|server| format(middle(&|round| value(&round[server])))),
    };
    rows.push(row(
        "GET / requests per second (wrk, median)",
        &|rate| format!("{rate:.0}"),
        &|load| load.rate,
    ));
    rows.push(row(
        "GET / p99 latency (wrk, median)",
        &|ms| format!("{ms:.2} ms"),
        &|load| load.p99_ms,
    ));
    rows.push(row(
        "  server CPU per request (user + system)",
        &|us| format!("{us:.2} µs"),
        &|load| load.cpu_us_per_request,
    ));
    let share = |server: usize| {
        format!(
            "{:.0} %",
            middle(&|round| 100.0 * round[server].rate / round[0].rate)
        )
    };
    rows.push(Row::new(
        "  throughput vs bare axum",
        "100 %",
        share(1),
        share(2),
    ));
    rows.push(Row::ours(
        "  same without request spans (RUST_LOG)",
        share(3),
    ));

    // Each process holds one socket per connection: raise the open-file limit first.
    raise_open_files(2 * POOLED_CONNECTIONS as u64 + 1024);
    let pooled = |server: &dyn Server| format!("{:.2} % of a core", pooled_cpu(server));
    rows.push(Row::new(
        "CPU with 10,000 idle keep-alive connections",
        pooled(&Peer::start(&bare.glibc)),
        pooled(&Peer::start(&usual.glibc)),
        pooled(&start_ours(&ours.glibc, "1s")),
    ));
    let exit_with_pool = |start: &dyn Fn() -> Box<dyn Server>| {
        millis(median(
            &mut (0..RUNS)
                .map(|_| sigterm_to_exit(start(), POOLED_CONNECTIONS, 0))
                .collect::<Vec<_>>(),
        ))
    };
    rows.push(Row::new(
        "SIGTERM to exit, 10,000 idle keep-alive (no drain delay)",
        "- (SIGTERM kills it)",
        exit_with_pool(&|| Box::new(Peer::start(&usual.glibc))),
        exit_with_pool(&|| Box::new(start_ours(&ours.glibc, "0s"))),
    ));

    let drain = format!("{}ms", DRAIN_DELAY.as_millis());
    let exit = |idle: usize, slow: usize| {
        millis(median(
            &mut (0..RUNS)
                .map(|_| sigterm_to_exit(Box::new(start_ours(&ours.glibc, &drain)), idle, slow))
                .collect::<Vec<_>>(),
        ))
    };
    rows.push(Row::ours(
        "SIGTERM to exit, idle (drain delay 1 s)",
        exit(0, 0),
    ));
    rows.push(Row::ours(
        "  with 50 idle keep-alive connections",
        exit(IDLE_CONNECTIONS, 0),
    ));
    rows.push(Row::ours(
        "  with 10 requests of 2 s in flight",
        exit(0, SLOW_REQUESTS),
    ));
    rows.push(Row::ours(
        "  with 10,000 idle keep-alive connections",
        exit(POOLED_CONNECTIONS, 0),
    ));

    if rollout {
        let (ours_failed, baseline_failed) = rollout_failures(&project, &ours.glibc);
        rows.push(Row::ours(
            "rollout of 3 replicas at 500 req/s: failed",
            ours_failed,
        ));
        rows.push(Row::ours(
            "  same, no preStop and no drain delay",
            baseline_failed,
        ));
    }

    print_table(&rows);
    println!(
        "\n{RUNS} runs where repeated; {LOAD_ROUNDS} rounds of wrk -t2 -c64 -d{WRK_SECONDS}s on loopback \
         (shares are medians of each round's ratio), on this machine's {} cores. The \
         generated service's static build uses mimalloc (runtime/src/lib.rs); the peers' use \
         musl's allocator.",
        cores()
    );
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<58} {:>20} {:>20} {:>20}",
        "", "bare axum", "the usual stack", "generated service"
    );
    println!("{:-<121}", "");
    for row in rows {
        let [bare, usual, ours] = &row.figures;
        println!("{:<58} {bare:>20} {usual:>20} {ours:>20}", row.label);
    }
}

/// The load average over the last minute, five and fifteen minutes.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
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

/// A server under measurement: ours or a peer.
trait Server {
    fn addr(&self) -> SocketAddr;
    fn pid(&self) -> u32;
    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(&mut self);
}

impl Server for RunningService {
    fn addr(&self) -> SocketAddr {
        self.http
    }

    fn pid(&self) -> u32 {
        RunningService::pid(self)
    }

    fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
        assert!(self.wait().success(), "the service exits cleanly");
    }
}

/// Runs `measure` on a server started for it alone.
fn serving<S: Server, T>(server: S, measure: impl FnOnce(SocketAddr, u32) -> T) -> T {
    measure(server.addr(), server.pid())
}

/// Median time to ready and RSS (KiB) right after, over [`RUNS`] starts.
fn ready_and_rss<S: Server>(start: impl Fn() -> S) -> (Duration, u64) {
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
/// requests in flight (`/slow` is the generated service's own route).
fn sigterm_to_exit(mut server: Box<dyn Server>, idle: usize, slow: usize) -> Duration {
    let clients = client_runtime();
    let http = server.addr();
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
    server.terminate();
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
fn pooled_cpu(server: &dyn Server) -> f64 {
    let connections = idle_connections(server.addr(), POOLED_CONNECTIONS);
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_time(server.pid());
    std::thread::sleep(POOLED_WINDOW);
    let used = cpu_time(server.pid()) - before;
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

/// How a binary under callgrind is configured.
#[derive(Clone, Copy)]
enum Kind {
    /// A peer, which listens on `ADDR`.
    Peer,
    /// The generated service, logging as `RUST_LOG` says.
    Ours(&'static str),
}

/// User-space instructions the server executes per `GET /`, counted by callgrind: a figure
/// that stays put where wrk's rates move with whatever else the machine runs. Startup is not
/// counted: the counters are zeroed once the server answers.
fn instructions_per_request(binary: &Path, kind: Kind) -> String {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return "- (valgrind missing)".into();
    }
    let addr = free_loopback_address().unwrap();
    let admin = free_loopback_address().unwrap().to_string();
    let env: Vec<(&str, String)> = match kind {
        Kind::Peer => vec![("ADDR", addr.to_string()), ("RUST_LOG", "info".into())],
        Kind::Ours(rust_log) => vec![
            ("HTTP_ADDR", addr.to_string()),
            ("ADMIN_ADDR", admin),
            ("RUST_LOG", rust_log.into()),
        ],
    };
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
        .envs(env.iter().map(|(name, value)| (name, value)))
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

/// The generated service, for glibc and static musl, in the shared target directory.
fn build_ours(project: &Generated) -> Builds {
    project.cargo_ok(&["build", "--release"]);
    project.cargo_ok(&["build", "--release", "--target", MUSL]);
    Builds {
        glibc: shared_target_dir().join("release/bench-service"),
        musl: shared_target_dir().join(MUSL).join("release/bench-service"),
    }
}

/// A peer from `tools/peers/`, for glibc and static musl, with its own locked dependencies.
fn build_peer(name: &str) -> Builds {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name);
    for target in [None, Some(MUSL)] {
        let status = Command::new("cargo")
            .current_dir(&dir)
            .args(["build", "--release", "--quiet", "--locked"])
            .args(target.map(|target| format!("--target={target}")))
            .env("CARGO_TARGET_DIR", shared_target_dir())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "{name} builds");
    }
    Builds {
        glibc: shared_target_dir().join("release").join(name),
        musl: shared_target_dir().join(MUSL).join("release").join(name),
    }
}

/// A peer started on a free loopback address: it prints `ready` once listening.
struct Peer {
    child: Child,
    addr: SocketAddr,
}

impl Peer {
    fn start(binary: &Path) -> Peer {
        let addr = free_loopback_address().unwrap();
        let mut child = Command::new(binary)
            .env("ADDR", addr.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the peer starts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready", "{} is ready", binary.display());
        Peer { child, addr }
    }
}

impl Server for Peer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let result = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(result, 0, "kill({}, SIGTERM)", self.child.id());
        assert!(
            self.child.wait().unwrap().success(),
            "the peer exits cleanly"
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a clean release build takes, and the size of the stripped binary it makes.
fn clean_release_build(project: &Generated, flags: &[&str]) -> (Duration, u64) {
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
    let size = file_size(&target.join("release/bench-service"));
    let _ = std::fs::remove_dir_all(&target);
    (took, size)
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
