//! EC2 Auto Scaling calls used by the steps: completing a lifecycle action,
//! so that a group waiting on a hook (a launching or terminating instance)
//! goes on at once instead of at the hook's heartbeat time-out; and the
//! groups and scaling policies of deploy-standby's `asg` driver.

use std::collections::BTreeMap;

use aws_sdk_autoscaling::types::{
    LaunchTemplateSpecification, LifecycleHookSpecification, MetricType,
    PredefinedMetricSpecification, Tag, TargetTrackingConfiguration,
};
use aws_sdk_autoscaling::Client;

use super::ProviderError;

/// What a completed lifecycle action tells the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleResult {
    /// Go on: launch into service, or terminate.
    Continue,
    /// Give up: a launching instance is terminated; a terminating one is terminated all the same.
    Abandon,
}

impl LifecycleResult {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "CONTINUE",
            Self::Abandon => "ABANDON",
        }
    }
}

/// Completes the lifecycle action of `hook` in group `group` for `instance_id`.
pub async fn complete_lifecycle_action(
    client: &Client,
    hook: &str,
    group: &str,
    instance_id: &str,
    result: LifecycleResult,
) -> Result<(), ProviderError> {
    client
        .complete_lifecycle_action()
        .lifecycle_hook_name(hook)
        .auto_scaling_group_name(group)
        .instance_id(instance_id)
        .lifecycle_action_result(result.as_str())
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:CompleteLifecycleAction", &e))?;
    Ok(())
}

/// Records a heartbeat of the lifecycle action of `hook` in group `group`
/// for `instance_id`: the hook's heartbeat time-out starts again, so the
/// instance keeps waiting (up to the hook's global time-out, 48 hours or 100
/// heartbeats, whichever is less).
pub async fn record_lifecycle_action_heartbeat(
    client: &Client,
    hook: &str,
    group: &str,
    instance_id: &str,
) -> Result<(), ProviderError> {
    client
        .record_lifecycle_action_heartbeat()
        .lifecycle_hook_name(hook)
        .auto_scaling_group_name(group)
        .instance_id(instance_id)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:RecordLifecycleActionHeartbeat", &e))?;
    Ok(())
}

/// The API name of the transition that makes a terminating instance wait.
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// A lifecycle hook of a group, as PutLifecycleHook and
/// DescribeLifecycleHooks spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Its name.
    pub name: String,
    /// `autoscaling:EC2_INSTANCE_TERMINATING` or `..._LAUNCHING`.
    pub transition: String,
    /// Seconds an instance waits without a heartbeat before `default_result` is taken.
    pub heartbeat_secs: u32,
    /// `CONTINUE` or `ABANDON`.
    pub default_result: String,
}

impl Hook {
    fn specification(&self) -> LifecycleHookSpecification {
        LifecycleHookSpecification::builder()
            .lifecycle_hook_name(&self.name)
            .lifecycle_transition(&self.transition)
            .heartbeat_timeout(int(self.heartbeat_secs))
            .default_result(&self.default_result)
            .build()
    }
}

/// The lifecycle hooks of group `group`.
pub async fn describe_lifecycle_hooks(
    client: &Client,
    group: &str,
) -> Result<Vec<Hook>, ProviderError> {
    let out = client
        .describe_lifecycle_hooks()
        .auto_scaling_group_name(group)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:DescribeLifecycleHooks", &e))?;
    Ok(out
        .lifecycle_hooks()
        .iter()
        .map(|h| Hook {
            name: h.lifecycle_hook_name().unwrap_or_default().to_owned(),
            transition: h.lifecycle_transition().unwrap_or_default().to_owned(),
            heartbeat_secs: u32::try_from(h.heartbeat_timeout().unwrap_or(3600)).unwrap_or(0),
            default_result: h.default_result().unwrap_or("ABANDON").to_owned(),
        })
        .collect())
}

/// Creates or replaces the lifecycle hook `hook.name` of group `group`.
pub async fn put_lifecycle_hook(
    client: &Client,
    group: &str,
    hook: &Hook,
) -> Result<(), ProviderError> {
    client
        .put_lifecycle_hook()
        .auto_scaling_group_name(group)
        .lifecycle_hook_name(&hook.name)
        .lifecycle_transition(&hook.transition)
        .heartbeat_timeout(int(hook.heartbeat_secs))
        .default_result(&hook.default_result)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:PutLifecycleHook", &e))?;
    Ok(())
}

/// An Auto Scaling group as DescribeAutoScalingGroups reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Desired, minimum and maximum capacity.
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// The launch template it launches from: id and version (`3`, `$Latest`).
    pub launch_template: Option<(String, String)>,
    /// Its instances.
    pub instances: Vec<GroupInstance>,
    /// The target groups its instances are registered with.
    pub target_groups: Vec<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// An instance of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInstance {
    /// The instance id.
    pub id: String,
    /// `Pending`, `InService`, `Terminating`, `Terminated`, ...
    pub lifecycle: String,
    /// `Healthy` or `Unhealthy`.
    pub health: String,
    /// The launch template version it was launched from, when reported.
    pub template_version: Option<String>,
}

