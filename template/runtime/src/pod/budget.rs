//! The arithmetic of the shutdown budget against what the Pod's spec and the API say.

use std::time::Duration;

use crate::budget::Budget;

/// What the kubelet will allow: read from the Pod's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodShutdown {
    /// `terminationGracePeriodSeconds` (30 when the spec leaves it out).
    pub grace_period: Duration,
    pub pre_stop: PreStop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreStop {
    None,
    /// The kubelet's `sleep` action.
    Sleep(Duration),
    /// `httpGet` on the service's own `/prestop`, which answers after `PRESTOP_DELAY`.
    OwnEndpoint,
    /// An exec or another URL: its duration is unknown here.
    Other,
}

/// Why the Pod's spec and the service's settings disagree, if they do: the kubelet counts
/// the grace period from the deletion, through the preStop hook, to SIGKILL.
pub fn mismatch(pod: &PodShutdown, budget: &Budget, prestop_delay: Duration) -> Option<String> {
    let pre_stop = match pod.pre_stop {
        PreStop::None | PreStop::Other => None,
        PreStop::Sleep(sleep) => Some(("preStop sleep", sleep)),
        PreStop::OwnEndpoint => Some(("PRESTOP_DELAY", prestop_delay)),
    };
    let terms: Vec<(&str, Duration)> = pre_stop
        .into_iter()
        .chain([
            ("SHUTDOWN_TIMEOUT", budget.timeout),
            ("SHUTDOWN_CLEANUP_TIMEOUT", budget.cleanup_timeout),
        ])
        .chain(
            (!budget.metrics_linger.is_zero())
                .then_some(("SHUTDOWN_METRICS_LINGER", budget.metrics_linger)),
        )
        .collect();
    let needed: Duration = terms.iter().map(|(_, duration)| *duration).sum();
    if pod.grace_period >= needed {
        return None;
    }
    let sum: Vec<String> = terms
        .iter()
        .map(|(name, duration)| format!("{name} ({})", humantime::format_duration(*duration)))
        .collect();
    Some(format!(
        "terminationGracePeriodSeconds ({}s) is shorter than {} = {}: the kubelet would \
         SIGKILL the service before its shutdown completes",
        pod.grace_period.as_secs(),
        sum.join(" + "),
        humantime::format_duration(needed),
    ))
}

/// Kept free before the SIGKILL for the process to exit.
pub const EXIT_MARGIN: Duration = Duration::from_secs(1);

/// The budget shrunk to end `EXIT_MARGIN` before the SIGKILL that comes `left` from now;
/// `None` when it already fits. The metrics linger, the one optional part, gives way first;
/// then every other part shrinks in proportion.
pub fn fit(budget: Budget, left: Duration) -> Option<Budget> {
    let needed = budget.timeout + budget.cleanup_timeout;
    let available = left.saturating_sub(EXIT_MARGIN);
    if available >= needed + budget.metrics_linger {
        return None;
    }
    if available >= needed {
        let metrics_linger = available - needed;
        return Some(Budget {
            metrics_linger,
            ..budget
        });
    }
    let share = available.as_secs_f64() / needed.as_secs_f64();
    Some(Budget {
        drain_delay: budget.drain_delay.mul_f64(share),
        timeout: budget.timeout.mul_f64(share),
        cleanup_timeout: budget.cleanup_timeout.mul_f64(share),
        metrics_linger: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        drain_delay: Duration::from_secs(5),
        timeout: Duration::from_secs(20),
        cleanup_timeout: Duration::from_secs(5),
        metrics_linger: Duration::ZERO,
    };
    const LINGERING: Budget = Budget {
        metrics_linger: Duration::from_secs(17),
        ..BUDGET
    };
    const PRESTOP_DELAY: Duration = Duration::from_secs(5);

    fn pod(grace: u64, pre_stop: PreStop) -> PodShutdown {
        PodShutdown {
            grace_period: Duration::from_secs(grace),
            pre_stop,
        }
    }

    #[test]
    fn the_charts_grace_period_fits() {
        let sleep = PreStop::Sleep(Duration::from_secs(5));
        assert_eq!(mismatch(&pod(32, sleep), &BUDGET, PRESTOP_DELAY), None);
        assert_eq!(
            mismatch(&pod(32, PreStop::OwnEndpoint), &BUDGET, PRESTOP_DELAY),
            None
        );
    }

    #[test]
    fn a_grace_period_edited_down_is_named_with_the_arithmetic() {
        let problem = mismatch(&pod(29, PreStop::OwnEndpoint), &BUDGET, PRESTOP_DELAY).unwrap();
        assert!(
            problem.contains("terminationGracePeriodSeconds (29s)"),
            "{problem}"
        );
        assert!(
            problem.contains("PRESTOP_DELAY (5s) + SHUTDOWN_TIMEOUT (20s)"),
            "{problem}"
        );
        assert!(problem.contains("= 30s"), "{problem}");
        assert!(mismatch(&pod(24, PreStop::None), &BUDGET, PRESTOP_DELAY).is_some());
        assert_eq!(
            mismatch(&pod(25, PreStop::None), &BUDGET, PRESTOP_DELAY),
            None
        );
    }

    #[test]
    fn the_metrics_linger_is_part_of_the_sum() {
        let sleep = PreStop::Sleep(Duration::from_secs(5));
        assert_eq!(
            mismatch(&pod(47, sleep.clone()), &LINGERING, PRESTOP_DELAY),
            None
        );
        let problem = mismatch(&pod(46, sleep), &LINGERING, PRESTOP_DELAY).unwrap();
        assert!(
            problem.contains("SHUTDOWN_CLEANUP_TIMEOUT (5s) + SHUTDOWN_METRICS_LINGER (17s) = 47s"),
            "{problem}"
        );
        assert!(mismatch(&pod(41, PreStop::None), &LINGERING, PRESTOP_DELAY).is_some());
    }

    #[test]
    fn the_metrics_linger_gives_way_first() {
        let fitted = fit(LINGERING, Duration::from_secs(36)).unwrap();
        assert_eq!(
            fitted,
            Budget {
                metrics_linger: Duration::from_secs(10),
                ..BUDGET
            }
        );
        let fitted = fit(LINGERING, Duration::from_secs(13)).unwrap();
        assert_eq!(fitted.metrics_linger, Duration::ZERO);
        assert_eq!(
            fitted.timeout + fitted.cleanup_timeout,
            Duration::from_secs(12)
        );
    }

    #[test]
    fn enough_time_leaves_the_budget_alone() {
        assert_eq!(fit(BUDGET, Duration::from_secs(26)), None);
    }

    #[test]
    fn too_little_time_shrinks_every_part_in_proportion() {
        let fitted = fit(BUDGET, Duration::from_secs(13)).unwrap();
        assert_eq!(
            fitted.timeout + fitted.cleanup_timeout,
            Duration::from_secs(12)
        );
        assert_eq!(fitted.drain_delay, Duration::from_millis(2400));
        assert!(fitted.drain_delay < fitted.timeout);
        let none_left = fit(BUDGET, Duration::ZERO).unwrap();
        assert_eq!(
            none_left.timeout + none_left.cleanup_timeout,
            Duration::ZERO
        );
    }
}
