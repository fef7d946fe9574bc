//! Stacks: the [`StackDriver`] seam that brings a blue-green color (or a
//! region's deployment) up at a version and takes it down again, with one
//! file per driver: `asg` (an EC2 Auto Scaling group per color, built from a
//! launch template) and `command` (templated shell commands for any
//! orchestrator: docker compose, kubectl, nomad, rancher-compose).

pub mod asg;
pub mod command;
#[cfg(test)]
pub mod fake;
pub mod rolling;
pub mod standby;

use std::collections::BTreeMap;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::ProviderError;
use crate::outcome::{Code, ExitStatus};

/// What a stack is: the identity every driver understands. Driver-specific
/// settings (instance type, subnets, command templates) live in the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    /// Service name, e.g. `go-auth`.
    pub service: String,
    /// The color (`blue`, `green`) or another stack name.
    pub color: String,
    /// The version it is to run.
    pub version: String,
    /// The machine or container image, when the release has one.
    pub image: Option<String>,
    /// The region it runs in (`local` or another provider's name off AWS).
    pub region: String,
}

impl StackSpec {
    /// The fields a template may use: `{service}`, `{color}`,
    /// `{version}`, `{image}`, `{region}`.
    pub fn template_fields(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("service", self.service.clone()),
            ("color", self.color.clone()),
            ("version", self.version.clone()),
            ("image", self.image.clone().unwrap_or_default()),
            ("region", self.region.clone()),
        ])
    }
}

/// How long a driver may wait, and the token that stops it (SIGINT, SIGTERM).
#[derive(Debug, Clone)]
pub struct Wait {
    /// When waiting gives up with [`StackError::Timeout`].
    pub deadline: Instant,
    /// Cancelled by a signal: the driver stops waiting with [`StackError::Interrupted`].
    pub cancel: CancellationToken,
}

/// What a driver reports about a stack after bringing it up or down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackStatus {
    /// Where the stack serves: URLs or `host:port` pairs.
    pub endpoints: Vec<String>,
    /// Provider ids (group name, instance ids, compose project).
    pub ids: Vec<String>,
    /// Whether this run changed anything (a second identical run reports false).
    pub changed: bool,
    /// The changes made, one line each, in order, for the journal and the output.
    pub changes: Vec<String>,
    /// Driver facts worth keeping in the state (launch template version, ...).
    pub detail: BTreeMap<String, String>,
}

/// Errors of a stack driver.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// Bad input found before any change: exit 2.
    #[error("{0}")]
    Invalid(String),
    /// The state or the provider forbids the step (e.g. retiring the stack
    /// that takes the traffic): exit 5.
    #[error("{0}")]
    Refused(String),
    /// An AWS call failed after retries: exit 3.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A command of the command driver failed: exit 3.
    #[error("{command} exited with {status}: {stderr_tail}")]
    Command {
        command: String,
        status: String,
        stderr_tail: String,
    },
    /// A check of a stack failed (the active one turned unhealthy while the
    /// old one waited to retire); nothing was changed: exit 1.
    #[error("{0}")]
    CheckFailed(String),
    /// A deadline passed while waiting for something named in the message: exit 3.
    #[error("{0}")]
    Timeout(String),
    /// A new stack (or batch) came up but failed verification and was rolled
    /// back: exit 4.
    #[error("{0}")]
    RolledBack(String),
    /// Stopped by SIGINT or SIGTERM: exit 130.
    #[error("{0}")]
    Interrupted(String),
}

impl ExitStatus for StackError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Invalid(_) => Code::Usage,
            Self::CheckFailed(_) => Code::CheckFailed,
            Self::Refused(_) => Code::Conflict,
            Self::Provider(_) | Self::Command { .. } | Self::Timeout(_) => Code::Provider,
            Self::RolledBack(_) => Code::RolledBack,
            Self::Interrupted(_) => Code::Interrupted,
        }
    }
}

/// Something that runs a stack: brings it up at a version, says where it
/// serves, and takes it down. `up` is idempotent: run twice with the same
/// spec it changes nothing the second time.
///
/// The engines above it (the blue-green flow of [`standby`]) know stacks
/// only through this trait, so tests plug in an in-memory driver.
#[allow(async_fn_in_trait)]
pub trait StackDriver {
    /// The driver kind as written in the state: `asg`, `command`.
    fn kind(&self) -> &'static str;

    /// The provider's name for `spec`'s stack (the group name), as reports
    /// and the journal show it.
    fn name_of(&self, spec: &StackSpec) -> String;

