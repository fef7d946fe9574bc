//! A stack judged by its load balancer's view (`verify-health --via
//! target-health`): the health of its targets in their target groups, as
//! DescribeTargetHealth reports it. It is the evidence a CI runner outside
//! the VPC can read: no probe has to reach the stack's private addresses.
//!
//! The stack's targets are its instances in the groups (the state's instance
//! ids), or every target of the groups when the state names none. Targets
//! still `initial` (registering, checks not passed yet) are waited for; the
//! stack is healthy once the share of serving targets reaches the quorum,
//! unhealthy when it has not after the attempts, with each target's state
//! and reason as evidence.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::Client;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::elbv2::{self, Target, TargetHealth};
use crate::aws::ProviderError;
use crate::state::Health;
pub use crate::state::Via;
use crate::wait::{self, WaitEnd};

/// What to read and how to judge it.
#[derive(Debug, Clone)]
pub struct TargetGate {
    /// The target group ARNs.
    pub groups: Vec<String>,
    /// The stack's instance ids; empty: every target of the groups counts.
    pub instances: Vec<String>,
    /// The percentage of the stack's targets that must serve (as `--quorum`).
    pub quorum: f64,
    /// Time between looks.
    pub interval: Duration,
    /// Looks at most.
    pub attempts: u32,
}

/// One target as the last look found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    /// Its target group's ARN.
    pub group: String,
    /// The target.
    pub target: Target,
    /// Its health.
    pub health: TargetHealth,
}

/// The target groups' evidence.
#[derive(Debug, Clone, Serialize)]
pub struct TargetsReport {
    /// The verdict.
    pub verdict: Health,
    /// One line of evidence.
    pub summary: String,
    /// Looks made.
    pub looks: u32,
    /// Serving targets of the stack.
    pub serving: usize,
    /// The stack's targets.
    pub total: usize,
    /// How many must serve.
    pub needed: usize,
    /// Every target of the stack.
    pub targets: Vec<TargetReport>,
}

/// Reads the groups until the quorum serves or the attempts are spent.
pub async fn watch(
    client: &Client,
    gate: &TargetGate,
    cancel: &CancellationToken,
) -> Result<Result<TargetsReport, WaitEnd>, ProviderError> {
    let mut looks = 0;
    loop {
        looks += 1;
        let mut targets = Vec::new();
        for group in &gate.groups {
            for (target, health) in elbv2::group_health(client, group).await? {
                if gate.instances.is_empty() || gate.instances.contains(&target.id) {
                    targets.push(TargetReport {
                        group: group.clone(),
                        target,
                        health,
                    });
                }
            }
        }
        let report = judge(targets, gate, looks);
        if report.verdict == Health::Healthy || looks >= gate.attempts {
            return Ok(Ok(report));
        }
        tracing::info!("target health: {}", report.summary);
        let next = Instant::now() + gate.interval;
        match wait::sleep(gate.interval, next, cancel).await {
            Ok(()) | Err(WaitEnd::Deadline) => {}
            Err(WaitEnd::Cancelled) => return Ok(Err(WaitEnd::Cancelled)),
        }
    }
}

