//! The `asg` driver: one EC2 Auto Scaling group per color (`<service>-<color>`
//! by default), each launching from its own launch template of the same name.
//!
//! `up` makes a launch template version with the image, instance type,
//! user-data (base64, as the API takes it), IMDSv2 required and the tags
//! `service`, `color`, `version` (on the template and on every instance);
//! makes it the template's default; creates the group when it is missing, or
//! points it at that version; sizes it (desired = the active color's desired
//! capacity unless given, max twice that); puts the CPU scaling policies and
//! their alarms (or a target-tracking policy); puts the termination
//! lifecycle hook (`switchyard-drain` by default: a terminating instance
//! waits in Terminating:Wait until `register-host watch` on it has drained it
//! and completed the action, or until the heartbeat time-out, then CONTINUE),
//! with a new group in its CreateAutoScalingGroup call so that no instance
//! launches before the hook exists, on an existing group with
//! PutLifecycleHook only when it is missing or different; then waits, polling with
//! backoff, until the desired number of instances are InService and healthy
//! (and healthy in every target group of the group), and returns their
//! endpoints. Instances of an older version in the standby group are
//! replaced by scaling the group to zero first: the standby takes no traffic.
//!
//! Every step compares with what is there first, so a second identical run
//! changes nothing (no new template version when the latest one already
//! launches the same image, type, user-data and tags).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_config::SdkConfig;

use super::{StackDriver, StackError, StackSpec, StackStatus, Wait};
use crate::aws::autoscaling::{self as asg, Group, NewGroup, Policy};
use crate::aws::elbv2::{self, Target};
use crate::aws::launch_template::{self as lt, LaunchSpec};
use crate::aws::metric_alarms::{self, CpuAlarm};
use crate::aws::platform::{self, Launch, Platform};
use crate::aws::{Keep, ProviderError};
use crate::wait::progress::Pace;
use crate::wait::{self, Backoff, WaitEnd};

/// The SDK clients of one region.
#[derive(Debug, Clone)]
pub struct AsgClients {
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
}

impl AsgClients {
    /// Clients for the region of `config`.
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
        }
    }
}

/// The classic simple scaling pair: +1 instance when the average CPU is at
/// or above `up_threshold` for `evaluation_periods` periods of `period`, -1
/// when at or below `down_threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmScaling {
    pub up_threshold: f64,
    pub down_threshold: f64,
    pub period: Duration,
    pub evaluation_periods: u32,
    pub cooldown: Duration,
}

impl Default for AlarmScaling {
    fn default() -> Self {
        Self {
            up_threshold: 70.0,
            down_threshold: 10.0,
            period: Duration::from_secs(300),
            evaluation_periods: 1,
            cooldown: Duration::from_secs(300),
        }
    }
}

/// How the group scales.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    /// Scaling policies are left as they are.
    Unmanaged,
    /// Simple scaling policies with CPU alarms.
    Alarms(AlarmScaling),
    /// Target tracking on the average CPU, in percent.
    CpuTarget(f64),
}

/// What decides that a group's instance is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckType {
    /// The instance's EC2 status checks.
    Ec2,
    /// The load balancer's target health checks.
    Elb,
}

impl HealthCheckType {
    /// The name Auto Scaling's API gives it: `EC2` or `ELB`.
    pub fn api(self) -> &'static str {
        match self {
            Self::Ec2 => "EC2",
            Self::Elb => "ELB",
        }
    }
}

/// What every group of the release looks like, apart from its color.
#[derive(Debug, Clone)]
pub struct AsgSettings {
    /// The group (and launch template) name, with `{service}`, `{color}`, `{region}`.
    pub group_pattern: String,
    /// The instance type, e.g. `t3.micro` [default: the base template's, else `t3.micro`].
    pub instance_type: Option<String>,
    /// The platform's settings every instance keeps: a base launch
    /// template and the direct flags (instance profile, security groups,
    /// key pair, root volume size).
    pub platform: Platform,
    /// The user-data body (only its sha256 is ever written to the state).
    pub user_data: Option<Vec<u8>>,
    /// Subnet ids for a new group.
    pub subnets: Vec<String>,
    /// Target group ARNs for a new group.
    pub target_groups: Vec<String>,
    /// What decides an instance is unhealthy.
    pub health_check_type: HealthCheckType,
    /// Health check grace period of a new group.
    pub grace_period: Duration,
    /// Desired capacity; by default the `capacity_from` color's.
    pub desired: Option<u32>,
    /// Minimum capacity; by default the desired capacity.
    pub min: Option<u32>,
    /// Maximum capacity; by default twice the desired capacity.
    pub max: Option<u32>,
    /// The color whose group's desired capacity the standby copies.
    pub capacity_from: Option<String>,
    /// Scaling policies.
    pub scaling: Scaling,
    /// The port the service listens on.
    pub port: u16,
    /// How an instance's endpoint is written: `{ip}`, `{port}`, `{instance}`.
    pub endpoint_template: String,
    /// The termination lifecycle hook of every group (`None`: hooks are left alone).
    pub termination_hook: Option<TerminationHook>,
    /// Delays between polls.
    pub backoff: Backoff,
    /// How many versions of the template to keep when a new one is written.
    pub keep_versions: Keep,
}

