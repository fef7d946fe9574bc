//! The probe policy and the engine that applies it: rounds of concurrent
//! probes until every endpoint is decided (consecutive successes to pass,
//! consecutive failures to fail, as Kubernetes probes and ELB target health
//! do), then a verdict per stack from a quorum and latency limits. Missing
//! evidence is never a pass: an endpoint still undecided at the end is
//! counted as not healthy, and the verdict is inconclusive if it could have
//! tipped the balance.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::probe::{HttpProbe, ProbeResult};
use crate::state::Health;
use crate::wait::progress::{short, Pace};
use crate::wait::{self, WaitEnd};

/// How endpoints are probed and judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbePolicy {
    /// Wait before the first round.
    pub initial_delay: Duration,
    /// Time between rounds.
    pub interval: Duration,
    /// Rounds at most.
    pub attempts: u32,
    /// Consecutive passing probes that make an endpoint healthy.
    pub successes: u32,
    /// Consecutive failing probes that make an endpoint unhealthy.
    pub failures: u32,
    /// Longest time the whole verification may take.
    pub deadline: Duration,
    /// Percentage of endpoints that must be healthy (0-100).
    pub quorum: f64,
    /// Limit on the 95th percentile latency of answered probes.
    pub p95_limit: Option<Duration>,
    /// Limit on the slowest answered probe.
    pub max_limit: Option<Duration>,
    /// Probes in flight at once.
    pub concurrency: usize,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::ZERO,
            interval: Duration::from_secs(2),
            attempts: 10,
            successes: 2,
            failures: 2,
            deadline: Duration::from_secs(120),
            quorum: 100.0,
            p95_limit: None,
            max_limit: None,
            concurrency: 256,
        }
    }
}

/// Policy settings that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("--successes and --failures must be at least 1")]
    Zero,
    #[error("--attempts {attempts} is fewer than --successes {successes} or --failures {failures}: no endpoint could ever be decided")]
    Attempts {
        attempts: u32,
        successes: u32,
        failures: u32,
    },
    #[error("--quorum must be a percentage from 0 to 100")]
    Quorum,
    #[error("--concurrency must be at least 1")]
    Concurrency,
}

impl ProbePolicy {
    /// Checks the settings fit together.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.successes == 0 || self.failures == 0 {
            return Err(PolicyError::Zero);
        }
        if self.attempts < self.successes.max(self.failures) {
            return Err(PolicyError::Attempts {
                attempts: self.attempts,
                successes: self.successes,
                failures: self.failures,
            });
        }
        if !(0.0..=100.0).contains(&self.quorum) {
            return Err(PolicyError::Quorum);
        }
        if self.concurrency == 0 {
            return Err(PolicyError::Concurrency);
        }
        Ok(())
    }

    /// Endpoints (of `total`) that must be healthy.
    pub fn needed(&self, total: usize) -> usize {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let needed = ((self.quorum / 100.0) * total as f64 - 1e-9)
            .ceil()
            .max(0.0) as usize;
        needed.min(total)
    }
}

/// Where an endpoint ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Passed `successes` times in a row.
    Healthy,
    /// Failed `failures` times in a row.
    Unhealthy,
    /// Neither before the attempts or the deadline ran out.
    Undecided,
}

/// One endpoint's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// The URL.
    pub url: String,
    /// Its outcome.
    pub state: EndpointState,
    /// Probes made.
    pub probes: u32,
    /// What the last probe saw.
    pub last: String,
    /// Latency of the last probe, in milliseconds.
    pub latency_ms: u64,
    #[serde(skip)]
    latencies: Vec<Duration>,
    #[serde(skip)]
    ok_streak: u32,
    #[serde(skip)]
    fail_streak: u32,
}

/// Latency figures over every answered probe, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencyStats {
    /// Median.
    pub p50_ms: u64,
    /// 95th percentile.
    pub p95_ms: u64,
    /// Slowest.
    pub max_ms: u64,
    /// Probes counted.
    pub samples: usize,
}

