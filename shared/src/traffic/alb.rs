//! The ALB router: the forward action of a listener's default actions
//! (`--listener-arn`) or of one listener rule (`--rule-arn`), splitting
//! traffic between target groups by weight (ForwardConfig, 0-999 each).
//!
//! - Members are target groups. With `--member blue=ARN|NAME` the names are
//!   the user's; without, a member is the target group's name. A named member
//!   the action does not forward to yet reads as weight 0, and the first change
//!   adds it (so a plain one-group forward becomes a weighted one).
//! - Weights are written as they are planned (whole percentages, 0-100, which
//!   are valid ALB weights): ALB shares are weight / sum like every router's,
//!   scaling by 9.99 would add no resolution to whole percentages and would
//!   make the read-back of what was written inexact.
//! - A change is one ModifyListener (or ModifyRule) that sends every action
//!   back as read, with only the forward action's target group weights (and,
//!   with `--stickiness`, its TargetGroupStickinessConfig) changed; the
//!   rule's conditions are not sent, so they stay. The response is checked,
//!   and the engine reads back with DescribeListeners/DescribeRules after it.
//!   An ALB applies a change at once: the settle time is 0.
//!
//! The lease: ELBv2 has no conditional write, so it is a tag on the listener
//! (or rule), `switchyard-lease/<token>` = the encoded lease. A taker refuses
//! when it sees a live lease of another; else it writes its own tag, waits
//! until [`LEASE_WRITE_LIMIT`] after its token's time, reads the tags again
//! and holds the lease only if its own is the earliest live one; otherwise it
//! removes its tag and reports the lease held. A taker whose AddTags returns
//! later than the limit after its token's time withdraws, so any earlier
//! taker's tag is visible by the time a later one confirms. The race window
//! that remains: clocks of two takers more than the limit apart, or tag reads
//! lagging behind writes for longer than the limit (eventual consistency).
//! In both cases two runs can believe they hold the lease at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupStickinessConfig, TargetGroupTuple,
};
use aws_sdk_elasticloadbalancingv2::Client;
use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{format_weights, Applied, Group, Lease, LeaseRequest, Router, TrafficError};
use crate::aws::elbv2::{self as api, forward_weights};
use crate::aws::ProviderError;
use crate::lease::first_live;
use crate::state::Weights;

/// How long after its token's time a lease tag must be written, and when a
/// taker reads the tags again to confirm it holds the lease.
pub const LEASE_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// The tag key prefix of a lease.
const LEASE_TAG: &str = "switchyard-lease/";

/// The highest weight a target group takes.
pub const MAX_WEIGHT: u32 = 999;

/// What the router changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A listener's default actions.
    Listener(String),
    /// One listener rule's actions.
    Rule(String),
}

impl Target {
    /// The listener's or the rule's ARN.
    pub fn arn(&self) -> &str {
        match self {
            Self::Listener(a) | Self::Rule(a) => a,
        }
    }
}

/// The actions as last read, and which member is which target group.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    actions: Vec<Action>,
    /// Member name -> target group ARN, in member order.
    members: BTreeMap<String, String>,
}

/// An ALB listener or rule forwarding to weighted target groups.
#[derive(Debug)]
pub struct AlbRouter {
    client: Client,
    target: Target,
    /// `--member NAME=ARN|TARGET_GROUP_NAME`; empty: members are target group names.
    named: BTreeMap<String, String>,
    stickiness: Option<Duration>,
    write_limit: Duration,
    last: Mutex<Snapshot>,
}

fn error(operation: &'static str, message: String) -> TrafficError {
    TrafficError::Provider(ProviderError {
        operation,
        code: None,
        message,
    })
}

