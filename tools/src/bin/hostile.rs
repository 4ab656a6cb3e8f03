//! Figures, printed and never asserted, for what hostile and broken clients do to a freshly
//! generated service (release build, the chart's shutdown values), each case on a process of
//! its own in a memory cgroup limited to the chart's 128 MiB, as a Pod would run it. Real
//! sockets on 127.0.0.1, `slowhttptest` for the slowloris, every attack bounded in count and
//! time. The tests (`tests/hostile.rs` and others in the generated project) assert the
//! behaviour; this prints how much.
//!
//! `cargo run --release -p kube-service-template-tools --bin hostile` (as root: it creates
//! cgroups)

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use kube_service_template_tests::{
    cgroup::MemoryCgroup,
    generate, http1,
    service::{RunningService, raise_open_files},
    shared_target_dir,
};

const MEMORY_LIMIT: u64 = 128 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
/// The chart's shutdown values, without the Kubernetes integration.
const CHART_ENV: [(&str, &str); 5] = [
    ("PRESTOP_DELAY", "5s"),
    ("SHUTDOWN_DRAIN_DELAY", "5s"),
    ("SHUTDOWN_TIMEOUT", "20s"),
    ("SHUTDOWN_CLEANUP_TIMEOUT", "5s"),
    ("KUBE_INTEGRATION", "false"),
];

fn main() {
    // The flood needs more sockets than a soft limit of 1024 allows this process.
    raise_open_files(0);
    let project = generate("hostile-service", &[])
        .unwrap_or_else(|refused| panic!("cargo generate refused:\n{}", refused.output));
    project.cargo_ok(&["build", "--release"]);
    let binary = shared_target_dir().join("release/hostile-service");

    println!("Each case on its own process, in a memory cgroup limited to 128 MiB\n");
    println!("| What a client did | What happened |");
    println!("|---|---|");
    let cases: [(&str, Case); 13] = [
        ("one `GET /prestop` on the admin port", prestop),
        ("50,000 requests with invented methods", invented_methods),
        (
            "`POST /events` with 1 MiB bodies, 8 clients, 10 s",
            large_events,
        ),
        (
            "400 uploads just under the body limit, then stalled 10 s",
            stalled_uploads,
        ),
        ("100 connections that never send a byte", silent_connections),
        (
            "a connection flood past the open-file limit (1024)",
            connection_flood,
        ),
        (
            "silence, or slow headers, on the admin port",
            admin_slow_clients,
        ),
        (
            "an HTTP/2 connection left idle after one request (IDLE_TIMEOUT=5s)",
            idle_http2,
        ),
        (
            "an HTTP/2 client that ignores GOAWAY and pings while the pod shuts down",
            deaf_http2_at_shutdown,
        ),
        (
            "slowloris (slowhttptest, 300 connections) while the pod shuts down",
            slowloris_at_shutdown,
        ),
        (
            "200 clients that half-close after their request",
            half_close,
        ),
        ("`REQUEST_TIMEOUT` of 10^19 s", absurd_duration),
        ("SIGHUP, SIGQUIT, SIGUSR1", signals),
    ];
    for (what, case) in cases {
        println!("| {what} | {} |", case(&binary));
    }
}

/// One attack on a fresh service; returns what happened.
type Case = fn(&Path) -> String;

/// A service under the chart's limit; dropped, both go away.
struct Pod {
    service: RunningService,
    cgroup: MemoryCgroup,
}

impl Pod {
    fn start(binary: &Path, env: &[(&str, &str)], open_files: Option<u64>) -> Pod {
        let name = format!("kst-hostile-{}", std::process::id());
        let cgroup = MemoryCgroup::create(&name, MEMORY_LIMIT)
            .unwrap_or_else(|why| panic!("a memory cgroup is needed (run as root): {why}"));
        let mut command = Command::new(binary);
        cgroup.enter(&mut command);
        if let Some(limit) = open_files {
            limit_open_files(&mut command, limit);
        }
        let env: Vec<(&str, &str)> = CHART_ENV.iter().chain(env).copied().collect();
        let service = RunningService::start_command(command, &env, |_| {});
        cgroup.reset_peak();
        Pod { service, cgroup }
    }

    fn get(&self, admin: bool, path: &str) -> u16 {
        let addr = if admin {
            self.service.admin
        } else {
            self.service.http
        };
        http1::blocking_get(addr, path, Duration::from_secs(10)).map_or(0, |answer| answer.status)
    }

    fn metrics(&self) -> String {
        http1::blocking_get(self.service.admin, "/metrics", Duration::from_secs(10))
            .map(|answer| answer.text())
            .unwrap_or_default()
    }

    fn metric(&self, name: &str) -> f64 {
        sample(&self.metrics(), name)
    }

