//! Deciding whether a stack is healthy: HTTP(S) probes judged by a probe
//! policy (thresholds, quorum, latency limits), sent to the stack or through
//! its load balancer; its target groups' health (the load balancer's view),
//! CloudWatch alarms, Route53 health checks, metric analysis ([`analysis`]);
//! reports for people, programs, Jenkins and GitHub; and the gates a traffic
//! shift must pass.

pub mod alarms;
pub mod analysis;
pub mod gate;
pub mod load_balancer;
pub mod policy;
pub mod probe;
pub mod report;
pub mod route53;
pub mod target_health;
pub mod targets;

pub use gate::{Gate, GatePolicy, GateVerdict};
pub use policy::{ProbePolicy, ProbeReport};
pub use probe::{HttpProbe, ProbeResult, ProbeSpec};
pub use report::{Evidence, HealthReport};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outcome::{Code, ExitStatus};
use crate::wait::WaitEnd;

/// A verification: endpoints to probe and alarms to watch, together.
#[derive(Debug)]
pub struct Verification {
    /// The stack it is about, if one.
    pub stack: Option<String>,
    /// What judges the stack (the report says so).
    pub via: target_health::Via,
    /// The way into the load balancer the URLs go through (`--via load-balancer`).
    pub route: Option<crate::state::ProbeRoute>,
    /// URLs to probe (may be empty when only alarms gate).
    pub urls: Vec<String>,
    /// How to probe.
    pub probe: HttpProbe,
    /// How to judge.
    pub policy: ProbePolicy,
    /// Alarms that must stay OK, with the client to read them.
    pub alarms: Option<(aws_sdk_cloudwatch::Client, alarms::AlarmGate)>,
    /// Target groups whose health judges the stack, with the client to read them.
    pub targets: Option<(
        aws_sdk_elasticloadbalancingv2::Client,
        target_health::TargetGate,
    )>,
}

/// Errors that stop a verification before it reaches a verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Alarms(#[from] alarms::AlarmError),
    #[error(transparent)]
    Targets(#[from] crate::aws::ProviderError),
    #[error("interrupted before a verdict")]
    Interrupted,
}

impl ExitStatus for VerifyError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Alarms(e) => e.exit_code(),
            Self::Targets(_) => Code::Provider,
            Self::Interrupted => Code::Interrupted,
        }
    }
}

impl Verification {
    /// Probes and watches concurrently, then combines the evidence.
    pub async fn run(&self, cancel: &CancellationToken) -> Result<HealthReport, VerifyError> {
        let started = Instant::now();
        let probes = async {
            if self.urls.is_empty() {
                return Ok(None);
            }
            policy::verify(&self.urls, &self.probe, &self.policy, cancel)
                .await
                .map(Some)
        };
        let watch = async {
            match &self.alarms {
                None => Ok(Ok(None)),
                Some((client, gate)) => alarms::watch(client, gate, cancel)
                    .await
                    .map(|r| r.map(Some)),
            }
        };
        let targets = async {
            match &self.targets {
                None => Ok(Ok(None)),
                Some((client, gate)) => target_health::watch(client, gate, cancel)
                    .await
                    .map(|r| r.map(Some)),
            }
        };
        let (probes, alarms, targets) = tokio::join!(probes, watch, targets);
        let probes = probes.map_err(|_: WaitEnd| VerifyError::Interrupted)?;
        let alarms = alarms?.map_err(|_| VerifyError::Interrupted)?;
        let targets = targets?
            .map_err(|_| VerifyError::Interrupted)?
            .map(Box::new);
        Ok(HealthReport::combine(
            self.stack.clone(),
            Evidence {
                via: self.via,
                route: self.route.clone(),
                probes,
                targets,
                alarms,
            },
            started.elapsed(),
        ))
    }
}