impl GroupInstance {
    /// Whether it serves: InService and Healthy.
    pub fn in_service(&self) -> bool {
        self.lifecycle == "InService" && self.health == "Healthy"
    }

    /// Whether it is on its way out (Terminating, Terminated, Detaching, ...).
    pub fn leaving(&self) -> bool {
        self.lifecycle.starts_with("Terminat")
            || self.lifecycle.starts_with("Detach")
            || self.lifecycle.starts_with("EnteringStandby")
            || self.lifecycle == "Standby"
    }
}

/// The group named `name`, or `None` when there is none.
pub async fn describe_group(client: &Client, name: &str) -> Result<Option<Group>, ProviderError> {
    let out = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:DescribeAutoScalingGroups", &e))?;
    let Some(g) = out
        .auto_scaling_groups()
        .iter()
        .find(|g| g.auto_scaling_group_name() == Some(name))
    else {
        return Ok(None);
    };
    Ok(Some(group_from(g)))
}

/// Every group tagged `service=<service>` (deploy-standby tags its groups
/// so), across every page.
pub async fn groups_of_service(
    client: &Client,
    service: &str,
) -> Result<Vec<Group>, ProviderError> {
    let mut groups = Vec::new();
    let mut pages = client
        .describe_auto_scaling_groups()
        .filters(
            aws_sdk_autoscaling::types::Filter::builder()
                .name("tag:service")
                .values(service)
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::from_sdk("autoscaling:DescribeAutoScalingGroups", &e))?;
        groups.extend(page.auto_scaling_groups().iter().map(group_from));
    }
    Ok(groups)
}

fn group_from(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> Group {
    let size = |v: Option<i32>| u32::try_from(v.unwrap_or(0)).unwrap_or(0);
    Group {
        name: g.auto_scaling_group_name().unwrap_or_default().to_owned(),
        desired: size(g.desired_capacity()),
        min: size(g.min_size()),
        max: size(g.max_size()),
        launch_template: g.launch_template().and_then(|t| {
            Some((
                t.launch_template_id()?.to_owned(),
                t.version().unwrap_or("$Default").to_owned(),
            ))
        }),
        instances: g
            .instances()
            .iter()
            .map(|i| GroupInstance {
                id: i.instance_id().unwrap_or_default().to_owned(),
                lifecycle: i
                    .lifecycle_state()
                    .map_or("Unknown", |s| s.as_str())
                    .to_owned(),
                health: i.health_status().unwrap_or("Unknown").to_owned(),
                template_version: i
                    .launch_template()
                    .and_then(|t| t.version())
                    .map(str::to_owned),
            })
            .collect(),
        target_groups: g.target_group_arns().to_vec(),
        tags: g
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
            .collect(),
    }
}

/// What a new group is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    pub name: String,
    /// Launch template id and version.
    pub template_id: String,
    pub template_version: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    /// Subnet ids (the VPC zone identifier).
    pub subnets: Vec<String>,
    pub target_groups: Vec<String>,
    /// `EC2` or `ELB`.
    pub health_check_type: String,
    pub grace_period_secs: u32,
    /// Tags of the group, propagated to its instances at launch.
    pub tags: BTreeMap<String, String>,
    /// Lifecycle hooks made with the group, before its first instance launches.
    pub hooks: Vec<Hook>,
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn template_spec(id: &str, version: &str) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder()
        .launch_template_id(id)
        .version(version)
        .build()
}

fn group_tags(group: &str, tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .resource_id(group)
                .resource_type("auto-scaling-group")
                .key(k)
                .value(v)
                .propagate_at_launch(true)
                .build()
        })
        .collect()
}

/// Creates a group. A group of that name that already exists is the one an
/// earlier attempt made (its answer lost, the call retried): it is given the
/// same template, capacity and tags instead.
pub async fn create_group(client: &Client, group: &NewGroup) -> Result<(), ProviderError> {
    match create_group_once(client, group).await {
        Err(e) if e.code.as_deref() == Some("AlreadyExists") => {
            tracing::info!(
                "group {} exists already (an earlier attempt made it): updating it",
                group.name
            );
            update_group(
                client,
                &group.name,
                Some((&group.template_id, &group.template_version)),
                group.min,
                group.max,
                group.desired,
            )
            .await?;
            tag_group(client, &group.name, &group.tags).await?;
            let have = describe_lifecycle_hooks(client, &group.name).await?;
            for hook in group.hooks.iter().filter(|h| !have.contains(h)) {
                put_lifecycle_hook(client, &group.name, hook).await?;
            }
            Ok(())
        }
        other => other,
    }
}

