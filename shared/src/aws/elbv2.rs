//! Elastic Load Balancing v2 calls used by the steps: reading target groups
//! (type, port, deregistration delay), registering and deregistering one
//! target, and reading that target's health (register-host); reading and
//! replacing the actions of a listener or a listener rule, and the tags of a
//! resource (the ALB router of shift-weight); the load balancers of target
//! groups, their listeners and rules (verify-health's way in through them).

use std::time::Duration;

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, Listener, Rule, Tag, TargetDescription, TargetHealthReasonEnum,
};
use aws_sdk_elasticloadbalancingv2::Client;
use serde::Serialize;

use super::ProviderError;

/// The attribute that bounds how long a deregistered target drains.
pub const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";

/// The error code of a target group that does not exist.
pub const TARGET_GROUP_NOT_FOUND: &str = "TargetGroupNotFound";

/// AWS's default deregistration delay, used when a group does not report one.
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(300);

/// A target group as DescribeTargetGroups returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    /// Its ARN.
    pub arn: String,
    /// Its name.
    pub name: String,
    /// `instance`, `ip`, `lambda` or `alb`.
    pub target_type: String,
    /// The port targets receive traffic on unless registered with another.
    pub port: Option<u16>,
}

/// One target of a group: an instance id or an IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Instance id (`instance` groups) or IP address (`ip` groups).
    pub id: String,
    /// The port it receives traffic on.
    pub port: u16,
    /// `all` for an IP address outside the group's VPC (a host off AWS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
}

impl Target {
    fn description(&self) -> TargetDescription {
        TargetDescription::builder()
            .id(&self.id)
            .port(i32::from(self.port))
            .set_availability_zone(self.availability_zone.clone())
            .build()
    }
}

/// A target's health as DescribeTargetHealth reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetHealth {
    /// `initial`, `healthy`, `unhealthy`, `unhealthy.draining`, `unused`, `draining` or `unavailable`.
    pub state: String,
    /// The reason code, e.g. `Target.NotRegistered`, `Target.DeregistrationInProgress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The service's own words about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl TargetHealth {
    /// The health of a target the group does not list at all.
    pub fn absent() -> Self {
        Self {
            state: "unused".to_owned(),
            reason: Some(TargetHealthReasonEnum::NotRegistered.as_str().to_owned()),
            description: Some("not listed by the target group".to_owned()),
        }
    }

    /// Whether the target is not registered (or no longer is).
    pub fn is_not_registered(&self) -> bool {
        self.reason.as_deref() == Some(TargetHealthReasonEnum::NotRegistered.as_str())
    }

    /// Whether the target is draining: deregistered, with requests still in flight.
    pub fn is_draining(&self) -> bool {
        matches!(self.state.as_str(), "draining" | "unhealthy.draining")
            || self.reason.as_deref()
                == Some(TargetHealthReasonEnum::DeregistrationInProgress.as_str())
    }

    /// Whether the target takes traffic: healthy, or registered in a group
    /// whose health checks are disabled.
    pub fn is_serving(&self) -> bool {
        self.state == "healthy"
            || (self.state == "unavailable"
                && self.reason.as_deref()
                    == Some(TargetHealthReasonEnum::HealthCheckDisabled.as_str()))
    }

    /// Whether the load balancer has judged the target: healthy, unhealthy
    /// or unavailable; not `initial` (checks not done yet), draining, or
    /// not registered (yet).
    pub fn is_judged(&self) -> bool {
        matches!(self.state.as_str(), "healthy" | "unhealthy" | "unavailable")
    }

    /// `state (reason: description)`, for messages.
    pub fn describe(&self) -> String {
        match (&self.reason, &self.description) {
            (Some(r), Some(d)) => format!("{} ({r}: {d})", self.state),
            (Some(r), None) => format!("{} ({r})", self.state),
            (None, Some(d)) => format!("{} ({d})", self.state),
            (None, None) => self.state.clone(),
        }
    }
}