    /// The capacity `spec`'s stack runs at, `None` when it does not exist
    /// (or the driver cannot tell): deploy-standby's last clue to which
    /// color is active.
    async fn capacity(&self, spec: &StackSpec) -> Result<Option<u32>, StackError>;

    /// The same driver sizing the stacks it brings up like `color`'s,
    /// unless its settings say otherwise (a driver without sizes returns
    /// itself).
    #[must_use]
    fn capacity_from(&self, color: &str) -> Self;

    /// Every change `up` would make, in order, without making any (`--dry-run`).
    async fn plan(&self, spec: &StackSpec) -> Result<Vec<String>, StackError>;

    /// Every change `down` would make, in order, without making any.
    async fn plan_down(&self, spec: &StackSpec) -> Result<Vec<String>, StackError>;

    /// Brings the stack up at `spec.version` and waits until it serves at full
    /// capacity (or `wait.deadline` passes).
    async fn up(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError>;

    /// Takes the stack down (scales it to zero, or runs the down command).
    async fn down(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError>;
}

/// Writes what a driver reported about `spec`'s stack into the state: the
/// entry named after the color (`stacks.<color>`) gets the version, the
/// driver kind, the endpoints and ids, and the driver's detail (under
/// `detail`, replacing the previous one). The role is left as it was: which
/// color is standby is the step's decision. Journaling is the step's too.
pub fn record(
    doc: &mut crate::state::StateDocument,
    spec: &StackSpec,
    status: &StackStatus,
    driver: &str,
) {
    let stack = doc.stack_mut(&spec.color);
    stack.version = Some(spec.version.clone());
    stack.driver = Some(driver.to_owned());
    stack.endpoints.clone_from(&status.endpoints);
    stack.ids.clone_from(&status.ids);
    stack
        .extra
        .insert("region".to_owned(), spec.region.clone().into());
    if status.detail.is_empty() {
        stack.extra.remove("detail");
    } else {
        let detail: serde_json::Map<String, serde_json::Value> = status
            .detail
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        stack.extra.insert("detail".to_owned(), detail.into());
    }
}

/// What the asg driver's policy is narrowed to.
#[derive(Debug, Clone)]
pub struct AsgScope {
    /// The Auto Scaling groups (and launch templates) by name: the colors'
    /// (a `*` where the service or region comes from the state), or the one
    /// a rolling update changes.
    pub groups: Vec<String>,
    /// The service whose launch templates the step may change, found by
    /// their tags (`service`, `managed-by=switchyard`); `None` for a rolling
    /// update of a group named with `--group`, whose template switchyard
    /// may not have made (any template then).
    pub template_service: Option<String>,
    /// `retire` only scales a group.
    pub retire: bool,
}

/// The tags the asg driver puts on its launch templates and instances.
const TEMPLATE_SERVICE_TAG: &str = "service";
const MANAGED_BY_TAG: &str = "managed-by";
const MANAGED_BY: &str = "switchyard";

/// The IAM policy of deploy-standby with the asg driver: `retire` only scales
/// its groups; a deploy or a rolling update builds launch templates, groups,
/// scaling policies and alarms, and watches instances and targets. Groups
/// and alarms are named; launch templates (whose ARNs carry an id) are the
/// service's by their tags, and instances may be launched only from a launch
/// template. The command driver calls no AWS API (its commands bring their
/// own rights).
pub fn asg_policy(scope: &AsgScope) -> crate::aws::iam::Policy {
    use crate::aws::iam::arn;
    let mut policy = crate::aws::iam::Policy::new();
    let groups: Vec<String> = scope
        .groups
        .iter()
        .map(|g| arn::auto_scaling_group(g))
        .collect();
    policy.allow(
        "ReadGroups",
        &[
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribePolicies",
        ],
        ["*"],
    );
    policy.allow(
        "ScaleGroups",
        &["autoscaling:UpdateAutoScalingGroup"],
        groups.clone(),
    );
    if scope.retire {
        return policy;
    }
    policy.allow(
        "BuildGroups",
        &[
            "autoscaling:CreateAutoScalingGroup",
            "autoscaling:CreateOrUpdateTags",
            "autoscaling:PutScalingPolicy",
            "autoscaling:DeletePolicy",
            "autoscaling:TerminateInstanceInAutoScalingGroup",
        ],
        groups,
    );
    launching(&mut policy, scope);
    let alarms: Vec<String> = scope
        .groups
        .iter()
        .flat_map(|g| [format!("{g}-cpu-high"), format!("{g}-cpu-low")])
        .map(|a| arn::alarm(&a))
        .collect();
    policy.allow(
        "CpuAlarms",
        &[
            "cloudwatch:DescribeAlarms",
            "cloudwatch:PutMetricAlarm",
            "cloudwatch:DeleteAlarms",
        ],
        alarms,
    );
    policy.allow(
        "TargetHealth",
        &[
            "elasticloadbalancing:DescribeTargetHealth",
            "elasticloadbalancing:DescribeTargetGroups",
        ],
        ["*"],
    );
    policy
}

/// Launch templates (the service's, by their tags) and the instances
/// groups launch from them as their caller.
fn launching(policy: &mut crate::aws::iam::Policy, scope: &AsgScope) {
    use crate::aws::iam::{arn, condition as c};
    policy.allow(
        "ReadLaunch",
        &[
            "ec2:DescribeLaunchTemplates",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:DescribeInstances",
            "ec2:DescribeImages",
        ],
        ["*"],
    );
    let templates = [arn::ec2("launch-template", "*")];
    policy.allow(
        "ChangeLaunchTemplates",
        &[
            "ec2:CreateLaunchTemplateVersion",
            "ec2:ModifyLaunchTemplate",
            // --keep-versions: versions beyond the newest N.
            "ec2:DeleteLaunchTemplateVersions",
        ],
        templates.clone(),
    );
    // A group launching from a template launches as its caller.
    policy.allow(
        "LaunchFromTemplates",
        &["ec2:RunInstances"],
        templates.clone(),
    );
    if let Some(service) = &scope.template_service {
        let op = c::string_match(service);
        policy
            .allow(
                "NewLaunchTemplates",
                &["ec2:CreateLaunchTemplate"],
                templates,
            )
            .when(
                "NewLaunchTemplates",
                op,
                &c::request_tag(TEMPLATE_SERVICE_TAG),
                [service.as_str()],
            )
            .when(
                "NewLaunchTemplates",
                c::EQUALS,
                &c::request_tag(MANAGED_BY_TAG),
                [MANAGED_BY],
            );
        for sid in ["ChangeLaunchTemplates", "LaunchFromTemplates"] {
            policy
                .when(
                    sid,
                    op,
                    &c::resource_tag(TEMPLATE_SERVICE_TAG),
                    [service.as_str()],
                )
                .when(
                    sid,
                    c::EQUALS,
                    &c::resource_tag(MANAGED_BY_TAG),
                    [MANAGED_BY],
                );
        }
    }
    policy
        .allow(
            "LaunchInstances",
            &["ec2:RunInstances"],
            [
                arn::instances("*"),
                arn::ec2("volume", "*"),
                arn::ec2("network-interface", "*"),
                arn::IMAGES.to_owned(),
                arn::ec2("subnet", "*"),
                arn::ec2("security-group", "*"),
                arn::ec2("key-pair", "*"),
            ],
        )
        .when(
            "LaunchInstances",
            "ArnLike",
            "ec2:LaunchTemplate",
            [arn::ec2("launch-template", "*")],
        );
    policy.tag_on_create(
        &["instance", "volume", "launch-template"],
        &["RunInstances", "CreateLaunchTemplate"],
    );
}

/// A CloudWatch client for tests whose code never calls it (its endpoint is a closed port).
#[cfg(test)]
fn unused_cloudwatch() -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::Config::builder()
            .behavior_version(aws_sdk_cloudwatch::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatch::config::Region::from_static("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_writes_the_stack_and_keeps_its_role() {
        let mut doc = crate::state::StateDocument::default();
        doc.stack_mut("green").role = Some(crate::state::Role::Standby);
        let spec = StackSpec {
            service: "go-auth".into(),
            color: "green".into(),
            version: "1.4.2".into(),
            image: None,
            region: "local".into(),
        };
        let status = StackStatus {
            endpoints: vec!["http://127.0.0.1:8081".into()],
            ids: vec!["go-auth-green".into()],
            changed: true,
            changes: vec!["ran up command".into()],
            detail: BTreeMap::from([("up".to_owned(), "compose up".to_owned())]),
        };
        record(&mut doc, &spec, &status, "command");
        let stack = &doc.stacks["green"];
        assert_eq!(stack.role, Some(crate::state::Role::Standby));
        assert_eq!(stack.version.as_deref(), Some("1.4.2"));
        assert_eq!(stack.driver.as_deref(), Some("command"));
        assert_eq!(stack.endpoints, status.endpoints);
        assert_eq!(stack.extra["detail"]["up"], "compose up");
        assert_eq!(stack.extra["region"], "local");
    }
}
