//! Machine images baked from a base image and a provisioning script (the
//! `bake-ami` step).
//!
//! - [`spec`] checks the inputs (source image, script, pulls, regions) and
//!   computes the input hash that decides whether a bake can be reused.
//! - [`bake`] resolves the source image, reuses an image with the same input
//!   hash or launches a builder, waits for it to power off, checks its console
//!   for the success marker, creates the image, copies it to other regions,
//!   and removes every temporary resource on success, failure, deadline or signal.
//! - [`sweep`] removes what a killed run (SIGKILL, a CI time-out) left behind.
//! - [`manifest`] writes a Packer-compatible manifest of the result.
//!
//! # Tags
//!
//! Everything a bake makes carries `switchyard:bake-id` (one id per run).
//! The builder instance and its volumes also carry `switchyard:purpose=bake`.
//! Images and their snapshots carry `switchyard:service`, `switchyard:version`,
//! `switchyard:source-image`, `switchyard:input-hash` and
//! `switchyard:bake-status`: `in-progress` from the moment they exist, and
//! `complete` once every region's copy is available. Reuse looks only at
//! `complete` images; the sweep removes only builders and `in-progress`
//! images and snapshots, so a finished image is never swept.

pub mod bake;
pub mod manifest;
pub mod retention;
pub mod spec;
pub mod sweep;

/// What a bake's policy is narrowed to: the service (unknown when it comes
/// from the state: then any value of the tag), and the subnet and security
/// groups the builder is launched in (when given).
#[derive(Debug, Clone, Copy)]
pub struct BakeScope<'a> {
    /// `--service`.
    pub service: Option<&'a str>,
    /// `--subnet-id`.
    pub subnet: Option<&'a str>,
    /// `--security-group-ids`.
    pub security_groups: &'a [String],
    /// `--keep N`: older images of the service are removed, sparing those
    /// launch templates and Auto Scaling groups use.
    pub retention: bool,
}

/// The IAM policy of a bake. Instances, volumes, images and snapshots are
/// allowed by the tags the bake puts on them: it may launch only a builder
/// tagged `switchyard:purpose=bake` with its service, act (console, image,
/// termination) only on such a builder, create only images tagged with its
/// service, tag on creation only what those calls create, and remove only
/// images and snapshots of its service. The snapshots CreateImage and
/// CopyImage make carry no tags until the bake tags them, so tagging a
/// snapshot is allowed only with the service's tag and `switchyard:` keys.
pub fn policy(scope: &BakeScope<'_>) -> crate::aws::iam::Policy {
    use crate::aws::iam::{arn, condition as c};
    let mut policy = crate::aws::iam::Policy::new();
    let service = scope.service.unwrap_or("*");
    let op = c::string_match(service);
    read(&mut policy);
    policy
        .allow(
            "LaunchBuilder",
            &["ec2:RunInstances"],
            [arn::instances("*"), arn::ec2("volume", "*")],
        )
        .when("LaunchBuilder", op, &c::request_tag(TAG_SERVICE), [service])
        .when(
            "LaunchBuilder",
            c::EQUALS,
            &c::request_tag(TAG_PURPOSE),
            [PURPOSE_BAKE],
        );
    let mut from = vec![
        arn::IMAGES.to_owned(),
        arn::ec2("network-interface", "*"),
        arn::ec2("subnet", scope.subnet.unwrap_or("*")),
    ];
    if scope.security_groups.is_empty() {
        from.push(arn::ec2("security-group", "*"));
    }
    from.extend(
        scope
            .security_groups
            .iter()
            .map(|g| arn::ec2("security-group", g)),
    );
    policy.allow("LaunchBuilderFrom", &["ec2:RunInstances"], from);
    policy
        .allow(
            "Builder",
            &[
                "ec2:CreateImage",
                "ec2:GetConsoleOutput",
                "ec2:TerminateInstances",
            ],
            [arn::instances("*")],
        )
        .when("Builder", op, &c::resource_tag(TAG_SERVICE), [service])
        .when(
            "Builder",
            c::EQUALS,
            &c::resource_tag(TAG_PURPOSE),
            [PURPOSE_BAKE],
        );
    policy
        .allow(
            "NewImages",
            &["ec2:CreateImage", "ec2:CopyImage"],
            [arn::IMAGES],
        )
        .when("NewImages", op, &c::request_tag(TAG_SERVICE), [service]);
    policy.allow(
        "NewImageSnapshots",
        &["ec2:CreateImage", "ec2:CopyImage"],
        [arn::SNAPSHOTS],
    );
    tagging(&mut policy, op, service);
    policy
        .allow(
            "RemoveImages",
            &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
            [arn::IMAGES, arn::SNAPSHOTS],
        )
        .when("RemoveImages", op, &c::resource_tag(TAG_SERVICE), [service]);
    if scope.retention {
        policy.allow(
            "ImagesInUse",
            &[
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeLaunchTemplateVersions",
                "autoscaling:DescribeAutoScalingGroups",
            ],
            ["*"],
        );
    }
    policy
}

