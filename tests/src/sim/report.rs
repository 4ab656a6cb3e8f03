//! What a simulated rollout produced: the tally, a timeline file, and a plot.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    load::{ClientKind, Failure, Outcome},
    proxies::{Balancer, ProxyTally},
    timeline::{Event, Happening, Timeline},
};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PodEnd {
    pub pod: String,
    pub exit_code: Option<i32>,
    pub sigkilled: bool,
    /// `http_requests_in_flight` and `lifecycle_draining` in the last scrape before the end.
    pub last_in_flight: Option<f64>,
    pub last_draining: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub scenario: String,
    pub outcomes: Vec<Outcome>,
    pub events: Vec<Event>,
    /// From the first deletion to the last old pod's exit, in seconds since the start.
    pub rollout: (f64, f64),
    pub pods: Vec<PodEnd>,
    pub liveness_failures: u32,
    pub balancer: Balancer,
    /// What the proxy saw go wrong upstream (its retries can hide it from the clients).
    pub proxy: ProxyTally,
}

impl Report {
    pub fn requests(&self, client: ClientKind) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| outcome.client == client)
            .count()
    }

    pub fn failed(&self, client: ClientKind) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| outcome.client == client && outcome.failure.is_some())
            .count()
    }

    /// Failed requests of every client.
    pub fn failed_total(&self) -> usize {
        ClientKind::ALL
            .iter()
            .map(|&client| self.failed(client))
            .sum()
    }

    /// How many of the client's requests failed, by what it saw.
    pub fn failures_by_cause(&self, client: ClientKind) -> BTreeMap<&Failure, usize> {
        let mut causes = BTreeMap::new();
        for failure in self
            .outcomes
            .iter()
            .filter(|outcome| outcome.client == client)
            .filter_map(|outcome| outcome.failure.as_ref())
        {
            *causes.entry(failure).or_default() += 1;
        }
        causes
    }

    /// `: 12 connection closed or reset before the response, 1 connection refused`.
    fn causes_in_words(&self, client: ClientKind) -> String {
        let parts: Vec<String> = self
            .failures_by_cause(client)
            .iter()
            .map(|(cause, count)| format!("{count} {}", cause.in_words()))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        }
    }

    pub fn sigkills(&self) -> usize {
        self.pods.iter().filter(|pod| pod.sigkilled).count()
    }

    /// Slow requests in flight while some pod was being deleted, and how many of them failed.
    pub fn slow_across_deletions(&self) -> (usize, usize) {
        let deletions = Timeline::times(&self.events, &Happening::Deleted);
        let spanning: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|outcome| {
                outcome.slow
                    && deletions.iter().any(|&at| {
                        outcome.sent.as_secs_f64() < at && at < outcome.done.as_secs_f64()
                    })
            })
            .collect();
        let failed = spanning
            .iter()
            .filter(|outcome| outcome.failure.is_some())
            .count();
        (spanning.len(), failed)
    }

    /// p50, p99 and max latency of the fast requests sent during the rollout.
    pub fn latency(&self) -> (Duration, Duration, Duration) {
        let mut latencies: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|outcome| !outcome.slow && outcome.failure.is_none())
            .filter(|outcome| {
                let sent = outcome.sent.as_secs_f64();
                self.rollout.0 <= sent && sent <= self.rollout.1
            })
            .map(|outcome| outcome.done.saturating_sub(outcome.sent))
            .collect();
        if latencies.is_empty() {
            return Default::default();
        }
        latencies.sort();
        let at =
            |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile).round() as usize];
        (at(0.50), at(0.99), *latencies.last().unwrap())
    }

    pub fn summary(&self) -> String {
        let mut text = String::new();
        let total = self.outcomes.len();
        let _ = writeln!(text, "scenario: {}", self.scenario);
        let _ = writeln!(text, "{} failed of {total} requests", self.failed_total());
        for client in ClientKind::ALL {
            let _ = writeln!(
                text,
                "  {:<8} client: {} failed of {}{}",
                format!("{client:?}").to_lowercase(),
                self.failed(client),
                self.requests(client),
                self.causes_in_words(client)
            );
        }
        let _ = writeln!(
            text,
            "  {}: {} upstream errors, {} retries, {} with no ready endpoint ({})",
            self.balancer.name(),
            self.proxy.upstream_errors,
            self.proxy.retries,
            self.proxy.no_endpoint,
            self.proxy.detail
        );
        let (spanning, slow_failed) = self.slow_across_deletions();
        let _ = writeln!(
            text,
            "  slow requests in flight across a deletion: {spanning}, failed: {slow_failed}"
        );
        let (p50, p99, max) = self.latency();
        let _ = writeln!(
            text,
            "  latency during the rollout: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        let codes: Vec<String> = self
            .pods
            .iter()
            .map(|pod| {
                format!(
                    "{}={}",
                    pod.pod,
                    pod.exit_code
                        .map_or("running".into(), |code| code.to_string())
                )
            })
            .collect();
        let _ = writeln!(
            text,
            "  SIGKILLs: {}; exit codes: {}",
            self.sigkills(),
            codes.join(" ")
        );
        text
    }

    /// Writes `<name>.timeline.jsonl`, `<name>.svg` and `<name>.summary.txt` into `dir`;
    /// returns the paths of the first two.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let name = slug(&self.scenario);
        std::fs::write(dir.join(format!("{name}.summary.txt")), self.summary())?;
        let timeline = dir.join(format!("{name}.timeline.jsonl"));
        let mut lines = String::new();
        for event in &self.events {
            lines.push_str(&serde_json::json!({"type": "event", "at": event.at, "source": event.source, "what": event.what, "text": event.what.to_string()}).to_string());
            lines.push('\n');
        }
        for outcome in &self.outcomes {
            lines.push_str(&serde_json::json!({"type": "request", "outcome": outcome}).to_string());
            lines.push('\n');
        }
        std::fs::write(&timeline, lines)?;
        let plot = dir.join(format!("{name}.svg"));
        std::fs::write(&plot, super::plot::svg(self))?;
        let report = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(Report::path(dir, &self.scenario), report)?;
        Ok((timeline, plot))
    }

    /// Where [`Report::write`] keeps the report itself, for [`Report::read`].
    pub fn path(dir: &Path, scenario: &str) -> PathBuf {
        dir.join(format!("{}.report.json", slug(scenario)))
    }

    /// A report written by another process (the demo's, for its test).
    pub fn read(path: &Path) -> std::io::Result<Report> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Fails the test unless the rollout lost nothing ([`Report::clean_rollout_problems`]),
    /// naming each broken expectation and printing the summary.
    pub fn assert_clean_rollout(&self, old_pods: usize) {
        let problems = self.clean_rollout_problems(old_pods);
        assert!(
            problems.is_empty(),
            "expected {}:\n{}",
            problems.join("; "),
            self.summary()
        );
    }

    /// What a rollout that lost nothing must show, as broken expectations (none when clean):
    /// thousands of requests, not one failed at any client or at the proxy, `old_pods` pods
    /// that all exited 0 without SIGKILL or a failed liveness probe, and slow requests that
    /// were in flight at a deletion and still finished.
    pub fn clean_rollout_problems(&self, old_pods: usize) -> Vec<String> {
        let mut problems = Vec::new();
        let mut expect = |holds: bool, expectation: String| {
            if !holds {
                problems.push(expectation);
            }
        };
        expect(
            self.outcomes.len() > 5_000,
            "more than 5000 requests under load".into(),
        );
        for client in ClientKind::ALL {
            expect(
                self.failed(client) == 0,
                format!("no failed request from the {client:?} client"),
            );
        }
        expect(
            self.proxy.upstream_errors == 0,
            "the proxy never reaching a pod that stopped listening".into(),
        );
        expect(self.sigkills() == 0, "no SIGKILL".into());
        expect(
            self.pods.len() == old_pods,
            format!("{old_pods} old pods to end"),
        );
        expect(
            self.pods.iter().all(|pod| pod.exit_code == Some(0)),
            "every old pod to exit 0".into(),
        );
        let (slow_across, slow_failed) = self.slow_across_deletions();
        expect(
            slow_across > 0,
            "slow requests in flight at a deletion".into(),
        );
        expect(
            slow_failed == 0,
            "every slow request in flight at a deletion to finish".into(),
        );
        expect(
            self.liveness_failures == 0,
            "no failed liveness probe".into(),
        );
        problems
    }
}

/// `no preStop, no drain delay` → `no-prestop-no-drain-delay`.
pub fn slug(name: &str) -> String {
    let words: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_report_reads_back_whole() {
        let events = vec![
            Event {
                at: 8.3,
                source: "load".into(),
                what: Happening::LoadStarted {
                    rate: 500,
                    slow_every: 50,
                    slow_ms: 3000,
                },
            },
            Event {
                at: 9.1,
                source: "pod-1".into(),
                what: Happening::Exited { code: 0 },
            },
        ];
        let outcomes = vec![Outcome {
            client: ClientKind::Fresh,
            slow: true,
            sent: Duration::from_millis(8_400),
            done: Duration::from_millis(11_400),
            failure: Some(Failure::Other("no status line".into())),
        }];
        let report = Report {
            scenario: "round trip".into(),
            outcomes,
            events,
            rollout: (9.0, 12.5),
            pods: vec![],
            liveness_failures: 0,
            balancer: Balancer::KubeProxy,
            proxy: ProxyTally::default(),
        };
        let dir = crate::scratch("report-round-trip").join(std::process::id().to_string());
        report.write(&dir).unwrap();
        let read = Report::read(&Report::path(&dir, "round trip")).unwrap();
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::to_value(&report).unwrap()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