async fn create_group_once(client: &Client, group: &NewGroup) -> Result<(), ProviderError> {
    client
        .create_auto_scaling_group()
        .auto_scaling_group_name(&group.name)
        .launch_template(template_spec(&group.template_id, &group.template_version))
        .min_size(int(group.min))
        .max_size(int(group.max))
        .desired_capacity(int(group.desired))
        .vpc_zone_identifier(group.subnets.join(","))
        .set_target_group_arns(
            (!group.target_groups.is_empty()).then(|| group.target_groups.clone()),
        )
        .health_check_type(&group.health_check_type)
        .health_check_grace_period(int(group.grace_period_secs))
        .set_tags(Some(group_tags(&group.name, &group.tags)))
        .set_lifecycle_hook_specification_list(
            (!group.hooks.is_empty())
                .then(|| group.hooks.iter().map(Hook::specification).collect()),
        )
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:CreateAutoScalingGroup", &e))?;
    Ok(())
}

/// Points a group at a launch template version and sets its capacity.
pub async fn update_group(
    client: &Client,
    name: &str,
    template: Option<(&str, &str)>,
    min: u32,
    max: u32,
    desired: u32,
) -> Result<(), ProviderError> {
    client
        .update_auto_scaling_group()
        .auto_scaling_group_name(name)
        .set_launch_template(template.map(|(id, v)| template_spec(id, v)))
        .min_size(int(min))
        .max_size(int(max))
        .desired_capacity(int(desired))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:UpdateAutoScalingGroup", &e))?;
    Ok(())
}

/// Sets tags on a group (propagated to instances launched from now on).
pub async fn tag_group(
    client: &Client,
    name: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    client
        .create_or_update_tags()
        .set_tags(Some(group_tags(name, tags)))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:CreateOrUpdateTags", &e))?;
    Ok(())
}

/// A scaling policy of a group.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Simple scaling: change the capacity by `adjustment` instances, then wait `cooldown_secs`.
    Simple { adjustment: i32, cooldown_secs: u32 },
    /// Target tracking on the group's average CPU.
    CpuTarget { target: f64 },
}

/// A policy as DescribePolicies reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInfo {
    pub name: String,
    pub arn: String,
    pub policy: Option<Policy>,
}

/// The scaling policies of a group.
pub async fn describe_policies(
    client: &Client,
    group: &str,
) -> Result<Vec<PolicyInfo>, ProviderError> {
    let out = client
        .describe_policies()
        .auto_scaling_group_name(group)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:DescribePolicies", &e))?;
    Ok(out
        .scaling_policies()
        .iter()
        .map(|p| {
            let policy = match p.policy_type() {
                Some("TargetTrackingScaling") => {
                    p.target_tracking_configuration()
                        .map(|t| Policy::CpuTarget {
                            target: t.target_value().unwrap_or_default(),
                        })
                }
                _ => p.scaling_adjustment().map(|adjustment| Policy::Simple {
                    adjustment,
                    cooldown_secs: u32::try_from(p.cooldown().unwrap_or(0)).unwrap_or(0),
                }),
            };
            PolicyInfo {
                name: p.policy_name().unwrap_or_default().to_owned(),
                arn: p.policy_arn().unwrap_or_default().to_owned(),
                policy,
            }
        })
        .collect())
}

/// Creates or replaces the policy `name` of `group`; returns its ARN.
pub async fn put_policy(
    client: &Client,
    group: &str,
    name: &str,
    policy: &Policy,
) -> Result<String, ProviderError> {
    let request = client
        .put_scaling_policy()
        .auto_scaling_group_name(group)
        .policy_name(name);
    let request = match policy {
        Policy::Simple {
            adjustment,
            cooldown_secs,
        } => request
            .policy_type("SimpleScaling")
            .adjustment_type("ChangeInCapacity")
            .scaling_adjustment(*adjustment)
            .cooldown(int(*cooldown_secs)),
        Policy::CpuTarget { target } => request
            .policy_type("TargetTrackingScaling")
            .target_tracking_configuration(
                TargetTrackingConfiguration::builder()
                    .predefined_metric_specification(
                        PredefinedMetricSpecification::builder()
                            .predefined_metric_type(MetricType::AsgAverageCpuUtilization)
                            .build(),
                    )
                    .target_value(*target)
                    .build(),
            ),
    };
    let out = request
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:PutScalingPolicy", &e))?;
    Ok(out.policy_arn().unwrap_or_default().to_owned())
}

/// Deletes the policy `name` of `group`.
pub async fn delete_policy(client: &Client, group: &str, name: &str) -> Result<(), ProviderError> {
    client
        .delete_policy()
        .auto_scaling_group_name(group)
        .policy_name(name)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:DeletePolicy", &e))?;
    Ok(())
}