/// The `EC2_INSTANCE_TERMINATING` lifecycle hook that holds a terminating
/// instance in Terminating:Wait until it has drained (its watcher completes
/// the action), or until `heartbeat` passes without a heartbeat; either way
/// the termination then goes on (DefaultResult CONTINUE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminationHook {
    /// The hook's name.
    pub name: String,
    /// The heartbeat time-out: 30 s to 7200 s, whole seconds.
    pub heartbeat: Duration,
}

impl TerminationHook {
    /// The name unless `--termination-hook` says otherwise; `register-host
    /// watch` completes the hook of this name by default.
    pub const DEFAULT_NAME: &'static str = "switchyard-drain";
    /// The heartbeat time-out unless `--termination-heartbeat` says otherwise.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(600);
    /// The shortest heartbeat time-out Auto Scaling takes.
    pub const MIN_HEARTBEAT: Duration = Duration::from_secs(30);
    /// The longest heartbeat time-out Auto Scaling takes.
    pub const MAX_HEARTBEAT: Duration = Duration::from_secs(7200);

    /// A hook, checked: a name Auto Scaling takes (1-255 of letters, digits,
    /// `-`, `_`, `/`) and a heartbeat of whole seconds within 30 s-7200 s.
    pub fn new(name: &str, heartbeat: Duration) -> Result<Self, String> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 255
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
        {
            return Err(format!(
                "--termination-hook {name:?} is not a lifecycle hook name: 1 to 255 letters, \
                 digits, '-', '_' or '/'"
            ));
        }
        if heartbeat.subsec_nanos() != 0
            || heartbeat < Self::MIN_HEARTBEAT
            || heartbeat > Self::MAX_HEARTBEAT
        {
            return Err(format!(
                "--termination-heartbeat {} is outside what Auto Scaling takes: whole seconds \
                 from 30s to 7200s (2h); cover the target groups' deregistration delay",
                if heartbeat.subsec_nanos() == 0 {
                    format!("{}s", heartbeat.as_secs())
                } else {
                    format!("{:.3}s", heartbeat.as_secs_f64())
                }
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            heartbeat,
        })
    }

    /// The hook as the API spells it.
    pub fn api(&self) -> asg::Hook {
        asg::Hook {
            name: self.name.clone(),
            transition: asg::TERMINATING.to_owned(),
            heartbeat_secs: u32::try_from(self.heartbeat.as_secs()).unwrap_or(u32::MAX),
            default_result: asg::LifecycleResult::Continue.as_str().to_owned(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "termination lifecycle hook {} (heartbeat {}s, then CONTINUE)",
            self.name,
            self.heartbeat.as_secs()
        )
    }
}

impl Default for TerminationHook {
    fn default() -> Self {
        Self {
            name: Self::DEFAULT_NAME.to_owned(),
            heartbeat: Self::DEFAULT_HEARTBEAT,
        }
    }
}

impl Default for AsgSettings {
    fn default() -> Self {
        Self {
            group_pattern: "{service}-{color}".to_owned(),
            instance_type: None,
            platform: Platform::default(),
            user_data: None,
            subnets: Vec::new(),
            target_groups: Vec::new(),
            health_check_type: HealthCheckType::Ec2,
            grace_period: Duration::from_secs(300),
            desired: None,
            min: None,
            max: None,
            capacity_from: None,
            scaling: Scaling::Alarms(AlarmScaling::default()),
            port: 80,
            endpoint_template: "{ip}:{port}".to_owned(),
            termination_hook: Some(TerminationHook::default()),
            backoff: Backoff::ASG_INSTANCES,
            keep_versions: Keep::DEFAULT,
        }
    }
}

impl Backoff {
    /// Instances take a minute or more to launch and pass their checks.
    pub const ASG_INSTANCES: Self = Self {
        initial: Duration::from_secs(5),
        max: Duration::from_secs(30),
    };
}

/// The group (and launch template) name of a stack: the pattern with
/// `{service}`, `{color}` and `{region}` filled in.
pub fn group_name(pattern: &str, service: &str, color: &str, region: &str) -> String {
    pattern
        .replace("{service}", service)
        .replace("{color}", color)
        .replace("{region}", region)
}

/// The `asg` driver for one region.
#[derive(Debug, Clone)]
pub struct AsgDriver {
    clients: AsgClients,
    settings: AsgSettings,
}

/// A simple scaling policy and its alarm.
#[derive(Debug, Clone, Copy)]
struct AlarmPair<'a> {
    policy: &'a str,
    alarm: &'a str,
    adjustment: i32,
    threshold: f64,
    above: bool,
}

/// What a group is to be.
#[derive(Debug, Clone)]
struct GroupTarget {
    name: String,
    /// Launch template id (or a stand-in name in a plan that creates it).
    template: String,
    version: String,
    desired: u32,
    min: u32,
    max: u32,
    tags: BTreeMap<String, String>,
}

/// Where a group is, as the driver left it.
#[derive(Debug, Clone, Default)]
struct Converged {
    group: String,
    desired: u32,
    template_id: Option<String>,
    template_version: i64,
}

