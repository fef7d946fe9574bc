//! A health gate: every endpoint must answer healthy several times in a row.
//! It fails as soon as one endpoint fails several times in a row, or when its
//! deadline passes without a decision: a gate never passes on missing data.

use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::probe::HttpProbe;
use crate::aws::wait::{self, WaitEnd};

/// How a gate decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    /// Consecutive healthy answers each endpoint needs to pass.
    pub successes: u32,
    /// Consecutive failed answers of one endpoint that fail the gate.
    pub failures: u32,
    /// Time between rounds of probes.
    pub interval: Duration,
    /// Time-out of one probe.
    pub probe_timeout: Duration,
    /// Longest time the gate may take to decide.
    pub deadline: Duration,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            successes: 3,
            failures: 2,
            interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(120),
        }
    }
}

/// A gate over a set of URLs.
#[derive(Debug, Clone)]
pub struct Gate {
    urls: Vec<String>,
    policy: GatePolicy,
    probe: HttpProbe,
}

/// What a gate decided, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateVerdict {
    /// Whether it passed.
    pub passed: bool,
    /// One line of evidence.
    pub summary: String,
}

impl Gate {
    /// A gate over `urls` deciding by `policy`.
    pub fn new(urls: Vec<String>, policy: GatePolicy) -> Result<Self, reqwest::Error> {
        let probe = HttpProbe::new(policy.probe_timeout)?;
        Ok(Self {
            urls,
            policy,
            probe,
        })
    }

    /// The URLs it probes.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Its policy.
    pub fn policy(&self) -> GatePolicy {
        self.policy
    }

    /// Probes every URL in rounds until each has passed `successes` times in a
    /// row (pass), one has failed `failures` times in a row (fail), or the
    /// deadline passes (fail). Returns `Err` only when cancelled.
    pub async fn evaluate(&self, cancel: &CancellationToken) -> Result<GateVerdict, WaitEnd> {
        let deadline = Instant::now() + self.policy.deadline;
        let mut ok_streak = vec![0_u32; self.urls.len()];
        let mut fail_streak = vec![0_u32; self.urls.len()];
        let mut last = vec![String::new(); self.urls.len()];
        let mut rounds = 0_u32;
        loop {
            rounds += 1;
            let pending: Vec<usize> = (0..self.urls.len())
                .filter(|&i| ok_streak[i] < self.policy.successes)
                .collect();
            let results = join_all(pending.iter().map(|&i| self.probe.check(&self.urls[i]))).await;
            for (&i, result) in pending.iter().zip(results) {
                if result.ok {
                    ok_streak[i] += 1;
                    fail_streak[i] = 0;
                } else {
                    ok_streak[i] = 0;
                    fail_streak[i] += 1;
                }
                tracing::debug!("gate probe {}: {}", result.url, result.observed);
                last[i] = result.observed;
            }
            if let Some(i) = (0..self.urls.len()).find(|&i| fail_streak[i] >= self.policy.failures)
            {
                return Ok(GateVerdict {
                    passed: false,
                    summary: format!(
                        "{} failed {} times in a row (last: {})",
                        self.urls[i], fail_streak[i], last[i]
                    ),
                });
            }
            if ok_streak.iter().all(|&n| n >= self.policy.successes) {
                return Ok(GateVerdict {
                    passed: true,
                    summary: format!(
                        "{} endpoint(s) healthy {} times in a row, {rounds} round(s)",
                        self.urls.len(),
                        self.policy.successes
                    ),
                });
            }
            match wait::sleep(self.policy.interval, deadline, cancel).await {
                Ok(()) => {}
                Err(WaitEnd::Deadline) => {
                    let slow: Vec<String> = (0..self.urls.len())
                        .filter(|&i| ok_streak[i] < self.policy.successes)
                        .map(|i| format!("{} (last: {})", self.urls[i], last[i]))
                        .collect();
                    return Ok(GateVerdict {
                        passed: false,
                        summary: format!(
                            "no decision within {}: not yet healthy: {}",
                            crate::cli::progress::short(self.policy.deadline),
                            slow.join(", ")
                        ),
                    });
                }
                Err(WaitEnd::Cancelled) => return Err(WaitEnd::Cancelled),
            }
        }
    }
}
