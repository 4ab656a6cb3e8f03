//! A real Prometheus on loopback, scraping services at a given interval, with its own config
//! and storage in a scratch directory; stopped on drop.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{free_loopback_address, http1};

/// One scrape target: the job name and the admin address to scrape.
pub struct Target {
    pub job: String,
    pub addr: SocketAddr,
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts `prometheus` (from the PATH) scraping `targets` every `interval`, with its
    /// files under `dir`.
    pub fn start(dir: PathBuf, interval: Duration, targets: &[Target]) -> std::io::Result<Self> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let seconds = interval.as_secs().max(1);
        let mut config = format!(
            "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: {}s\nscrape_configs:\n",
            seconds.min(10)
        );
        for target in targets {
            config.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n      - targets: [\"{}\"]\n",
                target.job, target.addr
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let addr = free_loopback_address()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        Ok(Prometheus { child, addr })
    }

    /// The samples of an instant query, or why there are none.
    pub fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encoded(query));
        let answer = http1::blocking_get(self.addr, &path, Duration::from_secs(10))
            .map_err(|error| format!("querying Prometheus: {error}"))?;
        let answer: Value = serde_json::from_str(&answer.text())
            .map_err(|error| format!("Prometheus answered {error}: {}", answer.text()))?;
        match answer["data"]["result"].as_array() {
            Some(samples) => Ok(samples.clone()),
            None => Err(format!("{query}: {answer}")),
        }
    }

    /// The value of each sample of `query`.
    pub fn values(&self, query: &str) -> Result<Vec<f64>, String> {
        let samples = self.query(query)?;
        Ok(samples
            .iter()
            .filter_map(|sample| sample["value"][1].as_str()?.parse().ok())
            .collect())
    }

    /// Waits until `query` has `count` samples, for at most `patience`.
    pub fn wait_for(&self, query: &str, count: usize, patience: Duration) -> Result<(), String> {
        let started = Instant::now();
        while self.values(query).map_or(0, |values| values.len()) < count {
            if started.elapsed() > patience {
                return Err(format!("{query} has fewer than {count} samples"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
