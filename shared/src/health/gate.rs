//! A health gate: the verification engine applied to a set of URLs, as
//! shift-weight runs it after each step. It passes only on a healthy verdict;
//! undecided is a failure, never a pass.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::policy::{self, ProbePolicy};
use super::probe::{HttpProbe, ProbeSpec, ProbeSpecError};
use crate::state::Health;
use crate::wait::WaitEnd;

/// How a gate decides: the parts of a probe policy a gate needs.
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
    /// A gate over `urls` deciding by `policy`, with default probes (GET, 2xx-3xx).
    pub fn new(urls: Vec<String>, policy: GatePolicy) -> Result<Self, ProbeSpecError> {
        let probe = HttpProbe::with_spec(ProbeSpec {
            timeout: policy.probe_timeout,
            connect_timeout: policy.probe_timeout.min(Duration::from_secs(2)),
            ..ProbeSpec::default()
        })?;
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

    /// Runs the verification engine over the URLs: every one must pass
    /// `successes` times in a row before `failures` failures in a row or the
    /// deadline. Returns `Err` only when cancelled.
    pub async fn evaluate(&self, cancel: &CancellationToken) -> Result<GateVerdict, WaitEnd> {
        let engine = ProbePolicy {
            interval: self.policy.interval,
            attempts: u32::MAX,
            successes: self.policy.successes,
            failures: self.policy.failures,
            deadline: self.policy.deadline,
            quorum: 100.0,
            ..ProbePolicy::default()
        };
        let report = policy::verify(&self.urls, &self.probe, &engine, cancel).await?;
        Ok(GateVerdict {
            passed: report.verdict == Health::Healthy,
            summary: report.summary,
        })
    }
}
