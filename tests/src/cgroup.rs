//! A memory cgroup of our own, to run a service under the limit a Pod would give it: the
//! service derives its capacity from that limit, the kernel enforces it (an overrun is an
//! OOM kill, counted), and the cgroup's peak counts kernel socket buffers too, which a
//! process's RSS does not.
//!
//! Needs root and a writable cgroup hierarchy (v2, or v1's memory controller).

use std::{
    ffi::CString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

pub struct MemoryCgroup {
    dir: PathBuf,
    version: Version,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl MemoryCgroup {
    /// Creates `name` with a memory limit of `limit` bytes; `Err` says why it cannot.
    pub fn create(name: &str, limit: u64) -> Result<MemoryCgroup, String> {
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (dir, version, limit_file) = match std::fs::read_to_string(v2) {
            Ok(controllers) if controllers.split_whitespace().any(|c| c == "memory") => (
                Path::new("/sys/fs/cgroup").join(name),
                Version::V2,
                "memory.max",
            ),
            _ => (
                Path::new("/sys/fs/cgroup/memory").join(name),
                Version::V1,
                "memory.limit_in_bytes",
            ),
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let cgroup = MemoryCgroup { dir, version };
        cgroup.write(limit_file, &limit.to_string())?;
        if version == Version::V1 {
            // Swap would hide an overrun instead of showing it as an OOM kill.
            let _ = cgroup.write("memory.memsw.limit_in_bytes", &limit.to_string());
        }
        Ok(cgroup)
    }

    /// Makes `command`'s process join this cgroup between fork and exec.
    pub fn enter(&self, command: &mut Command) {
        let procs = CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: between fork and exec only open(2), write(2) and close(2) run, all
        // async-signal-safe, on memory allocated before the fork.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" is the writing process itself.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The most memory the cgroup has used, kernel buffers included, since it was created
    /// or since [`Self::reset_peak`].
    pub fn peak_bytes(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        self.read(file).trim().parse().unwrap_or(0)
    }

    /// Starts counting the peak from now (v1; v2 counts from creation).
    pub fn reset_peak(&self) {
        if self.version == Version::V1 {
            let _ = self.write("memory.max_usage_in_bytes", "0");
        }
    }

    /// Processes the kernel killed for exceeding the limit.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        self.read(file)
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), value)
            .map_err(|error| format!("{}/{file}: {error}", self.dir.display()))
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