/// The target group with this ARN.
pub async fn describe_target_group(
    client: &Client,
    arn: &str,
) -> Result<TargetGroup, ProviderError> {
    let out = client
        .describe_target_groups()
        .target_group_arns(arn)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeTargetGroups", &e))?;
    out.target_groups()
        .iter()
        .find(|g| g.target_group_arn() == Some(arn))
        .map(|g| TargetGroup {
            arn: arn.to_owned(),
            name: g.target_group_name().unwrap_or_default().to_owned(),
            target_type: g
                .target_type()
                .map_or("instance", |t| t.as_str())
                .to_owned(),
            port: g.port().and_then(|p| u16::try_from(p).ok()),
        })
        .ok_or_else(|| ProviderError {
            operation: "elbv2:DescribeTargetGroups",
            code: Some(TARGET_GROUP_NOT_FOUND.to_owned()),
            message: format!("{TARGET_GROUP_NOT_FOUND}: no target group {arn}"),
        })
}

/// The group's deregistration delay: how long a deregistered target drains at most.
pub async fn deregistration_delay(client: &Client, arn: &str) -> Result<Duration, ProviderError> {
    let out = client
        .describe_target_group_attributes()
        .target_group_arn(arn)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeTargetGroupAttributes", &e))?;
    Ok(out
        .attributes()
        .iter()
        .find(|a| a.key() == Some(DEREGISTRATION_DELAY))
        .and_then(|a| a.value())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_DEREGISTRATION_DELAY, Duration::from_secs))
}

/// Registers `target` in the group.
pub async fn register(client: &Client, arn: &str, target: &Target) -> Result<(), ProviderError> {
    client
        .register_targets()
        .target_group_arn(arn)
        .targets(target.description())
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:RegisterTargets", &e))?;
    Ok(())
}

/// Deregisters `target` from the group; it drains for up to the deregistration delay.
pub async fn deregister(client: &Client, arn: &str, target: &Target) -> Result<(), ProviderError> {
    client
        .deregister_targets()
        .target_group_arn(arn)
        .targets(target.description())
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DeregisterTargets", &e))?;
    Ok(())
}

/// The health of `target` in the group ([`TargetHealth::absent`] when the group does not list it).
pub async fn target_health(
    client: &Client,
    arn: &str,
    target: &Target,
) -> Result<TargetHealth, ProviderError> {
    let out = client
        .describe_target_health()
        .target_group_arn(arn)
        .targets(target.description())
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeTargetHealth", &e))?;
    let described = out.target_health_descriptions().iter().find(|d| {
        d.target().and_then(TargetDescription::id) == Some(target.id.as_str())
            && d.target()
                .and_then(TargetDescription::port)
                .is_none_or(|p| p == i32::from(target.port))
    });
    Ok(match described.and_then(|d| d.target_health()) {
        Some(h) => TargetHealth {
            state: h.state().map_or("unknown", |s| s.as_str()).to_owned(),
            reason: h.reason().map(|r| r.as_str().to_owned()),
            description: h.description().map(str::to_owned),
        },
        None => TargetHealth::absent(),
    })
}

/// Every target of the group `arn` with its health, in one call.
pub async fn group_health(
    client: &Client,
    arn: &str,
) -> Result<Vec<(Target, TargetHealth)>, ProviderError> {
    let out = client
        .describe_target_health()
        .target_group_arn(arn)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeTargetHealth", &e))?;
    Ok(out
        .target_health_descriptions()
        .iter()
        .filter_map(|d| {
            let t = d.target()?;
            let target = Target {
                id: t.id()?.to_owned(),
                port: t.port().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                availability_zone: t.availability_zone().map(str::to_owned),
            };
            let health = d
                .target_health()
                .map_or_else(TargetHealth::absent, |h| TargetHealth {
                    state: h.state().map_or("unknown", |s| s.as_str()).to_owned(),
                    reason: h.reason().map(|r| r.as_str().to_owned()),
                    description: h.description().map(str::to_owned),
                });
            Some((target, health))
        })
        .collect())
}

/// The error code of a listener that does not exist.
pub const LISTENER_NOT_FOUND: &str = "ListenerNotFound";

/// The error code of a rule that does not exist.
pub const RULE_NOT_FOUND: &str = "RuleNotFound";

fn not_found(operation: &'static str, code: &str, what: &str) -> ProviderError {
    ProviderError {
        operation,
        code: Some(code.to_owned()),
        message: format!("{code}: no {what}"),
    }
}