    /// Peak memory and OOM kills, as the Pod's limit sees them.
    fn memory(&self) -> String {
        format!(
            "peak {:.0} MiB of 128, {} OOM kill(s)",
            self.cgroup.peak_bytes() as f64 / MIB,
            self.cgroup.oom_kills()
        )
    }
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn prestop(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], None);
    let called = Instant::now();
    let answered = pod.get(true, "/prestop");
    let mut out_for = None;
    while called.elapsed() < Duration::from_secs(60) {
        if pod.get(true, "/readyz") == 200 {
            out_for = Some(called.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    format!(
        "answered {answered}; `/readyz` 503 for {}, then 200; prestop_hooks_unfollowed_total {}",
        out_for.map_or("over 60 s".into(), |took| format!(
            "{:.1} s",
            took.as_secs_f64()
        )),
        pod.metric("prestop_hooks_unfollowed_total")
    )
}

fn invented_methods(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], None);
    let addr = pod.service.http;
    std::thread::scope(|scope| {
        for client in 0..8u64 {
            scope.spawn(move || {
                let mut stream = connect(addr);
                for n in 0..50_000 / 8 {
                    let token = (client * 1_000_003 + n).wrapping_mul(2_654_435_761);
                    let request = format!("M{token:X} / HTTP/1.1\r\nHost: a\r\n\r\n");
                    if stream.write_all(request.as_bytes()).is_err()
                        || read_status(&mut stream) == 0
                    {
                        stream = connect(addr);
                    }
                }
            });
        }
    });
    let metrics = pod.metrics();
    let series = metrics
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .count();
    format!(
        "{series} `http_requests_total` series; one scrape {} KiB; {}",
        metrics.len() / 1024,
        pod.memory()
    )
}

fn large_events(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], None);
    let addr = pod.service.http;
    let body = vec![b'e'; 1024 * 1024 - 1024];
    let statuses: Vec<u16> =
        std::thread::scope(|scope| {
            let clients: Vec<_> =
                (0..8)
                    .map(|_| {
                        let body = &body;
                        scope.spawn(move || {
                    let started = Instant::now();
                    let mut statuses = Vec::new();
                    while started.elapsed() < Duration::from_secs(10) {
                        let mut stream = connect(addr);
                        let head = format!(
                            "POST /events HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let sent = stream.write_all(head.as_bytes()).and(stream.write_all(body));
                        statuses.push(if sent.is_ok() { read_status(&mut stream) } else { 0 });
                    }
                    statuses
                })
                    })
                    .collect();
            clients
                .into_iter()
                .flat_map(|client| client.join().unwrap())
                .collect()
        });
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    format!(
        "{} accepted (202), {} refused (503: buffer full or request memory), {} other; {}",
        count(202),
        count(503),
        statuses.len() - count(202) - count(503),
        pod.memory()
    )
}

fn stalled_uploads(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], None);
    let addr = pod.service.http;
    let declared = 1024 * 1024 - 1024;
    let head = format!("POST /events HTTP/1.1\r\nHost: a\r\nContent-Length: {declared}\r\n\r\n");
    let part = vec![b'u'; declared - 1];
    let mut uploads: Vec<TcpStream> = (0..400).map(|_| connect(addr)).collect();
    for upload in &mut uploads {
        let _ = upload
            .write_all(head.as_bytes())
            .and(upload.set_write_timeout(Some(Duration::from_millis(200))))
            .and(upload.write_all(&part));
    }
    let in_flight = pod.metric("http_requests_in_flight");
    std::thread::sleep(Duration::from_secs(10));
    let shed = pod.metric("http_requests_shed_total");
    let memory = pod.memory();
    drop(uploads);
    format!(
        "{in_flight} held at once, {shed} answered 503 at once; {memory}; `GET /` after: {}",
        pod.get(false, "/")
    )
}

fn silent_connections(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], None);
    let opened = Instant::now();
    let silent: Vec<TcpStream> = (0..100).map(|_| connect(pod.service.http)).collect();
    let closed_after = silent
        .into_iter()
        .map(|stream| time_to_close(stream, opened))
        .max()
        .unwrap();
    format!("all closed by the service within {closed_after}")
}

fn connection_flood(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], Some(1024));
    let flood: Vec<TcpStream> = (0..1100)
        .map_while(|_| TcpStream::connect(pod.service.http).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let probes: Vec<String> = ["/livez", "/readyz"]
        .iter()
        .map(|path| format!("{path} {}", pod.get(true, path)))
        .collect();
    let metrics = pod.metrics();
    let summary = format!(
        "{} connections made; {} open of a limit of {}, limit reached {} time(s), \
         accept failures {}; during the flood {}",
        flood.len(),
        sample(&metrics, "http_connections_open"),
        sample(&metrics, "http_connections_limit"),
        sample(&metrics, "http_connections_limited_total"),
        sample(&metrics, "http_accept_failures_total"),
        probes.join(", ")
    );
    drop(flood);
    summary
}

fn admin_slow_clients(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], None);
    let opened = Instant::now();
    let silent = connect(pod.service.admin);
    let mut trickling = connect(pod.service.admin);
    let _ = trickling.write_all(b"GET /livez HTTP/1.1\r\n");
    format!(
        "silent closed after {}, slow headers closed after {}",
        time_to_close(silent, opened),
        time_to_close(trickling, opened)
    )
}

