//! Drives the real binary: spawned with its own environment, ports learned from its JSON
//! logs, real signals, and raw HTTP/1.1 over real sockets on 127.0.0.1, so that tests
//! control exactly when a connection is idle, busy or closed.

#![allow(dead_code)] // each test file uses a different part of this module

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{
        fd::{AsRawFd, RawFd},
        unix::process::CommandExt,
    },
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The service binary Cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_{{project-name}}")
}

/// Upper bound for anything a test waits on; reaching it fails the test instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Service {
    child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<(Mutex<Vec<Value>>, Condvar)>,
}

impl Service {
    /// Starts the service on ephemeral ports and waits until it reports ready.
    pub fn start(env: &[(&str, &str)]) -> Service {
        Service::spawn(Command::new(binary()), env)
    }

    /// Starts the service with its soft open-file limit lowered to `soft`, as some hosts and
    /// container runtimes start processes.
    pub fn start_with_open_files(env: &[(&str, &str)], soft: u64) -> Service {
        Service::start_with_open_file_limits(env, soft, None)
    }

    /// Starts the service with its soft open-file limit at `soft` and, if given, its hard one
    /// at `hard`, which the service cannot raise.
    pub fn start_with_open_file_limits(
        env: &[(&str, &str)],
        soft: u64,
        hard: Option<u64>,
    ) -> Service {
        let mut command = Command::new(binary());
        // SAFETY: between fork and exec only getrlimit(2) and setrlimit(2) run, both
        // async-signal-safe, on a struct on this stack.
        unsafe {
            command.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limit.rlim_max = hard.unwrap_or(limit.rlim_max).min(limit.rlim_max);
                limit.rlim_cur = soft.min(limit.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Service::spawn(command, env)
    }

    /// Starts the service the way systemd socket activation does: `sockets` become fds 3,
    /// 4, ..., described by `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`. The pid is only
    /// known after the fork, so a shell sets it and then becomes the service with `exec`.
    pub fn start_activated(env: &[(&str, &str)], sockets: &[&TcpListener], names: &str) -> Service {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", r#"export LISTEN_PID=$$; exec "$0""#, binary()]);
        let passed: Vec<RawFd> = sockets.iter().map(|socket| socket.as_raw_fd()).collect();
        // SAFETY: between fork and exec only fcntl(2) and dup2(2) run, both async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // Out of the way first, so that no socket is overwritten before it is moved.
                let mut high = Vec::with_capacity(passed.len());
                for &fd in &passed {
                    match libc::fcntl(fd, libc::F_DUPFD, 100) {
                        -1 => return Err(std::io::Error::last_os_error()),
                        copy => high.push(copy),
                    }
                }
                for (target, fd) in (3..).zip(high) {
                    if libc::dup2(fd, target) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let count = sockets.len().to_string();
        let mut env = env.to_vec();
        env.extend([("LISTEN_FDS", count.as_str()), ("LISTEN_FDNAMES", names)]);
        Service::spawn(command, &env)
    }

    fn spawn(mut command: Command, env: &[(&str, &str)]) -> Service {
        command
            .env_clear()
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("the service binary starts");

        let logs: Arc<(Mutex<Vec<Value>>, Condvar)> = Arc::default();
        let stdout = child.stdout.take().expect("stdout is piped");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.0.lock().unwrap().push(value);
                sink.1.notify_all();
            }
        });

        let mut service = Service {
            child,
            http: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            logs,
        };
        let listening = service.wait_for_log("listening");
        service.http = listening["http_addr"].as_str().unwrap().parse().unwrap();
        service.admin = listening["admin_addr"].as_str().unwrap().parse().unwrap();
        service.wait_for_log_where(|line| line["state"] == "ready");
        service
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let result = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(result, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits for the process to exit and returns its exit code (or 128 + signal).
    pub fn wait_exit(&mut self) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(started.elapsed() < PATIENCE, "the service did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn logs(&self) -> Vec<Value> {
        self.logs.0.lock().unwrap().clone()
    }

    /// Waits for a log line with this message and returns it.
    pub fn wait_for_log(&self, message: &str) -> Value {
        self.wait_for_log_where(|line| line["message"] == message)
    }

    pub fn wait_for_log_where(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let (lines, arrived) = &*self.logs;
        let deadline = Instant::now() + PATIENCE;
        let mut lines = lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|line| matches(line)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "log line not seen; logs so far: {lines:#?}"
            );
            lines = arrived.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Position of the first log line with this message, waiting for it to arrive: the
    /// process may have written it before the reader thread has seen it.
    pub fn log_position(&self, message: &str) -> usize {
        self.wait_for_log(message);
        self.logs()
            .iter()
            .position(|line| line["message"] == message)
            .expect("the line just seen")
    }

    /// The value of one unlabelled (or fully labelled) sample from `/metrics`.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = get(self.admin, "/metrics").body;
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{sample} not in /metrics:\n{text}"))
    }

    /// Starts `GET path` on the application port from its own thread and returns once the
    /// service counts it in flight.
    pub fn request_in_flight(
        &self,
        path: &str,
    ) -> std::thread::JoinHandle<std::io::Result<Response>> {
        let request = get_in_background(self.http, path);
        self.wait_until("the request is in flight", |service| {
            service.metric("http_requests_in_flight") == 1.0
        });
        request
    }

    /// Polls until `condition` holds; fails the test after [`PATIENCE`].
    pub fn wait_until(&self, what: &str, mut condition: impl FnMut(&Service) -> bool) {
        let started = Instant::now();
        while !condition(self) {
            assert!(
                started.elapsed() < PATIENCE,
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn asks_to_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE)?;
        stream.set_read_timeout(Some(PATIENCE))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.send("GET", path, &[], b"")
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let stream = self.stream.get_mut();
        stream.write_all(request.as_bytes())?;
        stream.write_all(body)?;
        self.read_response()
    }

    /// Sends the body in chunks, without declaring its length.
    pub fn send_chunked(
        &mut self,
        method: &str,
        path: &str,
        chunks: &[&[u8]],
    ) -> std::io::Result<Response> {
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
        for chunk in chunks {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        self.stream.get_mut().write_all(&request)?;
        self.read_response()
    }

    /// Writes raw bytes, for requests that are deliberately incomplete.
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.get_mut().write_all(bytes)
    }

    /// True once the server has closed this connection (a read sees end of file or reset).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }

    /// Reads one response, e.g. after [`Self::write_raw`].
    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let mut response = Response {
            status,
            headers,
            body: String::new(),
        };
        let body = if response
            .header("transfer-encoding")
            .is_some_and(|value| value.eq_ignore_ascii_case("chunked"))
        {
            self.read_chunked()?
        } else {
            let length = response
                .header("content-length")
                .map_or(0, |value| value.parse().unwrap_or(0));
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body)?;
            body
        };
        response.body = String::from_utf8_lossy(&body).into_owned();
        Ok(response)
    }

    fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            self.stream.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            self.stream.read_exact(&mut chunk)?;
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

/// A listening socket on an ephemeral loopback port, like the ones systemd would pass.
pub fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0")
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Connection::open(addr)
        .and_then(|mut connection| connection.get(path))
        .unwrap_or_else(|err| panic!("GET {path} on {addr}: {err}"))
}

/// Runs `GET path` on its own thread, for requests that must be in flight during a test.
pub fn get_in_background(
    addr: SocketAddr,
    path: &str,
) -> std::thread::JoinHandle<std::io::Result<Response>> {
    let path = path.to_owned();
    std::thread::spawn(move || Connection::open(addr)?.get(&path))
}

/// An outside tool the test needs (`prometheus`, `promtool`, `helm`): its path from the
/// environment variable `variable`, or `name` on the PATH. `None`, with a note, when it is
/// missing; under CI (`CI` set) a missing tool fails the test instead.
pub fn outside_tool(name: &str, variable: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os(variable)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| name.into());
    let found = Command::new(&path)
        .arg(if name == "helm" {
            "version"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is not installed, and CI needs this test to run: install it or set {variable} \
         to its path"
    );
    eprintln!("{name} not found: skipping (install it, or set {variable}, to run this test)");
    None
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
