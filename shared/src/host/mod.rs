//! Hosts that join the fleet with their labels and leave it cleanly (the
//! `register-host` step).
//!
//! - [`identity`] says who this host is: read from the instance metadata
//!   service (IMDSv2) on EC2, or given (`--host-id`, `--address`) elsewhere.
//! - [`metadata`] reads it from DigitalOcean's, GCP's and Azure's metadata
//!   services too, and finds which cloud a host is on (`--provider auto`).
//! - [`labels`] checks the service and the `KEY=VALUE` labels, and maps them
//!   to and from the EC2 tags that carry them.
//! - [`registration`] joins (tags, RegisterTargets, the wait until healthy)
//!   and leaves (DeregisterTargets, the wait until drained, the Auto Scaling
//!   lifecycle action), recorded in the state document and its journal.
//! - [`watch`] waits on an Auto Scaling instance until its group terminates
//!   it (the instance metadata's target-lifecycle-state), then leaves while
//!   the termination hook holds the instance, and completes the hook.
//! - [`fleet`] lists the fleet by labels: EC2 instances by their tags
//!   (DescribeInstances with tag filters) beside the hosts off EC2 that the
//!   state file records (IP targets).
//! - [`user_data`] renders the cloud-init document that makes every host of
//!   a launch template join at boot and leave at shutdown.
//!
//! # Tags
//!
//! A host's service is the tag `switchyard:service`, and each label
//! `KEY=VALUE` is the tag `switchyard:label:KEY` with value `VALUE`. The keys
//! are namespaced rather than plain (`region`, `provider`) because
//! - they never collide with an account's own tags (`Name`, a cost-allocation
//!   `env` or `region` tag keeps its meaning and its value);
//! - one prefix finds everything switchyard set, for people, for a sweep, and
//!   for IAM: a policy can allow `ec2:CreateTags` only where every
//!   `aws:TagKeys` value matches `switchyard:*`;
//! - the fleet view filters on them exactly (`tag:switchyard:label:region`),
//!   and label values never hold EC2's filter wildcards (`*`, `?`).

pub mod fleet;
pub mod identity;
pub mod labels;
pub mod metadata;
pub mod registration;
pub mod user_data;
pub mod watch;

#[cfg(test)]
mod stand_in;

use crate::aws::ProviderError;
use crate::outcome::{Code, ExitStatus};
use crate::state::StateError;

pub use identity::{Identity, IdentityError, ImdsSettings};
pub use labels::Labels;

/// The step's name, as the journal and the GitHub summary show it.
pub const STEP: &str = crate::state::steps::REGISTER_HOST;

/// Bad input, found before any change: exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A flag's value is malformed.
    #[error("{flag} {value:?} {why}")]
    Invalid {
        flag: &'static str,
        value: String,
        why: String,
    },
    /// Two flags that do not go together, or one that needs another.
    #[error("{0}")]
    Conflict(String),
    /// A label key given twice.
    #[error("label {key:?} is given twice ({first} and {second}); give each key once")]
    DuplicateLabel {
        key: String,
        first: String,
        second: String,
    },
    /// A target group of another region than the calls go to.
    #[error(
        "target group {arn} is in {arn_region}, but this host's calls go to {region}; \
         target groups are regional: give the groups of {region}, or --region {arn_region}"
    )]
    RegionMismatch {
        arn: String,
        arn_region: String,
        region: String,
    },
    /// A target group that does not exist.
    #[error("no target group {arn} in {region}; check the ARN and the region")]
    NoSuchTargetGroup { arn: String, region: String },
    /// A target group this host cannot be a target of.
    #[error("target group {group} has target type {target_type}: {why}")]
    TargetType {
        group: String,
        target_type: String,
        why: String,
    },
    /// A generated user-data document over EC2's limit.
    #[error(
        "the user-data is {size} bytes; EC2 takes at most {limit}: use fewer labels or target groups"
    )]
    UserDataTooLarge { size: usize, limit: usize },
}

impl ExitStatus for InputError {
    fn exit_code(&self) -> Code {
        Code::Usage
    }
}

/// Errors of `register-host`, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad input; nothing was changed (exit 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The instance metadata could not be read (exit 3; 2 when IMDS is turned off by configuration).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// An AWS call failed after the SDK's retries (exit 3).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The state file could not be read (exit 2) or written (exit 3).
    #[error(transparent)]
    State(#[from] StateError),
    /// Registered, but not healthy by the deadline (exit 1).
    #[error(
        "{host} is registered but not healthy after {waited}: {detail}. It stays registered \
         (a load balancer sends no traffic to an unhealthy target); \
         run `register-host leave` to take it out"
    )]
    NotHealthy {
        host: String,
        waited: String,
        detail: String,
    },
    /// Deregistered, but still draining at the deadline (exit 3).
    #[error(
        "{host} is deregistered but still draining after {waited}: {detail}. \
         Requests in flight may be cut when it stops; a longer --timeout waits for them"
    )]
    StillDraining {
        host: String,
        waited: String,
        detail: String,
    },
    /// Stopped by SIGINT or SIGTERM (exit 130).
    #[error("interrupted while {doing}; the state file records what was done")]
    Interrupted { doing: String },
}

impl ExitStatus for HostError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Input(e) => e.exit_code(),
            Self::Identity(e) => e.exit_code(),
            Self::State(e) => e.exit_code(),
            Self::Provider(_) | Self::StillDraining { .. } => Code::Provider,
            Self::NotHealthy { .. } => Code::CheckFailed,
            Self::Interrupted { .. } => Code::Interrupted,
        }
    }
}

/// The AWS clients `register-host` calls.
#[derive(Debug, Clone)]
pub struct HostClients {
    /// EC2: tags, DescribeInstances.
    pub ec2: aws_sdk_ec2::Client,
    /// ELBv2: target groups and targets.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// Auto Scaling: lifecycle actions.
    pub autoscaling: aws_sdk_autoscaling::Client,
}

impl HostClients {
    /// Clients for one SDK configuration (one region).
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self::with_regions(config, None, None)
    }

    /// EC2 and Auto Scaling calls go to `host_region` (the instance's own),
    /// ELBv2 calls to `targets_region` (the target groups'); `None` keeps the
    /// configuration's region.
    pub fn with_regions(
        config: &aws_config::SdkConfig,
        host_region: Option<&str>,
        targets_region: Option<&str>,
    ) -> Self {
        let region = |r: Option<&str>| {
            r.map(|r| aws_config::Region::new(r.to_owned()))
                .or_else(|| config.region().cloned())
        };
        let ec2 = aws_sdk_ec2::config::Builder::from(config)
            .region(region(host_region))
            .build();
        let autoscaling = aws_sdk_autoscaling::config::Builder::from(config)
            .region(region(host_region))
            .build();
        let elbv2 = aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
            .region(region(targets_region))
            .build();
        Self {
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::from_conf(elbv2),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(autoscaling),
        }
    }
}