/// The result of probing one set of endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The verdict.
    pub verdict: Health,
    /// One line of evidence.
    pub summary: String,
    /// Healthy endpoints.
    pub healthy: usize,
    /// Endpoints probed.
    pub total: usize,
    /// Endpoints that had to be healthy.
    pub needed: usize,
    /// Latency figures.
    pub latency: LatencyStats,
    /// Rounds made.
    pub rounds: u32,
    /// Per endpoint evidence.
    pub endpoints: Vec<EndpointReport>,
}

/// Probes `urls` by `policy` until each is decided, the attempts run out,
/// the quorum can no longer be met, or the deadline passes. `Err` only when cancelled.
pub async fn verify(
    urls: &[String],
    probe: &HttpProbe,
    policy: &ProbePolicy,
    cancel: &CancellationToken,
) -> Result<ProbeReport, WaitEnd> {
    let deadline = Instant::now() + policy.deadline;
    let total = urls.len();
    let needed = policy.needed(total);
    let mut endpoints: Vec<EndpointReport> = urls
        .iter()
        .map(|u| EndpointReport {
            url: u.clone(),
            state: EndpointState::Undecided,
            probes: 0,
            last: "not probed".to_owned(),
            latency_ms: 0,
            latencies: Vec::new(),
            ok_streak: 0,
            fail_streak: 0,
        })
        .collect();
    let mut pace = Pace::new(format!("{total} endpoint(s) to be decided"), deadline);
    let mut rounds = 0;
    if !policy.initial_delay.is_zero() {
        wait::sleep(policy.initial_delay, deadline, cancel)
            .await
            .or_else(ignore_deadline)?;
    }
    while rounds < policy.attempts && Instant::now() < deadline {
        rounds += 1;
        let pending: Vec<usize> = (0..total)
            .filter(|&i| endpoints[i].state == EndpointState::Undecided)
            .collect();
        let results = tokio::select! {
            r = probe_round(urls, &pending, probe, policy.concurrency) => r,
            () = cancel.cancelled() => return Err(WaitEnd::Cancelled),
        };
        for (i, result) in results {
            record(&mut endpoints[i], result, policy);
        }
        let healthy = count(&endpoints, EndpointState::Healthy);
        let unhealthy = count(&endpoints, EndpointState::Unhealthy);
        if healthy + unhealthy == total || total - unhealthy < needed {
            break;
        }
        pace.tick(&format!(
            "{healthy} healthy, {unhealthy} unhealthy after {rounds} round(s)"
        ));
        if rounds < policy.attempts {
            match wait::sleep(policy.interval, deadline, cancel).await {
                Ok(()) => {}
                Err(WaitEnd::Deadline) => break,
                Err(WaitEnd::Cancelled) => return Err(WaitEnd::Cancelled),
            }
        }
    }
    Ok(judge(endpoints, policy, needed, rounds))
}

/// One round: each of `pending` probed once, `concurrency` at a time, each
/// probe a task of its own so that every worker thread of the runtime takes
/// its share (one task polling them all would keep them on one core).
async fn probe_round(
    urls: &[String],
    pending: &[usize],
    probe: &HttpProbe,
    concurrency: usize,
) -> Vec<(usize, ProbeResult)> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = pending.iter().copied();
    let mut results = Vec::with_capacity(pending.len());
    loop {
        while tasks.len() < concurrency {
            let Some(i) = next.next() else { break };
            let (probe, url) = (probe.clone(), urls[i].clone());
            tasks.spawn(async move { (i, probe.check(&url).await) });
        }
        match tasks.join_next().await {
            Some(Ok(done)) => results.push(done),
            // A probe's task cannot panic short of a bug; its endpoint then
            // stays undecided this round.
            Some(Err(e)) => tracing::warn!("a probe's task failed: {e}"),
            None => return results,
        }
    }
}

fn ignore_deadline(end: WaitEnd) -> Result<(), WaitEnd> {
    match end {
        WaitEnd::Deadline => Ok(()),
        WaitEnd::Cancelled => Err(WaitEnd::Cancelled),
    }
}

fn count(endpoints: &[EndpointReport], state: EndpointState) -> usize {
    endpoints.iter().filter(|e| e.state == state).count()
}