/// The one forward action of `actions` with its index.
fn forward(actions: &[Action]) -> Option<(usize, &Action)> {
    actions
        .iter()
        .enumerate()
        .find(|(_, a)| a.r#type() == Some(&ActionTypeEnum::Forward))
}

/// A tag value holds letters, digits, spaces and `_ . : / = + - @` only.
fn tag_value(lease: &Lease) -> String {
    lease
        .encode()
        .replace(';', " ")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn decode_tag(value: &str) -> Option<Lease> {
    Lease::decode(&value.replace(' ', ";"))
}

impl AlbRouter {
    /// The forward action of `target`, members named by `named` (member ->
    /// target group ARN or name; empty: target group names), with an optional
    /// stickiness duration to set on every change.
    pub fn new(
        client: Client,
        target: Target,
        named: BTreeMap<String, String>,
        stickiness: Option<Duration>,
    ) -> Self {
        Self {
            client,
            target,
            named,
            stickiness,
            write_limit: LEASE_WRITE_LIMIT,
            last: Mutex::new(Snapshot::default()),
        }
    }

    /// Confirms leases after `limit` instead of [`LEASE_WRITE_LIMIT`].
    #[must_use]
    pub fn with_lease_write_limit(mut self, limit: Duration) -> Self {
        self.write_limit = limit;
        self
    }

    async fn actions(&self) -> Result<Vec<Action>, TrafficError> {
        let read = match &self.target {
            Target::Listener(arn) => api::listener_actions(&self.client, arn).await,
            Target::Rule(arn) => api::rule_actions(&self.client, arn).await,
        };
        read.map_err(|e| match e.code.as_deref() {
            Some(api::LISTENER_NOT_FOUND | api::RULE_NOT_FOUND) => TrafficError::NoSuchRoute {
                route: self.id(),
                detail: e.message,
            },
            _ => TrafficError::Provider(e),
        })
    }

    /// Member name -> target group ARN for the groups the action forwards to.
    async fn resolve(
        &self,
        forwarded: &[(String, u32)],
    ) -> Result<BTreeMap<String, String>, TrafficError> {
        if self.named.is_empty() {
            let arns: Vec<String> = forwarded.iter().map(|(a, _)| a.clone()).collect();
            let names = api::target_group_names(&self.client, &arns).await?;
            return arns
                .into_iter()
                .map(|arn| {
                    let name = names.get(&arn).cloned().ok_or_else(|| {
                        error(
                            "elbv2:DescribeTargetGroups",
                            format!("no target group {arn}"),
                        )
                    })?;
                    Ok((name, arn))
                })
                .collect();
        }
        let by_name: Vec<String> = self
            .named
            .values()
            .filter(|v| !v.starts_with("arn:"))
            .cloned()
            .collect();
        let arns = if by_name.is_empty() {
            BTreeMap::new()
        } else {
            api::target_group_arns(&self.client, &by_name)
                .await
                .map_err(|e| TrafficError::NotWeighted {
                    route: self.id(),
                    detail: format!("cannot find the target groups {}: {e}", by_name.join(", ")),
                })?
        };
        self.named
            .iter()
            .map(|(member, group)| {
                let arn = if group.starts_with("arn:") {
                    group.clone()
                } else {
                    arns.get(group)
                        .cloned()
                        .ok_or_else(|| TrafficError::NotWeighted {
                            route: self.id(),
                            detail: format!("--member {member}: no target group named {group:?}"),
                        })?
                };
                Ok((member.clone(), arn))
            })
            .collect()
    }

    /// The actions with the forward action's weights set to `to`.
    fn with_weights(&self, snapshot: &Snapshot, to: &Weights) -> Result<Vec<Action>, TrafficError> {
        let mut actions = snapshot.actions.clone();
        let Some((index, action)) = forward(&actions) else {
            return Err(TrafficError::NotWeighted {
                route: self.id(),
                detail: "it has no forward action".to_owned(),
            });
        };
        let current: BTreeMap<String, u32> = forward_weights(action).into_iter().collect();
        let tuple = |arn: &str, weight: u32| {
            TargetGroupTuple::builder()
                .target_group_arn(arn)
                .weight(i32::try_from(weight.min(MAX_WEIGHT)).unwrap_or(0))
                .build()
        };
        let mut groups: Vec<TargetGroupTuple> = snapshot
            .members
            .iter()
            .map(|(member, arn)| {
                let weight = to
                    .get(member)
                    .or_else(|| current.get(arn))
                    .copied()
                    .unwrap_or(0);
                tuple(arn, weight)
            })
            .collect();
        // Groups that are no member (read refuses them unless their weight
        // is 0) stay as they are.
        for (arn, weight) in &current {
            if !snapshot.members.values().any(|m| m == arn) {
                groups.push(tuple(arn, *weight));
            }
        }
        let stickiness = match self.stickiness {
            Some(d) => Some(
                TargetGroupStickinessConfig::builder()
                    .enabled(true)
                    .duration_seconds(i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
                    .build(),
            ),
            None => action
                .forward_config()
                .and_then(|c| c.target_group_stickiness_config().cloned()),
        };
        let mut updated = action.clone();
        // With several groups, ForwardConfig alone names them.
        updated.target_group_arn = None;
        updated.forward_config = Some(
            ForwardActionConfig::builder()
                .set_target_groups(Some(groups))
                .set_target_group_stickiness_config(stickiness)
                .build(),
        );
        actions[index] = updated;
        // DescribeListeners never returns an OIDC client secret: keep the one set.
        for a in &mut actions {
            if let Some(oidc) = a.authenticate_oidc_config.as_mut() {
                if oidc.client_secret.is_none() {
                    oidc.use_existing_client_secret = Some(true);
                }
            }
        }
        Ok(actions)
    }

    fn weights_of(snapshot: &Snapshot, actions: &[Action]) -> Weights {
        let forwarded: BTreeMap<String, u32> = forward(actions)
            .map(|(_, a)| forward_weights(a).into_iter().collect())
            .unwrap_or_default();
        snapshot
            .members
            .iter()
            .map(|(m, arn)| (m.clone(), forwarded.get(arn).copied().unwrap_or(0)))
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }

    async fn read_leases(&self) -> Result<Vec<(String, Lease)>, TrafficError> {
        let tags = api::tags(&self.client, self.target.arn()).await?;
        Ok(tags
            .into_iter()
            .filter(|(k, _)| k.starts_with(LEASE_TAG))
            .filter_map(|(k, v)| Some((k, decode_tag(&v)?)))
            .collect())
    }

    async fn remove_lease_tags(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = api::remove_tags(&self.client, self.target.arn(), &keys).await {
            tracing::warn!("could not remove lease tags {}: {e}", keys.join(", "));
        }
    }
}

fn held(resource: String, lease: &Lease) -> TrafficError {
    TrafficError::LeaseHeld {
        resource,
        holder: lease.holder.clone(),
        expires: lease.expires.to_rfc3339(),
    }
}

impl Router for AlbRouter {
    fn kind(&self) -> &'static str {
        "alb"
    }

    fn resource(&self) -> BTreeMap<String, String> {
        let key = match self.target {
            Target::Listener(_) => "listener_arn",
            Target::Rule(_) => "rule_arn",
        };
        BTreeMap::from([(key.to_owned(), self.target.arn().to_owned())])
    }

    fn id(&self) -> String {
        format!("alb:{}", self.target.arn())
    }

    async fn read(&self) -> Result<Group, TrafficError> {
        let actions = self.actions().await?;
        let Some((_, action)) = forward(&actions) else {
            return Err(TrafficError::NotWeighted {
                route: self.id(),
                detail: format!(
                    "it has no forward action (actions: {})",
                    actions
                        .iter()
                        .filter_map(|a| a.r#type().map(|t| t.as_str().to_owned()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let forwarded = forward_weights(action);
        let members = self.resolve(&forwarded).await?;
        if let Some((arn, _)) = forwarded
            .iter()
            .find(|(arn, w)| *w > 0 && !members.values().any(|m| m == arn))
        {
            return Err(TrafficError::NotWeighted {
                route: self.id(),
                detail: format!(
                    "it forwards traffic to target group {arn}, which is no --member; name every group it forwards to"
                ),
            });
        }
        let snapshot = Snapshot { actions, members };
        let weights = Self::weights_of(&snapshot, &snapshot.actions);
        if let Ok(mut last) = self.last.lock() {
            *last = snapshot;
        }
        Ok(Group {
            weights,
            settle: Duration::ZERO,
        })
    }

    async fn apply(&self, weights: &Weights) -> Result<Applied, TrafficError> {
        let snapshot = self.snapshot();
        if let Some((m, w)) = weights.iter().find(|(_, w)| **w > MAX_WEIGHT) {
            return Err(error(
                "elbv2:ModifyListener",
                format!("weight {w} for {m} is above the ALB limit {MAX_WEIGHT}"),
            ));
        }
        let now = Self::weights_of(&snapshot, &snapshot.actions);
        if self.stickiness.is_none() && weights.iter().all(|(k, v)| now.get(k) == Some(v)) {
            return Ok(Applied {
                reference: None,
                in_sync: true,
            });
        }
        let actions = self.with_weights(&snapshot, weights)?;
        let answered = match &self.target {
            Target::Listener(arn) => {
                api::modify_listener_actions(&self.client, arn, actions).await?
            }
            Target::Rule(arn) => api::modify_rule_actions(&self.client, arn, actions).await?,
        };
        // The response carries the actions as the service now has them.
        let back = Self::weights_of(&snapshot, &answered);
        if weights.iter().any(|(k, v)| back.get(k) != Some(v)) {
            return Err(TrafficError::ReadBack {
                route: self.id(),
                expected: format_weights(weights),
                found: format_weights(&back),
            });
        }
        Ok(Applied {
            reference: None,
            in_sync: true,
        })
    }

    async fn wait_applied(
        &self,
        _applied: &Applied,
        _deadline: Instant,
        _cancel: &CancellationToken,
    ) -> Result<(), TrafficError> {
        Ok(())
    }

    fn describe_change(&self, from: &Weights, to: &Weights) -> String {
        let call = match self.target {
            Target::Listener(_) => "ModifyListener",
            Target::Rule(_) => "ModifyRule",
        };
        let changes: Vec<String> = to
            .iter()
            .filter(|(k, v)| from.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} weight {}→{v}", from.get(k).copied().unwrap_or(0)))
            .collect();
        if changes.is_empty() && self.stickiness.is_none() {
            return "no change (weights already set)".to_owned();
        }
        let mut text = format!(
            "one {call} of {}: {}",
            self.target.arn(),
            changes.join(", ")
        );
        if let Some(d) = self.stickiness {
            let _ = write!(text, "; stickiness {} s", d.as_secs());
        }
        text
    }

    async fn acquire_lease(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, TrafficError> {
        let now = Utc::now();
        let existing = self.read_leases().await?;
        let others: Vec<&Lease> = existing
            .iter()
            .map(|(_, l)| l)
            .filter(|l| ours.is_none_or(|o| !o.same_run(l)))
            .collect();
        if let Some(first) = first_live(others.iter().copied(), now) {
            return Err(held(self.lease_resource(), first));
        }
        // Expired leases, and this deployment's own old one, go.
        let stale: Vec<String> = existing.iter().map(|(k, _)| k.clone()).collect();
        if !stale.is_empty() {
            tracing::info!("removing {} expired or own lease tag(s)", stale.len());
        }
        self.remove_lease_tags(stale).await;

        let lease = Lease::new(request);
        let key = format!("{LEASE_TAG}{}", lease.token);
        let taken = Instant::now();
        api::add_tag(&self.client, self.target.arn(), &key, &tag_value(&lease)).await?;
        let confirm_at = taken + self.write_limit;
        if Instant::now() > confirm_at {
            self.remove_lease_tags(vec![key]).await;
            return Err(error(
                "elbv2:AddTags",
                format!(
                    "writing the lease tag took longer than {} ms; run again",
                    self.write_limit.as_millis()
                ),
            ));
        }
        tokio::time::sleep_until(confirm_at).await;
        let leases: Vec<Lease> = self
            .read_leases()
            .await?
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        match first_live(&leases, Utc::now()) {
            Some(first) if first.same_run(&lease) => Ok(lease),
            first => {
                self.remove_lease_tags(vec![key]).await;
                Err(match first {
                    Some(f) => held(self.lease_resource(), f),
                    None => error(
                        "elbv2:DescribeTags",
                        "the lease tag just written is not listed".to_owned(),
                    ),
                })
            }
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), TrafficError> {
        api::remove_tags(
            &self.client,
            self.target.arn(),
            &[format!("{LEASE_TAG}{}", lease.token)],
        )
        .await?;
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<Lease>, TrafficError> {
        Ok(self
            .read_leases()
            .await?
            .into_iter()
            .map(|(_, l)| l)
            .collect())
    }

    fn lease_resource(&self) -> String {
        format!("tag {LEASE_TAG}* on {}", self.target.arn())
    }
}

/// The IAM policy of shifting the weights of `target` (and holding its lease
/// tag); `by_name` when members are target group names to look up.
pub fn policy(target: &Target, by_name: bool) -> crate::aws::iam::Policy {
    let mut policy = crate::aws::iam::Policy::new();
    let (modify, describe) = match target {
        Target::Listener(_) => (
            "elasticloadbalancing:ModifyListener",
            "elasticloadbalancing:DescribeListeners",
        ),
        Target::Rule(_) => (
            "elasticloadbalancing:ModifyRule",
            "elasticloadbalancing:DescribeRules",
        ),
    };
    policy.allow("ShiftWeights", &[modify], [target.arn().to_owned()]);
    lease_tags_policy(
        &mut policy,
        target,
        &[
            "elasticloadbalancing:AddTags",
            "elasticloadbalancing:RemoveTags",
        ],
    );
    // The Describe* calls of ELBv2 have no resource level.
    let mut reads = vec![describe, "elasticloadbalancing:DescribeTags"];
    if by_name {
        reads.push("elasticloadbalancing:DescribeTargetGroups");
    }
    policy.allow("ReadRoute", &reads, ["*"]);
    policy
}

/// Allows `actions` (AddTags, RemoveTags) on the lease tags of `target` only.
pub fn lease_tags_policy(policy: &mut crate::aws::iam::Policy, target: &Target, actions: &[&str]) {
    use crate::aws::iam::condition as c;
    policy
        .allow("LeaseTags", actions, [target.arn().to_owned()])
        .when(
            "LeaseTags",
            c::ALL_LIKE,
            c::TAG_KEYS,
            [format!("{LEASE_TAG}*")],
        );
}

#[cfg(test)]
#[path = "alb_tests.rs"]
mod tests;