/// The default actions of the listener `arn`.
pub async fn listener_actions(client: &Client, arn: &str) -> Result<Vec<Action>, ProviderError> {
    let out = client
        .describe_listeners()
        .listener_arns(arn)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeListeners", &e))?;
    out.listeners()
        .iter()
        .find(|l| l.listener_arn() == Some(arn))
        .map(|l| l.default_actions().to_vec())
        .ok_or_else(|| {
            not_found(
                "elbv2:DescribeListeners",
                LISTENER_NOT_FOUND,
                &format!("listener {arn}"),
            )
        })
}

/// The actions of the listener rule `arn`.
pub async fn rule_actions(client: &Client, arn: &str) -> Result<Vec<Action>, ProviderError> {
    let out = client
        .describe_rules()
        .rule_arns(arn)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeRules", &e))?;
    out.rules()
        .iter()
        .find(|r| r.rule_arn() == Some(arn))
        .map(|r| r.actions().to_vec())
        .ok_or_else(|| {
            not_found(
                "elbv2:DescribeRules",
                RULE_NOT_FOUND,
                &format!("listener rule {arn}"),
            )
        })
}

/// Replaces the listener's default actions in one ModifyListener; returns
/// the actions it reports afterwards.
pub async fn modify_listener_actions(
    client: &Client,
    arn: &str,
    actions: Vec<Action>,
) -> Result<Vec<Action>, ProviderError> {
    let out = client
        .modify_listener()
        .listener_arn(arn)
        .set_default_actions(Some(actions))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:ModifyListener", &e))?;
    Ok(out
        .listeners()
        .iter()
        .find(|l| l.listener_arn() == Some(arn))
        .map(|l| l.default_actions().to_vec())
        .unwrap_or_default())
}

/// Replaces the rule's actions in one ModifyRule (its conditions are left
/// as they are); returns the actions it reports afterwards.
pub async fn modify_rule_actions(
    client: &Client,
    arn: &str,
    actions: Vec<Action>,
) -> Result<Vec<Action>, ProviderError> {
    let out = client
        .modify_rule()
        .rule_arn(arn)
        .set_actions(Some(actions))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:ModifyRule", &e))?;
    Ok(out
        .rules()
        .iter()
        .find(|r| r.rule_arn() == Some(arn))
        .map(|r| r.actions().to_vec())
        .unwrap_or_default())
}

/// Target group ARN -> weight of a forward action (a plain `TargetGroupArn`
/// forward is one group of weight 1). ALB treats an unset weight as 1.
pub fn forward_weights(action: &Action) -> Vec<(String, u32)> {
    match action.forward_config() {
        Some(config) if !config.target_groups().is_empty() => config
            .target_groups()
            .iter()
            .filter_map(|t| {
                Some((
                    t.target_group_arn()?.to_owned(),
                    t.weight().map_or(1, |w| u32::try_from(w).unwrap_or(0)),
                ))
            })
            .collect(),
        _ => action
            .target_group_arn()
            .map(|a| vec![(a.to_owned(), 1)])
            .unwrap_or_default(),
    }
}

/// A load balancer as DescribeLoadBalancers returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    /// Its ARN.
    pub arn: String,
    /// Its name.
    pub name: String,
    /// Its DNS name.
    pub dns_name: String,
    /// `internet-facing` or `internal`.
    pub scheme: String,
}

/// The load balancers the target groups `arns` are attached to (through a
/// listener or rule), each once, in the order first found.
pub async fn load_balancers_of(
    client: &Client,
    arns: &[String],
) -> Result<Vec<LoadBalancer>, ProviderError> {
    let mut attached: Vec<String> = Vec::new();
    for arn in describe_groups(client, arns)
        .await?
        .iter()
        .flat_map(aws_sdk_elasticloadbalancingv2::types::TargetGroup::load_balancer_arns)
    {
        if !attached.contains(arn) {
            attached.push(arn.clone());
        }
    }
    if attached.is_empty() {
        return Ok(Vec::new());
    }
    let out = client
        .describe_load_balancers()
        .set_load_balancer_arns(Some(attached.clone()))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeLoadBalancers", &e))?;
    Ok(attached
        .iter()
        .filter_map(|arn| {
            let lb = out
                .load_balancers()
                .iter()
                .find(|l| l.load_balancer_arn() == Some(arn))?;
            Some(LoadBalancer {
                arn: arn.clone(),
                name: lb.load_balancer_name().unwrap_or_default().to_owned(),
                dns_name: lb.dns_name()?.to_owned(),
                scheme: lb
                    .scheme()
                    .map_or("internet-facing", |s| s.as_str())
                    .to_owned(),
            })
        })
        .collect())
}

