//! A generated service's binary, running: started on ephemeral loopback ports with JSON
//! logs, its addresses learned from those logs.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

pub struct RunningService {
    child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl RunningService {
    /// Starts `binary` with `env` (over a clean environment) and returns once it reports
    /// ready. `on_log` sees every JSON log line, from any thread.
    pub fn start(
        binary: &Path,
        env: &[(&str, &str)],
        on_log: impl FnMut(&Value) + Send + 'static,
    ) -> RunningService {
        RunningService::start_command(Command::new(binary), env, on_log)
    }

    /// Like [`Self::start`], with a command prepared by the caller (limits, a cgroup).
    pub fn start_command(
        mut command: Command,
        env: &[(&str, &str)],
        mut on_log: impl FnMut(&Value) + Send + 'static,
    ) -> RunningService {
        let program = command.get_program().to_owned();
        let mut child = command
            .env_clear()
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", program.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready, addresses) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            let mut listening = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(log) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if log["message"] == "listening" {
                    let address = |key: &str| log[key].as_str().unwrap().parse().unwrap();
                    listening = Some((address("http_addr"), address("admin_addr")));
                }
                if log["state"] == "ready"
                    && let (Some(sender), Some(pair)) = (ready.take(), listening)
                {
                    let _ = sender.send(pair);
                }
                on_log(&log);
            }
        });
        let (http, admin) = addresses
            .recv_timeout(Duration::from_secs(30))
            .expect("the service reports ready within 30 s");
        RunningService { child, http, admin }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let result = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(result, 0, "kill({}, {signal})", self.child.id());
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("waiting for the service")
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

/// Resident set size of a process in KiB, from /proc; 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for RunningService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's open-file limit, which the processes it starts inherit: the soft
/// limit to the hard one, and both to `wanted` where allowed (as root).
pub fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) and setrlimit(2) on structs on this stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let most = wanted.max(limit.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: most,
            rlim_max: most,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
