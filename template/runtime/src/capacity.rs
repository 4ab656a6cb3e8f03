//! How much the service takes on at once, so that memory is bounded by configuration and
//! not by clients: the open application connections, and the bytes the requests being
//! answered hold. Both are derived from the container's memory limit unless set, and the
//! connections also from the open-file limit, keeping file descriptors for the admin port.
//!
//! The memory limit is split: half for connections at their worst (every one holding a
//! full header buffer), a quarter for requests in flight, a quarter for everything else.

use crate::settings::Settings;

/// A connection at its worst: hyper's read buffer full (HTTP/1, [`READ_BUFFER`]) or a
/// partial HTTP/2 header block with its frame and HPACK buffers, plus the task and its
/// bookkeeping.
pub(crate) const CONNECTION_WORST: usize = 80 * 1024;
/// hyper's HTTP/1 read buffer, which holds a request's headers: large enough for any real
/// client's (nginx allows 32 KiB), far below hyper's own 400 KiB.
pub(crate) const READ_BUFFER: usize = 64 * 1024;
/// File descriptors kept for the admin port's probes and scrapes, logs, telemetry and the
/// application's own resources when application connections take all they may.
const FD_RESERVE: u64 = 128;
/// The limit assumed when the container has none (a developer machine, say).
const ASSUMED_MEMORY: u64 = 1024 * 1024 * 1024;

/// How much the service takes on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    pub(crate) connections: usize,
    pub(crate) request_memory: usize,
}

impl Capacity {
    /// From the settings, or derived from the memory and open-file limits found.
    pub(crate) fn of(settings: &Settings) -> Capacity {
        Capacity::derive(settings, memory_limit(), crate::limits::open_files())
    }

    fn derive(settings: &Settings, memory: Option<u64>, open_files: Option<u64>) -> Capacity {
        let memory = memory.unwrap_or(ASSUMED_MEMORY);
        let by_memory = (memory / 2 / CONNECTION_WORST as u64).max(1);
        let by_files = open_files.map_or(u64::MAX, |files| files.saturating_sub(FD_RESERVE));
        let connections = by_memory.min(by_files).max(1);
        let request_memory = (memory / 4).max(settings.request_body_limit as u64);
        Capacity {
            connections: settings
                .max_connections
                .unwrap_or(usize::try_from(connections).unwrap_or(usize::MAX)),
            request_memory: settings
                .request_memory
                .unwrap_or(usize::try_from(request_memory).unwrap_or(usize::MAX)),
        }
    }
}

/// The container's memory limit; `None` when there is none.
fn memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limit_files(&own)
        .iter()
        .find_map(|path| parse_memory_limit(&std::fs::read_to_string(path).ok()?))
}

/// Where the limit may be written: this process's own cgroup, as `/proc/self/cgroup` names
/// it (v2, or v1's memory controller), then the root of the mount, which is the container's
/// own cgroup when the runtime gives it a cgroup namespace.
fn limit_files(proc_self_cgroup: &str) -> Vec<String> {
    let mut files = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            files.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers
            .split(',')
            .any(|controller| controller == "memory")
        {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    files.push("/sys/fs/cgroup/memory.max".into());
    files.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    files
}

/// `max` (v2) and v1's "unlimited" (a page-rounded `i64::MAX`) mean no limit.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < 1 << 62).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    #[test]
    fn the_chart_default_limit_gives_room_for_every_connection_at_its_worst() {
        let capacity = Capacity::derive(&Settings::default(), Some(128 * MI), Some(1 << 20));
        assert_eq!(capacity.connections, 819);
        assert_eq!(capacity.request_memory, 32 * MI as usize);
        let worst = capacity.connections * CONNECTION_WORST + capacity.request_memory;
        assert!(worst as u64 <= 128 * MI * 3 / 4, "{worst}");
    }

    #[test]
    fn file_descriptors_are_kept_for_the_admin_port() {
        let capacity = Capacity::derive(&Settings::default(), Some(1024 * MI), Some(1024));
        assert_eq!(capacity.connections, 1024 - 128);
        let starved = Capacity::derive(&Settings::default(), None, Some(100));
        assert_eq!(starved.connections, 1, "never zero");
    }

    #[test]
    fn settings_win_and_one_largest_body_always_fits() {
        let settings = Settings {
            max_connections: Some(10),
            request_memory: Some(5 * MI as usize),
            ..Settings::default()
        };
        let set = Capacity::derive(&settings, Some(128 * MI), None);
        assert_eq!((set.connections, set.request_memory), (10, 5 * MI as usize));
        let tiny = Capacity::derive(&Settings::default(), Some(MI), None);
        assert_eq!(tiny.request_memory, Settings::default().request_body_limit);
    }

    #[test]
    fn the_limit_is_looked_for_in_the_process_own_cgroup_first() {
        let v2 = limit_files("0::/kubepods/pod1/container\n");
        assert_eq!(v2[0], "/sys/fs/cgroup/kubepods/pod1/container/memory.max");
        let v1 = limit_files("5:cpu,cpuacct:/x\n4:memory:/kubepods/pod1/container\n0::/\n");
        assert_eq!(
            v1[..2],
            [
                "/sys/fs/cgroup/memory/kubepods/pod1/container/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory.max",
            ]
        );
        assert_eq!(
            limit_files("").last().unwrap(),
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        );
    }

    #[test]
    fn cgroup_files_are_read_as_the_kernel_writes_them() {
        assert_eq!(parse_memory_limit("134217728\n"), Some(128 * MI));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
    }
}