fn idle_http2(binary: &Path) -> String {
    let pod = Pod::start(binary, &[("IDLE_TIMEOUT", "5s")], None);
    let stream = http2_get(pod.service.http);
    let opened = Instant::now();
    format!(
        "GOAWAY and closed after {} (the client acknowledges nothing)",
        time_to_close(stream, opened)
    )
}

fn deaf_http2_at_shutdown(binary: &Path) -> String {
    let mut pod = Pod::start(binary, &[], None);
    let _deaf = http2_get(pod.service.http);
    std::thread::sleep(Duration::from_millis(500));
    pod.service.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = pod.service.wait();
    format!(
        "exit {} after {:.1} s (drain delay 5 s, deadline 20 s)",
        status.code().unwrap_or(-1),
        signalled.elapsed().as_secs_f64()
    )
}

/// An HTTP/2 connection with one `GET /`, from a client that never reads or acknowledges:
/// the client preface, empty SETTINGS, and HEADERS on stream 1 (HPACK: :method GET,
/// :scheme http, :path /, then :authority "a" as a literal).
fn http2_get(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    let block = [0x82, 0x86, 0x84, 0x41, 1, b'a'];
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    frames.extend_from_slice(&block);
    stream.write_all(&frames).unwrap();
    stream
}

fn slowloris_at_shutdown(binary: &Path) -> String {
    let mut pod = Pod::start(binary, &[], None);
    let url = format!("http://{}/", pod.service.http);
    let mut attack = Command::new("slowhttptest")
        .args([
            "-H", "-c", "300", "-r", "300", "-i", "3", "-x", "24", "-p", "3", "-l", "40",
        ])
        .args(["-u", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("slowhttptest runs (scripts/install.sh bench installs it)");
    std::thread::sleep(Duration::from_secs(4));
    let open = pod.metric("http_connections_open");
    pod.service.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = pod.service.wait();
    let took = signalled.elapsed();
    let _ = attack.kill();
    let _ = attack.wait();
    format!(
        "{open} slow connections open at SIGTERM; exit {} after {:.1} s (drain delay 5 s, deadline 20 s)",
        status.code().unwrap_or(-1),
        took.as_secs_f64()
    )
}

fn half_close(binary: &Path) -> String {
    let pod = Pod::start(binary, &[], None);
    let addr = pod.service.http;
    let answered = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..200)
            .map(|_| {
                scope.spawn(move || {
                    let mut stream = connect(addr);
                    stream
                        .write_all(b"GET /slow?ms=50 HTTP/1.1\r\nHost: a\r\n\r\n")
                        .and(stream.shutdown(Shutdown::Write))
                        .is_ok()
                        && read_status(&mut stream) == 200
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|client| client.join().unwrap())
            .filter(|answered| *answered)
            .count()
    });
    format!("{answered} of 200 answered 200")
}

fn absurd_duration(binary: &Path) -> String {
    let output = Command::new(binary)
        .env_clear()
        .env("REQUEST_TIMEOUT", "10000000000000000000s")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    format!(
        "exit {} at start: {}",
        output.status.code().unwrap_or(-1),
        stderr.lines().next().unwrap_or("").trim()
    )
}

fn signals(binary: &Path) -> String {
    [
        ("SIGHUP", libc::SIGHUP),
        ("SIGQUIT", libc::SIGQUIT),
        ("SIGUSR1", libc::SIGUSR1),
    ]
    .iter()
    .map(|(name, signal)| {
        let mut pod = Pod::start(binary, &[("SHUTDOWN_DRAIN_DELAY", "1s")], None);
        pod.service.signal(*signal);
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        if *signal == libc::SIGUSR1 {
            return format!("{name}: ignored, still serving ({})", pod.get(false, "/"));
        }
        let status = pod.service.wait();
        format!(
            "{name}: drained, exit {} after {:.1} s",
            status.code().unwrap_or(-1),
            sent.elapsed().as_secs_f64()
        )
    })
    .collect::<Vec<_>>()
    .join("; ")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting to the service");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// The status of the next response, or 0 when none came; the body is left unread (the
/// requests here get short answers that fit the socket's buffer).
fn read_status(stream: &mut TcpStream) -> u16 {
    let mut head = [0u8; 12];
    match stream.read_exact(&mut head) {
        Ok(()) => {
            // Drain what else arrived, so that the next status line is read from its start.
            let mut rest = [0u8; 4096];
            stream.set_nonblocking(true).unwrap();
            std::thread::sleep(Duration::from_millis(1));
            while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
            stream.set_nonblocking(false).unwrap();
            std::str::from_utf8(&head[9..12])
                .ok()
                .and_then(|code| code.parse().ok())
                .unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// How long after `since` the service closed `stream` (reading whatever it sent first).
fn time_to_close(mut stream: TcpStream, since: Instant) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                return "over 90 s (still open)".into();
            }
            Err(_) => break,
        }
    }
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

fn limit_open_files(command: &mut Command, limit: u64) {
    // SAFETY: between fork and exec only setrlimit(2) runs, on a struct on this stack.
    unsafe {
        command.pre_exec(move || {
            let both = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &both) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