/// Changes made (or, in a plan, to be made), in order.
#[derive(Debug, Default)]
struct Changes {
    apply: bool,
    lines: Vec<String>,
}

impl Changes {
    fn note(&mut self, line: String) {
        if self.apply {
            tracing::info!("{line}");
        }
        self.lines.push(line);
    }
}

impl AsgDriver {
    /// A driver with these clients and settings.
    pub fn new(clients: AsgClients, settings: AsgSettings) -> Self {
        Self { clients, settings }
    }

    /// Its settings.
    pub fn settings(&self) -> &AsgSettings {
        &self.settings
    }

    /// The same driver with other settings (e.g. another `capacity_from`).
    #[must_use]
    pub fn with_settings(&self, settings: AsgSettings) -> Self {
        Self {
            clients: self.clients.clone(),
            settings,
        }
    }

    /// The group of `spec`.
    pub fn group_of(&self, spec: &StackSpec) -> String {
        group_name(
            &self.settings.group_pattern,
            &spec.service,
            &spec.color,
            &spec.region,
        )
    }

    /// The desired capacity of the group of `color`, `None` when it does not exist.
    pub async fn capacity_of(
        &self,
        spec: &StackSpec,
        color: &str,
    ) -> Result<Option<u32>, StackError> {
        let name = group_name(
            &self.settings.group_pattern,
            &spec.service,
            color,
            &spec.region,
        );
        Ok(asg::describe_group(&self.clients.autoscaling, &name)
            .await?
            .map(|g| g.desired))
    }