/// A bake's tags: on what it creates as it creates it, later on its
/// service's images and snapshots, and on the snapshots of a new image
/// (which have no tag yet) only the service's `switchyard:` tags.
fn tagging(policy: &mut crate::aws::iam::Policy, op: &str, service: &str) {
    use crate::aws::iam::{arn, condition as c};
    policy.tag_on_create(
        &["instance", "volume", "image"],
        &["RunInstances", "CreateImage", "CopyImage"],
    );
    policy
        .allow(
            "TagImages",
            &["ec2:CreateTags"],
            [arn::IMAGES, arn::SNAPSHOTS],
        )
        .when("TagImages", op, &c::resource_tag(TAG_SERVICE), [service]);
    policy
        .allow("TagNewSnapshots", &["ec2:CreateTags"], [arn::SNAPSHOTS])
        .when(
            "TagNewSnapshots",
            op,
            &c::request_tag(TAG_SERVICE),
            [service],
        )
        .when(
            "TagNewSnapshots",
            c::ALL_LIKE,
            c::TAG_KEYS,
            ["switchyard:*"],
        );
}

/// The IAM policy of a sweep: it terminates only builders
/// (`switchyard:purpose=bake`) and removes only images and snapshots still
/// `switchyard:bake-status=in-progress`.
pub fn sweep_policy() -> crate::aws::iam::Policy {
    use crate::aws::iam::{arn, condition as c};
    let mut policy = crate::aws::iam::Policy::new();
    read(&mut policy);
    policy
        .allow(
            "SweepBuilders",
            &["ec2:TerminateInstances"],
            [arn::instances("*")],
        )
        .when(
            "SweepBuilders",
            c::EQUALS,
            &c::resource_tag(TAG_PURPOSE),
            [PURPOSE_BAKE],
        );
    policy
        .allow(
            "SweepImages",
            &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
            [arn::IMAGES, arn::SNAPSHOTS],
        )
        .when(
            "SweepImages",
            c::EQUALS,
            &c::resource_tag(TAG_STATUS),
            [STATUS_IN_PROGRESS],
        );
    policy
}

/// The reads of a bake and a sweep (no resource level).
fn read(policy: &mut crate::aws::iam::Policy) {
    policy.allow(
        "Read",
        &[
            "ec2:DescribeImages",
            "ec2:DescribeInstances",
            "ec2:DescribeSnapshots",
        ],
        ["*"],
    );
}

use crate::aws::ProviderError;
use crate::outcome::{Code, ExitStatus};
use crate::state::StateError;

/// The step's name, as the journal and the GitHub summary show it.
pub const STEP: &str = crate::state::steps::BAKE_AMI;