fn record(e: &mut EndpointReport, result: ProbeResult, policy: &ProbePolicy) {
    e.probes += 1;
    e.latency_ms = u64::try_from(result.latency.as_millis()).unwrap_or(u64::MAX);
    if result.status.is_some() {
        e.latencies.push(result.latency);
    }
    e.last = result.observed;
    if result.ok {
        e.ok_streak += 1;
        e.fail_streak = 0;
        if e.ok_streak >= policy.successes {
            e.state = EndpointState::Healthy;
        }
    } else {
        e.fail_streak += 1;
        e.ok_streak = 0;
        if e.fail_streak >= policy.failures {
            e.state = EndpointState::Unhealthy;
        }
    }
}

fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn judge(
    endpoints: Vec<EndpointReport>,
    policy: &ProbePolicy,
    needed: usize,
    rounds: u32,
) -> ProbeReport {
    let total = endpoints.len();
    let healthy = count(&endpoints, EndpointState::Healthy);
    let undecided = count(&endpoints, EndpointState::Undecided);
    let mut all: Vec<Duration> = endpoints
        .iter()
        .flat_map(|e| e.latencies.iter().copied())
        .collect();
    all.sort_unstable();
    let latency = LatencyStats {
        p50_ms: ms(percentile(&all, 50.0)),
        p95_ms: ms(percentile(&all, 95.0)),
        max_ms: ms(all.last().copied().unwrap_or_default()),
        samples: all.len(),
    };
    let mut problems = Vec::new();
    if let Some(limit) = policy.p95_limit {
        if percentile(&all, 95.0) > limit {
            problems.push(format!(
                "p95 latency {} over the {} limit",
                short(percentile(&all, 95.0)),
                short(limit)
            ));
        }
    }
    if let Some(limit) = policy.max_limit {
        if let Some(max) = all.last().filter(|m| **m > limit) {
            problems.push(format!(
                "slowest probe {} over the {} limit",
                short(*max),
                short(limit)
            ));
        }
    }
    let counts = format!("{healthy}/{total} endpoints healthy (needed {needed})");
    let (verdict, summary) = if total == 0 {
        (Health::Inconclusive, "no endpoints to probe".to_owned())
    } else if !problems.is_empty() {
        (
            Health::Unhealthy,
            format!("{counts}; {}", problems.join("; ")),
        )
    } else if healthy >= needed {
        (
            Health::Healthy,
            format!("{counts}, p95 {} ms", latency.p95_ms),
        )
    } else if healthy + undecided >= needed {
        (
            Health::Inconclusive,
            format!("{counts}; {undecided} undecided after {rounds} round(s): not enough evidence"),
        )
    } else {
        let first = endpoints
            .iter()
            .find(|e| e.state == EndpointState::Unhealthy)
            .map(|e| format!("; e.g. {}: {}", e.url, e.last))
            .unwrap_or_default();
        (Health::Unhealthy, format!("{counts}{first}"))
    };
    ProbeReport {
        verdict,
        summary,
        healthy,
        total,
        needed,
        latency,
        rounds,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_counts() {
        let p = |quorum| ProbePolicy {
            quorum,
            ..ProbePolicy::default()
        };
        assert_eq!(p(100.0).needed(10), 10);
        assert_eq!(p(90.0).needed(10), 9);
        assert_eq!(p(90.0).needed(11), 10);
        assert_eq!(p(50.0).needed(3), 2);
        assert_eq!(p(0.0).needed(3), 0);
    }

    #[test]
    fn policy_checks() {
        let bad = ProbePolicy {
            attempts: 1,
            successes: 3,
            ..ProbePolicy::default()
        };
        assert!(matches!(bad.check(), Err(PolicyError::Attempts { .. })));
        assert_eq!(ProbePolicy::default().check(), Ok(()));
        let bad = ProbePolicy {
            quorum: 120.0,
            ..ProbePolicy::default()
        };
        assert_eq!(bad.check(), Err(PolicyError::Quorum));
    }

    #[test]
    fn percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 95.0), Duration::from_millis(95));
        assert_eq!(percentile(&d, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&[], 95.0), Duration::ZERO);
    }
}