/// The verdict of one look: healthy when the serving share reaches the
/// quorum, else unhealthy (a last look) naming the targets that do not serve.
pub fn judge(targets: Vec<TargetReport>, gate: &TargetGate, looks: u32) -> TargetsReport {
    let total = targets.len();
    let serving = targets.iter().filter(|t| t.health.is_serving()).count();
    // At least one, and the quorum's share rounded up.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let needed = ((total as f64 * gate.quorum / 100.0 - 1e-9).ceil() as usize).max(1);
    let healthy = total > 0 && serving >= needed;
    let not_serving: Vec<String> = targets
        .iter()
        .filter(|t| !t.health.is_serving())
        .map(|t| format!("{}:{} {}", t.target.id, t.target.port, t.health.describe()))
        .collect();
    let summary = if total == 0 {
        format!(
            "no target of the stack in {} target group(s)",
            gate.groups.len()
        )
    } else if not_serving.is_empty() {
        format!(
            "{serving}/{total} targets healthy in {} target group(s)",
            gate.groups.len()
        )
    } else {
        format!(
            "{serving}/{total} targets healthy ({needed} needed); not serving: {}",
            not_serving.join(", ")
        )
    };
    TargetsReport {
        verdict: if healthy {
            Health::Healthy
        } else {
            Health::Unhealthy
        },
        summary,
        looks,
        serving,
        total,
        needed,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_elasticloadbalancingv2::types::{TargetHealthReasonEnum, TargetHealthStateEnum};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;
    use crate::aws::mocked;

    /// What moto does not emulate: targets `initial` while their checks
    /// run, then healthy; and a target that stays unhealthy to the end.
    #[tokio::test(start_paused = true)]
    async fn initial_targets_are_waited_for_and_an_unhealthy_one_is_reported() {
        let looks = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .sequence()
            .output(|| {
                mocked::target_health(
                    &["i-1", "i-2", "i-other"],
                    8080,
                    TargetHealthStateEnum::Initial,
                    Some(TargetHealthReasonEnum::InitialHealthChecking),
                )
            })
            .times(2)
            .output(|| {
                mocked::target_health(
                    &["i-1", "i-2", "i-other"],
                    8080,
                    TargetHealthStateEnum::Healthy,
                    None,
                )
            })
            .build();
        let client = mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::Sequential,
            [&looks]
        );
        let mut gate = gate(100.0);
        gate.instances = vec!["i-1".into(), "i-2".into()];
        let report = watch(&client, &gate, &CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((report.verdict, report.looks), (Health::Healthy, 3));
        assert_eq!(
            (report.serving, report.total),
            (2, 2),
            "only the stack's instances count"
        );

        let stuck = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health)
            .sequence()
            .output(|| {
                mocked::target_health(
                    &["i-1"],
                    8080,
                    TargetHealthStateEnum::Unhealthy,
                    Some(TargetHealthReasonEnum::FailedHealthChecks),
                )
            })
            .times(3)
            .build();
        let client = mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::Sequential,
            [&stuck]
        );
        let report = watch(&client, &gate, &CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((report.verdict, report.looks), (Health::Unhealthy, 3));
        assert!(
            report
                .summary
                .contains("i-1:8080 unhealthy (Target.FailedHealthChecks"),
            "{}",
            report.summary
        );
    }

    fn target(id: &str, state: &str, reason: Option<&str>) -> TargetReport {
        TargetReport {
            group: "arn:tg/web-green".into(),
            target: Target {
                id: id.into(),
                port: 8080,
                availability_zone: None,
            },
            health: TargetHealth {
                state: state.into(),
                reason: reason.map(str::to_owned),
                description: None,
            },
        }
    }

    fn gate(quorum: f64) -> TargetGate {
        TargetGate {
            groups: vec!["arn:tg/web-green".into()],
            instances: Vec::new(),
            quorum,
            interval: Duration::from_secs(5),
            attempts: 3,
        }
    }

    #[test]
    fn the_quorum_of_serving_targets_decides_and_the_rest_are_named() {
        let three = || {
            vec![
                target("i-1", "healthy", None),
                target("i-2", "healthy", None),
                target("i-3", "unhealthy", Some("Target.ResponseCodeMismatch")),
            ]
        };
        let all = judge(three(), &gate(100.0), 3);
        assert_eq!(all.verdict, Health::Unhealthy);
        assert_eq!(
            all.summary,
            "2/3 targets healthy (3 needed); not serving: i-3:8080 unhealthy (Target.ResponseCodeMismatch)"
        );
        let most = judge(three(), &gate(60.0), 1);
        assert_eq!((most.verdict, most.needed), (Health::Healthy, 2));
        let none = judge(Vec::new(), &gate(50.0), 1);
        assert_eq!(none.verdict, Health::Unhealthy);
        assert!(
            none.summary.starts_with("no target of the stack"),
            "{}",
            none.summary
        );
        let unchecked = judge(
            vec![target(
                "i-1",
                "unavailable",
                Some("Target.HealthCheckDisabled"),
            )],
            &gate(100.0),
            1,
        );
        assert_eq!(
            unchecked.verdict,
            Health::Healthy,
            "health checks disabled: serving"
        );
    }
}