/// The tag every resource of one bake carries: the bake id.
pub const TAG_BAKE_ID: &str = "switchyard:bake-id";
/// `bake` on the builder instance and its volumes.
pub const TAG_PURPOSE: &str = "switchyard:purpose";
/// `in-progress` or `complete`, on images and snapshots.
pub const TAG_STATUS: &str = "switchyard:bake-status";
/// The input hash, on images and snapshots.
pub const TAG_INPUT_HASH: &str = "switchyard:input-hash";
/// The service, on everything.
pub const TAG_SERVICE: &str = "switchyard:service";
/// The version, on everything.
pub const TAG_VERSION: &str = "switchyard:version";
/// The source image id, on images and snapshots.
pub const TAG_SOURCE: &str = "switchyard:source-image";

/// The value of [`TAG_PURPOSE`] on builders.
pub const PURPOSE_BAKE: &str = "bake";
/// The value of [`TAG_STATUS`] until the bake is done.
pub const STATUS_IN_PROGRESS: &str = "in-progress";
/// The value of [`TAG_STATUS`] once every copy is available.
pub const STATUS_COMPLETE: &str = "complete";

/// Errors of `bake-ami`, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// Bad input; nothing was changed (exit 2).
    #[error("{0}")]
    Input(String),
    /// The source image could not be found, or not told apart (exit 2).
    #[error("{0}")]
    Source(String),
    /// An AWS call failed after the SDK's retries (exit 3).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The state file could not be read (exit 2) or written (exit 3).
    #[error(transparent)]
    State(#[from] StateError),
    /// A wait ran past its deadline (exit 3).
    #[error("gave up waiting for {what} after {after} (deadline {flag}); {cleanup}")]
    Deadline {
        what: String,
        after: String,
        flag: &'static str,
        cleanup: String,
    },
    /// An image ended in state `failed` (or another dead end) (exit 3).
    #[error("image {image} in {region} ended in state {state}: {reason}; {cleanup}")]
    ImageFailed {
        image: String,
        region: String,
        state: String,
        reason: String,
        cleanup: String,
    },
    /// The builder went away or could not be launched as asked (exit 3).
    #[error("builder {instance} {what}; {cleanup}")]
    Builder {
        instance: String,
        what: String,
        cleanup: String,
    },
    /// The builder stopped without printing the success marker (exit 1).
    #[error(
        "builder {instance} stopped, but its console output does not show the success marker \
         {marker:?}: the provisioning script failed or did not finish; {cleanup}. \
         The end of its console output:\n{tail}"
    )]
    NoMarker {
        instance: String,
        marker: String,
        tail: String,
        cleanup: String,
    },
    /// The manifest could not be written (exit 3).
    #[error("cannot write the manifest {path}: {error}")]
    Manifest { path: String, error: String },
    /// Stopped by SIGINT or SIGTERM (exit 130).
    #[error("interrupted while {doing}; {cleanup}")]
    Interrupted { doing: String, cleanup: String },
}

impl ExitStatus for BakeError {
    fn exit_code(&self) -> Code {
        match self {
            Self::Input(_) | Self::Source(_) => Code::Usage,
            Self::State(e) => e.exit_code(),
            Self::Provider(_)
            | Self::Deadline { .. }
            | Self::ImageFailed { .. }
            | Self::Builder { .. }
            | Self::Manifest { .. } => Code::Provider,
            Self::NoMarker { .. } => Code::CheckFailed,
            Self::Interrupted { .. } => Code::Interrupted,
        }
    }
}

impl BakeError {
    /// Sets the sentence about what the cleanup did, on errors that carry one.
    #[must_use]
    pub fn with_cleanup(mut self, text: String) -> Self {
        match &mut self {
            Self::Deadline { cleanup, .. }
            | Self::ImageFailed { cleanup, .. }
            | Self::Builder { cleanup, .. }
            | Self::NoMarker { cleanup, .. }
            | Self::Interrupted { cleanup, .. } => *cleanup = text,
            _ => {}
        }
        self
    }
}
