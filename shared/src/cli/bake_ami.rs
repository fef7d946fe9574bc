//! `bake-ami`'s flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

use super::{parse_duration, CommonArgs, StepArgs};
use crate::image::retention::Keep;
use crate::image::spec::DEFAULT_MARKER;

/// Bake a machine image from a base image and a provisioning script.
///
/// Launches a builder from the source image with the script as user-data
/// (instance-initiated shutdown stops it, IMDSv2 required, tagged as a bake),
/// waits until the script powers it off, checks its console for the success
/// marker, creates the image with no reboot, tags the image and its snapshots,
/// copies it to the --copy-to regions at once and waits for each, then
/// terminates the builder. An image baked from the same inputs (the input
/// hash: source image id, script, pulled images, instance type, marker,
/// service) is reused and nothing is launched, unless --force. On a failure, a
/// deadline, SIGINT or SIGTERM the builder is terminated and any half-made
/// image deregistered with its snapshots; `bake-ami sweep` removes what a
/// killed run left. The image ids go into the state file (image.amis).
/// Then the service's images beyond the newest --keep are removed in each
/// of those regions, with their snapshots, unless still in use.
///
/// Every wait has its own deadline (--wait-stopped, --wait-console,
/// --wait-image), and --timeout, the deadline of the whole step, caps them
/// all: give long bakes a longer one, e.g. --timeout 2h.
#[derive(Debug, Parser)]
#[command(name = "bake-ami", version, max_term_width = 100)]
pub struct BakeAmiArgs {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub bake: BakeArgs,

    // Shown under their own heading, after the step's own options.
    #[command(flatten, next_help_heading = "Common options")]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remove builders and half-made images that killed bakes left behind
    Sweep(SweepArgs),
}

#[derive(Debug, ClapArgs)]
pub struct BakeArgs {
    /// The service the image is for [default: the state's deployment.service]
    #[arg(long, env = "SWITCHYARD_SERVICE", value_name = "NAME")]
    pub service: Option<String>,

    /// The version it is baked for (a tag and part of the name, not of the input hash)
    /// [default: the state's deployment.version]
    #[arg(long, env = "SWITCHYARD_VERSION", value_name = "VERSION")]
    pub app_version: Option<String>,

    /// The base image's id
    #[arg(
        long,
        env = "SWITCHYARD_SOURCE_AMI",
        value_name = "AMI",
        conflicts_with = "source_name"
    )]
    pub source_ami: Option<String>,

    /// The base image by name pattern (EC2 wildcards * and ?): the newest available match
    /// by CreationDate; two matches created at that same newest time are an error
    #[arg(long, env = "SWITCHYARD_SOURCE_NAME", value_name = "PATTERN")]
    pub source_name: Option<String>,

    /// Owner of the --source-name image: an account id, amazon, self, aws-marketplace (repeatable)
    #[arg(
        long = "owner",
        env = "SWITCHYARD_SOURCE_OWNERS",
        value_delimiter = ',',
        value_name = "OWNER"
    )]
    pub owners: Vec<String>,

    /// Provisioning script sent as user-data [default: the built-in script: security updates,
    /// docker, the --pull images, the success marker on the console, poweroff]. It must end
    /// by printing the success marker to the console and powering the instance off
    #[arg(long, env = "SWITCHYARD_USER_DATA", value_name = "FILE")]
    pub user_data: Option<PathBuf>,

    /// A container image the built-in script pulls into the image (repeatable)
    #[arg(
        long = "pull",
        env = "SWITCHYARD_PULL",
        value_delimiter = ',',
        value_name = "IMAGE"
    )]
    pub pulls: Vec<String>,

    /// Text the builder's console output must contain for the provisioning to count as done
    #[arg(long, env = "SWITCHYARD_SUCCESS_MARKER", default_value = DEFAULT_MARKER, value_name = "TEXT")]
    pub success_marker: String,

    /// The builder's instance type
    #[arg(
        long,
        env = "SWITCHYARD_INSTANCE_TYPE",
        default_value = "t3.small",
        value_name = "TYPE"
    )]
    pub instance_type: String,

    /// The builder's subnet [default: the default VPC's]
    #[arg(long, env = "SWITCHYARD_SUBNET_ID", value_name = "SUBNET")]
    pub subnet_id: Option<String>,

    /// A security group of the builder (repeatable) [default: the VPC's default group]
    #[arg(
        long = "security-group-id",
        env = "SWITCHYARD_SECURITY_GROUP_IDS",
        value_delimiter = ',',
        value_name = "SG"
    )]
    pub security_group_ids: Vec<String>,

    /// Regions to copy the image to, e.g. eu-west-1,ap-southeast-2 (copied at once)
    #[arg(
        long,
        env = "SWITCHYARD_COPY_TO",
        value_delimiter = ',',
        value_name = "REGION,.."
    )]
    pub copy_to: Vec<String>,

    /// Bake even when an image baked from the same inputs exists
    #[arg(long, env = "SWITCHYARD_FORCE", value_parser = clap::builder::BoolishValueParser::new())]
    pub force: bool,

    /// How many of the service's images to keep in each region the bake wrote to, newest
    /// first (a number of 1 or more, or `all`). Older ones are deregistered with their
    /// snapshots after a successful bake, except images that a launch template version in
    /// use or the state file names
    #[arg(long, env = "SWITCHYARD_KEEP", value_parser = Keep::parse, default_value = "5", value_name = "N|all")]
    pub keep: Keep,

    /// Also write a Packer-compatible manifest (builds[].artifact_id "region:ami,..."); appended to
    #[arg(long, env = "SWITCHYARD_MANIFEST", value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Longest wait for the builder to power off
    #[arg(long, env = "SWITCHYARD_WAIT_STOPPED", value_parser = parse_duration, default_value = "45m", value_name = "DURATION")]
    pub wait_stopped: Duration,

    /// Longest wait for the success marker on the console once the builder stopped
    #[arg(long, env = "SWITCHYARD_WAIT_CONSOLE", value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub wait_console: Duration,

    /// Longest wait for each image and copy to become available
    #[arg(long, env = "SWITCHYARD_WAIT_IMAGE", value_parser = parse_duration, default_value = "60m", value_name = "DURATION")]
    pub wait_image: Duration,
}

#[derive(Debug, ClapArgs)]
pub struct SweepArgs {
    /// Remove only leftovers made longer ago than this, e.g. 2h (0s: all)
    #[arg(long, env = "SWITCHYARD_OLDER_THAN", value_parser = parse_duration, value_name = "DURATION")]
    pub older_than: Duration,

    /// Regions to sweep, e.g. us-east-1,eu-west-1 [default: --region]
    #[arg(
        long,
        env = "SWITCHYARD_REGIONS",
        value_delimiter = ',',
        value_name = "REGION,.."
    )]
    pub regions: Vec<String>,
}

impl StepArgs for BakeAmiArgs {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}