/// Every listener of the load balancer `arn`.
pub async fn listeners(client: &Client, arn: &str) -> Result<Vec<Listener>, ProviderError> {
    client
        .describe_listeners()
        .load_balancer_arn(arn)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeListeners", &e))
}

/// Every rule of the listener `arn`, its default rule included.
pub async fn rules(client: &Client, arn: &str) -> Result<Vec<Rule>, ProviderError> {
    client
        .describe_rules()
        .listener_arn(arn)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeRules", &e))
}

/// The target groups `arns`, as DescribeTargetGroups returns them.
async fn describe_groups(
    client: &Client,
    arns: &[String],
) -> Result<Vec<aws_sdk_elasticloadbalancingv2::types::TargetGroup>, ProviderError> {
    let out = client
        .describe_target_groups()
        .set_target_group_arns(Some(arns.to_vec()))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeTargetGroups", &e))?;
    Ok(out.target_groups.unwrap_or_default())
}

/// Target group names by ARN (DescribeTargetGroups of `arns`).
pub async fn target_group_names(
    client: &Client,
    arns: &[String],
) -> Result<BTreeMap<String, String>, ProviderError> {
    Ok(describe_groups(client, arns)
        .await?
        .iter()
        .filter_map(|g| {
            Some((
                g.target_group_arn()?.to_owned(),
                g.target_group_name()?.to_owned(),
            ))
        })
        .collect())
}

/// Target group ARNs by name (DescribeTargetGroups of `names`).
pub async fn target_group_arns(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, String>, ProviderError> {
    let out = client
        .describe_target_groups()
        .set_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeTargetGroups", &e))?;
    Ok(out
        .target_groups()
        .iter()
        .filter_map(|g| {
            Some((
                g.target_group_name()?.to_owned(),
                g.target_group_arn()?.to_owned(),
            ))
        })
        .collect())
}

/// The tags of the resource `arn` (a load balancer, listener, rule or target group).
pub async fn tags(client: &Client, arn: &str) -> Result<BTreeMap<String, String>, ProviderError> {
    let out = client
        .describe_tags()
        .resource_arns(arn)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:DescribeTags", &e))?;
    Ok(out
        .tag_descriptions()
        .iter()
        .filter(|d| d.resource_arn() == Some(arn))
        .flat_map(aws_sdk_elasticloadbalancingv2::types::TagDescription::tags)
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect())
}

/// Adds (or overwrites) one tag on `arn`.
pub async fn add_tag(
    client: &Client,
    arn: &str,
    key: &str,
    value: &str,
) -> Result<(), ProviderError> {
    client
        .add_tags()
        .resource_arns(arn)
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:AddTags", &e))?;
    Ok(())
}

/// Removes the tags `keys` from `arn`.
pub async fn remove_tags(client: &Client, arn: &str, keys: &[String]) -> Result<(), ProviderError> {
    client
        .remove_tags()
        .resource_arns(arn)
        .set_tag_keys(Some(keys.to_vec()))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("elbv2:RemoveTags", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(state: &str, reason: Option<&str>) -> TargetHealth {
        TargetHealth {
            state: state.into(),
            reason: reason.map(Into::into),
            description: None,
        }
    }

    #[test]
    fn states_are_classified() {
        assert!(TargetHealth::absent().is_not_registered());
        assert!(health("unused", Some("Target.NotRegistered")).is_not_registered());
        assert!(!health("unused", Some("Target.NotInUse")).is_not_registered());
        assert!(health("draining", Some("Target.DeregistrationInProgress")).is_draining());
        assert!(health("unhealthy.draining", None).is_draining());
        assert!(health("healthy", None).is_serving());
        assert!(health("unavailable", Some("Target.HealthCheckDisabled")).is_serving());
        assert!(!health("initial", Some("Elb.InitialHealthChecking")).is_serving());
        assert_eq!(
            health("unhealthy", Some("Target.Timeout")).describe(),
            "unhealthy (Target.Timeout)"
        );
    }
}