    /// What the color's version launches, and the platform's settings it
    /// keeps (read from the base template, when there is one).
    async fn launch_spec(
        &self,
        spec: &StackSpec,
    ) -> Result<(LaunchSpec, Option<Launch>), StackError> {
        let image = spec.image.clone().filter(|i| !i.is_empty()).ok_or_else(|| {
            StackError::Invalid(format!(
                "no image for {} in {}: pass --image, or run bake-ami first so the state holds one for that region",
                spec.service, spec.region
            ))
        })?;
        let platform = &self.settings.platform;
        let base = if platform.is_empty() {
            None
        } else {
            Some(platform::resolve(&self.clients.ec2, platform, &image).await?)
        };
        let mut instance_tags: BTreeMap<String, String> = base
            .iter()
            .flat_map(|b| b.instance_tags.iter().cloned())
            .collect();
        instance_tags.extend([
            ("service".to_owned(), spec.service.clone()),
            ("color".to_owned(), spec.color.clone()),
            ("version".to_owned(), spec.version.clone()),
            ("managed-by".to_owned(), "switchyard".to_owned()),
        ]);
        let launch = LaunchSpec {
            image_id: image,
            instance_type: self
                .settings
                .instance_type
                .clone()
                .or_else(|| base.as_ref().and_then(|b| b.instance_type.clone()))
                .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_owned()),
            user_data_sha256: self.settings.user_data.as_deref().map(lt::sha256_hex),
            imdsv2_required: base.as_ref().is_none_or(|b| b.imdsv2_required),
            instance_tags,
            platform: base.as_ref().map(|b| b.fingerprint.clone()),
        };
        Ok((launch, base))
    }

    async fn capacity(
        &self,
        spec: &StackSpec,
        own: Option<&Group>,
    ) -> Result<(u32, u32, u32), StackError> {
        let desired = if let Some(d) = self.settings.desired {
            d
        } else {
            let from = match &self.settings.capacity_from {
                Some(color) => self.capacity_of(spec, color).await?.filter(|d| *d > 0),
                None => None,
            };
            match (from, own) {
                (Some(d), _) => d,
                (None, Some(g)) if g.desired > 0 => g.desired,
                _ => {
                    return Err(StackError::Invalid(format!(
                        "no --desired, and no active group with instances to copy the capacity from ({}); pass --desired",
                        self.settings.capacity_from.as_deref().map_or_else(
                            || "no active color known".to_owned(),
                            |c| group_name(&self.settings.group_pattern, &spec.service, c, &spec.region)
                        )
                    )))
                }
            }
        };
        let min = self.settings.min.unwrap_or(desired);
        let max = self.settings.max.unwrap_or((desired * 2).max(1));
        if min > desired || desired > max {
            return Err(StackError::Invalid(format!(
                "capacity must satisfy min <= desired <= max; got min {min}, desired {desired}, max {max}"
            )));
        }
        Ok((desired, min, max))
    }

    /// Brings the group to what `spec` asks for (or, with `changes.apply`
    /// false, only lists what that would take).
    async fn converge(
        &self,
        spec: &StackSpec,
        changes: &mut Changes,
        wait: Option<&Wait>,
    ) -> Result<Converged, StackError> {
        let (launch, base) = self.launch_spec(spec).await?;
        let name = self.group_of(spec);
        let group = asg::describe_group(&self.clients.autoscaling, &name).await?;
        let (desired, min, max) = self.capacity(spec, group.as_ref()).await?;
        if group.is_none() && self.settings.subnets.is_empty() {
            return Err(StackError::Invalid(format!(
                "group {name} does not exist in {}; pass --subnet (repeatable) so deploy-standby can create it",
                spec.region
            )));
        }
        let (template_id, version, written) = self
            .converge_template(&name, (&launch, base.as_ref()), changes)
            .await?;
        let target = GroupTarget {
            name: name.clone(),
            template: template_id
                .clone()
                .unwrap_or_else(|| format!("(new {name})")),
            version: version.to_string(),
            desired,
            min,
            max,
            tags: launch.instance_tags.clone(),
        };
        match &group {
            None => self.create_group(&target, changes).await?,
            Some(g) => {
                self.update_group(g, &target, changes, wait).await?;
                self.converge_hook(&name, changes).await?;
            }
        }
        self.converge_scaling(&name, group.is_some(), changes)
            .await?;
        if let (true, Some(id)) = (written, &template_id) {
            self.prune_versions(spec, (&name, id, version), changes)
                .await?;
        }
        Ok(Converged {
            group: name,
            desired,
            template_id,
            template_version: version,
        })
    }

    /// Makes sure the latest version of template `name` launches `launch`,
    /// and that it is the default; returns the template id (unknown in a plan
    /// that creates it), the version, and whether that version is new in an
    /// existing template (or, in a plan, would be).
    async fn converge_template(
        &self,
        name: &str,
        (launch, base): (&LaunchSpec, Option<&Launch>),
        changes: &mut Changes,
    ) -> Result<(Option<String>, i64, bool), StackError> {
        let user_data = self.settings.user_data.as_deref();
        let what = describe_launch(launch);
        let template = lt::find(&self.clients.ec2, name).await?;
        let (template_id, version) = match &template {
            None => {
                changes.note(format!("create launch template {name} (version 1: {what})"));
                if changes.apply {
                    let tags = &launch.instance_tags;
                    match lt::create(&self.clients.ec2, name, (launch, base), user_data, tags).await
                    {
                        Ok(id) => (Some(id), 1),
                        // Made by an earlier attempt whose answer was lost:
                        // taken when it launches the same.
                        Err(e) if e.code.as_deref() == Some(lt::ALREADY_EXISTS) => {
                            match lt::find(&self.clients.ec2, name).await? {
                                Some(t) if t.latest == *launch => {
                                    (Some(t.id.clone()), t.latest_version)
                                }
                                _ => return Err(e.into()),
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    (None, 1)
                }
            }
            Some(t) if t.latest == *launch => (Some(t.id.clone()), t.latest_version),
            Some(t) => {
                let next = t.latest_version + 1;
                changes.note(format!(
                    "create launch template {name} version {next} ({what})"
                ));
                let v = if changes.apply {
                    lt::create_version(&self.clients.ec2, &t.id, (launch, base), user_data).await?
                } else {
                    next
                };
                (Some(t.id.clone()), v)
            }
        };
        if template
            .as_ref()
            .is_some_and(|t| t.default_version != version)
        {
            changes.note(format!(
                "make version {version} the default of launch template {name}"
            ));
            if let (true, Some(id)) = (changes.apply, &template_id) {
                lt::set_default_version(&self.clients.ec2, id, version).await?;
            }
        }
        let written = template.as_ref().is_some_and(|t| t.latest != *launch);
        Ok((template_id, version, written))
    }

    /// After a new version of template `name` (`id`) was written (or, in a
    /// plan, would be), deletes the versions beyond the newest
    /// `keep_versions`, never the default (`version`, the new one) nor one a
    /// group of the service or its instances use. A refusal is reported in
    /// the changes and the log; it does not fail the deploy.
    async fn prune_versions(
        &self,
        spec: &StackSpec,
        (name, id, version): (&str, &str, i64),
        changes: &mut Changes,
    ) -> Result<(), StackError> {
        let Some(count) = self.settings.keep_versions.count() else {
            return Ok(());
        };
        let mut numbers = lt::version_numbers(&self.clients.ec2, id).await?;
        if !numbers.contains(&version) {
            // A plan: the version it would write is the newest.
            numbers.insert(0, version);
        }
        if numbers.len() <= count {
            return Ok(());
        }
        let template = lt::Listed {
            id: id.to_owned(),
            name: name.to_owned(),
            default_version: version,
            latest_version: numbers[0],
        };
        let mut groups = asg::groups_of_service(&self.clients.autoscaling, &spec.service).await?;
        for g in &mut groups {
            // This group launches from the new version once converged.
            if g.name == name {
                g.launch_template = Some((id.to_owned(), version.to_string()));
            }
        }
        let in_use = lt::versions_in_use(std::slice::from_ref(&template), &groups)
            .remove(id)
            .unwrap_or_default();
        let mut old = Vec::new();
        for v in numbers.iter().skip(count) {
            match in_use.get(&v.to_string()) {
                Some(why) => tracing::info!(
                    "keep launch template {name} version {v} beyond the newest {count}: {why}"
                ),
                None => old.push(*v),
            }
        }
        if old.is_empty() {
            return Ok(());
        }
        let list = |vs: &[i64]| {
            vs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !changes.apply {
            changes.note(format!(
                "delete launch template {name} version(s) {} (beyond the newest {count}, none in use)",
                list(&old)
            ));
            return Ok(());
        }
        // Housekeeping: the deploy itself is done, so a refused call is
        // reported, not a failure of the step.
        let refused = match lt::delete_versions(&self.clients.ec2, id, &old).await {
            Ok(refused) => refused,
            Err(e) => {
                tracing::warn!("launch template {name}: {e}");
                changes.note(format!(
                    "could not delete launch template {name} version(s) {}: {e}",
                    list(&old)
                ));
                return Ok(());
            }
        };
        let deleted: Vec<i64> = old
            .iter()
            .copied()
            .filter(|v| !refused.iter().any(|(r, _)| r == v))
            .collect();
        if !deleted.is_empty() {
            changes.note(format!(
                "delete launch template {name} version(s) {} (beyond the newest {count}, none in use)",
                list(&deleted)
            ));
        }
        for (v, why) in refused {
            tracing::warn!("launch template {name} version {v} was not deleted: {why}");
        }
        Ok(())
    }

    async fn create_group(&self, t: &GroupTarget, changes: &mut Changes) -> Result<(), StackError> {
        let s = &self.settings;
        changes.note(format!(
            "create group {}: launch template {} version {}, desired {} (min {}, max {}), subnets {}, {}health check {} (grace {}s), tags propagated at launch{}",
            t.name,
            t.template,
            t.version,
            t.desired,
            t.min,
            t.max,
            s.subnets.join(","),
            if s.target_groups.is_empty() {
                String::new()
            } else {
                format!("target groups {}, ", s.target_groups.join(","))
            },
            s.health_check_type.api(),
            s.grace_period.as_secs(),
            s.termination_hook
                .as_ref()
                .map_or_else(String::new, |h| format!(", {}", h.describe())),
        ));
        if changes.apply {
            let group = NewGroup {
                name: t.name.clone(),
                template_id: t.template.clone(),
                template_version: t.version.clone(),
                min: t.min,
                max: t.max,
                desired: t.desired,
                subnets: s.subnets.clone(),
                target_groups: s.target_groups.clone(),
                health_check_type: s.health_check_type.api().to_owned(),
                grace_period_secs: u32::try_from(s.grace_period.as_secs()).unwrap_or(u32::MAX),
                tags: t.tags.clone(),
                hooks: s
                    .termination_hook
                    .iter()
                    .map(TerminationHook::api)
                    .collect(),
            };
            asg::create_group(&self.clients.autoscaling, &group).await?;
        }
        Ok(())
    }

    /// Points an existing group at the version, sizes it and tags it;
    /// instances of another version are replaced by scaling to zero first.
    async fn update_group(
        &self,
        g: &Group,
        t: &GroupTarget,
        changes: &mut Changes,
        wait: Option<&Wait>,
    ) -> Result<(), StackError> {
        let client = &self.clients.autoscaling;
        let name = &t.name;
        let template = Some((t.template.as_str(), t.version.as_str()));
        let stale: Vec<&str> = g
            .instances
            .iter()
            .filter(|i| !i.leaving())
            .filter(|i| {
                i.template_version
                    .as_deref()
                    .is_some_and(|v| v != t.version)
            })
            .map(|i| i.id.as_str())
            .collect();
        if !stale.is_empty() {
            changes.note(format!(
                "scale group {name} to 0 to replace {} instance(s) of an older launch template version ({}), and wait until they are gone",
                stale.len(),
                stale.join(", ")
            ));
            if changes.apply {
                asg::update_group(client, name, template, 0, t.max, 0).await?;
                if let Some(w) = wait {
                    self.wait_empty(name, w).await?;
                }
            }
        }
        let now = Some((t.template.clone(), t.version.clone()));
        if !stale.is_empty()
            || g.launch_template != now
            || (g.desired, g.min, g.max) != (t.desired, t.min, t.max)
        {
            changes.note(format!(
                "update group {name}: launch template {} version {}, desired {} (min {}, max {}; was desired {} min {} max {})",
                t.template, t.version, t.desired, t.min, t.max, g.desired, g.min, g.max
            ));
            if changes.apply {
                asg::update_group(client, name, template, t.min, t.max, t.desired).await?;
            }
        }
        let missing: BTreeMap<String, String> = t
            .tags
            .iter()
            .filter(|(k, v)| g.tags.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !missing.is_empty() {
            changes.note(format!("tag group {name}: {}", pairs(&missing)));
            if changes.apply {
                asg::tag_group(client, name, &missing).await?;
            }
        }
        Ok(())
    }

    /// Puts the termination hook on an existing group when it is missing
    /// or differs (a group made before hooks were, a changed heartbeat);
    /// other hooks of the group are left alone.
    async fn converge_hook(&self, name: &str, changes: &mut Changes) -> Result<(), StackError> {
        let Some(hook) = &self.settings.termination_hook else {
            return Ok(());
        };
        let want = hook.api();
        let have = asg::describe_lifecycle_hooks(&self.clients.autoscaling, name).await?;
        let now = have.iter().find(|h| h.name == want.name);
        if now == Some(&want) {
            return Ok(());
        }
        changes.note(match now {
            None => format!("put {} on group {name}", hook.describe()),
            Some(h) => format!(
                "put {} on group {name} (was {}, heartbeat {}s, then {})",
                hook.describe(),
                h.transition,
                h.heartbeat_secs,
                h.default_result
            ),
        });
        if changes.apply {
            asg::put_lifecycle_hook(&self.clients.autoscaling, name, &want).await?;
        }
        Ok(())
    }

    /// Puts the scaling policies and alarms the settings ask for, when they differ.
    async fn converge_scaling(
        &self,
        name: &str,
        exists: bool,
        changes: &mut Changes,
    ) -> Result<(), StackError> {
        let up = format!("{name}-cpu-up");
        let down = format!("{name}-cpu-down");
        let tracking = format!("{name}-cpu-target");
        let high = format!("{name}-cpu-high");
        let low = format!("{name}-cpu-low");
        let client = &self.clients.autoscaling;
        if self.settings.scaling == Scaling::Unmanaged {
            return Ok(());
        }
        // A group this plan would create has no policies yet.
        let existing = if changes.apply || exists {
            asg::describe_policies(client, name).await?
        } else {
            Vec::new()
        };
        let find = |n: &str| existing.iter().find(|p| p.name == n);
        match &self.settings.scaling {
            Scaling::Unmanaged => {}
            Scaling::CpuTarget(target) => {
                let want = Policy::CpuTarget { target: *target };
                if find(&tracking).and_then(|p| p.policy.as_ref()) != Some(&want) {
                    changes.note(format!(
                        "put target tracking policy {tracking}: average CPU {target}%"
                    ));
                    if changes.apply {
                        asg::put_policy(client, name, &tracking, &want).await?;
                    }
                }
                for old in [&up, &down] {
                    if find(old).is_some() {
                        changes.note(format!(
                            "delete simple scaling policy {old} (target tracking replaces it)"
                        ));
                        if changes.apply {
                            asg::delete_policy(client, name, old).await?;
                        }
                    }
                }
                if find(&up).is_some() || find(&down).is_some() {
                    changes.note(format!("delete alarms {high}, {low}"));
                    if changes.apply {
                        metric_alarms::delete(&self.clients.cloudwatch, &[high, low]).await?;
                    }
                }
            }
            Scaling::Alarms(a) => {
                if find(&tracking).is_some() {
                    changes.note(format!(
                        "delete target tracking policy {tracking} (alarm policies replace it)"
                    ));
                    if changes.apply {
                        asg::delete_policy(client, name, &tracking).await?;
                    }
                }
                for pair in [
                    AlarmPair {
                        policy: &up,
                        alarm: &high,
                        adjustment: 1,
                        threshold: a.up_threshold,
                        above: true,
                    },
                    AlarmPair {
                        policy: &down,
                        alarm: &low,
                        adjustment: -1,
                        threshold: a.down_threshold,
                        above: false,
                    },
                ] {
                    self.converge_alarm_pair(name, &existing, &pair, a, changes)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// One simple scaling policy and the CPU alarm that triggers it.
    async fn converge_alarm_pair(
        &self,
        name: &str,
        existing: &[asg::PolicyInfo],
        pair: &AlarmPair<'_>,
        a: &AlarmScaling,
        changes: &mut Changes,
    ) -> Result<(), StackError> {
        let client = &self.clients.autoscaling;
        let AlarmPair {
            policy,
            alarm,
            adjustment,
            threshold,
            above,
        } = *pair;
        let cooldown_secs = u32::try_from(a.cooldown.as_secs()).unwrap_or(u32::MAX);
        let want = Policy::Simple {
            adjustment,
            cooldown_secs,
        };
        let arn = match existing.iter().find(|p| p.name == policy) {
            Some(p) if p.policy.as_ref() == Some(&want) => p.arn.clone(),
            _ => {
                changes.note(format!(
                    "put scaling policy {policy}: {adjustment:+} instance, cooldown {cooldown_secs}s"
                ));
                if changes.apply {
                    let arn = asg::put_policy(client, name, policy, &want).await?;
                    // The ARN as DescribePolicies gives it, so that the next
                    // run compares the alarm's action with the same text.
                    asg::describe_policies(client, name)
                        .await?
                        .into_iter()
                        .find(|p| p.name == policy)
                        .map_or(arn, |p| p.arn)
                } else {
                    format!("(arn of {policy})")
                }
            }
        };
        let want = CpuAlarm {
            name: alarm.to_owned(),
            group: name.to_owned(),
            threshold,
            above,
            period_secs: u32::try_from(a.period.as_secs()).unwrap_or(u32::MAX),
            evaluation_periods: a.evaluation_periods,
            actions: vec![arn],
        };
        let have = metric_alarms::describe(&self.clients.cloudwatch, alarm).await?;
        if have.as_ref() != Some(&want) {
            tracing::debug!("alarm {alarm} differs: have {have:?}, want {want:?}");
            changes.note(format!(
                "put alarm {alarm}: average CPU {} {threshold}% for {} x {}s -> {policy}",
                if above { ">=" } else { "<=" },
                a.evaluation_periods,
                a.period.as_secs()
            ));
            if changes.apply {
                metric_alarms::put(&self.clients.cloudwatch, &want).await?;
            }
        }
        Ok(())
    }

    /// Waits until `desired` instances of `version` are InService and
    /// healthy (also in every target group of the group); returns their ids
    /// and the instances lost while launching.
    async fn wait_in_service(
        &self,
        name: &str,
        desired: u32,
        version: i64,
        wait: &Wait,
    ) -> Result<(Vec<String>, Vec<String>), StackError> {
        let version = version.to_string();
        let mut pace = Pace::new(
            format!("{desired} instance(s) of {name} InService"),
            wait.deadline,
        );
        let mut lost: BTreeSet<String> = BTreeSet::new();
        let mut ports: BTreeMap<String, u16> = BTreeMap::new();
        let mut attempt = 0;
        loop {
            let group = asg::describe_group(&self.clients.autoscaling, name)
                .await?
                .ok_or_else(|| {
                    StackError::Refused(format!(
                        "group {name} disappeared while its instances launched"
                    ))
                })?;
            for i in group
                .instances
                .iter()
                .filter(|i| i.leaving() || i.health == "Unhealthy")
            {
                if lost.insert(i.id.clone()) {
                    tracing::warn!(
                        "instance {} of {name} is {} ({}) while launching; the group replaces it",
                        i.id,
                        i.lifecycle,
                        i.health
                    );
                }
            }
            let serving: Vec<String> = group
                .instances
                .iter()
                .filter(|i| {
                    i.in_service() && i.template_version.as_deref().is_none_or(|v| v == version)
                })
                .map(|i| i.id.clone())
                .collect();
            let mut status = format!("{} of {desired} InService{}", serving.len(), states(&group));
            if serving.len() >= desired as usize {
                let unhealthy = self.target_health(&group, &serving, &mut ports).await?;
                if unhealthy.is_empty() {
                    return Ok((serving, lost.into_iter().collect()));
                }
                status = format!(
                    "{status}; not yet healthy in the target groups: {}",
                    unhealthy.join(", ")
                );
            }
            pace.tick(&status);
            match wait::sleep(self.settings.backoff.delay(attempt), wait.deadline, &wait.cancel).await {
                Ok(()) => attempt += 1,
                Err(WaitEnd::Deadline) => {
                    return Err(StackError::Timeout(format!(
                        "{name}: {status} when the deadline (--timeout) passed after {}; the group is left as it is for inspection{}",
                        crate::wait::progress::short(pace.elapsed()),
                        if lost.is_empty() { String::new() } else { format!("; lost while launching: {}", lost.iter().cloned().collect::<Vec<_>>().join(", ")) }
                    )))
                }
                Err(WaitEnd::Cancelled) => {
                    return Err(StackError::Interrupted(format!(
                        "interrupted while waiting for {name}: {status}"
                    )))
                }
            }
        }
    }

    /// The `instance@target-group (state)` pairs that are not serving yet.
    async fn target_health(
        &self,
        group: &Group,
        serving: &[String],
        ports: &mut BTreeMap<String, u16>,
    ) -> Result<Vec<String>, ProviderError> {
        let mut not_yet = Vec::new();
        for arn in &group.target_groups {
            let port = if let Some(p) = ports.get(arn) {
                *p
            } else {
                let tg = elbv2::describe_target_group(&self.clients.elbv2, arn).await?;
                let p = tg.port.unwrap_or(self.settings.port);
                ports.insert(arn.clone(), p);
                p
            };
            for id in serving {
                let target = Target {
                    id: id.clone(),
                    port,
                    availability_zone: None,
                };
                let health = elbv2::target_health(&self.clients.elbv2, arn, &target).await?;
                if !health.is_serving() {
                    let short_name = arn.rsplit(':').next().unwrap_or(arn);
                    not_yet.push(format!("{id}@{short_name} {}", health.describe()));
                }
            }
        }
        Ok(not_yet)
    }

    /// Waits until the group has no instances left (other than terminated ones).
    async fn wait_empty(&self, name: &str, wait: &Wait) -> Result<(), StackError> {
        let mut pace = Pace::new(format!("{name} to scale to 0"), wait.deadline);
        let mut attempt = 0;
        loop {
            let Some(group) = asg::describe_group(&self.clients.autoscaling, name).await? else {
                return Ok(());
            };
            let left: Vec<&str> = group
                .instances
                .iter()
                .filter(|i| i.lifecycle != "Terminated")
                .map(|i| i.id.as_str())
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            let status = format!("{} instance(s) left{}", left.len(), states(&group));
            pace.tick(&status);
            match wait::sleep(
                self.settings.backoff.delay(attempt),
                wait.deadline,
                &wait.cancel,
            )
            .await
            {
                Ok(()) => attempt += 1,
                Err(WaitEnd::Deadline) => {
                    return Err(StackError::Timeout(format!(
                        "{name}: {status} when the deadline (--timeout) passed"
                    )))
                }
                Err(WaitEnd::Cancelled) => {
                    return Err(StackError::Interrupted(format!(
                        "interrupted while waiting for {name} to scale to 0: {status}"
                    )))
                }
            }
        }
    }

    async fn endpoints(&self, ids: &[String]) -> Result<Vec<String>, StackError> {
        let ips = lt::private_ips(&self.clients.ec2, ids).await?;
        let port = self.settings.port.to_string();
        let mut endpoints: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                let ip = ips.get(id)?;
                Some(
                    self.settings
                        .endpoint_template
                        .replace("{ip}", ip)
                        .replace("{port}", &port)
                        .replace("{instance}", id),
                )
            })
            .collect();
        endpoints.sort();
        Ok(endpoints)
    }
}

fn states(group: &Group) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &group.instances {
        *counts.entry(i.lifecycle.as_str()).or_default() += 1;
    }
    if counts.is_empty() {
        return " (no instances yet)".to_owned();
    }
    format!(
        " ({})",
        counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The instance type when neither the flag nor a base template names one.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

fn describe_launch(l: &LaunchSpec) -> String {
    format!(
        "image {}, {}, {}IMDSv2 {}, {}tags {}",
        l.image_id,
        l.instance_type,
        l.user_data_sha256
            .as_ref()
            .map_or(String::new(), |h| format!(
                "user-data sha256 {}, ",
                &h[..h.len().min(12)]
            )),
        if l.imdsv2_required {
            "required"
        } else {
            "optional"
        },
        l.platform
            .as_ref()
            .map_or(String::new(), |p| format!("platform settings {p}, ")),
        pairs(&l.instance_tags)
    )
}

impl StackDriver for AsgDriver {
    fn kind(&self) -> &'static str {
        "asg"
    }

    fn name_of(&self, spec: &StackSpec) -> String {
        self.group_of(spec)
    }

    async fn capacity(&self, spec: &StackSpec) -> Result<Option<u32>, StackError> {
        self.capacity_of(spec, &spec.color).await
    }

    fn capacity_from(&self, color: &str) -> Self {
        let mut settings = self.settings.clone();
        if settings.capacity_from.is_none() {
            settings.capacity_from = Some(color.to_owned());
        }
        self.with_settings(settings)
    }

    async fn plan(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        let mut changes = Changes::default();
        let out = self.converge(spec, &mut changes, None).await?;
        changes.note(format!(
            "wait until {} instance(s) of {} are InService{}",
            out.desired,
            out.group,
            if self.settings.target_groups.is_empty() {
                ""
            } else {
                " and healthy in its target groups"
            }
        ));
        Ok(changes.lines)
    }

    async fn plan_down(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        let name = self.group_of(spec);
        Ok(match asg::describe_group(&self.clients.autoscaling, &name).await? {
            None => Vec::new(),
            Some(g) if g.desired == 0 && g.min == 0 && g.instances.is_empty() => Vec::new(),
            Some(g) => vec![format!(
                "scale group {name} to 0 (was desired {}, {} instance(s)) and wait until its instances are gone",
                g.desired,
                g.instances.len()
            )],
        })
    }

    async fn up(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        let mut changes = Changes {
            apply: true,
            lines: Vec::new(),
        };
        let out = self.converge(spec, &mut changes, Some(wait)).await?;
        let (ids, lost) = self
            .wait_in_service(&out.group, out.desired, out.template_version, wait)
            .await?;
        let endpoints = self.endpoints(&ids).await?;
        let template_id = out.template_id.clone().unwrap_or_default();
        let mut all_ids = vec![
            out.group.clone(),
            format!("{template_id}:{}", out.template_version),
        ];
        all_ids.extend(ids.iter().cloned());
        let mut detail = BTreeMap::from([
            ("group".to_owned(), out.group.clone()),
            ("launch_template".to_owned(), template_id),
            (
                "launch_template_version".to_owned(),
                out.template_version.to_string(),
            ),
            ("desired".to_owned(), out.desired.to_string()),
            ("region".to_owned(), spec.region.clone()),
            ("instances".to_owned(), ids.join(",")),
        ]);
        if let Some(h) = self.settings.user_data.as_deref().map(lt::sha256_hex) {
            detail.insert("user_data_sha256".to_owned(), h);
        }
        if let Some(hook) = &self.settings.termination_hook {
            detail.insert("termination_hook".to_owned(), hook.name.clone());
        }
        if !lost.is_empty() {
            detail.insert("lost_while_launching".to_owned(), lost.join(","));
        }
        Ok(StackStatus {
            endpoints,
            ids: all_ids,
            changed: !changes.lines.is_empty(),
            changes: changes.lines,
            detail,
        })
    }

    async fn down(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        let name = self.group_of(spec);
        let lines = self.plan_down(spec).await?;
        if let Some(line) = lines.first() {
            tracing::info!("{line}");
            let g = asg::describe_group(&self.clients.autoscaling, &name)
                .await?
                .unwrap_or_default();
            asg::update_group(&self.clients.autoscaling, &name, None, 0, g.max, 0).await?;
            self.wait_empty(&name, wait).await?;
        }
        Ok(StackStatus {
            endpoints: Vec::new(),
            ids: vec![name.clone()],
            changed: !lines.is_empty(),
            changes: lines,
            detail: BTreeMap::from([
                ("group".to_owned(), name),
                ("region".to_owned(), spec.region.clone()),
                ("desired".to_owned(), "0".to_owned()),
            ]),
        })
    }
}

#[cfg(test)]
#[path = "asg_tests.rs"]
mod tests;
